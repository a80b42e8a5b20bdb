"""The explorer's pages under `streamlit.testing.v1.AppTest`, on a workspace of real tiny runs
(an activation store, an SAE trained on it, its feature tables) plus broken, failed, running,
unknown-kind and escaping runs: every page renders, shows the run's own numbers, and never a
traceback."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
if (_repo := str(Path(__file__).resolve().parent.parent)) not in sys.path:
    sys.path.insert(0, _repo)  # `app` is a folder of the checkout, not an installed package
import streamlit as st  # noqa: E402

from app_workspace import HOOK, build_workspace, charts, page, values  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "app"
ALL_PAGES = sorted(p.relative_to(APP).as_posix() for p in (APP / "pages").glob("*.py"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_llama_dir, tiny_llama):
    return build_workspace(tmp_path_factory.mktemp("app") / "ws", tiny_llama_dir, tiny_llama)


@pytest.fixture(autouse=True)
def _fresh_caches():
    # st.cache_data / cache_resource survive across AppTest instances in one process
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def test_registry_entries_have_views_and_pages():
    from app.kinds import GENERIC, KINDS, view_module

    for kind, view in {**KINDS, "?": GENERIC}.items():
        assert (APP / view.page).is_file(), f"{kind}: page {view.page} missing"
        assert callable(view_module(kind).render)


@pytest.mark.parametrize("path", ALL_PAGES)
def test_every_page_renders_on_the_workspace(ws, monkeypatch, path):
    at = page(ws, monkeypatch, path)
    assert at.title and not at.exception


@pytest.mark.parametrize("path", [None, *ALL_PAGES])
def test_every_page_is_friendly_on_an_empty_workspace(tmp_path, monkeypatch, path):
    at = page(tmp_path / "nothing-here", monkeypatch, path)
    assert any("make demo" in i.value for i in at.info)


def test_home_lists_runs_by_kind_with_status_and_metrics(ws, monkeypatch):
    at = page(ws, monkeypatch)
    assert [h.value for h in at.header][:3] == ["Activation stores", "SAEs and transcoders",
                                                 "Feature browser"]
    assert any(h.value.startswith("mystery") for h in at.header)
    tables = {tuple(df.value["name"]): df.value for df in at.dataframe}
    sae = next(v for k, v in tables.items() if "tiny-topk" in k and "failed-run" in k)
    row = sae[sae["name"] == "tiny-topk"].iloc[0]
    metrics = json.loads((ws / "runs/sae/tiny-topk/run.json").read_text())["metrics"]
    assert row["status"] == "done" and float(row["fvu"]) == pytest.approx(metrics["fvu"], rel=1e-3)
    assert row["open"] == "SAEs?run=tiny-topk"
    statuses = dict(zip(sae["name"], sae["status"]))
    assert statuses["failed-run"] == "failed" and statuses["still-running"] == "running"
    assert statuses["broken-json"] == "broken" and statuses["escape"] == "broken"
    warnings = " ".join(w.value for w in at.warning)
    assert "broken-json" in warnings and "outside the workspace" in warnings


def test_activation_store_page_shows_hooks_norms_and_tokens(ws, monkeypatch):
    from interp.store import ActivationStore

    at = page(ws, monkeypatch, "pages/1_Activation_stores.py")
    assert at.selectbox[0].value == "tiny-store"
    hooks = at.dataframe[0].value
    assert list(hooks["hook"]) == [HOOK] and int(hooks["d"].iloc[0]) == 64
    (fig,) = charts(at)
    store = ActivationStore(ws / "runs/activations/tiny-store")
    norms = store.shard(0)[HOOK].float().norm(dim=-1)
    xs = values(fig["data"][0]["x"])
    assert fig["data"][0]["name"] == HOOK and len(xs) == len(norms)
    assert xs[:5] == pytest.approx([math.log10(v) for v in norms[:5].tolist()], rel=1e-5)
    window = store.shard(0)["tokens"][0].tolist()
    text = " ".join(m.value for m in at.markdown)
    tok = store_tokenizer(ws)
    assert tok.decode([window[5]]) in text  # the first window shown as tokens


def store_tokenizer(ws):
    from transformers import AutoTokenizer

    cfg = json.loads((ws / "runs/activations/tiny-store/manifest.json").read_text())["config"]
    return AutoTokenizer.from_pretrained(cfg["model"])


def test_tokenizers_are_read_only_inside_the_workspace(ws, monkeypatch, tiny_llama_dir):
    from app.tokens import token_strings

    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))
    inside = ws / "models" / Path(tiny_llama_dir).name
    assert token_strings([70, 71], str(inside)) == [store_tokenizer(ws).decode([i])
                                                    for i in (70, 71)]
    assert token_strings([70, 71], str(tiny_llama_dir)) == ["<70>", "<71>"]  # outside: ids


def test_store_with_a_shard_outside_is_refused(ws, monkeypatch, tmp_path):
    import shutil

    bad = ws / "runs/activations/evil-store"
    shutil.copytree(ws / "runs/activations/tiny-store", bad)
    run = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**run, "name": "evil-store"}))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../../../../outside.safetensors"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    try:
        at = page(ws, monkeypatch, "pages/1_Activation_stores.py", run="evil-store")
        assert any("outside the store" in e.value for e in at.error) and not charts(at)
    finally:
        shutil.rmtree(bad)


def test_sae_page_shows_curves_eval_and_density(ws, monkeypatch):
    at = page(ws, monkeypatch, "pages/2_SAEs.py")
    assert at.selectbox[0].value == "tiny-topk"  # the newest *done* run, not the running one
    curves, summary, density = charts(at)
    records = [json.loads(line) for line in
               (ws / "runs/sae/tiny-topk/metrics.jsonl").read_text().splitlines()]
    assert values(curves["data"][1]["y"]) == pytest.approx([r["fvu"] for r in records])
    report = json.loads((ws / "runs/sae/tiny-topk/eval.json").read_text())
    assert "topk" in summary["layout"]["title"]["text"]
    assert len(values(density["data"][0]["x"])) == 256 == report["sae"]["d_sae"]
    links = [p for p in at.get("page_link")]
    assert any("tiny-topk" in p.proto.label for p in links)  # -> its feature pages


@pytest.mark.parametrize("run,banner", [("failed-run", "failed"), ("still-running", "running")])
def test_sae_page_on_unfinished_runs(ws, monkeypatch, run, banner):
    at = page(ws, monkeypatch, "pages/2_SAEs.py", run=run)
    assert at.selectbox[0].value == run
    notes = " ".join(x.value for x in [*at.error, *at.warning])
    assert banner in notes
    if run == "failed-run":  # its eval artefact points at ../../../../etc/passwd
        assert "refusing to read it" in notes and not charts(at)


@pytest.mark.parametrize("run", ["broken-json", "escape", "../../../etc", "no-such-run"])
def test_sae_page_on_broken_or_bogus_runs(ws, monkeypatch, run):
    at = page(ws, monkeypatch, "pages/2_SAEs.py", run=run)
    if run in ("broken-json", "escape"):
        assert at.selectbox[0].value == run and at.error and not charts(at)
    else:  # names not in the workspace are ignored: the newest done run is shown
        assert at.selectbox[0].value == "tiny-topk"


def _index(ws):
    from saes.features import FeatureIndex

    return FeatureIndex(ws / "runs/features/tiny-topk")


def test_feature_browser_by_id(ws, monkeypatch):
    idx = _index(ws)
    alive = [r["latent"] for r in idx.latents(order_by="max_act")]
    latent = alive[0]
    at = page(ws, monkeypatch, "pages/3_Feature_browser.py", latent=str(latent))
    assert f"Latent {latent}" in [s.value for s in at.subheader]
    want = idx.page(latent)
    shown = {m.label: m.value for m in at.metric}
    assert float(shown["max act"]) == pytest.approx(want.max_act, rel=1e-3)
    assert int(shown["firing tokens"]) == want.count
    (html,) = at.get("html")
    assert html.proto.body.count("<div") == 1 + len(want.contexts)  # a scroller + rows
    assert "rgba(255,140,0,1.00)" in html.proto.body  # the peak token is fully shaded
    density_all, hist, logits = charts(at)
    assert sum(values(hist["data"][0]["y"])) == want.count
    assert {t for t, _ in want.top_logits} >= {ast.literal_eval(y) for y in values(logits["data"][1]["y"])}


def test_feature_browser_by_token(ws, monkeypatch):
    idx = _index(ws)
    latent = idx.latents(order_by="max_act")[0]["latent"]
    ctx = idx.page(latent).contexts[0]
    token = ctx.tokens[ctx.center]
    at = page(ws, monkeypatch, "pages/3_Feature_browser.py")
    at.text_input(key="latent-token").input(token).run()
    hits = next(df.value for df in at.dataframe if "hits" in df.value.columns)
    assert latent in list(hits["latent"])
    at.selectbox(key="latent-token-pick").select(latent).run()
    at.button(key="latent-token-show").click().run()
    assert not at.exception
    assert f"Latent {latent}" in [s.value for s in at.subheader]


def test_all_runs_page_shows_unknown_kinds_generically(ws, monkeypatch):
    at = page(ws, monkeypatch, "pages/9_All_runs.py", kind="mystery")
    assert at.selectbox[0].value == "mystery"
    (table,) = [df.value for df in at.dataframe]
    assert list(table["artefact"]) == ["table"] and not table["present"].iloc[0]


def test_bounded_reads_refuse_outside_and_oversized(ws, monkeypatch, tmp_path):
    from app import ui

    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))
    with pytest.raises(ui.ExplorerError, match="outside the workspace"):
        ui.read_json(tmp_path / "x.json")
    big = ws / "runs/sae/tiny-topk/big.json"
    big.write_text(json.dumps({"a": "x" * 2000}))
    with pytest.raises(ui.ExplorerError, match="more than the explorer reads"):
        ui.read_json(big, limit=1000)
    log = ws / "runs/sae/tiny-topk/log.jsonl"
    log.write_text("".join(json.dumps({"step": i}) + "\n" for i in range(10_000)) + "garbage\n")
    recs, truncated = ui.read_jsonl(log, max_bytes=20_000, max_points=100)
    assert truncated and len(recs) <= 101 and recs[-1]["step"] == 9_999
    assert recs[0]["step"] > 8_000  # only the tail was read
    big.unlink()
    log.unlink()


def test_home_links_open_each_runs_page(ws, monkeypatch):
    from urllib.parse import parse_qs, urlsplit

    from app.home import page_url

    at = page(ws, monkeypatch)
    links = [u for df in at.dataframe for u in df.value["open"]]
    assert "All_runs?kind=mystery&run=unknown-kind" in links
    pages = {page_url(p): p for p in ALL_PAGES}
    for link in links:
        url = urlsplit(link)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        st.cache_data.clear()
        target = page(ws, monkeypatch, pages[url.path], **query)
        (picker,) = [b for b in target.selectbox if (b.key or "").startswith("pick-")]
        assert picker.value == query["run"]  # the link opens that very run
