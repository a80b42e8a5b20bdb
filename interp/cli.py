"""The `interp` command line: thin wrappers over the library functions.

This module holds the ground floor's own commands (models, cache, app, demo); the other
packages' sub-commands are added from the table in `interp.commands` (import strings), so
`interp` imports nothing built on it. Sub-commands import their heavy modules lazily so
`interp --help` stays fast.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Optional

import typer

from interp.cli_devices import device_option, dtype_option
from interp.cli_errors import ErrorExitGroup, fail, user_errors

app = typer.Typer(cls=ErrorExitGroup, add_completion=False, no_args_is_help=True,
                  help="Mechanistic interpretability toolkit: hooks, activation stores and more.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def models(
    model: Optional[str] = typer.Option(None, help="Model name or directory (default model if "
                                                    "omitted)."),
    backend: str = typer.Option("torch", help="torch | transformer_lens | nnsight"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    families: bool = typer.Option(False, "--families", help="Print the model family x "
                                                            "capability table instead."),
) -> None:
    """Show a model's facts and its canonical hook names (the default model if none given)."""
    from interp.errors import InterpError
    from interp.models.loading import DEFAULT_MODEL, load_model

    if families:
        from interp.models.families import capability_table, table_markdown

        rows = capability_table()
        typer.echo(json.dumps(rows) if as_json else table_markdown(rows))
        return
    try:
        m = load_model(model, backend=backend)
    except InterpError as e:
        fail(e)
    names = m.hook_names()
    if as_json:
        typer.echo(json.dumps({"model": m.name, "default_model": DEFAULT_MODEL,
                               "backend": backend, "facts": m.cfg.to_dict(), "hooks": names}))
        return
    typer.echo(f"default model: {DEFAULT_MODEL}")
    typer.echo(f"model: {m.name} (backend {backend})")
    for k, v in m.cfg.to_dict().items():
        typer.echo(f"  {k}: {v}")
    typer.echo(f"hooks ({len(names)}; layers counted from 0):")
    per_block = [n.split(".", 2)[2] for n in names if n.startswith("blocks.0.")]
    others = [n for n in names if not n.startswith("blocks.")]
    typer.echo("  " + ", ".join(others))
    typer.echo(f"  blocks.{{0..{m.cfg.n_layers - 1}}}." + "{" + ", ".join(per_block) + "}")


@app.command()
def cache(
    out: Optional[Path] = typer.Option(None, help="Store directory (default: "
                                                  "<workspace>/runs/activations/<name>)."),
    name: Optional[str] = typer.Option(None, help="Run name in the workspace."),
    model: Optional[str] = typer.Option(None, help="Model name or directory (default model)."),
    hooks: str = typer.Option("blocks.15.hook_resid_post", help="Comma-separated hook names."),
    tokens: int = typer.Option(65_536, "--tokens", min=1, help="Tokens to run through the model."),
    context_size: int = typer.Option(128, min=2, help="Tokens per window."),
    batch_size: int = typer.Option(16, min=1, help="Windows per forward pass."),
    shard_windows: int = typer.Option(128, min=1,
                                      help="Windows per shard (multiple of batch-size)."),
    dtype: str = typer.Option("float32", help="Stored dtype: float32 | bfloat16 | float16"),
    device: str = device_option("Where the model runs."),
    model_dtype: str = dtype_option("The model's compute dtype:", flag="--model-dtype"),
    corpus: str = typer.Option("cpython", help="cpython | python-docs | python-stdlib | a path "
                                               "(.txt/.jsonl/.parquet/dir) | hf:<dataset>"),
    text_field: str = typer.Option("text", help="Text field of jsonl/parquet/HF data."),
    prepend_bos: bool = typer.Option(True, help="Start every window with BOS."),
    drop_bos: bool = typer.Option(True, help="Do not store position 0 of each window."),
    outlier_ratio: Optional[float] = typer.Option(
        10.0, min=0, help="Drop vectors with norm > ratio x median norm; 0 keeps all."),
    backend: str = typer.Option("torch", help="torch | transformer_lens | nnsight"),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
) -> None:
    """Cache activations of one or more hooks to disk (resumable: re-run the same command)."""
    from interp.caching import cache_run
    from interp.data import CorpusSpec
    from interp.store import StoreConfig

    with user_errors():
        config = StoreConfig(
            model=model or "SmolLM2-135M-Instruct",
            hooks=tuple(h.strip() for h in hooks.split(",") if h.strip()),
            n_tokens=tokens, context_size=context_size, batch_size=batch_size,
            shard_windows=shard_windows, dtype=dtype,
            corpus=CorpusSpec(source=corpus, text_field=text_field), prepend_bos=prepend_bos,
            drop_bos=drop_bos, outlier_ratio=outlier_ratio or None, backend=backend,
            device=device, model_dtype=model_dtype,
        )
        run = cache_run(config, name, out, workspace)
    typer.echo(json.dumps(run.metrics, indent=2))
    typer.echo(f"store: {run.path}")


@app.command("app")
def app_cmd(
    workspace: Optional[Path] = typer.Argument(None, help="Workspace root (default: "
                                               "$INTERP_WORKSPACE, else ./workspace)."),
    port: int = typer.Option(8501, min=1, max=65535, help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this "
                                                   "machine only)."),
    headless: bool = typer.Option(False, help="Do not open a browser tab."),
) -> None:
    """Open the Streamlit explorer (app/explorer.py) on a workspace."""
    import os
    import subprocess
    import sys

    from interp.workspace import workspace_root

    home = Path(__file__).resolve().parent.parent / "app" / "explorer.py"
    if not home.is_file():
        fail(FileNotFoundError(f"{home} not found: the explorer ships with the source checkout "
                                "(pip install -e .)."))
    ws = workspace_root(workspace).expanduser().resolve()
    if not (ws / "runs").is_dir():
        typer.echo(f"note: {ws} has no runs yet (make some with `interp demo`).", err=True)
    typer.echo(f"explorer: http://{address}:{port}  (workspace {ws}; Ctrl-C stops it)")
    cmd = [sys.executable, "-m", "streamlit", "run", str(home), "--server.port", str(port),
           "--server.address", address, "--server.headless", str(headless).lower(),
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    path = os.pathsep.join(filter(None, [str(home.parent.parent), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, env={**os.environ, "INTERP_WORKSPACE": str(ws),
                                      "PYTHONPATH": path})  # `app` imports from the checkout
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = proc.wait()
    raise typer.Exit(code)


@app.command()
def demo(
    workspace: Path = typer.Option(Path("workspace"), envvar="INTERP_WORKSPACE",
                                   help="Workspace root."),
    tokens: int = typer.Option(131_072, min=1, help="Tokens to cache."),
    sae_tokens: int = typer.Option(1_048_576, min=1,
                                   help="Activation vectors to train the SAE on."),
    device: str = device_option("Where the steps compute (those that take a device)."),
) -> None:
    """The main job on the default model and corpus; a second run reuses finished work."""
    from interp.demo import run_demo

    run_demo(workspace, tokens=tokens, sae_tokens=sae_tokens, device=device)


def _compose(root: typer.Typer) -> None:
    """Add every sub-command group listed in `interp.commands.SUBCOMMANDS`."""
    from interp.commands import SUBCOMMANDS

    for module, group in SUBCOMMANDS:
        root.add_typer(importlib.import_module(module).app, name=group)


_compose(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
