"""Finding the files of a pretrained dictionary: a local directory, the HF cache, the Hub.

The order is fixed: an explicit local directory is the only place looked at when given; else
the Hugging Face cache (huggingface_hub's `models--org--name/snapshots/<commit>/` layout, read
as plain files); else the Hub, downloading only the files needed, unless `HF_HUB_OFFLINE` is
set, in which case the error names the release, the id, the repo and the files to fetch.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from interp.errors import PretrainedNotFound

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Need:
    """A file a layout reads: repo-relative paths tried in order (the first found is used)."""

    names: tuple[str, ...]
    optional: bool = False

    @classmethod
    def of(cls, *names: str, optional: bool = False) -> Need:
        return cls(tuple(names), optional)


def offline() -> bool:
    """Whether `HF_HUB_OFFLINE` is set (read now, not when huggingface_hub was imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def hub_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """The HF cache directory: `cache_dir`, else `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    huggingface_hub's default."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _local_candidates(local_dir: Path, name: str, folder: str) -> list[Path]:
    """`local_dir` may mirror the repo (`DIR/<path in repo>`) or hold the files themselves."""
    out = [local_dir / name]
    if folder and name.startswith(folder.rstrip("/") + "/"):
        out.append(local_dir / name[len(folder.rstrip("/")) + 1:])
    out.append(local_dir / Path(name).name)
    return out


def _from_cache(repo_id: str, name: str, cache: Path, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, name, cache_dir=str(cache), revision=revision)
    return Path(found) if isinstance(found, str) else None


def _download(repo_id: str, name: str, cache: Path, revision: str | None) -> Path | None:
    """The file from the Hub (None if the repo has no such file)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=str(cache)))
    except LocalEntryNotFoundError:  # no network (a subclass of the next): not a missing file
        raise
    except EntryNotFoundError:
        return None


def locate(repo_id: str, needs: list[Need], *, what: str, folder: str = "",
           local_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
           revision: str | None = None) -> list[Path | None]:
    """The local path of each need (None for an optional file that does not exist).

    `what` describes the dictionary for error messages; `folder` is its folder in the repo
    (so a `local_dir` may hold the folder's files directly).
    """
    if local_dir is not None:
        return _locate_local(Path(local_dir), needs, what, folder, repo_id)
    cache = hub_cache(cache_dir)
    found: list[Path | None] = []
    missing: list[Need] = []
    for need in needs:
        path = next((p for n in need.names if (p := _from_cache(repo_id, n, cache, revision))),
                    None)
        found.append(path)
        if path is None:
            missing.append(need)
    required = [m for m in missing if not m.optional]
    if not missing or (offline() and not required):
        return found
    if offline():
        raise PretrainedNotFound(_offline_message(repo_id, required, what, cache, folder))
    for i, need in enumerate(needs):
        if found[i] is not None:
            continue
        try:
            found[i] = next((p for n in need.names if (p := _download(repo_id, n, cache,
                                                                       revision))), None)
        except Exception as e:  # the Hub raises many types: network, auth, gated, 404 repo
            raise PretrainedNotFound(
                f"Could not download {need.names[0]!r} of {what} from the Hugging Face Hub "
                f"({type(e).__name__}: {e}). Check your network; gated repos need "
                "`hf auth login` and an accepted licence. Or download the files yourself and "
                "pass local_dir=DIR (`--local-dir DIR`).") from None
        if found[i] is None and not need.optional:
            raise PretrainedNotFound(f"Hugging Face repo {repo_id!r} has none of "
                                     f"{list(need.names)}, needed for {what}.")
    return found


def _locate_local(local_dir: Path, needs: list[Need], what: str, folder: str,
                  repo_id: str) -> list[Path | None]:
    if not local_dir.is_dir():
        raise PretrainedNotFound(f"local_dir {local_dir} is not a directory (it should hold the "
                                 f"files of {what}).")
    out: list[Path | None] = []
    for need in needs:
        path = next((c for n in need.names for c in _local_candidates(local_dir, n, folder)
                     if c.is_file()), None)
        if path is None and not need.optional:
            where = (f"{local_dir / need.names[0]}" if Path(repo_id).is_dir() else
                     f"{local_dir / need.names[0]} (the repo's layout, as `hf download "
                     f"{repo_id} --local-dir {local_dir}` writes it) or at "
                     f"{local_dir / Path(need.names[0]).name}")
            raise PretrainedNotFound(f"{local_dir} does not hold {need.names[0]!r} of {what}. "
                                     f"Put the file at {where}.")
        out.append(path)
    return out


def _offline_message(repo_id: str, missing: list[Need], what: str, cache: Path,
                     folder: str) -> str:
    names = [m.names[0] for m in missing]
    return (f"HF_HUB_OFFLINE is set and {what} is not in the Hugging Face cache ({cache}): "
            f"missing {names}. While online, download them with `hf download {repo_id} "
            + " ".join(names) + "` (or `interp pretrained get`), or unset HF_HUB_OFFLINE; or put "
            f"the files in a directory (as DIR/{names[0]}"
            + (f" or DIR/{Path(names[0]).name}" if folder else "")
            + ") and pass local_dir=DIR (`--local-dir DIR`).")


def list_files(repo_id: str, pattern: str, *, what: str, local_dir=None, cache_dir=None,
               revision: str | None = None) -> list[str]:
    """Repo-relative names matching a glob `pattern` (e.g. 'sub/layer_*.safetensors'), from the
    local directory, the cached snapshot (offline) or the Hub's file list."""
    if local_dir is not None:
        base = Path(local_dir)
        return sorted(str(p.relative_to(base)) for p in base.glob(pattern) if p.is_file())
    cache = hub_cache(cache_dir)
    if offline():
        snap = _snapshot(repo_id, cache, revision)
        if snap is None:
            raise PretrainedNotFound(
                f"HF_HUB_OFFLINE is set and {what} has no snapshot in the Hugging Face cache "
                f"({cache}). While online, download it with `hf download {repo_id} --include "
                f"'{pattern}'`, or pass local_dir=DIR holding its files.")
        return sorted(str(p.relative_to(snap)) for p in snap.glob(pattern) if p.is_file())
    from huggingface_hub import HfApi

    try:
        names = HfApi().list_repo_files(repo_id, revision=revision)
    except Exception as e:  # network, auth, missing repo
        raise PretrainedNotFound(f"Could not list the files of Hugging Face repo {repo_id!r} "
                                 f"for {what} ({type(e).__name__}: {e}).") from None
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def _snapshot(repo_id: str, cache: Path, revision: str | None) -> Path | None:
    """The cached snapshot folder of a repo at `revision` (a branch, tag or commit)."""
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    rev = revision or "main"
    ref = repo / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    snap = repo / "snapshots" / commit
    return snap if snap.is_dir() else None
