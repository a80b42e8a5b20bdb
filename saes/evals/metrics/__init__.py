"""The evaluation suites, one module each; `saes.evals.registry.SUITE_MODULES` lists them and
imports them on first use (importing this package registers nothing)."""
