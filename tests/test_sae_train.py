"""The SAE trainer: learning, bit-exact resume, Ctrl-C checkpoints, data parallel, folding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from interp.data import CorpusSpec
from interp.caching import cache_activations
from interp.store import StoreConfig
from saes.base import SAEConfig
from saes.data import DataConfig, TensorSource
from saes.train import TrainConfig, Trainer, lr_factor, split_config

HOOK, HOOK_OUT = "blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def store_dir(tiny_llama, tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sae-store")
    cfg = StoreConfig(model=str(tiny_llama_dir), hooks=(HOOK, HOOK_OUT), n_tokens=64 * 160,
                      context_size=64, batch_size=8, shard_windows=32,
                      corpus=CorpusSpec(source="python-docs"))
    cache_activations(out, cfg, model=tiny_llama, progress=False)
    return out


def tcfg(**kw):
    sae = dict(architecture="topk", d_in=64, d_sae=256, k=8, hook_name=HOOK)
    sae.update(kw.pop("sae", {}))
    base = dict(sae=SAEConfig(**sae), total_tokens=256 * 40, batch_size=256, checkpoint_every=0,
                log_every=5, dead_tokens=256 * 4)
    base.update(kw)
    return TrainConfig(**base)


def data(store_dir, **kw) -> DataConfig:
    return DataConfig(activations=str(store_dir), **kw)


def weights(sae):
    return {k: v.clone() for k, v in sae.state_dict().items()}


def test_training_reduces_fvu_and_logs(store_dir, tmp_path):
    t = Trainer(tcfg(), tmp_path, data(store_dir), progress=False)
    sae = t.train()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 40 and recs[-1]["l0"] <= 8
    assert recs[-1]["fvu"] < 0.5 * recs[0]["fvu"] and recs[-1]["fvu"] < 0.5
    assert {"loss", "mse", "dead_frac", "tokens_per_s", "lr"} <= set(recs[-1])
    assert (tmp_path / "sae" / "cfg.json").is_file()
    torch.testing.assert_close(t.sae.W_dec.norm(dim=1), torch.ones(256), atol=1e-5, rtol=0)


def test_exported_sae_works_on_raw_activations(store_dir, tmp_path):
    from interp.store import ActivationStore

    t = Trainer(tcfg(), tmp_path, data(store_dir), progress=False)
    sae = t.train()
    assert t.scale_in != 1.0
    x = ActivationStore(store_dir).activations(HOOK, split="eval")[:200]
    with torch.no_grad():
        scaled = t.sae(x * t.scale_in) / t.scale_in
        torch.testing.assert_close(sae(x), scaled, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(sae.encode(x), t.sae.encode(x * t.scale_in), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_resume_is_bit_exact(store_dir, tmp_path, arch):
    cfg = tcfg(sae={"architecture": arch})
    whole = Trainer(cfg, tmp_path / "a", data(store_dir), progress=False)
    whole.train()
    first = Trainer(cfg, tmp_path / "b", data(store_dir), progress=False)
    assert first.train(stop_after=17) is None and first.step == 17
    second = Trainer(cfg, tmp_path / "b", data(store_dir), progress=False)
    assert second.resumed and second.step == 17
    assert (second.since_fired > 0).any()  # dead-latent counters came back too
    second.train()
    a, b = weights(whole.sae), weights(second.sae)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(whole.opt.state[p]["exp_avg_sq"], second.opt.state[q]["exp_avg_sq"])
               for p, q in zip(whole.sae.parameters(), second.sae.parameters()))


def test_resuming_with_another_config_is_refused(store_dir, tmp_path):
    Trainer(tcfg(), tmp_path, data(store_dir), progress=False).train(stop_after=2)
    with pytest.raises(Exception, match="another config"):
        Trainer(tcfg(lr=3e-3), tmp_path, data(store_dir), progress=False)


def test_transcoder_learns_the_mapping(store_dir, tmp_path):
    cfg = tcfg(sae={"hook_name": HOOK, "hook_name_out": HOOK_OUT, "transcoder": True,
                               "d_sae": 256, "k": 16}, total_tokens=256 * 60)
    t = Trainer(cfg, tmp_path, data(store_dir), progress=False)
    t.train()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["fvu"] < 0.8 * recs[0]["fvu"]
    assert t.scale_in != t.scale_out


def test_lr_schedule():
    cfg = TrainConfig(total_tokens=100 * 10, batch_size=10, lr_warmup_steps=10, lr_decay="linear",
                      lr_decay_fraction=0.5)
    assert lr_factor(cfg, 0) == pytest.approx(0.1) and lr_factor(cfg, 9) == pytest.approx(1.0)
    assert lr_factor(cfg, 30) == 1.0 and lr_factor(cfg, 75) == pytest.approx(0.5)
    cos = TrainConfig(total_tokens=100 * 10, batch_size=10, lr_decay="cosine", lr_decay_fraction=1.0)
    assert lr_factor(cos, 50) == pytest.approx(0.5) and lr_factor(cos, 0) == pytest.approx(1.0)


def _train_cmd(store_dir, out, *extra):
    return [sys.executable, "-m", "interp.cli", "train-sae", "--activations", str(store_dir),
            "--hook", HOOK, "--arch", "topk", "--width", "256", "--k", "8", "--tokens",
            str(256 * 400), "--batch-size", "256", "--checkpoint-every", "0", "--out", str(out),
            *extra]


def test_a_signal_mid_run_checkpoints_and_the_resumed_run_is_bit_exact(tmp_path):
    """A real SIGINT, raised by the data source at batch 17 (so it lands mid-run on any
    machine), stops training after that step with a checkpoint; resuming from it finishes with
    the bytes of an uninterrupted run."""
    rows = torch.randn(256 * 8, 32, generator=torch.Generator().manual_seed(0))
    plain = TensorSource(rows)

    class Interrupting(TensorSource):
        def batches(self, hooks, batch_size, start=0, n_batches=None):
            for i, batch in enumerate(super().batches(hooks, batch_size, start), start):
                if i == 17:
                    os.kill(os.getpid(), signal.SIGINT)
                yield batch

    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=32, d_sae=128, k=4),
                      total_tokens=256 * 40, batch_size=256, checkpoint_every=0, log_every=5)
    cut = Trainer(cfg, tmp_path / "cut", Interrupting(rows), progress=False)
    before = signal.getsignal(signal.SIGINT)  # whatever the test runner had installed
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    assert signal.getsignal(signal.SIGINT) is before  # the trainer's handler is removed again
    meta = json.loads((tmp_path / "cut" / "checkpoint" / "trainer.json").read_text())
    assert meta["step"] == 18  # the step that was running when the signal came, then stop
    rest = Trainer(cfg, tmp_path / "cut", plain, progress=False)
    assert rest.resumed and rest.step == 18
    rest.train()
    whole = Trainer(cfg, tmp_path / "whole", plain, progress=False)
    whole.train()
    assert (tmp_path / "cut" / "sae" / "sae_weights.safetensors").read_bytes() == \
        (tmp_path / "whole" / "sae" / "sae_weights.safetensors").read_bytes()


# A run far longer than any test waits: the signal always lands mid-run, whatever the speed.
ENDLESS = str(256 * 1_000_000)


def _wait_for_training(proc, out: Path, timeout: float = 300) -> None:
    """Block until the process has logged a training step (or died: then fail with its log)."""
    metrics = out / "metrics.jsonl"
    deadline = time.time() + timeout
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before training: "
                                 f"{proc.stderr.read()[-2000:]}")
        assert time.time() < deadline, "no training step logged in time"
        time.sleep(0.1)


def _assert_usable_checkpoint(out: Path, cfg_dict: dict) -> int:
    """The checkpoint loads and training continues from it; returns its step."""
    meta = json.loads((out / "checkpoint" / "trainer.json").read_text())
    cfg, data_cfg = split_config(cfg_dict)
    t = Trainer(cfg, out, data_cfg, progress=False)
    assert t.resumed and t.step == meta["step"] > 0
    assert t.train(stop_after=1) is None and t.step == meta["step"] + 1
    return meta["step"]


def test_ctrl_c_on_the_cli_leaves_a_usable_checkpoint(store_dir, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(store_dir, out, "--tokens", ENDLESS), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_training(proc, out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "checkpoint" in err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed"
    _assert_usable_checkpoint(out, run["config"])


def test_sigterm_with_a_prefetching_reader_leaves_a_usable_checkpoint(store_dir, tmp_path):
    """The reader's thread (--prefetch 2) is stopped and joined before the checkpoint is
    written, and the process exits without aborting (no thread outlives the interpreter)."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(store_dir, out, "--tokens", ENDLESS, "--prefetch", "2"),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_training(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode not in (0, -signal.SIGABRT) and "terminate called" not in err, err
    assert "checkpoint" in err
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["data"]["prefetch"] == 2
    _assert_usable_checkpoint(out, run["config"])


@pytest.mark.dist
def test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint(store_dir, tmp_path):
    """torchrun forwards SIGTERM to both ranks; they stop after the same step (the stop is
    decided collectively), rank 0 writes the checkpoint, and no rank aborts at exit."""
    out = tmp_path / "two"
    proc = subprocess.Popen([*TORCHRUN, *_train_cmd(store_dir, out, "--tokens", ENDLESS)[2:]],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_training(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "terminate called" not in err, err[-3000:]
    assert err.count("writing a checkpoint after this step") == 2, err[-3000:]
    _assert_usable_checkpoint(out, json.loads((out / "run.json").read_text())["config"])


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m"]


@pytest.mark.dist
def test_two_processes_match_one(store_dir, tmp_path):
    cmd = ["--tokens", str(256 * 12)]
    single = subprocess.run(_train_cmd(store_dir, tmp_path / "one", *cmd), env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([*TORCHRUN, *_train_cmd(store_dir, tmp_path / "two", *cmd)[2:]],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "terminate called" not in ddp.stderr
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "sae" / "sae_weights.safetensors"))
    b = load_file(str(tmp_path / "two" / "sae" / "sae_weights.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_cli_trains_evaluates_and_reports(store_dir, tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app

    out = tmp_path / "cli-run"
    runner = CliRunner()
    res = runner.invoke(app, ["train-sae", "--activations", str(store_dir), "--hook", HOOK,
                              "--arch", "batchtopk", "--width", "128", "--k", "8", "--tokens",
                              str(256 * 20), "--batch-size", "256", "--out", str(out)])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["kind"] == "sae"
    m = run["metrics"]
    assert 0 < m["fvu"] < 1 and m["l0"] > 0 and m["ce_clean"] > 0
    assert m["ce_clean"] <= m["ce_spliced"] + 0.05 and m["ce_spliced"] < m["ce_zero"]
    assert set(run["artefacts"]) >= {"sae", "metrics", "eval", "checkpoint"}
    res = runner.invoke(app, ["eval-sae", str(out), "--json", "--windows", "4"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["reconstruction"]["fvu"] == pytest.approx(m["fvu"], rel=1e-6)
    assert report["lm"]["n_windows"] == 4
    bad = runner.invoke(app, ["train-sae", "--activations", str(store_dir), "--hook",
                              "blocks.0.hook_resid_pots", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "blocks.0.hook_resid_post" in bad.output
    bad = runner.invoke(app, ["train-sae", "--activations", str(store_dir), "--hook", HOOK,
                              "--arch", "topkk", "--width", "64", "--tokens", "512",
                              "--batch-size", "256", "--out", str(tmp_path / "bad2")])
    assert bad.exit_code == 2 and "topk" in bad.output


def test_train_many_matches_separate_runs(store_dir, tmp_path):
    from saes.multi import train_many

    a = tcfg(total_tokens=256 * 12)
    b = tcfg(total_tokens=256 * 12,
             sae={"architecture": "batchtopk", "hook_name": HOOK, "hook_name_out": HOOK_OUT,
                  "transcoder": True, "d_sae": 128})
    before = signal.getsignal(signal.SIGINT)
    together = train_many([a, b], [tmp_path / "a", tmp_path / "b"], data(store_dir),
                          progress=False)
    # each trainer put back the handlers it found (in reverse): none of theirs is left behind
    assert signal.getsignal(signal.SIGINT) is before
    for cfg, sae, name in ((a, together[0], "sa"), (b, together[1], "sb")):
        alone = Trainer(cfg, tmp_path / name, data(store_dir), progress=False).train()
        for k, v in alone.state_dict().items():
            assert torch.equal(v, sae.state_dict()[k]), k
    with pytest.raises(Exception, match="batch_size"):
        train_many([a, tcfg(batch_size=128, total_tokens=256 * 12)],
                   [tmp_path / "c", tmp_path / "d"], data(store_dir), progress=False)


def test_trainer_takes_an_in_memory_batch_source(tmp_path):
    """A trainer reads tensors in memory (no store, no model) and resumes exactly."""
    source = TensorSource(torch.randn(256 * 8, 32, generator=torch.Generator().manual_seed(0)))

    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=32, d_sae=128, k=4),
                      total_tokens=256 * 20, batch_size=256, checkpoint_every=0, log_every=5)
    whole = Trainer(cfg, tmp_path / "a", source, progress=False)
    whole.train()
    recs = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["fvu"] < recs[0]["fvu"]
    part = Trainer(cfg, tmp_path / "b", source, progress=False)
    part.train(stop_after=7)
    rest = Trainer(cfg, tmp_path / "b", source, progress=False)
    rest.train()
    a, b = weights(whole.sae), weights(rest.sae)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_trains_one_dictionary_per_hook(store_dir, tmp_path):
    """Repeating --hook trains a dictionary per hook from one pass, each an evaluated run."""
    from typer.testing import CliRunner

    from interp.cli import app

    out = tmp_path / "many"
    res = CliRunner().invoke(app, ["train-sae", "--activations", str(store_dir), "--hook", HOOK,
                                   "--hook", HOOK_OUT, "--width", "128", "--k", "8", "--tokens",
                                   str(256 * 8), "--batch-size", "256", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for hook in (HOOK, HOOK_OUT):
        run = json.loads((out / hook / "run.json").read_text())
        assert run["status"] == "done" and run["config"]["sae"]["hook_name"] == hook
        assert 0 < run["metrics"]["fvu"] < 1 and (out / hook / "sae" / "cfg.json").exists()
    bad = CliRunner().invoke(app, ["train-sae", "--activations", str(store_dir), "--hook", HOOK,
                                   "--hook", HOOK_OUT, "--hook-out", HOOK_OUT, "--out",
                                   str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--hook-out" in bad.output


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("arch", ["standard", "topk", "batchtopk", "jumprelu"])
def test_low_precision_training_learns(arch, dtype, tmp_path):
    """`autocast` bfloat16 / float16 (the architecture's own low-precision matmuls, or an
    autocast step; fp16 with loss scaling) still trains: the loss falls and the first step's
    loss is the fp32 one to low precision."""
    g = torch.Generator().manual_seed(0)
    source = TensorSource(torch.randn(256 * 4, 32, generator=g) @ torch.randn(32, 32, generator=g))

    runs = {}
    for autocast in ("float32", dtype):
        own = {"standard": {"l1_coefficient": 0.5}, "jumprelu": {}}.get(arch, {"k": 4})
        cfg = TrainConfig(sae=SAEConfig(architecture=arch, d_in=32, d_sae=128, **own),
                          total_tokens=256 * 30, batch_size=256, checkpoint_every=0,
                          log_every=1, autocast=autocast)
        Trainer(cfg, tmp_path / f"{arch}-{autocast}", source, progress=False).train()
        runs[autocast] = [json.loads(line)["loss"] for line in
                          (tmp_path / f"{arch}-{autocast}" / "metrics.jsonl").read_text()
                          .splitlines()]
    assert runs[dtype][-1] < 0.7 * runs[dtype][0]
    assert runs[dtype][0] == pytest.approx(runs["float32"][0], rel=0.05)


def test_max_grad_norm_clips_the_gradient_adam_sees(tmp_path):
    """`max_grad_norm` (SAELens's trainer clips at 1.0) scales the global gradient norm down
    to it before each Adam step; without it the raw (larger) gradient reaches Adam."""
    g = torch.Generator().manual_seed(0)
    source = TensorSource(torch.randn(256 * 2, 32, generator=g) * 3)
    seen = {}
    for clip in (0.0, 0.5):
        cfg = TrainConfig(sae=SAEConfig(architecture="standard", d_in=32, d_sae=64,
                                        l1_coefficient=0.5), total_tokens=256 * 3,
                          batch_size=256, checkpoint_every=0, max_grad_norm=clip)
        t = Trainer(cfg, tmp_path / str(clip), source, progress=False)
        norms = seen[clip] = []

        def note(opt, args, kwargs, norms=norms, params=list(t.sae.parameters())):
            norms.append(float(torch.stack([p.grad.norm() for p in params]).norm()))

        t.opt.register_step_pre_hook(note)
        t.train()
    assert len(seen[0.5]) == 3 and max(seen[0.5]) == pytest.approx(0.5, rel=1e-4)
    assert min(seen[0.0]) > 1.0
