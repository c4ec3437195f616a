"""Our Keras layer against ``keras.layers.MultiHeadAttention``, weights copied, float32.

How close, and why:

* against Keras's **explicit path** (``return_attention_scores=True``, or a layer built
  with ``dropout > 0``) outputs and scores are **bit-identical** (assert_array_equal):
  the same scale on the query, the same matrix products, the same float32 softmax;
* against Keras's **fast path** (``keras.ops.dot_product_attention``) atol 1e-5 on
  outputs of size ~1–5: it scales the logits instead of the query, which changes float32
  rounding (measured up to ~1e-6);
* gradients: max |ours - Keras| <= 1e-5 * max |Keras| per gradient (the backward graphs
  are different programs; the key bias's gradient is zero up to rounding, so it is
  compared with atol 1e-5); measured ~1e-7 relative;
* XLA fuses and reorders float32 arithmetic: atol 1e-5 to eager (measured ~1e-6);
* the float64 NumPy reference: atol 1e-5 (float32 rounding on our side, ~1e-7 measured).

Fully masked query rows are compared only with the explicit path: the fast path gives
them uniform weights, the explicit path and ours zero weights.
"""

from __future__ import annotations

import numpy as np
import pytest

from attention_lessons.device import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402

from attention_lessons import attention as A  # noqa: E402
from attention_lessons.layers import MultiHeadAttention, from_keras  # noqa: E402

FAST_ATOL = 1e-5
XLA_ATOL = 1e-5
GRAD_RTOL = 1e-5


def f32(*shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def pair(query, value, key=None, *, seed, **kwargs):
    """A built Keras layer with random weights (biases too) and our copy of it."""
    theirs = keras.layers.MultiHeadAttention(**kwargs)
    theirs(query, value, key)
    rng = np.random.default_rng(seed)
    theirs.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32)
                        for w in theirs.get_weights()])
    return from_keras(theirs), theirs


def visible_mask(b, t, s, seed, p=0.6):
    mask = np.random.default_rng(seed).random((b, t, s)) < p
    mask[..., 0] |= ~mask.any(-1)  # every query sees at least one key
    return mask


def assert_same(ours, theirs):
    """Bit-identical outputs, or (output, scores) pairs."""
    if isinstance(ours, tuple):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
        return
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def assert_close(ours, theirs, atol=FAST_ATOL):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=atol)


def both_paths(ours, theirs, *args, **kwargs):
    """Ours == Keras's explicit path bit for bit, and ≈ its fast path."""
    got = ours(*args, return_attention_scores=True, **kwargs)
    assert_same(got, theirs(*args, return_attention_scores=True, **kwargs))
    assert_close(ours(*args, **kwargs), theirs(*args, **kwargs))
    return got


# --------------------------------------------------------------------------- forward


def test_no_mask_matches_keras():
    x = f32(2, 5, 8, seed=0)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, seed=1)
    both_paths(ours, theirs, x, x)


def test_batched_bool_attention_mask_matches_keras():
    x = f32(3, 6, 8, seed=2)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, seed=3)
    both_paths(ours, theirs, x, x, attention_mask=visible_mask(3, 6, 6, seed=4))


def test_unbatched_attention_mask_matches_keras():
    x = f32(3, 6, 8, seed=5)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, seed=6)
    both_paths(ours, theirs, x, x, attention_mask=visible_mask(1, 6, 6, seed=7)[0])   # (T, S)


def test_int_01_attention_mask_matches_keras():
    x = f32(2, 5, 8, seed=8)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, seed=9)
    mask = visible_mask(2, 5, 5, seed=10).astype(np.int32)
    both_paths(ours, theirs, x, x, attention_mask=mask)
    assert_same(ours(x, x, attention_mask=mask), ours(x, x, attention_mask=mask.astype(bool)))


def test_use_causal_mask_matches_keras():
    x = f32(2, 7, 8, seed=11)
    ours, theirs = pair(x, x, num_heads=4, key_dim=2, seed=12)
    _, scores = both_paths(ours, theirs, x, x, use_causal_mask=True)
    np.testing.assert_array_equal(np.asarray(scores)[0, 0] > 0, A.causal_mask(7))


def test_causal_plus_padding_mask_matches_keras():
    x = f32(3, 6, 8, seed=13)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, seed=14)
    keys = A.key_padding_to_attention_mask(A.padding_mask([6, 4, 1], 6))   # (B, 1, S)
    both_paths(ours, theirs, x, x, attention_mask=np.broadcast_to(keys, (3, 6, 6)),
               use_causal_mask=True)


def test_keras_input_masks_match_keras():
    tokens = np.array([[3, 1, 4, 0, 0], [5, 9, 2, 6, 0]])
    embed = keras.layers.Embedding(10, 8, mask_zero=True)
    embed.build((None, 5))
    ours, theirs = pair(embed(tokens), embed(tokens), num_heads=2, key_dim=4, seed=15)
    # Keras deletes the Keras mask from its inputs after a call: fresh tensors each time.
    x_ours, x_theirs = embed(tokens), embed(tokens)
    got = ours(x_ours, x_ours, return_attention_scores=True)
    assert_same(got, theirs(x_theirs, x_theirs, return_attention_scores=True))
    np.testing.assert_array_equal(np.asarray(got[0]._keras_mask), tokens != 0)
    # Padded queries see nothing (fast path: uniform weights), so compare real rows only.
    x_theirs = embed(tokens)
    real = tokens != 0
    assert_close(np.asarray(got[0])[real], np.asarray(theirs(x_theirs, x_theirs))[real])


def test_keras_input_masks_in_a_functional_model_match_keras():
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 8, mask_zero=True)(inputs)
    ours_layer = MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1)
    theirs_layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1)
    ours_model = keras.Model(inputs, ours_layer(x, x))
    theirs_model = keras.Model(inputs, theirs_layer(x, x))
    theirs_layer.set_weights([w + 0.1 for w in theirs_layer.get_weights()])
    ours_layer.copy_weights_from(theirs_layer)
    tokens = np.array([[3, 1, 4, 0], [5, 0, 0, 0]])
    out = ours_model(tokens)
    assert_same(out, theirs_model(tokens))   # dropout > 0: Keras takes its explicit path
    np.testing.assert_array_equal(np.asarray(out._keras_mask), tokens != 0)


def test_cross_attention_with_other_sizes_matches_keras():
    # T != S, key != value, three input widths.
    query, key, value = f32(2, 3, 6, seed=16), f32(2, 7, 5, seed=17), f32(2, 7, 4, seed=18)
    ours, theirs = pair(query, value, key, num_heads=3, key_dim=6, seed=19)
    out, scores = both_paths(ours, theirs, query, value, key,
                             attention_mask=visible_mask(2, 3, 7, seed=20))
    assert out.shape == (2, 3, 6) and scores.shape == (2, 3, 3, 7)


def test_cross_attention_causal_mask_matches_keras():
    query, value = f32(2, 3, 8, seed=21), f32(2, 5, 8, seed=22)
    ours, theirs = pair(query, value, num_heads=2, key_dim=4, seed=23)
    both_paths(ours, theirs, query, value, use_causal_mask=True)


def test_return_attention_scores_matches_keras():
    x = f32(2, 5, 8, seed=24)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, seed=25)
    out, scores = ours(x, x, return_attention_scores=True)
    k_out, k_scores = theirs(x, x, return_attention_scores=True)
    assert scores.shape == (2, 2, 5, 5)
    assert_same(scores, k_scores)
    assert_same(out, k_out)
    np.testing.assert_allclose(np.asarray(scores).sum(-1), 1.0, atol=1e-6)


def test_dropout_layer_in_inference_matches_keras():
    x = f32(2, 5, 8, seed=26)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, dropout=0.5, seed=27)
    mask = visible_mask(2, 5, 5, seed=28)
    assert_same(ours(x, x, attention_mask=mask, training=False),
                theirs(x, x, attention_mask=mask, training=False))


def test_output_shape_matches_keras():
    x = f32(2, 5, 8, seed=29)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, output_shape=3, seed=30)
    out = both_paths(ours, theirs, x, x)[0]
    assert out.shape == (2, 5, 3)


@pytest.mark.parametrize("key_dim", [5, 6])   # √key_dim inexact: where we scale matters
def test_value_dim_other_than_key_dim_matches_keras(key_dim):
    x = f32(2, 6, 10, seed=31)
    ours, theirs = pair(x, x, num_heads=3, key_dim=key_dim, value_dim=2, seed=32)
    both_paths(ours, theirs, x, x, attention_mask=visible_mask(2, 6, 6, seed=33))


def test_layer_without_biases_matches_keras():
    x = f32(2, 5, 6, seed=34)
    ours, theirs = pair(x, x, num_heads=2, key_dim=3, use_bias=False, seed=35)
    assert len(ours.get_weights()) == 4
    both_paths(ours, theirs, x, x, use_causal_mask=True)


def test_fully_masked_rows_give_zero_weights_like_keras_explicit_path():
    x = f32(2, 4, 8, seed=36)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, seed=37)
    mask = visible_mask(2, 4, 4, seed=38)
    mask[0, 2] = False                                          # query 2 of example 0 sees nothing
    out, scores = ours(x, x, attention_mask=mask, return_attention_scores=True)
    assert not np.isnan(np.asarray(out)).any()
    np.testing.assert_array_equal(np.asarray(scores)[0, :, 2], 0.0)
    np.testing.assert_array_equal(np.asarray(out)[0, 2], ours.output_bias.numpy())   # zero context
    assert_same((out, scores), theirs(x, x, attention_mask=mask, return_attention_scores=True))
    # Keras's fast path differs on that row only.
    fast = np.asarray(theirs(x, x, attention_mask=mask))
    assert_close(np.delete(np.asarray(out)[0], 2, axis=0), np.delete(fast[0], 2, axis=0))
    assert_close(np.asarray(out)[1], fast[1])


# ------------------------------------------------------------------------- gradients


def gradients(layer, query, value, **kwargs):
    query, value = tf.constant(query), tf.constant(value)
    with tf.GradientTape() as tape:
        tape.watch([query, value])
        out = layer(query, value, **kwargs)
        loss = tf.reduce_sum(out * tf.sin(out))   # not symmetric in the output
    return tape.gradient(loss, [query, value] + layer.trainable_weights)


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "causal_and_padding"])
def test_gradients_match_keras(masked):
    query, value = f32(2, 5, 8, seed=39), f32(2, 6, 4, seed=40)
    ours, theirs = pair(query, value, num_heads=2, key_dim=3, value_dim=5, seed=41)
    mask = visible_mask(2, 5, 6, seed=42)
    mask[..., 0] = True        # with the causal mask, every query still sees a key
    kwargs = dict(use_causal_mask=True, attention_mask=mask) if masked else {}
    got, want = gradients(ours, query, value, **kwargs), gradients(theirs, query, value, **kwargs)
    assert len(got) == len(want) == 2 + 8
    for g, w, var in zip(got, want, ["query", "value"] + [v.name for v in ours.trainable_weights]):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape
        # The key bias's gradient is 0 up to rounding (a shift shared by every key does not
        # change the softmax): there the scale is 1, not its own rounding noise.
        assert np.abs(g - w).max() <= GRAD_RTOL * max(np.abs(w).max(), 1.0), var


# ------------------------------------------------------------------ graphs and XLA


def test_eager_tf_function_and_xla_agree():
    query, value = f32(2, 5, 8, seed=43), f32(2, 6, 8, seed=44)
    mask = visible_mask(2, 5, 6, seed=45)
    mask[1, 3] = False
    ours, _ = pair(query, value, num_heads=2, key_dim=4, seed=46)

    def run(q, v):
        return ours(q, v, attention_mask=mask, use_causal_mask=True, return_attention_scores=True)

    eager = run(query, value)
    graph = tf.function(run)(query, value)
    xla = tf.function(run, jit_compile=True)(query, value)
    assert_same(graph, eager)
    for a, b in zip(xla, eager):
        assert not np.isnan(np.asarray(a)).any()
        assert_close(a, b, atol=XLA_ATOL)


# ------------------------------------------------------------------ NumPy reference


def test_float64_numpy_reference_agrees():
    query, key, value = f32(2, 4, 6, seed=47), f32(2, 7, 5, seed=48), f32(2, 7, 3, seed=49)
    layer = MultiHeadAttention(num_heads=3, key_dim=5, value_dim=2, output_shape=4, seed=50)
    layer(query, value, key)
    layer.set_weights([w + np.random.default_rng(51).normal(scale=0.1, size=w.shape)
                       for w in layer.get_weights()])                 # non-zero biases
    mask = visible_mask(2, 4, 7, seed=52) & A.causal_mask(4, 7)
    mask[0, 1] = False                                                 # one fully masked row
    out, scores = layer(query, value, key, attention_mask=mask, return_attention_scores=True)
    ref_out, ref_scores = A.multi_head_attention(
        query.astype(np.float64), value.astype(np.float64), A.params_from_keras(layer), 3,
        mask=mask, key=key.astype(np.float64), return_weights=True)
    assert_close(out, ref_out, atol=1e-5)
    assert_close(scores, ref_scores, atol=1e-5)
