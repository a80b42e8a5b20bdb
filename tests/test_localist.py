"""Locality-dial models (interp.localist): blocks, metrics against naive references, the dial's
hooks, the paper properties on tiny models trained here, the runs and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import pytest
import torch

from interp.errors import ConfigError
from interp.localist.blocks import BlockSpec, block_ids, target_mask
from interp.localist.dial import layer_dials, locality_dial, named_schedules, progressive_schedule
from interp.localist.evaluate import dialled_forward, evaluate_dial
from interp.localist.metrics import entropy_bits, group_lasso, pointer_fidelity, visible_keys
from interp.localist.train import (LocalistConfig, batch_indices, build_char_model, lm_loss,
                                   lr_at, make_optimizer, split_windows, train_localist)

# A tiny model that trains in a few seconds; the dial's effect is clear after 60 steps.
TINY = LocalistConfig(steps=60, context_size=64, d_model=32, n_heads=2, batch_size=8,
                      n_tokens=60_000, eval_windows=16)
LAMBDAS = (0.0, 0.25, 1.0)


def _digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.hf_model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def trained():
    """{lambda: (model, held-out metrics)} for tiny models trained at each dial setting."""
    out = {}
    _, held_out = split_windows(TINY)
    for lam in LAMBDAS:
        cfg = dataclasses.replace(TINY, lam=lam)
        model, _ = train_localist(cfg)
        out[lam] = (model, evaluate_dial(model, held_out, cfg.blocks, lam, cfg.bias_strength))
    return out


# ----------------------------------------------------------------------------- blocks
def test_blocks_of_each_kind():
    from interp.models.tiny import char_tokenizer

    tok = char_tokenizer()
    text = "x = 1. def f(): return 2\ny"
    ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
    chars = ["<bos>"] + list(text)

    b = block_ids(ids, BlockSpec(kind="punct", max_span=None), tok)[0].tolist()
    assert b[0] == 0 and b[1] == 1  # BOS alone
    # a new span starts right after ".", ":" and "\n"
    for i, c in enumerate(chars[:-1]):
        if c in ".:\n" and i > 0:
            assert b[i + 1] == b[i] + 1, (i, c)
        elif i > 0:
            assert b[i + 1] == b[i], (i, c)

    b = block_ids(ids, BlockSpec(kind="anchor", anchors=("def ", "return "), max_span=None),
                  tok)[0].tolist()
    assert b[chars.index("d")] == b[chars.index("d") - 1] + 1  # "def " starts a span
    r = text.index("return") + 1
    assert b[r] == b[r - 1] + 1 and b[-1] == b[r]

    b = block_ids(ids, BlockSpec(kind="window", window=4, max_span=None))[0].tolist()
    assert b == [i // 4 for i in range(len(chars))]
    b = block_ids(ids, BlockSpec(kind="punct", max_span=3), tok)[0]
    assert torch.bincount(b).max() <= 3

    blocks = torch.tensor([[0, 1, 1, 2, 2, 2]])
    cur = target_mask(blocks, "current")[0]
    assert cur.tril().equal(cur)  # never a future key
    assert cur[4].tolist() == [False, False, False, True, True, False]
    prev = target_mask(blocks, "previous")[0]
    assert prev[5].tolist() == [False, True, True, False, False, False]


def test_bad_inputs_say_how_to_fix():
    with pytest.raises(ConfigError, match="Did you mean: punct"):
        BlockSpec(kind="punc")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        layer_dials(1.5, 2)
    with pytest.raises(ConfigError, match="one per layer"):
        layer_dials([0.1, 0.2, 0.3], 2)
    with pytest.raises(ConfigError, match="multiple of n_heads"):
        LocalistConfig(d_model=30, n_heads=4)
    from interp.localist.runs import parse_floats

    assert parse_floats("0,0.2,...,1") == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_floats("0,x")


# ----------------------------------------------------------------------------- metrics
def test_metrics_against_naive_reference():
    g = torch.Generator().manual_seed(0)
    B, H, T = 2, 3, 9
    scores = torch.randn(B, H, T, T, generator=g) + torch.full((T, T), -1e9).triu(1)
    pattern = scores.softmax(-1)
    blocks = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 3, 3], [0, 1, 1, 1, 1, 1, 2, 2, 2]])
    targets = blocks
    got = group_lasso(pattern, blocks, targets)
    ref, ent_ref, fid_ref = 0.0, torch.zeros(B, H, T), torch.zeros(B, H, T)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                a = pattern[b, h, i]
                ent_ref[b, h, i] = -sum(float(p) * math.log2(float(p)) for p in a if p > 0)
                fid_ref[b, h, i] = sum(float(a[j]) for j in range(i + 1)
                                       if blocks[b, j] == targets[b, i])
                for gi in range(int(blocks[b].max()) + 1):
                    if gi == targets[b, i]:
                        continue
                    members = [j for j in range(T) if blocks[b, j] == gi]
                    ref += math.sqrt(len(members)) * math.sqrt(sum(float(a[j]) ** 2
                                                                   for j in members))
    assert abs(float(got) - ref / (B * H * T)) < 1e-5
    assert torch.allclose(entropy_bits(pattern), ent_ref, atol=1e-4)
    tm = target_mask(blocks, "current")
    assert torch.allclose(pointer_fidelity(pattern, tm), fid_ref, atol=1e-5)
    # all mass on the target block: no penalty; uniform attention: penalty = off-target mass
    on_target = tm[:, None].float().expand(B, H, T, T)
    on_target = on_target / on_target.sum(-1, keepdim=True)
    assert float(group_lasso(on_target, blocks, targets)) < 1e-5
    uniform = torch.ones(T, T).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(B, H, T, T)
    off = 1 - pointer_fidelity(uniform, tm)
    assert abs(float(group_lasso(uniform, blocks, targets)) - float(off.mean())) < 1e-5
    assert visible_keys(4, 4).tolist() == [[1, 2, 3, 4]]


# ----------------------------------------------------------------------------- the paper's properties
def test_lambda_zero_is_the_unpenalised_model_exactly():
    """lambda = 0 through the locality trainer == a plain cross-entropy loop, same seed."""
    cfg = dataclasses.replace(TINY, steps=15, lam=0.0)
    dialled, _ = train_localist(cfg)

    torch.manual_seed(cfg.seed)
    model = build_char_model(cfg)
    train, _ = split_windows(cfg)
    order, opt = batch_indices(cfg, len(train)), make_optimizer(model, cfg)
    model.hf_model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        ids = train[order[step]]
        loss = lm_loss(model.hf_model(input_ids=ids, use_cache=False).logits, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert _digest(dialled) == _digest(model)
    # and any lambda > 0 does change the weights
    other, _ = train_localist(dataclasses.replace(cfg, lam=0.05))
    assert _digest(other) != _digest(model)


def test_entropy_falls_and_fidelity_rises_with_the_dial(trained):
    ent = [trained[lam][1]["entropy_bits"] for lam in LAMBDAS]
    fid = [trained[lam][1]["fidelity"] for lam in LAMBDAS]
    hit = [trained[lam][1]["fidelity_argmax"] for lam in LAMBDAS]
    assert all(a > b for a, b in zip(ent, ent[1:])), ent
    assert all(a < b for a, b in zip(fid, fid[1:])), fid
    assert hit[-1] >= hit[0]
    assert ent[0] - ent[-1] > 1.0  # bits: a clear effect, not noise


def test_entropy_never_exceeds_log2_visible_keys(trained):
    _, held_out = split_windows(TINY)
    for lam, (model, metrics) in trained.items():
        assert metrics["entropy_max_excess_bits"] <= 1e-5
        for dial in (0.0, 1.0):
            _, state, _, _ = dialled_forward(model, held_out[:4], TINY.blocks, dial, record=True)
            bound = visible_keys(held_out.shape[1], held_out.shape[1]).log2()
            for pattern in state.patterns.values():
                assert (entropy_bits(pattern) <= bound[:, None, :] + 1e-5).all()


def test_inference_dial_changes_attention_not_weights(trained):
    model = trained[0.0][0]
    _, held_out = split_windows(TINY)
    ids = held_out[:4]
    before = _digest(model)
    _, base, _, tmask = dialled_forward(model, ids, TINY.blocks, 0.0, record=True)
    fids = []
    for dial in (0.5, 1.0):
        _, st, _, _ = dialled_forward(model, ids, TINY.blocks, dial, record=True)
        assert not torch.allclose(st.patterns[0], base.patterns[0])
        fids.append(float(pointer_fidelity(st.patterns[1].detach(), tmask).mean()))
    base_fid = float(pointer_fidelity(base.patterns[1].detach(), tmask).mean())
    assert base_fid < fids[0] < fids[1]
    assert _digest(model) == before
    # hooks are gone after the block, even on error: the model is back to its own attention
    with pytest.raises(RuntimeError):
        with locality_dial(model, 1.0, tmask):
            raise RuntimeError("boom")
    attn = model.hf_model.model.layers[0].self_attn
    assert not attn._forward_pre_hooks and not attn._forward_hooks
    _, again, _, _ = dialled_forward(model, ids, TINY.blocks, 0.0, record=True)
    assert torch.equal(again.patterns[0], base.patterns[0])
    # per-layer dials: only the dialled layer changes
    _, one, _, _ = dialled_forward(model, ids, TINY.blocks, [0.0, 1.0], record=True)
    assert torch.equal(one.patterns[0], base.patterns[0])
    assert not torch.allclose(one.patterns[1], base.patterns[1])


def test_dial_on_gpt2_architecture(tiny_gpt2_dir):
    from interp.models.loading import load_model

    model = load_model(tiny_gpt2_dir)
    ids, _ = model.to_tokens(["a. b. c. d. e. f.", "one two. three four."])
    ids = ids[:1]
    spec = BlockSpec(kind="punct")
    _, base, _, tmask = dialled_forward(model, ids, spec, 0.0, record=True)
    _, st, _, _ = dialled_forward(model, ids, spec, 1.0, strength=4.0, record=True)
    for layer in base.patterns:
        assert (pointer_fidelity(st.patterns[layer], tmask).mean()
                > pointer_fidelity(base.patterns[layer], tmask).mean())


def test_progressive_schedules():
    s = progressive_schedule(30, 1.0, 3)
    assert s[0] == 0.0 and s[-1] == 1.0 and all(a <= b for a, b in zip(s, s[1:]))
    assert abs(s[15] - (15 / 29) ** 3) < 1e-12
    named = named_schedules(30, 0.8, (1, 3, 5))
    assert list(named) == ["uniform-distributed", "uniform-localist", "progressive-beta1",
                           "progressive-beta3", "progressive-beta5"]
    assert named["uniform-localist"] == [0.8] * 30
    # steeper beta: less locality in every layer but the last
    assert all(a >= b for a, b in zip(named["progressive-beta1"], named["progressive-beta5"]))
    assert sum(named["progressive-beta5"]) < sum(named["progressive-beta3"])


# ----------------------------------------------------------------------------- runs and CLI
def test_sweep_cli_writes_run_and_resumes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from interp.cli import app
    from interp.workspace import load_run

    out = tmp_path / "ws" / "runs" / "localist" / "s"
    args = ["localist", "sweep", "--lambdas", "0,1", "--steps", "6", "--d-model", "16",
            "--heads", "2", "--context-size", "32", "--batch-size", "4", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    run = load_run(out)
    assert run.kind == "localist" and run.status == "done" and run.config["mode"] == "sweep"
    rows = json.loads((out / "table.json").read_text())
    assert {(r["mode"], r["lam"]) for r in rows} == {("trained", 0.0), ("trained", 1.0),
                                                     ("inference", 0.0), ("inference", 1.0)}
    for key in ("table", "patterns", "fig_tradeoff"):
        assert run.artefact(key).is_file()
    import plotly.io as pio

    assert pio.read_json(str(run.artefact("fig_tradeoff"))).data
    # the same command again reuses every trained model
    import interp.localist.runs as runs_mod

    monkeypatch.setattr(runs_mod, "train_localist",
                        lambda *a, **k: pytest.fail("retrained a finished lambda"))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "table.json").read_text()) == rows
    bad = CliRunner().invoke(app, ["localist", "sweep", "--lambdas", "0,2", "--out", str(out)])
    assert bad.exit_code == 2 and "[0, 1]" in bad.output


# The two default-model tests keep conftest's single thread: on the shared 2-core machine they ran
# in ~20 s each that way, against 100-150 s with `all_cores` (thread oversubscription).
@pytest.mark.slow
def test_default_model_demo_step(tmp_path, default_model, monkeypatch):
    """The inference-time dial on SmolLM2 through its hooks (the demo step)."""
    import interp.localist.demo as demo
    from interp.workspace import load_run

    monkeypatch.setattr(demo, "_load_default", lambda device="auto": default_model)
    before = _digest(default_model)
    path = demo.demo_step(tmp_path, echo=lambda *a: None)
    run = load_run(path)
    assert run.status == "done" and run.kind == "localist"
    rows = {r["schedule"]: r for r in json.loads((path / "table.json").read_text())
            if r["mode"] == "inference"}
    assert rows["uniform-localist"]["fidelity"] > rows["uniform-distributed"]["fidelity"]
    assert rows["uniform-localist"]["entropy_bits"] < rows["uniform-distributed"]["entropy_bits"]
    assert _digest(default_model) == before
    assert demo.demo_step(tmp_path, echo=lambda *a: None) == path  # skipped when done


@pytest.mark.slow
def test_default_model_last_layer_finetune(default_model):
    """A short last-layer fine-tune with the dial: penalty trains, weights are restored."""
    from interp.localist.finetune import ScheduleConfig, compare_schedules

    before = _digest(default_model)
    flags = [p.requires_grad for p in default_model.hf_model.parameters()]
    cfg = ScheduleConfig(betas=(5.0,), train_layers=1, steps=2, batch_size=1, context_size=24,
                         eval_windows=1)
    results = compare_schedules(default_model, cfg)
    assert [r["schedule"] for r in results] == ["uniform-distributed", "uniform-localist",
                                                "progressive-beta5"]
    loc = results[1]
    assert loc["history"][0]["penalty"] > 0 and results[0]["history"][0]["penalty"] == 0
    assert loc["finetuned"]["fidelity"] > results[0]["finetuned"]["fidelity"]
    assert _digest(default_model) == before
    assert flags == [p.requires_grad for p in default_model.hf_model.parameters()]
