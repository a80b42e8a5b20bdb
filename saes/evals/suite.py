"""`run_suite`: evaluate one dictionary with the registered suites and write the report.

    from saes.evals import run_suite
    report = run_suite("workspace/runs/sae/demo-topk-resid15",
                       suites=("core", "probing", "absorption", "synthetic", "autointerp"),
                       seeds=1, n_bootstrap=1000)

writes `<run>/evals/report.json` and `<run>/evals/*.parquet` (see `saes.evals.report`) and
records the report in the run's `run.json` artefacts. Keyword arguments are the fields of
`SuiteConfig`, one per CLI flag.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from interp.errors import InterpError
from saes.base import SparseDictionary
from saes.evals.bootstrap import seed_spread
from saes.evals.context import DEFAULT_SUITES, EvalContext, SuiteConfig
from saes.evals.registry import SuiteResult, get_suite
from saes.evals.report import REPORT_FORMAT, REPORT_VERSION, write_report

log = logging.getLogger(__name__)

_ROW_KEY = ("suite", "metric", "subject", "k", "top_n", "source")


def _open(run_or_sae) -> tuple[SparseDictionary, dict]:
    """(dictionary, facts): run directory, store, train config and model name when known."""
    if isinstance(run_or_sae, SparseDictionary):
        return run_or_sae, {"run": None, "store": None, "train_cfg": None,
                            "model": run_or_sae.cfg.model_name}
    from interp.workspace import load_run
    from saes.features.runs import load_dictionary

    path = Path(run_or_sae)
    sae, facts = load_dictionary(path)
    out = {"run": None, "store": None, "train_cfg": None, "data_cfg": None,
           "model": facts.get("model", "")}
    if (path / "run.json").is_file():
        from saes.train_config import split_config

        run = load_run(path)
        out["run"] = run
        try:
            out["train_cfg"], out["data_cfg"] = split_config(run.config)
        except Exception:  # not trained here (imported) or unreadable: evaluate, no retraining
            log.warning("Could not read the training config of %s; seeds > 1 unavailable.", path)
    if facts.get("activations") and (Path(facts["activations"]) / "manifest.json").is_file():
        from interp.store import ActivationStore

        out["store"] = ActivationStore(facts["activations"], verify=False)
        out["model"] = out["model"] or out["store"].manifest["config"].get("model", "")
    return sae, out


def _seed_dictionaries(facts: dict, n: int, seed_runs, progress: bool) -> list[SparseDictionary]:
    """The dictionaries of training seeds 1 .. n-1: given as runs, or trained as sibling runs
    `<run>-seed<s>` from the run's config (reused when already done)."""
    from saes.features.runs import load_dictionary

    if seed_runs:
        return [load_dictionary(p)[0] for p in seed_runs]
    if n <= 1:
        return []
    run, tcfg, data = facts["run"], facts["train_cfg"], facts["data_cfg"]
    if run is None or tcfg is None or data is None:
        raise InterpError("seeds > 1 retrains the run with other seeds, which needs an SAE run "
                          "directory with its training config; pass seed_runs=[...] instead.")
    from interp.workspace import is_done
    from saes.runs import train_run

    out = []
    for s in range(1, n):
        path = run.path.parent / f"{run.name}-seed{s}"
        if not is_done(path):
            log.info("training seed %d into %s", s, path)
            train_run(dataclasses.replace(tcfg, seed=tcfg.seed + s), data, path, path.name,
                      progress=progress, evaluate=False)
        out.append(load_dictionary(path)[0])
    return out


def _key(row: dict) -> tuple:
    return tuple(row.get(k) for k in _ROW_KEY)


def _merge_seeds(rows: list[dict], seed_rows: list[list[dict]]) -> None:
    """Add seed_mean / seed_sd / n_seeds to the SAE's rows (in place)."""
    others = [{_key(r): r["value"] for r in rs} for rs in seed_rows]
    for r in rows:
        if r["subject"] != "sae":
            continue
        vals = [r["value"]] + [o.get(_key(r)) for o in others]
        spread = seed_spread(vals)
        r.update(seed_mean=spread["mean"], seed_sd=spread["sd"], n_seeds=spread["n_seeds"])


def _run_suites(ctx: EvalContext, names: Sequence[str]) -> tuple[dict[str, SuiteResult], dict]:
    results, timing = {}, {}
    for name in names:
        suite = get_suite(name)
        t0 = time.perf_counter()
        log.info("suite %s", name)
        results[name] = suite.run(ctx)
        timing[name] = round(time.perf_counter() - t0, 2)
    return results, timing


def run_suite(run_or_sae, suites: Sequence[str] = DEFAULT_SUITES, *, out: str | Path | None = None,
              model=None, data=None, store=None, seed_runs: Sequence[str | Path] | None = None,
              config: SuiteConfig | None = None, progress: bool = True, figures: bool = True,
              **settings) -> dict:
    """Evaluate an SAE run directory (or a SAELens directory, or a dictionary object with
    `out=`) and write the report into `out` (default `<run>/evals`); returns the report.

    `settings` are `SuiteConfig` fields (seeds, n_bootstrap, explainer, limits...). `model`,
    `data` (an `EvalData`) and `store` (an `ActivationStore` or its directory; default the
    run's own) skip loading them; `seed_runs` gives the runs of other training seeds instead of
    retraining them when `seeds` > 1. `figures` also writes every suite's figures as plotly
    JSON under `<out>/figures/` (`saes.evals.plots.write_figures`).
    """
    cfg = dataclasses.replace(config or SuiteConfig(), suites=tuple(suites), **settings)
    for name in cfg.suites:
        get_suite(name)  # fail on a typo before any work
    sae, facts = _open(run_or_sae)
    if out is None:
        if facts["run"] is None and not isinstance(run_or_sae, (str, Path)):
            raise InterpError("Evaluating a dictionary object needs out= (where to write).")
        out = Path(run_or_sae) / "evals"
    out = Path(out)
    if isinstance(store, (str, Path)):
        from interp.store import ActivationStore

        store = ActivationStore(store, verify=False)
    store = store if store is not None else facts["store"]
    ctx = EvalContext(sae, cfg, out, model=model, model_name=facts["model"], data=data,
                      store=store, train_cfg=facts["train_cfg"], progress=progress)
    t0 = time.perf_counter()
    results, timing = _run_suites(ctx, cfg.suites)
    rows = [r for res in results.values() for r in res.rows]
    extra = _seed_dictionaries(facts, cfg.seeds, seed_runs, progress)
    if extra:
        seed_rows = []
        for i, sae_s in enumerate(extra, start=1):
            sctx = EvalContext(sae_s, cfg, out / f"seed-{i}", model=ctx._model,
                               model_name=ctx.model_name, data=ctx._data, store=store,
                               train_cfg=(dataclasses.replace(facts["train_cfg"],
                                                              seed=facts["train_cfg"].seed + i)
                                          if facts["train_cfg"] is not None else None),
                               subjects=("sae",), progress=progress)
            res_s, _ = _run_suites(sctx, cfg.suites)
            seed_rows.append([r for res in res_s.values() for r in res.rows])
        _merge_seeds(rows, seed_rows)
    warnings = sorted({get_suite(n).warning for n in cfg.suites if get_suite(n).warning})
    report = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "sae": sae.cfg.to_dict(), "run": str(facts["run"].path) if facts["run"] else None,
        "model": ctx.model_name, "config": cfg.to_dict(), "rows": rows,
        "suites": {k: v.info for k, v in results.items()}, "warnings": warnings,
        "timing": {**timing, "total": round(time.perf_counter() - t0, 2)},
        "n_seeds": 1 + len(extra),
    }
    tables = {f"{s}_{t}": cols for s, res in results.items() for t, cols in res.tables.items()}
    if figures:
        from saes.evals.plots import write_figures

        report["figures"] = write_figures(report, tables, out)
    files = write_report(report, tables, out)
    report["files"] = files
    if facts["run"] is not None and Path(out).resolve().is_relative_to(facts["run"].path.resolve()):
        run = facts["run"]
        run.artefacts["evals"] = str(Path(out).resolve().relative_to(run.path.resolve())
                                     / "report.json")
        run.save()
    return report
