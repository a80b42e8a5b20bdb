"""Evaluating sparse dictionaries: the SAELens `run_evals` metric set as one JSON report.

Two halves, each an importable function:

* `reconstruction_metrics` on held-out vectors: FVU / explained variance (dataset-level R²), MSE,
  L0, L1, cosine similarity, shrinkage (l2_ratio and the relative reconstruction bias of
  Rajamanoharan et al., arXiv 2404.16014, eq. 10), per-latent firing frequency, dead and dense
  fractions.
* `spliced_lm_metrics` on token windows: next-token CE of the model clean, with the dictionary
  spliced in at its hook, and with that hook zero-ablated; KL of the spliced and ablated
  next-token distributions from the clean one; "loss recovered" (`ce_loss_score`) and
  `kl_score`, as SAELens defines them.

`evaluate_sae` runs both (from an activation store's held-out split, or from a model) and
`write_report` saves the result atomically as JSON.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import ConfigError
from interp.io import atomic_write_json, read_json
from saes.base import SparseDictionary

log = logging.getLogger(__name__)

REPORT_FORMAT = "interp-sae-eval"
REPORT_VERSION = 1
#: a latent active on more than this fraction of eval rows counts as dense
DENSE_THRESHOLD = 0.1
#: log10 firing frequency given to latents that never fire (SAELens logs log10(freq + 1e-10))
LOG10_DENSITY_FLOOR = -10.0
DENSITY_HIST_BINS = 50
#: cap on the elements of one [rows, d_sae] activation batch, so wide dictionaries stay bounded
_ACTS_BUDGET = 1 << 26


def _device_dtype(sae: SparseDictionary) -> tuple[torch.device, torch.dtype]:
    p = next(sae.parameters())
    return p.device, p.dtype


# --------------------------------------------------------------------------- reconstruction
@torch.no_grad()
def reconstruction_metrics(sae: SparseDictionary, x: Float[Tensor, "rows d_in"],
                           y: Float[Tensor, "rows d_out"] | None = None, batch_size: int = 4096,
                           progress: bool = False) -> dict:
    """Reconstruction quality, shrinkage and sparsity of `sae` on held-out rows.

    `x` is the input, `y` the target (`x` for an SAE; the output hook's rows for a transcoder).
    Rows are processed in batches (fewer rows per batch for wide dictionaries), sums are kept in
    float64. Returns floats plus `density`, a [d_sae] float64 tensor of firing frequencies:

    fvu = sum ||y - ŷ||² / sum ||y - mean(y)||² (explained_variance = 1 - fvu, SAELens's
    dataset-level R²); mse per element; l0/l1 per row; cossim mean over rows; l2_ratio = mean over
    rows of ||ŷ|| / ||y||; relative_reconstruction_bias = sum ||ŷ||² / sum <ŷ, y> (the γ minimising
    ||ŷ/γ - y||², 1 when unbiased, < 1 when shrunk); dead_frac (never active), dense_frac (active
    on more than DENSE_THRESHOLD of rows).
    """
    from tqdm.auto import tqdm

    y = x if y is None else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"Need x [rows, d_in] and y [rows, d_out] with the same rows; got "
                          f"{tuple(x.shape)} and {tuple(y.shape)}.")
    cfg = sae.cfg
    if x.shape[1] != cfg.d_in or y.shape[1] != cfg.out_dim:
        hooks = repr(cfg.hook_name) + (f" -> {cfg.hook_name_out!r}" if cfg.transcoder else "")
        raise ConfigError(f"The dictionary maps {cfg.d_in} -> {cfg.out_dim} dims, but the eval "
                          f"rows have {x.shape[1]} -> {y.shape[1]}; evaluate it on its own hooks "
                          f"({hooks}).")
    n = x.shape[0]
    if n == 0:
        raise ConfigError("No eval rows: reconstruction metrics need at least one row.")
    device, dtype = _device_dtype(sae)
    rows = max(1, min(batch_size, _ACTS_BUDGET // cfg.d_sae))

    mean_y = torch.zeros(y.shape[1], dtype=torch.float64, device=device)
    for i in range(0, n, rows):  # first pass: the mean, so the variance needs no cancellation
        mean_y += y[i:i + rows].to(device, torch.float64).sum(0)
    mean_y /= n

    z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
    s = {k: z() for k in ("resid", "var", "l0", "l1", "l2_ratio", "cos", "dot", "yhat_sq")}
    fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    for i in tqdm(range(0, n, rows), desc="reconstruction", unit="batch", disable=not progress):
        xb = x[i:i + rows].to(device, dtype)
        yb = y[i:i + rows].to(device, torch.float64)
        acts = sae.encode(xb)
        yhat = sae.decode(acts, xb).double()
        active = acts != 0
        fired += active.sum(0)
        s["l0"] += active.sum()
        s["l1"] += acts.abs().sum(dtype=torch.float64)
        s["resid"] += (yb - yhat).pow(2).sum()
        s["var"] += (yb - mean_y).pow(2).sum()
        norm_y, norm_hat = yb.norm(dim=-1), yhat.norm(dim=-1)
        s["l2_ratio"] += (norm_hat / torch.where(norm_y < 1e-4, 1.0, norm_y)).sum()  # as SAELens
        s["cos"] += F.cosine_similarity(yhat, yb, dim=-1, eps=1e-8).sum()
        s["dot"] += (yhat * yb).sum()
        s["yhat_sq"] += yhat.pow(2).sum()
    t = {k: float(v) for k, v in s.items()}
    fvu = t["resid"] / t["var"] if t["var"] > 0 else (0.0 if t["resid"] == 0 else math.inf)
    density = (fired.double() / n).cpu()
    return {
        "n_rows": n,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "mse": t["resid"] / (n * y.shape[1]),
        "l0": t["l0"] / n,
        "l1": t["l1"] / n,
        "cossim": t["cos"] / n,
        "l2_ratio": t["l2_ratio"] / n,
        "relative_reconstruction_bias": t["yhat_sq"] / t["dot"] if t["dot"] != 0 else None,
        "dead_frac": float((density == 0).double().mean()),
        "dense_frac": float((density > DENSE_THRESHOLD).double().mean()),
        "dense_threshold": DENSE_THRESHOLD,
        "density": density,
    }


def density_histogram(density: Float[Tensor, " d_sae"], bins: int = DENSITY_HIST_BINS,
                      floor: float = LOG10_DENSITY_FLOOR) -> dict:
    """log10 firing frequency per latent (never-firing latents sit at `floor`) and histogram
    counts over [floor, 0], as JSON-able lists for plotting."""
    log10 = torch.log10(density.double().clamp_min(10.0 ** floor)).clamp(floor, 0.0)
    counts = torch.histc(log10, bins=bins, min=floor, max=0.0)
    edges = torch.linspace(floor, 0.0, bins + 1, dtype=torch.float64)
    return {"floor": floor, "log10_density": [round(v, 4) for v in log10.tolist()],
            "counts": [int(c) for c in counts.tolist()],
            "edges": [round(e, 6) for e in edges.tolist()]}


# --------------------------------------------------------------------------- splicing
def _check_width(t: Tensor, width: int, hook: str, what: str) -> None:
    if t.shape[-1] != width:
        raise ConfigError(f"Hook {hook!r} has {t.shape[-1]} values per position (head dimensions "
                          f"flattened) but the dictionary's {what} is {width}; use the hook it was "
                          "trained on.")


def _reconstruct(sae: SparseDictionary, src: Tensor, like: Tensor, src_hook: str,
                 out_hook: str) -> Tensor:
    """sae(src) in the shape and dtype of `like`; [batch, pos, heads, d_head] hooks are
    flattened to [batch, pos, heads * d_head] and back."""
    device, dtype = _device_dtype(sae)
    flat = src.reshape(*src.shape[:2], -1)
    _check_width(flat, sae.cfg.d_in, src_hook, "d_in")
    out = sae(flat.to(device, dtype))
    _check_width(out, like[0, 0].numel(), out_hook, "output width")
    return out.to(like.device, like.dtype).reshape(like.shape)


def _keep_bos(new: Tensor, old: Tensor, skip_bos: bool) -> Tensor:
    if skip_bos:
        new = new.clone()
        new[:, 0] = old[:, 0]
    return new


@torch.no_grad()
def spliced_lm_metrics(model, sae: SparseDictionary, token_windows: Int[Tensor, "n ctx"],
                       batch_size: int = 8, skip_bos: bool = True, progress: bool = False,
                       per_window: bool = False) -> dict:
    """CE loss and KL of the model with `sae` spliced in, against the clean model and zero ablation.

    The SAE replaces the activation at `cfg.hook_name` by its reconstruction; a transcoder
    replaces `cfg.hook_name_out` by `sae(activation at cfg.hook_name)`. The input is taken from
    the clean pass (the output hook is downstream of it, so the spliced pass would compute the
    same value), which also works where the input hook is read-only. Zero ablation zeroes the
    replaced hook. With `skip_bos` position 0 keeps its original activation in both (activation
    stores drop BOS, so the dictionary never saw it), and the prediction made at position 0,
    identical in every run, is left out.

    CE is next-token cross-entropy averaged over predicted tokens; KL(clean || other) is summed
    over the vocabulary and averaged over positions. ce_loss_score = (CE_zero - CE_spliced) /
    (CE_zero - CE_clean) and kl_score = 1 - KL_spliced / KL_zero (SAELens's "loss recovered"
    and KL score; None where the ablation changes nothing). With `per_window`, "per_window" maps
    each of ce_clean, ce_spliced, ce_zero, kl_spliced, kl_zero to its per-window sums (a list,
    one float per window; for bootstrap intervals over windows).
    """
    from tqdm.auto import tqdm

    cfg = sae.cfg
    if not cfg.hook_name:
        raise ConfigError("The dictionary's cfg.hook_name is empty; set the hook it reads.")
    if cfg.transcoder and not cfg.hook_name_out:
        raise ConfigError("A transcoder needs cfg.hook_name_out (the hook it writes).")
    in_hook = cfg.hook_name
    out_hook = cfg.hook_name_out if cfg.transcoder else cfg.hook_name
    model.validate_hooks([in_hook, out_hook])
    if cfg.transcoder:
        order = model.hook_names()
        if order.index(in_hook) >= order.index(out_hook):
            raise ConfigError(f"Transcoder input hook {in_hook!r} does not run before its output "
                              f"hook {out_hook!r}.")
    windows = torch.as_tensor(token_windows)
    if windows.ndim != 2 or windows.shape[0] == 0:
        raise ConfigError(f"token_windows must be [n_windows, ctx] with n_windows >= 1, got "
                          f"{tuple(windows.shape)}.")
    first = 1 if skip_bos else 0
    if windows.shape[1] < first + 2:
        raise ConfigError(f"Windows of {windows.shape[1]} tokens leave no next-token prediction "
                          f"to score; use context_size >= {first + 2}.")

    keys = ("ce_clean", "ce_spliced", "ce_zero", "kl_spliced", "kl_zero")
    sums = dict.fromkeys(keys, 0.0)
    windows_sums: dict[str, list[float]] = {k: [] for k in keys}
    n_ce = n_kl = 0
    for i in tqdm(range(0, windows.shape[0], batch_size), desc="spliced LM", unit="batch",
                  disable=not progress):
        ids = windows[i:i + batch_size].to(model.device, torch.long)
        x_in = None
        if cfg.transcoder:
            clean, cache = model.run_with_cache(ids, hooks=[in_hook])
            x_in = cache[in_hook]
        else:
            clean = model.forward(ids)

        def splice(act, hook, x_in=x_in):
            src = act if x_in is None else x_in
            return _keep_bos(_reconstruct(sae, src, act, in_hook, out_hook), act, skip_bos)

        def zero(act, hook):
            return _keep_bos(torch.zeros_like(act), act, skip_bos)

        with model.hooks([(out_hook, splice)]):
            spliced = model.forward(ids)
        with model.hooks([(out_hook, zero)]):
            zeroed = model.forward(ids)

        targets = ids[:, first + 1:].reshape(-1)
        logp_clean = clean[:, first:].float().log_softmax(-1)
        p_clean = logp_clean.exp()
        b = ids.shape[0]
        for name, logits in (("clean", clean), ("spliced", spliced), ("zero", zeroed)):
            logp = logp_clean if name == "clean" else logits[:, first:].float().log_softmax(-1)
            ce = F.nll_loss(logp[:, :-1].reshape(-1, logp.shape[-1]), targets,
                            reduction="none").view(b, -1).sum(1)
            sums[f"ce_{name}"] += float(ce.sum())
            windows_sums[f"ce_{name}"] += ce.tolist()
            if name != "clean":
                kl = (p_clean * (logp_clean - logp)).view(b, -1).sum(1)
                sums[f"kl_{name}"] += float(kl.sum())
                windows_sums[f"kl_{name}"] += kl.tolist()
        n_ce += targets.numel()
        n_kl += logp_clean.shape[0] * logp_clean.shape[1]

    out = {k: sums[k] / (n_ce if k.startswith("ce") else n_kl) for k in keys}
    ce_gap = out["ce_zero"] - out["ce_clean"]
    out["ce_loss_score"] = (out["ce_zero"] - out["ce_spliced"]) / ce_gap if ce_gap != 0 else None
    out["kl_score"] = 1.0 - out["kl_spliced"] / out["kl_zero"] if out["kl_zero"] > 0 else None
    out.update(n_windows=int(windows.shape[0]), n_predictions=n_ce, skip_bos=skip_bos)
    if per_window:
        out["per_window"] = windows_sums
    return out


# --------------------------------------------------------------------------- report
def _rows_from_model(model, sae: SparseDictionary, windows: Tensor, batch_size: int,
                     skip_bos: bool) -> tuple[Tensor, Tensor | None]:
    """Eval rows captured live: [rows, d] at the input (and output) hook, BOS dropped."""
    cfg = sae.cfg
    hooks = [cfg.hook_name] + ([cfg.hook_name_out] if cfg.transcoder else [])
    hooks = model.validate_hooks(hooks)
    xs, ys = [], []
    for i in range(0, windows.shape[0], batch_size):
        ids = windows[i:i + batch_size].to(model.device, torch.long)
        _, cache = model.run_with_cache(ids, hooks=hooks, stop_at_layer="auto")
        start = 1 if skip_bos else 0
        flat = [cache[h][:, start:].flatten(2).flatten(0, 1).float().cpu() for h in hooks]
        xs.append(flat[0])
        if cfg.transcoder:
            ys.append(flat[1])
    return torch.cat(xs), (torch.cat(ys) if cfg.transcoder else None)


def evaluate_sae(sae: SparseDictionary, store=None, model=None, windows: Tensor | None = None,
                 n_eval_rows: int | None = None, *, holdout_every: int = 50,
                 n_windows: int | None = None, batch_size: int = 4096, lm_batch_size: int = 8,
                 skip_bos: bool = True, progress: bool = False) -> dict:
    """The standard report of one dictionary, as a JSON-able dict.

    Reconstruction rows come from `store`'s held-out split (windows 0, k, 2k, ... for
    k = `holdout_every`, as the trainer holds them out), else from running `model` over
    `windows`; `n_eval_rows` keeps the first rows only. LM metrics need `model` and token windows:
    `windows` if given, else the store's held-out windows (the first `n_windows` of them).

    Keys: "format", "version", "sae" (its config), "data", "reconstruction" (floats),
    "lm" (floats, or None without a model), "density" (histogram data, see `density_histogram`).
    """
    cfg = sae.cfg
    if store is None and (model is None or windows is None):
        raise ConfigError("evaluate_sae needs eval data: an activation store, or a model and "
                          "token windows (e.g. interp.data.token_windows(...)).")
    if windows is not None:
        windows = torch.as_tensor(windows)
        if n_windows is not None:
            windows = windows[:n_windows]
    elif model is not None:
        windows = store.tokens()[::holdout_every]
        windows = windows[:n_windows] if n_windows is not None else windows

    data: dict = {"holdout_every": holdout_every, "skip_bos": skip_bos}
    if store is not None:
        x = store.activations(cfg.hook_name, split="eval", holdout_every=holdout_every)
        y = (store.activations(cfg.hook_name_out, split="eval", holdout_every=holdout_every)
             if cfg.transcoder else None)
        data.update(source="store", store=str(store.path))
    else:
        x, y = _rows_from_model(model, sae, windows, lm_batch_size, skip_bos)
        data.update(source="model")
    if n_eval_rows is not None:
        x, y = x[:n_eval_rows], (y[:n_eval_rows] if y is not None else None)
    rec = reconstruction_metrics(sae, x, y, batch_size=batch_size, progress=progress)
    density = rec.pop("density")
    data["n_rows"] = rec["n_rows"]

    lm = None
    if model is not None:
        lm = spliced_lm_metrics(model, sae, windows, batch_size=lm_batch_size, skip_bos=skip_bos,
                                progress=progress)
        data.update(model=getattr(model, "name", ""), n_windows=lm["n_windows"],
                    context_size=int(windows.shape[1]))
    report = {"format": REPORT_FORMAT, "version": REPORT_VERSION, "sae": cfg.to_dict(),
              "data": data, "reconstruction": rec, "lm": lm,
              "density": density_histogram(density)}
    log.info("eval %s@%s: fvu %.4f, l0 %.1f, dead %.3f, ce score %s", cfg.architecture,
             cfg.hook_name, rec["fvu"], rec["l0"], rec["dead_frac"],
             None if lm is None else lm["ce_loss_score"])
    return report


def write_report(report: dict, path: str | Path) -> Path:
    """Write `report` as JSON atomically (non-finite floats become null, so it stays valid JSON)."""
    path = Path(path)
    atomic_write_json(path, _finite(report))
    return path


def read_report(path: str | Path) -> dict:
    return read_json(path, expect=dict)


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, Tensor):
        raise TypeError("A report holds no tensors; convert them (see density_histogram).")
    return obj
