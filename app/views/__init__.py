"""One module per run kind: `render(run)` draws a run of that kind on the current page (see
app/kinds.py for the registry and app/README.md for the contract)."""
