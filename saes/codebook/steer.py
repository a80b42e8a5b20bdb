"""Steering generation by activating codes (Codebook Features, arXiv 2310.17230, section 5;
code: utils.py `patch_in_codes`, `generate_with_codes`).

During generation the chosen code is written into the last (k-th, least similar) slot of the
active codes at every position, and the bottleneck's output is recomputed as the mean of the
edited codes. The topic metric is the share of sampled continuations (temperature 1) whose text
matches the topic's regex (case-insensitive), against the same share with no code patched,
averaged over prompts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence

import torch
from torch import Tensor

from interp.errors import InterpError
from saes.codebook.insert import CodebookModel


@torch.no_grad()
def generate(cb: CodebookModel, prompt: str | Tensor, n: int = 1, max_new_tokens: int = 20,
             temperature: float = 1.0, seed: int = 0, edits: dict | None = None,
             use_codebooks: bool = True) -> list[str]:
    """`n` sampled continuations of one prompt (text only, prompt excluded), with the
    codebooks in place and `edits` ({hook: ids edit}) applied at every step."""
    model = cb.model
    ids, _ = model.to_tokens(prompt) if isinstance(prompt, str) else (prompt.view(1, -1), None)
    x = ids.repeat(n, 1).to(model.device)
    start = x.shape[1]
    if hasattr(model, "_attach"):  # torch backend: KV-cached generation
        return _generate_cached(cb, x, max_new_tokens, temperature, seed,
                                edits if use_codebooks else None, use_codebooks)
    g = torch.Generator().manual_seed(seed)
    ctx = cb.enabled() if use_codebooks else contextlib.nullcontext()
    with ctx, cb.patched(edits or {}):
        for _ in range(max_new_tokens):
            logits = model(x)[:, -1].float()
            probs = (logits / max(temperature, 1e-6)).softmax(-1)
            x = torch.cat([x, torch.multinomial(probs, 1, generator=g).to(x.device)], dim=1)
    return [model.tokenizer.decode(row[start:].tolist()) for row in x]


CodeRef = tuple[str, int, int]  # (hook, group, code)


def _generate_cached(cb: CodebookModel, x: Tensor, max_new_tokens: int, temperature: float,
                     seed: int, edits: dict | None, use_codebooks: bool = True) -> list[str]:
    """Sampling with the HF key/value cache: the codebooks (and edits, which then see one new
    position per step and so apply at every position) are attached as plain torch hooks."""
    model = cb.model
    handles = []
    start = x.shape[1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one-token steps are overhead-bound; a busy 2nd core costs 10x
    try:
        for h, layer in (cb.items() if use_codebooks else ()):
            handles.append(model._attach(model.hook_points[h], cb._hook_fn(layer)))
        with cb.patched(edits or {}), torch.random.fork_rng():
            torch.manual_seed(seed)
            out = model.hf_model.generate(
                x, attention_mask=torch.ones_like(x), do_sample=True, temperature=temperature,
                top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                pad_token_id=model.tokenizer.pad_token_id or model.tokenizer.eos_token_id)
    finally:
        torch.set_num_threads(threads)
        for hd in handles:
            hd.remove()
    return [model.tokenizer.decode(row[start:].tolist()) for row in out]


def code_edits(codes: Sequence[CodeRef], slot: int = -1, slots: int = 1) -> dict:
    """Edits that activate each (hook, group, code) at every position, in `slot` (several codes
    of one hook go to different heads, or to successive slots from `slot` backwards). `slots`
    (default 1, the paper) gives each code that many of the k slots: a stronger push."""
    if slots < 1:
        raise InterpError(f"slots must be >= 1 (slots a code takes of the k), got {slots}.")
    by_hook: dict[str, list[tuple[int, int]]] = {}
    for hook, group, code in codes:
        by_hook.setdefault(hook, []).append((group, code))

    def make(pairs):
        def edit(ids: Tensor) -> Tensor:
            ids = ids.clone()
            used: dict[int, int] = {}
            for group, code in pairs:
                for _ in range(slots):
                    s = slot - used.get(group, 0)
                    used[group] = used.get(group, 0) + 1
                    if -s > ids.shape[-1]:
                        raise InterpError(f"{len(pairs)} code(s) x {slots} slot(s) do not fit "
                                          f"in the k={ids.shape[-1]} slots of one group.")
                    ids[:, :, group, s] = code
            return ids
        return edit
    return {h: make(p) for h, p in by_hook.items()}


def topic_steering(cb: CodebookModel, codes: Sequence[CodeRef], pattern: str,
                   prompts: Sequence[str] = ("",), n: int = 10, max_new_tokens: int = 20,
                   temperature: float = 1.0, seed: int = 0, slot: int = -1, slots: int = 1,
                   plain_baseline: bool = False) -> dict:
    """Share of continuations matching `pattern`, steered by `codes` vs not (paper metric).

    Both use the same sampling seeds. `plain_baseline` also measures the model without its
    codebooks (`model_share`)."""
    for hook, group, code in codes:
        if hook not in cb.hook_names:
            raise InterpError(f"No codebook at {hook!r}; codebooks sit at {cb.hook_names}.")
        layer = cb.layer(hook)
        if not 0 <= code < layer.cfg.n_codes or not 0 <= group < layer.groups:
            raise InterpError(f"Code {code} of group {group} does not exist at {hook} "
                              f"({layer.groups} groups x {layer.cfg.n_codes} codes).")
    rx = re.compile(pattern, re.IGNORECASE)
    out = {"pattern": pattern, "codes": [list(c) for c in codes], "slots": slots,
           "n": n, "max_new_tokens": max_new_tokens, "prompts": [],
           "baseline_share": 0.0, "steered_share": 0.0}
    bos = torch.tensor([cb.model.bos_token_id])
    edits = code_edits(codes, slot, slots)
    k = max(len(prompts), 1)
    for i, prompt in enumerate(prompts):
        src = prompt if prompt else bos
        base = generate(cb, src, n, max_new_tokens, temperature, seed + i)
        steer = generate(cb, src, n, max_new_tokens, temperature, seed + i, edits=edits)
        row = {"prompt": prompt, "baseline_share": _share(rx, base),
               "steered_share": _share(rx, steer), "baseline_samples": base,
               "steered_samples": steer}
        if plain_baseline:
            plain = generate(cb, src, n, max_new_tokens, temperature, seed + i,
                             use_codebooks=False)
            row.update(model_share=_share(rx, plain), model_samples=plain)
        out["prompts"].append(row)
    for key in ("baseline_share", "steered_share") + (("model_share",) if plain_baseline else ()):
        out[key] = sum(p[key] for p in out["prompts"]) / k
    return out


def _share(rx: re.Pattern, texts: Sequence[str]) -> float:
    return sum(bool(rx.search(t)) for t in texts) / max(len(texts), 1)
