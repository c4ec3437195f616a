"""Part V: rotary positions, grouped-query attention and the KV cache — NumPy references,
our Keras layers (attention_lessons.modern), and Keras's own GroupQueryAttention.

Tolerances. Float64 NumPy identities are checked to 1e-12 relative. Float32 results of
different programs go through :func:`assert_float32_close` of test_layers_vs_keras.py,
``max |ours - theirs| <= ulps · eps · max(max |theirs|, 1)`` with ``eps = 2**-23``, and the
factors explained there: ``EXPLICIT_ULPS`` (16) for the same operations run by other
kernels, ``FAST_ULPS`` (32) against Keras's ``ops.dot_product_attention`` path, ``XLA_ULPS``
(32) for XLA, ``GRAD_ULPS`` (256) for gradients, ``REFERENCE_ULPS`` (16) against the float64
NumPy reference. Two more, derived here:

* ``DECODE_ULPS = EXPLICIT_ULPS`` — cached decoding against one causal pass over the whole
  sequence: the same products and the same float32 softmax (masked keys get exactly 0 in
  both), only the matrix shapes differ (one query row against T), so only the kernels'
  summation order can differ;
* :func:`rope_ulps` — RoPE's float32 angle ``p·ω`` (as keras_hub computes it) carries up to
  ~3 roundings relative to itself (``ω = max_wavelength^(-2i/D)``, the product), i.e. an
  absolute error of ``3·eps·θ_max`` radians, which rotates a pair of size ``|x|`` by that much;
  plus a few eps for cos/sin and the two products and the sum. Bound:
  ``8·(θ_max + 1)`` eps relative to ``max(max |x|, 1)``.

The measured errors, in eps, are printed (``pytest -s``).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from attention_lessons.device import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402

from attention_lessons import attention as A  # noqa: E402
from attention_lessons.layers import MultiHeadAttention  # noqa: E402
from attention_lessons.modern import (  # noqa: E402
    CachedGroupQueryAttention,
    CachedMultiHeadAttention,
    GroupQueryAttention,
    RotaryEmbedding,
    compute_causal_mask,
)
from test_layers_vs_keras import (  # noqa: E402  (the float32 tolerance lives there)
    EPS32,
    EXPLICIT_ULPS,
    FAST_ULPS,
    GRAD_ULPS,
    REFERENCE_ULPS,
    XLA_ULPS,
    assert_float32_close,
)

DECODE_ULPS = EXPLICIT_ULPS
KERAS_GQA_ARGS = set(inspect.signature(keras.layers.GroupQueryAttention.__init__).parameters)


def rope_ulps(max_angle: float) -> float:
    return 8.0 * (max_angle + 1.0)


def f32(*shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def randomize(layer, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=scale, size=w.shape).astype(np.float32) for w in layer.get_weights()])
    return layer


def built(layer, *inputs, **kwargs):
    layer(*inputs, **kwargs)
    return layer


def eps_units(ours, theirs) -> float:
    """max |ours - theirs| in units of EPS32 · max(max |theirs|, 1), for the printed report."""
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(a - b).max() / (EPS32 * max(np.abs(b).max(), 1.0)))


def visible_mask(b, t, s, seed, p=0.6):
    mask = np.random.default_rng(seed).random((b, t, s)) < p
    mask[..., 0] |= ~mask.any(-1)
    return mask


# ================================================================ NumPy: rotary positions


def test_rope_scores_depend_only_on_the_offset():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=16), rng.normal(size=16)

    def score(p_q, p_k):
        rq = A.rotary_embedding(q[None], positions=[p_q])[0]
        rk = A.rotary_embedding(k[None], positions=[p_k])[0]
        return rq @ rk

    for p_q, p_k in [(0, 0), (3, 7), (10, 2), (5.5, 1.25)]:
        for shift in (1, 17, -4, 1000):
            assert score(p_q + shift, p_k + shift) == pytest.approx(score(p_q, p_k), rel=1e-12, abs=1e-12)
        # R_p q · R_p' k = q · R_(p'-p) k: only the offset is left.
        assert score(p_q, p_k) == pytest.approx(score(0, p_k - p_q), rel=1e-12, abs=1e-12)
    assert abs(score(0, 1) - score(0, 2)) > 1e-3          # ... and it does depend on the offset


def test_rope_equals_the_complex_number_formulation():
    # Pair i as z_i = x_i + i·x_(i+D/2); RoPE multiplies it by e^(i·p·ω_i).
    x = np.random.default_rng(1).normal(size=(2, 3, 7, 8))
    positions = np.arange(7) * 1.5 + 2
    d = x.shape[-1]
    omega = 500.0 ** (-np.arange(0, d, 2) / d)
    z = (x[..., : d // 2] + 1j * x[..., d // 2:]) * np.exp(1j * positions[:, None] * omega)
    want = np.concatenate([z.real, z.imag], axis=-1)
    got = A.rotary_embedding(x, positions=positions, max_wavelength=500.0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_rope_keeps_norms_dtype_and_position_zero():
    x = f32(2, 5, 6, seed=2)
    y = A.rotary_embedding(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-6)
    np.testing.assert_array_equal(y[:, 0], x[:, 0])                   # position 0: no rotation
    np.testing.assert_array_equal(A.rotary_embedding(x, positions=np.arange(5)), y)
    per_example = np.stack([np.arange(5), np.arange(5) + 3])          # (B, T) positions
    np.testing.assert_allclose(A.rotary_embedding(x, positions=per_example)[1],
                               A.rotary_embedding(x[1], positions=np.arange(5) + 3), rtol=1e-6)


@pytest.mark.parametrize("kwargs, words", [
    ({"x": np.ones((2, 5))}, ["`x`", "(2, 5)", "even"]),
    ({"x": np.ones((3, 4)), "positions": np.arange(4)}, ["`positions`", "(4,)", "(3,)"]),
    ({"x": np.ones((3, 4)), "max_wavelength": 0}, ["`max_wavelength`"]),
    ({"x": np.ones(4)}, ["`x`", "(..., T, D)"]),
])
def test_rope_errors_name_the_argument_and_shapes(kwargs, words):
    with pytest.raises(ValueError) as error:
        A.rotary_embedding(**kwargs)
    for word in words:
        assert word in str(error.value)


# ================================================================ NumPy: grouped queries


def test_gqa_head_i_reads_key_value_head_i_over_group_size():
    rng = np.random.default_rng(3)
    q, k, v = rng.normal(size=(2, 6, 4, 5)), rng.normal(size=(2, 3, 7, 5)), rng.normal(size=(2, 3, 7, 2))
    mask = rng.random((2, 1, 4, 7)) < 0.7
    out, w = A.grouped_query_attention(q, k, v, mask)
    assert out.shape == (2, 6, 4, 2) and w.shape == (2, 6, 4, 7)
    for i in range(6):
        o_i, w_i = A.scaled_dot_product_attention(q[:, i], k[:, i // 2], v[:, i // 2], mask[:, 0])
        np.testing.assert_allclose(out[:, i], o_i, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(w[:, i], w_i, rtol=1e-12, atol=1e-12)


def test_gqa_with_as_many_kv_heads_is_multi_head_and_with_one_is_multi_query():
    rng = np.random.default_rng(4)
    q, k, v = rng.normal(size=(2, 4, 5, 3)), rng.normal(size=(2, 4, 6, 3)), rng.normal(size=(2, 4, 6, 3))
    mask = A.causal_mask(5, 6)
    for got, want in zip(A.grouped_query_attention(q, k, v, mask), A.scaled_dot_product_attention(q, k, v, mask)):
        np.testing.assert_array_equal(got, want)                       # the very same operations
    # Multi-query: one key/value head, broadcast over the query heads.
    for got, want in zip(A.grouped_query_attention(q, k[:, :1], v[:, :1], mask),
                         A.scaled_dot_product_attention(q, k[:, :1], v[:, :1], mask)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_gqa_fully_masked_rows_give_zero_weights_and_output():
    rng = np.random.default_rng(5)
    q, k, v = rng.normal(size=(1, 4, 3, 2)), rng.normal(size=(1, 2, 5, 2)), rng.normal(size=(1, 2, 5, 2))
    mask = np.ones((3, 5), bool)
    mask[1] = False
    out, w = A.grouped_query_attention(q, k, v, mask)
    np.testing.assert_array_equal(w[:, :, 1], 0.0)
    np.testing.assert_array_equal(out[:, :, 1], 0.0)
    np.testing.assert_allclose(w[:, :, [0, 2]].sum(-1), 1.0)


@pytest.mark.parametrize("shapes, words", [
    (((1, 3, 4, 2), (1, 2, 5, 2), (1, 2, 5, 2)), ["`q`", "`k`", "(1, 3, 4, 2)", "(1, 2, 5, 2)", "divide"]),
    (((1, 4, 4, 2), (1, 2, 5, 2), (1, 1, 5, 2)), ["`k`", "`v`", "(1, 2, 5, 2)", "(1, 1, 5, 2)"]),
    (((1, 4, 4, 2), (1, 2, 5, 3), (1, 2, 5, 2)), ["`q`", "`k`", "(1, 4, 4, 2)", "(1, 2, 5, 3)"]),
    (((4, 2), (5, 2), (5, 2)), ["`q`", "(B, Nq, T, H)", "(4, 2)"]),
])
def test_gqa_errors_name_arguments_and_shapes(shapes, words):
    with pytest.raises(ValueError) as error:
        A.grouped_query_attention(*(np.ones(s) for s in shapes))
    for word in words:
        assert word in str(error.value)


def test_sliding_window_mask_is_the_band_keras_uses():
    t, s, w = 6, 8, 3
    want = np.array([[abs(i - j) < w for j in range(s)] for i in range(t)])
    np.testing.assert_array_equal(A.sliding_window_mask(t, s, window=w), want)
    causal_window = A.sliding_window_mask(t, window=w) & A.causal_mask(t)
    assert causal_window.sum(-1).tolist() == [1, 2, 3, 3, 3, 3]         # itself and w - 1 before it
    assert A.sliding_window_mask(4, window=10).all()
    with pytest.raises(ValueError, match="`window`"):
        A.sliding_window_mask(4, window=0)
    with pytest.raises(TypeError):
        A.sliding_window_mask(4, 4, 2)           # window is keyword-only: no silent swap with s


# ================================================================ GroupQueryAttention vs Keras


def keras_pair(query, value, key=None, *, seed, **kwargs):
    """A built keras.layers.GroupQueryAttention with random weights and ours with a copy."""
    theirs = keras.layers.GroupQueryAttention(**kwargs)
    theirs(query, value, key)
    randomize(theirs, seed)
    ours = built(GroupQueryAttention(**kwargs), query, value, key)
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def needs_keras_args(*names):
    missing = [n for n in names if n not in KERAS_GQA_ARGS]
    reason = f"Keras {keras.__version__}'s GroupQueryAttention lacks {missing}"
    return pytest.mark.skipif(bool(missing), reason=reason)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("use_gate", [False, pytest.param(True, marks=needs_keras_args("use_gate"))])
def test_weights_have_keras_shapes_order_and_names(use_bias, use_gate):
    x, y = f32(2, 3, 8, seed=0), f32(2, 4, 6, seed=1)
    kwargs = dict(head_dim=3, num_query_heads=4, num_key_value_heads=2, use_bias=use_bias)
    if use_gate:
        kwargs["use_gate"] = True
    ours, theirs = keras_pair(x, y, seed=0, **kwargs)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    # Keras's sub-layer/variable paths, one level flattened: query/kernel -> query_kernel.
    keras_names = [w.path.split("/", 1)[1].replace("attention_output", "output").replace("/", "_")
                   for w in theirs.weights]
    assert [w.name for w in ours.weights] == keras_names


CASES = {
    # name: (call kwargs builder, layer kwargs)
    "multi_query": (lambda b, t, s: {}, {"num_key_value_heads": 1}),
    "grouped": (lambda b, t, s: {"attention_mask": visible_mask(b, t, s, seed=7)}, {"num_key_value_heads": 2}),
    "multi_head": (lambda b, t, s: {}, {"num_key_value_heads": 4}),
    "causal": (lambda b, t, s: {"use_causal_mask": True}, {"num_key_value_heads": 2}),
    "no_bias": (lambda b, t, s: {"use_causal_mask": True}, {"num_key_value_heads": 1, "use_bias": False}),
    "sliding_window": (lambda b, t, s: {"use_causal_mask": True}, {"num_key_value_heads": 2, "sliding_window": 2}),
    "gate": (lambda b, t, s: {"attention_mask": visible_mask(b, t, s, seed=8)},
             {"num_key_value_heads": 2, "use_gate": True}),
}


@pytest.mark.parametrize("case", CASES)
def test_gqa_equals_keras_on_both_of_its_paths(case):
    call, extra = CASES[case]
    missing = {"sliding_window", "use_gate"} & set(extra) - KERAS_GQA_ARGS
    if missing:
        pytest.skip(f"Keras {keras.__version__}'s GroupQueryAttention lacks {missing}")
    b, t, s = 2, 5, 5 if case in ("causal", "no_bias", "sliding_window") else 7
    query, value = f32(b, t, 8, seed=1), f32(b, s, 8, seed=2)
    ours, theirs = keras_pair(query, value, seed=3, head_dim=3, num_query_heads=4, **extra)   # 1/√3: inexact
    kwargs = call(b, t, s)
    got = ours(query, value, return_attention_scores=True, **kwargs)
    want = theirs(query, value, return_attention_scores=True, **kwargs)
    assert_float32_close(got, want, EXPLICIT_ULPS, what="explicit path")
    fast = theirs(query, value, **kwargs)
    assert_float32_close(ours(query, value, **kwargs), fast, FAST_ULPS, what="fast path")
    print(f"{case}: explicit {eps_units(got[0], want[0]):.1f} eps, fast {eps_units(got[0], fast):.1f} eps")


def test_gqa_cross_attention_with_its_own_key_equals_keras():
    query, value, key = f32(2, 3, 8, seed=1), f32(2, 6, 5, seed=2), f32(2, 6, 7, seed=3)
    ours, theirs = keras_pair(query, value, key, seed=4, head_dim=2, num_query_heads=6, num_key_value_heads=3)
    assert_float32_close(ours(query, value, key, return_attention_scores=True),
                         theirs(query, value, key, return_attention_scores=True), EXPLICIT_ULPS)


def test_gqa_fully_masked_rows_equal_keras_explicit_path_zero_weights():
    query, value = f32(2, 4, 8, seed=1), f32(2, 5, 8, seed=2)
    mask = visible_mask(2, 4, 5, seed=3)
    mask[1, 2] = False
    ours, theirs = keras_pair(query, value, seed=5, head_dim=4, num_query_heads=4, num_key_value_heads=2)
    out, scores = ours(query, value, attention_mask=mask, return_attention_scores=True)
    assert_float32_close((out, scores), theirs(query, value, attention_mask=mask, return_attention_scores=True))
    np.testing.assert_array_equal(np.asarray(scores)[1, :, 2], 0.0)
    np.testing.assert_array_equal(np.asarray(out)[1, 2], np.asarray(ours.output_bias))


def test_gqa_gradients_equal_keras():
    query, value = tf.constant(f32(2, 4, 8, seed=1)), tf.constant(f32(2, 6, 8, seed=2))
    mask = visible_mask(2, 4, 6, seed=3)
    ours, theirs = keras_pair(query, value, seed=6, head_dim=4, num_query_heads=4, num_key_value_heads=2)

    def grads(layer):
        with tf.GradientTape() as tape:
            tape.watch([query, value])
            loss = tf.reduce_sum(tf.sin(layer(query, value, attention_mask=mask)))
        return tape.gradient(loss, [query, value] + layer.trainable_weights)

    mine, keras_grads = grads(ours), grads(theirs)
    assert_float32_close([np.asarray(g) for g in mine], [np.asarray(g) for g in keras_grads], GRAD_ULPS,
                         what="gradients")
    print("gradients:", max(eps_units(a, b) for a, b in zip(mine, keras_grads)), "eps")


def test_numpy_gqa_equals_our_layer_and_keras():
    b, t, s, d, n_q, n_kv, h = 2, 5, 6, 8, 6, 2, 3
    query, value = f32(b, t, d, seed=1), f32(b, s, d, seed=2)
    mask = visible_mask(b, t, s, seed=3)
    ours, theirs = keras_pair(query, value, seed=7, head_dim=h, num_query_heads=n_q, num_key_value_heads=n_kv)
    w = [x.astype(np.float64) for x in ours.get_weights()]
    q = np.einsum("btd,dnh->bnth", query, w[0]) + w[1][:, None]      # (B, Nq, T, H)
    k = np.einsum("bsd,dnh->bnsh", value, w[2]) + w[3][:, None]      # (B, Nkv, S, H)
    v = np.einsum("bsd,dnh->bnsh", value, w[4]) + w[5][:, None]
    context, weights = A.grouped_query_attention(q, k, v, mask[:, None])
    want = np.einsum("bnth,nhd->btd", context, w[6]) + w[7]
    got, got_scores = ours(query, value, attention_mask=mask, return_attention_scores=True)
    assert_float32_close(np.asarray(got), want, REFERENCE_ULPS, what="ours vs NumPy")
    assert_float32_close(np.asarray(got_scores), weights, REFERENCE_ULPS, what="scores vs NumPy")
    keras_out = theirs(query, value, attention_mask=mask, return_attention_scores=True)[0]
    assert_float32_close(np.asarray(keras_out), want, REFERENCE_ULPS, what="Keras vs NumPy")
    print(f"vs float64 NumPy: ours {eps_units(got, want):.1f} eps, Keras {eps_units(keras_out, want):.1f} eps")


def test_gqa_with_as_many_kv_heads_equals_our_multi_head_attention():
    query, value = f32(2, 4, 8, seed=1), f32(2, 5, 8, seed=2)
    gqa = randomize(built(GroupQueryAttention(3, 4, 4), query, value), seed=1)
    mha = built(MultiHeadAttention(4, 3), query, value)
    mha.set_weights(gqa.get_weights())                  # the same 8 weights in the same order
    mask = visible_mask(2, 4, 5, seed=4)
    assert_float32_close(gqa(query, value, attention_mask=mask, return_attention_scores=True),
                         mha(query, value, attention_mask=mask, return_attention_scores=True), EXPLICIT_ULPS)


@pytest.mark.parametrize("kernel_initializer, seed", [("glorot_uniform", None),
                                                      (keras.initializers.TruncatedNormal(0.0, 0.02), 3)])
def test_gqa_kernels_start_different_and_seed_reproduces_them(kernel_initializer, seed):
    x = f32(1, 2, 8, seed=0)
    layer = built(GroupQueryAttention(8, 2, 2, use_gate=True, kernel_initializer=kernel_initializer,
                                      seed=seed), x, x)
    kernels = [layer.query_kernel, layer.key_kernel, layer.gate_kernel, layer.value_kernel]
    for i, a in enumerate(kernels):
        for b in kernels[i + 1:]:
            assert not np.allclose(np.asarray(a), np.asarray(b))
    again = built(GroupQueryAttention(8, 2, 2, use_gate=True, kernel_initializer=kernel_initializer,
                                      seed=seed), x, x)
    same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), again.get_weights()))
    assert same == (seed is not None)


@pytest.mark.parametrize("kwargs, name", [
    ({"head_dim": 0}, "head_dim"),
    ({"num_query_heads": 2.0}, "num_query_heads"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"dropout": 1.0}, "dropout"),
    ({"use_bias": "yes"}, "use_bias"),
    ({"use_gate": 1}, "use_gate"),
    ({"sliding_window": 0}, "sliding_window"),
    ({"flash_attention": "yes"}, "flash_attention"),
    ({"flash_attention": True, "dropout": 0.1}, "dropout"),
    ({"seed": -1}, "seed"),
])
def test_gqa_constructor_errors_name_the_argument(kwargs, name):
    args = {"head_dim": 2, "num_query_heads": 4, "num_key_value_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=f"`{name}`"):
        GroupQueryAttention(**args)


def test_gqa_call_errors_name_shapes():
    x = f32(2, 3, 8, seed=0)
    layer = GroupQueryAttention(2, 4, 2)
    with pytest.raises(ValueError, match=r"`query`.*\(3, 8\)"):
        layer(x[0], x[0])
    with pytest.raises(ValueError, match=r"`attention_mask` has shape \(2, 3, 4\).*S = 3.*`value` \(2, 3, 8\)"):
        layer(x, x, attention_mask=np.ones((2, 3, 4), bool))
    with pytest.raises(ValueError, match=r"`key` has shape \(2, 4, 8\) and `value` has shape \(2, 3, 8\)"):
        GroupQueryAttention(2, 4, 2)(x, x, f32(2, 4, 8, seed=1))
    # flash_attention=True insists on a kernel TensorFlow lacks: Keras raises at call, so do we.
    with pytest.raises(ValueError, match="`flash_attention=True`.*not supported in tensorflow"):
        GroupQueryAttention(2, 4, 2, flash_attention=True)(x, x)
    with pytest.raises(ValueError, match="Returning attention scores is not supported"):
        GroupQueryAttention(2, 4, 2, flash_attention=True)(x, x, return_attention_scores=True)


def test_gqa_config_round_trip():
    # Keras < 3.14 (Colab's 3.13) cannot apply an activity regularizer to mixed-precision outputs
    # (a float32 * bfloat16 Mul, in Keras's own layers too): round-tripped only where Keras runs it.
    recent = tuple(int(p) for p in keras.__version__.split(".")[:2]) >= (3, 14)
    extra = {"activity_regularizer": "l1"} if recent else {}
    layer = GroupQueryAttention(head_dim=4, num_query_heads=6, num_key_value_heads=3, dropout=0.1,
                                use_bias=False, sliding_window=5, use_gate=True, flash_attention=False,
                                kernel_initializer=keras.initializers.HeNormal(seed=2), kernel_regularizer="l2",
                                bias_constraint="non_neg", seed=9, dtype="mixed_bfloat16", name="gqa", **extra)
    config = layer.get_config()
    json.dumps(config)
    clone = GroupQueryAttention.from_config(config)
    assert clone.get_config() == config and clone.name == "gqa" and clone.dtype_policy.name == "mixed_bfloat16"
    x = f32(2, 4, 8, seed=0)
    built(layer, x, x)
    built(clone, x, x)
    np.testing.assert_array_equal(np.asarray(clone(x, x), np.float32), np.asarray(layer(x, x), np.float32))
    # A Keras GroupQueryAttention config (no flash_attention key) builds ours too.
    keras_config = keras.layers.GroupQueryAttention(4, 6, 3).get_config()
    assert GroupQueryAttention.from_config(keras_config).num_key_value_heads == 3


# ================================================================ KV cache


def causal_pass(layer, x):
    b, t = x.shape[:2]
    return layer(x, x, attention_mask=compute_causal_mask(b, t, t))


def decode(layer, x, s_max, prompt=1, step=None):
    """Prefill ``prompt`` tokens, then one token at a time; returns the outputs and the cache."""
    b, t = x.shape[:2]
    cache = tf.zeros((b, 2, s_max, layer._cache_heads, layer._cache_head_dim))
    outputs = []
    out, cache = layer(x[:, :prompt], x[:, :prompt], cache=cache, cache_update_index=0,
                       attention_mask=compute_causal_mask(b, s_max, prompt, 0))
    outputs.append(out)
    for i in range(prompt, t):
        if step is None:
            out, cache = layer(x[:, i:i + 1], x[:, i:i + 1], cache=cache, cache_update_index=i,
                               attention_mask=compute_causal_mask(b, s_max, 1, i))
        else:
            out, cache = step(x[:, i:i + 1], cache, tf.constant(i))
        outputs.append(out)
    return np.concatenate([np.asarray(o) for o in outputs], axis=1), cache


CACHED = {
    "mha": lambda: CachedMultiHeadAttention(num_heads=4, key_dim=3),
    "gqa": lambda: CachedGroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2),
    "mqa_gated_window": lambda: CachedGroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=1,
                                                          use_gate=True, sliding_window=3),
}


@pytest.mark.parametrize("kind", CACHED)
def test_cached_decoding_equals_full_causal_attention(kind):
    x = f32(2, 7, 8, seed=0)
    layer = randomize(built(CACHED[kind](), x, x), seed=1)
    full = np.asarray(causal_pass(layer, x))
    got, cache = decode(layer, x, s_max=10, prompt=3)
    assert_float32_close(got, full, DECODE_ULPS, what="cached decoding")
    print(f"{kind}: cached decoding vs one causal pass {eps_units(got, full):.2f} eps "
          f"(max |diff| {np.abs(got - full).max():.2g})")
    # The cache holds the projected keys and values of the 7 tokens, and zeros after them.
    k, v = layer._project_key_value(x, x)
    cache = np.asarray(cache)
    assert_float32_close(cache[:, 0, :7], np.asarray(k), DECODE_ULPS)
    assert_float32_close(cache[:, 1, :7], np.asarray(v), DECODE_ULPS)
    np.testing.assert_array_equal(cache[:, :, 7:], 0.0)


@pytest.mark.parametrize("kind", ["mha", "mqa_gated_window"])
def test_cached_decoding_compiles_once_with_xla_and_a_tensor_index(kind):
    x = f32(2, 6, 8, seed=2)
    layer = randomize(built(CACHED[kind](), x, x), seed=3)
    b, s_max = 2, 8

    @tf.function(jit_compile=True)
    def step(x_t, cache, index):
        return layer(x_t, x_t, cache=cache, cache_update_index=index,
                     attention_mask=compute_causal_mask(b, s_max, 1, index))

    got, _ = decode(layer, x, s_max, prompt=1, step=step)
    assert step.experimental_get_tracing_count() == 1        # one compiled step for every position
    full = np.asarray(causal_pass(layer, x))
    assert_float32_close(got, full, XLA_ULPS, what="XLA decoding")
    print(f"{kind}: XLA cached decoding vs eager causal pass {eps_units(got, full):.2f} eps")


def test_cached_layers_have_the_weights_of_their_parents():
    x = f32(2, 4, 8, seed=0)
    mha = randomize(built(MultiHeadAttention(2, 4), x, x), seed=1)
    cached = built(CachedMultiHeadAttention(2, 4), x, x)
    assert [w.name for w in cached.weights] == [w.name for w in mha.weights]
    cached.set_weights(mha.get_weights())
    mask = visible_mask(2, 4, 4, seed=2)
    assert_float32_close(cached(x, x, attention_mask=mask, return_attention_scores=True),
                         mha(x, x, attention_mask=mask, return_attention_scores=True), EXPLICIT_ULPS)
    keras_mha = built(keras.layers.MultiHeadAttention(2, 4), x, x)
    cached.set_weights(keras_mha.get_weights())             # Keras's layout too
    gqa = randomize(built(GroupQueryAttention(4, 4, 2, use_gate=True), x, x), seed=3)
    cached_gqa = built(CachedGroupQueryAttention(4, 4, 2, use_gate=True), x, x)
    cached_gqa.set_weights(gqa.get_weights())
    assert_float32_close(cached_gqa(x, x, attention_mask=mask), gqa(x, x, attention_mask=mask), EXPLICIT_ULPS)


def test_cached_mha_with_gate_window_and_output_axes_decodes_like_its_parent():
    # The parent's features that make sense with a cache: the cached layer decodes one token
    # at a time what MultiHeadAttention computes in one causal pass.
    x = f32(2, 6, 8, seed=0)
    kwargs = dict(num_heads=2, key_dim=4, use_gate=True, sliding_window=3, output_shape=(2, 5))
    parent = randomize(built(MultiHeadAttention(**kwargs), x, x), seed=1)
    cached = built(CachedMultiHeadAttention(**kwargs), x, x)
    cached.set_weights(parent.get_weights())
    got, _ = decode(cached, x, s_max=8, prompt=2)
    assert got.shape == (2, 6, 2, 5)
    assert_float32_close(got, np.asarray(parent(x, x, use_causal_mask=True)), DECODE_ULPS)
    with pytest.raises(ValueError, match="`attention_axes`"):
        CachedMultiHeadAttention(2, 4, attention_axes=(1, 2))


def test_cached_call_returns_what_keras_hub_returns():
    x = f32(2, 3, 8, seed=0)
    layer = built(CachedGroupQueryAttention(4, 4, 2), x, x)
    cache = tf.zeros((2, 2, 5, 2, 4))
    assert not isinstance(layer(x, x), tuple)
    out, scores = layer(x, x, return_attention_scores=True)
    assert scores.shape == (2, 4, 3, 3)
    out, cache_out = layer(x, x, cache=cache, cache_update_index=0)
    assert cache_out.shape == cache.shape
    out, scores, cache_out = layer(x, x, cache=cache, cache_update_index=1, return_attention_scores=True)
    assert scores.shape == (2, 4, 3, 5) and cache_out.shape == cache.shape


def test_a_static_cache_is_read_as_it_is():
    # cache_update_index=None: the keys and values come from the cache (e.g. an encoder's, computed
    # once), whatever `value` is.
    x, memory = f32(2, 3, 8, seed=0), f32(2, 5, 8, seed=1)
    layer = randomize(built(CachedMultiHeadAttention(2, 4), x, memory), seed=2)
    k, v = layer._project_key_value(memory, memory)
    cache = tf.stack([k, v], axis=1)                                   # (B, 2, S, N, H)
    out, same_cache = layer(x, tf.zeros_like(x), cache=cache)
    np.testing.assert_array_equal(np.asarray(same_cache), np.asarray(cache))
    assert_float32_close(out, layer(x, memory), DECODE_ULPS)


@pytest.mark.parametrize("cache_shape, index, words", [
    ((2, 2, 6, 3, 4), 0, ["`cache` has shape (2, 2, 6, 3, 4)", "(2, 2, max_length, 2, 4)"]),
    ((2, 2, 6, 2, 5), 0, ["`cache` has shape (2, 2, 6, 2, 5)"]),
    ((3, 2, 6, 2, 4), 0, ["`cache` has shape (3, 2, 6, 2, 4)", "`query` of shape (2, 1, 8)"]),
    ((2, 6, 2, 4), 0, ["`cache` has shape (2, 6, 2, 4)"]),
    ((2, 2, 6, 2, 4), 6, ["`cache_update_index`=6", "6 slots", "(2, 2, 6, 2, 4)"]),
])
def test_cache_of_the_wrong_shape_is_rejected_with_its_shape(cache_shape, index, words):
    x = f32(2, 1, 8, seed=0)
    layer = CachedGroupQueryAttention(4, 4, 2)
    with pytest.raises(ValueError) as error:
        layer(x, x, cache=tf.zeros(cache_shape), cache_update_index=index)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("cls, kwargs", [
    (CachedMultiHeadAttention, dict(num_heads=2, key_dim=4, dropout=0.1, use_bias=False, seed=3,
                                    kernel_regularizer="l2", dtype="mixed_float16", name="cached")),
    (CachedGroupQueryAttention, dict(head_dim=4, num_query_heads=4, num_key_value_heads=1, use_gate=True,
                                     sliding_window=2, bias_constraint="non_neg", seed=3, name="cached")),
])
def test_cached_layers_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    json.dumps(config)
    clone = cls.from_config(config)
    assert type(clone) is cls and clone.get_config() == config
    x = f32(2, 3, 8, seed=0)
    built(layer, x, x)
    built(clone, x, x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x, x), np.float32), np.asarray(layer(x, x), np.float32))


def test_cache_arguments_are_checked():
    x = f32(2, 1, 8, seed=0)
    message = r"`attention_mask` has shape \(2, 1, 5\).*S = 6.*`cache` \(2, 2, 6, 2, 4\)"
    with pytest.raises(ValueError, match=message):
        CachedMultiHeadAttention(2, 4)(x, x, cache=tf.zeros((2, 2, 6, 2, 4)), cache_update_index=0,
                                       attention_mask=np.ones((2, 1, 5), bool))
    with pytest.raises(ValueError, match="`cache_update_index` should not be set if `cache` is `None`"):
        CachedMultiHeadAttention(2, 4)(x, x, cache_update_index=0)
    with pytest.raises(ValueError, match="`value_dim`=3 must equal `key_dim`=4"):
        CachedMultiHeadAttention(2, 4, value_dim=3)


# ================================================================ RotaryEmbedding


@pytest.mark.parametrize("shape, kwargs, call", [
    ((2, 9, 8), {}, {}),
    ((2, 9, 3, 6), {}, {"start_index": 5}),
    ((2, 9, 4), {"max_wavelength": 100, "scaling_factor": 4.0}, {"positions": np.arange(9) * 2 + 1}),
    ((2, 9, 4), {}, {"positions": np.stack([np.arange(9), np.arange(9) + 20])}),
])
def test_rope_layer_equals_the_numpy_reference(shape, kwargs, call):
    x = f32(*shape, seed=0)
    got = np.asarray(RotaryEmbedding(**kwargs)(x, **call))
    positions = call.get("positions", np.arange(shape[1]) + call.get("start_index", 0)).astype(np.float64)
    positions = positions / kwargs.get("scaling_factor", 1.0)
    if positions.ndim == 2:                                   # (B, T) -> broadcast over the heads
        positions = positions.reshape(positions.shape + (1,) * (len(shape) - 3))
    # The reference works on (..., T, D): move T next to D for head-shaped inputs.
    ref_x = np.moveaxis(x.astype(np.float64), 1, -2)
    ref_positions = np.moveaxis(positions, 1, -1) if positions.ndim > 1 else positions
    want = np.moveaxis(A.rotary_embedding(ref_x, ref_positions, float(kwargs.get("max_wavelength", 10000))), -2, 1)
    ulps = rope_ulps(float(np.abs(positions).max()))
    assert_float32_close(got, want, ulps, what="RoPE layer vs NumPy")
    print(f"RoPE {shape} {call.keys()}: {eps_units(got, want):.1f} eps (bound {ulps:.0f})")


def test_rope_layer_axes_and_start_index():
    # The same numbers in other layouts or slices; vectorised sin/cos may round an element of
    # an array of another size differently (SIMD body vs tail), hence EXPLICIT_ULPS, not ==.
    x = f32(2, 5, 3, 4, seed=1)                                # (B, T, N, H)
    layer = RotaryEmbedding()
    full = np.asarray(layer(x))
    # Features first, sequence last: the same numbers, transposed.
    moved = RotaryEmbedding(sequence_axis=-1, feature_axis=1)(np.moveaxis(x, (1, 3), (3, 1)))
    assert_float32_close(np.moveaxis(np.asarray(moved), (3, 1), (1, 3)), full)
    # start_index = positions offset, as when decoding token i with a cache.
    assert_float32_close(np.asarray(layer(x[:, 2:3], start_index=2)), full[:, 2:3])
    assert_float32_close(np.asarray(layer(x, positions=np.arange(5) + 4)), np.asarray(layer(x, start_index=4)))


def test_rope_layer_errors_and_config():
    x = f32(2, 5, 6, seed=2)
    with pytest.raises(ValueError, match=r"`inputs` has shape \(2, 5, 7\).*even"):
        RotaryEmbedding()(f32(2, 5, 7, seed=0))
    with pytest.raises(ValueError, match="`sequence_axis`=2 and `feature_axis`=-1"):
        RotaryEmbedding(sequence_axis=2)(x)
    with pytest.raises(ValueError, match=r"`positions` has shape \(4,\)"):
        RotaryEmbedding()(x, positions=np.arange(4))
    for kwargs, name in [({"max_wavelength": 0}, "max_wavelength"), ({"scaling_factor": -1.0}, "scaling_factor"),
                         ({"sequence_axis": 1.5}, "sequence_axis")]:
        with pytest.raises(ValueError, match=f"`{name}`"):
            RotaryEmbedding(**kwargs)
    layer = RotaryEmbedding(max_wavelength=500, scaling_factor=2.0, sequence_axis=2, feature_axis=1,
                            dtype="mixed_float16", name="rope")
    config = layer.get_config()
    json.dumps(config)
    assert RotaryEmbedding.from_config(config).get_config() == config


# ================================================================ every new layer: precision, XLA


LAYERS = {
    "gqa": lambda **kw: GroupQueryAttention(4, 4, 2, use_gate=True, sliding_window=3, **kw),
    "cached_mha": lambda **kw: CachedMultiHeadAttention(2, 4, **kw),
    "cached_gqa": lambda **kw: CachedGroupQueryAttention(4, 4, 1, **kw),
    "rope": lambda **kw: RotaryEmbedding(**kw),
}


def forward(layer, x, mask, cache=True):
    if isinstance(layer, RotaryEmbedding):
        return layer(x, start_index=3)
    if cache and isinstance(layer, (CachedMultiHeadAttention, CachedGroupQueryAttention)):
        b, t = x.shape[:2]
        cache = tf.zeros((b, 2, t + 2, layer._cache_heads, layer._cache_head_dim), dtype=layer.compute_dtype)
        mask = tf.logical_and(mask, compute_causal_mask(b, t + 2, t, 0))
        return layer(x, x, cache=cache, cache_update_index=0, attention_mask=mask)[0]
    return layer(x, x, attention_mask=mask)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_has_no_nan_with_fully_masked_rows_in_xla_and_gradients(kind, policy):
    x = tf.constant(f32(2, 5, 8, seed=0))
    mask = tf.constant(np.broadcast_to(np.arange(7) < 5, (2, 5, 7)).copy())
    mask = tf.tensor_scatter_nd_update(mask, [[0]], tf.zeros((1, 5, 7), tf.bool))   # example 0 sees nothing
    mask = mask[..., :5] if kind == "gqa" else mask
    layer = LAYERS[kind](dtype=policy)
    reference = LAYERS[kind]()
    forward(reference, x, mask)
    forward(layer, x, mask)
    randomize(reference, seed=1, scale=0.3)
    layer.set_weights(reference.get_weights())
    want = np.asarray(forward(reference, x, mask))

    @tf.function(jit_compile=True)
    def compiled(a):
        return forward(layer, a, mask)

    @tf.function
    def gradients(a):      # a cache is for inference: TensorFlow has no gradient for its update
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = tf.reduce_sum(tf.cast(forward(layer, a, mask[..., :5], cache=False), "float32") ** 2)
        return tape.gradient(loss, [a] + layer.trainable_weights)

    compute = policy.split("_")[1]
    for out in (forward(layer, x, mask), compiled(x)):
        assert keras.backend.standardize_dtype(out.dtype) == compute
        out = np.asarray(tf.cast(out, "float32"))
        assert np.isfinite(out).all()
        # Rounded to the compute dtype at each step (see test_layers.py): within 4 of its eps.
        eps = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[compute]
        assert np.abs(out - want).max() <= 4 * eps * np.abs(want).max()
        if kind != "rope":     # example 0 sees no key: zero context, output = output bias
            bias = np.asarray(layer.weights[-1], np.float32)
            np.testing.assert_allclose(out[0], np.broadcast_to(bias, out[0].shape), atol=eps * np.abs(bias).max())
    assert {w.dtype for w in layer.weights} <= {"float32"}
    for g in gradients(x):
        assert np.isfinite(np.asarray(g, np.float32)).all()


@pytest.mark.parametrize("kind", LAYERS)
def test_xla_and_tf_function_equal_eager(kind):
    x = tf.constant(f32(2, 5, 8, seed=3))
    mask = tf.constant(visible_mask(2, 5, 7 if kind.startswith("cached") else 5, seed=4))
    layer = LAYERS[kind]()
    forward(layer, x, mask)
    randomize(layer, seed=5)
    eager = np.asarray(forward(layer, x, mask))
    for jit in (False, True):
        got = tf.function(lambda a: forward(layer, a, mask), jit_compile=jit)(x)
        assert_float32_close(np.asarray(got), eager, XLA_ULPS, what=f"jit_compile={jit}")


# ================================================================ saving, distribution


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_keras_file_with_every_new_layer_loads_in_a_fresh_process(tmp_path):
    inputs = keras.Input((6, 8))
    h = RotaryEmbedding(max_wavelength=100)(inputs)
    h = GroupQueryAttention(4, 4, 2, use_gate=True, sliding_window=3, dropout=0.1, seed=1)(
        h, h, use_causal_mask=True)
    h = CachedMultiHeadAttention(2, 4)(h, inputs)
    h = CachedGroupQueryAttention(4, 4, 1, sliding_window=4)(h, h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    for layer in model.layers:
        if layer.weights:
            randomize(layer, seed=len(layer.name), scale=0.3)
    x = f32(3, 6, 8, seed=0)
    path = tmp_path / "modern.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import numpy as np
        import attention_lessons.modern  # registers the classes; imported first: it imports
                                         # layers, which imports it back (a cycle that must work)
        import keras
        from attention_lessons.layers import GroupQueryAttention   # re-exported
        assert GroupQueryAttention is attention_lessons.modern.GroupQueryAttention
        model = keras.saving.load_model({str(path)!r})
        d = {str(tmp_path)!r}
        np.save(d + "/loaded.npy", np.asarray(model(np.load(d + "/x.npy"))))
        print(sorted(type(layer).__name__ for layer in model.layers))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # hangs only
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("RotaryEmbedding", "GroupQueryAttention", "CachedMultiHeadAttention",
                 "CachedGroupQueryAttention"):
        assert f"'{name}'" in done.stdout
    # Same library, machine and environment, same operations in the same order: bit for bit.
    np.testing.assert_array_equal(np.load(tmp_path / "loaded.npy"), np.asarray(model(x)))


DISTRIBUTED = textwrap.dedent("""
    import json
    import numpy as np
    from attention_lessons.device import import_tensorflow

    tf = import_tensorflow()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from attention_lessons.modern import (CachedGroupQueryAttention, CachedMultiHeadAttention,
                                          GroupQueryAttention, RotaryEmbedding)

    B, T, D = 8, 6, 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, D)).astype("float32")
    y = rng.normal(size=(B, 3)).astype("float32")

    def make_model():
        inputs = keras.Input((T, D))
        h = RotaryEmbedding()(inputs)
        h = GroupQueryAttention(4, 4, 2, use_gate=True, sliding_window=3)(h, h, use_causal_mask=True)
        h = CachedGroupQueryAttention(4, 2, 1)(h, inputs)
        h = CachedMultiHeadAttention(2, 4)(h, h)
        h = keras.layers.GlobalAveragePooling1D()(h)
        model = keras.Model(inputs, keras.layers.Dense(3)(h))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    start = [np.random.default_rng(1).normal(scale=0.3, size=w.shape).astype("float32")
             for w in make_model().get_weights()]

    def one_step(strategy):
        with strategy.scope():
            model = make_model()
            model.set_weights(start)
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)   # one batch
        return model.get_weights()

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = tf.distribute.MirroredStrategy(devices)
    after_mirrored = one_step(mirrored)
    after_single = one_step(tf.distribute.OneDeviceStrategy(devices[0]))
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(after_mirrored, after_single)),
        "max_update": max(float(np.abs(a - b).max()) for a, b in zip(after_single, start)),
    }))
""")


def test_one_sgd_step_on_two_mirrored_cpus_equals_one_on_a_single_device():
    done = subprocess.run([sys.executable, "-c", DISTRIBUTED], capture_output=True, text=True, timeout=600)  # hangs only
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["replicas"] == 2
    assert result["max_update"] > 1e-3
    # Each replica computes half the batch and the gradients are summed across them: the same
    # float32 sums in another order. The update is 0.1 × a gradient of size ~1: ~1e-7 apart
    # (the same bound as test_layers_distributed.py).
    assert result["max_difference"] < 1e-5
