"""Kill soak: SIGKILL `interp cache` and `interp train-sae` at random moments, re-run the same
command, and check that the final bytes equal an uninterrupted run's.

Not a test (it takes minutes). A tiny Llama is built in the script (no download). For each
command one uninterrupted reference run is timed; then, `--kills` times, the command is started
in a fresh directory, killed with SIGKILL at a random moment (seeded) of its working phase
(a random point of its own progress: shards written, steps checkpointed), started again with
the same arguments and run to the end. A trial is byte-identical when every artefact that
should be deterministic has the reference's sha256:

- `interp cache`: every shard, `manifest.json`, and `run.json` less its clock fields
  (`created`, `metrics.seconds`, `metrics.tokens_per_s`);
- `interp train-sae`: `checkpoint/` (weights, Adam state, counters, trainer.json), `sae/`
  (SAELens files), `eval.json`, `metrics.jsonl` less its `tokens_per_s` and `run.json` less
  `created`;

and no other file (a stray temp file, a half-written one) is left in the directory. The last
stdout line is JSON:

    {"benchmark": "kill_soak", "trials": 20, "identical": 20, "killed": ..., ...}

Usage: python benchmarks/kill_soak.py [--kills 10] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import json_main, log, machine  # noqa: E402

HOOKS = "blocks.0.hook_resid_post,blocks.1.hook_mlp_out"
CLOCK_KEYS = {"created", "seconds", "tokens_per_s"}  # wall-clock fields: never deterministic


def cache_args(model: Path, out: Path) -> list[str]:
    # 256 windows in 16 shards; a low outlier ratio makes the filter drop rows, so a resumed
    # job must reuse the first leg's thresholds to end with the same bytes
    return ["cache", "--model", str(model), "--hooks", HOOKS, "--tokens", "16384",
            "--context-size", "64", "--batch-size", "8", "--shard-windows", "16",
            "--corpus", "python-docs", "--outlier-ratio", "1.15", "--out", str(out)]


def train_args(store: Path, out: Path) -> list[str]:
    # 64 steps with a checkpoint every 4: kills land before, between and inside checkpoints
    return ["train-sae", "--activations", str(store), "--hook", "blocks.0.hook_resid_post",
            "--arch", "topk", "--width", "256", "--k", "8", "--tokens", str(256 * 64),
            "--batch-size", "256", "--checkpoint-every", "4", "--out", str(out)]


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in CLOCK_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(out: Path) -> dict[str, str]:
    """sha256 of every file under `out` (relative path -> hex); JSON files less clock fields."""
    found = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(out))
        data = p.read_bytes()
        if p.name == "run.json" or p.name == "eval.json":
            data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
        elif p.suffix == ".jsonl":
            lines = [json.dumps(_strip(json.loads(line)), sort_keys=True)
                     for line in data.decode().splitlines()]
            data = "\n".join(lines).encode()
        found[rel] = _sha(data)
    return found


def _diff(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def shards_written(out: Path) -> int:
    """Progress of `interp cache`: shards on disk."""
    return len(list(out.glob("shard-*.safetensors")))


def steps_checkpointed(out: Path) -> int:
    """Progress of `interp train-sae`: the step of the checkpoint on disk (+1 once exported)."""
    try:
        step = json.loads((out / "checkpoint" / "trainer.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0
    return step + (out / "sae" / "cfg.json").is_file()


class Command:
    """One command under test: its arguments for an output directory, how far a run of it has
    got (`progress(out)`, a count that grows as it writes), and its uninterrupted reference."""

    def __init__(self, name: str, args, progress, root: Path, env: dict):
        self.name, self.args, self.progress, self.root, self.env = name, args, progress, root, env

    def start(self, out: Path) -> subprocess.Popen:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / "stderr.txt", "ab") as err:
            return subprocess.Popen([sys.executable, "-m", "interp.cli", *self.args(out)],
                                    env=self.env, stdout=subprocess.DEVNULL, stderr=err)

    def finish(self, p: subprocess.Popen, out: Path) -> None:
        if p.wait(timeout=1800):
            err = (out.parent / "stderr.txt").read_text(errors="replace")
            raise RuntimeError(f"{self.name} failed (exit {p.returncode}):\n{err[-3000:]}")

    def reference(self) -> None:
        """Run once without a kill, timing its progress from the output directory's
        appearance: the mean time between progress steps sets the kill delays."""
        out = self.root / f"{self.name}-reference" / "run"  # same leaf name: run.json's name
        t0 = time.perf_counter()
        p = self.start(out)
        appeared = _wait_for_dir(p, out)
        first = None
        while p.poll() is None:
            if first is None and self.progress(out) > 0:
                first = time.perf_counter()
            time.sleep(0.01)
        self.finish(p, out)
        end = time.perf_counter()
        self.levels = self.progress(out)
        self.start_s = (first or end) - (appeared or t0)
        self.interval_s = (end - (first or end)) / max(1, self.levels)
        self.expected = digest(out)
        self.reference_dir = out
        log(f"{self.name}: reference run {end - t0:.1f} s; first progress at +{self.start_s:.1f} s"
            f" after its directory appeared, then {self.levels} steps of ~{self.interval_s:.2f} s;"
            f" {len(self.expected)} files")

    def trial(self, i: int, rng: random.Random) -> dict:
        """Start, SIGKILL at a random moment, re-run to the end, compare with the reference.

        The moment is drawn on the command's own progress, so that a busy machine does not
        push it past the end: a level L uniform in 0..levels-1 and a fraction v of one step;
        the kill comes v steps after the run reaches L (L = 0: v x the reference's start-up).
        """
        out = self.root / f"{self.name}-{i}" / "run"
        level = rng.randrange(self.levels)
        v = rng.random()
        delay = v * (self.interval_s if level else self.start_s)
        p = self.start(out)
        reached = _wait_for_dir(p, out)
        while reached is not None and p.poll() is None and self.progress(out) < level:
            time.sleep(0.005)
        t = time.perf_counter()
        while p.poll() is None and time.perf_counter() - t < delay:
            time.sleep(0.005)
        killed = p.poll() is None
        if killed:
            p.kill()  # SIGKILL
        p.wait(timeout=1800)
        at = self.progress(out) if out.exists() else 0
        left = sorted(str(q.relative_to(out)) for q in out.rglob("*") if q.is_file()) \
            if out.exists() else []
        self.finish(self.start(out), out)
        diff = _diff(digest(out), self.expected)
        rec = {"command": self.name, "trial": i, "kill_level": level,
               "kill_delay_s": round(delay, 3), "killed": killed, "progress_at_kill": at,
               "files_after_kill": len(left), "identical": not diff}
        if diff:
            rec["differing"] = diff
        log(f"{self.name} {i}: kill {delay:.2f} s after progress {level} "
            f"({'killed at ' + str(at) if killed else 'had ended'}, {len(left)} files left) -> "
            f"{'identical' if not diff else 'DIFFERS ' + str(diff)}")
        if not diff:
            shutil.rmtree(out.parent)
        return rec


def _wait_for_dir(p: subprocess.Popen, out: Path) -> float | None:
    """The moment `out` appears (polled), or None if the process ended first."""
    while not out.exists():
        if p.poll() is not None:
            return None
        time.sleep(0.005)
    return time.perf_counter()


def _model(root: Path) -> Path:
    from interp.models.tiny import save_tiny_model

    return save_tiny_model(root / "model", "llama", seed=0)


def run(args) -> dict:
    root = Path(args.keep or tempfile.mkdtemp(prefix="kill-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "INTERP_WORKSPACE": str(root / "ws")}
    rng = random.Random(args.seed)
    trials = []
    t_start = time.perf_counter()
    try:
        log(f"building a tiny model in {root}")
        model = _model(root)
        cache = Command("cache", lambda out: cache_args(model, out), shards_written, root, env)
        cache.reference()
        store = cache.reference_dir
        train = Command("train-sae", lambda out: train_args(store, out), steps_checkpointed,
                        root, env)
        train.reference()
        for cmd in (cache, train):
            for i in range(args.kills):
                trials.append(cmd.trial(i, rng))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    per = {c: {"trials": sum(t["command"] == c for t in trials),
               "identical": sum(t["identical"] for t in trials if t["command"] == c),
               "killed": sum(t["killed"] for t in trials if t["command"] == c)}
           for c in ("cache", "train-sae")}
    return {"benchmark": "kill_soak", "machine": machine(), "seed": args.seed,
            "trials": len(trials), "identical": sum(t["identical"] for t in trials),
            "killed": sum(t["killed"] for t in trials), "per_command": per,
            "seconds": round(time.perf_counter() - t_start, 1),
            "failed_trials": [t for t in trials if not t["identical"]],
            "results": trials, "ratios": {}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10, help="killed runs per command")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--keep", default=None, help="work in this directory and keep it")
    args = p.parse_args()
    json_main(lambda: run(args))


if __name__ == "__main__":
    main()
