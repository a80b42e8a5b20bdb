"""The documentation: the site builds with warnings as errors (`make docs`), the README is the
front door (under 10 KB, the two commands first, a quickstart that runs), and every file the
README, the docs and the code point at is in the repository."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MKDOCS_YML = ROOT / "mkdocs.yml"


def _installed(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:  # a parent package is missing
        return False


HAS_MKDOCS = _installed("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
needs_mkdocs = pytest.mark.skipif(
    not HAS_MKDOCS, reason="mkdocs, mkdocs-material and mkdocstrings[python] are not installed; "
                           "they come with the dev extra (pip install -e '.[dev]', as make test does)")


def _nav_pages() -> tuple[list[str], list[str]]:
    """Pages named in mkdocs.yml's nav: (active, expected), the expected ones being the nav lines
    commented out until another branch adds their file."""
    active, expected = [], []
    for line in MKDOCS_YML.read_text().splitlines():
        m = re.match(r"^\s*(#\s*)?-\s*[^:#]+:\s*(\S+\.md)\s*$", line)
        if m:
            (expected if m.group(1) else active).append(m.group(2))
    return active, expected


def _generated(page: str) -> bool:
    return page.startswith("api/")  # written at build time by docs/hooks.py


@needs_mkdocs
def test_site_builds_strict(tmp_path):
    """`mkdocs build --strict` (what `make docs` runs): any warning, e.g. a broken link or
    anchor, a nav entry without its file or a page left out of the nav, fails the build."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(site)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    active, _ = _nav_pages()
    assert "index.md" in active and "design.md" in active
    for page in active:
        html = site / page.removesuffix(".md") / "index.html" if page != "index.md" \
            else site / "index.html"
        assert html.is_file(), f"{page} was not built"
    # The API reference is rendered from docstrings: a known class with its docstring.
    api = (site / "api" / "interp" / "index.html").read_text()
    assert 'id="interp.store.ActivationStore"' in api
    # The explorer's screenshots are served from app/screenshots.
    for png in (ROOT / "app" / "screenshots").glob("*.png"):
        assert (site / "images" / "screenshots" / png.name).read_bytes() == png.read_bytes()


def test_every_docs_page_is_in_the_nav():
    """A page in docs/ is reachable from the nav, and a nav entry has its file (or is one of the
    commented-out pages another branch is writing)."""
    active, expected = _nav_pages()
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk - set(active) == set(), "pages missing from mkdocs.yml's nav"
    assert {p for p in active if not _generated(p)} - on_disk == set(), "nav entries without files"
    assert set(expected) & on_disk == set(), \
        "a commented-out nav page now exists: uncomment its line in mkdocs.yml"


def test_readme_is_the_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < 10 * 1024, "README.md must stay under 10 KB"
    # The first section is the two commands, and its first code block runs them.
    first_heading = re.search(r"^## (.+)$", text, re.M)
    assert first_heading and first_heading.group(1) == "The two commands"
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands[:2] == ["make demo", "make test"]
    assert text.index("```bash") > first_heading.start()
    # The command table lists every sub-command the CLI has, one row each (groups with theirs).
    import click
    import typer

    from interp.cli import app

    rows = {line for line in text.splitlines() if line.startswith("| `interp ")}
    for name, command in typer.main.get_command(app).commands.items():
        row = next((r for r in rows if r.startswith(f"| `interp {name}")), None)
        assert row is not None, f"`interp {name}` is missing from the README's command table"
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert f"`{sub}`" in row or f"`interp {name} {sub}`" in row, f"{name} {sub}"


_OUTSIDE = re.compile(r"\.\./shared/|/work/shared|\bshared/(?:papers|anchors|hooks)/"
                      r"|\b(?:METHODS|CONVENTIONS|DESIGN)\.md\b")
_DOC_PATH = re.compile(r"\b((?:docs/[\w./-]+|app/README)\.md)\b")
_MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
        files = [ROOT / f for f in out]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        files = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    keep = {".py", ".md", ".toml", ".yml", ".yaml", ".ipynb", ".txt", ".cfg", ""}
    return [f for f in files if f.is_file() and f.suffix in keep and f != Path(__file__)]


def test_references_stay_in_the_repository():
    """Nothing points at files a user of the repository does not have, and every docs page or
    README that the code, the README and the docs name exists (or is an expected nav page)."""
    _, expected = _nav_pages()
    allowed_missing = {f"docs/{p}" for p in expected}
    outside, missing = [], []
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(ROOT).as_posix()
        outside += [f"{rel}: {m.group(0)}" for m in _OUTSIDE.finditer(text)]
        for m in _DOC_PATH.finditer(text):
            target = m.group(1)
            if not (ROOT / target).is_file() and target not in allowed_missing:
                missing.append(f"{rel}: {target}")
    assert outside == [], "references to files outside the repository"
    assert missing == [], "references to docs pages that do not exist"
    # The README's relative links resolve.
    for m in _MD_LINK.finditer(README.read_text(encoding="utf-8")):
        target = m.group(1)
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (ROOT / target).exists() or target in allowed_missing, f"README link {target}"


def _readme_quickstart() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quickstart"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path):
    """The README's quickstart, verbatim, on the default model: from the model to a feature
    page, with the runs in a workspace the explorer can open."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _readme_quickstart()], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    fvu, l0 = (float(x) for x in lines[0].split())
    assert 0 < fvu < 1 and 0 < l0 <= 32  # a top-k SAE with k = 32 that reconstructs something
    density = float(lines[1].split()[0])
    assert 0 < density < 1
    from interp.workspace import list_runs

    kinds = sorted(run.kind for run in list_runs(tmp_path / "ws"))
    assert kinds == ["activations", "features", "sae"]
