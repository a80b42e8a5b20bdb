"""The base of every config: a frozen dataclass that round-trips through a JSON-ready dict.

`to_dict()` writes nested configs as dicts and tuples as lists (what `run.json` holds);
`from_dict()` reads them back, building nested configs and tuples from the field types, and
rejects a key the config does not have, naming the nearest valid one (a typo in a run.json or a
sweep file fails loudly instead of being ignored).

    @dataclass(frozen=True)
    class StoreConfig(Config):
        hooks: tuple[str, ...] = ("blocks.15.hook_resid_post",)
        corpus: CorpusSpec = field(default_factory=CorpusSpec)
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import PurePath
from typing import Any, TypeVar

from interp.errors import ConfigError, check_config_keys

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for frozen dataclass configs (see the module doc)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        if not isinstance(d, dict):
            raise ConfigError(f"A {cls.__name__} is read from a JSON object, not "
                              f"{type(d).__name__} {str(d)[:80]!r}.")
        check_config_keys(cls, d)
        hints = _hints(cls)
        return cls(**{k: _build(hints.get(k), v) for k, v in d.items()})


def _plain(v: Any) -> Any:
    if isinstance(v, Config):
        return v.to_dict()
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, PurePath):
        return str(v)
    return v


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(tp: Any, v: Any) -> Any:
    """`v` (from JSON) as the field type `tp` wants: nested configs and tuples."""
    if tp is None or v is None:
        return v
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(options[0], v) if len(options) == 1 else v
    if isinstance(tp, type) and issubclass(tp, Config) and isinstance(v, dict):
        return tp.from_dict(v)
    if origin is tuple and isinstance(v, list):
        args = typing.get_args(tp)
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        return tuple(_build(inner, x) for x in v)
    return v
