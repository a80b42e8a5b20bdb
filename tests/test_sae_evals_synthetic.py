"""The synthetic suite's ground truth: the generator keeps its promises, each metric recovers the
known answer (true dictionary: recovery 1, absorption 0; a random decoder: its analytic
expectation; a hand-built absorbing dictionary: P(child | parent)), bootstrap intervals cover
the truth at their nominal rate, and the suite trains and reports in seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saes.architectures import architecture_class, create_sae
from saes.base import SAEConfig
from saes.evals.baselines import random_decoder
from saes.evals.bootstrap import bootstrap, mean_interval, ratio_interval
from saes.evals.recovery import (absorption_rows, detection, expected_max_cos, feature_recovery,
                                 mean_over_groups, splitting)
from saes.evals.synthetic import (SyntheticConfig, SyntheticModel, expected_l0, generate,
                                  true_dictionary)

ORTHO = SyntheticConfig(d=64, n_features=48, orthogonal=True, n_parents=6, children_per_parent=3,
                        mean_l0=5.0)


@pytest.fixture(scope="module")
def superposed():
    model = SyntheticModel(SyntheticConfig(), seed=0)
    return model, model.sample(20_000, seed=1)


def test_generator_frequencies_hierarchy_and_exclusive_children(superposed):
    model, data = superposed
    fire = data.codes > 0
    assert (fire.float().mean(0) - model.probs.float()).abs().max() < 0.015
    assert abs(fire.sum(1).float().mean().item() - expected_l0(model)) < 0.1
    for p in data.parents:
        kids = data.children(p)
        assert len(kids) == model.cfg.children_per_parent
        assert not (fire[:, kids].any(1) & ~fire[:, p]).any()  # never without the parent
        assert fire[:, kids].sum(1).max() <= 1  # mutually exclusive
        rate = fire[fire[:, p]][:, kids].any(1).float().mean().item()
        assert abs(rate - model.cfg.child_given_parent) < 0.05
    assert torch.allclose(data.features.norm(dim=1), torch.ones(data.features.shape[0]))
    assert data.x.shape == (20_000, 64)
    assert torch.allclose(data.x, data.codes @ data.features, atol=1e-5)
    again = generate(SyntheticConfig(), 20_000, seed=1, model_seed=0)
    assert torch.equal(again.x, data.x)  # seeded: the same rows again


def test_true_dictionary_recovers_everything_absorbs_nothing(superposed):
    _, data = superposed
    true = true_dictionary(data)
    rec = feature_recovery(true.W_dec, data.features)
    assert rec["recovery"] == pytest.approx(1.0, abs=1e-6) and rec["mcc"] == pytest.approx(1.0)
    assert (rec["match"] == np.arange(data.features.shape[0])).all()
    det = detection(data.codes, data.codes, rec["match"])  # the oracle code
    assert det["f1"].min() == pytest.approx(1.0)
    ab = absorption_rows(data.codes, true.W_dec, data.features, data.codes, data.parents,
                         rec["match"])
    assert ab["parent"].size > 1000
    assert ab["absorption_fraction"].max() == 0 and not ab["full_absorption"].any()
    assert ab["main_fired"].all()
    assert (splitting(true.W_dec, data.features) == 1).all()


def test_orthogonal_true_dictionary_encodes_the_codes_exactly():
    data = SyntheticModel(ORTHO, seed=2).sample(5000, seed=3)
    true = true_dictionary(data)
    with torch.no_grad():
        acts = true.encode(data.x)
    assert (acts - data.codes).abs().max() < 1e-5
    rec = feature_recovery(true.W_dec, data.features)
    ab = absorption_rows(acts, true.W_dec, data.features, data.codes, data.parents, rec["match"])
    assert ab["absorption_fraction"].max() == 0
    assert detection(acts, data.codes, rec["match"])["f1"].min() == pytest.approx(1.0)


def test_expected_max_cos_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    d, m = 16, 50
    u = torch.randn(4000, m, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    empirical = u[..., 0].max(1).values.mean().item()  # cos with e_0
    assert expected_max_cos(d, m) == pytest.approx(empirical, abs=0.01)
    assert expected_max_cos(64, 1) == pytest.approx(0.0, abs=1e-6)  # one vector: symmetric
    assert expected_max_cos(64, 4096) > expected_max_cos(64, 512) > expected_max_cos(256, 512)


def test_random_decoder_scores_its_analytic_expectation(superposed):
    _, data = superposed
    cfg = SAEConfig(architecture="topk", d_in=64, d_sae=1024, k=6)
    rnd = random_decoder(cfg, data.x, l0=6, seed=3)
    rec = feature_recovery(rnd.W_dec, data.features)
    expected = expected_max_cos(64, 1024)
    se = rec["max_cos"].std() / math.sqrt(len(rec["max_cos"]))
    assert abs(rec["mean_max_cos"] - expected) < 4 * se + 0.005
    assert rec["recovery"] <= rec["mean_max_cos"] + 1e-9  # one-to-one can only lose
    assert rec["recovery"] < 0.5


def _absorbing_dictionary(data, leak: float = 10.0):
    """True features, except that each child latent's decoder carries its parent's direction
    (normalised f_c + f_p) and each parent latent is silenced by its children's encoders."""
    f = data.features
    sae = true_dictionary(data)
    with torch.no_grad():
        for p in data.parents:
            for c in data.children(p):
                d = f[c] + f[p]
                sae.W_dec[c] = d / d.norm()
                sae.enc_weight[p] -= leak * f[c]
    return sae


def test_absorbing_dictionary_scores_the_child_rate():
    data = SyntheticModel(ORTHO, seed=4).sample(20_000, seed=5)
    sae = _absorbing_dictionary(data)
    with torch.no_grad():
        acts = sae.encode(data.x)
    rec = feature_recovery(sae.W_dec, data.features)
    assert (rec["match"][data.parents] == np.array(data.parents)).all()
    ab = absorption_rows(acts, sae.W_dec, data.features, data.codes, data.parents, rec["match"])
    fire = data.codes > 0
    child_rate = np.array([fire[fire[:, p]][:, data.children(p)].any(1).float().mean().item()
                           for p in data.parents])
    frac = mean_over_groups(ab["absorption_fraction"], ab["parent"])
    full = mean_over_groups(ab["full_absorption"].astype(float), ab["parent"])
    # absorbed exactly on the rows where a child fires (then the parent latent is silent)
    assert frac == pytest.approx(child_rate.mean(), abs=0.02)
    assert full == pytest.approx(child_rate.mean(), abs=0.06)
    missed = 1 - detection(acts, data.codes, rec["match"])["recall"][data.parents]
    assert np.allclose(missed, child_rate, atol=0.005)  # unless c_p > 10 c_child


def test_splitting_counts_duplicated_latents(superposed):
    _, data = superposed
    f = data.features
    noise = torch.randn(10, f.shape[1], generator=torch.Generator().manual_seed(0))
    dup = f[:10] + 0.2 * noise / noise.norm(dim=1, keepdim=True)
    W = torch.cat([f, dup / dup.norm(dim=1, keepdim=True)])
    n = splitting(W, f)
    assert (n[:10] == 2).all() and (n[10:] == 1).all()


# --------------------------------------------------------------------------- bootstrap
def test_vectorised_mean_interval_equals_the_plain_bootstrap():
    v = np.random.default_rng(1).exponential(size=53)
    fast = mean_interval(v, n_boot=500, seed=7)
    naive = bootstrap(lambda idx: float(v[idx].mean()), v.size, n_boot=500, seed=7)
    assert fast == naive
    strata = np.repeat([0, 1, 2], [20, 20, 13])
    slow = bootstrap(lambda idx: float(np.mean([v[idx[strata[idx] == s]].mean()
                                                for s in range(3)])),
                     v.size, n_boot=2000, seed=7, strata=strata)
    quick = mean_interval(v, n_boot=2000, seed=8, strata=strata)
    assert quick.value == pytest.approx(slow.value)
    assert quick.low == pytest.approx(slow.low, abs=0.08)
    assert quick.high == pytest.approx(slow.high, abs=0.08)


def _coverage(draw, truth: float, reps: int) -> float:
    return float(np.mean([draw(r).covers(truth) for r in range(reps)]))


def test_interval_of_a_mean_covers_at_nominal_rate():
    rng = np.random.default_rng(0)
    samples = rng.normal(2.0, 1.0, (300, 60))
    cov = _coverage(lambda r: mean_interval(samples[r], n_boot=400, seed=r), 2.0, 300)
    assert 0.88 <= cov <= 0.99
    cov90 = _coverage(lambda r: mean_interval(samples[r], n_boot=400, seed=r, level=0.9), 2.0,
                      300)
    assert 0.82 <= cov90 <= 0.96 and cov90 < cov + 0.02


def test_metric_intervals_cover_the_population_value_on_synthetic_draws():
    """Repeated draws of 600 synthetic rows: the FVU of a fixed random dictionary (a ratio of
    sums) and the per-parent absorption of a fixed absorbing dictionary (a mean of per-stratum
    means); the truth is the value on 200k rows."""
    model = SyntheticModel(ORTHO, seed=6)
    rnd = random_decoder(SAEConfig(architecture="topk", d_in=64, d_sae=96, k=5),
                         model.sample(4096, seed=0).x, l0=5, seed=1)
    absorber = _absorbing_dictionary(model.sample(10, seed=0))

    def stats(data):
        with torch.no_grad():
            recon = rnd.decode(rnd.encode(data.x), data.x)
            acts = absorber.encode(data.x)
        resid = (data.x - recon).pow(2).sum(1).double().numpy()
        var = (data.x - data.x.mean(0)).pow(2).sum(1).double().numpy()
        rec = feature_recovery(absorber.W_dec, data.features)
        ab = absorption_rows(acts, absorber.W_dec, data.features, data.codes, data.parents,
                             rec["match"])
        return resid, var, ab

    resid, var, ab = stats(model.sample(200_000, seed=10_000))
    true_fvu = resid.sum() / var.sum()
    true_abs = mean_over_groups(ab["absorption_fraction"], ab["parent"])
    hits_fvu, hits_abs = [], []
    for r in range(120):
        resid, var, ab = stats(model.sample(600, seed=r))
        hits_fvu.append(ratio_interval(resid, var, n_boot=300, seed=r).covers(true_fvu))
        hits_abs.append(mean_interval(ab["absorption_fraction"], strata=ab["parent"],
                                      n_boot=300, seed=r).covers(true_abs))
    assert np.mean(hits_fvu) >= 0.85
    assert np.mean(hits_abs) >= 0.85


# --------------------------------------------------------------------------- the suite
def test_synthetic_suite_trains_scores_and_writes_its_report(tmp_path):
    import pyarrow.parquet as pq

    from saes.evals import find_rows, read_report, run_suite

    sae = create_sae(SAEConfig(architecture="topk", d_in=64, d_sae=512, k=6), seed=0)
    rep = run_suite(sae, suites=("synthetic",), out=tmp_path / "evals", progress=False,
                    synthetic_tokens=200_000, synthetic_rows=4096, n_bootstrap=200)
    assert read_report(tmp_path / "evals")["rows"] == rep["rows"]
    val = {(r["metric"], r["subject"]): r for r in rep["rows"]}
    assert val["recovery", "true"]["value"] == pytest.approx(1.0)
    assert val["absorption_fraction", "true"]["value"] == 0
    assert val["fvu", "true"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert val["recovery", "sae"]["value"] > val["recovery", "random"]["value"] + 0.15
    assert val["detection_f1", "sae"]["value"] > val["detection_f1", "random"]["value"]
    info = rep["suites"]["synthetic"]
    assert val["mean_max_cos", "random"]["value"] == pytest.approx(
        info["random_expected_max_cos"], abs=0.03)
    for r in rep["rows"]:
        if r["ci_low"] is not None:
            assert r["ci_low"] <= r["value"] + 1e-9 <= r["ci_high"] + 2e-9
    assert find_rows(rep, "synthetic", "recovery", "sae")[0]["n"] == 512
    table = pq.read_table(tmp_path / "evals" / "synthetic_features.parquet").to_pydict()
    assert set(table["subject"]) == {"sae", "random", "pca", "true"}
    assert len(pq.read_table(tmp_path / "evals" / "metrics.parquet")) == len(rep["rows"])
    assert architecture_class("topk")  # the run's architecture was the one trained
    assert info["sae_config"]["architecture"] == "topk" and info["sae_config"]["d_sae"] == 512


def test_eval_sae_suite_writes_report_tables_and_figures_of_a_saelens_directory(tmp_path):
    import plotly.io as pio
    from typer.testing import CliRunner

    from interp.cli import app
    from saes.evals import read_report
    from saes.formats import save_saelens

    sae = create_sae(SAEConfig(architecture="topk", d_in=64, d_sae=256, k=6,
                               hook_name="blocks.0.hook_resid_post"), seed=0)
    save_saelens(sae, tmp_path / "sae")
    res = CliRunner().invoke(app, ["eval-sae", str(tmp_path / "sae"), "--suite", "synthetic",
                                   "--baselines", "random", "--set", "synthetic_tokens=40000",
                                   "--set", "synthetic-rows=1024", "--n-bootstrap", "50",
                                   "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "sae" / "evals"
    rep = read_report(out)
    assert rep["config"]["n_bootstrap"] == 50 and rep["config"]["baselines"] == ["random"]
    assert rep["config"]["synthetic_rows"] == 1024
    assert "recovery" in res.output and "report.json" in res.output
    assert {r["subject"] for r in rep["rows"]} == {"sae", "random", "true"}
    assert (out / "metrics.parquet").is_file() and (out / "synthetic_features.parquet").is_file()
    assert set(rep["figures"]) == {"synthetic", "synthetic_recovery"}
    fig = pio.read_json(out / rep["figures"]["synthetic_recovery"])
    assert {t.name for t in fig.data} == {"sae", "random", "true"}
    bad = CliRunner().invoke(app, ["eval-sae", str(tmp_path / "sae"), "--suite", "synthetic",
                                   "--set", "probe_ks=one"])
    assert bad.exit_code == 2 and "probe_ks" in bad.output
    typo = CliRunner().invoke(app, ["eval-sae", str(tmp_path / "sae"), "--suite", "synthetic",
                                    "--set", "n_window=3"])
    assert typo.exit_code == 2 and "n_windows" in typo.output


def test_synthetic_suite_reruns_with_other_settings_in_the_same_directory(tmp_path):
    from saes.evals import run_suite

    sae = create_sae(SAEConfig(architecture="topk", d_in=64, d_sae=512, k=6), seed=0)
    kw = dict(suites=("synthetic",), out=tmp_path, progress=False, synthetic_rows=1024,
              n_bootstrap=50, baselines=())
    a = run_suite(sae, synthetic_tokens=20_480, **kw)
    b = run_suite(sae, synthetic_tokens=20_480, **kw)  # the finished synthetic SAE is reused
    assert a["rows"] == b["rows"]
    c = run_suite(sae, synthetic_tokens=30_720, **kw)  # other settings: trained afresh
    assert c["suites"]["synthetic"]["train_tokens"] == 30_720


@pytest.mark.parametrize("arch,extra", [
    ("topk", {"k": 32, "aux_k": 256}), ("batchtopk", {"k": 32}),
    ("matryoshka_batchtopk", {"k": 32, "matryoshka_widths": (144, 288, 576)}),
    ("jumprelu", {"l0_coefficient": 0.5}), ("standard", {"l1_coefficient": 5.0}),
])
def test_synthetic_config_of_every_architecture_makes_a_dictionary(arch, extra):
    """The synthetic suite retrains the run's architecture at the generator's size: top-k
    settings are resized only where the architecture takes them (JumpReLU and standard runs
    must not be given a k)."""
    from saes.evals.synthetic import synthetic_sae_config

    scfg = SyntheticConfig()
    run_cfg = SAEConfig(architecture=arch, d_in=576, d_sae=1152, hook_name="h", **extra)
    cfg = synthetic_sae_config(run_cfg, scfg, true_l0=6.2)
    sae = create_sae(cfg, seed=0)
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (scfg.d, scfg.n_features)
    if "k" in extra:
        assert cfg.k == 6 and cfg.aux_k <= scfg.n_features // 2
    for name in ("l0_coefficient", "l1_coefficient"):
        assert getattr(cfg, name) == getattr(run_cfg, name)
    if arch == "matryoshka_batchtopk":
        assert cfg.matryoshka_widths == (64, 128, 256)  # the same proportions of 512
