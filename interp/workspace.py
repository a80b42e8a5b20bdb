"""The workspace: every result is a run directory `runs/<kind>/<name>/` with a `run.json`.

`run.json` holds `kind`, `name`, `config`, `created`, `status` (running | done | failed),
`metrics` and `artefacts` (paths relative to the run directory). The explorer finds runs by
globbing `run.json`; a run whose file cannot be read is listed as broken, never fatal.
The root is the CLI argument, else `$INTERP_WORKSPACE`, else `./workspace`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from interp.errors import UnsafePath, WorkspaceError, WrongRunKind
from interp.io import atomic_write_json, read_json

STATUSES = ("running", "done", "failed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def workspace_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get("INTERP_WORKSPACE") or "workspace")


@dataclass
class Run:
    """One run directory and its `run.json` contents."""

    path: Path
    kind: str
    name: str
    config: dict = field(default_factory=dict)
    created: str = ""
    status: str = "running"
    metrics: dict = field(default_factory=dict)
    artefacts: dict = field(default_factory=dict)
    error: str | None = None  # set on broken runs (unreadable run.json)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "config": self.config,
                "created": self.created, "status": self.status, "metrics": self.metrics,
                "artefacts": self.artefacts}

    def save(self) -> None:
        atomic_write_json(self.path / "run.json", self.to_dict())

    def artefact(self, key: str) -> Path:
        """Absolute path of a named artefact; refuses paths that leave the run directory."""
        if key not in self.artefacts:
            raise WorkspaceError(f"Run {self.path} has no artefact {key!r}; it has "
                                 f"{sorted(self.artefacts)}.")
        rel = self.artefacts[key]
        if not isinstance(rel, str) or not rel or "\0" in rel:
            raise WorkspaceError(f"Artefact {key!r} of run {self.path} is {rel!r}, not a "
                                 "relative path; the run.json was modified.")
        p = (self.path / rel).resolve()
        if self.path.resolve() not in p.parents and p != self.path.resolve():
            raise UnsafePath(f"Artefact {key!r} of run {self.path} points outside the run "
                             f"({rel!r}); refusing to read it.")
        return p

    def finish(self, metrics: dict | None = None, artefacts: dict | None = None,
               status: str = "done") -> None:
        if status not in STATUSES:
            raise WorkspaceError(f"status must be one of {STATUSES}, not {status!r}.")
        self.metrics.update(metrics or {})
        self.artefacts.update(artefacts or {})
        self.status = status
        self.save()


def run_dir(kind: str, name: str, root: str | os.PathLike | None = None) -> Path:
    for what, value in (("kind", kind), ("name", name)):
        if not _NAME.match(value):
            raise WorkspaceError(f"Run {what} {value!r} is not a valid name: use letters, digits "
                                 "and . _ + - (no slashes), starting with a letter or digit.")
    return workspace_root(root) / "runs" / kind / name


def create_run(kind: str, name: str, config: dict, root: str | os.PathLike | None = None,
               path: str | os.PathLike | None = None) -> Run:
    """Start (or restart) a run: writes `run.json` with status `running`.

    `path` overrides the workspace location (the CLI's `--out`). A restarted run keeps its
    original creation time.
    """
    where = Path(path) if path is not None else run_dir(kind, name, root)
    where.mkdir(parents=True, exist_ok=True)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if (where / "run.json").is_file():
        with contextlib.suppress(Exception):
            created = read_json(where / "run.json", expect=dict).get("created") or created
    run = Run(path=where, kind=kind, name=name, config=config, created=created)
    run.save()
    return run


@contextlib.contextmanager
def run_context(kind: str, name: str, config: dict, root=None, path=None) -> Iterator[Run]:
    """A run that is marked `failed` (with the error) if the block raises or is interrupted."""
    run = create_run(kind, name, config, root=root, path=path)
    try:
        yield run
    except BaseException as e:
        run.metrics["error"] = f"{type(e).__name__}: {e or 'interrupted'}"
        run.finish(status="failed")
        raise
    if run.status == "running":
        run.finish()


def is_done(path: str | os.PathLike) -> bool:
    """Whether `path` holds a finished run (False if it is missing, unreadable or unfinished):
    the test a step uses to skip work already done."""
    try:
        return load_run(path).status == "done"
    except WorkspaceError:
        return False


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory; raises `WorkspaceError` if its run.json is missing or invalid."""
    path = Path(path)
    try:
        d = read_json(path / "run.json", expect=dict)
        return Run(path=path, kind=str(d["kind"]), name=str(d["name"]),
                   config=dict(d.get("config") or {}), created=str(d.get("created", "")),
                   status=str(d.get("status", "running")), metrics=dict(d.get("metrics") or {}),
                   artefacts=dict(d.get("artefacts") or {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WorkspaceError(f"{path / 'run.json'} cannot be read: {e}") from e


def load_run_of_kind(path: str | os.PathLike, kinds: str | tuple[str, ...],
                     command: str) -> Run:
    """`load_run`, and `WrongRunKind` naming the directory, its kind and the kinds `command`
    takes if it is another kind of run."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    run = load_run(path)
    if run.kind not in kinds:
        raise WrongRunKind(f"{path} is a {run.kind!r} run; {command} takes "
                           f"{' or '.join(repr(k) for k in kinds)} runs.")
    return run


def list_runs(root: str | os.PathLike | None = None, kind: str | None = None) -> list[Run]:
    """Every run under the workspace (broken ones included, with `error` set), newest first."""
    base = workspace_root(root) / "runs"
    runs = []
    for f in sorted(base.glob(f"{kind or '*'}/*/run.json")):
        try:
            runs.append(load_run(f.parent))
        except WorkspaceError as e:
            runs.append(Run(path=f.parent, kind=f.parent.parent.name, name=f.parent.name,
                            status="broken", error=str(e)))
    return sorted(runs, key=lambda r: (r.created, r.kind, r.name), reverse=True)
