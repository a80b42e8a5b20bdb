"""circuit-tracer's per-layer transcoder files, and the SAELens releases stored that way.

A circuit-tracer set (per-layer transcoders, Dunefsky et al. 2024, arXiv 2406.11944, as used
by "Circuit Tracing", Ameisen et al. 2025) is a repo
with a `config.yaml` (`model_name`, `model_kind: transcoder_set`, `feature_input_hook`,
`feature_output_hook`, optional `activation` relu | topk with `k`, optional `transcoders:` a
list of per-layer files as `hf://org/repo/path?revision=...` or paths) and, without that list,
one `layer_{i}.safetensors` per layer: `W_enc` [d_sae, d_in], `W_dec` [d_sae, d_out], `b_enc`,
`b_dec`, optional `activation_function.threshold` (JumpReLU), `W_skip` [d_out, d_in], `k`.
Listed files may also be Gemma Scope `params.npz` or Gemma Scope 2 `params.safetensors`; the
reader is chosen by the file's contents. Encoders read x (no b_dec subtraction).

SAELens's `mwhanna_transcoder` releases are such repos (one id per `layer_{i}.safetensors`);
its `mntss_clt_layer_transcoder` reads one layer of a cross-layer transcoder (`W_enc_{i}`,
`b_enc_{i}`, `b_dec_{i}` in `W_enc_{i}.safetensors`, `W_dec_{i}` [d_sae, n_layers - i, d] in
`W_dec_{i}.safetensors`) as a per-layer transcoder whose decoder is the sum over the layers it
writes to: right for the features' activations, not for reconstructing one MLP output.
"""

from __future__ import annotations

import logging
from pathlib import Path

from interp.errors import ConfigError
from saes.base import SparseDictionary
from saes.pretrained.files import Need
from saes.pretrained.hooks import block_hook
from saes.pretrained.layouts.base import Layout, assemble, layer_of, pick, read_safetensors
from saes.pretrained.registry import Entry

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
DEFAULT_IN, DEFAULT_OUT = "mlp.hook_in", "hook_mlp_out"
#: circuit-tracer hard-codes k for this TopK set, whose config.yaml does not give it
_KNOWN_K = {"facebook/crv-8b-instruct-transcoders": 128}


def read_config(path: Path | None) -> dict:
    """A circuit-tracer `config.yaml` (empty when there is none)."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path} is not a readable YAML file ({e}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping of settings.")
    return data


def transcoder_file(path: Path, layer: int, *, model: str, input_hook: str = DEFAULT_IN,
                    output_hook: str = DEFAULT_OUT, activation: str | None = None,
                    k: int | None = None, scan: str = "") -> SparseDictionary:
    """The transcoder of `layer` in one per-layer file (circuit-tracer, Gemma Scope or Gemma
    Scope 2 naming); hooks are circuit-tracer's per-layer suffixes."""
    from saes.pretrained.layouts.gemma_scope import transcoder_from_gemma3, transcoder_from_npz

    hook_in, hook_out = block_hook(layer, input_hook), block_hook(layer, output_hook)
    if path.suffix == ".npz":
        return transcoder_from_npz(path, layer, model, hook_in, hook_out)
    raw = read_safetensors(path)
    if "w_enc" in raw:
        return transcoder_from_gemma3(path, layer, model, hook_in, hook_out)
    b_enc, b_dec = pick(raw, path, "b_enc"), pick(raw, path, "b_dec")
    w_enc = pick(raw, path, "W_enc")
    if w_enc.shape == (b_enc.numel(), b_dec.numel()):  # circuit-tracer: [d_sae, d_in]
        w_enc = w_enc.T
    tensors = {"W_enc": w_enc, "W_dec": pick(raw, path, "W_dec"), "b_enc": b_enc, "b_dec": b_dec}
    if "W_skip" in raw:
        tensors["W_skip"] = raw["W_skip"]
    thr = raw.get("activation_function.threshold", raw.get("threshold"))
    file_k = int(raw["k"].item()) if "k" in raw else None
    arch, k = _activation(path, activation, k, file_k, thr is not None, scan)
    if arch == "jumprelu":
        tensors["threshold"] = thr.expand(b_enc.numel()) if thr.numel() == 1 else thr
    return assemble(arch, tensors, path, transcoder=True, apply_b_dec_to_input=False,
                    hook_name=hook_in, hook_name_out=hook_out, model_name=model, k=k)


def _activation(path: Path, activation: str | None, k: int | None, file_k: int | None,
                has_threshold: bool, scan: str) -> tuple[str, int | None]:
    """Our architecture for a circuit-tracer file; refuses a config that the file contradicts
    (circuit-tracer 0.5.0 silently loads a local TopK set as ReLU)."""
    act = (activation or "").lower() or None
    if act == "topk" or (act is None and file_k is not None):
        k = k or file_k or _KNOWN_K.get(scan)
        if k is None:
            raise ConfigError(f"{path}: a TopK transcoder needs k; give `k:` in config.yaml.")
        if file_k is not None and int(k) != file_k:
            raise ConfigError(f"{path} stores k={file_k} but the config says k={k}.")
        if has_threshold:
            raise ConfigError(f"{path} has a JumpReLU threshold but the config says topk.")
        return "topk", int(k)
    if act in (None, "jumprelu") and has_threshold:
        return "jumprelu", None
    if act == "jumprelu":
        raise ConfigError(f"{path}: the config says jumprelu but the file has no "
                          "'activation_function.threshold'.")
    if act in (None, "relu"):
        if has_threshold:
            raise ConfigError(f"{path} has a JumpReLU threshold but the config says relu.")
        return "standard", None
    raise ConfigError(f"{path}: activation {activation!r} is not one of relu, jumprelu, topk.")


# ============================================================== SAELens releases stored this way
def _mwhanna_needs(e: Entry) -> list[Need]:
    return [Need.of(e.path), Need.of(CONFIG, optional=True)]


def _mwhanna_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    cfg = read_config(paths[1])
    return transcoder_file(paths[0], layer_of(e.path, e.sae_id), model=cfg.get("model_name")
                           or e.model, input_hook=cfg.get("feature_input_hook", DEFAULT_IN),
                           output_hook=cfg.get("feature_output_hook", DEFAULT_OUT),
                           activation=cfg.get("activation"), k=cfg.get("k"), scan=e.repo_id)


def _clt_needs(e: Entry) -> list[Need]:
    i = int(e.path)
    return [Need.of(f"W_enc_{i}.safetensors"), Need.of(f"W_dec_{i}.safetensors"),
            Need.of(CONFIG)]


def _clt_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    i = int(e.path)
    enc, dec, cfg = read_safetensors(paths[0]), read_safetensors(paths[1]), read_config(paths[2])
    log.warning("%s: one layer of a cross-layer transcoder, read as a per-layer transcoder whose "
                "decoder sums the layers it writes to (right for feature activations, not for "
                "reconstructing this layer's MLP output).", e.describe())
    tensors = {"W_enc": pick(enc, paths[0], f"W_enc_{i}").T, "b_enc": pick(enc, paths[0],
                                                                          f"b_enc_{i}"),
               "b_dec": pick(enc, paths[0], f"b_dec_{i}"),
               "W_dec": pick(dec, paths[1], f"W_dec_{i}").double().sum(dim=1)}
    arch = "standard"
    if f"threshold_{i}" in enc:
        arch, tensors["threshold"] = "jumprelu", enc[f"threshold_{i}"]
    return assemble(arch, tensors, paths[0], transcoder=True, apply_b_dec_to_input=False,
                    model_name=cfg.get("model_name") or e.model,
                    hook_name=block_hook(i, cfg.get("feature_input_hook", DEFAULT_IN)),
                    hook_name_out=block_hook(i, cfg.get("feature_output_hook", DEFAULT_OUT)))


LAYOUTS = {
    "mwhanna_transcoder": Layout(_mwhanna_needs, _mwhanna_read, "circuit-tracer per-layer "
                                 "files: layer_{i}.safetensors (+ config.yaml)"),
    "mntss_clt_layer_transcoder": Layout(_clt_needs, _clt_read, "one layer of a circuit-tracer "
                                         "cross-layer transcoder, decoders summed"),
}
