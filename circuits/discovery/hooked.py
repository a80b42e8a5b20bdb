"""Patching any Hugging Face model through its canonical hooks, at the component level.

For models without a task (the default model on prompts a user gives) the units are the
components: each attention head (its slice of `blocks.{L}.attn.hook_z`, the input of the
output projection, so patching it replaces exactly that head's contribution) and each MLP
(`blocks.{L}.hook_mlp_out`). Masks run several at a time, stacked along the batch. EAP and
EAP-IG take gradients of the metric with respect to those hook values (with the input
embedding `hook_embed` interpolated for EAP-IG). There is no ground truth here: the scores
feed faithfulness curves only. Prompts come in clean/counterfactual pairs that tokenise to
the same length; the metric is the logit difference answer - distractor at the last token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuits.discovery.context import PatchContext, check_ablation
from circuits.discovery.graph import transformer_graph
from interp.errors import ConfigError


@dataclass
class PromptBatch:
    """Token ids of clean prompts and counterfactuals, and the answer / distractor tokens."""

    clean: Tensor
    corrupt: Tensor
    answer: Tensor
    distractor: Tensor

    def __len__(self) -> int:
        return self.clean.shape[0]


def logit_diff(logits: Tensor, batch: PromptBatch) -> Tensor:
    """logit(answer) - logit(distractor) per prompt, for logits [..., batch, vocab]."""
    shape = (*logits.shape[:-1], 1)
    a = logits.gather(-1, batch.answer.reshape(*([1] * (logits.ndim - 2)), -1, 1).expand(shape))
    d = logits.gather(-1, batch.distractor.reshape(*([1] * (logits.ndim - 2)), -1, 1).expand(shape))
    return (a - d).squeeze(-1)


def prompt_batch(model, pairs: list[dict]) -> PromptBatch:
    """Tokenise records {clean, corrupt, answer, distractor} (strings; the answer and the
    distractor are scored by their first token, e.g. " Mary")."""
    need = ("clean", "corrupt", "answer", "distractor")
    for i, p in enumerate(pairs):
        missing = [k for k in need if not isinstance(p.get(k), str) or not p.get(k)]
        if missing:
            raise ConfigError(f"Prompt {i} lacks {missing}; every record needs the strings "
                              f"{list(need)}.")
    clean = [model.to_tokens(p["clean"])[0][0] for p in pairs]
    corrupt = [model.to_tokens(p["corrupt"])[0][0] for p in pairs]
    lengths = {len(t) for t in clean + corrupt}
    if len(lengths) != 1:
        bad = next(i for i, (a, b) in enumerate(zip(clean, corrupt)) if len(a) != len(b)
                   or len(a) != len(clean[0]))
        raise ConfigError(f"Clean and counterfactual prompts must all tokenise to the same "
                          f"length (prompt {bad}: {len(clean[bad])} vs {len(corrupt[bad])} "
                          f"tokens, first prompt {len(clean[0])}); reword them or split the set.")

    def first(s: str) -> int:
        ids = model.tokenizer(s, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"Answer {s!r} tokenises to nothing.")
        return ids[0]

    return PromptBatch(torch.stack(clean), torch.stack(corrupt),
                       torch.tensor([first(p["answer"]) for p in pairs]),
                       torch.tensor([first(p["distractor"]) for p in pairs]))


class HookedContext(PatchContext):
    """A `HookedModel` on a `PromptBatch`, patched per head and per MLP."""

    def __init__(self, model, batch: PromptBatch, metric_fn=logit_diff, ablation: str = "resample",
                 max_rows: int = 32):
        check_ablation(ablation)
        self.model, self.batch, self.metric_fn, self.ablation = model, batch, metric_fn, ablation
        c = model.cfg
        self.graph = transformer_graph(c.n_layers, c.n_heads, mlp=True, edges=False)
        self.max_rows = max_rows
        self.hook_names = [n for layer in range(c.n_layers)
                           for n in (f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out")]
        _, self.clean_cache = model.run_with_cache(batch.clean, hooks=self.hook_names)
        if ablation == "resample":
            _, self.corrupt_cache = model.run_with_cache(batch.corrupt, hooks=self.hook_names)
        else:
            self.corrupt_cache = {k: v.mean(0, keepdim=True).expand_as(v)
                                  for k, v in self.clean_cache.items()}

    # ----------------------------------------------------------------- masked runs
    def _split(self, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Component masks [M, C] -> head masks [M, L, H] and MLP masks [M, L]."""
        c = self.model.cfg
        per_layer = masks.reshape(masks.shape[0], c.n_layers, c.n_heads + 1).bool()
        return per_layer[..., :c.n_heads], per_layer[..., c.n_heads]

    def _hooks(self, heads: Tensor, mlps: Tensor):
        M = heads.shape[0]
        hooks = []
        for layer in range(self.model.cfg.n_layers):
            zc = self.corrupt_cache[f"blocks.{layer}.attn.hook_z"]
            mc = self.corrupt_cache[f"blocks.{layer}.hook_mlp_out"]
            hm, mm = heads[:, layer], mlps[:, layer]
            if not hm.all():
                def z_hook(x, hook, hm=hm, zc=zc):
                    x = x.reshape(M, -1, *x.shape[1:])
                    keep = hm[:, None, None, :, None]
                    return torch.where(keep, x, zc.unsqueeze(0)).flatten(0, 1)
                hooks.append((f"blocks.{layer}.attn.hook_z", z_hook))
            if not mm.all():
                def m_hook(x, hook, mm=mm, mc=mc):
                    x = x.reshape(M, -1, *x.shape[1:])
                    return torch.where(mm[:, None, None, None], x, mc.unsqueeze(0)).flatten(0, 1)
                hooks.append((f"blocks.{layer}.hook_mlp_out", m_hook))
        return hooks

    @torch.no_grad()
    def logits(self, masks: Tensor, level: str = "node") -> Tensor:
        if level != "node":
            raise ConfigError("A model patched through hooks is scored per component "
                              "(level 'node'); edge-level methods need a task model.")
        B = len(self.batch)
        step = max(1, self.max_rows // B)
        out = []
        for i in range(0, masks.shape[0], step):
            chunk = masks[i:i + step]
            heads, mlps = self._split(chunk)
            ids = self.batch.clean.repeat(chunk.shape[0], 1)
            with self.model.hooks(self._hooks(heads, mlps)):
                logits = self.model(ids)[:, -1]
            out.append(logits.reshape(chunk.shape[0], B, -1).float())
        return torch.cat(out)

    # ----------------------------------------------------------------- gradients
    def gradient_scores(self, alphas=(1.0,), interpolate: str = "inputs") -> Tensor:
        """Component scores (clean - ablated) . mean_alpha dm/d(value) (EAP, EAP-IG inputs)."""
        if interpolate != "inputs":
            raise ConfigError("Through hooks only the inputs variant of EAP-IG is available.")
        m, c = self.model, self.model.cfg
        _, emb = m.run_with_cache(self.batch.clean, hooks=["hook_embed"], stop_at_layer="auto")
        _, emb_c = m.run_with_cache(self.batch.corrupt, hooks=["hook_embed"], stop_at_layer="auto")
        e0, e1 = emb_c["hook_embed"], emb["hook_embed"]
        if self.ablation == "mean":
            e0 = e1.mean(0, keepdim=True).expand_as(e1)
        grads = {n: torch.zeros_like(v) for n, v in self.clean_cache.items()}
        for a in alphas:
            seen: dict[str, Tensor] = {}

            def embed_hook(x, hook, a=a):
                return (e0 + a * (e1 - e0)).detach().requires_grad_(True)

            def keep(x, hook):  # returned, so the value autograd sees is this very tensor
                seen[hook.name] = x
                return x

            hooks = [("hook_embed", embed_hook)] + [(n, keep) for n in self.hook_names]
            with torch.enable_grad(), m.hooks(hooks):
                logits = m(self.batch.clean)[:, -1].float()
                total = self.metric_fn(logits, self.batch).mean()
                gs = torch.autograd.grad(total, [seen[n] for n in self.hook_names])
            for n, g in zip(self.hook_names, gs):
                grads[n] += g.detach() / len(alphas)
        scores = torch.zeros(c.n_layers, c.n_heads + 1)
        for layer in range(c.n_layers):
            z = f"blocks.{layer}.attn.hook_z"
            d = (self.clean_cache[z] - self.corrupt_cache[z]).float()
            scores[layer, :c.n_heads] = (d * grads[z].float()).sum((0, 1, 3)) / len(self.batch)
            mo = f"blocks.{layer}.hook_mlp_out"
            d = (self.clean_cache[mo] - self.corrupt_cache[mo]).float()
            scores[layer, c.n_heads] = (d * grads[mo].float()).sum() / len(self.batch)
        return scores.reshape(-1)

    # ----------------------------------------------------------------- vectors
    @property
    def vector_components(self) -> list[int]:
        return self.graph.heads

    def component_vectors(self, which: str = "clean", position: str = "mean") -> Tensor:
        """Each head's hook_z vector (d_head) on the clean or counterfactual prompts, averaged
        over positions or at the last: [batch, heads, d_head] (components `vector_components`)."""
        cache = self.clean_cache if which == "clean" else (
            self.corrupt_cache if self.ablation == "resample"
            else self.model.run_with_cache(self.batch.corrupt, hooks=self.hook_names)[1])
        zs = torch.cat([cache[f"blocks.{layer}.attn.hook_z"] for layer in
                        range(self.model.cfg.n_layers)], dim=2).float()  # [b, p, L*H, dh]
        return zs.mean(1) if position == "mean" else zs[:, -1]
