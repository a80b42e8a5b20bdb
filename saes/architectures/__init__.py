"""The architectures, one module each, and their registry: adding one is a module and a line
in `ARCHITECTURES` (the key is the class's `architecture`)."""

from __future__ import annotations

from interp.errors import ConfigError, unknown_name_message
from saes.architectures.discrete import DiscreteSAE
from saes.architectures.gated import GatedSAE
from saes.architectures.jumprelu import JumpReLUSAE
from saes.architectures.matryoshka import MatryoshkaBatchTopKSAE
from saes.architectures.standard import StandardSAE
from saes.architectures.topk import BatchTopKSAE, TopKSAE
from saes.base import SAEConfig, SparseDictionary

ARCHITECTURES: dict[str, type[SparseDictionary]] = {cls.architecture: cls for cls in (
    TopKSAE, BatchTopKSAE, StandardSAE, JumpReLUSAE, GatedSAE, MatryoshkaBatchTopKSAE,
    DiscreteSAE,
)}


def architecture_class(name: str) -> type[SparseDictionary]:
    """The class registered as `name`, or a `ConfigError` listing the nearest names."""
    if name not in ARCHITECTURES:
        raise ConfigError(unknown_name_message(
            "SAE architecture", name, ARCHITECTURES,
            hint=f"Available: {', '.join(sorted(ARCHITECTURES))}."))
    return ARCHITECTURES[name]


def create_sae(cfg: SAEConfig, seed: int = 0) -> SparseDictionary:
    """A freshly initialised dictionary of `cfg.architecture`."""
    return architecture_class(cfg.architecture)(cfg).initialise(seed)
