"""The registry of evaluation suites and what a suite receives and returns.

A suite is one module in `saes.evals.metrics` with a function `run(ctx) -> SuiteResult`
registered by `@register_suite("name", ...)`; adding a metric means adding one module and one
line in `SUITE_MODULES` (import strings, loaded on first use, so the registry and the suites,
which import it, are no import circle). A suite returns metric rows (one per metric and
subject: the trained dictionary "sae" and each baseline, every value with its bootstrap
interval), detail tables (written as Parquet) and facts for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from interp.errors import ConfigError, unknown_name_message
from saes.evals.bootstrap import Interval


@dataclass
class SuiteResult:
    """What a suite returns: `rows` (see `metric_row`), `tables` (name -> columns, each a list
    or 1-D array of equal length) and JSON-able `info`."""

    rows: list[dict] = field(default_factory=list)
    tables: dict[str, dict] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def add(self, row: dict) -> None:
        self.rows.append(row)


@dataclass(frozen=True)
class Suite:
    name: str
    run: Callable  # (EvalContext) -> SuiteResult
    needs_model: bool
    description: str
    #: the baselines this suite evaluates by default besides the SAE (a subset of the config's)
    baselines: tuple[str, ...] = ("random", "neurons", "pca")
    #: a warning printed beside every figure of the suite (e.g. a reliability audit)
    warning: str = ""


SUITES: dict[str, Suite] = {}

#: the modules whose `@register_suite` functions fill `SUITES` (imported on first lookup)
SUITE_MODULES: tuple[str, ...] = (
    "saes.evals.metrics.core",
    "saes.evals.metrics.synthetic",
    "saes.evals.metrics.probing",
    "saes.evals.metrics.absorption",
    "saes.evals.metrics.scr_tpp",  # scr and tpp
    "saes.evals.metrics.autointerp",
)


def _load_suites() -> None:
    import importlib

    for module in SUITE_MODULES:
        importlib.import_module(module)


def register_suite(name: str, *, needs_model: bool = True, description: str = "",
                   baselines: tuple[str, ...] = ("random", "neurons", "pca"), warning: str = ""):
    """Decorator registering `run(ctx) -> SuiteResult` as suite `name`."""
    def deco(fn):
        SUITES[name] = Suite(name, fn, needs_model, description, tuple(baselines), warning)
        return fn
    return deco


def get_suite(name: str) -> Suite:
    _load_suites()

    if name not in SUITES:
        raise ConfigError(unknown_name_message("evaluation suite", name, SUITES,
                                               f"Available: {', '.join(SUITES)}."))
    return SUITES[name]


def suite_names() -> list[str]:
    _load_suites()

    return list(SUITES)


def metric_row(suite: str, metric: str, subject: str, value: Interval | float | None, *,
               higher_is_better: bool | None = True, **extra) -> dict:
    """One report row: the value with its interval (None where no interval applies)."""
    row = {"suite": suite, "metric": metric, "subject": subject, "value": None,
           "ci_low": None, "ci_high": None, "n": None, "level": None,
           "higher_is_better": higher_is_better}
    if isinstance(value, Interval):
        row.update(value=value.value, ci_low=value.low, ci_high=value.high, n=value.n,
                   level=value.level)
    elif value is not None:
        row["value"] = float(value)
    row.update(extra)
    return row
