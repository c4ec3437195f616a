"""Exercise 08 (online-softmax attention): behaviours of its checks beyond the shared catalogue tests.

The catalogue's own buggy implementations are tested by tests/test_grading.py; here the
mistakes are written as students write them, as edits of the solution notebook's answer,
so the hints are shown to hold for code that is not the catalogue's.
"""

import textwrap
import tracemalloc
from pathlib import Path

import nbformat
import numpy as np
import pytest

from attention_lessons.attention import scaled_dot_product_attention
from attention_lessons.authoring import BEGIN, END
from attention_lessons.grading import evaluate, get_exercise
from attention_lessons.grading import ex08
from attention_lessons.grading.batch import GradeOptions
from attention_lessons.grading.drivers import online_memory
from attention_lessons.grading.spec import _call, build_cases, judge

ROOT = Path(__file__).resolve().parents[1]
NAME = "online_softmax_attention"


def _answer_source():
    nb = nbformat.read(ROOT / "solutions" / "ex08_online_softmax.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if "answer" in c.metadata.get("tags", []) and f"def {NAME}(" in c.source]
    assert len(cells) == 1
    return cells[0]


SOURCE = _answer_source()


def _student(edits=(), body=None):
    """The solution's function with each (old, new) edit applied (every ``old`` must occur), or with ``body``."""
    source = SOURCE
    if body is not None:
        head, rest = source.split(BEGIN)
        source = head + BEGIN + "\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n    " + END
    for old, new in edits:
        assert old in source, f"{old!r} not in the solution's answer cell"
        source = source.replace(old, new)
    namespace = {"np": np}
    exec(compile(source, "answer", "exec"), namespace)
    return namespace[NAME]


SOLUTION = _student()

NAIVE_BODY = """
q, k, v = (np.asarray(a, dtype=float) for a in (q, k, v))
scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
if causal:
    scores = np.where(np.tril(np.ones(scores.shape[-2:], dtype=bool)), scores, -np.inf)
w = np.exp(scores - scores.max(axis=-1, keepdims=True))
return (w / w.sum(axis=-1, keepdims=True)) @ v
"""

# (name, edits of the solution, question, the hint it must get)
STUDENT_BUGS = [
    ("sum_not_rescaled", [("l = l * alpha + ", "l = l + ")], "ex08.q1", ex08.RESCALE_SUM),
    ("accumulator_not_rescaled", [("acc = acc * alpha + ", "acc = acc + ")], "ex08.q1", ex08.RESCALE_ACC),
    ("nothing_rescaled", [("l = l * alpha + ", "l = l + "), ("acc = acc * alpha + ", "acc = acc + ")], "ex08.q1",
     ex08.RESCALE_BOTH),
    ("factor_upside_down", [("alpha = np.exp(m - m_new)", "alpha = np.exp(m_new - m)")], "ex08.q1", ex08.MAX_STAYS),
    ("max_not_kept", [("        m = m_new\n", "")], "ex08.q1", ex08.MAX_NOT_KEPT),
    ("no_running_max", [("alpha = np.exp(m - m_new)", "alpha = 1.0"), ("p = np.exp(s - m_new)", "p = np.exp(s)")],
     "ex08.q1", ex08.NO_MAX),
    ("unscaled", [("q = q / np.sqrt(q.shape[-1])", "pass")], "ex08.q1", ex08.UNSCALED),
    ("range_stops_a_chunk_early", [("range(0, S, chunk_size)", "range(0, S - chunk_size, chunk_size)")], "ex08.q1",
     ex08.STOP_EARLY),
    ("partial_chunk_skipped", [("range(0, S, chunk_size)", "range(0, S // chunk_size * chunk_size, chunk_size)")],
     "ex08.q1", ex08.SKIP_PARTIAL),
    ("overlapping_chunks", [("stop = min(start + chunk_size, S)", "stop = min(start + chunk_size + 1, S)")], "ex08.q1",
     ex08.OVERLAP),
    ("causal_ignored", [("if causal:", "if False:")], "ex08.q2", ex08.IGNORED),
    ("causal_without_diagonal", [("<= np.arange(T)[:, None]", "< np.arange(T)[:, None]")], "ex08.q2",
     ex08.NO_DIAGONAL),
    ("causal_with_local_indices", [("np.arange(start, stop)[None, :]", "np.arange(stop - start)[None, :]")], "ex08.q2",
     ex08.LOCAL),
    ("causal_bottom_right", [("<= np.arange(T)[:, None]", "<= np.arange(T)[:, None] + (S - T)")], "ex08.q2",
     ex08.BOTTOM_RIGHT),
]


@pytest.mark.parametrize("name, edits, qid, hint", STUDENT_BUGS, ids=[b[0] for b in STUDENT_BUGS])
def test_a_student_style_bug_gets_its_hint(name, edits, qid, hint):
    result = evaluate(qid, **{NAME: _student(edits)})
    assert result.earned < result.points
    assert hint in [c.hint for c in result.checks if not c.passed], result.report()


def test_the_solution_scores_full_marks_on_every_question_memory_included():
    for question in get_exercise("ex08").questions:
        result = evaluate(question.id, **{NAME: SOLUTION})
        assert result.earned == result.points, result.report()


@pytest.mark.parametrize("seed", [1, 2, GradeOptions().seed])
def test_the_solution_passes_on_other_seeds_in_float64_and_in_the_inputs_precision(seed):
    in_input_precision = _student([("np.asarray(a, dtype=float)", "np.asarray(a, dtype=np.result_type(a, np.float32))"),
                                   ("np.full(lead + (T, 1), -np.inf)", "np.full(lead + (T, 1), -np.inf, q.dtype)"),
                                   ("np.zeros(lead + (T, 1))", "np.zeros(lead + (T, 1), q.dtype)"),
                                   ("np.zeros(lead + (T, v.shape[-1]))", "np.zeros(lead + (T, v.shape[-1]), q.dtype)")])
    for question in get_exercise("ex08").questions[:2]:
        cases = build_cases(question, seed)
        for fn in (SOLUTION, in_input_precision):
            result = judge(question, cases, [[_call(fn, c) for c in cc] for cc in cases])
            assert result.earned == result.points, result.report()


def test_the_catalogue_hints_hold_on_the_batch_graders_seed():
    """tests/test_grading.py checks the catalogue on the notebook's seed; the batch grader uses another.
    One diagnosis per question: the bug's hint, and every check that lists the bug fails."""
    seed = GradeOptions().seed
    for question in get_exercise("ex08").questions[:2]:
        cases = build_cases(question, seed)
        for bug in question.bugs:
            result = judge(question, cases, [[_call(bug.fn, c) for c in cc] for cc in cases])
            assert result.hint == bug.hint, (question.id, bug.fn.__name__)
            for check, outcome in zip(question.checks, result.checks):
                if any(b is bug for b in check.bugs):
                    assert not outcome.passed, (check.name, bug.fn.__name__)


def test_naive_attention_passes_questions_1_and_2_but_not_the_memory_check():
    naive = _student(body=NAIVE_BODY)
    for qid in ("ex08.q1", "ex08.q2"):
        result = evaluate(qid, **{NAME: naive})
        assert result.earned == result.points, result.report()
    result = evaluate("ex08.q3", **{NAME: naive})
    assert result.earned == 0
    assert result.checks[0].hint == ex08.FULL_MATRIX
    assert "full (T, S) score matrix" in result.checks[0].hint
    assert "expected 0, got 1" in result.checks[0].detail  # the memory flag, named before the output


def test_ignoring_chunk_size_is_one_big_chunk_and_loses_the_memory_points():
    one_chunk = _student([("range(0, S, chunk_size)", "range(0, S, S)"), ("stop = min(start + chunk_size, S)", "stop = S")])
    assert evaluate("ex08.q1", **{NAME: one_chunk}).earned == get_exercise("ex08").question("ex08.q1").points
    result = evaluate("ex08.q3", **{NAME: one_chunk})
    assert result.earned == 0 and result.checks[0].hint == ex08.FULL_MATRIX


def test_returning_output_and_weights_is_reported_clearly():
    pair = _student([("return acc / l ", "return acc / l, l ")])
    result = evaluate("ex08.q1", **{NAME: pair})
    assert result.earned == 0 and "expected 1 returned value(s) (the output), received 2" in result.checks[0].detail
    result = evaluate("ex08.q3", **{NAME: pair})
    assert result.earned == 0 and "return the output array only" in result.checks[0].detail


def test_worked_example_of_the_notebook():
    s = np.array([1.0, 3.0, 0.0, 2.0, 5.0])
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = SOLUTION(np.array([[1.0]]), s[:, None], values[:, None], 2)
    np.testing.assert_allclose(out, [[4.551692154154847]])
    np.testing.assert_allclose(out, scaled_dot_product_attention([[1.0]], s[:, None], values[:, None])[0])


def test_memory_driver_flags_only_what_passes_the_budget_and_restores_tracing():
    small = lambda q, k, v, chunk_size: q + 1.0
    big = lambda q, k, v, chunk_size: np.ones((3, 2**20)).sum() + q  # 24 MiB scratch
    q = np.zeros((2, 2))
    assert not tracemalloc.is_tracing()
    assert online_memory(small, q, q, q, 1)[0] == 0.0
    assert online_memory(big, q, q, q, 1)[0] == 1.0
    assert online_memory(big, q, q, q, 1, budget_mib=32)[0] == 0.0
    assert not tracemalloc.is_tracing()
    tracemalloc.start()  # a student who traces memory themselves keeps their tracing
    try:
        np.ones(2**22)  # an earlier peak of 32 MiB does not count against the call
        assert online_memory(small, q, q, q, 1)[0] == 0.0
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


def test_memory_budget_sits_between_a_chunked_loop_and_one_score_matrix():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2048, 16)) for _ in range(3))
    tracemalloc.start()
    try:
        SOLUTION(q, k, v, 128)
        chunked = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    matrix = 2048 * 2048 * 8
    assert chunked < ex08.BUDGET_MIB * 2**20 * 0.75 and ex08.BUDGET_MIB * 2**20 <= matrix / 2
