"""Shared rendering helpers of the explorer: the workspace, safe bounded reads, run pickers,
run headers and an error guard, so every page looks alike and none shows a traceback.

Safety with untrusted workspaces: run names from the URL are validated, every path is resolved
(symlinks included) and must stay inside the workspace, JSON files are size-checked before they
are parsed, tensors are read only through the toolkit's safetensors loaders (never pickle), and
big files are read in bounded pieces (the tail of a log, a sample of a shard).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import streamlit as st

from app.kinds import KINDS, kind_view, view_module
from interp.errors import InterpError, WorkspaceError
from interp.workspace import Run, load_run, run_dir

MAX_RUN_JSON = 4 << 20  # bytes; run.json is small (config + scalar metrics)
MAX_JSON = 64 << 20  # any JSON artefact (eval reports hold one number per latent)
MAX_LOG_TAIL = 16 << 20  # the last bytes of a .jsonl log that a page reads
MAX_POINTS = 2000  # points per curve after thinning


class ExplorerError(InterpError):
    """Something in the workspace that a page cannot show; the message says what and why."""


# --------------------------------------------------------------------------- workspace
def workspace() -> Path:
    """The workspace root: `$INTERP_WORKSPACE`, else `./workspace` (resolved)."""
    return Path(os.environ.get("INTERP_WORKSPACE") or "workspace").expanduser().resolve()


def inside(path: Path, root: Path) -> bool:
    """Whether `path` (symlinks resolved) lies inside `root`."""
    p, r = Path(path).resolve(), Path(root).resolve()
    return p == r or r in p.parents


def _broken(path: Path, why: str) -> Run:
    return Run(path=path, kind=path.parent.name, name=path.name, status="broken", error=why)


def read_run(path: Path, ws: Path | None = None) -> Run:
    """`load_run` with the explorer's checks; a run it cannot read comes back `broken`."""
    ws = ws or workspace()
    f = path / "run.json"
    try:
        if not inside(f, ws):
            return _broken(path, f"{f} points outside the workspace; not read.")
        if f.stat().st_size > MAX_RUN_JSON:
            return _broken(path, f"{f} is larger than {MAX_RUN_JSON >> 20} MiB; not read.")
        return load_run(path)
    except (OSError, WorkspaceError) as e:
        return _broken(path, str(e))


def scan_runs(ws: Path | None = None, kind: str | None = None) -> list[Run]:
    """Every run of the workspace (or of one kind), newest first; unreadable ones `broken`."""
    ws = ws or workspace()
    base = ws / "runs"
    if not base.is_dir():
        return []
    runs = [read_run(f.parent, ws) for f in sorted(base.glob(f"{kind or '*'}/*/run.json"))]
    return sorted(runs, key=lambda r: (r.created, r.kind, r.name), reverse=True)


def get_run(kind: str, name: str, ws: Path | None = None) -> Run:
    """One run by kind and name (both validated: no slashes, no '..')."""
    ws = ws or workspace()
    path = run_dir(kind, name, ws)  # raises WorkspaceError on an invalid name
    if not (path / "run.json").is_file():
        raise ExplorerError(f"No {kind!r} run named {name!r} in {ws}.")
    return read_run(path, ws)


def artefact(run: Run, key: str, required: bool = True) -> Path | None:
    """The file or folder of a run's artefact, checked to stay inside the run and workspace."""
    if key not in run.artefacts:
        if required:
            raise ExplorerError(f"Run {run.kind}/{run.name} has no {key!r} artefact (it has "
                                f"{sorted(run.artefacts) or 'none'}); it may be unfinished.")
        return None
    path = run.artefact(key)  # refuses paths that leave the run directory
    if not inside(path, workspace()) or not path.exists():
        if required:
            raise ExplorerError(f"Artefact {key!r} of {run.kind}/{run.name} is missing "
                                f"({run.artefacts[key]}).")
        return None
    return path


# --------------------------------------------------------------------------- bounded reads
@st.cache_data(show_spinner=False, max_entries=64)
def _json_cached(path: str, mtime_ns: int, size: int) -> dict:
    from interp.io import read_json

    return read_json(path)


def read_json(path: Path, limit: int = MAX_JSON):
    """A JSON file inside the workspace, refused above `limit` bytes (cached by mtime)."""
    path = Path(path)
    if not inside(path, workspace()):
        raise ExplorerError(f"{path} is outside the workspace; not read.")
    stat = path.stat()
    if stat.st_size > limit:
        raise ExplorerError(f"{path.name} is {stat.st_size >> 20} MiB, more than the explorer "
                            f"reads ({limit >> 20} MiB).")
    try:
        return _json_cached(str(path), stat.st_mtime_ns, stat.st_size)
    except ValueError as e:
        raise ExplorerError(f"{path} is not valid JSON ({e}).") from e


@st.cache_data(show_spinner=False, max_entries=64)
def _jsonl_cached(path: str, mtime_ns: int, size: int, max_bytes: int, max_points: int):
    with open(path, "rb") as f:
        start = max(0, size - max_bytes)
        f.seek(start)
        data = f.read(max_bytes)
    lines = data.split(b"\n")
    if start:
        lines = lines[1:]  # the first line was cut by the seek
    records = []
    for line in lines:
        with contextlib.suppress(ValueError):
            if line.strip() and isinstance(rec := json.loads(line), dict):
                records.append(rec)
    step = max(1, -(-len(records) // max_points))
    thinned = records[::step]
    if records and thinned[-1] is not records[-1]:
        thinned.append(records[-1])
    return thinned, bool(start)


def read_jsonl(path: Path, max_bytes: int = MAX_LOG_TAIL,
               max_points: int = MAX_POINTS) -> tuple[list[dict], bool]:
    """The records of a JSON-lines log (its last `max_bytes` only), thinned to at most
    `max_points`; returns (records, truncated). Unparseable lines are skipped."""
    path = Path(path)
    if not inside(path, workspace()):
        raise ExplorerError(f"{path} is outside the workspace; not read.")
    stat = path.stat()
    return _jsonl_cached(str(path), stat.st_mtime_ns, stat.st_size, max_bytes, max_points)


# --------------------------------------------------------------------------- rendering
def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def scalar_metrics(run: Run, keys: tuple[str, ...] | None = None) -> dict:
    """The run's scalar metrics (all, or `keys` in order where present)."""
    m = run.metrics
    if keys is None:
        return {k: v for k, v in m.items() if isinstance(v, (int, float, str)) or v is None}
    return {k: m[k] for k in keys if k in m}


def plot(fig, key: str | None = None) -> None:
    """Show a plotly figure at the page's width."""
    st.plotly_chart(fig, width="stretch", key=key)


@contextlib.contextmanager
def guard(what: str):
    """Show an error box instead of a traceback if the block fails (the rest of the page still
    renders)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - a page must never crash on a bad workspace
        st.error(f"Could not show {what}: {e}")


def status_note(run: Run) -> None:
    """A banner for runs that are not done."""
    if run.status == "broken":
        st.error(f"This run cannot be read: {run.error}")
    elif run.status == "failed":
        st.error(f"This run failed: {run.metrics.get('error', 'no error recorded')}")
    elif run.status == "running":
        st.warning("This run is still running, or was interrupted; showing what is on disk. "
                   "Re-run the command that made it to finish it.")


def run_header(run: Run, keys: tuple[str, ...] | None = None) -> None:
    """Title, status, creation time, key metrics and the full config of a run."""
    st.subheader(f"{run.kind} / {run.name}")
    st.caption(f"status **{run.status}** · created {run.created or 'unknown'} · `{run.path}`")
    status_note(run)
    metrics = scalar_metrics(run, keys or kind_view(run.kind).metrics or None)
    if metrics:
        cols = st.columns(min(len(metrics), 5))
        for i, (k, v) in enumerate(list(metrics.items())[:5]):
            cols[i].metric(k, fmt(v))
    with st.expander("config, metrics and artefacts (run.json)"):
        st.json({"config": run.config, "metrics": run.metrics, "artefacts": run.artefacts},
                expanded=False)


def pick_run(kind: str, label: str = "Run") -> Run | None:
    """A select box of the runs of `kind` (newest first); `?run=<name>` in the URL selects one."""
    runs = scan_runs(kind=kind)
    if not runs:
        return None
    names = [r.name for r in runs]
    wanted = st.query_params.get("run")
    done = [i for i, r in enumerate(runs) if r.status == "done"]
    index = names.index(wanted) if wanted in names else (done[0] if done else 0)
    name = st.selectbox(label, names, index=index, key=f"pick-{kind}")
    if st.query_params.get("run") != name:
        st.query_params["run"] = name
    return runs[names.index(name)]


def workspace_caption() -> None:
    ws = workspace()
    st.sidebar.caption(f"Workspace: `{ws}`")
    if not (ws / "runs").is_dir():
        st.sidebar.warning("No runs here yet.")


def empty_workspace(what: str = "runs") -> None:
    ws = workspace()
    st.info(f"No {what} in the workspace `{ws}` yet. Make some with `make demo` (or "
            "`interp demo`), or point the explorer at another workspace: "
            "`interp app path/to/workspace`.")


def kind_page(kind: str) -> None:
    """A whole page for one run kind: pick a run, show its header and its kind's view."""
    view = kind_view(kind)
    st.set_page_config(page_title=f"{view.title} · interp", layout="wide")
    st.title(view.title)
    workspace_caption()
    run = pick_run(kind)
    if run is None:
        empty_workspace(f"{kind!r} runs")
        return
    run_header(run)
    if run.status == "broken":
        return
    with guard(f"this {kind} run"):
        view_module(kind).render(run)


__all__ = ["KINDS", "ExplorerError", "artefact", "empty_workspace", "fmt", "get_run", "guard",
           "inside", "kind_page", "pick_run", "plot", "read_json", "read_jsonl", "read_run",
           "run_header", "scalar_metrics", "scan_runs", "status_note", "workspace"]


def any_run_page() -> None:
    """A page that shows any run: pick a kind, then a run; unregistered kinds get the generic
    view."""
    st.set_page_config(page_title="All runs · interp", layout="wide")
    st.title("All runs")
    workspace_caption()
    runs = scan_runs()
    if not runs:
        empty_workspace()
        return
    kinds = sorted({r.kind for r in runs})
    wanted = st.query_params.get("kind")
    kind = st.selectbox("Kind", kinds, index=kinds.index(wanted) if wanted in kinds else 0)
    if st.query_params.get("kind") != kind:
        st.query_params["kind"] = kind
    run = pick_run(kind)
    if run is None:
        return
    run_header(run)
    if run.status != "broken":
        with guard(f"this {kind} run"):
            view_module(kind).render(run)
