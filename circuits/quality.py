"""How well a transcoder set stands in for the model's MLPs: graph scores and replacement-model
fidelity over a list of prompts.

Measures (Ameisen et al. 2025, "Circuit Tracing", transformer-circuits.pub, and circuit-tracer's
`compute_graph_scores`; the graph scores come from `circuits.prune.graph_scores`):

- replacement score of a prompt's attribution graph: I_tokens / (I_tokens + I_errors), with I the
  node influence on the logits (w Â + w Â² + ..., Â = |A| row-normalised, w the logit
  probabilities): the share of the end-to-end influence that reaches the logits from the tokens
  through features rather than through error nodes;
- completeness score: Σ_t (1 − Σ_{s∈errors} Â[t,s]) (I_t + w_t) / Σ_t (I_t + w_t), the
  influence-weighted share of each node's normalised input that does not come from error nodes;
- per-layer normalised MSE of the reconstructed MLP outputs on the model's own activations,
  NMSE_ℓ = Σ_p ‖y_ℓ,p − ŷ_ℓ,p‖² / Σ_p ‖y_ℓ,p − ȳ_ℓ‖² (pooled over prompts; 0 is exact, 1 is as
  good as predicting the mean output);
- the replacement model: the model with every MLP that has a transcoder replaced by it (no error
  terms), attention and norms computed live; the fraction of prompts whose top-1 next token (last
  position) equals the model's (the paper reports about 50% for its 18-layer CLT), and
  KL(p_model ‖ p_replacement) at the last position and averaged over every position.

With `skip_bos` (the attribution default) the BOS position's MLP outputs stay the model's (as in
the graph, where they are fixed terms) and that position is left out of NMSE and KL.

The measures need only each layer's reconstructed MLP output, so any dictionary set plugs in
through the `Reconstruction` protocol (`mlp_out(layer, u, state)`); a per-layer transcoder set
and a cross-layer transcoder (`circuits.clt.CLTSet`) are adapted by `SetReconstruction`. A CLT
encodes layer ℓ's input into `state` and returns the sum of the decoders of every layer ≤ ℓ
(Ameisen et al. 2025: the replacement model's MLP output at ℓ is every earlier feature's write
there); `state` starts empty for each forward pass and layers are visited in increasing order,
so in the replacement model a CLT's features at ℓ are read from the replacement's own
residual stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from circuits.graph import Graph
from circuits.prune import graph_scores
from circuits.transcoders import TranscoderSet, require_set
from interp.config import Config
from interp.errors import ConfigError
from interp.models.families import read_net
from interp.models.frozen import FINAL, Frozen, mlp_branch, run

log = logging.getLogger(__name__)


@runtime_checkable
class Reconstruction(Protocol):
    """A dictionary set seen as per-layer MLP-output reconstructions."""

    layers: list[int]
    source: str

    def mlp_out(self, layer: int, u: Tensor, state: dict) -> Tensor:
        """Layer `layer`'s reconstructed MLP output from its MLP input u [pos, d_model]."""
        ...


class SetReconstruction:
    """A dictionary set (a per-layer `TranscoderSet` or a cross-layer `circuits.clt.CLTSet`)
    as a `Reconstruction`, through the set interface the replacement model reads: layer ℓ's
    input is encoded into `state[ℓ]`, and ŷ_ℓ = Σ_{l ∈ sources_of(ℓ)} W_dec^{l->ℓ} a_l + b_dec^ℓ
    (+ a skip path): decode(encode(u_ℓ)) for a per-layer transcoder, the sum over every earlier
    covered layer's writes for a CLT."""

    def __init__(self, transcoders):
        self.tcs = transcoders
        self.layers = list(transcoders.layers)
        self.source = transcoders.source
        self.kind = getattr(transcoders, "kind", "")

    def mlp_out(self, layer: int, u: Tensor, state: dict) -> Tensor:
        if layer in self.tcs:
            state[layer] = self.tcs.encode(layer, u)
        return self.tcs.reconstruct(layer, state, u).float()


#: the name of the per-layer adapter before the set interface covered CLTs
PerLayerReconstruction = SetReconstruction


def as_reconstruction(transcoders) -> Reconstruction:
    """A `Reconstruction` as is; a `TranscoderSet`, `CLTSet`, cross-layer transcoder module,
    `{layer: dictionary}` dict or directory through the set interface (`SetReconstruction`)."""
    if isinstance(transcoders, Reconstruction):
        return transcoders
    return SetReconstruction(require_set(transcoders))


@dataclass(frozen=True)
class QualityConfig(Config):
    """Settings of `replacement_quality` (graph settings as in `AttributionConfig`)."""

    graph_scores: bool = True  # attribute every prompt for its replacement/completeness score
    max_feature_nodes: int | None = None
    batch_size: int = 256
    skip_bos: bool = True

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1.")
        if self.max_feature_nodes is not None and self.max_feature_nodes < 0:
            raise ConfigError("max_feature_nodes must be >= 0 (or None for every feature).")


def _kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p ‖ q) per row, float64."""
    lp, lq = torch.log_softmax(logits_p.double(), -1), torch.log_softmax(logits_q.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


class _Sums:
    """Pooled NMSE terms of one layer: Σ‖y − ŷ‖², Σy, Σ‖y‖², count (float64)."""

    def __init__(self):
        self.sse, self.s1, self.s2, self.n = 0.0, None, 0.0, 0

    def add(self, y: Tensor, y_hat: Tensor) -> None:
        y, y_hat = y.double(), y_hat.double()
        self.sse += float((y - y_hat).pow(2).sum())
        self.s1 = y.sum(0) if self.s1 is None else self.s1 + y.sum(0)
        self.s2 += float(y.pow(2).sum())
        self.n += y.shape[0]

    def nmse(self) -> float:
        if not self.n:
            return float("nan")
        var = self.s2 - float(self.s1.pow(2).sum()) / self.n
        return self.sse / var if var > 0 else float("nan")


@torch.no_grad()
def prompt_fidelity(net, rec: Reconstruction, ids: Tensor, skip_bos: bool = True,
                    sums: dict[int, _Sums] | None = None) -> dict:
    """Top-1 agreement and KL of the replacement model on one prompt (token ids [n]); adds the
    layer NMSE terms to `sums` when given."""
    L = net.n_layers
    first = 1 if skip_bos else 0
    x = net.embed(ids)
    sites = ([f"blocks.{i}.mlp.hook_in" for i in range(L)]
             + [f"blocks.{i}.hook_mlp_out" for i in range(L)] + [FINAL])
    out = run(net, x, Frozen("ordinary"), sites)
    model_logits = net.cap(net.logits(out[FINAL]))
    if sums is not None:  # reconstruction of the model's own MLP outputs
        state: dict = {}
        for i in rec.layers:
            y = out[f"blocks.{i}.hook_mlp_out"]
            y_hat = rec.mlp_out(i, out[f"blocks.{i}.mlp.hook_in"], state)
            sums.setdefault(i, _Sums()).add(y[first:], y_hat[first:])
    layers, fz, state = set(rec.layers), Frozen("ordinary"), {}

    def mlp(i: int, u: Tensor) -> Tensor:
        if i not in layers:
            return mlp_branch(net.blocks[i], i, u, fz, True)
        y = rec.mlp_out(i, u, state)
        if first:
            y = y.clone()
            y[:first] = out[f"blocks.{i}.hook_mlp_out"][:first]
        return y

    repl = run(net, x, Frozen("ordinary"), [FINAL], mlp=mlp)
    repl_logits = net.cap(net.logits(repl[FINAL]))
    kl = _kl(model_logits, repl_logits)[first:]
    top_m, top_r = int(model_logits[-1].argmax()), int(repl_logits[-1].argmax())
    return {"n_tokens": int(ids.numel()), "top1_model": top_m, "top1_replacement": top_r,
            "top1_agree": top_m == top_r, "kl_last": float(kl[-1]),
            "kl_mean": float(kl.mean()), "_kl_sum": float(kl.sum()), "_kl_n": int(kl.numel())}


def replacement_quality(model, transcoders, prompts: Sequence, config: QualityConfig | None = None,
                        progress: bool = False,
                        graph_fn: Callable[[Tensor], Graph] | None = None) -> dict:
    """Every measure of the module docstring for `transcoders` over `prompts` (strings or 1-D
    token ids), as a JSON-able dict: the means over prompts, per-layer NMSE, and each prompt's
    numbers. `graph_fn(ids) -> Graph` makes a prompt's graph (default: `attribute` through the
    set, for a `TranscoderSet` or `CLTSet`; a `Reconstruction` without `graph_fn` gets no graph
    scores)."""
    from tqdm.auto import tqdm

    cfg = config or QualityConfig()
    if not len(prompts):
        raise ConfigError("replacement_quality needs at least one prompt.")
    rec = as_reconstruction(transcoders)
    if graph_fn is None and cfg.graph_scores and isinstance(rec, SetReconstruction):
        from circuits.attribution import AttributionConfig, attribute

        acfg = AttributionConfig(batch_size=cfg.batch_size, skip_bos=cfg.skip_bos,
                                 max_feature_nodes=cfg.max_feature_nodes)
        graph_fn = lambda ids: attribute(model, rec.tcs, ids, acfg)  # noqa: E731
    if isinstance(rec, SetReconstruction):
        rec.tcs.check(model)
    net = read_net(model, torch.float32)
    sums: dict[int, _Sums] = {}
    rows = []
    for prompt in tqdm(prompts, disable=not progress, desc="replacement quality", unit="prompt"):
        ids = prompt if isinstance(prompt, Tensor) else model.to_tokens(prompt)[0][0]
        ids = ids.reshape(-1).cpu()
        row = {"prompt": prompt if isinstance(prompt, str) else model.to_string(ids)}
        row.update(prompt_fidelity(net, rec, ids, cfg.skip_bos, sums))
        if graph_fn is not None and cfg.graph_scores:
            g = graph_fn(ids)
            row.update(graph_scores(g))
            row["completeness_error"] = g.completeness_error()
        rows.append(row)
    n = len(rows)
    mean = lambda k: (sum(r[k] for r in rows) / n) if k in rows[0] else None  # noqa: E731
    nmse = {str(i): sums[i].nmse() for i in sorted(sums)}
    report = {
        "transcoders": rec.source, "feature_type": getattr(rec, "kind", ""),
        "model": getattr(model, "name", ""), "n_prompts": n,
        "config": cfg.to_dict(),
        "replacement_score": mean("replacement_score"),
        "completeness_score": mean("completeness_score"),
        "top1_agreement": sum(r["top1_agree"] for r in rows) / n,
        "kl_last": mean("kl_last"),
        "kl_all": sum(r.pop("_kl_sum") for r in rows) / max(1, sum(r.pop("_kl_n") for r in rows)),
        "nmse": nmse,
        "nmse_mean": (sum(nmse.values()) / len(nmse)) if nmse else None,
        "per_prompt": rows,
    }
    log.info("replacement quality over %d prompts: replacement %s, completeness %s, top-1 %.3f, "
             "KL(last) %.4g", n, report["replacement_score"], report["completeness_score"],
             report["top1_agreement"], report["kl_last"])
    return report
