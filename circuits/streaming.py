"""Attribution graphs of long prompts with bounded memory.

What grows with the prompt length n in `ReplacementModel` (L layers, H heads, d = d_model):
the frozen attention patterns (L·H·n² floats, 4.5 GB for the default model at 2,048 tokens),
their transposed, rescaled copies that the adjoint caches (as much again), the per-layer read
matrices [n, d, k+1] the adjoint caches, and the cotangent G [n, B, d] of one batch of B target
rows. `StreamedReplacementModel` keeps none of the first three for every layer at once:

- the attention pattern of layer i is not stored; it is recomputed, when a pass reaches layer i,
  from the layer's residual input (kept: L·n·d floats) exactly as the forward pass computed it
  (`interp.models.frozen.pattern` on the replayed ln1), so the values are bitwise the same;
- the adjoint's per-layer pieces (transposed pattern, folded gate) live in a cache of
  `keep_layers` layers; a backward pass walks the layers top-down, so each batch recomputes each
  layer once (a QKᵀ product, about 1/B of the batch's own attention adjoint);
- the read matrices are built per layer per pass and dropped.

The rows are made in batches of `batch_size` targets (`AttributionConfig`; smaller batches bound
the cotangent G and the dense row block [B, n_sources] before it is made sparse) and kept as
sparse triples; `max_feature_nodes` (the influence-first node budget of Ameisen et al. 2025,
"Circuit Tracing", as circuit-tracer runs it) bounds how many rows, and so how many edges, exist.
The graph is the one `circuits.attribution.attribute` makes (tested equal on tiny models).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

from circuits.attribution import AttributionConfig, _Rows, graph_through
from circuits.graph import Graph
from circuits.replacement import ReplacementModel, recorded_sites, prompt_ids
from circuits.transcoders import require_set
from interp.models.adjoint import Adjoint
from interp.models.frozen import Frozen, norm, pattern, run
from interp.models.transformer import Net

#: attention patterns are recomputed, never stored, above this many tokens by `attribute_long`
DEFAULT_KEEP_LAYERS = 2


def _is_pattern(key: str) -> bool:
    return key.endswith(".attn")


class LazyFactors(dict):
    """The frozen factors of one prompt without the attention patterns: `values["i.attn"]` is
    recomputed from layer i's residual input (`resid_pre` [L, n, d]) when asked for, and the
    last `keep` patterns are cached. Setting a pattern stores nothing (a "detach" run records
    its factors here without keeping L·H·n² floats)."""

    def __init__(self, net: Net, keep: int = DEFAULT_KEEP_LAYERS):
        super().__init__()
        self.net, self.keep = net, max(1, keep)
        self.resid_pre: Tensor | None = None
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    def __setitem__(self, key: str, value: Tensor) -> None:
        if not _is_pattern(key):
            super().__setitem__(key, value)

    def __getitem__(self, key: str) -> Tensor:
        if not _is_pattern(key):
            return super().__getitem__(key)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if self.resid_pre is None:
            raise KeyError(key)
        i = int(key.split(".")[0])
        blk = self.net.blocks[i]
        fz = Frozen("replay")
        fz.values = self  # the recorded ln1 scale, no copy
        with torch.no_grad():
            p = pattern(self.net, blk.attn, norm(self.resid_pre[i], blk.ln1, fz, f"{i}.ln1", True))
        self._cache[key] = p
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return p

    def n_patterns_held(self) -> int:
        return len(self._cache)


class _BoundedAdjoint(Adjoint):
    """`Adjoint` whose per-layer pieces (the transposed pattern above all) are kept for the
    `keep` most recently used layers only."""

    def __init__(self, net: Net, values, keep: int):
        super().__init__(net, values)
        self.keep = max(1, keep)
        self._layers = OrderedDict()

    def layer(self, i: int):
        lay = super().layer(i)
        self._layers.move_to_end(i)
        while len(self._layers) > self.keep:
            self._layers.popitem(last=False)
        return lay


class _ReadVectors:
    """`vec[targets]` of `_Rows` without an [n_features, d] matrix: encoder rows gathered for
    the targets asked for (features first, then the logits' vectors)."""

    def __init__(self, rm: ReplacementModel, logit_vecs: Tensor):
        self.rm, self.logit_vecs = rm, logit_vecs
        self.nf = len(rm.features)

    def __getitem__(self, t: Tensor) -> Tensor:
        f = self.rm.features
        out = torch.empty(t.numel(), self.logit_vecs.shape[-1])
        is_logit = t >= self.nf
        out[is_logit] = self.logit_vecs[t[is_logit] - self.nf]
        ft = t[~is_logit]
        rows = (~is_logit).nonzero().flatten()
        for i in f.layer[ft].unique().tolist():
            at = f.layer[ft] == i
            out[rows[at]] = self.rm.tc.enc_rows(i, f.index[ft[at]])
        return out


class _StreamedRows(_Rows):
    """`_Rows` whose read vectors are gathered per batch (`_ReadVectors`)."""

    def __init__(self, rm: ReplacementModel, logit_vecs: Tensor, batch_size: int,
                 progress: bool):
        from tqdm.auto import tqdm

        feats = rm.features
        nf, K = len(feats), logit_vecs.shape[0]
        self.rm, self.B, self.nf = rm, batch_size, nf
        self.layer = torch.cat([feats.layer, torch.full((K,), rm.n_layers)])
        self.pos = torch.cat([feats.pos, torch.full((K,), rm.n_pos - 1)])
        self.vec = _ReadVectors(rm, logit_vecs)
        self.tgt, self.src, self.w = [], [], []
        self.bar = tqdm(total=nf + K, disable=not progress, unit="row", desc="attribution")


class _DecoderVectors:
    """Stands for output layer m's padded decoder vectors [n, kmax, d] (a · W_dec^{l->m} of
    each active feature writing there, from every source layer l) without holding them:
    `pad[pos, slot]` and `full()` are made when asked for, in the order of `_dec[m]`'s
    feature ids."""

    def __init__(self, rm: ReplacementModel, out_layer: int, fid: Tensor, n: int, kmax: int):
        self.rm, self.m, self.fid = rm, out_layer, fid
        self.shape = (n, kmax, rm.u.shape[-1])

    def vectors(self) -> Tensor:
        return self.rm._decoder_vectors(self.m, self.fid)

    def __getitem__(self, key) -> Tensor:
        return self.vectors()  # only ever indexed at (pos, slot) of every active feature

    def full(self, pos: Tensor, slot: Tensor) -> Tensor:
        pad = torch.zeros(self.shape)
        pad[pos, slot] = self.vectors()
        return pad


class StreamedReplacementModel(ReplacementModel):
    """`ReplacementModel` whose memory does not hold every layer's attention pattern (see the
    module docstring). Build with `StreamedReplacementModel.build(model, tcs, prompt)`."""

    def __init__(self, net: Net, frozen: Frozen, transcoders, tokens: Tensor,
                 out: dict[str, Tensor], skip_bos: bool = True,
                 keep_layers: int = DEFAULT_KEEP_LAYERS):
        super().__init__(net, frozen, transcoders, tokens, out, skip_bos=skip_bos)
        self.keep_layers = keep_layers
        self.adjoint = _BoundedAdjoint(net, frozen.values, keep_layers)
        self.rows_class = _StreamedRows

    @classmethod
    def build(cls, model, transcoders, prompt, skip_bos: bool = True,
              check: bool = True, keep_layers: int = DEFAULT_KEEP_LAYERS
              ) -> StreamedReplacementModel:
        net, ids = prompt_ids(model, transcoders, prompt)
        L = net.n_layers
        values = LazyFactors(net, keep_layers)
        fz = Frozen("detach")
        fz.values = values
        x = net.embed(ids)
        resid = [f"blocks.{i}.hook_resid_post" for i in range(L - 1)]
        with torch.no_grad():
            out = run(net, x, fz, recorded_sites(L) + resid)
            values.resid_pre = torch.stack([x.float()] + [out.pop(s) for s in resid])
        replay = Frozen("replay")
        replay.values = values
        rm = cls(net, replay, transcoders, ids, out, skip_bos=skip_bos, keep_layers=keep_layers)
        if check:
            rm.freeze_error = rm.check_freeze(model)
        return rm

    def _decoder_pad(self, m: int, fid: Tensor, pos: Tensor, slot: Tensor,
                     kmax: int) -> _DecoderVectors:
        """No [n, kmax, d] pad per output layer (a CLT's last layer holds every covered layer's
        features): the vectors are made when a pass reads them."""
        return _DecoderVectors(self, m, fid, self.n_pos, kmax)

    def _read(self, i: int) -> Tensor:
        """Layer i's read matrix, made for this pass and not cached."""
        reads = [self.errors[i].unsqueeze(1)]
        if i in self._dec:
            pad, pos, slot, _ = self._dec[i]
            reads.insert(0, pad.full(pos, slot))
        return torch.cat(reads, 1).transpose(1, 2).contiguous()


def attribute_long(model, transcoders, prompt, config: AttributionConfig | None = None,
                   progress: bool = False, keep_layers: int = DEFAULT_KEEP_LAYERS) -> Graph:
    """`circuits.attribution.attribute` with bounded memory for long prompts: the same graph,
    made through a `StreamedReplacementModel`. Pair it with a node budget
    (`AttributionConfig(max_feature_nodes=...)`) and a modest `batch_size` (e.g. 32)."""
    cfg = config or AttributionConfig(batch_size=32, max_feature_nodes=256)

    def build(model, tcs, prompt, skip_bos):
        return StreamedReplacementModel.build(model, tcs, prompt, skip_bos=skip_bos,
                                              keep_layers=keep_layers)
    return graph_through(model, require_set(transcoders), prompt, cfg, build, progress=progress,
                         streamed={"keep_layers": keep_layers})
