"""Streaming per-latent statistics of a sparse dictionary over a corpus, in bounded memory.

One pass over token windows (from an activation store or straight from the model) accumulates,
for every latent j of an SAE / transcoder:

- firing count and density (fraction of tokens with f_j > 0), sum (mean over firing tokens and
  over all tokens) and max activation;
- a histogram of its positive activations on fixed log10 bins (quantiles are read from it);
- the top-N activating tokens, each with its context window (token ids and the latent's
  activation on every token of the window, as in Anthropic's and SAEDashboard's feature pages).

Memory is O(d_sae * (bins + N * context)) whatever the corpus size: each batch's candidates
are merged into the running top-N and only the winners' contexts are copied. Logit effects
(the decoder direction read through the final norm's gain and the unembedding, as in
Bricken et al. 2023 "Towards Monosemanticity") are `logit_effects`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureStatsConfig(Config):
    """Settings of one statistics pass (recorded in the run)."""

    n_tokens: int = 65_536  # tokens read (whole windows); BOS positions are not counted
    top_n: int = 20  # top activating contexts kept per latent
    context_left: int = 15  # tokens shown before the activating token
    context_right: int = 4  # and after it
    hist_bins: int = 160  # log10 bins of positive activations
    hist_min_log10: float = -4.0  # values below land in the first bin, above in the last
    hist_max_log10: float = 4.0
    batch_windows: int = 16  # windows encoded at once (bounds the [tokens, d_sae] buffer)
    drop_bos: bool = True  # ignore position 0 of each window (the attention sink)
    logit_k: int = 10  # top / bottom tokens of each latent's logit effect
    source: str = "auto"  # auto (the SAE's store if it has the tokens, else model) | store | model
    device: str = "auto"  # where the dictionary encodes and the model runs (interp.devices)
    dtype: str = "float32"  # the model's compute dtype

    def __post_init__(self):
        from interp.devices import check_device, check_dtype

        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "dtype", check_dtype(self.dtype))
        if self.n_tokens < 1 or self.top_n < 1 or self.batch_windows < 1:
            raise ConfigError("n_tokens, top_n and batch_windows must be >= 1, got "
                              f"{self.n_tokens}, {self.top_n}, {self.batch_windows}.")
        if self.context_left < 0 or self.context_right < 0:
            raise ConfigError("context_left and context_right must be >= 0.")
        if self.hist_bins < 2 or self.hist_max_log10 <= self.hist_min_log10:
            raise ConfigError("Need hist_bins >= 2 and hist_max_log10 > hist_min_log10.")
        if self.source not in ("auto", "store", "model"):
            raise ConfigError(f"source must be auto, store or model, not {self.source!r}.")

    @property
    def context_len(self) -> int:
        return self.context_left + 1 + self.context_right

    def hist_edges(self) -> list[float]:
        """The log10 bin edges (hist_bins + 1 of them)."""
        return np.linspace(self.hist_min_log10, self.hist_max_log10,
                           self.hist_bins + 1).tolist()


class FeatureAccumulator:
    """Running statistics of `d_sae` latents; feed it batches with `update`, read `result()`."""

    def __init__(self, d_sae: int, cfg: FeatureStatsConfig = FeatureStatsConfig()):
        self.cfg, self.d_sae = cfg, d_sae
        n, c = cfg.top_n, cfg.context_len
        self.n_tokens = 0
        self.count = torch.zeros(d_sae, dtype=torch.int64)
        self.sum = torch.zeros(d_sae, dtype=torch.float64)
        self.max = torch.zeros(d_sae, dtype=torch.float32)
        self.hist = torch.zeros(d_sae * cfg.hist_bins, dtype=torch.int64)
        self.top_vals = torch.full((n, d_sae), -math.inf)
        self.top_window = torch.full((n, d_sae), -1, dtype=torch.int64)
        self.top_pos = torch.full((n, d_sae), -1, dtype=torch.int64)
        self.ctx_tokens = torch.full((n, d_sae, c), -1, dtype=torch.int32)
        self.ctx_acts = torch.zeros((n, d_sae, c), dtype=torch.float32)

    @torch.no_grad()
    def update(self, tokens: Int[Tensor, "windows ctx"], acts: Float[Tensor, "windows ctx d_sae"],
               valid: Tensor, first_window: int) -> None:
        """Add one batch: `acts` of every token of `tokens` (rows where `valid` is False are
        ignored); windows are numbered from `first_window`."""
        cfg = self.cfg
        W, T, N = acts.shape
        if N != self.d_sae:
            raise ConfigError(f"acts has {N} latents, the accumulator {self.d_sae}.")
        a = acts.float() * valid.reshape(W, T, 1).to(torch.float32)
        flat = a.reshape(W * T, N)
        self.n_tokens += int(valid.sum())
        pos = flat > 0
        self.count += pos.sum(0)
        self.sum += flat.sum(0, dtype=torch.float64)
        self.max = torch.maximum(self.max, flat.max(0).values)
        rows, cols = pos.nonzero(as_tuple=True)
        if rows.numel():
            v = flat[rows, cols]
            width = (cfg.hist_max_log10 - cfg.hist_min_log10) / cfg.hist_bins
            b = ((v.log10() - cfg.hist_min_log10) / width).floor().clamp(0, cfg.hist_bins - 1)
            self.hist += torch.bincount(cols * cfg.hist_bins + b.long(),
                                        minlength=self.hist.numel())
        self._merge_top(tokens, a, flat, first_window)

    def _merge_top(self, tokens, a, flat, first_window) -> None:
        cfg = self.cfg
        W, T, N = a.shape
        n = cfg.top_n
        k = min(n, W * T)
        cand_vals, cand_rows = flat.topk(k, dim=0)  # [k, N]
        vals = torch.cat([self.top_vals, cand_vals])
        new_vals, idx = vals.topk(n, dim=0)  # [n, N], indices into the concatenation
        is_new = idx >= n
        old_idx = idx.clamp(max=n - 1)
        self.top_window = torch.gather(self.top_window, 0, old_idx)
        self.top_pos = torch.gather(self.top_pos, 0, old_idx)
        gi = old_idx.unsqueeze(-1).expand(-1, -1, cfg.context_len)
        self.ctx_tokens = torch.gather(self.ctx_tokens, 0, gi)
        self.ctx_acts = torch.gather(self.ctx_acts, 0, gi)
        self.top_vals = new_vals
        if not bool(is_new.any()):
            return
        slot, lat = is_new.nonzero(as_tuple=True)
        row = cand_rows[idx[slot, lat] - n, lat]
        w, p = row // T, row % T
        self.top_window[slot, lat] = w + first_window
        self.top_pos[slot, lat] = p
        offs = torch.arange(-cfg.context_left, cfg.context_right + 1)
        cp = p.unsqueeze(1) + offs  # [m, C]
        inside = (cp >= 0) & (cp < T)
        cpc = cp.clamp(0, T - 1)
        wexp = w.unsqueeze(1).expand_as(cpc)
        toks = tokens[wexp, cpc].to(torch.int32)
        self.ctx_tokens[slot, lat] = torch.where(inside, toks, torch.full_like(toks, -1))
        ctx_a = a[wexp, cpc, lat.unsqueeze(1).expand_as(cpc)]
        self.ctx_acts[slot, lat] = torch.where(inside, ctx_a, torch.zeros_like(ctx_a))

    def result(self) -> dict[str, np.ndarray]:
        """Per-latent arrays: density, counts, means, max, histogram, quantiles and the top
        contexts (entries with activation <= 0 are not real contexts and are dropped later)."""
        cfg = self.cfg
        n_tok = max(1, self.n_tokens)
        count = self.count.numpy()
        hist = self.hist.view(self.d_sae, cfg.hist_bins).numpy()
        out = {
            "count": count, "density": count / n_tok,
            "mean_act": np.where(count > 0, self.sum.numpy() / np.maximum(count, 1), 0.0),
            "mean_act_all": self.sum.numpy() / n_tok, "max_act": self.max.numpy().astype(np.float64),
            "hist": hist, "top_vals": self.top_vals.T.numpy(), "top_window": self.top_window.T.numpy(),
            "top_pos": self.top_pos.T.numpy(),
            "ctx_tokens": self.ctx_tokens.permute(1, 0, 2).numpy(),
            "ctx_acts": self.ctx_acts.permute(1, 0, 2).numpy(),
        }
        for q in QUANTILES:
            # the bin's interpolation may overshoot the largest value seen
            out[f"q{int(q * 100)}"] = np.minimum(hist_quantile(hist, cfg.hist_edges(), q),
                                                 out["max_act"])
        return out


QUANTILES = (0.5, 0.9, 0.99)


def hist_quantile(hist: np.ndarray, edges_log10, q: float) -> np.ndarray:
    """The q-quantile of each row's positive activations, read from its log10 histogram
    (linear interpolation in log space inside the bin); 0 for latents that never fired."""
    edges = np.asarray(edges_log10)
    cdf = np.cumsum(hist, axis=1)
    total = cdf[:, -1]
    target = q * total
    b = np.minimum((cdf < target[:, None]).sum(1), hist.shape[1] - 1)
    before = np.where(b > 0, np.take_along_axis(cdf, np.maximum(b - 1, 0)[:, None], 1)[:, 0], 0)
    inbin = np.take_along_axis(hist, b[:, None], 1)[:, 0]
    frac = np.where(inbin > 0, (target - before) / np.maximum(inbin, 1), 0.0)
    val = 10 ** (edges[b] + frac * (edges[b + 1] - edges[b]))
    return np.where(total > 0, val, 0.0)


# --------------------------------------------------------------------------- data sources
def store_batches(store, hook: str, cfg: FeatureStatsConfig
                  ) -> Iterator[tuple[Tensor, Tensor, Tensor, int]]:
    """(tokens [W, ctx], inputs [W, ctx, d], valid [W, ctx], first window) from an activation
    store, in window order; rows the store filtered out (BOS, outliers) are invalid."""
    ctx = store.context_size
    max_windows = math.ceil(cfg.n_tokens / ctx)
    done = 0
    for i in range(store.n_shards):
        s = store.shard(i)
        first = store.manifest["shards"][i]["first_window"]
        positions = s["positions"].long()
        x, toks = s[hook], s["tokens"]
        for w0 in range(0, toks.shape[0], cfg.batch_windows):
            if done >= max_windows:
                return
            w1 = min(toks.shape[0], w0 + cfg.batch_windows, w0 + max_windows - done)
            lo, hi = torch.searchsorted(positions, torch.tensor([w0 * ctx, w1 * ctx])).tolist()
            W = w1 - w0
            inp = torch.zeros(W * ctx, x.shape[1], dtype=torch.float32)
            valid = torch.zeros(W * ctx, dtype=torch.bool)
            local = positions[lo:hi] - w0 * ctx
            inp[local] = x[lo:hi].float()
            valid[local] = True
            yield toks[w0:w1].long(), inp.view(W, ctx, -1), valid.view(W, ctx), first + w0
            done += W


def model_batches(model, hook: str, cfg: FeatureStatsConfig, corpus=None, context_size: int = 128
                  ) -> Iterator[tuple[Tensor, Tensor, Tensor, int]]:
    """The same batches straight from the model over a corpus (default: the built-in one)."""
    from interp.data import CorpusSpec, iter_token_batches

    corpus = corpus or CorpusSpec()
    stop = model.stop_layer_for([hook])
    stop = None if stop is None else max(1, stop)  # hook_embed: run block 0 too
    first = 0
    for ids in iter_token_batches(corpus, model.tokenizer, context_size, cfg.batch_windows,
                                  n_tokens=cfg.n_tokens):
        _, cache = model.run_with_cache(ids, hooks=[hook], stop_at_layer=stop)
        x = cache[hook].float()
        x = x.reshape(x.shape[0], x.shape[1], -1)
        valid = torch.ones(ids.shape, dtype=torch.bool)
        if cfg.drop_bos:
            valid[:, 0] = False
        yield ids.cpu(), x.cpu(), valid, first
        first += ids.shape[0]


def feature_stats(sae, batches, cfg: FeatureStatsConfig = FeatureStatsConfig(),
                  progress: bool = True, total: int | None = None) -> dict[str, np.ndarray]:
    """Run `sae.encode` over `batches` (from `store_batches` / `model_batches`) and return the
    accumulated per-latent arrays (`FeatureAccumulator.result`) plus `n_tokens`. The encoding
    runs on the dictionary's device; the statistics accumulate on the host."""
    from tqdm.auto import tqdm

    acc = FeatureAccumulator(sae.cfg.d_sae, cfg)
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="features", disable=not progress)
    dt, where = sae.W_dec.dtype, sae.W_dec.device
    with torch.no_grad():
        for tokens, x, valid, first in batches:
            W, T, d = x.shape
            if d != sae.cfg.d_in:
                raise ConfigError(f"The data has width {d}, the dictionary expects d_in="
                                  f"{sae.cfg.d_in}: is it the right hook?")
            acts = sae.encode(x.reshape(W * T, d).to(where, dt)).reshape(W, T, -1).cpu()
            if cfg.drop_bos:
                valid = valid.clone()
                valid[:, 0] = False
            acc.update(tokens, acts, valid, first)
            bar.update(W * T)
    bar.close()
    out = acc.result()
    out["n_tokens"] = np.int64(acc.n_tokens)
    return out


# --------------------------------------------------------------------------- logit effects
def unembedding(model) -> tuple[Tensor, Tensor | None, bool]:
    """(W_U [d_vocab, d_model], final-norm gain [d_model] or None, centre?) of a HookedModel:
    LayerNorm models (GPT-2) subtract the mean before the gain, RMSNorm models do not."""
    hf = model.hf_model
    W_U = hf.get_output_embeddings().weight.detach().float()
    norm = hf.get_submodule(model.arch.final_norm)
    gain = getattr(norm, "weight", None)
    centre = isinstance(norm, torch.nn.LayerNorm)
    return W_U, (gain.detach().float() if gain is not None else None), centre


@torch.no_grad()
def logit_effects(W_dec: Float[Tensor, "d_sae d_model"], W_U: Float[Tensor, "d_vocab d_model"],
                  gain: Tensor | None = None, centre: bool = False, k: int = 10,
                  chunk: int = 512) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each latent's direct effect on the logits: (W_dec_j [- mean]) * gain @ W_U^T, with its
    top-k and bottom-k tokens: (top ids, top values, bottom ids, bottom values), each [d_sae, k].
    Computed in chunks of latents, so the [d_sae, d_vocab] matrix is never held."""
    if W_dec.shape[1] != W_U.shape[1]:
        raise ConfigError(f"Decoder width {W_dec.shape[1]} != d_model {W_U.shape[1]}: logit "
                          "effects need a dictionary that writes to the residual stream.")
    k = min(k, W_U.shape[0])
    outs: list[list[Tensor]] = [[], [], [], []]
    for i in range(0, W_dec.shape[0], chunk):
        d = W_dec[i:i + chunk].float()
        if centre:
            d = d - d.mean(1, keepdim=True)
        if gain is not None:
            d = d * gain
        eff = d @ W_U.T
        tv, ti = eff.topk(k, dim=1)
        bv, bi = eff.topk(k, dim=1, largest=False)
        for lst, t in zip(outs, (ti, tv, bi, bv)):
            lst.append(t)
    return tuple(torch.cat(o) for o in outs)  # type: ignore[return-value]
