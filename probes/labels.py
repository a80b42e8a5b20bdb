"""Token-level labels for probing tasks, generated from text (no model, no download).

A `Task` labels the tokens of one document: given the text and each token's character span, it
returns one class index per token (-1: ignore the token). Tasks live in a registry:

- `is_digit`: the token's text is digits (e.g. " 42") vs anything else.
- `in_string`: for Python source, the token starts inside a string literal (found with the
  standard library's `tokenize`), vs code; text after the point where a document stops
  tokenising as Python (a cut, or prose) is not labelled.
- `word_class`: a part-of-speech-like tag of the word a token starts, from closed-class word
  lists (determiner, preposition, pronoun, conjunction, auxiliary), numbers, punctuation, and
  "other" for open-class words; tokens inside a word are ignored. (No tagger with bundled weights
  installs offline, so closed-class lists stand in for one.)
- `sentiment`: positive / negative / neutral words from short word lists (word-initial tokens).
- `spans:<file.jsonl>`: a user's labels, one JSON object per line `{"text": ..., "spans":
  [[start, end, "label"], ...]}`; tokens outside every span get the class "O".
"""

from __future__ import annotations

import io
import json
import re
import tokenize as pytokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from interp.errors import DataError, InterpError, unknown_name_message

Spans = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Task:
    """A labelling task: class names, a function (text, token spans) -> labels, a corpus."""

    name: str
    classes: tuple[str, ...]
    label: Callable[[str, Spans], list[int]]
    corpus: str = "python-docs"  # the built-in corpus the task makes sense on
    documents: tuple[str, ...] | None = None  # a user file's own texts

    def __call__(self, text: str, spans: Spans) -> list[int]:
        return self.label(text, spans)


def _first_char(text: str, start: int, end: int) -> int:
    """Index of the first non-space character of a token's span (its start if all space)."""
    for i in range(start, end):
        if not text[i].isspace():
            return i
    return start


# ------------------------------------------------------------------------------ is_digit
def _is_digit(text: str, spans: Spans) -> list[int]:
    out = []
    for s, e in spans:
        piece = text[s:e].strip()
        out.append(1 if piece and piece.isdigit() else 0)
    return out


# ------------------------------------------------------------------------------ in_string
def string_mask(source: str) -> tuple[list[bool], int]:
    """Per character: inside a Python string literal; and how far the source tokenised.

    A document cut mid-way (or not Python at all) tokenises up to some point: characters after
    it are unknown (`known` is the index of the first unknown character).
    """
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    mask = [False] * len(source)
    kinds = {pytokenize.STRING}
    for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END"):  # Python >= 3.12
        if hasattr(pytokenize, name):
            kinds.add(getattr(pytokenize, name))
    known = 0
    try:
        for tok in pytokenize.generate_tokens(io.StringIO(source).readline):
            a = starts[min(tok.start[0] - 1, len(lines))] + tok.start[1]
            b = starts[min(tok.end[0] - 1, len(lines))] + tok.end[1]
            if tok.type in kinds:
                mask[a:b] = [True] * (b - a)
            if tok.type != pytokenize.ERRORTOKEN:
                known = max(known, min(b, len(source)))
            else:
                break
    except (pytokenize.TokenError, IndentationError, SyntaxError):
        pass
    return mask, known


def _in_string(text: str, spans: Spans) -> list[int]:
    mask, known = string_mask(text)
    out = []
    for s, e in spans:
        c = _first_char(text, s, e)
        out.append(int(mask[c]) if e > s and c < known else -1)
    return out


# ------------------------------------------------------------------------------ word lists
WORD_CLASSES = {
    "determiner": "a an the this that these those each every some any no all both either "
                  "neither another such what which whose my your his her its our their",
    "preposition": "of in on at by for with from to into onto over under about above below "
                   "after before between through during without within along across against "
                   "among around behind beyond near since until upon via per than like",
    "pronoun": "i you he she it we they me him us them myself yourself itself ourselves "
               "themselves who whom someone anyone everyone something anything everything "
               "nothing one mine yours hers ours theirs",
    "conjunction": "and or but nor so yet if because although though while whereas unless "
                   "whether however therefore",
    "auxiliary": "is are was were be been being am do does did has have had can could will "
                 "would shall should may might must",
}
SENTIMENT = {
    "positive": "good great better best excellent fine nice useful easy correct valid safe fast "
                "efficient simple clear success successful helpful happy love like improved "
                "robust reliable",
    "negative": "bad worse worst wrong error errors fail fails failed failure invalid unsafe slow "
                "difficult hard broken bug bugs problem problems poor deprecated crash "
                "exception",
}
_WORD = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def _word_lists(lists: dict[str, str]) -> dict[str, str]:
    return {w: cls for cls, words in lists.items() for w in words.split()}


def _word_labeler(lists: dict[str, str], classes: tuple[str, ...], extra: bool):
    lookup = _word_lists(lists)
    index = {c: i for i, c in enumerate(classes)}

    def label(text: str, spans: Spans) -> list[int]:
        word_at: dict[int, str] = {m.start(): m.group() for m in _WORD.finditer(text)}
        out = []
        for s, e in spans:
            c = _first_char(text, s, e)
            word = word_at.get(c)
            if word is None:  # the token starts inside a word: ignored
                out.append(-1)
                continue
            cls = lookup.get(word.lower())
            if cls is None and extra:
                cls = ("number" if word.isdigit() else
                       "punctuation" if not word[0].isalnum() else None)
            out.append(index[cls] if cls else 0)
        return out

    return label


WORD_CLASS_NAMES = ("other", *WORD_CLASSES, "number", "punctuation")
SENTIMENT_NAMES = ("neutral", "positive", "negative")


# ------------------------------------------------------------------------------ user spans
def spans_task(path: str | Path) -> Task:
    """A task from a .jsonl file of `{"text": str, "spans": [[start, end, label], ...]}`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Label file {str(path)!r} does not exist; pass a .jsonl file with one "
                        '{"text": ..., "spans": [[start, end, "label"], ...]} per line.')
    docs: list[tuple[str, list]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            text, spans = str(obj["text"]), [(int(a), int(b), str(c)) for a, b, c in obj["spans"]]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}:{n}: expected {{\"text\": str, \"spans\": [[start, end, "
                            f"label], ...]}}; {type(e).__name__}: {e}") from e
        docs.append((text, spans))
    if not docs:
        raise DataError(f"Label file {path} holds no documents.")
    classes = ("O", *sorted({c for _, sp in docs for *_, c in sp} - {"O"}))
    index = {c: i for i, c in enumerate(classes)}
    by_text = {text: sp for text, sp in docs}

    def label(text: str, tok_spans: Spans) -> list[int]:
        char = [0] * len(text)
        for a, b, c in by_text.get(text, []):
            char[a:b] = [index[c]] * (max(0, min(b, len(text)) - a))
        return [char[_first_char(text, s, e)] if e > s else -1 for s, e in tok_spans]

    return Task(f"spans:{path.name}", classes, label, corpus=str(path),
                documents=tuple(t for t, _ in docs))


TASKS: dict[str, Task] = {
    "is_digit": Task("is_digit", ("other", "digit"), _is_digit, corpus="python-docs"),
    "in_string": Task("in_string", ("code", "string"), _in_string, corpus="python-stdlib"),
    "word_class": Task("word_class", WORD_CLASS_NAMES,
                       _word_labeler(WORD_CLASSES, WORD_CLASS_NAMES, extra=True),
                       corpus="python-docs"),
    "sentiment": Task("sentiment", SENTIMENT_NAMES,
                      _word_labeler(SENTIMENT, SENTIMENT_NAMES, extra=False),
                      corpus="python-docs"),
}


def get_task(name: str) -> Task:
    """A registered task by name, or `spans:<path.jsonl>` for a user's labelled file."""
    if name.startswith("spans:"):
        return spans_task(name.split(":", 1)[1])
    if name not in TASKS:
        raise InterpError(unknown_name_message("probe task", name, TASKS,
                                               "Or pass spans:<file.jsonl> for your own labels."))
    return TASKS[name]
