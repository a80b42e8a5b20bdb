"""The Home page's content: the workspace's runs grouped by kind (see Home.py)."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlencode

import streamlit as st

from app.kinds import KINDS, kind_view
from app.ui import empty_workspace, fmt, scan_runs, workspace, workspace_caption


def page_url(page: str) -> str:
    """The URL path Streamlit gives a file under pages/ ('pages/2_SAEs.py' -> 'SAEs')."""
    stem = page.rsplit("/", 1)[-1].removesuffix(".py")
    return stem.split("_", 1)[1] if stem.split("_", 1)[0].isdigit() and "_" in stem else stem


def run_rows(runs, keys: tuple[str, ...]) -> list[dict]:
    rows = []
    for r in runs:
        row = {"name": r.name, "status": r.status, "created": r.created}
        for k in keys:
            row[k] = fmt(r.metrics.get(k)) if k in r.metrics else ""
        row["problem"] = (r.error or str(r.metrics.get("error", ""))
                          if r.status in ("broken", "failed") else "")
        query = urlencode({"run": r.name} if r.kind in KINDS else {"kind": r.kind, "run": r.name})
        row["open"] = f"{page_url(kind_view(r.kind).page)}?{query}"
        rows.append(row)
    return rows


def render_home() -> None:
    st.title("interp explorer")
    workspace_caption()
    runs = scan_runs()
    if not runs:
        empty_workspace()
        return
    by_kind: dict[str, list] = {}
    for r in runs:
        by_kind.setdefault(r.kind, []).append(r)
    status = Counter(r.status for r in runs)
    st.write(f"**{len(runs)} runs** in `{workspace()}`: "
             + ", ".join(f"{n} {s}" for s, n in sorted(status.items())))
    ordered = [k for k in KINDS if k in by_kind] + sorted(k for k in by_kind if k not in KINDS)
    for kind in ordered:
        view = kind_view(kind)
        title = view.title if kind in KINDS else f"{kind} (shown by the generic view)"
        st.header(title)
        st.page_link(view.page, label=f"Open {kind} runs", icon=":material/arrow_forward:",
                     query_params=None if kind in KINDS else {"kind": kind})
        rows = run_rows(by_kind[kind], view.metrics)
        if not any(r["problem"] for r in rows):
            rows = [{k: v for k, v in r.items() if k != "problem"} for r in rows]
        st.dataframe(rows, hide_index=True,
                     column_config={"open": st.column_config.LinkColumn(
                         "open", display_text="open")})
        for r in by_kind[kind]:
            if r.status == "broken":
                st.warning(f"{kind}/{r.name} cannot be read: {r.error}")
