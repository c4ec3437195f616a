"""Exercise 09 (decoding with a KV cache): the checks beyond the shared catalogue tests.

tests/test_grading.py runs every catalogued bug through the checks (its hint and no other);
here the mistakes are written as students write them, as edits of the solution notebook's
answers (run next to the notebook's given decoder), so the hints are shown to hold for code
that is not the catalogue's own.
"""

from __future__ import annotations

import functools
from pathlib import Path

import nbformat
import numpy as np
import pytest
from grading_support import (answer_cell, assert_check_can_fail, catalogue, edited_answer, never_raises, verdicts,
                             with_edited_answer)  # tests/grading_support.py

from attention_lessons.grading import diagnose, evaluate, ex09, get_exercise
from attention_lessons.grading.batch import GradeOptions, grade_many
from attention_lessons.grading.spec import build_cases

ROOT = Path(__file__).resolve().parents[1]
STEM = "ex09_kv_cache"
UPDATE, ATTEND, GENERATE = "update_cache", "cached_attention", "generate"
QUESTIONS = {UPDATE: "ex09.q1", ATTEND: "ex09.q2", GENERATE: "ex09.q3"}


def _cells():
    nb = nbformat.read(ROOT / "solutions" / f"{STEM}.ipynb", as_version=4)
    model = [c.source for c in nb.cells if c.cell_type == "code" and "def make_params(" in c.source]
    assert len(model) == 1 and sum("answer" in c.metadata.get("tags", []) for c in nb.cells) == 3
    return model[0], {name: answer_cell(nb, name).source for name in QUESTIONS}


MODEL, ANSWERS = _cells()


def notebook(edits: dict | None = None) -> dict:
    """The namespace of the solved notebook: the given decoder and the three answers, with
    ``edits`` = {function: [(old, new), ...]} applied to the answers (every ``old`` must occur)."""
    namespace = {"np": np}
    exec(compile(MODEL, "model", "exec"), namespace)
    for name, source in ANSWERS.items():
        exec(compile(edited_answer(source, (edits or {}).get(name, ())), name, "exec"), namespace)
    return namespace


def student(name: str, edits=()):
    return notebook({name: edits})[name]


# (name, function, edits, the hint it must get)
STUDENT_BUGS = [
    ("update_one_slot_late", UPDATE, [("new[:, 0, index:index + t_new] = k_new", "new[:, 0, index + 1:index + 1 + t_new] = k_new"),
                                      ("new[:, 1, index:index + t_new] = v_new", "new[:, 1, index + 1:index + 1 + t_new] = v_new"),
                                      ("index + t_new > s_max", "index + 1 + t_new > s_max")], ex09.AFTER),
    ("update_keys_and_values_swapped", UPDATE, [("new[:, 0, index:index + t_new] = k_new", "new[:, 0, index:index + t_new] = v_new"),
                                                ("new[:, 1, index:index + t_new] = v_new", "new[:, 1, index:index + t_new] = k_new")],
     ex09.SWAPPED),
    ("update_values_slot_gets_the_keys", UPDATE, [("new[:, 1, index:index + t_new] = v_new", "new[:, 1, index:index + t_new] = k_new")],
     ex09.KEYS_TWICE),
    ("update_first_token_only", UPDATE, [("new[:, 0, index:index + t_new] = k_new", "new[:, 0, index] = k_new[:, 0]"),
                                         ("new[:, 1, index:index + t_new] = v_new", "new[:, 1, index] = v_new[:, 0]")],
     ex09.FIRST_ONLY),
    ("update_writes_to_the_end", UPDATE, [("new[:, 0, index:index + t_new] = k_new", "new[:, 0, index:] = k_new"),
                                          ("new[:, 1, index:index + t_new] = v_new", "new[:, 1, index:] = v_new")], ex09.TO_END),
    ("attend_every_slot", ATTEND, [("scores = np.where(visible, scores, -np.inf)", "pass")], ex09.ALL_VISIBLE),
    ("attend_without_itself", ATTEND, [("<= index + np.arange(t_new)", "< index + np.arange(t_new)")], ex09.EXCLUDES_SELF),
    ("attend_one_slot_too_many", ATTEND, [("<= index + np.arange(t_new)", "<= index + 1 + np.arange(t_new)")], ex09.SEES_NEXT),
    ("attend_mask_without_index", ATTEND, [("<= index + np.arange(t_new)", "<= np.arange(t_new)")], ex09.LOCAL),
    ("attend_block_sees_the_whole_block", ATTEND,
     [("visible = np.arange(s_max)[None, :] <= index + np.arange(t_new)[:, None]",
       "visible = np.arange(s_max)[None, :] < index + t_new")], ex09.BLOCK_NOT_CAUSAL),
    ("attend_values_as_keys", ATTEND, [("keys, values = cache[:, 0], cache[:, 1]", "keys, values = cache[:, 1], cache[:, 0]")],
     ex09.KV_SWAPPED),
    ("attend_softmax_over_the_queries", ATTEND,
     [("np.max(scores, axis=-1, keepdims=True)", "np.max(scores, axis=-2, keepdims=True)"),
      ("np.sum(weights, axis=-1, keepdims=True)", "np.sum(weights, axis=-2, keepdims=True)")], ex09.QUERY_AXIS),
    ("attend_unscaled", ATTEND, [(" / np.sqrt(q_new.shape[-1])", "")], ex09.ATT_UNSCALED),
    ("attend_scaled_by_h", ATTEND, [("/ np.sqrt(q_new.shape[-1])", "/ q_new.shape[-1]")], ex09.ATT_BY_H),
    ("attend_scaled_by_all_heads", ATTEND, [("/ np.sqrt(q_new.shape[-1])", "/ np.sqrt(q_new.shape[-2] * q_new.shape[-1])")],
     ex09.ATT_BY_ALL_HEADS),
    ("generate_positions_restart_at_0", GENERATE, [("project(params, x, np.array([index]))", "project(params, x, np.arange(1))")],
     ex09.POSITIONS_RESTART),
    ("generate_position_is_the_length_after_appending", GENERATE,
     [("project(params, x, np.array([index]))", "project(params, x, np.array([n_prompt + len(tokens) - 1]))")],
     ex09.POSITION_AFTER),
    ("generate_index_is_the_length_after_appending", GENERATE, [("index = n_prompt + i ", "index = n_prompt + i + 1 ")],
     ex09.INDEX_AFTER),
    ("generate_index_one_too_small", GENERATE, [("index = n_prompt + i ", "index = n_prompt + i - 1 ")], ex09.INDEX_BEFORE),
    ("generate_cache_not_kept", GENERATE, [("cache = update_cache(cache, k, v, index)", "update_cache(cache, k, v, index)")],
     ex09.NOT_CARRIED),
    ("generate_fresh_cache_every_step", GENERATE,
     [("cache = update_cache(cache, k, v, index)", "cache = update_cache(np.zeros_like(cache), k, v, index)")],
     ex09.FRESH_CACHE),
    ("generate_first_prompt_position", GENERATE,
     [("last = readout(params, x, context)[:, -1]                        # (B, V): chooses token P",
       "last = readout(params, x, context)[:, 0]")], ex09.FIRST_POSITION),
    ("generate_logits_recorded_after_feeding", GENERATE,
     [("        logits.append(last)\n", ""),
      ("last = readout(params, x, context)[:, -1]                    # (B, V): chooses the next token",
       "last = readout(params, x, context)[:, -1]\n        logits.append(last)")], ex09.LOGITS_SHIFTED),
    ("generate_feeds_the_prompt_token_again", GENERATE, [("x = embed(params, token)", "x = embed(params, prompt[:, -1:])")],
     ex09.STALE_TOKEN),
    ("generate_returns_the_new_tokens_only", GENERATE, [("tokens, logits = [prompt], []", "tokens, logits = [], []")],
     ex09.NEW_TOKENS_ONLY),
    ("generate_last_token_not_fed", GENERATE,
     [("        index = n_prompt + i ", "        if i == n_new - 1:\n            break\n        index = n_prompt + i ")],
     ex09.LAST_NOT_FED),
]


@pytest.mark.parametrize("name, function, edits, hint", STUDENT_BUGS, ids=[b[0] for b in STUDENT_BUGS])
def test_a_student_style_bug_gets_its_hint_and_no_other(name, function, edits, hint):
    result = evaluate(QUESTIONS[function], **{function: student(function, edits)})
    assert result.earned < result.points
    assert [c.hint for c in result.checks if not c.passed and c.hint] == [hint], result.report()


def test_the_student_style_bugs_cover_the_whole_catalogue():
    catalogue = {*ex09.UPDATE_CATALOGUE.values(), *ex09.ATTEND_CATALOGUE.values(), *ex09.GENERATE_CATALOGUE.values()}
    assert {b[3] for b in STUDENT_BUGS} == catalogue - {ex09.BEFORE}


def test_a_generate_built_on_a_buggy_update_cache_gets_a_hint_that_points_back_to_question_1():
    # update_cache writes one slot late: generate's last write does not fit and raises.
    namespace = notebook({UPDATE: STUDENT_BUGS[0][2]})
    result = evaluate("ex09.q3", generate=namespace[GENERATE])   # its update_cache is the buggy one
    assert result.earned == 0 and result.hint == ex09.INDEX_AFTER and "question 1" in result.hint, result.report()


@pytest.mark.parametrize("seed", [0, 1, 2, GradeOptions().seed])
def test_the_solution_scores_full_marks_on_any_seed(seed):
    namespace = notebook()
    for question in get_exercise("ex09").questions:
        result = evaluate(question.id, seed=seed, **{question.function: namespace[question.function]})
        assert result.earned == result.points, result.report()


def test_the_notebooks_decoder_is_the_graders():
    namespace = notebook()
    for seed in (0, 5):
        given, graders = namespace["make_params"](seed), ex09.make_params(seed)
        assert given.keys() == graders.keys()
        for key in given:
            np.testing.assert_array_equal(given[key], graders[key])
    tokens = np.array([[1, 2, 3, 4, 0], [5, 11, 7, 7, 2]])
    np.testing.assert_array_equal(namespace["full_logits"](given, tokens), ex09.full_logits(given, tokens))
    x = ex09.embed(given, tokens)
    for ours, theirs in zip(namespace["project"](given, x, np.arange(3, 8)), ex09.project(given, x, np.arange(3, 8))):
        np.testing.assert_array_equal(ours, theirs)


def test_the_reference_is_full_recomputation_and_the_cached_solution_equals_it():
    params, prompt = ex09.make_params(5), np.array([[1, 2, 3]])
    tokens, logits, cache = ex09._ref_generate(params, prompt, 5)
    assert tokens.tolist() == [[1, 2, 3, 8, 3, 2, 4, 11]]   # the notebook's demo
    for i in range(5):   # logits[:, i] chose token P + i
        np.testing.assert_allclose(logits[:, i], ex09.full_logits(params, tokens[:, :3 + i])[:, -1], rtol=1e-12)
    ours = notebook()[GENERATE](params, prompt, 5)
    # Token ids are compared exactly: the two best logits of every step are far apart compared
    # with float64 rounding (the logits agree to 1e-10), so no machine can flip an argmax.
    assert ex09._margin(params, prompt, 5) > 1e-6
    np.testing.assert_array_equal(ours[0], tokens)
    np.testing.assert_allclose(ours[1], logits, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours[2], cache, rtol=1e-10, atol=1e-12)


def test_rope_makes_the_cached_keys_depend_on_their_positions():
    """Why restarting positions at 0 is a bug: the same token's key differs at another position."""
    params = ex09.make_params(0)
    x = ex09.embed(params, np.array([[4]]))
    assert not np.allclose(ex09.project(params, x, np.array([0]))[1], ex09.project(params, x, np.array([3]))[1])


def test_every_decoding_case_has_clear_greedy_choices():
    for seed in (0, GradeOptions().seed):
        for cases in build_cases(get_exercise("ex09").question("ex09.q3"), seed):
            for case in cases:
                assert ex09._margin(*case.args) > 1e-2


def test_writing_into_the_callers_cache_gets_the_in_place_hint():
    in_place = student(UPDATE, [("new = cache.copy()", "new = cache")])
    result = evaluate("ex09.q1", **{UPDATE: in_place})
    assert result.earned == 0 and result.hint == diagnose.IN_PLACE, result.report()


def test_a_float64_copy_of_a_float32_cache_fails_the_dtype_check_and_says_so():
    widened = student(UPDATE, [("cache = np.asarray(cache)", "cache = np.asarray(cache, dtype=float)")])
    result = evaluate("ex09.q1", **{UPDATE: widened})
    # The raise check counts only once every value check passes (spec's rule).
    assert [c.passed for c in result.checks] == [True, True, False, False], result.report()
    assert result.hint == "Return float32 (`.astype(float32)`)." and "dtype float64 instead of float32" in result.checks[2].detail


def test_no_bounds_check_loses_only_the_raise_points():
    unchecked = student(UPDATE, [("if index < 0 or index + t_new > s_max:", "if False:")])
    result = evaluate("ex09.q1", **{UPDATE: unchecked})
    assert result.earned == result.points - 0.5 and not result.checks[-1].passed, result.report()


def test_an_untouched_answer_is_not_attempted():
    def generate(params, prompt, n_new):
        raise NotImplementedError("Write your solution here")
    result = evaluate("ex09.q3", generate=generate)
    assert result.not_attempted and result.earned == 0


RECOMPUTING = """
prompt = np.asarray(prompt)
tokens, logits = prompt, []
for _ in range(n_new):                              # every step runs the whole sequence again
    last = full_logits(params, tokens)[:, -1]
    logits.append(last)
    tokens = np.concatenate([tokens, last.argmax(axis=-1)[:, None]], axis=1)
n_heads, head_dim = np.shape(params["query"])[1:]
cache = np.zeros((tokens.shape[0], 2, tokens.shape[1], n_heads, head_dim))
_, k, v = project(params, embed(params, tokens), np.arange(tokens.shape[1]))
cache = update_cache(cache, k, v, 0)                # the cache, built afterwards
return tokens, np.stack(logits, axis=1), cache
"""


def test_recomputing_every_step_and_caching_afterwards_loses_only_the_work_point():
    namespace = notebook()
    exec(compile(edited_answer(ANSWERS[GENERATE], body=RECOMPUTING), GENERATE, "exec"), namespace)
    assert evaluate("ex09.q3", generate=namespace[GENERATE]).earned == 3   # right tokens, logits and cache
    result = evaluate("ex09.q4", generate=namespace[GENERATE])
    assert result.earned == 0 and result.hint == ex09.RECOMPUTES, result.report()


def test_projecting_the_prompt_twice_is_still_caching():
    twice = student(GENERATE, [("x = embed(params, prompt)                                        # (B, P, D)",
                                "x = embed(params, prompt)\n    project(params, x, np.arange(n_prompt))")])
    assert evaluate("ex09.q4", generate=twice).earned == 1


def test_the_work_check_counts_projections_where_generate_finds_project():
    def generate(params, prompt, n_new):       # a generate in a namespace without the given decoder
        raise AssertionError("not called")
    result = evaluate("ex09.q4", generate=generate)
    assert result.earned == 0 and "`project` is not defined" in result.checks[0].detail, result.report()


CHECKS = [(q, c) for q in get_exercise("ex09").questions for c in q.checks]


@pytest.mark.parametrize("question, check", CHECKS, ids=[f"{q.id}:{c.name[:40]}" for q, c in CHECKS])
def test_every_check_passes_the_solution_and_fails_a_wrong_implementation(question, check):
    assert_check_can_fail(_verdicts(question.id), check)


@functools.cache
def _verdicts(question_id: str) -> list[dict]:
    question = get_exercise("ex09").question(question_id)
    solution = student(question.function)
    wrong = catalogue(question) + [student(f, edits) for _, f, edits, _ in STUDENT_BUGS if f == question.function]
    return verdicts(question, solution, wrong + [never_raises(solution)])


# ---------------------------------------------------------------- batch grading


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ex09")
    # The solution (full marks) and the untouched exercise (zero) are graded with every other
    # exercise's in tests/test_grading.py; here, one buggy submission.
    solution = nbformat.read(ROOT / "solutions" / f"{STEM}.ipynb", as_version=4)
    nbformat.write(with_edited_answer(solution, GENERATE, [("project(params, x, np.array([index]))",
                                                            "project(params, x, np.arange(1))")]),
                   folder / "positions_restart.ipynb")
    rows = grade_many(sorted(folder.glob("*.ipynb")), GradeOptions(cell_timeout=30, call_timeout=10), jobs=1)
    return {Path(r["file"]).stem: r for r in rows}


def test_batch_grading_names_the_bug_of_a_submission(graded):
    row = graded["positions_restart"]
    feedback = next(f for f in row["feedback"] if f["id"] == "ex09.q3")
    assert row["questions"]["ex09.q1"] == 3 and row["questions"]["ex09.q2"] == 3 and feedback["earned"] == 0
    assert feedback["hint"] == ex09.POSITIONS_RESTART
