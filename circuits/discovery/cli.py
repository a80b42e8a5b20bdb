"""`interp discover` and `interp tasks`: thin wrappers over `circuits.discovery.runs`.
Only typer is imported here; torch and the models load when a command runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from interp.cli_errors import fail

app = typer.Typer(add_completion=False, help="Circuit discovery against planted circuits.")


def parse_options(items: list[str]) -> dict:
    """['eap-ig.steps=10', 'acdc.default=0.03'] -> {'eap-ig': {'steps': 10}, ...} (values are
    read as JSON when they parse, else kept as strings)."""
    from interp.errors import ConfigError

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, opt = key.rpartition(".")
        if not sep or not dot or not method or not opt:
            raise ConfigError(f"--option {item!r} is not METHOD.KEY=VALUE (e.g. eap-ig.steps=10).")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(method, {})[opt] = parsed
    return out


def read_pairs(path: Path, max_bytes: int = 64 << 20) -> list[dict]:
    """Prompt pairs from a JSONL (one {clean, corrupt, answer, distractor} per line) or JSON
    list file."""
    from interp.errors import DataError
    from interp.io import regular_file_size

    if regular_file_size(path, "prompt file", DataError) > max_bytes:
        raise DataError(f"prompt file {path} is over {max_bytes >> 20} MiB; give fewer pairs.")
    try:
        text = Path(path).read_text(encoding="utf-8")
        pairs = (json.loads(text) if text.lstrip().startswith("[")
                 else [json.loads(line) for line in text.splitlines() if line.strip()])
    except (ValueError, RecursionError) as e:
        raise DataError(f"{path} is not JSON lines of {{clean, corrupt, answer, distractor}}: "
                        f"{e}") from None
    keys = ("clean", "corrupt", "answer", "distractor")
    if not isinstance(pairs, list) or not pairs or not all(
            isinstance(p, dict) and all(isinstance(p.get(k), str) for k in keys) for p in pairs):
        raise DataError(f"{path}: every pair must be an object with the strings "
                        f"{', '.join(keys)} (and there must be at least one).")
    return pairs


@app.command("discover")
def discover_cmd(
    task: str = typer.Option("induction", help="induction | ioi | greater_than | othello | "
                                               "all (one run per task)"),
    method: str = typer.Option("all", help="Comma-separated: patching, eap, eap-ig, acdc, "
                                           "discrete, dictionary (task models only); 'all'."),
    prompts: Optional[Path] = typer.Option(None, help="JSONL of {clean, corrupt, answer, "
                                                      "distractor}: run on a model instead of a "
                                                      "task (faithfulness curves only)."),
    model: Optional[str] = typer.Option(None, help="With --prompts: model name or directory "
                                                   "(default model)."),
    n_prompts: int = typer.Option(64, min=1, help="Prompt pairs drawn from the task."),
    seed: int = typer.Option(0, min=0, help="Seed of the task's prompts."),
    ablation: str = typer.Option("resample", help="resample | mean"),
    option: List[str] = typer.Option([], "--option", help="METHOD.KEY=VALUE, e.g. "
                                                          "eap-ig.steps=10 (repeatable)."),
    name: Optional[str] = typer.Option(None, help="Run name (default: the task, or 'prompts')."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: "
                                                  "<workspace>/runs/circuit/<name>)."),
    workspace: Optional[Path] = typer.Option(None, envvar="INTERP_WORKSPACE",
                                             help="Workspace root."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown."),
) -> None:
    """Run circuit-discovery methods side by side and score them (run kind 'circuit')."""
    from circuits.discovery.evaluate import DiscoveryConfig
    from circuits.discovery.methods import parse_methods
    from circuits.discovery.runs import circuit_run, load_report, prompts_run
    from circuits.tasks import TASKS
    from interp.errors import InterpError

    runs = []
    try:
        options = parse_options(option)
        methods = parse_methods(method, task_model=prompts is None)
        if prompts is not None:
            runs.append(prompts_run(read_pairs(prompts), methods, model=model, ablation=ablation,
                                    options=options, name=name or "prompts",
                                    workspace=workspace, out=out, progress=True))
        else:
            for t in (list(TASKS) if task == "all" else [task]):
                cfg = DiscoveryConfig(task=t, methods=tuple(methods), n_prompts=n_prompts,
                                      seed=seed, ablation=ablation, options=options)
                runs.append(circuit_run(cfg, name=(name or t) if task != "all" else t,
                                        workspace=workspace, out=out if task != "all" else None,
                                        progress=True))
    except InterpError as e:
        fail(e)
    rows = [row for run in runs for row in load_report(run)["table"]]
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        typer.echo(format_table(rows, markdown))
    for run in runs:
        typer.echo(f"run: {run.path}")


COLUMNS = ("task", "method", "auroc", "precision", "recall", "cpr_node", "cmd_node",
           "cpr_edge", "cmd_edge", "seconds")


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The methods x tasks table as aligned text or Markdown."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else ("-" if v in (None, "") else str(v))

    lines = []
    if markdown:
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        lines += ["| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    else:
        lines.append("  ".join(f"{c:>12}" for c in COLUMNS))
        lines += ["  ".join(f"{cell(r.get(c)):>12}" for c in COLUMNS) for r in rows]
    return "\n".join(lines)


@app.command("circuit-tasks")
def tasks_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The planted-circuit tasks: accuracy of the committed model and its ground truth."""
    from circuits.tasks import TASKS, get_task
    from interp.io import read_json

    rows = []
    for name in TASKS:
        t = get_task(name)
        row = {"task": name, "description": t.description, "trained": t.info_path.is_file()}
        if row["trained"]:
            info = read_json(t.info_path)
            gt = info["ground_truth"]
            row |= {"accuracy": info["accuracy"], "ground_truth": gt["components"],
                    "n_truth_edges": len(gt["edges"]), "ablation_check": gt["passes"]}
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        extra = (f"accuracy {r['accuracy']:.3f}, ground truth {', '.join(r['ground_truth'])} "
                 f"({r['n_truth_edges']} edges), ablation check "
                 f"{'passes' if r['ablation_check'] else 'FAILS'}" if r["trained"]
                 else "not trained (python -m circuits.tasks.train " + r["task"] + ")")
        typer.echo(f"{r['task']}: {r['description']}\n  {extra}")


if __name__ == "__main__":  # `python -m circuits.discovery.cli discover ...`
    app()
