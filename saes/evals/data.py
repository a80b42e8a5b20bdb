"""The labelled activations the LM-based suites share, built once per (model, hook) and cached.

Windows of `context_size` tokens (BOS first) are cut from documents of the built-in offline
corpora (the Python documentation and the standard library's source, so nothing downloads),
at most `max_chunks_per_doc` per document, half from each source. For every window we keep:

- the token ids, its document (splits into train and test are by document) and its source;
- the activation at the dictionary's hook for every position ([W, T, d], float32);
- per-token labels of the probing tasks in `probes.labels` (is_digit, in_string, word_class,
  sentiment; -1 where a task does not label a token, and at BOS).

Those tasks belong to the `probes` package, which sits above `saes` in the import order, so
they are looked up through one import string (`LABEL_TASKS`) when the data is built, the way the
CLI finds other packages' commands. `save` / `load` keep the data as safetensors + JSON so
several dictionaries on the same hook (five architectures, seeds, baselines) reuse one pass of
the model.
"""

from __future__ import annotations

import importlib
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError, DataError
from interp.io import atomic_write_json, read_json, save_safetensors_atomic

log = logging.getLogger(__name__)

#: where the token-labelling tasks live (module:attribute, a dict name -> Task)
LABEL_TASKS = "probes.labels:TASKS"
DATA_FORMAT = "interp-sae-eval-data"


@dataclass(frozen=True)
class EvalDataConfig(Config):
    """Which windows to take (recorded with the data; a mismatch rebuilds the cache)."""

    n_windows: int = 512
    context_size: int = 64
    sources: tuple[str, ...] = ("python-docs", "python-stdlib")
    max_chunks_per_doc: int = 4
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.n_windows < 2 * len(self.sources) or self.context_size < 4:
            raise ConfigError(f"Need n_windows >= {2 * len(self.sources)} and context_size >= 4, "
                              f"got {self.n_windows}, {self.context_size}.")
        if self.max_chunks_per_doc < 1 or self.batch_size < 1:
            raise ConfigError("max_chunks_per_doc and batch_size must be >= 1.")


@dataclass
class EvalData:
    """Windows, their activations at `hook` and per-token labels (see the module docstring)."""

    tokens: Int[Tensor, "W T"]
    doc: Int[Tensor, " W"]
    source: Int[Tensor, " W"]
    acts: Float[Tensor, "W T d"]
    labels: dict[str, Int[Tensor, "W T"]]
    classes: dict[str, tuple[str, ...]]
    hook: str
    model: str
    cfg: EvalDataConfig
    task_corpus: dict[str, str] = field(default_factory=dict)

    @property
    def n_windows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def d(self) -> int:
        return int(self.acts.shape[-1])

    def rows(self, n: int | None = None) -> Float[Tensor, "n d"]:
        """Activation rows without BOS, window by window; `n` of them evenly spaced over all
        windows (so both sources are represented) when `n` is given."""
        x = self.acts[:, 1:].reshape(-1, self.d)
        if n is None or n >= x.shape[0]:
            return x
        return x[torch.linspace(0, x.shape[0] - 1, n).round().long()]

    def source_mask(self, name: str) -> Tensor:
        """Windows from source `name`."""
        if name not in self.cfg.sources:
            return torch.zeros(self.n_windows, dtype=torch.bool)
        return self.source == self.cfg.sources.index(name)

    def test_docs(self, frac: float = 0.3, seed: int = 0) -> Tensor:
        """Boolean [W]: the windows of a seeded random `frac` of the documents."""
        docs = torch.unique(self.doc)
        g = torch.Generator().manual_seed(seed)
        n = min(len(docs) - 1, max(1, round(frac * len(docs))))
        chosen = docs[torch.randperm(len(docs), generator=g)[:n]]
        return torch.isin(self.doc, chosen)

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tensors = {"tokens": self.tokens, "doc": self.doc, "source": self.source,
                   "acts": self.acts.contiguous()}
        tensors.update({f"label.{k}": v for k, v in self.labels.items()})
        save_safetensors_atomic(tensors, path / "data.safetensors")
        atomic_write_json(path / "data.json", {
            "format": DATA_FORMAT, "hook": self.hook, "model": self.model,
            "config": self.cfg.to_dict(), "classes": {k: list(v) for k, v in self.classes.items()},
            "task_corpus": self.task_corpus})
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvalData:
        from safetensors.torch import load_file

        path = Path(path)
        meta = read_json(path / "data.json")
        if meta.get("format") != DATA_FORMAT:
            raise DataError(f"{path} does not hold evaluation data "
                            f"(format {meta.get('format')!r}).")
        t = load_file(str(path / "data.safetensors"))
        labels = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("label.")}
        return cls(tokens=t["tokens"], doc=t["doc"], source=t["source"], acts=t["acts"],
                   labels=labels, classes={k: tuple(v) for k, v in meta["classes"].items()},
                   hook=meta["hook"], model=meta["model"],
                   cfg=EvalDataConfig.from_dict(meta["config"]),
                   task_corpus=dict(meta.get("task_corpus", {})))

    def matches(self, hook: str, model: str, cfg: EvalDataConfig) -> bool:
        return self.hook == hook and self.model == model and self.cfg == cfg


def label_tasks() -> dict:
    """The registered token-labelling tasks (resolved from `LABEL_TASKS`)."""
    module, _, attr = LABEL_TASKS.partition(":")
    return dict(getattr(importlib.import_module(module), attr))


def _chunks(tokenizer, texts, n: int, body: int, max_chunks: int, tasks: dict):
    """Up to `n` chunks of exactly `body` tokens: (ids, doc index, labels per task)."""
    out = []
    for d, text in enumerate(texts):
        if len(out) >= n:
            break
        text = text[: body * max_chunks * 16]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, spans = list(enc["input_ids"]), list(enc["offset_mapping"])
        if len(ids) < body:
            continue
        labels = {name: task(text, spans) for name, task in tasks.items()}
        for c in range(min(max_chunks, len(ids) // body)):
            if len(out) >= n:
                break
            sl = slice(c * body, (c + 1) * body)
            out.append((ids[sl], d, {k: v[sl] for k, v in labels.items()}))
    return out


@torch.no_grad()
def build_eval_data(model, hook: str, cfg: EvalDataConfig = EvalDataConfig(),
                    progress: bool = False) -> EvalData:
    """Tokenise, label and run the model over the windows of `cfg` (stopping after `hook`)."""
    from tqdm.auto import tqdm

    from interp.data import CorpusSpec, iter_documents

    hook = model.validate_hooks([hook])[0]
    tasks = label_tasks()
    body = cfg.context_size - 1
    per = [cfg.n_windows // len(cfg.sources)] * len(cfg.sources)
    per[-1] += cfg.n_windows - sum(per)
    bos = model.bos_token_id
    if bos is None:
        raise DataError("The tokenizer has no BOS or EOS token to start windows with.")
    ids, docs, srcs, labs = [], [], [], {k: [] for k in tasks}
    doc_base = 0
    for s, (source, n) in enumerate(zip(cfg.sources, per)):
        texts = iter_documents(CorpusSpec(source=source, shuffle_docs=True, seed=cfg.seed))
        chunks = _chunks(model.tokenizer, itertools.islice(texts, 20 * n), n, body,
                         cfg.max_chunks_per_doc, tasks)
        if len(chunks) < n:
            log.warning("Source %r gave %d windows of %d tokens, fewer than the %d asked for.",
                        source, len(chunks), cfg.context_size, n)
        for piece, d, lab in chunks:
            ids.append([bos, *piece])
            docs.append(doc_base + d)
            srcs.append(s)
            for k in tasks:
                labs[k].append([-1, *lab[k]])
        doc_base += 1 + max((d for _, d, _ in chunks), default=0)
    if not ids:
        raise DataError("The corpora gave no window; lower context_size.")
    tokens = torch.tensor(ids, dtype=torch.long)
    stop = model.stop_layer_for([hook])
    stop = None if stop is None else max(1, stop)
    acts = []
    for i in tqdm(range(0, len(tokens), cfg.batch_size), desc="eval activations",
                  disable=not progress):
        _, cache = model.run_with_cache(tokens[i:i + cfg.batch_size].to(model.device),
                                        hooks=[hook], stop_at_layer=stop)
        a = cache[hook]
        acts.append(a.reshape(a.shape[0], a.shape[1], -1).float().cpu())
    return EvalData(tokens=tokens, doc=torch.tensor(docs), source=torch.tensor(srcs),
                    acts=torch.cat(acts), hook=hook, model=getattr(model, "name", ""),
                    labels={k: torch.tensor(v, dtype=torch.long) for k, v in labs.items()},
                    classes={k: tuple(t.classes) for k, t in tasks.items()}, cfg=cfg,
                    task_corpus={k: t.corpus for k, t in tasks.items()})


def eval_data(model, hook: str, cfg: EvalDataConfig = EvalDataConfig(), cache: str | Path | None = None,
              model_name: str | None = None, progress: bool = False) -> EvalData:
    """`build_eval_data`, read from / written to the directory `cache` when given. `model` is a
    HookedModel or a function returning one (called only when the data must be built);
    `model_name` identifies it in the cache (default: `model.name`)."""
    name = model_name if model_name is not None else getattr(model, "name", "")
    if cache is not None and (Path(cache) / "data.json").is_file():
        data = EvalData.load(cache)
        if data.matches(hook, name, cfg):
            return data
        log.info("Evaluation data in %s is for other settings; rebuilding it.", cache)
    m = model() if callable(model) and not hasattr(model, "run_with_cache") else model
    data = build_eval_data(m, hook, cfg, progress=progress)
    data.model = name or data.model
    if cache is not None:
        data.save(cache)
    return data
