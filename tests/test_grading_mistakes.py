"""Mistakes as students write them, beyond the bug catalogue: each gets its score and one hint.

Every mistake is an edit of the solution notebook's own answer cell (or a short body in its
place), so the code is what a student would hand in, not the catalogue's implementation of
the bug. The expected scores follow the grading rules of :mod:`attention_lessons.grading.spec`:

* a value check passes only when every case matches the reference AND every call honours the
  contract of all questions (inputs unchanged, the promised type, the same answer twice);
* a "must raise" check scores only when the question's value checks all pass;
* one diagnosis per question: the hint of its first failing value check, and no other.

The tests at the end replace grading the reference against itself: every check of every
exercise is shown to fail on some wrong implementation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest
from grading_support import answer_cell, assert_check_can_fail, catalogue, edited_answer, never_raises, verdicts  # tests/grading_support.py

from attention_lessons.grading import evaluate, exercise_ids, get_exercise
from attention_lessons.grading import diagnose, ex08

ROOT = Path(__file__).resolve().parents[1]
STEMS = {"ex01": "ex01_weighted_sums", "ex02": "ex02_softmax", "ex03": "ex03_attention_pooling",
         "ex04": "ex04_scaled_dot_product", "ex05": "ex05_multi_head_numpy", "ex06": "ex06_keras_layer",
         "ex08": "ex08_online_softmax"}


def _answer(exercise: str, name: str) -> str:
    """The solution notebook's answer cell that defines ``name`` (a function or class)."""
    return answer_cell(nbformat.read(ROOT / "solutions" / f"{STEMS[exercise]}.ipynb", as_version=4), name).source


def _namespace(exercise: str) -> dict:
    namespace = {"np": np}
    if exercise == "ex06":
        import math

        from attention_lessons.grading.drivers import _keras

        keras = _keras()
        namespace.update(math=math, keras=keras, ops=keras.ops)
    return namespace


def student(exercise: str, name: str, edits=(), body: str | None = None):
    """The solution's ``name`` with each (old, new) edit applied (every ``old`` must occur), or with
    ``body`` as the whole solution region."""
    namespace = _namespace(exercise)
    exec(compile(edited_answer(_answer(exercise, name), edits, body), f"<{exercise} answer>", "exec"), namespace)
    return namespace[name]


@dataclass
class Mistake:
    name: str
    question: str        # question id
    function: str
    edits: tuple = ()
    body: str | None = None
    score: float = 0.0   # points the question gets
    hint: str = ""       # the one hint (a fragment of it)

    @property
    def exercise(self) -> str:
        return self.question.split(".")[0]

    def build(self):
        return student(self.exercise, self.function, self.edits, self.body)


IN_PLACE = diagnose.IN_PLACE
NOT_ARRAY = "Return NumPy arrays"

SDPA_MINUS_1E9 = """
q, k, v = (np.asarray(a, dtype=float) for a in (q, k, v))
scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
if mask is not None:
    scores = np.where(mask, scores, -1e9)
e = np.exp(scores - scores.max(axis=-1, keepdims=True))
weights = e / e.sum(axis=-1, keepdims=True)
return weights @ v, weights
"""

MISTAKES = [
    # ---- ex01: weighted sums
    Mistake("neuron_weights_its_inputs_in_place", "ex01.q1", "neuron",
            edits=[("x = np.asarray(x, dtype=float)", "x = np.asarray(x)"),
                   ("z = x @ w + b", "x *= w  # weight each input\n    z = x.sum(axis=-1) + b")],
            score=0, hint=IN_PLACE),
    Mistake("neuron_compares_whole_shapes", "ex01.q1", "neuron",
            edits=[("if x.shape[-1:] != w.shape:", "if x.shape != w.shape:")],
            score=2, hint="Use x @ w (or np.dot(x, w))"),
    Mistake("neuron_always_raises", "ex01.q1", "neuron", body="raise ValueError('x and w do not fit')",
            score=0, hint="Compute sum_i w_i x_i + b"),
    Mistake("layer_returns_a_list", "ex01.q2", "layer",
            edits=[("return X @ W + np.asarray(b, dtype=float)", "return (X @ W + np.asarray(b, dtype=float)).tolist()")],
            score=0, hint=NOT_ARRAY),
    Mistake("layer_one_row_per_neuron", "ex01.q2", "layer",
            edits=[("return X @ W + np.asarray(b, dtype=float)", "return W.T @ X.T + np.asarray(b, dtype=float)[:, None]")],
            score=0, hint="Swap the last two axes"),
    Mistake("modulate_scales_the_rates_in_place", "ex01.q3", "modulate", body="""
        if gain < 0:
            raise ValueError(f"gain must be >= 0, got {gain}")
        rates = np.asarray(rates, dtype=float)
        rates *= gain
        rates += shift
        return rates
        """, score=0, hint=IN_PLACE),
    # ---- ex02: softmax
    Mistake("softmax_shifts_x_in_place", "ex02.q1", "softmax",
            edits=[("z = x.astype(np.float32 if dtype == np.float16 else dtype) / temperature\n"
                    "    e = np.exp(z - z.max(axis=axis, keepdims=True))",
                    "x -= x.max(axis=axis, keepdims=True)  # for stability\n"
                    "    e = np.exp(x.astype(np.float32 if dtype == np.float16 else dtype) / temperature)")],
            score=0, hint=IN_PLACE),
    Mistake("softmax_python_sum", "ex02.q1", "softmax",
            edits=[("(e / e.sum(axis=axis, keepdims=True))", "(e / sum(e))")],
            score=0, hint="Normalise along"),
    Mistake("masked_softmax_fills_minus_1e9", "ex02.q2", "masked_softmax", body="""
        x = np.asarray(x, dtype=float)
        z = np.where(mask, x, -1e9)
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
        """, score=2, hint="A query with no visible key gets zero weights"),
    Mistake("masked_softmax_hides_the_true_entries", "ex02.q2", "masked_softmax", body="""
        x = np.asarray(x, dtype=float)
        z = np.where(mask, -np.inf, x)
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
        """, score=0, hint="Mask polarity"),
    Mistake("divisive_normalization_powers_in_place", "ex02.q3", "divisive_normalization", body="""
        drive = np.asarray(drive, dtype=float)
        drive **= n
        return drive / (sigma**n + drive.sum(axis=-1, keepdims=True))
        """, score=0, hint=IN_PLACE),
    # ---- ex03: attention pooling
    Mistake("nadaraya_watson_weights_transposed", "ex03.q1", "nadaraya_watson",
            edits=[("return weights @ v, weights", "return weights @ v, weights.T")],
            score=0, hint="Swap the last two axes"),
    Mistake("nadaraya_watson_returns_the_prediction_only", "ex03.q1", "nadaraya_watson",
            edits=[("return weights @ v, weights", "return weights @ v")],
            score=0, hint="return prediction, weights"),
    Mistake("nadaraya_watson_absolute_distance", "ex03.q1", "nadaraya_watson",
            edits=[("sq_dist = ((q2[:, None, :] - k2[None, :, :]) ** 2).sum(-1)",
                    "sq_dist = np.abs(q2[:, None, :] - k2[None, :, :]).sum(-1)")],
            score=0, hint="weights = softmax(-(q - k)² / (2 h²))"),
    # ---- ex04: scaled dot-product attention
    Mistake("additive_scores_without_batch_axes", "ex04.q1", "additive_scores",
            edits=[("(q @ W_q)[..., :, None, :] + (k @ W_k)[..., None, :, :]", "(q @ W_q)[:, None, :] + (k @ W_k)[None, :, :]")],
            score=1.5, hint="Index with [..., :, None, :]"),
    Mistake("sdpa_scaled_by_the_value_size", "ex04.q2", "scaled_dot_product_attention",
            edits=[("/ np.sqrt(q.shape[-1])", "/ np.sqrt(v.shape[-1])")],
            score=0.5, hint="Check the factor on the scores"),
    Mistake("sdpa_returns_weights_first", "ex04.q2", "scaled_dot_product_attention",
            edits=[("return weights @ v, weights", "return weights, weights @ v")],
            score=0, hint="Return (output, weights) in this order"),
    Mistake("sdpa_keeps_where_the_mask_is_false", "ex04.q2", "scaled_dot_product_attention",
            edits=[("else np.broadcast_to(mask, scores.shape)", "else ~np.broadcast_to(mask, scores.shape)")],
            score=2, hint="Mask polarity is inverted"),
    Mistake("sdpa_fills_minus_1e9", "ex04.q2", "scaled_dot_product_attention", body=SDPA_MINUS_1E9,
            score=3.5, hint="A query with no visible key gets zero weights"),
    Mistake("sdpa_dropout_always_on", "ex04.q2", "scaled_dot_product_attention",
            edits=[("return weights @ v, weights",
                    "weights = weights * (np.random.random(weights.shape) > 0.1) / 0.9  # dropout\n"
                    "    return weights @ v, weights")],
            score=0, hint=diagnose.NOT_REPEATABLE),
    Mistake("causal_mask_of_floats", "ex04.q3", "causal_mask",
            edits=[("return np.arange(s)[None, :] <= np.arange(t)[:, None]", "return np.tril(np.ones((t, s)))")],
            score=0, hint="Return boolean values"),
    Mistake("causal_mask_ignores_s", "ex04.q3", "causal_mask",
            edits=[("return np.arange(s)[None, :] <= np.arange(t)[:, None]",
                    "return np.arange(t)[None, :] <= np.arange(t)[:, None]")],
            score=1, hint="With t queries and s keys"),
    # ---- ex05: multi-head attention in NumPy
    Mistake("split_heads_keeps_time_first", "ex05.q1", "split_heads",
            edits=[(".transpose(0, 2, 1, 3)", "")], score=0, hint="Arrange the axes in the promised order"),
    Mistake("mha_mask_not_broadcast_over_heads", "ex05.q3", "multi_head_attention",
            edits=[("np.asarray(mask, dtype=bool)[:, None]", "np.asarray(mask, dtype=bool)")],
            score=2.5, hint="Broadcast the mask over heads (mask[:, None])"),
    Mistake("mha_reshapes_params_in_place", "ex05.q3", "multi_head_attention",
            edits=[("p = {name: np.asarray(w, dtype=float) for name, w in params.items()}",
                    "p = params\n    p[\"output_kernel\"] = np.reshape(p[\"output_kernel\"], (-1, np.shape(p[\"output_kernel\"])[-1]))"),
                   ('return np.einsum("bnth,nhd->btd", context, p["output_kernel"]) + p["output_bias"]',
                    "b_, n_, t_, h_ = context.shape\n"
                    '    return context.transpose(0, 2, 1, 3).reshape(b_, t_, n_ * h_) @ p["output_kernel"] + p["output_bias"]')],
            score=0, hint=IN_PLACE),
    # ---- ex08: online softmax
    Mistake("online_one_running_max_for_all_queries", "ex08.q1", "online_softmax_attention",
            edits=[("m = np.full(lead + (T, 1), -np.inf)", "m = -np.inf"),
                   ("m_new = np.maximum(m, s.max(axis=-1, keepdims=True))", "m_new = max(m, s.max())")],
            score=3, hint=ex08.SHARED_MAX),
    Mistake("online_scales_q_in_place", "ex08.q1", "online_softmax_attention",
            edits=[("q, k, v = (np.asarray(a, dtype=float) for a in (q, k, v))", "q, k, v = (np.asarray(a) for a in (q, k, v))"),
                   ("q = q / np.sqrt(q.shape[-1])", "q /= np.sqrt(q.shape[-1])")],
            score=0, hint=IN_PLACE),
    Mistake("online_scaled_by_the_value_size", "ex08.q1", "online_softmax_attention",
            edits=[("q = q / np.sqrt(q.shape[-1])", "q = q / np.sqrt(v.shape[-1])")],
            score=0, hint=ex08.GENERIC),
    Mistake("online_wrong_output_within_the_memory_budget", "ex08.q3", "online_softmax_attention",
            edits=[("range(0, S, chunk_size)", "range(0, S - chunk_size, chunk_size)")],
            score=0, hint="The output is wrong on these larger inputs"),
]

LAYER_MISTAKES = [
    Mistake("layer_causal_mask_assumes_t_equals_s", "ex06.q2", "MyMultiHeadAttention",
            edits=[("causal = ops.arange(s)[None, :] <= ops.arange(t)[:, None]",
                    "causal = ops.arange(t)[None, :] <= ops.arange(t)[:, None]")],
            score=1, hint="build the (T, S) triangle from the query's and the value's lengths"),
    Mistake("layer_fully_masked_rows_uniform", "ex06.q2", "MyMultiHeadAttention",
            edits=[("weights = ops.where(mask, weights, 0.0)", "pass")],
            score=1, hint="A query with no visible key gets zero weights"),
    Mistake("layer_scores_batch_time_heads", "ex06.q1", "MyMultiHeadAttention",
            edits=[('"btnh,bsnh->bnts"', '"btnh,bsnh->btns"'), ('"bnts,bsnh->btnh"', '"btns,bsnh->btnh"')],
            score=0, hint="Arrange the axes in the promised order"),
    Mistake("layer_returns_numpy_arrays", "ex06.q1", "MyMultiHeadAttention",
            edits=[("return (output, weights) if return_attention_scores else output",
                    "return (np.asarray(output), np.asarray(weights)) if return_attention_scores else output")],
            score=0, hint="return (output, weights)"),
    Mistake("layer_returns_the_output_only", "ex06.q1", "MyMultiHeadAttention",
            edits=[("return (output, weights) if return_attention_scores else output", "return output")],
            score=0, hint="return (output, weights)"),
]


def _hints(result) -> list[str]:
    """The hints a result shows for its failing value checks (raise checks keep their own)."""
    question = get_exercise(result.id).question(result.id)
    return [c.hint for c, check in zip(result.checks, question.checks) if not c.passed and c.hint and check.compares]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_a_students_mistake_gets_its_score_and_one_hint(mistake):
    result = evaluate(mistake.question, **{mistake.function: mistake.build()})
    assert result.earned == mistake.score, result.report()
    hints = _hints(result)
    assert len(hints) == 1 and mistake.hint in hints[0], result.report()
    assert result.hint == hints[0]


@pytest.mark.parametrize("mistake", LAYER_MISTAKES, ids=[m.name for m in LAYER_MISTAKES])
def test_a_students_keras_layer_mistake_gets_its_score_and_one_hint(mistake):
    test_a_students_mistake_gets_its_score_and_one_hint(mistake)


@pytest.mark.parametrize("seed", [0, 57, 60, 135])
def test_dropout_left_on_is_named_as_not_repeatable_whatever_it_drops(seed):
    """Dropout may leave the smallest failing case unchanged on both calls, where it looks like a
    1/0.9 factor (seeds 57, 60 and 135 of NumPy's global generator do): the answers that differed
    on another case still name the mistake."""
    mistake = next(m for m in MISTAKES if m.name == "sdpa_dropout_always_on")
    np.random.seed(seed)
    result = evaluate(mistake.question, **{mistake.function: mistake.build()})
    assert _hints(result) == [diagnose.NOT_REPEATABLE], result.report()


def test_mistakes_cover_every_exercise_graded_by_comparison():
    covered = {m.exercise for m in MISTAKES + LAYER_MISTAKES}
    assert covered == set(STEMS), set(STEMS) - covered   # ex07 (a trained model): tests/test_grading_ex07.py


# ---------------------------------------------------------------- what the engine promises, generically

RAISING = [q for ex in exercise_ids() for q in get_exercise(ex).questions
           if any(c.expect == "raise" for c in q.checks)]


@pytest.mark.parametrize("question", RAISING, ids=[q.id for q in RAISING])
def test_raising_value_error_for_every_input_earns_nothing(question):
    def always_raises(*args, **kwargs):
        raise ValueError("bad input")
    result = evaluate(question.id, **{question.function: always_raises})
    assert result.earned == 0, result.report()
    raise_checks = [c for c, check in zip(result.checks, question.checks) if check.expect == "raise"]
    assert all("counts once the checks of the values above pass" in c.detail for c in raise_checks)


def test_an_untouched_answer_is_not_attempted_with_one_hint():
    def softmax(x, axis=-1, temperature=1.0):
        raise NotImplementedError("Write your solution here")
    result = evaluate("ex02.q1", softmax=softmax)
    assert result.not_attempted and result.earned == 0
    assert [c.hint for c in result.checks if c.hint] == ["Replace `raise NotImplementedError` in `softmax` with your code."]
    assert "(not attempted)" in result.report().splitlines()[0]


def test_the_notebook_summary_says_not_attempted(capsys):
    from attention_lessons.grading import summary

    def untouched(*args, **kwargs):
        raise NotImplementedError("Write your solution here")

    untouched.__module__ = "__main__"   # as if defined in the notebook: summary() refuses library code
    import __main__
    names = {"neuron": untouched, "layer": untouched, "modulate": untouched}
    saved = {k: getattr(__main__, k) for k in names if hasattr(__main__, k)}
    try:
        for k, fn in names.items():
            setattr(__main__, k, fn)
        summary("ex01")
    finally:
        for k in names:
            if k in saved:
                setattr(__main__, k, saved[k])
            else:
                delattr(__main__, k)
    out = capsys.readouterr().out
    assert "Total: 0/7.5 — not attempted" in out and out.count("(not attempted)") == 3


def test_a_catalogued_bug_gets_its_hint_only_when_it_explains_every_case():
    """A softmax with the temperature multiplied AND an unguarded axis bug matches neither
    catalogued bug on every case: no bug's hint, the smallest failing case instead."""
    both = student("ex02", "softmax", [("/ temperature", "* temperature"), ("axis=axis", "axis=0")])
    result = evaluate("ex02.q1", softmax=both)
    catalogue = {b.hint for b in get_exercise("ex02").question("ex02.q1").bugs}
    assert not set(_hints(result)) & catalogue, result.report()
    assert "Smallest failing case" in result.checks[0].detail


def test_the_broadcast_hint_of_masked_softmax_does_not_recommend_a_nan_recipe():
    hint = next(c.hint for c in get_exercise("ex02").question("ex02.q2").checks if "broadcasts" in c.name)
    assert "np.where(mask, x, -np.inf)" not in hint and "divide by the row sum only where it is > 0" in hint


# ---------------------------------------------------------------- every check can fail

def _solution(question):
    return student(question.id.split(".")[0], question.function)


def _wrong_implementations(question):
    """Known wrong answers to ``question``: the catalogue (as a student would hand it in), the
    mistakes above, and, for "must raise" checks, the solution that never raises."""
    out = catalogue(question) + [m.build() for m in MISTAKES + LAYER_MISTAKES if m.question == question.id]
    if any(c.expect == "raise" for c in question.checks):
        out.append(never_raises(_solution(question)))
    return out


@functools.cache
def _verdicts(question_id: str) -> list[dict]:
    question = get_exercise(question_id.split(".")[0]).question(question_id)
    return verdicts(question, _solution(question), _wrong_implementations(question))


CHECKS = [(q, c) for ex in STEMS for q in get_exercise(ex).questions for c in q.checks]


@pytest.mark.parametrize("question, check", CHECKS, ids=[f"{q.id}:{c.name[:40]}" for q, c in CHECKS])
def test_every_check_passes_the_solution_and_fails_a_wrong_implementation(question, check):
    assert_check_can_fail(_verdicts(question.id), check)
