"""Keras 3 attention layers written from scratch (lessons 09–13).

:class:`MultiHeadAttention` is a drop-in for ``keras.layers.MultiHeadAttention`` on
``(batch, time, features)`` inputs: the same constructor arguments (those it supports),
the same call signature and the same weights, created in the same order, so

>>> ours.set_weights(keras_layer.get_weights())          # doctest: +SKIP

makes the two layers compute the same function. Everything it does is spelled out with
``add_weight`` and one einsum per matrix product; there is no hidden framework layer.

What differs from Keras, on purpose (see :class:`MultiHeadAttention` for details):

* one code path. Keras switches per call between a *fast* path
  (``keras.ops.dot_product_attention``) and an *explicit* one
  (``return_attention_scores=True`` or ``dropout > 0``); ours always computes like the
  explicit path, and in float32 gives bit-identical outputs and scores to it (measured
  on CPU; to the fast path it differs by float32 rounding, ~1e-7 relative);
* the logits are masked and soft-maxed in float32 whatever the compute dtype, so
  ``mixed_float16`` never sees ``-1e9`` overflow to ``-inf``;
* a query that may attend to no key gets zero weights and a zero context (its output is
  the output bias). Keras's explicit path does the same, its fast path gives such a row
  uniform weights (the mean of the values).

Also here: :class:`PositionalEmbedding`, :class:`TransformerEncoderBlock`,
:class:`TransformerDecoderBlock`, :func:`from_keras`, and :func:`chunked_attention`
(online-softmax attention for long sequences, lesson 14).

This module imports TensorFlow and Keras; the NumPy modules of the package never do.
"""

from __future__ import annotations

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
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")
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


def _expand_to_heads(mask):
    """A mask broadcastable to (B, T, S) -> broadcastable to (B, N, T, S)."""
    # The head axis goes in front of (T, S); a (T, S) mask also gets a batch axis.
    while len(mask.shape) < 4:
        mask = ops.expand_dims(mask, axis=-3)
    return mask


def _einsum(equation, a, b):
    """``keras.ops.einsum``, or TensorFlow's fused einsum where that is as accurate.

    ``tf.einsum`` is one op (its transposes and reshapes run inside C++), where
    ``keras.ops.einsum`` issues three to five: fewer ops is what makes small layers fast,
    eagerly and in graphs. Both give bit-identical float32 and bfloat16 results (measured),
    but on CPU ``tf.einsum`` accumulates float16 products in float16 (about 10x the
    error), so float16 keeps Keras's matmul-based route.
    """
    if _dtype_name(a) == "float16":
        return ops.einsum(equation, a, b)
    return tf.einsum(equation, a, b)


def _causal_mask(t, s):
    """(1, T, S) bool, True where key s <= query t (top-left aligned, as Keras)."""
    rows = ops.expand_dims(ops.arange(t), -1)        # (T, 1)
    cols = ops.expand_dims(ops.arange(s), 0)         # (1, S)
    return ops.expand_dims(ops.greater_equal(rows, cols), 0)


# ----------------------------------------------------------------- MultiHeadAttention


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiHeadAttention(keras.layers.Layer):
    r"""Multi-head attention, from scratch; a drop-in for ``keras.layers.MultiHeadAttention``.

    For each head :math:`n = 1..N`:

    .. math::
        Q_n = x_q W^Q_n + b^Q_n,\quad K_n = x_k W^K_n + b^K_n,\quad V_n = x_v W^V_n + b^V_n,

        A_n = \operatorname{softmax}\!\big(Q_n K_n^\top / \sqrt{H} \;\text{(masked)}\big),
        \qquad \text{output} = \sum_n A_n V_n W^O_n + b^O .

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
        Add biases to the four projections.
    output_shape : int or tuple of one int, optional
        Output feature size ``D_out``; defaults to the query's feature size. (Keras also
        accepts several output axes; this layer supports one.)
    kernel_initializer, bias_initializer : str, dict or keras.initializers.Initializer
        Each weight gets its own copy (initialisers are stateless in Keras 3), and kernels
        are initialised as the 2-D matrices they are (``(D, N·H)`` and ``(N·Hv, D_out)``).
    kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint
        As in Keras.
    seed : int, optional
        Seeds the dropout and, unlike Keras, also the initial weights: the same seed gives
        the same initial weights, and every weight gets its own seed derived from it.
    **kwargs
        ``name``, ``dtype`` (a dtype policy such as ``"mixed_float16"``), ``trainable``.

    Call arguments
    --------------
    query : tensor, shape (B, T, D_q)
    value : tensor, shape (B, S, D_v)
    key : tensor, shape (B, S, D_k), optional
        Defaults to ``value``.
    query_mask, value_mask, key_mask : bool tensor, shape (B, T) / (B, S), optional
        Padding masks (True = real token). Keras fills them in from the inputs' Keras masks
        (``Embedding(mask_zero=True)``); they become ``[B, T, 1]`` and ``[B, 1, S]`` masks.
        Unlike Keras, an explicitly passed ``query_mask`` is honoured, and the inputs keep
        their Keras masks after the call.
    attention_mask : bool or 0/1 int tensor, broadcastable to (B, T, S), optional
        True = query ``t`` may attend to key ``s``. ``(T, S)`` and ``(B, N, T, S)`` work too.
    return_attention_scores : bool, default False
        Also return the attention weights ``(B, N, T, S)`` (before dropout).
    training : bool, optional
        Dropout is active only when True.
    use_causal_mask : bool, default False
        Query ``t`` sees keys ``0..t`` only (top-left aligned when ``T != S``).

    All masks are combined with a logical AND.

    Returns
    -------
    output : tensor, shape (B, T, D_out)
        In the compute dtype; it carries the query's Keras mask.
    scores : tensor, shape (B, N, T, S)
        Only with ``return_attention_scores=True``.

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
    gives uniform weights. The weights go back to the compute dtype before the dropout
    and the product with the values.

    *Weights* (``get_weights()`` order, as Keras): query kernel ``(D_q, N, H)``, query bias
    ``(N, H)``, key kernel ``(D_k, N, H)``, key bias, value kernel ``(D_v, N, Hv)``, value
    bias ``(N, Hv)``, output kernel ``(N, Hv, D_out)``, output bias ``(D_out,)``; without
    biases only the four kernels. Inputs must be rank 3 (Keras's ``attention_axes`` for
    images etc. is not supported).

    Examples
    --------
    >>> layer = MultiHeadAttention(num_heads=2, key_dim=4)              # doctest: +SKIP
    >>> out, scores = layer(x, x, use_causal_mask=True,
    ...                     return_attention_scores=True)               # doctest: +SKIP
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        value_dim: int | None = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        output_shape=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed: int | None = None,
        **kwargs,
    ):
        num_heads = _check_int(num_heads, "num_heads")
        key_dim = _check_int(key_dim, "key_dim")
        value_dim = _check_int(value_dim, "value_dim", allow_none=True)
        dropout = _check_rate(dropout, "dropout")
        if not isinstance(use_bias, (bool, np.bool_)):
            raise ValueError(f"`use_bias` must be True or False; got {use_bias!r}.")
        seed = _check_int(seed, "seed", minimum=0, allow_none=True)
        if output_shape is not None and not isinstance(output_shape, numbers.Integral):
            try:
                output_shape = tuple(output_shape)
            except TypeError:
                raise ValueError(
                    f"`output_shape` must be an int or a tuple of one int; got {output_shape!r}."
                ) from None
            if len(output_shape) != 1:
                raise ValueError(
                    "`output_shape` must be an int or a tuple of one int (one output feature "
                    f"axis); got {output_shape!r}."
                )
            output_shape = output_shape[0]
        output_dim = _check_int(output_shape, "output_shape", allow_none=True)
        # Keras's Layer handles activity_regularizer itself (applied to the output).
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.supports_masking = True
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = key_dim if value_dim is None else value_dim
        self.dropout = dropout
        self.use_bias = bool(use_bias)
        self._output_dim = output_dim
        self.seed = seed
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._inverse_sqrt_key_dim = 1.0 / math.sqrt(float(key_dim))
        self.dropout_layer = keras.layers.Dropout(
            rate=dropout, seed=seed, dtype=self.dtype_policy, name="attention_dropout"
        )

    # ------------------------------------------------------------------ build

    def build(self, query_shape, value_shape, key_shape=None):
        """Create the eight weights (four without biases) in Keras's order."""
        key_shape = value_shape if key_shape is None else key_shape
        for shape, name in ((query_shape, "query"), (value_shape, "value"), (key_shape, "key")):
            if len(shape) != 3 or shape[-1] is None:
                raise ValueError(
                    f"`{name}` must have shape (batch, time, features) with known features; "
                    f"got shape {tuple(shape)}."
                )
        if value_shape[1] is not None and key_shape[1] is not None and value_shape[1] != key_shape[1]:
            raise ValueError(
                f"`key` has shape {tuple(key_shape)} and `value` has shape {tuple(value_shape)}: "
                "they need one value per key (equal axis 1)."
            )
        n, h, h_v = self.num_heads, self.key_dim, self.value_dim
        d_out = query_shape[-1] if self._output_dim is None else self._output_dim

        def weight(index, name, shape):
            # `index` is the weight's place in Keras's order; it also picks its seed, so a
            # kernel's initial values do not depend on use_bias.
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
        self.value_kernel = weight(4, "value_kernel", (value_shape[-1], n, h_v))
        self.value_bias = bias(5, "value_bias", (n, h_v))
        self.output_kernel = weight(6, "output_kernel", (n, h_v, d_out))
        self.output_bias = bias(7, "output_bias", (d_out,))
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
        if key is None:
            key = value
        # Layer.__call__ fills the *_mask arguments from the inputs' Keras masks, but only
        # when it sees several tensor arguments, and a direct .call() never: read them here.
        query_mask = _get_keras_mask(query) if query_mask is None else query_mask
        value_mask = _get_keras_mask(value) if value_mask is None else value_mask
        if key_mask is None and key is not value:
            key_mask = _get_keras_mask(key)
        mask = self._compute_attention_mask(
            query, value, query_mask, value_mask, key_mask, attention_mask, use_causal_mask
        )

        # Projections: one matrix product per input, all heads at once.
        q = _einsum("btd,dnh->btnh", query, self.query_kernel)       # (B, T, N, H)
        k = _einsum("bsd,dnh->bsnh", key, self.key_kernel)           # (B, S, N, H)
        v = _einsum("bsd,dnh->bsnh", value, self.value_kernel)       # (B, S, N, Hv)
        if self.use_bias:
            q = ops.add(q, self.query_bias)
            k = ops.add(k, self.key_bias)
            v = ops.add(v, self.value_bias)

        # A causal mask alone leaves every query key 0, so no row can be fully masked.
        rows_may_be_empty = any(m is not None for m in (query_mask, value_mask, key_mask, attention_mask))
        context, scores = self._compute_attention(q, k, v, mask, training,
                                                  rows_may_be_empty)      # (B, T, N, Hv)
        output = _einsum("btnh,nhd->btd", context, self.output_kernel)   # (B, T, D_out)
        if self.use_bias:
            output = ops.add(output, self.output_bias)

        if query_mask is not None:
            _set_keras_mask(output, query_mask)
        if return_attention_scores:
            return output, scores
        return output

    def _compute_attention(self, q, k, v, mask=None, training=None, rows_may_be_empty=True):
        """Scaled dot-product attention on projected heads.

        ``q`` (B, T, N, H), ``k`` (B, S, N, H), ``v`` (B, S, N, Hv); ``mask`` bool,
        broadcastable to (B, T, S), or None. ``rows_may_be_empty=False`` promises that
        every query sees at least one key, which saves a pass over the weights. Returns the
        context (B, T, N, Hv) and the weights (B, N, T, S) before dropout.
        """
        # Scaling the query (T·H numbers) is cheaper than scaling the logits (T·S).
        q = ops.multiply(q, ops.cast(self._inverse_sqrt_key_dim, q.dtype))
        # q first: the result comes out as (B, N, T, S) with no transpose of the logits.
        logits = _einsum("btnh,bsnh->bnts", q, k)                    # (B, N, T, S)
        compute_dtype = _dtype_name(logits)
        if compute_dtype in _LOW_PRECISION:
            logits = ops.cast(logits, "float32")
        if mask is not None:
            mask = _expand_to_heads(mask)                               # (B|1, N|1, T, S)
            logits = ops.where(mask, logits, ops.cast(_MASK_FILL, logits.dtype))
        weights = ops.softmax(logits, axis=-1)
        if mask is not None and rows_may_be_empty:
            # Only fully masked rows change here: they were uniform, now they are zeros.
            weights = ops.where(mask, weights, ops.zeros((), dtype=weights.dtype))
        if compute_dtype in _LOW_PRECISION:
            weights = ops.cast(weights, compute_dtype)
        scores = weights
        if self.dropout > 0.0:
            weights = self.dropout_layer(weights, training=training)
        context = _einsum("bnts,bsnh->btnh", weights, v)             # (B, T, N, Hv)
        return context, scores

    def _compute_attention_mask(self, query, value, query_mask=None, value_mask=None,
                                key_mask=None, attention_mask=None, use_causal_mask=False):
        """AND of every mask source, broadcastable to (B, T, S); None when nothing is masked.

        The query mask ``(B, T)`` becomes ``(B, T, 1)`` (a padded query sees nothing), the
        value and key masks ``(B, S)`` become ``(B, 1, S)`` (nobody sees a padded key), the
        causal mask is ``(1, T, S)``: the same rules as ``keras.layers.MultiHeadAttention``.
        """
        masks = []
        if query_mask is not None:
            masks.append(ops.expand_dims(ops.cast(query_mask, "bool"), -1))    # (B, T, 1)
        for padding in (value_mask, key_mask):
            if padding is not None:
                masks.append(ops.expand_dims(ops.cast(padding, "bool"), -2))   # (B, 1, S)
        if use_causal_mask:
            masks.append(_causal_mask(ops.shape(query)[1], ops.shape(value)[1]))  # (1, T, S)
        if attention_mask is not None:
            self._check_attention_mask(attention_mask, query, value)
            masks.append(ops.cast(attention_mask, "bool"))
        if not masks:
            return None
        mask = masks[0]
        for m in masks[1:]:
            mask = ops.logical_and(mask, m)
        return mask

    @staticmethod
    def _check_attention_mask(attention_mask, query, value):
        shape, t, s = tuple(attention_mask.shape), query.shape[1], value.shape[1]
        ok = 2 <= len(shape) <= 4
        if ok:
            for dim, want in zip(shape[-2:], (t, s)):
                if dim is not None and want is not None and dim not in (1, want):
                    ok = False
        if not ok:
            raise ValueError(
                f"`attention_mask` has shape {shape}, which does not broadcast to (B, T, S) = "
                f"{(query.shape[0], t, s)} from `query` {tuple(query.shape)} and `value` "
                f"{tuple(value.shape)}."
            )

    # ------------------------------------------------------------ Keras plumbing

    def compute_mask(self, query, previous_mask=None):
        """The output keeps the query's Keras mask (``previous_mask``, passed by Keras)."""
        return previous_mask

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        query_shape = tuple(query_shape)
        if self._output_dim is None:
            return query_shape
        return query_shape[:-1] + (self._output_dim,)

    def compute_output_spec(self, query, value, key=None, query_mask=None, value_mask=None,
                            key_mask=None, attention_mask=None, return_attention_scores=False,
                            training=None, use_causal_mask=False):
        output = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return output
        scores_shape = (query.shape[0], self.num_heads, query.shape[1], value.shape[1])
        return output, keras.KerasTensor(scores_shape, dtype=self.compute_dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_shape": self._output_dim,
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

        Builds this layer first if needed (with the feature sizes read off the Keras
        kernels). Afterwards both layers compute the same function.

        Parameters
        ----------
        keras_layer : keras.layers.MultiHeadAttention
            Built (called once), rank-3 attention, no gate or sliding window.

        Returns
        -------
        MultiHeadAttention
            ``self``, so that ``MultiHeadAttention(...).copy_weights_from(k)`` chains.

        Raises
        ------
        ValueError
            If the Keras layer is not built, uses a feature this layer lacks, or its weight
            shapes differ from this layer's (e.g. other ``num_heads`` or ``use_bias``).
        """
        theirs = _keras_weights(keras_layer)
        if not self.built:
            kernels = theirs[::2] if len(theirs) == 8 else theirs   # biases sit between kernels
            d_q, d_k, d_v = (kernel.shape[0] for kernel in kernels[:3])
            self.build((None, None, d_q), (None, None, d_v), (None, None, d_k))
        ours = self.get_weights()
        mine_shapes = [w.shape for w in ours]
        their_shapes = [w.shape for w in theirs]
        if mine_shapes != their_shapes:
            raise ValueError(
                f"Cannot copy weights: the Keras layer's weights have shapes {their_shapes} but "
                f"this layer's have shapes {mine_shapes} (check num_heads, key_dim, value_dim, "
                "use_bias, output_shape and the input feature sizes)."
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
    config = keras_layer.get_config()
    unsupported = []
    if config.get("use_gate"):
        unsupported.append("use_gate=True")
    if config.get("sliding_window") is not None:
        unsupported.append(f"sliding_window={config['sliding_window']}")
    if tuple(config.get("attention_axes") or (1,)) != (1,):
        unsupported.append(f"attention_axes={config['attention_axes']}")
    output_shape = config.get("output_shape")
    if output_shape is not None and len(tuple(output_shape)) != 1:
        unsupported.append(f"output_shape={output_shape}")
    if unsupported:
        raise ValueError(
            f"`keras_layer` uses {', '.join(unsupported)}, which this layer does not support "
            "(rank-3 inputs, one output axis, no gate, no sliding window)."
        )
    return [np.asarray(w) for w in keras_layer.get_weights()]


def from_keras(keras_layer) -> MultiHeadAttention:
    """A built :class:`MultiHeadAttention` equal to a built ``keras.layers.MultiHeadAttention``.

    Same configuration (heads, sizes, dropout, biases, initialisers, regularisers,
    constraints, seed, dtype policy, name) and a copy of its weights.

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
        kernel_initializer=config["kernel_initializer"],
        bias_initializer=config["bias_initializer"],
        kernel_regularizer=config["kernel_regularizer"],
        bias_regularizer=config["bias_regularizer"],
        activity_regularizer=config["activity_regularizer"],
        kernel_constraint=config["kernel_constraint"],
        bias_constraint=config["bias_constraint"],
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

    def call(self, inputs, mask=None, training=None, return_attention_scores=False):
        def attend(h):
            return self.attention(h, h, query_mask=mask, value_mask=mask, training=training,
                                  return_attention_scores=True)

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
