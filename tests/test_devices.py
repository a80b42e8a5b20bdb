"""The device and dtype policy (interp.devices), device fields in configs, the training memory
estimate against a measured run, and the trainer's device plumbing (reader, prefetching,
rank-sharded reading) on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

from interp.devices import (available_devices, check_device, check_dtype, native_lowp_dtype,
                            resolve_device, resolve_dtype)
from interp.errors import ConfigError, DeviceError, DeviceMemoryError
from saes.base import SAEConfig
from saes.data import DataConfig, TensorSource
from saes.train import TrainConfig, Trainer


# ------------------------------------------------------------------ the policy
def test_auto_resolves_to_the_cpu_on_a_machine_without_accelerators():
    assert available_devices() == ["cpu"]  # this test machine; a GPU box lists cuda:0, ...
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("meta") == torch.device("meta")  # shape logic from Python


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3", "mps"])
def test_an_unavailable_device_is_refused_naming_what_the_machine_has(spec):
    with pytest.raises(DeviceError) as e:
        resolve_device(spec)
    assert spec.split(":")[0] in str(e.value) and "this machine has: cpu" in str(e.value)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda0", "tpu", ""])
def test_a_malformed_device_is_refused_with_the_valid_forms(spec):
    with pytest.raises(DeviceError, match="auto, cpu, cuda, cuda:N"):
        check_device(spec)


def test_device_specs_are_canonical():
    assert check_device(" CUDA:1 ") == "cuda:1" and check_device(torch.device("cpu")) == "cpu"


def test_dtypes_resolve_and_auto_is_the_native_low_precision():
    assert check_dtype("bf16") == "bfloat16" and check_dtype(torch.float16) == "float16"
    assert resolve_dtype("float32") == torch.float32
    cpu = torch.cpu
    native = cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()
    assert native_lowp_dtype("cpu") == (torch.bfloat16 if native else None)
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert native_lowp_dtype("meta") is None
    with pytest.raises(DeviceError, match="float32 | bfloat16 | float16"):
        check_dtype("int8")
    with pytest.raises(DeviceError):
        check_dtype("auto", allow_auto=False)


def test_under_torchrun_cuda_means_the_local_rank_and_auto_stays_on_the_cpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="this machine has: cpu"):
        resolve_device("cuda")


# ------------------------------------------------------------------ configs
def test_train_and_data_configs_round_trip_the_device_fields():
    cfg = TrainConfig(device="cuda:1", autocast="float16")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.device == "cuda:1" and again.autocast == "float16"
    data = DataConfig(model="m", model_device="cuda:0", model_dtype="bfloat16", prefetch=3)
    assert DataConfig.from_dict(json.loads(json.dumps(data.to_dict()))) == data
    # a run.json written before these fields still reads, with the defaults
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "autocast")}
    assert TrainConfig.from_dict(old).device == "auto"
    with pytest.raises(DeviceError):
        TrainConfig(device="gpu")
    with pytest.raises(DeviceError):
        DataConfig(model_dtype="int4")


def test_bf16_is_the_older_spelling_of_bfloat16_autocast():
    assert TrainConfig(bf16=True) == TrainConfig(autocast="bfloat16")
    assert TrainConfig.from_dict({"bf16": True}).autocast == "bfloat16"
    with pytest.raises(ConfigError, match="bf16=True"):
        TrainConfig(bf16=True, autocast="float16")


def test_a_run_may_resume_on_another_device_but_not_with_other_settings(tmp_path):
    data = TensorSource(torch.randn(256 * 4, 16, generator=torch.Generator().manual_seed(0)))
    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4),
                      total_tokens=256 * 6, batch_size=256, checkpoint_every=0, device="cpu")
    assert Trainer(cfg, tmp_path, data, progress=False).train(stop_after=2) is None
    moved = Trainer(TrainConfig(**{**cfg.__dict__, "device": "auto"}), tmp_path, data,
                    progress=False)
    assert moved.resumed and moved.step == 2
    with pytest.raises(ConfigError, match="another config"):
        Trainer(TrainConfig(**{**cfg.__dict__, "autocast": "bfloat16"}), tmp_path, data,
                progress=False)


def test_fp16_autocast_keeps_fp32_master_weights_and_resumes_bit_exactly(tmp_path):
    """float16 autocast: weights and Adam state stay float32, the loss scaler's state is in
    the checkpoint, and a run stopped and resumed ends with the bytes of one that was not."""
    rows = torch.randn(256 * 8, 32, generator=torch.Generator().manual_seed(1)) * 4
    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=32, d_sae=128, k=4),
                      total_tokens=256 * 12, batch_size=256, checkpoint_every=0, device="cpu",
                      autocast="float16")
    cut = Trainer(cfg, tmp_path / "cut", TensorSource(rows), progress=False)
    assert cut.train(stop_after=5) is None
    assert all(p.dtype == torch.float32 for p in cut.sae.parameters())
    assert all(v.dtype == torch.float32 for s in cut.opt.state.values() for k, v in s.items()
               if k != "step")
    meta = json.loads((tmp_path / "cut" / "checkpoint" / "trainer.json").read_text())
    assert meta["scaler"]["scale"] > 0
    Trainer(cfg, tmp_path / "cut", TensorSource(rows), progress=False).train()
    Trainer(cfg, tmp_path / "whole", TensorSource(rows), progress=False).train()
    assert (tmp_path / "cut" / "sae" / "sae_weights.safetensors").read_bytes() == \
        (tmp_path / "whole" / "sae" / "sae_weights.safetensors").read_bytes()


# ------------------------------------------------------------------ memory
_MEASURE = r"""
import json, sys, tempfile, torch
torch.set_num_threads(1)
from saes.base import SAEConfig
from saes.data import TensorSource
from saes.train import TrainConfig, Trainer

arch, d_in, d_sae, batch = sys.argv[1], 512, 16384, 1024
own = {"standard": {"l1_coefficient": 1.0}}.get(arch, {"k": 32})

def cfg(width):
    return TrainConfig(sae=SAEConfig(architecture=arch, d_in=d_in, d_sae=width, **own),
                       total_tokens=batch * 6, batch_size=batch, checkpoint_every=3,
                       log_every=3, device="cpu", dead_tokens=batch * 3)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

data = TensorSource(torch.randn(batch * 8, d_in, generator=torch.Generator().manual_seed(0)))
with tempfile.TemporaryDirectory() as tmp:
    Trainer(cfg(64), tmp + "/warm", data, progress=False).train()  # every lazy import, once
    trainer = Trainer(cfg(d_sae), tmp + "/run", data, progress=False, check_memory=False)
    estimate = trainer.memory().total("cpu")
    del trainer
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    base = status("VmRSS:")
    Trainer(cfg(d_sae), tmp + "/run", data, progress=False).train()
    print(json.dumps({"estimate": estimate, "measured": status("VmHWM:") - base}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc")
@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_memory_estimate_is_within_20_percent_of_the_measured_peak(arch):
    """A 16384 x 512 dictionary (192 MiB of weights and Adam state, plus gradients and the
    step's buffers): the estimate against the peak resident memory a real run adds (after a
    tiny run has paid every lazy import), in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, arch], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["measured"] > 250 * 2**20  # the run is big enough for allocator noise to be small
    assert abs(r["estimate"] - r["measured"]) <= 0.2 * r["measured"], r


def test_a_run_that_cannot_fit_is_refused_before_the_dictionary_exists(tmp_path):
    from interp.devices import free_memory

    free = free_memory("cpu")
    width = int(free / (4 * 4 * 4096)) * 2  # weights, gradients and Adam: twice what is free
    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=4096, d_sae=width, k=32),
                      total_tokens=4096, batch_size=4096, device="cpu")
    with pytest.raises(DeviceMemoryError) as e:
        Trainer(cfg, tmp_path, torch.zeros(4096, 4096), progress=False)
    assert "GiB" in str(e.value) and "cpu" in str(e.value) and "--batch-size" in str(e.value)
    assert not (tmp_path / "checkpoint").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_the_estimate_counts_what_a_run_holds():
    from saes.memory import estimate_training

    cfg = TrainConfig(sae=SAEConfig(architecture="standard", d_in=100, d_sae=1000),
                      batch_size=1000, total_tokens=1000)
    est = estimate_training(cfg, device="cpu")
    parts = est.parts["cpu"]
    p = 4 * (2 * 100 * 1000 + 1000 + 100)
    assert parts["dictionary"] == p and parts["optimiser"] == 2 * p
    assert parts["buffers"] == 2 * 1000 * 1000 * 4  # StandardStep's code and its gradient
    two = estimate_training(cfg, device="cpu", world=2)
    assert two.parts["cpu"]["buffers"] == parts["buffers"] // 2  # half the rows per rank
    assert two.parts["cpu"]["gradients"] == 2 * p  # and the all-reduce's flat copy
    assert "memory estimate: cpu:" in est.describe()


# ------------------------------------------------------------------ reader
def _tcfg(**kw):
    base = dict(sae=SAEConfig(architecture="topk", d_in=32, d_sae=128, k=4),
                total_tokens=256 * 24, batch_size=256, checkpoint_every=0, log_every=4,
                device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _rows():
    return torch.randn(256 * 8, 32, generator=torch.Generator().manual_seed(1))


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "interp-prefetch"]


def test_prefetching_gives_the_same_bytes_and_joins_its_thread(tmp_path):
    a = Trainer(_tcfg(), tmp_path / "a", TensorSource(_rows()), progress=False, prefetch=0)
    b = Trainer(_tcfg(), tmp_path / "b", TensorSource(_rows()), progress=False, prefetch=3)
    a.train()
    b.train()
    assert not _prefetch_threads()
    assert (tmp_path / "a" / "sae" / "sae_weights.safetensors").read_bytes() == \
        (tmp_path / "b" / "sae" / "sae_weights.safetensors").read_bytes()


def test_a_signal_with_a_prefetching_reader_checkpoints_and_stops_the_thread(tmp_path):
    """SIGINT raised from inside the reader's thread (at batch 9 of its read-ahead) still stops
    training after a step with a checkpoint; the thread is joined, and the resumed run ends
    with the bytes of an uninterrupted one."""

    class Interrupting(TensorSource):
        def batches(self, hooks, batch_size, start=0, n_batches=None, part=None):
            for i, b in enumerate(super().batches(hooks, batch_size, start), start):
                if i == 9:
                    os.kill(os.getpid(), signal.SIGINT)
                yield b

    cut = Trainer(_tcfg(), tmp_path / "cut", Interrupting(_rows()), progress=False, prefetch=2)
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    assert not _prefetch_threads()
    step = json.loads((tmp_path / "cut" / "checkpoint" / "trainer.json").read_text())["step"]
    assert 0 < step < 24
    Trainer(_tcfg(), tmp_path / "cut", TensorSource(_rows()), progress=False).train()
    Trainer(_tcfg(), tmp_path / "whole", TensorSource(_rows()), progress=False).train()
    assert (tmp_path / "cut" / "sae" / "sae_weights.safetensors").read_bytes() == \
        (tmp_path / "whole" / "sae" / "sae_weights.safetensors").read_bytes()


def test_an_error_in_the_reader_thread_reaches_the_trainer(tmp_path):
    class Broken(TensorSource):
        def batches(self, hooks, batch_size, start=0, n_batches=None, part=None):
            yield next(super().batches(hooks, batch_size, start))
            raise ValueError("corrupt batch 1")

    t = Trainer(_tcfg(), tmp_path, Broken(_rows()), progress=False, prefetch=2)
    with pytest.raises(ValueError, match="corrupt batch 1"):
        t.train()
    assert not _prefetch_threads()


def test_reading_a_ranks_rows_gives_the_rows_of_the_global_batch(tmp_path):
    from saes.reader import rank_batches

    src = TensorSource({"a": _rows(), "b": _rows() * 2}, shuffle=3)
    whole = rank_batches(src, ["a", "b"], 96, 5, None)
    parts = [rank_batches(src, ["a", "b"], 96, 5, None, rank, 3) for rank in range(3)]
    for _ in range(4):
        g = next(whole)
        got = [next(p) for p in parts]
        for h in ("a", "b"):
            assert torch.equal(torch.cat([p[h] for p in got]), g[h])
            assert [p[h].shape[0] for p in got] == [32, 32, 32]


def test_store_parts_read_each_ranks_rows_and_check_each_shard_once(tmp_path, tiny_llama,
                                                                      tiny_llama_dir):
    from interp.caching import cache_activations
    from interp.data import CorpusSpec
    from interp.errors import CorruptShard
    from interp.store import ActivationStore, StoreConfig

    hook = "blocks.0.hook_resid_post"
    cfg = StoreConfig(model=str(tiny_llama_dir), hooks=(hook,), n_tokens=64 * 48,
                      context_size=64, batch_size=8, shard_windows=8,
                      corpus=CorpusSpec(source="python-docs"))
    cache_activations(tmp_path / "s", cfg, model=tiny_llama, progress=False)
    whole = list(ActivationStore(tmp_path / "s").batches(hook, 120, seed=2, buffer_rows=500,
                                                          epochs=1, start_batch=3))
    stores = [ActivationStore(tmp_path / "s") for _ in range(2)]
    parts = [list(s.batches(hook, 120, seed=2, buffer_rows=500, epochs=1, start_batch=3,
                            part=(r, 2))) for r, s in enumerate(stores)]
    assert len(whole) == len(parts[0]) == len(parts[1]) > 3
    for g, a, b in zip(whole, *parts):
        assert torch.equal(torch.cat([a, b]), g)
    # a corrupt shard is caught by the one rank that checks it
    shard = tmp_path / "s" / "shard-00001.safetensors"
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0xFF
    shard.write_bytes(bytes(blob))
    fresh = [ActivationStore(tmp_path / "s") for _ in range(2)]
    read = lambda r: list(fresh[r].batches(hook, 120, seed=2, epochs=1, part=(r, 2)))  # noqa
    read(0)  # rank 0 checks shards 0, 2, 4, ...
    with pytest.raises(CorruptShard):
        read(1)
