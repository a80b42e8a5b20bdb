"""Reading and writing sparse dictionaries in other libraries' on-disk formats.

- SAELens (our main format): `save_saelens`, `load_saelens`, `load_saelens_from_hub`,
  `build_saelens` (from a config dict and tensors already in memory).
- EleutherAI sparsify: `load_sparsify`.
- dictionary_learning: `load_dictionary_learning`, `convert_dictionary_learning`.

Every loader checks tensor names and shapes against the config and raises `ConfigError` naming
the file and tensor. Weights are read with safetensors; nothing is unpickled.
"""

from saes.formats._common import SAELENS_ARCHITECTURES, SAELENS_VERSION
from saes.formats.dictionary_learning import convert_dictionary_learning, load_dictionary_learning
from saes.formats.saelens import (build_saelens, load_saelens, load_saelens_from_hub,
                                  load_saelens_sparsity, save_saelens)
from saes.formats.sparsify import load_sparsify

__all__ = [
    "SAELENS_ARCHITECTURES", "SAELENS_VERSION", "build_saelens", "convert_dictionary_learning",
    "load_dictionary_learning", "load_saelens", "load_saelens_from_hub", "load_saelens_sparsity",
    "load_sparsify", "save_saelens",
]
