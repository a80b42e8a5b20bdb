"""The explorer's access to a workspace, without Streamlit: list runs, read `run.json`, find a
run's artefacts and read them in bounded pieces. Pages and views read files only through here
(or through the toolkit's own loaders, after the checks here), so a hostile workspace can break
a run but never a page.

What a workspace may hold and what happens to it:

- a path that leaves the workspace (a symlinked run, run.json or artefact; an artefact path with
  `..` or an absolute path): refused, never opened;
- something that is not a regular file (a FIFO, a device, a socket; a symlink loop): refused,
  never opened (opening a FIFO would block the page forever);
- a file larger than the explorer reads (`MAX_RUN_JSON`, `MAX_JSON`): refused from its size,
  never read; logs are read from their last `MAX_LOG_TAIL` bytes only;
- a run.json that is not JSON, nested too deeply, or has fields of the wrong type, a status
  outside running | done | failed, or a kind that is not its folder's: the run is `broken`, with
  a message that says what is wrong;
- NaN or infinite metrics, missing artefacts, a `.parquet` artefact that is not Parquet: the run
  is listed with these `problems()`.

Every refusal is an `ExplorerError` whose message names the file and what to do.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
from pathlib import Path, PurePath

from interp.errors import InterpError
from interp.workspace import STATUSES, Run

MAX_RUN_JSON = 4 << 20  # bytes; run.json is small (config + scalar metrics)
MAX_JSON = 64 << 20  # any JSON artefact (eval reports hold one number per latent)
MAX_LOG_TAIL = 16 << 20  # the last bytes of a .jsonl log that a page reads
MAX_POINTS = 2000  # records per log after thinning
PARQUET_MAGIC = b"PAR1"

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # run kinds and names (interp.workspace)


class ExplorerError(InterpError):
    """Something in the workspace that a page cannot show; the message says what and why."""


# --------------------------------------------------------------------------- the workspace
def workspace() -> Path:
    """The workspace root: `$INTERP_WORKSPACE`, else `./workspace` (resolved)."""
    return Path(os.environ.get("INTERP_WORKSPACE") or "workspace").expanduser().resolve()


def _real(path: Path) -> Path | None:
    """`path` with every symlink resolved, or None for a symlink loop."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None


def inside(path: Path, root: Path) -> bool:
    """Whether `path` (symlinks resolved) lies inside `root`."""
    p, r = _real(path), _real(root)
    return p is not None and r is not None and (p == r or r in p.parents)


def _escape(path: Path, ws: Path) -> str:
    """'' if `path` lies inside the workspace, else why not (for a message)."""
    if inside(path, ws):
        return ""
    return "is a symlink loop" if _real(path) is None else "points outside the workspace"


def check_file(path: Path, ws: Path | None = None, what: str = "") -> os.stat_result:
    """The stat of `path` if it is a regular file inside the workspace; else `ExplorerError`."""
    ws = ws or workspace()
    path = Path(path)
    name = what or path.name
    if why := _escape(path, ws):
        raise ExplorerError(f"{name} ({path}) {why}; not read.")
    try:
        st = os.stat(path)
    except OSError as e:
        raise ExplorerError(f"{name} is missing ({path}): {e.strerror or e}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise ExplorerError(f"{name} ({path}) is not a regular file; not read.")
    return st


# --------------------------------------------------------------------------- bounded reads
def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def _parse_json(data: bytes, path: Path):
    try:
        return json.loads(data)
    except RecursionError:
        raise ExplorerError(f"{path.name} is nested too deeply to be read as JSON.") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ExplorerError(f"{path.name} is not valid JSON ({e}).") from None


def read_json(path: Path, ws: Path | None = None, limit: int | None = None, expect=None):
    """A JSON file inside the workspace, refused above `limit` bytes (default `MAX_JSON`).

    `expect` (e.g. `dict`) checks the type of the top-level value. NaN and infinities are read
    as floats, as Python writes them."""
    path = Path(path)
    limit = MAX_JSON if limit is None else limit
    size = check_file(path, ws).st_size
    if size > limit:
        raise ExplorerError(f"{path.name} is {_size(size)}, more than the explorer reads "
                            f"({_size(limit)}); open it with the toolkit's Python API instead.")
    with open(path, "rb") as f:
        value = _parse_json(f.read(limit + 1), path)
    if expect is not None and not isinstance(value, expect):
        raise ExplorerError(f"{path.name} holds a JSON {_json_type(value)}, not "
                            f"{_json_type(expect())}.")
    return value


def read_jsonl(path: Path, ws: Path | None = None, max_bytes: int = MAX_LOG_TAIL,
               max_points: int = MAX_POINTS) -> tuple[list[dict], bool]:
    """The records of a JSON-lines log (its last `max_bytes` only), thinned to at most
    `max_points` (the last record always kept); returns (records, truncated). Lines that are
    not JSON objects are skipped."""
    path = Path(path)
    size = check_file(path, ws).st_size
    with open(path, "rb") as f:
        start = max(0, size - max_bytes)
        f.seek(start)
        data = f.read(max_bytes)
    lines = data.split(b"\n")
    if start:
        lines = lines[1:]  # the first line was cut by the seek
    records = []
    for line in lines:
        with contextlib.suppress(ValueError, RecursionError):
            if line.strip() and isinstance(rec := json.loads(line), dict):
                records.append(rec)
    step = max(1, -(-len(records) // max_points))
    thinned = records[::step]
    if records and thinned[-1] is not records[-1]:
        thinned.append(records[-1])
    return thinned, bool(start)


def check_parquet(path: Path, ws: Path | None = None, what: str = "") -> Path:
    """`path` if it is a Parquet file inside the workspace (its magic bytes and footer read,
    nothing else); else `ExplorerError`."""
    path = Path(path)
    name = what or path.name
    size = check_file(path, ws, what).st_size
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if size < 12 or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise ExplorerError(f"{name} is not a Parquet file (no PAR1 marks at its ends); "
                            "re-run the command that wrote it.")
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)  # the footer only
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad footer
        raise ExplorerError(f"{name} is not a readable Parquet file ({e}); re-run the command "
                            "that wrote it.") from None
    return path


# --------------------------------------------------------------------------- runs
def _json_type(v) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def _broken(path: Path, kind: str, name: str, why: str) -> Run:
    return Run(path=path, kind=kind, name=name, status="broken", error=why)


def run_from_json(path: Path, d, kind: str, name: str) -> Run:
    """A `Run` from the parsed contents of `path/run.json`, with every field's type checked;
    `kind` and `name` are its folders'. Raises `ExplorerError` saying which field is wrong."""
    if not isinstance(d, dict):
        raise ExplorerError(f"run.json holds a JSON {_json_type(d)}, not an object.")
    for field in ("kind", "name"):
        v = d.get(field)
        if not isinstance(v, str) or not NAME.match(v):
            raise ExplorerError(f"run.json's {field!r} is {v!r}, not a valid run {field} "
                                "(letters, digits and . _ + -, no slashes).")
    if d["kind"] != kind:
        raise ExplorerError(f"run.json says kind {d['kind']!r}, but the run lies in runs/{kind}/: "
                            f"move it to runs/{d['kind']}/ or correct its kind.")
    fields = {}
    for field, typ, default in (("config", dict, {}), ("metrics", dict, {}),
                                ("artefacts", dict, {}), ("created", str, ""),
                                ("status", str, "running")):
        v = d.get(field)
        if v is None:
            v = default
        if not isinstance(v, typ):
            raise ExplorerError(f"run.json's {field!r} is a JSON {_json_type(v)}, not "
                                f"{_json_type(typ())}.")
        fields[field] = v
    if fields["status"] not in STATUSES:
        raise ExplorerError(f"run.json's status is {fields['status']!r}, not one of {STATUSES}.")
    bad = [k for k, v in fields["artefacts"].items() if not isinstance(v, str)]
    if bad:
        raise ExplorerError(f"run.json's artefacts {bad} are not paths (strings).")
    return Run(path=path, kind=kind, name=name, **fields)


def read_run(path: Path, ws: Path | None = None) -> Run:
    """The run in folder `path` (`runs/<kind>/<name>`); a run that cannot be read comes back
    with status `broken` and `error` saying why. Never raises for what the folder holds."""
    return _read_run(Path(path), ws or workspace(), parent_inside=False)


def _read_run(path: Path, ws: Path, parent_inside: bool) -> Run:
    """`read_run`; `parent_inside`: the kind folder is known to lie inside the workspace, so
    a run folder and run.json that are not symlinks need no resolving (a fast scan)."""
    kind, name = path.parent.name, path.name
    f = path / "run.json"
    try:
        if not NAME.match(kind) or not NAME.match(name):
            bad = kind if not NAME.match(kind) else name
            raise ExplorerError(f"the folder name {bad!r} is not a valid run kind or name "
                                "(letters, digits and . _ + -); rename it.")
        plain = parent_inside and not os.path.islink(path) and not os.path.islink(f)
        if not plain and (why := _escape(path, ws)):
            raise ExplorerError(f"{path} {why}; not read.")
        st = os.stat(f) if plain else check_file(f, ws, "run.json")
        if not stat.S_ISREG(st.st_mode):
            raise ExplorerError(f"run.json ({f}) is not a regular file; not read.")
        if st.st_size > MAX_RUN_JSON:
            raise ExplorerError(f"{f} is {_size(st.st_size)}, larger than a run.json may be "
                                f"({_size(MAX_RUN_JSON)}); not read.")
        with open(f, "rb") as fh:
            return run_from_json(path, _parse_json(fh.read(MAX_RUN_JSON + 1), f), kind, name)
    except ExplorerError as e:
        return _broken(path, kind, name, str(e))
    except OSError as e:
        return _broken(path, kind, name, f"{f} cannot be read: {e}")


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return []


def _is_run(entry: os.DirEntry) -> bool:
    """A folder holding a run.json (symlinks count: they are checked by read_run)."""
    try:
        if entry.is_symlink():
            return True  # a linked run, possibly out of the workspace: listed, then refused
        return entry.is_dir(follow_symlinks=False) and os.path.lexists(
            os.path.join(entry.path, "run.json"))
    except OSError:
        return False


def scan_runs(ws: Path | None = None, kind: str | None = None) -> list[Run]:
    """Every run of the workspace (or of one kind), newest first; unreadable ones `broken`.

    A run is a folder `runs/<kind>/<name>/` holding a run.json; folders starting with '.' are
    skipped, symlinked ones are listed (and refused if they leave the workspace)."""
    ws = ws or workspace()
    base = ws / "runs"
    if kind is not None and not NAME.match(kind):
        return []
    if not inside(base, ws) or not base.is_dir():
        return []
    kinds = [base / kind] if kind is not None else [Path(e.path) for e in _entries(base)]
    runs = []
    for k in kinds:
        if k.is_dir():
            known = inside(k, ws)  # then only symlinked runs need resolving
            runs += [_read_run(Path(e.path), ws, known) for e in _entries(k) if _is_run(e)]
    return sorted(runs, key=lambda r: (r.created, r.kind, r.name), reverse=True)


def run_kinds(ws: Path | None = None) -> list[str]:
    """The kinds (folders under runs/) that hold at least one run, sorted; run.json not read."""
    ws = ws or workspace()
    base = ws / "runs"
    if not inside(base, ws) or not base.is_dir():
        return []
    return [e.name for e in _entries(base) if Path(e.path).is_dir()
            and any(_is_run(r) for r in _entries(Path(e.path)))]


def get_run(kind: str, name: str, ws: Path | None = None) -> Run:
    """One run by kind and name (both validated: no slashes, no '..')."""
    ws = ws or workspace()
    for what, v in (("kind", kind), ("name", name)):
        if not isinstance(v, str) or not NAME.match(v):
            raise ExplorerError(f"{v!r} is not a valid run {what}.")
    path = ws / "runs" / kind / name
    if not os.path.lexists(path / "run.json") and not path.is_symlink():
        raise ExplorerError(f"No {kind!r} run named {name!r} in {ws}.")
    return read_run(path, ws)


# --------------------------------------------------------------------------- artefacts
def artefact(run: Run, key: str, required: bool = True, ws: Path | None = None) -> Path | None:
    """The file or folder of a run's artefact, checked: inside the run folder by its path,
    inside the workspace once symlinks are resolved, present, and a regular file or a folder.
    A missing or refused artefact raises `ExplorerError`, or gives None if not `required`."""
    try:
        return _artefact(run, key, ws or workspace())
    except ExplorerError:
        if required:
            raise
        return None


def _artefact(run: Run, key: str, ws: Path) -> Path:
    where = f"{run.kind}/{run.name}"
    if key not in run.artefacts:
        raise ExplorerError(f"Run {where} has no {key!r} artefact (it has "
                            f"{sorted(run.artefacts) or 'none'}); it may be unfinished.")
    rel = run.artefacts[key]
    parts = PurePath(rel).parts if isinstance(rel, str) else ("..",)
    if not rel or PurePath(rel).is_absolute() or ".." in parts or "\x00" in rel:
        raise ExplorerError(f"Artefact {key!r} of {where} points outside the run ({rel!r}); "
                            "refusing to read it.")
    path = run.path / rel
    if why := _escape(path, ws):
        raise ExplorerError(f"Artefact {key!r} of {where} ({rel}) {why}; not read.")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise ExplorerError(f"Artefact {key!r} of {where} is missing ({rel}).") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ExplorerError(f"Artefact {key!r} of {where} ({rel}) is not a regular file or a "
                            "folder; not read.")
    return path


def artefact_report(run: Run, ws: Path | None = None, deep: bool = False) -> list[dict]:
    """One row per artefact: key, path, present, bytes, problem ('' if none).

    The problems found without reading: missing, outside, not a file, a `.json` over
    `MAX_JSON`, a `.parquet` without Parquet marks; with `deep`, `.json` files are also parsed."""
    ws = ws or workspace()
    rows = []
    for key, rel in run.artefacts.items():
        row = {"artefact": key, "path": str(rel), "present": False, "bytes": None, "problem": ""}
        try:
            path = _artefact(run, key, ws)
            row["present"] = True
            if path.is_file():
                row["bytes"] = path.stat().st_size
                if path.suffix == ".json":
                    if deep:
                        read_json(path, ws)
                    elif row["bytes"] > MAX_JSON:
                        read_json(path, ws)  # raises the size message
                elif path.suffix == ".parquet":
                    check_parquet(path, ws, f"Artefact {key!r} ({rel})")
        except ExplorerError as e:
            row["problem"] = str(e)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- SAE eval suite
def suite_report(run: Run, ws: Path | None = None) -> dict | None:
    """The evaluation-suite report of an SAE run (its `evals` artefact, `evals/report.json`,
    written by `interp eval-sae RUN --suite ...`), or None if the run has none. A report that
    is not one (no "rows" list) raises `ExplorerError`."""
    path = artefact(run, "evals", required=False, ws=ws)
    if path is None:
        return None
    report = read_json(path, ws, expect=dict)
    if not isinstance(report.get("rows"), list):
        raise ExplorerError(f"{run.kind}/{run.name}'s evals artefact is not an evaluation "
                            "report (no rows); re-run `interp eval-sae RUN --suite ...`.")
    return report


def suite_table(run: Run, report: dict, name: str, ws: Path | None = None) -> dict | None:
    """A detail table named in the report's `files` (e.g. "synthetic_features") as columns,
    read from beside report.json after the same checks as any artefact; None if not written."""
    rel = (report.get("files") or {}).get(name)
    if not isinstance(rel, str) or PurePath(rel).name != rel or not rel.endswith(".parquet"):
        return None
    folder = artefact(run, "evals", ws=ws).parent
    path = check_parquet(folder / rel, ws, f"Table {rel} of {run.kind}/{run.name}")
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


def nonfinite(metrics: dict) -> list[str]:
    """The names of metrics that are NaN or infinite (top level, and one level of nesting)."""
    out = []
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            out.append(k)
        elif isinstance(v, dict):
            out += [f"{k}.{j}" for j, w in v.items() if isinstance(w, float)
                    and not math.isfinite(w)]
    return out


def problems(run: Run, ws: Path | None = None, deep: bool = False) -> list[str]:
    """Everything wrong with a run, as sentences: unreadable, failed, metrics that are not
    finite numbers, artefacts that are missing or refused (see `artefact_report`)."""
    if run.status == "broken":
        return [run.error or "run.json cannot be read"]
    out = []
    if run.status == "failed":
        out.append(f"failed: {run.metrics.get('error', 'no error recorded')}")
    if bad := nonfinite(run.metrics):
        out.append(f"metrics that are not finite numbers: {', '.join(bad)}")
    out += [r["problem"] for r in artefact_report(run, ws, deep=deep) if r["problem"]]
    return out


def scalar_metrics(run: Run, keys: tuple[str, ...] | None = None) -> dict:
    """The run's scalar metrics (all, or `keys` in order where present)."""
    m = run.metrics
    if keys is None:
        return {k: v for k, v in m.items() if isinstance(v, (int, float, str)) or v is None}
    return {k: m[k] for k in keys if k in m and (isinstance(m[k], (int, float, str))
                                                  or m[k] is None)}


def displayable(value):
    """A JSON value with NaN and infinities as strings (a browser's JSON parser refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): displayable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [displayable(v) for v in value]
    return value
