"""MkDocs hooks for the documentation site (named in mkdocs.yml; not part of the package).

- The API reference: one page per import package (`api/<package>.md`), listing every public
  module found in the source tree, rendered from its docstrings by mkdocstrings. Generated at
  build time, so a module added, moved or removed needs no edit here.
- The explorer's screenshots: `app/screenshots/*.png` are served under `images/screenshots/`
  (one copy of each picture in the repository, the one the screenshot script writes).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
#: Packages with an API page, in nav order, and what each holds.
PACKAGES = {
    "interp": "models and hooks, corpora, the activation store, the workspace, linearisation, "
              "the locality dial, the command line",
    "saes": "sparse dictionaries: architectures, training, evaluation, formats, feature pages, "
            "atoms, codebooks",
    "circuits": "attribution graphs: transcoders, the replacement model, pruning, interventions",
    "probes": "linear probes, logit and tuned lenses, layer geometry",
}
#: Modules left out of the reference: entry points with no API of their own.
SKIP = {"__main__"}


def public_modules(package: str) -> list[str]:
    """Dotted names of the package and its public modules (no part starting with `_`), sorted
    so that a package comes before its modules."""
    base = ROOT / package
    names = []
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") or p in SKIP for p in parts):
            continue
        names.append(".".join(parts))
    return sorted(set(names), key=lambda n: n.split("."))


def api_page(package: str) -> str:
    lines = [f"# `{package}`", "", f"The `{package}` package: {PACKAGES[package]}.", ""]
    for module in public_modules(package):
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def on_files(files, config):
    for package in PACKAGES:
        files.append(File.generated(config, f"api/{package}.md", content=api_page(package)))
    for png in sorted((ROOT / "app" / "screenshots").glob("*.png")):
        files.append(File.generated(config, f"images/screenshots/{png.name}",
                                    abs_src_path=str(png)))
    return files
