"""Runs of kind "localist": the AILA-style lambda sweep and the progressive-schedule comparison.

Each writes `runs/localist/<name>/` with `run.json` (config["mode"] = "sweep" | "schedules"),
`table.parquet` + `table.json` (one row per lambda / schedule), `results/*.json` (one per item,
per-layer x head statistics included; a re-run with the same command skips finished items),
`patterns.safetensors` (the attention of one held-out window per item, for heatmaps) and
`figures/*.json` (plotly figures, `plotly.io.read_json`). The sweep also saves each small model's
weights under `models/`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from interp.errors import ConfigError
from interp.io import atomic_write_bytes, atomic_write_json, read_json, save_safetensors_atomic
from interp.localist.blocks import block_structure
from interp.localist.dial import layer_dials, locality_dial
from interp.localist.finetune import ScheduleConfig, compare_schedules
from interp.localist.train import (LocalistConfig, build_char_model, split_windows,
                                   train_localist)
from interp.localist.evaluate import evaluate_dial
from interp.workspace import Run, run_context

log = logging.getLogger(__name__)
KIND = "localist"
TABLE_KEYS = ("entropy_bits", "entropy_bound_bits", "fidelity", "fidelity_argmax", "perplexity",
              "accuracy", "loss")


def parse_floats(text: str) -> list[float]:
    """'0,0.2,...,1' -> [0, 0.2, 0.4, 0.6, 0.8, 1.0]: comma-separated numbers, where '...'
    continues the step of the two numbers before it up to the number after it."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    out: list[float] = []
    try:
        for i, p in enumerate(parts):
            if p == "...":
                if len(out) < 2 or i + 1 >= len(parts):
                    raise ConfigError(f"'...' in {text!r} needs two numbers before it and one "
                                      "after it, e.g. 0,0.2,...,1.")
                step, end = out[-1] - out[-2], float(parts[i + 1])
                if step <= 0:
                    raise ConfigError(f"'...' in {text!r} needs increasing numbers before it.")
                while out[-1] + step < end - 1e-9:
                    out.append(round(out[-1] + step, 10))
            else:
                out.append(float(p))
    except ValueError as e:
        raise ConfigError(f"Cannot read {text!r} as comma-separated numbers: {e}.") from e
    if not out:
        raise ConfigError(f"No numbers in {text!r}; give e.g. 0,0.2,...,1.")
    return list(dict.fromkeys(out))


def _key(lam: float) -> str:
    return f"lam{lam:g}"


def _write_figures(run: Run, figures: dict) -> dict:
    arts = {}
    for key, fig in figures.items():
        rel = f"figures/{key}.json"
        atomic_write_bytes(run.path / rel, fig.to_json().encode())
        arts[f"fig_{key}"] = rel
    return arts


def _write_table(run: Run, rows: list[dict]) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    atomic_write_json(run.path / "table.json", rows)
    flat = [{k: (v if not isinstance(v, (list, dict)) else str(v)) for k, v in r.items()}
            for r in rows]
    tmp = run.path / ".table.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(flat), tmp)
    os.replace(tmp, run.path / "table.parquet")
    return {"table": "table.parquet", "table_json": "table.json"}


def _cached(path: Path, config: dict) -> dict | None:
    try:
        d = read_json(path, expect=dict)
    except (OSError, ValueError):
        return None
    return d if d.get("config") == config else None


@torch.no_grad()
def _example_patterns(model, ids: torch.Tensor, spec, dials, strength) -> dict[str, torch.Tensor]:
    blocks, tmask = block_structure(ids, spec, model.tokenizer)
    with locality_dial(model, dials, tmask, strength, record=True) as state:
        model.forward(ids)
    return {f"layer{layer}": p[0].float() for layer, p in state.patterns.items()} | {
        "blocks": blocks[0]}


def _row(item: dict, **extra) -> dict:
    return {**extra, **{k: item.get(k) for k in TABLE_KEYS}}


# ----------------------------------------------------------------------------- the lambda sweep
def run_sweep(lambdas: Sequence[float], base: LocalistConfig | None = None, *,
              name: str | None = None, out: str | os.PathLike | None = None,
              workspace=None, inference: bool = True, progress: bool = False) -> Run:
    """Train one small model per lambda and evaluate it at that lambda (the AILA-style table);
    with `inference`, also turn the lambda=0 model's dial to each lambda without retraining."""
    from interp.localist import plots

    base = base or LocalistConfig()
    lambdas = [float(x) for x in lambdas]
    if not lambdas:
        raise ConfigError("Give at least one lambda, e.g. --lambdas 0,0.2,...,1.")
    layer_dials(lambdas, len(lambdas))  # all in [0, 1], checked before any work
    name = name or (Path(out).name if out else "sweep")
    config = {"mode": "sweep", "lambdas": lambdas, "inference": inference,
              "base": base.to_dict()}
    with run_context(KIND, name, config, root=workspace, path=out) as run:
        _, held_out = split_windows(base)
        example = held_out[:1]
        rows, results, patterns = [], {}, {}
        for lam in sorted(set(lambdas) | ({0.0} if inference else set())):
            cfg = dataclasses.replace(base, lam=lam)
            res_path = run.path / "results" / f"{_key(lam)}.json"
            model_path = run.path / "models" / f"{_key(lam)}.safetensors"
            res = _cached(res_path, cfg.to_dict())
            if res is None or not model_path.is_file():
                model, history = train_localist(cfg, progress=progress)
                metrics = evaluate_dial(model, held_out, cfg.blocks, cfg.layer_dials(),
                                        cfg.bias_strength)
                res = {"config": cfg.to_dict(), "lam": lam, "history": history, **metrics}
                state = {k: v for k, v in model.hf_model.state_dict().items()
                         if k != "lm_head.weight"}  # tied to the embeddings
                save_safetensors_atomic(state, model_path)
                atomic_write_json(res_path, res)
            else:
                model = load_sweep_model(run.path, lam, cfg)
            results[lam] = res
            for k, v in _example_patterns(model, example, cfg.blocks, cfg.layer_dials(),
                                          cfg.bias_strength).items():
                patterns[f"trained/{_key(lam)}/{k}"] = v
            if lam in lambdas:
                rows.append(_row(res, mode="trained", lam=lam,
                                 final_train_ce=res["history"][-1]["ce"]))
            if inference and lam == 0.0:
                zero_model = model
        if inference:
            for lam in lambdas:
                m = evaluate_dial(zero_model, held_out, base.blocks, lam, base.bias_strength)
                results[f"inference/{lam:g}"] = m
                rows.append(_row(m, mode="inference", lam=lam))
                for k, v in _example_patterns(zero_model, example, base.blocks, lam,
                                              base.bias_strength).items():
                    patterns[f"inference/{_key(lam)}/{k}"] = v
            atomic_write_json(run.path / "results" / "inference.json",
                              {k: v for k, v in results.items() if isinstance(k, str)})
        save_safetensors_atomic(patterns, run.path / "patterns.safetensors")
        arts = _write_table(run, rows)
        arts["patterns"] = "patterns.safetensors"
        arts["results"] = "results"
        arts["models"] = "models"
        trained = [r for r in rows if r["mode"] == "trained"]
        figs = {"tradeoff": plots.fig_tradeoff(rows),
                "training": plots.fig_training_curves({r: results[r]["history"]
                                                       for r in lambdas}),
                "heads_entropy": plots.fig_layer_heads(results[max(lambdas)]["per_head"],
                                                       "entropy",
                                                       f"lambda={max(lambdas):g}")}
        arts.update(_write_figures(run, figs))
        best = min(trained, key=lambda r: r["perplexity"])
        lo, hi = trained[0], trained[-1]
        metrics = {"best": f"lambda={best['lam']:g}", "best_perplexity": best["perplexity"],
                   "entropy_drop_bits": lo["entropy_bits"] - hi["entropy_bits"],
                   "fidelity_gain": hi["fidelity"] - lo["fidelity"],
                   **{f"{k}@{r['lam']:g}": r[k] for r in trained
                      for k in ("entropy_bits", "fidelity", "perplexity", "accuracy")}}
        run.finish(metrics=metrics, artefacts=arts)
    return run


def load_sweep_model(run_path: str | os.PathLike, lam: float,
                     cfg: LocalistConfig | None = None):
    """The small model a sweep trained at `lam`, as a HookedModel."""
    from interp.errors import BadFormat
    from interp.io import load_safetensors

    run_path = Path(run_path)
    if cfg is None:
        f = run_path / "results" / f"{_key(lam)}.json"
        d = read_json(f, expect=dict).get("config")
        if not isinstance(d, dict):
            raise BadFormat(f"{f} has no 'config' object; run the sweep again.")
        cfg = LocalistConfig.from_dict(d)
    weights = load_safetensors(run_path / "models" / f"{_key(lam)}.safetensors",
                               "run the sweep again.")
    model = build_char_model(cfg)
    try:
        missing, unexpected = model.hf_model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise BadFormat(f"The weights in {run_path} do not fit the model of its config "
                        f"({str(e).splitlines()[0]}).") from e
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise ConfigError(f"The weights in {run_path} do not fit the model of its config "
                          f"(missing {missing}, unexpected {unexpected}).")
    model.hf_model.tie_weights()
    return model


# ----------------------------------------------------------------------------- the schedules
def run_schedules(cfg: ScheduleConfig | None = None, *, model=None, name: str | None = None,
                  out: str | os.PathLike | None = None, workspace=None,
                  progress: bool = False) -> Run:
    """Compare the uniform baselines and the progressive schedules on a pretrained model."""
    from interp.localist import plots
    from interp.models.loading import load_model

    cfg = cfg or ScheduleConfig()
    name = name or (Path(out).name if out else "schedules")
    config = {"mode": "schedules", **cfg.to_dict()}
    with run_context(KIND, name, config, root=workspace, path=out) as run:
        model = model or load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
        item_cfg = cfg.to_dict()

        def done(s: str):
            return _cached(run.path / "results" / f"{s}.json", item_cfg)

        def save(s: str, res: dict):
            atomic_write_json(run.path / "results" / f"{s}.json", {"config": item_cfg, **res})

        results = compare_schedules(model, cfg, progress=progress, done=done, save=save)
        rows = []
        for res in results:
            rows.append(_row(res["inference"], mode="inference", schedule=res["schedule"],
                             beta=res["beta"]))
            if "finetuned" in res:
                rows.append(_row(res["finetuned"], mode="finetuned", schedule=res["schedule"],
                                 beta=res["beta"]))
        arts = _write_table(run, rows)
        arts["results"] = "results"
        figs = {"schedules": plots.fig_schedules(rows),
                "dials": plots.fig_dials({r["schedule"]: r["dials"] for r in results})}
        arts.update(_write_figures(run, figs))
        final = "finetuned" if any(r["mode"] == "finetuned" for r in rows) else "inference"
        base = next(r for r in rows if r["mode"] == final
                    and r["schedule"] == "uniform-distributed")
        finals = {r["schedule"]: r for r in rows if r["mode"] == final}
        best = min(finals.values(), key=lambda r: r["perplexity"] if r["schedule"] not in (
            "uniform-distributed",) else float("inf")) if len(finals) > 1 else base
        loc = finals.get("uniform-localist", base)
        metrics = {f"{k}@{r['schedule']}": r[k] for r in finals.values()
                   for k in ("perplexity", "entropy_bits", "fidelity")}
        metrics.update({"best": best["schedule"], "best_perplexity": best["perplexity"],
                        "entropy_drop_bits": base["entropy_bits"] - loc["entropy_bits"],
                        "fidelity_gain": loc["fidelity"] - base["fidelity"]})
        metrics["perplexity_ratio_vs_distributed"] = {
            r["schedule"]: r["perplexity"] / base["perplexity"] for r in rows if r["mode"] == final}
        metrics["compared"] = final
        run.finish(metrics=metrics, artefacts=arts)
    return run
