"""Attribution graphs: direct effects between features, errors, tokens and logits of one prompt.

Method of Ameisen et al. 2025 ("Circuit Tracing", transformer-circuits.pub) as implemented in
circuit-tracer: in the local replacement model (`circuits.replacement`) the edge from source s to
target t is A[t, s] = v_t^in . J v_s^out, exact because the system is linear. Targets are feature
pre-activations (read with the encoder row) and logits minus the mean logit (read with the
demeaned unembedding column at the last position). One adjoint pass gives B complete rows.

What we do differently for speed and memory: targets are sorted by (layer, position) and each
pass runs only through its batch's causal cone (layers below the deepest target, positions up
to the last), rows are kept sparse as they are made, and every graph carries each target's
fixed term so completeness is checkable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from circuits.graph import Graph
from circuits.replacement import ReplacementModel
from circuits.transcoders import require_set
from interp.errors import ConfigError, check_config_keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttributionConfig:
    """Settings of one graph (circuit-tracer's names and defaults where they exist)."""

    max_n_logits: int = 10
    desired_logit_prob: float = 0.95
    batch_size: int = 256
    skip_bos: bool = True  # features/errors at the BOS position are fixed terms, not nodes

    def __post_init__(self):
        if self.max_n_logits < 1 or self.batch_size < 1:
            raise ConfigError("max_n_logits and batch_size must be >= 1.")
        if not 0 < self.desired_logit_prob <= 1:
            raise ConfigError("desired_logit_prob must be in (0, 1].")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AttributionConfig:
        check_config_keys(cls, d)
        return cls(**d)


def select_logits(logits: Tensor, max_n: int, prob: float) -> tuple[Tensor, Tensor]:
    """The smallest set of top tokens whose probability reaches `prob`, at most `max_n`."""
    p = torch.softmax(logits.double(), -1)
    top_p, top_i = p.sort(descending=True)
    n = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(prob, dtype=torch.float64))) + 1
    n = max(1, min(n, max_n, p.numel()))
    return top_i[:n], top_p[:n].float()


def attribute(model, transcoders, prompt, config: AttributionConfig | None = None,
              progress: bool = False) -> Graph:
    """The attribution graph of `prompt` (string or 1-D ids) through `transcoders`.

    `transcoders`: a `TranscoderSet`, a `{layer: dictionary}` dict, or a directory. Layers
    without a transcoder appear as error nodes only.
    """
    cfg = config or AttributionConfig()
    tcs = require_set(transcoders)
    t0 = time.perf_counter()
    rm = ReplacementModel.build(model, tcs, prompt, skip_bos=cfg.skip_bos)
    t_build = time.perf_counter() - t0
    graph = attribute_replacement(rm, cfg, progress=progress)
    graph.prompt = prompt if isinstance(prompt, str) else model.to_string(rm.tokens)
    graph.token_strs = model.to_str_tokens(rm.tokens)
    graph.logit_strs = model.to_str_tokens(graph.logit_tokens)
    graph.metadata.update({"model": model.name, "transcoders": tcs.source,
                           "transcoder_layers": tcs.layers,
                           "seconds_build": round(t_build, 4)})
    return graph


@torch.no_grad()
def attribute_replacement(rm: ReplacementModel, cfg: AttributionConfig,
                          progress: bool = False) -> Graph:
    """The graph of an already-built replacement model (no tokeniser needed)."""
    t0 = time.perf_counter()
    L, n = rm.n_layers, rm.n_pos
    feats = rm.features
    nf = len(feats)
    logit_ids, logit_p = select_logits(rm.logits, cfg.max_n_logits, cfg.desired_logit_prob)
    K = int(logit_ids.numel())
    W_U = rm.w.W_U
    logit_vecs = (W_U[:, logit_ids] - W_U.mean(1, keepdim=True)).T  # [K, d]

    # targets: features sorted by (layer, pos) (their stored order), then the logits
    enc = torch.zeros(nf, rm.u.shape[-1])
    for i in rm.tc.layers:
        sel = feats.layer == i
        if bool(sel.any()):
            enc[sel] = rm.tc[i].enc_weight[feats.index[sel]].float()
    t_layer = torch.cat([feats.layer, torch.full((K,), L)])
    t_pos = torch.cat([feats.pos, torch.full((K,), n - 1)])
    t_vec = torch.cat([enc, logit_vecs])
    n_targets = nf + K
    n_nodes = nf + L * n + n + K
    # source columns [features | errors | tokens] are node ids 0..n_src-1 as they are
    tgt_chunks, src_chunks, w_chunks = [], [], []
    from tqdm.auto import tqdm

    B = cfg.batch_size
    for a in tqdm(range(0, n_targets, B), disable=not progress, unit="batch",
                  desc="attribution"):
        b = min(n_targets, a + B)
        rows = rm.backward(t_layer[a:b], t_pos[a:b], t_vec[a:b])
        r, c = rows.nonzero(as_tuple=True)
        node = torch.arange(a, b)
        node = torch.where(node < nf, node, node - nf + (nf + L * n + n))
        tgt_chunks.append(node[r].to(torch.int32))
        src_chunks.append(c.to(torch.int32))
        w_chunks.append(rows[r, c])
    t_edges = time.perf_counter() - t0

    # each target's input and its fixed term (a run of the system with every source at zero)
    node_input = torch.full((n_nodes,), float("nan"))
    node_fixed = torch.full((n_nodes,), float("nan"))
    zero = torch.zeros(nf)
    bias_run = rm.forward(mlp=lambda i, u: rm.linear_mlp(i, u, scale=zero, errors=False),
                          embed=torch.zeros(n, rm.u.shape[-1]))
    for i in rm.tc.layers:
        sel = (feats.layer == i).nonzero().flatten()
        if len(sel):
            pre = rm.tc.pre_acts(i, rm.u[i])
            pre0 = rm.tc.pre_acts(i, bias_run["u"][i])
            node_input[sel] = pre[feats.pos[sel], feats.index[sel]]
            node_fixed[sel] = pre0[feats.pos[sel], feats.index[sel]]
    lg, lg0 = rm.logits, bias_run["logits"][-1]
    node_input[n_nodes - K:] = lg[logit_ids] - lg.mean()
    node_fixed[n_nodes - K:] = lg0[logit_ids] - lg0.mean()

    def cat(xs, dt):
        return torch.cat(xs) if xs else torch.zeros(0, dtype=dt)

    graph = Graph(
        prompt="", tokens=rm.tokens.tolist(), token_strs=[str(t) for t in rm.tokens.tolist()],
        n_layers=L, feat_layer=feats.layer, feat_pos=feats.pos, feat_index=feats.index,
        activation=feats.activation, logit_tokens=logit_ids, logit_probs=logit_p,
        logit_strs=[str(int(t)) for t in logit_ids], edge_target=cat(tgt_chunks, torch.int32).long(),
        edge_source=cat(src_chunks, torch.int32).long(), edge_weight=cat(w_chunks, torch.float32),
        node_input=node_input, node_fixed=node_fixed,
        metadata={"config": cfg.to_dict(), "freeze_error": getattr(rm, "freeze_error", None),
                  "seconds_edges": round(t_edges, 4), "n_targets": n_targets,
                  "n_edges": int(sum(len(w) for w in w_chunks))})
    log.info("attribution: %d features, %d edges in %.2f s", nf, graph.metadata["n_edges"],
             t_edges)
    return graph
