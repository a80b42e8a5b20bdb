"""`interp linearise`: the exact Jacobian linearisation of one prediction, written as a run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interp.cli_errors import fail

app = typer.Typer(add_completion=False, help="Exact Jacobian linearisation of a forward pass.")


@app.command("linearise")
def linearise(
    prompt: str = typer.Option(..., "--prompt", help="Text whose next-token prediction to linearise."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: "
                                                  "<workspace>/runs/linearise/<name>)."),
    name: Optional[str] = typer.Option(None, help="Run name in the workspace."),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
    model: str = typer.Option("", help="Model name or directory (default model if empty)."),
    position: int = typer.Option(-1, help="Target position (negative counts from the end)."),
    layer: Optional[int] = typer.Option(None, help="Linearise blocks.L.hook_resid_post instead "
                                                   "of the final normed output."),
    k: int = typer.Option(32, min=1, help="Singular triplets of the stacked Jacobian."),
    dtype: str = typer.Option("float32", help="float32 | float64"),
    full: bool = typer.Option(False, help="Also build the dense Jacobian (per-token SVDs)."),
    per_layer: bool = typer.Option(True, help="Cumulative Jacobian of every layer's outputs."),
    components: str = typer.Option("resid_post,attn_out,mlp_out",
                                   help="Per-layer sites (comma-separated)."),
    layer_k: int = typer.Option(4, min=1, help="Singular values per per-layer Jacobian."),
    n_decode: int = typer.Option(8, min=0, help="Singular vectors decoded to tokens."),
    top_tokens: int = typer.Option(8, min=1, help="Tokens per decoded vector."),
    block: int = typer.Option(0, min=0, help="Probe vectors per block Krylov step (0: chosen from "
                                      "the prompt length)."),
    n_iter: Optional[int] = typer.Option(None, min=1, help="At most this many block Krylov steps."),
    tol: float = typer.Option(1e-5, min=0, help="Stop when the top-k singular values' estimated "
                                         "relative error is below this."),
    seed: int = typer.Option(0, min=0, help="Seed of the random probes."),
    prepend_bos: bool = typer.Option(True, help="Put BOS in front of the prompt."),
    as_json: bool = typer.Option(False, "--json", help="Print the run's metrics as JSON."),
) -> None:
    """Exact linearisation (Golden, arXiv 2505.24293): y = sum_i J_i x_i with norms, gates and
    attention frozen; SVD of J, decoded to tokens; per-layer stable ranks."""
    import json

    from interp.errors import InterpError
    from interp.linearise.analysis import LineariseConfig
    from interp.linearise.runs import linearise_run

    try:
        comps = tuple(c.strip() for c in components.split(",") if c.strip())
        cfg = LineariseConfig(prompt=prompt, model=model, position=position, layer=layer, k=k,
                              dtype=dtype, full=full, per_layer=per_layer,
                              components=comps,
                              layer_k=layer_k,
                              n_decode=n_decode, top_tokens=top_tokens, block=block,
                              n_iter=n_iter, tol=tol, seed=seed, prepend_bos=prepend_bos)
        run = linearise_run(cfg, name=name, workspace=workspace, out=out)
    except InterpError as e:
        fail(e)
    m = run.metrics
    if as_json:
        typer.echo(json.dumps(m))
        return
    typer.echo(f"run: {run.path}")
    typer.echo(f"next token: {m['predicted']!r}")
    typer.echo(f"exactness |sum_i J_i x_i - y| / |y| = {m['rel_error']:.2e} ({dtype})")
    typer.echo(f"stable rank {m['stable_rank']:.3f}, sigma_max {m['sigma_max']:.4g}")
    typer.echo(f"top singular vector decodes to: {m['top_u1_tokens']}")
