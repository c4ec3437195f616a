"""The grader: instant feedback, batch grading, the bug catalogue, and containment."""

import copy
import json
import socket
import threading
from pathlib import Path

import nbformat
import numpy as np
import pytest

from grading_support import answer_cell, with_edited_answer  # tests/grading_support.py

from attention_lessons.authoring import BEGIN, END
from attention_lessons.grading import evaluate, exercise_ids, get_exercise
from attention_lessons.course import EXERCISES
from attention_lessons.grading.batch import GradeOptions, grade_many
from attention_lessons.grading.spec import _call, build_cases, judge

ROOT = Path(__file__).resolve().parents[1]
ALL_BUGS = [(ex, q, c, b) for ex in exercise_ids() for q in get_exercise(ex).questions
            for c in q.checks for b in c.bugs]
#: Each catalogued bug once per question (a bug may be listed by several of its checks).
QUESTION_BUGS = [(q, b) for ex in exercise_ids() for q in get_exercise(ex).questions for b in q.bugs]


# ---------------------------------------------------------------- instant feedback

@pytest.mark.parametrize("question, bug", QUESTION_BUGS,
                         ids=[f"{q.id}:{getattr(b.fn, '__name__', 'bug')}:{b.hint[:30]}" for q, b in QUESTION_BUGS])
def test_every_catalogued_bug_gets_its_hint_and_no_other(question, bug):
    # A driver question exercises an object (a layer class): hand over the buggy object itself.
    student = bug.fn.target() if question.driver else bug.fn
    result = evaluate(question.id, **{question.function: student})
    listed = [c.name for c in question.checks if any(b is bug for b in c.bugs)]
    failed = {r.name for r in result.checks if not r.passed and r.earned == 0}
    assert set(listed) <= failed, result.report()
    value_hints = [r.hint for r, c in zip(result.checks, question.checks) if c.compares and r.hint]
    assert value_hints == [bug.hint], result.report()   # one diagnosis per question


@pytest.mark.parametrize("question", [q for ex in exercise_ids() for q in get_exercise(ex).questions
                                      if q.bugs and not q.driver], ids=lambda q: q.id)
def test_the_catalogue_hints_hold_on_the_batch_graders_seed(question):
    """The in-notebook checks use seed 0; the batch grader draws other inputs."""
    cases = build_cases(question, GradeOptions().seed)
    for bug in question.bugs:
        result = judge(question, cases, [[_call(bug.fn, c) for c in cc] for cc in cases])
        assert result.hint == bug.hint, (bug.fn.__name__, result.report())


def test_missing_function_gets_a_hint_not_a_crash():
    result = evaluate("ex02.q1", namespace={})
    assert result.earned == 0
    assert "Define `softmax`" in result.checks[0].hint


def test_a_function_that_loops_forever_costs_one_timeout_per_call():
    def softmax(x, axis=-1, temperature=1.0):
        while True:
            pass
    result = evaluate("ex02.q1", timeout=0.2, softmax=softmax)
    assert result.earned == 0
    assert "did not finish in time" in result.checks[0].detail


def test_a_function_returning_garbage_is_reported():
    result = evaluate("ex02.q1", softmax=lambda x, axis=-1, temperature=1.0: "weights")
    assert result.earned == 0
    assert "TypeError" in result.checks[0].detail


def test_a_library_function_is_not_accepted_as_the_students_own_work():
    from attention_lessons.softmax import softmax as library_softmax
    result = evaluate("ex02.q1", namespace={"softmax": library_softmax})
    assert result.earned == 0
    assert "not your own code" in result.checks[0].detail


def test_report_shows_marks_points_and_hints():
    bug = next(b for _, q, c, b in ALL_BUGS if q.id == "ex02.q1" and "multiply" in b.hint)
    text = evaluate("ex02.q1", softmax=bug.fn).report()
    assert "✅" in text and "❌" in text and "Hint: You multiply by the temperature" in text
    assert text.splitlines()[0].endswith("— 3.5/5 points")


# ---------------------------------------------------------------- batch grading

def _solution(stem):
    return nbformat.read(ROOT / "solutions" / f"{stem}.ipynb", as_version=4)


def _add_cell(nb, source, at=4):
    nb = copy.deepcopy(nb)
    nb.cells.insert(at, nbformat.v4.new_code_cell(source))
    return nb


SOFTMAX_BODY = """
if temperature <= 0:
    raise ValueError("temperature")
x = np.asarray(x)
z = x.astype(np.float32 if x.dtype == np.float16 else x.dtype) / temperature
e = np.exp(z - z.max(axis=axis, keepdims=True))
return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)
"""

def _region(stem, function):
    """The solution region of the answer cell that defines ``function``, dedented."""
    import textwrap
    return textwrap.dedent(answer_cell(_solution(stem), function).source.split(BEGIN)[1].split(END)[0].split("\n", 1)[1])


SDPA_BODY = _region("ex04_scaled_dot_product", "scaled_dot_product_attention")
# "Scaled after the softmax": the scores are not scaled and the weights are divided instead.
SDPA_SCALE_AFTER = "return weights / np.sqrt(q.shape[-1]) @ v, weights / np.sqrt(q.shape[-1])"
MHA_BODY = _region("ex05_multi_head_numpy", "multi_head_attention")

# (name, exercise, function, buggy body, question id, hint fragment): classic bugs as students write them.
BUGGY = [
    ("wrong_axis", "ex02_softmax", "softmax", SOFTMAX_BODY.replace("axis=axis", "axis=0"), "ex02.q1", "normalise over axis 0"),
    ("no_max_subtraction", "ex02_softmax", "softmax", SOFTMAX_BODY.replace("z - z.max(axis=axis, keepdims=True)", "z"),
     "ex02.q1", "Subtract the maximum"),
    ("temperature_multiplied", "ex02_softmax", "softmax", SOFTMAX_BODY.replace("/ temperature", "* temperature"),
     "ex02.q1", "You multiply by the temperature"),
    ("sum_of_logits", "ex02_softmax", "softmax", SOFTMAX_BODY.replace("(e / e.sum(", "(e / z.sum("),
     "ex02.q1", "divide by the sum of the scores"),
    ("mask_inverted", "ex02_softmax", "masked_softmax", """
x = np.asarray(x, dtype=float)
z = np.where(np.asarray(mask, dtype=bool), -np.inf, x)
z = z - z.max(axis=axis, keepdims=True)
e = np.exp(z)
return e / e.sum(axis=axis, keepdims=True)
""", "ex02.q2", "Mask polarity is inverted"),
    ("zeroed_after_softmax", "ex02_softmax", "masked_softmax", """
x = np.asarray(x, dtype=float)
e = np.exp(x - x.max(axis=axis, keepdims=True))
return e / e.sum(axis=axis, keepdims=True) * mask
""", "ex02.q2", "without renormalising"),
    ("sigma_not_powered", "ex02_softmax", "divisive_normalization", """
d = np.asarray(drive, dtype=float) ** n
return d / (sigma + d.sum(axis=-1, keepdims=True))
""", "ex02.q3", "sigma must be raised to the power n"),
    ("bias_after_activation", "ex01_weighted_sums", "neuron", """
x, w = np.asarray(x, float), np.asarray(w, float)
if x.shape[-1] != w.shape[0]:
    raise ValueError("shapes")
z = x @ w
f = {"linear": lambda z: z, "relu": lambda z: np.maximum(z, 0), "sigmoid": lambda z: 1 / (1 + np.exp(-z))}
return f[activation](z) + b
""", "ex01.q1", "bias after the activation"),
    ("weights_transposed", "ex01_weighted_sums", "layer", """
X, W = np.asarray(X, float), np.asarray(W, float)
if X.shape[-1] != W.shape[0]:
    raise ValueError("shapes")
return X @ W.T + b
""", "ex01.q2", "W is used transposed"),
    ("gain_added", "ex01_weighted_sums", "modulate", """
if gain < 0:
    raise ValueError("gain")
return np.asarray(rates, float) + gain + shift
""", "ex01.q3", "You add the gain"),
    ("nw_query_axis", "ex03_attention_pooling", "nadaraya_watson", """
q, k, v = (np.asarray(a, dtype=float) for a in (queries, keys, values))
q2, k2 = (a[:, None] if a.ndim == 1 else a for a in (q, k))
s = -((q2[:, None, :] - k2[None, :, :]) ** 2).sum(-1) / (2 * bandwidth**2)
w = np.exp(s - s.max(axis=0, keepdims=True))
w = w / w.sum(axis=0, keepdims=True)
return w @ v, w
""", "ex03.q1", "sum to 1 over the queries"),
    ("additive_without_tanh", "ex04_scaled_dot_product", "additive_scores", """
q, k = np.asarray(q, dtype=float), np.asarray(k, dtype=float)
return ((q @ W_q)[..., :, None, :] + (k @ W_k)[..., None, :, :]) @ v
""", "ex04.q1", "The tanh is missing"),
] + [(name, "ex04_scaled_dot_product", "scaled_dot_product_attention",
   SDPA_BODY.replace(old, new).replace("return weights @ v, weights", SDPA_SCALE_AFTER if name == "scaled_after_softmax"
                                       else "return weights @ v, weights"), "ex04.q2", hint)
     for name, old, new, hint in [
         ("scaled_by_d", "np.sqrt(q.shape[-1])", "q.shape[-1]", "scale by √d"),
         ("scaled_after_softmax", "/ np.sqrt(q.shape[-1])", "", "scale after the softmax"),  # + below
         ("keys_not_transposed", "np.swapaxes(k, -1, -2)", "k", "keys are not transposed"),
         ("mask_polarity", "np.broadcast_to(mask, scores.shape)", "np.broadcast_to(~np.asarray(mask), scores.shape)",
          "polarity is inverted"),
     ]] + [
    ("causal_without_diagonal", "ex04_scaled_dot_product", "causal_mask",
     "s = t if s is None else s\nreturn np.arange(s)[None, :] < np.arange(t)[:, None]", "ex04.q3", "diagonal is excluded"),
    ("causal_transposed", "ex04_scaled_dot_product", "causal_mask",
     "s = t if s is None else s\nreturn np.arange(s)[None, :] >= np.arange(t)[:, None]", "ex04.q3", "transposed"),
    ("split_without_transpose", "ex05_multi_head_numpy", "split_heads",
     "x = np.asarray(x)\nb, t, f = x.shape\nreturn x.reshape(b, num_heads, t, f // num_heads)", "ex05.q1",
     "reshaped without the transpose"),
    ("merge_without_transpose", "ex05_multi_head_numpy", "merge_heads",
     "x = np.asarray(x)\nb, n, t, d = x.shape\nreturn x.reshape(b, t, n * d)", "ex05.q2", "merged without transposing back"),
    ("one_projection_for_qkv", "ex05_multi_head_numpy", "multi_head_attention",
     MHA_BODY.replace('p["key_kernel"]', 'p["query_kernel"]').replace('p["value_kernel"]', 'p["query_kernel"]')
     .replace('p["key_bias"]', 'p["query_bias"]').replace('p["value_bias"]', 'p["query_bias"]'),
     "ex05.q3", "ONE projection"),
]


# Classic bugs of the Keras layer (ex06), as edits of the solution: (name, edits, question, hint fragment).
LAYER_BUGS = [
    ("layer_swapped_einsum_axes", [('"btnh,bsnh->bnts"', '"btnh,bsnh->bnst"')], "ex06.q1", "einsum axes are swapped"),
    ("layer_scaled_by_d_model", [("math.sqrt(self.key_dim)", "math.sqrt(query.shape[-1])")], "ex06.q1", "not √d_model"),
    ("layer_without_output_projection",
     [('output = ops.einsum("btnh,nhd->btd", context, self.output_kernel) + self.output_bias',
       "output = ops.reshape(context, (-1, t, self.num_heads * self.value_dim))")], "ex06.q1", "output projection is missing"),
    ("layer_mask_inverted", [('mask = ops.cast(attention_mask, "bool")', 'mask = ops.logical_not(ops.cast(attention_mask, "bool"))')],
     "ex06.q2", "polarity is inverted"),
    ("layer_shared_initializer",
     [("        def weight(shape, init):", "        shared = keras.initializers.GlorotUniform()\n\n        def weight(shape, init):"),
      ("initializer=keras.initializers.get(init))", 'initializer=shared if init == "glorot_uniform" else init)')],
     "ex06.q3", "start identical"),
    ("layer_float16_softmax", [('logits = ops.cast(ops.einsum("btnh,bsnh->bnts", q, k), "float32")',
                                'logits = ops.einsum("btnh,bsnh->bnts", q, k)'),
                               ("logits = ops.where(mask, logits, -1e9)",
                                "logits = ops.where(mask, logits, ops.cast(-1e9, logits.dtype))"),
                               ("weights = ops.where(mask, weights, 0.0)", "pass")], "ex06.q4", "softmax runs in float16"),
]


class _Listener:
    """A TCP server on loopback that records whether anyone connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connected = False
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.connected = True
                conn.close()
            except OSError:
                pass


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every submission of this module in one parallel batch (kernels are the slow part)."""
    folder = tmp_path_factory.mktemp("submissions")
    listener = _Listener()
    ex02, ex01 = _solution("ex02_softmax"), _solution("ex01_weighted_sums")
    subs = {}
    for stem, _, _ in EXERCISES:
        subs[f"solution_{stem[:4]}"] = _solution(stem)
        subs[f"untouched_{stem[:4]}"] = nbformat.read(ROOT / "exercises" / f"{stem}.ipynb", as_version=4)
    subs.update({
        "raises_early": _add_cell(ex02, "raise RuntimeError('a broken cell')"),
        "one_question_untouched": with_edited_answer(ex02, "masked_softmax", body="raise NotImplementedError"),
        "loops_forever": _add_cell(ex02, "while True:\n    pass"),
        "kills_kernel": _add_cell(ex02, "import os\nos._exit(3)"),
        "imports_reference": _add_cell(with_edited_answer(ex02, "softmax", body="return None"),
                                       "from attention_lessons.softmax import softmax", at=len(ex02.cells) - 3),
        "patches_numpy": _add_cell(
            with_edited_answer(ex02, "softmax", body=SOFTMAX_BODY.replace("/ temperature", "* temperature")),
            "np.allclose = lambda *a, **k: True\nnp.testing.assert_allclose = lambda *a, **k: None\n"
            "np.array_equal = lambda *a, **k: True", at=len(ex02.cells) - 1),
        "eats_memory": _add_cell(ex02, "hog = np.ones(2**33, dtype=np.uint8)  # 8 GiB"),
        "uses_network": with_edited_answer(ex02, "softmax", body=f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {listener.port}), timeout=2).close()
    return np.zeros(np.shape(x))
except OSError:
    pass
{SOFTMAX_BODY}
"""),
    })
    for name, stem, function, body, _, _ in BUGGY:
        subs[name] = with_edited_answer(_solution(stem), function, body=body)
    for name, edits, _, _ in LAYER_BUGS:
        subs[name] = with_edited_answer(_solution("ex06_keras_layer"), "MyMultiHeadAttention", edits)
    paths = []
    for name, nb in subs.items():
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    (folder / "not_a_notebook.ipynb").write_text("{ this is not json")
    paths.append(folder / "not_a_notebook.ipynb")
    # Keras submissions import TensorFlow (seconds on a loaded 2-core machine): a longer cell limit for them.
    keras_paths = [p for p in paths if "ex06" in p.stem or "ex07" in p.stem or p.stem.startswith("layer_")]
    rows = grade_many([p for p in paths if p not in keras_paths],
                      GradeOptions(cell_timeout=8, call_timeout=3, memory_mb=4096), jobs=2)
    rows += grade_many(keras_paths, GradeOptions(cell_timeout=120, call_timeout=60), jobs=2)
    listener.stop = True
    return {Path(r["file"]).stem: r for r in rows}, listener


def _feedback(row, qid):
    return next(f for f in row["feedback"] if f["id"] == qid)


def test_every_submission_gets_exactly_one_row(graded):
    rows, _ = graded
    assert len(rows) == 2 * len(EXERCISES) + 9 + len(BUGGY) + len(LAYER_BUGS)
    assert "not_a_notebook" in rows and all(r["status"] for r in rows.values())


@pytest.mark.parametrize("exercise", exercise_ids())
def test_solutions_score_full_marks(graded, exercise):
    row = graded[0][f"solution_{exercise}"]
    assert row["status"] == "ok", row["message"]
    assert row["score"] == row["max_score"] == get_exercise(exercise).points


@pytest.mark.parametrize("exercise", exercise_ids())
def test_untouched_exercises_run_score_zero_and_are_not_attempted(graded, exercise):
    row = graded[0][f"untouched_{exercise}"]
    assert row["status"] == "not attempted", row["message"]
    assert row["message"].startswith("every answer still raises NotImplementedError")
    assert row["score"] == 0 and row["max_score"] > 0
    assert all(f["not_attempted"] for f in row["feedback"])


def test_a_partly_attempted_submission_names_the_untouched_questions(graded):
    row = graded[0]["one_question_untouched"]
    assert row["status"] == "ok" and row["message"] == "not attempted: ex02.q2", row["message"]
    assert row["questions"]["ex02.q2"] == 0 and row["questions"]["ex02.q1"] == 5


def test_the_csv_has_the_not_attempted_status(graded, tmp_path):
    from attention_lessons.grading.batch import write_csv

    rows = graded[0]
    write_csv([rows["untouched_ex02"], rows["solution_ex02"]], tmp_path / "grades.csv")
    lines = (tmp_path / "grades.csv").read_text().splitlines()
    assert ",not attempted,0,10," in lines[1] and ",ok,10,10," in lines[2]


@pytest.mark.parametrize("name, qid, fragment", [(b[0], b[4], b[5]) for b in BUGGY], ids=[b[0] for b in BUGGY])
def test_classic_bug_in_a_submission_loses_points_and_gets_its_hint(graded, name, qid, fragment):
    row = graded[0][name]
    feedback = _feedback(row, qid)
    assert feedback["earned"] < feedback["points"]
    hints = [c["hint"] for c in feedback["checks"] if not c["passed"]]
    assert any(fragment in h for h in hints), hints


def test_a_raising_cell_is_reported_and_the_rest_still_graded(graded):
    row = graded[0]["raises_early"]
    assert row["status"] == "error" and "RuntimeError" in row["message"]
    assert row["score"] == row["max_score"]
    # Located as the student sees the notebook: position among ALL cells (from 1) and first line.
    assert row["message"].startswith("cell 5 (\"raise RuntimeError('a broken cell')\"): RuntimeError"), row["message"]


def test_a_cell_that_times_out_is_located_by_its_first_line(graded):
    assert "cell 5 ('while True:') ran past" in graded[0]["loops_forever"]["message"]


def test_an_infinite_loop_costs_one_cell_timeout(graded):
    row = graded[0]["loops_forever"]
    assert row["status"] == "timeout"
    # One interrupted cell, and the kernel went on: the answers after the loop are all graded.
    # (Counted in cells, not seconds: no test asserts a wall-clock time.)
    assert row["message"].count("ran past") == 1, row["message"]
    assert row["score"] == row["max_score"]


def test_a_kernel_that_dies_still_gets_a_row(graded):
    row = graded[0]["kills_kernel"]
    assert row["status"] == "crashed" and row["score"] == 0


def test_unparseable_file_is_reported_as_unreadable(graded):
    row = graded[0]["not_a_notebook"]
    assert row["status"] == "unreadable" and row["score"] == 0


def test_reference_implementations_cannot_be_imported_while_grading(graded):
    row = graded[0]["imports_reference"]
    assert "not available while grading" in row["message"]
    assert _feedback(row, "ex02.q1")["earned"] == 0


def test_patching_numpy_comparisons_in_the_submission_changes_nothing(graded):
    rows, _ = graded
    patched, plain = rows["patches_numpy"], rows["temperature_multiplied"]
    assert patched["score"] == plain["score"] < patched["max_score"]


def test_memory_limit_stops_a_huge_allocation_without_losing_the_grade(graded):
    row = graded[0]["eats_memory"]
    assert "MemoryError" in row["message"]
    assert row["score"] == row["max_score"]


def test_network_is_cut_off_for_the_submission(graded):
    rows, listener = graded
    row = rows["uses_network"]
    assert not listener.connected, f"the submission reached a local server (sandbox: {row['sandbox']})"
    assert _feedback(row, "ex02.q1")["earned"] == _feedback(row, "ex02.q1")["points"]


@pytest.mark.parametrize("name, qid, fragment", [(b[0], b[2], b[3]) for b in LAYER_BUGS], ids=[b[0] for b in LAYER_BUGS])
def test_classic_bug_in_a_keras_layer_submission_gets_its_hint(graded, name, qid, fragment):
    feedback = _feedback(graded[0][name], qid)
    assert feedback["earned"] < feedback["points"]
    hints = [c["hint"] for c in feedback["checks"] if not c["passed"]]
    assert any(fragment in h for h in hints), hints


def test_subclassing_the_keras_layer_is_not_accepted(tmp_path):
    nb = _solution("ex06_keras_layer")
    for cell in nb.cells:
        if "answer" in cell.metadata.get("tags", []):
            cell.source = "class MyMultiHeadAttention(keras.layers.MultiHeadAttention):\n    pass"
    path = tmp_path / "wrapper_ex06.ipynb"
    nbformat.write(nb, path)
    row = grade_many([path], GradeOptions(cell_timeout=120, call_timeout=60))[0]
    assert row["score"] == 0
    assert "subclasses keras.layers.MultiHeadAttention" in _feedback(row, "ex06.q1")["checks"][0]["detail"]
