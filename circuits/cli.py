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
    transcoders: Path = typer.Option(..., help="A transcoder set (`interp transcoders`)."),
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
) -> None:
    """Attribution graph of a prompt through a transcoder set; writes a "graph" run."""
    from circuits.attribution import AttributionConfig
    from circuits.runs import graph_run
    from circuits.transcoders import load_transcoders
    from interp.errors import InterpError
    from interp.models.loading import load_model

    try:
        tcs = load_transcoders(transcoders)  # a bad set fails before the model loads
        m = load_model(model)
        cfg = AttributionConfig(max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob,
                                batch_size=batch_size, max_feature_nodes=max_feature_nodes)
        run = graph_run(m, tcs, prompt, name, out=out,
                        workspace=workspace, config=cfg, node_threshold=node_threshold,
                        edge_threshold=edge_threshold, progress=True)
    except InterpError as e:
        fail(e)
    typer.echo(json.dumps(run.metrics))
    typer.echo(f"run: {run.path}")
