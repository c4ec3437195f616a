"""Exercise specifications and how a student's results are judged against them.

One :class:`Exercise` per notebook holds :class:`Question` s (a function the student
defines, its points), each with :class:`Check` s: inputs, the reference, tolerances and
the known bugs (:class:`Bug`) whose outputs identify a likely mistake. The same spec
drives the in-notebook feedback, the batch grader and the tests.

How a question is judged (:func:`judge`):

* every call must honour the contract all questions share: its inputs unchanged, the promised
  type and kind of dtype, the same answer twice (the probes of :mod:`.diagnose`); a value
  check passes when all its cases match the reference *and* honour that contract;
* one diagnosis per question: the first catalogued bug that explains the student's outputs on
  every case of every value check gives its hint, alone; otherwise the first failing check
  shows its smallest failing case written out, with what the generic probes found, and the
  check's own hint (what it requires, never a guess). Other failing checks refer to it;
* a "must raise" check scores only when every value check of the question passes, so a
  function that raises ValueError for any input earns nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import diagnose
from .diagnose import Finding, Tolerance


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
    exact output dtype (the generic probes already require its kind: float, int, bool).
    ``cases(rng)`` builds the inputs; the batch grader uses its own seed.
    ``hint`` says what the check requires; it is shown when no known bug explains the
    answer, so it must be true whatever the mistake (a recipe, not a guess). With
    ``output_hints`` the hint depends on which output is wrong: ``{1: "..."}`` when only
    output 1 differs.

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
    output_hints: Mapping[int, str] = field(default_factory=dict)

    @property
    def compares(self) -> bool:
        """True for a value check: outputs compared with the reference's."""
        return self.expect == "match" and self.score is None


@dataclass
class Question:
    """One thing the student defines (``function``: a function or class name).

    With ``driver`` set (a name in :data:`drivers.DRIVERS`), the student's object is not
    called directly: the driver exercises it, and ``reference`` and every bug are the same
    driver already bound to the reference object or a buggy one. ``own_code=False`` accepts
    an object built from library classes (e.g. a trained ``keras.Model``). ``outputs`` names
    the returned values for feedback, e.g. ``("output", "weights")``.
    """

    id: str
    function: str
    title: str
    reference: Callable | None
    checks: Sequence[Check]
    driver: str | None = None
    own_code: bool = True
    outputs: Sequence[str] = ()
    #: What the student writes, when it is not ``function`` itself (ex07: the function that
    #: builds and the one that trains ``model``); names the untouched answer in the hint.
    written_in: str = ""

    @property
    def points(self) -> float:
        return float(sum(c.points for c in self.checks))

    @property
    def bugs(self) -> list[Bug]:
        """Every catalogued bug of the value checks, once each, in the order the checks list them."""
        seen, out = set(), []
        for check in self.checks:
            for bug in check.bugs if check.compares else ():
                if id(bug.fn) not in seen:
                    seen.add(id(bug.fn))
                    out.append(bug)
        return out


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
    """What one call of the student's function did (mirrors harvest records).

    ``types`` are the type names of the returned parts (``"ndarray"``, ``"list"``...) and
    ``result_type`` the type of the whole return value; ``modified`` lists the arguments the
    call changed in place; ``repeat`` is "same" when a second call on the same inputs gave
    the same outputs ("" when not tried).
    """

    status: str                 # ok / error / missing / timeout / foreign
    outputs: list = field(default_factory=list)
    error: str = ""
    is_tuple: bool = False
    types: list = field(default_factory=list)
    result_type: str = ""
    modified: list = field(default_factory=list)
    repeat: str = ""

    @property
    def not_implemented(self) -> bool:
        return self.status == "error" and self.error.startswith("NotImplementedError")


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
    not_attempted: bool = False   # every call still raises NotImplementedError

    @property
    def earned(self) -> float:
        return float(sum(c.earned for c in self.checks))

    @property
    def points(self) -> float:
        return float(sum(c.points for c in self.checks))

    @property
    def hint(self) -> str:
        """The question's one diagnosis: the hint of its first failing check that has one."""
        return next((c.hint for c in self.checks if not c.passed and c.hint), "")

    def report(self) -> str:
        lines = [f"{self.id} · {self.function} — {self.earned:g}/{self.points:g} points"
                 + (" (not attempted)" if self.not_attempted else "")]
        for c in self.checks:
            mark = "✅" if c.passed else "❌"
            lines.append(f"  {mark} {c.name} ({c.points:g} pt{'s' if c.points != 1 else ''})")
            if not c.passed:
                lines += [f"       {line}" for line in c.detail.splitlines()]
                if c.hint:
                    lines.append(f"       Hint: {c.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def _repr_pretty_(self, p, cycle):  # IPython shows the report, not a dataclass repr
        p.text(self.report())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "function": self.function, "earned": self.earned, "points": self.points,
                "not_attempted": self.not_attempted, "hint": self.hint, "checks": [c.__dict__ for c in self.checks]}


# --------------------------------------------------------------------------------------
# Building calls and running trusted code
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


def _call(fn: Callable, case: Case, args: tuple | None = None, kwargs: dict | None = None) -> Outcome:
    """Run a trusted function (reference or bug) the same way the student's is run."""
    import copy

    try:
        with np.errstate(all="ignore"):
            value = fn(*copy.deepcopy(case.args if args is None else args),
                       **copy.deepcopy(case.kwargs if kwargs is None else kwargs))
    except Exception as exc:  # noqa: BLE001
        return Outcome("error", error=f"{type(exc).__name__}: {exc}")
    parts = list(value) if isinstance(value, tuple) else [value]
    return Outcome("ok", [np.asarray(p) for p in parts], is_tuple=isinstance(value, tuple),
                   types=[type(p).__name__ for p in parts], result_type=type(value).__name__)


#: Outcomes of trusted code (the reference, catalogued bugs) by (function, digest of the case).
#: Every submission of a batch is judged on the same cases, so a class's grading computes them
#: once per process instead of once per student: that matters for ex06, where each call builds
#: Keras layers. Outcomes in here are shared and must not be modified.
_TRUSTED: dict[tuple, Outcome] = {}
_TRUSTED_MAX = 2048


def _trusted_call(fn: Callable, case: Case) -> Outcome:
    """:func:`_call` remembered: the same function on equal inputs gives the same outcome."""
    key = (fn, _digest((case.args, case.kwargs)))
    if key not in _TRUSTED:
        if len(_TRUSTED) >= _TRUSTED_MAX:
            _TRUSTED.clear()
        _TRUSTED[key] = _call(fn, case)
    return _TRUSTED[key]


def _digest(value) -> str:
    """A fingerprint of nested arguments: arrays by dtype, shape and bytes, the rest by repr."""
    import hashlib

    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, (np.ndarray, np.generic)):
            a = np.ascontiguousarray(v)
            h.update(f"array{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        elif isinstance(v, dict):
            h.update(b"{")
            for k in sorted(v, key=str):
                h.update(repr(k).encode())
                feed(v[k])
            h.update(b"}")
        elif isinstance(v, (list, tuple)):
            h.update(f"{type(v).__name__}{len(v)}[".encode())
            for x in v:
                feed(x)
            h.update(b"]")
        else:
            h.update(f"{type(v).__name__}:{v!r}".encode())
    feed(value)
    return h.hexdigest()


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
    """One line: where the student's outcome first differs from the expected one."""
    where = f" for {case.label}" if case.label else ""
    if student.status != "ok":
        return f"Your function {_status_text(student)}{where}."
    if expected.status != "ok":
        return f"Expected {expected.error.split(':')[0]}{where}, but your function returned normally."
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
    if o.not_implemented:
        return "is not implemented yet (it raises NotImplementedError)"
    return {"missing": "is missing", "timeout": "did not finish in time (an infinite loop?)",
            "foreign": f"is not your own code: {o.error}"}.get(o.status, f"raised {_clean_error(o.error)}")


def _clean_error(text: str, limit: int = 300) -> str:
    """An error message on one line: no terminal colours, no Keras "Arguments received" block."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).split("Arguments received by")[0]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------

@dataclass
class _Seen:
    """What the student's calls of one value check showed, against the reference."""

    check: Check
    cases: list[Case]
    outcomes: list[Outcome]
    expected: list[Outcome]
    wrong: list[int]                     # cases whose values differ from the reference's
    broken: dict[int, list[Finding]]     # cases whose call broke the contract, and how

    @property
    def passed(self) -> bool:
        return not self.wrong and not self.broken

    @property
    def failing(self) -> list[int]:
        return sorted(set(self.wrong) | set(self.broken))


def judge(question: Question, cases: list[list[Case]], outcomes: list[list[Outcome]]) -> QuestionResult:
    """Score ``question`` from the student's outcomes (same nesting as ``cases``)."""
    results: list[CheckResult | None] = [None] * len(question.checks)
    _judge_status(question, outcomes, results)
    seen = {i: _observe(question, check, cases[i], outcomes[i])
            for i, check in enumerate(question.checks) if results[i] is None and check.compares}
    _diagnose(question, seen, results)
    values_pass = all(results[i].passed for i, check in enumerate(question.checks) if check.compares)
    for i, check in enumerate(question.checks):
        if results[i] is None and check.score is not None:
            results[i] = _judge_scored(question, check, cases[i], outcomes[i])
        elif results[i] is None and check.expect == "raise":
            results[i] = _judge_raise(check, cases[i], outcomes[i], values_pass)
    every = [o for check_outcomes in outcomes for o in check_outcomes]
    not_attempted = bool(every) and all(o.not_implemented for o in every)
    return QuestionResult(question.id, question.function, question.title, results, not_attempted)


def _result(check: Check, passed: bool, hint: str = "", detail: str = "") -> CheckResult:
    return CheckResult(check.name, check.points, check.points if passed else 0.0, passed, hint, detail)


def _judge_status(question: Question, outcomes: list[list[Outcome]], results: list) -> None:
    """Outcomes that say nothing about the maths: missing, looping, not own code, not implemented.

    Each check with one fails; the first says why and what to do, later ones with the same
    problem refer to it.
    """
    shown = set()
    for i, (check, check_outcomes) in enumerate(zip(question.checks, outcomes)):
        o = next((o for o in check_outcomes if o.status in ("missing", "timeout", "foreign") or o.not_implemented),
                 None)
        if o is None:
            continue
        hint = {"missing": f"Define `{question.function}` in the answer cell and run that cell.",
                "timeout": "Look for a loop that never ends; each call has a time limit.",
                "foreign": f"Write `{question.function}` yourself instead of using a library's."}.get(
            o.status, f"Replace `raise NotImplementedError` in {question.written_in or f'`{question.function}`'} "
                      "with your code.")
        detail = f"`{question.function}` {_status_text(o)}."
        if (detail, hint) in shown:
            results[i] = _result(check, False, "", "Same as above.")
        else:
            shown.add((detail, hint))
            results[i] = _result(check, False, hint, detail)


def _observe(question: Question, check: Check, cases: list[Case], outcomes: list[Outcome]) -> _Seen:
    expected = [_trusted_call(question.reference, case) for case in cases]
    wrong = [i for i, (o, e) in enumerate(zip(outcomes, expected))
             if not _close(o, e, check.rtol, check.atol, check.dtype)]
    broken = {}
    for i, (o, e) in enumerate(zip(outcomes, expected)):
        found = diagnose.contract_findings(o, e, question.outputs)
        if found:
            broken[i] = found
    return _Seen(check, cases, outcomes, expected, wrong, broken)


def _diagnose(question: Question, seen: dict[int, _Seen], results: list) -> None:
    """Fill in the results of the value checks, with one diagnosis for the question."""
    failed = [i for i, s in seen.items() if not s.passed]
    for i, s in seen.items():
        if s.passed:
            results[i] = _result(s.check, True)
    if not failed:
        return
    # A call that changed its inputs or answered differently twice is not what any catalogued
    # bug does: name that first.
    blocked = any(f.blocks_catalogue for s in seen.values() for found in s.broken.values() for f in found)
    bug = None if blocked else _explaining_bug(question, seen)
    first = seen[failed[0]]
    if bug is not None:
        case = first.failing[0]
        detail = _describe_difference(first.outcomes[case], first.expected[case], first.cases[case], first.check.dtype)
        results[failed[0]] = _result(first.check, False, bug.hint, detail)
        for i in failed[1:]:
            results[i] = _result(seen[i].check, False, "", "Same mistake as above.")
        return
    detail, hint = _generic_diagnosis(question, first)
    results[failed[0]] = _result(first.check, False, hint, detail)
    breaches = {f.advice for found in first.broken.values() for f in found}
    for i in failed[1:]:
        s = seen[i]
        if breaches and not s.wrong and {f.advice for found in s.broken.values() for f in found} <= breaches:
            # Right values, and the same broken contract (e.g. inputs changed in place): no guessing needed.
            results[i] = _result(s.check, False, "", "Same problem as above.")
            continue
        label = s.cases[s.failing[0]].label
        results[i] = _result(s.check, False, "", f"Fails too{' for ' + label if label else ''}: fix the mistake above "
                                                 f"first, it may be the same one.")


def _explaining_bug(question: Question, seen: dict[int, _Seen]) -> Bug | None:
    """The first catalogued bug whose outputs equal the student's on every case of every value check.

    Where the bug is harmless it agrees with the reference, and where it is not it agrees
    with the student: so it explains the passing checks as well as the failing ones. The
    failing checks are tried first, where a wrong bug is ruled out fastest.
    """
    order = sorted(seen.values(), key=lambda s: s.passed)
    for bug in question.bugs:
        # Slightly looser than the checks: the bug is a different implementation of the same mistake.
        if all(_close(o, _trusted_call(bug.fn, case), max(s.check.rtol, 1e-4), max(s.check.atol, 1e-6), s.check.dtype)
               for s in order for case, o in zip(s.cases, s.outcomes)):
            return bug
    return None


def _generic_diagnosis(question: Question, seen: _Seen) -> tuple[str, str]:
    """(detail, hint) for a check no catalogued bug explains: its smallest failing case, written out,
    and what the probes found."""
    index = min(seen.failing, key=lambda i: _case_size(seen.cases[i]))
    case, student, expected = seen.cases[index], seen.outcomes[index], seen.expected[index]
    check = seen.check
    names = diagnose._output_names(question.outputs, max(len(expected.outputs), 1))
    values = _named_arguments(question, case)
    differing = _differing_outputs(student, expected, check)
    findings = list(seen.broken.get(index, []))
    # A broken contract seen on another case (e.g. different answers twice only where dropout
    # happened to drop something) explains more than any value probe of this one.
    findings += [dataclasses.replace(f, text=f"On another case: {f.text}") for i, found in sorted(seen.broken.items())
                 if i != index for f in found if f.blocks_catalogue]
    n_contract = len(findings)
    findings += _output_order_finding(student, expected, names, check)
    if len(findings) == n_contract:   # the order explains nothing: look at each output
        findings += _output_findings(question, case, student, expected, check, differing, names, values)
    lines = [f"Smallest failing case{': ' + case.label if case.label else ''}"]
    lines += [f"  {name} = {diagnose.format_value(v, '  ' + ' ' * (len(name) + 3))}" for name, v in values.items()]
    lines += _received_lines(student, expected, check, differing, names)
    lines += [f"Found: {f.text}" for f in _unique(findings)]
    advice = next((f.advice for f in findings if f.advice), "")
    if not advice and len(differing) == 1 and differing[0] in check.output_hints:
        advice = check.output_hints[differing[0]]
    return "\n".join(lines), advice or check.hint


def _differing_outputs(student: Outcome, expected: Outcome, check: Check) -> list[int]:
    """Indices of the outputs that differ (empty unless both returned as many outputs)."""
    if student.status != "ok" or expected.status != "ok" or len(student.outputs) != len(expected.outputs):
        return []
    tolerance = Tolerance(check.rtol, check.atol)
    return [k for k, (s, e) in enumerate(zip(student.outputs, expected.outputs))
            if not tolerance(s, e) or (check.dtype and s.dtype != e.dtype)]


def _output_findings(question: Question, case: Case, student: Outcome, expected: Outcome, check: Check,
                     differing: list[int], names: list[str], values: dict) -> list[Finding]:
    """The probes of :mod:`.diagnose` on each differing output, and the inverted-mask probe."""
    tolerance = Tolerance(check.rtol, check.atol)
    found: list[Finding] = []
    for k in differing:
        s, e = student.outputs[k], expected.outputs[k]
        if s.shape != e.shape:
            found += diagnose.shape_findings(s, e, names[k], tolerance)
        elif tolerance(s, e):   # right values, so the exact dtype is what differs
            if s.dtype.kind == e.dtype.kind:   # another kind is a contract finding already
                found.append(Finding(f"{diagnose._cap(names[k])} has the right values but dtype {s.dtype} "
                                     f"instead of {e.dtype}.", f"Return {e.dtype} (`.astype({e.dtype.name})`)."))
        else:
            found += diagnose.value_findings(s, e, names[k], tolerance, diagnose.case_mask(values),
                                             diagnose.case_sizes(values))
    if differing:
        found += _inverted_mask_finding(question, case, student, check)
    return found


def _received_lines(student: Outcome, expected: Outcome, check: Check, differing: list[int],
                    names: list[str]) -> list[str]:
    """The expected and the received values, where they differ."""
    if student.status != "ok":
        return [f"  expected: {_outcome_text(expected, names)}; your function {_status_text(student)}"]
    if expected.status != "ok":
        return [f"  expected: {_outcome_text(expected, names)}; your function returned normally"]
    if len(student.outputs) != len(expected.outputs):
        return [f"  expected {len(expected.outputs)} returned value(s) ({', '.join(names)}), "
                f"received {len(student.outputs)}"]
    tolerance = Tolerance(check.rtol, check.atol)
    return [line for k in differing
            for line in diagnose.write_differences(student.outputs[k], expected.outputs[k], names[k], tolerance, "  ")]


def _unique(findings: list[Finding]) -> list[Finding]:
    seen, out = set(), []
    for f in findings:
        if f.text not in seen:
            seen.add(f.text)
            out.append(f)
    return out


def _inverted_mask_finding(question: Question, case: Case, student: Outcome, check: Check) -> list[Finding]:
    """The reference with every boolean argument inverted: does the student's answer equal it?"""
    inverted = diagnose.invert_masks(case.args, case.kwargs)
    if inverted is None or question.reference is None:
        return []
    flipped = _call(question.reference, case, *inverted)
    # NaN where the inverted mask hides every key is the same mistake plus an unguarded row.
    lenient = dataclasses.replace(student, outputs=[np.nan_to_num(o, nan=0.0) for o in student.outputs])
    if flipped.status == "ok" and _close(lenient, flipped, check.rtol, check.atol):
        return [Finding("Your answer equals the expected one for the inverted mask.",
                        "Mask polarity is inverted: True means 'may attend' (keep), False means masked.")]
    return []


def _output_order_finding(student: Outcome, expected: Outcome, names: list[str], check: Check) -> list[Finding]:
    """The right values returned in another order, e.g. (weights, output) for (output, weights)."""
    n = len(expected.outputs)
    if student.status != "ok" or expected.status != "ok" or len(student.outputs) != n or n < 2:
        return []
    for perm in itertools.permutations(range(n)):
        if perm != tuple(range(n)) and all(Tolerance(check.rtol, check.atol)(student.outputs[p], e)
                                           for p, e in zip(perm, expected.outputs)):
            order = ", ".join(names[p].strip("`") for p in perm)
            return [Finding(f"It returns the right values in another order: ({order}).",
                            f"Return ({', '.join(n.strip('`') for n in names)}) in this order.")]
    return []


def _outcome_text(o: Outcome, names: list[str]) -> str:
    if o.status != "ok":
        return o.error.split(":")[0]
    return ", ".join(f"{n} of shape {a.shape}" for n, a in zip(names, o.outputs))


def _case_size(case: Case) -> int:
    """How big a case is to read: the entries of its arrays, plus one per other argument."""
    def size(v) -> int:
        if isinstance(v, np.ndarray):
            return v.size
        if isinstance(v, dict):
            return sum(size(x) for x in v.values())
        if isinstance(v, (list, tuple)):
            return sum(size(x) for x in v)
        return 1
    return size(list(case.args)) + size(case.kwargs)


def _named_arguments(question: Question, case: Case) -> dict[str, object]:
    """The case's arguments by the reference's parameter names (``argument 1``... when unknown)."""
    import inspect

    try:
        params = [p.name for p in inspect.signature(question.reference).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    named = {params[i] if i < len(params) else f"argument {i + 1}": a for i, a in enumerate(case.args)}
    named.update(case.kwargs)
    return named


def _judge_raise(check: Check, cases: list[Case], outcomes: list[Outcome], values_pass: bool) -> CheckResult:
    for case, o in zip(cases, outcomes):
        if not (o.status == "error" and o.error.startswith("ValueError")):
            got = "returned normally" if o.status == "ok" else f"raised {o.error}"
            where = f" for {case.label}" if case.label else ""
            return _result(check, False, check.hint, f"Expected a ValueError{where}, but it {got}.")
    if not values_pass:
        # Raising is easy: `raise ValueError` on every input would pass on its own.
        return _result(check, False, "", "It raises ValueError here, which counts once the checks of the values "
                                         "above pass (a function that raised for every input would pass this too).")
    return _result(check, True)


def _judge_scored(question: Question, check: Check, cases: list[Case], outcomes: list[Outcome]) -> CheckResult:
    for case, o in zip(cases, outcomes):
        if o.status != "ok":
            where = f" for {case.label}" if case.label else ""
            return _result(check, False, check.hint, f"`{question.function}` {_status_text(o)}{where}.")
        try:
            passed, detail, hint = check.score(o.outputs, case)
        except Exception as exc:  # noqa: BLE001 - a scorer failure is the submission's, not the grader's
            passed, detail, hint = False, f"could not be evaluated: {type(exc).__name__}: {exc}"[:300], check.hint
        if not passed:
            return _result(check, False, hint or check.hint, detail)
    return _result(check, True)


def outcomes_from_records(records: list[dict], outputs: list[list[np.ndarray]]) -> list[Outcome]:
    return [Outcome(r["status"], list(outs), r.get("error", ""), bool(r.get("tuple")), list(r.get("types", [])),
                    r.get("result_type", ""), list(r.get("modified", [])), r.get("repeat", ""))
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
