"""Errors the toolkit raises for bad input: each says what was wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InterpError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class HookNotFound(InterpError, KeyError):
    """A hook name that the model does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class HookNotWritable(InterpError):
    """A hook that can be read but whose value cannot be replaced on this backend."""


class ModelLoadError(InterpError):
    """A model (or its tokenizer) could not be found or loaded."""


class PretrainedNotFound(ModelLoadError):
    """The files of a pretrained dictionary are in no local directory, not in the Hugging Face
    cache, and cannot be downloaded (offline, missing on the Hub, or gated)."""


class ModelMismatch(InterpError, ValueError):
    """A dictionary (SAE, transcoder) that does not fit the model it is used with: another
    width, or a hook the model does not have."""


class UnsupportedModel(ModelLoadError):
    """A model that a capability cannot serve (no adapter for its family, or a kind of model,
    such as mixture-of-experts or encoder-only, that the capability does not handle)."""


class ConfigError(InterpError, ValueError):
    """A config with an unknown key or an invalid value."""


class CorruptFile(InterpError, ValueError):
    """A file whose bytes cannot be what they should be: truncated, bit-flipped, not JSON /
    safetensors / Parquet at all, not a regular file, or larger than its kind can be."""


class MissingFile(InterpError, FileNotFoundError):
    """A file that a reader needs is not there."""

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class BadFormat(ConfigError):
    """A file that parses but does not hold what its reader expects: a missing or mistyped
    key, a tensor of the wrong shape, another format's marker, a declared size that does not
    fit the data."""


class CorruptShard(CorruptFile):
    """A shard of an activation store is missing, truncated or fails its checksum."""


class StoreMismatch(InterpError):
    """An existing activation store was written with different settings than requested."""


class DataError(InterpError, ValueError):
    """A corpus that cannot be read or is empty."""


class WorkspaceError(InterpError):
    """A run directory that cannot be read or written."""


class UnsafePath(WorkspaceError):
    """A path read from a file or given as a name that would leave the directory it must stay
    in (`..`, an absolute path, a symlink pointing out)."""


class WrongRunKind(WorkspaceError):
    """A run directory of another kind than the command needs (e.g. a features run given to
    `eval-sae`)."""


class DeviceError(InterpError, ValueError):
    """A device or dtype that is malformed or not available on this machine."""


class DeviceMemoryError(InterpError):
    """A run whose estimated memory does not fit the device it is asked to run on."""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to `name`, best first (for 'did you mean' messages)."""
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:  # fall back to a substring search on the last dotted part
        tail = name.rsplit(".", 1)[-1]
        found = [c for c in candidates if tail and tail in c][:n]
    return found


def unknown_name_message(kind: str, name: str, candidates: Iterable[str], hint: str = "") -> str:
    """'Unknown <kind> 'x'. Did you mean: a, b?' plus an optional hint."""
    matches = close_matches(name, candidates)
    msg = f"Unknown {kind} {name!r}."
    if matches:
        msg += " Did you mean: " + ", ".join(matches) + "?"
    if hint:
        msg += " " + hint
    return msg


def check_config_keys(cls, d: dict) -> None:
    """Raise `ConfigError` if `d` has a key the dataclass `cls` does not (configs reject unknown
    keys rather than ignore them), naming the nearest valid key and listing them all."""
    import dataclasses

    valid = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in valid:
            raise ConfigError(unknown_name_message(f"{cls.__name__} key", str(key), valid,
                                                   hint=f"Valid keys: {', '.join(valid)}."))
