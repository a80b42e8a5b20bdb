"""Every SAE architecture trains on a toy sparse problem; pseudo-gradients and a property from
each paper (JumpReLU, Gated, Matryoshka, discrete codes, the April-update penalty)."""

from __future__ import annotations

import math

import pytest
import torch

from interp.errors import ConfigError
from saes.architectures.discrete import code_overlap
from saes.architectures.jumprelu import JumpReLUFunction, StepFunction
from saes.architectures import ARCHITECTURES, create_sae
from saes.base import SAEConfig

D_IN, D_SAE, D_OUT = 16, 64, 12




def toy_problem(n_feat: int = 32, active: int = 3, d_out: int | None = None, seed: int = 0):
    """x = a sparse combination of `active` of `n_feat` random unit directions in R^16 plus
    noise; for transcoders the target is the same code through other random directions."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_feat, D_IN, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    out_dirs = torch.randn(n_feat, d_out, generator=g) / d_out ** 0.5 if d_out else None

    def sample(n: int, gen: torch.Generator):
        idx = torch.rand(n, n_feat, generator=gen).argsort(1)[:, :active]
        c = torch.zeros(n, n_feat).scatter(1, idx, torch.rand(n, active, generator=gen) + 0.5)
        x = c @ dirs + 0.01 * torch.randn(n, D_IN, generator=gen)
        return x, (c @ out_dirs if out_dirs is not None else x)

    return sample


def fit(sae, sample, steps: int = 100, lr: float = 1e-2, batch: int = 256, seed: int = 1):
    """The trainer's step in miniature: Adam, sparsity warm-up, unit-norm decoder if asked."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    for step in range(steps):
        x, y = sample(batch, g)
        out = sae.training_loss(x, y, dead=None, sparsity_scale=min(1.0, (step + 1) / 20))
        opt.zero_grad()
        out.loss.backward()
        if sae.unit_norm_decoder:
            sae.remove_parallel_grad()
        opt.step()
        if sae.unit_norm_decoder:
            sae.normalise_decoder()
    return sae


def fvu(y, recon) -> float:
    return float((y - recon).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


def held_out(sae, sample):
    """(FVU, L0) of the training forward on a fresh batch."""
    x, y = sample(1024, torch.Generator().manual_seed(99))
    with torch.no_grad():
        out = sae.training_loss(x, y)
    return fvu(y, out.recon), float(out.l0)


SAE_CASES = {
    "topk": dict(k=4),
    "batchtopk": dict(k=4),
    "matryoshka_batchtopk": dict(k=4, matryoshka_widths=(8, 32)),
    "discrete": dict(k=3),
    "standard": dict(l1_coefficient=0.7),
    "gated": dict(l1_coefficient=1.0),
    "jumprelu": dict(l0_coefficient=0.1, jumprelu_init_threshold=0.1, jumprelu_bandwidth=0.05),
    "jumprelu-tanh": dict(l0_coefficient=0.1, jumprelu_sparsity="tanh",
                          jumprelu_init_threshold=0.1, jumprelu_bandwidth=0.05),
}
TC = dict(transcoder=True, d_out=D_OUT)
TRANSCODER_CASES = {
    "standard": dict(l1_coefficient=0.3, **TC),
    "standard-skip": dict(l1_coefficient=0.3, skip=True, **TC),
    "gated": dict(l1_coefficient=0.5, **TC),
    "jumprelu": dict(SAE_CASES["jumprelu"], **TC),
    "jumprelu-skip": dict(SAE_CASES["jumprelu"], skip=True, **TC),
    "topk": dict(k=4, **TC),
    "topk-skip": dict(k=4, skip=True, **TC),
    "batchtopk": dict(k=4, **TC),
    "batchtopk-skip": dict(k=4, skip=True, **TC),
}
CASES = ([pytest.param(k.split("-")[0], v, id=k) for k, v in SAE_CASES.items()]
         + [pytest.param(k.split("-")[0], v, id=f"transcoder-{k}")
            for k, v in TRANSCODER_CASES.items()])


def test_every_registered_architecture_is_trained_here():
    assert set(ARCHITECTURES) <= {k.split("-")[0] for k in SAE_CASES}


@pytest.mark.parametrize("arch,kw", CASES)
def test_trains_on_toy_problem(arch, kw):
    sae = create_sae(SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, **kw), seed=0)
    sample = toy_problem(d_out=kw.get("d_out"))
    fvu0, _ = held_out(sae, sample)
    fit(sae, sample)
    fvu1, l0 = held_out(sae, sample)
    assert fvu1 < 0.5 and fvu1 < 0.5 * fvu0, (fvu0, fvu1)
    assert 0 < l0 <= D_SAE / 4, l0
    if arch not in ("batchtopk", "matryoshka_batchtopk"):  # those encode with the threshold
        x, y = sample(512, torch.Generator().manual_seed(5))
        with torch.no_grad():
            acts = sae.encode(x)
            assert fvu(y, sae.decode(acts, x)) < 0.5
        assert float((acts > 0).sum(-1).float().mean()) <= D_SAE / 4


# ------------------------------------------------------------------ JumpReLU (2407.14435)
def test_jumprelu_pseudo_derivatives_match_rectangle_kernel():
    """d/dtheta JumpReLU = -(theta/eps) K((z-theta)/eps), d/dtheta H = -(1/eps) K(...),
    K = 1[|u| < 1/2], summed over rows; d/dz JumpReLU = H(z - theta), d/dz H = 0."""
    eps = 0.1
    z = torch.tensor([[0.5, 1.02, 1.97, 2.0], [1.04, 0.2, 2.01, 0.53]], requires_grad=True)
    theta = torch.tensor([1.0, 1.0, 2.0, 0.5], requires_grad=True)
    # (z - theta)/eps: row 0 -> [-5, 0.2, -0.3, 15], row 1 -> [0.4, -8, 0.1, 0.3]
    k_count = torch.tensor([1.0, 1.0, 2.0, 1.0])  # rows inside the kernel, per latent
    out = JumpReLUFunction.apply(z, theta, eps)
    assert torch.equal(out.detach(), z.detach() * (z.detach() > theta.detach()))
    (2 * out).sum().backward()
    assert torch.allclose(theta.grad, 2 * -(theta.detach() / eps) * k_count)
    assert torch.equal(z.grad, 2 * (z.detach() > theta.detach()).float())
    z.grad = theta.grad = None
    StepFunction.apply(z, theta, eps).sum().backward()
    assert torch.allclose(theta.grad, -(1 / eps) * k_count)
    assert z.grad is None or not z.grad.any()


def test_jumprelu_threshold_gradient_goes_through_log_parameter():
    cfg = SAEConfig(architecture="jumprelu", d_in=D_IN, d_sae=D_SAE, l0_coefficient=1.0,
                    jumprelu_init_threshold=0.2, jumprelu_bandwidth=0.5)
    sae = create_sae(cfg, seed=0)
    x = torch.randn(64, D_IN)
    sae.training_loss(x, x).loss.backward()
    g = sae.log_threshold.grad
    assert g is not None and g.abs().sum() > 0


def test_jumprelu_threshold_above_all_pre_acts_gives_zero_acts():
    sae = create_sae(SAEConfig(architecture="jumprelu", d_in=D_IN, d_sae=D_SAE), seed=0)
    x = torch.randn(128, D_IN)
    with torch.no_grad():
        sae.log_threshold.fill_(math.log(float(sae.pre_acts(x).max()) + 1.0))
        out = sae.training_loss(x, x)
        assert not sae.encode(x).any()
    assert float(out.l0) == 0 and not out.fired.any()
    assert torch.allclose(out.recon, sae.b_dec.expand_as(x))


def test_jumprelu_rejects_unknown_sparsity_mode():
    with pytest.raises(ConfigError, match="step"):
        create_sae(SAEConfig(architecture="jumprelu", d_in=4, d_sae=8, jumprelu_sparsity="l1"))


# ------------------------------------------------------------------ Gated (2404.16014)
def test_gated_aux_loss_does_not_reach_decoder_and_l1_only_the_gate():
    sae = create_sae(SAEConfig(architecture="gated", d_in=D_IN, d_sae=D_SAE), seed=0)
    with torch.no_grad():
        sae.r_mag.normal_(0, 0.3)
        sae.b_mag.normal_(0, 0.3)
    x = torch.randn(64, D_IN)
    sae.loss_terms(x, x)["aux"].backward()
    assert sae.W_dec.grad is None or not sae.W_dec.grad.any()
    assert sae.enc_weight.grad.abs().sum() > 0 and sae.b_enc.grad.abs().sum() > 0
    sae.zero_grad(set_to_none=True)
    sae.loss_terms(x, x)["l1"].backward()  # the sparsity penalty never shrinks magnitudes
    assert sae.r_mag.grad is None and sae.b_mag.grad is None
    sae.zero_grad(set_to_none=True)
    sae.loss_terms(x, x)["mse"].backward()  # the gate is a step: no mse gradient to b_gate
    assert sae.b_enc.grad is None or not sae.b_enc.grad.any()


def test_gated_acts_are_gate_times_magnitude():
    sae = create_sae(SAEConfig(architecture="gated", d_in=D_IN, d_sae=D_SAE), seed=0)
    with torch.no_grad():
        sae.r_mag.normal_(0, 0.3)
        sae.b_mag.normal_(0, 0.3)
        sae.b_enc.normal_(0, 0.3)
    x = torch.randn(32, D_IN)
    xc = x - sae.b_dec
    gate = xc @ sae.W_enc + sae.b_gate
    mag = xc @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), (gate > 0) * mag.relu(), atol=1e-6)


# ------------------------------------------------------------------ Matryoshka (2503.17547)
def test_matryoshka_single_width_equals_batchtopk_loss():
    cfg = SAEConfig(architecture="batchtopk", d_in=D_IN, d_sae=D_SAE, k=4)
    base = create_sae(cfg, seed=0)
    mat = create_sae(SAEConfig(**{**cfg.to_dict(), "architecture": "matryoshka_batchtopk"}))
    mat.load_state_dict(base.state_dict())
    x = torch.randn(128, D_IN)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    a, b = base.training_loss(x, x, dead=dead), mat.training_loss(x, x, dead=dead)
    assert torch.allclose(a.loss, b.loss) and torch.allclose(a.recon, b.recon)
    a.loss.backward()
    b.loss.backward()
    assert torch.allclose(base.W_dec.grad, mat.W_dec.grad, atol=1e-6)


def test_matryoshka_widths_are_validated():
    assert create_sae(SAEConfig(architecture="matryoshka_batchtopk", d_in=4, d_sae=8,
                                matryoshka_widths=(2, 4))).widths == (2, 4, 8)
    for bad in [(4, 2), (0, 4), (4, 16)]:
        with pytest.raises(ConfigError, match="matryoshka_widths"):
            create_sae(SAEConfig(architecture="matryoshka_batchtopk", d_in=4, d_sae=8,
                                 matryoshka_widths=bad))


def test_matryoshka_smaller_prefixes_reconstruct_worse():
    cfg = SAEConfig(architecture="matryoshka_batchtopk", d_in=D_IN, d_sae=D_SAE, k=4,
                    matryoshka_widths=(4, 16, 32))
    sample = toy_problem()
    sae = fit(create_sae(cfg, seed=0), sample)
    x, _ = sample(1024, torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = sae.training_loss(x, x)
    levels = [float(out.parts[f"mse_{w}"]) for w in (4, 16, 32, 64)]
    assert all(a > b for a, b in zip(levels, levels[1:])), levels
    assert math.isclose(float(out.parts["mse"]), sum(levels) / 4, rel_tol=1e-5)


# ------------------------------------------------------------------ Discrete codes (2405.12522)
def _one_feature_problem(n_feat=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_feat, D_IN, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)

    def sample(n, gen, feats=range(n_feat)):
        j = torch.as_tensor(list(feats))[torch.randint(len(feats), (n,), generator=gen)]
        a = torch.rand(n, generator=gen) + 0.5
        x = a[:, None] * dirs[j] + 0.01 * torch.randn(n, D_IN, generator=gen)
        return x, j

    return sample


@pytest.fixture(scope="module")
def discrete_sae():
    sample = _one_feature_problem()
    sae = create_sae(SAEConfig(architecture="discrete", d_in=D_IN, d_sae=32, k=1), seed=0)
    fit(sae, lambda n, g: (sample(n, g)[0],) * 2)
    return sae, sample


def test_discrete_codes_recover_the_generating_feature(discrete_sae):
    sae, sample = discrete_sae
    x, j = sample(2000, torch.Generator().manual_seed(3))
    codes = sae.codes(x)
    assert codes.shape == (2000, 1) and codes.dtype == torch.long
    modes = []
    for f in range(12):  # each feature's inputs share one code, and features get distinct codes
        c = codes[j == f, 0]
        counts = torch.bincount(c)
        assert counts.max() / len(c) > 0.9
        modes.append(int(counts.argmax()))
    assert len(set(modes)) == 12


def test_discrete_code_overlap_separates_task_from_control(discrete_sae):
    """Positive examples use features 0-7, negative 4-11: the codes of 0-3 are unique to the
    positives (about half of them); a control with identical distributions has ~none."""
    sae, sample = discrete_sae
    g = torch.Generator().manual_seed(4)
    task = code_overlap(sae.codes(sample(400, g, range(8))[0]),
                        sae.codes(sample(400, g, range(4, 12))[0]))
    control = code_overlap(sae.codes(sample(400, g)[0]), sae.codes(sample(400, g)[0]))
    assert 0.35 < task.example_share < 0.65 and len(task.unique) >= 4
    assert control.example_share < 0.05 and task.share > control.share


def test_code_overlap_by_hand():
    r = code_overlap(torch.tensor([1, 2, 2, 3]), torch.tensor([[3], [4]]))
    assert r.unique == {(1,), (2,)}
    assert r.share == pytest.approx(2 / 3) and r.example_share == pytest.approx(3 / 4)
    r = code_overlap(torch.tensor([[1, 2], [5, 6]]), torch.tensor([[2, 1]]))  # sets of latents
    assert r.unique == {(5, 6)} and r.share == 0.5


def test_discrete_codes_are_ordered_by_activation():
    sae = create_sae(SAEConfig(architecture="discrete", d_in=D_IN, d_sae=D_SAE, k=3), seed=0)
    x = torch.randn(16, D_IN)
    codes = sae.codes(x)
    pre = sae.pre_acts(x).detach()
    vals = pre.gather(1, codes)
    assert (vals[:, :-1] >= vals[:, 1:]).all()
    assert torch.equal(codes[:, 0], pre.argmax(-1))
    assert torch.equal(sae.encode(x).detach().argmax(-1), codes[:, 0])


# ------------------------------------------------------------------ April-update penalty
def test_standard_penalty_is_invariant_to_decoder_rescaling():
    """The L1 term weighs f_j by ||W_dec_j||, so scaling a latent's encoder by c and its decoder
    row by 1/c changes nothing: no incentive to shrink f by growing W_dec."""
    cfg = SAEConfig(architecture="standard", d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.5)
    sae = create_sae(cfg, seed=0)
    assert sae.unit_norm_decoder is False
    x = torch.randn(64, D_IN)
    before = sae.training_loss(x, x)
    c = torch.rand(D_SAE) * 3 + 0.2
    with torch.no_grad():
        sae.enc_weight.mul_(c[:, None])
        sae.b_enc.mul_(c)
        sae.W_dec.div_(c[:, None])
    after = sae.training_loss(x, x)
    assert torch.allclose(before.loss, after.loss, rtol=1e-5)
    assert torch.allclose(before.parts["l1"], after.parts["l1"], rtol=1e-5)


def _standard_case(kind: str):
    """A standard SAE (fp64) in a trained-looking state (uneven norms, biases, a sparse code),
    a batch, and autograd's loss and gradients on the formula."""
    tc = dict(transcoder=True, d_out=D_OUT) if kind == "transcoder" else {}
    cfg = SAEConfig(architecture="standard", d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.3, **tc)
    sae = create_sae(cfg, seed=0).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1, generator=g, dtype=torch.float64) + 0.5)
        sae.b_enc.sub_(0.3)
        sae.b_dec.normal_(generator=g)
    x = torch.randn(48, D_IN, generator=g, dtype=torch.float64)
    y = torch.randn(48, D_OUT, generator=g, dtype=torch.float64) if tc else x
    params = [sae.enc_weight, sae.b_enc, sae.W_dec, sae.b_dec]
    ref = sae.reference_loss(x, y, sparsity_scale=0.7)
    return cfg, x, y, params, ref, torch.autograd.grad(ref.loss, params)


# dense: matmuls; sparse: the code's gradient by SDDMM; sparse-mm: by a dense matmul read at
# the active entries (the path for moderately sparse codes)
PATHS = {"dense": (-1.0, 1.0), "sparse": (1.0, 1.0), "sparse-mm": (1.0, -1.0)}


@pytest.mark.parametrize("paths", ["cpu", "sync-free"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("kind", ["sae", "transcoder"])
def test_standard_fused_step_matches_autograd(path, kind, paths):
    """`StandardStep`'s hand-written backward (dense and sparse-code paths) gives autograd's
    loss and gradients on the formula, for an SAE (b_dec shifts the input) and a transcoder;
    again with reused buffers (a workspace), twice in a row. "sync-free": the accelerator's
    path (always dense, the L0 a device tensor)."""
    import contextlib

    from saes.kernels import sync_free_paths

    with sync_free_paths() if paths == "sync-free" else contextlib.nullcontext():
        _check_standard_step(path, kind)


def _check_standard_step(path, kind):
    from saes.architectures.standard import StandardStep

    cfg, x, y, params, ref, want = _standard_case(kind)
    density, sddmm_density = PATHS[path]
    work: dict = {}
    for workspace in (None, work, work):
        loss, recon, mse, l1, fired, l0 = StandardStep.apply(
            x, y, *params, 0.7 * 0.3, cfg.apply_b_dec_to_input, density, None, sddmm_density,
            workspace)
        got = torch.autograd.grad(loss, params)
        assert torch.allclose(loss, ref.loss, rtol=1e-12)
        assert torch.allclose(recon, ref.recon, atol=1e-12)
        assert torch.allclose(l1, ref.parts["l1"], rtol=1e-12)
        assert torch.equal(fired, ref.fired) and l0 == pytest.approx(float(ref.l0))
        assert 0 < l0 < D_SAE / 2  # a sparse code: the test exercises the masking
        for name, a, b in zip(["W_enc", "b_enc", "W_dec", "b_dec"], got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    assert work["acts"].shape == (48, D_SAE)  # the buffer was made once and kept


@pytest.mark.parametrize("path", list(PATHS))
def test_standard_fused_step_bf16_close_to_exact(path):
    """With bf16 for every [batch, d_sae] operation (fp32 weights), the loss and every gradient
    stay near the exact ones (relative error of the whole tensor: a few percent, as entries
    whose pre-activation is within bf16 rounding of 0 switch sides; a wrong index is O(1))."""
    from saes.architectures.standard import StandardStep

    cfg, x, y, params, ref, want = _standard_case("sae")
    p32 = [p.detach().float().requires_grad_() for p in params]
    density, sddmm_density = PATHS[path]
    loss, recon, mse, l1, fired, l0 = StandardStep.apply(
        x.float(), y.float(), *p32, 0.7 * 0.3, True, density, torch.bfloat16, sddmm_density, {})
    got = torch.autograd.grad(loss, p32)
    assert float(loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=2e-2)
    assert l0 == pytest.approx(float(ref.l0), rel=0.05)
    for name, a, b in zip(["W_enc", "b_enc", "W_dec", "b_dec"], got, want):
        assert float((a.double() - b).norm() / b.norm()) < 0.05, name
