"""The explorer's tests: a small real workspace (a tiny model's activation store and an SAE
trained on it in seconds, plus the awkward cases: broken, failed, running, unknown kind, a
run.json that points outside the workspace), and `open_page`, which runs one page of the
explorer under `streamlit.testing.v1.AppTest` (through the `explorer` fixture of conftest.py,
which also clears Streamlit's caches)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

HOOK = "blocks.0.hook_resid_post"
ENTRY = Path(__file__).resolve().parent.parent / "app" / "explorer.py"


def build_workspace(ws: Path, model_dir: Path, model=None) -> Path:
    from interp.data import CorpusSpec
    from interp.caching import cache_activations
    from interp.store import StoreConfig
    from interp.workspace import run_context, run_dir
    from saes.base import SAEConfig
    from saes.data import DataConfig
    from saes.runs import train_run
    from saes.train import TrainConfig

    ws = Path(ws)
    # the model travels with the workspace, so the explorer may read its tokenizer
    model_dir = Path(shutil.copytree(model_dir, ws / "models" / Path(model_dir).name))
    cfg = StoreConfig(model=str(model_dir), hooks=(HOOK,), n_tokens=64 * 96, context_size=64,
                      batch_size=8, shard_windows=32, corpus=CorpusSpec(source="python-docs"))
    with run_context("activations", "tiny-store", cfg.to_dict(), root=ws) as run:
        store = cache_activations(run.path, cfg, model=model, progress=False)
        run.finish(metrics=store.summary(), artefacts={"manifest": "manifest.json"})
    tcfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=64, d_sae=256, k=8, hook_name=HOOK,
                                     model_name=str(model_dir)),
                       total_tokens=256 * 30, batch_size=256, checkpoint_every=0, log_every=3)
    sae_run = run_dir("sae", "tiny-topk", ws)
    train_run(tcfg, DataConfig(activations=str(run.path)), sae_run, progress=False, eval_windows=4)
    from saes.features import features_run

    features_run(sae_run, 64 * 32, name="tiny-topk", workspace=ws, model=model, progress=False)

    # the awkward cases a real workspace accumulates
    broken = run_dir("sae", "broken-json", ws)
    broken.mkdir(parents=True)
    (broken / "run.json").write_text("{not json")
    from interp.workspace import create_run

    create_run("sae", "still-running", {"note": "no artefacts yet"}, root=ws)
    failed = run_dir("sae", "failed-run", ws)
    failed.mkdir(parents=True)
    (failed / "run.json").write_text(json.dumps({
        "kind": "sae", "name": "failed-run", "config": {}, "created": "2026-01-01T00:00:00+00:00",
        "status": "failed", "metrics": {"error": "KeyboardInterrupt: interrupted"},
        "artefacts": {"eval": "../../../../etc/passwd"}}))
    with run_context("mystery", "unknown-kind", {"a": 1}, root=ws) as r:
        r.finish(metrics={"score": 0.5}, artefacts={"table": "table.parquet"})
    outside = ws.parent / f"{ws.name}-outside"
    outside.mkdir(exist_ok=True)
    (outside / "run.json").write_text(json.dumps({"kind": "sae", "name": "escape"}))
    esc = run_dir("sae", "escape", ws)
    esc.mkdir(parents=True)
    os.symlink(outside / "run.json", esc / "run.json")
    return ws


# --------------------------------------------------------------------------- AppTest helpers
def _explorer(url_path):
    """The AppTest script: the explorer's main(), after switching once to `url_path` (what a
    click on a page link does; AppTest.switch_page only reaches file-based pages)."""
    import streamlit as st

    from app.navigation import main, pages

    if url_path is not None and not st.session_state.get("apptest-opened"):
        st.session_state["apptest-opened"] = True
        (page,) = [p for p in pages() if p.url_path == url_path]
        st.switch_page(page, query_params=st.query_params.to_dict())
    main()


def open_page(url_path: str | None = None, timeout: float = 120, **query):
    """Run the explorer's page at `url_path` ('SAEs', 'All_runs'; None: Home) with URL `query`
    on the workspace in $INTERP_WORKSPACE; fails on any exception the page raised."""
    from streamlit.testing.v1 import AppTest

    if url_path is None:
        at = AppTest.from_file(ENTRY, default_timeout=timeout)  # the real entry point
    else:
        at = AppTest.from_function(_explorer, args=(url_path,), default_timeout=timeout)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def values(v) -> list:
    """A plotly JSON array: a list, or numpy data as {"dtype", "bdata" (base64)}."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)
