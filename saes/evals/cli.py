"""`eval-suite`: the evaluation suite from the command line (a typer app; the flags are the
fields of `SuiteConfig`, lists comma-separated).

    interp eval-suite workspace/runs/sae/demo-topk-resid15 --suite core,probing,synthetic \\
        --seeds 3 --n-bootstrap 1000 --explainer /models/some-local-llm
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from saes.evals.context import DEFAULT_SUITES, SuiteConfig

app = typer.Typer(help="Evaluate SAEs beyond reconstruction (SAEBench-style suites).",
                  no_args_is_help=True)
_D = SuiteConfig()


@app.callback()
def _group() -> None:
    """Evaluate SAEs beyond reconstruction (SAEBench-style suites)."""


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from e


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


@app.command("eval-suite")
def eval_suite(
    run: Path = typer.Argument(..., help="SAE run directory (or a SAELens directory)."),
    suite: str = typer.Option(",".join(DEFAULT_SUITES), help="Suites, comma-separated "
                              "(core, probing, absorption, synthetic, autointerp, scr, tpp)."),
    out: Path = typer.Option(None, help="Report directory (default: RUN/evals)."),
    baselines: str = typer.Option(",".join(_D.baselines), help="random, neurons, pca ('' none)."),
    seeds: int = typer.Option(_D.seeds, help="Training seeds (> 1 retrains the run)."),
    n_bootstrap: int = typer.Option(_D.n_bootstrap, help="Bootstrap resamples."),
    level: float = typer.Option(_D.level, help="Interval level."),
    seed: int = typer.Option(_D.seed, help="Seed of every sampling choice."),
    n_windows: int = typer.Option(_D.n_windows, help="Corpus windows of the LM suites."),
    context_size: int = typer.Option(_D.context_size, help="Tokens per window."),
    data_dir: str = typer.Option(_D.data_dir, help="Shared cache of the labelled activations."),
    eval_rows: int = typer.Option(_D.eval_rows, help="Rows for reconstruction metrics."),
    lm_windows: int = typer.Option(_D.lm_windows, help="Windows for CE/KL (0: skip)."),
    probe_ks: str = typer.Option(",".join(map(str, _D.probe_ks)), help="k of sparse probing."),
    probe_train: int = typer.Option(_D.probe_train, help="Training examples per task."),
    probe_test: int = typer.Option(_D.probe_test, help="Test examples per task."),
    absorption_words: int = typer.Option(_D.absorption_words, help="First-letter words."),
    spelling_prompts: int = typer.Option(_D.spelling_prompts, help="Words checked for spelling."),
    min_spelling_accuracy: float = typer.Option(_D.min_spelling_accuracy,
                                                help="Below it: absorption on synthetic data."),
    synthetic_rows: int = typer.Option(_D.synthetic_rows, help="Synthetic held-out rows."),
    synthetic_tokens: int = typer.Option(_D.synthetic_tokens, help="Synthetic training rows."),
    scr_top_n: str = typer.Option(",".join(map(str, _D.scr_top_n)), help="N of SCR/TPP."),
    explainer: str = typer.Option(_D.explainer, help="Local HF causal LM directory ('' = the "
                                  "default model, an offline placeholder)."),
    scorer: str = typer.Option(_D.scorer, help="Scorer model directory ('' = the explainer)."),
    autointerp_latents: int = typer.Option(_D.autointerp_latents, help="Latents explained."),
    autointerp_examples: int = typer.Option(_D.autointerp_examples,
                                            help="Activating (and silent) examples per latent."),
    device: str = typer.Option(_D.device, help="Device of the model and dictionaries."),
    progress: bool = typer.Option(True, help="Progress bars."),
):
    """Run the suites on RUN and write RUN/evals/report.json and its Parquet tables."""
    from saes.evals.suite import run_suite

    report = run_suite(
        run, suites=_names(suite), out=out, progress=progress, baselines=_names(baselines),
        seeds=seeds, n_bootstrap=n_bootstrap, level=level, seed=seed, n_windows=n_windows,
        context_size=context_size, data_dir=data_dir, eval_rows=eval_rows,
        lm_windows=lm_windows, probe_ks=_ints(probe_ks), probe_train=probe_train,
        probe_test=probe_test, absorption_words=absorption_words,
        spelling_prompts=spelling_prompts, min_spelling_accuracy=min_spelling_accuracy,
        synthetic_rows=synthetic_rows, synthetic_tokens=synthetic_tokens,
        scr_top_n=_ints(scr_top_n), explainer=explainer, scorer=scorer,
        autointerp_latents=autointerp_latents, autointerp_examples=autointerp_examples,
        device=device)
    for r in report["rows"]:
        ci = (f" [{r['ci_low']:.4g}, {r['ci_high']:.4g}]" if r.get("ci_low") is not None
              else "")
        value = "n/a" if r["value"] is None else f"{r['value']:.4g}"
        typer.echo(f"{r['suite']:<10} {r['metric']:<26} {r['subject']:<8} {value}{ci}")
    for w in report["warnings"]:
        typer.echo(f"warning: {w}")
    target = out or Path(run) / "evals"
    typer.echo(json.dumps({"report": str(Path(target) / "report.json"),
                           "timing": report["timing"]}))


if __name__ == "__main__":  # python -m saes.evals.cli eval-suite RUN ...
    app()
