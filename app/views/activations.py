"""View of an activation store run (kind "activations", written by `interp cache`): the
store's facts, its hooks with their widths and norms, a norms histogram from a bounded sample
of rows, and a few token windows as text."""

from __future__ import annotations

import streamlit as st

from app.figures import fig_norm_histogram
from app.tokens import token_html, token_strings
from app.data import ExplorerError, artefact, check_file, inside, read_json
from app.ui import plot
from interp.workspace import Run

SAMPLE_ROWS = 20_000  # rows of one shard read for the norms histogram


@st.cache_data(show_spinner="Reading a sample of the store ...", max_entries=16)
def _norms(path: str, manifest_mtime: int, shard: int, rows: int) -> dict[str, list[float]]:
    from interp.store import ActivationStore

    store = ActivationStore(path, verify=False)
    s = store.shard(shard)  # memory-mapped: only the sampled rows are read
    out = {}
    for hook in store.hooks:
        x = s[hook]
        step = max(1, x.shape[0] // rows)
        out[hook] = x[::step][:rows].float().norm(dim=-1).tolist()
    return out


def open_store(run: Run):
    """The run's store (manifest size-checked first), or an error the page shows."""
    from interp.store import ActivationStore

    manifest = artefact(run, "manifest")
    read_json(manifest.parent / "manifest.json", expect=dict)  # what the store reads: bounded
    store = ActivationStore(manifest.parent, verify=False)
    shards = store.manifest.get("shards", [])
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise ExplorerError(f"The manifest of {run.kind}/{run.name} has no list of shards.")
    for info in shards:
        f = store.path / str(info.get("file", ""))
        if not inside(f, store.path):
            raise ExplorerError(f"The manifest of {run.kind}/{run.name} names a shard outside "
                                f"the store ({info.get('file')!r}); not read.")
        check_file(f, what=f"Shard {info.get('file')!r} of {run.kind}/{run.name}")
    return store, manifest


def render(run: Run) -> None:
    store, manifest = open_store(run)
    m = store.manifest
    cfg = m.get("config", {})
    corpus = cfg.get("corpus", {})
    st.markdown(
        f"**model** `{cfg.get('model', '?')}` · **corpus** `{corpus.get('source', '?')}` · "
        f"**context** {store.context_size} · **dtype** {m.get('dtype')} · "
        f"**windows** {m.get('n_windows')} · **rows** {len(store)} · **shards** {store.n_shards}"
        + ("" if m.get("complete") else " · **incomplete** (re-run the cache command)"))
    norms = run.metrics.get("hooks", {}) if isinstance(run.metrics.get("hooks"), dict) else {}
    st.subheader("Hooks")
    st.dataframe([{"hook": h, "d": store.d(h), **{k: v for k, v in norms.get(h, {}).items()
                                                  if k != "d"}} for h in store.hooks],
                 hide_index=True)
    if store.n_shards == 0:
        st.info("The store has no shards yet.")
        return
    st.subheader("Norms")
    shard = 0
    if store.n_shards > 1:
        shard = st.slider("shard", 0, store.n_shards - 1, 0, key="norm-shard")
    plot(fig_norm_histogram(_norms(str(store.path), manifest.stat().st_mtime_ns, shard,
                                   SAMPLE_ROWS)), key="norms")
    st.subheader("Tokens")
    n_win = m["shards"][shard].get("windows") or store.shard(shard)["tokens"].shape[0]
    w = st.number_input("window in this shard", 0, max(0, n_win - 1), 0, key="tok-window")
    ids = store.shard(shard)["tokens"][int(w)].tolist()
    toks = token_strings(ids, cfg.get("model", ""))
    st.markdown(token_html(toks), unsafe_allow_html=True)
    if toks and toks[0] == f"<{ids[0]}>":
        st.caption("Token ids shown: the store's model is neither the default model nor a "
                   "model directory inside the workspace, so its tokenizer is not read.")
    st.caption(f"window {m['shards'][shard].get('first_window', 0) + int(w)} of the store, "
               f"{len(ids)} tokens; boxes are token boundaries")

