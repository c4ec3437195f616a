"""Exercise 02 · Softmax: softmax, masked_softmax, divisive_normalization."""

from __future__ import annotations

import numpy as np

from ..neurons import divisive_normalization as _divnorm
from ..softmax import softmax as _softmax
from .spec import Bug, Case, Check, Exercise, Question


def _ref_softmax(x, axis=-1, temperature=1.0):
    return _softmax(x, axis=axis, temperature=temperature)


def _ref_masked(x, mask, axis=-1):
    return _softmax(x, axis=axis, mask=mask)


def _ref_divnorm(drive, sigma, n):
    return _divnorm(drive, sigma=sigma, n=n)


# Classic mistakes, each written as the code a student would have written. Each is the
# solution with ONE mistake: the rest, the dtype of the result included, is right, so that a
# bug explains every output of a student who made that mistake alone (see spec.judge).
def _keeps_dtype(fn):
    """``fn`` computed in at least float32 and returned in the input's floating dtype, as asked."""
    def wrapped(x, axis=-1, temperature=1.0):
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return fn(x.astype(np.promote_types(dtype, np.float32)), axis, temperature).astype(dtype)
    wrapped.__name__ = fn.__name__
    return wrapped


@_keeps_dtype
def _naive(x, axis=-1, temperature=1.0):
    e = np.exp(x / temperature)
    return e / e.sum(axis=axis, keepdims=True)


@_keeps_dtype
def _sum_of_logits(x, axis=-1, temperature=1.0):
    z = x / temperature
    return np.exp(z) / z.sum(axis=axis, keepdims=True)


@_keeps_dtype
def _sum_of_logits_shifted(x, axis=-1, temperature=1.0):
    z = x / temperature
    return np.exp(z - z.max(axis=axis, keepdims=True)) / z.sum(axis=axis, keepdims=True)


def _times_temperature(x, axis=-1, temperature=1.0):
    return _softmax(np.asarray(x) * temperature, axis=axis)


def _ignores_axis(x, axis=-1, temperature=1.0):
    return _softmax(x, axis=-1, temperature=temperature)


def _axis_zero(x, axis=-1, temperature=1.0):
    return _softmax(x, axis=0, temperature=temperature)


def _whole_array(x, axis=-1, temperature=1.0):
    x = np.asarray(x)
    return _softmax(x.ravel(), temperature=temperature).reshape(x.shape)


def _float64_out(x, axis=-1, temperature=1.0):
    return _softmax(np.asarray(x, dtype=np.float64), axis=axis, temperature=temperature)


def _inverted_mask(x, mask, axis=-1):
    return _softmax(x, axis=axis, mask=~np.asarray(mask, dtype=bool))


def _zero_after(x, mask, axis=-1):
    return _softmax(x, axis=axis) * np.asarray(mask, dtype=bool)


def _multiply_scores(x, mask, axis=-1):
    return _softmax(np.asarray(x) * np.asarray(mask, dtype=bool), axis=axis)


def _minus_inf_nan(x, mask, axis=-1):
    z = np.where(np.asarray(mask, dtype=bool), x, -np.inf)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _sigma_not_powered(drive, sigma, n):
    d = np.asarray(drive, dtype=float) ** n
    return d / (sigma + d.sum(axis=-1, keepdims=True))


def _sum_then_power(drive, sigma, n):
    d = np.asarray(drive, dtype=float)
    return d**n / (sigma**n + d.sum(axis=-1, keepdims=True) ** n)


def _no_power(drive, sigma, n):
    d = np.asarray(drive, dtype=float)
    return d / (sigma + d.sum(axis=-1, keepdims=True))


def _pool_whole_array(drive, sigma, n):
    d = np.asarray(drive, dtype=float) ** n
    return d / (sigma**n + d.sum())


# Inputs. Each builder takes the grader's generator, so batch grading sees fresh numbers.
def _small(rng):
    return [Case((np.array([1.0, 2.0, 3.0, 4.0]),), label="x = [1, 2, 3, 4]"),
            Case((rng.normal(size=(3, 5)),), label="x of shape (3, 5)")]


def _axes(rng):
    x = rng.normal(size=(3, 4, 5))
    return [Case((x,), {"axis": 0}, "x of shape (3, 4, 5), axis=0"),
            Case((x,), {"axis": 1}, "x of shape (3, 4, 5), axis=1")]


def _temperatures(rng):
    x = rng.normal(size=(2, 6)) * 2
    return [Case((x,), {"temperature": 0.5}, "temperature=0.5"),
            Case((x,), {"temperature": 3.0}, "temperature=3.0")]


def _large(rng):
    return [Case((np.array([1000.0, 1001.0, 999.0]),), label="x = [1000, 1001, 999]"),
            Case((np.array([[1e4, -1e4, 0.0], [-5e3, -5e3 + 1, -5e3 + 2]]),), label="scores of ±1e4")]


def _dtypes(rng):
    x = rng.normal(size=(2, 5)) * 3
    return [Case((x.astype(np.float32),), label="float32 x"), Case((x.astype(np.float16),), label="float16 x")]


def _bad_temperature(rng):
    x = rng.normal(size=4)
    return [Case((x,), {"temperature": 0.0}, "temperature=0"), Case((x,), {"temperature": -1.0}, "temperature=-1")]


def _masks(rng):
    x = rng.normal(size=(4, 6))
    mask = rng.random((4, 6)) < 0.6
    mask[np.arange(4), rng.integers(0, 6, size=4)] = True  # every row keeps something
    return [Case((x, mask), label="x (4, 6) with a random mask"),
            Case((np.array([[1.0, 2.0, 3.0]]), np.array([[True, False, True]])),
                 label="x = [[1, 2, 3]], mask = [[True, False, True]]")]


def _fully_masked(rng):
    x = rng.normal(size=(3, 4))
    mask = np.array([[True, True, False, False], [False, False, False, False], [True, False, True, True]])
    return [Case((x, mask), label="a mask whose second row is all False")]


def _broadcast_mask(rng):
    x = rng.normal(size=(3, 5))
    return [Case((x, np.array([[True, True, False, True, False]])), label="x (3, 5), mask (1, 5)")]


def _drives(rng):
    return [Case((np.array([1.0, 2.0, 3.0, 4.0]), 1.0, 2.0), label="drive = [1, 2, 3, 4], sigma=1, n=2"),
            Case((rng.uniform(0, 3, size=6), 0.5, 3.0), label="6 drives, sigma=0.5, n=3")]


def _rows(rng):
    return [Case((rng.uniform(0, 2, size=(3, 4)), 1.0, 2.0), label="drive (3, 4): one pool per row")]


def _sigma_zero(rng):
    z = rng.normal(size=5)
    return [Case((np.exp(z), 0.0, 1.0), label="drive = exp(z), sigma=0, n=1"),
            Case((np.exp(z), 0.0, 4.0), label="drive = exp(z), sigma=0, n=4")]


LOGIT_SUM = "You divide by the sum of the scores; divide by the sum of their exponentials."
AXIS_HINT = "Normalise along `axis` only: reductions need `axis=axis, keepdims=True`."
OVERFLOW = ("exp() overflows for large scores (exp(1000) = inf, inf/inf = nan). Subtract the maximum "
            "along `axis` before exponentiating; softmax does not change when every score shifts.")
STABLE = ("Scores like ±1e4 must still give finite weights that sum to 1: subtract the maximum along `axis` "
          "before exponentiating (softmax does not change when every score shifts).")
#: What lesson 03 teaches (section 4): it gives exact zeros to masked entries AND to fully masked rows.
#: (np.where(mask, x, -np.inf) alone turns a fully masked row into NaN: -inf - (-inf).)
LESSON_MASK = ("mask the scores before the softmax as lesson 03 does: m = the maximum over the kept scores (0 for a "
               "row with none), e = np.where(mask, np.exp(x - m), 0.0), then divide by the row sum only where it is "
               "> 0.")

softmax_q = Question(
    "ex02.q1", "softmax", "softmax(x, axis=-1, temperature=1.0)", _ref_softmax, [
        Check("weights are exp(x) / sum of exp(x)", 1.0, _small,
              hint="Exponentiate the scores, then divide by the sum of the exponentials along `axis`.",
              bugs=[Bug(LOGIT_SUM, _sum_of_logits), Bug(LOGIT_SUM, _sum_of_logits_shifted),
                    Bug("You normalise over axis 0; the weights must sum to 1 along `axis` (default -1).", _axis_zero),
                    Bug("You normalise over the whole array; sum along `axis` with keepdims=True.", _whole_array)]),
        Check("respects the `axis` argument", 1.0, _axes, hint=AXIS_HINT,
              bugs=[Bug("The `axis` argument is ignored: you always normalise over the last axis.", _ignores_axis),
                    Bug("You normalise over the whole array instead of along `axis`.", _whole_array)]),
        Check("temperature divides the scores", 1.0, _temperatures,
              hint="softmax(x / T): a temperature above 1 should make the weights flatter.",
              bugs=[Bug("You multiply by the temperature; divide by it (T > 1 flattens the weights).", _times_temperature)]),
        Check("stable for scores of ±1e4 (no overflow)", 1.0, _large, hint=STABLE,
              bugs=[Bug(OVERFLOW, _naive)]),
        Check("keeps the input's dtype (float32, float16)", 0.5, _dtypes, rtol=2e-3, atol=2e-3, dtype=True,
              hint="Return weights with x's dtype (`.astype(x.dtype)`); compute float16 in float32 first.",
              bugs=[Bug("Your result is float64; cast it back with `.astype(x.dtype)`.", _float64_out)]),
        Check("rejects a temperature <= 0 with ValueError", 0.5, _bad_temperature, expect="raise",
              hint="Check `temperature` first: `if temperature <= 0: raise ValueError(...)` naming the argument."),
    ])

masked_q = Question(
    "ex02.q2", "masked_softmax", "masked_softmax(x, mask, axis=-1)", _ref_masked, [
        Check("masked entries get 0 and the rest sum to 1", 1.5, _masks,
              hint="Masked entries get weight exactly 0 and the kept ones sum to 1: " + LESSON_MASK,
              bugs=[Bug("Mask polarity is inverted: True means 'may attend' (keep), False means masked.", _inverted_mask),
                    Bug("You zero the masked weights after the softmax without renormalising: rows no longer sum to 1. "
                        "Mask the scores before the softmax.", _zero_after),
                    Bug("Multiplying the scores by the mask gives masked entries a score of 0, not zero weight. "
                        "Replace masked scores with -inf instead.", _multiply_scores)]),
        Check("a fully masked row gives zeros, not NaN", 1.0, _fully_masked,
              hint="When every entry of a row is masked, return zeros for that row (guard the division).",
              bugs=[Bug("A fully masked row is all -inf: max is -inf and -inf - (-inf) = NaN. Give such rows zero "
                        "weights (e.g. divide only where the sum is > 0).", _minus_inf_nan),
                    Bug("You zero the masked weights after the softmax without renormalising: rows no longer sum to 1. "
                        "Mask the scores before the softmax.", _zero_after),
                    Bug("Mask polarity is inverted: True means 'may attend' (keep), False means masked.", _inverted_mask)]),
        Check("a (1, S) mask broadcasts over the rows", 0.5, _broadcast_mask,
              hint="A (1, S) mask applies to every row: broadcast it first (np.broadcast_to(mask, x.shape)), then "
                   + LESSON_MASK,
              bugs=[Bug("Mask polarity is inverted: True means 'may attend' (keep).", _inverted_mask)]),
    ])

divnorm_q = Question(
    "ex02.q3", "divisive_normalization", "divisive_normalization(drive, sigma, n)", _ref_divnorm, [
        Check("R_j = D_j^n / (sigma^n + sum_k D_k^n)", 1.0, _drives,
              hint="Raise every drive to the power n, add sigma**n to their sum, and divide.",
              bugs=[Bug("sigma must be raised to the power n too: the denominator is sigma**n + sum(D**n).", _sigma_not_powered),
                    Bug("You raise the sum to the power n; sum the powered drives instead: sum(D**n).", _sum_then_power),
                    Bug("The exponent n is missing: use D**n in the numerator and in the pool.", _no_power)]),
        Check("one pool per row of a 2-D drive", 0.5, _rows,
              hint="Pool over the last axis: `.sum(axis=-1, keepdims=True)`.",
              bugs=[Bug("You pool over the whole array; each row is its own pool (sum over axis=-1, keepdims=True).",
                        _pool_whole_array)]),
        Check("sigma = 0 and D = exp(z) give softmax(n z)", 0.5, _sigma_zero,
              hint="With sigma = 0 the result must be exactly softmax(n*z); check the powers."),
    ])

EXERCISE = Exercise("ex02", "ex02_softmax", "Softmax", [softmax_q, masked_q, divnorm_q])
