"""Tests of the NumPy attention reference (attention_lessons.attention)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from attention_lessons import attention as A
from attention_lessons.softmax import softmax

PROPERTY = settings(max_examples=50, deadline=None)


def rng(seed=0):
    return np.random.default_rng(seed)


def naive_attention(q, k, v, mask=None):
    """Row by row, straight from the formula, in float64."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    T, S = q.shape[0], k.shape[0]
    weights = np.zeros((T, S))
    for t in range(T):
        visible = np.ones(S, bool) if mask is None else np.asarray(mask[t], bool)
        if not visible.any():
            continue
        s = np.array([q[t] @ k[j] / math.sqrt(q.shape[1]) for j in range(S)])
        e = np.where(visible, np.exp(s - s[visible].max()), 0.0)
        weights[t] = e / e.sum()
    return weights @ v, weights


def naive_multi_head(query, value, params, num_heads, mask=None, key=None):
    """Batch by batch and head by head with naive_attention; sum the projected heads."""
    key = value if key is None else key
    B, T, _ = query.shape
    S = value.shape[1]
    out = np.zeros((B, T, params["output_kernel"].shape[-1]))
    for b in range(B):
        for n in range(num_heads):
            q = query[b] @ params["query_kernel"][:, n, :] + params["query_bias"][n]
            k = key[b] @ params["key_kernel"][:, n, :] + params["key_bias"][n]
            v = value[b] @ params["value_kernel"][:, n, :] + params["value_bias"][n]
            m = None if mask is None else np.broadcast_to(mask, (B, T, S))[b]
            ctx, _ = naive_attention(q, k, v, m)
            out[b] += ctx @ params["output_kernel"][n]
    return out + params["output_bias"]


def random_params(d_model, num_heads, key_dim, value_dim=None, output_dim=None, seed=0):
    """init_params with non-zero biases, so that bias bugs show."""
    params = A.init_params(d_model, num_heads, key_dim, value_dim, output_dim, rng=seed)
    r = rng(seed + 1000)
    for name in ("query_bias", "key_bias", "value_bias", "output_bias"):
        params[name] = r.normal(size=params[name].shape)
    return params


# ------------------------------------------------------------------ Nadaraya–Watson


@pytest.fixture
def d2l_data():
    r = rng(42)
    x = np.sort(r.uniform(0, 5, 50))
    y = 2 * np.sin(x) + x**0.8 + r.normal(0, 0.5, 50)
    xq = np.arange(0, 5, 0.1)
    return xq, x, y


@pytest.mark.parametrize("h", [0.1, 0.3, 1.0, 3.0])
def test_nadaraya_watson_equals_explicit_gaussian_softmax(d2l_data, h):
    xq, x, y = d2l_data
    pred, w = A.nadaraya_watson(xq, x, y, bandwidth=h)
    d = xq[:, None] - x[None, :]
    k = np.exp(-d**2 / (2 * h**2))
    expected_w = k / k.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(w, expected_w, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(pred, expected_w @ y, rtol=1e-12)


@pytest.mark.parametrize("h", [0.3, 1.0, 3.0])
def test_nadaraya_watson_equals_dot_product_with_key_bias(d2l_data, h):
    # -(q - k)²/2h² = (q·k - k²/2)/h² - q²/2h², and the q² term cancels in the softmax.
    xq, x, y = d2l_data
    pred, w = A.nadaraya_watson(xq, x, y, bandwidth=h)
    dot_w = softmax((xq[:, None] * x[None, :] - x[None, :] ** 2 / 2) / h**2, axis=-1)
    np.testing.assert_allclose(w, dot_w, atol=1e-12)
    np.testing.assert_allclose(pred, dot_w @ y, atol=1e-12)


def test_nadaraya_watson_multivariate_uses_squared_euclidean_distance():
    r = rng(1)
    q, k, v = r.normal(size=(4, 3)), r.normal(size=(6, 3)), r.normal(size=(6, 2))
    pred, w = A.nadaraya_watson(q, k, v, bandwidth=0.7)
    sq = ((q[:, None, :] - k[None, :, :]) ** 2).sum(-1)
    expected_w = softmax(-sq / (2 * 0.7**2))
    assert pred.shape == (4, 2) and w.shape == (4, 6)
    np.testing.assert_allclose(w, expected_w, atol=1e-12)
    np.testing.assert_allclose(pred, expected_w @ v, atol=1e-12)


def test_nadaraya_watson_tiny_bandwidth_gives_nearest_neighbour():
    keys = np.array([0.0, 1.0, 2.0, 3.0])
    values = np.array([10.0, 20.0, 30.0, 40.0])
    pred, _ = A.nadaraya_watson([0.1, 1.2, 2.9], keys, values, bandwidth=1e-3)
    np.testing.assert_allclose(pred, [10.0, 20.0, 40.0])


def test_nadaraya_watson_far_queries_do_not_produce_nan():
    pred, w = A.nadaraya_watson([1e3], [0.0, 1.0], [1.0, 2.0], bandwidth=0.1)
    assert np.isfinite(pred).all() and np.isfinite(w).all()
    np.testing.assert_allclose(w, [[0.0, 1.0]])


@pytest.mark.parametrize("h", [0, -1.0, np.nan, np.inf, "wide"])
def test_nadaraya_watson_rejects_bad_bandwidth(h):
    with pytest.raises(ValueError, match="`bandwidth`"):
        A.nadaraya_watson([0.0], [0.0, 1.0], [1.0, 2.0], bandwidth=h)


def test_nadaraya_watson_rejects_one_value_per_key_mismatch():
    with pytest.raises(ValueError, match=r"`keys` has shape \(3,\) and `values` has shape \(2,\)"):
        A.nadaraya_watson([0.0], [0.0, 1.0, 2.0], [1.0, 2.0], bandwidth=1.0)


def test_nadaraya_watson_rejects_feature_mismatch():
    with pytest.raises(ValueError, match=r"`queries` has shape \(2, 3\) and `keys` has shape \(4, 2\)"):
        A.nadaraya_watson(np.zeros((2, 3)), np.zeros((4, 2)), np.zeros(4), bandwidth=1.0)


# ------------------------------------------------------------------- score functions


def test_dot_scores_by_hand():
    q = np.array([[1.0, 2.0], [0.0, 1.0]])
    k = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, -1.0]])
    np.testing.assert_array_equal(A.dot_scores(q, k), [[1.0, 3.0, 0.0], [0.0, 1.0, -1.0]])


def test_scaled_dot_scores_divide_by_sqrt_of_key_dim():
    r = rng(2)
    q, k = r.normal(size=(2, 3, 9)), r.normal(size=(2, 4, 9))
    np.testing.assert_allclose(A.scaled_dot_scores(q, k), A.dot_scores(q, k) / 3.0)


def test_dot_scores_broadcast_leading_dims():
    r = rng(3)
    q, k = r.normal(size=(2, 3, 5, 4)), r.normal(size=(3, 6, 4))
    scores = A.dot_scores(q, k)
    assert scores.shape == (2, 3, 5, 6)
    np.testing.assert_allclose(scores[1, 2], q[1, 2] @ k[2].T)


def test_bilinear_scores_with_identity_equal_dot_scores():
    r = rng(4)
    q, k = r.normal(size=(3, 5)), r.normal(size=(4, 5))
    np.testing.assert_allclose(A.bilinear_scores(q, k, np.eye(5)), A.dot_scores(q, k))


def test_bilinear_scores_match_elementwise_definition():
    r = rng(5)
    q, k, W = r.normal(size=(2, 3, 4)), r.normal(size=(2, 5, 6)), r.normal(size=(4, 6))
    scores = A.bilinear_scores(q, k, W)
    assert scores.shape == (2, 3, 5)
    np.testing.assert_allclose(scores[1, 2, 3], q[1, 2] @ W @ k[1, 3])


def test_additive_scores_match_bahdanau_loop():
    r = rng(6)
    q, k = r.normal(size=(2, 3, 4)), r.normal(size=(2, 5, 6))
    W_q, W_k, v = r.normal(size=(4, 7)), r.normal(size=(6, 7)), r.normal(size=7)
    scores = A.additive_scores(q, k, W_q, W_k, v)
    expected = np.array([[[v @ np.tanh(q[b, t] @ W_q + k[b, s] @ W_k) for s in range(5)]
                          for t in range(3)] for b in range(2)])
    assert scores.shape == (2, 3, 5)
    np.testing.assert_allclose(scores, expected, atol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: A.dot_scores(np.zeros((2, 5, 8)), np.zeros((2, 6, 4))),
         r"`q` has shape \(2, 5, 8\) and `k` has shape \(2, 6, 4\): their last dimensions \(8 and 4\) must agree"),
        (lambda: A.dot_scores(np.zeros(4), np.zeros((3, 4))), r"`q` must have shape .* got shape \(4,\)"),
        (lambda: A.scaled_dot_scores(np.zeros((3, 2, 4)), np.zeros((2, 5, 4))),
         r"`q` has shape \(3, 2, 4\), `k` has shape \(2, 5, 4\): .*do not broadcast"),
        (lambda: A.bilinear_scores(np.zeros((3, 4)), np.zeros((5, 6)), np.zeros((6, 4))),
         r"`q` has shape \(3, 4\) and `W` has shape \(6, 4\)"),
        (lambda: A.bilinear_scores(np.zeros((3, 4)), np.zeros((5, 6)), np.zeros((4, 5))),
         r"`k` has shape \(5, 6\) and `W` has shape \(4, 5\)"),
        (lambda: A.additive_scores(np.zeros((3, 4)), np.zeros((5, 6)), np.zeros((4, 7)),
                                   np.zeros((6, 8)), np.zeros(7)),
         r"`W_q` has shape \(4, 7\) and `W_k` has shape \(6, 8\): their hidden sizes h"),
        (lambda: A.additive_scores(np.zeros((3, 4)), np.zeros((5, 6)), np.zeros((4, 7)),
                                   np.zeros((6, 7)), np.zeros(8)),
         r"`W_q` has shape \(4, 7\) and `v` has shape \(8,\)"),
        (lambda: A.additive_scores(np.zeros((3, 4)), np.zeros((5, 6)), np.zeros((5, 7)),
                                   np.zeros((6, 7)), np.zeros(7)),
         r"`q` has shape \(3, 4\) and `W_q` has shape \(5, 7\)"),
    ],
    ids=["dot-last-dims", "dot-1d", "scaled-batch", "bilinear-q", "bilinear-k", "additive-h",
         "additive-v", "additive-q"],
)
def test_score_functions_shape_errors_name_the_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------- scaled dot-product attention


def test_sdpa_matches_row_by_row_formula():
    r = rng(7)
    q, k, v = r.normal(size=(4, 6)), r.normal(size=(5, 6)), r.normal(size=(5, 3))
    mask = r.random((4, 5)) < 0.7
    mask[:, 0] = True
    out, w = A.scaled_dot_product_attention(q, k, v, mask)
    ref_out, ref_w = naive_attention(q, k, v, mask)
    np.testing.assert_allclose(w, ref_w, atol=1e-12)
    np.testing.assert_allclose(out, ref_out, atol=1e-12)


def test_sdpa_tiny_example_by_hand():
    out, w = A.scaled_dot_product_attention([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], [[1.0], [0.0]])
    a = math.exp(1 / math.sqrt(2))
    np.testing.assert_allclose(w, [[a / (a + 1), 1 / (a + 1)]])
    np.testing.assert_allclose(out, [[a / (a + 1)]])


@st.composite
def attention_case(draw, with_mask=True):
    batch = draw(st.integers(1, 3))
    t, s = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    d, dv = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    r = np.random.default_rng(seed)
    q = scale * r.normal(size=(batch, t, d))
    k = scale * r.normal(size=(batch, s, d))
    v = r.normal(size=(batch, s, dv))
    mask = draw(hnp.arrays(bool, (batch, t, s))) if with_mask else None
    return q, k, v, mask


@PROPERTY
@given(attention_case())
def test_sdpa_rows_sum_to_one_where_any_key_is_visible(case):
    q, k, v, mask = case
    _, w = A.scaled_dot_product_attention(q, k, v, mask)
    visible = mask.any(axis=-1)
    np.testing.assert_allclose(w.sum(axis=-1)[visible], 1.0, atol=1e-12)
    assert (w >= 0).all()


@PROPERTY
@given(attention_case())
def test_sdpa_masked_keys_get_exactly_zero_weight(case):
    q, k, v, mask = case
    _, w = A.scaled_dot_product_attention(q, k, v, mask)
    assert (w[~mask] == 0.0).all()


@PROPERTY
@given(attention_case())
def test_sdpa_fully_masked_rows_give_zero_weights_and_zero_output(case):
    q, k, v, mask = case
    mask = mask.copy()
    mask[:, 0, :] = False  # the first query of every batch sees nothing
    out, w = A.scaled_dot_product_attention(q, k, v, mask)
    assert np.isfinite(out).all() and np.isfinite(w).all()
    np.testing.assert_array_equal(w[:, 0, :], 0.0)
    np.testing.assert_array_equal(out[:, 0, :], 0.0)


@PROPERTY
@given(attention_case(), st.integers(0, 2**32 - 1), st.sampled_from([1.0, 100.0]))
def test_sdpa_adding_a_constant_to_a_rows_scores_changes_nothing(case, seed, size):
    # Adding the same vector c to every key adds q_t·c/√d to every score of row t: a
    # per-row constant. A softmax over the right axis cannot see it.
    q, k, v, mask = case
    c = size * np.random.default_rng(seed).normal(size=k.shape[-1])
    out, w = A.scaled_dot_product_attention(q, k, v, mask)
    out_shifted, w_shifted = A.scaled_dot_product_attention(q, k + c, v, mask)
    np.testing.assert_allclose(w_shifted, w, atol=1e-9)
    np.testing.assert_allclose(out_shifted, out, atol=1e-9)


def test_sdpa_huge_scores_stay_finite():
    q = np.array([[1000.0, 0.0]])
    k = np.array([[1000.0, 0.0], [-1000.0, 0.0]])
    out, w = A.scaled_dot_product_attention(q, k, np.array([[1.0], [2.0]]))
    np.testing.assert_array_equal(w, [[1.0, 0.0]])
    np.testing.assert_array_equal(out, [[1.0]])


def test_sdpa_any_leading_dims_match_per_slice_results():
    r = rng(8)
    q = r.normal(size=(2, 3, 4, 5))
    k = r.normal(size=(2, 3, 6, 5))
    v = r.normal(size=(2, 3, 6, 2))
    mask = A.causal_mask(4, 6)                      # (T, S), broadcast over batch and heads
    out, w = A.scaled_dot_product_attention(q, k, v, mask)
    assert out.shape == (2, 3, 4, 2) and w.shape == (2, 3, 4, 6)
    for b in range(2):
        for n in range(3):
            ref_out, ref_w = naive_attention(q[b, n], k[b, n], v[b, n], mask)
            np.testing.assert_allclose(w[b, n], ref_w, atol=1e-12)
            np.testing.assert_allclose(out[b, n], ref_out, atol=1e-12)


def test_sdpa_shared_keys_broadcast_over_batch():
    r = rng(9)
    q, k, v = r.normal(size=(3, 4, 5)), r.normal(size=(6, 5)), r.normal(size=(6, 2))
    out, _ = A.scaled_dot_product_attention(q, k, v)
    assert out.shape == (3, 4, 2)
    np.testing.assert_allclose(out[2], naive_attention(q[2], k, v)[0], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sdpa_result_dtype_follows_query(dtype):
    r = rng(10)
    q, k, v = (r.normal(size=s).astype(dtype) for s in [(2, 3, 4), (2, 5, 4), (2, 5, 3)])
    out, w = A.scaled_dot_product_attention(q, k, v)
    assert out.dtype == dtype and w.dtype == dtype


def test_sdpa_float32_is_accurate_to_float32_precision():
    r = rng(11)
    q, k, v = (r.normal(size=s).astype(np.float32) for s in [(2, 8, 16), (2, 9, 16), (2, 9, 4)])
    out32, w32 = A.scaled_dot_product_attention(q, k, v)
    out64, w64 = A.scaled_dot_product_attention(*(a.astype(np.float64) for a in (q, k, v)))
    np.testing.assert_allclose(out32, out64, atol=1e-6)
    np.testing.assert_allclose(w32, w64, atol=1e-6)


def test_sdpa_float64_keeps_float64_precision():
    # Scores that differ by 1e-10 are different in float64, identical in float32.
    q = np.array([[1.0]])
    k = np.array([[0.0], [1e-9]])
    _, w = A.scaled_dot_product_attention(q, k, np.eye(2))
    assert w[0, 1] > w[0, 0]


def test_sdpa_float16_softmax_runs_in_float32():
    # float16 input is computed in float32 and rounded once at the end: bit-identical to
    # the float32 result of the same (float16-representable) numbers, rounded to float16.
    # Exact equality holds on every machine: the float16 path casts to float32 and runs the
    # very same NumPy operations in the same order, in the same process.
    r = rng(12)
    q, k, v = (r.normal(size=s) for s in [(3, 8), (5, 8), (5, 2)])
    q16, k16, v16 = (a.astype(np.float16) for a in (q, k, v))
    out16, _ = A.scaled_dot_product_attention(q16, k16, v16)
    ref, _ = A.scaled_dot_product_attention(*(a.astype(np.float32) for a in (q16, k16, v16)))
    np.testing.assert_array_equal(out16, ref.astype(np.float16))


def test_sdpa_integer_inputs_give_float64():
    out, w = A.scaled_dot_product_attention([[1, 0]], [[1, 0], [0, 1]], [[2], [4]])
    assert out.dtype == np.float64 and w.dtype == np.float64


@pytest.mark.parametrize(
    "shapes, mask, match",
    [
        (((2, 5, 8), (2, 6, 4), (2, 6, 3)), None,
         r"`q` has shape \(2, 5, 8\) and `k` has shape \(2, 6, 4\): their last dimensions \(8 and 4\) must agree"),
        (((2, 5, 4), (2, 6, 4), (2, 7, 3)), None,
         r"`k` has shape \(2, 6, 4\) and `v` has shape \(2, 7, 3\): their numbers of keys and values"),
        (((2, 5, 4), (3, 6, 4), (3, 6, 3)), None, r"`q` has shape \(2, 5, 4\), `k` has shape \(3, 6, 4\)"),
        (((5,), (6, 4), (6, 3)), None, r"`q` must have shape \(\.\.\., T, d\); got shape \(5,\)"),
        (((2, 5, 4), (2, 6, 4), (2, 6, 3)), np.ones((6, 5), bool),
         r"`mask` has shape \(6, 5\), which does not broadcast to the scores' shape \(2, 5, 6\)"),
        (((2, 5, 4), (2, 6, 4), (2, 6, 3)), np.zeros((5, 6)), r"`mask` must be boolean"),
    ],
    ids=["q-k-dims", "k-v-length", "batch", "q-1d", "mask-shape", "mask-float"],
)
def test_sdpa_shape_errors_name_the_arguments(shapes, mask, match):
    q, k, v = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        A.scaled_dot_product_attention(q, k, v, mask)


def test_sdpa_mask_may_add_batch_dims_to_shared_keys():
    r = rng(24)
    q, k, v = r.normal(size=(3, 4)), r.normal(size=(5, 4)), r.normal(size=(5, 2))
    masks = np.stack([A.causal_mask(3, 5), np.ones((3, 5), bool)])          # (2, T, S)
    out, w = A.scaled_dot_product_attention(q, k, v, masks)
    assert out.shape == (2, 3, 2) and w.shape == (2, 3, 5)
    for b in range(2):
        np.testing.assert_allclose(out[b], naive_attention(q, k, v, masks[b])[0], atol=1e-12)


def test_sdpa_accepts_0_1_integer_mask():
    r = rng(13)
    q, k, v = r.normal(size=(3, 4)), r.normal(size=(5, 4)), r.normal(size=(5, 2))
    mask = A.causal_mask(3, 5)
    out_bool, _ = A.scaled_dot_product_attention(q, k, v, mask)
    out_int, _ = A.scaled_dot_product_attention(q, k, v, mask.astype(int))
    np.testing.assert_array_equal(out_int, out_bool)


# ----------------------------------------------------------------------------- masks


def test_causal_mask_square_is_lower_triangular_with_diagonal():
    np.testing.assert_array_equal(A.causal_mask(4), np.tril(np.ones((4, 4), bool)))
    assert A.causal_mask(4).dtype == bool
    assert A.causal_mask(4).diagonal().all()


def test_causal_mask_fewer_queries_than_keys_is_top_left_aligned():
    expected = np.array([[1, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0],
                         [1, 1, 1, 0, 0]], bool)
    np.testing.assert_array_equal(A.causal_mask(3, 5), expected)


def test_causal_mask_more_queries_than_keys_is_top_left_aligned():
    expected = np.array([[1, 0],
                         [1, 1],
                         [1, 1],
                         [1, 1]], bool)
    np.testing.assert_array_equal(A.causal_mask(4, 2), expected)


def test_causal_mask_hides_the_future_in_attention():
    r = rng(14)
    q, k, v = r.normal(size=(5, 3)), r.normal(size=(5, 3)), r.normal(size=(5, 2))
    out, _ = A.scaled_dot_product_attention(q, k, v, A.causal_mask(5))
    k2, v2 = k.copy(), v.copy()
    k2[3:], v2[3:] = r.normal(size=(2, 3)), r.normal(size=(2, 2))   # change the future
    out2, _ = A.scaled_dot_product_attention(q, k2, v2, A.causal_mask(5))
    np.testing.assert_array_equal(out2[:3], out[:3])
    assert not np.allclose(out2[3:], out[3:])


@pytest.mark.parametrize("t, s", [(0, None), (-1, None), (2.5, None), (3, 0), (True, None)])
def test_causal_mask_rejects_bad_sizes(t, s):
    with pytest.raises(ValueError, match="`t`|`s`"):
        A.causal_mask(t, s)


def test_padding_mask_marks_real_tokens():
    expected = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(A.padding_mask([1, 3, 0, 4], 4), expected)


def test_padding_mask_default_length_is_longest():
    assert A.padding_mask(np.array([2, 5, 3])).shape == (3, 5)


@pytest.mark.parametrize("lengths, max_len, match", [
    ([2, 5], 4, r"`lengths` must lie in \[0, max_len=4\]"),
    ([-1, 2], 4, r"`lengths` must lie"),
    ([[1, 2]], 4, r"`lengths` must have shape \(batch,\)"),
    ([1.5], 4, "whole numbers"),
    ([1, 2], -3, "`max_len`"),
])
def test_padding_mask_rejects_bad_lengths(lengths, max_len, match):
    with pytest.raises(ValueError, match=match):
        A.padding_mask(lengths, max_len)


def test_key_padding_to_attention_mask_hides_padded_keys_from_every_query():
    pad = A.padding_mask([2, 3], 3)
    m = A.key_padding_to_attention_mask(pad)
    assert m.shape == (2, 1, 3)
    full = np.broadcast_to(m, (2, 4, 3))
    np.testing.assert_array_equal(full[0], [[1, 1, 0]] * 4)
    np.testing.assert_array_equal(full[1], [[1, 1, 1]] * 4)


def test_key_padding_to_attention_mask_rejects_3d():
    with pytest.raises(ValueError, match=r"`mask` must have shape \(batch, S\); got shape \(2, 1, 3\)"):
        A.key_padding_to_attention_mask(np.ones((2, 1, 3), bool))


def test_combine_masks_is_logical_and_with_broadcasting():
    causal = A.causal_mask(3)
    keys = A.key_padding_to_attention_mask(A.padding_mask([2, 3], 3))
    combined = A.combine_masks(causal, None, keys)
    assert combined.shape == (2, 3, 3) and combined.dtype == bool
    np.testing.assert_array_equal(combined[0], [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(combined[1], causal)


def test_combine_masks_of_nothing_is_none():
    assert A.combine_masks() is None
    assert A.combine_masks(None, None) is None


def test_combine_masks_single_mask_is_returned_as_bool():
    np.testing.assert_array_equal(A.combine_masks(None, np.array([1, 0])), [True, False])


def test_combine_masks_rejects_incompatible_shapes():
    with pytest.raises(ValueError, match=r"masks\[0\] has shape \(3, 3\), masks\[2\] has shape \(2, 4\)"):
        A.combine_masks(np.ones((3, 3), bool), None, np.ones((2, 4), bool))


# ----------------------------------------------------------------------------- heads


@PROPERTY
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4),
       st.integers(0, 2**32 - 1))
def test_split_and_merge_heads_are_inverse(batch, t, num_heads, head_dim, seed):
    x = np.random.default_rng(seed).normal(size=(batch, t, num_heads * head_dim))
    heads = A.split_heads(x, num_heads)
    assert heads.shape == (batch, num_heads, t, head_dim)
    np.testing.assert_array_equal(A.merge_heads(heads), x)
    np.testing.assert_array_equal(A.split_heads(A.merge_heads(heads), num_heads), heads)


def test_split_heads_gives_head_n_its_own_feature_block():
    # A reshape without the transpose would mix time steps into a head.
    x = np.arange(2 * 3 * 6).reshape(2, 3, 6)
    heads = A.split_heads(x, 2)
    np.testing.assert_array_equal(heads[1, 0], x[1, :, :3])
    np.testing.assert_array_equal(heads[1, 1], x[1, :, 3:])


def test_split_heads_rejects_indivisible_features():
    with pytest.raises(ValueError, match=r"`x` has shape \(2, 3, 7\).*not divisible by `num_heads`=2"):
        A.split_heads(np.zeros((2, 3, 7)), 2)


def test_merge_heads_rejects_2d():
    with pytest.raises(ValueError, match=r"`x` must have shape .* got shape \(3, 4\)"):
        A.merge_heads(np.zeros((3, 4)))


# ------------------------------------------------------------------ multi-head attention


def test_multi_head_attention_matches_head_by_head_loop():
    r = rng(15)
    params = random_params(8, 2, 3, value_dim=5, output_dim=7, seed=15)
    x = r.normal(size=(2, 4, 8))
    out = A.multi_head_attention(x, x, params, num_heads=2)
    assert out.shape == (2, 4, 7)
    np.testing.assert_allclose(out, naive_multi_head(x, x, params, 2), atol=1e-12)


def test_multi_head_attention_cross_attention_with_separate_key():
    r = rng(16)
    params = random_params(6, 3, 4, seed=16)
    query, key, value = r.normal(size=(2, 3, 6)), r.normal(size=(2, 5, 6)), r.normal(size=(2, 5, 6))
    mask = r.random((2, 3, 5)) < 0.6
    mask[..., 0] = True
    out, w = A.multi_head_attention(query, value, params, 3, mask=mask, key=key, return_weights=True)
    assert out.shape == (2, 3, 6) and w.shape == (2, 3, 3, 5)
    np.testing.assert_allclose(out, naive_multi_head(query, value, params, 3, mask, key), atol=1e-12)
    np.testing.assert_array_equal(w[~np.broadcast_to(mask[:, None], w.shape)], 0.0)


def test_multi_head_attention_key_defaults_to_value():
    r = rng(17)
    params = random_params(4, 2, 2, seed=17)
    q, v = r.normal(size=(1, 3, 4)), r.normal(size=(1, 5, 4))
    np.testing.assert_array_equal(A.multi_head_attention(q, v, params, 2),
                                  A.multi_head_attention(q, v, params, 2, key=v))


@PROPERTY
@given(st.integers(1, 2), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_self_attention_without_positions_is_permutation_equivariant(batch, t, num_heads, seed):
    r = np.random.default_rng(seed)
    params = random_params(6, num_heads, 3, seed=int(seed % 1000))
    x = r.normal(size=(batch, t, 6))
    perm = r.permutation(t)
    out = A.multi_head_attention(x, x, params, num_heads)
    out_perm = A.multi_head_attention(x[:, perm], x[:, perm], params, num_heads)
    np.testing.assert_allclose(out_perm, out[:, perm], atol=1e-10)


def test_sinusoidal_positions_break_permutation_equivariance():
    r = rng(18)
    params = random_params(6, 2, 3, seed=18)
    x = r.normal(size=(1, 5, 6))
    perm = np.array([4, 2, 0, 1, 3])
    x_pos = x + A.sinusoidal_positions(5, 6)
    xp_pos = x[:, perm] + A.sinusoidal_positions(5, 6)
    out = A.multi_head_attention(x_pos, x_pos, params, 2)
    out_perm = A.multi_head_attention(xp_pos, xp_pos, params, 2)
    assert not np.allclose(out_perm, out[:, perm])


def test_multi_head_attention_weights_rows_sum_to_one_per_head():
    r = rng(19)
    params = random_params(4, 2, 2, seed=19)
    x = r.normal(size=(2, 5, 4))
    _, w = A.multi_head_attention(x, x, params, 2, mask=A.causal_mask(5), return_weights=True)
    assert w.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(w[..., ~A.causal_mask(5)], 0.0)


def test_multi_head_attention_2d_mask_equals_batched_mask():
    r = rng(20)
    params = random_params(4, 2, 2, seed=20)
    x = r.normal(size=(3, 4, 4))
    m = A.causal_mask(4)
    np.testing.assert_array_equal(A.multi_head_attention(x, x, params, 2, mask=m),
                                  A.multi_head_attention(x, x, params, 2, mask=np.broadcast_to(m, (3, 4, 4))))


def test_multi_head_attention_fully_masked_query_outputs_the_output_bias():
    r = rng(21)
    params = random_params(4, 2, 2, seed=21)
    x = r.normal(size=(1, 3, 4))
    mask = np.ones((1, 3, 3), bool)
    mask[0, 1] = False
    out, w = A.multi_head_attention(x, x, params, 2, mask=mask, return_weights=True)
    np.testing.assert_array_equal(w[0, :, 1], 0.0)
    np.testing.assert_allclose(out[0, 1], params["output_bias"])


def test_multi_head_attention_without_biases():
    r = rng(22)
    params = A.init_params(4, 2, 3, rng=22, use_bias=False)
    assert sorted(params) == sorted(["query_kernel", "key_kernel", "value_kernel", "output_kernel"])
    x = r.normal(size=(2, 3, 4))
    zero_bias = dict(params, query_bias=np.zeros((2, 3)), key_bias=np.zeros((2, 3)),
                     value_bias=np.zeros((2, 3)), output_bias=np.zeros(4))
    np.testing.assert_allclose(A.multi_head_attention(x, x, params, 2),
                               A.multi_head_attention(x, x, zero_bias, 2), atol=0)


def test_multi_head_attention_float32_in_float32_out():
    r = rng(23)
    params = {k: v.astype(np.float32) for k, v in random_params(4, 2, 2, seed=23).items()}
    x = r.normal(size=(1, 3, 4)).astype(np.float32)
    out, w = A.multi_head_attention(x, x, params, 2, return_weights=True)
    assert out.dtype == np.float32 and w.dtype == np.float32
    ref = A.multi_head_attention(x.astype(np.float64), x, params, 2)
    assert ref.dtype == np.float64
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(num_heads=3), r"`num_heads`=3 but `params\['query_kernel'\]` has shape \(4, 2, 3\)"),
        (dict(query=np.zeros((2, 5, 5))),
         r"`query` has shape \(2, 5, 5\) and `params\['query_kernel'\]` has shape \(4, 2, 3\)"),
        (dict(key=np.zeros((2, 6, 4))), r"sequence lengths S \(axis 1\) \(6 and 7\)"),
        (dict(value=np.zeros((3, 7, 4))), r"same batch size"),
        (dict(query=np.zeros((5, 4))), r"`query` must have shape \(B, T, D_q\); got shape \(5, 4\)"),
        (dict(mask=np.ones((2, 5, 6), bool)),
         r"`mask` has shape \(2, 5, 6\), which does not broadcast to \(B, T, S\) = \(2, 5, 7\)"),
    ],
    ids=["num-heads", "query-features", "key-length", "batch", "query-2d", "mask"],
)
def test_multi_head_attention_shape_errors_name_the_arguments(change, match):
    args = dict(query=np.zeros((2, 5, 4)), value=np.zeros((2, 7, 4)), num_heads=2, mask=None, key=None)
    args.update(change)
    params = A.init_params(4, 2, 3, rng=0)
    with pytest.raises(ValueError, match=match):
        A.multi_head_attention(args.pop("query"), args.pop("value"), params, **args)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda p: p.pop("key_kernel"), r"`params` lacks \['key_kernel'\]"),
        (lambda p: p.update(key_kernel=np.zeros((4, 2, 5))), r"`params\['key_kernel'\]` has shape \(4, 2, 5\) but \(4, 2, 3\)"),
        (lambda p: p.update(output_kernel=np.zeros((2, 4, 4))), r"`params\['output_kernel'\]` has shape \(2, 4, 4\) but \(2, 3, 4\)"),
        (lambda p: p.update(value_bias=np.zeros(3)), r"`params\['value_bias'\]` has shape \(3,\) but \(2, 3\)"),
        (lambda p: p.pop("key_bias"), r"some biases but not \['key_bias'\]"),
        (lambda p: p.update(query_kernal=p["query_kernel"]), r"unknown keys \['query_kernal'\]"),
        (lambda p: p.update(query_kernel=np.zeros((4, 6))), r"`params\['query_kernel'\]` must have shape \(D, N, H\)"),
    ],
    ids=["missing", "key-kernel", "output-kernel", "bias", "partial-bias", "typo", "2d-kernel"],
)
def test_multi_head_attention_rejects_bad_params(edit, match):
    params = A.init_params(4, 2, 3, rng=0)
    edit(params)
    with pytest.raises(ValueError, match=match):
        A.multi_head_attention(np.zeros((1, 2, 4)), np.zeros((1, 2, 4)), params, 2)


def test_init_params_has_keras_shapes():
    p = A.init_params(8, 2, 3, value_dim=5, output_dim=7, rng=0)
    assert list(p) == list(A.PARAM_NAMES)
    shapes = {k: v.shape for k, v in p.items()}
    assert shapes == {
        "query_kernel": (8, 2, 3), "query_bias": (2, 3),
        "key_kernel": (8, 2, 3), "key_bias": (2, 3),
        "value_kernel": (8, 2, 5), "value_bias": (2, 5),
        "output_kernel": (2, 5, 7), "output_bias": (7,),
    }


def test_init_params_defaults_and_seed():
    p = A.init_params(6, 3, 2, rng=5)
    assert p["value_kernel"].shape == (6, 3, 2) and p["output_bias"].shape == (6,)
    q = A.init_params(6, 3, 2, rng=5)
    for name in A.PARAM_NAMES:
        np.testing.assert_array_equal(p[name], q[name])


def test_init_params_projections_do_not_share_weights():
    p = A.init_params(6, 2, 3, rng=0)
    assert not np.allclose(p["query_kernel"], p["key_kernel"])
    assert not np.allclose(p["key_kernel"], p["value_kernel"])


def test_init_params_glorot_scale():
    p = A.init_params(64, 4, 16, rng=0)
    limit = math.sqrt(6 / (64 + 64))
    assert np.abs(p["query_kernel"]).max() <= limit
    assert np.abs(p["query_kernel"]).max() > 0.9 * limit


def test_params_to_list_is_in_keras_order():
    p = A.init_params(4, 2, 3, value_dim=5, output_dim=6, rng=0)
    listed = A.params_to_list(p)
    assert [w.shape for w in listed] == [(4, 2, 3), (2, 3), (4, 2, 3), (2, 3), (4, 2, 5), (2, 5),
                                         (2, 5, 6), (6,)]
    for w, name in zip(listed, A.PARAM_NAMES):
        assert w is p[name] or np.array_equal(w, p[name])


def test_params_to_list_without_biases_has_four_kernels():
    p = A.init_params(4, 2, 3, rng=0, use_bias=False)
    assert [w.shape for w in A.params_to_list(p)] == [(4, 2, 3), (4, 2, 3), (4, 2, 3), (2, 3, 4)]


class FakeLayer:
    """Anything with get_weights() in Keras's order will do: no Keras needed."""

    def __init__(self, weights):
        self._weights = weights

    def get_weights(self):
        return list(self._weights)


def test_params_from_keras_round_trips_params_to_list():
    p = random_params(4, 2, 3, seed=3)
    back = A.params_from_keras(FakeLayer(A.params_to_list(p)))
    assert list(back) == list(A.PARAM_NAMES)
    for name in A.PARAM_NAMES:
        np.testing.assert_array_equal(back[name], p[name])


def test_params_from_keras_without_biases():
    p = A.init_params(4, 2, 3, rng=0, use_bias=False)
    back = A.params_from_keras(FakeLayer(A.params_to_list(p)))
    assert list(back) == ["query_kernel", "key_kernel", "value_kernel", "output_kernel"]


def test_params_from_keras_rejects_unbuilt_layer():
    with pytest.raises(ValueError, match="`layer` has 0 weights.*Call the layer once"):
        A.params_from_keras(FakeLayer([]))


def test_params_from_keras_rejects_wrong_order():
    weights = A.params_to_list(A.init_params(4, 2, 3, value_dim=5, rng=0))
    weights[2], weights[4] = weights[4], weights[2]   # key and value kernels swapped
    with pytest.raises(ValueError, match=r"`params\['key_kernel'\]`"):
        A.params_from_keras(FakeLayer(weights))


# ------------------------------------------------------------------------- positions


def test_sinusoidal_positions_match_vaswani_formula():
    length, dim = 7, 10
    pe = A.sinusoidal_positions(length, dim)
    assert pe.shape == (length, dim)
    for p in range(length):
        for i in range(dim // 2):
            angle = p / 10000 ** (2 * i / dim)
            assert pe[p, 2 * i] == pytest.approx(math.sin(angle), abs=1e-14)
            assert pe[p, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-14)


def test_sinusoidal_positions_first_row_alternates_zero_and_one():
    np.testing.assert_array_equal(A.sinusoidal_positions(3, 6)[0], [0, 1, 0, 1, 0, 1])


def test_sinusoidal_positions_shift_is_a_rotation():
    # PE[p + k] is PE[p] rotated by a fixed angle per frequency: relative positions are
    # linear functions of the encoding.
    pe = A.sinusoidal_positions(20, 8)
    k = 3
    omega = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    c, s = np.cos(k * omega), np.sin(k * omega)
    sin_p, cos_p = pe[:-k, 0::2], pe[:-k, 1::2]
    np.testing.assert_allclose(pe[k:, 0::2], sin_p * c + cos_p * s, atol=1e-12)
    np.testing.assert_allclose(pe[k:, 1::2], cos_p * c - sin_p * s, atol=1e-12)


def test_sinusoidal_positions_dtype():
    assert A.sinusoidal_positions(4, 4, dtype=np.float32).dtype == np.float32
    assert A.sinusoidal_positions(4, 4).dtype == np.float64


@pytest.mark.parametrize("length, dim, match", [(4, 5, r"`dim` must be even.*dim=5"), (4, 0, "`dim`"),
                                                (-1, 4, "`length`"), (4.0, 4, "`length`")])
def test_sinusoidal_positions_reject_bad_sizes(length, dim, match):
    with pytest.raises(ValueError, match=match):
        A.sinusoidal_positions(length, dim)


# --------------------------------------------------------------------------- hygiene


def test_all_public_names_exist():
    for name in A.__all__:
        assert hasattr(A, name), name


def test_attention_module_never_imports_tensorflow_or_keras():
    code = ("import sys, attention_lessons.attention, attention_lessons.shapes; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # hangs only
    assert result.returncode == 0, result.stderr
