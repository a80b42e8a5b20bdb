"""The local replacement model of one prompt: MLPs replaced by transcoders, attention patterns
and norm scales frozen at their values on the prompt (Ameisen et al. 2025, "Circuit Tracing";
Lindsey et al. 2025, "On the Biology of a Large Language Model", transformer-circuits.pub).

Under those freezes the residual stream is linear in its sources: token embeddings, active
features (activation a times decoder row), error vectors (true MLP output minus the transcoder's
reconstruction), plus fixed terms (biases, learned positions, everything at the BOS position).
`forward` runs that system (with the MLP outputs given by a function, so interventions can
re-encode or clamp features); `backward` is its exact adjoint, seeded at many targets at once,
restricted to the targets' causal cone (layers below, positions up to the deepest target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.transcoders import HOOK_IN, TranscoderSet
from circuits.weights import ModelWeights, read_weights
from interp.errors import InterpError


@dataclass
class Features:
    """Active transcoder features, sorted by (layer, position, index)."""

    layer: Int[Tensor, "n"]
    pos: Int[Tensor, "n"]
    index: Int[Tensor, "n"]
    activation: Float[Tensor, "n"]

    def __len__(self) -> int:
        return int(self.layer.numel())


@dataclass
class _Adjoint:
    """One layer's weights for the adjoint pass (see `ReplacementModel._adjoint_weights`)."""

    W_O: Tensor  # [d, heads*dh]
    W_V: Tensor  # [n_kv*dh, d], ln1's weight and centring folded in
    kv: Tensor | None  # head -> kv head, None without GQA
    n_kv: int
    AT: Tensor  # [heads, n, n]: pattern transposed, row k times ln1's frozen scale s[k]
    read: Tensor  # [n, d, kmax + 1]: each position's feature decoder vectors, then its error
    W_skip: Tensor | None  # [d, d], ln2's weight and centring folded in


class ReplacementModel:
    """Frozen linear system of one prompt. Build with `ReplacementModel.build(model, tcs, prompt)`."""

    def __init__(self, weights: ModelWeights, transcoders: TranscoderSet, tokens: Tensor,
                 cache: dict[str, Tensor], logits: Tensor, skip_bos: bool = True):
        self.w, self.tc, self.tokens = weights, transcoders, tokens
        L, n = weights.n_layers, tokens.numel()
        self.n_layers, self.n_pos = L, n
        self.skip_bos = skip_bos
        self.first = 1 if skip_bos else 0  # first position whose features/errors are nodes
        g = lambda k: cache[k][0].float()  # noqa: E731
        self.patterns = [g(f"blocks.{i}.attn.hook_pattern") for i in range(L)]  # [H, n, n]
        resid_pre = [g(f"blocks.{i}.hook_resid_pre") for i in range(L)]
        resid_mid = [g(f"blocks.{i}.hook_resid_mid") for i in range(L)]
        self.s1 = torch.stack([lw.ln1.scale(x) for lw, x in zip(weights.layers, resid_pre)])
        self.s2 = torch.stack([lw.ln2.scale(x) for lw, x in zip(weights.layers, resid_mid)])
        last = resid_mid[-1] + g(f"blocks.{L - 1}.hook_mlp_out")
        self.s_final = weights.ln_final.scale(last)
        self.u = torch.stack([g(HOOK_IN.format(layer=i)) for i in range(L)])  # [L, n, d]
        self.mlp_out = torch.stack([g(f"blocks.{i}.hook_mlp_out") for i in range(L)])
        self.logits = logits[0, -1].float()  # [vocab] at the last position
        self._adj: dict[int, _Adjoint] = {}
        self._encode()

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, model, transcoders: TranscoderSet, prompt, skip_bos: bool = True,
              check: bool = True) -> ReplacementModel:
        """Run `model` once on `prompt` (a string or 1-D token ids) and freeze it."""
        transcoders.check(model)
        weights = read_weights(model)
        L = model.cfg.n_layers
        hooks = []
        for i in range(L):
            hooks += [f"blocks.{i}.attn.hook_pattern", f"blocks.{i}.hook_resid_pre",
                      f"blocks.{i}.hook_resid_mid", HOOK_IN.format(layer=i),
                      f"blocks.{i}.hook_mlp_out"]
        ids = prompt if isinstance(prompt, Tensor) else model.to_tokens(prompt)[0][0]
        ids = ids.reshape(-1).to(model.device)
        if ids.numel() < 2:
            raise InterpError("The prompt needs at least one token after BOS.")
        logits, cache = model.run_with_cache(ids.unsqueeze(0), hooks=hooks)
        rm = cls(weights, transcoders, ids.cpu(), cache, logits, skip_bos=skip_bos)
        if check:
            rm.freeze_error = rm.check_freeze()
        return rm

    @torch.no_grad()
    def _encode(self) -> None:
        """Active features, decoder vectors, error vectors and the fixed BOS-position outputs."""
        L, n, first = self.n_layers, self.n_pos, self.first
        d = self.u.shape[-1]
        self.errors = torch.zeros(L, n, d)
        self.recon = torch.zeros(L, n, d)
        layers, poss, idxs, vals = [], [], [], []
        for i in range(L):
            if i not in self.tc:
                self.errors[i, first:] = self.mlp_out[i, first:]
                continue
            tc = self.tc[i]
            acts = tc.encode(self.u[i])
            self.recon[i] = tc.decode(acts, self.u[i])
            self.errors[i, first:] = (self.mlp_out[i] - self.recon[i])[first:]
            acts[:first] = 0
            p, f = acts.nonzero(as_tuple=True)
            layers.append(torch.full_like(p, i))
            poss.append(p)
            idxs.append(f)
            vals.append(acts[p, f])
        cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
        self.features = Features(cat(layers, torch.long), cat(poss, torch.long),
                                 cat(idxs, torch.long), cat(vals, torch.float32))
        # decoder vectors a * W_dec, grouped per layer and padded per position for one bmm
        self._dec: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        self._feat_offset = {}
        start = 0
        for i in range(L):
            sel = self.features.layer == i
            cnt = int(sel.sum())
            self._feat_offset[i] = (start, start + cnt)
            if cnt:
                pos, idx = self.features.pos[sel], self.features.index[sel]
                vec = self.features.activation[sel, None] * self.tc[i].W_dec[idx].float()
                slot = torch.zeros_like(pos)
                counts = torch.bincount(pos, minlength=n)
                starts = torch.cumsum(counts, 0) - counts
                slot = torch.arange(cnt) - starts[pos]
                kmax = int(counts.max())
                pad = torch.zeros(n, kmax, d)
                pad[pos, slot] = vec
                self._dec[i] = (pad, pos, slot)
            start += cnt

    # ----------------------------------------------------------------- the linear system
    def attn(self, i: int, h: Float[Tensor, "... pos d"], with_bias: bool = True) -> Tensor:
        """Frozen attention of layer i applied to its (normed) input."""
        lw = self.w.layers[i]
        P = h.shape[-2]
        A = self.patterns[i][:, :P, :P]
        v = torch.einsum("...pd,jde->...jpe", h, lw.W_V)
        if with_bias and lw.b_V is not None:
            v = v + lw.b_V[:, None, :]
        v = v[..., list(lw.kv_of_head), :, :]
        z = torch.einsum("hqk,...hke->...hqe", A, v)
        out = torch.einsum("...hqe,hed->...qd", z, lw.W_O)
        return out + lw.b_O if (with_bias and lw.b_O is not None) else out

    def _adjoint_weights(self, i: int) -> _Adjoint:
        """Layer i's pieces of the adjoint with the frozen norms folded in, made once.

        A frozen norm's adjoint is g -> s * (g diag(w) C) (C centres for LayerNorm, s the frozen
        per-position scale), so ln1's w and C go into W_V, its s into the transposed pattern's
        rows, and ln2's into the skip weights; the pass then never touches a norm."""
        if i not in self._adj:
            lw = self.w.layers[i]
            d = lw.W_O.shape[-1]
            W_V = lw.W_V.transpose(1, 2).reshape(-1, d)  # [n_kv*dh, d]
            kv = tuple(lw.kv_of_head)
            reads = [self.errors[i].unsqueeze(1)]  # [n, 1, d]: the error node, then features
            if i in self._dec:
                reads.insert(0, self._dec[i][0])
            W_skip = None
            if i in self.tc and self.tc[i].W_skip is not None:
                W_skip = lw.ln2.center(self.tc[i].W_skip.float() * lw.ln2.weight)
            self._adj[i] = _Adjoint(
                W_O=lw.W_O.reshape(-1, d).T.contiguous(),  # [d, heads*dh]
                W_V=lw.ln1.center(W_V * lw.ln1.weight).contiguous(),
                kv=None if kv == tuple(range(len(kv))) else torch.tensor(kv),
                n_kv=lw.W_V.shape[0],
                AT=(self.patterns[i].transpose(1, 2) * self.s1[i][None, :, None]).contiguous(),
                read=torch.cat(reads, 1).transpose(1, 2).contiguous(),  # [n, d, kmax+1]
                W_skip=W_skip)
        return self._adj[i]

    def attn_T(self, i: int, G: Float[Tensor, "pos b d"],
               at: Int[Tensor, "b"] | None = None) -> None:
        """Adds the adjoint of layer i's frozen attention, ln1 included, to G [pos, B, d].

        `at`: when row b of G is non-zero only at position at[b] (the first layer of a pass),
        the W_O product and the pattern mix are done on those B vectors alone."""
        adj = self._adjoint_weights(i)
        P, B, d = G.shape
        H = adj.AT.shape[0]
        AT = adj.AT[:, :P, :P]  # [H, k, q], row k scaled by ln1's s[k]
        if at is not None:
            gz = (G[at, torch.arange(B)] @ adj.W_O).view(B, H, -1)  # [B, H, dh]
            gv = AT[:, :, at].permute(1, 2, 0).unsqueeze(-1) * gz  # [P, B, H, dh]
        else:
            gz = (G.view(P * B, d) @ adj.W_O).view(P, B, H, -1).permute(2, 0, 1, 3)
            gv = torch.bmm(AT, gz.reshape(H, P, -1))  # [H, P(k), B*dh]
            gv = gv.view(H, P, B, -1).permute(1, 2, 0, 3)  # [P, B, H, dh]
        if adj.kv is not None:  # heads sharing a kv head (GQA) add up there
            gv = gv.new_zeros(P, B, adj.n_kv, gv.shape[-1]).index_add_(2, adj.kv, gv)
        G.view(P * B, d).addmm_(gv.reshape(P * B, -1), adj.W_V)

    def embeddings(self) -> Float[Tensor, "pos d"]:
        return self.w.W_E[self.tokens]

    def forward(self, mlp: Callable[[int, Tensor], Tensor] | None = None,
                embed: Tensor | None = None, with_bias: bool = True) -> dict[str, Tensor]:
        """Run the frozen system. `mlp(layer, u)` gives each layer's MLP output from its input
        (default: the linear replacement, i.e. `linear_mlp`); returns the transcoder inputs
        `u` [L, pos, d], the final residual and the logits [pos, vocab]."""
        mlp = mlp or self.linear_mlp
        x = self.embeddings() if embed is None else embed
        if with_bias and self.w.W_pos is not None:
            x = x + self.w.W_pos[: self.n_pos]
        us = []
        for i, lw in enumerate(self.w.layers):
            x = x + self.attn(i, lw.ln1.apply(x, self.s1[i], with_bias), with_bias)
            u = lw.ln2.apply(x, self.s2[i], with_bias)
            us.append(u)
            x = x + mlp(i, u)
        y = self.w.ln_final.apply(x, self.s_final, with_bias)
        logits = y @ self.w.W_U
        if with_bias and self.w.b_U is not None:
            logits = logits + self.w.b_U
        return {"u": torch.stack(us), "resid": x, "logits": logits}

    def linear_mlp(self, i: int, u: Tensor, scale: Tensor | None = None,
                   errors: bool = True, bias: bool = True) -> Tensor:
        """Layer i's output in the linear system: features (activations times `scale`, all
        ones by default) + errors + fixed terms (b_dec, BOS position) + the skip path."""
        out = torch.zeros_like(u)
        if i in self._dec:
            pad, pos, slot = self._dec[i]
            vec = pad[pos, slot]
            if scale is not None:
                a, b = self._feat_offset[i]
                vec = vec * scale[a:b, None]
            out = out.index_add(0, pos, vec)
        if errors:
            out = out + self.errors[i]
        if bias:
            out = out + self._fixed_mlp(i)
        return out + self.skip(i, u)

    def skip(self, i: int, u: Tensor) -> Tensor | float:
        """A skip-transcoder's linear path W_skip u (zero at BOS, whose output is fixed)."""
        if i not in self.tc or self.tc[i].W_skip is None:
            return 0.0
        out = u @ self.tc[i].W_skip.float().T
        out[..., : self.first, :] = 0
        return out

    def _fixed_mlp(self, i: int) -> Tensor:
        """What layer i's MLP adds that is no node: b_dec, and the whole output at BOS."""
        fixed = torch.zeros(self.n_pos, self.u.shape[-1])
        if i in self.tc:
            fixed = fixed + self.tc[i].b_dec.float()
        if self.first:
            fixed[: self.first] = self.mlp_out[i, : self.first]
        return fixed

    @torch.no_grad()
    def check_freeze(self, tol: float = 1e-3) -> float:
        """The frozen system must reproduce the model's own logits; returns the max relative
        error and raises if it is above `tol` (the family's reader is then wrong)."""
        out = self.forward()
        err = float((out["logits"][-1] - self.logits).abs().max()
                    / self.logits.abs().max().clamp_min(1e-6))
        if not err <= tol:
            raise InterpError(f"The frozen replacement model does not reproduce the model's "
                              f"logits (relative error {err:.2e}); the attention/norm reader in "
                              "circuits/weights.py does not match this model.")
        return err

    # ----------------------------------------------------------------- the adjoint
    def n_sources(self) -> int:
        return len(self.features) + self.n_layers * self.n_pos + self.n_pos

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
            G[pos[m], arange[m]] = self.w.ln_final.transpose(vec[m], self.s_final[pos[m]])
            top = L - 1
        for i in range(top, -1, -1):
            adj = self._adjoint_weights(i)
            # sources written by layer i's MLP: its features, then its error node, in one bmm
            e = torch.bmm(G, adj.read[:P])  # [P, B, kmax + 1]
            if i in self._dec:
                _, fpos, slot = self._dec[i]
                a, b = self._feat_offset[i]
                keep = fpos < P
                rows[:, a:b][:, keep] = e[fpos[keep], :, slot[keep]].T
            err_cols = nf + i * n
            rows[:, err_cols + self.first: err_cols + P] = e[self.first:, :, -1].T
            # through the MLP's input: the skip path, then the targets that read it
            if adj.W_skip is not None:
                gu = (G @ adj.W_skip) * self.s2[i, :P, None, None]
                gu[: self.first] = 0
                G += gu
            m = layer == i
            if bool(m.any()):
                G[pos[m], arange[m]] += self.w.layers[i].ln2.transpose(vec[m], self.s2[i, pos[m]])
            # on the pass's first layer row b is non-zero at pos[b] only (or zero: lower targets)
            self.attn_T(i, G, at=pos if i == top else None)
        tok_cols = nf + L * n
        rows[:, tok_cols: tok_cols + P] = torch.bmm(
            G, self.embeddings()[:P, :, None]).squeeze(-1).T
        return rows
