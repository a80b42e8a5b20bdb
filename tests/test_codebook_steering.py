"""Steering by codes (Codebook Features, arXiv 2310.17230, section 5): a tiny model trained here
on two "topics" continues a topic-A prompt in topic A; the residual code that the paper's code
search finds for topic B, written into one of the k slots at every position, moves its
continuations to topic B. Also the residual-codebook pipeline on the default model (slow)."""

from __future__ import annotations

import json

import pytest
import torch

from saes.codebook.bottleneck import CodebookConfig, CodebookLayer

TOPIC_A, TOPIC_B = "abcdefgh", "stuvwxyz"
HOOK = "blocks.0.hook_resid_post"


def _topic_batches(tok, batch: int = 32, length: int = 24, seed: int = 0):
    """Endless batches of BOS + `length` characters all drawn from one topic's letters."""
    ids = {t: torch.tensor(tok.convert_tokens_to_ids(list(t))) for t in (TOPIC_A, TOPIC_B)}
    g = torch.Generator().manual_seed(seed)
    while True:
        rows = []
        for i in range(batch):
            letters = ids[TOPIC_A] if i % 2 else ids[TOPIC_B]
            rows.append(torch.cat([torch.tensor([tok.bos_token_id]),
                                   letters[torch.randint(0, len(letters), (length,), generator=g)]]))
        yield torch.stack(rows)


@pytest.fixture(scope="module")
def topic_model():
    """A 2-layer Llama-style model trained for ~150 steps on the two-topic language."""
    from interp.models.tiny import build_tiny_model, char_tokenizer
    from interp.models.torch_backend import TorchHookedModel
    from saes.codebook.insert import insert_codebooks
    from saes.codebook.train import CodebookTrainConfig, train_codebooks

    tok = char_tokenizer()
    model = TorchHookedModel(build_tiny_model("llama", seed=0), tok, "tiny-topics")
    cb = insert_codebooks(model, [HOOK], CodebookConfig(n_codes=8, k=2))
    train_codebooks(cb, _topic_batches(tok), CodebookTrainConfig(steps=150, lr=3e-3),
                    progress=False, use_codebooks=False)
    return model, tok


def test_denormalised_snap_keeps_the_scale_of_its_input():
    layer = CodebookLayer(16, cfg=CodebookConfig(n_codes=4, k=1, denormalise=True))
    x = torch.randn(5, 1, 16) * 1000 + 7
    layer.init_from_data(x, kmeans_iters=0, generator=torch.Generator().manual_seed(0))
    out = layer(x)
    plain = CodebookLayer(16, cfg=CodebookConfig(n_codes=4, k=1))
    plain.codebook.data.copy_(layer.codebook.data)
    inner = plain(x)  # the LayerNorm-space output (the paper's)
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    torch.testing.assert_close(out, inner * (var + 1e-5).sqrt() + mean)
    assert float(out.detach().norm(dim=-1).mean()) > 100 * float(inner.detach().norm(dim=-1).mean())
    with pytest.raises(Exception, match="layer_norm"):
        CodebookConfig(layer_norm=False, denormalise=True)


def test_code_edits_slots():
    from saes.codebook.steer import code_edits

    ids = torch.zeros(2, 3, 1, 4, dtype=torch.long)
    out = code_edits([("h", 0, 7)], slots=2)["h"](ids)
    assert out[..., :2].eq(0).all() and out[..., 2:].eq(7).all()
    out = code_edits([("h", 0, 7), ("h", 0, 9)])["h"](ids)  # two codes: last two slots
    assert out[..., 3].eq(7).all() and out[..., 2].eq(9).all() and out[..., :2].eq(0).all()
    with pytest.raises(Exception, match="do not fit"):
        code_edits([("h", 0, 7)], slots=5)["h"](ids)


def test_steering_by_a_code_moves_generations_to_its_topic(topic_model):
    from saes.codebook.steer import topic_steering
    from saes.codebook.topic import fit_codebook
    from saes.codebook.stats import code_search

    model, tok = topic_model
    windows = torch.cat([next(_topic_batches(tok, seed=s)) for s in (1, 2)])
    cb, table = fit_codebook(model, HOOK, windows, CodebookConfig(
        n_codes=32, k=2, denormalise=True), kmeans_iters=10, progress=False)
    found = code_search(table, tok, f"[{TOPIC_B}]", hook=HOOK, top=1)
    assert found and found[0]["precision"] > 0.9  # a code of topic B (paper: precision > 0.5)
    res = topic_steering(cb, [(HOOK, 0, found[0]["code"])], f"[{TOPIC_B}]",
                         prompts=("abcdhgfeab",), n=24, max_new_tokens=8, seed=0,
                         plain_baseline=True)
    assert res["model_share"] <= 0.25 and res["baseline_share"] <= 0.25  # topic A stays A
    assert res["steered_share"] >= res["baseline_share"] + 0.5, res
    # the same samples with the code of topic A (the prompt's own topic) stay in topic A
    found_a = code_search(table, tok, f"[{TOPIC_A}]", hook=HOOK, top=1)
    own = topic_steering(cb, [(HOOK, 0, found_a[0]["code"])], f"[{TOPIC_B}]",
                         prompts=("abcdhgfeab",), n=24, max_new_tokens=8, seed=0)
    assert own["steered_share"] <= 0.25


def test_steer_cli_without_run_rejects_codes(tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app

    out = CliRunner().invoke(app, ["codebook", "steer", "--code", "blocks.0.hook_resid_post:0:1",
                                   "--workspace", str(tmp_path)])
    assert out.exit_code != 0 and "needs a RUN" in out.output
    out = CliRunner().invoke(app, ["codebook", "steer", "--top-codes", "3", "--k", "2",
                                   "--workspace", str(tmp_path)])
    assert out.exit_code != 0 and "must fit" in out.output


@pytest.mark.slow
def test_default_model_steered_towards_a_topic_by_one_residual_code(default_model, all_cores,
                                                                   tmp_path):
    """The default-model example, small: 1024 codes (k=8) k-means-fitted at layer 12's residual
    stream on 128 windows; the best code for "object(s)" in the last slot moves the share of
    continuations that mention it from ~0 (measured 0.00 -> 0.75, 2 prompts x 6 samples)."""
    from saes.codebook.runs import KIND
    from saes.codebook.topic import TopicSteerConfig, topic_steer_run
    from interp.workspace import load_run

    cfg = TopicSteerConfig(windows=128, n_codes=1024, n=6, max_new_tokens=12,
                           prompts=("The", "I think that"))
    run, res = topic_steer_run(cfg, tmp_path, "t", model=default_model, progress=False)
    assert res["search"][0]["precision"] > 0.5  # the paper's code-search threshold
    assert res["model_share"] <= 0.25 and res["baseline_share"] <= 0.25
    assert res["steered_share"] >= res["baseline_share"] + 0.3, res["steered_share"]
    assert run.metrics["delta_ce"] < 2.0
    again = load_run(run.path)
    assert again.kind == KIND and again.status == "done"
    assert (run.path / "codebooks.safetensors").is_file()
    stats = json.loads((run.path / "code_stats.json").read_text())[cfg.hook]
    assert stats["steering_codes"][0]["code"] == res["codes"][0][2]


def test_topic_steer_run_on_a_tiny_model_and_its_explorer_page(tiny_llama, tmp_path, explorer):
    """The pipeline's files on a tiny (untrained) model, shown by the explorer's codebook page:
    the steering figure and the table of the codes the search chose."""
    from app.kinds import KINDS
    from app_workspace import charts
    from saes.codebook.topic import TopicSteerConfig, topic_steer_run

    cfg = TopicSteerConfig(hook="blocks.1.hook_resid_post", n_codes=32, windows=16,
                           eval_windows=2, pattern="the", prompts=("The",), n=2,
                           max_new_tokens=4, min_precision=0.0)
    run, res = topic_steer_run(cfg, tmp_path, "tiny", model=tiny_llama, progress=False)
    assert run.status == "done" and 0 <= res["steered_share"] <= 1
    assert set(run.artefacts) >= {"codebooks", "code_stats", "steering"}
    at = explorer(tmp_path, KINDS["codebook"].url_path, run="tiny")
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    assert any(t.startswith("Steering by codes") for t in titles), titles
    assert any("Steering codes" in m.value for m in at.markdown)
