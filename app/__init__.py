"""The Streamlit explorer: reads a workspace (`runs/<kind>/<name>/run.json` + artefacts) and
renders each run with its kind's view (see `app/kinds.py` and `app/README.md`).

It computes nothing heavy: views call the toolkit's loaders and `fig_*` plotting functions.
"""
