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

Node budget (`max_feature_nodes`, circuit-tracer's influence-first exploration): the logit rows
come first; then, repeatedly, the partial influence of every feature on the logits is computed
from the rows so far and the `update_interval * batch_size` most influential unvisited features
get their rows, until the budget is spent. Only visited features become nodes. circuit-tracer
drops the edges from the other features; we add them to their targets' fixed terms instead,
so completeness still holds exactly (the metadata says so).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.config import Config
from circuits.graph import Graph
from circuits.replacement import ReplacementModel
from circuits.transcoders import require_set
from interp.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttributionConfig(Config):
    """Settings of one graph (circuit-tracer's names and defaults where they exist)."""

    max_n_logits: int = 10
    desired_logit_prob: float = 0.95
    batch_size: int = 256
    skip_bos: bool = True  # features/errors at the BOS position are fixed terms, not nodes
    max_feature_nodes: int | None = None  # None: every active feature is a node
    update_interval: int = 4  # influence refreshes every update_interval * batch_size rows

    def __post_init__(self):
        if self.max_n_logits < 1 or self.batch_size < 1 or self.update_interval < 1:
            raise ConfigError("max_n_logits, batch_size and update_interval must be >= 1.")
        if self.max_feature_nodes is not None and self.max_feature_nodes < 0:
            raise ConfigError("max_feature_nodes must be >= 0 (or None for every feature).")
        if not 0 < self.desired_logit_prob <= 1:
            raise ConfigError("desired_logit_prob must be in (0, 1].")


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

    `transcoders`: a `TranscoderSet`, a `{layer: dictionary}` dict, a cross-layer transcoder
    (or its `circuits.clt.CLTSet`), or a directory of either. Layers without a transcoder
    appear as error nodes only.
    """
    cfg = config or AttributionConfig()
    return graph_through(model, require_set(transcoders), prompt, cfg, ReplacementModel.build,
                         progress=progress)


def graph_through(model, tcs, prompt, cfg: AttributionConfig, build, progress: bool = False,
                  **metadata) -> Graph:
    """The graph of `prompt` through the replacement model `build(model, tcs, prompt,
    skip_bos=...)` makes, with its prompt, token strings and metadata (plus `metadata`)."""
    t0 = time.perf_counter()
    rm = build(model, tcs, prompt, skip_bos=cfg.skip_bos)
    t_build = time.perf_counter() - t0
    graph = attribute_replacement(rm, cfg, progress=progress)
    graph.prompt = prompt if isinstance(prompt, str) else model.to_string(rm.tokens)
    graph.token_strs = model.to_str_tokens(rm.tokens)
    graph.logit_strs = model.to_str_tokens(graph.logit_tokens)
    graph.metadata.update({"model": model.name, "transcoders": tcs.source,
                           "transcoder_layers": tcs.layers,
                           "seconds_build": round(t_build, 4), **metadata})
    return graph


class _Rows:
    """Rows of the adjacency, made in batched adjoint passes and kept as sparse triples.

    Targets are numbered [features 0..nf-1 | logits nf..nf+K-1]; columns are the replacement
    model's sources [features | errors | tokens]."""

    def __init__(self, rm: ReplacementModel, logit_vecs: Tensor, batch_size: int,
                 progress: bool):
        feats = rm.features
        nf, K = len(feats), logit_vecs.shape[0]
        enc = torch.zeros(nf, rm.u.shape[-1])
        for i in rm.tc.layers:
            sel = feats.layer == i
            if bool(sel.any()):
                enc[sel] = rm.tc.enc_rows(i, feats.index[sel])
        self.rm, self.B, self.nf = rm, batch_size, nf
        self.layer = torch.cat([feats.layer, torch.full((K,), rm.n_layers)])
        self.pos = torch.cat([feats.pos, torch.full((K,), rm.n_pos - 1)])
        self.vec = torch.cat([enc, logit_vecs])
        self.tgt, self.src, self.w = [], [], []
        from tqdm.auto import tqdm

        self.bar = tqdm(total=nf + K, disable=not progress, unit="row", desc="attribution")

    def compute(self, targets: Tensor) -> None:
        """Rows of `targets` (sorted, so each batch is one narrow (layer, position) cone)."""
        targets = targets.sort().values
        for a in range(0, targets.numel(), self.B):
            t = targets[a: a + self.B]
            rows = self.rm.backward(self.layer[t], self.pos[t], self.vec[t])
            r, c = rows.nonzero(as_tuple=True)
            self.tgt.append(t[r].to(torch.int32))
            self.src.append(c.to(torch.int32))
            self.w.append(rows[r, c])
            self.bar.update(t.numel())

    def triples(self) -> tuple[Tensor, Tensor, Tensor]:
        cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
        return (cat(self.tgt, torch.int32).long(), cat(self.src, torch.int32).long(),
                cat(self.w, torch.float32))


def _renumber(tgt: Tensor, src: Tensor, nf: int, sel: Tensor | None,
              logit_start: int) -> tuple[Tensor, Tensor]:
    """Row triples' target numbers [features | logits] and source columns [features | errors |
    tokens] as node ids, with the features renumbered to `sel` (None: all kept); a source that
    is an unselected feature gets -1."""
    if sel is None:
        return torch.where(tgt < nf, tgt, tgt - nf + logit_start), src
    ns = int(sel.numel())
    new_feat = torch.full((nf,), -1, dtype=torch.long)
    new_feat[sel] = torch.arange(ns)
    first = lambda x: new_feat[x.clamp_max(max(nf - 1, 0))]  # noqa: E731
    return (torch.where(tgt < nf, first(tgt), tgt - nf + logit_start),
            torch.where(src < nf, first(src), src - nf + ns))


def _influence_first(rows: _Rows, K: int, logit_p: Tensor, cap: int, step: int) -> Tensor:
    """Visit features by their partial influence on the logits until `cap` have rows."""
    from circuits.prune import partial_influence

    nf, n_src = rows.nf, rows.rm.n_sources()
    n_nodes = n_src + K  # targets' node ids: features keep theirs, logits go after the sources
    visited = torch.zeros(nf, dtype=torch.bool)
    rows.compute(torch.arange(nf, nf + K))
    w = torch.zeros(n_nodes, dtype=torch.float64)
    w[n_src:] = logit_p.double()
    while int(visited.sum()) < cap:
        tgt, src, wt = rows.triples()
        node, _ = _renumber(tgt, src, nf, None, n_src)
        inf = partial_influence(n_nodes, node, src, wt, w)[:nf]
        inf[visited] = -1.0
        take = min(step, cap - int(visited.sum()))
        pick = inf.topk(take).indices
        visited[pick] = True
        rows.compute(pick)
    return visited.nonzero().flatten()


@torch.no_grad()
def attribute_replacement(rm: ReplacementModel, cfg: AttributionConfig,
                          progress: bool = False) -> Graph:
    """The graph of an already-built replacement model (no tokeniser needed)."""
    t0 = time.perf_counter()
    L, n = rm.n_layers, rm.n_pos
    feats = rm.features
    nf = len(feats)
    logit_ids, logit_p = select_logits(rm.capped_logits, cfg.max_n_logits,
                                       cfg.desired_logit_prob)
    K = int(logit_ids.numel())
    W_U = rm.net.unembed  # [vocab, d]
    logit_vecs = W_U[logit_ids] - W_U.mean(0, keepdim=True)  # [K, d]
    rows = getattr(rm, "rows_class", _Rows)(rm, logit_vecs, cfg.batch_size, progress)
    capped = cfg.max_feature_nodes is not None and cfg.max_feature_nodes < nf
    if capped:
        sel = _influence_first(rows, K, logit_p, cfg.max_feature_nodes,
                               cfg.update_interval * cfg.batch_size)
    else:
        sel = torch.arange(nf)
        rows.compute(torch.arange(nf + K))
    rows.bar.close()
    tgt, src, wt = rows.triples()
    t_edges = time.perf_counter() - t0

    # node ids: [selected features | errors | tokens | logits]; sources that are unselected
    # features are no nodes: their edges go into their targets' fixed terms
    ns = int(sel.numel())
    n_nodes = ns + L * n + n + K
    dropped = torch.zeros(n_nodes, dtype=torch.float64)
    tgt_new, src_new = _renumber(tgt, src, nf, sel if capped else None, n_nodes - K)
    if capped:
        gone = src_new < 0
        dropped.index_add_(0, tgt_new[gone], wt[gone].double())
        keep = ~gone
        tgt_new, src_new, wt = tgt_new[keep], src_new[keep], wt[keep]
        order = torch.argsort(tgt_new, stable=True)  # visiting order is not node order
        tgt_new, src_new, wt = tgt_new[order], src_new[order], wt[order]

    # each target's input and its fixed term (a run of the system with every source at zero)
    node_input = torch.full((n_nodes,), float("nan"))
    node_fixed = torch.full((n_nodes,), float("nan"))
    zero = torch.zeros(nf)
    bias_run = rm.forward(mlp=lambda i, u: rm.linear_mlp(i, u, scale=zero, errors=False),
                          embed=torch.zeros(n, rm.u.shape[-1]))
    f_layer, f_pos, f_index = feats.layer[sel], feats.pos[sel], feats.index[sel]
    for i in rm.tc.layers:
        at = (f_layer == i).nonzero().flatten()
        if len(at):
            pre = rm.tc.pre_acts(i, rm.u[i])
            pre0 = rm.tc.pre_acts(i, bias_run["u"][i])
            node_input[at] = pre[f_pos[at], f_index[at]]
            node_fixed[at] = pre0[f_pos[at], f_index[at]]
    lg, lg0 = rm.logits, bias_run["logits"][-1]
    node_input[n_nodes - K:] = lg[logit_ids] - lg.mean()
    node_fixed[n_nodes - K:] = lg0[logit_ids] - lg0.mean()
    if capped:
        node_fixed = (node_fixed.double() + dropped).float()

    graph = Graph(
        prompt="", tokens=rm.tokens.tolist(), token_strs=[str(t) for t in rm.tokens.tolist()],
        n_layers=L, feat_layer=f_layer, feat_pos=f_pos, feat_index=f_index,
        activation=feats.activation[sel], logit_tokens=logit_ids, logit_probs=logit_p,
        logit_strs=[str(int(t)) for t in logit_ids], edge_target=tgt_new, edge_source=src_new,
        edge_weight=wt, node_input=node_input, node_fixed=node_fixed,
        metadata={"config": cfg.to_dict(), "freeze_error": getattr(rm, "freeze_error", None),
                  "feature_type": rm.tc.kind,
                  "seconds_edges": round(t_edges, 4), "n_targets": ns + K,
                  "n_active_features": nf, "n_edges": int(wt.numel()),
                  "unselected_features": (
                      "their direct effects are added to the fixed terms of their targets"
                      if capped else "none: every active feature is a node")})
    log.info("attribution: %d of %d features, %d edges in %.2f s", ns, nf,
             graph.metadata["n_edges"], t_edges)
    return graph
