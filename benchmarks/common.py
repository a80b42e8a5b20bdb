"""Helpers shared by the benchmarks: machine facts, round-robin median timing, the JSON line.

Every benchmark prints progress to stderr and, as the last line of stdout, one JSON object
(docs/design.md, "Contracts between the parts"). `json_main` routes anything a library prints
to stdout onto stderr while the benchmark runs, so that JSON line really is the last line.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def log(*parts: Any) -> None:
    """Progress output (stderr, flushed at once)."""
    print(*parts, file=sys.stderr, flush=True)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(packages: Sequence[str] = ("torch", "transformers")) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, threads, load, library versions."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda_version": torch.version.cuda,
        "versions": {p: _version(p) for p in packages},
    }
    with contextlib.suppress(OSError):
        info["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    return info


def device_clock(device) -> Callable[[], float]:
    """A clock for timing work on `device`: `time.perf_counter`, after waiting for the GPU's
    queued work when the device is a GPU (its kernels run asynchronously)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return time.perf_counter

    def now() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return now


def synced(fn: Callable[..., Any], device) -> Callable[..., Any]:
    """`fn` that returns only once the device has finished the work it queued (so that timing
    a call times the work, not its launch)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return fn

    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        return out
    return call


def add_device_arg(parser, default: str = "cpu") -> None:
    """`--device` (interp.devices: auto | cpu | cuda | cuda:N | mps) on a benchmark."""
    parser.add_argument("--device", default=default,
                        help="where ours and the anchors compute: auto | cpu | cuda | cuda:N | "
                             f"mps (default {default})")


@dataclass
class Method:
    """One thing to time: `run()` is timed; `after(result)` (untimed) checks and cleans up."""

    name: str
    run: Callable[[], Any]
    after: Callable[[Any], dict | None] | None = None
    times: list[float] = field(default_factory=list)
    facts: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call, after a garbage collection so it does not land inside."""
    gc.collect()
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def round_robin(methods: Sequence[Method], repeats: int, budget_s: float | None = None,
                work: float | None = None, unit: str = "tok/s") -> None:
    """Time every method `repeats` times, one call each per round, rotating the start each round.

    Interleaving spreads background load on a shared machine over all methods alike. A method
    whose time so far plus one more call would pass `budget_s` stops early (`stopped_early`).
    """
    for r in range(repeats):
        for k in range(len(methods)):
            m = methods[(k + r) % len(methods)]
            if m.stopped_early:
                continue
            dt, result = time_once(m.run)
            m.times.append(dt)
            facts = m.after(result) if m.after else None
            if facts:
                m.facts.append(facts)
            rate = f", {work / dt:,.0f} {unit}" if work else ""
            log(f"  round {r + 1}/{repeats} {m.name}: {dt:.2f} s{rate}")
            if (budget_s is not None and r + 1 < repeats
                    and sum(m.times) + statistics.median(m.times) > budget_s):
                m.stopped_early = True
                log(f"  {m.name}: stopping after {len(m.times)} repeats (budget {budget_s:.0f} s)")


def summary(m: Method, work: float) -> dict[str, Any]:
    """Median, min and max rate (work / seconds) of a timed method."""
    rates = [work / t for t in m.times]
    return {"method": m.name, "tokens_per_s": statistics.median(rates), "min": min(rates),
            "max": max(rates), "repeats": len(m.times),
            "seconds_median": statistics.median(m.times), "stopped_early": m.stopped_early}


def json_main(fn: Callable[[], dict]) -> None:
    """Run `fn` with stdout sent to stderr, then print its result as the last stdout line."""
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        result = fn()
    print(json.dumps(result, default=float), file=out, flush=True)


class PeakRSS:
    """Peak resident set size above the starting level while the block runs (sampled)."""

    def __enter__(self):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back first
        except OSError:
            pass
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20
