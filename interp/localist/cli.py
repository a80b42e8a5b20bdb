"""`interp localist sweep` and `interp localist schedules`: thin wrappers over `interp.localist.runs`.

Only typer is imported here; torch and the models load when a command runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from interp.cli_devices import device_option, dtype_option
from interp.cli_errors import fail

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Locality-dial models (Localist-style, clean-room; patent notice in "
                       "docs/localist.md): lambda sweeps and progressive schedules.")

_WS = typer.Option(None, envvar="INTERP_WORKSPACE", help="Workspace root.")
_OUT = typer.Option(None, help="Run directory (default: <workspace>/runs/localist/<name>).")
_BLOCKS = typer.Option("punct", help="Semantic blocks: punct (sentence/line spans) | window | "
                                     "anchor (spans starting at def/class/return/...).")
_TARGET = typer.Option("current", help="Each query's target block: current | previous.")



def _quick() -> bool:
    return os.environ.get("INTERP_QUICK", "") not in ("", "0")


def _show(run) -> None:
    table = json.loads((run.path / "table.json").read_text())
    cols = ("entropy_bits", "entropy_bound_bits", "fidelity", "fidelity_argmax", "perplexity",
            "accuracy")
    first = "lam" if "lam" in table[0] else "schedule"
    typer.echo(f"{'mode':10} {first:>22} " + " ".join(f"{c[:14]:>14}" for c in cols))
    for r in table:
        typer.echo(f"{r['mode']:10} {str(r[first]):>22} "
                   + " ".join(f"{r[c]:14.4g}" for c in cols))
    typer.echo(f"run: {run.path}")


@app.command()
def sweep(
    lambdas: str = typer.Option("0,0.2,...,1", help="Dial values, e.g. 0,0.2,...,1 ('...' "
                                                    "continues the step)."),
    out: Optional[Path] = _OUT,
    name: Optional[str] = typer.Option(None, help="Run name (default: the --out folder name)."),
    steps: int = typer.Option(400, min=0, help="Training steps per lambda."),
    layers: int = typer.Option(2, min=1, help="Transformer layers."),
    d_model: int = typer.Option(64, min=1, help="Model width."),
    heads: int = typer.Option(4, min=1, help="Attention heads."),
    context_size: int = typer.Option(128, min=2, help="Characters per window (BOS included)."),
    batch_size: int = typer.Option(16, min=1, help="Windows per step."),
    lr: float = typer.Option(3e-3, min=0, help="AdamW learning rate."),
    penalty: float = typer.Option(0.3, min=0, help="kappa: group-lasso weight at lambda = 1."),
    bias_strength: float = typer.Option(2.0, min=0,
                                        help="Bias off the target block at lambda = 1."),
    blocks: str = _BLOCKS,
    target: str = _TARGET,
    corpus: str = typer.Option("python-docs", help="Corpus (character-level)."),
    seed: int = typer.Option(0, min=0,
                             help="Seed (same seed: lambda = 0 is the unpenalised model)."),
    inference: bool = typer.Option(True, help="Also turn the lambda=0 model's dial at "
                                              "inference (no retraining)."),
    threads: int = typer.Option(1, min=1, help="Torch threads (a tiny model runs fastest on one)."),
    workspace: Optional[Path] = _WS,
    device: str = device_option("Where the models train."),
) -> None:
    """Train a small transformer from scratch per lambda; write the AILA-style table and figures.

    INTERP_QUICK=1 caps the steps at 120 and the context at 64.
    """
    import torch

    from interp.errors import InterpError
    from interp.localist.blocks import BlockSpec
    from interp.localist.runs import parse_floats, run_sweep
    from interp.localist.train import LocalistConfig

    torch.set_num_threads(max(1, threads))
    try:
        if _quick():
            steps, context_size = min(steps, 120), min(context_size, 64)
        cfg = LocalistConfig(penalty=penalty, bias_strength=bias_strength,
                             blocks=BlockSpec(kind=blocks, target=target), n_layers=layers,
                             d_model=d_model, n_heads=heads, context_size=context_size,
                             steps=steps, batch_size=batch_size, lr=lr, seed=seed, corpus=corpus,
                             device=device)
        run = run_sweep(parse_floats(lambdas), cfg, name=name, out=out, workspace=workspace,
                        inference=inference, progress=True)
    except InterpError as e:
        fail(e)
    _show(run)


@app.command()
def schedules(
    betas: str = typer.Option("1,3,5", help="Exponents of lambda_l = lam_max (l/(L-1))^beta."),
    out: Optional[Path] = _OUT,
    name: Optional[str] = typer.Option(None, help="Run name (default: the --out folder name)."),
    model: Optional[str] = typer.Option(None, help="Model name or directory (default model)."),
    lam_max: float = typer.Option(1.0, min=0, max=1, help="The last layer's dial."),
    train_layers: int = typer.Option(2, min=0,
                                     help="Fine-tune the last k blocks (0: inference only)."),
    steps: int = typer.Option(20, min=0, help="Fine-tune steps per schedule (0: inference only)."),
    batch_size: int = typer.Option(4, min=1, help="Windows per step."),
    context_size: int = typer.Option(128, min=2, help="Tokens per window."),
    lr: float = typer.Option(1e-4, min=0, help="AdamW learning rate."),
    penalty: float = typer.Option(0.3, min=0, help="kappa: group-lasso weight at lambda = 1."),
    bias_strength: float = typer.Option(2.0, min=0,
                                        help="Bias off the target block at lambda = 1."),
    blocks: str = _BLOCKS,
    target: str = _TARGET,
    corpus: str = typer.Option("python-docs", help="Corpus."),
    eval_windows: int = typer.Option(8, min=1, help="Held-out windows."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    workspace: Optional[Path] = _WS,
    device: str = device_option("Where the model runs and is fine-tuned."),
    dtype: str = dtype_option("The model's compute dtype:"),
) -> None:
    """Compare uniform and progressive per-layer dials on a pretrained model (last-layers
    fine-tune through the HookedModel hooks). INTERP_QUICK=1: 4 steps, context 64, 4 windows."""
    from interp.errors import InterpError
    from interp.localist.blocks import BlockSpec
    from interp.localist.finetune import ScheduleConfig
    from interp.localist.runs import parse_floats, run_schedules
    from interp.models.loading import DEFAULT_MODEL

    try:
        if _quick():
            steps, context_size, eval_windows = min(steps, 4), min(context_size, 64), \
                min(eval_windows, 4)
        cfg = ScheduleConfig(model=model or DEFAULT_MODEL, betas=tuple(parse_floats(betas)),
                             lam_max=lam_max, penalty=penalty, bias_strength=bias_strength,
                             blocks=BlockSpec(kind=blocks, target=target),
                             train_layers=train_layers, steps=steps, batch_size=batch_size,
                             context_size=context_size, lr=lr, corpus=corpus,
                             eval_windows=eval_windows, seed=seed, device=device, dtype=dtype)
        run = run_schedules(cfg, name=name, out=out, workspace=workspace, progress=True)
    except InterpError as e:
        fail(e)
    _show(run)
