"""Probes, lenses and layer geometry: properties from LLM-Microscope (arXiv 2502.15007), the
tuned lens (2303.08112) and control tasks (1909.03368), on synthetic data and tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from probes.activations import collect, residual_hooks, token_set
from probes.geometry import (anisotropy, layer_geometry, linearity_score, token_nonlinearity,
                             twonn_dimension)
from probes.labels import get_task, string_mask
from probes.lens import TunedLens, Unembed, fit_tuned_lens, lens_stats
from probes.linear import activation_pattern, control_labels, fit_probe, probe_layers, split_by_document


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ geometry
def test_linearity_is_one_for_invertible_maps_and_lower_for_nonlinear():
    g = _gen()
    x = torch.randn(1500, 32, generator=g)
    rot = torch.linalg.qr(torch.randn(32, 32, generator=g))[0]
    assert linearity_score(x, x) == pytest.approx(1.0, abs=1e-9)
    assert linearity_score(x, x @ rot) == pytest.approx(1.0, abs=1e-9)
    assert linearity_score(x, x @ torch.randn(32, 32, generator=g) + 3.0) == pytest.approx(1.0, abs=1e-9)
    nonlin = linearity_score(x, torch.tanh(3 * x @ rot))
    assert 0.3 < nonlin < 0.95
    # independent Y: least squares still fits d of n - 1 directions of noise (the noise floor)
    assert linearity_score(x, torch.randn(1500, 32, generator=g)) == pytest.approx(32 / 1499, abs=0.01)
    # the centred variant scores the update Y - X: a rotation's update is linear too
    assert linearity_score(x, x @ rot, centered=True) == pytest.approx(1.0, abs=1e-9)


def test_token_nonlinearity_squares_sum_to_one_minus_linearity():
    g = _gen(1)
    x = torch.randn(800, 16, generator=g)
    y = torch.relu(x @ torch.randn(16, 16, generator=g))
    e = token_nonlinearity(x, y)
    assert e.shape == (800,)
    assert float((e ** 2).sum()) == pytest.approx(1 - linearity_score(x, y), abs=1e-9)
    # a token whose next state is pushed off the linear map gets the largest error
    y2 = x @ torch.randn(16, 16, generator=g)
    y2[123] += 50 * y2.std()
    assert int(token_nonlinearity(x, y2).argmax()) == 123


def test_twonn_recovers_a_5d_manifold_in_50d():
    g = _gen(2)
    z = torch.randn(3000, 5, generator=g)
    emb = torch.linalg.qr(torch.randn(50, 50, generator=g))[0][:, :5]
    d5 = twonn_dimension(z @ emb.T + 1e-6 * torch.randn(3000, 50, generator=g))
    assert abs(d5 - 5) < 0.75
    z10 = torch.randn(3000, 10, generator=g) @ torch.randn(10, 50, generator=g)
    assert twonn_dimension(z10) > d5 + 2.5


def test_anisotropy_isotropic_and_one_direction():
    g = _gen(3)
    iso = torch.randn(20000, 40, generator=g)
    assert anisotropy(iso) == pytest.approx(1 / 40, rel=0.15)
    line = torch.randn(500, 1, generator=g) * torch.randn(1, 40, generator=g)
    assert anisotropy(line) == pytest.approx(1.0, abs=1e-9)


def test_layer_geometry_shapes():
    states = torch.randn(4, 200, 8, generator=_gen(4))
    geo = layer_geometry(states, max_points_twonn=200)
    assert len(geo["linearity"]) == 3 and len(geo["intrinsic_dim"]) == 4
    assert len(geo["token_nonlinearity"]) == 3 and len(geo["token_nonlinearity"][0]) == 200
    # the shared-eigendecomposition path equals the one-metric functions
    x, y = states[1], torch.tanh(states[2])
    geo = layer_geometry(torch.stack([states[0], x, y]), max_points_twonn=200)
    assert geo["linearity"][1] == pytest.approx(linearity_score(x, y), abs=1e-12)
    assert geo["linearity_centered"][1] == pytest.approx(linearity_score(x, y, True), abs=1e-12)
    assert geo["anisotropy"][2] == pytest.approx(anisotropy(y), abs=1e-12)
    torch.testing.assert_close(torch.tensor(geo["token_nonlinearity"][1]),
                               token_nonlinearity(x, y).float())


# ------------------------------------------------------------------------------ labels
def test_in_string_labels_python_strings():
    src = 'x = "ab c" + f(\'q\')\ny = 1  # no string\nz = """doc'
    mask, known = string_mask(src)
    assert "".join(src[i] for i in range(len(src)) if mask[i]) == "\"ab c\"'q'"
    assert src.index("z") < known <= src.index('"""')  # the unterminated string: unknown
    task = get_task("in_string")
    spans = [(0, 1), (4, 5), (6, 8), (src.index("1"), src.index("1") + 1), (len(src) - 3, len(src))]
    assert task(src, spans) == [0, 1, 1, 0, -1]


def test_word_class_and_user_spans(tmp_path):
    task = get_task("word_class")
    text = "The cat sat on the mat, and 42 dogs."
    spans = [(0, 3), (3, 7), (7, 9), (9, 11), (11, 14), (22, 23), (27, 30)]
    got = [task.classes[i] if i >= 0 else None for i in task(text, spans)]
    assert got == ["determiner", "other", "other", None, "preposition", "punctuation", "number"]
    f = tmp_path / "labels.jsonl"
    f.write_text(json.dumps({"text": "Alice met Bob", "spans": [[0, 5, "PER"], [10, 13, "PER"]]})
                 + "\n")
    user = get_task(f"spans:{f}")
    assert user.classes == ("O", "PER")
    assert user("Alice met Bob", [(0, 5), (5, 9), (9, 13)]) == [1, 0, 1]
    with pytest.raises(Exception, match="Did you mean"):
        get_task("word_clas")


def test_split_by_document_never_shares_a_document():
    doc = torch.arange(40).repeat_interleave(25)
    val = split_by_document(doc, 0.25, seed=0)
    assert set(doc[val].tolist()).isdisjoint(doc[~val].tolist())
    assert len(set(doc[val].tolist())) == 10
    assert torch.equal(val, split_by_document(doc, 0.25, seed=0))


def test_control_labels_keep_distribution_and_are_a_function_of_type():
    g = _gen(5)
    tokens = torch.randint(0, 30, (2000,), generator=g)
    labels = torch.randint(0, 3, (2000,), generator=g)
    ctrl = control_labels(labels, tokens, "type", seed=0)
    for t in tokens.unique():
        assert ctrl[tokens == t].unique().numel() == 1
    shuf = control_labels(labels, tokens, "shuffle", seed=0)
    assert torch.equal(torch.bincount(shuf), torch.bincount(labels))


# ------------------------------------------------------------------------------ probes
def _planted(model, plant: bool, n_docs=48, length=48, alpha=4.0):
    """Activations at block 1 of a tiny model while a direction u is added at block 0 to the
    tokens whose (random, position-level) label is 1."""
    g = _gen(6)
    d = model.cfg.d_model
    u = torch.randn(d, generator=g)
    u /= u.norm()
    xs, ys, docs = [], [], []
    for i in range(n_docs):
        ids = torch.randint(4, model.cfg.d_vocab, (1, length), generator=g)
        ids[0, 0] = model.bos_token_id
        y = torch.randint(0, 2, (length,), generator=g)

        def add(x, hook, y=y):
            return x + alpha * y[None, :, None].to(x.dtype) * u if plant else x

        with model.hooks([("blocks.0.hook_resid_post", add)]):
            _, cache = model.run_with_cache(ids, hooks=["blocks.1.hook_resid_post"])
        xs.append(cache["blocks.1.hook_resid_post"][0, 1:])
        ys.append(y[1:])
        docs.append(torch.full((length - 1,), i))
    return torch.cat(xs), torch.cat(ys), torch.cat(docs), u


@pytest.mark.parametrize("kind", ["logistic", "ridge"])
def test_probe_recovers_planted_direction_and_control_stays_at_chance(tiny_llama, kind):
    x, y, doc, u = _planted(tiny_llama, plant=True)
    res = fit_probe(x, y, doc, kind=kind, seed=0)
    assert res.val_acc > 0.95
    pattern = activation_pattern(res.weight, x)
    assert float(torch.nn.functional.cosine_similarity(pattern[:, 1] - pattern[:, 0], u, dim=0)) > 0.99
    tokens = torch.arange(len(y))  # every row its own type: the control is pure noise
    rows, _ = probe_layers({"blocks.1.hook_resid_post": x}, y, doc, tokens, kind=kind,
                           control="shuffle", seed=0)
    assert rows[0]["val_acc"] > 0.95
    assert abs(rows[0]["control_acc"] - 0.5) < 0.08
    assert rows[0]["selectivity"] > 0.35
    # without the planted direction the same labels are not decodable
    x0, y0, doc0, _ = _planted(tiny_llama, plant=False)
    assert abs(fit_probe(x0, y0, doc0, kind=kind, seed=0).val_acc - 0.5) < 0.08


# ------------------------------------------------------------------------------ lenses
@pytest.fixture(scope="module")
def tiny_states(tiny_llama):
    ts = token_set(tiny_llama.tokenizer, [f"def f{i}(x):\n    return x * {i} + 'a{i}'\n" * 3
                                          for i in range(24)], context_size=40)
    acts = collect(tiny_llama, ts, residual_hooks(tiny_llama.cfg.n_layers), batch_size=8)
    return acts


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logit_lens_at_last_layer_equals_model_logits(arch, tiny_llama, tiny_gpt2_dir):
    from interp.models.loading import load_model

    model = tiny_llama if arch == "llama" else load_model(tiny_gpt2_dir)
    text = "The lens reads every layer."
    hooks = residual_hooks(model.cfg.n_layers)
    logits, cache = model.run_with_cache(text, hooks=hooks)
    unembed = Unembed(model)
    lensed = unembed(cache[hooks[-1]], norm=True)
    torch.testing.assert_close(lensed, logits.float(), atol=1e-5, rtol=1e-5)
    # raw (no final norm) differs, because the tiny models' norms are perturbed
    assert not torch.allclose(unembed(cache[hooks[-1]], norm=False), logits.float(), atol=1e-3)
    stats = lens_stats(unembed, torch.stack([cache[h][0] for h in hooks]))
    assert stats.kl[-1] == pytest.approx(0.0, abs=1e-6) and stats.top1_agree[-1] == 1.0
    assert stats.kl[0] > 1e-3


def test_tuned_lens_beats_logit_lens_on_held_out_documents(tiny_llama, tiny_states):
    acts = tiny_states
    stacked = acts.stacked(residual_hooks(tiny_llama.cfg.n_layers))
    val = split_by_document(acts.doc, 0.25, seed=0)
    unembed = Unembed(tiny_llama)
    zero = TunedLens(stacked.shape[0], stacked.shape[2])
    plain = lens_stats(unembed, stacked[:, val], acts.next_tokens[val])
    assert lens_stats(unembed, stacked[:, val], tuned=zero).kl == pytest.approx(plain.kl)
    lens, losses = fit_tuned_lens(unembed, stacked[:, ~val], steps=30, lr=1e-3, batch_size=128)
    assert losses[-1] < losses[0]
    tuned = lens_stats(unembed, stacked[:, val], acts.next_tokens[val], tuned=lens)
    for s in range(stacked.shape[0] - 1):
        assert tuned.kl[s] < plain.kl[s]
    assert tuned.kl[-1] == pytest.approx(0.0, abs=1e-6)


def test_collect_keeps_documents_and_next_tokens(tiny_llama, tiny_states):
    acts = tiny_states
    assert len(acts) == acts.doc.numel() == acts.next_tokens.numel()
    assert acts.doc.unique().numel() == 24
    assert (acts.tokens != tiny_llama.bos_token_id).all()  # BOS positions are dropped
    # within a chunk the next token of row i is the token of row i + 1
    same = (acts.doc[:-1] == acts.doc[1:]) & (acts.next_tokens[:-1] >= 0)
    assert torch.equal(acts.next_tokens[:-1][same], acts.tokens[1:][same])


# ------------------------------------------------------------------------------ runs, CLI, plots
def test_cli_writes_probe_lens_and_geometry_runs(tiny_llama_dir, tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app
    from interp.workspace import load_run
    from probes import plots
    from probes.runs import read_layers

    corpus = tmp_path / "code.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"name_{i} = 'value {i}'\nx = f(name_{i}, "
                                                  f"\"s{i}\")\n" * 2}) + "\n" for i in range(30)))
    ws = tmp_path / "ws"
    common = ["--model", str(tiny_llama_dir), "--corpus", str(corpus), "--tokens", "1500",
              "--context-size", "48", "--workspace", str(ws)]
    runner = CliRunner()
    r = runner.invoke(app, ["probe", "--task", "in_string", "--layers", "embed,1",
                            "--l2", "0.01,1", *common])
    assert r.exit_code == 0, r.output
    probe = load_run(ws / "runs" / "probe" / "in_string-logistic")
    assert probe.status == "done" and probe.kind == "probe"
    layers = read_layers(probe.path)
    assert [row["layer"] for row in layers["rows"]] == ["embed", "1"]
    assert layers["rows"][1]["val_acc"] > layers["rows"][1]["majority_acc"]
    assert len(plots.fig_probe_curve(layers).data) == 3

    r = runner.invoke(app, ["lens", "--tuned-steps", "5", "--eval-tokens", "200", *common])
    assert r.exit_code == 0, r.output
    lens = load_run(ws / "runs" / "lens" / "lens")
    rows = read_layers(lens.path)["rows"]
    assert len(rows) == 3 and rows[-1]["kl_logit"] == pytest.approx(0, abs=1e-5)
    assert rows[0]["kl_tuned"] < rows[0]["kl_logit"]
    example = json.loads(lens.artefact("example").read_text())
    assert len(plots.fig_lens_kl(rows).data) == 3 and len(plots.fig_lens_error(rows).data) == 3
    assert plots.fig_lens_heatmap(example, "tuned").data[0].z is not None

    r = runner.invoke(app, ["geometry", "--max-points-twonn", "600", *common])
    assert r.exit_code == 0, r.output
    geo = load_run(ws / "runs" / "geometry" / "geometry")
    rows = read_layers(geo.path)["rows"]
    assert 0 < geo.metrics["linearity_mean"] <= 1 and len(rows) == 3
    assert len(plots.fig_linearity(rows).data) == 2 and len(plots.fig_geometry(rows).data) == 2
    ex = json.loads(geo.artefact("example").read_text())
    assert len(plots.fig_token_nonlinearity(ex).data[0].z) == 2

    r = runner.invoke(app, ["probe", "--task", "word_clas", *common])
    assert r.exit_code == 2 and "Did you mean" in r.output


def test_lens_and_geometry_read_an_activation_store(tiny_llama, tiny_llama_dir, tmp_path):
    from interp.data import CorpusSpec
    from interp.caching import cache_activations
    from interp.store import StoreConfig
    from probes.activations import from_store
    from probes.runs import GeometryConfig, LensConfig, geometry_run, lens_run, read_layers

    hooks = residual_hooks(tiny_llama.cfg.n_layers)
    store = cache_activations(tmp_path / "store", StoreConfig(
        model=str(tiny_llama_dir), hooks=tuple(hooks), n_tokens=32 * 40, context_size=32,
        batch_size=8, shard_windows=16, corpus=CorpusSpec(source="python-docs")),
        model=tiny_llama, progress=False)
    acts = from_store(store, hooks)
    assert len(acts) == len(store)
    # the row after a row of the same window is its next token
    same = (acts.doc[:-1] == acts.doc[1:]) & (acts.next_tokens[:-1] >= 0)
    assert same.any() and torch.equal(acts.next_tokens[:-1][same], acts.tokens[1:][same])
    cfg = dict(model=str(tiny_llama_dir), activations=str(tmp_path / "store"), max_tokens=0)
    lens = lens_run(LensConfig(**cfg, eval_tokens=200), tmp_path / "ws", model=tiny_llama,
                    progress=False)
    rows = read_layers(lens.path)["rows"]
    assert rows[-1]["kl_logit"] == pytest.approx(0, abs=1e-5)
    assert rows[0]["kl_tuned"] < rows[0]["kl_logit"]
    assert lens.metrics["n_train_tokens"] + lens.metrics["n_eval_tokens"] <= len(store)
    geo = geometry_run(GeometryConfig(**cfg), tmp_path / "ws", model=tiny_llama, progress=False)
    assert geo.metrics["n_tokens"] == len(store)
    cache_activations(tmp_path / "s1", StoreConfig(
        model=str(tiny_llama_dir), hooks=(hooks[1],), n_tokens=256, context_size=32,
        batch_size=8, shard_windows=8), model=tiny_llama, progress=False)
    with pytest.raises(Exception, match="lacks"):
        geometry_run(GeometryConfig(model=str(tiny_llama_dir), activations=str(tmp_path / "s1")),
                     tmp_path / "ws", "bad", model=tiny_llama, progress=False)
