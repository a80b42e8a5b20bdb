"""The evaluation report on disk: `report.json` (everything, rows included) and Parquet tables.

Layout of an `evals/` directory (written atomically, `report.json` last):

    report.json            format, version, sae config, suite config, rows, per-suite info,
                           warnings, timing
    metrics.parquet        the rows: suite, metric, subject, value, ci_low, ci_high, n, level,
                           higher_is_better, seed_mean, seed_sd, n_seeds, and per-suite extras
                           (k, top_n, unreliable, warning, placeholder, note, source)
    <suite>_<table>.parquet  detail tables (per task, letter, true feature, latent)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from interp.errors import InterpError
from interp.io import atomic_write_json, atomic_writer, read_json

REPORT_FORMAT = "interp-sae-evals"
REPORT_VERSION = 1
REPORT_NAME = "report.json"
METRICS_NAME = "metrics.parquet"


def _finite(obj):
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return [_finite(v) for v in obj.tolist()]
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_parquet(columns: dict, path: Path) -> None:
    """A dict of equal-length columns as a Parquet file, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {k: _finite(list(v) if not isinstance(v, list) else v) for k, v in columns.items()}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise InterpError(f"Columns of {path.name} have different lengths: "
                          f"{ {k: len(v) for k, v in cols.items()} }.")
    table = pa.table({k: pa.array(v) for k, v in cols.items()})
    with atomic_writer(path) as f:
        pq.write_table(table, f, compression="zstd")


def rows_to_columns(rows: list[dict]) -> dict[str, list]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return {k: [r.get(k) for r in rows] for k in keys}


def write_report(report: dict, tables: dict[str, dict], out_dir: str | Path) -> dict[str, str]:
    """Write the tables, the metric rows and `report.json` into `out_dir`; returns the
    relative names of what was written."""
    out = Path(out_dir)
    written = {}
    for name, cols in tables.items():
        if cols and len(next(iter(cols.values()))):
            write_parquet(cols, out / f"{name}.parquet")
            written[name] = f"{name}.parquet"
    if report.get("rows"):
        write_parquet(rows_to_columns(report["rows"]), out / METRICS_NAME)
        written["metrics"] = METRICS_NAME
    report = {**report, "files": written}
    atomic_write_json(out / REPORT_NAME, _finite(report))
    written["report"] = REPORT_NAME
    return written


def read_report(path: str | Path) -> dict:
    """A report from its `evals/` directory, its `report.json`, or an SAE run directory."""
    p = Path(path)
    for candidate in (p, p / REPORT_NAME, p / "evals" / REPORT_NAME):
        if candidate.is_file():
            rep = read_json(candidate)
            if rep.get("format") != REPORT_FORMAT:
                raise InterpError(f"{candidate} is not an SAE evaluation report.")
            return rep
    raise InterpError(f"No evaluation report at {p} (looked for {REPORT_NAME} and "
                      f"evals/{REPORT_NAME}); run the evaluation suite on it first.")


def read_table(path: str | Path, name: str) -> dict[str, list]:
    """A detail table of a report directory as columns (e.g. name="probing_tasks")."""
    import pyarrow.parquet as pq

    p = Path(path)
    p = p / "evals" if (p / "evals" / REPORT_NAME).is_file() else p
    f = p / f"{name}.parquet"
    if not f.is_file():
        raise InterpError(f"The report at {p} has no table {name!r}.")
    return pq.read_table(f).to_pydict()


def find_rows(report: dict, suite: str | None = None, metric: str | None = None,
              subject: str | None = None) -> list[dict]:
    """The rows matching the given suite / metric / subject."""
    return [r for r in report.get("rows", [])
            if (suite is None or r["suite"] == suite) and (metric is None or r["metric"] == metric)
            and (subject is None or r["subject"] == subject)]
