"""SAE quality beyond reconstruction: SAEBench-style metrics with baselines and intervals.

    from saes.evals import run_suite, read_report
    report = run_suite("workspace/runs/sae/demo-topk-resid15",
                       suites=("core", "probing", "absorption", "synthetic", "autointerp"))

Suites (one module each in `saes.evals.metrics`, one registry in `saes.evals.registry`):
core (reconstruction, loss recovered), synthetic (known features: recovery, absorption,
splitting), probing (k-sparse probing), absorption (first letters), autointerp (detection and
fuzzing, local explainer), scr and tpp (SAEBench's, flagged unreliable). Every figure comes with
a bootstrap interval (`saes.evals.bootstrap`) and beside the same figure for baselines
(`saes.evals.baselines`: random decoder, raw neurons, PCA); `seeds > 1` adds the spread over
retrained seeds. Figures: `saes.evals.plots`.
"""

from saes.evals.bootstrap import Interval, bootstrap, mean_interval, ratio_interval, seed_spread
from saes.evals.context import DEFAULT_SUITES, EvalContext, SuiteConfig
from saes.evals.data import EvalDataConfig, EvalData, build_eval_data, eval_data
from saes.evals.registry import SUITES, SuiteResult, get_suite, register_suite, suite_names
from saes.evals.report import find_rows, read_report, read_table
from saes.evals.suite import run_suite

__all__ = [
    "DEFAULT_SUITES", "EvalDataConfig", "EvalContext", "EvalData", "Interval", "SUITES",
    "SuiteConfig", "SuiteResult", "bootstrap", "build_eval_data", "eval_data", "find_rows",
    "get_suite", "mean_interval", "ratio_interval", "read_report", "read_table",
    "register_suite", "run_suite", "seed_spread", "suite_names",
]
