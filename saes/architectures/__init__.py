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


def check_options(cfg: SAEConfig) -> None:
    """Refuse an architecture-specific setting that `cfg.architecture` does not read (e.g. `k`
    for a standard SAE): left at its default it is harmless, changed it would be ignored."""
    own = architecture_class(cfg.architecture).options
    defaults = SAEConfig()
    for name in sorted({o for cls in ARCHITECTURES.values() for o in cls.options} - set(own)):
        if getattr(cfg, name) != getattr(defaults, name):
            owners = sorted(a for a, cls in ARCHITECTURES.items() if name in cls.options)
            raise ConfigError(
                f"{name}={getattr(cfg, name)!r} is a setting of {', '.join(owners)}; the "
                f"{cfg.architecture} architecture does not use it. Drop it, or choose one of "
                f"those architectures ({cfg.architecture} reads: {', '.join(own) or 'none'}).")


def create_sae(cfg: SAEConfig, seed: int = 0) -> SparseDictionary:
    """A freshly initialised dictionary of `cfg.architecture` (its settings checked)."""
    check_options(cfg)
    return architecture_class(cfg.architecture)(cfg).initialise(seed)
