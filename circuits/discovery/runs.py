"""Circuit-discovery runs in the workspace (kind "circuit").

A run directory holds `report.json` (the config, the graph's component and edge names, the
ground truth if any, one report per method: scores, faithfulness curves, CPR/CMD, ROC AUC,
precision/recall, seconds; and the summary table) and `scores.safetensors` (every method's
unit and component scores), with the headline numbers in `run.json`'s metrics.

Two modes: a planted-circuit task (`circuit_run`, scored against the stored ground truth) and
any model on prompt pairs a user gives (`prompts_run`, faithfulness curves only).
"""

from __future__ import annotations

import time
from pathlib import Path

from circuits.discovery.evaluate import (DiscoveryConfig, discover_task, run_methods,
                                         score_result, table)
from interp.io import atomic_write_json, save_safetensors_atomic
from interp.workspace import Run, run_context

KIND = "circuit"


def _write(run: Run, reports, results, ctx, truth: dict | None, info: dict) -> None:
    g = ctx.graph
    for rep, res in zip(reports, results):
        rep["component_scores"] = res.component_scores.tolist()
        rep["scores"] = res.scores.tolist()
    rows = table(reports, info.get("task", ""))
    data = {"mode": info.get("mode"), "info": info, "components": g.component_names,
            "edges": g.edge_names, "truth": truth, "reports": reports, "table": rows}
    atomic_write_json(run.path / "report.json", data)
    tensors = {}
    for r in results:
        tensors |= r.tensors(prefix=f"{r.method}.")
    save_safetensors_atomic(tensors, run.path / "scores.safetensors")
    metrics = {"mode": info.get("mode"), "n_methods": len(reports),
               "n_components": g.n_components, "n_edges": g.n_edges}
    for row in rows:
        for key in ("auroc", "cpr_node", "cmd_node", "cpr_edge", "seconds"):
            if row.get(key) is not None:
                metrics[f"{key}.{row['method']}"] = round(float(row[key]), 4)
    scored = [r for r in rows if r.get("auroc") is not None]
    if scored:
        best = max(scored, key=lambda r: r["auroc"])
        metrics |= {"best_auroc": round(best["auroc"], 4), "best_auroc_method": best["method"]}
    best = max(rows, key=lambda r: r["cpr_node"])
    metrics |= {"best_cpr_node": round(best["cpr_node"], 4), "best_cpr_method": best["method"]}
    run.finish(metrics=metrics, artefacts={"report": "report.json", "scores": "scores.safetensors"})


def circuit_run(cfg: DiscoveryConfig, name: str | None = None, workspace=None,
                out: str | Path | None = None, progress: bool = False) -> Run:
    """Every method of `cfg` on its task, scored against the ground truth, as a run."""
    with run_context(KIND, name or cfg.task, {"mode": "task", **cfg.to_dict()},
                     root=workspace, path=out) as run:
        t0 = time.perf_counter()
        reports, results, ctx, loaded = discover_task(cfg, progress)
        gt = loaded.info["ground_truth"]
        info = {"mode": "task", "task": cfg.task, "description": loaded.task.description,
                "accuracy": loaded.info.get("accuracy"), "ablation": cfg.ablation,
                "n_prompts": cfg.n_prompts, "metric_full": ctx.full_metric,
                "metric_empty": ctx.empty_metric, "seconds_total": time.perf_counter() - t0}
        _write(run, reports, results, ctx, {"components": gt["components"],
                                            "edges": gt["edges"]}, info)
    return run


def prompts_run(pairs: list[dict], methods=("eap", "eap-ig"), model=None,
                ablation: str = "resample", options: dict | None = None, name: str = "prompts",
                workspace=None, out: str | Path | None = None, grid: str = "mib",
                progress: bool = False) -> Run:
    """Methods on any model (the default model if None) and prompt pairs {clean, corrupt,
    answer, distractor}: component scores and faithfulness curves, no ground truth."""
    from circuits.discovery.hooked import HookedContext, prompt_batch
    from circuits.discovery.methods import TASK_MODEL_ONLY, parse_methods
    from interp.errors import ConfigError
    from interp.models.loading import load_model

    methods = parse_methods(list(methods))
    bad = [m for m in methods if m in TASK_MODEL_ONLY]
    if bad:
        raise ConfigError(f"Methods {bad} need a task model; on prompts use "
                          "patching, eap, eap-ig, acdc or discrete.")
    settings = {"mode": "prompts", "model": getattr(model, "name", model) or "default",
                "methods": methods, "ablation": ablation, "options": options or {},
                "n_prompts": len(pairs), "grid": grid, "prompts": pairs}
    with run_context(KIND, name, settings, root=workspace, path=out) as run:
        m = model if hasattr(model, "run_with_cache") else load_model(model)
        ctx = HookedContext(m, prompt_batch(m, pairs), ablation=ablation)
        results = run_methods(ctx, methods, options, progress)
        reports = [score_result(ctx, r, node_grid=grid) for r in results]
        info = {"mode": "prompts", "task": "", "model": m.name, "ablation": ablation,
                "n_prompts": len(pairs), "metric_full": ctx.full_metric,
                "metric_empty": ctx.empty_metric}
        _write(run, reports, results, ctx, None, info)
    return run


def load_report(run) -> dict:
    """The report of a "circuit" run (a `Run` or its directory)."""
    from interp.io import read_json
    from interp.workspace import load_run

    run = load_run(run) if not hasattr(run, "artefact") else run
    return read_json(run.artefact("report"))
