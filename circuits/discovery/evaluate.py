"""Running methods side by side on a task and scoring them: the methods x tasks table.

`discover_task` loads a task's committed model and its stored ground truth, makes a fresh batch
of prompt pairs, builds one `TinyContext`, runs each requested method on it and scores it
(`score_result`): ROC AUC of the component scores against the ground-truth components (and of
edge scores against the ground-truth edges for edge-level methods), precision and recall of
the top-|truth| components and of the method's own circuit, faithfulness curves with CPR and
CMD at the component level (every size) and, for edge-level methods, the edge level (MIB's
grid), and the method's wall time. The same scoring without a ground truth gives the curves
only (the default model on a user's prompts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from circuits.discovery.context import PatchContext, check_ablation
from circuits.discovery.methods import DEFAULT_METHODS, get_method, method_options, parse_methods
from circuits.discovery.result import MethodResult
from circuits.discovery.scoring import (faithfulness_curve, precision_recall, roc_auc,
                                        smallest_faithful, top_masks)
from interp.config import Config
from interp.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveryConfig(Config):
    """One comparison: which task (or model), which methods with which options, on how many
    prompt pairs, under which ablation, scored on which grids."""

    task: str = "induction"
    methods: tuple[str, ...] = DEFAULT_METHODS
    n_prompts: int = 64
    seed: int = 0
    ablation: str = "resample"  # resample | mean
    edge_grid: str = "mib"  # MIB's fractions, or "every" size
    node_grid: str = "every"
    faithful: float = 0.8  # a method's circuit: the smallest top-k with f >= this
    options: dict = field(default_factory=dict)  # {"eap-ig": {"steps": 10}, ...}

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(parse_methods(list(self.methods))))
        check_ablation(self.ablation)
        for m, opts in self.options.items():
            if m not in self.methods:
                raise ConfigError(f"Options given for {m!r}, which is not among the methods "
                                  f"{list(self.methods)}.")
            method_options(m, opts)  # validates the names


def score_result(ctx: PatchContext, result: MethodResult, truth_components=None,
                 truth_edges=None, edge_grid="mib", node_grid="every", faithful: float = 0.8
                 ) -> dict:
    """Curves, CPR/CMD and (with a truth) ROC AUC, precision and recall of one result."""
    report = {"method": result.method, "level": result.level,
              "seconds": round(result.seconds, 4), "extra": result.extra}
    node_curve = faithfulness_curve(ctx, result.component_scores, "node", node_grid)
    report["node_curve"] = node_curve.to_dict()
    report["cpr_node"], report["cmd_node"] = node_curve.cpr, node_curve.cmd
    circuit = (result.selected if result.selected is not None
               else smallest_faithful(node_curve, result.component_scores, faithful))
    report["circuit"] = [ctx.graph.component_names[c] for c in circuit.nonzero()[:, 0].tolist()]
    if result.level == "edge":
        edge_curve = faithfulness_curve(ctx, result.scores, "edge", edge_grid)
        report["edge_curve"] = edge_curve.to_dict()
        report["cpr_edge"], report["cmd_edge"] = edge_curve.cpr, edge_curve.cmd
    if truth_components is not None:
        t = truth_components.bool()
        report["auroc"] = roc_auc(result.component_scores, t)
        top = top_masks(result.component_scores, [int(t.sum())])[0]
        report["at_truth_size"] = precision_recall(top, t)
        report["own_circuit"] = precision_recall(circuit, t)
        if (result.level == "edge" and truth_edges is not None
                and 0 < truth_edges.sum() < len(truth_edges)):
            report["auroc_edges"] = roc_auc(result.scores, truth_edges.bool())
    return report


def run_methods(ctx: PatchContext, methods, options: dict | None = None, progress: bool = False
                ) -> list[MethodResult]:
    """Run each method on the context (in order), with its options."""
    from tqdm.auto import tqdm

    results = []
    bar = tqdm(list(methods), desc="methods", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        opts = method_options(name, (options or {}).get(name))
        results.append(get_method(name)(ctx, **{k: tuple(v) if isinstance(v, list) else v
                                               for k, v in opts.items()}))
        log.info("%s %s: %.2f s", name, opts, results[-1].seconds)
    return results


def discover_task(cfg: DiscoveryConfig, progress: bool = False):
    """Every method of `cfg` on its task's committed model; returns (reports, results,
    context, loaded task)."""
    from circuits.discovery.context import TinyContext
    from circuits.tasks import load_task

    loaded = load_task(cfg.task)
    batch = loaded.task.batch(cfg.n_prompts, seed=cfg.seed)
    ctx = TinyContext(loaded.model, batch, loaded.task.metric, cfg.ablation)
    results = run_methods(ctx, cfg.methods, cfg.options, progress)
    truth_c, truth_e = loaded.truth_components, loaded.truth_edges
    reports = [score_result(ctx, r, truth_c, truth_e, cfg.edge_grid, cfg.node_grid, cfg.faithful)
               for r in results]
    return reports, results, ctx, loaded


def table(reports: list[dict], task: str = "") -> list[dict]:
    """One row per method: the figures the docs' table shows."""
    rows = []
    for r in reports:
        row = {"task": task, "method": r["method"], "auroc": r.get("auroc"),
               "precision": r.get("own_circuit", {}).get("precision"),
               "recall": r.get("own_circuit", {}).get("recall"),
               "cpr_node": r["cpr_node"], "cmd_node": r["cmd_node"],
               "cpr_edge": r.get("cpr_edge"), "cmd_edge": r.get("cmd_edge"),
               "auroc_edges": r.get("auroc_edges"), "seconds": r["seconds"]}
        rows.append(row)
    return rows
