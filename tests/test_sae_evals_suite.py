"""The LM suites end to end on tiny models (a trained SAE run, its store, the report, the run's
artefacts, seeds), SCR and TPP against planted concepts, first-letter absorption on a word-level
tiny model whose embeddings carry the first letter, and the optimised pieces against plain
references."""

from __future__ import annotations

import random
import string

import numpy as np
import pytest
import torch

from interp.caching import cache_activations
from interp.store import StoreConfig
from saes.architectures import architecture_class, create_sae
from saes.base import SAEConfig
from saes.evals import EvalData, EvalDataConfig, find_rows, read_report, run_suite
from saes.evals.baselines import make_baseline, mean_l0
from saes.evals.context import encode_rows
from saes.evals.linear import fit_logistic, fit_multi_probe, fit_probe_sgd, top_k_mean_diff
from saes.evals.metrics.absorption import split_features
from saes.evals.metrics.scr_tpp import (quadrant_sets, scr_direction, scr_statistic, top_n,
                                        tpp_scores, tpp_statistic)
from saes.evals.synthetic import SyntheticConfig, SyntheticModel, true_dictionary
from saes.evals.tasks import binary_examples, class_means, latent_features

HOOK = "blocks.0.hook_resid_post"
QUICK = dict(n_bootstrap=100, n_windows=160, context_size=32, lm_windows=3, eval_rows=1024,
             probe_train=240, probe_test=120, synthetic_tokens=60_000, synthetic_rows=2048,
             autointerp_latents=2, autointerp_examples=2, probe_ks=(1, 5), scr_top_n=(2, 8))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sae_run(tiny_llama, tiny_llama_dir, tmp_path_factory):
    """A top-k SAE trained on the tiny Llama's layer-0 residual stream, as a workspace run."""
    from saes.data import DataConfig
    from saes.runs import train_run
    from saes.train import TrainConfig

    root = tmp_path_factory.mktemp("ws")
    store = root / "runs" / "activations" / "tiny"
    cache_activations(store, StoreConfig(model=str(tiny_llama_dir), hooks=(HOOK,),
                                         n_tokens=64 * 80, context_size=64), model=tiny_llama,
                      progress=False)
    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=64, d_sae=128, k=8, hook_name=HOOK),
                      total_tokens=256 * 24, batch_size=256, checkpoint_every=0)
    run = train_run(cfg, DataConfig(activations=str(store)), root / "runs" / "sae" / "tiny-topk", progress=False, evaluate=False)
    return run.path


def test_whole_suite_on_a_tiny_run_writes_report_artefact_and_seed_spread(sae_run, tiny_llama,
                                                                           tiny_llama_dir):
    from interp.workspace import load_run

    suites = ("core", "probing", "absorption", "synthetic", "autointerp", "scr", "tpp")
    rep = run_suite(sae_run, suites=suites, model=tiny_llama, progress=False, seeds=2,
                    explainer=str(tiny_llama_dir), **QUICK)
    assert (sae_run / "evals" / "report.json").is_file()
    assert read_report(sae_run)["rows"] == rep["rows"]
    assert load_run(sae_run).artefacts["evals"] == "evals/report.json"
    assert (sae_run.parent / "tiny-topk-seed1" / "sae" / "cfg.json").is_file()  # seed retrained
    assert rep["n_seeds"] == 2 and set(rep["timing"]) >= set(suites)
    seen = {(r["suite"], r["subject"]) for r in rep["rows"]}
    for suite in ("core", "probing", "synthetic", "autointerp"):
        assert (suite, "sae") in seen and (suite, "random") in seen, suite
    assert ("probing", "model") in seen and ("core", "pca") in seen
    for r in rep["rows"]:
        if r["subject"] == "sae" and r["value"] is not None and r["suite"] != "synthetic":
            assert r["n_seeds"] == 2 and r["seed_sd"] is not None, r
        if r["ci_low"] is not None:
            assert r["ci_low"] - 1e-9 <= r["ci_high"]
    for r in find_rows(rep, "scr") + find_rows(rep, "tpp"):
        assert r["unreliable"] and "2605.18229" in r["warning"]
    assert any("2605.18229" in w for w in rep["warnings"])
    # the tiny character-level model has no single-token words: absorption says why and
    # falls back to the synthetic hierarchy
    ab = rep["suites"]["absorption"]
    assert ab["source"] == "synthetic" and "single-token words" in ab["reason"]
    assert find_rows(rep, "absorption", "absorption_fraction", "true")[0]["value"] == 0
    ai = rep["suites"]["autointerp"]
    assert ai["placeholder"] is False and ai["scorer"] == tiny_llama_dir.name
    core = {r["metric"]: r for r in find_rows(rep, "core", subject="neurons")}
    assert core["fvu"]["value"] == pytest.approx(0.0, abs=1e-9) and core["l0"]["value"] == 64
    l0_random = find_rows(rep, "core", "l0", "random")[0]["value"]
    assert l0_random == round(find_rows(rep, "core", "l0", "sae")[0]["value"])  # same sparsity
    assert (sae_run / "evals" / "probing_tasks.parquet").is_file()
    assert (sae_run / "evals" / "autointerp_latents.parquet").is_file()
    # a second run on the same settings reuses the cached activations and gives the same bytes
    cached = sae_run / "evals" / "data" / "data.safetensors"
    stamp = cached.stat().st_mtime_ns
    again = run_suite(sae_run, suites=("probing",), model=tiny_llama, progress=False, **QUICK)
    assert cached.stat().st_mtime_ns == stamp
    assert [r["value"] for r in find_rows(again, "probing")] == [
        r["value"] for r in find_rows(rep, "probing")]


def test_unknown_suite_is_refused_with_a_suggestion(sae_run):
    from interp.errors import ConfigError

    with pytest.raises(ConfigError, match="probing"):
        run_suite(sae_run, suites=("probin",), progress=False)


# --------------------------------------------------------------------------- planted concepts
def _planted(n: int = 6000, seed: int = 0):
    """EvalData over orthogonal synthetic rows (one token per window after a dummy BOS)."""
    cfg = SyntheticConfig(d=32, n_features=24, orthogonal=True, n_parents=0,
                          children_per_parent=0, mean_l0=4.0, max_prob=0.4)
    model = SyntheticModel(cfg, seed=seed)
    data = model.sample(n, seed=seed + 1)
    acts = torch.stack([torch.zeros_like(data.x), data.x], 1)
    ev = EvalData(tokens=torch.zeros(n, 2, dtype=torch.long), doc=torch.arange(n) // 8,
                  source=torch.zeros(n, dtype=torch.long), acts=acts, labels={}, classes={},
                  hook="synthetic", model="synthetic", cfg=EvalDataConfig(n_windows=n))
    test = (torch.arange(n) // 8) % 4 == 0
    return model, data, ev, test


def test_tpp_is_high_for_the_true_dictionary_and_near_zero_for_random():
    model, data, ev, test = _planted()
    index = torch.arange(ev.n_windows) * 2 + 1
    tasks = [binary_examples(f"f{i}", "token", index, (data.codes[:, i] > 0).long(), ev.doc,
                             test, 600, 600, seed=i) for i in range(3)]
    probes = [fit_probe_sgd(ev.acts[:, 1][t.index // 2][t.train], t.y[t.train]) for t in tasks]
    true = true_dictionary(model)
    rnd = make_baseline("random", true.cfg, data.x, l0=4, seed=0)

    def tpp(sae, n):
        out = tpp_scores(sae, ev, tasks, probes, [n])
        return tpp_statistic(out["drops"][n], out["owner"])(np.arange(len(out["owner"]))), out

    score, out = tpp(true, 1)
    assert min(out["clean"]) > 0.9
    assert score > 0.3  # ablating a concept's own latent breaks its probe only
    assert abs(tpp(rnd, 1)[0]) < 0.1


def test_scr_removes_the_spurious_attribute_with_the_true_dictionary():
    model, data, ev, test = _planted(8000, seed=3)
    a, b = (data.codes[:, 0] > 0).long(), (data.codes[:, 1] > 0).long()
    index = torch.arange(ev.n_windows) * 2 + 1
    sets = quadrant_sets(a, b, ev.doc, index, test, 800, 800, seed=0)
    probes = {k: fit_probe_sgd(ev.acts.reshape(-1, 32)[e.index][e.train], e.y[e.train])
              for k, e in sets.items()}
    true = true_dictionary(model)
    out = scr_direction(true, ev, sets, probes, "B", "A", [1])
    assert out["clean"].mean() > 0.95 and out["orig"].mean() < 0.9  # the biased probe leans on B
    scr = scr_statistic(out["orig"], out["clean"], out["changed"][1])(np.arange(len(out["orig"])))
    rnd = make_baseline("random", true.cfg, data.x, l0=4, seed=0)
    out_r = scr_direction(rnd, ev, sets, probes, "B", "A", [1])
    scr_r = scr_statistic(out_r["orig"], out_r["clean"], out_r["changed"][1])(
        np.arange(len(out_r["orig"])))
    # the biased probe's bias still assumes B, so SCR stays below 1 even for the true features
    assert scr > 0.4 and scr > scr_r + 0.3


def test_batched_class_means_and_selection_match_the_plain_computation():
    model, data, ev, test = _planted(2000)
    index = torch.arange(ev.n_windows) * 2 + 1
    ex = binary_examples("f0", "token", index, (data.codes[:, 0] > 0).long(), ev.doc, test,
                         800, 400)
    sae = create_sae(SAEConfig(architecture="topk", d_in=32, d_sae=96, k=5), seed=1)
    mu1, mu0 = class_means(sae, ev, ex, ex.train, batch=37)
    z = encode_rows(sae, ev.acts.reshape(-1, 32)[ex.index])[ex.train]
    y = ex.y[ex.train]
    assert torch.allclose(mu1, z[y == 1].double().mean(0), atol=1e-5)
    assert torch.allclose(mu0, z[y == 0].double().mean(0), atol=1e-5)
    want = top_k_mean_diff(z, y, 7)
    got = (mu1 - mu0).abs().argsort(descending=True, stable=True)[:7]
    assert set(want.tolist()) == set(got.tolist())
    assert torch.equal(latent_features(sae, ev, ex, batch=13), encode_rows(sae, ev.acts.reshape(
        -1, 32)[ex.index]))
    assert top_n(torch.tensor([0.0, 3.0, 0.0, 1.0]), 3).tolist() == [1, 3]  # zeros left out


def test_hand_written_adamw_probe_matches_torch_adamw():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 12, generator=g)
    y = (x[:, 0] - x[:, 1] > 0).long()
    fast = fit_probe_sgd(x, y, epochs=3, seed=4)
    ref = fit_probe_sgd(x, y, epochs=3, seed=4, reference=True)
    assert torch.allclose(fast.weight, ref.weight, atol=1e-5)
    assert fast.bias == pytest.approx(ref.bias, abs=1e-5)


def test_hand_written_multi_probe_matches_torch_adam_with_its_schedule():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 10, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (200,), generator=g), 4).float()
    for l1 in (0.0, 0.01):
        fast = fit_multi_probe(x, y, epochs=4, l1=l1, seed=3)
        ref = fit_multi_probe(x, y, epochs=4, l1=l1, seed=3, reference=True)
        assert torch.allclose(fast[0], ref[0], atol=1e-5)
        assert torch.allclose(fast[1], ref[1], atol=1e-5)


def test_logistic_probe_matches_the_closed_form_optimum_conditions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = ((x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0]) + 0.3 * torch.randn(400, generator=g))
         > 0).long()
    p = fit_logistic(x, y, C=1.0)
    w = torch.cat([p.weight.double(), torch.tensor([p.bias], dtype=torch.float64)]).requires_grad_()
    X = x.double()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        X @ w[:-1] + w[-1], y.double(), reduction="sum") + (w[:-1] ** 2).sum() / 2
    loss.backward()
    assert w.grad.abs().max() < 1e-3  # stationary point of scikit-learn's objective
    assert float(p.correct(x, y).mean()) > 0.9


# --------------------------------------------------------------------------- absorption
def _word_model(path, n_words: int = 700, seed: int = 0):
    """A tiny Llama with a word-level tokenizer whose word embeddings point along a direction
    per first letter (so a first-letter probe works at layer 0)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from interp.models.tiny import tiny_config

    rng = random.Random(seed)
    words = set()
    while len(words) < n_words:
        words.add("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 7))))
    vocab = ["<bos>", "<eos>", "<pad>", "<unk>", "\n", ":", " ", " has", " the", " first",
             " letter", "0", "1"] + [" " + c for c in string.ascii_uppercase]
    vocab += [" " + w for w in sorted(words)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[A-Za-z]+|\n|:|\d| "), "isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>")
    config = tiny_config("llama", vocab_size=len(vocab))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    g = torch.Generator().manual_seed(seed)
    letters = torch.randn(26, 64, generator=g)
    letters = letters / letters.norm(dim=1, keepdim=True)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        for i, t in enumerate(vocab):
            if t.startswith(" ") and len(t) > 2:
                emb[i] = 3 * letters[ord(t[1]) - 97] + 0.3 * torch.randn(64, generator=g) / 8
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, letters


def test_first_letter_absorption_on_a_model_that_carries_first_letters(tmp_path):
    from interp.models.loading import load_model

    path, letters = _word_model(tmp_path / "words")
    model = load_model(path)
    cfg = SAEConfig(architecture="standard", d_in=64, d_sae=26 + 38, hook_name=HOOK)
    sae = architecture_class("standard")(cfg).initialise(0)
    with torch.no_grad():  # one latent per letter direction, the rest random
        sae.W_dec[:26] = letters
        sae.enc_weight[:26] = letters
        sae.b_enc[:26] = -1.0
    rep = run_suite(sae, suites=("absorption",), out=tmp_path / "evals", model=model,
                    progress=False, absorption_words=600, spelling_prompts=64,
                    min_spelling_accuracy=0.0, n_bootstrap=100, baselines=("random",),
                    synthetic_tokens=60_000, synthetic_rows=2048)
    info = rep["suites"]["absorption"]
    assert info["source"] == "model" and len(info["letters"]) >= 10
    assert 0 <= info["spelling_accuracy"] <= 1 and info["n_spelling_checked"] == 64
    val = {(r["metric"], r["subject"]): r["value"] for r in rep["rows"]}
    assert val["k_sparse_f1_1", "sae"] > 0.8  # each letter's own latent is found at k = 1
    assert val["k_sparse_f1_1", "sae"] > val["k_sparse_f1_1", "random"] + 0.2
    assert val["mean_absorption_fraction", "sae"] < 0.1
    assert ("spelling_accuracy", "model") in val
    table = read_report(tmp_path / "evals")["files"]
    assert "absorption_letters" in table


def test_split_features_rule():
    assert split_features([0.5, 0.6, 0.61, 0.9], [7, 3, 5, 1]) == [7, 3]
    assert split_features([0.9, 0.91], [2, 4]) == [2]


def test_random_baseline_is_as_sparse_as_the_sae():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    sae = create_sae(SAEConfig(architecture="topk", d_in=16, d_sae=40, k=5), seed=0)
    rnd = make_baseline("random", sae.cfg, x, l0=mean_l0(sae, x))
    assert mean_l0(rnd, x) == pytest.approx(5, abs=0.05)
    assert torch.allclose(rnd.b_dec, x.mean(0))
    assert not torch.allclose(rnd.W_dec, sae.W_dec)
    pca = make_baseline("pca", sae.cfg, x, l0=5)
    with torch.no_grad():
        assert torch.allclose(pca(x), x, atol=1e-4)


def test_pca_baseline_does_not_depend_on_the_row_order():
    """An SVD's component signs are arbitrary (LAPACK's choice moves with the row order); the
    baseline's are canonical, so its signed latents and every metric on them are reproducible."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 12, generator=g) * torch.linspace(1, 3, 12)  # distinct variances
    cfg = SAEConfig(architecture="topk", d_in=12, d_sae=30, k=4)
    a = make_baseline("pca", cfg, x, l0=4)
    flips = 0
    for seed in range(6):
        perm = torch.randperm(600, generator=torch.Generator().manual_seed(seed))
        b = make_baseline("pca", cfg, x[perm], l0=4)
        torch.testing.assert_close(b.W_dec, a.W_dec, atol=1e-5, rtol=0)
        _, _, vh = torch.linalg.svd((x[perm] - x.mean(0)).double(), full_matrices=False)
        flips += int(((vh.float() * a.W_dec).sum(1) < 0).sum())
    assert flips > 0  # raw SVD signs do move with the row order: the canonical sign is needed
    big = a.W_dec.abs().argmax(1)
    assert bool((a.W_dec.gather(1, big[:, None]) > 0).all())


def test_scorer_with_a_cached_prefix_matches_the_whole_prompts(tiny_llama_dir):
    from saes.evals.explainer import LocalLM

    lm = LocalLM.load(str(tiny_llama_dir))
    assert not lm.placeholder
    prefix = "Feature: digits in code\nText: "
    texts = ["x = 42", "return the <<value>> of it", "a"]
    shared = lm.p_yes_shared(prefix, texts, batch_size=2)
    whole = lm.p_yes([prefix + t for t in texts], batch_size=2)
    assert torch.allclose(shared, whole, atol=1e-5)
    assert ((shared > 0) & (shared < 1)).all()
    out = lm.generate(["Say something:"], max_new_tokens=5)
    assert len(out) == 1 and "\n" not in out[0]
