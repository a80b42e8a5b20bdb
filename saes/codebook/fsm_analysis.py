"""The TokFSM analyses of Codebook Features (arXiv 2310.17230, section 3; code: fsm_utils.py,
code_search_utils.py, tutorials/tokfsm.ipynb).

- transition accuracy: sample sequences from the model, parse them to states, count the
  consecutive pairs that are FSM edges; first-transition accuracy: for each state, the top
  `n_edges` next states by P(d1) P(d2 | d1) ... against its true successors.
- code purity (paper): feed every state ("bigrams") and every valid prefix of a next state
  ("trigrams"); a code is pure if it fires on exactly one input; purity = pure / active codes.
- state purity (here): on sampled contexts, the share of a code's firings at its majority state,
  against a permutation null (labels shuffled) -- "purer than chance".
- precision / recall of a code for a state (paper thresholds: recall > 0.01, precision > 0.5).
- patching: run state a, overwrite the code ids at the final position with state b's; JSD of
  the output to b's own output, normalised by the unpatched JSD (paper: L1-MLP codes move the
  output almost entirely to b's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saes.codebook.fsm import TokFSM
from saes.codebook.insert import CodebookModel, set_codes


def jsd(p: Float[Tensor, "... v"], q: Float[Tensor, "... v"]) -> Float[Tensor, "..."]:
    """Jensen-Shannon divergence 0.5 [KL(p||m) + KL(q||m)], m = (p + q) / 2 (nats)."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return torch.where(a > 0, a * (a.clamp_min(1e-30).log() - b.clamp_min(1e-30).log()),
                           torch.zeros_like(a)).sum(-1)
    return 0.5 * (kl(p, m) + kl(q, m))


# --------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_sequences(cb: CodebookModel, prompts: Int[Tensor, "n p"], length: int,
                     temperature: float = 1.0, seed: int = 0, edits: dict | None = None,
                     use_codebooks: bool = True) -> Int[Tensor, "n length"]:
    """Continue `prompts` to `length` tokens by sampling (full recompute each step)."""
    import contextlib

    g = torch.Generator().manual_seed(seed)
    x = prompts.clone()
    ctx = cb.enabled() if use_codebooks else contextlib.nullcontext()
    with ctx, cb.patched(edits or {}):
        while x.shape[1] < length:
            logits = cb.model(x)[:, -1].float()
            probs = (logits / max(temperature, 1e-6)).softmax(-1)
            x = torch.cat([x, torch.multinomial(probs, 1, generator=g)], dim=1)
    return x


def start_prompts(fsm: TokFSM, n: int, seed: int = 0) -> Int[Tensor, "n p"]:
    """BOS followed by one random start state."""
    return fsm.sample(n, 1 + fsm.n_digits, seed=seed)


def transition_accuracy(cb: CodebookModel, fsm: TokFSM, n: int = 100, length: int = 128,
                        seed: int = 0, use_codebooks: bool = True) -> dict:
    """Sampled transition accuracy (paper: 100 sequences, temperature 1)."""
    seqs = sample_sequences(cb, start_prompts(fsm, n, seed), length, seed=seed,
                            use_codebooks=use_codebooks)
    return fsm.transition_stats(seqs)


# --------------------------------------------------------------------------- next states
def state_prompts(fsm: TokFSM, states: Sequence[int] | Tensor | None = None
                  ) -> Int[Tensor, "n p"]:
    """BOS + the digits of each state (the paper's "bigram" inputs)."""
    states = torch.arange(fsm.n_states) if states is None else torch.as_tensor(states)
    return torch.cat([torch.full((len(states), 1), fsm.bos_id), fsm.state_tokens(states)], 1)


@torch.no_grad()
def next_state_distribution(cb: CodebookModel, fsm: TokFSM, prompts: Int[Tensor, "n p"],
                            edits: dict | None = None) -> Float[Tensor, "n n_states"]:
    """P(next state = s | prompt) = prod_j P(digit_j | prompt, digits_<j), for every state s,
    with the codebooks in place (and `edits` patched, at the positions they name)."""
    n, p = prompts.shape
    S, D = fsm.n_states, fsm.n_digits
    digits = fsm.state_tokens(torch.arange(S))  # [S, D]
    seqs = torch.cat([prompts.repeat_interleave(S, 0), digits.repeat(n, 1)], dim=1)
    with cb.enabled(), cb.patched(edits or {}):
        logp = cb.model(seqs).float().log_softmax(-1)  # [n*S, p+D, V]
    idx = torch.arange(p - 1, p - 1 + D)
    lp = logp[:, idx].gather(-1, seqs[:, p:].unsqueeze(-1)).squeeze(-1).sum(-1)
    probs = lp.view(n, S).exp()
    return probs / probs.sum(-1, keepdim=True).clamp_min(1e-30)


def first_transition_accuracy(cb: CodebookModel, fsm: TokFSM) -> float:
    """Mean over states of |top-n_edges predicted next states ∩ true successors| / n_edges."""
    probs = next_state_distribution(cb, fsm, state_prompts(fsm))
    top = probs.topk(fsm.n_edges, dim=-1).indices
    hits = fsm.adjacency.gather(1, top).float().sum(-1) / fsm.n_edges
    return float(hits.mean())


# --------------------------------------------------------------------------- purity
@torch.no_grad()
def last_position_codes(cb: CodebookModel, prompts: Int[Tensor, "n p"]
                        ) -> dict[str, Int[Tensor, "n g k"]]:
    ids = cb.codes(prompts)
    return {h: v[:, -1] for h, v in ids.items()}


def trigram_prompts(fsm: TokFSM) -> tuple[Int[Tensor, "m p"], list[tuple[int, int]]]:
    """BOS + state + first digit of each distinct successor's first digit (valid prefixes)."""
    rows, keys = [], []
    for s in range(fsm.n_states):
        firsts = sorted({int(fsm.state_tokens(torch.tensor(int(t)))[0])
                         for t in fsm.transitions[s]})
        for d in firsts:
            rows.append(torch.cat([state_prompts(fsm, [s])[0], torch.tensor([d])]))
            keys.append((s, d))
    return torch.stack(rows), keys


def code_purity(codes: Int[Tensor, "n g k"]) -> dict:
    """Paper purity: of the codes that fire on any of the n inputs, the share that fire on
    exactly one input (per group; pooled)."""
    n, g, k = codes.shape
    pure = active = 0
    for gi in range(g):
        # an input counts once per code even if k slots repeat it
        per_code = {}
        for i in range(n):
            for c in set(codes[i, gi].tolist()):
                per_code[c] = per_code.get(c, 0) + 1
        active += len(per_code)
        pure += sum(1 for v in per_code.values() if v == 1)
    return {"purity": pure / max(active, 1), "pure_codes": pure, "active_codes": active}


def purity_report(cb: CodebookModel, fsm: TokFSM) -> dict[str, dict]:
    """Paper purity at every codebook hook, on bigram (state) and trigram inputs."""
    bi = last_position_codes(cb, state_prompts(fsm))
    tri_prompts, _ = trigram_prompts(fsm)
    tri = last_position_codes(cb, tri_prompts)
    return {h: {"bigram": code_purity(bi[h]), "trigram": code_purity(tri[h])} for h in bi}


def state_contexts(fsm: TokFSM, n: int = 256, seq_len: int = 64, seed: int = 1
                   ) -> tuple[Int[Tensor, "n seq"], Int[Tensor, "n seq"]]:
    """Sampled sequences and, per position, the state whose last digit sits there (else -1)."""
    toks = fsm.sample(n, seq_len, seed=seed)
    labels = torch.full_like(toks, -1)
    D = fsm.n_digits
    for end in range(D, seq_len, D):  # position of each state's last digit (BOS at 0)
        labels[:, end] = fsm.tokens_state(toks[:, end - D + 1: end + 1])
    return toks, labels


@torch.no_grad()
def code_state_counts(cb: CodebookModel, fsm: TokFSM, hook: str, tokens: Tensor,
                      labels: Tensor, group: int = 0) -> Int[Tensor, "n_codes n_states"]:
    """How often each code (slot-pooled) of `group` at `hook` fires at each state's last digit."""
    ids = cb.codes(tokens)[hook][..., group, :]  # [n, seq, k]
    keep = labels >= 0
    codes, states = ids[keep], labels[keep]  # [m, k], [m]
    layer = cb.layer(hook)
    table = torch.zeros(layer.cfg.n_codes, fsm.n_states, dtype=torch.long)
    for j in range(codes.shape[1]):
        table.index_put_((codes[:, j], states), torch.ones_like(states), accumulate=True)
    return table


def state_purity(table: Int[Tensor, "codes states"], n_perm: int = 20, seed: int = 0) -> dict:
    """Share of firings at each code's majority state, and the same under shuffled labels."""
    total = int(table.sum())
    purity = float(table.max(dim=1).values.sum()) / max(total, 1)
    codes = torch.repeat_interleave(torch.arange(table.shape[0]), table.sum(1))
    states = torch.cat([torch.repeat_interleave(torch.arange(table.shape[1]), row)
                        for row in table])  # one label per firing, grouped by code
    g = torch.Generator().manual_seed(seed)
    null = []
    for _ in range(n_perm):
        perm = states[torch.randperm(len(states), generator=g)]
        t = torch.zeros_like(table)
        t.index_put_((codes, perm), torch.ones_like(perm), accumulate=True)
        null.append(float(t.max(dim=1).values.sum()) / max(total, 1))
    return {"state_purity": purity, "chance_purity": sum(null) / len(null),
            "active_codes": int((table.sum(1) > 0).sum())}


def precision_recall(table: Int[Tensor, "codes states"], min_recall: float = 0.01,
                     min_precision: float = 0.5) -> dict:
    """For each state, its best code by precision (among codes with recall > min_recall):
    precision = firings at the state / all firings of the code, recall = firings at the state
    / occurrences of the state. Counts states that have a code passing both thresholds."""
    t = table.float()
    prec = t / t.sum(1, keepdim=True).clamp_min(1)
    rec = t / t.sum(0, keepdim=True).clamp_min(1)
    ok = rec > min_recall
    best_p = torch.where(ok, prec, torch.zeros_like(prec)).max(0)
    best_r = rec.gather(0, best_p.indices.unsqueeze(0))[0]
    found = (best_p.values > min_precision) & (t.sum(0) > 0)
    return {"mean_precision": float(best_p.values.mean()), "mean_recall": float(best_r.mean()),
            "states_with_code": int(found.sum()), "n_states": int(t.shape[1]),
            "best_code": best_p.indices.tolist(), "precision": best_p.values.tolist(),
            "recall": best_r.tolist()}


# --------------------------------------------------------------------------- patching
def patch_components(cb: CodebookModel) -> dict[str, list[str]]:
    """Named sets of hooks to patch: each hook, then all attention, all MLP, all."""
    hooks = cb.hook_names
    comps = {h: [h] for h in hooks}
    attn = [h for h in hooks if h.endswith("attn.hook_z")]
    mlp = [h for h in hooks if h.endswith("hook_mlp_out")]
    if len(attn) > 1:
        comps["all_attn"] = attn
    if len(mlp) > 1:
        comps["all_mlp"] = mlp
    if len(hooks) > 1:
        comps["all"] = hooks
    return comps


def state_pairs(fsm: TokFSM, n: int = 50, seed: int = 0) -> list[tuple[int, int]]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, fsm.n_states, (n,), generator=g)
    b = (a + torch.randint(1, fsm.n_states, (n,), generator=g)) % fsm.n_states
    return list(zip(a.tolist(), b.tolist()))


@torch.no_grad()
def patching_report(cb: CodebookModel, fsm: TokFSM, pairs: Sequence[tuple[int, int]] | None = None,
                    components: dict[str, list[str]] | None = None) -> dict:
    """For each component: the mean over pairs (a, b) of JSD(output of a with b's codes patched
    at the final position, output of b) over the mean of JSD(output of a, output of b), on the
    next-token distribution (paper) and on the next-state distribution; and the next-state mass
    on b's successors, patched vs not."""
    pairs = list(pairs or state_pairs(fsm))
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    pa, pb = state_prompts(fsm, a), state_prompts(fsm, b)
    with cb.enabled():
        tok_a = cb.model(pa)[:, -1].float().softmax(-1)
        tok_b = cb.model(pb)[:, -1].float().softmax(-1)
    codes_b = last_position_codes(cb, pb)
    ns_a = next_state_distribution(cb, fsm, pa)
    ns_b = next_state_distribution(cb, fsm, pb)
    succ_b = fsm.adjacency[b].float()
    base_tok, base_ns = jsd(tok_a, tok_b), jsd(ns_a, ns_b)
    last = pa.shape[1] - 1
    out = {"pairs": len(pairs), "unpatched": {
        "jsd_token": float(base_tok.mean()), "jsd_state": float(base_ns.mean()),
        "mass_on_target_successors": float((ns_a * succ_b).sum(-1).mean())}, "components": {}}
    for name, hooks in (components or patch_components(cb)).items():
        def edits_for(rows):
            return {h: set_codes(codes_b[h][rows].unsqueeze(1), positions=[last], slot=slice(None))
                    for h in hooks}
        with cb.enabled(), cb.patched(edits_for(slice(None))):
            tok_p = cb.model(pa)[:, -1].float().softmax(-1)
        ns_p = next_state_distribution(cb, fsm, pa, _per_row_edits(hooks, codes_b, last, fsm))
        out["components"][name] = {
            "jsd_token": float(jsd(tok_p, tok_b).mean()),
            "jsd_state": float(jsd(ns_p, ns_b).mean()),
            # averaged over pairs, then normalised by the averaged no-patch JSD (the paper's
            # order): a mean of per-pair ratios is dominated by any pair whose two states
            # already give nearly the same output (a denominator near zero)
            "normalised_jsd_token": float(jsd(tok_p, tok_b).mean()
                                          / base_tok.mean().clamp_min(1e-12)),
            "normalised_jsd_state": float(jsd(ns_p, ns_b).mean()
                                          / base_ns.mean().clamp_min(1e-12)),
            "mass_on_target_successors": float((ns_p * succ_b).sum(-1).mean()),
        }
    return out


def _per_row_edits(hooks, codes_b, last, fsm):
    """Edits for `next_state_distribution`, whose batch repeats each prompt n_states times."""
    return {h: set_codes(codes_b[h].repeat_interleave(fsm.n_states, 0).unsqueeze(1),
                         positions=[last], slot=slice(None)) for h in hooks}


def fsm_steering(cb: CodebookModel, fsm: TokFSM, hooks: Sequence[str], n: int = 50,
                 seed: int = 0) -> dict:
    """Steering: start from state a, activate target state b's codes (at `hooks`, final
    position) and sample the next state; share of samples that are successors of b, against
    the same share without the codes."""
    pairs = state_pairs(fsm, n, seed)
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    pa = state_prompts(fsm, a)
    codes_b = last_position_codes(cb, state_prompts(fsm, b))
    last = pa.shape[1] - 1
    edits = {h: set_codes(codes_b[h].unsqueeze(1), positions=[last], slot=slice(None))
             for h in hooks}
    length = pa.shape[1] + fsm.n_digits
    res = {}
    for name, e in (("baseline", None), ("steered", edits)):
        seqs = sample_sequences(cb, pa, length, seed=seed, edits=e)
        nxt = fsm.tokens_state(seqs[:, -fsm.n_digits:]).clamp_max(fsm.n_states - 1)
        res[f"{name}_share_target"] = float(fsm.adjacency[b, nxt].float().mean())
        res[f"{name}_share_source"] = float(fsm.adjacency[a, nxt].float().mean())
    return res
