"""The explorer's entry point: `interp app [WORKSPACE]` runs `streamlit run app/explorer.py`
with the repository root on PYTHONPATH. The pages come from the registry (`app/kinds.py`)."""

from app.navigation import main

main()
