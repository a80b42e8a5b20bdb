"""Turning token ids into text for display: the tokenizer of a store's model, loaded once.

Only the default model (from the toolkit's own cache) and local model directories are used;
a Hub id is never fetched. Tokenizers load from JSON/text files (`trust_remote_code` stays off),
so no code from the workspace runs. Without a tokenizer, ids are shown as `<id>`.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import streamlit as st

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner="Loading the tokenizer ...", max_entries=4)
def tokenizer_for(model: str):
    """The tokenizer of `model` (a name recorded in a run), or None if it cannot be had."""
    from transformers import AutoTokenizer

    from interp.models.loading import DEFAULT_ALIASES, DEFAULT_MODEL, default_model_dir

    try:
        if not model or model.lower() in DEFAULT_ALIASES or model == DEFAULT_MODEL:
            where = default_model_dir(progress=False)
        elif Path(model).is_dir():
            where = Path(model)
        else:
            return None
        return AutoTokenizer.from_pretrained(str(where), trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - show ids instead
        log.warning("no tokenizer for %r: %s", model, e)
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
