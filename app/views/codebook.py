"""View of a codebook run (kind "codebook", written by `interp codebook train | fsm | steer` /
`saes.codebook.runs`): training curves, code usage, TokFSM purity / code x state table /
patching / steering, and steering shares with samples, all drawn by `saes.codebook.plots`."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, read_json, read_jsonl
from app.ui import guard, plot
from interp.workspace import Run


def render(run: Run) -> None:
    from saes.codebook import plots

    mode = run.config.get("mode")
    path = artefact(run, "training", required=False)
    if path is not None:
        with guard("the training curves"):
            records, _ = read_jsonl(path)
            plot(plots.fig_training(records), key="cb-training")
    if mode == "fsm":
        analysis = read_json(artefact(run, "analysis"), expect=dict)
        with guard("purity"):
            plot(plots.fig_purity(analysis["purity"], analysis.get("state_purity")),
                 key="cb-purity")
        with guard("the code x state table"):
            from safetensors.torch import load_file

            tables = load_file(str(artefact(run, "code_state")))
            if tables:
                hook = st.selectbox("Hook", sorted(tables))
                plot(plots.fig_code_state(tables[hook], hook), key="cb-code-state")
        with guard("patching"):
            plot(plots.fig_patching(analysis["patching"]), key="cb-patching")
        with guard("steering"):
            plot(plots.fig_steering(analysis["steering"]), key="cb-fsm-steering")
    stats_path = artefact(run, "code_stats", required=False)
    if stats_path is not None:
        stats = read_json(stats_path, expect=dict)
        for hook, s in stats.items():
            with guard(f"code usage at {hook}"):
                plot(plots.fig_code_counts(s["counts"], hook), key=f"cb-counts-{hook}")
                st.dataframe([{k: c[k] for k in ("group", "code", "count")}
                              | {"tokens": ", ".join(repr(t) for t, _ in c["tokens"])}
                              for c in s["top_codes"]], use_container_width=True)
            if s.get("steering_codes"):  # topic-steering runs: the codes the search chose
                st.markdown("**Steering codes** (code search: precision, recall)")
                st.dataframe([{k: c[k] for k in ("code", "precision", "recall", "firings")}
                              | {"tokens": ", ".join(repr(t) for t, _ in c["tokens"]),
                                 "context": " | ".join(f"{x['before'][-30:]}[{x['token']}]"
                                                       for x in c["contexts"][:3])}
                              for c in s["steering_codes"]], use_container_width=True)
    steer_path = artefact(run, "steering", required=False)
    if steer_path is not None:
        res = read_json(steer_path)
        with guard("steering"):
            plot(plots.fig_steering(res), key="cb-steering")
            alone = (f"; model without codebooks {res['model_share']:.2f}"
                     if "model_share" in res else "")
            st.caption(f"pattern {res.get('pattern')!r}, codes {res.get('codes')}{alone}")
            for p in res.get("prompts", [])[:4]:
                st.text(f"{p['prompt']!r} steered: " + " | ".join(p["steered_samples"][:3]))
