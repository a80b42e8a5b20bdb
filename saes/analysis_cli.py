"""`interp features` and `interp atoms`: thin wrappers over `saes.features.runs` and
`saes.atoms.runs`.

Only typer is imported here; torch and the models load when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, help="Feature statistics and the atoms analysis.")


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def features(
    run: Path = typer.Argument(..., help="An SAE run directory (or a SAELens directory)."),
    tokens: int = typer.Option(65_536, "--tokens", help="Tokens to read (whole windows)."),
    name: Optional[str] = typer.Option(None, help="Run name (default: the SAE run's name)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: "
                                                  "<workspace>/runs/features/<name>)."),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
    source: str = typer.Option("auto", help="auto | store | model: read the SAE's activation "
                                            "store, or run the model over the corpus."),
    top_n: int = typer.Option(20, help="Top activating contexts kept per latent."),
    context_left: int = typer.Option(15, help="Context tokens before the activating token."),
    context_right: int = typer.Option(4, help="Context tokens after it."),
    batch_windows: int = typer.Option(16, help="Windows encoded at once (bounds memory)."),
    logit_k: int = typer.Option(10, help="Top/bottom tokens of each logit effect."),
) -> None:
    """Feature statistics of a trained SAE/transcoder: density, mean/max, histogram/quantiles,
    top contexts with per-token activations and logit effects, as Parquet tables."""
    from interp.errors import InterpError
    from saes.features.runs import features_run
    from saes.features.stats import FeatureStatsConfig

    try:
        cfg = FeatureStatsConfig(n_tokens=tokens, top_n=top_n, context_left=context_left,
                                 context_right=context_right, batch_windows=batch_windows,
                                 logit_k=logit_k, source=source)
        r = features_run(run, tokens, name=name, workspace=workspace, out=out, cfg=cfg)
    except InterpError as e:
        _fail(e)
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
    tokens: int = typer.Option(32_768, "--tokens", help="Tokens run through the model."),
    corpus: str = typer.Option("cpython", help="cpython | python-docs | a path | hf:<dataset>"),
    center: bool = typer.Option(False, help="Estimate S~ from the covariance, not E[kk^T]."),
    ridge: float = typer.Option(1e-4, help="Ridge, times tr(Sigma)/H."),
    width_mult: int = typer.Option(4, help="Dictionary size |D| = width-mult x H."),
    feature_k: int = typer.Option(32, help="k of the ordinary top-k feature SAE."),
    l0_coefficient: float = typer.Option(1.0, help="L0 penalty of the atoms' JumpReLU SAE."),
    train_tokens: int = typer.Option(262_144, help="Rows seen by each trained SAE."),
    batch_size: int = typer.Option(1024, help="Training batch size."),
    seed: int = typer.Option(0, help="Seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
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
                          sae_runs=tuple(str(p) for p in sae))
        r = atoms_run(cfg, name, workspace=workspace, out=out)
    except InterpError as e:
        _fail(e)
    table = json.loads((r.path / "table.json").read_text())
    typer.echo(json.dumps(table, indent=2) if as_json else format_table(table))
    typer.echo(f"ordering atoms > features > neurons on q* (quantile form): "
               f"{r.metrics['ordering_holds']}")
    typer.echo(f"run: {r.path}")
