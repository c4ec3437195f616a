"""Helpers shared by the grading tests."""

from __future__ import annotations

import numpy as np


def never_raises(fn):
    """``fn`` with its ValueError swallowed: a wrong answer to a "must raise" check only."""
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError:
            return np.zeros(1)
    return wrapped


def edited_answer(source: str, edits=(), body: str | None = None) -> str:
    """An answer cell's ``source`` as a student hands it in: with ``body`` as the whole solution
    region (between ``# BEGIN SOLUTION`` and ``# END SOLUTION``), then each (old, new) edit applied;
    every ``old`` must occur, so a test cannot silently grade the unchanged solution."""
    import textwrap

    from attention_lessons.authoring import BEGIN, END

    if body is not None:
        head, rest = source.split(BEGIN)
        indent = head.splitlines()[-1]
        tail = rest.split(END, 1)[1]
        source = (head + BEGIN + "\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), indent) + "\n"
                  + indent + END + tail)
    for old, new in edits:
        assert old in source, f"{old!r} not in the answer cell"
        source = source.replace(old, new)
    return source


def answer_cell(nb, name: str):
    """The cell of notebook ``nb`` tagged ``answer`` that defines ``name`` (a function or class)."""
    for cell in nb.cells:
        if "answer" in cell.metadata.get("tags", []) and (f"def {name}(" in cell.source or f"class {name}(" in cell.source):
            return cell
    raise AssertionError(f"no answer cell defines {name}")


def with_edited_answer(nb, name: str, edits=(), body: str | None = None):
    """A copy of notebook ``nb`` whose answer cell for ``name`` is edited as :func:`edited_answer` says:
    a submission as a student hands it in, for the batch grader."""
    import copy

    nb = copy.deepcopy(nb)
    cell = answer_cell(nb, name)
    cell.source = edited_answer(cell.source, edits, body)
    return nb


# ---------------------------------------------------------------- every check can fail

def catalogue(question) -> list:
    """The question's catalogued bugs as a student would hand them in: for a question with a
    driver each bug is the driver bound to the buggy function, which ``target()`` returns."""
    return [b.fn.target() if question.driver else b.fn for b in question.bugs]


def verdicts(question, solution, wrong) -> list[dict]:
    """{check name: passed} of ``question`` for ``solution`` first, then for each of ``wrong``."""
    from attention_lessons.grading import evaluate

    return [{c.name: c.passed for c in evaluate(question.id, **{question.function: fn}).checks}
            for fn in [solution, *wrong]]


def assert_check_can_fail(rows: list[dict], check) -> None:
    """``check`` passes the solution (``rows[0]``) and fails at least one wrong implementation."""
    assert rows[0][check.name], f"the solution fails {check.name!r}"
    assert any(not row[check.name] for row in rows[1:]), f"no wrong implementation fails {check.name!r}"
