"""Our MultiHeadAttention beyond the 2017 subset: what keras.layers.MultiHeadAttention (3.15) adds.

``attention_axes`` (inputs of any rank >= 3, e.g. 2-D attention over an image's pixels),
several output axes (``output_shape=(P, Q)``), ``sliding_window``, ``use_gate`` and
``flash_attention``: argument checks that name the argument, weights in Keras's order,
equivalence with Keras (weights copied), fully masked rows, config and ``.keras`` round
trips, mixed precision and XLA. (The 2017 subset: test_layers.py, test_layers_vs_keras.py;
Keras's own test file run against our layer: test_keras_mha_suite.py.)

Tolerances are those of test_layers_vs_keras.py, with the same meaning:
``max |ours - theirs| <= ulps · eps · max(max |theirs|, 1)``, ``eps = 2**-23``. Measured here,
the largest ``max |ours - theirs| / (eps · scale)`` per feature, normal environment /
``scripts/portable.py`` (TensorFlow's own kernels, AVX2, one thread); every comparison prints
its value (``pytest -s``, lines starting with ``[eps]``):

* ``EXPLICIT_ULPS = 16`` — Keras's explicit path, which Keras takes for every input of
  rank > 3 and, for rank 3, with ``return_attention_scores=True``. Measured:
  attention_axes with one axis 0 / 0, with several axes 3.5 / 3.5 (see below);
  output_shape 0 / 1.8 (rank 3), 2.7 / 2.7 (an image); sliding_window 0 / 1.5; use_gate
  0 / 1.5 (rank 3), 1.5 / 1.2 (an image); flash_attention (an image) 1.7 / 1.3.
* ``FAST_ULPS = 32`` — Keras's fast path (rank 3, no scores, no dropout), which scales the
  logits instead of the query (``key_dim=3`` where it matters: √3 is inexact). Measured:
  output_shape 1.6 / 1.6, sliding_window 1.2 / 1.4, use_gate 0.9 / 1.7.
* ``GRAD_ULPS = 256`` — gradients. Measured: 3.8 / 8.2 (an image, two axes), 2.9 / 3.5
  (gate + sliding window + causal); the key bias's gradient, which cancels to 0 (see
  test_layers_vs_keras.py): 6.0 / 7.3 and 4.3 / 5.2.
* ``XLA_ULPS = 32`` — eager against XLA: 1.3 / 1.7; against ``tf.function``: 0 / 0.
* Mixed precision against float32: 4 eps of the compute dtype, relative to the largest
  output, as in test_layers.py. Measured: float16 1.2 / 1.2, bfloat16 0.9 / 0.9.

Several attention axes bring one more difference: the softmax over ``rows · cols`` keys.
Keras computes ``exp(x - logsumexp(x))``, ours subtracts the max and divides by the sum,
like the one-axis softmax: other roundings, both within a few eps of the exact weights.

Fully masked query rows (padding, a masked pixel, or a sliding window with ``T > S``) get
zero weights and a zero context here and on Keras's explicit path; on Keras's fast path
uniform weights (the mean of the values), so only the other rows are compared with it.

Keras 3.13 (Colab's) has neither ``use_gate`` nor ``sliding_window``: comparisons with
Keras's own gate then skip, and the sliding window is compared with Keras given the same band
as an ``attention_mask``, which works with every Keras.
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

from attention_lessons.layers import MultiHeadAttention, from_keras  # noqa: E402
from test_layers_vs_keras import (  # noqa: E402  (the float32 tolerance lives there)
    EPS32,
    EXPLICIT_ULPS,
    FAST_ULPS,
    GRAD_ULPS,
    XLA_ULPS,
    assert_float32_close,
)

KERAS_ARGS = inspect.signature(keras.layers.MultiHeadAttention.__init__).parameters


def keras_has(argument):
    return pytest.mark.skipif(argument not in KERAS_ARGS,
                              reason=f"keras {keras.__version__}'s MultiHeadAttention has no `{argument}`")


def f32(*shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def close(ours, theirs, ulps, what):
    """:func:`assert_float32_close`, printing the error in eps (of the scale) for the record."""
    if isinstance(ours, (tuple, list)):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            close(a, b, ulps, f"{what}[{i}]")
        return
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if a.shape == b.shape:
        scale = max(float(np.abs(b).max(initial=0.0)), 1.0)
        print(f"[eps] {what}: {float(np.abs(a - b).max(initial=0.0)) / (EPS32 * scale):.2f} eps (bound {ulps})")
    assert_float32_close(ours, theirs, ulps, what=what)


def randomize(layer, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=scale, size=w.shape).astype(np.float32) for w in layer.get_weights()])
    return layer


def pair(query, value, key=None, *, seed, ours=None, **kwargs):
    """A built Keras layer with random weights (biases too) and our copy of it.

    ``ours``: extra arguments for our layer only (e.g. a sliding window that this Keras
    lacks, which the Keras layer then gets as an attention mask).
    """
    theirs = keras.layers.MultiHeadAttention(**kwargs)
    theirs(query, value, key)
    randomize(theirs, seed)
    if ours is None:
        return from_keras(theirs), theirs
    return MultiHeadAttention(**kwargs, **ours).copy_weights_from(theirs), theirs


def visible(shape, seed, p=0.6):
    """A random bool mask (..., T, S) in which every query sees at least one key."""
    mask = np.random.default_rng(seed).random(shape) < p
    mask[..., 0] |= ~mask.any(-1)
    return mask


def visible_positions(shape, key_axes, seed):
    """A random bool mask whose last ``key_axes`` axes are keys; every query sees one at least."""
    keys = int(np.prod(shape[len(shape) - key_axes:]))
    return visible((int(np.prod(shape)) // keys, keys), seed).reshape(shape)


def band(t, s, window):
    """Keras's sliding window as a (T, S) mask: |t - s| < window."""
    return np.abs(np.arange(t)[:, None] - np.arange(s)[None, :]) < window


# ----------------------------------------------------------------- argument checks


@pytest.mark.parametrize("kwargs, match", [
    (dict(attention_axes="1"), "`attention_axes`"),
    (dict(attention_axes=[]), "`attention_axes`"),
    (dict(attention_axes=0), "`attention_axes`"),             # the batch axis
    (dict(attention_axes=(1, 1)), "`attention_axes`"),
    (dict(attention_axes=(1, 1.5)), "`attention_axes`"),
    (dict(attention_axes=True), "`attention_axes`"),
    (dict(sliding_window=0), "`sliding_window`"),
    (dict(sliding_window=-3), "`sliding_window`"),
    (dict(sliding_window=2.5), "`sliding_window`"),
    (dict(sliding_window=True), "`sliding_window`"),
    (dict(sliding_window="3"), "`sliding_window`"),
    (dict(use_gate="yes"), "`use_gate`"),
    (dict(flash_attention="yes"), "`flash_attention`"),
    (dict(flash_attention=True, dropout=0.1), "`dropout`=0.1 with `flash_attention=True`"),
    (dict(output_shape=8.0), "Invalid `output_shape`"),
    (dict(output_shape=(2, 0)), "`output_shape`"),
    (dict(output_shape=(1, 2, 3, 4, 5)), "`output_shape`"),
])
def test_constructor_rejects_bad_new_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(2, 4, **kwargs)


@pytest.mark.parametrize("kwargs, shapes, match", [
    (dict(attention_axes=3), [(2, 3, 4, 8)] * 2, r"`attention_axes`=\(3,\) names axis 3"),     # the features
    (dict(attention_axes=-4), [(2, 3, 4, 8)] * 2, r"`attention_axes`=\(-4,\) names axis -4"),  # the batch
    (dict(attention_axes=(1, -3)), [(2, 3, 4, 8)] * 2, "`attention_axes`.*names the same axis twice"),
    (dict(sliding_window=2), [(2, 3, 4, 8)] * 2, "`sliding_window`=2 needs one attention axis"),
    (dict(), [(2, 3, 4, 8), (2, 3, 8)], "`query` has shape .* and `value` has shape .*same rank"),
    (dict(attention_axes=2), [(2, 3, 4, 8), (2, 2, 5, 8)], "axis 1 does not attend"),
    (dict(), [(2, 5, 8), (2, 4, 8), (2, 3, 8)], "`key` has shape .* must be equal"),
])
def test_build_rejects_bad_shapes_naming_the_argument(kwargs, shapes, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(2, 4, **kwargs)(*[f32(*s, seed=i) for i, s in enumerate(shapes)])


def test_call_rejects_causal_mask_over_several_axes_and_wrong_masks():
    image = f32(2, 3, 4, 8, seed=0)
    layer = MultiHeadAttention(2, 4)
    with pytest.raises(ValueError, match="`use_causal_mask=True` needs one attention axis"):
        layer(image, image, use_causal_mask=True)
    with pytest.raises(ValueError, match=r"`attention_mask` has shape \(2, 3, 4, 4, 3\), which does not broadcast"):
        layer(image, image, attention_mask=np.ones((2, 3, 4, 4, 3), bool))
    with pytest.raises(ValueError, match="built for inputs of rank 4"):
        layer(f32(2, 3, 8, seed=1), f32(2, 3, 8, seed=1))


# ------------------------------------------------------------------------- weights


@pytest.mark.parametrize("kwargs, shapes", [
    (dict(use_gate=True), [(2, 5, 8), (2, 6, 4)]),
    (dict(use_gate=True, use_bias=False, value_dim=3), [(2, 5, 8), (2, 6, 4)]),
    (dict(output_shape=(4, 3)), [(2, 5, 8), (2, 6, 4)]),
    (dict(use_gate=True, output_shape=(2, 3)), [(2, 3, 4, 8), (2, 2, 5, 6), (2, 2, 5, 7)]),
    (dict(attention_axes=(2,)), [(2, 3, 4, 8), (2, 3, 5, 6)]),
])
def test_weights_equal_keras_in_names_order_and_shapes(kwargs, shapes):
    if "use_gate" in kwargs and "use_gate" not in KERAS_ARGS:
        pytest.skip(f"keras {keras.__version__}'s MultiHeadAttention has no `use_gate`")
    inputs = [f32(*s, seed=i) for i, s in enumerate(shapes)]
    ours = MultiHeadAttention(3, 5, **kwargs)
    theirs = keras.layers.MultiHeadAttention(3, 5, **kwargs)
    ours(*inputs)
    theirs(*inputs)
    # Keras's sublayer/variable paths (query/kernel, gate/bias, attention_output/kernel) are our names.
    keras_names = ["_".join(w.path.split("/")[-2:]).replace("attention_output", "output") for w in theirs.weights]
    assert [w.name for w in ours.weights] == keras_names
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]
    ours.set_weights(theirs.get_weights())       # the point of the shared layout


def test_gate_gets_its_own_initial_weights_and_leaves_the_others_unchanged():
    x = f32(2, 3, 8, seed=0)
    init = keras.initializers.TruncatedNormal(stddev=0.02)    # Keras's test_initializer, on our weights
    gated = MultiHeadAttention(12, 64, use_gate=True, kernel_initializer=init)
    gated(x, x)
    kernels = [gated.query_kernel, gated.key_kernel, gated.value_kernel, gated.gate_kernel]
    for i, a in enumerate(kernels):
        for b in kernels[i + 1:]:
            assert not np.allclose(a.numpy(), b.numpy())
    # Seeded: the gate's weights have seeds of their own; the eight others do not move.
    plain = MultiHeadAttention(2, 4, seed=5)
    with_gate = MultiHeadAttention(2, 4, seed=5, use_gate=True)
    plain(x, x)
    with_gate(x, x)
    others = [w.numpy() for w in with_gate.weights if not w.name.startswith("gate")]
    for a, b in zip(plain.get_weights(), others):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(with_gate.gate_kernel.numpy(), with_gate.query_kernel.numpy())


def test_constraints_apply_to_every_kernel_and_bias_gate_included():
    # What Keras's test_mha_constraints checks on its sublayers, on our weights.
    query, value = np.array([[[1.0, 0.0], [0.0, 1.0]]]), np.array([[[1.0, 2.0], [3.0, 4.0]]])
    layer = MultiHeadAttention(2, 2, use_gate=True, kernel_constraint="non_neg", bias_constraint="non_neg")
    layer.build(query.shape, value.shape)
    for w in layer.weights:
        assert isinstance(w.constraint, keras.constraints.NonNeg), w.name


# --------------------------------------------------------------- config and saving


def test_config_round_trip_with_every_new_argument():
    layer = MultiHeadAttention(2, 4, output_shape=(3, 2), attention_axes=(-2, 2), sliding_window=None,
                               flash_attention=False, use_gate=True, seed=3, name="image_mha")
    config = layer.get_config()
    json.dumps(config)
    assert (config["attention_axes"], config["output_shape"], config["use_gate"], config["flash_attention"]) == \
        ((-2, 2), (3, 2), True, False)
    clone = MultiHeadAttention.from_config(config)
    assert clone.get_config() == config
    # Keras's test_sliding_window_serialization, on our public attribute.
    windowed = MultiHeadAttention.from_config(MultiHeadAttention(2, 4, sliding_window=5).get_config())
    assert windowed.sliding_window == 5 and windowed.get_config()["sliding_window"] == 5
    x = f32(2, 3, 4, 5, 8, seed=0)
    layer(x, x)
    clone(x, x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x, x)), np.asarray(layer(x, x)))
    assert layer.equations.attention_axes == (3, 2)        # -2 of a rank-5 input is axis 3; order kept


@keras_has("use_gate")
@keras_has("sliding_window")
def test_keras_builds_the_same_layer_from_our_config():
    # (Keras counts a sliding window along axis 1 whatever attention_axes says: axis 1 here.)
    config = MultiHeadAttention(2, 4, value_dim=3, output_shape=(2, 5), attention_axes=1, sliding_window=2,
                                use_gate=True).get_config()
    theirs = keras.layers.MultiHeadAttention.from_config(config)
    ours = MultiHeadAttention.from_config(config)
    x = f32(2, 3, 6, 8, seed=0)
    theirs(x, x)
    ours(x, x)
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]
    randomize(theirs, seed=1)
    ours.set_weights(theirs.get_weights())
    close(ours(x, x, use_causal_mask=True), theirs(x, x, use_causal_mask=True), EXPLICIT_ULPS,
          what="Keras from our config")


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras + NumPy 2.4
def test_keras_file_with_the_new_features_loads_in_a_fresh_process(tmp_path):
    image_in = keras.Input((3, 4, 8))
    text_in = keras.Input((6, 8))
    image_out = MultiHeadAttention(2, 4, use_gate=True, output_shape=(2, 3), name="image")(image_in, image_in)
    rows_out = MultiHeadAttention(2, 4, attention_axes=-2, name="rows")(image_in, image_in)
    text_out = MultiHeadAttention(2, 4, sliding_window=2, use_gate=True, dropout=0.1, seed=1,
                                  name="text")(text_in, text_in, use_causal_mask=True)
    model = keras.Model([image_in, text_in], [image_out, rows_out, text_out])
    for layer in model.layers:
        if layer.weights:
            randomize(layer, seed=len(layer.name), scale=0.3)
    path = tmp_path / "model.keras"
    model.save(path)
    inputs = [f32(2, 3, 4, 8, seed=0), f32(2, 6, 8, seed=1)]
    np.save(tmp_path / "image.npy", inputs[0])
    np.save(tmp_path / "text.npy", inputs[1])
    code = textwrap.dedent(f"""
        import json
        import numpy as np
        import attention_lessons.layers  # noqa: F401  (registers the classes)
        import keras
        model = keras.saving.load_model({str(path)!r})
        d = {str(tmp_path)!r}
        outs = model([np.load(d + "/image.npy"), np.load(d + "/text.npy")])
        for i, out in enumerate(outs):
            np.save(d + f"/out{{i}}.npy", np.asarray(out))
        json.dump({{l.name: l.get_config() for l in model.layers if l.name in ("image", "rows", "text")}},
                  open(d + "/configs.json", "w"))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)  # hangs only
    assert done.returncode == 0, done.stderr[-3000:]
    # Same model, library, machine and environment: the same operations in the same order.
    for i, out in enumerate(model(inputs)):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), np.asarray(out))
    configs = json.loads((tmp_path / "configs.json").read_text())
    for name, config in configs.items():
        assert config == json.loads(json.dumps(model.get_layer(name).get_config())), name


# ------------------------------------------------------------ attention_axes vs Keras


AXES_CASES = {
    # name: (query shape, value shape, key shape or None, attention_axes)
    "image_every_pixel": ((2, 3, 4, 8), (2, 3, 4, 8), None, None),
    "image_rows_axis2": ((2, 3, 5, 8), (2, 3, 5, 8), None, (2,)),
    "image_columns_axis1": ((2, 3, 5, 8), (2, 3, 5, 8), None, 1),
    "rank5_two_axes": ((2, 2, 3, 4, 6), (2, 2, 3, 4, 6), None, (2, 3)),
    "unsorted_negative_axes": ((2, 3, 4, 8), (2, 3, 4, 8), None, (-2, -3)),
    "cross_other_sizes": ((2, 3, 4, 8), (2, 2, 5, 6), (2, 2, 5, 7), None),
}


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "attention_mask"])
@pytest.mark.parametrize("case", list(AXES_CASES))
def test_attention_axes_match_keras(case, masked):
    q_shape, v_shape, k_shape, axes = AXES_CASES[case]
    query, value = f32(*q_shape, seed=1), f32(*v_shape, seed=2)
    key = None if k_shape is None else f32(*k_shape, seed=3)
    ours, theirs = pair(query, value, key, num_heads=2, key_dim=3, attention_axes=axes, seed=4)
    k = len(ours.equations.attention_axes)
    kwargs = {}
    if masked:   # the scores' shape without the heads axis: (B, <free axes>, <query pos.>, <key pos.>)
        scores_shape = tuple(ours(query, value, key, return_attention_scores=True)[1].shape)
        heads = len(scores_shape) - 1 - 2 * k
        kwargs["attention_mask"] = visible_positions(scores_shape[:heads] + scores_shape[heads + 1:], k, seed=5)
    got = ours(query, value, key, return_attention_scores=True, **kwargs)
    # Keras takes its explicit path for every input of rank > 3, with or without scores.
    close(got, theirs(query, value, key, return_attention_scores=True, **kwargs), EXPLICIT_ULPS,
          what=f"attention_axes {case} {'masked' if masked else ''}")
    close(ours(query, value, key, **kwargs), theirs(query, value, key, **kwargs), EXPLICIT_ULPS,
          what=f"attention_axes {case} {'masked ' if masked else ''}no scores")
    # Each query's weights sum to 1 over all its key positions.
    np.testing.assert_allclose(np.asarray(got[1]).sum(axis=tuple(range(-k, 0))), 1.0, atol=1e-6)


def test_image_attention_shapes_and_equations():
    image = f32(2, 3, 4, 8, seed=0)
    layer = MultiHeadAttention(2, 4)
    out, scores = layer(image, image, return_attention_scores=True)
    assert out.shape == (2, 3, 4, 8) and scores.shape == (2, 2, 3, 4, 3, 4)     # (B, N, rows, cols, rows, cols)
    assert layer.equations.scores == "btunh,bsrnh->bntusr"
    rows = MultiHeadAttention(2, 4, attention_axes=2)
    _, row_scores = rows(image, image, return_attention_scores=True)
    assert row_scores.shape == (2, 3, 2, 4, 4)                                  # (B, rows, N, cols, cols)
    assert rows.equations.scores == "batnh,basnh->bants"
    # Symbolic: the same shapes (T != S too).
    sym_q, sym_v = keras.Input((3, 4, 8)), keras.Input((2, 5, 6))
    sym_out, sym_scores = MultiHeadAttention(2, 4)(sym_q, sym_v, return_attention_scores=True)
    assert sym_out.shape == (None, 3, 4, 8) and sym_scores.shape == (None, 2, 3, 4, 2, 5)


def test_fully_masked_pixel_gets_zero_weights_like_keras():
    image = f32(2, 3, 4, 8, seed=6)
    ours, theirs = pair(image, image, num_heads=2, key_dim=4, seed=7)
    mask = visible_positions((2, 3, 4, 3, 4), 2, seed=8)
    mask[0, 1, 2] = False                                         # pixel (1, 2) of image 0 sees nothing
    out, scores = ours(image, image, attention_mask=mask, return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(scores)[0, :, 1, 2], 0.0)
    np.testing.assert_array_equal(np.asarray(out)[0, 1, 2], ours.output_bias.numpy())   # zero context
    close((out, scores), theirs(image, image, attention_mask=mask, return_attention_scores=True), EXPLICIT_ULPS,
          what="attention_axes fully masked pixel")


def test_padding_masks_of_more_axes_are_laid_out_like_the_scores():
    # attention_axes=1 of (B, T, A, D): the scores are (B, A, N, T, S), the padding masks (B, T, A)
    # and (B, S, A) — Keras expands them as if T were the last axis, which only works when A == T.
    query, value = f32(2, 4, 3, 8, seed=9), f32(2, 5, 3, 8, seed=10)
    rng = np.random.default_rng(11)
    query_mask, value_mask = rng.random((2, 4, 3)) < 0.7, rng.random((2, 5, 3)) < 0.7
    value_mask[:, 0] = True
    ours, theirs = pair(query, value, num_heads=2, key_dim=4, attention_axes=1, seed=12)
    by_hand = query_mask.transpose(0, 2, 1)[..., :, None] & value_mask.transpose(0, 2, 1)[..., None, :]  # (B, A, T, S)
    got = ours(query, value, query_mask=query_mask, value_mask=value_mask, return_attention_scores=True)
    want = ours(query, value, attention_mask=by_hand, return_attention_scores=True)
    # The same bool mask, then the same operations in the same order: bit for bit.
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    close(got, theirs(query, value, attention_mask=by_hand, return_attention_scores=True), EXPLICIT_ULPS,
          what="attention_axes padding masks")


# --------------------------------------------------------------- output_shape vs Keras


def test_several_output_axes_match_keras():
    x, memory = f32(2, 5, 8, seed=13), f32(2, 6, 4, seed=14)
    ours, theirs = pair(x, memory, num_heads=2, key_dim=3, output_shape=(4, 3), seed=15)
    mask = visible((2, 5, 6), seed=16)
    got = ours(x, memory, attention_mask=mask, return_attention_scores=True)
    assert got[0].shape == (2, 5, 4, 3)
    close(got, theirs(x, memory, attention_mask=mask, return_attention_scores=True), EXPLICIT_ULPS,
          what="output_shape explicit")
    close(ours(x, memory, attention_mask=mask), theirs(x, memory, attention_mask=mask), FAST_ULPS,
          what="output_shape fast")
    image = f32(2, 3, 4, 8, seed=17)
    ours, theirs = pair(image, image, num_heads=2, key_dim=3, output_shape=(2, 3), seed=18)
    close(ours(image, image), theirs(image, image), EXPLICIT_ULPS, what="output_shape image")


# ------------------------------------------------------------- sliding_window vs Keras


SLIDING_CASES = {
    # name: (T, S, window, causal, padding)
    "symmetric": (7, 7, 3, False, False),
    "causal": (7, 7, 3, True, False),
    "causal_and_padding": (7, 7, 2, True, True),
    "window_1_is_the_diagonal": (5, 5, 1, False, False),
    "cross_T_lt_S": (4, 9, 2, False, False),
    "cross_T_gt_S_empty_rows": (8, 3, 2, False, False),            # queries 4..7 see no key
}


@pytest.mark.parametrize("case", list(SLIDING_CASES))
def test_sliding_window_matches_keras(case):
    t, s, window, causal, padding = SLIDING_CASES[case]
    query, value = f32(2, t, 8, seed=19), f32(2, s, 8, seed=20)
    # key_dim 3: √3 is inexact, so scaling the query (ours) or the logits (Keras's fast path) differs.
    ours, theirs = pair(query, value, num_heads=2, key_dim=3, seed=21, ours=dict(sliding_window=window))
    kwargs = dict(use_causal_mask=causal)
    if padding:
        keys = np.ones((2, 1, s), bool)
        keys[1, :, 5:] = False
        kwargs["attention_mask"] = np.broadcast_to(keys, (2, t, s))
    out, scores = ours(query, value, return_attention_scores=True, **kwargs)
    allowed = band(t, s, window) & (np.tril(np.ones((t, s), bool)) if causal else True)
    allowed = np.broadcast_to(allowed & kwargs.get("attention_mask", True), (2, t, s))     # (B, T, S)
    np.testing.assert_array_equal(np.asarray(scores) > 0, np.broadcast_to(allowed[:, None], scores.shape))
    empty = ~allowed.any(-1)                                          # (B, T): fully masked rows
    np.testing.assert_array_equal(np.asarray(out)[empty], np.broadcast_to(ours.output_bias.numpy(),
                                                                           np.asarray(out)[empty].shape))
    # Keras with the band as an attention mask (every Keras); and with its own sliding_window.
    as_mask = dict(kwargs, attention_mask=np.broadcast_to(allowed, (2, t, s)))
    references = [("band mask", theirs, as_mask)]
    if "sliding_window" in KERAS_ARGS:
        windowed = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, sliding_window=window)
        windowed(query, value)
        windowed.set_weights(theirs.get_weights())
        references.append(("sliding_window", windowed, kwargs))
    for label, layer, extra in references:
        close((out, scores), layer(query, value, return_attention_scores=True, **extra), EXPLICIT_ULPS,
              what=f"sliding_window {case} vs Keras {label}, explicit")
        # The fast path gives fully masked rows the mean of the values: compare the others.
        fast = np.asarray(layer(query, value, **extra))
        close(np.asarray(out)[~empty], fast[~empty], FAST_ULPS, what=f"sliding_window {case} vs Keras {label}, fast")
        if empty.any():
            assert np.abs(fast[empty] - np.asarray(out)[empty]).max() > 1e-3


def test_sliding_window_along_the_attention_axis_of_a_rank_4_input():
    x = f32(2, 6, 3, 8, seed=22)                       # (B, T, A, D), attention along T = axis 1
    ours, theirs = pair(x, x, num_heads=2, key_dim=3, attention_axes=1, seed=23,
                        ours=dict(sliding_window=2))
    got = ours(x, x, use_causal_mask=True, return_attention_scores=True)
    allowed = band(6, 6, 2) & np.tril(np.ones((6, 6), bool))
    np.testing.assert_array_equal(np.asarray(got[1]) > 0, np.broadcast_to(allowed, got[1].shape))
    close(got, theirs(x, x, attention_mask=allowed, return_attention_scores=True), EXPLICIT_ULPS,
          what="sliding_window rank 4")


# ---------------------------------------------------------------- use_gate vs Keras


@keras_has("use_gate")
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_gate_matches_keras(use_bias):
    x, memory = f32(2, 5, 8, seed=24), f32(2, 6, 4, seed=25)
    ours, theirs = pair(x, memory, num_heads=3, key_dim=3, value_dim=2, use_gate=True, use_bias=use_bias, seed=26)
    mask = visible((2, 5, 6), seed=27)
    got = ours(x, memory, attention_mask=mask, use_causal_mask=True, return_attention_scores=True)
    close(got, theirs(x, memory, attention_mask=mask, use_causal_mask=True, return_attention_scores=True),
          EXPLICIT_ULPS, what=f"use_gate explicit {use_bias=}")
    close(ours(x, memory), theirs(x, memory), FAST_ULPS, what=f"use_gate fast {use_bias=}")
    image = f32(2, 3, 4, 8, seed=28)
    ours, theirs = pair(image, image, num_heads=2, key_dim=3, use_gate=True, use_bias=use_bias, seed=29)
    close(ours(image, image), theirs(image, image), EXPLICIT_ULPS, what=f"use_gate image {use_bias=}")


def test_gate_multiplies_each_context_channel_by_a_sigmoid_of_the_query():
    # Gate weights 0 and bias b: every context channel is multiplied by sigmoid(b).
    x = f32(2, 5, 8, seed=30)
    gated = MultiHeadAttention(2, 4, use_gate=True)
    gated(x, x)
    randomize(gated, seed=31)
    gated.gate_kernel.assign(np.zeros(gated.gate_kernel.shape, np.float32))
    gated.gate_bias.assign(np.full(gated.gate_bias.shape, np.log(3.0), np.float32))   # sigmoid = 3/4
    plain = MultiHeadAttention(2, 4)
    plain(x, x)
    plain.set_weights([w.numpy() for w in gated.weights if not w.name.startswith("gate")])
    plain.output_kernel.assign(plain.output_kernel * 0.75)
    close(gated(x, x), plain(x, x), EXPLICIT_ULPS, what="gate = 3/4")


# ------------------------------------------------------------------ flash_attention


def test_flash_attention_behaves_as_keras_on_tensorflow():
    x, image = f32(2, 5, 8, seed=32), f32(2, 3, 4, 8, seed=33)
    for cls in (MultiHeadAttention, keras.layers.MultiHeadAttention):
        with pytest.raises(ValueError, match="(?i)dropout.*flash attention"):
            cls(2, 4, flash_attention=True, dropout=0.1)
        layer = cls(2, 4, flash_attention=True)
        with pytest.raises(ValueError, match="Flash attention is not supported in tensorflow backend"):
            layer(x, x)                                     # rank 3: where Keras would call the kernel
        with pytest.raises(ValueError, match="Returning attention scores is not supported"):
            layer(x, x, return_attention_scores=True)
    # Rank > 3: Keras's explicit path, which never asks for the kernel; ours likewise.
    # (Keras's config omits flash_attention, so from_keras cannot carry it over.)
    theirs = keras.layers.MultiHeadAttention(2, 4, flash_attention=True)
    theirs(image, image)
    ours = MultiHeadAttention(2, 4, flash_attention=True).copy_weights_from(randomize(theirs, seed=34))
    close(ours(image, image), theirs(image, image), EXPLICIT_ULPS, what="flash_attention image")
    # None and False: ordinary attention, the same function as the default layer.
    default = MultiHeadAttention(2, 4)
    default(x, x)
    randomize(default, seed=35)
    for flag in (None, False):
        layer = MultiHeadAttention(2, 4, flash_attention=flag)
        layer(x, x)
        layer.set_weights(default.get_weights())
        np.testing.assert_array_equal(np.asarray(layer(x, x)), np.asarray(default(x, x)))


# --------------------------------------------------------------------- gradients


def gradients(layer, *inputs, **kwargs):
    inputs = [tf.constant(x) for x in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = layer(*inputs, **kwargs)
        loss = tf.reduce_sum(out * tf.sin(out))
    return tape.gradient(loss, inputs + layer.trainable_weights)


def assert_gradients_close(ours, theirs, inputs, what, **kwargs):
    got, want = gradients(ours, *inputs, **kwargs), gradients(theirs, *inputs, **kwargs)
    names = [f"input {i}" for i in range(len(inputs))] + [w.name for w in ours.trainable_weights]
    assert len(got) == len(want) == len(names)
    for g, w, name in zip(got, want, names):
        close(np.asarray(g), np.asarray(w), GRAD_ULPS, what=f"{what} gradient of {name}")


def test_gradients_of_image_attention_match_keras():
    image = f32(2, 3, 4, 8, seed=36)
    ours, theirs = pair(image, image, num_heads=2, key_dim=3, seed=37)
    mask = visible_positions((2, 3, 4, 3, 4), 2, seed=38)
    assert_gradients_close(ours, theirs, [image, image], "image", attention_mask=mask)


@keras_has("use_gate")
@keras_has("sliding_window")
def test_gradients_of_gate_and_sliding_window_match_keras():
    x, memory = f32(2, 6, 8, seed=39), f32(2, 6, 4, seed=40)
    ours, theirs = pair(x, memory, num_heads=2, key_dim=3, value_dim=5, use_gate=True, sliding_window=3,
                        seed=41)
    assert_gradients_close(ours, theirs, [x, memory], "gate+window", use_causal_mask=True)


# ----------------------------------------------------------- XLA and mixed precision


def test_eager_tf_function_and_xla_agree_for_the_new_features():
    image, x, short = f32(2, 3, 4, 8, seed=42), f32(2, 7, 8, seed=43), f32(2, 3, 8, seed=44)
    image_layer = MultiHeadAttention(2, 4, use_gate=True, output_shape=(2, 3))
    image_layer(image, image)
    randomize(image_layer, seed=45)
    window = MultiHeadAttention(2, 4, sliding_window=2, use_gate=True)
    window(x, short)
    randomize(window, seed=46)
    mask = visible_positions((2, 3, 4, 3, 4), 2, seed=47)
    mask[1, 0, 0] = False

    def run(a, b, c):
        return (*image_layer(a, a, attention_mask=mask, return_attention_scores=True),
                *window(b, c, use_causal_mask=True, return_attention_scores=True))   # queries 4..6 see nothing

    eager = run(image, x, short)
    graph = tf.function(run)(image, x, short)
    xla = tf.function(run, jit_compile=True)(image, x, short)
    for a in xla:
        assert np.isfinite(np.asarray(a)).all()
    close(graph, eager, XLA_ULPS, what="tf.function")
    close(xla, eager, XLA_ULPS, what="XLA")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_new_features_stay_finite_and_accurate(policy):
    image, x, short = f32(2, 3, 4, 16, seed=48), f32(2, 6, 16, seed=49), f32(2, 3, 16, seed=50)
    mask = visible_positions((2, 3, 4, 3, 4), 2, seed=51)
    mask[0, 2, 3] = False                                         # a fully masked pixel
    results = {}
    for dtype in ("float32", policy):
        image_layer = MultiHeadAttention(4, 8, use_gate=True, dtype=dtype)
        window = MultiHeadAttention(4, 8, sliding_window=2, use_gate=True, dtype=dtype)
        image_layer(image, image)
        window(x, short)
        randomize(image_layer, seed=52, scale=0.3)
        randomize(window, seed=53, scale=0.3)

        def forward(a, b, c):
            return (*image_layer(a, a, attention_mask=mask, return_attention_scores=True),
                    *window(b, c, return_attention_scores=True))       # queries 4, 5 see no key

        @tf.function
        def grads(a, b, c):
            with tf.GradientTape() as tape:
                outputs = forward(a, b, c)
                loss = sum(tf.reduce_sum(tf.cast(o, "float32") ** 2) for o in outputs[::2])
            return tape.gradient(loss, image_layer.trainable_weights + window.trainable_weights)

        inputs = [tf.constant(v) for v in (image, x, short)]
        results[dtype] = [np.asarray(o, np.float32) for o in tf.function(forward, jit_compile=True)(*inputs)]
        if dtype != "float32":
            assert {w.dtype for w in image_layer.weights + window.weights} == {"float32"}
            for g in grads(*inputs):
                assert np.isfinite(np.asarray(g, np.float32)).all()
    compute = policy.split("_")[1]
    eps = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[compute]
    for i, (low, want) in enumerate(zip(results[policy], results["float32"])):
        assert np.isfinite(low).all()
        error = np.abs(low - want).max() / max(np.abs(want).max(), 1e-30)
        print(f"[eps] {policy} result {i}: {error / eps:.2f} {compute} eps (bound 4)")
        assert error < 4 * eps, (i, error / eps)
    np.testing.assert_array_equal(results[policy][1][0, :, 2, 3], 0.0)      # the masked pixel's weights
    np.testing.assert_array_equal(results[policy][3][:, :, 4:], 0.0)        # the window's empty rows
