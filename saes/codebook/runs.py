"""Codebook runs in the workspace (kind "codebook"): train, TokFSM, steer.

Each run writes `run.json` (config, metrics, artefacts) beside its files:
- train: `codebooks.safetensors` + `codebooks.json`, `training.jsonl`, `code_stats.json`
  (per hook: active share, effective codes, firing counts, top codes with contexts/tokens).
- fsm: `model/` (HF model), codebooks, `fsm_config.json`, `training.jsonl`, `analysis.json`
  (transition accuracy, purity, precision/recall, patching, steering), `code_state.safetensors`
  (code x state firing tables at the MLP hooks).
- steer: `steering.json` (shares and samples), and the code search that chose the codes.
- topic-steer (`saes.codebook.topic`, the default-model example and the demo step): codebooks,
  `code_stats.json` (with the steering codes' tokens and contexts), `steering.json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.config import Config
from interp.errors import InterpError
from interp.io import atomic_write_bytes, atomic_write_json, save_safetensors_atomic
from interp.workspace import run_context
from saes.codebook.bottleneck import CodebookConfig
from saes.codebook.train import CodebookTrainConfig

KIND = "codebook"


def _jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


@dataclass(frozen=True)
class TrainRunConfig(Config):
    """A codebook training run on a language model and a corpus."""

    model: str | None = None  # None: the default model
    hooks: tuple[str, ...] = ("blocks.8.attn.hook_z",)
    codebook: CodebookConfig = field(default_factory=lambda: CodebookConfig(
        n_codes=512, k=8, layer_norm=False))
    train: CodebookTrainConfig = field(default_factory=lambda: CodebookTrainConfig(
        steps=20, objective="reconstruction", lr=1e-2, log_every=5))
    corpus: str = "cpython"
    context_size: int = 64
    batch_size: int = 8
    kmeans_windows: int = 64  # windows for the k-means initialisation (0: random codes)
    kmeans_iters: int = 10
    eval_windows: int = 8
    device: str = "auto"  # where the model and its codebooks run (interp.devices)
    dtype: str = "float32"  # the model's compute dtype

    def __post_init__(self):
        from interp.devices import check_device, check_dtype

        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "dtype", check_dtype(self.dtype))


def corpus_windows(model, cfg: TrainRunConfig, n: int) -> torch.Tensor:
    from interp.data import CorpusSpec, token_windows

    return token_windows(CorpusSpec(source=cfg.corpus), model.tokenizer, cfg.context_size,
                         n_tokens=n * cfg.context_size)


@torch.no_grad()
def evaluate_lm(cb, windows: torch.Tensor, batch_size: int = 8) -> dict:
    """Next-token CE of the model alone and with its codebooks (and the difference)."""
    from saes.codebook.train import lm_loss

    base, with_cb = [], []
    for i in range(0, len(windows), batch_size):
        b = windows[i: i + batch_size]
        base.append(float(lm_loss(cb.model(b), b)))
        with_cb.append(float(lm_loss(cb(b), b)))
    b, c = sum(base) / len(base), sum(with_cb) / len(with_cb)
    return {"ce_base": b, "ce_codebooks": c, "delta_ce": c - b}


def code_stats(cb, table, tokenizer, top: int = 5) -> dict:
    """Per hook: summary of the firing counts and the most used codes with contexts/tokens."""
    from saes.codebook.stats import code_counts, code_tokens, summary, top_contexts

    out = {}
    for h, layer in cb.items():
        counts = code_counts(table, h, layer.cfg.n_codes)
        flat = counts.reshape(-1)
        best = flat.topk(min(top, flat.numel())).indices.tolist()
        codes = []
        for i in best:
            g, c = divmod(i, layer.cfg.n_codes)
            codes.append({"group": g, "code": c, "count": int(flat[i]),
                          "tokens": code_tokens(table, tokenizer, h, c, g, 5),
                          "contexts": top_contexts(table, tokenizer, h, c, g, 3)})
        out[h] = {**summary(counts), "counts": counts.tolist(), "top_codes": codes}
    return out


def train_run(cfg: TrainRunConfig, workspace=None, name: str = "train", path=None,
              model=None, progress: bool = True):
    """Insert codebooks into a model, train them, evaluate ΔCE and code statistics."""
    from interp.models.loading import load_model
    from saes.codebook.insert import insert_codebooks
    from saes.codebook.stats import collect_codes
    from saes.codebook.train import init_codebooks_from_data, train_codebooks

    with run_context(KIND, name, {"mode": "train", **cfg.to_dict()}, root=workspace,
                     path=path) as run:
        t0 = time.perf_counter()
        model = model if model is not None else load_model(cfg.model, device=cfg.device,
                                                           dtype=cfg.dtype)
        n_train = cfg.train.steps * cfg.batch_size
        windows = corpus_windows(model, cfg, n_train + max(cfg.kmeans_windows, 0) + cfg.eval_windows)
        held_out = windows[: cfg.eval_windows]
        init = windows[cfg.eval_windows: cfg.eval_windows + cfg.kmeans_windows]
        train = windows[cfg.eval_windows + cfg.kmeans_windows:]
        if len(train) < cfg.batch_size:
            raise InterpError(f"The corpus gave {len(windows)} windows of {cfg.context_size} "
                              "tokens: too few to train; lower steps or batch size.")
        cb = insert_codebooks(model, list(cfg.hooks), cfg.codebook)
        if cfg.kmeans_windows:
            init_codebooks_from_data(cb, init, cfg.kmeans_iters, cfg.codebook.seed)
        batches = (train[(i * cfg.batch_size) % len(train):][: cfg.batch_size]
                   for i in range(10 ** 9))
        records = train_codebooks(cb, batches, cfg.train, progress=progress)
        cb.save(run.path)
        _jsonl(run.path / "training.jsonl", records)
        metrics = evaluate_lm(cb, held_out, cfg.batch_size)
        table = collect_codes(cb, held_out.split(cfg.batch_size), progress=False)
        stats = code_stats(cb, table, model.tokenizer)
        atomic_write_json(run.path / "code_stats.json", stats)
        metrics.update({f"{h}/active_frac": s["active_frac"] for h, s in stats.items()})
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        run.finish(metrics=metrics, artefacts={
            "codebooks": "codebooks.safetensors", "codebooks_config": "codebooks.json",
            "training": "training.jsonl", "code_stats": "code_stats.json"})
    return run, cb


def fsm_run(cfg, workspace=None, name: str = "tokfsm", path=None, progress: bool = True,
            n_samples: int = 100):
    """Train the TokFSM model with codebooks and run the paper's analyses."""
    from saes.codebook.fsm_model import save_fsm_model, train_fsm_model

    with run_context(KIND, name, {"mode": "fsm", **cfg.to_dict()}, root=workspace,
                     path=path) as run:
        t0 = time.perf_counter()
        cb, records = train_fsm_model(cfg, progress=progress)
        save_fsm_model(cb, cfg, run.path)
        _jsonl(run.path / "training.jsonl", records)
        analysis = analyse_fsm(cb, cfg, n_samples=n_samples)
        tables = analysis.pop("_tables")
        save_safetensors_atomic(tables, run.path / "code_state.safetensors")
        atomic_write_json(run.path / "analysis.json", analysis)
        metrics = fsm_headline(analysis)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        run.finish(metrics=metrics, artefacts={
            "model": "model", "codebooks": "codebooks.safetensors", "training": "training.jsonl",
            "analysis": "analysis.json", "code_state": "code_state.safetensors"})
    return run, cb


def analyse_fsm(cb, cfg, n_samples: int = 100) -> dict:
    """Everything the paper measures on a TokFSM model (see `fsm_analysis`)."""
    from saes.codebook import fsm_analysis as A

    fsm = cfg.fsm
    out = {"transitions": A.transition_accuracy(cb, fsm, n_samples, cfg.seq_len),
           "first_transition_accuracy": A.first_transition_accuracy(cb, fsm),
           "purity": A.purity_report(cb, fsm), "state_purity": {}, "precision_recall": {},
           "patching": A.patching_report(cb, fsm), "_tables": {}}
    toks, labels = A.state_contexts(fsm, 128, cfg.seq_len)
    mlp = [h for h in cb.hook_names if h.endswith("hook_mlp_out")] or cb.hook_names
    for h in mlp:
        table = A.code_state_counts(cb, fsm, h, toks, labels)
        out["state_purity"][h] = A.state_purity(table)
        out["precision_recall"][h] = A.precision_recall(table)
        out["_tables"][h] = table
    out["steering"] = A.fsm_steering(cb, fsm, mlp)
    return out


def fsm_headline(analysis: dict) -> dict:
    """The run's metrics: accuracy, best MLP state purity vs chance, best patch JSD ratio."""
    sp = analysis["state_purity"]
    best = max(sp, key=lambda h: sp[h]["state_purity"]) if sp else None
    comps = analysis["patching"]["components"]
    mlp = comps.get("all_mlp") or next((v for k, v in comps.items() if "mlp" in k), {})
    return {
        "transition_accuracy": analysis["transitions"]["transition_accuracy"],
        "first_transition_accuracy": analysis["first_transition_accuracy"],
        "best_state_purity_hook": best,
        "state_purity": sp[best]["state_purity"] if best else None,
        "chance_purity": sp[best]["chance_purity"] if best else None,
        "mlp_patch_normalised_jsd": mlp.get("normalised_jsd_token"),
        "steered_share_target": analysis["steering"]["steered_share_target"],
        "baseline_share_target": analysis["steering"]["baseline_share_target"],
    }


def steer_run(source: str | Path, pattern: str, prompts=("",), codes=None, workspace=None,
              name: str = "steer", path=None, n: int = 10, max_new_tokens: int = 20,
              seed: int = 0, model=None, search_windows: int = 32, top_codes: int = 1,
              cb=None, slots: int = 1, device: str = "auto", dtype: str = "float32"):
    """Steer a model with codes of a codebook run: `codes` [(hook, group, code)] or, when
    None, the `top_codes` best codes found by searching `pattern` on corpus windows. The
    model runs on `device` in `dtype` (interp.devices)."""
    from interp.models.loading import load_model
    from saes.codebook.insert import load_codebooks
    from saes.codebook.stats import code_search, collect_codes
    from saes.codebook.steer import topic_steering

    from interp.errors import MissingFile
    from interp.workspace import load_run_of_kind
    from saes.codebook.insert import CODEBOOKS_CONFIG

    source = Path(source)
    src = load_run_of_kind(source, KIND, "`interp codebook steer`")
    if cb is None and not (source / CODEBOOKS_CONFIG).is_file():  # before any model loads
        raise MissingFile(f"No codebooks in {source}: expected {CODEBOOKS_CONFIG} (written by "
                          "`interp codebook train`).")
    config = {"mode": "steer", "source": str(source), "pattern": pattern,
              "prompts": list(prompts), "codes": codes, "n": n,
              "max_new_tokens": max_new_tokens, "seed": seed, "slots": slots,
              "device": device, "dtype": dtype}
    with run_context(KIND, name, config, root=workspace, path=path) as run:
        if cb is None:
            model = model if model is not None else load_model(src.config.get("model"),
                                                               device=device, dtype=dtype)
            cb = load_codebooks(model, source)
        found = []
        if codes is None:
            cfg = src.config
            windows = corpus_windows(cb.model, TrainRunConfig(corpus=cfg.get("corpus", "cpython"),
                                                        context_size=cfg.get("context_size", 64)),
                               search_windows)
            table = collect_codes(cb, windows.split(8), progress=False)
            found = code_search(table, cb.model.tokenizer, pattern, top=top_codes,
                                min_precision=0.0)
            if not found:
                raise InterpError(f"No code fires on {pattern!r} with recall > 0.01; give codes "
                                  "explicitly or another pattern.")
            codes = [(r["hook"], r["group"], r["code"]) for r in found]
        res = topic_steering(cb, codes, pattern, prompts, n=n, max_new_tokens=max_new_tokens,
                             seed=seed, slots=slots)
        res["search"] = found
        atomic_write_json(run.path / "steering.json", res)
        run.finish(metrics={"baseline_share": res["baseline_share"],
                            "steered_share": res["steered_share"]},
                   artefacts={"steering": "steering.json"})
    return run, res
