"""The `--device` and `--dtype` options every command that computes shares (`interp.devices`
is the policy). Checked when the command line is parsed: a device this machine does not have
exits with code 2 and the list of the devices it has, before anything loads. Only typer is
imported here (torch loads when an option is checked), so `interp --help` stays fast."""

from __future__ import annotations

import typer

DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps (auto: CUDA, then MPS, then CPU)."
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def _device_flag(value: str | None) -> str | None:
    from interp.devices import resolve_device
    from interp.errors import DeviceError

    if value is None:  # an optional --device left out
        return None
    try:
        resolve_device(value)
    except DeviceError as e:
        raise typer.BadParameter(str(e)) from None
    return value


def _dtype_flag(allow_auto: bool):
    def check(value: str) -> str:
        from interp.devices import check_dtype
        from interp.errors import DeviceError

        try:
            return check_dtype(value, allow_auto=allow_auto)
        except DeviceError as e:
            raise typer.BadParameter(str(e)) from None
    return check


def device_option(help: str = "", flag: str = "--device", default: str | None = "auto"):
    """A `--device` option (`help` says what runs there; `default=None`: optional)."""
    return typer.Option(default, flag, help=(help + " " if help else "") + DEVICE_HELP,
                        callback=_device_flag)


def dtype_option(help: str = "", flag: str = "--dtype", default: str = "float32",
                 allow_auto: bool = True, aliases: tuple[str, ...] = ()):
    """A `--dtype` option: float32 | bfloat16 | float16 (| auto: the device's native low
    precision, else float32)."""
    names = " | ".join([*DTYPE_NAMES, *(["auto"] if allow_auto else [])])
    return typer.Option(default, flag, *aliases, help=(help + " " if help else "") + names + ".",
                        callback=_dtype_flag(allow_auto))
