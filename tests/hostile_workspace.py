"""Hostile workspaces for the explorer's tests: one run folder per way a run can be wrong, for
any run kind. `write_hostile_runs(ws, kind)` writes them and returns, per run name, a phrase
the run's page must show in an error or warning (None: the page must only render).

Run-level cases break run.json itself (the run is listed as broken); artefact cases give a
readable, finished run whose artefacts are missing, refused or unreadable. The artefact keys are
the ones the kind's view asks for (read from its source), so a new kind is covered without
writing anything here.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
from pathlib import Path

GIANT = 200 << 20  # bytes; sparse files, so they take no disk
CAN_FIFO = hasattr(os, "mkfifo")

RUN_CASES = {  # run folder -> phrase on its page
    "not-json": "not valid JSON",
    "json-list": "holds a JSON list",
    "wrong-types": "'metrics' is a JSON list",
    "bad-status": "status is 'exploded'",
    "deep-json": "nested too deeply",
    "giant-run-json": "larger than a run.json may be",
    "linked-run-json": "outside the workspace",
    "linked-run": "outside the workspace",
    "loop": "symlink loop",
    "dotdot-name": "not a valid run name",
    "wrong-kind": "says kind 'other-kind'",
    "bad name": "not a valid run kind or name",
    "nan-metrics": "not finite numbers",
    **({"fifo-run-json": "not a regular file"} if CAN_FIFO else {}),
}
ARTEFACT_CASES = {
    "missing-artefacts": "is missing",
    "escaping-artefacts": "points outside the run",
    "linked-artefacts": "outside the workspace",
    "giant-artefacts": "more than the explorer reads",
    "garbage-artefacts": "not valid JSON",
    "not-parquet": "not a Parquet file",
    "odd-json-artefacts": None,  # valid JSON of unexpected shapes, NaN and inf: render only
    **({"fifo-artefacts": "not a regular file"} if CAN_FIFO else {}),
}
CASES = {**RUN_CASES, **ARTEFACT_CASES}
READ_CASES = {"garbage-artefacts"}  # found only by reading the files: on the run's page, not Home


def view_artefact_keys(module: str) -> list[str]:
    """The artefact keys a view module asks for: the string in `artefact(run, "<key>", ...)`."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    keys = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "artefact"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
            keys.append(node.args[1].value)
    return list(dict.fromkeys(keys)) or ["table", "report"]


def _sparse(path: Path, size: int = GIANT) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _run_json(kind: str, name: str, **over) -> dict:
    return {"kind": kind, "name": name, "config": {}, "created": "2026-01-01T00:00:00+00:00",
            "status": "done", "metrics": {}, "artefacts": {}, **over}


def outside_dir(ws: Path) -> Path:
    """A folder beside the workspace, with a file a page must never read."""
    out = ws.parent / f"{ws.name}-outside"
    out.mkdir(parents=True, exist_ok=True)
    (out / "secret.json").write_text(json.dumps({"secret": "never shown"}))
    return out


def write_hostile_runs(ws: Path, kind: str, metrics: tuple[str, ...] = (),
                       keys: list[str] | None = None) -> dict[str, str | None]:
    """Write every case of `CASES` as a run of `kind` in workspace `ws`; returns `CASES`.

    `metrics` are set to NaN / inf in the nan-metrics run; `keys` are the artefact keys of the
    artefact cases (default: those the kind's view asks for)."""
    from app.kinds import kind_view

    keys = keys or view_artefact_keys(kind_view(kind).module)
    base = ws / "runs" / kind
    base.mkdir(parents=True, exist_ok=True)
    out = outside_dir(ws)

    def run(folder: str, content=None, **over) -> Path:
        d = base / folder
        d.mkdir()
        if content is None:
            content = json.dumps(_run_json(kind, folder) | over)
        (d / "run.json").write_text(content)
        return d

    run("not-json", "{not json")
    run("json-list", "[1, 2]")
    run("wrong-types", metrics=[1, 2])
    run("bad-status", status="exploded")
    run("deep-json", "[" * 100_000 + "]" * 100_000)
    d = base / "giant-run-json"
    d.mkdir()
    _sparse(d / "run.json")
    d = base / "linked-run-json"
    d.mkdir()
    (out / f"{kind}-run.json").write_text(json.dumps(_run_json(kind, "linked-run-json")))
    os.symlink(out / f"{kind}-run.json", d / "run.json")
    (out / f"{kind}-run").mkdir()
    (out / f"{kind}-run" / "run.json").write_text(json.dumps(_run_json(kind, "linked-run")))
    os.symlink(out / f"{kind}-run", base / "linked-run")
    os.symlink(base / "loop", base / "loop")
    run("dotdot-name", name="../../../etc/passwd")
    run("wrong-kind", json.dumps(_run_json("other-kind", "wrong-kind")))
    run("bad name")
    names = list(metrics) or ["score"]
    run("nan-metrics", metrics={k: [math.nan, math.inf, -math.inf][i % 3]
                                for i, k in enumerate(names)})
    if CAN_FIFO:
        d = base / "fifo-run-json"
        d.mkdir()
        os.mkfifo(d / "run.json")

    def artefacts(name: str, make) -> None:
        d = base / name
        d.mkdir()
        arts = {}
        for i, key in enumerate(keys):
            arts[key] = make(d, key, i)
        (d / "run.json").write_text(json.dumps(_run_json(kind, name, artefacts=arts)))

    artefacts("missing-artefacts", lambda d, k, i: f"{k}.json")
    artefacts("escaping-artefacts",
              lambda d, k, i: "../../../../etc/passwd" if i % 2 == 0 else "/etc/passwd")

    def linked(d, k, i):
        os.symlink(out / "secret.json", d / f"{k}.json")
        return f"{k}.json"

    def giant(d, k, i):
        _sparse(d / f"{k}.json")
        return f"{k}.json"

    def garbage(d, k, i):
        (d / f"{k}.json").write_bytes(b"\x00\xffgarbage{" * 10)
        return f"{k}.json"

    def not_parquet(d, k, i):
        (d / f"{k}.parquet").write_bytes(b"PAR1 but not really, a text file")
        return f"{k}.parquet"

    def odd(d, k, i):
        body = ([math.nan, math.inf, "x", None] if i % 2 else
                {"rows": "not a list", "metrics": {"rel_error": math.nan}, "hooks": [1],
                 "density": {"log10_density": [math.inf]}})
        (d / f"{k}.json").write_text(json.dumps(body))
        return f"{k}.json"

    def fifo(d, k, i):
        os.mkfifo(d / f"{k}.json")
        return f"{k}.json"

    artefacts("linked-artefacts", linked)
    artefacts("giant-artefacts", giant)
    artefacts("garbage-artefacts", garbage)
    artefacts("not-parquet", not_parquet)
    artefacts("odd-json-artefacts", odd)
    if CAN_FIFO:
        artefacts("fifo-artefacts", fifo)
    return CASES
