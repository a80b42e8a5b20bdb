"""Atoms runs in the workspace (kind "atoms"): the neurons / features / atoms comparison.

A run directory holds `run.json`, `table.json` and `table.parquet` (one row per hook and basis),
`angles.json` (Euclidean vs AIP angle histograms per hook), `coherence.safetensors` (per-unit
AIP coherence, key "<hook>/<basis>"), `metric.safetensors` (S~ per hook) and the trained
dictionaries (`<hook>-atoms/` in SAELens format, raw-space; `<hook>-features/sae/`).
Re-running the same command reuses finished training (the trainer resumes its checkpoints).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from interp.io import atomic_write_json, save_safetensors_atomic
from interp.workspace import is_done, run_context
from saes.atoms.compare import AtomsConfig, collect_activations, compare_bases, load_feature_saes


def ordering(table: list[dict], form: str = "quantile") -> dict:
    """Per hook, whether q* orders atoms > features > neurons (the paper's claim)."""
    out = {}
    for hook in dict.fromkeys(r["hook"] for r in table):
        q = {r["basis"]: r[f"q_star_{form}"] for r in table if r["hook"] == hook}
        out[hook] = bool(q["atoms"] > q["features"] > q["neurons"])
    return out


def atoms_run(cfg: AtomsConfig, name: str = "atoms", workspace=None, out=None, model=None,
              progress: bool = True, acts: dict | None = None):
    """Collect activations (unless `acts` {hook: rows} is given), run the comparison, write a
    run of kind "atoms"; returns the run."""
    import pyarrow as pa

    from saes.features.index import _write_parquet_atomic

    t0 = time.perf_counter()
    with run_context("atoms", name, cfg.to_dict(), root=workspace, path=out) as run:
        feature_saes = load_feature_saes(cfg.sae_runs) if cfg.sae_runs else None
        if acts is None:
            if model is None:
                from interp.models.loading import load_model

                model = load_model(cfg.model or None, device=cfg.device, dtype=cfg.dtype)
            acts = collect_activations(model, cfg, progress=progress)
        acts = {h: acts[h] for h in cfg.hooks}
        t1 = time.perf_counter()
        res = compare_bases(acts, cfg, run.path, feature_saes, progress=progress)
        table = res["table"]
        atomic_write_json(run.path / "table.json", table)
        _write_parquet_atomic(pa.Table.from_pylist(table), run.path / "table.parquet")
        atomic_write_json(run.path / "angles.json", res["angles"])
        save_safetensors_atomic(res["coherence"], run.path / "coherence.safetensors")
        save_safetensors_atomic({h: s.float() for h, s in res["metrics"].items()},
                                run.path / "metric.safetensors")
        metrics = {"rows": int(next(iter(acts.values())).shape[0]),
                   "capture_seconds": round(t1 - t0, 1),
                   "seconds": round(time.perf_counter() - t0, 1),
                   "ordering_holds": ordering(table)}
        for basis in ("neurons", "features", "atoms"):
            rows = [r for r in table if r["basis"] == basis]
            for k in ("q_star_quantile", "q_star_per_unit", "r2_euclid", "r2_aip", "l0_mean"):
                metrics[f"{basis}_{k}"] = sum(r[k] for r in rows) / len(rows)
        run.finish(metrics=metrics, artefacts={
            "table": "table.json", "table_parquet": "table.parquet", "angles": "angles.json",
            "coherence": "coherence.safetensors", "metric": "metric.safetensors"})
    return run


DEMO = AtomsConfig(n_tokens=8192, train_tokens=40 * 512, batch_size=512, width_mult=2,
                   n_angle_pairs=5000, n_recovery=8, max_eval=1024)


def demo_step(workspace: Path, echo=print, cfg: AtomsConfig = DEMO, device: str = "auto") -> Path:
    """Demo: the neurons / features / atoms table at layers 5, 15, 25 of the default model at a
    small scale (about a minute); skipped when done. Returns the run directory."""
    from interp.workspace import run_dir

    path = run_dir("atoms", "demo-atoms", workspace)
    if is_done(path):
        echo(f"atoms: already computed in {path}")
        return path
    echo(f"atoms: neurons vs features vs atoms at {', '.join(cfg.hooks)} on {cfg.n_tokens} "
         "tokens (small-scale settings; the notebook runs a larger one)")
    import dataclasses

    run = atoms_run(dataclasses.replace(cfg, device=device), "demo-atoms", workspace=workspace)
    echo(format_table(json.loads((run.path / "table.json").read_text())))
    return path


def format_table(table: list[dict]) -> str:
    """The comparison as a fixed-width text table (for the CLI and docs/features.md)."""
    cols = ("layer", "basis", "live_units", "l0_mean", "mu_median", "q_star_quantile",
            "q_star_per_unit", "q_star_per_sample", "r2_euclid", "r2_aip", "omp_exact",
            "omp_checked")
    head = ["layer", "basis", "units", "L0", "mu_med", "q*(quant)", "q*(unit)", "q*(sample)",
            "R2 eu", "R2 aip", "OMP exact", "OMP n"]
    lines = ["  ".join(f"{h:>10}" for h in head)]
    for r in table:
        vals = []
        for c in cols:
            v = r.get(c)
            vals.append(f"{v:>10.4g}" if isinstance(v, float) else f"{str(v):>10}")
        lines.append("  ".join(vals))
    return "\n".join(lines)
