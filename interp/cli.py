"""The `interp` command line: thin wrappers over the library functions.

Sub-commands import their modules lazily so `interp --help` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Mechanistic interpretability toolkit: hooks, activation stores and more.")


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


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
        _fail(e)
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
    tokens: int = typer.Option(65_536, "--tokens", help="Tokens to run through the model."),
    context_size: int = typer.Option(128, help="Tokens per window."),
    batch_size: int = typer.Option(16, help="Windows per forward pass."),
    shard_windows: int = typer.Option(128, help="Windows per shard (multiple of batch-size)."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    corpus: str = typer.Option("cpython", help="cpython | python-docs | python-stdlib | a path "
                                               "(.txt/.jsonl/.parquet/dir) | hf:<dataset>"),
    text_field: str = typer.Option("text", help="Text field of jsonl/parquet/HF data."),
    prepend_bos: bool = typer.Option(True, help="Start every window with BOS."),
    drop_bos: bool = typer.Option(True, help="Do not store position 0 of each window."),
    outlier_ratio: Optional[float] = typer.Option(
        10.0, help="Drop vectors with norm > ratio x median norm; 0 keeps all."),
    backend: str = typer.Option("torch", help="torch | transformer_lens | nnsight"),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
) -> None:
    """Cache activations of one or more hooks to disk (resumable: re-run the same command)."""
    from interp.data import CorpusSpec
    from interp.errors import InterpError
    from interp.caching import cache_activations, check_store
    from interp.store import StoreConfig
    from interp.workspace import run_context, run_dir

    try:
        config = StoreConfig(
            model=model or "SmolLM2-135M-Instruct",
            hooks=tuple(h.strip() for h in hooks.split(",") if h.strip()),
            n_tokens=tokens, context_size=context_size, batch_size=batch_size,
            shard_windows=shard_windows, dtype=dtype,
            corpus=CorpusSpec(source=corpus, text_field=text_field), prepend_bos=prepend_bos,
            drop_bos=drop_bos, outlier_ratio=outlier_ratio or None, backend=backend,
        )
        run_name = name or (out.name if out else "cache-" + config.hooks[0].replace(".", "-"))
        check_store(out or run_dir("activations", run_name, workspace), config)  # before run.json
        with run_context("activations", run_name, config.to_dict(), root=workspace,
                         path=out) as run:
            store = cache_activations(run.path, config)
            run.finish(metrics=summary(store), artefacts={"manifest": "manifest.json"})
    except InterpError as e:
        _fail(e)
    typer.echo(json.dumps(run.metrics, indent=2))
    typer.echo(f"store: {run.path}")


def summary(store) -> dict:
    """A few numbers that describe a store (rows, tokens, per-hook norms)."""
    out = {"rows": len(store), "windows": store.manifest["n_windows"],
           "tokens_seen": store.manifest["n_tokens_seen"], "shards": store.n_shards, "hooks": {}}
    first = store.shard(0)
    for h in store.hooks:
        x = first[h].float()
        norms = x.norm(dim=-1)
        out["hooks"][h] = {"d": store.d(h), "mean_norm": round(float(norms.mean()), 4),
                           "median_norm": round(float(norms.median()), 4),
                           "max_norm": round(float(norms.max()), 4)}
    return out


@app.command("train-sae")
def train_sae_cmd(
    out: Path = typer.Option(..., help="Run directory (resumes if it holds a checkpoint)."),
    activations: Optional[Path] = typer.Option(None, help="Activation store directory."),
    model: Optional[str] = typer.Option(None, help="Stream from this model instead of a store."),
    hook: list[str] = typer.Option(["blocks.15.hook_resid_post"], "--hook",
                                   help="Input hook; repeat it to train one dictionary per hook "
                                        "from one data pass (each in OUT/<hook>)."),
    hook_out: list[str] = typer.Option([], "--hook-out",
                                       help="Output hook: makes it a transcoder (repeat it "
                                            "to pair with each --hook)."),
    skip: bool = typer.Option(False, help="Skip-transcoder (needs --hook-out)."),
    arch: str = typer.Option("topk", help="topk | batchtopk | standard | jumprelu | gated | "
                                          "matryoshka_batchtopk | discrete"),
    width: int = typer.Option(4608, help="Number of latents (d_sae)."),
    k: int = typer.Option(32, help="Active latents per row (top-k family)."),
    l1: float = typer.Option(5.0, help="L1 coefficient (standard, gated)."),
    l0: float = typer.Option(1.0, help="L0 coefficient (jumprelu)."),
    tokens: int = typer.Option(1_000_000, help="Training tokens."),
    batch_size: int = typer.Option(4096, help="Rows per step."),
    lr: float = typer.Option(4e-3, help="Adam learning rate."),
    lr_warmup_steps: int = typer.Option(0, help="Linear LR warm-up steps."),
    lr_decay: str = typer.Option("none", help="none | linear | cosine"),
    sparsity_warmup_steps: int = typer.Option(0, help="Sparsity-coefficient warm-up steps."),
    max_grad_norm: float = typer.Option(0.0, help="Clip the gradient norm to this before each "
                                                  "Adam step (0: off; SAELens clips at 1.0)."),
    seed: int = typer.Option(0, help="Seed."),
    checkpoint_every: int = typer.Option(500, help="Steps between checkpoints."),
) -> None:
    """Train an SAE or transcoder; Ctrl-C writes a checkpoint, re-running resumes."""
    from interp.errors import InterpError
    from saes.base import SAEConfig
    from interp.errors import ConfigError
    from saes.runs import infer_d, train_many_runs, train_run
    from saes.train import TrainConfig

    try:
        if hook_out and len(hook_out) != len(hook):
            raise ConfigError(f"Got {len(hook)} --hook and {len(hook_out)} --hook-out options; "
                              "give one --hook-out per --hook (transcoders) or none (SAEs).")
        base = TrainConfig(activations=str(activations or ""), model=model or "",
                           total_tokens=tokens, batch_size=batch_size)
        cfgs = []
        for h_in, h_out in zip(hook, hook_out or [None] * len(hook)):
            sae = SAEConfig(architecture=arch, d_in=infer_d(base, h_in), d_sae=width,
                            d_out=infer_d(base, h_out) if h_out else None,
                            transcoder=bool(h_out), skip=skip, k=k, l1_coefficient=l1,
                            l0_coefficient=l0, hook_name=h_in, hook_name_out=h_out or "",
                            model_name=model or "")
            cfgs.append(TrainConfig(sae=sae, activations=base.activations, model=base.model,
                                    total_tokens=tokens, batch_size=batch_size, lr=lr,
                                    lr_warmup_steps=lr_warmup_steps, lr_decay=lr_decay,
                                    sparsity_warmup_steps=sparsity_warmup_steps, seed=seed,
                                    checkpoint_every=checkpoint_every,
                                    max_grad_norm=max_grad_norm))
        if len(cfgs) == 1:
            runs = [train_run(cfgs[0], out)]
        else:
            runs = train_many_runs(cfgs, [out / h for h in hook])
    except InterpError as e:
        _fail(e)
    for run in runs:
        if run is None:  # a non-zero rank under torchrun
            continue
        typer.echo(json.dumps(run.metrics, indent=2))
        typer.echo(f"run: {run.path}")


@app.command("eval-sae")
def eval_sae_cmd(
    run: Path = typer.Argument(..., help="An SAE run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
    activations: Optional[Path] = typer.Option(None, help="Store to evaluate on (default: the "
                                                          "run's own)."),
    windows: int = typer.Option(16, help="Held-out windows for the spliced CE/KL loss (0: skip)."),
) -> None:
    """Evaluate a trained SAE: FVU, L0, dead/dense, CE/KL loss recovered when spliced in."""
    from interp.errors import InterpError
    from interp.workspace import load_run
    from saes.formats import load_saelens
    from saes.runs import evaluate_run_sae, report_metrics

    try:
        r = load_run(run)
        store = activations or r.config.get("activations")
        if not store:
            raise InterpError(f"{run} was trained without a store; pass --activations DIR.")
        report = evaluate_run_sae(load_saelens(run / "sae"), store, run, windows)
        r.finish(metrics=report_metrics(report), artefacts={"eval": "eval.json"}, status=r.status)
    except InterpError as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        for key, v in report_metrics(report).items():
            typer.echo(f"{key}: {v:.6g}" if isinstance(v, float) else f"{key}: {v}")


@app.command()
def resume(run: Path = typer.Argument(..., help="A run directory with a checkpoint.")) -> None:
    """Continue an interrupted training run from its checkpoint."""
    from interp.errors import InterpError
    from saes.runs import resume_run

    try:
        r = resume_run(run)
    except InterpError as e:
        _fail(e)
    typer.echo(json.dumps(r.metrics, indent=2))


@app.command("app")
def app_cmd(
    workspace: Optional[Path] = typer.Argument(None, help="Workspace root (default: "
                                               "$INTERP_WORKSPACE, else ./workspace)."),
    port: int = typer.Option(8501, help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this "
                                                   "machine only)."),
    headless: bool = typer.Option(False, help="Do not open a browser tab."),
) -> None:
    """Open the Streamlit explorer (app/Home.py) on a workspace."""
    import os
    import subprocess
    import sys

    from interp.workspace import workspace_root

    home = Path(__file__).resolve().parent.parent / "app" / "Home.py"
    if not home.is_file():
        _fail(FileNotFoundError(f"{home} not found: the explorer ships with the source checkout "
                                "(pip install -e .)."))
    ws = workspace_root(workspace).expanduser().resolve()
    if not (ws / "runs").is_dir():
        typer.echo(f"note: {ws} has no runs yet (make some with `interp demo`).", err=True)
    typer.echo(f"explorer: http://{address}:{port}  (workspace {ws}; Ctrl-C stops it)")
    cmd = [sys.executable, "-m", "streamlit", "run", str(home), "--server.port", str(port),
           "--server.address", address, "--server.headless", str(headless).lower(),
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    proc = subprocess.Popen(cmd, env={**os.environ, "INTERP_WORKSPACE": str(ws)})
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = proc.wait()
    raise typer.Exit(code)


@app.command()
def demo(
    workspace: Path = typer.Option(Path("workspace"), envvar="INTERP_WORKSPACE",
                                   help="Workspace root."),
    tokens: int = typer.Option(131_072, help="Tokens to cache."),
    sae_tokens: int = typer.Option(1_048_576, help="Activation vectors to train the SAE on."),
) -> None:
    """The main job on the default model and corpus; a second run reuses finished work."""
    from interp.demo import run_demo

    run_demo(workspace, tokens=tokens, sae_tokens=sae_tokens)


from probes import cli as _probes_cli  # noqa: E402  (typer only; probe, lens, geometry)

app.add_typer(_probes_cli.app)
from circuits import cli as _circuits_cli  # noqa: E402  (typer only; transcoders, attribute)

app.add_typer(_circuits_cli.app)
from interp.localist import cli as _localist_cli  # noqa: E402  (typer only; sweep, schedules)

app.add_typer(_localist_cli.app, name="localist")
from interp.linearise import cli as _linearise_cli  # noqa: E402  (typer only; linearise)

app.add_typer(_linearise_cli.app)
from saes import analysis_cli as _saes_analysis_cli  # noqa: E402  (typer only; features, atoms)

app.add_typer(_saes_analysis_cli.app)
from saes.codebook import cli as _codebook_cli  # noqa: E402  (typer only; train, fsm, steer)

app.add_typer(_codebook_cli.app, name="codebook")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
