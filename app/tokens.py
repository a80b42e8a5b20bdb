"""Turning token ids into text for display: the tokenizer of a store's model, loaded once.

Only the default model (from the toolkit's own cache) and model directories inside the workspace
are used: a Hub id is never fetched and no path outside the workspace is read. Tokenizers load
from JSON/text files with `trust_remote_code` off, so no code from the workspace runs. Without a
tokenizer, ids are shown as `<id>` (feature runs carry their own vocabulary and need none).
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import streamlit as st

from app.data import inside, workspace

log = logging.getLogger(__name__)


def tokenizer_for(model: str):
    """The tokenizer of `model` (a name recorded in a run), or None if it cannot be had (or
    would be read from outside the workspace)."""
    from interp.models.loading import DEFAULT_ALIASES, DEFAULT_MODEL

    if not isinstance(model, str):
        return None
    if not model or model.lower() in DEFAULT_ALIASES or model == DEFAULT_MODEL:
        return _load_tokenizer("")
    path = Path(model)
    if path.is_dir() and inside(path, workspace()):
        return _load_tokenizer(str(path.resolve()))
    return None


@st.cache_resource(show_spinner="Loading the tokenizer ...", max_entries=4)
def _load_tokenizer(where: str):
    """'' is the default model (from the toolkit's cache; converted once if missing)."""
    from transformers import AutoTokenizer

    from interp.models.loading import default_model_dir

    try:
        where = where or str(default_model_dir(progress=False))
        return AutoTokenizer.from_pretrained(where, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - show ids instead
        log.warning("no tokenizer in %r: %s", where, e)
        return None


def token_strings(ids, model: str) -> list[str]:
    """One display string per token id (whitespace made visible by the caller)."""
    ids = [int(i) for i in ids]
    tok = tokenizer_for(model)
    if tok is None:
        return [f"<{i}>" for i in ids]
    return [tok.decode([i]) for i in ids]


def token_html(tokens: list[str], values: list[float] | None = None, vmax: float | None = None,
               ) -> str:
    """Tokens as inline boxes (escaped), shaded by `values` if given (per-token highlighting)."""
    if values is not None:
        vmax = vmax or max((abs(v) for v in values), default=0) or 1.0
    spans = []
    for i, t in enumerate(tokens):
        text = html.escape(t).replace("\n", "⏎").replace(" ", "&nbsp;") or "&#8203;"
        style = "border:1px solid #ccc;border-radius:3px;padding:0 1px;margin:1px;"
        title = ""
        if values is not None:
            a = max(0.0, min(1.0, values[i] / vmax)) if vmax else 0.0
            style += f"background:rgba(255,120,0,{a:.2f});"
            title = f' title="{values[i]:.3g}"'
        spans.append(f'<span style="{style}"{title}>{text}</span>')
    return ('<div style="font-family:monospace;line-height:1.9;white-space:normal">'
            + "".join(spans) + "</div>")
