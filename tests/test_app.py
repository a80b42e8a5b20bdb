"""The explorer's pages under `streamlit.testing.v1.AppTest`, on a workspace of real tiny runs
(an activation store, an SAE trained on it, its feature tables) plus broken, failed, running,
unknown-kind and escaping runs: every page renders, shows the run's own numbers, and never a
traceback. Hostile workspaces: tests/test_app_hostile.py; the data layer: tests/test_app_data.py."""

from __future__ import annotations

import ast
import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest

from app.kinds import GENERIC, KINDS, KindView
from app_workspace import HOOK, build_workspace, charts, values

APP = Path(__file__).resolve().parent.parent / "app"
ALL_PAGES = [v.url_path for v in (*KINDS.values(), GENERIC)]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_llama_dir, tiny_llama):
    return build_workspace(tmp_path_factory.mktemp("app") / "ws", tiny_llama_dir, tiny_llama)


def test_registry_entries_have_views_and_distinct_pages():
    from app.kinds import view_module

    urls = [v.url_path for v in (*KINDS.values(), GENERIC)]
    assert len(set(urls)) == len(urls) and all(urls)  # Home alone has the root URL
    for kind, view in {**KINDS, "?": GENERIC}.items():
        assert callable(view_module(kind).render), kind
    with pytest.raises(ValueError, match="registered twice"):
        from app.kinds import _registry

        _registry(KindView("a", "A"), KindView("b", "A"))  # same URL path


def test_app_folder_has_no_path_hacks_or_case_collisions():
    files = [p.relative_to(APP).as_posix() for p in APP.rglob("*")
             if "__pycache__" not in p.parts]
    assert [f for f, n in Counter(f.lower() for f in files).items() if n > 1] == []
    hacks = [f for f in files if f.endswith(".py") and "sys.path" in (APP / f).read_text()]
    assert hacks == [] and not (APP / "pages").exists()


@pytest.mark.parametrize("path", ALL_PAGES)
def test_every_page_renders_on_the_workspace(ws, explorer, path):
    at = explorer(ws, path)
    title = next(v.title for v in (*KINDS.values(), GENERIC) if v.url_path == path)
    assert [t.value for t in at.title] == [title] and not at.exception


@pytest.mark.parametrize("path", [None, *ALL_PAGES])
def test_every_page_is_friendly_on_an_empty_workspace(tmp_path, explorer, path):
    at = explorer(tmp_path / "nothing-here", path)
    assert any("make demo" in i.value for i in at.info)


def test_a_new_kind_is_one_registry_line(ws, explorer, monkeypatch):
    """Registering a kind (here with the generic view) gives it a page, a Home section and
    links, with nothing else to write."""
    import shutil

    from app import kinds

    src = ws / "runs/mystery/unknown-kind"
    dst = ws / "runs/circuit/tiny-circuit"
    shutil.copytree(src, dst)
    run = json.loads((dst / "run.json").read_text())
    (dst / "run.json").write_text(json.dumps({**run, "kind": "circuit", "name": "tiny-circuit"}))
    monkeypatch.setitem(kinds.KINDS, "circuit", KindView("circuit", "Circuit discovery",
                                                          ("score",), view="app.views.generic"))
    try:
        home = explorer(ws)
        assert "Circuit discovery" in [h.value for h in home.header]
        links = [u for df in home.dataframe for u in df.value["open"]]
        assert "Circuit_discovery?run=tiny-circuit" in links
        at = explorer(ws, "Circuit_discovery", run="tiny-circuit")
        assert [t.value for t in at.title] == ["Circuit discovery"]
        assert at.selectbox[0].value == "tiny-circuit"
        assert {m.label: m.value for m in at.metric} == {"score": "0.5"}
    finally:
        shutil.rmtree(ws / "runs/circuit")


def test_home_lists_runs_by_kind_with_status_and_metrics(ws, explorer):
    at = explorer(ws)
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


def test_activation_store_page_shows_hooks_norms_and_tokens(ws, explorer):
    from interp.store import ActivationStore

    at = explorer(ws, "Activation_stores")
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


@pytest.mark.timeout(120)  # a tokenizer loader that opened the FIFO would block forever
def test_tokenizers_are_read_only_inside_the_workspace(ws, monkeypatch, tiny_llama_dir,
                                                       streamlit_caches):
    from app.tokens import token_strings

    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))
    inside = ws / "models" / Path(tiny_llama_dir).name
    assert token_strings([70, 71], str(inside)) == [store_tokenizer(ws).decode([i])
                                                    for i in (70, 71)]
    assert token_strings([70, 71], str(tiny_llama_dir)) == ["<70>", "<71>"]  # outside: ids
    if hasattr(os, "mkfifo"):  # a FIFO as tokenizer.json: treated as missing, never opened
        import shutil

        fifo_model = ws / "models" / "with-fifo"
        shutil.copytree(inside, fifo_model)
        (fifo_model / "tokenizer.json").unlink()
        os.mkfifo(fifo_model / "tokenizer.json")
        try:
            assert token_strings([70, 71], str(fifo_model)) == ["<70>", "<71>"]
        finally:
            shutil.rmtree(fifo_model)


def test_store_with_a_shard_outside_is_refused(ws, explorer):
    import shutil

    bad = ws / "runs/activations/evil-store"
    shutil.copytree(ws / "runs/activations/tiny-store", bad)
    run = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**run, "name": "evil-store"}))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../../../../outside.safetensors"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    try:
        at = explorer(ws, "Activation_stores", run="evil-store")
        assert any("outside the store" in e.value for e in at.error) and not charts(at)
    finally:
        shutil.rmtree(bad)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX feature")
@pytest.mark.timeout(120)  # a page that opened the FIFO would block forever
def test_store_with_a_fifo_shard_is_refused(ws, explorer):
    import shutil

    bad = ws / "runs/activations/fifo-store"
    shutil.copytree(ws / "runs/activations/tiny-store", bad)
    run = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**run, "name": "fifo-store"}))
    shard = json.loads((bad / "manifest.json").read_text())["shards"][0]["file"]
    (bad / shard).unlink()
    os.mkfifo(bad / shard)
    try:
        at = explorer(ws, "Activation_stores", run="fifo-store")
        assert any("not a regular file" in e.value for e in at.error) and not charts(at)
    finally:
        shutil.rmtree(bad)


def test_sae_page_shows_curves_eval_and_density(ws, explorer):
    at = explorer(ws, "SAEs")
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
def test_sae_page_on_unfinished_runs(ws, explorer, run, banner):
    at = explorer(ws, "SAEs", run=run)
    assert at.selectbox[0].value == run
    notes = " ".join(x.value for x in [*at.error, *at.warning])
    assert banner in notes
    if run == "failed-run":  # its eval artefact points at ../../../../etc/passwd
        assert "refusing to read it" in notes and not charts(at)


@pytest.mark.parametrize("run", ["broken-json", "escape", "../../../etc", "no-such-run"])
def test_sae_page_on_broken_or_bogus_runs(ws, explorer, run):
    at = explorer(ws, "SAEs", run=run)
    if run in ("broken-json", "escape"):
        assert at.selectbox[0].value == run and at.error and not charts(at)
    else:  # names not in the workspace are ignored: the newest done run is shown
        assert at.selectbox[0].value == "tiny-topk"


def _index(ws):
    from saes.features import FeatureIndex

    return FeatureIndex(ws / "runs/features/tiny-topk")


def test_feature_browser_by_id(ws, explorer):
    idx = _index(ws)
    alive = [r["latent"] for r in idx.latents(order_by="max_act")]
    latent = alive[0]
    at = explorer(ws, "Feature_browser", latent=str(latent))
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


def test_feature_browser_by_token(ws, explorer):
    idx = _index(ws)
    latent = idx.latents(order_by="max_act")[0]["latent"]
    ctx = idx.page(latent).contexts[0]
    token = ctx.tokens[ctx.center]
    at = explorer(ws, "Feature_browser")
    at.text_input(key="latent-token").input(token).run()
    hits = next(df.value for df in at.dataframe if "hits" in df.value.columns)
    assert latent in list(hits["latent"])
    at.selectbox(key="latent-token-pick").select(latent).run()
    at.button(key="latent-token-show").click().run()
    assert not at.exception
    assert f"Latent {latent}" in [s.value for s in at.subheader]


def test_feature_browser_marks_tables_that_are_not_parquet(ws, explorer):
    import shutil

    bad = ws / "runs/features/not-parquet"
    shutil.copytree(ws / "runs/features/tiny-topk", bad)
    run = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**run, "name": "not-parquet"}))
    (bad / "contexts.parquet").write_text("latent,context\n1,hello\n")
    try:
        at = explorer(ws, "Feature_browser", run="not-parquet")
        assert at.selectbox[0].value == "not-parquet"
        assert any("contexts.parquet" in e.value and "not a Parquet file" in e.value
                   for e in at.error)
        assert not charts(at)
    finally:
        shutil.rmtree(bad)


def test_all_runs_page_shows_unknown_kinds_generically(ws, explorer):
    at = explorer(ws, "All_runs", kind="mystery")
    assert at.selectbox[0].value == "mystery"
    (table,) = [df.value for df in at.dataframe]
    assert list(table["artefact"]) == ["table"] and not table["present"].iloc[0]


def test_bounded_reads_refuse_outside_and_oversized(ws, monkeypatch, tmp_path):
    from app import data

    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(data.ExplorerError, match="outside the workspace"):
        data.read_json(tmp_path / "x.json")
    big = ws / "runs/sae/tiny-topk/big.json"
    big.write_text(json.dumps({"a": "x" * 2000}))
    with pytest.raises(data.ExplorerError, match="more than the explorer reads"):
        data.read_json(big, limit=1000)
    log = ws / "runs/sae/tiny-topk/log.jsonl"
    log.write_text("".join(json.dumps({"step": i}) + "\n" for i in range(10_000)) + "garbage\n")
    recs, truncated = data.read_jsonl(log, max_bytes=20_000, max_points=100)
    assert truncated and len(recs) <= 101 and recs[-1]["step"] == 9_999
    assert recs[0]["step"] > 8_000  # only the tail was read
    big.unlink()
    log.unlink()


def test_home_links_open_each_runs_page(ws, explorer):
    from urllib.parse import parse_qs, urlsplit

    at = explorer(ws)
    links = [u for df in at.dataframe for u in df.value["open"]]
    assert "All_runs?kind=mystery&run=unknown-kind" in links
    for link in links:
        url = urlsplit(link)
        assert url.path in ALL_PAGES
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        target = explorer(ws, url.path, **query)
        (picker,) = [b for b in target.selectbox if (b.key or "").startswith("pick-")]
        assert picker.value == query["run"]  # the link opens that very run
