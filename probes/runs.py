"""Probe, lens and geometry runs: collect activations, analyse, write a run into the workspace.

Run kinds and their artefacts (all under `runs/<kind>/<name>/`):

- `probe`: `layers.json` (one row per hook: val/train/control accuracy, selectivity, L2, sizes),
  `probes.safetensors` (`<hook>.weight` [d, classes], `<hook>.bias`).
- `lens`: `layers.json` (one row per residual state: KL, prediction error and top-1 agreement of
  the logit lens with and without the final norm and of the tuned lens), `example.json` (one
  text under the lens: per state x position error and top-1 token), `tuned_lens.safetensors`.
- `geometry`: `layers.json` (per state: linearity to the next state, centred linearity,
  intrinsic dimension, anisotropy, mean token nonlinearity), `token_nonlinearity.safetensors`
  ([n_layers, n] per-token E, `tokens`) and `example.json` (the first tokens and their E).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.config import Config
from interp.io import atomic_write_json, save_safetensors_atomic
from probes.activations import collect, corpus_token_set, residual_hooks, state_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig(Config):
    """Which text, how much of it, and how it is cut (shared by the three run kinds)."""

    model: str = "SmolLM2-135M-Instruct"
    corpus: str = ""  # "" = the task's corpus (probe) or python-docs
    max_tokens: int = 4096
    context_size: int = 128
    max_docs: int | None = None
    chunks_per_doc: int = 1  # at most this many chunks of context_size tokens per document
    batch_size: int = 8
    activations: str = ""  # lens/geometry: read an activation store holding every residual
    #                        hook (`interp cache --hooks ...`) instead of running the model
    seed: int = 0
    device: str = "auto"  # where the model runs (interp.devices); probes fit on the host
    dtype: str = "float32"  # the model's compute dtype

    def __post_init__(self):
        from interp.devices import check_device, check_dtype

        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "dtype", check_dtype(self.dtype))


@dataclass(frozen=True)
class ProbeConfig(DataConfig):
    task: str = "word_class"  # probes.labels task name, or spans:<file.jsonl>
    layers: str = "all"  # "all", or comma-separated state indices ("embed" or block numbers)
    hook: str = ""  # probe this hook name instead of the residual stream ("" = residual)
    kind: str = "logistic"  # logistic | ridge
    control: str = "type"  # type | shuffle | none
    val_frac: float = 0.2
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    max_iter: int = 100


@dataclass(frozen=True)
class LensConfig(DataConfig):
    val_frac: float = 0.2
    tuned_steps: int = 0  # Adam steps on the KL after the least-squares init (0: init only)
    tuned_lr: float = 1e-3
    tuned_batch: int = 128
    ridge: float = 1e-2
    eval_tokens: int = 512  # held-out tokens scored (the unembedding is the costly part)
    example: str = "The capital of France is Paris, and the capital of Italy is"


@dataclass(frozen=True)
class GeometryConfig(DataConfig):
    max_points_twonn: int = 4096


def _load(model, cfg: DataConfig):
    if model is not None:
        return model
    from interp.models.loading import load_model

    return load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)


def _states(model, cfg: DataConfig, task=None, source="python-docs", progress=False):
    hooks = residual_hooks(model.cfg.n_layers)
    if cfg.activations:
        from interp.store import ActivationStore
        from probes.activations import from_store

        store = ActivationStore(cfg.activations)
        missing = [h for h in hooks if h not in store.hooks]
        if missing:
            from interp.errors import ConfigError

            raise ConfigError(f"Store {cfg.activations} lacks {len(missing)} residual hooks "
                              f"(e.g. {missing[0]}); cache them all: interp cache --hooks "
                              f"{','.join(hooks[:2])},... or leave `activations` empty.")
        acts = from_store(store, hooks)
        if cfg.max_tokens and len(acts) > cfg.max_tokens:
            keep = torch.arange(cfg.max_tokens)
            acts.acts = {h: v[keep] for h, v in acts.acts.items()}
            acts.tokens, acts.next_tokens = acts.tokens[keep], acts.next_tokens[keep]
            acts.doc, acts.labels = acts.doc[keep], acts.labels[keep]
        return acts, hooks
    ts = corpus_token_set(model, cfg.corpus or source, cfg.context_size, cfg.max_tokens, task,
                          cfg.max_docs, seed=cfg.seed, chunks_per_doc=cfg.chunks_per_doc)
    return collect(model, ts, hooks, cfg.batch_size, progress=progress), hooks


def _select_states(spec: str, n_layers: int) -> list[int]:
    names = state_names(n_layers)
    if spec == "all":
        return list(range(n_layers + 1))
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part not in names:
            from interp.errors import ConfigError

            raise ConfigError(f"Unknown layer {part!r}: use 'all', 'embed' or 0..{n_layers - 1}.")
        out.append(names.index(part))
    return out


def probe_run(cfg: ProbeConfig, workspace=None, name: str = "", model=None, path=None,
              progress: bool = True, acts=None):
    """Probe every selected residual state (or one hook) for `cfg.task`; write a `probe` run.

    `acts` (an `Activations` labelled for the same task and holding the hooks) reuses data.
    """
    from interp.workspace import run_context
    from probes.labels import get_task
    from probes.linear import probe_layers

    if cfg.activations:
        from interp.errors import ConfigError

        raise ConfigError("Probes need each token's text and document to label it; a store "
                          "has neither, so leave `activations` empty (the probe runs the model).")
    task = get_task(cfg.task)
    name = name or f"{task.name.replace(':', '-').replace('/', '-')}-{cfg.kind}"
    with run_context("probe", name, _jsonable(cfg), root=workspace, path=path) as run:
        t0 = time.perf_counter()
        model = _load(model, cfg)
        if cfg.hook:
            hooks, labels = [cfg.hook], [cfg.hook]
        else:
            all_hooks = residual_hooks(model.cfg.n_layers)
            idx = _select_states(cfg.layers, model.cfg.n_layers)
            hooks = [all_hooks[i] for i in idx]
            labels = [state_names(model.cfg.n_layers)[i] for i in idx]
        if acts is None:
            ts = corpus_token_set(model, cfg.corpus or task.corpus, cfg.context_size,
                                  cfg.max_tokens, task, cfg.max_docs, seed=cfg.seed,
                                  chunks_per_doc=cfg.chunks_per_doc)
            acts = collect(model, ts, hooks, cfg.batch_size, progress=progress)
        elif acts.classes != task.classes:
            from interp.errors import ConfigError

            raise ConfigError(f"The activations given are labelled for {acts.classes}, not for "
                              f"task {task.name!r} {task.classes}.")
        rows, fitted = probe_layers({h: acts.acts[h] for h in hooks}, acts.labels, acts.doc,
                                    acts.tokens, cfg.kind,
                                    cfg.control, cfg.l2_grid, cfg.val_frac, cfg.seed,
                                    cfg.max_iter, progress=progress)
        for row, lab in zip(rows, labels):
            row["layer"] = lab
        counts = torch.bincount(acts.labels[acts.labels >= 0], minlength=len(task.classes))
        atomic_write_json(run.path / "layers.json", {"task": task.name, "classes": task.classes,
                                                     "class_counts": counts.tolist(),
                                                     "rows": rows})
        tensors = {f"{h}.{k}": getattr(r, k).contiguous() for h, r in fitted.items()
                   for k in ("weight", "bias")}
        save_safetensors_atomic(tensors, run.path / "probes.safetensors")
        best = max(rows, key=lambda r: r["val_acc"])
        metrics = {"best_layer": best["layer"], "best_val_acc": best["val_acc"],
                   "best_selectivity": best.get("selectivity"),
                   "majority_acc": best["majority_acc"], "n_tokens": len(acts),
                   "n_docs": int(acts.doc.unique().numel()),
                   "seconds": round(time.perf_counter() - t0, 1)}
        run.finish(metrics=metrics, artefacts={"layers": "layers.json",
                                               "probes": "probes.safetensors"})
    return run


def lens_run(cfg: LensConfig, workspace=None, name: str = "lens", model=None, path=None,
             progress: bool = True, states=None):
    """Logit lens (normed and raw) and tuned lens per residual state; write a `lens` run.

    The tuned lens is fitted on training documents and every number is measured on held-out
    documents (at most `cfg.eval_tokens` tokens). `states` = (Activations, hooks) reuses data.
    """
    from interp.workspace import run_context
    from probes.lens import Unembed, fit_tuned_lens, lens_stats, lens_table
    from probes.linear import split_by_document

    with run_context("lens", name, _jsonable(cfg), root=workspace, path=path) as run:
        t0 = time.perf_counter()
        model = _load(model, cfg)
        acts, hooks = states or _states(model, cfg, progress=progress)
        stacked = acts.stacked(hooks)
        val = split_by_document(acts.doc, cfg.val_frac, cfg.seed)
        unembed = Unembed(model)
        tuned, losses = fit_tuned_lens(unembed, stacked[:, ~val], cfg.tuned_steps, cfg.tuned_lr,
                                       cfg.tuned_batch, cfg.ridge, cfg.seed, progress)
        ev = val.nonzero().squeeze(1)[:cfg.eval_tokens]
        sv, nv = stacked[:, ev], acts.next_tokens[ev]
        variants = {"logit": lens_stats(unembed, sv, nv, norm=True),
                    "logit_raw": lens_stats(unembed, sv, nv, norm=False),
                    "tuned": lens_stats(unembed, sv, nv, norm=True, tuned=tuned)}
        names = state_names(model.cfg.n_layers)
        rows = []
        for s, lab in enumerate(names):
            row = {"layer": lab, "state": s, "hook": hooks[s]}
            for v, st in variants.items():
                row[f"kl_{v}"] = st.kl[s]
                row[f"pred_error_{v}"] = st.pred_error[s]
                row[f"top1_agree_{v}"] = st.top1_agree[s]
            rows.append(row)
        atomic_write_json(run.path / "layers.json", {"rows": rows, "tuned_losses": losses})
        save_safetensors_atomic(tuned.state_dict_safetensors(), run.path / "tuned_lens.safetensors")
        ids, _ = model.to_tokens(cfg.example)
        _, cache = model.run_with_cache(ids, hooks=hooks)
        ex_states = torch.stack([cache[h][0, 1:].float().cpu() for h in hooks])
        ex_tokens = ids[0, 1:].cpu()
        ex_next = torch.cat([ex_tokens[1:], torch.tensor([-1])])
        to_str = lambda t: model.tokenizer.decode([t])  # noqa: E731
        example = {v: lens_table(unembed, ex_states, ex_tokens, ex_next, to_str, norm=n, tuned=tu)
                   for v, n, tu in (("logit", True, None), ("logit_raw", False, None),
                                    ("tuned", True, tuned))}
        example["layers"] = names
        atomic_write_json(run.path / "example.json", example)
        mid = len(names) // 2
        metrics = {"kl_logit_mid": rows[mid]["kl_logit"], "kl_tuned_mid": rows[mid]["kl_tuned"],
                   "kl_logit_raw_mid": rows[mid]["kl_logit_raw"], "mid_layer": names[mid],
                   "kl_logit_mean": _mean(r["kl_logit"] for r in rows[:-1]),
                   "kl_tuned_mean": _mean(r["kl_tuned"] for r in rows[:-1]),
                   "n_train_tokens": int((~val).sum()), "n_eval_tokens": int(ev.numel()),
                   "seconds": round(time.perf_counter() - t0, 1)}
        run.finish(metrics=metrics, artefacts={"layers": "layers.json", "example": "example.json",
                                               "tuned_lens": "tuned_lens.safetensors"})
    return run


def geometry_run(cfg: GeometryConfig, workspace=None, name: str = "geometry", model=None,
                 path=None, progress: bool = True, states=None):
    """Linearity, token nonlinearity, TwoNN dimension and anisotropy per residual state."""
    from interp.workspace import run_context
    from probes.geometry import layer_geometry

    with run_context("geometry", name, _jsonable(cfg), root=workspace, path=path) as run:
        t0 = time.perf_counter()
        model = _load(model, cfg)
        acts, hooks = states or _states(model, cfg, progress=progress)
        stacked = acts.stacked(hooks)
        geo = layer_geometry(stacked, cfg.max_points_twonn, progress=progress)
        names = state_names(model.cfg.n_layers)
        tn = torch.tensor(geo["token_nonlinearity"])
        rows = []
        for s, lab in enumerate(names):
            row = {"layer": lab, "state": s, "hook": hooks[s],
                   "intrinsic_dim": _finite(geo["intrinsic_dim"][s]),
                   "anisotropy": geo["anisotropy"][s]}
            if s < len(names) - 1:
                row.update(linearity=geo["linearity"][s],
                           linearity_centered=geo["linearity_centered"][s],
                           token_nonlinearity_mean=float(tn[s].mean()))
            rows.append(row)
        atomic_write_json(run.path / "layers.json", {"rows": rows})
        save_safetensors_atomic({"token_nonlinearity": tn.contiguous(),
                                 "tokens": acts.tokens.contiguous()},
                                run.path / "token_nonlinearity.safetensors")
        k = min(64, tn.shape[1])
        atomic_write_json(run.path / "example.json", {
            "tokens": [model.tokenizer.decode([int(t)]) for t in acts.tokens[:k]],
            "token_nonlinearity": tn[:, :k].tolist(), "layers": names[:-1]})
        lin = geo["linearity"]
        n, d = stacked.shape[1], stacked.shape[2]
        metrics = {"linearity_mean": _mean(lin), "linearity_min": min(lin),
                   # what the score gives for Y independent of X (least squares fits noise too):
                   # compare scores to it, and collect n >> d tokens
                   "linearity_noise_floor": min(1.0, d / max(1, n - 1)),
                   "linearity_centered_mean": _mean(geo["linearity_centered"]),
                   "intrinsic_dim_max": max((v for v in geo["intrinsic_dim"] if v == v),
                                            default=None),
                   "anisotropy_max": max(geo["anisotropy"]), "n_tokens": len(acts),
                   "seconds": round(time.perf_counter() - t0, 1)}
        run.finish(metrics=metrics, artefacts={"layers": "layers.json", "example": "example.json",
                                               "token_nonlinearity":
                                                   "token_nonlinearity.safetensors"})
    return run


def _finite(v: float) -> float | None:
    return v if v == v and abs(v) != float("inf") else None  # JSON has no NaN


def _mean(xs) -> float:
    xs = list(xs)
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _jsonable(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def read_layers(run_path: str | Path) -> dict:
    """The `layers.json` of a probe, lens or geometry run."""
    from interp.io import read_json

    return read_json(Path(run_path) / "layers.json", expect=dict)
