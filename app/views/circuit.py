"""View of a circuit-discovery run (kind "circuit", written by `interp discover` /
`circuits.discovery.runs`): the methods x metrics table, faithfulness curves (components and
edges), component scores against the ground truth, ROC curves, and the dictionary method's
traced features, all drawn by `circuits.discovery.plots`."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, read_json
from app.ui import guard, plot
from interp.workspace import Run


def summary(run: Run) -> dict:
    m = run.metrics
    return {k: m.get(k) for k in ("mode", "n_methods", "best_auroc", "best_auroc_method",
                                  "best_cpr_node", "best_cpr_method")}


def render(run: Run) -> None:
    from circuits.discovery import plots

    path = artefact(run, "report", required=False)
    if path is None:
        st.info("This run has no report yet.")
        return
    report = read_json(path, expect=dict)
    info, reports, truth = report.get("info", {}), report.get("reports", []), report.get("truth")
    if info.get("mode") == "task":
        st.markdown(f"**Task** `{info.get('task')}`: {info.get('description', '')} · model "
                    f"accuracy {info.get('accuracy', float('nan')):.3f} · ablation "
                    f"`{info.get('ablation')}` · {info.get('n_prompts')} prompt pairs")
        if truth:
            st.markdown("**Ground truth** (exhaustive ablation): "
                        + ", ".join(f"`{c}`" for c in truth["components"])
                        + f" · {len(truth['edges'])} edges")
    else:
        st.markdown(f"**Model** `{info.get('model')}` on {info.get('n_prompts')} prompt pairs "
                    f"(no ground truth: faithfulness only) · ablation `{info.get('ablation')}`")
    st.dataframe([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                  for row in report.get("table", [])], use_container_width=True)
    with guard("the summary"):
        plot(plots.fig_summary(report["table"]), key="circuit-summary")
    tabs = st.tabs(["Faithfulness", "Component scores", "ROC", "Dictionary features"])
    with tabs[0], guard("the faithfulness curves"):
        plot(plots.fig_faithfulness(reports, "node"), key="circuit-faith-node")
        if any(r.get("edge_curve") for r in reports):
            plot(plots.fig_faithfulness(reports, "edge"), key="circuit-faith-edge")
    with tabs[1], guard("the component scores"):
        plot(plots.fig_component_scores(reports, report["components"],
                                        truth["components"] if truth else None),
             key="circuit-scores")
        for r in reports:
            st.caption(f"{r['method']}: circuit {', '.join(r.get('circuit', [])) or '-'}")
    with tabs[2]:
        if truth:
            with guard("the ROC curves"):
                plot(plots.fig_roc(reports, report["components"], truth["components"]),
                     key="circuit-roc")
        else:
            st.info("No ground truth for this run.")
    with tabs[3]:
        dic = next((r for r in reports if r["method"] == "dictionary"), None)
        if dic is None:
            st.info("The dictionary method was not run.")
        else:
            with guard("the traced features"):
                _dictionary(dic, plots)


def _dictionary(rep: dict, plots) -> None:
    extra = rep.get("extra", {})
    labels = extra.get("board_labels", {})
    named = lambda items: [{**d, "label": f"{d['label']} ({labels[d['label']]})"  # noqa: E731
                            if d["label"] in labels else d["label"]} for d in items]
    fvu = ", ".join(f"{k} {v:.3f}" for k, v in extra.get("fvu", {}).items())
    st.caption(f"dictionary FVU: {fvu} · exactness {extra.get('exactness')}")
    plot(plots.fig_contributions(named(extra.get("top_direct", [])),
                                 "Direct contributions to the target logit"), key="dict-direct")
    plot(plots.fig_contributions(named(extra.get("top_total", [])),
                                 "Total effects (frozen patterns)"), key="dict-total")
    qk = extra.get("qk")
    if qk:
        st.markdown(f"**QK split** of `{qk['head']}` (score {qk['score']:.3f}, mean key offset "
                    f"{qk['mean_key_offset']:.1f})")
        st.dataframe([{"query feature": p["q"], "key feature": p["k"],
                       "contribution": round(p["value"], 4),
                       "query label": labels.get(p["q"], ""), "key label": labels.get(p["k"], "")}
                      for p in qk["pairs"]], use_container_width=True)
