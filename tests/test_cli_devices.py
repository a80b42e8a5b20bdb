"""Every command of the composed `interp` CLI that computes takes `--device`: a device this
machine does not have is refused before any work (exit 2, naming what it has), and
`--device cpu` runs the command there and is recorded in its run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from interp.cli import app

HOOK = "blocks.0.hook_resid_post"


def device_commands() -> list[tuple[str, ...]]:
    """The command paths of the composed CLI that have a --device option."""
    found = []

    def walk(cmd, path: tuple[str, ...]):
        if hasattr(cmd, "commands"):  # a group (typer may vendor its own click)
            for name, sub in cmd.commands.items():
                walk(sub, path + (name,))
        elif any(p.name == "device" for p in cmd.params):
            found.append(path)

    walk(typer.main.get_command(app), ())
    return sorted(found)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def env(tiny_llama_dir, tmp_path_factory):
    """A tiny model, a store and a trained SAE run (made through the CLI on the CPU)."""
    root = tmp_path_factory.mktemp("cli-devices")
    store, sae = root / "store", root / "sae"
    r = invoke("cache", "--model", tiny_llama_dir, "--hooks", HOOK, "--tokens", "4096",
               "--context-size", "64", "--batch-size", "8", "--shard-windows", "16",
               "--corpus", "python-docs", "--device", "cpu", "--out", store)
    assert r.exit_code == 0, r.output
    r = invoke("train-sae", "--activations", store, "--hook", HOOK, "--width", "64", "--k", "4",
               "--tokens", str(256 * 4), "--batch-size", "256", "--checkpoint-every", "0",
               "--device", "cpu", "--out", sae)
    assert r.exit_code == 0, r.output
    return {"model": str(tiny_llama_dir), "store": store, "sae": sae, "root": root}


def _paused_run(env, out: Path) -> Path:
    """An SAE run stopped after two steps (a checkpoint to resume)."""
    from saes.base import SAEConfig
    from saes.data import DataConfig
    from saes.runs import train_run
    from saes.train import TrainConfig

    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=64, d_sae=64, k=4, hook_name=HOOK),
                      total_tokens=256 * 4, batch_size=256, checkpoint_every=0)
    train_run(cfg, DataConfig(activations=str(env["store"])), out, stop_after=2, progress=False)
    return out


#: per command: (arguments after --device cpu, the run directory whose run.json it writes)
def _case(path: tuple[str, ...], env, tmp: Path) -> tuple[list, Path | None]:
    m, ws = env["model"], tmp / "ws"
    probes = ["--model", m, "--corpus", "python-docs", "--tokens", "600", "--context-size", "32",
              "--workspace", ws]
    cases = {
        ("cache",): (["--model", m, "--hooks", HOOK, "--tokens", "1024", "--context-size", "64",
                      "--batch-size", "8", "--shard-windows", "8", "--corpus", "python-docs",
                      "--out", tmp / "store"], tmp / "store"),
        ("train-sae",): (["--activations", env["store"], "--hook", HOOK, "--width", "32",
                          "--k", "4", "--tokens", "512", "--batch-size", "256",
                          "--out", tmp / "sae"], tmp / "sae"),
        ("eval-sae",): ([env["sae"], "--windows", "2"], None),
        ("resume",): ([_paused_run(env, tmp / "paused")], tmp / "paused"),
        ("features",): ([env["sae"], "--tokens", "512", "--out", tmp / "features"],
                        tmp / "features"),
        ("atoms",): (["--model", m, "--hook", HOOK, "--tokens", "2048", "--train-tokens", "2048",
                      "--batch-size", "256", "--corpus", "python-docs", "--out", tmp / "atoms"],
                     tmp / "atoms"),
        ("codebook", "train"): (["--model", m, "--hook", HOOK, "--codes", "16", "--k", "2",
                                 "--steps", "2", "--batch-size", "2", "--context-size", "16",
                                 "--kmeans-windows", "4", "--corpus", "python-docs",
                                 "--workspace", ws, "--name", "cb"], ws / "runs/codebook/cb"),
        ("codebook", "fsm"): (["--states", "9", "--edges", "2", "--base", "3", "--layers", "1",
                               "--d-model", "32", "--heads", "2", "--seq-len", "16", "--codes",
                               "16", "--steps", "2", "--batch-size", "8", "--samples", "4",
                               "--workspace", ws, "--name", "fsm"], ws / "runs/codebook/fsm"),
        ("codebook", "steer"): (["--model", m, "--hook", HOOK, "--codes", "16", "--k", "2",
                                 "--windows", "8", "--samples", "2", "--tokens", "2",
                                 "--pattern", ".", "--corpus", "python-docs",
                                 "--workspace", ws, "--name", "steer"],
                                ws / "runs/codebook/steer"),
        ("transcoders",): (["--model", m, "--layers", "0", "--tokens", "1024", "--width", "32",
                            "--batch-size", "256", "--out", tmp / "tc"], tmp / "tc"),
        ("probe",): (["--task", "in_string", "--layers", "embed,1", "--l2", "1", *probes,
                      "--name", "p"], ws / "runs/probe/p"),
        ("lens",): (["--eval-tokens", "100", *probes, "--name", "l"], ws / "runs/lens/l"),
        ("geometry",): (["--max-points-twonn", "300", *probes, "--name", "g"],
                        ws / "runs/geometry/g"),
        ("localist", "sweep"): (["--lambdas", "0", "--steps", "2", "--d-model", "16", "--heads",
                                 "2", "--context-size", "32", "--batch-size", "2",
                                 "--no-inference", "--out", tmp / "sweep"], tmp / "sweep"),
        ("localist", "schedules"): (["--model", m, "--betas", "1", "--train-layers", "1",
                                     "--steps", "1", "--batch-size", "2", "--context-size", "16",
                                     "--eval-windows", "1", "--out", tmp / "sched"],
                                    tmp / "sched"),
    }
    return cases[path]


#: commands run for real below; `demo` (the default model, minutes) is checked only for refusal
RUN = ["cache", "train-sae", "eval-sae", "resume", "features", "atoms", "codebook train",
       "codebook fsm", "codebook steer", "transcoders", "probe", "lens", "geometry",
       "localist sweep", "localist schedules"]


def test_every_computing_command_takes_a_device():
    got = {" ".join(p) for p in device_commands()}
    assert got == set(RUN) | {"demo"}, got ^ (set(RUN) | {"demo"})


@pytest.mark.parametrize("path", [" ".join(p) for p in device_commands()])
def test_an_unavailable_device_is_refused_before_any_work(path, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_WORKSPACE", str(tmp_path / "ws"))
    r = invoke(*path.split(), "--device", "cuda:7")
    assert r.exit_code == 2, r.output
    assert "cuda:7" in r.output and "this machine has: cpu" in r.output
    assert not list(tmp_path.rglob("run.json"))  # nothing started


@pytest.mark.parametrize("path", RUN)
def test_device_cpu_runs_the_command_there_and_is_recorded(path, env, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_WORKSPACE", str(tmp_path / "ws"))
    args, run_dir = _case(tuple(path.split()), env, tmp_path)
    r = invoke(*path.split(), "--device", "cpu", *args)
    assert r.exit_code == 0, r.output[-3000:]
    if run_dir is not None:
        config = json.loads((run_dir / "run.json").read_text())["config"]
        assert _recorded(config, "device") == "cpu", config


def _recorded(config: dict, key: str):
    """`config[key]`, or the first nested config's (a sweep records its base config)."""
    if key in config:
        return config[key]
    for v in config.values():
        if isinstance(v, dict) and (found := _recorded(v, key)) is not None:
            return found
    return None


def test_train_sae_prints_the_memory_estimate_first(env, tmp_path):
    r = invoke("train-sae", "--activations", env["store"], "--hook", HOOK, "--width", "32",
               "--k", "4", "--tokens", "512", "--batch-size", "256", "--device", "cpu",
               "--out", tmp_path / "sae")
    assert r.exit_code == 0, r.output
    assert "memory estimate: cpu:" in r.stderr and "dictionary" in r.stderr


def test_train_sae_refuses_a_run_that_will_not_fit(env, tmp_path):
    r = invoke("train-sae", "--activations", env["store"], "--hook", HOOK,
               "--width", str(1 << 34), "--k", "4", "--tokens", "512", "--batch-size", "256",
               "--device", "cpu", "--out", tmp_path / "huge")
    assert r.exit_code == 2 and "GiB" in r.stderr and "free" in r.stderr, r.output
    assert not (tmp_path / "huge").exists()  # refused before the run was made
