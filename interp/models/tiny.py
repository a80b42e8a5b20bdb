"""Tiny models for tests and examples, built in code from a seed (no download).

`build_tiny_model("llama")` gives a 2-layer Llama-style causal LM (any registered family:
"gpt2", "gpt_neox", "gemma2", ...) with a character-level tokenizer; `save_tiny_model(dir, ...)` writes it as an ordinary Hugging Face model directory, so it
loads through `load_model(dir)` on every backend like any other local model.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>", "<unk>")
CHARS = tuple(chr(i) for i in range(32, 127)) + ("\n", "\t")


def char_tokenizer(save_dir: str | Path | None = None):
    """A character-level fast tokenizer (ASCII printable + newline/tab, 4 special tokens).

    TransformerLens reloads tokenizers by name, so the tokenizer is saved to and loaded from
    `save_dir` when given.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>",
    )
    if save_dir is not None:
        tok.save_pretrained(str(save_dir))
        tok = PreTrainedTokenizerFast.from_pretrained(str(save_dir))
    return tok


def tiny_config(arch: str = "llama", n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
                d_mlp: int | None = None, vocab_size: int | None = None, n_ctx: int = 256):
    """A small Hugging Face config of a registered family (`arch`: its `model_type`, e.g.
    "llama", "gpt2", "gpt_neox", "gemma2"; see `interp.models.families.FAMILIES`)."""
    from interp.errors import ConfigError, unknown_name_message
    from interp.models.families import FAMILIES

    if arch not in FAMILIES:
        raise ConfigError(unknown_name_message("tiny architecture", arch, FAMILIES,
                                               hint=f"Choose one of {', '.join(FAMILIES)}."))
    return FAMILIES[arch].tiny_config(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=d_mlp or 4 * d_model,
        vocab_size=vocab_size or len(SPECIAL_TOKENS) + len(CHARS), n_ctx=n_ctx)


def build_tiny_model(arch: str = "llama", seed: int = 0, perturb_biases: bool = False,
                     **config_kwargs):
    """A randomly initialised tiny causal LM (eval mode, fp32, eager attention) from `seed`.

    Norm weights (which start at 1, or 0 for Gemma's 1 + w) are perturbed so tests see them;
    `perturb_biases` also gives every zero-initialised bias random values."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, **config_kwargs)
    config._attn_implementation = "eager"
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name or ".ln_" in name:
                    p.add_(0.2 * torch.randn_like(p))
                elif perturb_biases and name.endswith(".bias"):
                    p.add_(0.1 * torch.randn_like(p))
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def save_tiny_model(path: str | Path, arch: str = "llama", seed: int = 0, model=None,
                    **config_kwargs) -> Path:
    """Write a tiny model (built from `seed`, or the given `model`) and its tokenizer to `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else build_tiny_model(arch, seed=seed, **config_kwargs)
    model.save_pretrained(str(path))
    char_tokenizer(path)
    return path
