"""The one error exit of every `interp` sub-command: a user's mistake (an `InterpError`: a bad
flag, file or name; or a flag typer itself cannot parse) prints `error: ...` on stderr and exits
with code 2, never a traceback."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from typer.core import TyperGroup

from interp.errors import InterpError


def fail(e: Exception) -> None:
    """Print `error: <e>` on stderr and exit with code 2."""
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """`with user_errors(): ...` turns an `InterpError` raised inside into `fail(e)`."""
    try:
        yield
    except InterpError as e:
        fail(e)


# typer >= 0.20 vendors click (its exceptions live under typer, not click): find the classes
# from what typer exports, so this works with either.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _finite(callback):
    """A parameter callback that refuses nan and inf before calling `callback` (click's float
    type takes them, and a learning rate of nan trains a dictionary of nans without a word)."""

    def check(ctx, param, value):
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise typer.BadParameter(f"{v!r} is not a finite number.", ctx=ctx, param=param)
        return callback(ctx, param, value) if callback is not None else value

    check.finite_checked = True
    return check


def _harden(cmd) -> None:
    """Give every parameter of `cmd` and its sub-commands the finite-number check."""
    for p in cmd.params:
        if not getattr(p.callback, "finite_checked", False):
            p.callback = _finite(p.callback)
    for sub in (getattr(cmd, "commands", None) or {}).values():
        _harden(sub)


class ErrorExitGroup(TyperGroup):
    """The root command group: no number flag takes nan or inf, and a flag typer cannot parse
    (unknown, missing, of the wrong type or out of its range) is reported as `error: ...` with
    exit code 2, like every other user mistake."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _harden(self)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _CLICK_ERROR as e:
            msg = e.format_message()
            if not msg.strip():  # `interp codebook` alone: the help was shown already
                sys.exit(e.exit_code)
            ctx = getattr(e, "ctx", None)
            hint = (f"\nTry '{ctx.command_path} --help' for help."
                    if isinstance(e, _USAGE_ERROR) and ctx is not None else "")
            typer.secho(f"error: {msg}{hint}", fg=typer.colors.RED, err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
