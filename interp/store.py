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
This module holds the layout and the reader; the writers (capture, caching, streaming) are in
`interp.caching` and re-exported here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp.config import Config
from interp.data import CorpusSpec
from interp.errors import BadFormat, ConfigError, CorruptShard, InterpError, UnsafePath
from interp.io import mmap_safetensors, read_json, regular_file_size, sha256_file

log = logging.getLogger(__name__)

FORMAT = "interp-activation-store"
VERSION = 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHARD_NAME = re.compile(r"^shard-\d{5,}\.safetensors$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoreConfig(Config):
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
    device: str = "auto"  # where the model runs (interp.devices); not part of the store's identity
    model_dtype: str = "float32"  # the model's compute dtype (`dtype` is the stored one)

    def __post_init__(self):
        from interp.devices import check_device, check_dtype

        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "model_dtype", check_dtype(self.model_dtype))
        object.__setattr__(self, "hooks", tuple(self.hooks))
        if isinstance(self.corpus, dict):
            object.__setattr__(self, "corpus", CorpusSpec.from_dict(self.corpus))
        if not self.hooks:
            raise ConfigError("StoreConfig.hooks is empty: name at least one hook to cache.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} is not one of {sorted(DTYPES)}.")
        if self.batch_size < 1 or self.shard_windows < 1:
            raise ConfigError(f"batch_size ({self.batch_size}) and shard_windows "
                              f"({self.shard_windows}) must be >= 1.")
        if self.shard_windows % self.batch_size:
            raise ConfigError(f"shard_windows ({self.shard_windows}) must be a multiple of "
                              f"batch_size ({self.batch_size}).")
        if self.n_tokens < 1 or self.context_size < 2:
            raise ConfigError("n_tokens must be >= 1 and context_size >= 2.")

    @property
    def n_windows(self) -> int:
        return math.ceil(self.n_tokens / self.context_size)

    def identity(self) -> dict:
        """What makes a store the same store: every setting but where the model ran (a store
        begun on a GPU may be finished on a CPU)."""
        d = self.to_dict()
        d.pop("device")
        return d


# --------------------------------------------------------------------------- reading
def read_manifest(path: str | Path) -> dict:
    """Read and check a store's manifest.json: its format marker, the types of the fields the
    reader uses, sums that agree, and shard names that stay inside the store. Any fault is a
    `CorruptFile` / `BadFormat` / `UnsafePath` naming the file."""
    path = Path(path)
    m = read_json(path, expect=dict)
    if m.get("format") != FORMAT:
        raise BadFormat(f"{path} is not an interp activation-store manifest (format="
                        f"{m.get('format')!r}, expected {FORMAT!r}).")
    if m.get("version") != VERSION:
        raise BadFormat(f"{path} is an activation store of version {m.get('version')!r}; this "
                        f"interp reads version {VERSION}: rebuild it with `interp cache`.")
    fix = "restore it, or delete the store and re-run the cache command."

    def bad(what: str) -> BadFormat:
        return BadFormat(f"{path}: {what}; {fix}")

    def count(d: dict, key: str, where: str, low: int = 0) -> int:
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise bad(f"{where}{key!r} is {v!r}, not an integer >= {low}")
        return v

    for key in ("n_windows", "n_rows", "n_tokens_seen"):
        count(m, key, "")
    count(m, "context_size", "", 2)
    if not isinstance(m.get("dtype"), str) or m["dtype"] not in DTYPES:
        raise bad(f"'dtype' is {m.get('dtype')!r}, not one of {sorted(DTYPES)}")
    if not isinstance(m.get("config"), dict) or not isinstance(m.get("complete"), bool):
        raise bad("'config' must be an object and 'complete' true or false")
    hooks = m.get("hooks")
    if not isinstance(hooks, dict) or not all(isinstance(v, dict) for v in hooks.values()):
        raise bad("'hooks' must map each hook name to {\"d\": width}")
    for h, v in hooks.items():
        count(v, "d", f"hook {h!r}: ", 1)
    shards = m.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise bad("'shards' must be a list of objects")
    if shards and not hooks:
        raise bad("it lists shards but no hooks")
    first = 0
    for i, s in enumerate(shards):
        name = s.get("file")
        if not isinstance(name, str) or not SHARD_NAME.match(name):
            raise UnsafePath(f"{path}: shard {i} is named {name!r}, not a plain file name, so it "
                             "may point outside the store; shard names are "
                             "shard-NNNNN.safetensors, never paths. The manifest was modified: "
                             f"{fix}")
        if not isinstance(s.get("sha256"), str) or not _SHA256.match(s["sha256"]):
            raise bad(f"shard {name}: 'sha256' is not a sha256 hex digest")
        windows, rows = count(s, "windows", f"shard {name}: "), count(s, "rows", f"shard {name}: ")
        if count(s, "first_window", f"shard {name}: ") != first:
            raise bad(f"shard {name} starts at window {s['first_window']}, expected {first}")
        if rows > windows * m["context_size"]:
            raise bad(f"shard {name} claims {rows} rows from {windows} windows")
        first += windows
    if first != m["n_windows"] or sum(s["rows"] for s in shards) != m["n_rows"]:
        raise bad("the shards' windows or rows do not add up to n_windows / n_rows")
    return m


class ActivationStore:
    """Read a store: memory-mapped shards, checksums, shuffled batches, a held-out split."""

    def __init__(self, path: str | Path, verify: bool = True):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise CorruptShard(f"{mpath} not found: {self.path} is not an activation store "
                               "(make one with `interp cache`).")
        self.manifest = read_manifest(mpath)
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

    def summary(self) -> dict:
        """A few numbers that describe the store (rows, tokens, per-hook norms of shard 0)."""
        out = {"rows": len(self), "windows": self.manifest["n_windows"],
               "tokens_seen": self.manifest["n_tokens_seen"], "shards": self.n_shards,
               "hooks": {}}
        first = self.shard(0)
        for h in self.hooks:
            norms = first[h].float().norm(dim=-1)
            out["hooks"][h] = {"d": self.d(h), "mean_norm": round(float(norms.mean()), 4),
                               "median_norm": round(float(norms.median()), 4),
                               "max_norm": round(float(norms.max()), 4)}
        return out

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
        """Shard `i` as memory-mapped tensors (its sha256 checked on first use, its tensors'
        shapes checked against the manifest on every open)."""
        info = self.manifest["shards"][i]
        path = self.path / info["file"]
        if not path.exists():
            raise CorruptShard(f"Shard {path} is missing; re-run the cache command to rebuild "
                               "the store, or restore the file.")
        regular_file_size(path, "Shard", CorruptShard)
        if self.verify and i not in self._verified:
            if sha256_file(path) != info["sha256"]:
                raise CorruptShard(f"Shard {path} fails its sha256 check (corrupt or modified); "
                                   "delete it and the store's manifest.json and re-run the cache "
                                   "command.")
            self._verified.add(i)
        tensors = mmap_safetensors(path)
        rows, windows = info["rows"], info["windows"]
        expected = {"tokens": (windows, self.context_size), "positions": (rows,),
                    **{h: (rows, v["d"]) for h, v in self.manifest["hooks"].items()}}
        for name, shape in expected.items():
            got = tuple(tensors[name].shape) if name in tensors else None
            if got != shape:
                raise CorruptShard(f"Shard {path}: tensor {name!r} has shape "
                                   f"{list(got) if got is not None else 'none (missing)'}, but "
                                   f"the manifest implies {list(shape)}; delete the store and "
                                   "re-run the cache command.")
        return tensors

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
                dtype: torch.dtype | None = torch.float32, part: tuple[int, int] | None = None
                ) -> Iterator[Tensor | dict[str, Tensor]]:
        """Batches of rows: a tensor for one hook, a dict for several (same rows in each).

        Shuffling: per epoch the shard order is permuted, shards are gathered into a buffer of
        about `buffer_rows` rows, and the buffer is permuted, all from `seed` and the epoch.
        Rows left over from one buffer carry into the next; the last partial batch of an epoch is
        dropped. `start_batch` resumes a reader at that global batch index without reading the
        data it skips. `epochs=None` cycles forever.

        The buffer holds references (shard, row), not rows: a batch reads only its own rows from
        the memory-mapped shards. `part=(rank, world)` (data-parallel training) yields only rows
        [rank * b / world, (rank + 1) * b / world) of each global batch, so each rank reads and
        converts only its share, and checks the checksums of only every world-th shard.
        """
        names = [self._hook(hooks)] if hooks is None or isinstance(hooks, str) else [
            self._hook(h) for h in hooks]
        single = hooks is None or isinstance(hooks, str)
        rank, world = part or (0, 1)
        if not 0 <= rank < world:
            raise InterpError(f"part={part!r}: need 0 <= rank < world.")
        lo, hi = rank * batch_size // world, (rank + 1) * batch_size // world
        if world > 1:  # every shard is checked by one rank
            self._verified.update(i for i in range(self.n_shards) if i % world != rank)
        per_shard = max(1, math.ceil(buffer_rows / max(1, len(self) // max(1, self.n_shards))))
        rows = [self._split_rows(i, split, holdout_every) for i in range(self.n_shards)]
        per_epoch = sum(r.numel() for r in rows) // batch_size
        if per_epoch == 0:
            raise InterpError(f"The {split!r} split has {sum(r.numel() for r in rows)} rows, "
                              f"fewer than one batch of {batch_size}; use a smaller batch or a "
                              "larger store.")
        epoch = start_batch // per_epoch
        skip = start_batch - epoch * per_epoch
        while epochs is None or epoch < epochs:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(self.n_shards, generator=gen).tolist() if shuffle else list(
                range(self.n_shards))
            carry = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
            for c in range(0, len(order), per_shard):
                chunk = order[c: c + per_shard]
                sid = torch.cat([carry[0], *(torch.full((rows[i].numel(),), i, dtype=torch.long)
                                             for i in chunk)])
                row = torch.cat([carry[1], *(rows[i] for i in chunk)])
                n_batches = sid.numel() // batch_size
                perm = None
                if skip >= n_batches:  # resume: skip this buffer without reading it
                    skip -= n_batches
                else:
                    perm = self._perm(sid.numel(), shuffle, seed, epoch, c)
                    shards = {i: self.shard(i) for i in sid.unique().tolist()}
                    for b in range(skip, n_batches):
                        idx = perm[b * batch_size:(b + 1) * batch_size][lo:hi]
                        out = self._read(shards, names, sid[idx], row[idx], dtype)
                        yield out[names[0]] if single else out
                    skip = 0
                if c + per_shard < len(order):  # the leftover rows carry into the next buffer
                    if perm is None:
                        perm = self._perm(sid.numel(), shuffle, seed, epoch, c)
                    rest = perm[n_batches * batch_size:]
                    carry = (sid[rest], row[rest])
            epoch += 1

    def _split_rows(self, i: int, split: str, holdout_every: int) -> Tensor:
        """The rows of shard `i` in `split`, in order (int64)."""
        m = self._split_mask(i, split, holdout_every)
        if m is None:
            return torch.arange(self.manifest["shards"][i]["rows"])
        return m.nonzero().squeeze(1)

    @staticmethod
    def _read(shards: dict[int, dict[str, Tensor]], names: list[str], sid: Tensor, row: Tensor,
              dtype: torch.dtype | None) -> dict[str, Tensor]:
        """Rows `row[j]` of shards `sid[j]`, in order, for each hook."""
        ids = sid.unique().tolist()
        out = {}
        for h in names:
            if len(ids) == 1:
                v = shards[ids[0]][h][row]
            else:
                first = shards[ids[0]][h]
                v = first.new_empty((sid.numel(), first.shape[1]))
                for i in ids:
                    sel = (sid == i).nonzero().squeeze(1)
                    v[sel] = shards[i][h][row[sel]]
            out[h] = v.to(dtype) if dtype else v
        return out

    @staticmethod
    def _perm(n: int, shuffle, seed, epoch, chunk) -> Tensor:
        """The permutation of one buffer of n rows: a function of (seed, epoch, chunk) alone."""
        if not shuffle:
            return torch.arange(n)
        key = hashlib.sha256(f"{seed}/{epoch}/{chunk}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(key[:7], "little"))
        return torch.randperm(n, generator=g)
