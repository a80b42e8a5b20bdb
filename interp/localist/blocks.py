"""Semantic blocks: a partition of each sequence's positions into spans, and each query's target.

Three kinds, each one function in `BLOCK_KINDS` (a registry):

- `window`: fixed windows of `window` positions;
- `punct`: sentence/line spans that end at a token containing one of `boundaries` (".", "\\n", ...);
- `anchor`: spans that start at each occurrence of an anchor string (`def`, `class`, ...), matched
  on token ids so multi-token anchors work with character-level and BPE tokenizers alike.

`max_span` splits long spans into pieces of at most that many positions. A query's *target block*
(the block its pointer fidelity is measured against and the attention bias favours) is its own
block (`target="current"`) or the one before it (`target="previous"`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError, unknown_name_message

TARGETS = ("current", "previous")
DEFAULT_ANCHORS = ("def ", "class ", "return ", "import ", "if ", "for ")


@dataclass(frozen=True)
class BlockSpec(Config):
    """How positions are grouped into semantic blocks and which block each query points at."""

    kind: str = "punct"  # window | punct | anchor
    window: int = 16  # block size of kind "window"
    boundaries: str = ".!?;:\n"  # a token containing one of these ends a span (kind "punct")
    anchors: tuple[str, ...] = DEFAULT_ANCHORS  # a span starts at each of these (kind "anchor")
    max_span: int | None = 64  # split spans longer than this (None: never)
    target: str = "current"  # current | previous

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise ConfigError(unknown_name_message("block kind", self.kind, BLOCK_KINDS))
        if self.target not in TARGETS:
            raise ConfigError(unknown_name_message("target", self.target, TARGETS,
                                                   hint="Use 'current' or 'previous'."))
        if self.window < 1 or (self.max_span is not None and self.max_span < 1):
            raise ConfigError(f"BlockSpec.window and max_span must be >= 1, got {self.window} "
                              f"and {self.max_span}.")
        if self.kind == "punct" and not self.boundaries:
            raise ConfigError("BlockSpec.boundaries is empty: give the characters that end a span.")
        if self.kind == "anchor" and not any(a for a in self.anchors):
            raise ConfigError("BlockSpec.anchors is empty: give at least one anchor string.")
        object.__setattr__(self, "anchors", tuple(self.anchors))


@dataclass
class _TokenTables:
    """Per-tokenizer lookups, built once per (tokenizer, spec)."""

    boundary: Tensor | None = None  # [vocab] bool: the token ends a span
    anchors: list[Tensor] = field(default_factory=list)  # id sequences that start a span


_TABLES: dict[tuple[int, str, tuple[str, ...]], _TokenTables] = {}


def _vocab_strings(tokenizer) -> list[str]:
    n = max(len(tokenizer), int(getattr(tokenizer, "vocab_size", 0) or 0))
    return tokenizer.batch_decode([[i] for i in range(n)])


def _tables(tokenizer, spec: BlockSpec) -> _TokenTables:
    key = (id(tokenizer), spec.boundaries, spec.anchors)
    if key in _TABLES:
        return _TABLES[key]
    t = _TokenTables()
    if spec.kind == "punct":
        strings = _vocab_strings(tokenizer)
        t.boundary = torch.tensor([any(c in s for c in spec.boundaries) for s in strings])
    if spec.kind == "anchor":
        seen = set()
        for a in spec.anchors:
            for variant in (a, " " + a, a.strip()):
                ids = tuple(tokenizer(variant, add_special_tokens=False)["input_ids"])
                if ids and ids not in seen:
                    seen.add(ids)
                    t.anchors.append(torch.tensor(ids))
    _TABLES[key] = t
    return t


def _starts_from_ends(ends: Bool[Tensor, "b t"]) -> Bool[Tensor, "b t"]:
    """A span starts at position 0 and right after every span end."""
    starts = torch.zeros_like(ends)
    starts[:, 0] = True
    starts[:, 1:] = ends[:, :-1]
    return starts


def _window_starts(ids: Tensor, spec: BlockSpec, tokenizer) -> Tensor:
    pos = torch.arange(ids.shape[1], device=ids.device)
    return (pos % spec.window == 0).expand_as(ids).clone()


def _punct_starts(ids: Tensor, spec: BlockSpec, tokenizer) -> Tensor:
    if tokenizer is None:
        raise ConfigError("Blocks of kind 'punct' need the tokenizer (to find punctuation).")
    table = _tables(tokenizer, spec).boundary.to(ids.device)
    ends = table[ids.clamp(0, len(table) - 1)]
    ends[:, 0] = True  # BOS (or whatever opens the window) is a block of its own
    return _starts_from_ends(ends)


def _anchor_starts(ids: Tensor, spec: BlockSpec, tokenizer) -> Tensor:
    if tokenizer is None:
        raise ConfigError("Blocks of kind 'anchor' need the tokenizer (to find anchor tokens).")
    starts = torch.zeros_like(ids, dtype=torch.bool)
    starts[:, :2] = True  # BOS alone, then the first span
    T = ids.shape[1]
    for pattern in _tables(tokenizer, spec).anchors:
        n = len(pattern)
        if n > T:
            continue
        hit = (ids.unfold(1, n, 1) == pattern.to(ids.device)).all(-1)  # [b, t - n + 1]
        starts[:, : hit.shape[1]] |= hit
    return starts


#: block kind -> function(ids, spec, tokenizer) giving a [batch, pos] bool "a block starts here".
BLOCK_KINDS: dict[str, Callable[[Tensor, BlockSpec, object], Tensor]] = {
    "window": _window_starts, "punct": _punct_starts, "anchor": _anchor_starts,
}


def block_ids(ids: Int[Tensor, "batch pos"], spec: BlockSpec, tokenizer=None
              ) -> Int[Tensor, "batch pos"]:
    """The block index of every position (0, 1, 2, ... non-decreasing along each row)."""
    if ids.ndim != 2:
        raise ConfigError(f"block_ids needs token ids of shape [batch, pos], got {tuple(ids.shape)}.")
    starts = BLOCK_KINDS[spec.kind](ids, spec, tokenizer)
    if spec.max_span is not None:
        pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        start_pos = torch.where(starts, pos, torch.zeros_like(pos)).cummax(dim=1).values
        starts = starts | ((pos - start_pos) % spec.max_span == 0)
    return starts.long().cumsum(dim=1) - 1


def target_blocks(blocks: Int[Tensor, "batch pos"], target: str = "current"
                  ) -> Int[Tensor, "batch pos"]:
    """Each query's target block: its own, or the previous one (block 0 points at itself)."""
    if target == "current":
        return blocks
    if target == "previous":
        return (blocks - 1).clamp_min(0)
    raise ConfigError(unknown_name_message("target", target, TARGETS))


def target_mask(blocks: Int[Tensor, "batch pos"], target: str = "current"
                ) -> Bool[Tensor, "batch query key"]:
    """True where key j lies in query i's target block and is visible to it (j <= i)."""
    T = blocks.shape[1]
    tgt = target_blocks(blocks, target)
    causal = torch.ones(T, T, dtype=torch.bool, device=blocks.device).tril()
    return (blocks[:, None, :] == tgt[:, :, None]) & causal


def block_structure(ids: Int[Tensor, "batch pos"], spec: BlockSpec, tokenizer=None
                    ) -> tuple[Tensor, Tensor]:
    """(block ids, target mask) of a batch of token ids: everything the dial and metrics need."""
    b = block_ids(ids, spec, tokenizer)
    return b, target_mask(b, spec.target)
