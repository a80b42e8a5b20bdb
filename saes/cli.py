"""The SAE sub-commands: `interp train-sae`, `train-clt` (cross-layer transcoders), `eval-sae`,
`resume` (saes.runs), `features` (saes.features.runs) and `atoms` (saes.atoms.runs);
`eval-sae --suite` runs the evaluation suites of `saes.evals`.

Only typer is imported here; torch and the models load when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from interp.cli_devices import device_option, dtype_option
from interp.cli_errors import fail, user_errors

app = typer.Typer(add_completion=False, help="Sparse dictionaries: training, evaluation, "
                                             "feature statistics, atoms.")


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
    width: int = typer.Option(4608, min=1, help="Number of latents (d_sae)."),
    k: Optional[int] = typer.Option(None, min=1, help="Active latents per row (top-k family; "
                                                      "default 32)."),
    l1: Optional[float] = typer.Option(None, min=0, help="L1 coefficient (standard, gated; "
                                                         "default 5)."),
    l0: Optional[float] = typer.Option(None, min=0, help="L0 coefficient (jumprelu; default 1)."),
    tokens: int = typer.Option(1_000_000, min=1, help="Training tokens."),
    batch_size: int = typer.Option(4096, min=1, help="Rows per step."),
    lr: float = typer.Option(4e-3, min=0, help="Adam learning rate."),
    lr_warmup_steps: int = typer.Option(0, min=0, help="Linear LR warm-up steps."),
    lr_decay: str = typer.Option("none", help="none | linear | cosine"),
    sparsity_warmup_steps: int = typer.Option(0, min=0, help="Sparsity-coefficient warm-up steps."),
    max_grad_norm: float = typer.Option(0.0, min=0,
                                        help="Clip the gradient norm to this before each "
                                                  "Adam step (0: off; SAELens clips at 1.0)."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    checkpoint_every: int = typer.Option(500, min=0, help="Steps between checkpoints."),
    device: str = device_option("Where the dictionary trains."),
    autocast: str = dtype_option("The step's compute dtype (master weights and Adam stay "
                                 "float32; float16 adds loss scaling):", flag="--dtype",
                                 aliases=("--autocast",)),
    model_device: str = device_option("Where a streamed model (--model) runs.",
                                      flag="--model-device"),
    model_dtype: str = dtype_option("A streamed model's compute dtype:", flag="--model-dtype"),
    prefetch: Optional[int] = typer.Option(None, min=0, help="Batches read ahead by a background "
                                                             "thread (default: 2 on a GPU, else 0)."),
) -> None:
    """Train an SAE or transcoder; Ctrl-C writes a checkpoint, re-running resumes."""
    import torch

    from interp.devices import resolve_device, resolve_dtype
    from interp.errors import ConfigError
    from saes.architectures import check_options
    from saes.base import SAEConfig
    from saes.data import DataConfig
    from saes.memory import estimate_training
    from saes.runs import train_many_runs, train_run
    from saes.train import TrainConfig

    with user_errors():
        if hook_out and len(hook_out) != len(hook):
            raise ConfigError(f"Got {len(hook)} --hook and {len(hook_out)} --hook-out options; "
                              "give one --hook-out per --hook (transcoders) or none (SAEs).")
        data = DataConfig(activations=str(activations or ""), model=model or "", seed=seed,
                          model_device=model_device, model_dtype=model_dtype, prefetch=prefetch)
        source = data.source()
        own = {name: v for name, v in (("k", k), ("l1_coefficient", l1), ("l0_coefficient", l0))
               if v is not None}  # only what was given: another architecture's flag is an error
        cfgs = []
        for h_in, h_out in zip(hook, hook_out or [None] * len(hook)):
            sae = SAEConfig(architecture=arch, d_in=source.width(h_in), d_sae=width,
                            d_out=source.width(h_out) if h_out else None,
                            transcoder=bool(h_out), skip=skip, hook_name=h_in,
                            hook_name_out=h_out or "", model_name=model or "", **own)
            check_options(sae)
            cfgs.append(TrainConfig(sae=sae, total_tokens=tokens, batch_size=batch_size, lr=lr,
                                    lr_warmup_steps=lr_warmup_steps, lr_decay=lr_decay,
                                    sparsity_warmup_steps=sparsity_warmup_steps, seed=seed,
                                    checkpoint_every=checkpoint_every,
                                    max_grad_norm=max_grad_norm, device=device,
                                    autocast=autocast))
        for cfg in cfgs:  # before a long run: what it will hold, where, and whether it fits
            lowp = resolve_dtype(cfg.autocast, resolve_device(device))
            est = estimate_training(cfg, source, resolve_device(device), resident=("model",),
                                    lowp=None if lowp == torch.float32 else lowp)
            typer.echo(est.check().describe(), err=True)  # (the error says it too)
        if len(cfgs) == 1:
            runs = [train_run(cfgs[0], data, out, source=source)]
        else:
            runs = train_many_runs(cfgs, data, [out / h for h in hook], source=source)
    for run in runs:
        if run is None:  # a non-zero rank under torchrun
            continue
        typer.echo(json.dumps(run.metrics, indent=2))
        typer.echo(f"run: {run.path}")


@app.command("train-clt")
def train_clt_cmd(
    out: Path = typer.Option(..., help="Run directory (resumes if it holds a checkpoint)."),
    layers: str = typer.Option(..., help="Contiguous layers with an encoder, e.g. 0-3 (each "
                                         "writes to its own and every later MLP output)."),
    activations: Optional[Path] = typer.Option(None, help="Activation store holding every "
                                                          "layer's input and output hook."),
    model: Optional[str] = typer.Option(None, help="Stream from this model instead of a store."),
    input_hook: str = typer.Option("blocks.{layer}.ln2.hook_normalized",
                                   help="Input hook template ({layer} is filled in)."),
    output_hook: str = typer.Option("blocks.{layer}.hook_mlp_out",
                                    help="Output hook template."),
    activation: str = typer.Option("topk", help="topk | batchtopk | jumprelu"),
    width: int = typer.Option(1024, min=1, help="Latents per layer."),
    k: Optional[int] = typer.Option(None, min=1, help="Active latents per layer and row "
                                                      "(topk, batchtopk; default 32)."),
    l0: Optional[float] = typer.Option(None, min=0, help="L0 coefficient (jumprelu)."),
    tokens: int = typer.Option(1_000_000, min=1, help="Training tokens."),
    batch_size: int = typer.Option(4096, min=1, help="Rows per step."),
    lr: float = typer.Option(4e-3, min=0, help="Adam learning rate."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    checkpoint_every: int = typer.Option(500, min=0, help="Steps between checkpoints."),
    device: str = device_option("Where the CLT trains."),
    autocast: str = dtype_option("The step's compute dtype:", flag="--dtype",
                                 aliases=("--autocast",)),
    model_device: str = device_option("Where a streamed model (--model) runs.",
                                      flag="--model-device"),
    model_dtype: str = dtype_option("A streamed model's compute dtype:", flag="--model-dtype"),
) -> None:
    """Train a cross-layer transcoder (saved in circuit-tracer's CLT layout under OUT/sae);
    Ctrl-C writes a checkpoint, re-running resumes."""
    from interp.errors import ConfigError
    from saes.architectures import check_options
    from saes.base import SAEConfig
    from saes.data import DataConfig
    from saes.runs import train_run
    from saes.train import TrainConfig

    with user_errors():
        data = DataConfig(activations=str(activations or ""), model=model or "", seed=seed,
                          model_device=model_device, model_dtype=model_dtype)
        source = data.source()  # (a bad store path is named before anything else)
        try:
            if "-" in layers:
                a, b = layers.split("-", 1)
                ids = tuple(range(int(a), int(b) + 1))
            else:
                ids = tuple(int(x) for x in layers.split(",") if x.strip())
        except ValueError:
            raise ConfigError(f"Cannot read --layers {layers!r}: use e.g. 0-3.") from None
        own = {name: v for name, v in (("k", k), ("l0_coefficient", l0)) if v is not None}
        first = ids[0] if ids else 0
        sae = SAEConfig(architecture="clt", d_in=source.width(input_hook.format(layer=first)),
                        d_out=source.width(output_hook.format(layer=first)),
                        d_sae=width * len(ids), transcoder=True, clt_layers=ids,
                        clt_activation=activation, hook_name=input_hook,
                        hook_name_out=output_hook, model_name=model or "", **own)
        check_options(sae)
        cfg = TrainConfig(sae=sae, total_tokens=tokens, batch_size=batch_size, lr=lr, seed=seed,
                          checkpoint_every=checkpoint_every, device=device, autocast=autocast)
        run = train_run(cfg, data, out, source=source, evaluate=False)
    if run is not None:
        typer.echo(json.dumps(run.metrics, indent=2))
        typer.echo(f"run: {run.path}")


@app.command("eval-sae")
def eval_sae_cmd(
    run: Path = typer.Argument(..., help="An SAE run directory (with --suite, also a SAELens "
                                         "directory)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
    activations: Optional[Path] = typer.Option(None, help="Store to evaluate on (default: the "
                                                          "run's own)."),
    windows: int = typer.Option(16, min=0,
                                help="Held-out windows for the spliced CE/KL loss (0: skip)."),
    device: str = device_option("Where the SAE and the model run."),
    dtype: str = dtype_option("The model's compute dtype:"),
    suite: str = typer.Option("", help="SAEBench-style suites instead, comma-separated: core, "
                              "probing, absorption, synthetic, autointerp, scr, tpp (saes.evals); "
                              "writes RUN/evals/report.json, Parquet tables and figures."),
    out: Optional[Path] = typer.Option(None, help="--suite: report directory (default "
                                                  "RUN/evals)."),
    seeds: int = typer.Option(1, min=1, help="--suite: training seeds (> 1 retrains the run "
                                             "with seeds 1 .. N-1 and reports the spread)."),
    n_bootstrap: int = typer.Option(1000, min=1, help="--suite: bootstrap resamples."),
    baselines: str = typer.Option("random,neurons,pca", help="--suite: baselines beside the "
                                  "SAE, comma-separated ('' none)."),
    explainer: str = typer.Option("", help="--suite autointerp: a local HF causal LM directory "
                                  "('' = the default model, an offline placeholder)."),
    settings: list[str] = typer.Option([], "--set", help="--suite: any other setting KEY=VALUE "
                                       "(a field of saes.evals.SuiteConfig, e.g. n_windows=128); "
                                       "repeatable."),
    progress: bool = typer.Option(True, help="--suite: progress bars."),
) -> None:
    """Evaluate a trained SAE: FVU, L0, dead/dense, CE/KL loss recovered when spliced in; with
    --suite, the evaluation suites with bootstrap intervals and baselines."""
    from interp.errors import InterpError

    if suite:
        with user_errors():
            _eval_suite(run, suite, out, progress, as_json, seeds=seeds, n_bootstrap=n_bootstrap,
                        baselines=baselines, explainer=explainer, device=device,
                        settings=settings)
        return
    from interp.workspace import load_run_of_kind
    from saes.formats import load_saelens
    from saes.runs import evaluate_run_sae, report_metrics, store_of

    try:
        r = load_run_of_kind(run, "sae", "`interp eval-sae`")
        store = activations or store_of(r)
        if not store:
            raise InterpError(f"{run} was trained without a store; pass --activations DIR.")
        report = evaluate_run_sae(load_saelens(run / "sae"), store, run, windows, device=device,
                                  dtype=dtype)
        r.finish(metrics=report_metrics(report), artefacts={"eval": "eval.json"}, status=r.status)
    except InterpError as e:
        fail(e)
    if as_json:
        typer.echo(json.dumps(report))
    else:
        for key, v in report_metrics(report).items():
            typer.echo(f"{key}: {v:.6g}" if isinstance(v, float) else f"{key}: {v}")


def _eval_suite(run: Path, suite: str, out: Path | None, progress: bool, as_json: bool,
                settings: list[str], device: str, **fields) -> None:
    """`eval-sae --suite`: run `saes.evals.run_suite` and print one line per figure."""
    from saes.evals import SuiteConfig, run_suite

    given = SuiteConfig.settings_from_strings(settings)
    # the suite's default device is the CPU; --device moves it (auto: the best one here)
    report = run_suite(run, suites=tuple(s.strip() for s in suite.split(",") if s.strip()),
                       out=out, progress=progress, **{**fields, "device": device, **given})
    if as_json:
        typer.echo(json.dumps(report))
        return
    for r in report["rows"]:
        ci = (f" [{r['ci_low']:.4g}, {r['ci_high']:.4g}]" if r.get("ci_low") is not None
              else "")
        value = "n/a" if r["value"] is None else f"{r['value']:.4g}"
        typer.echo(f"{r['suite']:<10} {r['metric']:<26} {r['subject']:<8} {value}{ci}")
    for w in report["warnings"]:
        typer.echo(f"warning: {w}")
    typer.echo(f"report: {Path(out or Path(run) / 'evals') / 'report.json'}")


@app.command()
def resume(run: Path = typer.Argument(..., help="A run directory with a checkpoint."),
           device: Optional[str] = device_option("Move the run to this device (default: the "
                                                 "run's own).", default=None)) -> None:
    """Continue an interrupted training run from its checkpoint (on any device)."""
    from interp.errors import InterpError
    from saes.runs import resume_run

    try:
        r = resume_run(run, device=device)
    except InterpError as e:
        fail(e)
    typer.echo(json.dumps(r.metrics, indent=2))


@app.command()
def features(
    run: Path = typer.Argument(..., help="An SAE run directory (or a SAELens directory)."),
    tokens: int = typer.Option(65_536, "--tokens", min=1, help="Tokens to read (whole windows)."),
    name: Optional[str] = typer.Option(None, help="Run name (default: the SAE run's name)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: "
                                                  "<workspace>/runs/features/<name>)."),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
    source: str = typer.Option("auto", help="auto | store | model: read the SAE's activation "
                                            "store, or run the model over the corpus."),
    top_n: int = typer.Option(20, min=1, help="Top activating contexts kept per latent."),
    context_left: int = typer.Option(15, min=0, help="Context tokens before the activating token."),
    context_right: int = typer.Option(4, min=0, help="Context tokens after it."),
    batch_windows: int = typer.Option(16, min=1, help="Windows encoded at once (bounds memory)."),
    logit_k: int = typer.Option(10, min=0, help="Top/bottom tokens of each logit effect."),
    device: str = device_option("Where the SAE and the model run."),
    dtype: str = dtype_option("The model's compute dtype:"),
) -> None:
    """Feature statistics of a trained SAE/transcoder: density, mean/max, histogram/quantiles,
    top contexts with per-token activations and logit effects, as Parquet tables."""
    from interp.errors import InterpError
    from saes.features.runs import features_run
    from saes.features.stats import FeatureStatsConfig

    try:
        cfg = FeatureStatsConfig(n_tokens=tokens, top_n=top_n, context_left=context_left,
                                 context_right=context_right, batch_windows=batch_windows,
                                 logit_k=logit_k, source=source, device=device, dtype=dtype)
        r = features_run(run, tokens, name=name, workspace=workspace, out=out, cfg=cfg)
    except InterpError as e:
        fail(e)
    typer.echo(json.dumps(r.metrics, indent=2))
    typer.echo(f"run: {r.path}")
    typer.echo(f"query: from saes.features import FeatureIndex; FeatureIndex({str(r.path)!r})"
               ".page(0)")


@app.command()
def atoms(
    out: Optional[Path] = typer.Option(None, help="Run directory (default: "
                                                  "<workspace>/runs/atoms/<name>)."),
    name: str = typer.Option("atoms", help="Run name in the workspace."),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
    model: Optional[str] = typer.Option(None, help="Model name or directory (default model)."),
    hook: str = typer.Option("blocks.5.hook_resid_post,blocks.15.hook_resid_post,"
                             "blocks.25.hook_resid_post", "--hook",
                             help="Comma-separated hooks (one comparison per hook)."),
    sae: list[Path] = typer.Option([], "--sae", help="SAE run used as the 'features' of its "
                                                     "hook (repeatable); others are trained."),
    tokens: int = typer.Option(32_768, "--tokens", min=1, help="Tokens run through the model."),
    corpus: str = typer.Option("cpython", help="cpython | python-docs | a path | hf:<dataset>"),
    center: bool = typer.Option(False, help="Estimate S~ from the covariance, not E[kk^T]."),
    ridge: float = typer.Option(1e-4, min=0, help="Ridge, times tr(Sigma)/H."),
    width_mult: int = typer.Option(4, min=1, help="Dictionary size |D| = width-mult x H."),
    feature_k: int = typer.Option(32, min=1, help="k of the ordinary top-k feature SAE."),
    l0_coefficient: float = typer.Option(1.0, min=0, help="L0 penalty of the atoms' JumpReLU SAE."),
    train_tokens: int = typer.Option(262_144, min=1, help="Rows seen by each trained SAE."),
    batch_size: int = typer.Option(1024, min=1, help="Training batch size."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
    device: str = device_option("Where the model runs and the SAEs train."),
    dtype: str = dtype_option("The model's compute dtype:"),
) -> None:
    """Neurons vs features vs atoms (Hu et al. 2025): AIP, coherence, q*, R^2 per hook."""
    from interp.errors import InterpError
    from saes.atoms.compare import AtomsConfig
    from saes.atoms.runs import atoms_run, format_table

    try:
        cfg = AtomsConfig(model=model or "", hooks=tuple(h for h in hook.split(",") if h),
                          n_tokens=tokens, corpus=corpus, center=center, ridge=ridge,
                          width_mult=width_mult, feature_k=feature_k,
                          atoms_l0_coefficient=l0_coefficient, train_tokens=train_tokens,
                          batch_size=batch_size, seed=seed,
                          sae_runs=tuple(str(p) for p in sae), device=device, dtype=dtype)
        r = atoms_run(cfg, name, workspace=workspace, out=out)
    except InterpError as e:
        fail(e)
    table = json.loads((r.path / "table.json").read_text())
    typer.echo(json.dumps(table, indent=2) if as_json else format_table(table))
    typer.echo(f"ordering atoms > features > neurons on q* (quantile form): "
               f"{r.metrics['ordering_holds']}")
    typer.echo(f"run: {r.path}")
