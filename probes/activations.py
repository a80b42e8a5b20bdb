"""Per-token activations of documents, with each token's document, next token and label.

Probes are split into train and validation **by document** (tokens of one document never land on
both sides), so every row keeps the index of the document it came from. Documents are tokenised
with character offsets (for the labelling tasks in `probes.labels`), cut into chunks of
`context_size - 1` tokens with a BOS in front, and run through the model in padded batches.
Position 0 (BOS, the attention sink with a huge norm) is not kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import DataError, InterpError


@dataclass
class TokenSet:
    """Chunks of token ids (BOS first), the document of each chunk, and per-token labels."""

    ids: list[Tensor] = field(default_factory=list)  # int64 [len] each, BOS at 0
    doc: list[int] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)  # int64 [len] each; -1 = no label
    classes: tuple[str, ...] = ()

    @property
    def n_tokens(self) -> int:
        return sum(len(x) - 1 for x in self.ids)


@dataclass
class Activations:
    """Rows of activations (one per kept token) and what each row is."""

    acts: dict[str, Float[Tensor, "n d"]]
    tokens: Int[Tensor, " n"]
    next_tokens: Int[Tensor, " n"]  # -1 at the end of a chunk
    doc: Int[Tensor, " n"]
    labels: Int[Tensor, " n"]  # -1 = no label
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.tokens.numel())

    def stacked(self, hooks: Sequence[str]) -> Float[Tensor, "layer n d"]:
        return torch.stack([self.acts[h] for h in hooks])


def residual_hooks(n_layers: int) -> list[str]:
    """The residual stream before block 0 and after every block: n_layers + 1 states, the
    layout of Hugging Face `hidden_states` (without the final norm on the last one)."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]


def state_names(n_layers: int) -> list[str]:
    """Short labels of the residual states: 'embed', '0', '1', ... (after block L)."""
    return ["embed"] + [str(i) for i in range(n_layers)]


def token_set(tokenizer, texts: Iterable[str], context_size: int = 128,
              max_tokens: int | None = None, task=None, bos_id: int | None = None,
              max_doc_tokens: int | None = None) -> TokenSet:
    """Tokenise documents (labelling their tokens with `task` if given) into BOS-led chunks.

    Stops once `max_tokens` tokens are collected; keeps at most `max_doc_tokens` tokens of each
    document; the document index counts the documents read.
    """
    if context_size < 2:
        raise InterpError(f"context_size must be >= 2, got {context_size}.")
    bos = bos_id if bos_id is not None else (
        tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id)
    if bos is None:
        raise DataError("The tokenizer has no BOS or EOS token to start chunks with.")
    out = TokenSet(classes=tuple(task.classes) if task is not None else ())
    body = context_size - 1
    for d, text in enumerate(texts):
        if max_tokens is not None and out.n_tokens >= max_tokens:
            break
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        if not ids:
            continue
        labels = task(text, enc["offset_mapping"]) if task is not None else [-1] * len(ids)
        if len(labels) != len(ids):
            raise InterpError(f"Task {task.name!r} returned {len(labels)} labels for "
                              f"{len(ids)} tokens.")
        if max_doc_tokens is not None:
            ids, labels = ids[:max_doc_tokens], labels[:max_doc_tokens]
        for a in range(0, len(ids), body):
            piece = ids[a:a + body]
            if max_tokens is not None:
                piece = piece[:max(0, max_tokens - out.n_tokens)]
            if not piece:
                break
            out.ids.append(torch.tensor([bos, *piece], dtype=torch.long))
            out.labels.append(torch.tensor([-1, *labels[a:a + len(piece)]], dtype=torch.long))
            out.doc.append(d)
    if not out.ids:
        raise DataError("No tokens: the documents are empty or max_tokens is 0.")
    return out


def corpus_token_set(model, source: str = "python-docs", context_size: int = 128,
                     max_tokens: int = 4096, task=None, max_docs: int | None = None,
                     shuffle_docs: bool = True, seed: int = 0, chunks_per_doc: int = 1
                     ) -> TokenSet:
    """`token_set` over a corpus (`interp.data.CorpusSpec` source, or the task's own texts).

    Documents are shuffled by `seed` (the built-in corpora are ordered by name, so the first
    documents are alike) and each is cut to at most `chunks_per_doc` chunks, so that many
    documents are seen and a split by document has enough of them on each side.
    """
    from interp.data import CorpusSpec, iter_documents

    if task is not None and task.documents is not None:
        docs: Iterable[str] = task.documents
    else:
        docs = iter_documents(CorpusSpec(source=source, max_docs=max_docs,
                                         shuffle_docs=shuffle_docs, seed=seed))
    per_doc = chunks_per_doc * (context_size - 1)
    # tokenising a whole stdlib module to keep 500 tokens is wasted work: cut characters first
    # (no tokenizer packs more than 16 characters per token on this text)
    docs = (text[: per_doc * 16] for text in docs)
    return token_set(model.tokenizer, itertools.islice(docs, max_docs), context_size,
                     max_tokens=max_tokens, task=task, bos_id=model.bos_token_id,
                     max_doc_tokens=per_doc)


def collect(model, tokens: TokenSet, hooks: Sequence[str], batch_size: int = 8,
            dtype: torch.dtype = torch.float32, progress: bool = False) -> Activations:
    """Run the model over every chunk and keep the activations of `hooks` at non-BOS tokens."""
    from tqdm.auto import tqdm

    hooks = model.validate_hooks(list(hooks))
    stop = model.stop_layer_for(hooks)
    pad = model.tokenizer.pad_token_id
    pad = pad if pad is not None else 0
    parts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    meta: dict[str, list[Tensor]] = {"tokens": [], "next": [], "doc": [], "labels": []}
    order = sorted(range(len(tokens.ids)), key=lambda i: -len(tokens.ids[i]))  # less padding
    for b in tqdm(range(0, len(order), batch_size), desc="activations", disable=not progress):
        idx = order[b:b + batch_size]
        width = max(len(tokens.ids[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, :len(tokens.ids[i])] = tokens.ids[i]
            mask[r, :len(tokens.ids[i])] = 1
        _, cache = model.run_with_cache(ids.to(model.device), hooks=hooks, stop_at_layer=stop,
                                        attention_mask=mask.to(model.device))
        keep = mask.bool().clone()
        keep[:, 0] = False
        nxt = torch.full_like(ids, -1)
        nxt[:, :-1] = torch.where(mask[:, 1:].bool(), ids[:, 1:], -1)
        for h in hooks:
            parts[h].append(cache[h][keep.to(cache[h].device)].to("cpu", dtype))
        meta["tokens"].append(ids[keep])
        meta["next"].append(nxt[keep])
        lab = torch.full_like(ids, -1)
        for r, i in enumerate(idx):
            lab[r, :len(tokens.labels[i])] = tokens.labels[i]
        meta["labels"].append(lab[keep])
        meta["doc"].append(torch.tensor([tokens.doc[i] for i in idx])[:, None].expand_as(ids)[keep])
    acts = {h: torch.cat(v) for h, v in parts.items()}
    m = {k: torch.cat(v) for k, v in meta.items()}
    return Activations(acts=acts, tokens=m["tokens"], next_tokens=m["next"], doc=m["doc"],
                       labels=m["labels"], classes=tokens.classes)


def from_store(store, hooks: Sequence[str] | None = None) -> Activations:
    """Rows of an activation store (`interp.store.ActivationStore`) as `Activations`.

    A store packs documents into windows and does not record where one ends, so the window a row
    came from stands in for its document (splits are then by window: neighbouring windows may
    share a document). Next tokens come from the stored windows (-1 at a window's last position).
    """
    hooks = list(hooks or store.hooks)
    ctx = store.context_size
    parts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    meta: dict[str, list[Tensor]] = {"tokens": [], "next": [], "doc": []}
    for i in range(store.n_shards):
        shard = store.shard(i)
        pos = shard["positions"].long()
        win, at = pos // ctx, pos % ctx
        toks = shard["tokens"].long()
        nxt = torch.full_like(at, -1)
        inside = at + 1 < ctx
        nxt[inside] = toks[win[inside], at[inside] + 1]
        meta["tokens"].append(toks[win, at])
        meta["next"].append(nxt)
        meta["doc"].append(win + store.manifest["shards"][i]["first_window"])
        for h in hooks:
            parts[h].append(shard[store._hook(h)].float())
    m = {k: torch.cat(v) for k, v in meta.items()}
    return Activations(acts={h: torch.cat(v) for h, v in parts.items()}, tokens=m["tokens"],
                       next_tokens=m["next"], doc=m["doc"],
                       labels=torch.full_like(m["tokens"], -1))
