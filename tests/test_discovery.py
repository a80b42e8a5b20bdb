"""Circuit-discovery methods on the committed induction model, scored against its ground truth;
the run kind, the CLI, the explorer view; and the hook-level context on a tiny Hugging Face
model (the path the default model takes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from circuits.discovery.evaluate import DiscoveryConfig, discover_task
from circuits.discovery.scoring import roc_auc, top_masks

# AUROC of each method on induction with these settings, measured (patching 1.0, EAP-IG 0.80,
# ACDC 0.93, discrete 0.73, dictionary 0.73; 5 of the 8 heads are the truth, so one swapped
# pair moves AUROC by 1/15) and asserted with a margin. EAP is at chance here (0.47): the
# attention saturates and a single gradient misses it, the failure EAP-IG was made for; its
# bound is asserted on IOI and greater-than below, and its gap to EAP-IG here.
AUROC_BOUNDS = {"patching": 0.9, "eap-ig": 0.7, "acdc": 0.8, "discrete": 0.6,
                "dictionary": 0.6}
FAST = {"discrete": {"epochs": 200}, "dictionary": {"steps": 150},
        "acdc": {"thresholds": [0.001, 0.01, 0.1]}}


@pytest.fixture(scope="module")
def induction():
    cfg = DiscoveryConfig(task="induction", methods=("eap", *AUROC_BOUNDS), n_prompts=32,
                          options=FAST)
    reports, results, ctx, loaded = discover_task(cfg)
    return {r.method: (rep, r) for rep, r in zip(reports, results)}, ctx, loaded


def test_exhaustive_patching_finds_the_planted_heads(induction):
    by, ctx, loaded = induction
    _, res = by["patching"]
    planted = ctx.graph.component_mask(loaded.task.planted)
    top = top_masks(res.component_scores, [int(planted.sum())])[0]
    assert torch.equal(top, planted)


@pytest.mark.parametrize("method", list(AUROC_BOUNDS))
def test_auroc_on_induction_is_well_above_chance(induction, method):
    by, ctx, loaded = induction
    rep, res = by[method]
    assert rep["auroc"] == pytest.approx(roc_auc(res.component_scores, loaded.truth_components))
    assert rep["auroc"] >= AUROC_BOUNDS[method], rep["auroc"]


def test_every_report_has_mib_curves_and_times(induction):
    by, ctx, _ = induction
    for method, (rep, res) in by.items():
        curve = rep["node_curve"]
        assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)
        assert 0 <= rep["cpr_node"] <= 1.2 and rep["cmd_node"] >= 0
        assert rep["seconds"] > 0
        if res.level == "edge":
            assert rep["edge_curve"]["fractions"][0] == 0.001 and "auroc_edges" in rep
    # exhaustive patching's top |truth| components recover the behaviour
    n_truth = int(induction[2].truth_components.sum())
    assert by["patching"][0]["node_curve"]["faithfulness"][n_truth] > 0.85


def test_eap_ig_is_closer_to_patching_than_eap(induction):
    """Hanna et al.'s point: integrated gradients track the real patching effects better, and
    on induction they find the circuit where EAP does not."""
    by, _, _ = induction
    p = by["patching"][1].scores
    err = {m: float((by[m][1].scores - p).abs().sum()) for m in ("eap", "eap-ig")}
    assert err["eap-ig"] < 0.75 * err["eap"]  # measured: 0.57
    assert by["eap-ig"][0]["auroc"] >= by["eap"][0]["auroc"] + 0.2


@pytest.mark.parametrize("task,bound", [("ioi", 0.85), ("greater_than", 0.9)])
def test_eap_auroc_where_one_gradient_suffices(task, bound):
    """EAP's measured AUROC: 0.94 on IOI, 1.0 on greater-than (64 prompt pairs)."""
    (rep,), *_ = discover_task(DiscoveryConfig(task=task, methods=("eap",), n_prompts=64))
    assert rep["auroc"] >= bound


def test_discrete_codes_come_from_one_discrete_sae(induction):
    by, ctx, _ = induction
    rep, res = by["discrete"]
    assert res.level == "node" and res.selected is not None
    assert torch.equal(res.selected, res.component_scores > 0)
    assert rep["extra"]["n_positive"] > 0 and rep["extra"]["d_sae"] == 200


def test_dictionary_tracing_is_exact_and_patch_free(induction):
    """Frozen patterns, norms and MLP ratios make the network linear in the dictionary features:
    the direct contributions (with biases and errors) and the frozen forward reproduce the
    target logit (He et al.'s OV tracing is exact)."""
    by, _, _ = induction
    rep, res = by["dictionary"]
    ex = rep["extra"]["exactness"]
    assert ex["direct"] < 1e-3 and ex["frozen"] < 1e-3
    assert rep["extra"]["qk"]["pairs"] and rep["extra"]["top_direct"]


def test_acdc_keeps_the_planted_circuit_at_its_default_threshold(induction):
    by, ctx, loaded = induction
    rep, res = by["acdc"]
    planted = set(loaded.task.planted)
    assert planted <= set(rep["circuit"])
    assert rep["extra"]["forward_passes"] > 0


def test_circuit_run_cli_and_view(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from circuits.discovery.cli import app
    from interp.workspace import load_run

    ws = tmp_path / "ws"
    r = CliRunner().invoke(app, ["discover", "--task", "induction", "--method", "eap,eap-ig",
                                 "--n-prompts", "16", "--option", "eap-ig.steps=3",
                                 "--workspace", str(ws), "--name", "ind", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("[")))
    assert [row["method"] for row in rows] == ["eap", "eap-ig"]
    run = load_run(ws / "runs" / "circuit" / "ind")
    assert run.kind == "circuit" and run.status == "done"
    assert run.config["options"] == {"eap-ig": {"steps": 3}}
    assert "auroc.eap-ig" in run.metrics and run.metrics["best_auroc"] > 0.5
    report = json.loads((run.path / "report.json").read_text())
    assert report["truth"]["components"] and len(report["reports"]) == 2
    bad = CliRunner().invoke(app, ["discover", "--method", "eap-gi", "--workspace", str(ws)])
    assert bad.exit_code == 2 and "eap-ig" in bad.output
    listing = CliRunner().invoke(app, ["circuit-tasks", "--json"])
    assert {t["task"] for t in json.loads(listing.output)} >= {"induction", "ioi", "othello"}

    # the explorer's view of this run
    pytest.importorskip("streamlit")
    repo = str(Path(__file__).resolve().parent.parent)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))

    def page(run_dir):
        from app.views.circuit import render
        from interp.workspace import load_run as _load

        render(_load(run_dir))

    at = AppTest.from_function(page, args=(str(run.path),), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"]
              for c in at.get("plotly_chart")]
    assert any(t.startswith("Faithfulness of top-k circuits") for t in titles), titles
    assert any(t.startswith("ROC") for t in titles) and any(t.startswith("Methods") for t in titles)


def test_hook_level_context_on_a_hugging_face_model(tiny_llama, tiny_llama_dir, tmp_path):
    """Component patching through canonical hooks: a head's effect equals replacing its slice
    of hook_z by hand; EAP, the curves and a prompts run work on any HookedModel."""
    from circuits.discovery.hooked import HookedContext, prompt_batch
    from circuits.discovery.runs import load_report, prompts_run
    from circuits.discovery.scoring import faithfulness_curve

    pairs = [{"clean": "abcabcab", "corrupt": "xyzuvwqr", "distractor": "z"},
             {"clean": "hijhijhi", "corrupt": "klmnopst", "distractor": "m"}]
    for p in pairs:  # a random model: let its own top token be the answer (so it is "right")
        with torch.no_grad():
            top = int(tiny_llama(p["clean"])[0, -1].argmax())
        p["answer"] = tiny_llama.tokenizer.decode([top])
    batch = prompt_batch(tiny_llama, pairs)
    ctx = HookedContext(tiny_llama, batch)
    g = ctx.graph
    assert g.level == "node" and g.n_components == 2 * (4 + 1)
    effects = ctx.patch_effects("node")
    corr = ctx.corrupt_cache["blocks.1.attn.hook_z"]

    def swap(z, hook):
        z = z.clone()
        z[:, :, 2] = corr[:, :, 2]
        return z

    with torch.no_grad(), tiny_llama.hooks([("blocks.1.attn.hook_z", swap)]):
        logits = tiny_llama(batch.clean)[:, -1]
    manual = ctx.full_metric - float(ctx.metric_fn(logits, batch).mean())
    assert float(effects[g.component("a1.h2")]) == pytest.approx(manual, abs=1e-4)
    eap = ctx.gradient_scores((1.0,), "inputs")
    assert eap.shape == (g.n_components,) and eap.abs().sum() > 0
    curve = faithfulness_curve(ctx, effects, "node", "every")
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-4)
    run = prompts_run(pairs, ("patching", "eap", "discrete"), model=tiny_llama,
                      workspace=tmp_path, options={"discrete": {"epochs": 50}})
    report = load_report(run)
    assert report["truth"] is None and [r["method"] for r in report["reports"]] == [
        "patching", "eap", "discrete"]
    assert "auroc" not in report["reports"][0]

    # the same from the command line, pairs from a JSONL file; 'all' leaves out task-only methods
    from typer.testing import CliRunner

    from circuits.discovery.cli import app

    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    r = CliRunner().invoke(app, ["discover", "--prompts", str(tmp_path / "pairs.jsonl"),
                                 "--model", str(tiny_llama_dir), "--method", "all",
                                 "--option", "discrete.epochs=20", "--option",
                                 "acdc.thresholds=[0.01]", "--workspace", str(tmp_path / "ws"),
                                 "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("[")))
    assert [row["method"] for row in rows] == ["patching", "eap", "eap-ig", "acdc", "discrete"]


@pytest.mark.slow
def test_default_model_on_user_prompts(default_model, all_cores, tmp_path):
    """The default model on two IOI prompts: head/MLP EAP scores and MIB's curve; the top
    components recover most of the logit difference."""
    from circuits.discovery.runs import load_report, prompts_run

    pairs = [{"clean": "When Mary and John went to the store, John gave a drink to",
              "corrupt": "When Mary and John went to the store, Paul gave a drink to",
              "answer": " Mary", "distractor": " John"},
             {"clean": "When Anna and Tom went to the park, Tom gave a ball to",
              "corrupt": "When Anna and Tom went to the park, Mark gave a ball to",
              "answer": " Anna", "distractor": " Tom"}]
    run = prompts_run(pairs, ("eap",), model=default_model, workspace=tmp_path)
    rep = load_report(run)["reports"][0]
    c = default_model.cfg
    assert len(rep["component_scores"]) == c.n_layers * (c.n_heads + 1)
    curve = rep["node_curve"]
    assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-3)
    assert max(curve["faithfulness"][6:9]) > 0.5  # 10-50% of the components
