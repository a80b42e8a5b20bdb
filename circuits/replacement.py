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

    def attn_T(self, i: int, g: Float[Tensor, "b pos d"]) -> Tensor:
        """Adjoint of `attn` (without biases) on gradients g."""
        lw = self.w.layers[i]
        P = g.shape[-2]
        A = self.patterns[i][:, :P, :P]
        gz = torch.einsum("bqd,hed->bhqe", g, lw.W_O)
        gv = torch.einsum("hqk,bhqe->bhke", A, gz)
        n_kv = lw.W_V.shape[0]
        if n_kv != len(lw.kv_of_head):
            idx = torch.tensor(lw.kv_of_head)
            gv = torch.zeros(g.shape[0], n_kv, *gv.shape[2:]).index_add_(1, idx, gv)
        return torch.einsum("bjke,jde->bkd", gv, lw.W_V)

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
        G = torch.zeros(B, P, d)
        if top == L:
            seed = torch.zeros(B, P, d)
            m = layer == L
            seed[arange[m], pos[m]] = vec[m]
            G = G + self.w.ln_final.transpose(seed, self.s_final[:P])
            top = L - 1
        for i in range(top, -1, -1):
            lw = self.w.layers[i]
            # sources written by layer i's MLP: features and errors
            if i in self._dec:
                pad, fpos, slot = self._dec[i]
                kp = pad[:P]
                e = torch.bmm(G.transpose(0, 1), kp.transpose(1, 2))  # [P, B, kmax]
                a, b = self._feat_offset[i]
                keep = fpos < P
                rows[:, a:b][:, keep] = e[fpos[keep], :, slot[keep]].T
            err_cols = nf + i * n
            rows[:, err_cols + self.first: err_cols + P] = torch.einsum(
                "bpd,pd->bp", G[:, self.first:], self.errors[i, self.first:P])
            # through the MLP's input: the skip path and the targets that read it
            gu = torch.zeros(B, P, d)
            if i in self.tc and self.tc[i].W_skip is not None:
                gu = gu + G @ self.tc[i].W_skip.float()
                gu[:, : self.first] = 0
            m = layer == i
            if bool(m.any()):
                gu[arange[m], pos[m]] += vec[m]
            G = G + lw.ln2.transpose(gu, self.s2[i, :P])
            G = G + lw.ln1.transpose(self.attn_T(i, G), self.s1[i, :P])
        tok_cols = nf + L * n
        rows[:, tok_cols: tok_cols + P] = torch.einsum("bpd,pd->bp", G, self.embeddings()[:P])
        return rows
