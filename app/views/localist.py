"""View of a locality-dial run (kind "localist", written by `interp localist sweep|schedules` and
`interp.localist.runs`): the AILA-style trade-off against lambda, training curves and attention
heatmaps for a sweep; the schedule comparison and per-layer dials for schedules
(`interp.localist.plots`)."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, read_json
from app.ui import guard, plot
from interp.workspace import Run

MAX_ITEMS = 32  # result files read per run


def _results(run: Run, names: list[str]) -> dict[str, dict]:
    folder = artefact(run, "results")
    out = {}
    for n in names[:MAX_ITEMS]:
        path = folder / f"{n}.json"
        if path.is_file():
            out[n] = read_json(path, expect=dict)
    return out


def _sweep(run: Run, rows: list[dict]) -> None:
    from interp.io import mmap_safetensors
    from interp.localist import plots

    plot(plots.fig_tradeoff(rows), key="tradeoff")
    lams = sorted({r["lam"] for r in rows if r["mode"] == "trained"})
    results = _results(run, [f"lam{lam:g}" for lam in lams])
    with guard("the training curves"):
        plot(plots.fig_training_curves({float(r["lam"]): r["history"]
                                        for r in results.values()}), key="training")
    with guard("the attention heatmaps"):
        pats = mmap_safetensors(artefact(run, "patterns"))
        modes = sorted({k.split("/")[0] for k in pats}, key=lambda m: (m != "trained", m))
        c1, c2, c3 = st.columns(3)
        mode = c1.selectbox("model", modes, key="lc-mode")
        lam = c2.selectbox("lambda", lams or [0.0], index=len(lams or [0]) - 1, key="lc-lam")
        layers = sorted({k.rsplit("/", 1)[1] for k in pats if k.startswith(f"{mode}/lam{lam:g}/")
                         and k.endswith(tuple("0123456789"))})
        layer = c3.selectbox("layer", layers or ["layer0"], key="lc-layer")
        key = f"{mode}/lam{lam:g}/{layer}"
        if key in pats:
            plot(plots.fig_attention(pats[key], pats.get(f"{mode}/lam{lam:g}/blocks"),
                                     title=f"{mode}, lambda={lam:g}, {layer} (head mean; red: "
                                           "block boundaries)"), key="attention")
        res = results.get(f"lam{lam:g}")
        if res and "per_head" in res:
            plot(plots.fig_layer_heads(res["per_head"], "entropy", f"lambda={lam:g}"),
                 key="heads")


def _schedules(run: Run, rows: list[dict]) -> None:
    from interp.localist import plots

    plot(plots.fig_schedules(rows), key="schedules")
    names = list(dict.fromkeys(r["schedule"] for r in rows))
    with guard("the per-layer dials"):
        results = _results(run, names)
        plot(plots.fig_dials({n: r["dials"] for n, r in results.items()}), key="dials")


def render(run: Run) -> None:
    rows = read_json(artefact(run, "table_json"), expect=list)
    st.caption("Localist-style, clean-room construction (group-lasso penalty + additive block "
               "bias); not the patented method of the Localist LLM papers. See docs/localist.md.")
    if run.config.get("mode") == "schedules":
        _schedules(run, rows)
    else:
        _sweep(run, rows)
    with st.expander("table"):
        st.dataframe(rows, hide_index=True)
