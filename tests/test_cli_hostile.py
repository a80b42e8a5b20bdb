"""Every `interp` sub-command, driven with a user's mistakes through the composed command line.

The commands are listed from the composed typer app (`interp.cli.app`), so a sub-command added
to the table in `interp.commands` is covered here without editing this file. A mistake must end
in exit code 2 with `error: ...` naming the flag or file, never a traceback: an unknown flag, a
number that is not one (or is nan/inf, or is below its declared minimum), a missing input file,
a directory that is not what the flag wants, a broken run.json, a run of the wrong kind.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from interp.cli import app

#: numeric options where every value is meaningful (negative positions/layers count from the
#: end); every other int/float option must declare its range (typer's `min=`/`max=`)
UNBOUNDED = {("linearise", "--position"), ("linearise", "--layer")}
#: commands whose body is not a computation on files (they start a server or the whole demo)
NO_BODY = {"app", "demo"}
#: path parameters that name outputs (any new path is fine) rather than inputs
OUTPUTS = {"out", "workspace"}


def _commands() -> list[tuple[str, ...]]:
    def walk(cmd, path=()):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                yield from walk(sub, path + (name,))
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app)))


COMMANDS = _commands()
IDS = [" ".join(p) for p, _ in COMMANDS]


def _annotation(p):
    """The parameter's Python type (Optional / list stripped), across typer versions."""
    desc = getattr(p, "type_descriptor", None)
    ann = getattr(desc, "annotation", None)
    if ann is None:  # typer < 0.20: click types
        name = getattr(p.type, "name", "")
        return {"integer": int, "float": float, "path": Path}.get(name, str)
    for _ in range(2):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, list, types.UnionType) and args:
            ann = args[0]
    return ann


def _bounds(p) -> tuple[float | None, float | None]:
    info = getattr(getattr(p, "type_descriptor", None), "parameter_info", None)
    src = info if info is not None else p.type
    return getattr(src, "min", None), getattr(src, "max", None)


def _flag(p) -> str:
    return max(p.opts, key=len) if p.opts else p.name


def invoke(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


def assert_user_error(code: int, out: str, *named: str) -> None:
    assert code == 2, out
    assert "error:" in out, out
    assert "Traceback" not in out, out
    for n in named:
        assert n in out, (n, out)


@pytest.fixture(autouse=True)
def workspace_env(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_WORKSPACE", str(tmp_path / "ws"))


def test_every_command_is_listed():
    """The walk finds the commands of every group in the composition table."""
    names = set(IDS)
    for expected in ("cache", "train-sae", "eval-sae", "codebook steer", "attribute", "probe",
                     "linearise", "localist sweep"):
        assert expected in names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=IDS)
def test_an_unknown_flag_is_named(path):
    assert_user_error(*invoke(*path, "--no-such-flag", "1"), "--no-such-flag")


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_every_number_flag_refuses_text_nan_inf_and_values_below_its_range(path, cmd):
    numeric = [p for p in cmd.params if _annotation(p) in (int, float) and p.opts]
    for p in numeric:
        flag = _flag(p)
        assert_user_error(*invoke(*path, flag, "abc"), flag)
        if _annotation(p) is float:
            for bad in ("nan", "inf", "-inf"):
                assert_user_error(*invoke(*path, flag, bad), flag)
        lo, hi = _bounds(p)
        if (path[-1], flag) in UNBOUNDED:
            continue
        assert lo is not None or hi is not None, (
            f"`interp {' '.join(path)} {flag}` declares no range (typer's min=/max=); give it "
            "one, or list it in UNBOUNDED if every value is meaningful")
        if lo is not None:
            below = lo - 1 if _annotation(p) is int else lo - 0.5
            assert_user_error(*invoke(*path, flag, below), flag)
        if hi is not None:
            assert_user_error(*invoke(*path, flag, hi + 1), flag)


# ----------------------------------------------------------------------- input paths
def _hostile_inputs(root: Path) -> dict[str, Path]:
    """Directories and files that are not what any input flag wants."""
    root.mkdir(parents=True, exist_ok=True)
    cases = {"missing": root / "no-such-dir"}
    empty = root / "empty"
    empty.mkdir()
    cases["empty-dir"] = empty
    a_file = root / "a-file.txt"
    a_file.write_text("not a directory\n")
    cases["a-file"] = a_file
    garbage = root / "garbage"
    garbage.mkdir()
    for name in ("run.json", "manifest.json", "cfg.json", "graph.json", "features.json",
                 "codebooks.json"):
        (garbage / name).write_bytes(b'{"kind": "sae", "trunc')
    cases["truncated-json"] = garbage
    wrong = root / "runs" / "probe" / "wrong-kind"
    wrong.mkdir(parents=True)
    (wrong / "run.json").write_text(json.dumps({
        "kind": "probe", "name": "wrong-kind", "config": {}, "created": "", "status": "done",
        "metrics": {}, "artefacts": {"layers": "../../../../etc/passwd"}}))
    cases["wrong-kind-run"] = wrong
    return cases


def _input_params(cmd) -> list:
    return [p for p in cmd.params if _annotation(p) is Path and p.name not in OUTPUTS]


PATH_COMMANDS = [(path, cmd) for path, cmd in COMMANDS
                 if path[-1] not in NO_BODY and _input_params(cmd)]


def _base_args(cmd, tmp_path: Path, model: Path) -> list[str]:
    """Values for a command's required parameters (and a tiny model, so nothing slow loads)."""
    args: list[str] = []
    names = {p.name for p in cmd.params}
    if "model" in names:
        args += ["--model", str(model)]
    for p in cmd.params:
        if not p.required or _annotation(p) is Path and p.name not in OUTPUTS:
            continue
        args += [_flag(p), str(tmp_path / "out") if _annotation(p) is Path else "x y"]
    return args


@pytest.mark.parametrize("path,cmd", PATH_COMMANDS, ids=[" ".join(p) for p, _ in PATH_COMMANDS])
def test_every_input_path_that_is_not_what_it_should_be_is_named(path, cmd, tmp_path,
                                                                  tiny_llama_dir):
    """Missing, empty, a file, truncated JSON, a run of another kind: exit 2, naming it."""
    cases = _hostile_inputs(tmp_path / "inputs")
    base = _base_args(cmd, tmp_path, tiny_llama_dir)
    for p in _input_params(cmd):
        for case, value in cases.items():
            # the parameter under test, and every other required path input, get the value
            args = [*path]
            args += [str(value) for q in _input_params(cmd) if q.param_type_name == "argument"
                     and (q is p or q.required)]
            args += base
            for q in _input_params(cmd):
                if q.param_type_name != "argument" and (q is p or q.required):
                    args += [_flag(q), str(value)]
            code, out = invoke(*args)
            assert code == 2, (case, args, out)
            assert "error:" in out and "Traceback" not in out, (case, args, out)
            assert str(value) in out.replace("\n", ""), (case, args, out)


def test_the_python_api_refuses_what_the_cli_refuses():
    """The configs behind the flags check the same values (the API has no typer in front)."""
    from interp.errors import ConfigError
    from interp.store import StoreConfig
    from saes.train import TrainConfig

    with pytest.raises(ConfigError, match="batch_size"):
        StoreConfig(batch_size=0)  # was a ZeroDivisionError
    for lr in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ConfigError, match="lr"):
            TrainConfig(lr=lr)  # nan was taken, and failed in torch after the data was read
