"""Exercise 05 · Multi-head attention in NumPy: split_heads, merge_heads, multi_head_attention."""

from __future__ import annotations

import numpy as np

from ..attention import init_params as _init
from ..attention import merge_heads as _merge
from ..attention import multi_head_attention as _mha
from ..attention import split_heads as _split
from ..softmax import softmax as _softmax
from .spec import Bug, Case, Check, Exercise, Question


def _ref_split(x, num_heads):
    return _split(x, num_heads)


def _ref_merge(x):
    return _merge(x)


def _ref_mha(query, value, params, num_heads, mask=None):
    return _mha(query, value, params, num_heads, mask=mask)


def _split_no_transpose(x, num_heads):
    b, t, f = np.shape(x)
    return np.asarray(x).reshape(b, num_heads, t, f // num_heads)


def _split_head_size_first(x, num_heads):
    b, t, f = np.shape(x)
    return np.asarray(x).reshape(b, t, f // num_heads, num_heads).transpose(0, 3, 1, 2)


def _merge_no_transpose(x):
    b, n, t, h = np.shape(x)
    return np.asarray(x).reshape(b, t, n * h)


def _buggy_mha(share=False, scale="key_dim", output=True, invert=False, merge_transpose=True, guard=True):
    """A student-style forward pass with one classic mistake switched on."""
    def fn(query, value, params, num_heads, mask=None):
        p = {k: np.asarray(v, dtype=float) for k, v in params.items()}
        xq, xv = np.asarray(query, float), np.asarray(value, float)
        kq = p["query_kernel"]
        kk, kv = (kq, kq) if share else (p["key_kernel"], p["value_kernel"])
        bk, bv = (p["query_bias"], p["query_bias"]) if share else (p["key_bias"], p["value_bias"])
        q = np.einsum("btd,dnh->bnth", xq, kq) + p["query_bias"][:, None, :]
        k = np.einsum("bsd,dnh->bnsh", xv, kk) + bk[:, None, :]
        v = np.einsum("bsd,dnh->bnsh", xv, kv) + bv[:, None, :]
        d = {"key_dim": q.shape[-1], "d_model": xq.shape[-1], "none": 1.0}[scale]
        scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)              # (B, N, T, S)
        keep = None if mask is None else np.asarray(mask, dtype=bool)[:, None]
        if keep is not None and invert:
            keep = ~keep
        if guard:
            weights = _softmax(scores, mask=keep)
        else:  # -inf fill and a plain softmax: a fully masked row is -inf - (-inf) = NaN
            s = scores if keep is None else np.where(keep, scores, -np.inf)
            e = np.exp(s - s.max(axis=-1, keepdims=True))
            weights = e / e.sum(axis=-1, keepdims=True)
        context = weights @ v                                           # (B, N, T, Hv)
        b, n, t, hv = context.shape
        merged = (context.transpose(0, 2, 1, 3) if merge_transpose else context).reshape(b, t, n * hv)
        if not output:
            return merged
        return merged @ p["output_kernel"].reshape(n * hv, -1) + p["output_bias"]
    return fn


def _split_cases(rng):
    return [Case((np.arange(12.0).reshape(1, 2, 6), 2), label="x = arange(12).reshape(1, 2, 6), 2 heads"),
            Case((rng.normal(size=(2, 3, 8)), 4), label="x (2, 3, 8), 4 heads")]


def _split_bad(rng):
    return [Case((np.zeros((2, 3, 7)), 2), label="7 features and 2 heads")]


def _merge_cases(rng):
    return [Case((np.arange(12.0).reshape(1, 2, 2, 3),), label="x = arange(12).reshape(1, 2, 2, 3)"),
            Case((rng.normal(size=(2, 4, 3, 2)),), label="x (2, 4, 3, 2)")]


def _params(rng, d=8, n=2, h=4):
    params = _init(d, n, h, rng=rng)
    # Non-zero biases, so a missing or misplaced bias shows.
    for name in ("query_bias", "key_bias", "value_bias", "output_bias"):
        params[name] = rng.normal(size=params[name].shape) * 0.1
    return params


def _self(rng):
    x = rng.normal(size=(2, 5, 8))
    return [Case((x, x, _params(rng), 2), label="self-attention, x (2, 5, 8), 2 heads of size 4")]


def _cross(rng):
    return [Case((rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 6, 8)), _params(rng), 2),
                 label="cross-attention, query (2, 3, 8), value (2, 6, 8)")]


def _masked(rng):
    x = rng.normal(size=(2, 4, 8))
    mask = rng.random((2, 4, 4)) < 0.6
    mask[..., 0] = True
    # T ≠ S, and a query that may attend to no key: zero weights, so its context is 0 and its
    # output the output bias (the convention of ex04 and of the reference, never NaN).
    cross = rng.random((2, 3, 5)) < 0.6
    cross[..., 1] = True
    cross[1, 2] = False
    one = rng.normal(size=(1, 4, 8))
    return [Case((x, x, _params(rng), 2), {"mask": mask}, label="a random (2, 4, 4) mask"),
            Case((rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 5, 8)), _params(rng), 2), {"mask": cross},
                 label="query (2, 3, 8), value (2, 5, 8), mask (2, 3, 5) whose query 2 of example 1 sees no key"),
            Case((one, one, _params(rng), 2), {"mask": np.tril(np.ones((1, 4, 4), dtype=bool))},
                 label="batch of 1: x (1, 4, 8) with a causal (1, 4, 4) mask")]


SHARED = ("Q, K and V come from ONE projection: use params['query_kernel'], params['key_kernel'] and "
          "params['value_kernel'] (and their biases) for the three projections.")

split_q = Question(
    "ex05.q1", "split_heads", "split_heads(x, num_heads)", _ref_split, [
        Check("(B, T, N·H) → (B, N, T, H)", 1.0, _split_cases,
              hint="Reshape to (B, T, N, H), then transpose to (B, N, T, H).",
              bugs=[Bug("Heads reshaped without the transpose: reshaping (B, T, N·H) straight to (B, N, T, H) mixes "
                        "time steps across heads. Reshape to (B, T, N, H) first, then transpose(0, 2, 1, 3).",
                        _split_no_transpose),
                    Bug("The feature axis splits as (N, H) — head first — not (H, N): reshape to (B, T, N, H).",
                        _split_head_size_first)]),
        Check("rejects num_heads that does not divide the features", 0.5, _split_bad, expect="raise",
              hint="Raise ValueError naming `num_heads` and the feature size when x.shape[-1] % num_heads != 0."),
    ])

merge_q = Question(
    "ex05.q2", "merge_heads", "merge_heads(x)", _ref_merge, [
        Check("(B, N, T, H) → (B, T, N·H), the inverse of split_heads", 1.0, _merge_cases,
              hint="Transpose back to (B, T, N, H), then reshape to (B, T, N·H).",
              bugs=[Bug("Heads merged without transposing back: move the head axis behind time "
                        "(transpose(0, 2, 1, 3)) before reshaping.", _merge_no_transpose)]),
    ])

mha_q = Question(
    "ex05.q3", "multi_head_attention", "multi_head_attention(query, value, params, num_heads, mask=None)", _ref_mha, [
        Check("self-attention matches keras.layers.MultiHeadAttention's computation", 1.5, _self,
              hint="Project with einsum('btd,dnh->bnth', x, kernel) + bias, attend per head with scores / √key_dim, "
                   "then combine heads with the output kernel: einsum('bnth,nhd->btd') + output_bias.",
              bugs=[Bug(SHARED, _buggy_mha(share=True)),
                    Bug("Scale the scores by √key_dim (the head size H), not by √d_model.", _buggy_mha(scale="d_model")),
                    Bug("The scores are not scaled: divide by √key_dim.", _buggy_mha(scale="none")),
                    Bug("The output projection is missing: combine the heads with params['output_kernel'] and add "
                        "params['output_bias'].", _buggy_mha(output=False)),
                    Bug("Heads merged without transposing back: (B, N, T, Hv) must become (B, T, N, Hv) before the "
                        "reshape.", _buggy_mha(merge_transpose=False))]),
        Check("cross-attention: queries from `query`, keys and values from `value`", 1.0, _cross,
              hint="Q comes from `query`; K and V both come from `value` (T queries, S keys).",
              bugs=[Bug(SHARED, _buggy_mha(share=True))]),
        Check("mask (B, T, S), True = may attend, shared by every head", 1.0, _masked,
              hint="Broadcast the mask over heads (mask[:, None]) and mask the scores before the softmax; a query "
                   "with no visible key gets zero weights (as in ex04), so its output is just the output bias.",
              bugs=[Bug("Mask polarity is inverted: True means 'may attend'.", _buggy_mha(invert=True)),
                    Bug("A query with no visible key is all -inf and becomes NaN (-inf - (-inf)). Give it zero weights "
                        "as in ex04: the maximum over the visible scores only (0 where there is none), and divide only "
                        "where the row sum is > 0.", _buggy_mha(guard=False))]),
    ])

EXERCISE = Exercise("ex05", "ex05_multi_head_numpy", "Multi-head attention in NumPy", [split_q, merge_q, mha_q])
