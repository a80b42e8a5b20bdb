"""Atoms (Hu et al., arXiv 2509.20784): AIP estimation, coherence/uniqueness, the threshold SAE
theorem in float64, sparse recovery, q* of neurons, training a TSAE through the trainer."""

from __future__ import annotations

import math

import pytest
import torch

from saes.atoms.aip import (angle_diagnostic, estimate_metric, metric_roots,
                            relative_error_up_to_scale)
from saes.atoms.coherence import (coherence, empirical_rip, faithfulness_r2, q_star,
                                  q_star_quantile, rip_bound, uniqueness_bound, unit_coherence)
from saes.atoms.recovery import basis_pursuit, omp, recovery_rate
from saes.atoms.synthetic import bernoulli_codes, k_sparse_codes, synthetic_atoms
from saes.atoms.tsae import refit_codes, threshold_interval, threshold_sae

K, DMIN, DMAX = 3, 0.8, 1.0


@pytest.fixture(scope="module")
def atoms():
    return synthetic_atoms(64, seed=0)


@pytest.fixture(scope="module")
def data(atoms):
    codes = k_sparse_codes(3000, atoms.D.shape[0], K, DMIN, DMAX, seed=1)
    return codes, codes @ atoms.D


def _tsae_run(atoms, m, tau):
    sae = threshold_sae(atoms.D, atoms.S, tau)
    with torch.no_grad():
        f = sae.encode(m)
    return f, refit_codes(atoms.D, atoms.S, m, f > 0)


def test_synthetic_atoms_have_the_stated_aip_coherence(atoms):
    assert abs(coherence(atoms.D, atoms.S) - atoms.eps) < 1e-9
    assert coherence(atoms.D) > 2 * atoms.eps  # the representation shift hides it in Euclid
    assert torch.allclose(((atoms.D @ atoms.S) * atoms.D).sum(1), torch.ones(128, dtype=torch.float64))
    assert rip_bound(atoms.eps, K) < 1 and atoms.eps < uniqueness_bound(K)
    assert empirical_rip(atoms.D, atoms.S, K, n_supports=50) <= rip_bound(atoms.eps, K) + 1e-12


def test_threshold_inside_the_interval_recovers_exactly(atoms, data):
    codes, m = data
    lo, hi = threshold_interval(atoms.eps, K, DMIN, DMAX)
    assert DMIN > atoms.eps * (2 * K - 1) * DMAX and lo < hi
    f, refit = _tsae_run(atoms, m, (lo + hi) / 2)
    assert torch.equal(f > 0, codes > 0)  # the support of every sample, exactly
    assert float((refit @ atoms.D - m).abs().max()) < 1e-11
    assert float((refit - codes).abs().max()) < 1e-11
    # the one-layer decode keeps the interference term, bounded by eps (K-1) delta_max per unit
    pre = f[codes > 0].detach() - codes[codes > 0]
    assert float(pre.abs().max()) <= atoms.eps * (K - 1) * DMAX + 1e-12


@pytest.mark.parametrize("side", ["above", "below"])
def test_threshold_outside_the_interval_fails_for_some_sample(atoms, data, side):
    codes, m = data
    lo, hi = threshold_interval(atoms.eps, K, DMIN, DMAX)
    tau = hi + 0.05 if side == "above" else lo - 0.05
    f, refit = _tsae_run(atoms, m, tau)
    wrong = ~(f > 0).eq(codes > 0).all(1)
    assert int(wrong.sum()) > 0
    if side == "above":  # a missed atom cannot be refitted: reconstruction fails
        assert float((refit @ atoms.D - m).abs().max()) > 1e-3


def test_centred_metric_estimate_converges_to_dd_inverse(atoms):
    errs = {}
    for n in (2_000, 100_000):
        c = bernoulli_codes(n, 128, K / 128, DMIN, DMAX, seed=2)
        errs[n] = relative_error_up_to_scale(estimate_metric(c @ atoms.D, center=True, ridge=0),
                                             torch.linalg.inv(atoms.D.T @ atoms.D))
    assert errs[100_000] < 0.015 and errs[100_000] < errs[2_000] / 3
    # the uncentred (literal) estimator keeps a rank-one bias from the codes' mean
    c = bernoulli_codes(100_000, 128, K / 128, DMIN, DMAX, seed=2)
    unc = relative_error_up_to_scale(estimate_metric(c @ atoms.D, ridge=0), atoms.S)
    assert unc > 2 * errs[100_000]


def test_neurons_have_q_star_near_zero_atoms_near_one(atoms, data):
    codes, m = data
    S = estimate_metric(m, center=False)
    neurons = q_star(unit_coherence(torch.eye(64), S), m)  # dense: K = H
    assert max(neurons.values()) < 0.05
    assert faithfulness_r2(m, m) == 1.0 and faithfulness_r2(m, m, S) == 1.0
    q = q_star(unit_coherence(atoms.D, atoms.S), codes)
    assert q == {"quantile": 1.0, "per_unit": 1.0, "per_sample": 1.0}


def test_q_star_quantile_form_is_the_crossing_point():
    mu = torch.linspace(0, 1, 1001)  # mu_q = q
    k = torch.ones(1001)  # K_q = 1: bound 1, satisfied while mu_q < 1
    assert q_star_quantile(mu, k) == pytest.approx(0.999)
    k = torch.full((1001,), 3.0)  # bound 0.2
    assert q_star_quantile(mu, k) == pytest.approx(0.199, abs=2e-3)


def test_aip_faithfulness_is_invariant_to_a_representation_shift(atoms, data):
    codes, m = data
    g = torch.Generator().manual_seed(0)
    noise = torch.zeros_like(m)
    noise[:, :8] = 0.2 * torch.randn(m.shape[0], 8, generator=g, dtype=torch.float64)
    noisy = m + noise  # an error in a few coordinates only
    r_e, r_a = faithfulness_r2(m, noisy), faithfulness_r2(m, noisy, atoms.S)
    assert 0 < r_e < 1 and r_a < 1
    B = torch.diag(torch.logspace(-1, 1, 64, dtype=torch.float64)) @ (
        torch.eye(64, dtype=torch.float64) + torch.randn(64, 64, generator=g,
                                                         dtype=torch.float64) / 8)
    Bi = torch.linalg.inv(B)
    S2 = Bi.T @ atoms.S @ Bi  # the metric of the shifted representation x B^T
    assert faithfulness_r2(m @ B.T, noisy @ B.T, S2) == pytest.approx(r_a, abs=1e-9)
    assert abs(faithfulness_r2(m @ B.T, noisy @ B.T) - r_e) > 1e-2


def test_omp_and_basis_pursuit_recover_unique_codes(atoms, data):
    codes, m = data
    for found in (omp(atoms.D, m[:20], K, atoms.S), basis_pursuit(atoms.D, m[:20], atoms.S)):
        rate = recovery_rate(codes[:20], found)
        assert rate["exact"] == 1.0 and rate["support"] == 1.0


def test_angle_diagnostic_centres_aip_angles_at_90():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 32, generator=g, dtype=torch.float64) + 3.0  # shifted: small angles
    S = estimate_metric(x)
    d = angle_diagnostic(x, S, n_pairs=4000)
    assert d["euclid_mean_deg"] < 60 and abs(d["aip_mean_deg"] - 90) < 3
    assert sum(d["aip_hist"]) == 4000


def test_trained_tsae_through_the_trainer_reconstructs(tmp_path):
    from saes.atoms.tsae import atom_sae_config, train_whitened_sae

    sa = synthetic_atoms(16, seed=3)
    codes = k_sparse_codes(8192, 32, 2, 0.8, 1.0, seed=4)
    x = (codes @ sa.D).float()
    S = estimate_metric(x)
    sae = train_whitened_sae(x, S, tmp_path, atom_sae_config(16, 64, l0_coefficient=0.01,
                                                      init_threshold=0.1),
                             total_tokens=512 * 150, batch_size=512)
    with torch.no_grad():
        f = sae.encode(x)
        r2 = faithfulness_r2(x, sae.decode(f), S)
    assert r2 > 0.9
    half, half_inv = metric_roots(S)
    rows = sae.W_dec.double() @ half  # equal norms in the whitened space = equal AIP norms
    live = f.gt(0).any(0)              # (unit norm times the trainer's folded data scale)
    norms = rows[live].norm(dim=1)
    assert float(norms.max() / norms.min()) < 1 + 1e-4
    assert math.isfinite(coherence(sae.W_dec[live], S))
