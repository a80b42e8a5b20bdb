"""What the `interp` command line and the main job are composed of: import strings, read only
when the CLI or the demo runs, so that `interp` (the ground floor) imports none of the packages
built on it (`saes`, `circuits`, `probes`).

A capability adds a sub-command group with one line in `SUBCOMMANDS` (a module holding a
`typer.Typer` named `app`) and a demo step with one line in `DEMO_STEPS`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: (module with a `typer.Typer` named `app`, group name or None to add its commands at the top)
SUBCOMMANDS: list[tuple[str, str | None]] = [
    ("saes.cli", None),  # train-sae, eval-sae, resume, features, atoms
    ("saes.codebook.cli", "codebook"),  # codebook train / fsm / steer
    ("saes.pretrained_cli", "pretrained"),  # pretrained list / get
    ("circuits.cli", None),  # transcoders, attribute
    ("circuits.discovery.cli", None),  # discover, circuit-tasks
    ("probes.cli", None),  # probe, lens, geometry
    ("interp.linearise.cli", None),  # linearise
    ("interp.localist.cli", "localist"),  # localist sweep / schedules
]


@dataclass(frozen=True)
class DemoStep:
    """One step of the demo: `target` is "module:function", called as
    `function(workspace, echo, **options) -> Path` (the run directory it wrote or found done)."""

    name: str
    target: str
    required: bool = False  # a required step's failure stops the demo; others are reported


#: The main job's steps, in the order they run (`interp demo`, `make demo`).
DEMO_STEPS: list[DemoStep] = [
    DemoStep("activations", "interp.demo:cache_step", required=True),
    DemoStep("sae", "saes.runs:demo_step", required=True),
    DemoStep("features", "saes.features:demo_step"),
    DemoStep("atoms", "saes.atoms.runs:demo_step"),
    DemoStep("codebook", "saes.codebook.topic:demo_step"),
    DemoStep("graph", "circuits.demo:demo_step"),
    DemoStep("linearise", "interp.linearise.runs:demo_step"),
    DemoStep("localist", "interp.localist.demo:demo_step"),
    DemoStep("probes", "probes.demo:demo_step"),
]
