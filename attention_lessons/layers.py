"""Keras 3 attention layers written from scratch (lessons 09–13).

:class:`MultiHeadAttention` is a complete drop-in for ``keras.layers.MultiHeadAttention``
(Keras 3.15): every constructor argument — ``attention_axes`` (inputs of any rank >= 3,
e.g. attention over an image's pixels), several output axes, ``sliding_window``,
``use_gate``, ``flash_attention`` — the same call signature, and the same weights,
created in the same order, so

>>> ours.set_weights(keras_layer.get_weights())          # doctest: +SKIP

makes the two layers compute the same function. Everything it does is spelled out with
``add_weight`` and one einsum per matrix product (equations built for the inputs' rank
by :func:`_attention_equations`); there is no hidden framework layer. Keras's own test
file for its layer runs against this one (tests/test_keras_mha_suite.py).

What differs from Keras, on purpose (see :class:`MultiHeadAttention` for details):

* one code path. Keras switches per call between a *fast* path
  (``keras.ops.dot_product_attention``) and an *explicit* one
  (``return_attention_scores=True`` or ``dropout > 0``); ours always computes like the
  explicit path, and in float32 gives the same outputs and scores as it up to float32
  rounding (the same operations in the same order, but not always the same kernels: equal
  bit for bit on the course's machine, a few float32 eps — ~1e-7 relative — apart on
  others); to the fast path it differs by float32 rounding too, ~1e-7 relative;
* the logits are masked and soft-maxed in float32 whatever the compute dtype, so
  ``mixed_float16`` never sees ``-1e9`` overflow to ``-inf``;
* a query that may attend to no key gets zero weights and a zero context (its output is
  the output bias). Keras's explicit path does the same, its fast path gives such a row
  uniform weights (the mean of the values);
* with several attention axes, masks work as they should where Keras's break: padding
  masks are laid out like the scores, and the causal mask and sliding window run along
  the (one) attention axis, where Keras always takes axis 1.

Also here: :class:`PositionalEmbedding`, :class:`TransformerEncoderBlock`,
:class:`TransformerDecoderBlock`, :func:`from_keras`, and :func:`chunked_attention`
(online-softmax attention for long sequences, lesson 14).

This module imports TensorFlow and Keras; the NumPy modules of the package never do.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from .attention import sinusoidal_positions
from .device import import_tensorflow

tf = import_tensorflow()  # before Keras, so TensorFlow's C++ start-up logs stay quiet

import keras  # noqa: E402
from keras import ops  # noqa: E402

__all__ = [
    "MultiHeadAttention",
    "PositionalEmbedding",
    "TransformerEncoderBlock",
    "TransformerDecoderBlock",
    "from_keras",
    "chunked_attention",
]

_PACKAGE = "attention_lessons"

# Masked logits are replaced by the most negative *finite* float32. For any row with a
# visible key, exp(fill - row_max) underflows to exactly 0, so the masked keys get
# exactly zero weight and the others already sum to 1. It is never -inf: a fully masked
# row computes exp(0) = 1 everywhere instead of exp(-inf - -inf) = NaN, and is then zeroed.
_MASK_FILL = float(np.finfo(np.float32).min)

# Compute dtypes too narrow for a softmax (float16 overflows above 65504 and has ~3
# significant digits; bfloat16 has ~2): their logits are promoted to float32.
_LOW_PRECISION = ("float16", "bfloat16")


# --------------------------------------------------------------------------- helpers


def _check_int(value, name: str, minimum: int = 1, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Invalid argument `{name}`: it must be an int >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"Invalid argument `{name}`: it must be >= {minimum}; got {value}.")
    return int(value)


def _check_rate(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number in [0, 1); got {value!r}.")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1); got {value}.")
    return float(value)


def _get_keras_mask(x):
    """The padding mask Keras attached to ``x`` (``Embedding(mask_zero=True)``), or None."""
    return getattr(x, "_keras_mask", None)


def _set_keras_mask(x, mask) -> None:
    try:
        x._keras_mask = mask
    except AttributeError:  # some tensor types take no attributes; the mask is advisory
        pass


def _dtype_name(x) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def _derived_seed(base: int, index: int) -> int:
    """A seed for weight number ``index`` that differs from every other weight's."""
    return int(np.random.SeedSequence([int(base), index]).generate_state(1)[0] >> 1)


class _AsMatrix:
    """Initialise a multi-axis kernel as the 2-D matrix it really is, then reshape.

    A query kernel ``(D, N, H)`` is a ``D × (N·H)`` matrix: fan-in ``D``, fan-out ``N·H``.
    Keras's fan computation would read a 3-D shape as a convolution kernel and give
    weights several times too small (Keras 3.15 fixes this for EinsumDense only), so
    variance-scaling initialisers (Glorot, He, LeCun) and Orthogonal see the 2-D shape.
    """

    def __init__(self, initializer, input_axes: int):
        self.initializer = initializer
        self.input_axes = input_axes

    def __call__(self, shape, dtype=None):
        rows = math.prod(shape[: self.input_axes])
        matrix = self.initializer((rows, math.prod(shape[self.input_axes:])), dtype=dtype)
        return ops.reshape(matrix, shape)


def _fresh_initializer(initializer, seed: int | None, index: int, input_axes: int | None):
    """A private copy of ``initializer`` for weight number ``index``.

    Keras 3 initialisers are stateless: calling one instance three times gives three
    identical matrices (W_Q == W_K == W_V, and every head sees the same projection).
    So each weight gets its own instance, and seeded ones get a seed of their own.
    """
    if isinstance(initializer, keras.initializers.Initializer):
        config = initializer.get_config()
        if "seed" in config:
            if seed is not None:
                config["seed"] = _derived_seed(seed, index)
            elif isinstance(config["seed"], numbers.Integral):
                config["seed"] = _derived_seed(config["seed"], index)
            # seed None: from_config draws a new random seed for every copy.
        initializer = initializer.__class__.from_config(config)
    # else: a plain function; nothing to copy (it keeps its own randomness).
    fans_matter = isinstance(initializer, (keras.initializers.VarianceScaling,
                                           keras.initializers.Orthogonal))
    if input_axes is not None and fans_matter and getattr(initializer, "input_axes", None) is None:
        return _AsMatrix(initializer, input_axes)
    return initializer


def _expand_to_heads(mask, rank: int = 4, attention_axes: int = 1):
    """Give a mask of lower rank the missing axes, at the heads' place.

    The scores have shape ``(B, <other axes>, N, <query positions>, <key positions>)``: for
    rank-3 inputs ``(B, N, T, S)``. A mask without heads, ``(B, T, S)``, gets its new axis
    in front of the ``2 · attention_axes`` position axes, and a ``(T, S)`` mask also a batch
    axis (Keras's rule). ``rank``: the rank to reach; ``attention_axes``: how many axes attend.
    """
    while len(mask.shape) < rank:
        mask = ops.expand_dims(mask, axis=-2 * attention_axes - 1)
    return mask


def _einsum(equation, a, b):
    """``keras.ops.einsum``, or TensorFlow's fused einsum where that is as accurate.

    ``tf.einsum`` is one op (its transposes and reshapes run inside C++), where
    ``keras.ops.einsum`` issues three to five: fewer ops is what makes small layers fast,
    eagerly and in graphs. For float32 and float64 both are accurate (they may differ in
    the last bits on some CPUs: other kernels, other summation orders). For float16 and
    bfloat16 they are not interchangeable: with TensorFlow's own (Eigen) CPU kernels — no
    oneDNN, as on Apple silicon — ``tf.einsum`` accumulates the products in the
    narrow dtype itself, an error that grows with the contracted length (measured with
    ``scripts/portable.py``, relative to the largest output, length 1024: float16 1.1e-2
    instead of 2.7e-4, bfloat16 6.5e-2 instead of 4.8e-3). ``keras.ops.einsum`` goes through
    ``tf.matmul``, which accumulates in float32 with and without oneDNN (measured), so both
    narrow dtypes take Keras's route (with oneDNN, on the course's machine, the two gave
    bit-identical results).
    """
    if _dtype_name(a) in _LOW_PRECISION:
        return ops.einsum(equation, a, b)
    return tf.einsum(equation, a, b)


def _causal_mask(t, s):
    """(1, T, S) bool, True where key s <= query t (top-left aligned, as Keras)."""
    rows = ops.expand_dims(ops.arange(t), -1)        # (T, 1)
    cols = ops.expand_dims(ops.arange(s), 0)         # (1, S)
    return ops.expand_dims(ops.greater_equal(rows, cols), 0)


def _sliding_window_mask(t, s, window: int):
    """(1, T, S) bool, True where ``|t - s| < window``: a band of ``2·window - 1`` keys.

    Keras's ``sliding_window`` is symmetric: query ``t`` sees keys ``t-window+1 .. t+window-1``
    (cut at 0 and S-1). ANDed with the causal mask it becomes the causal sliding window of
    Mistral or Gemma: keys ``t-window+1 .. t``, the query itself and ``window-1`` before it.
    """
    rows = ops.expand_dims(ops.arange(t), -1)        # (T, 1)
    cols = ops.expand_dims(ops.arange(s), 0)         # (1, S)
    return ops.expand_dims(ops.less(ops.abs(rows - cols), window), 0)


# --------------------------------------------------- einsum equations for any attention_axes

# An einsum equation names every axis with a letter. Fixed: b (batch), n (heads), h (the
# channels of one head), d (input features). The other axes take letters from these pools,
# in order, so that a (batch, time, features) input gives the equations of lesson 09.
_FREE_LETTERS = "acfgi"        # axes that do not attend: every index has its own attention
_QUERY_LETTERS = "tuvwxyz"     # the queries' attention axes: t ("target"), u, v, ...
_KEY_LETTERS = "srqpoml"       # the keys' and values' attention axes: s ("source"), r, q, ...
_OUTPUT_LETTERS = "dejk"       # the output's feature axes (output_shape)


@dataclasses.dataclass(frozen=True)
class AttentionEquations:
    """The einsum equations of one :class:`MultiHeadAttention` layer (``layer.equations``).

    ``query`` projects the query (and the gate), ``key`` the key and the value, ``scores``
    takes query·key dot products, ``combine`` averages the values with the weights,
    ``output`` projects the heads back to the output features. ``rank`` is the inputs'
    rank; ``attention_axes`` (in the order given) and ``free_axes`` (those that do not
    attend) are axes of the inputs. The scores end with one query and one key axis per
    attention axis; the softmax runs over the key axes together.
    """

    query: str
    key: str
    scores: str
    combine: str
    output: str
    rank: int
    attention_axes: tuple
    free_axes: tuple


def _normalize_attention_axes(attention_axes, rank: int, shape=None) -> tuple:
    """``attention_axes`` (None, or axes of the inputs, negative allowed) -> positive axes.

    None means every axis except the batch (0) and the features (rank - 1), as in Keras. A
    negative axis counts from the end of the *inputs*: for rank 4, -2 is axis 2.
    """
    if attention_axes is None:
        return tuple(range(1, rank - 1))
    axes = tuple(a + rank if a < 0 else a for a in attention_axes)
    for given, axis in zip(attention_axes, axes):
        if not 1 <= axis <= rank - 2:
            shown = "" if shape is None else f" (shape {tuple(shape)})"
            raise ValueError(
                f"`attention_axes`={tuple(attention_axes)} names axis {given}, which is not an axis "
                f"that inputs of rank {rank}{shown} can attend over: use axes 1 .. {rank - 2} (or "
                f"{-(rank - 1)} .. -2); axis 0 is the batch and axis {rank - 1} (-1) the features."
            )
    if len(set(axes)) != len(axes):
        raise ValueError(f"`attention_axes`={tuple(attention_axes)} names the same axis twice "
                         f"for inputs of rank {rank}: {axes}.")
    return axes


def _attention_equations(rank: int, attention_axes: tuple, output_axes: int = 1) -> AttentionEquations:
    """The einsum equations of multi-head attention over ``attention_axes`` of rank-``rank`` inputs.

    The idea of Keras's ``_build_attention_equation``, with readable letters. Every axis of
    the inputs between batch and features either *attends* (its positions are the query and
    key positions) or is *free*: each of its indices is a separate attention problem, like
    the batch (query and key must then have the same size there). After the projection
    every input axis keeps its letter and ``nh`` (heads, channels) replaces the features.
    A query axis and the matching key axis need two letters (t and s), since T may differ
    from S; a free axis shares one. The scores are laid out as
    ``(batch, <free axes>, heads, <query positions>, <key positions>)``. Examples
    (scores, then combine):

    * a sequence ``(B, T, D)``, axis 1 — lesson 09's ``btnh,bsnh->bnts`` and
      ``bnts,bsnh->btnh``;
    * an image ``(B, rows, cols, C)``, axes (1, 2) — ``btunh,bsrnh->bntusr`` and
      ``bntusr,bsrnh->btunh``: every pixel ``(t, u)`` attends to every pixel ``(s, r)``, and
      the softmax runs over both key axes ``s, r`` together (``rows · cols`` keys);
    * ``A`` sequences side by side ``(B, A, T, D)``, axis 2 — ``batnh,basnh->bants`` and
      ``bants,basnh->batnh``: axis 1 (``a``) is free, like the batch.

    The projections are ``btd,dnh->btnh`` (a sequence) or ``btud,dnh->btunh`` (an image),
    the output projection ``btnh,nhd->btd`` (with ``output_shape=(P, Q)``: ``btnh,nhde->btde``).
    """
    n_free = rank - 2 - len(attention_axes)
    if len(attention_axes) > len(_QUERY_LETTERS) or n_free > len(_FREE_LETTERS) or \
            output_axes > len(_OUTPUT_LETTERS):
        raise ValueError(
            f"Inputs of rank {rank} with attention_axes={attention_axes} and {output_axes} output axes "
            f"need more einsum letters than this layer names: at most {len(_QUERY_LETTERS)} attention "
            f"axes, {len(_FREE_LETTERS)} other axes and {len(_OUTPUT_LETTERS)} output axes."
        )
    free_axes = tuple(axis for axis in range(1, rank - 1) if axis not in attention_axes)
    query, key = "b", "b"                                  # the letters of the inputs' axes
    for axis in range(1, rank - 1):
        if axis in attention_axes:
            i = attention_axes.index(axis)                 # in the order the user gave them
            query, key = query + _QUERY_LETTERS[i], key + _KEY_LETTERS[i]
        else:
            letter = _FREE_LETTERS[free_axes.index(axis)]
            query, key = query + letter, key + letter
    free = "".join(_FREE_LETTERS[:n_free])
    positions_q = _QUERY_LETTERS[:len(attention_axes)]
    positions_k = _KEY_LETTERS[:len(attention_axes)]
    scores = f"b{free}n{positions_q}{positions_k}"
    out = _OUTPUT_LETTERS[:output_axes]
    return AttentionEquations(
        query=f"{query}d,dnh->{query}nh",
        key=f"{key}d,dnh->{key}nh",
        scores=f"{query}nh,{key}nh->{scores}",
        combine=f"{scores},{key}nh->{query}nh",
        output=f"{query}nh,nh{out}->{query}{out}",
        rank=rank,
        attention_axes=tuple(attention_axes),
        free_axes=free_axes,
    )


def _zero_rows_without_keys(context, visible):
    """Zero the context (B, T, N, Hv) of the queries whose mask row has no visible key.

    ``visible``: bool (B|1, N|1, T), ``any(mask)`` over the keys. A cheaper way to give fully
    masked rows a zero context than zeroing their (B, N, T, S) weights, when the weights are
    not returned.
    """
    visible = ops.expand_dims(ops.transpose(visible, (0, 2, 1)), -1)   # (B|1, T, N|1, 1)
    return ops.where(visible, context, ops.zeros((), dtype=context.dtype))


def _softmax_over_keys(logits, key_axes: int):
    """Softmax over the last ``key_axes`` axes together: all the key positions of one query."""
    if key_axes == 1 and len(logits.shape) <= 5:
        return ops.softmax(logits, axis=-1)
    # Several key axes (an image's rows and columns: rows·cols keys per query), or scores of
    # rank > 5, which oneDNN's softmax kernel refuses: the same three steps, by hand.
    axes = tuple(range(-key_axes, 0))
    shifted = ops.subtract(logits, ops.max(logits, axis=axes, keepdims=True))   # <= 0: no overflow
    exponentials = ops.exp(shifted)
    return ops.divide(exponentials, ops.sum(exponentials, axis=axes, keepdims=True))


def _check_output_shape(output_shape):
    """None, an int, or a tuple of ints >= 1 -> None or a tuple of ints."""
    if output_shape is None:
        return None
    if isinstance(output_shape, numbers.Integral) and not isinstance(output_shape, bool):
        output_shape = (output_shape,)
    else:
        try:
            output_shape = tuple(output_shape)
        except TypeError:
            raise ValueError(
                "Invalid `output_shape`: it must be an int or a tuple of ints (the output's "
                f"feature axes); got {output_shape!r}."
            ) from None
    if not 1 <= len(output_shape) <= len(_OUTPUT_LETTERS):
        raise ValueError(
            f"Invalid `output_shape`: it must have 1 to {len(_OUTPUT_LETTERS)} axes; got {output_shape!r}."
        )
    return tuple(_check_int(size, "output_shape") for size in output_shape)


def _check_attention_axes(attention_axes):
    """None, an int or a list/tuple of ints (not the batch axis 0) -> None or a tuple."""
    if attention_axes is None:
        return None
    if isinstance(attention_axes, numbers.Integral) and not isinstance(attention_axes, bool):
        attention_axes = (attention_axes,)
    if not isinstance(attention_axes, (list, tuple)) or not attention_axes or any(
            isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in attention_axes):
        raise ValueError(
            "`attention_axes` must be None, an int, or a non-empty list or tuple of ints (axes of "
            f"the inputs); got {attention_axes!r}."
        )
    attention_axes = tuple(int(a) for a in attention_axes)
    if 0 in attention_axes:
        raise ValueError(f"`attention_axes`={attention_axes} includes axis 0, the batch axis, "
                         "which never attends.")
    if len(set(attention_axes)) != len(attention_axes):
        raise ValueError(f"`attention_axes`={attention_axes} names the same axis twice.")
    return attention_axes


def _dims_agree(a, b) -> bool:
    """Two shapes with the same rank and equal sizes wherever both are known."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


# ----------------------------------------------------------------- MultiHeadAttention


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiHeadAttention(keras.layers.Layer):
    r"""Multi-head attention, from scratch; a drop-in for ``keras.layers.MultiHeadAttention``.

    For each head :math:`n = 1..N`:

    .. math::
        Q_n = x_q W^Q_n + b^Q_n,\quad K_n = x_k W^K_n + b^K_n,\quad V_n = x_v W^V_n + b^V_n,

        A_n = \operatorname{softmax}\!\big(Q_n K_n^\top / \sqrt{H} \;\text{(masked)}\big),
        \qquad \text{output} = \sum_n A_n V_n W^O_n + b^O .

    With ``use_gate=True`` each head's context is multiplied, channel by channel, by a gate
    computed from the query, before the output projection:
    :math:`\text{output} = \sum_n \big(\sigma(x_q W^G_n + b^G_n) \odot A_n V_n\big) W^O_n + b^O`
    (Qiu et al. 2025, "Gated Attention for Large Language Models").

    Parameters
    ----------
    num_heads : int
        Number of heads ``N``.
    key_dim : int
        Size ``H`` of each query/key head.
    value_dim : int, optional
        Size ``Hv`` of each value head; defaults to ``key_dim``.
    dropout : float, default 0.0
        Dropout rate on the attention weights, applied only when ``training=True``.
    use_bias : bool, default True
        Add biases to the projections (and the gate).
    output_shape : int or tuple of ints, optional
        The output's feature axes: ``8`` gives ``(B, T, 8)``, ``(8, 8)`` gives
        ``(B, T, 8, 8)``. Defaults to the query's feature size.
    attention_axes : int or tuple of ints, optional
        The axes of the inputs that attend; the default ``None`` means every axis between
        batch and features. For a sequence ``(B, T, D)`` that is axis 1. For an image
        ``(B, rows, cols, C)`` the default ``(1, 2)`` lets every pixel attend to every pixel
        (the softmax runs over ``rows · cols`` keys); ``attention_axes=2`` makes each row a
        separate sequence whose pixels attend within the row (axial attention). An axis that
        does not attend works like the batch: query and key must have the same size there.
        Negative axes count from the end of the inputs (``-2``: the axis before the features).
    sliding_window : int, optional
        Query position ``t`` sees only key positions ``s`` with ``|t - s| < sliding_window``
        (Keras's symmetric band of ``2·sliding_window - 1`` keys). With
        ``use_causal_mask=True``: ``t - sliding_window < s <= t``, the causal sliding window
        of Mistral and Gemma. It is ANDed with every other mask. Needs one attention axis.
    flash_attention : bool, optional
        Keras's request for a fused flash-attention kernel. ``None`` (default) and ``False``:
        ordinary attention (on TensorFlow there is no such kernel, and Keras's global
        ``keras.config.enable_flash_attention()`` only means "where available"). ``True``
        means "must": as Keras on TensorFlow, the layer then raises where Keras would call
        the kernel (rank-3 inputs), with ``dropout > 0`` at construction, and with
        ``return_attention_scores=True`` at call.
    kernel_initializer, bias_initializer : str, dict or keras.initializers.Initializer
        Each weight gets its own copy (initialisers are stateless in Keras 3), and kernels
        are initialised as the 2-D matrices they are (``(D, N·H)`` and ``(N·Hv, D_out)``).
    kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint
        As in Keras (they apply to the gate's weights too).
    use_gate : bool, default False
        Gate each head's context with ``sigmoid(x_q W^G + b^G)``, before the output projection.
    seed : int, optional
        Seeds the dropout and, unlike Keras, also the initial weights: the same seed gives
        the same initial weights, and every weight gets its own seed derived from it.
    **kwargs
        ``name``, ``dtype`` (a dtype policy such as ``"mixed_float16"``), ``trainable``.

    Call arguments
    --------------
    query : tensor, shape (B, T, D_q)
        Or any rank >= 3, ``(B, ..., D_q)``, with ``attention_axes``.
    value : tensor, shape (B, S, D_v)
        The same rank as ``query``; equal sizes on the axes that do not attend.
    key : tensor, shape (B, S, D_k), optional
        Defaults to ``value``. All its axes but the last equal the value's.
    query_mask, value_mask, key_mask : bool tensor, shape (B, T) / (B, S), optional
        Padding masks (True = real token; for other ranks, the input's shape without the
        features). Keras fills them in from the inputs' Keras masks
        (``Embedding(mask_zero=True)``); they become ``[B, T, 1]`` and ``[B, 1, S]`` masks.
        Unlike Keras, an explicitly passed ``query_mask`` is honoured, and the inputs keep
        their Keras masks after the call.
    attention_mask : bool or 0/1 int tensor, broadcastable to (B, T, S), optional
        True = query ``t`` may attend to key ``s``. ``(T, S)`` and ``(B, N, T, S)`` work too.
        For other inputs: broadcastable to the scores without (or with) the heads axis,
        e.g. ``(B, rows, cols, rows, cols)`` for an image.
    return_attention_scores : bool, default False
        Also return the attention weights (before dropout).
    training : bool, optional
        Dropout is active only when True.
    use_causal_mask : bool, default False
        Query ``t`` sees keys ``0..t`` only (top-left aligned when ``T != S``). Needs one
        attention axis (positions along it count as time).

    All masks are combined with a logical AND.

    Returns
    -------
    output : tensor, shape (B, T, D_out)
        The query's shape with ``output_shape`` for its last axis, in the compute dtype; it
        carries the query's Keras mask.
    scores : tensor, shape (B, N, T, S)
        Only with ``return_attention_scores=True``. In general
        ``(B, <axes that do not attend>, N, <query positions>, <key positions>)``: for an
        image with the default axes ``(B, N, rows, cols, rows, cols)``.

    Notes
    -----
    *Numerics.* The query is scaled by ``1/√H`` before the dot product, as on Keras's
    explicit path (``keras.ops.dot_product_attention``, Keras's fast path, scales the
    logits instead: equal up to float32 rounding, ~1e-7 relative). The logits are cast to
    float32 when the compute dtype is float16/bfloat16 (float64 stays float64), masked
    with the most negative finite float32, soft-maxed, and the masked weights are then
    set to exactly 0. Because the fill underflows ``exp`` to exactly 0 in any row with a
    visible key, those rows already sum to 1 and need no renormalising; a *fully masked*
    row becomes all zeros, so its context is 0 and its output equals the output bias —
    never NaN, in any dtype. Keras's explicit path gives the same zeros; its fast path
    (rank-3 inputs, no dropout, no scores returned) gives uniform weights, the mean of the
    values. Rows can be fully masked by padding, by ``attention_mask``, and by a
    ``sliding_window`` when ``T > S`` (a query beyond the last key plus the window).
    The weights go back to the compute dtype before the dropout and the product with the
    values.

    *Several axes.* The einsum equations are built for the inputs' rank and
    ``attention_axes`` at build time and kept in ``layer.equations``
    (:class:`AttentionEquations`; see :func:`_attention_equations` for examples). Keras
    takes its explicit path for every input of rank > 3, so ours computes the same thing.
    Where Keras's masks break on such inputs, this layer is consistent: padding masks are
    laid out like the scores, a causal mask or sliding window runs along the one attention
    axis (Keras builds it from axis 1 whatever ``attention_axes`` says, and fails unless
    that is the attention axis), and masks of different ranks gain their missing axes at
    the heads' place before they are combined.

    *Weights* (``get_weights()`` order, as Keras): query kernel ``(D_q, N, H)``, query bias
    ``(N, H)``, key kernel ``(D_k, N, H)``, key bias, [gate kernel ``(D_q, N, Hv)``, gate
    bias ``(N, Hv)``, with ``use_gate``], value kernel ``(D_v, N, Hv)``, value bias
    ``(N, Hv)``, output kernel ``(N, Hv, *output_shape)``, output bias ``output_shape``;
    without biases only the kernels.

    *Override point.* ``_compute_attention(query, key, value, attention_mask, training,
    return_attention_scores, use_causal_mask)`` takes the projected heads and returns
    ``(context, scores)``, with Keras's signature, so subclasses written for Keras's layer
    work here too.

    Examples
    --------
    >>> layer = MultiHeadAttention(num_heads=2, key_dim=4)              # doctest: +SKIP
    >>> out, scores = layer(x, x, use_causal_mask=True,
    ...                     return_attention_scores=True)               # doctest: +SKIP
    >>> images = keras.Input((8, 8, 16))                                # doctest: +SKIP
    >>> MultiHeadAttention(2, 8)(images, images).shape                  # doctest: +SKIP
    (None, 8, 8, 16)
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        value_dim: int | None = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        output_shape=None,
        attention_axes=None,
        sliding_window: int | None = None,
        flash_attention: bool | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate: bool = False,
        seed: int | None = None,
        **kwargs,
    ):
        num_heads = _check_int(num_heads, "num_heads")
        key_dim = _check_int(key_dim, "key_dim")
        value_dim = _check_int(value_dim, "value_dim", allow_none=True)
        dropout = _check_rate(dropout, "dropout")
        for flag, name in ((use_bias, "use_bias"), (use_gate, "use_gate")):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"`{name}` must be True or False; got {flag!r}.")
        if flash_attention is not None and not isinstance(flash_attention, (bool, np.bool_)):
            raise ValueError(f"`flash_attention` must be None, True or False; got {flash_attention!r}.")
        seed = _check_int(seed, "seed", minimum=0, allow_none=True)
        output_shape = _check_output_shape(output_shape)
        attention_axes = _check_attention_axes(attention_axes)
        sliding_window = _check_int(sliding_window, "sliding_window", allow_none=True)
        # Keras: the argument, or else the global switch (keras.config.enable_flash_attention
        # stores None, "where available"; only an explicit True insists).
        use_flash = bool(flash_attention or keras.config.is_flash_attention_enabled())
        if use_flash and dropout > 0.0:
            raise ValueError(
                f"`dropout`={dropout} with `flash_attention=True`: Dropout is not supported when "
                "flash attention is enabled (a fused kernel never holds the weights to drop). "
                "Set dropout=0.0, or flash_attention=None."
            )
        # Keras's Layer handles activity_regularizer itself (applied to the output).
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.supports_masking = True
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = key_dim if value_dim is None else value_dim
        self.dropout = dropout
        self.use_bias = bool(use_bias)
        self.use_gate = bool(use_gate)
        self._output_shape = output_shape             # None or a tuple (Keras's name)
        self.attention_axes = attention_axes          # as given (None = all); see build
        self.sliding_window = sliding_window
        self.flash_attention = None if flash_attention is None else bool(flash_attention)
        self._flash_attention = use_flash             # what the layer does (Keras's name)
        self.seed = seed
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._inverse_sqrt_key_dim = 1.0 / math.sqrt(float(key_dim))
        self.equations = None                         # set by build: depends on the inputs' rank
        self.dropout_layer = keras.layers.Dropout(
            rate=dropout, seed=seed, dtype=self.dtype_policy, name="attention_dropout"
        )

    # ------------------------------------------------------------------ build

    def build(self, query_shape, value_shape, key_shape=None):
        """Check the shapes, build the einsum equations, create the weights in Keras's order."""
        key_shape = value_shape if key_shape is None else key_shape
        query_shape, value_shape, key_shape = tuple(query_shape), tuple(value_shape), tuple(key_shape)
        if not _dims_agree(value_shape[1:-1], key_shape[1:-1]):
            raise ValueError(
                f"`key` has shape {key_shape} and `value` has shape {value_shape}: all their dimensions, "
                "except the last one (features), must be equal (one value per key)."
            )
        rank = len(query_shape)
        for shape, name in ((query_shape, "query"), (value_shape, "value"), (key_shape, "key")):
            if len(shape) < 3 or shape[-1] is None:
                raise ValueError(
                    f"`{name}` must have shape (batch, time, features) — or (batch, ..., features), "
                    f"rank >= 3 — with known features; got shape {shape}."
                )
            if len(shape) != rank:
                raise ValueError(f"`query` has shape {query_shape} and `{name}` has shape {shape}: "
                                 "they must have the same rank.")
        axes = _normalize_attention_axes(self.attention_axes, rank, query_shape)
        for axis in range(1, rank - 1):
            if axis not in axes and not _dims_agree(query_shape[axis:axis + 1], value_shape[axis:axis + 1]):
                raise ValueError(
                    f"`query` has shape {query_shape} and `value` has shape {value_shape}: axis {axis} "
                    f"does not attend (attention_axes={axes}), so each of its indices is a separate "
                    "attention problem, and its sizes must be equal."
                )
        if self.sliding_window is not None and len(axes) > 1:
            raise ValueError(
                f"`sliding_window`={self.sliding_window} needs one attention axis along which to "
                f"count positions; got attention_axes={axes} for inputs of shape {query_shape}."
            )
        d_out = (query_shape[-1],) if self._output_shape is None else self._output_shape
        self.equations = _attention_equations(rank, axes, len(d_out))
        n, h, h_v = self.num_heads, self.key_dim, self.value_dim

        def weight(index, name, shape):
            # `index` picks the weight's seed (0-7 in Keras's order without the gate, 8-9 for
            # the gate), so a kernel's initial values depend neither on use_bias nor on use_gate.
            if name.endswith("kernel"):
                # (D, N, H) kernels take their first axis as input, (N, Hv, D_out) its first two.
                init = _fresh_initializer(self.kernel_initializer, self.seed, index,
                                          input_axes=2 if name == "output_kernel" else 1)
                regularizer, constraint = self.kernel_regularizer, self.kernel_constraint
            else:
                init = _fresh_initializer(self.bias_initializer, self.seed, index, input_axes=None)
                regularizer, constraint = self.bias_regularizer, self.bias_constraint
            return self.add_weight(name=name, shape=shape, initializer=init,
                                   regularizer=regularizer, constraint=constraint, trainable=True)

        def bias(index, name, shape):
            return weight(index, name, shape) if self.use_bias else None

        self.query_kernel = weight(0, "query_kernel", (query_shape[-1], n, h))
        self.query_bias = bias(1, "query_bias", (n, h))
        self.key_kernel = weight(2, "key_kernel", (key_shape[-1], n, h))
        self.key_bias = bias(3, "key_bias", (n, h))
        self.gate_kernel = self.gate_bias = None
        if self.use_gate:                  # Keras creates the gate between the key and the value
            self.gate_kernel = weight(8, "gate_kernel", (query_shape[-1], n, h_v))
            self.gate_bias = bias(9, "gate_bias", (n, h_v))
        self.value_kernel = weight(4, "value_kernel", (value_shape[-1], n, h_v))
        self.value_bias = bias(5, "value_bias", (n, h_v))
        self.output_kernel = weight(6, "output_kernel", (n, h_v, *d_out))
        self.output_bias = bias(7, "output_bias", d_out)
        self.built = True

    # ------------------------------------------------------------------ call

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        # Shape comments are for (batch, time, features) inputs. With more axes, T stands for
        # all of the query's axes between batch and features, S for the key's (see
        # self.equations for the exact einsums).
        if key is None:
            key = value
        equations = self.equations
        if len(query.shape) != equations.rank:
            raise ValueError(f"`query` has shape {tuple(query.shape)}, but the layer was built for "
                             f"inputs of rank {equations.rank}.")
        if use_causal_mask and len(equations.attention_axes) > 1:
            raise ValueError(
                "`use_causal_mask=True` needs one attention axis along which to count time; got "
                f"attention_axes={equations.attention_axes} for `query` of shape {tuple(query.shape)}."
            )
        # Layer.__call__ fills the *_mask arguments from the inputs' Keras masks, but only
        # when it sees several tensor arguments, and a direct .call() never: read them here.
        query_mask = _get_keras_mask(query) if query_mask is None else query_mask
        value_mask = _get_keras_mask(value) if value_mask is None else value_mask
        if key_mask is None and key is not value:
            key_mask = _get_keras_mask(key)
        # As in Keras: when the causal mask is the only mask, _compute_attention builds it
        # itself (Keras, to reach a fused causal kernel; we, to know that no row is empty).
        # Not for a subclass that overrides _compute_attention: it gets the whole mask.
        causal_only = (
            use_causal_mask
            and all(m is None for m in (query_mask, value_mask, key_mask, attention_mask))
            and self.sliding_window is None
            and type(self)._compute_attention is MultiHeadAttention._compute_attention
        )
        mask = None if causal_only else self._compute_attention_mask(
            query, value, query_mask, value_mask, key_mask, attention_mask, use_causal_mask
        )

        # Projections: one matrix product per input, all heads at once.
        if self.use_gate:
            gate = _einsum(equations.query, query, self.gate_kernel)    # (B, T, N, Hv)
            if self.use_bias:
                gate = ops.add(gate, self.gate_bias)
            gate = ops.sigmoid(gate)                                     # each in (0, 1)
        q = _einsum(equations.query, query, self.query_kernel)          # (B, T, N, H)
        k = _einsum(equations.key, key, self.key_kernel)                # (B, S, N, H)
        v = _einsum(equations.key, value, self.value_kernel)            # (B, S, N, Hv)
        if self.use_bias:
            q = ops.add(q, self.query_bias)
            k = ops.add(k, self.key_bias)
            v = ops.add(v, self.value_bias)

        context, scores = self._compute_attention(
            q, k, v, mask, training, return_attention_scores,
            **({"use_causal_mask": True} if causal_only else {}),
        )                                                                # (B, T, N, Hv)
        if self.use_gate:
            context = ops.multiply(context, gate)                        # (B, T, N, Hv)
        output = _einsum(equations.output, context, self.output_kernel)  # (B, T, D_out)
        if self.use_bias:
            output = ops.add(output, self.output_bias)

        if query_mask is not None:
            _set_keras_mask(output, query_mask)
        if return_attention_scores:
            return output, scores
        return output

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        """Scaled dot-product attention on projected heads (Keras's signature and override point).

        ``query`` (B, T, N, H), ``key`` (B, S, N, H), ``value`` (B, S, N, Hv) (more axes with
        ``attention_axes``); ``attention_mask`` bool, broadcastable to (B, T, S), or None;
        ``use_causal_mask`` adds the causal mask here. Returns the context (B, T, N, Hv)
        and the weights (B, N, T, S) before dropout.
        """
        if self._flash_attention:           # what Keras's layer does on TensorFlow
            if return_attention_scores:
                raise ValueError(
                    "`return_attention_scores=True` with `flash_attention=True`: Returning attention "
                    "scores is not supported when flash attention is enabled. Please disable flash "
                    "attention to access attention scores."
                )
            if len(query.shape) == 4:       # rank-3 inputs: where Keras would call the kernel
                raise ValueError(
                    "`flash_attention=True`: Flash attention is not supported in tensorflow backend "
                    "(Keras has flash kernels on JAX and torch only; keras.layers.MultiHeadAttention "
                    "raises here too). Use flash_attention=None."
                )
        equations = self.equations
        key_axes = len(equations.attention_axes)
        # A causal mask alone leaves every query key 0, so no row can be fully masked.
        rows_may_be_empty = attention_mask is not None
        if use_causal_mask:
            axis = equations.attention_axes[0]
            causal = _causal_mask(ops.shape(query)[axis], ops.shape(key)[axis])   # (1, T, S)
            attention_mask = causal if attention_mask is None else ops.logical_and(
                ops.cast(attention_mask, "bool"), causal)

        # Scaling the query (T·H numbers) is cheaper than scaling the logits (T·S).
        query = ops.multiply(query, ops.cast(self._inverse_sqrt_key_dim, query.dtype))
        # q first: the result comes out as (B, N, T, S) with no transpose of the logits.
        logits = _einsum(equations.scores, query, key)                 # (B, N, T, S)
        compute_dtype = _dtype_name(logits)
        if compute_dtype in _LOW_PRECISION:
            logits = ops.cast(logits, "float32")
        mask = None
        if attention_mask is not None:
            mask = _expand_to_heads(ops.cast(attention_mask, "bool"), len(logits.shape),
                                    key_axes)                           # (B|1, N|1, T, S)
            logits = ops.where(mask, logits, ops.cast(_MASK_FILL, logits.dtype))
        weights = _softmax_over_keys(logits, key_axes)
        # A fully masked row came out of the softmax uniform; it must give zero weights and a zero
        # context. Without returned scores (and with one attention axis) it is cheaper to zero the
        # context of such rows, (B, T, N, Hv) numbers, than the weights, (B, N, T, S) numbers; rows
        # with a visible key are the same either way.
        visible = None
        if mask is not None and rows_may_be_empty:
            if return_attention_scores or key_axes != 1 or len(query.shape) != 4:
                weights = ops.where(mask, weights, ops.zeros((), dtype=weights.dtype))
            else:
                visible = ops.any(mask, axis=-1)                        # (B|1, N|1, T)
        if compute_dtype in _LOW_PRECISION:
            weights = ops.cast(weights, compute_dtype)
        scores = weights if visible is None else None
        if self.dropout > 0.0:
            weights = self.dropout_layer(weights, training=training)
        context = _einsum(equations.combine, weights, value)           # (B, T, N, Hv)
        if visible is not None:
            context = _zero_rows_without_keys(context, visible)
        return context, scores

    def _compute_attention_mask(self, query, value, query_mask=None, value_mask=None,
                                key_mask=None, attention_mask=None, use_causal_mask=False):
        """AND of every mask source, broadcastable to (B, T, S); None when nothing is masked.

        The query mask ``(B, T)`` becomes ``(B, T, 1)`` (a padded query sees nothing), the
        value and key masks ``(B, S)`` become ``(B, 1, S)`` (nobody sees a padded key), the
        causal and sliding-window masks are ``(1, T, S)``: the same rules as
        ``keras.layers.MultiHeadAttention``. With more axes the padding masks are first laid
        out like the scores (axes that do not attend, then the attention axes), and masks of
        different ranks gain their missing axes at the heads' place before the AND.
        """
        equations = self.equations
        axes, key_axes = equations.attention_axes, len(equations.attention_axes)
        order = (0, *equations.free_axes, *axes)            # the scores' order of input axes

        def arrange(padding):                                # (B, <input axes>) in the scores' order
            padding = ops.cast(padding, "bool")
            return padding if order == tuple(range(len(order))) else ops.transpose(padding, order)

        masks = []
        if query_mask is not None:
            m = arrange(query_mask)                                      # (B, T)
            for _ in range(key_axes):
                m = ops.expand_dims(m, -1)                               # (B, T, 1)
            masks.append(m)
        for padding in (value_mask, key_mask):
            if padding is not None:
                m = arrange(padding)                                     # (B, S)
                for _ in range(key_axes):
                    m = ops.expand_dims(m, -key_axes - 1)                # (B, 1, S)
                masks.append(m)
        if use_causal_mask or self.sliding_window is not None:
            t, s = ops.shape(query)[axes[0]], ops.shape(value)[axes[0]]
            if use_causal_mask:
                masks.append(_causal_mask(t, s))                         # (1, T, S)
            if self.sliding_window is not None:
                masks.append(_sliding_window_mask(t, s, self.sliding_window))   # (1, T, S)
        if attention_mask is not None:
            self._check_attention_mask(attention_mask, query, value, axes)
            masks.append(ops.cast(attention_mask, "bool"))
        if not masks:
            return None
        rank = max(len(m.shape) for m in masks)
        mask = _expand_to_heads(masks[0], rank, key_axes)
        for m in masks[1:]:
            mask = ops.logical_and(mask, _expand_to_heads(m, rank, key_axes))
        return mask

    @staticmethod
    def _check_attention_mask(attention_mask, query, value, attention_axes=(1,)):
        """``attention_mask`` must broadcast to the scores, with or without the heads axis."""
        shape, rank, k = tuple(attention_mask.shape), len(query.shape), len(attention_axes)
        positions = tuple(query.shape[a] for a in attention_axes) + tuple(value.shape[a] for a in attention_axes)
        ok = 2 * k <= len(shape) <= rank + k                   # rank + k: the scores' rank
        if ok:
            for dim, want in zip(shape[-2 * k:], positions):
                if dim is not None and want is not None and dim not in (1, want):
                    ok = False
        if not ok:
            free = tuple(query.shape[a] for a in range(1, rank - 1) if a not in attention_axes)
            layout = "(B, T, S)" if rank == 3 and tuple(attention_axes) == (1,) else \
                "(B, <axes that do not attend>, <query positions>, <key positions>)"
            raise ValueError(
                f"`attention_mask` has shape {shape}, which does not broadcast to {layout} = "
                f"{(query.shape[0], *free, *positions)} from `query` {tuple(query.shape)} and `value` "
                f"{tuple(value.shape)}."
            )

    # ------------------------------------------------------------ Keras plumbing

    def compute_mask(self, query, previous_mask=None):
        """The output keeps the query's Keras mask (``previous_mask``, passed by Keras)."""
        return previous_mask

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        query_shape, value_shape = tuple(query_shape), tuple(value_shape)
        key_shape = value_shape if key_shape is None else tuple(key_shape)
        if not _dims_agree(value_shape[1:-1], key_shape[1:-1]):
            raise ValueError(
                f"`key` has shape {key_shape} and `value` has shape {value_shape}: all their dimensions, "
                "except the last one (features), must be equal (one value per key)."
            )
        if self._output_shape is None:
            return query_shape
        return query_shape[:-1] + self._output_shape

    def compute_output_spec(self, query, value, key=None, query_mask=None, value_mask=None,
                            key_mask=None, attention_mask=None, return_attention_scores=False,
                            training=None, use_causal_mask=False):
        output = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape, None if key is None else key.shape),
            dtype=self.compute_dtype,
        )
        if not return_attention_scores:
            return output
        rank = len(query.shape)
        axes = _normalize_attention_axes(self.attention_axes, rank, query.shape)
        free = [query.shape[a] for a in range(1, rank - 1) if a not in axes]
        scores_shape = (query.shape[0], *free, self.num_heads,
                        *[query.shape[a] for a in axes], *[value.shape[a] for a in axes])
        return output, keras.KerasTensor(scores_shape, dtype=self.compute_dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        output_shape = self._output_shape
        config.update({
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            # one output axis: an int, as before; several: a tuple, as Keras
            "output_shape": output_shape[0] if output_shape and len(output_shape) == 1 else output_shape,
            "attention_axes": self.attention_axes,
            "sliding_window": self.sliding_window,
            "flash_attention": self.flash_attention,
            "use_gate": self.use_gate,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "seed": self.seed,
        })
        # Layer.get_config already holds activity_regularizer (serialised) when set.
        return config

    # ------------------------------------------------------------- Keras interop

    def copy_weights_from(self, keras_layer) -> MultiHeadAttention:
        """Copy the weights of a built ``keras.layers.MultiHeadAttention`` into this layer.

        Builds this layer first if needed (with the input shapes the Keras layer was built
        for). Afterwards both layers compute the same function, provided the two share their
        configuration (:func:`from_keras` makes sure of that).

        Parameters
        ----------
        keras_layer : keras.layers.MultiHeadAttention
            Built (called once).

        Returns
        -------
        MultiHeadAttention
            ``self``, so that ``MultiHeadAttention(...).copy_weights_from(k)`` chains.

        Raises
        ------
        ValueError
            If the Keras layer is not built, or its weight shapes differ from this layer's
            (e.g. other ``num_heads``, ``use_bias`` or ``use_gate``).
        """
        theirs = _keras_weights(keras_layer)
        if not self.built:
            shapes = (keras_layer.get_build_config() or {}).get("shapes_dict")
            if shapes:
                self.build(**shapes)
            else:      # rank-3 shapes read off the kernels: query, key, value come first
                kernels = [w for w in theirs if w.ndim == 3]
                d_q, d_k = kernels[0].shape[0], kernels[1].shape[0]
                d_v = kernels[3 if len(kernels) == 5 else 2].shape[0]
                self.build((None, None, d_q), (None, None, d_v), (None, None, d_k))
        ours = self.get_weights()
        mine_shapes = [w.shape for w in ours]
        their_shapes = [w.shape for w in theirs]
        if mine_shapes != their_shapes:
            raise ValueError(
                f"Cannot copy weights: the Keras layer's weights have shapes {their_shapes} but "
                f"this layer's have shapes {mine_shapes} (check num_heads, key_dim, value_dim, "
                "use_bias, use_gate, output_shape and the input feature sizes)."
            )
        self.set_weights(theirs)
        return self


def _keras_weights(keras_layer) -> list:
    if not isinstance(keras_layer, keras.layers.MultiHeadAttention):
        raise ValueError(
            "`keras_layer` must be a keras.layers.MultiHeadAttention; "
            f"got {type(keras_layer).__name__}."
        )
    if not keras_layer.built:
        raise ValueError("`keras_layer` is not built: call it once on inputs first.")
    return [np.asarray(w) for w in keras_layer.get_weights()]


def from_keras(keras_layer) -> MultiHeadAttention:
    """A built :class:`MultiHeadAttention` equal to a built ``keras.layers.MultiHeadAttention``.

    Same configuration (heads, sizes, dropout, biases, output shape, attention axes, sliding
    window, gate, initialisers, regularisers, constraints, seed, dtype policy, name) and a
    copy of its weights. (Keras's config omits ``flash_attention``; it stays None here.)

    Examples
    --------
    >>> k = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)     # doctest: +SKIP
    >>> _ = k(x, x)                                                     # doctest: +SKIP
    >>> ours = from_keras(k)                # ours(x, x) equals k(x, x)   doctest: +SKIP
    """
    _keras_weights(keras_layer)  # validates before anything is created
    config = keras_layer.get_config()
    output_shape = config.get("output_shape")
    layer = MultiHeadAttention(
        num_heads=config["num_heads"],
        key_dim=config["key_dim"],
        value_dim=config["value_dim"],
        dropout=config["dropout"],
        use_bias=config["use_bias"],
        output_shape=None if output_shape is None else tuple(output_shape),
        attention_axes=config.get("attention_axes"),
        sliding_window=config.get("sliding_window"),
        kernel_initializer=config["kernel_initializer"],
        bias_initializer=config["bias_initializer"],
        kernel_regularizer=config["kernel_regularizer"],
        bias_regularizer=config["bias_regularizer"],
        activity_regularizer=config["activity_regularizer"],
        kernel_constraint=config["kernel_constraint"],
        bias_constraint=config["bias_constraint"],
        use_gate=config.get("use_gate", False),
        seed=config["seed"],
        dtype=keras_layer.dtype_policy,
        name=keras_layer.name,
    )
    return layer.copy_weights_from(keras_layer)


# ---------------------------------------------------------------- positional embedding


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionalEmbedding(keras.layers.Layer):
    r"""Token embedding plus position encoding: ``E[token_t] (· √embed_dim) + P[t]``.

    Attention by itself ignores order (permuting the tokens permutes the outputs), so each
    position adds its own vector.

    Parameters
    ----------
    vocab_size : int
        Number of token ids (0 .. vocab_size-1).
    max_length : int
        Longest sequence the layer accepts.
    embed_dim : int
        Size of each embedding vector (even for sinusoidal positions).
    positions : {"learned", "sinusoidal"}, default "learned"
        ``"learned"``: a trainable ``(max_length, embed_dim)`` table. ``"sinusoidal"``: the
        fixed encodings of Vaswani et al. (2017), :func:`attention.sinusoidal_positions`,
        no weights.
    mask_zero : bool, default False
        Treat token id 0 as padding: the output carries a Keras mask ``(B, T)`` (True =
        real token) that attention layers downstream pick up.
    scale_embeddings : bool, default False
        Multiply the token embeddings by ``√embed_dim`` before adding the positions, as
        in the original Transformer (where it balances embeddings shared with the output
        layer against unit-size sinusoids). Off by default.
    **kwargs
        ``name``, ``dtype``, ...

    Call arguments
    --------------
    inputs : int tensor, shape (B, T), T <= max_length

    Returns
    -------
    tensor, shape (B, T, embed_dim)
    """

    def __init__(self, vocab_size: int, max_length: int, embed_dim: int,
                 positions: str = "learned", mask_zero: bool = False,
                 scale_embeddings: bool = False, **kwargs):
        vocab_size = _check_int(vocab_size, "vocab_size")
        max_length = _check_int(max_length, "max_length")
        embed_dim = _check_int(embed_dim, "embed_dim")
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(f"`positions` must be 'learned' or 'sinusoidal'; got {positions!r}.")
        if positions == "sinusoidal" and embed_dim % 2:
            raise ValueError(
                f"`embed_dim` must be even for sinusoidal positions (sin/cos pairs); got {embed_dim}."
            )
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.embed_dim = embed_dim
        self.positions = positions
        self.mask_zero = bool(mask_zero)
        self.scale_embeddings = bool(scale_embeddings)
        self.supports_masking = self.mask_zero
        self.token_embedding = keras.layers.Embedding(
            vocab_size, embed_dim, mask_zero=mask_zero, dtype=self.dtype_policy,
            name="token_embedding",
        )
        if positions == "learned":
            self.position_embedding = keras.layers.Embedding(
                max_length, embed_dim, dtype=self.dtype_policy, name="position_embedding"
            )
        else:
            self.position_embedding = None
            # A constant, not a weight: nothing to train or save.
            self._sinusoids = sinusoidal_positions(max_length, embed_dim, dtype=np.float32)

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        if self.position_embedding is not None:
            self.position_embedding.build((self.max_length,))
        self.built = True

    def call(self, inputs):
        length = inputs.shape[-1]
        if length is not None and length > self.max_length:
            raise ValueError(
                f"`inputs` has shape {tuple(inputs.shape)}: its {length} positions exceed "
                f"`max_length`={self.max_length}."
            )
        length = ops.shape(inputs)[-1]
        tokens = self.token_embedding(inputs)                            # (B, T, E)
        if self.scale_embeddings:
            tokens = ops.multiply(tokens, ops.cast(math.sqrt(self.embed_dim), tokens.dtype))
        if self.position_embedding is not None:
            where = self.position_embedding(ops.arange(length))          # (T, E)
        else:
            table = ops.convert_to_tensor(self._sinusoids, dtype=tokens.dtype)
            where = ops.slice(table, (0, 0), (length, self.embed_dim))   # (T, E)
        return ops.add(tokens, where)                                    # broadcast over B

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embed_dim,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "embed_dim": self.embed_dim,
            "positions": self.positions,
            "mask_zero": self.mask_zero,
            "scale_embeddings": self.scale_embeddings,
        })
        return config


# ------------------------------------------------------------------ transformer blocks


def _check_block_args(embed_dim, num_heads, ff_dim, dropout, norm_first):
    embed_dim = _check_int(embed_dim, "embed_dim")
    num_heads = _check_int(num_heads, "num_heads")
    ff_dim = _check_int(ff_dim, "ff_dim")
    dropout = _check_rate(dropout, "dropout")
    if embed_dim % num_heads:
        raise ValueError(
            f"`embed_dim`={embed_dim} must be divisible by `num_heads`={num_heads} "
            "(each head gets embed_dim // num_heads features)."
        )
    if not isinstance(norm_first, (bool, np.bool_)):
        raise ValueError(f"`norm_first` must be True or False; got {norm_first!r}.")
    return embed_dim, num_heads, ff_dim, dropout, bool(norm_first)


class _Block(keras.layers.Layer):
    """What the encoder and decoder blocks share: sizes, the FFN, residual wiring."""

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, dropout: float = 0.1,
                 norm_first: bool = True, layer_norm_epsilon: float = 1e-5, **kwargs):
        embed_dim, num_heads, ff_dim, dropout, norm_first = _check_block_args(
            embed_dim, num_heads, ff_dim, dropout, norm_first)
        super().__init__(**kwargs)
        self.supports_masking = True
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.norm_first = norm_first
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        policy = self.dtype_policy
        self.ffn_hidden = keras.layers.Dense(ff_dim, activation="relu", dtype=policy, name="ffn_hidden")
        self.ffn_output = keras.layers.Dense(embed_dim, dtype=policy, name="ffn_output")
        self.ffn_norm = self._norm("ffn_norm")
        self.ffn_dropout = keras.layers.Dropout(dropout, dtype=policy, name="ffn_dropout")

    def _norm(self, name):
        return keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon,
                                               dtype=self.dtype_policy, name=name)

    def _attention(self, name):
        return MultiHeadAttention(self.num_heads, self.embed_dim // self.num_heads,
                                  dropout=self.dropout, dtype=self.dtype_policy, name=name)

    def _check_features(self, shape, name):
        if len(shape) != 3 or shape[-1] != self.embed_dim:
            raise ValueError(
                f"`{name}` must have shape (batch, time, embed_dim={self.embed_dim}); "
                f"got shape {tuple(shape)}."
            )

    def _build_ffn(self, shape):
        self.ffn_norm.build(shape)
        self.ffn_hidden.build(shape)
        self.ffn_output.build(tuple(shape[:-1]) + (self.ff_dim,))

    def _residual(self, x, sublayer, norm, dropout, training):
        """Pre-norm: x + f(norm(x)). Post-norm: norm(x + f(x))."""
        if self.norm_first:
            out, extra = sublayer(norm(x))
            return ops.add(x, dropout(out, training=training)), extra
        out, extra = sublayer(x)
        return norm(ops.add(x, dropout(out, training=training))), extra

    def _feed_forward(self, x, training):
        def ffn(h):
            return self.ffn_output(self.ffn_hidden(h)), None
        return self._residual(x, ffn, self.ffn_norm, self.ffn_dropout, training)[0]

    def compute_mask(self, inputs, previous_mask=None):
        """The output keeps the input's padding mask."""
        return previous_mask

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        })
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerEncoderBlock(_Block):
    """Transformer encoder block: self-attention, then a position-wise feed-forward net.

    Each sub-block is wrapped in a residual connection and a ``LayerNormalization``:

    * ``norm_first=True`` (pre-norm, default): ``x + Dropout(f(LayerNorm(x)))``. Trains
      stably without warm-up; put one more ``LayerNormalization`` after the last block.
    * ``norm_first=False`` (post-norm, Vaswani et al. 2017): ``LayerNorm(x + Dropout(f(x)))``.

    The feed-forward net is ``Dense(ff_dim, relu) → Dense(embed_dim)``. Attention uses
    our :class:`MultiHeadAttention` with ``embed_dim // num_heads`` features per head.
    Called with ``use_causal_mask=True`` it is the block of a decoder-only (GPT-style)
    language model: position ``t`` attends to positions ``0..t`` only.

    Parameters
    ----------
    embed_dim : int
        Feature size of inputs and outputs; divisible by ``num_heads``.
    num_heads : int
    ff_dim : int
        Hidden size of the feed-forward net.
    dropout : float, default 0.1
        On the attention weights and on each sub-block's output (training only).
    norm_first : bool, default True
        Pre-norm (True) or post-norm (False).
    layer_norm_epsilon : float, default 1e-5
    **kwargs
        ``name``, ``dtype``, ...

    Call arguments
    --------------
    inputs : tensor, shape (B, T, embed_dim)
    mask : bool tensor, shape (B, T), optional
        Padding mask (True = real token); taken from the input's Keras mask when not
        given. Padded tokens are hidden from every query, and the output keeps the mask.
    training : bool, optional
    return_attention_scores : bool, default False
        Return ``(outputs, scores)`` with the self-attention weights ``(B, N, T, T)``, e.g.
        to plot them (a functional model can output them too).
    use_causal_mask : bool, default False
        Each position attends to itself and the positions before it only (as in
        ``keras.layers.MultiHeadAttention``), combined with the padding mask.
    """

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, dropout: float = 0.1,
                 norm_first: bool = True, **kwargs):
        super().__init__(embed_dim, num_heads, ff_dim, dropout, norm_first, **kwargs)
        self.attention = self._attention("self_attention")
        self.attention_norm = self._norm("self_attention_norm")
        self.attention_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy,
                                                      name="self_attention_dropout")

    def build(self, input_shape):
        self._check_features(input_shape, "inputs")
        self.attention.build(input_shape, input_shape)
        self.attention_norm.build(input_shape)
        self._build_ffn(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None, return_attention_scores=False, use_causal_mask=False):
        def attend(h):
            return self.attention(h, h, query_mask=mask, value_mask=mask, use_causal_mask=use_causal_mask,
                                  training=training, return_attention_scores=True)

        x, scores = self._residual(inputs, attend, self.attention_norm,
                                   self.attention_dropout, training)        # (B, T, E)
        x = self._feed_forward(x, training)                                 # (B, T, E)
        if return_attention_scores:
            return x, scores
        return x


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerDecoderBlock(_Block):
    """Transformer decoder block: causal self-attention, cross-attention, feed-forward.

    1. causal self-attention: position ``t`` sees positions ``0..t`` of ``inputs`` only,
       so the block can be trained on whole target sequences (teacher forcing);
    2. cross-attention: queries from the decoder, keys and values from ``encoder_outputs``;
    3. the feed-forward net.

    Residuals and normalisation as in :class:`TransformerEncoderBlock` (``norm_first``).

    Parameters
    ----------
    embed_dim, num_heads, ff_dim, dropout, norm_first, layer_norm_epsilon
        As for :class:`TransformerEncoderBlock`. ``encoder_outputs`` may have another
        feature size than ``embed_dim``.

    Call arguments
    --------------
    inputs : tensor, shape (B, T, embed_dim)
        The (shifted) target sequence.
    encoder_outputs : tensor, shape (B, S, D_enc)
    inputs_mask, encoder_outputs_mask : bool tensors (B, T) and (B, S), optional
        Padding masks; taken from the inputs' Keras masks when not given.
    training : bool, optional
    return_attention_scores : bool, default False
        Return ``(outputs, self_scores, cross_scores)``: weights ``(B, N, T, T)`` and
        ``(B, N, T, S)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, dropout: float = 0.1,
                 norm_first: bool = True, **kwargs):
        super().__init__(embed_dim, num_heads, ff_dim, dropout, norm_first, **kwargs)
        policy = self.dtype_policy
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_dropout = keras.layers.Dropout(dropout, dtype=policy,
                                                           name="self_attention_dropout")
        self.cross_attention = self._attention("cross_attention")
        self.cross_attention_norm = self._norm("cross_attention_norm")
        self.cross_attention_dropout = keras.layers.Dropout(dropout, dtype=policy,
                                                            name="cross_attention_dropout")

    def build(self, inputs_shape, encoder_outputs_shape):
        self._check_features(inputs_shape, "inputs")
        if len(encoder_outputs_shape) != 3 or encoder_outputs_shape[-1] is None:
            raise ValueError(
                "`encoder_outputs` must have shape (batch, time, features); got shape "
                f"{tuple(encoder_outputs_shape)}."
            )
        self.self_attention.build(inputs_shape, inputs_shape)
        self.self_attention_norm.build(inputs_shape)
        self.cross_attention.build(inputs_shape, encoder_outputs_shape)
        self.cross_attention_norm.build(inputs_shape)
        self._build_ffn(inputs_shape)
        self.built = True

    def call(self, inputs, encoder_outputs, inputs_mask=None, encoder_outputs_mask=None,
             training=None, return_attention_scores=False):
        def attend_self(h):
            return self.self_attention(h, h, query_mask=inputs_mask, value_mask=inputs_mask,
                                       use_causal_mask=True, training=training,
                                       return_attention_scores=True)

        def attend_encoder(h):
            return self.cross_attention(h, encoder_outputs, query_mask=inputs_mask,
                                        value_mask=encoder_outputs_mask, training=training,
                                        return_attention_scores=True)

        x, self_scores = self._residual(inputs, attend_self, self.self_attention_norm,
                                        self.self_attention_dropout, training)    # (B, T, E)
        x, cross_scores = self._residual(x, attend_encoder, self.cross_attention_norm,
                                         self.cross_attention_dropout, training)  # (B, T, E)
        x = self._feed_forward(x, training)                                       # (B, T, E)
        if return_attention_scores:
            return x, self_scores, cross_scores
        return x


# -------------------------------------------------------- long sequences (lesson 14)


def _move_time_axis(x, r: int, to_front: bool):
    """(..., T, F) <-> (T, ..., F) for rank ``r``: time first, so that blocks can be concatenated."""
    perm = [r - 2, *range(r - 2), r - 1] if to_front else [*range(1, r - 1), 0, r - 1]
    return tf.transpose(x, perm)


def _slice_broadcast(x, axis: int, start, size):
    """``x[start:start + size]`` along ``axis`` (-1 or -2), or all of it where that axis has size 1."""
    single = tf.equal(tf.shape(x)[axis], 1)           # a broadcast axis: every slice is the whole axis
    start, size = tf.where(single, 0, start), tf.where(single, 1, size)
    return x[..., start:start + size] if axis == -1 else x[..., start:start + size, :]


def chunked_attention(query, key, value, chunk_size: int, causal: bool = False, mask=None,
                      query_chunk_size: int | None = None):
    r"""Scaled dot-product attention with bounded memory: the online softmax in TensorFlow.

    The same function as ``softmax(Q Kᵀ / √d) V`` (and as the NumPy
    :func:`attention_lessons.attention.online_softmax_attention`), computed over key chunks
    of ``chunk_size`` in a ``tf.while_loop``, so no ``(T, S)`` tensor ever exists. Per query
    the loop carries the running max ``m``, the running softmax denominator ``l`` and the
    un-normalised output ``acc``; for each chunk ``C`` with scores ``s_j``::

        m'   = max(m, max_j s_j)
        α    = exp(m - m')                          # rescales what was summed so far
        l'   = α·l   + Σ_j exp(s_j - m')
        acc' = α·acc + Σ_j exp(s_j - m') v_j

    and the output is ``acc / l`` (zeros for a query that sees no key). This is what
    FlashAttention (Dao et al. 2022) does per tile in a GPU's on-chip memory.

    Parameters
    ----------
    query : tensor, shape (batch, [heads,] T, d)
        Any leading dimensions; they broadcast against those of ``key`` and ``value``.
    key : tensor, shape (batch, [heads,] S, d)
    value : tensor, shape (batch, [heads,] S, d_v)
    chunk_size : int
        Keys per chunk, ``>= 1``; need not divide ``S``.
    causal : bool, default False
        Query ``i`` sees keys ``j <= i`` (top-left aligned, as Keras's
        ``use_causal_mask``); chunks wholly in a query block's future are skipped.
    mask : bool tensor, optional
        Broadcastable to ``(..., T, S)``, True = may attend; ANDed with ``causal``. Its
        rank must be known; axes of size 1 are broadcast, never expanded to ``(T, S)``.
    query_chunk_size : int, optional
        Also process the queries in blocks of this many (default: all ``T`` at once).

    Returns
    -------
    tensor, shape (..., T, d_v)
        In the dtype of ``query``. Scores, softmax statistics and sums are computed in
        float32 whatever the input dtype (float64 inputs: float64).

    Notes
    -----
    **Peak memory** of a forward pass, besides the inputs and the output: with
    ``L`` = the product of the leading (batch × heads) dimensions and
    ``T_q`` = ``query_chunk_size`` or ``T``, about ::

        L · T_q · chunk_size · (4 + 4 + 1) bytes    scores, their exponentials, the mask chunk
      + L · T_q · (d_v + 2) · 4 bytes                 the running acc, m and l
      + L · (T + S) · (d + d_v) · 4 bytes              float32 copies of the inputs (if cast)

    against ``L · T · S · 4`` bytes for the scores of naive attention. Both do the same
    FLOPs. Gradients flow through the loop, but a ``GradientTape`` keeps every chunk's
    exponentials for the backward pass, i.e. ``O(L · T · S)`` again; FlashAttention's
    backward pass recomputes them chunk by chunk instead (``tf.recompute_grad`` would).
    Works eagerly and inside ``tf.function`` (dynamic ``T`` and ``S`` allowed); the loops
    run with ``parallel_iterations=1`` so that a graph never holds two chunks at once.
    """
    chunk_size = _check_int(chunk_size, "chunk_size")
    query_chunk_size = _check_int(query_chunk_size, "query_chunk_size", allow_none=True)
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"`causal` must be True or False; got {causal!r}.")
    q, k, v = (tf.convert_to_tensor(x) for x in (query, key, value))
    for x, name, what in ((q, "query", "(..., T, d)"), (k, "key", "(..., S, d)"), (v, "value", "(..., S, d_v)")):
        if not x.dtype.is_floating:
            raise ValueError(f"`{name}` must be floating point; got dtype {x.dtype.name}.")
        if x.shape.rank is None or x.shape.rank < 2:
            raise ValueError(f"`{name}` must have shape {what} with a known rank; got shape {x.shape}.")
    if not q.shape[-1:].is_compatible_with(k.shape[-1:]):
        raise ValueError(f"`query` has shape {q.shape} and `key` has shape {k.shape}: "
                         f"their last dimensions ({q.shape[-1]} and {k.shape[-1]}) must agree.")
    if not k.shape[-2:-1].is_compatible_with(v.shape[-2:-1]):
        raise ValueError(f"`key` has shape {k.shape} and `value` has shape {v.shape}: their "
                         f"numbers of keys and values (axis -2: {k.shape[-2]} and {v.shape[-2]}) must agree.")
    shapes = {"query": q.shape, "key": k.shape, "value": v.shape}
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        if mask.dtype != tf.bool:
            if not mask.dtype.is_integer:
                raise ValueError(f"`mask` must be boolean (True = may attend); got dtype {mask.dtype.name}.")
            mask = tf.not_equal(mask, 0)
        if mask.shape.rank is None:
            raise ValueError("`mask` must have a known rank.")
        while mask.shape.rank < 2:
            mask = mask[None]
        for axis, n, name in ((-2, q.shape[-2], "T"), (-1, k.shape[-2], "S")):
            if mask.shape[axis] not in (1, None, n) and n is not None:
                raise ValueError(f"`mask` has shape {mask.shape}, which does not broadcast to (..., T, S) = "
                                 f"(..., {q.shape[-2]}, {k.shape[-2]}) from `query` {q.shape} and `key` {k.shape}.")
        shapes["mask"] = mask.shape
    try:
        lead = shapes["query"][:-2]
        for s in list(shapes.values())[1:]:
            lead = tf.broadcast_static_shape(lead, s[:-2])
    except ValueError:
        listed = ", ".join(f"`{n}` has shape {s}" for n, s in shapes.items())
        raise ValueError(f"{listed}: their leading (batch/head) dimensions do not broadcast together.") from None

    out_dtype, out_shape = q.dtype, lead.concatenate([q.shape[-2], v.shape[-1]])
    work = tf.float64 if out_dtype == tf.float64 else tf.float32        # softmax statistics: >= float32
    d = q.shape[-1] if q.shape[-1] is not None else tf.shape(q)[-1]
    q = tf.cast(q, work) * tf.math.rsqrt(tf.cast(d, work))               # scale T·d numbers, not T·S
    k, v = tf.cast(k, work), tf.cast(v, work)
    T, S = tf.shape(q)[-2], tf.shape(k)[-2]
    batch = tf.shape(q)[:-2]
    for x in (k, v) + (() if mask is None else (mask,)):
        batch = tf.broadcast_dynamic_shape(batch, tf.shape(x)[:-2])
    block = T if query_chunk_size is None else tf.constant(query_chunk_size)
    neg_inf = tf.constant(-np.inf, work)

    def attend(i0):
        """The outputs of queries i0 .. i0+T_q-1, over all (visible) key chunks."""
        q_blk = q[..., i0:i0 + block, :]                                 # (..., T_q, d)
        t_q = tf.shape(q_blk)[-2]
        rows = i0 + tf.range(t_q)                                        # query positions
        m_blk = None if mask is None else _slice_broadcast(mask, -2, i0, block)
        stats = tf.concat([batch, [t_q]], 0)
        m0, l0 = tf.fill(stats, neg_inf), tf.zeros(stats, work)
        acc0 = tf.zeros(tf.concat([stats, tf.shape(v)[-1:]], 0), work)

        def step(j0, m, l, acc):
            s = tf.matmul(q_blk, k[..., j0:j0 + chunk_size, :], transpose_b=True)   # (..., T_q, C)
            visible = None
            if m_blk is not None:
                visible = _slice_broadcast(m_blk, -1, j0, chunk_size)
            if causal:
                cols = j0 + tf.range(tf.shape(s)[-1])
                future_ok = cols[None, :] <= rows[:, None]                           # (T_q, C)
                visible = future_ok if visible is None else tf.logical_and(visible, future_ok)
            if visible is not None:
                s = tf.where(visible, s, neg_inf)
            # The output does not depend on m (it cancels in acc / l): no gradient through it.
            m_new = tf.stop_gradient(tf.maximum(m, tf.reduce_max(s, axis=-1)))
            m_ref = tf.where(tf.math.is_finite(m_new), m_new, tf.zeros_like(m_new))  # nothing seen: 0
            alpha = tf.exp(m - m_ref)                                                # (..., T_q)
            p = tf.exp(s - m_ref[..., None])                                         # (..., T_q, C)
            l = alpha * l + tf.reduce_sum(p, axis=-1)
            acc = alpha[..., None] * acc + tf.matmul(p, v[..., j0:j0 + chunk_size, :])
            return j0 + chunk_size, m_new, l, acc

        end = tf.minimum(S, i0 + t_q) if causal else S                   # causal: no future chunks
        _, _, l, acc = tf.while_loop(lambda j0, *_: j0 < end, step, (tf.constant(0), m0, l0, acc0),
                                     parallel_iterations=1)
        return tf.math.divide_no_nan(acc, l[..., None])                  # l = 0: nothing visible -> 0

    if query_chunk_size is None:
        out = attend(tf.constant(0))
    else:   # blocks of queries, concatenated along time (moved to the front for TensorArray.concat)
        n_blocks = tf.maximum((T + block - 1) // block, 1)             # T = 0: one empty block
        blocks = tf.TensorArray(work, size=n_blocks, infer_shape=False)
        _, blocks = tf.while_loop(
            lambda b, _: b < n_blocks,
            lambda b, ta: (b + 1, ta.write(b, _move_time_axis(attend(b * block), out_shape.rank, True))),
            (tf.constant(0), blocks), parallel_iterations=1)
        out = _move_time_axis(blocks.concat(), out_shape.rank, False)
    out.set_shape(out_shape)
    return tf.cast(out, out_dtype)


# ------------------------------------------------ Part V: the layers of today's models
# GroupQueryAttention, the cached layers and RotaryEmbedding live in attention_lessons.modern,
# which builds on this module; they are re-exported here, and importing this module also
# registers them for .keras loading. A plain `from .modern import ...` would fail when
# `modern` is imported first (it imports this module before it defines them), so the module
# is imported here and its names are looked up on first use (PEP 562).
from . import modern as _modern  # noqa: E402

_MODERN_NAMES = ("GroupQueryAttention", "CachedMultiHeadAttention", "CachedGroupQueryAttention",
                 "RotaryEmbedding", "compute_causal_mask")
__all__ += list(_MODERN_NAMES)


def __getattr__(name):
    if name in _MODERN_NAMES:
        return getattr(_modern, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
