"""Exercise 06 · A Keras multi-head attention layer: MyMultiHeadAttention.

The student's layer class is exercised by :func:`drivers.mha_forward`: built with a
config, loaded with weights in Keras's order, called on the grader's inputs. The
reference is ``keras.layers.MultiHeadAttention`` itself (its explicit path, as
``return_attention_scores=True`` selects); the bugs are a small from-scratch layer with
one mistake switched on.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .drivers import _keras, mha_forward, mha_initial_kernels_distinct
from .spec import Bug, Case, Check, Exercise, Question


@functools.lru_cache(maxsize=None)
def _buggy(**bugs):
    """A from-scratch layer (Keras weight layout) with the named mistakes switched on."""
    keras = _keras()
    ops = keras.ops

    class Buggy(keras.layers.Layer):
        def __init__(self, num_heads, key_dim, value_dim=None, **kwargs):
            super().__init__(**kwargs)
            self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim or key_dim

        def build(self, query_shape, value_shape, key_shape=None):
            d_q, d_v = query_shape[-1], value_shape[-1]
            d_k = d_v if key_shape is None else key_shape[-1]
            n, h, hv = self.num_heads, self.key_dim, self.value_dim
            init = keras.initializers.GlorotUniform(seed=1)
            make = (lambda: init) if bugs.get("shared_init") else (lambda: keras.initializers.GlorotUniform())
            self.wq = self.add_weight(shape=(d_q, n, h), initializer=make())
            self.bq = self.add_weight(shape=(n, h), initializer="zeros")
            self.wk = self.add_weight(shape=(d_k, n, h), initializer=make())
            self.bk = self.add_weight(shape=(n, h), initializer="zeros")
            self.wv = self.add_weight(shape=(d_v, n, hv), initializer=make())
            self.bv = self.add_weight(shape=(n, hv), initializer="zeros")
            self.wo = self.add_weight(shape=(n, hv, d_q), initializer="glorot_uniform")
            self.bo = self.add_weight(shape=(d_q,), initializer="zeros")

        def call(self, query, value, key=None, attention_mask=None, return_attention_scores=False,
                 training=None, use_causal_mask=False):
            key = value if key is None else key
            q = ops.einsum("btd,dnh->btnh", query, self.wq) + self.bq
            k = ops.einsum("bsd,dnh->bsnh", key, self.wk) + self.bk
            v = ops.einsum("bsd,dnh->bsnh", value, self.wv) + self.bv
            scale = {"d_model": query.shape[-1], "none": 1.0}.get(bugs.get("scale"), self.key_dim)
            q = q / ops.cast(math.sqrt(scale), q.dtype)
            pattern = "btnh,bsnh->bnst" if bugs.get("swapped_axes") else "btnh,bsnh->bnts"
            logits = ops.einsum(pattern, q, k)                                     # (B, N, T, S)
            t, s = query.shape[1], value.shape[1]
            mask = None if attention_mask is None else ops.cast(attention_mask, "bool")
            if mask is not None and bugs.get("inverted_mask"):   # the student's mask, not the causal one
                mask = ops.logical_not(mask)
            if use_causal_mask:
                causal = ops.arange(s)[None, :] <= ops.arange(t)[:, None]
                mask = causal if mask is None else ops.logical_and(mask, causal)
            if bugs.get("float16_softmax"):
                if mask is not None:
                    logits = ops.where(mask[..., None, :, :] if len(mask.shape) == 3 else mask, logits,
                                       ops.cast(-1e9, logits.dtype))
                weights = ops.softmax(logits, axis=-1)
            else:
                logits = ops.cast(logits, "float32")
                if mask is not None:
                    m = mask[:, None, :, :] if len(mask.shape) == 3 else mask
                    logits = ops.where(m, logits, -1e9)
                    weights = ops.where(m, ops.softmax(logits, axis=-1), 0.0)
                else:
                    weights = ops.softmax(logits, axis=-1)
                weights = ops.cast(weights, self.compute_dtype)
            context = ops.einsum("bnts,bsnh->btnh", weights, v)                    # (B, T, N, Hv)
            if bugs.get("no_output_projection"):
                out = ops.reshape(context, (-1, t, self.num_heads * self.value_dim))
            else:
                out = ops.einsum("btnh,nhd->btd", context, self.wo) + self.bo
            return (out, weights) if return_attention_scores else out

    Buggy.__name__ = "Buggy_" + "_".join(sorted(bugs))
    return Buggy


def _reference(config, query, value, key=None, weights=None, attention_mask=None, use_causal_mask=False,
               training=False):
    """keras.layers.MultiHeadAttention through the driver (named arguments, for the feedback)."""
    return mha_forward(_keras().layers.MultiHeadAttention, config, query, value, key=key, weights=weights,
                       attention_mask=attention_mask, use_causal_mask=use_causal_mask, training=training)


def _bug(**bugs):
    def run(*args, **kwargs):
        return mha_forward(_buggy(**bugs), *args, **kwargs)
    run.target = functools.partial(_buggy, **bugs)  # the buggy class itself, for tests
    return run


def _init_reference(*args, **kwargs):
    return mha_initial_kernels_distinct(_keras().layers.MultiHeadAttention, *args, **kwargs)


def _init_bug(*args, **kwargs):
    return mha_initial_kernels_distinct(_buggy(shared_init=True), *args, **kwargs)


_init_bug.target = functools.partial(_buggy, shared_init=True)


def _weights(rng, d_q, d_v, n, h, d_k=None, hv=None):
    d_k = d_v if d_k is None else d_k
    hv = h if hv is None else hv
    shapes = [(d_q, n, h), (n, h), (d_k, n, h), (n, h), (d_v, n, hv), (n, hv), (n, hv, d_q), (d_q,)]
    return [(rng.normal(size=s) * (0.4 if len(s) > 1 else 0.1)).astype(np.float32) for s in shapes]


def _f32(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(np.float32)


CONFIG = {"num_heads": 2, "key_dim": 4}


def _self(rng):
    x, one = _f32(rng, 2, 5, 8), _f32(rng, 1, 3, 8)
    return [Case((CONFIG, x, x), {"weights": _weights(rng, 8, 8, 2, 4)}, "self-attention, x (2, 5, 8), 2 heads × 4"),
            Case((CONFIG, one, one), {"weights": _weights(rng, 8, 8, 2, 4)}, "a batch of one: x (1, 3, 8)")]


def _cross(rng):
    return [Case(({"num_heads": 3, "key_dim": 2, "value_dim": 5}, _f32(rng, 2, 3, 6), _f32(rng, 2, 7, 4)),
                 {"key": _f32(rng, 2, 7, 5), "weights": _weights(rng, 6, 4, 3, 2, d_k=5, hv=5)},
                 "cross-attention: query (2, 3, 6), value (2, 7, 4), key (2, 7, 5), value_dim=5")]


def _masked(rng):
    x = _f32(rng, 2, 4, 8)
    mask = rng.random((2, 4, 4)) < 0.6
    mask[..., 0] = True
    # T ≠ S, with one query that sees no key: zero weights and a zero context on the explicit
    # path (return_attention_scores=True), which is the path the driver takes.
    cross = rng.random((2, 3, 6)) < 0.6
    cross[..., 2] = True
    cross[0, 1] = False
    one = _f32(rng, 1, 4, 8)
    return [Case((CONFIG, x, x), {"weights": _weights(rng, 8, 8, 2, 4), "attention_mask": mask},
                 "attention_mask (2, 4, 4), True = may attend"),
            Case((CONFIG, _f32(rng, 2, 3, 8), _f32(rng, 2, 6, 8)),
                 {"weights": _weights(rng, 8, 8, 2, 4), "attention_mask": cross},
                 "query (2, 3, 8), value (2, 6, 8), attention_mask (2, 3, 6) where query 1 of example 0 sees no key"),
            Case((CONFIG, one, one), {"weights": _weights(rng, 8, 8, 2, 4), "attention_mask": mask[:1]},
                 "a batch of one: x (1, 4, 8), attention_mask (1, 4, 4)")]


def _causal(rng):
    x, one = _f32(rng, 2, 5, 8), _f32(rng, 1, 4, 8)
    short, long = _f32(rng, 2, 3, 8), _f32(rng, 2, 6, 8)
    weights = lambda: {"weights": _weights(rng, 8, 8, 2, 4), "use_causal_mask": True}  # noqa: E731
    # T ≠ S both ways: the triangle is aligned at the top-left corner (query i sees keys j <= i).
    return [Case((CONFIG, x, x), weights(), "use_causal_mask=True"),
            Case((CONFIG, short, long), weights(), "use_causal_mask=True, query (2, 3, 8), value (2, 6, 8): T < S"),
            Case((CONFIG, long, short), weights(), "use_causal_mask=True, query (2, 6, 8), value (2, 3, 8): T > S"),
            Case((CONFIG, one, one), weights(), "use_causal_mask=True, a batch of one: x (1, 4, 8)")]


def _init(rng):
    return [Case((CONFIG, _f32(rng, 1, 3, 8)), {"seed": 0}, "a freshly built layer")]


def _mixed(rng):
    x = _f32(rng, 2, 4, 8)
    mask = np.ones((2, 4, 4), dtype=bool)
    mask[0, 1] = False  # query 1 of example 0 sees nothing
    return [Case(({**CONFIG, "dtype": "mixed_float16"}, x, x),
                 {"weights": _weights(rng, 8, 8, 2, 4), "attention_mask": mask},
                 "dtype='mixed_float16' with a fully masked query row")]


FORWARD_HINT = ("Project with einsum('btd,dnh->btnh'), scale the query by 1/√key_dim, logits "
                "einsum('btnh,bsnh->bnts'), softmax over the keys, context einsum('bnts,bsnh->btnh'), "
                "then the output projection einsum('btnh,nhd->btd') + bias; return (output, weights).")
SWAPPED = ("The einsum axes are swapped: your scores are (B, N, S, T). Use 'btnh,bsnh->bnts' so each query's "
           "row runs over the keys.")
OUTPUT = "The output projection is missing: combine the heads with the output kernel (N, Hv, D) and add its bias."
SWAPPED_AXES = Bug(SWAPPED, _bug(swapped_axes=True))
INVERTED = Bug("Mask polarity is inverted: True means 'may attend' (Keras's convention).", _bug(inverted_mask=True))

forward_q = Question(
    "ex06.q1", "MyMultiHeadAttention", "MyMultiHeadAttention: weights and forward pass", _reference, [
        Check("self-attention equals keras.layers.MultiHeadAttention (outputs and scores)", 2.0, _self,
              rtol=1e-4, atol=1e-5, hint=FORWARD_HINT,
              bugs=[SWAPPED_AXES,
                    Bug("Scale by √key_dim (the head size), not √d_model.", _bug(scale="d_model")),
                    Bug("The scores are not scaled: multiply the query by 1/√key_dim.", _bug(scale="none")),
                    Bug(OUTPUT, _bug(no_output_projection=True))]),
        Check("cross-attention with T ≠ S, key ≠ value and value_dim ≠ key_dim", 1.0, _cross, rtol=1e-4, atol=1e-5,
              hint="Keys come from `key` (default `value`), values from `value`; value_dim sets the value heads' size.",
              bugs=[SWAPPED_AXES]),
    ], driver="mha_forward", outputs=("output", "scores"))

masks_q = Question(
    "ex06.q2", "MyMultiHeadAttention", "MyMultiHeadAttention: masks", _reference, [
        Check("attention_mask: True = may attend", 1.0, _masked, rtol=1e-4, atol=1e-5,
              hint="Broadcast the (B, T, S) mask over heads and give masked keys zero weight; a query with no "
                   "visible key gets zero weights.",
              bugs=[INVERTED]),
        Check("use_causal_mask=True", 1.0, _causal, rtol=1e-4, atol=1e-5,
              hint="Causal: query t may attend to keys s <= t (lower triangle, diagonal included), for T queries and "
                   "S keys: build the (T, S) triangle from the query's and the value's lengths."),
    ], driver="mha_forward", outputs=("output", "scores"))

robust_q = Question(
    "ex06.q3", "MyMultiHeadAttention", "MyMultiHeadAttention: initialisation and mixed precision", _init_reference, [
        Check("query, key and value kernels start different", 1.0, _init,
              hint="Give each kernel its own initializer instance (Keras 3 initializers are stateless: one "
                   "instance used three times gives W_Q = W_K = W_V).",
              bugs=[Bug("Your query, key and value kernels start identical: one initializer instance shared by three "
                        "add_weight calls gives W_Q = W_K = W_V in Keras 3. Create (or clone) one per weight.",
                        _init_bug)]),
    ], driver="mha_initial_kernels_distinct")

mixed_q = Question(
    "ex06.q4", "MyMultiHeadAttention", "MyMultiHeadAttention: mixed precision", _reference, [
        Check("mixed_float16: no NaN for a fully masked row, close to Keras", 1.0, _mixed, rtol=2e-2, atol=2e-2,
              hint="Forward **kwargs (dtype) to Layer.__init__, cast the logits to float32 before masking and softmax, "
                   "and give fully masked rows zero weight.",
              bugs=[Bug("The softmax runs in float16: -1e9 becomes -inf there and a fully masked row turns into NaN. "
                        "Cast the logits to float32 before masking and softmax, then cast the weights back.",
                        _bug(float16_softmax=True))]),
    ], driver="mha_forward", outputs=("output", "scores"))

EXERCISE = Exercise("ex06", "ex06_keras_layer", "A Keras multi-head attention layer",
                    [forward_q, masks_q, robust_q, mixed_q], memory_mb=8192)
