"""The registry of circuit-discovery methods: name -> the function that runs it.

Adding a method is one module with a `run(ctx: PatchContext, **options) -> MethodResult` and
one line here. Options are the function's keyword arguments; their defaults are recorded in
every run.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from interp.errors import ConfigError, unknown_name_message

METHODS: dict[str, str] = {
    "patching": "circuits.discovery.patching:run",
    "eap": "circuits.discovery.eap:run_eap",
    "eap-ig": "circuits.discovery.eap:run_eap_ig",
    "acdc": "circuits.discovery.acdc:run",
    "discrete": "circuits.discovery.discrete:run",
    "dictionary": "circuits.discovery.dictionary:run",
}
# methods that need something only some models have (the dictionary method: a task model
# whose dictionaries it trains on the task's own prompts)
TASK_MODEL_ONLY = {"dictionary"}
DEFAULT_METHODS = ("patching", "eap", "eap-ig", "acdc", "discrete", "dictionary")


def get_method(name: str) -> Callable:
    if name not in METHODS:
        raise ConfigError(unknown_name_message("discovery method", name, METHODS))
    module, fn = METHODS[name].split(":")
    return getattr(importlib.import_module(module), fn)


def parse_methods(spec: str | list | tuple | None, task_model: bool = True) -> list[str]:
    """'eap-ig,discrete' (or a list) -> validated method names; None/'all' -> every method
    (without those that need a task model when `task_model` is False)."""
    if spec is None or spec == "all":
        return [m for m in DEFAULT_METHODS if task_model or m not in TASK_MODEL_ONLY]
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for n in names:
        get_method(n)  # raises with close matches
    return names


def method_options(name: str, overrides: dict | None = None) -> dict:
    """The options a method runs with: its defaults, updated by `overrides` (checked)."""
    fn = get_method(name)
    params = {k: p.default for k, p in inspect.signature(fn).parameters.items()
              if p.default is not inspect.Parameter.empty}
    for k in overrides or {}:
        if k not in params:
            raise ConfigError(f"Method {name!r} has no option {k!r}; its options are "
                              f"{sorted(params) or 'none'}.")
    params.update(overrides or {})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
