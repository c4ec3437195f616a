"""Exercise specifications, instant feedback and batch grading.

In a notebook::

    from attention_lessons.grading import check
    check("ex02.q1")            # runs the checks of question 1 on your `softmax`

From a shell::

    attention-lessons grade submissions/*.ipynb --csv grades.csv --jobs 2
"""

from __future__ import annotations

import importlib
import sys

from .harvest import run_calls
from .spec import (Bug, Case, Check, CheckResult, Exercise, Question, QuestionResult, build_cases, encode_calls,
                   judge, outcomes_from_records, split_outcomes)

__all__ = ["check", "summary", "evaluate", "get_exercise", "exercise_ids", "Bug", "Case", "Check", "Exercise", "Question",
           "QuestionResult", "CheckResult"]

#: Exercise id → module holding its ``EXERCISE`` spec, in course order.
_MODULES = {"ex01": "ex01", "ex02": "ex02", "ex03": "ex03", "ex04": "ex04", "ex05": "ex05", "ex06": "ex06", "ex07": "ex07",
            "ex08": "ex08", "ex09": "ex09", "ex10": "ex10"}

#: Seed of the in-notebook checks; the batch grader uses a different one.
NOTEBOOK_SEED = 0

#: Status of an exercise whose every answer still raises NotImplementedError (summary and CSV).
NOT_ATTEMPTED = "not attempted"


def exercise_ids() -> list[str]:
    return list(_MODULES)


def get_exercise(exercise_id: str | None) -> Exercise:
    """The :class:`Exercise` spec for ``"ex02"`` (also accepts ``"ex02.q1"``)."""
    key = (exercise_id or "").split(".")[0]
    if key not in _MODULES:
        raise KeyError(f"unknown exercise {exercise_id!r}; known: {', '.join(_MODULES)}")
    return importlib.import_module(f"{__name__}.{_MODULES[key]}").EXERCISE


def evaluate(question_id: str, namespace: dict | None = None, seed: int = NOTEBOOK_SEED,
             timeout: float = 10.0, **functions) -> QuestionResult:
    """Run question ``question_id``'s checks and return the result (no printing).

    The student's function is taken from ``functions`` (e.g. ``softmax=my_softmax``), else
    from ``namespace``, else from the notebook's own namespace (``__main__``).
    """
    question = get_exercise(question_id).question(question_id)
    explicit = question.function in functions
    ns = dict(namespace if namespace is not None else vars(sys.modules["__main__"]))
    ns.update(functions)
    cases = build_cases(question, seed)
    payload, arrays = encode_calls([(question, cases)])
    for call in payload["calls"]:
        call["own_code"] = call["own_code"] and not explicit
    from ..device import _quiet_native_stderr
    from .drivers import DRIVERS

    # TensorFlow's C++ warnings (e.g. about float16 kernels) would otherwise land in
    # random cells; Python-level output of the student's code is unaffected.
    with _quiet_native_stderr():
        records, outputs = run_calls(ns, payload["calls"], arrays, timeout, DRIVERS)
        outcomes = split_outcomes([(question, cases)], outcomes_from_records(records, outputs))[0]
        return judge(question, cases, outcomes)


def check(question_id: str, **functions) -> None:
    """Print ✅/❌ per check of ``question_id`` with a hint for each failure, and the points.

    Pass ``name=function`` to check a function under another name, e.g.
    ``check("ex02.q1", softmax=my_softmax)``.
    """
    print(evaluate(question_id, **functions).report())


def summary(exercise_id: str) -> None:
    """Print every question's points for ``exercise_id`` and the total (quietly re-runs the checks)."""
    exercise = get_exercise(exercise_id)
    total, untouched = 0.0, 0
    print(f"{exercise.id} · {exercise.title}")
    for question in exercise.questions:
        result = evaluate(question.id)
        total += result.earned
        untouched += result.not_attempted
        mark = "✅" if result.earned == result.points else "❌"
        note = "  (not attempted)" if result.not_attempted else ""
        print(f"  {mark} {question.id} {question.function:<30} {result.earned:g}/{result.points:g}{note}")
    status = f" — {NOT_ATTEMPTED}" if untouched == len(exercise.questions) else ""
    print(f"  Total: {total:g}/{exercise.points:g}{status}")
