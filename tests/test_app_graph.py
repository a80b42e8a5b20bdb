"""The explorer's graph page says which dictionaries a graph ran through (per-layer
transcoders or a cross-layer transcoder) and shows the set's replacement-quality scores when the
run keeps a report; real graph runs on the tiny Llama with random sets, under AppTest."""

from __future__ import annotations

import pytest

from app.kinds import KINDS
from app_workspace import charts

PAGE = KINDS["graph"].url_path
PROMPT = "def f(x): return x"


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_llama_dir, tiny_llama):
    import shutil

    from circuits.attribution import AttributionConfig
    from circuits.clt import CLTSet
    from circuits.quality import QualityConfig, replacement_quality
    from circuits.runs import graph_run
    from circuits.transcoders import TranscoderSet
    from saes.architectures import create_sae
    from saes.base import SAEConfig

    root = tmp_path_factory.mktemp("graph-app") / "ws"
    shutil.copytree(tiny_llama_dir, root / "models" / "tiny")
    model, d = tiny_llama, tiny_llama.cfg.d_model
    plt = TranscoderSet({i: create_sae(SAEConfig(
        architecture="topk", d_in=d, d_sae=64, k=4, transcoder=True,
        hook_name=f"blocks.{i}.ln2.hook_normalized", hook_name_out=f"blocks.{i}.hook_mlp_out"),
        seed=i).eval() for i in range(2)}, "random-plt")
    clt = CLTSet(create_sae(SAEConfig(
        architecture="clt", d_in=d, d_sae=128, k=4, transcoder=True, clt_layers=(0, 1),
        hook_name="blocks.{layer}.ln2.hook_normalized",
        hook_name_out="blocks.{layer}.hook_mlp_out"), seed=0), "random-clt")
    cfg = AttributionConfig(batch_size=64)
    graph_run(model, plt, PROMPT, "plt-graph", workspace=root, config=cfg)
    quality = replacement_quality(model, clt, [PROMPT, "x = 1"], QualityConfig(batch_size=64))
    graph_run(model, clt, PROMPT, "clt-graph", workspace=root, config=cfg, quality=quality)
    return root, quality


def _text(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_graph_page_says_per_layer_transcoders_and_shows_no_quality_without_a_report(
        ws, explorer):
    root, _ = ws
    at = explorer(root, PAGE, run="plt-graph")
    text = _text(at)
    assert "Through per-layer transcoders (PLTs) over layers 0-1" in text
    assert "cross-layer" not in text and "Replacement quality" not in text
    assert not [f for f in charts(at) if f["layout"]["title"]["text"].startswith("Replacement")]


def test_graph_page_says_cross_layer_transcoder_and_shows_the_quality_report(ws, explorer):
    root, quality = ws
    at = explorer(root, PAGE, run="clt-graph")
    text = _text(at)
    assert "Through a cross-layer transcoder (CLT) over layers 0-1" in text
    assert "Replacement quality of this set** over 2 prompts" in text
    shown = {m.label: m.value for m in at.metric}
    assert shown["replacement"] == f"{quality['replacement_score']:.3f}"
    assert shown["top-1 agreement"] == f"{quality['top1_agreement']:.3f}"
    assert shown["mean NMSE"] == f"{quality['nmse_mean']:.3f}"
    figs = [f for f in charts(at) if f["layout"]["title"]["text"].startswith("Replacement")]
    assert len(figs) == 1 and "over 2 prompts" in figs[0]["layout"]["title"]["text"]
