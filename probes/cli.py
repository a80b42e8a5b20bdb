"""`interp probe`, `interp lens`, `interp geometry`: thin wrappers over `probes.runs`.

Only typer is imported here; torch and the models load when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from interp.cli_devices import device_option, dtype_option
from interp.cli_errors import fail

app = typer.Typer(add_completion=False, help="Probes, lenses and layer geometry.")

_MODEL = typer.Option(None, help="Model name or directory (default model if omitted).")
_CORPUS = typer.Option("", help="cpython | python-docs | python-stdlib | a path | hf:<dataset> "
                                "(default: the task's corpus, or python-docs).")
_TOKENS = typer.Option(4096, "--tokens", min=1,
                       help="Tokens to collect (BOS positions not counted).")
_CTX = typer.Option(128, min=2, help="Tokens per chunk, BOS included.")
_DOCS = typer.Option(None, min=1, help="Read at most this many documents.")
_CHUNKS = typer.Option(1, min=1, help="Chunks of context-size tokens kept per document.")
_BATCH = typer.Option(8, min=1, help="Chunks per forward pass.")
_SEED = typer.Option(0, min=0, help="Seed (document shuffle, splits, control task).")
_WS = typer.Option(None, envvar="INTERP_WORKSPACE", help="Workspace root.")
_OUT = typer.Option(None, help="Run directory (default: <workspace>/runs/<kind>/<name>).")
_DEVICE = device_option("Where the model runs (the analysis runs on the host).")
_DTYPE = dtype_option("The model's compute dtype:")



def _show(run) -> None:
    typer.echo(json.dumps(run.metrics, indent=2))
    typer.echo(f"run: {run.path}")


@app.command()
def probe(
    task: str = typer.Option("word_class", help="is_digit | in_string | word_class | sentiment "
                                                "| spans:<file.jsonl>"),
    layers: str = typer.Option("all", help="'all' or comma-separated: embed,0,1,..."),
    hook: str = typer.Option("", help="Probe this hook instead of the residual stream."),
    kind: str = typer.Option("logistic", help="logistic | ridge"),
    control: str = typer.Option("type", help="Control task: type | shuffle | none"),
    val_frac: float = typer.Option(0.2, min=0, max=1,
                                   help="Fraction of documents held out for validation."),
    l2: str = typer.Option("1e-4,1e-3,1e-2,1e-1,1", help="L2 values to choose from."),
    max_iter: int = typer.Option(100, min=1, help="L-BFGS iterations (logistic)."),
    model: Optional[str] = _MODEL, corpus: str = _CORPUS, tokens: int = _TOKENS,
    context_size: int = _CTX, max_docs: Optional[int] = _DOCS,
    chunks_per_doc: int = _CHUNKS, batch_size: int = _BATCH,
    seed: int = _SEED, name: str = typer.Option("", help="Run name."),
    workspace: Optional[Path] = _WS, out: Optional[Path] = _OUT,
    device: str = _DEVICE, dtype: str = _DTYPE,
) -> None:
    """Linear probes per layer for a token-labelling task, with a control task beside them."""
    from interp.errors import InterpError
    from probes.runs import ProbeConfig, probe_run

    try:
        cfg = ProbeConfig(model=model or "SmolLM2-135M-Instruct", corpus=corpus,
                          max_tokens=tokens, context_size=context_size, max_docs=max_docs,
                          chunks_per_doc=chunks_per_doc,
                          batch_size=batch_size, seed=seed, task=task, layers=layers, hook=hook,
                          kind=kind, control=control, val_frac=val_frac,
                          l2_grid=tuple(float(v) for v in l2.split(",") if v.strip()),
                          max_iter=max_iter, device=device, dtype=dtype)
        run = probe_run(cfg, workspace, name, path=out)
    except (InterpError, ValueError) as e:
        fail(e)
    _show(run)


@app.command()
def lens(
    tuned_steps: int = typer.Option(0, min=0, help="Adam steps on the KL after the least-squares "
                                            "init of the tuned lens."),
    tuned_lr: float = typer.Option(1e-3, min=0, help="Tuned-lens learning rate."),
    ridge: float = typer.Option(1e-2, min=0, help="Ridge strength of the least-squares init."),
    eval_tokens: int = typer.Option(512, min=1, help="Held-out tokens scored."),
    activations: Optional[Path] = typer.Option(None, help="Activation store with every "
                                                          "residual hook (instead of the model)."),
    val_frac: float = typer.Option(0.2, min=0, max=1, help="Fraction of documents held out."),
    example: str = typer.Option("The capital of France is Paris, and the capital of Italy is",
                                help="Text shown under the lens, position by position."),
    model: Optional[str] = _MODEL, corpus: str = _CORPUS, tokens: int = _TOKENS,
    context_size: int = _CTX, max_docs: Optional[int] = _DOCS,
    chunks_per_doc: int = _CHUNKS, batch_size: int = _BATCH,
    seed: int = _SEED, name: str = typer.Option("lens", help="Run name."),
    workspace: Optional[Path] = _WS, out: Optional[Path] = _OUT,
    device: str = _DEVICE, dtype: str = _DTYPE,
) -> None:
    """Logit lens (with and without the final norm) and tuned lens per layer."""
    from interp.errors import InterpError
    from probes.runs import LensConfig, lens_run

    try:
        cfg = LensConfig(model=model or "SmolLM2-135M-Instruct", corpus=corpus,
                         max_tokens=tokens, context_size=context_size, max_docs=max_docs,
                         chunks_per_doc=chunks_per_doc,
                         batch_size=batch_size, seed=seed, val_frac=val_frac,
                         tuned_steps=tuned_steps, tuned_lr=tuned_lr, ridge=ridge,
                         eval_tokens=eval_tokens, example=example,
                         activations=str(activations or ""), device=device, dtype=dtype)
        run = lens_run(cfg, workspace, name, path=out)
    except InterpError as e:
        fail(e)
    _show(run)


@app.command()
def geometry(
    max_points_twonn: int = typer.Option(4096, min=3, help="Points per layer for TwoNN."),
    activations: Optional[Path] = typer.Option(None, help="Activation store with every "
                                                          "residual hook (instead of the model)."),
    model: Optional[str] = _MODEL, corpus: str = _CORPUS, tokens: int = _TOKENS,
    context_size: int = _CTX, max_docs: Optional[int] = _DOCS,
    chunks_per_doc: int = _CHUNKS, batch_size: int = _BATCH,
    seed: int = _SEED, name: str = typer.Option("geometry", help="Run name."),
    workspace: Optional[Path] = _WS, out: Optional[Path] = _OUT,
    device: str = _DEVICE, dtype: str = _DTYPE,
) -> None:
    """Linearity, token nonlinearity, intrinsic dimension and anisotropy per layer."""
    from interp.errors import InterpError
    from probes.runs import GeometryConfig, geometry_run

    try:
        cfg = GeometryConfig(model=model or "SmolLM2-135M-Instruct", corpus=corpus,
                             max_tokens=tokens, context_size=context_size, max_docs=max_docs,
                             chunks_per_doc=chunks_per_doc,
                             batch_size=batch_size, seed=seed, max_points_twonn=max_points_twonn,
                             activations=str(activations or ""), device=device, dtype=dtype)
        run = geometry_run(cfg, workspace, name, path=out)
    except InterpError as e:
        fail(e)
    _show(run)
