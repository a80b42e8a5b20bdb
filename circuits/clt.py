"""A cross-layer transcoder as the replacement model's dictionary set.

In the local replacement model of Ameisen et al. 2025 ("Circuit Tracing", transformer-circuits.pub)
with a CLT, feature s = (l, p, i) read at layer l writes a_s W_dec^{l->m}[i] into the MLP output
of every layer m >= l it covers, and the error node of layer m is the true MLP output minus the
CLT's whole reconstruction of it, sum_{l <= m} W_dec^{l->m} a_l + b_dec^m. Attribution then
needs nothing else: a feature's column in the adjacency is the sum of its writes' effects
(`circuits.replacement` reads them at each layer it writes to).

`CLTSet` wraps a `saes.architectures.clt.CrossLayerTranscoder` behind the interface
`circuits.transcoders.TranscoderSet` offers the replacement model (layers are the model's).
"""

from __future__ import annotations

import re
from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError

_IN = re.compile(r"^blocks\.\{layer\}\.(ln2\.hook_normalized|mlp\.hook_in)$")
_OUT = "blocks.{layer}.hook_mlp_out"


class CLTSet:
    """One cross-layer transcoder over contiguous layers, as a dictionary set."""

    kind = "cross-layer transcoder"  # Neuronpedia's feature_type

    def __init__(self, clt, source: str = ""):
        if getattr(clt, "architecture", None) != "clt":
            raise ConfigError(f"CLTSet wraps a cross-layer transcoder, got "
                              f"{type(clt).__name__}.")
        self.clt = clt.float().eval().requires_grad_(False)
        self.source = source
        self._index = {layer: i for i, layer in enumerate(clt.layers)}
        self.last = clt.layers[-1]

    @property
    def layers(self) -> list[int]:
        """The layers with an encoder (features are read there)."""
        return list(self.clt.layers)

    def __contains__(self, layer: int) -> bool:
        return layer in self._index

    def check(self, model) -> None:
        """Raise a clear error if the CLT does not fit `model` (layers, hooks, widths)."""
        n, d = model.cfg.n_layers, model.cfg.d_model
        c = self.clt.cfg
        if self.last >= n:
            raise ConfigError(f"The CLT covers layers {self.layers[0]}..{self.last}, but the "
                              f"model has layers 0..{n - 1}.")
        if _IN.match(c.hook_name) is None or c.hook_name_out != _OUT:
            raise ConfigError(f"Attribution needs a CLT reading the MLP input "
                              f"(blocks.{{layer}}.ln2.hook_normalized) and writing "
                              f"{_OUT}; this one maps {c.hook_name!r} -> {c.hook_name_out!r}.")
        if c.d_in != d or c.out_dim != d:
            raise ConfigError(f"CLT widths {c.d_in}->{c.out_dim} do not match the model's "
                              f"d_model {d}.")

    # ----------------------------------------------------------------- the set interface
    def pre_acts(self, layer: int, u: Float[Tensor, "... d_model"]) -> Tensor:
        return self.clt.layer_pre_acts(self._index[layer], u)

    def encode(self, layer: int, u: Float[Tensor, "... d_model"]) -> Tensor:
        return self.clt.encode_layer(self._index[layer], u)

    def writes_to(self, layer: int) -> list[int]:
        return list(range(layer, self.last + 1))

    def writes_at(self, layer: int) -> bool:
        return layer in self._index

    def sources_of(self, layer: int) -> list[int]:
        return [m for m in self.layers if m <= layer] if layer in self._index else []

    def enc_rows(self, layer: int, idx: Tensor) -> Float[Tensor, "k d_model"]:
        return self.clt.encoder(self._index[layer])[0][idx].float()

    def dec_matrix(self, layer: int, out_layer: int) -> Float[Tensor, "F d_model"]:
        return self.clt.decoder(self._index[layer])[:, out_layer - layer].float()

    def out_bias(self, layer: int) -> Tensor | None:
        return self.clt.b_dec_layer(self._index[layer]).float() if layer in self else None

    def skip_weight(self, layer: int) -> Tensor | None:
        return None

    def reconstruct(self, layer: int, acts: dict[int, Tensor], u: Tensor) -> Tensor:
        """sum_{l <= layer} a_l W_dec^{l->layer} + b_dec^layer."""
        y = self.out_bias(layer)
        for src in self.sources_of(layer):
            y = y + acts[src] @ self.dec_matrix(src, layer)
        return y


def load_clt_set(path: str | Path, layers: list[int] | None = None) -> CLTSet:
    """A `CLTSet` from a directory in circuit-tracer's CLT layout (`saes.formats.clt`)."""
    from saes.formats.clt import load_clt

    clt = load_clt(path)
    if layers is not None and sorted(layers) != list(clt.layers):
        raise ConfigError(f"{path} is a cross-layer transcoder over layers {list(clt.layers)}; "
                          f"it cannot be restricted to {sorted(layers)}.")
    return CLTSet(clt, source=str(path))

