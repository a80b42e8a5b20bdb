"""The one error exit of every `interp` sub-command: a user's mistake (an `InterpError`: a bad
flag, file or name) prints `error: ...` on stderr and exits with code 2, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

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
