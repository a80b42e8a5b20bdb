"""The architectures: importing this package fills `saes.base.ARCHITECTURES`."""

from saes.architectures import topk  # noqa: F401
from saes.architectures import standard, jumprelu, gated, matryoshka, discrete  # noqa: F401
