"""What a SIGKILL can leave behind in a training run, and that the same command recovers from it
to the bytes of an uninterrupted run: a checkpoint swap caught between its two renames, metrics
logged past the last checkpoint (and half a line). `benchmarks/kill_soak.py` kills the real
commands at random moments; these tests pin the states it can reach."""

from __future__ import annotations

import json
import os
import shutil

import torch

from saes.base import SAEConfig
from saes.checkpoint import recover
from saes.data import DataConfig, TensorSource
from saes.train import TrainConfig, Trainer


SOURCE = TensorSource(torch.randn(128 * 6, 16, generator=torch.Generator().manual_seed(0)))


CFG = TrainConfig(sae=SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4),
                  total_tokens=128 * 12, batch_size=128, checkpoint_every=3, log_every=1)


def train(path, stop_after=None):
    t = Trainer(CFG, path, SOURCE, progress=False)
    t.train(stop_after=stop_after)
    return t


def state(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "checkpoint" / "state.safetensors"))


def same_state(a, b) -> bool:
    sa, sb = state(a), state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_a_swap_killed_between_its_renames_is_finished_from_the_new_checkpoint(tmp_path):
    whole = tmp_path / "whole"
    train(whole)
    cut = tmp_path / "cut"
    train(cut, stop_after=6)
    ck = cut / "checkpoint"
    # the moment after `os.replace(final, old)`: the new one complete in .tmp, none in place
    shutil.copytree(ck, ck.with_name("checkpoint.tmp"))
    os.replace(ck, ck.with_name("checkpoint.old"))
    assert recover(ck) and not ck.with_name("checkpoint.tmp").exists()
    assert not ck.with_name("checkpoint.old").exists()
    assert json.loads((ck / "trainer.json").read_text())["step"] == 6
    resumed = Trainer(CFG, cut, SOURCE, progress=False)
    assert resumed.step == 6
    resumed.train()
    assert same_state(whole, cut)


def test_only_the_old_checkpoint_left_resumes_from_it(tmp_path):
    cut = tmp_path / "cut"
    train(cut, stop_after=3)
    ck = cut / "checkpoint"
    os.replace(ck, ck.with_name("checkpoint.old"))
    (ck.with_name("checkpoint.tmp")).mkdir()  # a new one that was still being written
    (ck.with_name("checkpoint.tmp") / "state.safetensors").write_bytes(b"\0" * 10)
    assert Trainer(CFG, cut, SOURCE, progress=False).step == 3


def test_metrics_logged_past_the_checkpoint_are_dropped_on_resume(tmp_path):
    whole = tmp_path / "whole"
    train(whole)
    cut = tmp_path / "cut"
    train(cut, stop_after=6)
    with open(cut / "metrics.jsonl", "a") as f:  # what a kill after step 8 leaves
        f.write(json.dumps({"step": 7, "loss": 1.0}) + "\n")
        f.write(json.dumps({"step": 8, "loss": 1.0}) + "\n")
        f.write('{"step": 9, "lo')
    train(cut)
    assert steps(cut) == steps(whole) == list(range(1, 13))
    assert same_state(whole, cut)


def test_training_several_dictionaries_restores_the_signal_handlers(tmp_path, tiny_llama,
                                                                   tiny_llama_dir):
    """`train_many` installs one handler per trainer; closing them in reverse order gives the
    process back its own Ctrl-C handler (closing in order left a finished trainer's handler
    catching SIGINT, and the next run's Ctrl-C went to it)."""
    import signal

    from interp.caching import cache_activations
    from interp.data import CorpusSpec
    from interp.store import StoreConfig
    from saes.multi import train_many

    hooks = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    store = tmp_path / "store"
    cache_activations(store, StoreConfig(model=str(tiny_llama_dir), hooks=hooks,
                                         n_tokens=64 * 16, context_size=64, batch_size=8,
                                         shard_windows=16,
                                         corpus=CorpusSpec(source="python-docs")),
                      model=tiny_llama, progress=False)
    cfgs = [TrainConfig(sae=SAEConfig(architecture="topk", d_in=64, d_sae=64, k=4, hook_name=h),
                        total_tokens=128 * 2, batch_size=128, checkpoint_every=0) for h in hooks]
    before = signal.getsignal(signal.SIGINT)
    train_many(cfgs, [tmp_path / "a", tmp_path / "b"], DataConfig(activations=str(store)),
               progress=False)
    assert signal.getsignal(signal.SIGINT) is before
