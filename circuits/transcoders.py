"""Per-layer transcoders (PLTs): train a set for a model, load it, check it fits the model.

A transcoder at layer L reads the MLP's input `blocks.L.ln2.hook_normalized` and writes its
output `blocks.L.hook_mlp_out` (Dunefsky et al. 2024, arXiv 2406.11944; Ameisen et al. 2025,
"Circuit Tracing"). A set is a run directory of kind "transcoders" holding one SAELens-format
dictionary per layer (`layer_LL/sae/`); layers without one keep their MLP as an error node.

Loading keeps the file's activation (TopK stays TopK with its k, JumpReLU keeps its threshold)
and fails loudly when the file and the module disagree (circuit-tracer 0.5.0 silently loads a
local TopK transcoder as ReLU).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError, InterpError
from interp.io import read_json

KIND = "transcoders"
HOOK_IN = "blocks.{layer}.ln2.hook_normalized"
HOOK_OUT = "blocks.{layer}.hook_mlp_out"
#: architectures whose activation is a function of one pre-activation per latent
SUPPORTED = ("topk", "batchtopk", "matryoshka_batchtopk", "standard", "jumprelu")
_IN = re.compile(r"^blocks\.(\d+)\.(ln2\.hook_normalized|mlp\.hook_in)$")


@dataclass
class TranscoderSet:
    """`{layer: dictionary}`; each maps the layer's MLP input to its MLP output."""

    by_layer: dict[int, torch.nn.Module]
    source: str = ""

    @property
    def layers(self) -> list[int]:
        return sorted(self.by_layer)

    def __getitem__(self, layer: int):
        return self.by_layer[layer]

    def __contains__(self, layer: int) -> bool:
        return layer in self.by_layer

    def check(self, model) -> None:
        """Raise a clear error if a transcoder does not fit `model` (layer, hooks, widths)."""
        n, d = model.cfg.n_layers, model.cfg.d_model
        for layer, tc in self.by_layer.items():
            c = tc.cfg
            if not 0 <= layer < n:
                raise ConfigError(f"Transcoder for layer {layer}, but the model has layers 0..{n - 1}.")
            if c.architecture not in SUPPORTED:
                raise ConfigError(f"Layer {layer}: a {c.architecture!r} dictionary cannot be "
                                  f"attributed through; use one of {', '.join(SUPPORTED)}.")
            m = _IN.match(c.hook_name or "")
            if not c.transcoder or m is None or int(m.group(1)) != layer or \
                    (c.hook_name_out or "") != HOOK_OUT.format(layer=layer):
                raise ConfigError(
                    f"Layer {layer}: expected a transcoder {HOOK_IN.format(layer=layer)} -> "
                    f"{HOOK_OUT.format(layer=layer)}, got {c.hook_name!r} -> {c.hook_name_out!r} "
                    f"(transcoder={c.transcoder}). Train one with `interp transcoders`.")
            if c.d_in != d or c.out_dim != d:
                raise ConfigError(f"Layer {layer}: transcoder widths {c.d_in}->{c.out_dim} do not "
                                  f"match the model's d_model {d}.")

    def pre_acts(self, layer: int, u: Float[Tensor, "... d_model"]) -> Tensor:
        return self.by_layer[layer].pre_acts(u)

    def encode(self, layer: int, u: Float[Tensor, "... d_model"]) -> Tensor:
        return self.by_layer[layer].encode(u)

    # The interface the replacement model reads a dictionary set through (shared with the
    # cross-layer transcoder's `circuits.clt.CLTSet`): a feature of layer l writes to the MLP
    # outputs `writes_to(l)`, layer m's output is reconstructed by `reconstruct`.
    kind = "per-layer transcoder"  # Neuronpedia's feature_type

    def writes_to(self, layer: int) -> list[int]:
        return [layer]

    def writes_at(self, layer: int) -> bool:
        """Whether some feature writes to layer's MLP output (else it is all error)."""
        return layer in self.by_layer

    def sources_of(self, layer: int) -> list[int]:
        """The layers whose features write to layer's MLP output."""
        return [layer] if layer in self.by_layer else []

    def enc_rows(self, layer: int, idx: Tensor) -> Float[Tensor, "k d_model"]:
        return self.by_layer[layer].enc_weight[idx].float()

    def dec_matrix(self, layer: int, out_layer: int) -> Float[Tensor, "d_sae d_model"]:
        return self.by_layer[layer].W_dec.float()

    def out_bias(self, layer: int) -> Tensor | None:
        return self.by_layer[layer].b_dec.float() if layer in self.by_layer else None

    def skip_weight(self, layer: int) -> Tensor | None:
        tc = self.by_layer.get(layer)
        return None if tc is None or tc.W_skip is None else tc.W_skip.float()

    def reconstruct(self, layer: int, acts: dict[int, Tensor], u: Tensor) -> Tensor:
        """Layer's reconstructed MLP output from the activations {layer: [pos, d_sae]}."""
        return self.by_layer[layer].decode(acts[layer], u)


def load_transcoders(path: str | Path, layers: list[int] | None = None):
    """Load a transcoder set: a "transcoders" run directory, or a folder of `layer_LL/sae/`;
    or a cross-layer transcoder (a circuit-tracer CLT directory, or a `train-clt` run holding
    one in `sae/`), as a `circuits.clt.CLTSet`.

    The activation in each file is kept; a file whose declared activation disagrees with the
    module it loads as raises `ConfigError`.
    """
    from saes.formats import load_saelens

    from saes.formats.clt import is_clt_dir

    path = Path(path)
    for where in (path, path / "sae"):
        if is_clt_dir(where):
            from circuits.clt import load_clt_set

            return load_clt_set(where, layers=layers)
    if not path.is_dir():
        raise ConfigError(f"No transcoder set at {path}: expected a directory made by "
                          "`interp transcoders` (layer_LL/sae/ inside).")
    found = {}
    for sub in sorted(path.glob("layer_*")):
        m = re.fullmatch(r"layer_(\d+)", sub.name)
        if m and (sub / "sae" / "cfg.json").is_file():
            found[int(m.group(1))] = sub / "sae"
    if not found:
        raise ConfigError(f"{path} holds no layer_LL/sae/cfg.json; train a set with "
                          "`interp transcoders --layers ... --out DIR`.")
    if layers is not None:
        missing = sorted(set(layers) - set(found))
        if missing:
            raise ConfigError(f"{path} has no transcoder for layers {missing}; it has "
                              f"{sorted(found)}.")
        found = {k: v for k, v in found.items() if k in layers}
    out = {}
    for layer, sae_dir in found.items():
        tc = load_saelens(sae_dir)
        _check_activation(tc, read_json(sae_dir / "cfg.json", expect=dict), sae_dir)
        out[layer] = tc.float().eval().requires_grad_(False)
    return TranscoderSet(out, source=str(path))


def _check_activation(tc, raw: dict, where: Path) -> None:
    """The file says TopK/JumpReLU: the module must be that, with the file's k / threshold."""
    declared = raw.get("architecture", "")
    meta = (raw.get("metadata") or {}).get("interp_architecture")
    arch = tc.cfg.architecture
    if declared == "topk" and (arch != "topk" or ("k" in raw and int(raw["k"]) != tc.cfg.k)):
        raise ConfigError(f"{where}: the file declares TopK (k={raw.get('k')}) but it loaded as "
                          f"{arch!r} (k={tc.cfg.k}); refusing to attribute through it.")
    if declared.startswith("jumprelu") and not hasattr(tc, "threshold"):
        raise ConfigError(f"{where}: the file declares JumpReLU but it loaded without a threshold "
                          f"(as {arch!r}); refusing to attribute through it.")
    if meta and meta != arch:
        raise ConfigError(f"{where}: trained as {meta!r} but loaded as {arch!r}.")


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]; 'all' -> every layer; checked against `n_layers`."""
    if spec.strip() == "all":
        return list(range(n_layers))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise ConfigError(f"Cannot read layers {spec!r}: use e.g. '0-3,7' or 'all'.") from None
    bad = [x for x in out if not 0 <= x < n_layers]
    if bad or not out:
        raise ConfigError(f"Layers {bad or spec!r} are outside 0..{n_layers - 1}.")
    return sorted(set(out))


def train_transcoders(model: str, layers: list[int], out: str | Path, *, tokens: int = 200_000,
                      width: int = 2048, k: int | None = None, architecture: str = "topk",
                      batch_size: int = 1024, lr: float = 4e-3, activations: str = "",
                      seed: int = 0, d_model: int | None = None, skip: bool = False,
                      progress: bool = True, device: str = "auto", model_device: str = "auto",
                      model_dtype: str = "float32", loaded=None, source=None):
    """Train one transcoder per layer in `layers` from one data source; returns the run.

    Streams from `model` (one forward pass feeds every layer) unless `activations` names a
    store holding both hooks of each layer. The run (kind "transcoders") holds `layer_LL/`.
    The transcoders train on `device`, the streamed model runs on `model_device` in
    `model_dtype` (interp.devices); `loaded` is that model if it is already loaded. `source`: a
    batch source already open (e.g. a `saes.data.TensorSource` of captured rows shared with
    another run) instead of the store or the model.
    """
    from interp.workspace import run_context
    from saes.architectures import architecture_class
    from saes.base import SAEConfig
    from saes.data import DataConfig
    from saes.multi import train_many
    from saes.train import TrainConfig

    if architecture not in SUPPORTED:
        raise ConfigError(f"Architecture {architecture!r} cannot be attributed through; use one "
                          f"of {', '.join(SUPPORTED)}.")
    if d_model is None:
        from interp.models.loading import load_model

        loaded = loaded or load_model(model or None, device=model_device, dtype=model_dtype)
        d_model = loaded.cfg.d_model
    out = Path(out)
    # k (16 unless given) for the top-k family; given to another architecture it is an error
    own = ({"k": 16 if k is None else k} if "k" in architecture_class(architecture).options
           else {} if k is None else {"k": k})
    cfgs, dirs = [], []
    for layer in layers:
        sae = SAEConfig(architecture=architecture, d_in=d_model, d_sae=width, **own,
                        transcoder=True, skip=skip, hook_name=HOOK_IN.format(layer=layer),
                        hook_name_out=HOOK_OUT.format(layer=layer), model_name=model)
        cfgs.append(TrainConfig(sae=sae, total_tokens=tokens, batch_size=batch_size, lr=lr,
                                seed=seed, checkpoint_every=0, device=device))
        dirs.append(out / f"layer_{layer:02d}")
    config = {"model": model, "layers": layers, "tokens": tokens, "width": width,
              "k": own.get("k"),
              "architecture": architecture, "batch_size": batch_size, "lr": lr,
              "activations": activations, "seed": seed, "skip": skip, "device": device,
              "model_device": model_device, "model_dtype": model_dtype}
    data = DataConfig(activations=activations, model=model, seed=seed,
                      model_device=model_device, model_dtype=model_dtype)
    with run_context(KIND, out.name, config, path=out) as run:
        if source is None and loaded is not None and not activations:
            source = data.source(model=loaded)
        train_many(cfgs, dirs, data, progress=progress, source=source)
        run.finish(metrics={"layers": len(layers), "tokens": tokens},
                   artefacts={f"layer_{layer:02d}": f"layer_{layer:02d}/sae" for layer in layers})
    return run


def require_set(transcoders):
    """A `TranscoderSet` or `CLTSet` from a set, a {layer: dictionary} dict, a CLT module or a
    path."""
    from circuits.clt import CLTSet

    if isinstance(transcoders, (TranscoderSet, CLTSet)):
        return transcoders
    if getattr(transcoders, "architecture", None) == "clt":
        return CLTSet(transcoders)
    if isinstance(transcoders, (str, Path)):
        return load_transcoders(transcoders)
    if isinstance(transcoders, dict):
        return TranscoderSet(dict(transcoders))
    raise InterpError("transcoders must be a TranscoderSet, a CLTSet or cross-layer transcoder, "
                      "a {layer: dictionary} dict or a path.")
