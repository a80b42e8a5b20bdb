"""saprmarks/dictionary_learning checkpoints (`config.json` + `ae.safetensors`, or `ae.pt` read
with `torch.load(weights_only=True)`: tensors only, never arbitrary pickled objects)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from interp.errors import ConfigError, unknown_name_message
from interp.io import read_json, save_safetensors_atomic
from saes.architectures import architecture_class
from saes.base import SAEConfig, SparseDictionary
from saes.formats._common import _assign_saelens, _read_safetensors, reader_boundary

log = logging.getLogger(__name__)

DL_WEIGHTS_ST = "ae.safetensors"
DL_WEIGHTS_PT = "ae.pt"


@reader_boundary
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
    trainer = read_json(cfg_path, expect=dict).get("trainer") or {}
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
    try:
        state = torch.load(pt, weights_only=True, map_location="cpu")
    except Exception as e:  # torch's restricted unpickler raises many types on foreign bytes
        raise ConfigError(
            f"{pt} could not be read with torch.load(weights_only=True) ({e}). It holds more "
            "than tensors; if you trust it, load it yourself, keep only the state dict's "
            "tensors and write them with safetensors.torch.save_file(state, 'ae.safetensors') "
            "next to config.json.") from e
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
