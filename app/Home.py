"""Home of the explorer: every run in the workspace, by kind, with status, key metrics and
creation time. Start it with `interp app [WORKSPACE]`."""

import sys
from pathlib import Path

if str(_root := Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(_root))  # the repository root, so `app` and the toolkit import

import streamlit as st  # noqa: E402

from app.home import render_home  # noqa: E402

st.set_page_config(page_title="interp explorer", layout="wide")
render_home()
