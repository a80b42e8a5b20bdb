"""The pages that show one run: a page per registered kind (pick a run of that kind, its header,
its kind's view) and "All runs" (any run, of any kind), and `page_of` to link to them."""

from __future__ import annotations

import streamlit as st

from app import data
from app.kinds import GENERIC, KindView, kind_view, view_module
from app.ui import empty_workspace, guard, pick_run, run_header, workspace_caption


def show_run(run) -> None:
    """A run's header and, unless it cannot be read, its kind's view (errors boxed)."""
    run_header(run)
    if run.status != "broken":
        with guard(f"this {run.kind} run"):
            view_module(run.kind).render(run)


def kind_page(kind: str) -> None:
    """A whole page for one run kind: pick a run, show its header and its kind's view."""
    st.title(kind_view(kind).title)
    workspace_caption()
    run = pick_run(kind)
    if run is None:
        empty_workspace(f"{kind!r} runs")
        return
    show_run(run)


def all_runs_page() -> None:
    """Any run: pick a kind, then a run; unregistered kinds get the generic view."""
    st.title(GENERIC.title)
    workspace_caption()
    kinds = data.run_kinds()
    if not kinds:
        empty_workspace()
        return
    wanted = st.query_params.get("kind")
    kind = st.selectbox("Kind", kinds, index=kinds.index(wanted) if wanted in kinds else 0)
    if st.query_params.get("kind") != kind:
        st.query_params["kind"] = kind
    run = pick_run(kind)
    if run is not None:
        show_run(run)


def page(view: KindView) -> st.Page:
    """The `st.Page` of a registry entry (GENERIC: the "All runs" page)."""
    if view is GENERIC:
        return st.Page(all_runs_page, title=view.title, url_path=view.url_path,
                       icon=":material/list:")

    def show() -> None:
        kind_page(view.kind)

    return st.Page(show, title=view.title, url_path=view.url_path)


def page_of(kind: str | None) -> st.Page:
    """The page that shows runs of `kind` (the "All runs" page for unregistered kinds and
    None), for `st.page_link` and `st.switch_page`."""
    return page(kind_view(kind) if kind is not None else GENERIC)


def page_url(kind: str) -> str:
    """The URL path of the page of `kind`, relative to the app's root ('sae' -> 'SAEs')."""
    return kind_view(kind).url_path
