"""Training a small locality-dial transformer from scratch (character level, default corpus).

Loss = next-token cross-entropy + kappa * sum_l lambda_l * Omega_l, where Omega_l is the mean
group-lasso penalty of layer l's attention over semantic blocks (`metrics.group_lasso`) and, when
`bias_in_training`, the forward pass carries the dial's block bias too (`dial.locality_dial`).
With every lambda_l = 0 the step is plain cross-entropy training: no hook, no penalty term, so
the weights equal those of an unpenalised run with the same seed bit for bit (tested).

The model is a Llama-style HF causal LM with the toolkit's character tokenizer, wrapped as a
torch-backend `HookedModel`, so the same dial and metrics serve it and the default model.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.config import Config
from interp.errors import ConfigError
from interp.localist.blocks import BlockSpec
from interp.localist.dial import layer_dials
from interp.localist.evaluate import dialled_forward, evaluate_dial, penalty

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalistConfig(Config):
    """One small model trained at one dial setting (serialised into run.json)."""

    lam: float = 0.0  # the dial in [0, 1]: 0 distributed, 1 localist
    dials: tuple[float, ...] | None = None  # per-layer dials (overrides lam)
    penalty: float = 0.3  # kappa: weight of the group-lasso term at lambda = 1
    bias_strength: float = 2.0  # the bias is -lambda * strength off the target block
    bias_in_training: bool = True
    blocks: BlockSpec = field(default_factory=BlockSpec)
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    context_size: int = 128
    steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    seed: int = 0
    corpus: str = "python-docs"  # a CorpusSpec source (character-level tokens)
    n_tokens: int = 400_000  # corpus tokens to read (train + eval)
    eval_windows: int = 32  # the last windows, never trained on
    log_every: int = 25
    device: str = "auto"  # where the model trains (interp.devices)

    def __post_init__(self) -> None:
        from interp.devices import check_device

        object.__setattr__(self, "device", check_device(self.device))
        if isinstance(self.blocks, dict):
            object.__setattr__(self, "blocks", BlockSpec.from_dict(self.blocks))
        if self.dials is not None:
            object.__setattr__(self, "dials", tuple(float(x) for x in self.dials))
        for name in ("n_layers", "d_model", "n_heads", "steps", "batch_size", "eval_windows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LocalistConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.context_size < 4:
            raise ConfigError(f"context_size must be >= 4, got {self.context_size}.")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be a multiple of n_heads "
                              f"({self.n_heads}).")
        if self.penalty < 0:
            raise ConfigError(f"penalty must be >= 0, got {self.penalty}.")
        self.layer_dials()  # validates the dial values

    def layer_dials(self) -> list[float]:
        return layer_dials(self.dials if self.dials is not None else self.lam, self.n_layers)


# ----------------------------------------------------------------------------- model and data
def build_char_model(cfg: LocalistConfig):
    """A freshly initialised (seed `cfg.seed`) Llama-style char-level model as a HookedModel."""
    from transformers import AutoModelForCausalLM

    from interp.models.tiny import tiny_config
    from interp.models.torch_backend import TorchHookedModel

    config = tiny_config("llama", n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
                         n_ctx=cfg.context_size)
    config._attn_implementation = "eager"
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(cfg.seed)
        hf = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    finally:
        torch.random.set_rng_state(state)
    return TorchHookedModel(hf, _char_tokenizer(), f"localist-{cfg.n_layers}L{cfg.d_model}")


@functools.lru_cache(maxsize=1)
def _char_tokenizer():
    from interp.models.tiny import char_tokenizer

    return char_tokenizer()


@functools.lru_cache(maxsize=4)
def corpus_windows(corpus: str, context_size: int, n_tokens: int) -> torch.Tensor:
    """Character-level windows of the corpus (BOS first), cached in memory per process."""
    from interp.data import CorpusSpec, token_windows

    return token_windows(CorpusSpec(source=corpus), _char_tokenizer(), context_size, n_tokens)


def split_windows(cfg: LocalistConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, eval) windows: the last `eval_windows` windows are held out."""
    w = corpus_windows(cfg.corpus, cfg.context_size, cfg.n_tokens)
    if len(w) <= cfg.eval_windows:
        raise ConfigError(f"The corpus gave {len(w)} windows, not more than eval_windows="
                          f"{cfg.eval_windows}; raise n_tokens or lower eval_windows.")
    return w[: -cfg.eval_windows], w[-cfg.eval_windows:]


def batch_indices(cfg: LocalistConfig, n_train: int) -> torch.Tensor:
    """The windows drawn at each step ([steps, batch]), fixed by the seed."""
    g = torch.Generator().manual_seed(cfg.seed)
    return torch.randint(n_train, (cfg.steps, cfg.batch_size), generator=g)


def lr_at(step: int, cfg: LocalistConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of `lr`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model, cfg: LocalistConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.hf_model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                             weight_decay=cfg.weight_decay)


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten().to(logits.device))


# ----------------------------------------------------------------------------- training
def locality_step(model, ids: torch.Tensor, dials: Sequence[float], spec: BlockSpec,
                  kappa: float, strength: float, bias: bool = True,
                  layers: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, penalty) of one batch under the dial, with autograd graphs.

    All dials zero: a plain forward (no hooks, penalty exactly 0 and not in the graph).
    `layers` restricts the penalty to those layers (the trainable ones of a fine-tune).
    """
    lams = list(dials)
    if not any(lams):
        return lm_loss(model.forward(ids), ids), torch.zeros(())
    rec = [i for i, lam in enumerate(lams) if lam and (layers is None or i in layers)]
    if kappa == 0:
        rec = []
    logits, state, blocks, _ = dialled_forward(model, ids, spec, lams if bias else 0.0,
                                               strength, record=rec)
    pen = penalty(state.patterns, lams, blocks, spec) * kappa if rec else torch.zeros(())
    return lm_loss(logits, ids), pen


def train_localist(cfg: LocalistConfig, model=None, progress: bool = False
                   ) -> tuple[object, list[dict]]:
    """Train a small model from scratch at `cfg`'s dial; return (HookedModel, history).

    History records every `log_every` steps: step, lr, ce, penalty.
    """
    from interp.devices import resolve_device

    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_char_model(cfg)
        model.hf_model.to(resolve_device(cfg.device))
    train, _ = split_windows(cfg)
    order = batch_indices(cfg, len(train))
    opt = make_optimizer(model, cfg)
    dials = cfg.layer_dials()
    history: list[dict] = []
    model.hf_model.train()
    for step in tqdm(range(cfg.steps), desc=f"lambda={cfg.lam:g}", unit="step",
                     disable=not progress):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        ids = train[order[step]].to(model.device)
        ce, pen = locality_step(model, ids, dials, cfg.blocks, cfg.penalty, cfg.bias_strength,
                                cfg.bias_in_training)
        loss = ce + pen if pen.requires_grad else ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step, "lr": lr_at(step, cfg), "ce": float(ce.detach()),
                            "penalty": float(pen.detach())})
    model.hf_model.eval()
    return model, history


def train_and_evaluate(cfg: LocalistConfig, progress: bool = False,
                       eval_dials: float | Sequence[float] | None = None) -> dict:
    """Train at `cfg` and evaluate on the held-out windows at the same dial (or `eval_dials`).

    Returns {"model", "history", "metrics"}.
    """
    model, history = train_localist(cfg, progress=progress)
    _, held_out = split_windows(cfg)
    dials = cfg.layer_dials() if eval_dials is None else eval_dials
    metrics = evaluate_dial(model, held_out, cfg.blocks, dials, cfg.bias_strength)
    return {"model": model, "history": history, "metrics": metrics}
