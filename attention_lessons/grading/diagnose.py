"""Generic probes: what is wrong with an answer, found without knowing the bug.

The catalogue of known bugs (:class:`spec.Bug`) names a mistake when it explains *every*
output of a question. When none does, the feedback must still say something true. The
probes here compare the student's outcome of one call with the reference's and report
only facts about them:

* the **contract** of every call: the inputs are left unchanged, the result has the promised
  type (a NumPy array, not a list), the promised kind of dtype, and the same inputs give the
  same answer twice (:func:`contract_findings`);
* the **shape** of a wrong result: transposed, the right values in another shape or axis order
  (:func:`shape_findings`);
* the **values** of a wrong result: NaN/inf, off by a constant factor (named after the case's
  sizes: √d, d, the number of heads...), weights at another temperature, transposed, rows that
  do not sum to 1, wrong only at masked positions or on fully masked rows, or equal to the
  reference with the mask inverted (:func:`value_findings`).

:func:`write_case` writes the failing case out: the inputs, and the expected and received
values where they differ. Nothing here knows an exercise; every function takes the outcomes,
the case and the names of the arguments and outputs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # spec imports this module; the annotation only names its Outcome
    from .spec import Outcome

#: Arrays with at most this many entries are written out in full.
SMALL = 24


@dataclass(frozen=True)
class Tolerance:
    """``allclose`` with a check's tolerances, NaN equal to NaN; False for other shapes."""

    rtol: float
    atol: float

    def __call__(self, a, b) -> bool:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=self.rtol, atol=self.atol, equal_nan=True))


@dataclass
class Finding:
    """One fact about a wrong answer (``text``) and, when it points at a fix, ``advice``."""

    text: str
    advice: str = ""
    blocks_catalogue: bool = True   # False where a catalogued bug can do the same (e.g. return ints)


# --------------------------------------------------------------------------------------
# Contract: inputs unchanged, promised type and dtype, same answer twice
# --------------------------------------------------------------------------------------

_KINDS = {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point", "c": "complex"}

IN_PLACE = ("Never write into an argument (`x -= m`, `x[...] = ...`, `x *= gain`, `np.exp(x, out=x)`): "
            "`np.asarray(x)` does not copy, so the caller's array changes. Compute new arrays instead "
            "(`z = x - m`) or start from a copy (`x = np.array(x, dtype=float)`).")
NOT_ARRAY = "Return NumPy arrays (e.g. `np.asarray(result)`), not {got}."
NOT_TUPLE = "Return a tuple of {n} arrays, `return {names}`."
NOT_REPEATABLE = ("The same inputs must give the same answer: do not keep state between calls (a global, a "
                  "list as a default argument) and do not draw random numbers.")


def contract_findings(student: Outcome, expected: Outcome, output_names: Sequence[str] = ()) -> list[Finding]:
    """What one call that returned broke of the contract every question shares.

    ``student`` and ``expected`` are :class:`spec.Outcome` s of the same case; only a student's
    call that returned (status "ok") is examined.
    """
    if student.status != "ok":
        return []
    found = []
    if student.modified:
        changed = ", ".join(f"`{m}`" for m in student.modified)
        found.append(Finding(f"Your function changed its input {changed} in place: after the call it no longer "
                             f"holds what was passed in.", IN_PLACE))
    if expected.status == "ok":
        if expected.is_tuple and not student.is_tuple and len(expected.outputs) > 1:
            n = len(expected.outputs)
            names = ", ".join(output_names) if len(output_names) == n else ", ".join("abcdefgh"[:n])
            got = "a list" if student.result_type == "list" else f"one {student.result_type}"
            found.append(Finding(f"It returned {got}, not a tuple of {len(expected.outputs)} arrays.",
                                 NOT_TUPLE.format(n=len(expected.outputs), names=names)))
        for k, (got_type, e) in enumerate(zip(student.types, expected.outputs)):
            if e.ndim >= 1 and got_type not in ("ndarray", ""):
                name = _output_names(output_names, len(expected.outputs))[k]
                found.append(Finding(f"{_cap(name)} is a {got_type}, not a NumPy array.",
                                     NOT_ARRAY.format(got=f"a {got_type}")))
        for k, (s, e) in enumerate(zip(student.outputs, expected.outputs)):
            if _KINDS.get(s.dtype.kind) != _KINDS.get(e.dtype.kind) and s.dtype.kind in _KINDS:
                name = _output_names(output_names, len(expected.outputs))[k]
                found.append(Finding(f"{_cap(name)} holds {_KINDS[s.dtype.kind]} values ({s.dtype}); "
                                     f"{_KINDS.get(e.dtype.kind, e.dtype.kind)} values ({e.dtype}) are promised.",
                                     f"Return {_KINDS.get(e.dtype.kind, str(e.dtype))} values "
                                     f"(e.g. `.astype({e.dtype.name})`).", blocks_catalogue=False))
    if student.repeat not in ("", "same"):
        how = "different results" if student.repeat == "differs" else f"a result, then {student.repeat}"
        found.append(Finding(f"Called twice on the same inputs, it returned {how}.", NOT_REPEATABLE))
    return found


# --------------------------------------------------------------------------------------
# Shapes and values
# --------------------------------------------------------------------------------------

def axis_order_findings(s: np.ndarray, e: np.ndarray, name: str, close: Tolerance) -> list[Finding]:
    """The right values with the axes in another order (e.g. (B, T, N, H) for (B, N, T, H))."""
    if s.size != e.size or s.ndim != e.ndim or not 2 <= s.ndim <= 5:
        return []
    for perm in itertools.permutations(range(s.ndim)):
        if perm == tuple(range(s.ndim)) or tuple(s.shape[p] for p in perm) != e.shape \
                or not close(np.transpose(s, perm), e):
            continue
        if perm == tuple(range(s.ndim - 2)) + (s.ndim - 1, s.ndim - 2):
            return [Finding(f"{_cap(name)} is the expected one transposed (its last two axes swapped).",
                            "Swap the last two axes: build the result in the promised layout.")]
        shapes = f"shape {s.shape} instead of {e.shape}; " if s.shape != e.shape else ""
        return [Finding(f"{_cap(name)} holds the right values with its axes in another order: {shapes}"
                        f"`.transpose{perm}` of yours is the expected result.",
                        f"Arrange the axes in the promised order (shape {e.shape}).")]
    return []


def shape_findings(s: np.ndarray, e: np.ndarray, name: str, close: Tolerance) -> list[Finding]:
    """Why ``s`` (received) has another shape than ``e`` (expected), when the values tell."""
    if s.size != e.size or s.shape == e.shape:
        return []
    found = axis_order_findings(s, e, name, close)
    if found:
        return found
    if s.squeeze().shape == e.squeeze().shape and close(s.reshape(e.shape), e):
        return [Finding(f"{_cap(name)} has the right values but shape {s.shape} instead of {e.shape} "
                        f"(an axis of size 1 too many or too few).", f"Return shape {e.shape}.")]
    if close(s.reshape(e.shape), e):
        return [Finding(f"{_cap(name)} has the right values in the right order, but shape {s.shape} instead of "
                        f"{e.shape}.", f"Return shape {e.shape}.")]
    return []


def value_findings(s: np.ndarray, e: np.ndarray, name: str, close: Tolerance, mask: np.ndarray | None,
                   sizes: dict[str, int]) -> list[Finding]:
    """Facts about ``s`` (received) against ``e`` (expected), both of one shape, that differ.

    ``mask`` is the case's boolean mask (True = may attend) if it has one, ``sizes`` the named
    integers of the case (``q.shape[-1]``: 4, ``num_heads``: 2) used to name a factor.
    """
    s64, e64 = s.astype(np.float64), e.astype(np.float64)
    bad = ~_close_elementwise(s64, e64, close)
    found = []
    nonfinite = ~np.isfinite(s64) & np.isfinite(e64)
    if nonfinite.any():
        what = "NaN" if np.isnan(s64[nonfinite]).all() else "inf or NaN"
        found.append(Finding(f"{_cap(name)} contains {what} at {int(nonfinite.sum())} of {s.size} entries, where "
                             f"finite values are expected.", ""))
    found += _mask_findings(bad, s64, e64, name, mask)
    if not nonfinite.any():
        found += _factor_findings(s64, e64, name, close, sizes)
    found += axis_order_findings(s, e, name, close)
    found += _distribution_findings(s64, e64, name, close, sizes)
    return found


def _close_elementwise(s64: np.ndarray, e64: np.ndarray, close: Tolerance) -> np.ndarray:
    rtol, atol = close.rtol, close.atol
    both_nan = np.isnan(s64) & np.isnan(e64)
    with np.errstate(invalid="ignore"):
        return both_nan | (np.abs(s64 - e64) <= atol + rtol * np.abs(e64))


def _mask_findings(bad: np.ndarray, s64: np.ndarray, e64: np.ndarray, name: str,
                   mask: np.ndarray | None) -> list[Finding]:
    """Wrong only on fully masked rows, or only at masked positions."""
    if mask is None or not bad.any():
        return []
    keep = _mask_like(mask, e64.shape)
    if keep is not None:   # weights-like: one entry per (query, key)
        empty_rows = ~keep.any(axis=-1, keepdims=True) & np.ones_like(keep)
        masked = ~keep
    else:                  # output-like: one row per query
        rows = _rows_like(mask, e64.shape)
        if rows is None:
            return []
        empty_rows, masked = rows, None
    if empty_rows.any() and not (bad & ~empty_rows).any():
        return [Finding(f"{_cap(name)} is right everywhere except on the fully masked rows (queries that may "
                        f"attend to no key).",
                        "A query with no visible key gets zero weights, so a zero context: compute the maximum over "
                        "the visible scores only (0 where there is none) and divide only where the row sum is > 0.")]
    if masked is not None and masked.any() and not (bad & ~masked).any():
        return [Finding(f"{_cap(name)} is right at every visible position but not at the masked ones (mask False), "
                        f"which must get weight exactly 0.", "")]
    if masked is not None and (bad & ~masked).any() and not (bad & masked).any() and (s64[masked] == 0).all():
        sums = s64.sum(axis=-1)
        return [Finding(f"The masked positions of {name} are 0, but the visible ones are off: each row sums to "
                        f"{_range(sums[keep.any(axis=-1)])} instead of 1.",
                        "Mask the scores before the softmax, so the visible weights are renormalised among themselves.")]
    return []


def _mask_like(mask: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``mask`` broadcast to a weights-like ``shape`` (..., T, S), or None if it is not one.

    A (B, T, S) mask against (B, N, T, S) weights gets a heads axis first: the course's
    convention (B, N, T, S), which plain broadcasting would misalign.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 0 or len(shape) < 2 or m.shape[-1] != shape[-1] or (m.ndim >= 2 and m.shape[-2] not in (1, shape[-2])):
        return None
    if m.ndim == len(shape) - 1 and m.ndim >= 3:
        m = m[:, None]
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        return None


def _rows_like(mask: np.ndarray, shape: tuple) -> np.ndarray | None:
    """Fully masked query rows of ``mask`` broadcast to an output-like ``shape`` (..., T, d_v)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim < 2 or len(shape) < 2 or m.shape[-2] not in (1, shape[-2]):
        return None
    empty = ~m.any(axis=-1)[..., None]
    try:
        return np.broadcast_to(empty, shape)
    except ValueError:
        return None


def _factor_findings(s64: np.ndarray, e64: np.ndarray, name: str, close: Tolerance,
                     sizes: dict[str, int]) -> list[Finding]:
    """``s = c · e`` for one constant c ≠ 1, named after the case's sizes when one fits."""
    big = np.abs(e64) > 1e-12
    if big.sum() < 2:   # one number is always some multiple of another: that says nothing
        return []
    c = float(np.sum(s64 * e64) / np.sum(e64 * e64))
    if not np.isfinite(c) or abs(c - 1) < 1e-3 or abs(c) < 1e-12 or not close(s64, c * e64):
        return []
    return [Finding(f"{_cap(name)} is the expected one multiplied by {_name_factor(c, sizes)}.",
                    "Look for a factor applied once too often, or where it does not belong.")]


def _distribution_axis(a: np.ndarray) -> int | None:
    """The axis along which ``a`` holds weights (non-negative, every slice sums to 1 or to 0), if any;
    the last axis first."""
    if a.ndim < 1 or a.size == 0 or (a < -1e-12).any():
        return None
    for axis in [a.ndim - 1, *range(a.ndim - 1)]:
        sums = a.sum(axis=axis)
        if a.shape[axis] > 1 and np.all((np.abs(sums - 1) < 1e-6) | (np.abs(sums) < 1e-12)) \
                and (np.abs(sums - 1) < 1e-6).any():
            return axis
    return None


def _distribution_findings(s64: np.ndarray, e64: np.ndarray, name: str, close: Tolerance,
                           sizes: dict[str, int]) -> list[Finding]:
    """For weights (slices that sum to 1, or 0 when fully masked): slices that do not, the wrong
    axis, another temperature."""
    axis = _distribution_axis(e64)
    if axis is None or not np.isfinite(s64).all():
        return []
    rel = axis - e64.ndim
    e_sums, s_sums = e64.sum(axis=axis), s64.sum(axis=axis)
    visible = np.abs(e_sums - 1) < 1e-6
    if np.abs(s_sums[visible] - 1).max(initial=0) > 1e-6:
        other = _distribution_axis(s64)
        if other is not None and other != axis:
            return [Finding(f"The entries of {name} sum to 1 along axis {other - s64.ndim} instead of along axis {rel}.",
                            f"Normalise along axis {rel}: every reduction (max, sum) needs that axis and keepdims=True.")]
        return [Finding(f"The weights of {name} sum to {_range(s_sums[visible])} along axis {rel} instead of 1.", "")]
    # Both are distributions: are the student's the expected ones at another temperature?
    # Then log s = c · log e + (a constant per slice), and c names the factor on the scores.
    if (s64 > 0).all() and (e64 > 0).all():
        ls, le = np.log(s64), np.log(e64)
        ls, le = ls - ls.mean(axis=axis, keepdims=True), le - le.mean(axis=axis, keepdims=True)
        denom = float(np.sum(le * le))
        if denom > 1e-12:
            c = float(np.sum(ls * le) / denom)
            if abs(c - 1) > 1e-3 and np.allclose(ls, c * le, rtol=1e-4, atol=1e-6):
                return [Finding(f"{_cap(name)} equals the expected weights with every score multiplied by "
                                f"{_name_factor(c, sizes)} before the softmax.",
                                "Check the factor on the scores (the scaling, the temperature, the bandwidth).")]
    return []


def _name_factor(c: float, sizes: dict[str, int]) -> str:
    """``0.5 (= 1/√4, where q.shape[-1] = 4)`` when a size of the case explains ``c``; else the number."""
    for label, n in sizes.items():
        if n < 2:
            continue
        for text, value in ((f"{n}", n), (f"1/{n}", 1 / n), (f"√{n}", math.sqrt(n)), (f"1/√{n}", 1 / math.sqrt(n)),
                            (f"{n}²", n * n), (f"1/{n}²", 1 / (n * n))):
            if abs(c - value) <= 1e-6 * max(1.0, abs(value)):
                return f"{c:.6g} (= {text}, where {label} = {n})"
    for (label_a, a), (label_b, b) in itertools.permutations(sizes.items(), 2):
        if a != b and abs(c - math.sqrt(a / b)) <= 1e-6 * math.sqrt(a / b):
            return f"{c:.6g} (= √({a}/{b}), where {label_a} = {a} and {label_b} = {b})"
    for text, value in (("2", 2.0), ("1/2", 0.5), ("-1", -1.0)):
        if abs(c - value) <= 1e-6:
            return text
    return f"{c:.6g}"


def _range(values: np.ndarray) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return f"{lo:.4g}" if abs(hi - lo) < 1e-9 else f"{lo:.4g} … {hi:.4g}"


def _cap(name: str) -> str:
    return name if name.startswith("`") else name[:1].upper() + name[1:]


def _output_names(names: Sequence[str], n: int) -> list[str]:
    """How feedback calls each returned value: the question's names in backticks (they are
    code, and read well as a sentence's subject), else "the output" or "output k"."""
    if len(names) == n:
        return [f"`{name}`" for name in names]
    return ["the output"] if n == 1 else [f"output {k}" for k in range(n)]


# --------------------------------------------------------------------------------------
# Facts of a case: its sizes and its mask
# --------------------------------------------------------------------------------------

def case_sizes(values: dict[str, object]) -> dict[str, int]:
    """Named integers of a case, for naming factors: ``{"q.shape[-1]": 4, "num_heads": 2, ...}``.

    The last axis comes first: a scaling bug is about a feature size far more often than
    about a batch size, and the first size that explains a factor names it.
    """
    sizes: dict[str, int] = {}
    for name, value in values.items():
        if isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, np.integer)):
            sizes.setdefault(name, int(value))
        elif isinstance(value, dict):
            sizes.update({k: v for k, v in case_sizes({f"{name}[{key!r}]": v for key, v in value.items()}).items()
                          if k not in sizes})
    for name, value in values.items():
        if isinstance(value, np.ndarray) and value.dtype != bool:
            for axis in range(-1, -value.ndim - 1, -1):
                sizes.setdefault(f"{name}.shape[{axis}]", int(value.shape[axis]))
    return sizes


def case_mask(values: dict[str, object]) -> np.ndarray | None:
    """The case's boolean mask (the first boolean array among its arguments), if any."""
    for value in values.values():
        if isinstance(value, np.ndarray) and value.dtype == bool and value.ndim >= 1:
            return value
    return None


def invert_masks(args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """The same arguments with every boolean array inverted; None when there is none."""
    flip = lambda v: ~v if isinstance(v, np.ndarray) and v.dtype == bool else v  # noqa: E731
    new_args, new_kwargs = tuple(flip(a) for a in args), {k: flip(v) for k, v in kwargs.items()}
    changed = any(a is not b for a, b in zip(new_args, args)) or any(new_kwargs[k] is not kwargs[k] for k in kwargs)
    return (new_args, new_kwargs) if changed else None


# --------------------------------------------------------------------------------------
# Writing a case out
# --------------------------------------------------------------------------------------

def format_value(value: object, indent: str = "") -> str:
    """A short, readable rendering of an argument or output (small arrays in full)."""
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        if a.size <= SMALL:
            text = np.array2string(a, precision=4, separator=", ", suppress_small=True, max_line_width=88)
            return text.replace("\n", "\n" + indent)
        return f"{a.dtype} array of shape {a.shape}"
    if isinstance(value, dict):
        inner = ", ".join(f"{k!r}: {format_value(v) if not isinstance(v, np.ndarray) or v.size <= 4 else _shape(v)}"
                          for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
        return f"{len(value)} arrays of shapes " + ", ".join(str(v.shape) for v in value)
    return repr(value)


def _shape(a: np.ndarray) -> str:
    return f"{a.dtype} {a.shape}"


def write_differences(s: np.ndarray, e: np.ndarray, name: str, close: Tolerance, indent: str) -> list[str]:
    """Lines with the expected and received values of one output, where they differ."""
    if s.shape != e.shape:
        return [f"{indent}{name}: expected shape {e.shape}, received shape {s.shape}",
                *( [f"{indent}  expected: {format_value(e, indent + '            ')}",
                    f"{indent}  received: {format_value(s, indent + '            ')}"] if max(s.size, e.size) <= SMALL else [])]
    if e.size <= SMALL:
        return [f"{indent}{name}:",
                f"{indent}  expected: {format_value(e, indent + '            ')}",
                f"{indent}  received: {format_value(s, indent + '            ')}"]
    bad = ~_close_elementwise(s.astype(np.float64), e.astype(np.float64), close)
    where = list(zip(*np.nonzero(bad)))
    lines = [f"{indent}{name} ({_shape(e)}) differs at {len(where)} of {e.size} entries, e.g."]
    for idx in where[:3]:
        at = ", ".join(str(int(i)) for i in idx)
        lines.append(f"{indent}  [{at}]: expected {float(e[idx]):.6g}, received {float(s[idx]):.6g}")
    return lines
