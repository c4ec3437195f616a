"""Our Transformer blocks against an independent formula, written here in float64 NumPy.

The formula uses nothing from the package: only the blocks' weights, read with
``get_weights()``. With LN a LayerNormalization, MHA multi-head attention in Keras's weight
layout and FFN = Dense(relu) → Dense:

* encoder, pre-norm (``norm_first=True``):  h = x + MHA(LN₁(x), LN₁(x));  y = h + FFN(LN₂(h))
* encoder, post-norm (``norm_first=False``): h = LN₁(x + MHA(x, x));      y = LN₂(h + FFN(h))
* decoder, pre-norm:  h₁ = x + MHA_causal(LN₁(x));  h₂ = h₁ + MHA(LN₂(h₁), enc);  y = h₂ + FFN(LN₃(h₂))
* decoder, post-norm: h₁ = LN₁(x + MHA_causal(x));  h₂ = LN₂(h₁ + MHA(h₁, enc));  y = LN₃(h₂ + FFN(h₂))

Padding masks (True = real token) hide padded keys from every query; a padded query sees no
key at all, so its attention weights are zero (the course's convention on the explicit path
the blocks use) and its attention output is the output projection's bias.

Tolerance. The blocks run in float32, the formula in float64, so the difference is float32
rounding only. One attention sublayer against a float64 reference stays within 16 float32
ulps of the output's scale (REFERENCE_ULPS of tests/test_layers_vs_keras.py: a few chained
reductions of length ≤ 16, each rounding once). A block chains two (encoder) or three
(decoder) such sublayers, each behind a LayerNormalization whose division by
√(var + ε) keeps relative errors of order one ulp, so the errors add up to at most
3 × 16 ulps: ``BLOCK_ULPS = 64`` (the next power of two), i.e.
``max |ours - formula| <= 64 · eps₃₂ · max(max |formula|, 1)`` with eps₃₂ = 2⁻²³ ≈ 1.19e-7
(measured: 1.1 to 1.7 eps × scale for every block, norm and mask below).
The LayerNormalization's own ε (``layer_norm_epsilon``, 1e-5) is part of the formula, not of
the tolerance. That the bound still catches a wrong formula (ε = 1e-3, or a missing residual)
is checked by :func:`test_the_tolerance_catches_a_wrong_formula`.
"""

from __future__ import annotations

import numpy as np
import pytest

from attention_lessons.device import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402

from attention_lessons.layers import TransformerDecoderBlock, TransformerEncoderBlock  # noqa: E402

#: float32 machine epsilon, 2**-23: the spacing of float32 numbers just above 1.
EPS32 = float(np.finfo(np.float32).eps)
BLOCK_ULPS = 64


def assert_block_close(ours, formula, ulps=BLOCK_ULPS):
    ours, formula = np.asarray(ours, dtype=np.float64), np.asarray(formula, dtype=np.float64)
    assert ours.shape == formula.shape
    scale = max(float(np.abs(formula).max()), 1.0)
    error = float(np.abs(ours - formula).max())
    assert error <= ulps * EPS32 * scale, f"max |ours - formula| = {error:.3g} = {error / (EPS32 * scale):.1f} eps x scale"
    return error / (EPS32 * scale)


# ------------------------------------------------------------------ the formula, float64


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)       # biased, as Keras
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def mha(query, value, weights, query_mask=None, value_mask=None, causal=False):
    """Keras's MultiHeadAttention computation: weights (Wq, bq, Wk, bk, Wv, bv, Wo, bo)."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("btd,dnh->bnth", query, wq) + bq[:, None, :]
    k = np.einsum("bsd,dnh->bnsh", value, wk) + bk[:, None, :]
    v = np.einsum("bsd,dnh->bnsh", value, wv) + bv[:, None, :]
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])                  # (B, N, T, S)
    b, t, s = query.shape[0], query.shape[1], value.shape[1]
    visible = np.ones((b, t, s), dtype=bool)
    if query_mask is not None:
        visible &= query_mask[:, :, None]
    if value_mask is not None:
        visible &= value_mask[:, None, :]
    if causal:
        visible &= np.arange(s)[None, :] <= np.arange(t)[:, None]
    visible = visible[:, None]                                                  # shared by the heads
    scores = np.where(visible, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    e = np.where(visible, np.exp(scores - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    attention = np.divide(e, total, out=np.zeros_like(e), where=total > 0)     # no visible key: zeros
    return np.einsum("bnth,nhd->btd", attention @ v, wo) + bo


def ffn(x, w1, b1, w2, b2):
    return np.maximum(x @ w1 + b1, 0.0) @ w2 + b2


def residual(x, sublayer, norm, norm_first):
    return x + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))


def encoder_formula(block, x, mask=None, eps=None, ffn_residual=True, causal=False):
    eps = block.layer_norm_epsilon if eps is None else eps
    w = _f64(block.attention)
    ln1, ln2 = (lambda h, n=n: layer_norm(h, *_f64(n), eps) for n in (block.attention_norm, block.ffn_norm))
    h = residual(x, lambda a: mha(a, a, w, mask, mask, causal=causal), ln1, block.norm_first)
    y = residual(h, lambda a: ffn(a, *_f64(block.ffn_hidden), *_f64(block.ffn_output)), ln2, block.norm_first)
    return y if ffn_residual else y - h   # pre-norm only: without "+ h" around the FFN


def decoder_formula(block, x, enc, x_mask=None, enc_mask=None):
    eps = block.layer_norm_epsilon
    norms = [lambda h, n=n: layer_norm(h, *_f64(n), eps)
             for n in (block.self_attention_norm, block.cross_attention_norm, block.ffn_norm)]
    h = residual(x, lambda a: mha(a, a, _f64(block.self_attention), x_mask, x_mask, causal=True), norms[0],
                 block.norm_first)
    h = residual(h, lambda a: mha(a, enc, _f64(block.cross_attention), x_mask, enc_mask), norms[1], block.norm_first)
    return residual(h, lambda a: ffn(a, *_f64(block.ffn_hidden), *_f64(block.ffn_output)), norms[2], block.norm_first)


def _f64(layer):
    return [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]


# ------------------------------------------------------------------ inputs


def f32(*shape, seed, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def randomized(block, *inputs, seed, **kwargs):
    """``block`` built on ``inputs`` with random weights everywhere (biases, γ and β included)."""
    block(*inputs, **kwargs)
    rng = np.random.default_rng(seed)
    block.set_weights([(rng.normal(size=w.shape) * (0.3 if w.ndim > 1 else 0.2) + (1.0 if _is_gamma(block, i) else 0.0))
                       .astype(np.float32) for i, w in enumerate(block.get_weights())])
    return block


def _is_gamma(block, index):
    return block.weights[index].path.endswith("gamma")


PADDING = np.array([[True] * 6, [True] * 4 + [False] * 2])      # example 1: two padded tokens


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "padding mask"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "use_causal_mask"])
def test_encoder_block_equals_the_formula(norm_first, masked, causal):
    """use_causal_mask=True: the decoder-only (GPT) block of lesson 17, x + MHA_causal(LN(x)), then + FFN(LN(·))."""
    x = f32(2, 6, 16, seed=1)
    mask = PADDING if masked else None
    block = randomized(TransformerEncoderBlock(16, 2, 32, dropout=0.0, norm_first=norm_first), x, seed=2)
    ours = block(x, mask=mask, training=False, use_causal_mask=causal)
    assert_block_close(ours, encoder_formula(block, x.astype(np.float64), mask, causal=causal))


def test_the_causal_mask_changes_every_position_but_the_last():
    x = f32(2, 6, 16, seed=3)
    block = randomized(TransformerEncoderBlock(16, 2, 32, dropout=0.0), x, seed=4)
    causal, plain = (np.asarray(block(x, training=False, use_causal_mask=c)) for c in (True, False))
    for t in range(5):                                                  # they no longer see later tokens
        assert not np.allclose(causal[:, t], plain[:, t], atol=1e-3), t
    assert_block_close(causal[:, -1:], plain[:, -1:])                    # the last one sees all of them anyway


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "padding masks"])
def test_decoder_block_equals_the_formula(norm_first, masked):
    x, enc = f32(2, 6, 16, seed=3), f32(2, 7, 12, seed=4)      # T ≠ S, and another feature size
    x_mask = PADDING if masked else None
    enc_mask = np.array([[True] * 7, [True] * 5 + [False] * 2]) if masked else None
    block = randomized(TransformerDecoderBlock(16, 2, 32, dropout=0.0, norm_first=norm_first), x, enc, seed=5)
    ours = block(x, enc, inputs_mask=x_mask, encoder_outputs_mask=enc_mask, training=False)
    assert_block_close(ours, decoder_formula(block, x.astype(np.float64), enc.astype(np.float64), x_mask, enc_mask))


def test_the_blocks_take_the_padding_mask_from_keras_masks():
    """A Keras mask (e.g. from Embedding(mask_zero=True)) is the same as passing it explicitly."""
    x = f32(2, 6, 16, seed=6)
    block = randomized(TransformerEncoderBlock(16, 2, 32, dropout=0.0), x, seed=7)
    masked = keras.layers.Masking(mask_value=0.0)(np.where(PADDING[..., None], x, 0.0).astype(np.float32))
    assert_block_close(block(masked), encoder_formula(block, np.where(PADDING[..., None], x, 0.0).astype(np.float64),
                                                      PADDING))


def test_the_tolerance_catches_a_wrong_formula():
    x = f32(2, 6, 16, seed=8)
    block = randomized(TransformerEncoderBlock(16, 2, 32, dropout=0.0), x, seed=9)
    ours = np.asarray(block(x, training=False))
    with pytest.raises(AssertionError):
        assert_block_close(ours, encoder_formula(block, x.astype(np.float64), eps=1e-3))   # another ε
    with pytest.raises(AssertionError):
        assert_block_close(ours, encoder_formula(block, x.astype(np.float64), ffn_residual=False))
