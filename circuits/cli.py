"""`interp transcoders` and `interp attribute`: thin wrappers over `circuits.transcoders` and
`circuits.runs`. Only typer is imported here; torch and the models load when a command runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from interp.cli_devices import device_option, dtype_option
from interp.cli_errors import fail

app = typer.Typer(add_completion=False, help="Transcoders and attribution graphs.")



@app.command("transcoders")
def transcoders_cmd(
    out: Path = typer.Option(..., help="Run directory of the set (layer_LL/ inside)."),
    layers: str = typer.Option("all", help="Layers, e.g. '0-29', '0,3,7' or 'all'."),
    model: Optional[str] = typer.Option(None, help="Model name or directory (default model)."),
    tokens: int = typer.Option(200_000, min=1,
                               help="Training tokens (one forward pass feeds all)."),
    width: int = typer.Option(2048, min=1, help="Latents per transcoder."),
    k: Optional[int] = typer.Option(None, min=1, help="Active latents (top-k family; default 16)."),
    arch: str = typer.Option("topk", help="topk | batchtopk | standard | jumprelu | "
                                          "matryoshka_batchtopk"),
    skip: bool = typer.Option(False, help="Skip-transcoders (a linear skip path)."),
    batch_size: int = typer.Option(1024, min=1, help="Rows per step."),
    lr: float = typer.Option(4e-3, min=0, help="Adam learning rate."),
    activations: Optional[Path] = typer.Option(None, help="A store with both hooks per layer "
                                                          "(default: stream from the model)."),
    seed: int = typer.Option(0, min=0, help="Seed."),
    device: str = device_option("Where the transcoders train."),
    model_device: str = device_option("Where the streamed model runs.", flag="--model-device"),
    model_dtype: str = dtype_option("The model's compute dtype:", flag="--model-dtype"),
) -> None:
    """Train one transcoder per layer (ln2.hook_normalized -> hook_mlp_out) in one run."""
    from circuits.transcoders import parse_layers, train_transcoders
    from interp.errors import InterpError
    from interp.models.loading import load_model

    try:
        m = load_model(model, device=model_device, dtype=model_dtype)
        run = train_transcoders(model or "", parse_layers(layers, m.cfg.n_layers), out,
                                tokens=tokens, width=width, k=k, architecture=arch, skip=skip,
                                batch_size=batch_size, lr=lr, seed=seed,
                                activations=str(activations or ""), d_model=m.cfg.d_model,
                                device=device, model_device=model_device,
                                model_dtype=model_dtype, loaded=m)
    except InterpError as e:
        fail(e)
    typer.echo(json.dumps(run.metrics))
    typer.echo(f"run: {run.path}")


@app.command("attribute")
def attribute_cmd(
    prompt: str = typer.Option(..., help="The prompt (a BOS is put in front)."),
    transcoders: Path = typer.Option(..., help="A transcoder set (`interp transcoders`) or a "
                                               "cross-layer transcoder (`interp train-clt`)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: "
                                                  "<workspace>/runs/graph/<name>)."),
    name: str = typer.Option("graph", help="Run name (and the frontend JSON's slug)."),
    model: Optional[str] = typer.Option(None, help="Model name or directory (default model)."),
    node_threshold: float = typer.Option(0.8, min=0, max=1,
                                         help="Keep nodes up to this cumulative influence."),
    edge_threshold: float = typer.Option(0.98, min=0, max=1,
                                         help="Keep edges up to this cumulative influence."),
    max_n_logits: int = typer.Option(10, min=1, help="At most this many output logits."),
    desired_logit_prob: float = typer.Option(0.95, min=0, max=1,
                                             help="Logits covering this probability."),
    batch_size: int = typer.Option(256, min=1, help="Targets per backward pass."),
    max_feature_nodes: Optional[int] = typer.Option(
        None, min=1, help="Node budget: visit features by influence on the logits until this many "
                   "have rows (default: every active feature)."),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
    quality: Optional[Path] = typer.Option(
        None, help="The set's report from `interp replacement-quality --out`: kept with the run "
                   "(the explorer's graph page shows its scores)."),
) -> None:
    """Attribution graph of a prompt through a transcoder set; writes a "graph" run."""
    from circuits.attribution import AttributionConfig
    from circuits.runs import graph_run
    from circuits.transcoders import load_transcoders
    from interp.errors import InterpError
    from interp.models.loading import load_model

    try:
        tcs = load_transcoders(transcoders)  # a bad set fails before the model loads
        report = None
        if quality is not None:
            from interp.io import read_json

            report = read_json(quality, expect=dict)
        m = load_model(model)
        cfg = AttributionConfig(max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob,
                                batch_size=batch_size, max_feature_nodes=max_feature_nodes)
        run = graph_run(m, tcs, prompt, name, out=out,
                        workspace=workspace, config=cfg, node_threshold=node_threshold,
                        edge_threshold=edge_threshold, progress=True, quality=report)
    except InterpError as e:
        fail(e)
    typer.echo(json.dumps(run.metrics))
    typer.echo(f"run: {run.path}")


@app.command("replacement-quality")
def replacement_quality_cmd(
    transcoders: Path = typer.Option(..., help="A transcoder set (`interp transcoders`) or a "
                                               "cross-layer transcoder (`interp train-clt`)."),
    prompt: Optional[list[str]] = typer.Option(None, help="A prompt (repeat for several)."),
    prompts: Optional[Path] = typer.Option(None, help="A text file, one prompt per line."),
    out: Optional[Path] = typer.Option(None, help="Write the report (JSON) here."),
    figure: Optional[str] = typer.Option(None, help="Write the NMSE/scores figure (HTML) to "
                                                    "this path."),
    model: Optional[str] = typer.Option(None, help="Model name or directory (default model)."),
    graphs: bool = typer.Option(True, help="Attribute every prompt for its replacement and "
                                           "completeness scores (--no-graphs: fidelity only)."),
    max_feature_nodes: Optional[int] = typer.Option(
        None, min=1, help="Node budget of each graph (default: every active feature)."),
    batch_size: int = typer.Option(256, min=1, help="Targets per backward pass."),
) -> None:
    """How well a transcoder set replaces the model's MLPs over prompts (scores, NMSE, KL)."""
    from circuits.quality import QualityConfig, replacement_quality
    from circuits.transcoders import load_transcoders
    from interp.errors import ConfigError, InterpError
    from interp.io import atomic_write_json
    from interp.models.loading import load_model

    try:
        tcs = load_transcoders(transcoders)  # a bad set fails before anything else
        texts = list(prompt or [])
        if prompts is not None:
            if not prompts.is_file():
                raise ConfigError(f"No prompts file at {prompts}: give a text file with one "
                                  "prompt per line.")
            try:
                lines = prompts.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"Cannot read prompts from {prompts} ({e}); give a UTF-8 "
                                  "text file with one prompt per line.") from None
            texts += [t for t in lines if t.strip()]
        if not texts:
            raise ConfigError("No prompts: pass --prompt TEXT (repeatable) or --prompts FILE.")
        m = load_model(model)
        cfg = QualityConfig(graph_scores=graphs, max_feature_nodes=max_feature_nodes,
                            batch_size=batch_size)
        report = replacement_quality(m, tcs, texts, cfg, progress=True)
        if out is not None:
            atomic_write_json(out, report)
        if figure is not None:
            from circuits.plots import fig_replacement_quality

            Path(figure).parent.mkdir(parents=True, exist_ok=True)
            fig_replacement_quality(report).write_html(figure, include_plotlyjs=True)
    except InterpError as e:
        fail(e)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "per_prompt"}))
