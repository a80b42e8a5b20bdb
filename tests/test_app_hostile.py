"""Every page of the explorer on a hostile workspace (tests/hostile_workspace.py): for each
registered kind (and an unregistered one, on "All runs") and each way a run can be wrong, the
page renders, selects that run and marks it with what is wrong; nothing outside the workspace
is ever shown. A kind added to the registry is tested here without a new line."""

from __future__ import annotations

import pytest

from app.kinds import KINDS, kind_view
from hostile_workspace import CASES, READ_CASES, write_hostile_runs

PAGE_KINDS = [*KINDS, "mystery"]  # "mystery": no registry line, shown on "All runs"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    ws = tmp_path_factory.mktemp("hostile") / "ws"
    for kind in PAGE_KINDS:
        write_hostile_runs(ws, kind, kind_view(kind).metrics)
    return ws


def _shown(at) -> str:
    """Every text the page shows (markdown, boxes, captions, JSON, tables)."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "json",
                                  "subheader", "title") for e in at.get(kind)]
    parts += [df.value.to_csv() for df in at.dataframe]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("kind", PAGE_KINDS)
def test_every_page_marks_each_hostile_run(hostile, explorer, kind):
    """Open the kind's page on the first case (by URL), then pick each case in turn: the page
    renders with that run selected and marked with what is wrong with it."""
    first, *others = CASES
    query = {"run": first} if kind in KINDS else {"kind": kind, "run": first}
    at = explorer(hostile, kind_view(kind).url_path, **query)  # fails on any exception
    for case in [first, *others]:
        if case != first:
            at.selectbox(key=f"pick-{kind}").select(case).run()
        assert not at.exception, (case, [e.value for e in at.exception])
        assert at.selectbox(key=f"pick-{kind}").value == case
        marks = " ".join(e.value for e in [*at.error, *at.warning])
        if CASES[case] is not None:
            assert CASES[case] in marks, (case, marks)
        shown = _shown(at)
        assert "never shown" not in shown and "root:" not in shown, case  # nothing from outside
        assert "Traceback" not in shown, case


def test_home_lists_every_hostile_run_as_broken_or_with_its_problem(hostile, explorer):
    at = explorer(hostile)
    rows = {}
    for df in at.dataframe:
        for rec in df.value.to_dict("records"):
            rows.setdefault(rec["open"].split("?")[0], {})[rec["name"]] = rec
    for kind in PAGE_KINDS:
        got = rows[kind_view(kind).url_path]
        assert set(got) == set(CASES)
        for case, phrase in CASES.items():
            if phrase is not None and case not in READ_CASES:
                assert got[case]["status"] == "broken" or got[case]["problem"], (kind, case)
    warnings = " ".join(w.value for w in at.warning)
    assert "deep-json cannot be read" in warnings and "nested too deeply" in warnings
    assert "never shown" not in _shown(at)


@pytest.mark.parametrize("kind", PAGE_KINDS)
def test_every_page_ignores_a_run_name_with_dots_in_the_url(hostile, explorer, kind):
    at = explorer(hostile, kind_view(kind).url_path, kind=kind, run="../../../etc/passwd")
    (picker,) = [b for b in at.selectbox if (b.key or "").startswith("pick-")]
    assert picker.value in CASES  # the newest run of the kind, not the path in the URL
