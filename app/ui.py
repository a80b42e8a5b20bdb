"""The explorer's shared widgets: a run picker, a run's header (status, problems, key metrics,
run.json), figures at the page's width, and a guard that turns an exception into an error box,
so every page looks alike and none shows a traceback. Workspace access is `app.data`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import streamlit as st

from app import data
from app.kinds import kind_view
from interp.workspace import Run


def fmt(v) -> str:
    """A metric as a short string (4 significant digits for floats; 'n/a' for None)."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot(fig, key: str | None = None) -> None:
    """Show a plotly figure at the page's width."""
    st.plotly_chart(fig, width="stretch", key=key)


@contextlib.contextmanager
def guard(what: str):
    """Show an error box instead of a traceback if the block fails (the rest of the page still
    renders). Streamlit's own control flow (rerun, stop) passes through: it is not an
    Exception."""
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


def _fingerprint(run: Run) -> str:
    """What the problems of a run depend on: its run.json and its artefacts' stats."""
    stats = []
    for rel in run.artefacts.values():
        try:
            s = os.stat(run.path / rel)
            stats.append((s.st_mode, s.st_size, s.st_mtime_ns))
        except (OSError, ValueError, TypeError):
            stats.append(None)
    return json.dumps([str(run.path), run.to_dict(), stats], default=str)


@st.cache_data(show_spinner=False, max_entries=256)
def _problems(fingerprint: str, _run: Run, ws: str) -> list[str]:
    return data.problems(_run, Path(ws), deep=True)  # parses its JSON artefacts: cached


def problems_note(run: Run) -> None:
    """A warning listing what else is wrong with a readable run (metrics that are not finite,
    artefacts missing, refused or unreadable)."""
    if run.status == "broken":
        return
    found = [p for p in _problems(_fingerprint(run), run, str(data.workspace()))
             if not p.startswith("failed: ")]
    if found:
        st.warning("Problems with this run:\n" + "\n".join(f"- {p}" for p in found))


def run_header(run: Run, keys: tuple[str, ...] | None = None) -> None:
    """Title, status, problems, creation time, key metrics and the full config of a run."""
    st.subheader(f"{run.kind} / {run.name}")
    st.caption(f"status **{run.status}** · created {run.created or 'unknown'} · `{run.path}`")
    status_note(run)
    with guard("the run's problems"):
        problems_note(run)
    metrics = data.scalar_metrics(run, keys or kind_view(run.kind).metrics or None)
    if metrics:
        cols = st.columns(min(len(metrics), 5))
        for i, (k, v) in enumerate(list(metrics.items())[:5]):
            cols[i].metric(k, fmt(v))
    with st.expander("config, metrics and artefacts (run.json)"), guard("run.json"):
        st.json(data.displayable({"config": run.config, "metrics": run.metrics,
                                  "artefacts": run.artefacts}), expanded=False)


def pick_run(kind: str, label: str = "Run") -> Run | None:
    """A select box of the runs of `kind` (newest first); `?run=<name>` in the URL selects one
    (a name that is not a run of this kind is ignored: the newest finished run is shown)."""
    runs = data.scan_runs(kind=kind)
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
    ws = data.workspace()
    st.sidebar.caption(f"Workspace: `{ws}`")
    if not (ws / "runs").is_dir():
        st.sidebar.warning("No runs here yet.")


def empty_workspace(what: str = "runs") -> None:
    st.info(f"No {what} in the workspace `{data.workspace()}` yet. Make some with `make demo` "
            "(or `interp demo`), or point the explorer at another workspace: "
            "`interp app path/to/workspace`.")
