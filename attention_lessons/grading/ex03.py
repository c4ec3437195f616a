"""Exercise 03 · Attention pooling: nadaraya_watson."""

from __future__ import annotations

import numpy as np

from ..attention import nadaraya_watson as _nw
from ..softmax import softmax as _softmax
from .spec import Bug, Case, Check, Exercise, Question


def _ref(queries, keys, values, bandwidth):
    return _nw(queries, keys, values, bandwidth)


def _sq_dist(queries, keys):
    q, k = np.asarray(queries, dtype=float), np.asarray(keys, dtype=float)
    q2 = q[:, None] if q.ndim == 1 else q
    k2 = k[:, None] if k.ndim == 1 else k
    return ((q2[:, None, :] - k2[None, :, :]) ** 2).sum(-1)


def _pool(weights, values):
    return weights @ np.asarray(values, dtype=float), weights


def _variant(score_fn, axis=-1, stable=True):
    def fn(queries, keys, values, bandwidth):
        s = score_fn(_sq_dist(queries, keys), float(bandwidth))
        if stable:
            w = _softmax(s, axis=axis)
        else:
            e = np.exp(s)
            w = e / e.sum(axis=axis, keepdims=True)
        return _pool(w, values)
    return fn


_query_axis = _variant(lambda d, h: -d / (2 * h * h), axis=0)
_h_not_squared = _variant(lambda d, h: -d / (2 * h))
_h_multiplied = _variant(lambda d, h: -d * h * h / 2)
_no_minus = _variant(lambda d, h: d / (2 * h * h))
_no_half = _variant(lambda d, h: -d / (h * h))
_naive = _variant(lambda d, h: -d / (2 * h * h), stable=False)


def _one_d(rng):
    keys = np.sort(rng.uniform(0, 5, size=10))
    return [Case((np.array([0.0]), np.array([-1.0, 0.0, 2.0]), np.array([1.0, 2.0, 3.0]), 1.0),
                 label="query 0, keys [-1, 0, 2], values [1, 2, 3], bandwidth 1"),
            Case((np.linspace(0, 5, 7), keys, 2 * np.sin(keys) + keys**0.8, 0.5), label="7 queries, 10 keys, h = 0.5")]


def _far(rng):
    return [Case((np.array([10.0, -8.0]), rng.uniform(0, 1, size=6), rng.normal(size=6), 0.1),
                 label="queries far from every key, h = 0.1")]


def _multi_d(rng):
    return [Case((rng.normal(size=(4, 2)), rng.normal(size=(9, 2)), rng.normal(size=9), 0.8),
                 label="2-D queries (4, 2) and keys (9, 2)")]


def _vector_values(rng):
    keys = rng.uniform(0, 5, size=8)
    return [Case((rng.uniform(0, 5, size=5), keys, rng.normal(size=(8, 3)), 1.0), label="values of shape (8, 3)")]


def _bad(rng):
    return [Case((np.zeros(2), np.zeros(3), np.zeros(3), 0.0), label="bandwidth=0"),
            Case((np.zeros(2), np.zeros(3), np.zeros(4), 1.0), label="3 keys but 4 values")]


WRONG_AXIS = ("Your weights sum to 1 over the queries; each query's weights must sum to 1 over the keys "
              "(softmax along axis -1 of the (n_queries, n_keys) scores).")

question = Question(
    "ex03.q1", "nadaraya_watson", "nadaraya_watson(queries, keys, values, bandwidth)", _ref, [
        Check("prediction and weights on 1-D data", 1.5, _one_d,
              hint="weights = softmax(-(q - k)² / (2 h²)) over the keys; prediction = weights @ values.",
              bugs=[Bug(WRONG_AXIS, _query_axis),
                    Bug("The bandwidth must be squared: the score is -(q - k)² / (2 h²), not / (2 h).", _h_not_squared),
                    Bug("Divide by the squared bandwidth; multiplying by it makes a wide kernel sharper.", _h_multiplied),
                    Bug("The score is MINUS the squared distance: without the minus sign the farthest keys get "
                        "the largest weights.", _no_minus),
                    Bug("The Gaussian kernel has a 1/2: the score is -(q - k)² / (2 h²).", _no_half)]),
        Check("stable when a query is far from every key", 1.0, _far,
              hint="Far from every key the weights must still be finite and sum to 1: subtract each row's maximum "
                   "score before exponentiating (or reuse your softmax from ex02).",
              bugs=[Bug("exp(score) underflows to 0 for every key when the query is far away, and 0/0 = NaN. "
                        "Subtract the maximum score of each row before exponentiating.", _naive)]),
        Check("multi-dimensional keys: squared distance summed over features", 0.5, _multi_d,
              hint="For keys of shape (n, d) the distance is the sum over features of (q - k)²."),
        Check("vector values of shape (n_keys, d_v)", 0.5, _vector_values,
              hint="prediction = weights @ values works for values of shape (n_keys, d_v) too."),
        Check("bad input raises ValueError", 0.5, _bad, expect="raise",
              hint="Raise ValueError for bandwidth <= 0 and when keys and values differ in length, naming the arguments."),
    ], outputs=("prediction", "weights"))

EXERCISE = Exercise("ex03", "ex03_attention_pooling", "Attention pooling", [question])
