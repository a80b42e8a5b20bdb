"""A local causal language model as auto-interpretability explainer and scorer (offline).

Any Hugging Face causal LM directory works (`LocalLM.load(path)`); without one the default model
stands in (`placeholder = True`: a 135M-parameter model writes poor explanations and scores
them near chance, so its figures test the pipeline, not the dictionary). Prompts go through the
tokenizer's chat template when it has one. `generate` decodes greedily; `p_yes` reads the
scorer's next-token distribution and returns P("1") / (P("1") + P("0")) over the answer tokens,
as Delphi does with log-probabilities (EleutherAI, arXiv 2410.13928), so no free-text parsing is
needed and AUROC is defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interp.errors import ModelLoadError


@dataclass
class LocalLM:
    model: object  # transformers PreTrainedModel
    tokenizer: object
    name: str
    placeholder: bool

    @classmethod
    def load(cls, path: str | None = None, device: str = "cpu") -> LocalLM:
        from interp.devices import resolve_device
        from interp.models.loading import DEFAULT_MODEL, load_hf

        name, model, tok = load_hf(path or None, device=resolve_device(device))
        return cls(model, tok, name, placeholder=(name == DEFAULT_MODEL))

    @classmethod
    def from_hooked(cls, hooked) -> LocalLM:
        """Reuse a loaded `HookedModel`'s network (no second copy in memory)."""
        from interp.models.loading import DEFAULT_MODEL

        return cls(hooked.hf_model, hooked.tokenizer, hooked.name,
                   placeholder=(hooked.name == DEFAULT_MODEL))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def format(self, system: str, user: str) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template([{"role": "system", "content": system},
                                            {"role": "user", "content": user}],
                                           tokenize=False, add_generation_prompt=True)
        return f"{system}\n\n{user}\n\nAnswer:"

    def _batch(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        tok = self.tokenizer
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(len(i) for i in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        out = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(out)
        for r, i in enumerate(ids):  # left padding: the next token sits at the last column
            out[r, width - len(i):] = torch.tensor(i)
            mask[r, width - len(i):] = 1
        return out.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int = 30) -> list[str]:
        """Greedy continuations, each stopping at its first line break."""
        stop = [i for i in (self.tokenizer.eos_token_id,) if i is not None]
        stop += [i for t, i in self.tokenizer.get_vocab().items()
                 if self.tokenizer.convert_tokens_to_string([t]) == "\n"]
        out = []
        for p in prompts:  # one at a time: no padding inside generation
            ids, mask = self._batch([p])
            gen = self.model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      do_sample=False, pad_token_id=int(ids[0, 0]),
                                      eos_token_id=stop or None)
            out.append(self.tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        return out

    def answer_ids(self) -> tuple[list[int], list[int]]:
        """Token ids that read as "1" and as "0" (with and without a leading space)."""
        ones, zeros = set(), set()
        for text in ("1", " 1"):
            ones.update(self.tokenizer(text, add_special_tokens=False)["input_ids"][-1:])
        for text in ("0", " 0"):
            zeros.update(self.tokenizer(text, add_special_tokens=False)["input_ids"][-1:])
        if ones & zeros or not ones or not zeros:
            raise ModelLoadError(f"The scorer {self.name}'s tokenizer does not separate the "
                                 "answers '1' and '0'.")
        return sorted(ones), sorted(zeros)

    @torch.no_grad()
    def p_yes_shared(self, prefix: str, suffixes: list[str], batch_size: int = 8) -> Tensor:
        """`p_yes` of prefix + suffix for each suffix, running the shared prefix once and
        reusing its key/value cache (the scorer's prompts share the instructions and the
        explanation). The prefix and each suffix are tokenised separately."""
        import copy

        tok = self.tokenizer
        pre = torch.tensor([tok(prefix, add_special_tokens=False)["input_ids"]],
                           device=self.device)
        P = pre.shape[1]
        cache = self.model(input_ids=pre, use_cache=True).past_key_values
        ones, zeros = self.answer_ids()
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        out = []
        for i in range(0, len(suffixes), batch_size):
            seqs = [tok(s, add_special_tokens=False)["input_ids"] for s in
                    suffixes[i:i + batch_size]]
            B, width = len(seqs), max(len(q) for q in seqs)
            ids = torch.full((B, width), pad, dtype=torch.long)
            mask = torch.zeros((B, P + width), dtype=torch.long)
            mask[:, :P] = 1
            for r, q in enumerate(seqs):  # right padding: pads come after every real token
                ids[r, :len(q)] = torch.tensor(q)
                mask[r, P:P + len(q)] = 1
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(B)
            pos = (P + torch.arange(width)).expand(B, -1)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=pos.to(self.device), past_key_values=past).logits
            last = torch.tensor([len(q) - 1 for q in seqs], device=logits.device)
            p = logits[torch.arange(B), last].float().softmax(-1)
            p1, p0 = p[:, ones].sum(1), p[:, zeros].sum(1)
            out.append((p1 / (p1 + p0).clamp_min(1e-30)).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def p_yes(self, prompts: list[str], batch_size: int = 8) -> Tensor:
        """P("1") / (P("1") + P("0")) for the token after each prompt."""
        ones, zeros = self.answer_ids()
        out = []
        for i in range(0, len(prompts), batch_size):
            ids, mask = self._batch(prompts[i:i + batch_size])
            pos = mask.long().cumsum(1) - 1
            logits = self.model(input_ids=ids, attention_mask=mask,
                                position_ids=pos.clamp_min(0)).logits[:, -1].float()
            p = logits.softmax(-1)
            p1, p0 = p[:, ones].sum(1), p[:, zeros].sum(1)
            out.append((p1 / (p1 + p0).clamp_min(1e-30)).cpu())
        return torch.cat(out) if out else torch.zeros(0)
