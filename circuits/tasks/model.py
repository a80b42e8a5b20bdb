"""The small transformer that the planted-circuit tasks train, with exact edge-level patching.

A pre-LayerNorm transformer (TransformerLens's parameter names and shapes, so a trained model
loads into a `HookedTransformer` unchanged; `to_hooked_transformer`), attention without biases
(so the heads' outputs sum exactly to the attention output), optional MLPs. Written here rather
than run through hooks because circuit discovery needs every head's output as its own term of
the residual stream and each head's query, key and value inputs as separate sums of those
terms: `masked_logits` runs many edge masks at once as one batched forward pass, starting at
the first layer a mask changes, which makes exhaustive per-edge patching, faithfulness curves
and ACDC's many forward passes cheap.

In a masked run the input of receiver r (a head's q, k or v input, an MLP input, the logits) is

    in_r = sum_s C_s + sum_s mask[r, s] * (out_s - C_s)

over the earlier senders s (the input embedding, heads, MLPs), where out_s is sender s's output
in this run and C_s its "corrupted" value (its output on counterfactual prompts, or its mean).
mask = 1 everywhere is the clean model; an edge with mask 0 carries C_s instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from circuits.discovery.graph import transformer_graph
from circuits.tasks import edges
from circuits.tasks.edges import layer_norm
from interp.config import Config
from interp.errors import ConfigError


@dataclass(frozen=True)
class TinyConfig(Config):
    """Shape of a task model. d_mlp = 0 makes it attention-only."""

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    d_mlp: int = 0
    d_vocab: int = 64
    n_ctx: int = 32
    act_fn: str = "relu"  # relu | gelu

    def __post_init__(self):
        if self.act_fn not in ("relu", "gelu"):
            raise ConfigError(f"act_fn must be relu or gelu, not {self.act_fn!r}.")


class _Params(nn.Module):
    """A named bag of parameters (so state-dict keys read like TransformerLens's)."""

    def __init__(self, **shapes):
        super().__init__()
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(*shape)))


class _Block(nn.Module):
    def __init__(self, c: TinyConfig):
        super().__init__()
        self.ln1 = _Params(w=(c.d_model,), b=(c.d_model,))
        qkv = (c.n_heads, c.d_model, c.d_head)
        self.attn = _Params(W_Q=qkv, W_K=qkv, W_V=qkv, W_O=(c.n_heads, c.d_head, c.d_model))
        if c.d_mlp:
            self.ln2 = _Params(w=(c.d_model,), b=(c.d_model,))
            self.mlp = _Params(W_in=(c.d_model, c.d_mlp), b_in=(c.d_mlp,),
                               W_out=(c.d_mlp, c.d_model), b_out=(c.d_model,))


_ln = layer_norm


class TinyTransformer(nn.Module):
    """A task model; `graph` is its circuit graph (q/k/v ports on heads)."""

    def __init__(self, cfg: TinyConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        c = cfg
        self.embed = _Params(W_E=(c.d_vocab, c.d_model))
        self.pos_embed = _Params(W_pos=(c.n_ctx, c.d_model))
        self.blocks = nn.ModuleList([_Block(c) for _ in range(c.n_layers)])
        self.ln_final = _Params(w=(c.d_model,), b=(c.d_model,))
        self.unembed = _Params(W_U=(c.d_model, c.d_vocab), b_U=(c.d_vocab,))
        self._init(seed)
        self.graph = transformer_graph(c.n_layers, c.n_heads, bool(c.d_mlp))
        self._layout()

    def _init(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith((".w",)):
                    p.fill_(1.0)
                elif name.endswith((".b", "b_in", "b_out", "b_U")):
                    p.zero_()
                else:
                    fan_in = p.shape[-2] if p.ndim >= 2 else p.shape[-1]
                    std = 0.5 if name.startswith(("embed", "pos_embed")) else fan_in ** -0.5
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    # ----------------------------------------------------------------- graph layout
    def _layout(self) -> None:
        """Senders are the graph's nodes but the logits (same order); receivers are the
        (node, port) pairs that edges enter, in the graph's edge order."""
        g, c = self.graph, self.cfg
        recv: dict[tuple[int, str], int] = {}
        for _, d, p in g.edges:
            recv.setdefault((d, p), len(recv))
        self.n_senders = len(g.nodes) - 1
        self.n_receivers = len(recv)
        self.edge_recv = torch.tensor([recv[(d, p)] for _, d, p in g.edges], dtype=torch.long)
        self.edge_send = g.edge_src.clone()
        H = c.n_heads
        self._layers = []
        for layer in range(c.n_layers):
            heads = [g.index[f"a{layer}.h{h}"] for h in range(H)]
            info = {"heads": heads, "n_attn_in": heads[0],
                    "q": [recv[(n, "q")] for n in heads], "k": [recv[(n, "k")] for n in heads],
                    "v": [recv[(n, "v")] for n in heads]}
            if c.d_mlp:
                m = g.index[f"m{layer}"]
                info |= {"mlp": m, "mlp_recv": recv[(m, "")], "n_mlp_in": m}
            self._layers.append(info)
        self._logits_recv = recv[(len(g.nodes) - 1, "")]

    def dense_masks(self, edge_masks: Float[Tensor, "n_masks n_edges"]
                    ) -> Float[Tensor, "n_masks n_receivers n_senders"]:
        m = edge_masks.shape[0]
        dense = edge_masks.new_zeros(m, self.n_receivers, self.n_senders)
        dense[:, self.edge_recv, self.edge_send] = edge_masks
        return dense

    def first_layer_of(self, edge: int) -> int:
        """The layer whose receivers an edge enters (n_layers for the logits)."""
        return self.graph.nodes[int(self.graph.edge_dst[edge])].layer

    # ----------------------------------------------------------------- plain forward
    def embed_tokens(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.embed.W_E[tokens] + self.pos_embed.W_pos[: tokens.shape[1]]

    def _attention(self, xq, xk, xv, p: _Params) -> tuple[Tensor, Tensor]:
        """Heads on separate inputs [..., heads, batch, pos, d]: (per-head outputs, pattern)."""
        q = torch.einsum("...hbpd,hde->...hbpe", xq, p.W_Q)
        k = torch.einsum("...hbpd,hde->...hbpe", xk, p.W_K)
        v = torch.einsum("...hbpd,hde->...hbpe", xv, p.W_V)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.cfg.d_head)
        n = scores.shape[-1]
        causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
        pattern = scores.masked_fill(causal, float("-inf")).softmax(-1)
        z = pattern @ v
        return torch.einsum("...hbpe,hed->...hbpd", z, p.W_O), pattern

    def _mlp(self, x: Tensor, blk: _Block) -> Tensor:
        act = F.relu if self.cfg.act_fn == "relu" else F.gelu
        h = act(_ln(x, blk.ln2) @ blk.mlp.W_in + blk.mlp.b_in)
        return h @ blk.mlp.W_out + blk.mlp.b_out

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.run_with_cache(tokens, cache=False)[0]

    def run_with_cache(self, tokens: Int[Tensor, "batch pos"], cache: bool = True
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits at every position and, with `cache`, activations under canonical hook names:
        hook_embed, hook_pos_embed, blocks.{L}.hook_resid_pre, .attn.hook_pattern
        [batch, head, q, k], .attn.hook_result [batch, pos, head, d_model] (each head's output),
        .hook_attn_out, .hook_mlp_out, .hook_resid_post, ln_final.hook_normalized."""
        acts: dict[str, Tensor] = {}
        tok = self.embed.W_E[tokens]
        pos = self.pos_embed.W_pos[: tokens.shape[1]].expand_as(tok)
        x = tok + pos
        if cache:
            acts |= {"hook_embed": tok, "hook_pos_embed": pos}
        for layer, blk in enumerate(self.blocks):
            xin = _ln(x, blk.ln1).unsqueeze(0).expand(self.cfg.n_heads, *x.shape)
            out, pattern = self._attention(xin, xin, xin, blk.attn)  # [h, b, p, d]
            attn_out = out.sum(0)
            if cache:
                acts[f"blocks.{layer}.hook_resid_pre"] = x
                acts[f"blocks.{layer}.attn.hook_pattern"] = pattern.transpose(0, 1)
                acts[f"blocks.{layer}.attn.hook_result"] = out.permute(1, 2, 0, 3)
                acts[f"blocks.{layer}.hook_attn_out"] = attn_out
            x = x + attn_out
            if self.cfg.d_mlp:
                m = self._mlp(x, blk)
                if cache:
                    acts[f"blocks.{layer}.hook_mlp_out"] = m
                x = x + m
            if cache:
                acts[f"blocks.{layer}.hook_resid_post"] = x
        xf = _ln(x, self.ln_final)
        if cache:
            acts["ln_final.hook_normalized"] = xf
        return xf @ self.unembed.W_U + self.unembed.b_U, acts

    def sender_outputs(self, tokens: Int[Tensor, "batch pos"]
                       ) -> Float[Tensor, "n_senders batch pos d_model"]:
        """Every sender's output on `tokens` (input embedding, then heads and MLPs in order)."""
        return self.logits_and_senders(tokens)[1]

    def logits_and_senders(self, tokens: Int[Tensor, "batch pos"]) -> tuple[Tensor, Tensor]:
        """Logits at every position and `sender_outputs`, from one forward pass."""
        logits, acts = self.run_with_cache(tokens)
        outs = [acts["hook_embed"] + acts["hook_pos_embed"]]
        for layer in range(self.cfg.n_layers):
            outs += list(acts[f"blocks.{layer}.attn.hook_result"].permute(2, 0, 1, 3))
            if self.cfg.d_mlp:
                outs.append(acts[f"blocks.{layer}.hook_mlp_out"])
        return logits, torch.stack(outs)

    # ----------------------------------------------------------------- masked forward
    def masked_logits(
        self,
        edge_masks: Float[Tensor, "n_masks n_edges"],
        corrupt: Float[Tensor, "n_senders batch pos d_model"],
        clean: Float[Tensor, "n_senders batch pos d_model"],
        start_layer: int = 0,
        embed: Float[Tensor, "n_masks batch pos d_model"] | None = None,
        inputs: list | None = None,
        all_positions: bool = False,
        cache: dict | None = None,
    ) -> Float[Tensor, "n_masks batch d_vocab"]:
        """Logits at the last position (every position with `all_positions`: [n_masks, batch,
        pos, d_vocab]) of the clean run with each edge mask applied.

        Senders before `start_layer`'s first node keep their clean outputs (`clean`, a cache
        from `sender_outputs`): start at the first layer that a mask touches. `embed`
        replaces the input node's output per mask (EAP-IG interpolates it). If `inputs` is a
        list, every receiver input is materialised and appended to it as (receiver ids,
        tensor [n_masks, receivers, batch, pos, d], position slice) so gradients can be taken
        with respect to them (`circuits.tasks.edges.reference_logits`); otherwise the
        factorised forward runs (`circuits.tasks.edges.factorised_logits`; `cache` keeps its
        mask-independent work between calls with the same `corrupt` and `clean`).
        """
        if inputs is not None:
            return edges.reference_logits(self, edge_masks, corrupt, clean, start_layer, embed,
                                          inputs, all_positions)
        return edges.factorised_logits(self, edge_masks, corrupt, clean, start_layer, embed,
                                       all_positions, cache)

    # ----------------------------------------------------------------- interop
    def to_hooked_transformer(self):
        """The same network as a TransformerLens `HookedTransformer` (zero attention biases)."""
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        c = self.cfg
        tl_cfg = HookedTransformerConfig(
            n_layers=c.n_layers, d_model=c.d_model, n_ctx=c.n_ctx, d_head=c.d_head,
            n_heads=c.n_heads, d_vocab=c.d_vocab, d_mlp=c.d_mlp or None, act_fn=c.act_fn,
            attn_only=not c.d_mlp, normalization_type="LN", positional_embedding_type="standard",
            default_prepend_bos=False)
        model = HookedTransformer(tl_cfg)
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        for layer in range(c.n_layers):
            for b in ("b_Q", "b_K", "b_V"):
                state[f"blocks.{layer}.attn.{b}"] = torch.zeros(c.n_heads, c.d_head)
            state[f"blocks.{layer}.attn.b_O"] = torch.zeros(c.d_model)
        model.load_state_dict(state, strict=False)
        return model.eval()

    # ----------------------------------------------------------------- files
    def save(self, path) -> None:
        """Weights as safetensors (`model.safetensors`) beside `config.json`'s `model` entry
        (written by the task's trainer)."""
        from interp.io import save_safetensors_atomic

        save_safetensors_atomic({k: v.detach().contiguous() for k, v in self.state_dict().items()},
                                path)

    @classmethod
    def load(cls, cfg: TinyConfig, path) -> TinyTransformer:
        from safetensors.torch import load_file

        model = cls(cfg)
        model.load_state_dict(load_file(str(path)))
        return model.eval().requires_grad_(False)
