"""Circuit identification from discrete SAE codes (O'Neill & Bui 2024, arXiv 2405.12522).

Positive prompts are clean prompts the model completes correctly; negative prompts are their
counterfactuals, where it cannot. Every component's output (a head's contribution to the
residual stream; MLP outputs are treated the same way here, an extension of the paper's heads),
averaged over positions, is one input vector of ONE discrete SAE shared by all components,
trained on a few prompts of each kind (the paper: 10 prompts, 500 full-batch epochs, Adam lr
1e-3). The code of a vector is its most active latent (argmax), and a component's score is
the number of distinct codes it produces on positives but never on negatives,
|C+_h \\ C-_h| (the paper's node score, before its softmax over heads, which does not change
the ranking). Components with at least one such code form the method's circuit. It needs no
patching and no gradients.

The SAE is `saes.architectures.discrete.DiscreteSAE` with the paper's 200 latents, trained by
`saes.train.Trainer` from an in-memory batch source as a top-k SAE with k = 4 (the paper's L1
SAE also keeps a few latents active); the code is its most active latent either way. Measured
on the task models, k = 4 ranked heads better than k = 1 (a one-latent code is a k-means
assignment that splits each head's outputs more coarsely).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from circuits.discovery.context import PatchContext
from circuits.discovery.result import MethodResult
from saes.architectures.discrete import code_overlap


def train_code_sae(x: torch.Tensor, d_sae: int, k: int, epochs: int, lr: float, seed: int,
                   run_dir: str | Path | None = None):
    """One discrete SAE on the rows of `x`, full batch for `epochs` steps."""
    from saes.base import SAEConfig
    from saes.data import TensorSource
    from saes.train import TrainConfig, Trainer

    n, d = x.shape
    cfg = TrainConfig(sae=SAEConfig(architecture="discrete", d_in=d, d_sae=d_sae, k=k,
                                    aux_k=min(512, d_sae // 2)),
                      total_tokens=n * epochs, batch_size=n, lr=lr, seed=seed,
                      checkpoint_every=0, log_every=max(1, epochs // 10), dead_tokens=n * 20)
    with tempfile.TemporaryDirectory() as tmp:  # every batch is all of x
        trainer = Trainer(cfg, run_dir or tmp, TensorSource(x.float().contiguous()),
                          progress=False)
        return trainer.train()


def run(ctx: PatchContext, n_train: int = 10, d_sae: int = 200, k: int = 4, epochs: int = 500,
        lr: float = 1e-3, position: str = "mean", seed: int = 0) -> MethodResult:
    """Head (component) scores from positive-only codes (see the module docstring)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        full = ctx.logits(torch.ones(1, ctx.graph.n_components), "node")[0]
    # positives: clean prompts the model gets right (the metric beats its counterfactual value)
    right = _correct(ctx, full)
    pos = ctx.component_vectors("clean", position)[right]
    neg = ctx.component_vectors("corrupt", position)
    if len(pos) == 0:
        from interp.errors import ConfigError

        raise ConfigError("The model gets none of the clean prompts right; the discrete-code "
                          "method needs positive examples.")
    C, d = pos.shape[1:]
    train = torch.cat([pos[:n_train], neg[:n_train]]).reshape(-1, d)
    sae = train_code_sae(train, d_sae, k, epochs, lr, seed)
    codes_pos = sae.codes(pos.reshape(-1, d))[:, :1].reshape(len(pos), C)
    codes_neg = sae.codes(neg.reshape(-1, d))[:, :1].reshape(len(neg), C)
    n_comp = ctx.graph.n_components
    counts, shares = torch.zeros(n_comp), torch.zeros(n_comp)
    for i, c in enumerate(ctx.vector_components):
        ov = code_overlap(codes_pos[:, i], codes_neg[:, i])
        counts[c], shares[c] = len(ov.unique), ov.example_share
    seconds = time.perf_counter() - t0
    extra = {"n_positive": int(len(pos)), "n_negative": int(len(neg)), "n_train": n_train,
             "d_sae": d_sae, "k": k, "epochs": epochs, "position": position,
             "example_share": shares.tolist()}
    return MethodResult("discrete", "node", counts, counts, seconds, selected=counts > 0,
                        extra=extra)


def _correct(ctx: PatchContext, logits: torch.Tensor) -> torch.Tensor:
    """Which clean prompts the model gets right: the task's own notion when the batch knows
    its answers, else the metric above its counterfactual value."""
    b = ctx.batch
    if getattr(b, "good", None) is not None:
        return b.good.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)
    if getattr(b, "answer", None) is not None:
        return logits.argmax(-1) == b.answer
    return ctx.metric_fn(logits[None], b)[0] > ctx.empty_metric
