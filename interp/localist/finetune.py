"""Progressive locality schedules on a pretrained model (the default model) through its HookedModel.

For each schedule (the two uniform baselines and lambda_l = lambda_max (l/(L-1))^beta per beta,
"Progressive Localisation in Localist LLMs", arXiv 2511.18375) the last `train_layers` blocks are
fine-tuned for a few steps with the dial's bias in the forward pass (all layers) and the
group-lasso penalty on the trainable layers, then evaluated on held-out windows. The weights are
restored between schedules, so every schedule starts from the same pretrained model, and the
inference-only effect of each schedule (no fine-tune) is measured first. `train_layers=0` or
`steps=0` gives the inference-only comparison alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from interp.config import Config
from interp.errors import ConfigError
from interp.localist.blocks import BlockSpec
from interp.localist.dial import named_schedules
from interp.localist.evaluate import evaluate_dial
from interp.localist.train import locality_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleConfig(Config):
    """A progressive-schedule comparison on a pretrained model (serialised into run.json)."""

    model: str = "SmolLM2-135M-Instruct"  # a name load_model accepts
    betas: tuple[float, ...] = (1.0, 3.0, 5.0)
    lam_max: float = 1.0
    penalty: float = 0.3
    bias_strength: float = 2.0
    blocks: BlockSpec = field(default_factory=BlockSpec)
    train_layers: int = 2  # fine-tune the last k blocks (0: inference-time dial only)
    steps: int = 20
    batch_size: int = 4
    context_size: int = 128
    lr: float = 1e-4
    corpus: str = "python-docs"
    eval_windows: int = 8
    seed: int = 0
    device: str = "auto"  # where the model runs and is fine-tuned (interp.devices)
    dtype: str = "float32"  # the model's compute dtype

    def __post_init__(self) -> None:
        from interp.devices import check_device, check_dtype

        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "dtype", check_dtype(self.dtype))
        if isinstance(self.blocks, dict):
            object.__setattr__(self, "blocks", BlockSpec.from_dict(self.blocks))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not self.betas or any(b <= 0 for b in self.betas):
            raise ConfigError(f"betas must be positive numbers (e.g. 1,3,5), got {self.betas}.")
        if not 0 <= self.lam_max <= 1:
            raise ConfigError(f"lam_max must lie in [0, 1], got {self.lam_max}.")
        for name in ("train_layers", "steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("batch_size", "eval_windows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")


def schedule_windows(cfg: ScheduleConfig, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, eval) windows of the corpus in the model's tokens; eval = the last windows."""
    from interp.data import CorpusSpec, token_windows

    n_train = cfg.steps * cfg.batch_size
    n = n_train + cfg.eval_windows
    w = token_windows(CorpusSpec(source=cfg.corpus), tokenizer, cfg.context_size,
                      n * cfg.context_size)
    if len(w) < n:
        raise ConfigError(f"The corpus gave {len(w)} windows; {n} are needed. Lower steps, "
                          "batch_size or eval_windows.")
    return w[:n_train], w[n_train:n]


def trainable_layers(model, k: int) -> list[int]:
    L = model.cfg.n_layers
    if k > L:
        raise ConfigError(f"train_layers={k} but the model has {L} layers.")
    return list(range(L - k, L))


def _freeze_all_but(model, layers: list[int]) -> dict[str, torch.Tensor]:
    """requires_grad only on the given blocks; returns a copy of their weights (to restore)."""
    prefixes = tuple(f"{model.arch.blocks}.{i}." for i in layers)
    saved = {}
    for name, p in model.hf_model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
        if p.requires_grad:
            saved[name] = p.detach().clone()
    return saved


def _restore(model, saved: dict[str, torch.Tensor]) -> None:
    params = dict(model.hf_model.named_parameters())
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


def finetune_schedule(model, dials: list[float], train: torch.Tensor, cfg: ScheduleConfig,
                      layers: list[int], progress: bool = False, desc: str = "") -> list[dict]:
    """A few AdamW steps on the trainable blocks at per-layer `dials`; returns the history."""
    params = [p for p in model.hf_model.parameters() if p.requires_grad]
    if not params or cfg.steps == 0:
        return []
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(train), generator=g)
    history = []
    model.hf_model.train()
    try:
        for step in tqdm(range(cfg.steps), desc=desc or "fine-tune", unit="step",
                         disable=not progress):
            ids = train[order[step * cfg.batch_size: (step + 1) * cfg.batch_size]].to(model.device)
            ce, pen = locality_step(model, ids, dials, cfg.blocks, cfg.penalty,
                                    cfg.bias_strength, layers=layers)
            loss = ce + pen if pen.requires_grad else ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append({"step": step, "ce": float(ce.detach()),
                            "penalty": float(pen.detach())})
    finally:
        model.hf_model.eval()
    return history


def compare_schedules(model, cfg: ScheduleConfig, progress: bool = False,
                      done: Callable[[str], dict | None] | None = None,
                      save: Callable[[str, dict], None] | None = None) -> list[dict]:
    """One result per schedule: {schedule, beta, dials, inference: metrics, finetuned: metrics,
    history}. `done(name)` may return a stored result (resume); `save(name, result)` stores one."""
    L = model.cfg.n_layers
    schedules = named_schedules(L, cfg.lam_max, cfg.betas)
    train, held_out = schedule_windows(cfg, model.tokenizer)
    layers = trainable_layers(model, cfg.train_layers) if cfg.steps else []
    flags = {n: p.requires_grad for n, p in model.hf_model.named_parameters()}
    saved = _freeze_all_but(model, layers)
    results = []
    try:
        for name, dials in schedules.items():
            prev = done(name) if done else None
            if prev is not None:
                results.append(prev)
                continue
            beta = float(name.split("beta")[1]) if "beta" in name else None
            res = {"schedule": name, "beta": beta, "dials": dials}
            res["inference"] = evaluate_dial(model, held_out, cfg.blocks, dials,
                                             cfg.bias_strength, batch_size=cfg.batch_size)
            if layers:
                torch.manual_seed(cfg.seed)
                res["history"] = finetune_schedule(model, dials, train, cfg, layers, progress,
                                                   desc=name)
                res["finetuned"] = evaluate_dial(model, held_out, cfg.blocks, dials,
                                                 cfg.bias_strength, batch_size=cfg.batch_size)
                _restore(model, saved)
            if save:
                save(name, res)
            results.append(res)
    finally:
        _restore(model, saved)
        for n, p in model.hf_model.named_parameters():
            p.requires_grad_(flags[n])
    return results
