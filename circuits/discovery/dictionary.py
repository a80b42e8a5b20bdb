"""Patch-free circuit discovery with dictionaries (He et al. 2024, arXiv 2402.12201).

Dictionaries (top-k SAEs) decompose every module that writes to the residual stream: the
input embedding, each layer's attention output and each MLP output. With the clean run's
attention patterns, LayerNorm scales and MLP activation ratios frozen (the paper's setting:
patterns fixed for OV tracing, and an "approximate direct contribution" for MLPs that splits
each neuron's output in proportion to its pre-activation), the network is linear in those
dictionary features, so one forward and a few backward passes trace a target down to the
features of every earlier module, with no patching:

- target: the task metric's direction in logit space at the last position, T = w . logits
  with w = dm/dlogits at the clean run (exact for the logit-difference metrics);
- direct contributions of each feature to T (through the frozen final LayerNorm and unembed);
  these and the dictionaries' biases and errors sum to T exactly;
- total effects a_f d_f . dT/d(out_site) through all later modules of the frozen network;
- OV tracing per component: for head h (or MLP), the contributions of every earlier feature,
  at every position, to g_h . out_h, where g_h = dT/d(out_h): the feature-level circuit into
  that component, exact in the frozen network (patterns fixed). The component's score is the
  sum of |those contributions| (averaged over prompts);
- the QK split: the attention score of the most important head from the last position to its
  most attended key position is bilinear in query-side and key-side features; the largest
  (query feature, key feature) pairs are reported.

Feature labels: where the batch carries board states (Othello), each reported feature gets
the square and state (mover's piece / opponent's / empty) its activation correlates with most.
"""

from __future__ import annotations

import math
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits.discovery.context import PatchContext
from circuits.discovery.result import MethodResult
from interp.errors import ConfigError


def train_dictionary(x: Tensor, d_sae: int, k: int, steps: int, lr: float, seed: int,
                     batch_size: int = 512):
    """A top-k SAE on the rows of `x` (`saes.train.Trainer` on an in-memory source)."""
    from saes.base import SAEConfig
    from saes.data import TensorSource
    from saes.train import TrainConfig, Trainer

    n, d = x.shape
    bs = min(batch_size, n)
    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=d, d_sae=d_sae, k=k,
                                    aux_k=min(512, d_sae // 2)),
                      total_tokens=bs * steps, batch_size=bs, lr=lr, seed=seed,
                      checkpoint_every=0, log_every=max(1, steps // 10), dead_tokens=bs * 25)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    rows = x[perm].float().contiguous()  # shuffled once, then cycled batch by batch
    with tempfile.TemporaryDirectory() as tmp:
        return Trainer(cfg, tmp, TensorSource(rows), progress=False).train().eval()


class _Frozen:
    """The clean run's patterns, LayerNorm scales and MLP ratios, and the frozen ops."""

    def __init__(self, model, tokens: Tensor):
        self.model = model
        logits, acts = model.run_with_cache(tokens)
        self.logits = logits[:, -1]
        c = model.cfg
        self.pattern, self.s1, self.s2, self.ratio = [], [], [], []
        for layer, blk in enumerate(model.blocks):
            x = acts[f"blocks.{layer}.hook_resid_pre"]
            self.pattern.append(acts[f"blocks.{layer}.attn.hook_pattern"])  # [b, h, q, k]
            self.s1.append(_scale(x))
            if c.d_mlp:
                mid = x + acts[f"blocks.{layer}.hook_attn_out"]
                self.s2.append(_scale(mid))
                pre = _ln_frozen(mid, self.s2[-1], blk.ln2) @ blk.mlp.W_in + blk.mlp.b_in
                post = F.relu(pre) if c.act_fn == "relu" else F.gelu(pre)
                self.ratio.append(torch.where(pre.abs() > 1e-12, post / pre.where(
                    pre.abs() > 1e-12, torch.ones_like(pre)), torch.zeros_like(pre)))
        self.sf = _scale(acts[f"blocks.{c.n_layers - 1}.hook_resid_post"])
        self.acts = acts

    def heads(self, layer: int, x: Tensor) -> Tensor:
        """Per-head outputs [b, p, h, d] of the frozen attention on residual x [b, p, d]."""
        blk = self.model.blocks[layer]
        xn = _ln_frozen(x, self.s1[layer], blk.ln1)
        v = torch.einsum("bpd,hde->bhpe", xn, blk.attn.W_V)
        z = self.pattern[layer] @ v
        return torch.einsum("bhpe,hed->bphd", z, blk.attn.W_O)

    def mlp(self, layer: int, x: Tensor) -> Tensor:
        blk = self.model.blocks[layer]
        pre = _ln_frozen(x, self.s2[layer], blk.ln2) @ blk.mlp.W_in + blk.mlp.b_in
        return (pre * self.ratio[layer]) @ blk.mlp.W_out + blk.mlp.b_out

    def unembed(self, x_last: Tensor) -> Tensor:
        m = self.model
        return _ln_frozen(x_last, self.sf[:, -1], m.ln_final) @ m.unembed.W_U + m.unembed.b_U


def _scale(x: Tensor) -> Tensor:
    xc = x - x.mean(-1, keepdim=True)
    return (xc.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()


def _ln_frozen(x: Tensor, scale: Tensor, p) -> Tensor:
    return (x - x.mean(-1, keepdim=True)) / scale * p.w + p.b


def site_outputs(model, acts: dict) -> dict[str, Tensor]:
    """The residual-stream writers of a cached run: embed, attn{L}, mlp{L}."""
    out = {"embed": acts["hook_embed"] + acts["hook_pos_embed"]}
    for layer in range(model.cfg.n_layers):
        out[f"attn{layer}"] = acts[f"blocks.{layer}.hook_attn_out"]
        if model.cfg.d_mlp:
            out[f"mlp{layer}"] = acts[f"blocks.{layer}.hook_mlp_out"]
    return out


def _layer_of(site: str) -> tuple[int, int]:
    """Order key: (layer, 0 for attention / 1 for MLP); the embedding comes first."""
    if site == "embed":
        return (-1, 1)
    return (int(site[4:]), 0) if site.startswith("attn") else (int(site[3:]), 1)


def trace(model, tokens: Tensor, dicts: dict, w: Tensor) -> dict:
    """All the patch-free tracing of one batch (see the module docstring)."""
    fr = _Frozen(model, tokens)
    sites = site_outputs(model, fr.acts)
    a, const = {}, {}
    for s, out in sites.items():
        sae = dicts[s]
        with torch.no_grad():
            a[s] = sae.encode(out)
            const[s] = out - a[s] @ sae.W_dec  # b_dec + the dictionary's error
    names = list(sites)

    def rebuilt(leaves: dict, upto: tuple[int, int]) -> Tensor:
        """The residual stream made of the sites before `upto`, from feature leaves."""
        x = 0
        for s in names:
            if _layer_of(s) < upto:
                x = x + leaves[s] @ dicts[s].W_dec.detach() + const[s]
        return x

    def leaves() -> dict:
        return {s: a[s].clone().requires_grad_(True) for s in names}

    c = model.cfg
    # direct contributions to T
    lv = leaves()
    x = rebuilt(lv, (c.n_layers, 0))
    target = (fr.unembed(x[:, -1]) * w).sum(-1)
    grads = torch.autograd.grad(target.sum(), [lv[s] for s in names])
    direct = {s: (lv[s] * g).detach() for s, g in zip(names, grads)}
    exact_direct = float((target.detach() - (fr.logits * w).sum(-1)).abs().max())
    # total effects through the frozen network, and each component's g = dT/d(out)
    lv = leaves()
    resid = lv["embed"] @ dicts["embed"].W_dec.detach() + const["embed"]
    head_outs, mlp_outs = [], []
    for layer in range(c.n_layers):
        h = fr.heads(layer, resid)
        h.retain_grad()
        head_outs.append(h)
        dec = lv[f"attn{layer}"] @ dicts[f"attn{layer}"].W_dec.detach()
        resid = resid + h.sum(2) + dec - dec.detach()
        if c.d_mlp:
            m = fr.mlp(layer, resid)
            m.retain_grad()
            mlp_outs.append(m)
            dec = lv[f"mlp{layer}"] @ dicts[f"mlp{layer}"].W_dec.detach()
            resid = resid + m + dec - dec.detach()
    target2 = (fr.unembed(resid[:, -1]) * w).sum(-1)
    target2.sum().backward()
    total = {s: (lv[s] * lv[s].grad).detach() for s in names}
    g_heads = [h.grad.detach() for h in head_outs]
    g_mlps = [m.grad.detach() for m in mlp_outs]
    exact_frozen = float((target2.detach() - (fr.logits * w).sum(-1)).abs().max())
    # OV / ADC tracing into each component
    comp_scores, comp_total, comp_traces = [], [], []
    for layer in range(c.n_layers):
        for hd in range(c.n_heads):
            lv = leaves()
            x = rebuilt(lv, (layer, 0))
            out = fr.heads(layer, x)[:, :, hd]
            comp_total.append(float((out * g_heads[layer][:, :, hd]).sum((1, 2)).mean().detach()))
            comp_scores.append(_traced(lv, (out * g_heads[layer][:, :, hd]).sum(), names,
                                       (layer, 0), comp_traces))
        if c.d_mlp:
            lv = leaves()
            x = rebuilt(lv, (layer, 1))
            out = fr.mlp(layer, x)
            comp_total.append(float((out * g_mlps[layer]).sum((1, 2)).mean().detach()))
            comp_scores.append(_traced(lv, (out * g_mlps[layer]).sum(), names, (layer, 1),
                                       comp_traces))
    return {"fr": fr, "a": a, "const": const, "direct": direct, "total": total,
            "names": names, "component_scores": torch.tensor(comp_scores),
            "component_total": comp_total, "traces": comp_traces,
            "exact_direct": exact_direct, "exact_frozen": exact_frozen, "dicts": dicts}


def _traced(lv: dict, value: Tensor, names: list, upto, traces: list) -> float:
    """Sum of |feature contributions| (per prompt, then averaged) into one component; the
    per-feature contributions (batch-mean, summed over positions) are kept for reports."""
    ins = [s for s in names if _layer_of(s) < upto]
    grads = torch.autograd.grad(value, [lv[s] for s in ins])
    contrib = {s: (lv[s] * g).detach() for s, g in zip(ins, grads)}
    B = next(iter(contrib.values())).shape[0]
    score = sum(float(cn.abs().sum()) for cn in contrib.values()) / B
    traces.append({s: cn.sum(1).mean(0) for s, cn in contrib.items()})
    return score


def qk_pairs(model, tr: dict, layer: int, head: int, top: int = 10) -> dict:
    """The QK split of one head's score from the last position to its most attended key."""
    fr, a, const, dicts = tr["fr"], tr["a"], tr["const"], tr["dicts"]
    blk = model.blocks[layer]
    names = [s for s in tr["names"] if _layer_of(s) < (layer, 0)]
    pattern = fr.pattern[layer][:, head, -1]  # [b, k]
    j = pattern.argmax(-1)
    B = len(j)
    rows = torch.arange(B)

    def side(pos: Tensor, W: Tensor) -> tuple[Tensor, Tensor, list[str]]:
        parts, labels = [], []
        rest = 0
        s_scale = fr.s1[layer][rows, pos]  # [b, 1]
        for s in names:
            d = dicts[s].W_dec.detach()
            dc = d - d.mean(-1, keepdim=True)
            act = a[s][rows, pos]  # [b, F]
            parts.append(act[:, :, None] * ((dc[None] / s_scale[:, :, None]) * blk.ln1.w) @ W)
            labels += [f"{s}:f{f}" for f in range(d.shape[0])]
            cst = const[s][rows, pos]
            rest = rest + ((cst - cst.mean(-1, keepdim=True)) / s_scale) * blk.ln1.w @ W
        rest = rest + blk.ln1.b @ W
        return torch.cat(parts, 1), rest, labels

    last = torch.full((B,), fr.pattern[layer].shape[-1] - 1)
    q, q_rest, labels = side(last, blk.attn.W_Q[head])
    k, k_rest, _ = side(j, blk.attn.W_K[head])
    scale = 1 / math.sqrt(model.cfg.d_head)
    pairs = torch.einsum("bie,bje->bij", q, k).mean(0) * scale
    total = ((q.sum(1) + q_rest) * (k.sum(1) + k_rest)).sum(-1) * scale
    idx = pairs.abs().flatten().topk(min(top, pairs.numel())).indices
    n = pairs.shape[1]
    return {"head": f"a{layer}.h{head}",
            "mean_key_offset": float((pattern.shape[-1] - 1 - j).float().mean()),
            "score": float(total.mean()),
            "pairs": [{"q": labels[int(i) // n], "k": labels[int(i) % n],
                       "value": float(pairs.flatten()[i])} for i in idx]}


def board_labels(a: dict, boards: Tensor, features: list[str]) -> dict:
    """For each 'site:fN' the square and state whose indicator its activation (over prompts
    and positions) correlates with most: {'site:fN': 'C3 mine +0.71'}."""
    out = {}
    n_sq = boards.shape[-1]
    size = int(round(n_sq ** 0.5))
    states = {"mine": boards == 1, "theirs": boards == -1, "empty": boards == 0}
    for label in features:
        s, f = label.split(":f")
        act = a[s][..., int(f)].reshape(-1).float()
        if act.std() < 1e-8:
            continue
        best = (0.0, "")
        for name, ind in states.items():
            y = ind.reshape(-1, n_sq).float()
            yc = y - y.mean(0)
            ac = act - act.mean()
            corr = (ac @ yc) / (ac.norm() * yc.norm(dim=0)).clamp_min(1e-8)
            sq = int(corr.abs().argmax())
            if abs(float(corr[sq])) > abs(best[0]):
                best = (float(corr[sq]), f"{chr(65 + sq % size)}{sq // size + 1} {name}")
        out[label] = f"{best[1]} {best[0]:+.2f}"
    return out


def _top(contrib: dict, names: list, top: int) -> list[dict]:
    items = []
    for s in names:
        v = contrib[s].sum(1).mean(0) if contrib[s].ndim == 3 else contrib[s]
        items += [{"label": f"{s}:f{f}", "value": float(v[f])} for f in range(len(v))]
    return sorted(items, key=lambda d: -abs(d["value"]))[:top]


def run(ctx: PatchContext, d_sae: int = 64, k: int = 4, steps: int = 400, lr: float = 3e-3,
        top: int = 12, seed: int = 0) -> MethodResult:
    """Dictionaries on every residual-stream writer, then patch-free tracing (module doc)."""
    model = getattr(ctx, "model", None)
    if model is None or not hasattr(model, "masked_logits"):
        raise ConfigError("The dictionary method traces a task model (circuits.tasks); on "
                          "other models use patching, eap, eap-ig, acdc or discrete.")
    t0 = time.perf_counter()
    batch = ctx.batch
    with torch.no_grad():
        _, acts = model.run_with_cache(torch.cat([batch.clean, batch.corrupt]))
    data = site_outputs(model, acts)
    dicts, fvu = {}, {}
    for i, (s, x) in enumerate(data.items()):
        rows = x.reshape(-1, x.shape[-1])
        dicts[s] = train_dictionary(rows, d_sae, k, steps, lr, seed + i).requires_grad_(False)
        with torch.no_grad():
            err = (dicts[s](rows) - rows).pow(2).sum()
            fvu[s] = float(err / (rows - rows.mean(0)).pow(2).sum())
    seconds_dicts = time.perf_counter() - t0
    # the target direction: dm/dlogits at the clean run
    with torch.no_grad():
        clean_logits = model(batch.clean)[:, -1]
    lg = clean_logits.clone().requires_grad_(True)
    (w,) = torch.autograd.grad(ctx.metric_fn(lg[None], batch)[0].sum(), lg)
    tr = trace(model, batch.clean, dicts, w.detach())
    comp = tr["component_scores"]
    g = ctx.graph
    head_ids = [c for c in g.heads]
    best_head = max(head_ids, key=lambda c: float(comp[c]))
    node = g.nodes[g.components[best_head]]
    qk = qk_pairs(model, tr, node.layer, node.head)
    seconds = time.perf_counter() - t0
    top_direct = _top(tr["direct"], tr["names"], top)
    top_total = _top(tr["total"], tr["names"], top)
    extra = {"d_sae": d_sae, "k": k, "steps": steps, "fvu": fvu,
             "seconds_dictionaries": round(seconds_dicts, 3),
             "exactness": {"direct": tr["exact_direct"], "frozen": tr["exact_frozen"]},
             "top_direct": top_direct, "top_total": top_total,
             "component_total": tr["component_total"], "qk": qk,
             "traced_into": {g.component_names[c]: _top(tr["traces"][c], list(tr["traces"][c]), 5)
                             for c in range(g.n_components)}}
    boards = getattr(batch, "extra", {}).get("boards")
    if boards is not None:
        labels = {d["label"] for d in top_direct + top_total}
        for v in extra["traced_into"].values():
            labels |= {d["label"] for d in v}
        if qk:
            labels |= {p["q"] for p in qk["pairs"]} | {p["k"] for p in qk["pairs"]}
        extra["board_labels"] = board_labels(tr["a"], boards, sorted(labels))
    return MethodResult("dictionary", "node", comp, comp, seconds, extra=extra)
