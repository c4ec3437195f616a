"""Exercise specifications and how a student's results are judged against them.

One :class:`Exercise` per notebook holds :class:`Question` s (a function the student
defines, its points), each with :class:`Check` s: inputs, the reference, tolerances and
the known bugs (:class:`Bug`) whose outputs identify a likely mistake. The same spec
drives the in-notebook feedback, the batch grader and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class Case:
    """One call: positional and keyword arguments, and a short description for feedback."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    secret: dict = field(default_factory=dict)   # stays in the grader (e.g. the seed of a test set)


@dataclass
class Bug:
    """A classic mistake, written as a (wrong) implementation, and the hint that names it."""

    hint: str
    fn: Callable


@dataclass
class Check:
    """One property of a question's function, tested on several cases.

    ``expect`` is "match" (outputs equal the reference within ``rtol``/``atol``) or
    "raise" (the call must raise ``ValueError``). ``dtype`` also requires the reference's
    output dtype. ``cases(rng)`` builds the inputs; the batch grader uses its own seed.
    ``hint`` is the advice when no known bug matches.

    With ``score`` set, the outputs are not compared with a reference: ``score(outputs,
    case)`` (run in the grader's process) returns ``(passed, detail, hint)`` — e.g. the
    accuracy of a trained model on a test set that never leaves the grader.
    """

    name: str
    points: float
    cases: Callable[[np.random.Generator], Sequence[Case]]
    hint: str = ""
    expect: str = "match"
    rtol: float = 1e-6
    atol: float = 1e-8
    dtype: bool = False
    bugs: Sequence[Bug] = ()
    score: Callable[[list, Case], tuple[bool, str, str]] | None = None


@dataclass
class Question:
    """One thing the student defines (``function``: a function or class name).

    With ``driver`` set (a name in :data:`drivers.DRIVERS`), the student's object is not
    called directly: the driver exercises it, and ``reference`` and every bug are the same
    driver already bound to the reference object or a buggy one. ``own_code=False`` accepts
    an object built from library classes (e.g. a trained ``keras.Model``).
    """

    id: str
    function: str
    title: str
    reference: Callable | None
    checks: Sequence[Check]
    driver: str | None = None
    own_code: bool = True

    @property
    def points(self) -> float:
        return float(sum(c.points for c in self.checks))


@dataclass
class Exercise:
    id: str
    notebook: str
    title: str
    questions: Sequence[Question]
    memory_mb: int = 0   # address-space limit of the grading kernel, if more than the default
    cell_timeout: int = 0   # per-cell limit when grading, if more than the default (e.g. training)
    allowed_modules: Sequence[str] = ()   # package modules the submission may import while graded

    @property
    def points(self) -> float:
        return float(sum(q.points for q in self.questions))

    def question(self, qid: str) -> Question:
        for q in self.questions:
            if q.id == qid:
                return q
        raise KeyError(f"{self.id} has no question {qid!r}; it has {[q.id for q in self.questions]}.")


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one call of the student's function did (mirrors harvest records)."""

    status: str                 # ok / error / missing / timeout / foreign
    outputs: list = field(default_factory=list)
    error: str = ""
    is_tuple: bool = False


@dataclass
class CheckResult:
    name: str
    points: float
    earned: float
    passed: bool
    hint: str = ""
    detail: str = ""


@dataclass
class QuestionResult:
    id: str
    function: str
    title: str
    checks: list[CheckResult]

    @property
    def earned(self) -> float:
        return float(sum(c.earned for c in self.checks))

    @property
    def points(self) -> float:
        return float(sum(c.points for c in self.checks))

    def report(self) -> str:
        lines = [f"{self.id} · {self.function} — {self.earned:g}/{self.points:g} points"]
        for c in self.checks:
            mark = "✅" if c.passed else "❌"
            lines.append(f"  {mark} {c.name} ({c.points:g} pt{'s' if c.points != 1 else ''})")
            if not c.passed:
                if c.detail:
                    lines.append(f"       {c.detail}")
                if c.hint:
                    lines.append(f"       Hint: {c.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def _repr_pretty_(self, p, cycle):  # IPython shows the report, not a dataclass repr
        p.text(self.report())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "function": self.function, "earned": self.earned, "points": self.points,
                "checks": [c.__dict__ for c in self.checks]}


# --------------------------------------------------------------------------------------
# Building calls and judging outcomes
# --------------------------------------------------------------------------------------

def build_cases(question: Question, seed: int) -> list[list[Case]]:
    """Inputs for each check of ``question``, from a generator seeded by ``seed`` and the ids."""
    out = []
    for i, check in enumerate(question.checks):
        # A distinct, reproducible stream per (question, check): adding a check elsewhere
        # does not change these inputs.
        key = [seed, i] + [ord(ch) for ch in question.id]
        out.append(list(check.cases(np.random.default_rng(key))))
    return out


def _call(fn: Callable, case: Case) -> Outcome:
    """Run a trusted function (reference or bug) the same way the student's is run."""
    import copy

    try:
        with np.errstate(all="ignore"):
            value = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
    except Exception as exc:  # noqa: BLE001
        return Outcome("error", error=f"{type(exc).__name__}: {exc}")
    parts = list(value) if isinstance(value, tuple) else [value]
    return Outcome("ok", [np.asarray(p) for p in parts], is_tuple=isinstance(value, tuple))


def _close(a: Outcome, b: Outcome, rtol: float, atol: float, dtype: bool = False) -> bool:
    """Same kind of outcome and, when both returned, equal arrays (NaN equals NaN)."""
    if a.status != "ok" or b.status != "ok":
        return a.status == b.status == "error" and a.error.split(":")[0] == b.error.split(":")[0]
    if len(a.outputs) != len(b.outputs):
        return False
    for x, y in zip(a.outputs, b.outputs):
        if x.shape != y.shape or (dtype and x.dtype != y.dtype):
            return False
        try:
            if not np.allclose(x.astype(np.float64), y.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True):
                return False
        except (TypeError, ValueError):
            return False
    return True


def _describe_difference(student: Outcome, expected: Outcome, case: Case, dtype: bool) -> str:
    where = f" for {case.label}" if case.label else ""
    if student.status != "ok":
        return f"Your function {_status_text(student)}{where}."
    if len(student.outputs) != len(expected.outputs):
        return f"Expected {len(expected.outputs)} returned value(s), got {len(student.outputs)}{where}."
    for k, (s, e) in enumerate(zip(student.outputs, expected.outputs)):
        name = f"output {k}" if len(expected.outputs) > 1 else "the output"
        if s.shape != e.shape:
            return f"Expected {name} to have shape {e.shape}, got {s.shape}{where}."
        if dtype and s.dtype != e.dtype:
            return f"Expected {name} to have dtype {e.dtype} (the input's), got {s.dtype}{where}."
        s64, e64 = s.astype(np.float64), e.astype(np.float64)
        if np.isnan(s64).any() and not np.isnan(e64).any():
            return f"{name.capitalize()} contains NaN{where}."
        diff = np.abs(np.nan_to_num(s64 - e64, nan=np.inf))
        if diff.size and diff.max() > 0:
            idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
            at = f" at index {tuple(int(i) for i in idx)}" if diff.ndim else ""
            return (f"Largest difference{where}{at}: expected {e64[idx]:.6g}, got {s64[idx]:.6g}.")
    return f"Output differs from the expected one{where}."


def _status_text(o: Outcome) -> str:
    if o.status == "error" and o.error.startswith("NotImplementedError"):
        return "is not implemented yet (it raises NotImplementedError)"
    return {"missing": "is missing", "timeout": "did not finish in time (an infinite loop?)",
            "foreign": f"is not your own code: {o.error}"}.get(o.status, f"raised {o.error}")


def judge(question: Question, cases: list[list[Case]], outcomes: list[list[Outcome]]) -> QuestionResult:
    """Score ``question`` from the student's outcomes (same nesting as ``cases``)."""
    results = []
    for check, check_cases, check_outcomes in zip(question.checks, cases, outcomes):
        results.append(_judge_check(question, check, check_cases, check_outcomes))
    return QuestionResult(question.id, question.function, question.title, results)


def _judge_check(question: Question, check: Check, cases: list[Case], outcomes: list[Outcome]) -> CheckResult:
    def result(passed: bool, hint: str = "", detail: str = "") -> CheckResult:
        return CheckResult(check.name, check.points, check.points if passed else 0.0, passed, hint, detail)

    # Outcomes that say nothing about the maths come first: missing, looping, not own code.
    for o in outcomes:
        if o.status in ("missing", "timeout", "foreign"):
            hint = {"missing": f"Define `{question.function}` in the answer cell and run that cell.",
                    "timeout": "Look for a loop that never ends; each call has a time limit.",
                    "foreign": f"Write `{question.function}` yourself instead of using a library's."}[o.status]
            return result(False, hint, f"`{question.function}` {_status_text(o)}.")
        if o.status == "error" and o.error.startswith("NotImplementedError"):
            return result(False, f"Replace `raise NotImplementedError` in `{question.function}` with your code.",
                          f"`{question.function}` {_status_text(o)}.")

    if check.score is not None:
        for case, o in zip(cases, outcomes):
            if o.status != "ok":
                where = f" for {case.label}" if case.label else ""
                return result(False, check.hint, f"`{question.function}` {_status_text(o)}{where}.")
            try:
                passed, detail, hint = check.score(o.outputs, case)
            except Exception as exc:  # noqa: BLE001 - a scorer failure is the submission's, not the grader's
                passed, detail, hint = False, f"could not be evaluated: {type(exc).__name__}: {exc}"[:300], check.hint
            if not passed:
                return result(False, hint or check.hint, detail)
        return result(True)

    if check.expect == "raise":
        for case, o in zip(cases, outcomes):
            if not (o.status == "error" and o.error.startswith("ValueError")):
                got = "returned normally" if o.status == "ok" else f"raised {o.error}"
                where = f" for {case.label}" if case.label else ""
                return result(False, check.hint, f"Expected a ValueError{where}, but it {got}.")
        return result(True)

    expected = [_call(question.reference, case) for case in cases]
    failing = [i for i, (o, e) in enumerate(zip(outcomes, expected))
               if not _close(o, e, check.rtol, check.atol, check.dtype)]
    if not failing:
        return result(True)
    first = failing[0]
    detail = _describe_difference(outcomes[first], expected[first], cases[first], check.dtype)
    for bug in check.bugs:
        bug_outcomes = [_call(bug.fn, case) for case in cases]
        # A bug is recognised when it explains every case: where the bug is harmless it
        # agrees with the reference, and where it is not it agrees with the student.
        rtol, atol = max(check.rtol, 1e-4), max(check.atol, 1e-6)
        if all(_close(o, b, rtol, atol, check.dtype) for o, b in zip(outcomes, bug_outcomes)):
            return result(False, bug.hint, detail)
    return result(False, check.hint, detail)


def outcomes_from_records(records: list[dict], outputs: list[list[np.ndarray]]) -> list[Outcome]:
    return [Outcome(r["status"], list(outs), r.get("error", ""), bool(r.get("tuple")))
            for r, outs in zip(records, outputs)]


# --------------------------------------------------------------------------------------
# Encoding calls for the harvest module
# --------------------------------------------------------------------------------------

def encode_calls(question_cases: list[tuple[Question, list[list[Case]]]]) -> tuple[dict, dict[str, np.ndarray]]:
    """JSON-able call list plus the arrays it refers to (see harvest's payload format)."""
    arrays: dict[str, np.ndarray] = {}

    def enc(value):
        if isinstance(value, np.ndarray) or isinstance(value, np.generic):
            key = f"a{len(arrays)}"
            arrays[key] = np.asarray(value)
            return {"__array__": key}
        if isinstance(value, tuple):
            return {"__tuple__": [enc(v) for v in value]}
        if isinstance(value, list):
            return [enc(v) for v in value]
        if isinstance(value, dict):
            return {str(k): enc(v) for k, v in value.items()}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot send an argument of type {type(value).__name__} to the kernel")

    calls = []
    for question, cases in question_cases:
        for check_cases in cases:
            for case in check_cases:
                calls.append({"function": question.function, "driver": question.driver, "own_code": question.own_code,
                              "args": [enc(a) for a in case.args],
                              "kwargs": {k: enc(v) for k, v in case.kwargs.items()}})
    return {"calls": calls}, arrays


def split_outcomes(question_cases: list[tuple[Question, list[list[Case]]]],
                   flat: list[Outcome]) -> list[list[list[Outcome]]]:
    """Undo the flattening of :func:`encode_calls`: per question, per check, per case."""
    it = iter(flat)
    return [[[next(it) for _ in check_cases] for check_cases in cases] for _, cases in question_cases]
