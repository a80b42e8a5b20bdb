"""`interp codebook train | fsm | steer`: thin wrappers over `saes.codebook.runs`.

Imports only typer at module level (the CLI registers this sub-app eagerly)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from interp.cli_devices import device_option, dtype_option
from interp.cli_errors import fail

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Codebook features: VQ bottlenecks at hooks, TokFSM, steering by codes.")



def _show(run) -> None:
    typer.echo(json.dumps(run.metrics, indent=2, default=str))
    typer.echo(f"run: {run.path}")


@app.command("train")
def train_cmd(
    hook: list[str] = typer.Option(["blocks.8.attn.hook_z"], "--hook",
                                   help="Hook to quantise (repeat): attn.hook_z gets one "
                                        "codebook per head; hook_mlp_out / hook_resid_post one."),
    model: Optional[str] = typer.Option(None, help="Model name or directory (default model)."),
    codes: int = typer.Option(512, min=1, help="Codes per codebook (paper LMs: 10000)."),
    k: int = typer.Option(8, min=1, help="Active codes per position (paper LMs: 8)."),
    objective: str = typer.Option("reconstruction", help="reconstruction (codebooks only, "
                                  "frozen model) | lm (the paper: LM loss with codebooks)."),
    train_model: bool = typer.Option(False, help="With --objective lm: fine-tune the model too."),
    layer_norm: bool = typer.Option(False, help="Snap LayerNorm(x) (the paper; needs "
                                                 "--objective lm training) instead of raw x."),
    steps: int = typer.Option(20, min=0, help="Training steps."),
    lr: float = typer.Option(1e-2, min=0, help="Learning rate."),
    batch_size: int = typer.Option(8, min=1, help="Windows per step."),
    context_size: int = typer.Option(64, min=2, help="Tokens per window."),
    corpus: str = typer.Option("cpython", help="cpython | python-docs | python-stdlib | a path "
                                               "| hf:<dataset>"),
    kmeans_windows: int = typer.Option(64, min=0, help="Windows for the k-means init (0: random)."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace root."),
    name: str = typer.Option("train", help="Run name."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    device: str = device_option("Where the model and its codebooks run."),
    dtype: str = dtype_option("The model's compute dtype:"),
) -> None:
    """Insert codebooks into a model, train them, report ΔCE and code statistics."""
    from interp.errors import InterpError
    from saes.codebook.bottleneck import CodebookConfig
    from saes.codebook.runs import TrainRunConfig, train_run
    from saes.codebook.train import CodebookTrainConfig

    try:
        cfg = TrainRunConfig(
            model=model, hooks=tuple(hook),
            codebook=CodebookConfig(n_codes=codes, k=k, layer_norm=layer_norm, seed=seed),
            train=CodebookTrainConfig(steps=steps, lr=lr, objective=objective,
                                      train_model=train_model, seed=seed,
                                      log_every=max(1, steps // 10)),
            corpus=corpus, context_size=context_size, batch_size=batch_size,
            kmeans_windows=kmeans_windows, device=device, dtype=dtype)
        run, _ = train_run(cfg, workspace, name)
    except InterpError as e:
        fail(e)
    _show(run)


@app.command("fsm")
def fsm_cmd(
    states: int = typer.Option(100, min=1, help="FSM states (paper: 100)."),
    edges: int = typer.Option(10, min=1, help="Successors per state (paper: 10)."),
    base: int = typer.Option(10, min=2, help="Digits per token alphabet (paper: 10)."),
    layers: int = typer.Option(4, min=1, help="Transformer layers (paper: 4)."),
    d_model: int = typer.Option(128, min=1, help="Hidden size (paper: 128)."),
    heads: int = typer.Option(4, min=1, help="Attention heads (paper: 4)."),
    seq_len: int = typer.Option(128, min=2, help="Tokens per sequence (paper: 128)."),
    codes: int = typer.Option(1000, min=1, help="Codes per codebook (paper: 1000)."),
    k: int = typer.Option(1, min=1, help="Active codes (paper: 1)."),
    codebooks_at: str = typer.Option("attn+mlp", help="attn+mlp | attn | mlp"),
    layer_norm: bool = typer.Option(True, help="Snap LayerNorm(x) (paper)."),
    train_model: bool = typer.Option(True, help="Train the model with its codebooks."),
    pretrain_steps: int = typer.Option(0, min=0, help="Steps without codebooks first (k-means init "
                                               "after): a CPU shortcut."),
    steps: int = typer.Option(3000, min=0, help="Steps with codebooks."),
    batch_size: int = typer.Option(64, min=1, help="Sequences per step."),
    lr: float = typer.Option(1e-3, min=0, help="AdamW learning rate (paper: 1e-3)."),
    finetune_lr: float = typer.Option(0.0, min=0, help="LR after pre-training (0: --lr)."),
    samples: int = typer.Option(100, min=1, help="Sequences sampled for transition accuracy."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace root."),
    name: str = typer.Option("tokfsm", help="Run name."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    device: str = device_option("Where the model trains."),
) -> None:
    """Train a TokFSM transformer with codebooks; transition accuracy, purity, patching."""
    from interp.errors import InterpError
    from saes.codebook.fsm_model import FSMConfig
    from saes.codebook.runs import fsm_run

    try:
        cfg = FSMConfig(n_states=states, n_edges=edges, base=base, n_layers=layers,
                        d_model=d_model, n_heads=heads, d_mlp=4 * d_model, seq_len=seq_len,
                        n_codes=codes, k=k, codebooks_at=codebooks_at, layer_norm=layer_norm,
                        train_model=train_model, pretrain_steps=pretrain_steps, steps=steps,
                        batch_size=batch_size, lr=lr, finetune_lr=finetune_lr,
                        warmup_steps=min(100, max(steps, pretrain_steps) // 10), seed=seed,
                        device=device)
        run, _ = fsm_run(cfg, workspace, name, n_samples=samples)
    except InterpError as e:
        fail(e)
    _show(run)


@app.command("steer")
def steer_cmd(
    run: Optional[Path] = typer.Argument(None, help="A codebook train run directory; without "
                                         "it, fit a residual codebook on the model first."),
    pattern: str = typer.Option(r"\bobjects?\b", help="Topic regex (case-insensitive)."),
    code: list[str] = typer.Option([], "--code", help="HOOK:GROUP:CODE to activate (repeat; "
                                   "with RUN); default: the best codes found for --pattern."),
    prompt: list[str] = typer.Option([], "--prompt", help="Prompt (repeat; '' = BOS); default "
                                     "'The' with RUN, else 'The', 'Once upon a time,', "
                                     "'I think that'."),
    samples: int = typer.Option(16, min=1, help="Continuations per prompt."),
    tokens: int = typer.Option(20, min=1, help="New tokens per continuation."),
    top_codes: int = typer.Option(1, min=1, help="Codes to activate (the best by code search)."),
    slots: int = typer.Option(1, min=1, help="Slots of the k each code takes (1: the paper)."),
    model: Optional[str] = typer.Option(None, help="Without RUN: model name or directory "
                                                   "(default model)."),
    hook: str = typer.Option("blocks.12.hook_resid_post", help="Without RUN: the hook whose "
                             "activations get the codebook."),
    codes: int = typer.Option(4096, min=1, help="Without RUN: codes in the codebook."),
    k: int = typer.Option(8, min=1, help="Without RUN: active codes per position."),
    windows: int = typer.Option(512, min=1,
                                help="Without RUN: corpus windows (64 tokens) to fit the "
                                          "codes and search them."),
    corpus: str = typer.Option("cpython", help="Without RUN: corpus of the windows."),
    workspace: Optional[Path] = typer.Option(None, help="Workspace root."),
    name: str = typer.Option("steer", help="Run name."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    device: str = device_option("Where the model runs."),
    dtype: str = dtype_option("The model's compute dtype:"),
) -> None:
    """Activate codes during generation; share of continuations matching the pattern.

    Without RUN (the default-model example): one codebook at a middle layer's residual stream
    of the frozen model, fitted by k-means, the topic's codes found by code search."""
    from interp.errors import InterpError
    from saes.codebook.runs import steer_run

    try:
        if run is None:
            from saes.codebook.topic import DEFAULT_PROMPTS, TopicSteerConfig, topic_steer_run

            if code:
                raise InterpError("--code needs a RUN (codes of its codebooks); without RUN the "
                                  "codes are found by searching --pattern.")
            cfg = TopicSteerConfig(model=model, hook=hook, n_codes=codes, k=k, corpus=corpus,
                                   windows=windows, pattern=pattern,
                                   prompts=tuple(prompt) or DEFAULT_PROMPTS, n=samples,
                                   max_new_tokens=tokens, top_codes=top_codes, slots=slots,
                                   seed=seed, device=device, dtype=dtype)
            r, res = topic_steer_run(cfg, workspace, name)
            typer.echo(f"ΔCE with the codebook {r.metrics['delta_ce']:+.3f} nats; model alone "
                       f"{res['model_share']:.2f}")
        else:
            refs = None
            if code:
                refs = []
                for c in code:
                    parts = c.rsplit(":", 2)
                    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
                        raise InterpError(f"--code {c!r} is not HOOK:GROUP:CODE, e.g. "
                                          "blocks.8.attn.hook_z:3:17.")
                    refs.append((parts[0], int(parts[1]), int(parts[2])))
            r, res = steer_run(run, pattern, tuple(prompt) or ("The",), refs, workspace, name,
                               n=samples, max_new_tokens=tokens, seed=seed, top_codes=top_codes,
                               slots=slots, device=device, dtype=dtype)
    except InterpError as e:
        fail(e)
    typer.echo(f"baseline share {res['baseline_share']:.2f} -> steered {res['steered_share']:.2f}"
               f" (codes {res['codes']})")
    typer.echo(f"run: {r.path}")
