"""Every architecture's training step off the CPU's paths: on the meta device (every tensor a
step allocates follows its input's device: a CPU allocation would fail there), and through the
accelerator's host-sync-free paths run on the CPU, against the CPU's paths (which are tested
against the naive dense references in test_sae_kernels.py / test_sae_architectures.py)."""

from __future__ import annotations

import pytest
import torch

from saes.architectures import architecture_class, create_sae
from saes.base import SAEConfig
from saes.data import TensorSource
from saes.kernels import sync_free_paths
from saes.train import TrainConfig, Trainer
from test_sae_architectures import CASES, D_IN, D_SAE


def _sae_cfg(arch, kw) -> SAEConfig:
    return SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, **kw)


@pytest.mark.parametrize("arch,kw", CASES)
def test_a_training_step_allocates_on_its_inputs_device(arch, kw):
    cfg = _sae_cfg(arch, kw)
    with torch.device("meta"):
        sae = architecture_class(arch)(cfg)
    x = torch.empty(32, D_IN, device="meta")
    y = torch.empty(32, cfg.out_dim, device="meta")
    dead = torch.empty(D_SAE, dtype=torch.bool, device="meta")
    out = sae.training_loss(x, y, dead=dead, sparsity_scale=0.5)
    out.loss.backward()
    for t in (out.loss, out.recon, out.fired, out.l0, *out.parts.values()):
        assert t.device.type == "meta"
    assert out.recon.shape == (32, cfg.out_dim) and out.fired.shape == (D_SAE,)
    for name, p in sae.named_parameters():
        assert p.grad is not None and p.grad.device.type == "meta", name


def _step(sae, x, y, dead):
    out = sae.training_loss(x, y, dead=dead, sparsity_scale=0.7)
    grads = torch.autograd.grad(out.loss, list(sae.parameters()), allow_unused=True)
    return out, grads


@pytest.mark.parametrize("arch,kw", CASES)
def test_the_sync_free_paths_compute_the_cpu_paths_loss_and_gradients(arch, kw):
    """In float64, with a third of the latents dead (AuxK) and a biased encoder (a sparse
    code, so the standard step's CPU path takes its sparse branch)."""
    cfg = _sae_cfg(arch, kw)
    sae = create_sae(cfg, seed=0).double()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        sae.b_enc.sub_(0.2)
        sae.b_dec.normal_(0, 0.1, generator=g)
    x = torch.randn(96, D_IN, generator=g, dtype=torch.float64)
    y = torch.randn(96, cfg.out_dim, generator=g, dtype=torch.float64) if cfg.transcoder else x
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    for d in (dead, torch.zeros_like(dead)):  # some dead; none (AuxK is zeroed, not skipped)
        ref = _step(sae, x, y, d)
        with sync_free_paths():
            got = _step(sae, x, y, d)
        torch.testing.assert_close(got[0].loss, ref[0].loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[0].recon, ref[0].recon, rtol=1e-12, atol=1e-12)
        assert torch.equal(got[0].fired, ref[0].fired)
        assert float(got[0].l0) == pytest.approx(float(ref[0].l0))
        assert set(got[0].parts) >= set(ref[0].parts)
        for a, b in zip(got[1], ref[1]):
            if b is None:
                assert a is None or not a.any()
            else:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "standard", "jumprelu"])
def test_training_through_the_sync_free_paths_matches_the_cpu_paths(arch, tmp_path):
    """A whole run (dead latents, AuxK, the BatchTopK threshold, the trainer's counters)
    through the accelerator's paths ends within float rounding of the CPU's."""
    rows = torch.randn(256 * 6, 32, generator=torch.Generator().manual_seed(0))
    own = {"standard": {"l1_coefficient": 0.5}, "jumprelu": {}}.get(arch, {"k": 4})
    cfg = TrainConfig(sae=SAEConfig(architecture=arch, d_in=32, d_sae=128, **own),
                      total_tokens=256 * 20, batch_size=256, checkpoint_every=0,
                      dead_tokens=256 * 3, device="cpu", autocast="float32")
    weights = {}
    for name in ("cpu", "sync-free"):
        t = Trainer(cfg, tmp_path / name, TensorSource(rows), progress=False)
        if name == "sync-free":
            with sync_free_paths():
                sae = t.train()
        else:
            sae = t.train()
        weights[name] = sae.state_dict()
        weights[name + "-fired"] = t.fired_count
    for k, v in weights["cpu"].items():
        torch.testing.assert_close(weights["sync-free"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert torch.equal(weights["cpu-fired"], weights["sync-free-fired"])
