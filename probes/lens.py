"""Logit lens and tuned lens: read each layer's residual stream through the unembedding.

- **Logit lens** (nostalgebraist 2020; the "adapted logit lens" of LLM-Microscope, arXiv
  2502.15007 §3.3): p_l = softmax(W_U h_l). LLM-Microscope's code applies `lm_head` directly
  (`norm=False`, "raw"); the usual logit lens applies the final norm first (`norm=True`). Both are
  offered and labelled. At the last layer the normed lens *is* the model's output.
- **Tuned lens** (Belrose et al., arXiv 2303.08112): per layer an affine translator
  h -> h + A_l h + b_l (A, b start at 0, i.e. the logit lens) before the final norm and
  unembedding, trained to minimise KL(p_final || p_l). `fit_tuned_lens` starts from the
  least-squares map to the final residual (the linear shortcut of Din et al., arXiv 2303.09435;
  ridge-regularised) and optionally fine-tunes on the KL with Adam.
- Per layer we report KL(final || lens) in nats, the LLM-Microscope prediction error
  -log p_l[next token], and top-1 agreement with the model's own prediction.

States are stacked residual states [n_states, n, d] (`probes.activations.residual_hooks`): the
embeddings, then the output of each block; the final distribution comes from the last state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.errors import InterpError


class Unembed(nn.Module):
    """The model's final norm and unembedding, as one module: logits = W_U norm(h), computed
    on the model's device and returned on the input's (the lens statistics stay on the host)."""

    def __init__(self, model):
        super().__init__()
        hf = model.hf_model
        self.norm = hf.get_submodule(model.arch.final_norm)
        self.lm_head = hf.get_output_embeddings()
        if self.lm_head is None:
            raise InterpError(f"{model.name} has no output embedding (lm_head) to read through.")
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, h: Float[Tensor, "... d"], norm: bool = True) -> Float[Tensor, "... vocab"]:
        w = self.lm_head.weight
        out = self.lm_head(self.norm(h.to(w.device, w.dtype)) if norm else h.to(w.device, w.dtype))
        return out.float().to(h.device)


class TunedLens(nn.Module):
    """Per-state affine translators h -> h + h A_l + b_l (zeros: the plain logit lens)."""

    def __init__(self, n_states: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_states, d_model, d_model))
        self.bias = nn.Parameter(torch.zeros(n_states, d_model))

    def forward(self, h: Float[Tensor, "n d"], state: int) -> Float[Tensor, "n d"]:
        h = h.float()
        return h + h @ self.weight[state] + self.bias[state]

    def state_dict_safetensors(self) -> dict[str, Tensor]:
        return {"weight": self.weight.detach().contiguous(),
                "bias": self.bias.detach().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> TunedLens:
        w, b = tensors["weight"], tensors["bias"]
        lens = cls(w.shape[0], w.shape[1])
        with torch.no_grad():
            lens.weight.copy_(w)
            lens.bias.copy_(b)
        return lens


@dataclass
class LensStats:
    """Per-state means over tokens: KL to the final distribution (nats), prediction error
    -log p[next] (nats; NaN without next tokens) and top-1 agreement with the final top-1."""

    kl: list[float]
    pred_error: list[float]
    top1_agree: list[float]


def _kl(final_logp: Tensor, logits: Tensor) -> Tensor:
    logq = torch.log_softmax(logits, -1)
    return (final_logp.exp() * (final_logp - logq)).sum(-1)


def lens_stats(unembed: Unembed, states: Float[Tensor, "state n d"],
               next_tokens: Int[Tensor, " n"] | None = None, norm: bool = True,
               tuned: TunedLens | None = None, chunk: int = 256) -> LensStats:
    """KL / prediction error / top-1 agreement of each state's lens against the final output."""
    n_states, n, _ = states.shape
    kl = torch.zeros(n_states, dtype=torch.float64)
    err = torch.zeros(n_states, dtype=torch.float64)
    agree = torch.zeros(n_states, dtype=torch.float64)
    n_next = 0
    with torch.no_grad():
        for a in range(0, n, chunk):
            final = unembed(states[-1, a:a + chunk], norm=True)
            final_logp = torch.log_softmax(final, -1)
            top = final.argmax(-1)
            nxt = next_tokens[a:a + chunk] if next_tokens is not None else None
            have = nxt >= 0 if nxt is not None else None
            n_next += int(have.sum()) if have is not None else 0
            for s in range(n_states):
                h = states[s, a:a + chunk]
                if tuned is not None:
                    h = tuned(h, s)
                logits = unembed(h, norm=norm)
                kl[s] += _kl(final_logp, logits).double().sum()
                agree[s] += (logits.argmax(-1) == top).double().sum()
                if have is not None and have.any():
                    logp = torch.log_softmax(logits[have], -1)
                    err[s] -= logp.gather(-1, nxt[have, None]).double().sum()
    err = err / n_next if n_next else torch.full_like(err, float("nan"))
    return LensStats(kl=(kl / n).tolist(), pred_error=err.tolist(), top1_agree=(agree / n).tolist())


def fit_tuned_lens(unembed: Unembed, states: Float[Tensor, "state n d"], steps: int = 0,
                   lr: float = 1e-3, batch_size: int = 256, ridge: float = 1e-2, seed: int = 0,
                   progress: bool = False) -> tuple[TunedLens, list[float]]:
    """A tuned lens for every state: least-squares init, then `steps` Adam steps on the KL.

    The least-squares init solves min ||h_l (I + A) + b - h_last||^2 + ridge * n * ||A||^2 on
    standardised inputs. The last state's translator stays the identity. Returns the lens and
    the mean KL per Adam step (empty when `steps == 0`).
    """
    from tqdm.auto import tqdm

    n_states, n, d = states.shape
    lens = TunedLens(n_states, d)
    target = states[-1].double()
    with torch.no_grad():
        for s in range(n_states - 1):
            x = states[s].double()
            mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
            z = (x - mu) / sd
            t = target - x
            t_mu = t.mean(0)
            gram = z.T @ z + ridge * n * torch.eye(d, dtype=torch.float64)
            a_z = torch.linalg.solve(gram, z.T @ (t - t_mu))
            a = a_z / sd[:, None]
            lens.weight[s] = a.float()
            lens.bias[s] = (t_mu - mu @ a).float()
    losses: list[float] = []
    if steps <= 0:
        return lens, losses
    params = [lens.weight, lens.bias]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="tuned lens", disable=not progress):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        with torch.no_grad():
            final_logp = torch.log_softmax(unembed(states[-1, idx], norm=True), -1)
        opt.zero_grad()
        total = 0.0
        with torch.enable_grad():
            for s in range(n_states - 1):
                loss = _kl(final_logp, unembed(lens(states[s, idx], s), norm=True)).mean()
                (loss / (n_states - 1)).backward()
                total += loss.item()
        opt.step()
        with torch.no_grad():
            lens.weight[-1].zero_()
            lens.bias[-1].zero_()
        losses.append(total / (n_states - 1))
    return lens, losses


def lens_table(unembed: Unembed, states: Float[Tensor, "state pos d"], tokens: Int[Tensor, " pos"],
               next_tokens: Int[Tensor, " pos"], to_str, norm: bool = True,
               tuned: TunedLens | None = None) -> dict:
    """One text under the lens (the LLM-Microscope heatmap): per state and position, the
    prediction error -log p[next token] and the top-1 token as a string."""
    err, top = [], []
    with torch.no_grad():
        for s in range(states.shape[0]):
            h = tuned(states[s], s) if tuned is not None else states[s]
            logp = torch.log_softmax(unembed(h, norm=norm), -1)
            safe = next_tokens.clamp_min(0)
            e = -logp.gather(-1, safe[:, None]).squeeze(-1)
            err.append([float(v) if t >= 0 else None for v, t in zip(e, next_tokens)])
            top.append([to_str(int(t)) for t in logp.argmax(-1)])
    return {"tokens": [to_str(int(t)) for t in tokens],
            "next_tokens": [to_str(int(t)) if t >= 0 else None for t in next_tokens],
            "pred_error": err, "top1": top}
