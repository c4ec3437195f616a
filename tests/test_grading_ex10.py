"""Exercise 10 (rotary positions, grouped-query attention): the checks beyond the shared catalogue tests.

tests/test_grading.py runs every catalogued bug through the checks (its hint and no other);
here the mistakes are written as students write them, as edits of the solution notebook's
answers, so the hints are shown to hold for code that is not the catalogue's own.
"""

from __future__ import annotations

import functools
from pathlib import Path

import nbformat
import numpy as np
import pytest
from grading_support import (answer_cell, assert_check_can_fail, catalogue, edited_answer, never_raises, verdicts,
                             with_edited_answer)  # tests/grading_support.py

from attention_lessons.attention import grouped_query_attention as reference_gqa
from attention_lessons.attention import rotary_embedding as reference_rope
from attention_lessons.attention import scaled_dot_product_attention
from attention_lessons.grading import diagnose, evaluate, ex10, get_exercise
from attention_lessons.grading.batch import GradeOptions, grade_many
from attention_lessons.grading.spec import _call, build_cases, judge

ROOT = Path(__file__).resolve().parents[1]
STEM = "ex10_rope_and_gqa"


def _answers() -> dict[str, str]:
    nb = nbformat.read(ROOT / "solutions" / f"{STEM}.ipynb", as_version=4)
    return {name: answer_cell(nb, name).source for name in ("rotary_embedding", "grouped_query_attention")}


ANSWERS = _answers()


def student(name: str, edits=(), body: str | None = None):
    """The solution's ``name`` with each (old, new) edit applied (every ``old`` must occur), or with ``body``."""
    namespace = {"np": np}
    exec(compile(edited_answer(ANSWERS[name], edits, body), "answer", "exec"), namespace)
    return namespace[name]


ROPE, GQA = "rotary_embedding", "grouped_query_attention"

# (name, function, edits, the hint it must get)
STUDENT_BUGS = [
    ("rope_neighbouring_pairs", ROPE,
     [("x1, x2 = x[..., : dim // 2], x[..., dim // 2:]", "x1, x2 = x[..., 0::2], x[..., 1::2]"),
      ("return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)",
       "return np.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(np.shape(x1 * cos)[:-1] + (dim,))")],
     ex10.INTERLEAVED),
    ("rope_rotate_half_with_repeated_angles", ROPE,
     [("cos, sin = np.cos(theta), np.sin(theta)",
       "cos, sin = np.repeat(np.cos(theta), 2, axis=-1), np.repeat(np.sin(theta), 2, axis=-1)"),
      ("return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)",
       "return x * cos + np.concatenate([-x2, x1], axis=-1) * sin")],
     ex10.REPEAT_ANGLES),
    ("rope_exponent_i_over_d", ROPE, [("-np.arange(0, dim, 2) / dim", "-np.arange(dim // 2) / dim")], ex10.FREQ_I_OVER_D),
    ("rope_exponent_sign", ROPE, [("-np.arange(0, dim, 2) / dim", "np.arange(0, dim, 2) / dim")], ex10.FREQ_POSITIVE),
    ("rope_exponent_over_half", ROPE, [("-np.arange(0, dim, 2) / dim", "-np.arange(0, dim, 2) / (dim // 2)")],
     ex10.FREQ_DOUBLE),
    ("rope_one_frequency", ROPE, [("theta = positions[..., None] * omega", "theta = positions[..., None] * omega[:1]")],
     ex10.ONE_FREQUENCY),
    ("rope_backwards", ROPE, [("x1 * cos - x2 * sin, x2 * cos + x1 * sin", "x1 * cos + x2 * sin, x2 * cos - x1 * sin")],
     ex10.MINUS_SIN),
    ("rope_positions_ignored", ROPE, [("if positions is None:\n        positions = np.arange(n_rows)",
                                       "positions = np.arange(n_rows)")], ex10.POSITIONS_IGNORED),
    ("rope_positions_from_one", ROPE, [("positions = np.asarray(positions, dtype=float)",
                                        "positions = np.asarray(positions, dtype=float) + 1")], ex10.POSITIONS_FROM_ONE),
    ("rope_fixed_base", ROPE, [("omega = max_wavelength **", "omega = 10000.0 **")], ex10.WAVELENGTH_IGNORED),
    ("gqa_tile", GQA, [("k = np.repeat(k, group, axis=-3)", "k = np.tile(k, (1, group, 1, 1))"),
                       ("v = np.repeat(v, group, axis=-3)", "v = np.tile(v, (1, group, 1, 1))")], ex10.TILE),
    ("gqa_head_index_divided_by_nkv", GQA,
     [("k = np.repeat(k, group, axis=-3)", "k = k[:, np.arange(n_q) // n_kv]"),
      ("v = np.repeat(v, group, axis=-3)", "v = v[:, np.arange(n_q) // n_kv]")], ex10.DIVIDE_BY_NKV),
    ("gqa_unscaled", GQA, [(" / np.sqrt(q.shape[-1])", "")], ex10.UNSCALED),
    ("gqa_scaled_by_h", GQA, [("/ np.sqrt(q.shape[-1])", "/ q.shape[-1]")], ex10.BY_H),
    ("gqa_scaled_by_all_heads", GQA, [("/ np.sqrt(q.shape[-1])", "/ np.sqrt(n_q * q.shape[-1])")], ex10.BY_ALL_HEADS),
    ("gqa_softmax_over_the_queries", GQA, [("top = scores.max(axis=-1, keepdims=True)", "top = scores.max(axis=-2, keepdims=True)"),
                                           ("total = e.sum(axis=-1, keepdims=True)", "total = e.sum(axis=-2, keepdims=True)")],
     ex10.QUERY_AXIS),
    ("gqa_mask_inverted", GQA, [("np.where(np.broadcast_to(mask, scores.shape), scores, -np.inf)",
                                 "np.where(np.broadcast_to(mask, scores.shape), -np.inf, scores)")], ex10.INVERTED),
    ("gqa_fill_minus_1e9", GQA, [("scores, -np.inf)", "scores, -1e9)")], ex10.UNIFORM_ROWS),
]

NAN_BODY = """
q, k, v = (np.asarray(a, dtype=float) for a in (q, k, v))
if q.shape[1] % k.shape[1]:
    raise ValueError("Nkv must divide Nq")
g = q.shape[1] // k.shape[1]
k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
if mask is not None:
    s = np.where(mask, s, -np.inf)
e = np.exp(s - s.max(-1, keepdims=True))
w = e / e.sum(-1, keepdims=True)
return w @ v, w
"""

MASK_AFTER_BODY = """
q, k, v = (np.asarray(a, dtype=float) for a in (q, k, v))
if q.shape[1] % k.shape[1]:
    raise ValueError("Nkv must divide Nq")
g = q.shape[1] // k.shape[1]
k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
s = np.einsum("bnth,bnsh->bnts", q, k) / np.sqrt(q.shape[-1])
w = np.exp(s - s.max(-1, keepdims=True))
w = w / w.sum(-1, keepdims=True)
if mask is not None:
    w = w * mask
return w @ v, w
"""

STUDENT_BUGS += [("gqa_unguarded_fully_masked_row", GQA, NAN_BODY, ex10.NAN_ROWS),
                 ("gqa_mask_after_softmax", GQA, MASK_AFTER_BODY, ex10.MASK_AFTER)]


def _build(function, change):
    return student(function, body=change) if isinstance(change, str) else student(function, change)


QUESTIONS = {ROPE: "ex10.q1", GQA: "ex10.q2"}


@pytest.mark.parametrize("name, function, change, hint", STUDENT_BUGS, ids=[b[0] for b in STUDENT_BUGS])
def test_a_student_style_bug_gets_its_hint_and_no_other(name, function, change, hint):
    result = evaluate(QUESTIONS[function], **{function: _build(function, change)})
    assert result.earned < result.points
    assert [c.hint for c in result.checks if not c.passed and c.hint] == [hint], result.report()


def test_the_catalogue_covers_every_student_style_bug_listed_here():
    hints = {b[3] for b in STUDENT_BUGS}
    assert hints == set(ex10.ROPE_CATALOGUE.values()) | set(ex10.GQA_CATALOGUE.values()) - {ex10.BY_KV_HEADS}


@pytest.mark.parametrize("seed", [0, 1, 2, GradeOptions().seed])
def test_the_solution_scores_full_marks_on_any_seed(seed):
    for question in get_exercise("ex10").questions:
        cases = build_cases(question, seed)
        fn = student(question.function)
        result = judge(question, cases, [[_call(fn, c) for c in cc] for cc in cases])
        assert result.earned == result.points, result.report()


def test_an_implementation_in_float32_passes_too():
    in_float32 = student(ROPE, [("x = np.asarray(x, dtype=float)", "x = np.asarray(x, dtype=np.float32)")])
    assert evaluate("ex10.q1", **{ROPE: in_float32}).earned == get_exercise("ex10").question("ex10.q1").points


def test_rotating_x_in_place_gets_the_in_place_hint():
    in_place = student(ROPE, [("x = np.asarray(x, dtype=float)", "x = np.asarray(x)"),
                              ("return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)",
                               "x[...] = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)\n"
                               "    return x")])
    result = evaluate("ex10.q1", **{ROPE: in_place})
    assert result.earned == 0 and result.hint == diagnose.IN_PLACE, result.report()


def test_returning_weights_first_is_named():
    swapped = student(GQA, [("return weights @ v, weights", "return weights, weights @ v")])
    result = evaluate("ex10.q2", **{GQA: swapped})
    assert result.earned == 0 and "Return (output, weights) in this order" in result.hint, result.report()


def test_an_untouched_answer_is_not_attempted():
    def rotary_embedding(x, positions=None, max_wavelength=10000.0):
        raise NotImplementedError("Write your solution here")
    result = evaluate("ex10.q1", rotary_embedding=rotary_embedding)
    assert result.not_attempted and result.earned == 0


def test_the_notebooks_worked_example_and_the_relative_offset_property():
    rope = student(ROPE)
    example = rope(np.array([[1.0, 2.0, 0.0, 0.0]]), positions=[1])
    np.testing.assert_allclose(example, [[np.cos(1), 2 * np.cos(0.01), np.sin(1), 2 * np.sin(0.01)]], rtol=1e-12)
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(1, 8)), rng.normal(size=(1, 8))
    scores = [float((rope(q, [p]) @ rope(k, [p + 3]).T)[0, 0]) for p in (0, 5, 117)]
    np.testing.assert_allclose(scores, scores[0], rtol=1e-10)   # only the offset (3) matters


def test_the_solution_agrees_with_the_package_and_with_attention_per_head():
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(2, 6, 3, 4)), rng.normal(size=(2, 2, 5, 4)), rng.normal(size=(2, 2, 5, 4))
    out, weights = student(GQA)(q, k, v)
    for head in range(6):   # groups of 3: head i reads KV head i // 3
        expected = scaled_dot_product_attention(q[:, head], k[:, head // 3], v[:, head // 3])
        np.testing.assert_allclose(out[:, head], expected[0], rtol=1e-12)
        np.testing.assert_allclose(weights[:, head], expected[1], rtol=1e-12)
    np.testing.assert_allclose(out, reference_gqa(q, k, v)[0], rtol=1e-12)
    x = rng.normal(size=(2, 3, 4, 6))
    np.testing.assert_allclose(student(ROPE)(x, [[[2, 3, 4, 9]]]), reference_rope(x, [[[2, 3, 4, 9]]]), rtol=1e-12)


CHECKS = [(q, c) for q in get_exercise("ex10").questions for c in q.checks]


@pytest.mark.parametrize("question, check", CHECKS, ids=[f"{q.id}:{c.name[:40]}" for q, c in CHECKS])
def test_every_check_passes_the_solution_and_fails_a_wrong_implementation(question, check):
    assert_check_can_fail(_verdicts(question.id), check)


@functools.cache
def _verdicts(question_id: str) -> list[dict]:
    question = get_exercise("ex10").question(question_id)
    solution = student(question.function)
    wrong = catalogue(question) + [_build(f, change) for _, f, change, _ in STUDENT_BUGS if f == question.function]
    return verdicts(question, solution, wrong + [never_raises(solution)])


# ---------------------------------------------------------------- batch grading


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ex10")
    # The solution (full marks) and the untouched exercise (zero) are graded with every other
    # exercise's in tests/test_grading.py; here, one buggy submission.
    solution = nbformat.read(ROOT / "solutions" / f"{STEM}.ipynb", as_version=4)
    nbformat.write(with_edited_answer(solution, GQA, [("np.repeat(k, group, axis=-3)", "np.tile(k, (1, group, 1, 1))"),
                                                      ("np.repeat(v, group, axis=-3)", "np.tile(v, (1, group, 1, 1))")]),
                   folder / "tiled.ipynb")
    rows = grade_many(sorted(folder.glob("*.ipynb")), GradeOptions(cell_timeout=30, call_timeout=10), jobs=1)
    return {Path(r["file"]).stem: r for r in rows}


def test_batch_grading_names_the_bug_of_a_submission(graded):
    row = graded["tiled"]
    feedback = next(f for f in row["feedback"] if f["id"] == "ex10.q2")
    assert row["questions"]["ex10.q1"] == 4 and feedback["earned"] < feedback["points"]
    assert feedback["hint"] == ex10.TILE


def test_the_graded_kernel_gets_stubs_for_the_references_and_ex07_keeps_the_modules_it_may_use(tmp_path):
    from attention_lessons.grading import sandbox

    stripped = sandbox.strip_package(tmp_path / "ex10", sandbox.hidden_modules(get_exercise("ex10")))
    for stub in ("attention.py", "layers.py", "modern.py", "grading/ex10.py", "grading/ex09.py"):
        assert "raise ImportError" in (stripped / stub).read_text() and "def " not in (stripped / stub).read_text()
    # ex07 may use layers, which imports modern (GroupQueryAttention, the cached layers): both stay.
    kept = sandbox.strip_package(tmp_path / "ex07", sandbox.hidden_modules(get_exercise("ex07")))
    for name in ("layers.py", "modern.py"):
        assert (kept / name).read_text() == (sandbox.package_dir() / name).read_text()
