"""First-letter prompts for the absorption suite: which words, the model's own spelling accuracy,
and the activations at each word (built once per model and hook, cached like `EvalData`).

A prompt is SAEBench's in-context spelling template (Chanin et al., arXiv 2409.14507):
ten examples "\\n<word> has the first letter: <L>" and then "\\n<word> has the first letter:".
Prompts are assembled from token ids (each word is one token), so the word's position is known
exactly and every prompt has the same length. The model "spells well enough" when its next
token after the final colon, restricted to " A" .. " Z", is the right letter on at least
`min_spelling_accuracy` of the checked words.
"""

from __future__ import annotations

import logging
import random
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from interp.errors import DataError
from interp.io import atomic_write_json, read_json, save_safetensors_atomic

log = logging.getLogger(__name__)

LETTERS = string.ascii_lowercase
TEMPLATE = " has the first letter:"
N_ICL = 10
SPELLING_FORMAT = "interp-sae-eval-spelling"


@dataclass
class SpellingData:
    words: list[str]  # decoded word tokens (with their leading space, if any)
    letter: Tensor  # [n] 0..25
    acts: Tensor  # [n, d] activation at the word's position
    check_correct: Tensor  # [m] 0/1: the model named the first letter (first m words)
    hook: str
    model: str
    seed: int

    @property
    def spelling_accuracy(self) -> float:
        return float(self.check_correct.float().mean()) if len(self.check_correct) else 0.0

    def save(self, path: str | Path) -> None:
        path = Path(path)
        save_safetensors_atomic({"letter": self.letter, "acts": self.acts.contiguous(),
                                 "check_correct": self.check_correct},
                                path / "spelling.safetensors")
        atomic_write_json(path / "spelling.json", {
            "format": SPELLING_FORMAT, "words": self.words, "hook": self.hook,
            "model": self.model, "seed": self.seed})

    @classmethod
    def load(cls, path: str | Path) -> SpellingData:
        from safetensors.torch import load_file

        path = Path(path)
        meta = read_json(path / "spelling.json")
        t = load_file(str(path / "spelling.safetensors"))
        return cls(words=meta["words"], letter=t["letter"], acts=t["acts"],
                   check_correct=t["check_correct"], hook=meta["hook"], model=meta["model"],
                   seed=meta["seed"])


def alpha_tokens(tokenizer) -> list[tuple[int, str]]:
    """(id, text) of every vocabulary token that is one ASCII word (an optional leading space,
    then >= 2 letters), sorted by id."""
    out = []
    for tok, i in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([tok])
        w = text[1:] if text.startswith(" ") else text
        if len(w) >= 2 and w.isascii() and w.isalpha():
            out.append((i, text))
    return sorted(out)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer, bos: int | None, word: int, examples: list[tuple[int, str]],
               ) -> tuple[list[int], int]:
    """Token ids of one prompt and the index of the word being asked about."""
    tail = _ids(tokenizer, TEMPLATE)
    nl = _ids(tokenizer, "\n")
    ids = [] if bos is None else [bos]
    for ex_id, ex_text in examples:
        ids += nl + [ex_id] + tail + _ids(tokenizer, " " + ex_text.strip()[0].upper())
    ids += nl
    pos = len(ids)
    return ids + [word] + tail, pos


def letter_ids(tokenizer) -> Tensor:
    """The token of " A" .. " Z" (the answers)."""
    out = []
    for c in LETTERS.upper():
        ids = _ids(tokenizer, " " + c)
        if len(ids) != 1:
            raise DataError(f"' {c}' is not one token for this tokenizer; the first-letter "
                            "task needs single-token letters.")
        out.append(ids[0])
    return torch.tensor(out)


@torch.no_grad()
def build_spelling(model, hook: str, n_words: int, n_check: int, seed: int = 0,
                   batch_size: int = 16, progress: bool = False) -> SpellingData:
    """Activations at `hook` for `n_words` random single-token words, and the model's
    first-letter accuracy on the first `n_check` of them."""
    from tqdm.auto import tqdm

    tok = model.tokenizer
    vocab = alpha_tokens(tok)
    if len(vocab) < n_words + N_ICL:
        raise DataError(f"The vocabulary has only {len(vocab)} single-token words; ask for fewer "
                        f"than {n_words}.")
    rng = random.Random(seed)
    chosen = rng.sample(vocab, n_words)
    prompts, positions = [], []
    for wid, _ in chosen:
        ex = [v for v in rng.sample(vocab, N_ICL + 1) if v[0] != wid][:N_ICL]
        ids, pos = prompt_ids(tok, model.bos_token_id, wid, ex)
        prompts.append(ids)
        positions.append(pos)
    width = max(len(p) for p in prompts)
    if any(len(p) != width for p in prompts):  # letters tokenise alike, so this is rare
        log.warning("Spelling prompts differ in length; padding on the left.")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    stop = model.stop_layer_for([hook])
    stop = None if stop is None else max(1, stop)
    L = letter_ids(tok)
    acts, correct = [], []
    for i in tqdm(range(0, n_words, batch_size), desc="spelling prompts", disable=not progress):
        block = prompts[i:i + batch_size]
        ids = torch.full((len(block), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(block):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        shift = torch.tensor([width - len(p) for p in block])
        pos = torch.tensor(positions[i:i + batch_size]) + shift
        check = i < n_check
        logits, cache = model.run_with_cache(ids.to(model.device), hooks=[hook],
                                             stop_at_layer=None if check else stop,
                                             attention_mask=mask.to(model.device))
        a = cache[hook]
        a = a.reshape(a.shape[0], a.shape[1], -1)
        acts.append(a[torch.arange(len(block)), pos].float().cpu())
        if check:
            pred = logits[:, -1, L.to(logits.device)].argmax(-1).cpu()
            want = torch.tensor([LETTERS.index(t.strip()[0].lower())
                                 for _, t in chosen[i:i + batch_size]])
            correct.append((pred == want)[: max(0, n_check - i)].long())
    letter = torch.tensor([LETTERS.index(t.strip()[0].lower()) for _, t in chosen])
    return SpellingData(words=[t for _, t in chosen], letter=letter, acts=torch.cat(acts),
                        check_correct=torch.cat(correct) if correct else torch.zeros(0),
                        hook=hook, model=getattr(model, "name", ""), seed=seed)


def spelling_data(model, hook: str, n_words: int, n_check: int, seed: int = 0,
                  cache: str | Path | None = None, model_name: str | None = None,
                  progress: bool = False) -> SpellingData:
    """`build_spelling`, read from / written to the directory `cache` when given; `model` may
    be a function returning the model (called only to build)."""
    name = model_name if model_name is not None else getattr(model, "name", "")
    if cache is not None and (Path(cache) / "spelling.json").is_file():
        sp = SpellingData.load(cache)
        if (sp.hook, sp.model, sp.seed, len(sp.words), len(sp.check_correct)) == (
                hook, name, seed, n_words, min(n_check, n_words)):
            return sp
    m = model() if callable(model) and not hasattr(model, "run_with_cache") else model
    sp = build_spelling(m, hook, n_words, n_check, seed, progress=progress)
    sp.model = name or sp.model
    if cache is not None:
        sp.save(cache)
    return sp
