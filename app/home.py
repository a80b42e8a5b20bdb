"""Home: the workspace's runs grouped by kind, with status, key metrics, creation time, what is
wrong with each (unreadable, failed, metrics that are not finite, artefacts missing or refused)
and a link to each run's page."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlencode

import streamlit as st

from app import data
from app.kinds import KINDS, kind_view
from app.run_page import page_of, page_url
from app.ui import empty_workspace, fmt, workspace_caption


def run_rows(runs, keys: tuple[str, ...]) -> list[dict]:
    """One table row per run: name, status, created, the key metrics, open (a link), problem."""
    rows = []
    for r in runs:
        row = {"name": r.name, "status": r.status, "created": r.created}
        for k in keys:
            row[k] = fmt(r.metrics.get(k)) if k in r.metrics else ""
        query = urlencode({"run": r.name} if r.kind in KINDS else {"kind": r.kind, "run": r.name})
        row["open"] = f"{page_url(r.kind)}?{query}"
        row["problem"] = "; ".join(data.problems(r))
        rows.append(row)
    return rows


def render_home() -> None:
    st.title("interp explorer")
    workspace_caption()
    runs = data.scan_runs()
    if not runs:
        empty_workspace()
        return
    by_kind: dict[str, list] = {}
    for r in runs:
        by_kind.setdefault(r.kind, []).append(r)
    status = Counter(r.status for r in runs)
    st.write(f"**{len(runs)} runs** in `{data.workspace()}`: "
             + ", ".join(f"{n} {s}" for s, n in sorted(status.items())))
    ordered = [k for k in KINDS if k in by_kind] + sorted(k for k in by_kind if k not in KINDS)
    for kind in ordered:
        view = kind_view(kind)
        title = view.title if kind in KINDS else f"{kind} (shown by the generic view)"
        st.header(title)
        st.page_link(page_of(kind), label=f"Open {kind} runs", icon=":material/arrow_forward:",
                     query_params=None if kind in KINDS else {"kind": kind})
        rows = run_rows(by_kind[kind], view.metrics)
        if not any(r["problem"] for r in rows):
            rows = [{k: v for k, v in r.items() if k != "problem"} for r in rows]
        st.dataframe(rows, hide_index=True,
                     column_config={"open": st.column_config.LinkColumn(
                         "open", display_text="open")})
        for r, row in zip(by_kind[kind], rows):
            if r.status == "broken":
                st.warning(f"{kind}/{r.name} cannot be read: {r.error}")
            elif row.get("problem") and r.status != "failed":
                st.warning(f"{kind}/{r.name}: {row['problem']}")
