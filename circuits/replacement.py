"""The local replacement model of one prompt: the frozen network of `interp.models` (attention
patterns and norm scales frozen at their values on the prompt) with each MLP branch replaced by
its transcoder (Ameisen et al. 2025, "Circuit Tracing"; Lindsey et al. 2025, "On the Biology of
a Large Language Model", transformer-circuits.pub).

Under those freezes the residual stream is linear in its sources: token embeddings, active
features (activation a times decoder row), error vectors (true MLP output minus the transcoder's
reconstruction), plus fixed terms (biases, learned positions, everything at the BOS position).
`forward` runs the frozen network with the MLP outputs given by a function (so interventions can
re-encode or clamp features); `backward` is its exact adjoint, the frozen network's one adjoint
(`interp.models.adjoint`) with sources read where the MLP branches write, seeded at many targets
at once and restricted to their causal cone (layers below, positions up to the deepest target).
Every family with an adapter is served (`interp.models.families`). The dictionaries are a
per-layer `TranscoderSet` or a cross-layer transcoder (`circuits.clt.CLTSet`), whose features
write to their own and every later covered layer's MLP output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.models.adjoint import Adjoint
from interp.models.families import read_net
from interp.models.frozen import FINAL, Frozen, run
from interp.models.transformer import Net


@dataclass
class Features:
    """Active transcoder features, sorted by (layer, position, index)."""

    layer: Int[Tensor, "n"]
    pos: Int[Tensor, "n"]
    index: Int[Tensor, "n"]
    activation: Float[Tensor, "n"]

    def __len__(self) -> int:
        return int(self.layer.numel())


def recorded_sites(n_layers: int) -> list[str]:
    return ([f"blocks.{i}.mlp.hook_in" for i in range(n_layers)]
            + [f"blocks.{i}.hook_mlp_out" for i in range(n_layers)] + [FINAL])


def prompt_ids(model, transcoders, prompt) -> tuple[Net, Tensor]:
    """The frozen network of `model` (float32) and `prompt` as 1-D token ids, once `transcoders`
    is checked against the model."""
    transcoders.check(model)
    net = read_net(model, torch.float32)
    ids = prompt if isinstance(prompt, Tensor) else model.to_tokens(prompt)[0][0]
    ids = ids.reshape(-1).cpu()
    if ids.numel() < 2:
        raise InterpError("The prompt needs at least one token after BOS.")
    return net, ids


class ReplacementModel:
    """Frozen linear system of one prompt. Build with `ReplacementModel.build(model, tcs, prompt)`."""

    def __init__(self, net: Net, frozen: Frozen, transcoders, tokens: Tensor,
                 out: dict[str, Tensor], skip_bos: bool = True):
        self.net, self.frozen, self.tc, self.tokens = net, frozen, transcoders, tokens
        self.adjoint = Adjoint(net, frozen.values)
        L, n = net.n_layers, tokens.numel()
        self.n_layers, self.n_pos = L, n
        self.skip_bos = skip_bos
        self.first = 1 if skip_bos else 0  # first position whose features/errors are nodes
        self.u = torch.stack([out[f"blocks.{i}.mlp.hook_in"] for i in range(L)])  # [L, n, d]
        self.mlp_out = torch.stack([out[f"blocks.{i}.hook_mlp_out"] for i in range(L)])
        y = out[FINAL][-1]
        self.logits = net.logits(y)  # [vocab] at the last position: what logit nodes read
        self.capped_logits = net.cap(self.logits)  # the model's own (soft-capped) logits
        with torch.no_grad():
            self._tokens_x = net.embed_tokens(tokens).to(net.dtype)
        self._reads: dict[int, Tensor] = {}
        self._skips: dict[int, Tensor | None] = {}
        self._encode()

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, model, transcoders, prompt, skip_bos: bool = True,
              check: bool = True) -> ReplacementModel:
        """Run the frozen network of `model` once on `prompt` (a string or 1-D token ids),
        recording its factors, MLP inputs and outputs."""
        net, ids = prompt_ids(model, transcoders, prompt)
        fz = Frozen("detach")
        with torch.no_grad():
            out = run(net, net.embed(ids), fz, recorded_sites(net.n_layers))
        rm = cls(net, fz.replay(), transcoders, ids, out, skip_bos=skip_bos)
        if check:
            rm.freeze_error = rm.check_freeze(model)
        return rm

    @torch.no_grad()
    def _encode(self) -> None:
        """Active features, decoder vectors, error vectors and the fixed BOS-position outputs.

        A feature of layer l writes to every layer in `tc.writes_to(l)` (just l for a per-layer
        transcoder; l and every later covered layer for a cross-layer one); layer m's error is
        its true MLP output minus the set's whole reconstruction of it."""
        L, n, first = self.n_layers, self.n_pos, self.first
        d = self.u.shape[-1]
        self.errors = torch.zeros(L, n, d)
        self.recon = torch.zeros(L, n, d)
        acts = {i: self.tc.encode(i, self.u[i]) for i in self.tc.layers}
        for m in range(L):
            if not self.tc.writes_at(m):
                self.errors[m, first:] = self.mlp_out[m, first:]
                continue
            self.recon[m] = self.tc.reconstruct(m, acts, self.u[m])
            self.errors[m, first:] = (self.mlp_out[m] - self.recon[m])[first:]
        layers, poss, idxs, vals = [], [], [], []
        for i in self.tc.layers:
            a = acts[i]
            a[:first] = 0
            p, f = a.nonzero(as_tuple=True)
            layers.append(torch.full_like(p, i))
            poss.append(p)
            idxs.append(f)
            vals.append(a[p, f])
        cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
        self.features = Features(cat(layers, torch.long), cat(poss, torch.long),
                                 cat(idxs, torch.long), cat(vals, torch.float32))
        # per output layer m: the decoder vectors a * W_dec^{l->m} of every feature writing to
        # it, padded per position for one bmm, with their feature ids
        self._dec: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        for m in range(L):
            fid = [(self.features.layer == src).nonzero().flatten()
                   for src in (self.tc.sources_of(m) if self.tc.writes_at(m) else [])]
            fid = torch.cat(fid) if fid else torch.zeros(0, dtype=torch.long)
            cnt = int(fid.numel())
            if not cnt:
                continue
            pos = self.features.pos[fid]
            order = torch.argsort(pos, stable=True)  # position-major slots
            fid, pos = fid[order], pos[order]
            counts = torch.bincount(pos, minlength=n)
            starts = torch.cumsum(counts, 0) - counts
            slot = torch.arange(cnt) - starts[pos]
            self._dec[m] = (self._decoder_pad(m, fid, pos, slot, int(counts.max())), pos, slot,
                            fid)

    def _decoder_vectors(self, m: int, fid: Tensor) -> Float[Tensor, "k d"]:
        """a_s W_dec^{l->m}[i] of features `fid` (from any source layer l) at output layer m."""
        f = self.features
        src, idx = f.layer[fid], f.index[fid]
        vec = torch.empty(fid.numel(), self.u.shape[-1])
        for s in src.unique().tolist():
            sel = src == s
            vec[sel] = f.activation[fid[sel], None] * self.tc.dec_matrix(s, m)[idx[sel]]
        return vec

    def _decoder_pad(self, m: int, fid: Tensor, pos: Tensor, slot: Tensor,
                     kmax: int) -> Tensor:
        """Output layer m's decoder vectors padded per position [n, kmax, d]."""
        pad = torch.zeros(self.n_pos, kmax, self.u.shape[-1])
        pad[pos, slot] = self._decoder_vectors(m, fid)
        return pad

    # ----------------------------------------------------------------- the linear system
    def embeddings(self) -> Float[Tensor, "pos d"]:
        """The token embeddings (the token nodes' vectors; learned positions are fixed terms)."""
        return self._tokens_x

    def forward(self, mlp: Callable[[int, Tensor], Tensor] | None = None,
                embed: Tensor | None = None, with_bias: bool = True) -> dict[str, Tensor]:
        """Run the frozen system. `mlp(layer, u)` gives each layer's MLP output from its input
        (default: the linear replacement, i.e. `linear_mlp`); returns the transcoder inputs
        `u` [L, pos, d] and the logits [pos, vocab] (before any soft-cap)."""
        x = self.embeddings() if embed is None else embed
        if with_bias and self.net.pos_embed is not None:
            x = x + self.net.pos_embed[: self.n_pos]
        out = run(self.net, x, self.frozen, recorded_sites(self.n_layers)[: self.n_layers] + [FINAL],
                  bias=with_bias, mlp=mlp or self.linear_mlp)
        u = torch.stack([out[f"blocks.{i}.mlp.hook_in"] for i in range(self.n_layers)])
        return {"u": u, "logits": self.net.logits(out[FINAL], bias=with_bias)}

    def linear_mlp(self, i: int, u: Tensor, scale: Tensor | None = None,
                   errors: bool = True, bias: bool = True) -> Tensor:
        """Layer i's output in the linear system: features (activations times `scale`, all
        ones by default) + errors + fixed terms (b_dec, BOS position) + the skip path."""
        out = torch.zeros_like(u)
        if i in self._dec:
            pad, pos, slot, fid = self._dec[i]
            vec = pad[pos, slot]
            if scale is not None:
                vec = vec * scale[fid, None]
            out = out.index_add(0, pos, vec)
        if errors:
            out = out + self.errors[i]
        if bias:
            out = out + self._fixed_mlp(i)
        return out + self.skip(i, u)

    def skip(self, i: int, u: Tensor) -> Tensor | float:
        """A skip-transcoder's linear path W_skip u (zero at BOS, whose output is fixed)."""
        W = self.tc.skip_weight(i) if i in self.tc else None
        if W is None:
            return 0.0
        out = u @ W.T
        out[..., : self.first, :] = 0
        return out

    def _fixed_mlp(self, i: int) -> Tensor:
        """What layer i's MLP adds that is no node: b_dec, and the whole output at BOS."""
        fixed = torch.zeros(self.n_pos, self.u.shape[-1])
        if self.tc.writes_at(i):
            fixed = fixed + self.tc.out_bias(i)
        if self.first:
            fixed[: self.first] = self.mlp_out[i, : self.first]
        return fixed

    @torch.no_grad()
    def check_freeze(self, model, tol: float = 1e-3) -> float:
        """The frozen system must reproduce the model's own logits; returns the max relative
        error and raises if it is above `tol` (the family's adapter is then wrong)."""
        real = model(self.tokens.unsqueeze(0).to(model.device))[0, -1].float().cpu()
        y = self.net.cap(self.forward()["logits"][-1])
        err = float((y - real).abs().max() / real.abs().max().clamp_min(1e-6))
        if not err <= tol:
            raise InterpError(f"The frozen replacement model does not reproduce the model's "
                              f"logits (relative error {err:.2e}); the {self.net.family!r} "
                              "adapter in interp/models/families/ does not match this model.")
        return err

    # ----------------------------------------------------------------- the adjoint
    def n_sources(self) -> int:
        return len(self.features) + self.n_layers * self.n_pos + self.n_pos

    def _read(self, i: int) -> Tensor:
        """[n, d, kmax + 1]: each position's decoder vectors written at layer i, then its error."""
        if i not in self._reads:
            reads = [self.errors[i].unsqueeze(1)]  # [n, 1, d]
            if i in self._dec:
                reads.insert(0, self._dec[i][0])
            self._reads[i] = torch.cat(reads, 1).transpose(1, 2).contiguous()
        return self._reads[i]

    def _skip_t(self, i: int, G: Tensor, at: Tensor | None) -> Tensor | None:
        """Adjoint of layer i's skip path W_skip u, ln2 included (the MLP branch's only path:
        features and errors are sources)."""
        if i not in self._skips:
            W = self.tc.skip_weight(i) if i in self.tc else None
            self._skips[i] = self.adjoint.fold_ln2(i, W) if W is not None else None
        W = self._skips[i]
        if W is None:
            return None
        P = G.shape[0]
        gu = (G @ W) * self.adjoint.layer(i).s2[:P, None, None]
        gu[: self.first] = 0
        return gu

    def backward(self, layer: Int[Tensor, "b"], pos: Int[Tensor, "b"],
                 vec: Float[Tensor, "b d"]) -> Float[Tensor, "b n_sources"]:
        """Direct effects of every source on B targets, one pass through the cone.

        Target b reads `vec[b]` at the transcoder input of `layer[b]` (`n_layers`: the final
        norm's output) at `pos[b]`. Columns: [features | errors (layer-major) | tokens].
        """
        B, d = vec.shape
        L, n = self.n_layers, self.n_pos
        P = int(pos.max()) + 1
        top = int(layer.max())
        nf = len(self.features)
        rows = torch.zeros(B, self.n_sources())
        arange = torch.arange(B)
        G = torch.zeros(P, B, d)  # position-major: every per-position product is one bmm
        if top == L:
            m = layer == L
            G[pos[m], arange[m]] = self.adjoint.final_t(vec[m], pos[m])
            top = L - 1

        def read(i: int, G: Tensor) -> None:
            """Sources written at layer i's MLP output: the features writing there (a CLT's from
            every covered layer <= i), then its error node, one bmm."""
            e = torch.bmm(G, self._read(i)[:P])  # [P, B, kmax + 1]
            if i in self._dec:  # a CLT feature writes at several layers: its effects add up
                _, fpos, slot, fid = self._dec[i]
                keep = fpos < P
                rows.index_add_(1, fid[keep], e[fpos[keep], :, slot[keep]].T)
            err_cols = nf + i * n
            rows[:, err_cols + self.first: err_cols + P] = e[self.first:, :, -1].T

        def inject(i: int, G: Tensor) -> None:
            """Targets that read layer i's transcoder input."""
            m = layer == i
            if bool(m.any()):
                G[pos[m], arange[m]] += self.adjoint.ln2_t(i, vec[m], pos[m])

        G = self.adjoint.backward(G, top, at=pos, mlp_t=self._skip_t, read=read, inject=inject)
        tok_cols = nf + L * n
        rows[:, tok_cols: tok_cols + P] = torch.bmm(
            G, self.embeddings()[:P, :, None]).squeeze(-1).T
        return rows
