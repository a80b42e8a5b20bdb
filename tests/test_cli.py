"""The `interp` command line on a tiny real model: facts, hook errors, caching, kill-and-resume.

The resume tests start the real console script in a subprocess, interrupt it (SIGKILL, then
Ctrl-C as SIGINT) once a few shards are on disk, re-run the same command, and compare the bytes
with an uninterrupted run of the same command.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from interp.cli import app
from interp.errors import CorruptShard
from interp.store import ActivationStore

HOOKS = "blocks.0.hook_resid_post,blocks.1.hook_mlp_out"
SMALL = ["--hooks", HOOKS, "--tokens", "4096", "--context-size", "64", "--batch-size", "8",
         "--shard-windows", "16", "--corpus", "python-docs"]
# Long enough that the caching loop runs for seconds after the (slow) imports: 1024 windows in
# 32 shards of 32 windows, about 2 s of forward passes on one core after ~8 s of start-up. A low
# outlier ratio makes the filter drop rows, so a resume must reuse the first run's thresholds.
LONG = ["--hooks", HOOKS, "--tokens", "65536", "--context-size", "64", "--batch-size", "8",
        "--shard-windows", "32", "--corpus", "python-docs", "--outlier-ratio", "1.15"]
LONG_SHARDS = 32

_exe = Path(sys.executable).with_name("interp")
INTERP = [str(_exe)] if _exe.is_file() else [sys.executable, "-m", "interp.cli"]
# One thread per process: the test machine's cores are shared (two threads contending for them made
# the tiny model ~10x slower), and every run of the command gets the same environment.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(autouse=True)
def workspace_env(tmp_path, monkeypatch):
    """Never write into ./workspace, whatever a command defaults to."""
    monkeypatch.setenv("INTERP_WORKSPACE", str(tmp_path / "ws"))


@pytest.fixture()
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def shard_files(store: Path) -> list[str]:
    return sorted(p.name for p in store.glob("shard-*.safetensors"))


def assert_listed_shards_are_intact(store: Path, manifest: dict) -> None:
    for s in manifest["shards"]:
        data = (store / s["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"], s["file"]


def assert_same_store(a: Path, b: Path) -> None:
    ma, mb = read(a / "manifest.json"), read(b / "manifest.json")
    assert ma["complete"] and mb["complete"]
    assert ma["shards"] == mb["shards"]  # names, sha256s, windows, rows, first windows
    assert ma == mb  # thresholds, counts and config too
    assert shard_files(a) == shard_files(b) == [s["file"] for s in ma["shards"]]
    for name in shard_files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# --- in-process commands ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_store(tiny_llama_dir, tmp_path_factory):
    """A finished store made by `interp cache` in this process (~1 s)."""
    out = tmp_path_factory.mktemp("cli") / "small"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = invoke("cache", "--model", tiny_llama_dir, *SMALL, "--out", out)
    finally:
        torch.set_num_threads(n)
    assert result.exit_code == 0, result.output
    return out, result


def test_models_json_lists_facts_and_canonical_hooks(tiny_llama_dir):
    result = invoke("models", "--model", tiny_llama_dir, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["facts"]["n_layers"] == 2 and info["facts"]["d_model"] == 64
    hooks = info["hooks"]
    assert "blocks.1.hook_resid_post" in hooks and "blocks.0.hook_mlp_out" in hooks
    assert "blocks.2.hook_resid_post" not in hooks  # layers counted from 0
    assert len(hooks) == len(set(hooks))
    assert info["backend"] == "torch" and info["model"] == Path(tiny_llama_dir).name


def test_models_plain_text_summarises_the_hooks(tiny_llama_dir):
    result = invoke("models", "--model", tiny_llama_dir)
    assert result.exit_code == 0, result.output
    assert "n_layers: 2" in result.stdout and "d_model: 64" in result.stdout
    assert "blocks.{0..1}." in result.stdout and "hook_resid_post" in result.stdout


def test_models_with_a_bad_path_exits_2_with_the_reason(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("models", "--model", tmp_path / "empty")
    assert result.exit_code == 2
    assert "config.json" in result.stderr and "Traceback" not in result.output


def test_cache_with_a_wrong_hook_exits_2_with_close_matches(tiny_llama_dir, tmp_path, one_thread):
    out = tmp_path / "bad"
    result = invoke("cache", "--model", tiny_llama_dir, "--hooks", "blocks.1.hook_resid_pos",
                    "--tokens", "256", "--context-size", "64", "--corpus", "python-docs",
                    "--out", out)
    assert result.exit_code == 2, result.output
    assert "blocks.1.hook_resid_pos" in result.stderr
    assert "Did you mean" in result.stderr and "blocks.1.hook_resid_post" in result.stderr
    assert "Traceback" not in result.output
    assert not (out / "manifest.json").exists() and shard_files(out) == []
    run = read(out / "run.json")
    assert run["status"] == "failed" and "blocks.1.hook_resid_post" in run["metrics"]["error"]


def test_cache_writes_a_store_and_a_finished_run(small_store):
    out, result = small_store
    manifest = read(out / "manifest.json")
    assert manifest["complete"] and manifest["n_windows"] == 64 and manifest["n_tokens_seen"] == 4096
    assert set(manifest["hooks"]) == set(HOOKS.split(","))
    assert shard_files(out) == [f"shard-{i:05d}.safetensors" for i in range(4)]
    assert [s["file"] for s in manifest["shards"]] == shard_files(out)
    assert_listed_shards_are_intact(out, manifest)
    run = read(out / "run.json")
    assert run["status"] == "done" and run["kind"] == "activations" and run["name"] == "small"
    assert run["metrics"]["rows"] > 0 and run["metrics"]["rows"] == manifest["n_rows"]
    assert run["config"] == manifest["config"] and run["artefacts"] == {"manifest": "manifest.json"}
    assert json.loads(result.stdout[:result.stdout.rindex("}") + 1]) == run["metrics"]
    store = ActivationStore(out)
    assert store.d("blocks.1.hook_mlp_out") == 64 and len(store) == run["metrics"]["rows"]
    assert store.activations("blocks.0.hook_resid_post").shape == (len(store), 64)
    assert not list(out.glob(".*tmp"))  # no temp files left behind


def test_cache_without_out_writes_into_the_workspace(tiny_llama_dir, tmp_path, one_thread):
    result = invoke("cache", "--model", tiny_llama_dir, "--hooks", "blocks.0.hook_resid_post",
                    "--tokens", "512", "--context-size", "64", "--batch-size", "8",
                    "--shard-windows", "8", "--corpus", "python-docs", "--name", "tiny-resid0")
    assert result.exit_code == 0, result.output
    run_path = tmp_path / "ws" / "runs" / "activations" / "tiny-resid0"  # from INTERP_WORKSPACE
    assert read(run_path / "run.json")["status"] == "done"
    assert read(run_path / "manifest.json")["complete"]


def test_rerunning_a_finished_store_changes_nothing(small_store, tmp_path):
    src, _ = small_store
    out = tmp_path / "small"
    shutil.copytree(src, out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    manifest = (out / "manifest.json").read_bytes()
    config = read(out / "manifest.json")["config"]
    result = invoke("cache", "--model", config["model"], *SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")} == stamps
    assert (out / "manifest.json").read_bytes() == manifest
    assert read(out / "run.json")["status"] == "done"


def test_other_settings_on_an_existing_store_exit_2(small_store, tmp_path):
    src, _ = small_store
    out = tmp_path / "small"
    shutil.copytree(src, out)
    model = read(out / "manifest.json")["config"]["model"]
    before = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    manifest = (out / "manifest.json").read_bytes()
    for change, key in ((["--tokens", "8192"], "n_tokens"), (["--dtype", "bfloat16"], "dtype"),
                        (["--hooks", "blocks.0.hook_resid_post"], "hooks")):
        result = invoke("cache", "--model", model, *SMALL, *change, "--out", out)  # last one wins
        assert result.exit_code == 2, (change, result.output)
        assert "made with other settings" in result.stderr and repr(key) in result.stderr
    assert (out / "manifest.json").read_bytes() == manifest  # the store itself is untouched
    assert {p.name: p.read_bytes() for p in out.glob("*.safetensors")} == before


def test_a_refused_command_leaves_the_finished_run_json_alone(small_store, tmp_path):
    src, _ = small_store
    out = tmp_path / "small"
    shutil.copytree(src, out)
    run_before = read(out / "run.json")
    model = run_before["config"]["model"]
    result = invoke("cache", "--model", model, *SMALL, "--tokens", "8192", "--out", out)
    assert result.exit_code == 2
    assert read(out / "run.json") == run_before


def test_a_corrupt_or_missing_shard_is_named(small_store, tmp_path):
    src, _ = small_store
    out = tmp_path / "small"
    shutil.copytree(src, out)
    path = out / "shard-00001.safetensors"
    data = bytearray(path.read_bytes())
    for i in (len(data) // 2, len(data) - 5):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    store = ActivationStore(out)
    assert store.shard(0)["tokens"].shape == (16, 64)  # the other shards still read
    with pytest.raises(CorruptShard) as info:
        store.shard(1)
    assert str(path) in str(info.value) and "sha256" in str(info.value)
    with pytest.raises(CorruptShard):  # and it keeps failing, not just the first time
        store.activations("blocks.1.hook_mlp_out")

    gone = out / "shard-00002.safetensors"
    gone.unlink()
    with pytest.raises(CorruptShard) as info:
        ActivationStore(out).shard(2)
    assert str(gone) in str(info.value) and "missing" in str(info.value)


def test_resuming_with_a_listed_shard_deleted_exits_2_naming_it(small_store, tmp_path):
    src, _ = small_store
    out = tmp_path / "small"
    shutil.copytree(src, out)
    manifest = read(out / "manifest.json")
    manifest["complete"] = False  # as if the job had been stopped after four shards
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "shard-00001.safetensors").unlink()
    result = invoke("cache", "--model", manifest["config"]["model"], *SMALL, "--out", out)
    assert result.exit_code == 2
    assert str(out / "shard-00001.safetensors") in result.stderr.replace("\n", "")


# --- real subprocesses: kill, Ctrl-C, resume --------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Job:
    """`interp cache ... --out <out>` running in a subprocess, its output in a log file."""

    def __init__(self, model_dir: Path, out: Path, args=LONG):
        self.out = out
        self.cmd = [*INTERP, "cache", "--model", str(model_dir), *args, "--out", str(out)]
        self.log = out.parent / f"{out.name}-{time.monotonic_ns()}.log"
        env = dict(os.environ, **ENV, INTERP_WORKSPACE=str(out.parent / "ws"))
        with open(self.log, "wb") as log:
            # SIGINT back to its default in the child: a runner started in the background by a
            # non-interactive shell (`make test &`, CI scripts) ignores SIGINT, a child inherits
            # that, and Python then never raises KeyboardInterrupt, so the Ctrl-C went unheard
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=_default_sigint)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.cmd} did not finish in {timeout} s:\n{self.output()}")

    def finish(self) -> None:
        rc = self.wait()
        assert rc == 0, f"{self.cmd} exited {rc}:\n{self.output()}"

    def wait_for_shards(self, n: int, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while len(shard_files(self.out)) < n:
            if self.proc.poll() is not None:
                raise AssertionError(f"job exited ({self.proc.returncode}) before writing {n} "
                                     f"shards:\n{self.output()}")
            if time.monotonic() > end:
                self.proc.kill()
                raise AssertionError(f"no {n} shards after {timeout} s:\n{self.output()}")
            time.sleep(0.01)


def observe(out: Path, job: Job) -> dict:
    """What an interrupted job left on disk."""
    manifest = read(out / "manifest.json")
    return {
        "rc": job.proc.returncode, "output": job.output(), "manifest": manifest,
        "bad_shards": [s["file"] for s in manifest["shards"] if not (out / s["file"]).is_file()
                       or hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() != s["sha256"]],
        "tmp_files": [p.name for p in out.iterdir() if p.name.endswith(".tmp")],
        "run": read(out / "run.json"),
    }


def interrupt(job: Job, sig: int, after_shards: int) -> None:
    try:
        job.wait_for_shards(after_shards)
        job.proc.send_signal(sig)
        job.wait(timeout=120)
    finally:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


@pytest.fixture(scope="module")
def resumed(tiny_llama_dir, tmp_path_factory):
    """The long command, run the way a user would: killed with SIGKILL once two shards exist, run
    again and stopped with Ctrl-C (SIGINT) two shards later, then run again to the end. The same
    command also runs uninterrupted into another directory, in the background (each start-up
    imports torch and transformers, several seconds on a shared machine)."""
    base = tmp_path_factory.mktemp("resume")
    out = base / "store"
    reference = Job(tiny_llama_dir, base / "reference")
    try:
        job = Job(tiny_llama_dir, out)
        interrupt(job, signal.SIGKILL, after_shards=2)
        killed = observe(out, job)
        job = Job(tiny_llama_dir, out)
        # (a shard written just before the kill may be on disk but not yet in the manifest)
        interrupt(job, signal.SIGINT, after_shards=len(shard_files(out)) + 2)
        ctrl_c = observe(out, job)
        Job(tiny_llama_dir, out).finish()
        reference.finish()
    finally:
        if reference.proc.poll() is None:
            reference.proc.kill()
            reference.proc.wait()
    return {"out": out, "reference": base / "reference", "killed": killed, "ctrl-c": ctrl_c,
            "run": read(out / "run.json")}


def test_a_killed_job_leaves_a_valid_partial_store(resumed):
    seen = resumed["killed"]
    assert seen["rc"] == -signal.SIGKILL
    manifest = seen["manifest"]
    assert manifest["complete"] is False, "the job finished before it was killed"
    assert 1 <= len(manifest["shards"]) < LONG_SHARDS
    assert manifest["n_windows"] == sum(s["windows"] for s in manifest["shards"])
    assert seen["bad_shards"] == []  # every shard the manifest lists is whole
    assert seen["run"]["status"] == "running"  # a SIGKILL gives no chance to record anything


def test_ctrl_c_stops_cleanly_with_a_valid_partial_store(resumed):
    seen, killed = resumed["ctrl-c"], resumed["killed"]
    assert seen["rc"] not in (0, -signal.SIGINT), seen["output"]  # handled, not a crash
    assert "Traceback" not in seen["output"]
    manifest = seen["manifest"]  # it parsed
    assert manifest["complete"] is False, "the job finished before Ctrl-C"
    # the second run went on from the first one's shards, which it left as they were
    assert manifest["shards"][:len(killed["manifest"]["shards"])] == killed["manifest"]["shards"]
    assert len(killed["manifest"]["shards"]) < len(manifest["shards"]) < LONG_SHARDS
    assert seen["bad_shards"] == []
    # an interrupted atomic write removes its temp file (a SIGKILL'd one cannot, hence the set)
    assert set(seen["tmp_files"]) <= set(killed["tmp_files"])
    assert seen["run"]["status"] == "failed"
    assert seen["run"]["metrics"]["error"].startswith("KeyboardInterrupt")
    assert seen["run"]["created"] == killed["run"]["created"]


def test_the_resumed_store_has_the_same_bytes_as_an_uninterrupted_one(resumed):
    assert_same_store(resumed["out"], resumed["reference"])
    run = resumed["run"]
    assert run["status"] == "done" and "error" not in run["metrics"]
    assert run["created"] == resumed["killed"]["run"]["created"]  # one run, restarted twice
    manifest = read(resumed["out"] / "manifest.json")
    assert run["metrics"]["rows"] == manifest["n_rows"]
    assert 0 < manifest["n_rows"] < manifest["n_windows"] * 63  # the outlier filter dropped rows
    reference = read(resumed["reference"] / "run.json")
    assert set(reference["metrics"]) - set(run["metrics"]) == {"seconds", "tokens_per_s"}
    for timing in ("seconds", "tokens_per_s"):  # measured for a job done in one go only
        del reference["metrics"][timing]
    assert run == {**reference, "name": "store", "created": run["created"]}
