"""The evaluation suites: importing this package fills `saes.evals.registry.SUITES`."""

from saes.evals.metrics import core, synthetic, probing, absorption  # noqa: F401
from saes.evals.metrics import scr_tpp, autointerp  # noqa: F401
