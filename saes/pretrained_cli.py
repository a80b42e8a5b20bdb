"""`interp pretrained list | get`: thin wrappers over `saes.pretrained`. Only typer is imported
here; the registry and torch load when a command runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from interp.cli_errors import fail

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pretrained SAEs and transcoders by name (SAELens releases, "
                       "circuit-tracer sets).")


@app.command("list")
def list_cmd(
    model: Optional[str] = typer.Option(None, help="Only releases for this model (a name, "
                                                   "Hub id or directory)."),
    release: Optional[str] = typer.Option(None, help="List the ids of this release."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the named releases (SAELens's registry and circuit-tracer's transcoder sets), or
    the ids of one release."""
    from interp.errors import InterpError
    from saes.pretrained.registry import get_release, list_pretrained

    try:
        if release is not None:
            rel = get_release(release)
            if as_json:
                typer.echo(json.dumps({**rel.to_dict(), "ids": rel.ids}))
                return
            typer.echo(f"{rel.name}: {rel.model} · {rel.repo_id} · layout {rel.layout} · "
                       f"{len(rel.ids)} ids")
            for sae_id, path in rel.ids.items():
                typer.echo(f"  {sae_id}" + (f"  ({path})" if path != sae_id else ""))
            return
        rows = list_pretrained(model)
    except InterpError as e:
        fail(e)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows]))
        return
    if not rows:
        typer.echo(f"No named release for model {model!r}; `interp pretrained list` shows all.")
        return
    width = min(44, max(len(r.name) for r in rows))
    for r in rows:
        what = "transcoders" if r.transcoders else "SAEs"
        n = f"{len(r.ids)} ids" if r.ids else "set"
        typer.echo(f"{r.name:<{width}}  {r.model:<28} {what:<11} {n:<9} {r.layout}")


def _layers(spec: Optional[str]) -> Optional[list[int]]:
    """'0-3,7' -> [0, 1, 2, 3, 7]; None or 'all' -> every layer of the set."""
    from interp.errors import ConfigError

    if spec is None or spec.strip() == "all":
        return None
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise ConfigError(f"Cannot read layers {spec!r}: use e.g. '0-3,7' or 'all'.") from None
    return sorted(set(out))


@app.command("get")
def get_cmd(
    release: str = typer.Argument(..., help="A release (`interp pretrained list`), a "
                                            "circuit-tracer set, a Hub repo or a directory."),
    sae_id: Optional[str] = typer.Argument(None, help="The id in the release; leave it out "
                                                      "for a transcoder set."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: <workspace>/runs/"
                                                  "sae/<name> or runs/transcoders/<name>)."),
    name: Optional[str] = typer.Option(None, help="Run name (default from release and id)."),
    model: Optional[str] = typer.Option(None, help="Check it fits this model (name or "
                                                   "directory) and record it in run.json."),
    layers: Optional[str] = typer.Option(None, help="Transcoder sets: layers, e.g. '0-3,7'."),
    select: Optional[str] = typer.Option(None, help="Transcoder sets from a SAELens release "
                                                    "with several ids per layer: an id with "
                                                    "{layer}, e.g. 'layer_{layer}/width_16k/"
                                                    "average_l0_76'."),
    local_dir: Optional[Path] = typer.Option(None, help="Read the files from this directory "
                                                        "(no cache, no download)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Hugging Face cache (default: HF's)."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit)."),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
) -> None:
    """Fetch a pretrained SAE / transcoder (or a transcoder set) and write it into the
    workspace: an SAE run (`sae/` in the SAELens layout) for `interp features`, `eval-sae`
    and the explorer, or a transcoder-set run for `interp attribute --transcoders DIR`."""
    from interp.errors import InterpError, MissingFile
    from saes.pretrained.registry import releases

    try:
        for flag, d in (("--local-dir", local_dir), ("--cache-dir", cache_dir)):
            if d is not None and not d.is_dir():
                raise MissingFile(f"{flag} {d} is not a directory.")
        if local_dir is not None and not any(local_dir.iterdir()):
            raise MissingFile(f"--local-dir {local_dir} is empty: put the release's files there "
                              "(the Hub repo's layout, or the files flat).")
        known = releases()
        is_set = sae_id is None and (release not in known or known[release].transcoders)
        where = dict(model=model, local_dir=local_dir, cache_dir=cache_dir, revision=revision)
        if is_set:
            from saes.pretrained.sets import save_pretrained_set_run

            run = save_pretrained_set_run(release, out=out, workspace=workspace, run=name,
                                          layers=_layers(layers), select=select, **where)
        else:
            from saes.pretrained.load import save_pretrained_run

            run = save_pretrained_run(release, sae_id, out=out, workspace=workspace, name=name,
                                      **where)
    except InterpError as e:
        given = [f"{flag} {d}" for flag, d in (("--local-dir", local_dir),
                                                ("--cache-dir", cache_dir))
                 if d is not None and str(d) not in str(e)]
        fail(type(e)(f"{e} (with {', '.join(given)})") if given else e)
    typer.echo(json.dumps(run.metrics))
    typer.echo(f"run: {run.path}")
