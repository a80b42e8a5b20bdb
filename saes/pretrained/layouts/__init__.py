"""The layouts of pretrained releases, by SAELens's loader name (`conversion_func`).

A layout says which files an entry needs and reads them into one of our dictionaries. Adding
one means a module with a `LAYOUTS` dict and one line here.
"""

from __future__ import annotations

from interp.errors import ConfigError
from saes.pretrained.layouts.base import Layout
from saes.pretrained.layouts.circuit_tracer import LAYOUTS as _CIRCUIT_TRACER
from saes.pretrained.layouts.gemma_scope import LAYOUTS as _GEMMA_SCOPE
from saes.pretrained.layouts.llama_scope import LAYOUTS as _LLAMA_SCOPE
from saes.pretrained.layouts.saelens import LAYOUTS as _SAELENS
from saes.pretrained.layouts.torch_files import LAYOUTS as _TORCH_FILES

LAYOUTS: dict[str, Layout] = {**_SAELENS, **_GEMMA_SCOPE, **_LLAMA_SCOPE, **_CIRCUIT_TRACER,
                              **_TORCH_FILES}

#: SAELens loaders whose dictionaries interp has no architecture for
UNSUPPORTED = {
    "temporal": "TemporalSAE (attention over the context) is not an interp architecture",
    "sparsify": "no registry release uses it; load a local sparsify folder with "
                "saes.formats.load_sparsify",
}


def layout(name: str) -> Layout:
    """The layout called `name`, or an error saying why it cannot be read."""
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name in UNSUPPORTED:
        raise ConfigError(f"Releases in the {name!r} layout cannot be loaded: {UNSUPPORTED[name]}. "
                          f"Supported layouts: {', '.join(sorted(LAYOUTS))}.")
    raise ConfigError(f"Unknown layout {name!r}; supported: {', '.join(sorted(LAYOUTS))}.")
