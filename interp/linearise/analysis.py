"""Linearise one prediction: exactness, top singular triplets, decodings, per-layer ranks.

Golden, "Large Language Models are Locally Linear Mappings" (arXiv 2505.24293): for a prompt and
a target position, the detached Jacobian J⁺ reproduces the output exactly (y = Σ_i J⁺_i x_i), its
singular vectors decode to tokens related to the prediction, its stable rank is very low, and
the cumulative Jacobians of each layer's residual stream (and attention / MLP outputs) show how
that low-dimensional map builds up with depth. `linearise` computes all of it from products of
the replayed linear map (`DetachedJacobian`): the top-k triplets of the stacked Jacobian from a
randomized block Krylov space (about 150-180 products for k = 32 instead of the d_model = 576 of a
full Jacobian); `full=True` also materialises the Jacobian for per-token SVDs and exact stable
ranks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError, InterpError
from interp.linearise.decode import decode_left, decode_right, output_logits
from interp.linearise.jacobian import DetachedJacobian
from interp.linearise.svd import dense_svd, frobenius_outside, stable_rank
from interp.models.families import read_net
from interp.models.frozen import FINAL

log = logging.getLogger(__name__)
COMPONENTS = ("resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True)
class LineariseConfig(Config):
    """What to linearise and how much to analyse (flags of `interp linearise` map 1:1)."""

    prompt: str = "The bridge out of Marin is the"
    model: str = ""  # "" = the default model
    position: int = -1  # target position (negative counts from the end)
    layer: int | None = None  # None: the final (normed) output; L: blocks.L.hook_resid_post
    k: int = 32  # singular triplets of the stacked Jacobian
    dtype: str = "float32"  # float32 | float64
    full: bool = False  # also build the dense Jacobian: per-token SVDs, exact stable rank
    per_layer: bool = True  # cumulative Jacobians of every layer's resid / attn / mlp output
    components: tuple[str, ...] = COMPONENTS  # per-layer sites: resid_post, attn_out, mlp_out
    layer_k: int = 4  # singular values per per-layer Jacobian
    n_decode: int = 8  # singular vectors decoded to tokens
    top_tokens: int = 8
    block: int = 0  # probe vectors per block Krylov step (0: from the prompt length)
    n_iter: int | None = None  # at most this many block Krylov steps (2 * block products each)
    tol: float = 1e-5  # ...stopping when the top-k singular values' estimated error is below
    seed: int = 0
    prepend_bos: bool = True

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be 'float32' or 'float64', not {self.dtype!r}.")
        for name in ("k", "layer_k", "n_decode", "top_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.block < 0 or (self.n_iter is not None and self.n_iter < 0):
            raise ConfigError("block must be >= 0 (0: automatic) and n_iter >= 0 or None.")
        object.__setattr__(self, "components", tuple(self.components))
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad or not self.components:
            raise ConfigError(f"components {bad or '()'} invalid: choose from {COMPONENTS}.")
        if not self.prompt:
            raise ConfigError("prompt is empty: give the text whose prediction to linearise.")


@dataclass
class Linearisation:
    """The result: `summary` (JSON: metrics, decodings, tables) and `tensors` (safetensors)."""

    summary: dict
    tensors: dict[str, Tensor] = field(default_factory=dict)


def _tokens(model, tokenizer, prompt: str, prepend_bos: bool) -> Tensor:
    if hasattr(model, "to_tokens"):
        return model.to_tokens(prompt, prepend_bos=prepend_bos)[0][0].cpu()
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is not None:
        ids = [bos] + ids
    return torch.tensor(ids)


def linearise(model, config: LineariseConfig, tokenizer=None, progress: bool = False
              ) -> Linearisation:
    """Linearise `model` (a HookedModel, or an HF causal LM with `tokenizer`) on `config.prompt`."""
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise InterpError("No tokenizer: pass a HookedModel, or an HF model with tokenizer=...")
    t0 = time.perf_counter()
    net = read_net(model, config.dtype)
    ids = _tokens(model, tokenizer, config.prompt, config.prepend_bos)
    n = len(ids)
    if not -n <= config.position < n:
        raise InterpError(f"position {config.position} is outside the prompt's {n} tokens "
                          f"(use 0..{n - 1}, or -1 for the last).")
    if config.layer is not None and not 0 <= config.layer < net.n_layers:
        raise InterpError(f"layer {config.layer} is outside 0..{net.n_layers - 1}.")
    site = FINAL if config.layer is None else f"blocks.{config.layer}.hook_resid_post"
    with torch.no_grad():
        x = net.embed(ids)
    jac = DetachedJacobian(net, x, site=site, position=config.position)
    pos = jac.position
    str_tokens = [tokenizer.decode([int(t)]) for t in ids]
    summary: dict = {
        "model": getattr(model, "name", None) or getattr(model.config, "name_or_path", ""),
        "family": net.family, "site": site, "position": pos, "n_pos": jac.n_pos,
        "tokens": str_tokens, "token_ids": ids.tolist(), "dtype": config.dtype,
        "bias_note": net.bias_note, "shape": list(jac.shape),
    }
    y = jac.y
    metrics = {"bias_share": float(jac.bias_term.norm() / y.norm()), "y_norm": float(y.norm())}
    # the model's own output logits (unembedding bias, Gemma 2's soft-cap) at the final site
    logits = net.cap(net.logits(y)) if site == FINAL else output_logits(net, y, False)
    probs = torch.softmax(logits.double(), -1)
    top = probs.topk(5)
    summary["prediction"] = [{"token_id": int(i), "token": tokenizer.decode([int(i)]),
                              "prob": round(float(p), 5)} for p, i in zip(top.values, top.indices)]
    tensors: dict[str, Tensor] = {"y": y, "input_ids": ids}

    t1 = time.perf_counter()
    if config.full:
        dense = jac.dense()
        trip = dense_svd(dense, config.k)
        tensors["jacobian"] = dense.float()
        summary["per_token"] = _per_token(net, dense, y, tokenizer, config, site == FINAL)
    else:
        trip = jac.svd(k=config.k, block=config.block, n_iter=config.n_iter, tol=config.tol,
                       seed=config.seed)
        summary["tol"] = config.tol
        summary["krylov"] = [{"products": p, "side": side, "sigma": sig}
                             for p, side, sig in trip.history]
    metrics["svd_seconds"] = round(time.perf_counter() - t1, 3)
    metrics["rel_error"] = jac.rel_error()  # J x* came with the Krylov space's first products
    metrics["products"] = trip.products
    metrics["stable_rank"] = trip.stable_rank
    metrics["sigma_max"] = float(trip.S[0])
    tensors.update({"U": trip.U, "S": trip.S, "V": trip.V})
    nd = min(config.n_decode, trip.U.shape[1])
    left = decode_left(net, trip.U[:, :nd], y, tokenizer, config.top_tokens, site == FINAL)
    right = decode_right(net, trip.V[:nd], [d["sign"] for d in left], tokenizer,
                         config.top_tokens)
    summary["singular"] = [{"index": j, "sigma": float(trip.S[j]), "left": left[j],
                            "right": right[j]} for j in range(nd)]
    summary["sigma"] = [float(s) for s in trip.S]
    pred = summary["prediction"][0]["token_id"]
    metrics["pred_in_top_u1"] = pred in left[0]["token_ids"]
    metrics["pred_in_top_decodings"] = any(pred in d["token_ids"] for d in left)

    contrib = jac.contributions()
    tensors["contributions"] = contrib
    yn = y / y.norm()
    summary["contributions"] = [
        {"position": i, "token": str_tokens[i], "norm": float(contrib[i].norm()),
         "share": float(contrib[i] @ yn / y.norm())} for i in range(jac.n_pos)]

    if config.per_layer:
        t2 = time.perf_counter()
        summary["layers"] = _per_layer(net, jac, tokenizer, config, progress)
        metrics["per_layer_seconds"] = round(time.perf_counter() - t2, 3)
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    summary["metrics"] = metrics
    return Linearisation(summary=summary, tensors={k: v.detach().cpu() for k, v in tensors.items()})


def _per_token(net, dense: Tensor, y: Tensor, tokenizer, config, final: bool) -> list[dict]:
    """SVD of each J_i (d × d): top singular values, stable rank, top-1 decodings."""
    rows = []
    for i in range(dense.shape[1]):
        t = dense_svd(dense[:, i], config.layer_k)
        left = decode_left(net, t.U[:, :1], y, tokenizer, config.top_tokens, final)
        right = decode_right(net, t.V[:1, None], [left[0]["sign"]], tokenizer, config.top_tokens)
        rows.append({"position": i, "sigma": [float(s) for s in t.S],
                     "stable_rank": t.stable_rank, "left": left[0], "right": right[0]})
    return rows


def _per_layer(net, jac: DetachedJacobian, tokenizer, config, progress: bool) -> list[dict]:
    """Cumulative Jacobians W_{0→ℓ} of every layer's resid / attn / mlp output (last position).

    One shared forward sketch Y_ℓ = W_ℓ Ω for all sites, then one adjoint pass per site
    (randomized SVD without power iterations): estimates, not exact values.
    """
    from tqdm.auto import tqdm

    top_layer = net.n_layers - 1 if jac.site == FINAL else int(jac.site.split(".")[1])
    sites = [f"blocks.{i}.hook_{c}" for i in range(top_layer + 1)
             for c in config.components]
    l, n_probe = config.layer_k + 4, 8
    gen = torch.Generator().manual_seed(config.seed + 1)
    omega = torch.randn(l + n_probe, jac.n_pos, net.d_model, generator=gen, dtype=torch.float64)
    ys = jac.matvec(omega.to(net.dtype), sites=sites)
    outs = jac.matvec(jac.x[None], sites=sites)
    rows = []
    for s in tqdm(sites, desc="per-layer Jacobians", disable=not progress, leave=False):
        y, probes = ys[s].split([l, n_probe])
        q = torch.linalg.qr(y.T, mode="reduced").Q
        b = jac.rmatvec(q.T, site=s).reshape(q.shape[1], -1)
        ub, sv, _ = torch.linalg.svd(b, full_matrices=False)
        fro = float((sv.double() ** 2).sum()) + frobenius_outside(probes.double(), q.double())
        u = q @ ub[:, :1]
        left = decode_left(net, u, outs[s][0], tokenizer, 5, final_applied=False)[0]
        layer, comp = int(s.split(".")[1]), s.split(".hook_")[1]
        rows.append({"layer": layer, "component": comp, "site": s,
                     "sigma": [float(v) for v in sv[: config.layer_k]],
                     "stable_rank": stable_rank(sv, fro), "frobenius": fro ** 0.5,
                     "top_tokens": left["tokens"], "top_token_ids": left["token_ids"]})
    return rows
