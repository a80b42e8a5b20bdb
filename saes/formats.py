"""Reading and writing sparse dictionaries in other libraries' on-disk formats.

- SAELens (our main format, docs: SAE_LIBRARIES.md section 6): a directory with `cfg.json`,
  `sae_weights.safetensors` (exact, strict tensor names) and optional `sparsity.safetensors`.
  `save_saelens` writes what `sae_lens.SAE.load_from_disk` loads, and records our exact training
  config under `metadata.interp_config` so `load_saelens` restores the same architecture
  (e.g. BatchTopK, which SAELens sees as a JumpReLU). `load_saelens` also reads directories
  written by SAELens itself.
- sparsify (EleutherAI): `cfg.json` + `sae.safetensors`, imported as a TopK SAE/transcoder.
- dictionary_learning (saprmarks): `config.json` + `ae.safetensors` (same keys as its `ae.pt`);
  a bare `ae.pt` is read with `torch.load(weights_only=True)` (tensors only, never arbitrary
  pickled objects) and can be converted once with `convert_dictionary_learning`.

Every loader checks tensor names and shapes against the config and raises `ConfigError` naming
the file and tensor. Weights are read with safetensors; nothing is unpickled.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.errors import ConfigError, ModelLoadError, unknown_name_message
from interp.io import atomic_write_json, read_json, save_safetensors_atomic
from saes.base import SAEConfig, SparseDictionary, architecture_class

log = logging.getLogger(__name__)

SAELENS_VERSION = "6.54.12"
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_SPARSITY = "sparsity.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"

# SAELens architecture -> (our architecture, transcoder, skip)
SAELENS_ARCHITECTURES: dict[str, tuple[str, bool, bool]] = {
    "standard": ("standard", False, False),
    "transcoder": ("standard", True, False),
    "skip_transcoder": ("standard", True, True),
    "jumprelu": ("jumprelu", False, False),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
    "topk": ("topk", False, False),
    "gated": ("gated", False, False),
}
_DTYPES = ("float32", "float16", "bfloat16", "float64")


# ============================================================== SAELens: write
def save_saelens(sae: SparseDictionary, path: str | Path, *, sparsity: Tensor | None = None,
                 metadata: dict[str, Any] | None = None) -> Path:
    """Write `sae` as a SAELens SAE directory; returns the directory.

    `sparsity` is the per-latent log10 firing frequency [d_sae] (SAELens stores
    log10(freq + 1e-10)); without it a stale `sparsity.safetensors` is removed. `metadata` is
    merged into cfg.json's `metadata` (e.g. context_size, prepend_bos, dataset_path). Every
    file is written atomically; cfg.json last.
    """
    path = Path(path)
    cfg = sae.cfg
    try:
        architecture = sae.saelens_architecture()
    except NotImplementedError as e:
        raise ConfigError(f"Cannot save a {sae.architecture!r} dictionary in the SAELens "
                          f"format: {e}") from None
    tensors = sae.saelens_tensors()
    dtype = str(tensors["W_dec"].dtype).removeprefix("torch.")
    interp_cfg = {**cfg.to_dict(), "dtype": dtype}
    meta: dict[str, Any] = {"sae_lens_version": SAELENS_VERSION, "model_name": cfg.model_name,
                            "hook_name": cfg.hook_name, "training_architecture": sae.architecture}
    if cfg.transcoder:
        meta["hook_name_out"] = cfg.hook_name_out or cfg.hook_name
    meta.update(metadata or {})
    meta.update({"interp_architecture": sae.architecture, "interp_config": interp_cfg})
    out_cfg: dict[str, Any] = {
        "architecture": architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": dtype,
        "device": "cpu", "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none", "reshape_activations": "none",
    }
    if cfg.transcoder:
        out_cfg["d_out"] = cfg.out_dim
    out_cfg.update(sae.saelens_extra_cfg())
    out_cfg["metadata"] = meta

    path.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(tensors, path / SAELENS_WEIGHTS)
    if sparsity is not None:
        sparsity = sparsity.detach().float().reshape(-1).cpu()
        if sparsity.numel() != cfg.d_sae:
            raise ConfigError(f"sparsity has {sparsity.numel()} entries; expected d_sae={cfg.d_sae}.")
        if bool((sparsity > 1e-4).any()):  # log10(freq + 1e-10) is <= ~4e-11
            raise ConfigError("sparsity must be the log10 firing frequency (<= 0), as SAELens "
                              "stores it; pass torch.log10(freq + 1e-10).")
        save_safetensors_atomic({"sparsity": sparsity.contiguous()}, path / SAELENS_SPARSITY)
    elif (path / SAELENS_SPARSITY).exists():
        (path / SAELENS_SPARSITY).unlink()
    atomic_write_json(path / SAELENS_CFG, out_cfg)
    return path


# =============================================================== SAELens: read
def load_saelens(path: str | Path) -> SparseDictionary:
    """Load a SAELens SAE directory (ours or written by SAELens) as one of our dictionaries.

    Directories we wrote restore the exact training architecture from
    `metadata.interp_config`; others map SAELens's architecture to ours (see
    `SAELENS_ARCHITECTURES`). Encoder-input conventions we do not share are folded into the
    weights exactly: `apply_b_dec_to_input: false` on an SAE moves b_dec into b_enc, and TopK's
    `rescale_acts_by_decoder_norm` moves the decoder norms into the encoder.
    """
    path = Path(path)
    cfg_path = path / SAELENS_CFG
    if not cfg_path.is_file():
        raise ConfigError(f"{path} is not a SAELens SAE directory: {SAELENS_CFG} is missing.")
    raw = read_json(cfg_path)
    metadata = raw.get("metadata") or {}
    weights_path = path / SAELENS_WEIGHTS
    tensors = _read_safetensors(weights_path)
    if "interp_config" in metadata:
        try:
            cfg = SAEConfig.from_dict(metadata["interp_config"])
            sae = architecture_class(cfg.architecture)(cfg)
        except ConfigError as e:  # written by another interp version: read it as SAELens does
            log.warning("%s: metadata.interp_config is not usable here (%s); loading by its "
                        "SAELens architecture instead.", cfg_path, e)
        else:
            _assign_saelens(sae, tensors, weights_path, raw.get("architecture", cfg.architecture))
            return sae.eval()

    raw = _legacy_saelens_cfg(raw)
    metadata = raw.get("metadata") or {}
    arch = raw.get("architecture", "standard")
    if arch not in SAELENS_ARCHITECTURES:
        hint = (f"interp reads the SAELens architectures {', '.join(sorted(SAELENS_ARCHITECTURES))}.")
        if arch in ("batchtopk", "matryoshka_batchtopk"):
            hint += (" This looks like a SAELens training checkpoint; export it with "
                     "TrainingSAE.save_inference_model (it becomes a 'jumprelu').")
        raise ConfigError(f"{cfg_path}: " + unknown_name_message(
            "SAELens architecture", arch, SAELENS_ARCHITECTURES, hint=hint))
    ours, transcoder, skip = SAELENS_ARCHITECTURES[arch]
    for key in ("d_in", "d_sae"):
        if key not in raw:
            raise ConfigError(f"{cfg_path} has no {key!r}; a SAELens cfg.json needs d_in and d_sae.")
    norm = raw.get("normalize_activations", "none") or "none"
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise ConfigError(f"{cfg_path}: normalize_activations={norm!r} normalises inputs at run "
                          "time, which interp dictionaries do not; fold it into the weights "
                          "and save with 'none'.")
    if norm != "none":
        log.warning("%s: normalize_activations=%r is an identity at inference in SAELens; "
                    "loading the weights as they are.", cfg_path, norm)
    apply_b_dec = bool(raw.get("apply_b_dec_to_input", True))
    if transcoder and apply_b_dec:
        raise ConfigError(f"{cfg_path}: a {arch!r} cannot have apply_b_dec_to_input=true "
                          "(b_dec lives in the output space).")
    d_out = None
    if transcoder:
        d_out = int(raw.get("d_out") or _shape(tensors, "W_dec", weights_path)[-1])
    dtype = _dtype_name(raw.get("dtype", "float32"), cfg_path)
    cfg = SAEConfig(
        architecture=ours, d_in=int(raw["d_in"]), d_sae=int(raw["d_sae"]), d_out=d_out,
        transcoder=transcoder, skip=skip, k=int(raw.get("k", 100)),
        hook_name=metadata.get("hook_name") or raw.get("hook_name") or "",
        hook_name_out=metadata.get("hook_name_out") or raw.get("hook_name_out") or "",
        model_name=metadata.get("model_name") or raw.get("model_name") or "", dtype=dtype)
    sae = architecture_class(ours)(cfg)
    scaling = tensors.pop("scaling_factor", None)
    if scaling is not None and not torch.allclose(scaling.float(), torch.ones(())):
        raise ConfigError(f"{weights_path}: a legacy 'scaling_factor' tensor that is not all "
                          "ones is not supported; fold it into W_dec first.")
    _assign_saelens(sae, tensors, weights_path, arch,
                    fold_input_bias=not transcoder and not apply_b_dec,
                    rescale_by_decoder_norm=bool(raw.get("rescale_acts_by_decoder_norm", False)))
    return sae.eval()


def _legacy_saelens_cfg(raw: dict) -> dict:
    """Minimal pre-6.0 SAELens config handling (no `sae_lens_version` >= 6): `hook_point` ->
    `hook_name`, architecture defaulting to standard, `activation_fn_str: topk` -> topk."""
    meta = raw.get("metadata") or {}
    version = str(raw.get("sae_lens_version") or meta.get("sae_lens_version") or "")
    major = re.match(r"\d+", version)
    if major and int(major.group()) >= 6:
        return raw
    raw = dict(raw)
    if "hook_point" in raw and "hook_name" not in raw:
        raw["hook_name"] = raw.pop("hook_point")
    if "architecture" not in raw:
        fn = raw.get("activation_fn_str") or raw.get("activation_fn")
        raw["architecture"] = "topk" if fn == "topk" else "standard"
        if fn == "topk":
            raw["k"] = (raw.get("activation_fn_kwargs") or {}).get("k", 100)
    meta = dict(meta)
    for key in ("model_name", "hook_name", "hook_name_out"):
        if raw.get(key):
            meta.setdefault(key, raw[key])
    raw["metadata"] = meta
    return raw


def load_saelens_sparsity(path: str | Path) -> Tensor | None:
    """The [d_sae] log10 firing frequencies of a SAELens directory, or None if absent."""
    p = Path(path) / SAELENS_SPARSITY
    if not p.is_file():
        return None
    t = _read_safetensors(p)
    if "sparsity" not in t:
        raise ConfigError(f"{p} has no tensor 'sparsity' (found {sorted(t)}).")
    return t["sparsity"]


def load_saelens_from_hub(repo_id: str, sae_id: str, *, revision: str | None = None
                          ) -> SparseDictionary:
    """Download `<repo_id>/<sae_id>/` from the Hugging Face Hub and `load_saelens` it."""
    from huggingface_hub import constants, snapshot_download

    try:
        root = snapshot_download(repo_id, allow_patterns=[f"{sae_id}/*"], revision=revision)
    except Exception as e:  # the hub raises many types (offline, 404, auth, network)
        offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true")
        hint = ("HF_HUB_OFFLINE is set and these files are not in the local cache: unset "
                "HF_HUB_OFFLINE (or run once with network) to download them, or download the "
                "folder yourself and call saes.formats.load_saelens(path)." if offline else
                "Check the repo id and SAE id (the SAE's folder inside the repo), your network "
                "and, for gated repos, `huggingface-cli login`; or download the folder yourself "
                "and call saes.formats.load_saelens(path).")
        raise ModelLoadError(f"Could not download SAE {sae_id!r} from Hugging Face repo "
                             f"{repo_id!r} ({type(e).__name__}: {e}). {hint}") from None
    folder = Path(root) / sae_id
    if not (folder / SAELENS_CFG).is_file():
        raise ModelLoadError(f"Hugging Face repo {repo_id!r} has no SAE folder {sae_id!r} with a "
                             f"{SAELENS_CFG}; the SAE id is the folder name inside the repo.")
    return load_saelens(folder)


# ============================================================== sparsify
def load_sparsify(path: str | Path) -> SparseDictionary:
    """Import an EleutherAI sparsify SAE/transcoder (`cfg.json` + `sae.safetensors`) as TopK.

    sparsify stores `encoder.weight` [L, d_in], `encoder.bias` [L], `W_dec` [L, d_in] (already
    our layout: no transpose), `b_dec` [d_in] and optionally `W_skip` [d_in, d_in];
    `num_latents: 0` means d_in * expansion_factor. Transcoders (`transcode`) do not subtract
    b_dec before encoding.
    """
    path = Path(path)
    cfg_path = path / SAELENS_CFG
    if not cfg_path.is_file():
        raise ConfigError(f"{path} is not a sparsify directory: {SAELENS_CFG} is missing.")
    raw = read_json(cfg_path)
    if raw.get("activation", "topk") != "topk":
        raise ConfigError(f"{cfg_path}: sparsify activation {raw['activation']!r} is not "
                          "supported; interp imports 'topk' sparse coders only.")
    if raw.get("signed", False):
        raise ConfigError(f"{cfg_path}: signed sparsify coders are not supported.")
    try:
        d_in, k = int(raw["d_in"]), int(raw["k"])
    except KeyError as e:
        raise ConfigError(f"{cfg_path} has no {e.args[0]!r}.") from None
    d_sae = int(raw.get("num_latents") or 0) or d_in * int(raw.get("expansion_factor", 0))
    if d_sae < 1:
        raise ConfigError(f"{cfg_path}: num_latents is 0 and expansion_factor is missing.")
    transcode, skip = bool(raw.get("transcode", False)), bool(raw.get("skip_connection", False))
    weights_path = path / SPARSIFY_WEIGHTS
    st = _read_safetensors(weights_path)
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
                "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if skip:
        expected["W_skip"] = (d_in, d_in)
    _check_shapes(st, expected, weights_path, f"sparsify cfg (d_in={d_in}, num_latents={d_sae})")
    enc_w, b_enc = st["encoder.weight"], st["encoder.bias"]
    # Our config ties a skip connection to a transcoder (no b_dec subtraction): fold b_dec in.
    as_transcoder = transcode or skip
    if as_transcoder and not transcode:
        b_enc = b_enc.double() - enc_w.double() @ st["b_dec"].double()
    hook_name, model_name = _sparsify_names(path)
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k, transcoder=as_transcoder,
                    skip=skip, dtype=str(enc_w.dtype).removeprefix("torch."),
                    hook_name=hook_name, hook_name_out=hook_name if as_transcoder else "",
                    model_name=model_name)
    tensors = {"W_enc": enc_w.T, "b_enc": b_enc, "W_dec": st["W_dec"], "b_dec": st["b_dec"]}
    if skip:
        tensors["W_skip"] = st["W_skip"]
    sae = architecture_class("topk")(cfg)
    _assign_saelens(sae, tensors, weights_path, "sparsify topk")
    return sae.eval()


def _sparsify_names(path: Path) -> tuple[str, str]:
    """(hook_name, model_name) from a sparsify folder name (`layers.6`) and its parent config."""
    hook = ""
    if path.name == "embed_tokens":
        hook = "hook_embed"
    elif m := re.fullmatch(r"(?:.*\.)?layers[._](\d+)", path.name):
        hook = f"blocks.{m.group(1)}.hook_resid_post"
    parent = path.parent / "config.json"
    model = ""
    if parent.is_file():
        try:
            model = str(read_json(parent).get("model", ""))
        except (OSError, ValueError):
            model = ""
    return hook, model


# ======================================================= dictionary_learning
DL_WEIGHTS_ST = "ae.safetensors"
DL_WEIGHTS_PT = "ae.pt"


def load_dictionary_learning(path: str | Path) -> SparseDictionary:
    """Import a saprmarks/dictionary_learning dictionary (`config.json` + `ae.safetensors`).

    `config.json["trainer"]["dict_class"]` picks the mapping: AutoEncoder / AutoEncoderNew ->
    standard, AutoEncoderTopK -> topk, BatchTopKSAE -> batchtopk, MatryoshkaBatchTopKSAE ->
    matryoshka_batchtopk, JumpReluAutoEncoder -> jumprelu (b_dec is not subtracted there: folded
    into b_enc), GatedAutoEncoder -> gated. Without `ae.safetensors`, `ae.pt` is read with
    `torch.load(weights_only=True)`.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{folder} has no config.json; dictionary_learning saves it next to "
                          "ae.pt and its trainer.dict_class says which dictionary it is.")
    trainer = read_json(cfg_path).get("trainer") or {}
    dict_class = trainer.get("dict_class")
    if dict_class not in _DL_CONVERTERS:
        raise ConfigError(f"{cfg_path}: " + unknown_name_message(
            "dictionary_learning dict_class", str(dict_class), _DL_CONVERTERS,
            hint=f"Supported: {', '.join(sorted(_DL_CONVERTERS))}."))
    weights_path, state = _read_dl_weights(folder)
    arch, tensors, extra, fold = _DL_CONVERTERS[dict_class](state, trainer, weights_path)
    d_in, d_sae = tensors["W_enc"].shape
    for key, val in (("activation_dim", d_in), ("dict_size", d_sae)):
        if key in trainer and int(trainer[key]) != val:
            raise ConfigError(f"{weights_path}: the weights have {key}={val} but {cfg_path} says "
                              f"{trainer[key]}.")
    layer, sub = trainer.get("layer"), trainer.get("submodule_name")
    hook = (f"blocks.{layer}.hook_resid_post"
            if isinstance(layer, int) and (sub is None or "resid" in str(sub)) else "")
    cfg = SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, hook_name=hook,
                    model_name=str(trainer.get("lm_name") or ""),
                    dtype=str(tensors["W_dec"].dtype).removeprefix("torch."), **extra)
    sae = architecture_class(arch)(cfg)
    _assign_saelens(sae, tensors, weights_path, f"dictionary_learning {dict_class}",
                    fold_input_bias=fold)
    return sae.eval()


def convert_dictionary_learning(path: str | Path) -> Path:
    """Write `ae.safetensors` next to a dictionary_learning `ae.pt` (read with
    weights_only=True); returns the new file. Afterwards the .pt is no longer needed."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    pt = folder / DL_WEIGHTS_PT
    if not pt.is_file():
        raise ConfigError(f"{folder} has no {DL_WEIGHTS_PT} to convert.")
    state = _torch_load_weights_only(pt)
    out = folder / DL_WEIGHTS_ST
    save_safetensors_atomic(state, out)
    return out


def _read_dl_weights(folder: Path) -> tuple[Path, dict[str, Tensor]]:
    st = folder / DL_WEIGHTS_ST
    if st.is_file():
        return st, _read_safetensors(st)
    pt = folder / DL_WEIGHTS_PT
    if pt.is_file():
        log.info("Reading %s with torch.load(weights_only=True); convert it once with "
                 "saes.formats.convert_dictionary_learning to skip this.", pt)
        return pt, _torch_load_weights_only(pt)
    raise ConfigError(f"{folder} has neither {DL_WEIGHTS_ST} nor {DL_WEIGHTS_PT}.")


def _torch_load_weights_only(pt: Path) -> dict[str, Tensor]:
    """A tensors-only state dict from a pickle, via torch's restricted (weights_only) loader."""
    import pickle

    try:
        state = torch.load(pt, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ConfigError(
            f"{pt} could not be read with torch.load(weights_only=True) ({e}). It holds more "
            "than tensors; if you trust it, load it yourself, keep only the state dict's "
            "tensors and write them with safetensors.torch.save_file(state, 'ae.safetensors') "
            "next to config.json.") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{pt} is not a state dict of tensors; write its tensors to "
                          f"{DL_WEIGHTS_ST} with safetensors.torch.save_file.")
    return {k: v.contiguous() for k, v in state.items()}


def _need(state: dict[str, Tensor], names: tuple[str, ...], source: Path, dict_class: str):
    missing = [n for n in names if n not in state]
    if missing:
        raise ConfigError(f"{source}: tensor(s) {missing} missing for dictionary_learning "
                          f"{dict_class} (found {sorted(state)}).")


def _dl_autoencoder(state, trainer, source):
    _need(state, ("encoder.weight", "encoder.bias", "decoder.weight", "bias"), source, "AutoEncoder")
    return "standard", {"W_enc": state["encoder.weight"].T, "b_enc": state["encoder.bias"],
                        "W_dec": state["decoder.weight"].T, "b_dec": state["bias"]}, {}, False


def _dl_autoencoder_new(state, trainer, source):
    names = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
    _need(state, names, source, "AutoEncoderNew")
    return "standard", {"W_enc": state["encoder.weight"].T, "b_enc": state["encoder.bias"],
                        "W_dec": state["decoder.weight"].T, "b_dec": state["decoder.bias"]}, {}, True


def _dl_k(state, trainer, source) -> int:
    if "k" in state:
        return int(state["k"].item())
    if "k" in trainer:
        return int(trainer["k"])
    raise ConfigError(f"{source}: no 'k' in the weights or in config.json's trainer.")


def _dl_threshold(state, d_sae: int) -> Tensor:
    thr = state.get("threshold", torch.tensor(-1.0)).float()
    return thr.expand(d_sae).clone() if thr.numel() == 1 else thr


def _dl_topk(state, trainer, source):
    _need(state, ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec"), source,
          "AutoEncoderTopK")
    return "topk", {"W_enc": state["encoder.weight"].T, "b_enc": state["encoder.bias"],
                    "W_dec": state["decoder.weight"].T, "b_dec": state["b_dec"]}, \
        {"k": _dl_k(state, trainer, source)}, False


def _dl_batchtopk(state, trainer, source):
    _need(state, ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec"), source,
          "BatchTopKSAE")
    d_sae = state["encoder.weight"].shape[0]
    return "batchtopk", {"W_enc": state["encoder.weight"].T, "b_enc": state["encoder.bias"],
                         "W_dec": state["decoder.weight"].T, "b_dec": state["b_dec"],
                         "threshold": _dl_threshold(state, d_sae)}, \
        {"k": _dl_k(state, trainer, source)}, False


def _dl_matryoshka(state, trainer, source):
    _need(state, ("W_enc", "b_enc", "W_dec", "b_dec", "group_sizes"), source,
          "MatryoshkaBatchTopKSAE")
    d_sae = state["W_enc"].shape[1]
    widths = tuple(int(w) for w in torch.cumsum(state["group_sizes"].long(), 0).tolist())
    return "matryoshka_batchtopk", {
        "W_enc": state["W_enc"], "b_enc": state["b_enc"], "W_dec": state["W_dec"],
        "b_dec": state["b_dec"], "threshold": _dl_threshold(state, d_sae)}, \
        {"k": _dl_k(state, trainer, source), "matryoshka_widths": widths}, False


def _dl_jumprelu(state, trainer, source):
    _need(state, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"), source, "JumpReluAutoEncoder")
    return "jumprelu", {k: state[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}, \
        {}, True


def _dl_gated(state, trainer, source):
    names = ("encoder.weight", "decoder.weight", "decoder_bias", "gate_bias", "mag_bias", "r_mag")
    _need(state, names, source, "GatedAutoEncoder")
    return "gated", {"W_enc": state["encoder.weight"].T, "W_dec": state["decoder.weight"].T,
                     "b_dec": state["decoder_bias"], "b_gate": state["gate_bias"],
                     "b_mag": state["mag_bias"], "r_mag": state["r_mag"]}, {}, False


_DL_CONVERTERS = {
    "AutoEncoder": _dl_autoencoder, "AutoEncoderNew": _dl_autoencoder_new,
    "AutoEncoderTopK": _dl_topk, "BatchTopKSAE": _dl_batchtopk,
    "MatryoshkaBatchTopKSAE": _dl_matryoshka, "JumpReluAutoEncoder": _dl_jumprelu,
    "GatedAutoEncoder": _dl_gated,
}


# ============================================================== shared helpers
def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{path} is missing.")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable safetensors file ({e}).") from None


def _shape(tensors: dict[str, Tensor], name: str, source: Path) -> tuple[int, ...]:
    if name not in tensors:
        raise ConfigError(f"{source}: tensor {name!r} is missing (found {sorted(tensors)}).")
    return tuple(tensors[name].shape)


def _dtype_name(name: str, source: Path) -> str:
    name = str(name).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"{source}: " + unknown_name_message("dtype", name, _DTYPES))
    return name


def _check_shapes(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]],
                  source: Path, described_by: str) -> None:
    """Strict name and shape check; errors name the file and the tensor."""
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise ConfigError(f"{source}: tensor(s) {missing} missing; {described_by} needs "
                          f"{sorted(expected)} (found {sorted(tensors)}).")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ConfigError(f"{source}: unexpected tensor(s) {extra} for {described_by} "
                          f"(expected exactly {sorted(expected)}).")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            raise ConfigError(f"{source}: tensor {name!r} has shape {list(got)}, but "
                              f"{described_by} implies {list(shape)}.")


def _assign_saelens(sae: SparseDictionary, tensors: dict[str, Tensor], source: Path,
                    architecture: str, *, fold_input_bias: bool = False,
                    rescale_by_decoder_norm: bool = False) -> None:
    """Check SAELens-named `tensors` against `sae` and copy them in (the inverse of
    `sae.saelens_tensors()`), then fold foreign input conventions."""
    cfg = sae.cfg
    expected = {k: tuple(v.shape) for k, v in sae.saelens_tensors().items()}
    described = (f"architecture {architecture!r} with d_in={cfg.d_in}, d_sae={cfg.d_sae}"
                 + (f", d_out={cfg.out_dim}" if cfg.transcoder else ""))
    _check_shapes(tensors, expected, source, described)
    dtype = sae.enc_weight.dtype
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    with torch.no_grad():
        loader = getattr(sae, "load_saelens_tensors", None)
        if loader is not None:
            loader(tensors)
        else:
            _default_assign(sae, tensors, source)
        if fold_input_bias:
            _fold_input_bias(sae)
        if rescale_by_decoder_norm:
            n = sae.W_dec.norm(dim=1)
            sae.enc_weight.mul_(n[:, None])
            sae.b_enc.mul_(n)
            sae.W_dec.div_(n[:, None])


def _default_assign(sae: SparseDictionary, tensors: dict[str, Tensor], source: Path) -> None:
    sae.enc_weight.copy_(tensors["W_enc"].T)
    for name in ("b_enc", "W_dec", "b_dec", "W_skip"):
        if name in tensors:
            getattr(sae, name).copy_(tensors[name])
    if "threshold" in tensors:  # the BatchTopK family keeps one scalar threshold
        thr = tensors["threshold"]
        if not torch.equal(thr, thr[:1].expand_as(thr)):
            raise ConfigError(f"{source}: tensor 'threshold' varies across latents, but a "
                              f"{sae.architecture!r} dictionary has one threshold; load it as "
                              "a 'jumprelu' instead.")
        sae.threshold.copy_(thr[0])


@torch.no_grad()
def _fold_input_bias(sae: SparseDictionary) -> None:
    """Make an encoder that reads x (no b_dec subtraction) read x - b_dec instead:
    x W + b = (x - b_dec) W + (b + b_dec W), exactly (computed in float64)."""
    shift = (sae.enc_weight.double() @ sae.b_dec.double())
    sae.b_enc.copy_(sae.b_enc.double() + shift)
    r_mag = getattr(sae, "r_mag", None)
    if r_mag is not None:  # gated: the magnitude path reads x W * exp(r_mag) + b_mag
        sae.b_mag.copy_(sae.b_mag.double() + shift * r_mag.double().exp())


__all__ = [
    "SAELENS_ARCHITECTURES", "SAELENS_VERSION", "convert_dictionary_learning",
    "load_dictionary_learning", "load_saelens", "load_saelens_from_hub", "load_saelens_sparsity",
    "load_sparsify", "save_saelens",
]
