"""Writing activation stores: capture several hooks in one forward pass, cache them to disk
(resumably, shard by shard), or stream them without touching disk.

The layout and the reader are in `interp.store`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from interp.data import corpus_fingerprint, iter_token_batches
from interp.errors import CorruptShard, InterpError, StoreMismatch
from interp.io import atomic_write_bytes, atomic_write_json
from interp.store import (DTYPES, FORMAT, VERSION, ActivationStore, StoreConfig,
                          read_manifest)


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
    unless given (a resumed run passes the original ones). The rows and kept positions stay on
    the model's device (a writer moves them to the host; a streaming trainer on that device
    takes them as they are); the token ids are on the host.
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
        keep = torch.ones(ids.numel(), dtype=torch.bool, device=acts[hooks[0]].device)
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
    manifest = read_manifest(out / "manifest.json")
    old = manifest.get("config", {})
    try:  # a manifest written before newer settings existed reads with their defaults
        old = StoreConfig.from_dict(old).identity()
    except InterpError:
        old = old if isinstance(old, dict) else {}
    new = config.identity()
    if old != new:
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

        model = load_model(config.model, backend=config.backend, device=config.device,
                           dtype=config.model_dtype)
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
            pos.append(positions.cpu() + offsets)
            offsets += ids.numel()
        tensors = {h: torch.cat([p[2][h].cpu() for p in pending]) for h in hooks}
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


def cache_run(config: StoreConfig, name: str | None = None, out: str | Path | None = None,
              workspace: str | Path | None = None, model=None, progress: bool = True):
    """Cache activations as a workspace run (`runs/activations/<name>`, or `out`): the store,
    and a run.json whose metrics are the store's summary and the throughput. Resumable like
    `cache_activations`; a store made with other settings is refused before run.json is
    touched. A job done in one go also records its seconds and tokens/s. Returns the run."""
    import time

    from interp.workspace import run_context, run_dir

    name = name or (Path(out).name if out else "cache-" + config.hooks[0].replace(".", "-"))
    fresh = check_store(out or run_dir("activations", name, workspace), config) is None
    t0 = time.perf_counter()
    with run_context("activations", name, config.to_dict(), root=workspace, path=out) as run:
        store = cache_activations(run.path, config, model=model, progress=progress)
        metrics = store.summary()
        if fresh:  # the throughput of the whole job (a resumed job measured only its last leg)
            metrics["seconds"] = round(time.perf_counter() - t0, 1)
            metrics["tokens_per_s"] = round(store.manifest["n_tokens_seen"]
                                            / max(metrics["seconds"], 1e-3))
        run.finish(metrics=metrics, artefacts={"manifest": "manifest.json"})
    return run


def stream_activations(model, config: StoreConfig, batch_size: int = 4096, *, seed: int = 0,
                       buffer_rows: int = 1 << 16) -> Iterator[dict[str, Tensor]]:
    """Activations straight from the model without touching disk, shuffled in a buffer.

    Yields dicts {hook: [batch_size, d]} (float32, on the model's device) until the corpus or
    `config.n_tokens` runs out.
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
    perm = torch.randperm(n, generator=gen).to(next(iter(full.values())).device)
    n_batches = n // batch_size
    for b in range(n_batches):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        yield {h: v[idx] for h, v in full.items()}
    rest = perm[n_batches * batch_size:]
    for h in buf:
        buf[h] = [full[h][rest]] if keep_partial and rest.numel() else []
