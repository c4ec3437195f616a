"""Exercise 04 · Scaled dot-product attention: additive_scores, scaled_dot_product_attention, causal_mask."""

from __future__ import annotations

import numpy as np

from ..attention import additive_scores as _additive
from ..attention import causal_mask as _causal
from ..attention import scaled_dot_product_attention as _sdpa
from ..softmax import softmax as _softmax
from .spec import Bug, Case, Check, Exercise, Question


def _ref_additive(q, k, W_q, W_k, v):
    return _additive(q, k, W_q, W_k, v)


def _ref_sdpa(q, k, v, mask=None):
    return _sdpa(q, k, v, mask)


def _ref_causal(t, s=None):
    return _causal(t, s)


# ---- additive score bugs
def _no_tanh(q, k, W_q, W_k, v):
    q, k = np.asarray(q, float), np.asarray(k, float)
    return ((q @ W_q)[..., :, None, :] + (k @ W_k)[..., None, :, :]) @ v


def _tanh_each(q, k, W_q, W_k, v):
    q, k = np.asarray(q, float), np.asarray(k, float)
    return (np.tanh(q @ W_q)[..., :, None, :] + np.tanh(k @ W_k)[..., None, :, :]) @ v


# ---- attention bugs (q (..., T, d), k (..., S, d), v (..., S, dv))
def _attend(scores, v, mask=None, axis=-1):
    return _softmax(scores, axis=axis, mask=mask) @ np.asarray(v, float), _softmax(scores, axis=axis, mask=mask)


def _scores(q, k, scale):
    q, k = np.asarray(q, float), np.asarray(k, float)
    return q @ np.swapaxes(k, -1, -2) / scale


def _by_d(q, k, v, mask=None):
    return _attend(_scores(q, k, np.shape(q)[-1]), v, mask)


def _unscaled(q, k, v, mask=None):
    return _attend(_scores(q, k, 1.0), v, mask)


def _scale_after(q, k, v, mask=None):
    w = _softmax(_scores(q, k, 1.0), mask=mask) / np.sqrt(np.shape(q)[-1])
    return w @ np.asarray(v, float), w


def _keys_not_transposed(q, k, v, mask=None):
    s = np.asarray(q, float) @ np.asarray(k, float) / np.sqrt(np.shape(q)[-1])
    return _attend(s, v, mask)


def _query_axis(q, k, v, mask=None):
    s = _scores(q, k, np.sqrt(np.shape(q)[-1]))
    return _attend(s, v, mask, axis=-2)


def _mask_inverted(q, k, v, mask=None):
    return _sdpa(q, k, v, None if mask is None else ~np.asarray(mask, dtype=bool))


def _mask_after(q, k, v, mask=None):
    w = _softmax(_scores(q, k, np.sqrt(np.shape(q)[-1])))
    if mask is not None:
        w = w * np.asarray(mask, dtype=bool)
    return w @ np.asarray(v, float), w


def _mask_nan(q, k, v, mask=None):
    s = _scores(q, k, np.sqrt(np.shape(q)[-1]))
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    w = e / e.sum(axis=-1, keepdims=True)
    return w @ np.asarray(v, float), w


# ---- causal bugs
def _no_diagonal(t, s=None):
    s = t if s is None else s
    return np.tri(t, s, k=-1, dtype=bool)


def _transposed(t, s=None):
    s = t if s is None else s
    return np.tri(s, t, dtype=bool).T


def _bottom_right(t, s=None):
    s = t if s is None else s
    return np.tri(t, s, k=s - t, dtype=bool)


def _as_ints(t, s=None):
    return _causal(t, s).astype(int)


def _additive_cases(rng):
    return [Case((rng.normal(size=(3, 4)), rng.normal(size=(5, 2)), rng.normal(size=(4, 6)), rng.normal(size=(2, 6)),
                  rng.normal(size=6)), label="q (3, 4), k (5, 2), W_q (4, 6), W_k (2, 6), v (6,)")]


def _additive_batched(rng):
    return [Case((rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3)),
                  rng.normal(size=3)), label="batched q (2, 3, 4), k (2, 5, 4)")]


def _plain(rng):
    # d == S so that forgetting to transpose the keys gives wrong numbers, not an error.
    return [Case((rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 4, 4)), rng.normal(size=(2, 4, 5))),
                 label="q (2, 3, 4), k (2, 4, 4), v (2, 4, 5)"),
            Case((rng.normal(size=(3, 8)) * 2, rng.normal(size=(6, 8)) * 2, rng.normal(size=(6, 2))),
                 label="q (3, 8), k (6, 8), v (6, 2)")]


def _masked(rng):
    mask = rng.random((2, 3, 5)) < 0.6
    mask[..., 0] = True
    return [Case((rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3)), mask),
                 label="a random (2, 3, 5) mask")]


def _fully_masked(rng):
    mask = np.ones((4, 4), dtype=bool)
    mask[1] = False
    return [Case((rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 2)), mask),
                 label="a mask whose second query row is all False")]


def _heads(rng):
    return [Case((rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 6, 4)), rng.normal(size=(2, 3, 6, 4)),
                  _causal(5, 6)), label="heads: q (2, 3, 5, 4) with a (5, 6) causal mask")]


def _square(rng):
    return [Case((4,), label="t=4"), Case((1,), label="t=1")]


def _rect(rng):
    return [Case((3, 5), label="t=3, s=5"), Case((5, 3), label="t=5, s=3")]


additive_q = Question(
    "ex04.q1", "additive_scores", "additive_scores(q, k, W_q, W_k, v)", _ref_additive, [
        Check("v · tanh(q W_q + k W_k) for every query–key pair", 1.5, _additive_cases,
              hint="Project both, broadcast to (T, S, h): (q @ W_q)[:, None, :] + (k @ W_k)[None, :, :], tanh, then @ v.",
              bugs=[Bug("The tanh is missing: without it the score is linear and the ranking of keys no longer "
                        "depends on the query. Use v · tanh(q W_q + k W_k).", _no_tanh),
                    Bug("Apply one tanh to the SUM q W_q + k W_k, not to each term separately.", _tanh_each)]),
        Check("works with leading batch dimensions", 0.5, _additive_batched,
              hint="Index with [..., :, None, :] and [..., None, :, :] so any batch dimensions pass through."),
    ])

sdpa_q = Question(
    "ex04.q2", "scaled_dot_product_attention", "scaled_dot_product_attention(q, k, v, mask=None)", _ref_sdpa, [
        Check("softmax(q kᵀ / √d) v and its weights", 2.0, _plain,
              hint="scores = q @ swapaxes(k, -1, -2) / sqrt(d); weights = softmax over the keys (last axis); "
                   "return (weights @ v, weights).",
              bugs=[Bug("You scale by d; scale by √d (np.sqrt(d)), which keeps the scores' variance near 1.", _by_d),
                    Bug("The scores are not scaled: divide q kᵀ by √d before the softmax.", _unscaled),
                    Bug("You scale after the softmax: the weights no longer sum to 1. Divide the scores by √d "
                        "BEFORE the softmax.", _scale_after),
                    Bug("The keys are not transposed: scores = q @ kᵀ (np.swapaxes(k, -1, -2)), not q @ k.",
                        _keys_not_transposed),
                    Bug("The softmax runs over the queries (axis -2); each query's weights must sum to 1 over the "
                        "keys (axis -1).", _query_axis)]),
        Check("mask: True = may attend, masked keys get weight 0", 1.0, _masked,
              hint="Masked keys get weight exactly 0 and each query's visible keys share all of it: mask the scores "
                   "before the softmax, as in ex02's masked_softmax (zeros for a row with no visible key).",
              bugs=[Bug("Mask polarity is inverted: True means 'may attend' (keep), False means masked.", _mask_inverted),
                    Bug("You zero the masked weights after the softmax without renormalising; mask the scores "
                        "before the softmax.", _mask_after)]),
        Check("a fully masked query row gives zero weights and zero output", 0.5, _fully_masked,
              hint="A row with no visible key must give zeros, not NaN: guard the division by the row sum.",
              bugs=[Bug("A fully masked row is all -inf and becomes NaN; return zero weights for such rows.", _mask_nan)]),
        Check("works with heads: (B, H, T, d) and a (T, S) mask", 0.5, _heads,
              hint="Use np.swapaxes(k, -1, -2) and @ (or einsum with '...'), so extra leading axes broadcast."),
    ], outputs=("output", "weights"))

causal_q = Question(
    "ex04.q3", "causal_mask", "causal_mask(t, s=None)", _ref_causal, [
        Check("lower triangle including the diagonal", 1.0, _square, dtype=True,
              hint="mask[i, j] = j <= i: each token may attend to itself and to earlier tokens.",
              bugs=[Bug("The diagonal is excluded: a token must be able to attend to itself (j <= i, not j < i).",
                        _no_diagonal),
                    Bug("The mask is transposed: row i (the query) may see columns j <= i (earlier keys), not later ones.",
                        _transposed),
                    Bug("Return booleans (True = may attend), e.g. with `np.tri(t, s, dtype=bool)` or a comparison.",
                        _as_ints)]),
        Check("t ≠ s: aligned at the top-left corner (like Keras)", 1.0, _rect, dtype=True,
              hint="With t queries and s keys, mask[i, j] = j <= i for every i < t, j < s.",
              bugs=[Bug("Your triangle is aligned at the bottom-right corner; Keras (use_causal_mask) aligns it at "
                        "the top-left: mask[i, j] = j <= i.", _bottom_right),
                    Bug("The mask is transposed: row i (the query) may see columns j <= i.", _transposed)]),
    ])

EXERCISE = Exercise("ex04", "ex04_scaled_dot_product", "Scaled dot-product attention", [additive_q, sdpa_q, causal_q])
