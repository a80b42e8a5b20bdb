"""Codes analysed like features: firing counts, top contexts, tokens, and regex code search.

Codebook Features (arXiv 2310.17230, section 4; code: code_search_utils.py). A code "fires" on a
token when it is among the k codes chosen there. Code search ranks codes by precision and
recall for a pattern: recall = share of the pattern's token positions where the code fires,
precision = share of the code's firings that are on the pattern (paper thresholds: recall >
0.01, precision > 0.5).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InterpError
from saes.codebook.insert import CodebookModel


@dataclass
class CodeTable:
    """The codes chosen on a set of token windows: `ids[hook]` is [windows, pos, groups, k]."""

    tokens: Int[Tensor, "windows pos"]
    ids: dict[str, Int[Tensor, "windows pos groups k"]]

    def fires(self, hook: str, code: int, group: int = 0) -> torch.BoolTensor:
        """[windows, pos] mask of where `code` of `group` fires at `hook`."""
        if hook not in self.ids:
            raise InterpError(f"No codes recorded at {hook!r}; recorded: {sorted(self.ids)}.")
        return (self.ids[hook][..., group, :] == code).any(-1)


@torch.no_grad()
def collect_codes(cb: CodebookModel, windows: Iterable[Tensor], progress: bool = True
                  ) -> CodeTable:
    """Run token windows ([batch, pos] ids) through the model with codebooks; keep the codes."""
    toks, ids = [], {h: [] for h in cb.hook_names}
    stop = cb.model.stop_layer_for(cb.hook_names)  # no need to run past the last codebook
    for batch in tqdm(windows, desc="codes", disable=not progress):
        with cb.enabled():
            cb.model.run_with_cache(batch, hooks=cb.hook_names[:1], stop_at_layer=stop)
        codes = {h: layer.last_ids for h, layer in cb.items()}
        toks.append(batch.cpu())
        for h, v in codes.items():
            ids[h].append(v.cpu().to(torch.int32))
    if not toks:
        raise InterpError("No token windows given to collect codes from.")
    return CodeTable(torch.cat(toks), {h: torch.cat(v) for h, v in ids.items()})


def code_counts(table: CodeTable, hook: str, n_codes: int) -> Int[Tensor, "groups n_codes"]:
    """Firings of every code of every group at `hook` (each slot counted)."""
    ids = table.ids[hook].long()
    g = ids.shape[-2]
    out = torch.zeros(g, n_codes, dtype=torch.long)
    for gi in range(g):
        out[gi] = torch.bincount(ids[..., gi, :].reshape(-1), minlength=n_codes)[:n_codes]
    return out


def summary(counts: Int[Tensor, "groups n_codes"]) -> dict:
    """Active share, and the entropy-based effective number of codes, per hook."""
    c = counts.float()
    p = c / c.sum(-1, keepdim=True).clamp_min(1)
    ent = -(p * p.clamp_min(1e-30).log()).sum(-1)
    return {"active_frac": float((c > 0).float().mean()),
            "effective_codes": float(ent.exp().mean()),
            "max_share": float(p.max(-1).values.mean())}


def top_contexts(table: CodeTable, tokenizer, hook: str, code: int, group: int = 0,
                 n: int = 10, before: int = 8, after: int = 2) -> list[dict]:
    """Up to `n` contexts where the code fires: text before, the token, text after."""
    where = table.fires(hook, code, group).nonzero().tolist()
    out = []
    for w, p in where[:n]:
        row = table.tokens[w]
        out.append({"window": w, "pos": p,
                    "before": tokenizer.decode(row[max(0, p - before): p].tolist()),
                    "token": tokenizer.decode([int(row[p])]),
                    "after": tokenizer.decode(row[p + 1: p + 1 + after].tolist())})
    return out


def code_tokens(table: CodeTable, tokenizer, hook: str, code: int, group: int = 0,
                n: int = 10) -> list[tuple[str, int]]:
    """The tokens a code fires on most often, with counts."""
    toks = table.tokens[table.fires(hook, code, group)]
    return [(tokenizer.decode([t]), c) for t, c in Counter(toks.tolist()).most_common(n)]


def pattern_positions(table: CodeTable, tokenizer, pattern: str, flags=re.IGNORECASE
                      ) -> torch.BoolTensor:
    """[windows, pos] mask of tokens that overlap a regex match in their window's text."""
    rx = re.compile(pattern, flags)
    mask = torch.zeros(table.tokens.shape, dtype=torch.bool)
    for w, row in enumerate(table.tokens.tolist()):
        pieces = [tokenizer.decode([t]) for t in row]
        starts, text = [], ""
        for piece in pieces:
            starts.append(len(text))
            text += piece
        ends = starts[1:] + [len(text)]
        for m in rx.finditer(text):
            for p, (a, b) in enumerate(zip(starts, ends)):
                if a < m.end() and b > m.start() and b > a:
                    mask[w, p] = True
    return mask


def code_search(table: CodeTable, tokenizer, pattern: str, hook: str | None = None,
                min_recall: float = 0.01, min_precision: float = 0.5, top: int = 10,
                skip_first: bool = True) -> list[dict]:
    """Codes ranked by precision (then recall) for the tokens matching `pattern`; only codes
    passing both thresholds are listed (paper: `get_codes_from_pattern`)."""
    matched = pattern_positions(table, tokenizer, pattern)
    if skip_first:
        matched[:, 0] = False
    n_match = int(matched.sum())
    if n_match == 0:
        raise InterpError(f"The pattern {pattern!r} matches no token in the {len(table.tokens)} "
                          "windows; use a pattern that occurs in the data or more windows.")
    rows = []
    for h in ([hook] if hook else list(table.ids)):
        ids = table.ids[h].long()  # [w, p, g, k]
        if skip_first:
            ids = ids[:, 1:]
        m = matched[:, 1:] if skip_first else matched
        g = ids.shape[-2]
        for gi in range(g):
            flat = ids[..., gi, :]
            n_codes = int(flat.max()) + 1
            onehot_total = torch.bincount(flat.reshape(-1), minlength=n_codes)
            on_match = torch.bincount(flat[m].reshape(-1), minlength=n_codes)
            prec = on_match.float() / onehot_total.clamp_min(1)
            rec = on_match.float() / n_match
            ok = ((rec > min_recall) & (prec > min_precision)).nonzero().view(-1)
            for c in ok.tolist():
                rows.append({"hook": h, "group": gi, "code": c, "precision": float(prec[c]),
                             "recall": float(rec[c]), "firings": int(onehot_total[c])})
    rows.sort(key=lambda r: (-r["precision"], -r["recall"]))
    return rows[:top]
