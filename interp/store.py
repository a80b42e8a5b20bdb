"""The activation store: activations of several hooks from one forward pass, sharded on disk.

Layout of a store directory::

    manifest.json               model, hooks, d, dtype, corpus spec, filters, per-shard sha256
    shard-00000.safetensors     {hook name: [rows, d], "tokens": [windows, ctx] int32,
                                 "positions": [rows] int32 (window * ctx + position in window)}

Every stored vector traces back to its token and context through `tokens`/`positions`. Shards are
written atomically and the manifest after each shard, so a killed job restarted with the same
command continues where it stopped and ends with the same bytes as an uninterrupted run.
Reads are memory-mapped and checked against their sha256; batches are shuffled by a buffer with
its own seed, and a held-out split (windows 0, k, 2k, ... for k = `holdout_every`) never enters training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp.data import CorpusSpec, corpus_fingerprint, iter_token_batches
from interp.errors import ConfigError, check_config_keys, CorruptShard, InterpError, StoreMismatch
from interp.io import atomic_write_bytes, atomic_write_json, mmap_safetensors, read_json, sha256_file

log = logging.getLogger(__name__)

FORMAT = "interp-activation-store"
VERSION = 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class StoreConfig:
    """What to cache and how. Serialised into the manifest; a resume must match it exactly."""

    model: str = "SmolLM2-135M-Instruct"
    hooks: tuple[str, ...] = ("blocks.15.hook_resid_post",)
    n_tokens: int = 65_536  # tokens run through the model (rounded up to whole windows)
    context_size: int = 128
    batch_size: int = 16  # windows per forward pass
    shard_windows: int = 128  # windows per shard; a multiple of batch_size
    dtype: str = "float32"  # float32 | bfloat16 | float16
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    prepend_bos: bool = True
    drop_bos: bool = True  # drop position 0 of every window (the attention sink)
    outlier_ratio: float | None = 10.0  # drop vectors with norm > ratio * median norm
    backend: str = "torch"

    def __post_init__(self):
        object.__setattr__(self, "hooks", tuple(self.hooks))
        if isinstance(self.corpus, dict):
            object.__setattr__(self, "corpus", CorpusSpec.from_dict(self.corpus))
        if not self.hooks:
            raise ConfigError("StoreConfig.hooks is empty: name at least one hook to cache.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not one of {sorted(DTYPES)}.")
        if self.shard_windows % self.batch_size:
            raise ConfigError(f"shard_windows ({self.shard_windows}) must be a multiple of "
                              f"batch_size ({self.batch_size}).")
        if self.n_tokens < 1 or self.context_size < 2:
            raise ConfigError("n_tokens must be >= 1 and context_size >= 2.")

    @property
    def n_windows(self) -> int:
        return math.ceil(self.n_tokens / self.context_size)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hooks"] = list(self.hooks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StoreConfig:
        check_config_keys(cls, d)
        return cls(**d)


# --------------------------------------------------------------------------- capture
def _flat(x: Tensor) -> Tensor:
    """[batch, pos, ...] -> [batch * pos, d] (head dimensions are flattened into d)."""
    return x.reshape(x.shape[0] * x.shape[1], -1)


def capture_batches(model, config: StoreConfig, skip_windows: int = 0,
                    thresholds: dict[str, float] | None = None,
                    ) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor], dict[str, float]]]:
    """Run the model over the corpus; yield (tokens, kept positions, {hook: rows}, thresholds).

    One forward pass per batch caches every hook and stops after the deepest one. Rows are
    filtered (BOS position, high-norm outliers; a row is dropped if any hook's vector is an
    outlier, so all hooks keep the same rows). Outlier thresholds come from the first batch
    unless given (a resumed run passes the original ones).
    """
    hooks = model.validate_hooks(list(config.hooks))
    stop = model.stop_layer_for(hooks)
    out_dtype = DTYPES[config.dtype]
    ctx = config.context_size
    for ids in iter_token_batches(config.corpus, model.tokenizer, ctx, config.batch_size,
                                  n_tokens=config.n_tokens, prepend_bos=config.prepend_bos,
                                  skip_windows=skip_windows):
        _, cache = model.run_with_cache(ids, hooks=hooks, stop_at_layer=stop)
        acts = {h: _flat(cache[h]) for h in hooks}
        keep = torch.ones(ids.numel(), dtype=torch.bool)
        if config.drop_bos:
            keep.view(ids.shape)[:, 0] = False
        if config.outlier_ratio is not None:
            norms = {h: a.float().norm(dim=-1) for h, a in acts.items()}
            if thresholds is None:
                thresholds = {h: float(config.outlier_ratio * n[keep].median()) for h, n in norms.items()}
            for h, n in norms.items():
                keep &= n <= thresholds[h]
        positions = keep.nonzero().squeeze(1)
        rows = {h: a[positions].to(out_dtype) for h, a in acts.items()}
        yield ids, positions, rows, thresholds or {}


def check_store(out_dir: str | Path, config: StoreConfig) -> dict | None:
    """The manifest of an existing store at `out_dir` made with `config` (None if there is none).

    Raises `StoreMismatch` if the store there was made with other settings, and `CorruptShard`
    if a shard its manifest lists is missing.
    """
    out = Path(out_dir)
    if not (out / "manifest.json").is_file():
        return None
    manifest = read_json(out / "manifest.json")
    if manifest.get("config") != config.to_dict():
        old, new = manifest.get("config", {}), config.to_dict()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise StoreMismatch(f"{out} already holds a store made with other settings "
                            f"(differing: {diff}). Use another --out directory, or delete it.")
    for s in manifest["shards"]:  # shards are atomic, but a user may have deleted one
        if not (out / s["file"]).is_file():
            raise CorruptShard(f"Shard {out / s['file']} listed in the manifest is missing; "
                               "delete the store directory and run again.")
    return manifest


def cache_activations(out_dir: str | Path, config: StoreConfig = StoreConfig(), model=None,
                      progress: bool = True) -> ActivationStore:
    """Cache `config.hooks` over the corpus into `out_dir`, resuming a partial store there.

    Restarting with the same config continues after the last complete shard; a different config
    on an existing store raises `StoreMismatch`. Returns the finished store.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    manifest_path = out / "manifest.json"
    manifest = check_store(out, config)
    if manifest is not None and manifest["complete"]:
        return ActivationStore(out)
    for tmp in [*out.glob(".shard-*.tmp"), *out.glob(".manifest.json.*.tmp")]:
        tmp.unlink(missing_ok=True)  # left by a job killed mid-write

    if model is None:
        from interp.models.loading import load_model

        model = load_model(config.model, backend=config.backend)
    hooks = model.validate_hooks(list(config.hooks))
    if manifest is None:
        manifest = {
            "format": FORMAT, "version": VERSION, "config": config.to_dict(),
            "model": model.name, "model_facts": model.cfg.to_dict(),
            "hooks": {}, "dtype": config.dtype, "context_size": config.context_size,
            "corpus": dataclasses.asdict(config.corpus),
            "corpus_fingerprint": corpus_fingerprint(
                config.corpus, model.tokenizer.name_or_path, config.context_size,
                config.prepend_bos),
            "filters": {"drop_bos": config.drop_bos, "outlier_ratio": config.outlier_ratio,
                        "outlier_norm_threshold": None},
            "shards": [], "n_windows": 0, "n_rows": 0, "n_tokens_seen": 0, "complete": False,
        }
    done = sum(s["windows"] for s in manifest["shards"])
    thresholds = manifest["filters"]["outlier_norm_threshold"]
    bar = tqdm(total=config.n_windows * config.context_size, initial=done * config.context_size,
               unit="tok", unit_scale=True, desc="caching", disable=not progress)
    pending: list[tuple[Tensor, Tensor, dict[str, Tensor]]] = []

    def flush():
        nonlocal pending
        if not pending:
            return
        index = len(manifest["shards"])
        tokens = torch.cat([p[0] for p in pending]).to(torch.int32)
        offsets, pos = 0, []
        for ids, positions, _ in pending:
            pos.append(positions + offsets)
            offsets += ids.numel()
        tensors = {h: torch.cat([p[2][h] for p in pending]) for h in hooks}
        tensors["tokens"] = tokens
        tensors["positions"] = torch.cat(pos).to(torch.int32)
        from safetensors.torch import save

        blob = save({k: v.contiguous() for k, v in tensors.items()})
        name = f"shard-{index:05d}.safetensors"
        atomic_write_bytes(out / name, blob)
        rows = int(tensors["positions"].numel())
        manifest["shards"].append({"file": name, "sha256": hashlib.sha256(blob).hexdigest(),
                                   "windows": int(tokens.shape[0]), "rows": rows,
                                   "first_window": manifest["n_windows"]})
        manifest["n_windows"] += int(tokens.shape[0])
        manifest["n_tokens_seen"] += int(tokens.numel())
        manifest["n_rows"] += rows
        for h in hooks:
            manifest["hooks"][h] = {"d": int(tensors[h].shape[1])}
        atomic_write_json(manifest_path, manifest)
        pending = []

    out.mkdir(parents=True, exist_ok=True)
    try:
        for ids, positions, rows, th in capture_batches(model, config, done, thresholds):
            if manifest["filters"]["outlier_norm_threshold"] is None and th:
                manifest["filters"]["outlier_norm_threshold"] = th
            pending.append((ids, positions, rows))
            bar.update(ids.numel())
            if sum(p[0].shape[0] for p in pending) >= config.shard_windows:
                flush()
        flush()
    finally:
        bar.close()
    if manifest["n_windows"] == 0:
        raise InterpError(f"The corpus gave no windows of {config.context_size} tokens.")
    manifest["complete"] = True
    atomic_write_json(manifest_path, manifest)
    return ActivationStore(out)


# --------------------------------------------------------------------------- reading
class ActivationStore:
    """Read a store: memory-mapped shards, checksums, shuffled batches, a held-out split."""

    def __init__(self, path: str | Path, verify: bool = True):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise CorruptShard(f"{mpath} not found: {self.path} is not an activation store "
                               "(make one with `interp cache`).")
        self.manifest = read_json(mpath)
        if self.manifest.get("format") != FORMAT:
            raise CorruptShard(f"{mpath} is not an interp activation-store manifest.")
        if not self.manifest.get("complete"):
            log.warning("Store %s is incomplete (%d windows so far); re-run the same cache command "
                        "to finish it.", self.path, self.manifest["n_windows"])
        self.verify = verify
        self._verified: set[int] = set()

    # facts
    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    def d(self, hook: str | None = None) -> int:
        return self.manifest["hooks"][self._hook(hook)]["d"]

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    @property
    def context_size(self) -> int:
        return self.manifest["context_size"]

    def __len__(self) -> int:
        return self.manifest["n_rows"]

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, hooks={self.hooks}, rows={len(self)}, "
                f"dtype={self.manifest['dtype']})")

    def _hook(self, hook: str | None) -> str:
        if hook is None:
            if len(self.hooks) != 1:
                raise InterpError(f"This store holds several hooks {self.hooks}; name one.")
            return self.hooks[0]
        if hook not in self.manifest["hooks"]:
            from interp.errors import HookNotFound, unknown_name_message

            raise HookNotFound(unknown_name_message("hook in this store", hook, self.hooks))
        return hook

    # shards
    def shard(self, i: int) -> dict[str, Tensor]:
        """Shard `i` as memory-mapped tensors (its sha256 checked on first use)."""
        info = self.manifest["shards"][i]
        path = self.path / info["file"]
        if not path.is_file():
            raise CorruptShard(f"Shard {path} is missing; re-run the cache command to rebuild "
                               "the store, or restore the file.")
        if self.verify and i not in self._verified:
            if sha256_file(path) != info["sha256"]:
                raise CorruptShard(f"Shard {path} fails its sha256 check (corrupt or modified); "
                                   "delete it and the store's manifest.json and re-run the cache "
                                   "command.")
            self._verified.add(i)
        return mmap_safetensors(path)

    def tokens(self) -> Tensor:
        """All token windows, [n_windows, context_size] int32."""
        return torch.cat([self.shard(i)["tokens"] for i in range(self.n_shards)])

    def trace(self, shard: int, row: int) -> tuple[int, int, Tensor]:
        """(global window index, position in the window, that window's token ids) of a row."""
        s = self.shard(shard)
        flat = int(s["positions"][row])
        ctx = self.context_size
        first = self.manifest["shards"][shard]["first_window"]
        return first + flat // ctx, flat % ctx, s["tokens"][flat // ctx]

    def _split_mask(self, i: int, split: str, holdout_every: int) -> Tensor | None:
        if split == "all":
            return None
        if split not in ("train", "eval"):
            raise InterpError(f"split must be 'train', 'eval' or 'all', not {split!r}.")
        first = self.manifest["shards"][i]["first_window"]
        window = self.shard(i)["positions"].long() // self.context_size + first
        held = (window % holdout_every) == 0
        return held if split == "eval" else ~held

    def activations(self, hook: str | None = None, split: str = "all", holdout_every: int = 50,
                    dtype: torch.dtype | None = torch.float32) -> Float[Tensor, "rows d"]:
        """Every row of `hook` in `split`, loaded into memory (for small stores and evaluation)."""
        hook = self._hook(hook)
        parts = []
        for i in range(self.n_shards):
            x = self.shard(i)[hook]
            m = self._split_mask(i, split, holdout_every)
            parts.append(x[m] if m is not None else x.clone())
        out = torch.cat(parts)
        return out.to(dtype) if dtype is not None else out

    def batches(self, hooks: str | Sequence[str] | None = None, batch_size: int = 4096, *,
                shuffle: bool = True, seed: int = 0, split: str = "train", holdout_every: int = 50,
                buffer_rows: int = 1 << 18, epochs: int | None = 1, start_batch: int = 0,
                dtype: torch.dtype | None = torch.float32) -> Iterator[Tensor | dict[str, Tensor]]:
        """Batches of rows: a tensor for one hook, a dict for several (same rows in each).

        Shuffling: per epoch the shard order is permuted, shards are gathered into a buffer of
        about `buffer_rows` rows, and the buffer is permuted, all from `seed` and the epoch.
        Rows left over from one buffer carry into the next; the last partial batch of an epoch is
        dropped. `start_batch` resumes a reader at that global batch index without reading the
        data it skips. `epochs=None` cycles forever.
        """
        names = [self._hook(hooks)] if hooks is None or isinstance(hooks, str) else [
            self._hook(h) for h in hooks]
        single = hooks is None or isinstance(hooks, str)
        per_shard = max(1, math.ceil(buffer_rows / max(1, len(self) // max(1, self.n_shards))))
        counts = [int(m.sum()) if (m := self._split_mask(i, split, holdout_every)) is not None
                  else self.manifest["shards"][i]["rows"] for i in range(self.n_shards)]
        per_epoch = sum(counts) // batch_size
        if per_epoch == 0:
            raise InterpError(f"The {split!r} split has {sum(counts)} rows, fewer than one batch "
                              f"of {batch_size}; use a smaller batch or a larger store.")
        epoch = start_batch // per_epoch
        skip = start_batch - epoch * per_epoch
        while epochs is None or epoch < epochs:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(self.n_shards, generator=gen).tolist() if shuffle else list(
                range(self.n_shards))
            carry: dict[str, Tensor] | None = None
            carry_n = 0
            for c in range(0, len(order), per_shard):
                chunk = order[c: c + per_shard]
                n_chunk = carry_n + sum(counts[i] for i in chunk)
                n_batches = n_chunk // batch_size
                if skip >= n_batches:  # resume: skip this buffer without reading it ...
                    skip -= n_batches  # ... unless its leftover rows are needed next
                    left = n_chunk - n_batches * batch_size
                    if left and c + per_shard < len(order):
                        buf = self._gather(chunk, names, split, holdout_every, carry)
                        perm = self._perm(buf, shuffle, seed, epoch, c)
                        carry = {h: v[perm[n_batches * batch_size:]] for h, v in buf.items()}
                    else:
                        carry = None
                    carry_n = left
                    continue
                buf = self._gather(chunk, names, split, holdout_every, carry)
                perm = self._perm(buf, shuffle, seed, epoch, c)
                for b in range(skip, n_batches):
                    idx = perm[b * batch_size:(b + 1) * batch_size]
                    out = {h: v[idx].to(dtype) if dtype else v[idx] for h, v in buf.items()}
                    yield out[names[0]] if single else out
                skip = 0
                carry = {h: v[perm[n_batches * batch_size:]] for h, v in buf.items()}
                carry_n = n_chunk - n_batches * batch_size
            epoch += 1

    def _gather(self, chunk, names, split, holdout_every, carry) -> dict[str, Tensor]:
        parts: dict[str, list[Tensor]] = {h: ([carry[h]] if carry else []) for h in names}
        for i in chunk:
            s = self.shard(i)
            m = self._split_mask(i, split, holdout_every)
            for h in names:
                parts[h].append(s[h][m] if m is not None else s[h])
        return {h: torch.cat(p) for h, p in parts.items()}

    @staticmethod
    def _perm(buf, shuffle, seed, epoch, chunk) -> Tensor:
        """The permutation of one buffer: a function of (seed, epoch, chunk) alone."""
        n = next(iter(buf.values())).shape[0]
        if not shuffle:
            return torch.arange(n)
        key = hashlib.sha256(f"{seed}/{epoch}/{chunk}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(key[:7], "little"))
        return torch.randperm(n, generator=g)


def stream_activations(model, config: StoreConfig, batch_size: int = 4096, *, seed: int = 0,
                       buffer_rows: int = 1 << 16) -> Iterator[dict[str, Tensor]]:
    """Activations straight from the model without touching disk, shuffled in a buffer.

    Yields dicts {hook: [batch_size, d]} (float32) until the corpus or `config.n_tokens` runs out.
    """
    gen = torch.Generator().manual_seed(seed)
    buf: dict[str, list[Tensor]] = {h: [] for h in config.hooks}
    n = 0
    for _, _, rows, _ in capture_batches(model, config):
        for h, r in rows.items():
            buf[h].append(r.float())
        n += next(iter(rows.values())).shape[0]
        if n >= buffer_rows:
            yield from _drain(buf, gen, batch_size, keep_partial=True)
            n = sum(x.shape[0] for x in buf[config.hooks[0]])
    yield from _drain(buf, gen, batch_size, keep_partial=False)


def _drain(buf: dict[str, list[Tensor]], gen, batch_size: int, keep_partial: bool):
    full = {h: torch.cat(v) for h, v in buf.items() if v}
    if not full:
        return
    n = next(iter(full.values())).shape[0]
    perm = torch.randperm(n, generator=gen)
    n_batches = n // batch_size
    for b in range(n_batches):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        yield {h: v[idx] for h, v in full.items()}
    rest = perm[n_batches * batch_size:]
    for h in buf:
        buf[h] = [full[h][rest]] if keep_partial and rest.numel() else []
