"""The NumPy reference (float64) against Keras's own attention (float32), weights copied.

Tolerance: atol 1e-5, for float32 rounding on the Keras side only. float32's eps is
2**-23 ≈ 1.19e-7, so 1e-5 is ~84 eps, or ~12 eps times the largest outputs here (~7): room
for a few chained float32 reductions, whatever kernels the CPU runs. Measured: at most
1.9e-6, i.e. 2.6 eps × max(max |Keras|, 1), both in the normal environment and with
``scripts/portable.py`` (oneDNN off, AVX2, one thread).
Every query row here can see at least one key, except in the test that is about fully
masked rows: there Keras's fast path (uniform weights) and explicit path (zero weights)
differ, and we follow the explicit path.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from attention_lessons import attention as A  # noqa: E402

ATOL = 1e-5


def f32(*shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def keras_mha(query, value, key=None, *, num_heads, key_dim, seed, **kwargs):
    """A built keras MultiHeadAttention with random weights, biases included, and our params."""
    layer = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, **kwargs)
    layer(query, value, key)  # builds the weights
    r = np.random.default_rng(seed)
    layer.set_weights([r.normal(scale=0.5, size=w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return layer, A.params_from_keras(layer)


def ours(query, value, params, num_heads, **kwargs):
    """Our forward in float64 from the float32 inputs (so only Keras's rounding differs)."""
    key = kwargs.pop("key", None)
    return A.multi_head_attention(
        query.astype(np.float64), value.astype(np.float64), params, num_heads,
        key=None if key is None else key.astype(np.float64), **kwargs)


def assert_close(actual, expected, atol=ATOL):
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected.astype(np.float64), rtol=0, atol=atol)


def visible_mask(b, t, s, seed, p=0.6):
    mask = np.random.default_rng(seed).random((b, t, s)) < p
    mask[..., 0] |= ~mask.any(-1)  # every query sees at least one key
    return mask


# ------------------------------------------------------------------ multi-head attention


def test_self_attention_without_mask_matches_keras():
    x = f32(2, 5, 8, seed=0)
    layer, params = keras_mha(x, x, num_heads=2, key_dim=4, seed=1)
    assert_close(ours(x, x, params, 2), layer(x, x))


def test_bool_attention_mask_matches_keras():
    x = f32(3, 6, 8, seed=2)
    mask = visible_mask(3, 6, 6, seed=3)
    layer, params = keras_mha(x, x, num_heads=2, key_dim=4, seed=4)
    assert_close(ours(x, x, params, 2, mask=mask), layer(x, x, attention_mask=mask))


def test_causal_mask_matches_keras_use_causal_mask():
    x = f32(2, 7, 8, seed=5)
    layer, params = keras_mha(x, x, num_heads=4, key_dim=2, seed=6)
    assert_close(ours(x, x, params, 4, mask=A.causal_mask(7)), layer(x, x, use_causal_mask=True))


def test_causal_plus_padding_matches_keras():
    x = f32(3, 6, 8, seed=7)
    keys = A.key_padding_to_attention_mask(A.padding_mask([6, 4, 1], 6))      # (B, 1, S)
    mask = A.combine_masks(A.causal_mask(6), keys)                            # (B, T, S)
    layer, params = keras_mha(x, x, num_heads=2, key_dim=4, seed=8)
    expected = layer(x, x, attention_mask=np.broadcast_to(keys, (3, 6, 6)), use_causal_mask=True)
    assert_close(ours(x, x, params, 2, mask=mask), expected)


def test_cross_attention_with_separate_key_and_sizes_matches_keras():
    # T != S, key != value, three different input widths, value_dim != key_dim, output_shape.
    query, key, value = f32(2, 3, 6, seed=9), f32(2, 7, 5, seed=10), f32(2, 7, 4, seed=11)
    layer, params = keras_mha(query, value, key, num_heads=3, key_dim=6, value_dim=2,
                              output_shape=9, seed=12)
    mask = visible_mask(2, 3, 7, seed=13)
    out, w = ours(query, value, params, 3, key=key, mask=mask, return_weights=True)
    k_out, k_w = layer(query, value, key, attention_mask=mask, return_attention_scores=True)
    assert out.shape == (2, 3, 9)
    assert_close(out, k_out)
    assert_close(w, k_w)
    assert_close(out, layer(query, value, key, attention_mask=mask))   # fast path too


def test_cross_attention_causal_mask_is_top_left_aligned_like_keras():
    query, value = f32(2, 3, 8, seed=14), f32(2, 5, 8, seed=15)
    layer, params = keras_mha(query, value, num_heads=2, key_dim=4, seed=16)
    out, w = ours(query, value, params, 2, mask=A.causal_mask(3, 5), return_weights=True)
    assert_close(out, layer(query, value, use_causal_mask=True))            # fast path
    k_out, k_w = layer(query, value, use_causal_mask=True, return_attention_scores=True)
    assert_close(out, k_out)                                                # explicit path
    assert_close(w, k_w)
    np.testing.assert_array_equal(np.asarray(k_w)[0, 0] > 0, A.causal_mask(3, 5))


def test_attention_weights_match_keras_return_attention_scores():
    x = f32(2, 5, 8, seed=17)
    layer, params = keras_mha(x, x, num_heads=2, key_dim=4, seed=18)
    mask = A.causal_mask(5)
    out, w = ours(x, x, params, 2, mask=mask, return_weights=True)
    k_out, k_w = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    assert w.shape == (2, 2, 5, 5)
    assert_close(w, k_w)
    assert_close(out, k_out)


@pytest.mark.parametrize("key_dim", [6, 5])
def test_key_dim_not_a_power_of_two_matches_keras(key_dim):
    # √key_dim is inexact here, so where the scale is applied matters at float32 rounding.
    x = f32(2, 6, 10, seed=19)
    mask = visible_mask(2, 6, 6, seed=20)
    layer, params = keras_mha(x, x, num_heads=3, key_dim=key_dim, seed=21)
    assert_close(ours(x, x, params, 3, mask=mask), layer(x, x, attention_mask=mask))
    _, w = ours(x, x, params, 3, mask=mask, return_weights=True)
    assert_close(w, layer(x, x, attention_mask=mask, return_attention_scores=True)[1])


def test_fully_masked_rows_match_keras_explicit_path():
    x = f32(2, 4, 8, seed=22)
    mask = visible_mask(2, 4, 4, seed=23)
    mask[0, 2] = False
    layer, params = keras_mha(x, x, num_heads=2, key_dim=4, seed=24)
    out, w = ours(x, x, params, 2, mask=mask, return_weights=True)
    k_out, k_w = layer(x, x, attention_mask=mask, return_attention_scores=True)
    assert_close(w, k_w)
    assert_close(out, k_out)
    assert_close(out[0, 2], params["output_bias"])


def test_layer_without_biases_matches_keras():
    x = f32(2, 5, 6, seed=25)
    layer, params = keras_mha(x, x, num_heads=2, key_dim=3, use_bias=False, seed=26)
    assert "query_bias" not in params
    assert_close(ours(x, x, params, 2), layer(x, x))


def test_params_to_list_loads_into_keras():
    x = f32(2, 5, 8, seed=27)
    params = A.init_params(8, 2, 4, rng=28)
    params["output_bias"] = np.random.default_rng(29).normal(size=8)
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    layer(x, x)
    layer.set_weights(A.params_to_list(params))
    assert_close(ours(x, x, params, 2), layer(x, x))


# ---------------------------------------------------------- scaled dot-product attention


def to_keras_layout(x):
    """(B, N, T, H) -> (B, T, N, H): keras.ops.dot_product_attention puts heads third."""
    return np.swapaxes(x, 1, 2)


def test_scaled_dot_product_attention_matches_keras_ops():
    q, k, v = f32(2, 3, 5, 8, seed=30), f32(2, 3, 7, 8, seed=31), f32(2, 3, 7, 4, seed=32)
    out, _ = A.scaled_dot_product_attention(q.astype(np.float64), k, v)
    expected = keras.ops.dot_product_attention(*(to_keras_layout(a) for a in (q, k, v)))
    assert_close(out, to_keras_layout(np.asarray(expected)))


def test_scaled_dot_product_attention_with_mask_matches_keras_ops():
    q, k, v = f32(2, 3, 5, 6, seed=33), f32(2, 3, 7, 6, seed=34), f32(2, 3, 7, 4, seed=35)
    mask = visible_mask(2, 5, 7, seed=36)[:, None]                        # (B, 1, T, S)
    out, _ = A.scaled_dot_product_attention(q.astype(np.float64), k, v, mask)
    expected = keras.ops.dot_product_attention(*(to_keras_layout(a) for a in (q, k, v)), mask=mask)
    assert_close(out, to_keras_layout(np.asarray(expected)))


def test_causal_mask_matches_keras_ops_is_causal():
    q, k, v = f32(1, 2, 4, 8, seed=37), f32(1, 2, 6, 8, seed=38), f32(1, 2, 6, 3, seed=39)
    out, _ = A.scaled_dot_product_attention(q.astype(np.float64), k, v, A.causal_mask(4, 6))
    expected = keras.ops.dot_product_attention(*(to_keras_layout(a) for a in (q, k, v)), is_causal=True)
    assert_close(out, to_keras_layout(np.asarray(expected)))
