"""Our Keras layers on their own: arguments, weights, dropout, mixed precision, saving,
positional embeddings and Transformer blocks. (Equivalence with Keras's own layer is in
test_layers_vs_keras.py.)"""

from __future__ import annotations

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
from attention_lessons.layers import (  # noqa: E402
    MultiHeadAttention,
    PositionalEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    from_keras,
)
from test_layers_vs_keras import EXPLICIT_ULPS, assert_float32_close  # noqa: E402  (the float32 tolerance)


def f32(*shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def built(layer, *inputs, **kwargs):
    layer(*inputs, **kwargs)
    return layer


def randomize(layer, seed, scale=0.5):
    """Random weights, biases included (they start at zero)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=scale, size=w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return layer


@pytest.fixture
def global_policy():
    """Set a global dtype policy for one test and always restore the previous one."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


# ----------------------------------------------------------------- constructor checks


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_heads=0, key_dim=4), "num_heads"),
    (dict(num_heads=2.0, key_dim=4), "num_heads"),
    (dict(num_heads=True, key_dim=4), "num_heads"),
    (dict(num_heads=2, key_dim=0), "key_dim"),
    (dict(num_heads=2, key_dim="4"), "key_dim"),
    (dict(num_heads=2, key_dim=4, value_dim=0), "value_dim"),
    (dict(num_heads=2, key_dim=4, dropout=1.0), "dropout"),
    (dict(num_heads=2, key_dim=4, dropout=-0.1), "dropout"),
    (dict(num_heads=2, key_dim=4, output_shape=(2, 0)), "output_shape"),   # (2, 3) is fine: two output axes
    (dict(num_heads=2, key_dim=4, output_shape=0), "output_shape"),
    (dict(num_heads=2, key_dim=4, seed=-1), "seed"),
    (dict(num_heads=2, key_dim=4, use_bias="yes"), "use_bias"),
])
def test_constructor_rejects_bad_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        MultiHeadAttention(**kwargs)


def test_inputs_of_rank_below_3_are_rejected():
    # Rank 4 and more attend over attention_axes (tests/test_layers_complete.py).
    with pytest.raises(ValueError, match=r"`query` must have shape \(batch, time, features\)"):
        MultiHeadAttention(2, 4)(f32(2, 8, seed=0), f32(2, 8, seed=0))


def test_attention_mask_of_wrong_shape_is_rejected():
    x = f32(2, 5, 8, seed=0)
    with pytest.raises(ValueError, match=r"`attention_mask` has shape \(2, 4, 5\)"):
        MultiHeadAttention(2, 4)(x, x, attention_mask=np.ones((2, 4, 5), bool))


# ------------------------------------------------------------------------- weights


def test_weight_order_and_shapes_equal_keras():
    query, key, value = f32(2, 3, 6, seed=0), f32(2, 7, 5, seed=1), f32(2, 7, 4, seed=2)
    for kwargs in (dict(), dict(value_dim=2, output_shape=9), dict(use_bias=False)):
        ours = built(MultiHeadAttention(3, 5, **kwargs), query, value, key)
        theirs = built(keras.layers.MultiHeadAttention(3, 5, **kwargs), query, value, key)
        assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]
        ours.set_weights(theirs.get_weights())       # the point of the shared layout


def test_weights_are_named_like_the_numpy_reference():
    x = f32(2, 3, 8, seed=0)
    layer = built(MultiHeadAttention(2, 4), x, x)
    assert [w.name for w in layer.weights] == list(A.PARAM_NAMES)


@pytest.mark.parametrize("kernel_initializer", [
    "glorot_uniform", keras.initializers.GlorotUniform(seed=3), keras.initializers.RandomNormal(),
])
@pytest.mark.parametrize("seed", [None, 5])
def test_query_key_value_kernels_start_different(kernel_initializer, seed):
    # One stateless initialiser instance used three times would give W_Q == W_K == W_V.
    x = f32(2, 3, 8, seed=0)
    layer = built(MultiHeadAttention(2, 4, kernel_initializer=kernel_initializer, seed=seed), x, x)
    q, k, v, out = (layer.query_kernel.numpy(), layer.key_kernel.numpy(),
                    layer.value_kernel.numpy(), layer.output_kernel.numpy())
    assert not np.array_equal(q, k) and not np.array_equal(q, v) and not np.array_equal(k, v)
    assert not np.array_equal(q[:, 0], q[:, 1])      # the heads differ too
    assert not np.array_equal(q.ravel()[:8], out.ravel()[:8])


def test_seed_makes_initial_weights_reproducible():
    x = f32(2, 3, 8, seed=0)
    a = built(MultiHeadAttention(2, 4, seed=7), x, x).get_weights()
    b = built(MultiHeadAttention(2, 4, seed=7), x, x).get_weights()
    c = built(MultiHeadAttention(2, 4, seed=8), x, x).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a[0], c[0])


def test_kernels_are_initialised_as_2d_matrices():
    # Glorot for a D x (N·H) matrix: limit sqrt(6 / (D + N·H)). Reading (D, N, H) as a
    # convolution kernel would give a limit ~sqrt(D)/2 times smaller.
    d, n, h = 64, 8, 8
    x = f32(1, 2, d, seed=0)
    layer = built(MultiHeadAttention(n, h, seed=1), x, x)
    limit = np.sqrt(6.0 / (d + n * h))
    for kernel in (layer.query_kernel, layer.output_kernel):
        k = np.abs(kernel.numpy())
        assert k.max() <= limit and k.max() > 0.95 * limit


def test_copy_weights_from_rejects_incompatible_keras_layer():
    x = f32(2, 3, 8, seed=0)
    theirs = built(keras.layers.MultiHeadAttention(4, 4), x, x)
    with pytest.raises(ValueError, match="Cannot copy weights"):
        MultiHeadAttention(2, 4).copy_weights_from(theirs)
    with pytest.raises(ValueError, match="not built"):
        MultiHeadAttention(2, 4).copy_weights_from(keras.layers.MultiHeadAttention(2, 4))


def test_from_keras_copies_configuration_and_weights():
    x = f32(2, 3, 8, seed=0)
    theirs = randomize(built(keras.layers.MultiHeadAttention(2, 3, value_dim=5, dropout=0.2,
                                                             output_shape=4, seed=9), x, x), seed=1)
    ours = from_keras(theirs)
    assert (ours.num_heads, ours.key_dim, ours.value_dim, ours.dropout, ours.seed) == (2, 3, 5, 0.2, 9)
    # dropout > 0: Keras takes its explicit path; equal up to float32 rounding (other kernels).
    assert_float32_close(ours(x, x), theirs(x, x), EXPLICIT_ULPS)


def test_explicit_query_mask_is_honoured_and_kept_on_the_output():
    # Keras's own layer ignores an explicit query_mask= (it reads the tensor's Keras mask).
    x = f32(2, 4, 8, seed=0)
    query_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    layer = built(MultiHeadAttention(2, 4), x, x)
    out, scores = layer(x, x, query_mask=query_mask, return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(out._keras_mask), query_mask)
    np.testing.assert_array_equal(np.asarray(scores)[0, :, 2:], 0.0)   # padded queries see nothing
    assert (np.asarray(scores)[1] > 0).all()


# ------------------------------------------------------------------------- dropout


def dropout_probe(rate, copies):
    """A layer whose output *is* its attention weights after dropout, and its inputs.

    One head; the values are one-hot key positions (value input = identity, value kernel =
    identity) and the output kernel is the identity, so output[b, t, s] = weights[b, 0, t, s].
    """
    t, s, d = 3, 4, 6
    query = np.broadcast_to(f32(1, t, d, seed=0), (copies, t, d))
    key = np.broadcast_to(f32(1, s, d, seed=1), (copies, s, d))
    value = np.broadcast_to(np.eye(s, dtype=np.float32), (copies, s, s))
    layer = built(MultiHeadAttention(1, 2, value_dim=s, output_shape=s, dropout=rate, seed=3),
                  query, value, key)
    layer.query_kernel.assign(f32(d, 1, 2, seed=2))
    layer.value_kernel.assign(np.eye(s, dtype=np.float32)[:, None, :])     # (S, 1, S)
    layer.output_kernel.assign(np.eye(s, dtype=np.float32)[None])          # (1, S, S)
    return layer, (query, value, key)


def test_dropout_is_off_unless_training():
    layer, inputs = dropout_probe(rate=0.5, copies=2)
    out, scores = layer(*inputs, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(scores)[:, 0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer(*inputs, training=False)), np.asarray(out))


def test_dropout_in_training_drops_weights_but_keeps_their_expectation():
    rate, copies = 0.5, 4000
    layer, inputs = dropout_probe(rate, copies)
    weights = np.asarray(layer(*inputs, return_attention_scores=True)[1])[:, 0]   # (copies, T, S)
    dropped = np.asarray(layer(*inputs, training=True))
    kept = dropped != 0
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(dropped[kept], (weights / (1 - rate))[kept], rtol=1e-5)
    assert np.abs(dropped.sum(-1) - 1.0).max() > 0.1            # rows no longer sum to 1
    np.testing.assert_allclose(dropped.mean(0), weights[0], atol=0.03)   # ... on average they do


# ----------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_variables_and_stays_accurate(policy, global_policy):
    query, value = f32(2, 6, 16, seed=0), f32(2, 7, 16, seed=1)
    mask = np.random.default_rng(2).random((2, 6, 7)) < 0.6
    mask[0, 3] = False                                           # a fully masked row
    reference = randomize(built(MultiHeadAttention(4, 8), query, value), seed=3, scale=0.3)
    want, want_scores = reference(query, value, attention_mask=mask, return_attention_scores=True)

    global_policy(policy)                                        # restored by the fixture
    layer = built(MultiHeadAttention(4, 8), query, value)
    layer.set_weights(reference.get_weights())
    out, scores = layer(query, value, attention_mask=mask, return_attention_scores=True)

    compute = policy.split("_")[1]
    assert {v.dtype for v in layer.weights} == {"float32"}
    assert out.dtype == compute and scores.dtype == compute
    out, scores = np.asarray(out, np.float32), np.asarray(scores, np.float32)
    assert np.isfinite(out).all() and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores[0, :, 3], 0.0)
    # The inputs, the projections, the logits, the weights and the context are each rounded
    # to the compute dtype (eps: float16 2**-10 ≈ 9.8e-4, bfloat16 2**-7 ≈ 7.8e-3), and the
    # softmax turns a logit's rounding into a relative change of the weights. Bound: 4 eps of
    # the compute dtype relative to the largest output. Measured (normal / scripts/portable.py,
    # whose Eigen kernels round bfloat16 products more): float16 0.6 / 0.6 eps, bfloat16
    # 0.7 / 1.8 eps; keras.layers.MultiHeadAttention itself: float16 0.6 / 0.9, bfloat16 0.7 / 1.7.
    eps = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[compute]
    error = np.abs(out - np.asarray(want)).max() / np.abs(np.asarray(want)).max()
    print(f"{policy}: max |error| / max |output| = {error:.1e} = {error / eps:.1f} eps")
    assert error < 4 * eps


def test_mixed_float16_softmax_runs_in_float32():
    # Inputs, kernels and 1/sqrt(4) are exact in float16, so the float16 logits are exact and
    # only the softmax rounds. In float32 and rounded once to float16 each weight is within
    # half a float16 ulp (2**-11 relative); a float16 softmax on CPU is several ulps off.
    t, d = 16, 4
    x = np.random.default_rng(0).integers(-6, 7, size=(1, t, d)).astype(np.float32) / 4
    layer = built(MultiHeadAttention(1, d, dtype="mixed_float16"), x, x)
    identity = np.eye(d, dtype=np.float32)[:, None, :]                   # (D, 1, H)
    layer.query_kernel.assign(identity)
    layer.key_kernel.assign(identity)
    _, scores = layer(x, x, return_attention_scores=True)
    logits = np.einsum("td,sd->ts", x[0].astype(np.float64), x[0].astype(np.float64)) / 2
    exact = np.exp(logits - logits.max(-1, keepdims=True))
    exact /= exact.sum(-1, keepdims=True)
    error = np.abs(np.asarray(scores, np.float64)[0, 0] - exact) / exact
    assert error.max() <= 2.0 ** -11 * 1.01, error.max()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_fully_masked_rows_have_no_nan_in_xla_nor_in_gradients(policy):
    # A -1e9 fill in float16 is -inf; a row of -inf gives NaN (masked to 0 in the forward
    # pass, but the gradient stays NaN).
    x = tf.constant(f32(2, 5, 8, seed=0))
    mask = np.ones((2, 5, 5), bool)
    mask[0] = False                                              # example 0 sees nothing
    layer = built(MultiHeadAttention(2, 4, dtype=policy), x, x)

    def forward(a):
        return layer(a, a, attention_mask=mask, return_attention_scores=True)

    @tf.function
    def gradients(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = tf.reduce_sum(tf.cast(forward(a)[0], "float32") ** 2)
        return tape.gradient(loss, [a] + layer.trainable_weights)

    out, scores = tf.function(forward, jit_compile=True)(x)
    assert np.isfinite(np.asarray(out, np.float32)).all()
    np.testing.assert_array_equal(np.asarray(scores, np.float32)[0], 0.0)
    for g in gradients(x):
        assert np.isfinite(np.asarray(g, np.float32)).all()


# ------------------------------------------------------------------------- config


def test_get_config_round_trip():
    # Keras < 3.14 (Colab's 3.13) cannot apply an activity regularizer to mixed-precision outputs
    # (keras.layers.MultiHeadAttention fails the same way: a float32 * float16 Mul), so the
    # activity regularizer is round-tripped only where Keras can run it.
    policy = "mixed_bfloat16"
    recent = tuple(int(p) for p in keras.__version__.split(".")[:2]) >= (3, 14)
    extra = {"activity_regularizer": "l1"} if recent else {}
    layer = MultiHeadAttention(3, 4, value_dim=2, dropout=0.25, use_bias=False, output_shape=(5,),
                               kernel_initializer=keras.initializers.HeNormal(seed=1),
                               kernel_regularizer="l2", bias_constraint="non_neg", seed=11, dtype=policy,
                               name="mha", **extra)
    config = layer.get_config()
    json.dumps(config)                                           # plain JSON
    clone = MultiHeadAttention.from_config(config)
    assert clone.get_config() == config
    assert clone.dtype_policy.name == policy and clone.name == "mha"
    assert isinstance(clone.kernel_initializer, keras.initializers.HeNormal)
    x = f32(2, 3, 6, seed=0)
    built(layer, x, x)
    built(clone, x, x)
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    np.testing.assert_array_equal(np.asarray(clone(x, x), np.float32), np.asarray(layer(x, x), np.float32))


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras + NumPy 2.4
def test_keras_file_loads_in_a_fresh_process_with_identical_outputs(tmp_path):
    # One model with every layer of the module, saved here and loaded by a new interpreter
    # that has only imported attention_lessons.layers (which registers the classes).
    tokens_in = keras.Input((6,), dtype="int32")
    targets_in = keras.Input((5,), dtype="int32")
    encoded = PositionalEmbedding(20, 8, 16, positions="sinusoidal", mask_zero=True)(tokens_in)
    encoded = TransformerEncoderBlock(16, 2, 24, dropout=0.1)(encoded)
    decoded = PositionalEmbedding(20, 8, 16, positions="learned", mask_zero=True)(targets_in)
    decoded = TransformerDecoderBlock(16, 2, 24, norm_first=False)(decoded, encoded)
    attended = MultiHeadAttention(2, 8, value_dim=4, dropout=0.2, seed=1)(decoded, encoded)
    model = keras.Model([tokens_in, targets_in], keras.layers.Dense(3)(attended))
    for layer in model.layers:
        if layer.weights:
            randomize(layer, seed=len(layer.name), scale=0.2)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, size=(3, 6))
    tokens[0, 4:] = 0
    targets = rng.integers(1, 20, size=(3, 5))
    targets[1, 3:] = 0
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "tokens.npy", tokens)
    np.save(tmp_path / "targets.npy", targets)
    code = textwrap.dedent(f"""
        import numpy as np
        import attention_lessons.layers  # noqa: F401  (registers the classes)
        import keras
        model = keras.saving.load_model({str(path)!r})
        d = {str(tmp_path)!r}
        out = model([np.load(d + "/tokens.npy"), np.load(d + "/targets.npy")])
        np.save(d + "/loaded.npy", np.asarray(out))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # hangs only
    assert done.returncode == 0, done.stderr[-3000:]
    # The same model, library, machine and environment: the same operations in the same order,
    # so bit for bit (a portable run passes the same environment on to the child).
    np.testing.assert_array_equal(np.load(tmp_path / "loaded.npy"), np.asarray(model([tokens, targets])))


# ------------------------------------------------------------- positional embedding


def test_sinusoidal_positions_are_added_to_token_embeddings():
    tokens = np.array([[3, 3, 3, 3, 3]])
    layer = built(PositionalEmbedding(10, 8, 6, positions="sinusoidal"), tokens)
    out = np.asarray(layer(tokens))
    token_vector = layer.token_embedding.embeddings.numpy()[3]
    np.testing.assert_allclose(out[0] - token_vector, A.sinusoidal_positions(5, 6), atol=1e-6)
    assert len(layer.trainable_weights) == 1                      # only the token table


def test_learned_positions_make_equal_tokens_differ_by_position():
    tokens = np.array([[3, 3, 3]])
    layer = built(PositionalEmbedding(10, 4, 6), tokens)
    out = np.asarray(layer(tokens))
    expected = layer.token_embedding.embeddings.numpy()[3] + layer.position_embedding.embeddings.numpy()[:3]
    np.testing.assert_allclose(out[0], expected, atol=1e-7)
    assert not np.allclose(out[0, 0], out[0, 1])


def test_scale_embeddings_multiplies_tokens_by_sqrt_embed_dim():
    tokens = np.array([[1, 2]])
    plain = built(PositionalEmbedding(5, 2, 16, positions="sinusoidal"), tokens)
    scaled = built(PositionalEmbedding(5, 2, 16, positions="sinusoidal", scale_embeddings=True), tokens)
    scaled.set_weights(plain.get_weights())
    pe = A.sinusoidal_positions(2, 16)
    np.testing.assert_allclose(np.asarray(scaled(tokens)) - pe, 4.0 * (np.asarray(plain(tokens)) - pe),
                               atol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_positional_embedding_propagates_the_padding_mask(positions):
    tokens = np.array([[4, 2, 0, 0], [1, 0, 0, 0]])
    out = PositionalEmbedding(10, 4, 8, positions=positions, mask_zero=True)(tokens)
    np.testing.assert_array_equal(np.asarray(out._keras_mask), tokens != 0)
    assert getattr(PositionalEmbedding(10, 4, 8, positions=positions)(tokens), "_keras_mask", None) is None


def test_positional_embedding_rejects_bad_arguments_and_long_inputs():
    with pytest.raises(ValueError, match="`positions`"):
        PositionalEmbedding(10, 4, 8, positions="rotary")
    with pytest.raises(ValueError, match="`embed_dim` must be even"):
        PositionalEmbedding(10, 4, 7, positions="sinusoidal")
    with pytest.raises(ValueError, match="`max_length`=4"):
        PositionalEmbedding(10, 4, 8)(np.ones((1, 5), int))


def test_positional_embedding_config_round_trip():
    layer = PositionalEmbedding(10, 4, 8, positions="sinusoidal", mask_zero=True, scale_embeddings=True)
    clone = PositionalEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# -------------------------------------------------------------- transformer blocks


def test_encoder_block_keeps_shape_and_returns_scores():
    x = f32(2, 5, 8, seed=0)
    block = TransformerEncoderBlock(8, 2, 16)
    out, scores = block(x, return_attention_scores=True)
    assert out.shape == (2, 5, 8) and scores.shape == (2, 2, 5, 5)


def test_decoder_block_keeps_shape_and_returns_both_scores():
    x, memory = f32(2, 4, 8, seed=0), f32(2, 6, 10, seed=1)      # encoder width may differ
    out, self_scores, cross_scores = TransformerDecoderBlock(8, 2, 16)(
        x, memory, return_attention_scores=True)
    assert out.shape == (2, 4, 8)
    assert self_scores.shape == (2, 2, 4, 4) and cross_scores.shape == (2, 2, 4, 6)
    np.testing.assert_array_equal(np.asarray(self_scores)[0, 0] > 0, A.causal_mask(4))


def test_decoder_block_is_causal():
    x, memory = f32(1, 6, 8, seed=0), f32(1, 5, 8, seed=1)
    block = TransformerDecoderBlock(8, 2, 16, dropout=0.0)
    before = np.asarray(block(x, memory))
    changed = x.copy()
    changed[0, 4] += 3.0                                          # a "future" token
    after = np.asarray(block(changed, memory))
    # Bit for bit on any machine: the same operations in the same order, and the future
    # token enters positions 0-3 only times a weight that is exactly 0.
    np.testing.assert_array_equal(after[0, :4], before[0, :4])
    assert not np.allclose(after[0, 4:], before[0, 4:])


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_norm", "post_norm"])
def test_encoder_block_ignores_padded_tokens(norm_first):
    x = f32(2, 5, 8, seed=0)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    block = TransformerEncoderBlock(8, 2, 16, norm_first=norm_first)
    before = np.asarray(block(x, mask=mask))
    changed = x.copy()
    changed[0, 3:] = f32(2, 8, seed=1)                            # garbage in the padding
    after = np.asarray(block(changed, mask=mask))
    np.testing.assert_allclose(after[0, :3], before[0, :3], atol=1e-6)
    assert not np.allclose(after[0, 3:], before[0, 3:])


def test_encoder_block_takes_the_padding_mask_from_an_embedding():
    tokens = np.array([[5, 6, 7, 0], [1, 2, 3, 4]])
    embed = PositionalEmbedding(10, 4, 8, mask_zero=True)
    block = TransformerEncoderBlock(8, 2, 16)
    out, scores = block(embed(tokens), return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(out._keras_mask), tokens != 0)
    scores = np.asarray(scores)
    np.testing.assert_array_equal(scores[0, :, :, 3], 0.0)       # nobody attends to padding
    assert (scores[1] > 0).all()                                  # nothing hidden without it


def test_decoder_block_ignores_padded_encoder_outputs():
    x, memory = f32(1, 3, 8, seed=0), f32(1, 5, 8, seed=1)
    memory_mask = np.array([[1, 1, 0, 0, 0]], bool)
    block = TransformerDecoderBlock(8, 2, 16)
    before = np.asarray(block(x, memory, encoder_outputs_mask=memory_mask))
    changed = memory.copy()
    changed[0, 2:] = f32(3, 8, seed=2)
    after = np.asarray(block(x, changed, encoder_outputs_mask=memory_mask))
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert not np.allclose(np.asarray(block(x, changed)), before)


def test_pre_norm_and_post_norm_differ():
    x = f32(2, 4, 8, seed=0)
    pre = TransformerEncoderBlock(8, 2, 16, norm_first=True)
    post = TransformerEncoderBlock(8, 2, 16, norm_first=False)
    pre(x)
    post(x)
    post.set_weights(pre.get_weights())
    out_post = np.asarray(post(x))
    assert not np.allclose(np.asarray(pre(x)), out_post)
    # Post-norm ends with a LayerNormalization: every position has mean 0, variance 1.
    np.testing.assert_allclose(out_post.mean(-1), 0.0, atol=1e-5)


def test_block_arguments_are_checked():
    with pytest.raises(ValueError, match="divisible by `num_heads`"):
        TransformerEncoderBlock(10, 3, 16)
    with pytest.raises(ValueError, match="`dropout`"):
        TransformerDecoderBlock(8, 2, 16, dropout=1.5)
    with pytest.raises(ValueError, match="embed_dim=8"):
        TransformerEncoderBlock(8, 2, 16)(f32(1, 3, 6, seed=0))


@pytest.mark.parametrize("cls", [TransformerEncoderBlock, TransformerDecoderBlock])
def test_block_config_round_trip_gives_the_same_function(cls):
    x, memory = f32(2, 4, 8, seed=0), f32(2, 3, 8, seed=1)
    args = (x,) if cls is TransformerEncoderBlock else (x, memory)
    block = cls(8, 2, 16, dropout=0.2, norm_first=False, name="block")
    block(*args)
    randomize(block, seed=2, scale=0.3)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
    assert type(clone) is cls and clone.get_config() == block.get_config()
    clone(*args)
    clone.set_weights(block.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(*args)), np.asarray(block(*args)))


def test_an_encoder_block_learns_to_reverse_a_sequence_which_needs_positions():
    # The copy/reverse toy: output i must be input L-1-i, so attention has to route by position.
    from attention_lessons import data

    ds = data.copy_reverse("reverse", n_train=3000, n_val=0, n_test=300, length=6, vocab_size=8, seed=0)
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32")
    x = PositionalEmbedding(len(ds.vocab), 6, 32)(ids)
    x = TransformerEncoderBlock(32, 2, 64, dropout=0.0)(x)
    x = TransformerEncoderBlock(32, 2, 64, dropout=0.0)(x)
    logits = keras.layers.Dense(len(ds.vocab))(keras.layers.LayerNormalization()(x))
    model = keras.Model(ids, logits)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ds.train.x, ds.train.y, epochs=12, batch_size=64, verbose=0)
    predicted = np.argmax(np.asarray(model(ds.test.x, training=False)), axis=-1)
    exact = float(np.mean(np.all(predicted == ds.test.y, axis=-1)))
    assert exact > 0.9, f"reversed {exact:.1%} of the test strings exactly"
