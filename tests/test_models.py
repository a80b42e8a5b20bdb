"""HookedModel on tiny real models: backends agree, hooks edit and always detach, names validate."""

from __future__ import annotations

import pytest
import torch

from interp.errors import HookNotFound, HookNotWritable, ModelLoadError
from interp.models.loading import BACKENDS, load_model

TEXTS = ["hello world, this is a test", "def f(x): return x"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def backends(request, tiny_llama_dir, tiny_gpt2_dir):
    path = tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir
    return {b: load_model(path, backend=b) for b in BACKENDS}


def test_backends_return_the_same_activations_for_every_hook(backends):
    ref = backends["torch"]
    names = ref.hook_names()
    assert "blocks.1.hook_resid_post" in names and "blocks.0.attn.hook_z" in names
    logits_ref, cache_ref = ref.run_with_cache(TEXTS, hooks=names)
    for backend in ("transformer_lens", "nnsight"):
        model = backends[backend]
        assert model.hook_names() == names, backend
        logits, cache = model.run_with_cache(TEXTS, hooks=names)
        torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-5)
        for n in names:
            assert cache[n].shape == cache_ref[n].shape, (backend, n)
            torch.testing.assert_close(cache[n], cache_ref[n], atol=1e-5, rtol=1e-5,
                                       msg=f"{backend} {n}")


def test_cache_matches_hf_hidden_states(backends):
    ref = backends["torch"]
    ids, _ = ref.to_tokens("a tiny test prompt")
    hidden = ref.hf_model(ids, output_hidden_states=True).hidden_states
    _, cache = ref.run_with_cache(ids, hooks=["blocks.0.hook_resid_post", "blocks.0.hook_resid_pre"])
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], hidden[1])
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], hidden[0])


def test_shapes_follow_transformer_lens(backends):
    m = backends["torch"]
    c = m.cfg
    _, cache = m.run_with_cache("abc", hooks=["blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern",
                                              "blocks.0.mlp.hook_post"])
    assert cache["blocks.0.attn.hook_z"].shape == (1, 4, c.n_heads, c.d_head)  # BOS + 3 chars
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, c.n_heads, 4, 4)
    assert cache["blocks.0.mlp.hook_post"].shape == (1, 4, c.d_mlp)
    pattern = cache["blocks.0.attn.hook_pattern"][0]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(c.n_heads, 4))
    assert torch.all(pattern.triu(1) == 0)  # causal


def test_editing_hooks_agree_across_backends(backends):
    def zero_head(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    def double(x, hook):
        return 2 * x

    edits = [("blocks.0.attn.hook_z", zero_head), ("blocks.1.hook_mlp_out", double)]
    plain = backends["torch"].forward(TEXTS[0])
    outs = {}
    for b, m in backends.items():
        with m.hooks(edits):
            logits, cache = m.run_with_cache(TEXTS[0], hooks=["blocks.0.attn.hook_z"])
        assert cache["blocks.0.attn.hook_z"][:, :, 1].abs().max() == 0, b
        outs[b] = logits
    assert not torch.allclose(outs["torch"], plain)  # the edit changed the output
    for b in ("transformer_lens", "nnsight"):
        torch.testing.assert_close(outs[b], outs["torch"], atol=1e-5, rtol=1e-5)


def _module_hooks(model) -> dict[str, tuple]:
    """Every forward (pre-)hook on the HF modules (transformers may keep its own recorders,
    installed by `output_hidden_states=True`; ours must leave the set as it found it)."""
    return {n: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
            for n, m in model.hf_model.named_modules()}


def test_hooks_are_removed_after_an_exception(tiny_llama):
    before = tiny_llama.forward("xyz")
    hooks_before = _module_hooks(tiny_llama)

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with tiny_llama.hooks([("blocks.0.hook_resid_post", boom)]):
            tiny_llama.forward("xyz")
    assert not tiny_llama._active
    assert _module_hooks(tiny_llama) == hooks_before
    torch.testing.assert_close(tiny_llama.forward("xyz"), before)


def test_unknown_hook_lists_close_matches(tiny_llama):
    with pytest.raises(HookNotFound) as e:
        tiny_llama.run_with_cache("x", hooks=["blocks.1.hook_resid_pots"])
    assert "blocks.1.hook_resid_post" in str(e.value)
    with pytest.raises(HookNotFound, match="blocks.0.ln2.hook_normalized"):
        tiny_llama.hooks([("blocks.0.ln2.hook_normalised", lambda x, h: None)]).__enter__()


def test_read_only_hook_refuses_edits(tiny_llama):
    with pytest.raises(HookNotWritable, match="hook_resid_mid"):
        with tiny_llama.hooks([("blocks.0.hook_resid_mid", lambda x, h: x * 0)]):
            pass


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_at_layer(backend, tiny_llama_dir):
    m = load_model(tiny_llama_dir, backend=backend)
    logits, cache = m.run_with_cache(TEXTS, hooks=["blocks.0.hook_resid_post"], stop_at_layer=1)
    assert logits is None
    full_logits, full = m.run_with_cache(TEXTS, hooks=["blocks.0.hook_resid_post"])
    assert full_logits is not None
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], full["blocks.0.hook_resid_post"])
    assert m.stop_layer_for(["blocks.0.hook_resid_post"]) == 1
    assert m.stop_layer_for(["ln_final.hook_normalized"]) is None
    with pytest.raises(Exception, match="would not fire"):
        m.run_with_cache("x", hooks=["blocks.1.hook_resid_post"], stop_at_layer=1)


def test_stop_at_layer_skips_later_blocks(tiny_llama):
    calls = []
    handle = tiny_llama.hf_model.model.layers[1].self_attn.register_forward_pre_hook(
        lambda mod, args: calls.append(1))
    try:
        tiny_llama.run_with_cache("abc", hooks=["blocks.0.hook_mlp_out"], stop_at_layer="auto")
    finally:
        handle.remove()
    assert calls == []


def test_inputs_and_bos(tiny_llama):
    ids, mask = tiny_llama.to_tokens(["ab", "abcd"])
    bos = tiny_llama.tokenizer.bos_token_id
    assert ids.shape == (2, 5) and (ids[:, 0] == bos).all()
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    ids2, mask2 = tiny_llama.to_tokens("ab", prepend_bos=False)
    assert ids2.shape == (1, 2) and mask2 is None
    # the same text gives the same activations alone and as the shorter row of a padded batch
    _, a = tiny_llama.run_with_cache("ab", hooks=["blocks.1.hook_resid_post"])
    _, b = tiny_llama.run_with_cache(["ab", "abcd"], hooks=["blocks.1.hook_resid_post"])
    torch.testing.assert_close(a["blocks.1.hook_resid_post"][0], b["blocks.1.hook_resid_post"][0, :3])
    # a tensor of ids is used as given
    _, c = tiny_llama.run_with_cache(ids[1], hooks=["blocks.1.hook_resid_post"])
    torch.testing.assert_close(c["blocks.1.hook_resid_post"][0], b["blocks.1.hook_resid_post"][1])
    assert tiny_llama.to_string(ids[1]) == "<bos>abcd"


def test_facts(tiny_llama, tiny_gpt2_dir):
    c = tiny_llama.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp) == (2, 64, 4, 2, 16, 256)
    g = load_model(tiny_gpt2_dir).cfg
    assert (g.model_type, g.n_layers, g.d_model, g.d_mlp) == ("gpt2", 2, 64, 256)


def test_tiny_models_are_deterministic(tmp_path):
    from interp.models.tiny import build_tiny_model

    a, b = build_tiny_model("llama", seed=3), build_tiny_model("llama", seed=3)
    c = build_tiny_model("llama", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="backend"):
        load_model(tmp_path, backend="jax")
    with pytest.raises(ModelLoadError, match="Did you mean"):
        load_model("smollm")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("someone/not-a-real-model-xyz")


def test_embedding_hook_caches_with_auto_stop(tiny_llama):
    """`hook_embed` lies before block 0: 'auto' stops before any block and still caches it."""
    assert tiny_llama.stop_layer_for(["hook_embed"]) == 0
    logits, cache = tiny_llama.run_with_cache("hello", hooks=["hook_embed"], stop_at_layer="auto")
    assert logits is None and cache["hook_embed"].shape[-1] == tiny_llama.cfg.d_model
    _, full = tiny_llama.run_with_cache("hello", hooks=["hook_embed"])
    assert torch.equal(cache["hook_embed"], full["hook_embed"])
