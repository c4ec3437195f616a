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
