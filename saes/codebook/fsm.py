"""TokFSM: sequences from a random finite-state machine, states written as digit tokens.

Codebook Features (arXiv 2310.17230, section 3 / `train_fsm_model.py`): N = 100 states, each
with 10 out-neighbours drawn uniformly without replacement (seed 42), each taken with
probability 1/10; a state is written in base 10 with 2 digits, one token per digit; the
vocabulary is the digits plus `<|endoftext|>` (BOS/EOS/pad). A sequence is BOS followed by a
random walk from a random start state, truncated to `seq_len` tokens. There are far more states
(100) than hidden dimensions in a small model's MLP read-out, the superposition setting in which
the paper finds that codes pick out states one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
EOT = "<|endoftext|>"


@dataclass(frozen=True)
class TokFSM(Config):
    """A random FSM over `n_states` states with `n_edges` successors each (paper: 100, 10)."""

    n_states: int = 100
    n_edges: int = 10
    base: int = 10
    seed: int = 42

    def __post_init__(self):
        if self.n_states < 2 or not 1 <= self.n_edges <= self.n_states:
            raise ConfigError(f"Need n_states >= 2 and 1 <= n_edges <= n_states, got "
                              f"n_states={self.n_states}, n_edges={self.n_edges}.")
        if not 2 <= self.base <= len(DIGITS):
            raise ConfigError(f"base must be in 2..{len(DIGITS)}, got {self.base}.")

    # ----------------------------------------------------------------- structure
    @property
    def n_digits(self) -> int:
        """Tokens per state."""
        return max(1, math.ceil(math.log(self.n_states, self.base) - 1e-9))

    @property
    def bos_id(self) -> int:
        return self.base

    @property
    def vocab_size(self) -> int:
        return self.base + 1

    @cached_property
    def transitions(self) -> Int[Tensor, "n_states n_edges"]:
        """Successors of each state (uniform without replacement, from `seed`)."""
        g = torch.Generator().manual_seed(self.seed)
        return torch.stack([torch.randperm(self.n_states, generator=g)[: self.n_edges]
                            for _ in range(self.n_states)])

    @cached_property
    def adjacency(self) -> Bool[Tensor, "n_states n_states"]:
        adj = torch.zeros(self.n_states, self.n_states, dtype=torch.bool)
        adj[torch.arange(self.n_states).unsqueeze(1), self.transitions] = True
        return adj

    def is_edge(self, a: int, b: int) -> bool:
        return bool(self.adjacency[a, b])


    # ----------------------------------------------------------------- tokens
    def state_tokens(self, states: Int[Tensor, "..."]) -> Int[Tensor, "... n_digits"]:
        """Digit tokens of states, most significant first."""
        states = torch.as_tensor(states, dtype=torch.long)
        powers = self.base ** torch.arange(self.n_digits - 1, -1, -1)
        return (states.unsqueeze(-1) // powers) % self.base

    def tokens_state(self, digits: Int[Tensor, "... n_digits"]) -> Int[Tensor, "..."]:
        powers = self.base ** torch.arange(self.n_digits - 1, -1, -1)
        return (torch.as_tensor(digits, dtype=torch.long) * powers).sum(-1)

    def state_string(self, s: int) -> str:
        return "".join(DIGITS[int(t)] for t in self.state_tokens(torch.tensor(s)))

    def walk(self, n: int, n_states: int, seed: int = 0,
             start: Int[Tensor, "n"] | None = None) -> Int[Tensor, "n n_states"]:
        """`n` random walks of `n_states` states (uniform start unless given)."""
        g = torch.Generator().manual_seed(seed)
        states = torch.empty(n, n_states, dtype=torch.long)
        states[:, 0] = (torch.randint(0, self.n_states, (n,), generator=g)
                        if start is None else torch.as_tensor(start))
        for t in range(1, n_states):
            pick = torch.randint(0, self.n_edges, (n,), generator=g)
            states[:, t] = self.transitions[states[:, t - 1], pick]
        return states

    def sample(self, n: int, seq_len: int = 128, seed: int = 0) -> Int[Tensor, "n seq_len"]:
        """`n` token sequences: BOS, then a random walk's digits, truncated to `seq_len`."""
        if seq_len < 1 + self.n_digits:
            raise ConfigError(f"seq_len={seq_len} is too short to hold BOS and one state "
                              f"({1 + self.n_digits} tokens).")
        walk = self.walk(n, math.ceil((seq_len - 1) / self.n_digits), seed)
        toks = self.state_tokens(walk).reshape(n, -1)[:, : seq_len - 1]
        return torch.cat([torch.full((n, 1), self.bos_id), toks], dim=1)

    def parse(self, tokens: Int[Tensor, "pos"]) -> list[int]:
        """States of one sequence (a leading BOS is skipped; stops at the next BOS or at a
        non-digit; a trailing partial state is dropped)."""
        toks = [int(t) for t in tokens]
        if toks and toks[0] == self.bos_id:
            toks = toks[1:]
        states = []
        for i in range(0, len(toks) - self.n_digits + 1, self.n_digits):
            chunk = toks[i: i + self.n_digits]
            if any(t >= self.base for t in chunk):
                break
            s = int(self.tokens_state(torch.tensor(chunk)))
            if s >= self.n_states:
                break
            states.append(s)
        return states

    def transition_stats(self, sequences: Int[Tensor, "n pos"]) -> dict:
        """Fraction of consecutive state pairs that are FSM edges (and of first transitions)."""
        ok = total = first_ok = first_total = 0
        for row in sequences:
            states = self.parse(row)
            pairs = list(zip(states[:-1], states[1:]))
            ok += sum(self.is_edge(a, b) for a, b in pairs)
            total += len(pairs)
            if pairs:
                first_ok += self.is_edge(*pairs[0])
                first_total += 1
        return {"transition_accuracy": ok / max(total, 1),
                "first_transition_accuracy_sampled": first_ok / max(first_total, 1),
                "n_transitions": total}

    def tokenizer(self, save_dir=None):
        """A word-level fast tokenizer: one token per digit, `<|endoftext|>` as BOS/EOS/pad."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {DIGITS[i]: i for i in range(self.base)}
        vocab[EOT] = self.base
        backend = Tokenizer(models.WordLevel(vocab, unk_token=EOT))
        backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
        backend.decoder = decoders.Fuse()
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT,
                                      pad_token=EOT, unk_token=EOT)
        if save_dir is not None:
            tok.save_pretrained(str(save_dir))
        return tok
