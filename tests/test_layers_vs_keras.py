"""Our Keras layer against ``keras.layers.MultiHeadAttention``, weights copied, float32.

How close, and why. Two correct float32 programs agree only up to rounding: every product
and partial sum is rounded to 24 significant bits, and *which* partial sums are formed
depends on the kernel — oneDNN or TensorFlow's own (Eigen), the vector width (AVX-512,
AVX2, NEON), fused multiply-adds, the number of threads. So even where our layer runs the
same operations as Keras's explicit path, in the same order, the two may be computed by
different kernels (``tf.einsum`` here, ``keras.ops.einsum`` — mostly ``tf.matmul`` after
transposes — in Keras) and differ
in the last bits on some CPUs: bit-identical on the machine where the stored outputs were
made, 2–5e-7 apart on an AMD AVX2 machine and with ``scripts/portable.py``.

Every comparison between different code paths or libraries therefore goes through
:func:`assert_float32_close`: ``max |ours - theirs| <= ulps · eps · max(max |theirs|, 1)``
with ``eps = 2**-23 ≈ 1.19e-7`` (float32's machine epsilon). The floor of 1 is the size of
the intermediate quantities (softmax weights <= 1, inputs ~N(0, 1), weights ~N(0, 0.5²)), and
it keeps a reference that is 0 up to rounding (the key bias's gradient) from asking for
its own rounding noise. The factors, each with the largest ``max |ours - theirs| /
(eps · scale)`` measured in this file, normal environment / ``scripts/portable.py``
(oneDNN off, AVX2, one thread):

* ``EXPLICIT_ULPS = 16`` — Keras's **explicit path** (``return_attention_scores=True``, or
  a layer with ``dropout > 0``): the same scale on the query, the same products, the same
  float32 softmax; a few chained reductions of length <= 16 each rounding once.
  Measured 0 / 2.4.
* ``FAST_ULPS = 32`` — Keras's **fast path** (``keras.ops.dot_product_attention``), which
  scales the logits instead of the query: other roundings, amplified by the softmax by
  the size of the logits. Measured 1.2 / 3.2.
* ``XLA_ULPS = 32`` — XLA fuses and reorders float32 arithmetic; eager against
  ``tf.function`` uses it too (Grappler may rewrite and fuse the graph). Measured XLA
  2.7 / 1.2, ``tf.function`` 0 / 0.
* ``GRAD_ULPS = 256`` — gradients: the backward graphs are different programs with longer
  chains (through the softmax's Jacobian). Measured 4.9 / 4.5, except the key bias's
  gradient, a sum of terms that cancel to 0 (measured against the floor of 1, not
  against the size of those terms): 22.5 / 39.5.
* ``REFERENCE_ULPS = 16`` — the float64 NumPy reference: only our float32 rounding.
  Measured 0.6 / 0.9.

Bit-for-bit equality (``assert_array_equal``) is kept only where the very same operations
run in the same order in the same process: an int 0/1 mask against the bool mask it is
converted to, and exact zeros that the layer sets by construction. That the tolerance
still catches real mistakes is checked by :func:`test_tolerance_catches_a_wrong_layer`.

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

#: float32 machine epsilon, 2**-23 ≈ 1.19e-7: the spacing of float32 numbers just above 1.
EPS32 = float(np.finfo(np.float32).eps)
EXPLICIT_ULPS = 16      # ours vs Keras's explicit path (see the module docstring)
FAST_ULPS = 32          # ours vs Keras's fast path, keras.ops.dot_product_attention
XLA_ULPS = 32           # eager vs tf.function vs XLA
GRAD_ULPS = 256         # gradients, ours vs Keras
REFERENCE_ULPS = 16     # ours (float32) vs the float64 NumPy reference


def assert_float32_close(ours, theirs, ulps=EXPLICIT_ULPS, what="output"):
    """Equal up to float32 rounding: ``max |ours - theirs| <= ulps · EPS32 · max(max |theirs|, 1)``.

    For results of different float32 kernels (see the module docstring for the factors).
    Tuples (output, scores) are compared element by element; shapes must agree, and dtypes
    too unless one side is a NumPy array (the float64 reference, gradients as arrays).
    Also used by test_layers.py, so the tolerance lives here only.
    """
    if isinstance(ours, (tuple, list)):
        assert len(ours) == len(theirs)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_float32_close(a, b, ulps, what=f"{what}[{i}]")
        return
    a, b = np.asarray(ours), np.asarray(theirs)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    if not isinstance(ours, np.ndarray) and not isinstance(theirs, np.ndarray):
        dtypes = [keras.backend.standardize_dtype(t.dtype) for t in (ours, theirs)]
        assert dtypes[0] == dtypes[1], (what, *dtypes)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    scale = max(float(np.abs(b64).max(initial=0.0)), 1.0)
    error = float(np.abs(a64 - b64).max(initial=0.0))
    bound = ulps * EPS32 * scale
    assert error <= bound, (f"{what}: max |ours - theirs| = {error:.3g} > {ulps} eps x {scale:.3g} "
                            f"= {bound:.3g} ({error / (EPS32 * scale):.1f} eps x scale)")


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


def both_paths(ours, theirs, *args, **kwargs):
    """Ours ≈ Keras's explicit path (EXPLICIT_ULPS) and ≈ its fast path (FAST_ULPS)."""
    got = ours(*args, return_attention_scores=True, **kwargs)
    assert_float32_close(got, theirs(*args, return_attention_scores=True, **kwargs), EXPLICIT_ULPS,
                         what="explicit path")
    assert_float32_close(ours(*args, **kwargs), theirs(*args, **kwargs), FAST_ULPS, what="fast path")
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
    # The int mask is converted to the bool one, then the same operations run in the same
    # order in the same process: bit-identical on any machine.
    np.testing.assert_array_equal(np.asarray(ours(x, x, attention_mask=mask)),
                                  np.asarray(ours(x, x, attention_mask=mask.astype(bool))))


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
    assert_float32_close(got, theirs(x_theirs, x_theirs, return_attention_scores=True), EXPLICIT_ULPS)
    np.testing.assert_array_equal(np.asarray(got[0]._keras_mask), tokens != 0)
    # Padded queries see nothing (fast path: uniform weights), so compare real rows only.
    x_theirs = embed(tokens)
    real = tokens != 0
    assert_float32_close(np.asarray(got[0])[real], np.asarray(theirs(x_theirs, x_theirs))[real], FAST_ULPS,
                         what="fast path")


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
    assert_float32_close(out, theirs_model(tokens), EXPLICIT_ULPS)   # dropout > 0: Keras's explicit path
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
    assert_float32_close(scores, k_scores, EXPLICIT_ULPS, what="scores")
    assert_float32_close(out, k_out, EXPLICIT_ULPS)
    np.testing.assert_allclose(np.asarray(scores).sum(-1), 1.0, atol=1e-6)


def test_dropout_layer_in_inference_matches_keras():
    x = f32(2, 5, 8, seed=26)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, dropout=0.5, seed=27)
    mask = visible_mask(2, 5, 5, seed=28)
    assert_float32_close(ours(x, x, attention_mask=mask, training=False),
                         theirs(x, x, attention_mask=mask, training=False), EXPLICIT_ULPS)


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
    assert_float32_close((out, scores), theirs(x, x, attention_mask=mask, return_attention_scores=True),
                         EXPLICIT_ULPS)
    # Keras's fast path differs on that row only.
    fast = np.asarray(theirs(x, x, attention_mask=mask))
    assert_float32_close(np.delete(np.asarray(out)[0], 2, axis=0), np.delete(fast[0], 2, axis=0), FAST_ULPS,
                         what="fast path")
    assert_float32_close(np.asarray(out)[1], fast[1], FAST_ULPS, what="fast path")


def test_tolerance_catches_a_wrong_layer():
    # The tolerance is loose enough for other kernels and tight enough for mistakes: scores
    # left unscaled (no 1/√key_dim), or an output bias off by 1e-4, fail it.
    x = f32(2, 5, 8, seed=53)
    ours, theirs = pair(x, x, num_heads=2, key_dim=4, seed=54)
    want = theirs(x, x, return_attention_scores=True)
    assert_float32_close(ours(x, x, return_attention_scores=True), want)
    unscaled = from_keras(theirs)
    unscaled.query_kernel.assign(unscaled.query_kernel * np.sqrt(4.0))
    unscaled.query_bias.assign(unscaled.query_bias * np.sqrt(4.0))
    with pytest.raises(AssertionError, match="max \\|ours - theirs\\|"):
        assert_float32_close(unscaled(x, x, return_attention_scores=True), want)
    shifted = from_keras(theirs)
    shifted.output_bias.assign(shifted.output_bias + 1e-4)
    with pytest.raises(AssertionError, match="max \\|ours - theirs\\|"):
        assert_float32_close(shifted(x, x, return_attention_scores=True), want)


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
        assert_float32_close(g, w, GRAD_ULPS, what=f"gradient of {var}")


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
    # Same library and process, but not the same program: Grappler rewrites the graph
    # (oneDNN fusions among them) and XLA fuses and reorders the arithmetic.
    assert_float32_close(graph, eager, XLA_ULPS, what="tf.function")
    for a, b in zip(xla, eager):
        assert not np.isnan(np.asarray(a)).any()
    assert_float32_close(xla, eager, XLA_ULPS, what="XLA")


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
    assert_float32_close(out, ref_out, REFERENCE_ULPS, what="reference output")
    assert_float32_close(scores, ref_scores, REFERENCE_ULPS, what="reference scores")
