"""The explorer's navigation, built from the registry (`app/kinds.py`): Home, one page per run
kind in registry order, then "All runs". `app/explorer.py` runs it."""

from __future__ import annotations

import streamlit as st

from app.home import render_home
from app.kinds import GENERIC, KINDS
from app.run_page import page


def pages() -> list[st.Page]:
    """Home, then one page per registered kind, then "All runs"."""
    home = st.Page(render_home, title="Home", icon=":material/home:", default=True)
    return [home, *(page(v) for v in KINDS.values()), page(GENERIC)]


def main() -> None:
    """The whole app: what `streamlit run app/explorer.py` executes on every rerun."""
    st.set_page_config(page_title="interp explorer", layout="wide")
    st.navigation(pages(), expanded=True).run()
