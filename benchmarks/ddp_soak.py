"""Stress the data-parallel trainer's shutdown: the 2-process `torchrun` training, many times.

Not a test (it takes minutes): a rare abort at interpreter exit is what it hunts. Each run trains
a small top-k SAE on a tiny model's activation store with `torchrun --nproc_per_node 2`, and
counts as a failure when torchrun exits non-zero, any rank printed `terminate called` (the
SIGABRT of a process group alive at interpreter exit), the SAELens files are incomplete, or
the weights differ from one process's. The last stdout line is JSON:

    {"benchmark": "ddp_soak", "runs": 20, "failures": 0, ...}

Usage: python benchmarks/ddp_soak.py [--runs 20] [--steps 12] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import json_main, log, machine  # noqa: E402

HOOK = "blocks.0.hook_resid_post"
BATCH = 256


def _store(root: Path) -> Path:
    """A tiny Llama's activation store (the same one the trainer's tests use)."""
    from interp.caching import cache_activations
    from interp.data import CorpusSpec
    from interp.models.loading import load_model
    from interp.models.tiny import save_tiny_model
    from interp.store import StoreConfig

    model_dir = save_tiny_model(root / "model", "llama", seed=0)
    cfg = StoreConfig(model=str(model_dir), hooks=(HOOK,), n_tokens=64 * 160, context_size=64,
                      batch_size=8, shard_windows=32, corpus=CorpusSpec(source="python-docs"))
    cache_activations(root / "store", cfg, model=load_model(model_dir), progress=False)
    return root / "store"


def _train_args(store: Path, out: Path, steps: int) -> list[str]:
    return ["-m", "interp.cli", "train-sae", "--activations", str(store), "--hook", HOOK,
            "--arch", "topk", "--width", "256", "--k", "8", "--tokens", str(BATCH * steps),
            "--batch-size", str(BATCH), "--checkpoint-every", "0", "--out", str(out)]


def _check(out: Path, reference: Path) -> str | None:
    """Why a finished run is not complete and equal to one process's, or None."""
    import torch
    from safetensors.torch import load_file

    for f in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
        if not (out / "sae" / f).is_file():
            return f"missing sae/{f}"
    try:
        a = load_file(str(out / "sae" / "sae_weights.safetensors"))
        b = load_file(str(reference / "sae" / "sae_weights.safetensors"))
    except Exception as e:  # a truncated file
        return f"unreadable weights: {e}"
    for k in b:
        if not torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4):
            return f"{k} differs from the one-process run"
    return None


def run(args) -> dict:
    root = Path(args.keep or tempfile.mkdtemp(prefix="ddp-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    try:
        log(f"building a tiny model and its store in {root}")
        store = _store(root)
        reference = root / "one"
        one = subprocess.run([sys.executable, *_train_args(store, reference, args.steps)],
                             env=env, capture_output=True, text=True, timeout=600)
        if one.returncode:
            raise SystemExit(f"the one-process reference failed:\n{one.stderr[-3000:]}")
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2"]
        failures, seconds = [], []
        for i in range(args.runs):
            out = root / f"two-{i}"
            t0 = time.perf_counter()
            p = subprocess.run([*torchrun, *_train_args(store, out, args.steps)], env=env,
                               capture_output=True, text=True, timeout=600)
            seconds.append(round(time.perf_counter() - t0, 2))
            why = (f"exit {p.returncode}" if p.returncode else
                   "a rank printed 'terminate called'" if "terminate called" in p.stderr else
                   _check(out, reference))
            log(f"run {i + 1}/{args.runs}: {'ok' if why is None else 'FAILED: ' + why} "
                f"({seconds[-1]} s)")
            if why is not None:
                failures.append({"run": i, "why": why, "stderr_tail": p.stderr[-1500:]})
            else:
                shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return {"benchmark": "ddp_soak", "machine": machine(), "runs": args.runs,
            "failures": len(failures), "steps_per_run": args.steps, "seconds_per_run": seconds,
            "failed_runs": failures, "results": [], "ratios": {}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--steps", type=int, default=12, help="training steps per run")
    p.add_argument("--keep", default=None, help="work in this directory and keep it")
    args = p.parse_args()
    json_main(lambda: run(args))


if __name__ == "__main__":
    main()
