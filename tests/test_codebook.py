"""Codebook features (arXiv 2310.17230): the snap function and its straight-through gradients,
codebooks at hooks, a TokFSM model trained here (transition accuracy, purity vs chance,
patching a state's code), files, runs and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from saes.codebook.bottleneck import CodebookConfig, CodebookLayer, decode_codes, normalise, snap

# --------------------------------------------------------------------------- snap


def _naive_topk_mean(x, codebook, k):
    """Reference: cosine similarity to every code, mean of the k best (one group)."""
    cos = torch.nn.functional.cosine_similarity(x[:, None, :], codebook[None], dim=-1)
    ids = cos.topk(k, dim=-1).indices
    return codebook[ids].mean(1), ids


def test_snap_is_mean_of_top_k_cosine_codes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 16, generator=g)
    cb = torch.randn(1, 50, 16, generator=g) * torch.rand(1, 50, 1, generator=g) * 3
    out, ids = snap(x, cb, k=4)
    ref, ref_ids = _naive_topk_mean(x[:, 0], cb[0], 4)
    assert torch.equal(ids[:, 0].sort(-1).values, ref_ids.sort(-1).values)
    torch.testing.assert_close(out[:, 0], ref)
    # grouped: each head snaps to its own codebook
    x2 = torch.randn(8, 3, 16, generator=g)
    cb2 = torch.randn(3, 20, 16, generator=g)
    out2, _ = snap(x2, cb2, k=2)
    for h in range(3):
        torch.testing.assert_close(out2[:, h], _naive_topk_mean(x2[:, h], cb2[h], 2)[0])


def test_snap_gradients_straight_through_plus_reconstruction():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 2, 8, generator=g, requires_grad=True)
    cb = torch.randn(2, 12, 8, generator=g, requires_grad=True)
    upstream = torch.randn(10, 2, 8, generator=g)
    out, ids = snap(x, cb, k=3, loss="aeloss")
    (out * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream)  # identity straight-through
    # codebook: d(out)/dC . upstream + d/dC mean_rows ||out - sg(x)||^2
    cb_ref = cb.detach().clone().requires_grad_(True)
    out_ref = decode_codes(ids, cb_ref)
    mse = ((out_ref - x.detach()) ** 2).sum(dim=(-1, -2)).mean()
    ((out_ref * upstream).sum() + mse).backward()
    torch.testing.assert_close(cb.grad, cb_ref.grad)
    # "base": no reconstruction term; "vqvae": commitment term into x
    x.grad = cb.grad = None
    out, ids = snap(x, cb, k=3, loss="base")
    (out * upstream).sum().backward()
    cb_ref.grad = None
    (decode_codes(ids, cb_ref) * upstream).sum().backward()
    torch.testing.assert_close(cb.grad, cb_ref.grad)
    x.grad = None
    out, _ = snap(x, cb, k=3, loss="vqvae", beta=0.25)
    (out * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream + 0.5 * (x.detach() - out.detach()))


def test_layer_layer_norm_patching_and_zero_ablation():
    layer = CodebookLayer(8, groups=2, cfg=CodebookConfig(n_codes=6, k=2))
    x = torch.randn(3, 5, 2, 8) * 7 + 3
    out = layer(x)
    ids = layer.last_ids
    assert ids.shape == (3, 5, 2, 2) and out.shape == x.shape
    torch.testing.assert_close(layer.last_input, normalise(x))  # parameter-free LayerNorm
    assert int(layer.counts.sum()) == ids.numel()
    layer.id_hooks.append(lambda i: torch.where(torch.arange(2) == 1, torch.tensor(-1), i))
    out2 = layer(x)
    torch.testing.assert_close(out2, layer.codebook[torch.arange(2), ids[..., 0]]
                               .detach() / 2)
    with pytest.raises(Exception, match="expects inputs"):
        layer(torch.randn(3, 8))


# --------------------------------------------------------------------------- insertion


def test_codebooks_at_hooks_of_a_hooked_model(tiny_llama, tmp_path):
    from saes.codebook.insert import insert_codebooks, load_codebooks, set_codes

    hooks = ["blocks.0.attn.hook_z", "blocks.1.hook_mlp_out"]
    cb = insert_codebooks(tiny_llama, hooks, CodebookConfig(n_codes=16, k=2))
    assert cb.layer(hooks[0]).groups == tiny_llama.cfg.n_heads
    ids = torch.randint(4, 50, (2, 9))
    logits, codes = cb.run_with_codes(ids)
    assert codes[hooks[0]].shape == (2, 9, tiny_llama.cfg.n_heads, 2)
    assert codes[hooks[1]].shape == (2, 9, 1, 2)
    assert not torch.allclose(logits, tiny_llama(ids))  # the bottleneck is in place
    # patching the last slot at one position changes logits only from there on
    with cb.patched({hooks[1]: set_codes(5, positions=[4])}):
        patched, pcodes = cb.run_with_codes(ids)
    assert (pcodes[hooks[1]][:, 4, 0, -1] == 5).all()
    assert torch.equal(pcodes[hooks[1]][:, 4, 0, 0], codes[hooks[1]][:, 4, 0, 0])
    torch.testing.assert_close(patched[:, :4], logits[:, :4])
    assert not torch.allclose(patched[:, 4:], logits[:, 4:])
    cb.save(tmp_path)
    again = load_codebooks(tiny_llama, tmp_path)
    torch.testing.assert_close(again(ids), logits)
    with pytest.raises(Exception, match="Did you mean"):
        insert_codebooks(tiny_llama, ["blocks.0.hook_mlp_outt"])


def test_reconstruction_training_lowers_mse(tiny_llama):
    from saes.codebook.insert import insert_codebooks
    from saes.codebook.train import CodebookTrainConfig, train_codebooks

    cb = insert_codebooks(tiny_llama, ["blocks.1.hook_resid_post"],
                          CodebookConfig(n_codes=32, k=2, layer_norm=False))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(4, 99, (4, 16), generator=g) for _ in range(30)]
    recs = train_codebooks(cb, iter(batches), CodebookTrainConfig(
        steps=30, objective="reconstruction", lr=0.05, log_every=5), progress=False)
    assert recs[-1]["mse"] < 0.5 * recs[0]["mse"]
    assert all(not p.requires_grad for p in tiny_llama.hf_model.parameters())


# --------------------------------------------------------------------------- TokFSM


def test_tokfsm_generator():
    from saes.codebook.fsm import TokFSM

    fsm = TokFSM()  # the paper's: 100 states, 10 edges, base 10, seed 42
    assert fsm.n_digits == 2 and fsm.vocab_size == 11
    assert (fsm.adjacency.sum(1) == 10).all()
    seqs = fsm.sample(8, 128, seed=3)
    assert seqs.shape == (8, 128) and (seqs[:, 0] == fsm.bos_id).all()
    assert fsm.transition_stats(seqs)["transition_accuracy"] == 1.0
    assert torch.equal(seqs, fsm.sample(8, 128, seed=3))
    assert fsm.state_string(7) == "07" and fsm.parse(torch.tensor([10, 0, 7, 9])) == [7]


FSM_TEST = dict(n_states=25, n_edges=4, base=5, d_model=64, n_layers=2, n_heads=4, d_mlp=256,
                seq_len=32, n_codes=100, batch_size=64, lr=0.01, warmup_steps=20,
                pretrain_steps=300, steps=100, finetune_lr=0.003, layer_norm=False,
                train_model=False)


@pytest.fixture(scope="module")
def fsm_model():
    from saes.codebook.fsm_model import FSMConfig, train_fsm_model

    cfg = FSMConfig(**FSM_TEST)
    cb, records = train_fsm_model(cfg, progress=False)
    return cb, cfg, records


def test_tokfsm_model_learns_transitions_with_pure_codes(fsm_model):
    from saes.codebook import fsm_analysis as A

    cb, cfg, records = fsm_model
    fsm = cfg.fsm
    chance = fsm.n_edges / fsm.n_states  # 0.16
    acc = A.transition_accuracy(cb, fsm, n=64, length=cfg.seq_len)["transition_accuracy"]
    assert acc >= 0.8, acc
    assert A.first_transition_accuracy(cb, fsm) >= 0.7
    toks, labels = A.state_contexts(fsm, 64, cfg.seq_len)
    table = A.code_state_counts(cb, fsm, "blocks.0.hook_mlp_out", toks, labels)
    sp = A.state_purity(table)
    assert sp["state_purity"] >= 0.8 and sp["state_purity"] > sp["chance_purity"] + 0.5, sp
    assert A.precision_recall(table)["states_with_code"] >= 0.8 * fsm.n_states
    paper = A.purity_report(cb, fsm)["blocks.0.hook_mlp_out"]["bigram"]["purity"]
    assert paper >= 0.5, paper
    assert chance < acc


def test_patching_a_state_code_moves_the_next_state_distribution(fsm_model):
    from saes.codebook import fsm_analysis as A

    cb, cfg, _ = fsm_model
    rep = A.patching_report(cb, cfg.fsm, A.state_pairs(cfg.fsm, 40))
    mlp = rep["components"]["all_mlp"]
    assert mlp["normalised_jsd_token"] < 0.3, mlp  # output moves to the target state's
    assert mlp["mass_on_target_successors"] > rep["unpatched"]["mass_on_target_successors"] + 0.1
    steer = A.fsm_steering(cb, cfg.fsm, ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"])
    assert steer["steered_share_target"] > steer["baseline_share_target"]


def test_fsm_model_files_roundtrip(fsm_model, tmp_path):
    from saes.codebook.fsm_model import load_fsm_model, save_fsm_model

    cb, cfg, _ = fsm_model
    save_fsm_model(cb, cfg, tmp_path)
    again, cfg2 = load_fsm_model(tmp_path)
    ids = cfg.fsm.sample(2, 16, seed=5)
    torch.testing.assert_close(again(ids), cb(ids))
    assert cfg2 == cfg


def test_fsm_run_and_cli(tmp_path, monkeypatch):
    """A (tiny, under-trained) TokFSM run through the CLI writes its run and figures."""
    from typer.testing import CliRunner

    from interp.cli import app
    from interp.workspace import load_run
    from saes.codebook import plots

    res = CliRunner().invoke(app, [
        "codebook", "fsm", "--workspace", str(tmp_path), "--name", "t", "--states", "9",
        "--edges", "2", "--base", "3", "--layers", "1", "--d-model", "32", "--heads", "2",
        "--seq-len", "16", "--codes", "16", "--pretrain-steps", "10", "--steps", "5",
        "--batch-size", "8", "--samples", "8"])
    assert res.exit_code == 0, res.output
    run = load_run(tmp_path / "runs" / "codebook" / "t")
    assert run.status == "done" and run.kind == "codebook"
    analysis = json.loads(run.artefact("analysis").read_text())
    for fig in (plots.fig_patching(analysis["patching"]),
                plots.fig_purity(analysis["purity"], analysis["state_purity"]),
                plots.fig_steering(analysis["steering"])):
        assert fig.data
    bad = CliRunner().invoke(app, ["codebook", "fsm", "--workspace", str(tmp_path),
                                   "--codebooks-at", "mlpp"])
    assert bad.exit_code != 0 and "codebooks_at" in bad.output


# --------------------------------------------------------------------------- default model


@pytest.mark.slow
def test_codebooks_on_default_model_keep_loss_and_steer(default_model, all_cores, tmp_path):
    """Reconstruction-fitted codes at one layer's heads barely change the LM loss, and code
    search finds a code for a frequent word whose activation raises its share in samples."""
    from saes.codebook.runs import TrainRunConfig, steer_run, train_run

    from saes.codebook.train import CodebookTrainConfig

    cfg = TrainRunConfig(hooks=("blocks.8.attn.hook_z",), context_size=32, kmeans_windows=32,
                         eval_windows=4, train=CodebookTrainConfig(
                             steps=3, objective="reconstruction", lr=1e-2, log_every=1))
    run, cb = train_run(cfg, tmp_path, "t", model=default_model, progress=False)
    assert abs(run.metrics["delta_ce"]) < 0.5
    srun, res = steer_run(run.path, r"\bobject", prompts=("The",), workspace=tmp_path,
                          name="s", n=4, max_new_tokens=8, search_windows=16, top_codes=3,
                          cb=cb)
    assert res["search"] and res["search"][0]["precision"] > 0.5
    assert srun.status == "done"
