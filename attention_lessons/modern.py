"""Keras 3 layers of today's language models (Part V): grouped queries, a KV cache, rotary positions.

* :class:`GroupQueryAttention` — a drop-in for ``keras.layers.GroupQueryAttention``: the same
  constructor and call arguments and the same weights, created in the same order, so
  ``ours.set_weights(keras_layer.get_weights())`` makes the two compute the same function.
  ``num_key_value_heads=1`` is multi-query attention, ``= num_query_heads`` multi-head.
* :class:`CachedMultiHeadAttention` and :class:`CachedGroupQueryAttention` — keras_hub's
  call convention for autoregressive decoding with a key/value cache
  ``(B, 2, S_max, heads, head_dim)``; the first has the weights of
  :class:`attention_lessons.layers.MultiHeadAttention`, the second those of
  :class:`GroupQueryAttention`.
* :class:`RotaryEmbedding` — rotary position embedding with keras_hub's signature.
* :func:`compute_causal_mask` — keras_hub's causal mask for a query block that starts at
  ``cache_index``.

Like :mod:`attention_lessons.layers`, every matrix product is one einsum on weights made
with ``add_weight``; the attention itself is the same explicit path (float32 softmax,
zero weights for fully masked rows). Grouped-query attention never copies a key/value head
for the query heads that share it: the query heads are split into groups instead.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .layers import (
    _LOW_PRECISION,
    _MASK_FILL,
    _PACKAGE,
    MultiHeadAttention,
    _check_int,
    _check_rate,
    _dtype_name,
    _einsum,
    _expand_to_heads,
    _fresh_initializer,
    _get_keras_mask,
    _set_keras_mask,
    _zero_rows_without_keys,
)

import keras  # noqa: E402  (after .layers, which imports TensorFlow quietly first)
from keras import ops  # noqa: E402

__all__ = [
    "GroupQueryAttention",
    "CachedMultiHeadAttention",
    "CachedGroupQueryAttention",
    "RotaryEmbedding",
    "compute_causal_mask",
]


# --------------------------------------------------------------------------- helpers


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False; got {value!r}.")
    return bool(value)


def _check_positive_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number; got {value!r}.")
    return value


def _check_axis(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an int (an axis, negative counts from the end); got {value!r}.")
    return int(value)


def _dim(x, axis: int):
    """The size of ``x`` along ``axis``: an int where known, else a scalar tensor."""
    static = x.shape[axis]
    return static if static is not None else ops.shape(x)[axis]


def _band(t, s, start=0, causal: bool = False, window: int | None = None):
    """(1, T, S) bool: queries at positions ``start .. start+T-1``, keys at ``0 .. S-1``.

    ``causal``: key ``j <= i`` (top-left aligned when ``start = 0``, as Keras);
    ``window``: ``|i - j| < window`` (Keras's symmetric ``sliding_window`` band).
    """
    rows = ops.expand_dims(ops.arange(t, dtype="int32") + ops.cast(start, "int32"), -1)   # (T, 1)
    cols = ops.expand_dims(ops.arange(s, dtype="int32"), 0)                               # (1, S)
    mask = None
    if causal:
        mask = ops.greater_equal(rows, cols)
    if window is not None:
        near = ops.less(ops.abs(rows - cols), window)
        mask = near if mask is None else ops.logical_and(mask, near)
    return None if mask is None else ops.expand_dims(mask, 0)


def _and(*masks):
    """Logical AND of the masks that are not None (None if all are)."""
    masks = [ops.cast(m, "bool") for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = ops.logical_and(out, m)
    return out


def _check_attention_mask(attention_mask, t, s, num_heads, source: str):
    """``attention_mask`` must broadcast to (B, T, S), or to (B, N, T, S) per head.

    ``source`` names where T and S come from, for the message.
    """
    shape = tuple(attention_mask.shape)
    ok = 2 <= len(shape) <= 4
    if ok:
        wanted = (t, s) if len(shape) < 4 else (num_heads, t, s)     # rank 3: (B, T, S)
        for dim, want in zip(shape[-len(wanted):], wanted):
            if dim is not None and want is not None and dim not in (1, want):
                ok = False
    if not ok:
        raise ValueError(
            f"`attention_mask` has shape {shape}, which does not broadcast to (B, T, S) with "
            f"T = {t}, S = {s} (or (B, N, T, S) with N = {num_heads}) from {source}."
        )


def _grouped_attention(q, k, v, mask, scale: float, dropout_layer=None, training=None, return_scores: bool = True):
    """Scaled dot-product attention of ``Nq`` query heads over ``Nk`` key/value heads.

    ``q`` (B, T, Nq, H), ``k`` (B, S, Nk, H), ``v`` (B, S, Nk, Hv), ``Nk`` divides ``Nq``;
    query head ``n`` reads key/value head ``n // G`` with ``G = Nq / Nk`` (``G = 1``:
    multi-head attention). ``mask``: bool broadcastable to (B, Nq, T, S), True = may attend.

    The numerics of :class:`attention_lessons.layers.MultiHeadAttention`: the query is
    scaled, the logits are soft-maxed in float32 (whatever the compute dtype) after masking
    with the most negative finite float32, and masked weights are set to exactly 0, so a
    fully masked row has zero weights and a zero context, never NaN.

    Returns the context (B, T, Nq, Hv) and the weights (B, Nq, T, S) before dropout (None
    when ``return_scores`` is False: then fully masked rows are zeroed in the context, which
    is cheaper than in the weights).
    """
    n_q, n_k, h = q.shape[2], k.shape[2], q.shape[3]
    g = n_q // n_k
    t, s = _dim(q, 1), _dim(k, 1)
    q = ops.multiply(q, ops.cast(scale, q.dtype))      # T·H numbers to scale, not T·S
    # Query head n = k·G + g: view the heads as (Nk, G) so that every key/value head is read
    # by its G query heads without being copied G times (what ops.repeat would do).
    q = ops.reshape(q, (-1, t, n_k, g, h))                              # (B, T, Nk, G, H)
    logits = _einsum("btkgh,bskh->bkgts", q, k)                         # (B, Nk, G, T, S)
    logits = ops.reshape(logits, (-1, n_q, t, s))                       # (B, Nq, T, S)
    compute_dtype = _dtype_name(logits)
    if compute_dtype in _LOW_PRECISION:      # float16 overflows at 65504: softmax in float32
        logits = ops.cast(logits, "float32")
    if mask is not None:
        mask = _expand_to_heads(mask)                                   # (B|1, Nq|1, T, S)
        logits = ops.where(mask, logits, ops.cast(_MASK_FILL, logits.dtype))
    weights = ops.softmax(logits, axis=-1)
    # Fully masked rows came out uniform and must give zeros (rows with a visible key are
    # unchanged): in the weights when they are returned, else in the cheaper context.
    visible = None
    if mask is not None:
        if return_scores:
            weights = ops.where(mask, weights, ops.zeros((), dtype=weights.dtype))
        else:
            visible = ops.any(mask, axis=-1)                            # (B|1, Nq|1, T)
    if compute_dtype in _LOW_PRECISION:
        weights = ops.cast(weights, compute_dtype)
    scores = weights if return_scores else None
    if dropout_layer is not None:
        weights = dropout_layer(weights, training=training)
    weights = ops.reshape(weights, (-1, n_k, g, t, s))                  # (B, Nk, G, T, S)
    context = _einsum("bkgts,bskh->btkgh", weights, v)                  # (B, T, Nk, G, Hv)
    context = ops.reshape(context, (-1, t, n_q, v.shape[-1]))           # (B, T, Nq, Hv)
    if visible is not None:
        context = _zero_rows_without_keys(context, visible)
    return context, scores


def _project(x, kernel, bias):
    """(B, T, D) x (D, N, H) (+ (N, H)) -> (B, T, N, H)."""
    y = _einsum("btd,dnh->btnh", x, kernel)
    return y if bias is None else ops.add(y, bias)


def compute_causal_mask(batch_size: int, input_length: int, output_length: int, cache_index: int = 0):
    """Causal mask for ``output_length`` queries that start at position ``cache_index``.

    keras_hub's ``compute_causal_mask``: query ``i`` (at position ``cache_index + i``) may
    attend to keys ``0 .. cache_index + i``. With a KV cache of ``input_length = S_max``
    slots this also hides the slots not written yet.

    Parameters
    ----------
    batch_size : int or int tensor
    input_length : int or int tensor
        Number of keys ``S`` (the cache length when decoding with a cache).
    output_length : int or int tensor
        Number of queries ``T`` (1 when decoding one token at a time).
    cache_index : int or int tensor, default 0
        Position of the first query; a tensor inside a compiled decoding loop.

    Returns
    -------
    bool tensor, shape (batch_size, output_length, input_length)
    """
    mask = _band(output_length, input_length, start=cache_index, causal=True)   # (1, T, S)
    return ops.broadcast_to(mask, (batch_size, output_length, input_length))


# ----------------------------------------------------------------- GroupQueryAttention


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GroupQueryAttention(keras.layers.Layer):
    r"""Grouped-query attention, from scratch; a drop-in for ``keras.layers.GroupQueryAttention``.

    ``num_query_heads`` query heads share ``num_key_value_heads`` key/value heads
    (Ainslie et al. 2023): the query heads form groups of ``G = Nq / Nkv`` consecutive
    heads, and head ``n`` attends with key/value head ``n // G``. ``Nkv = 1`` is multi-query
    attention (Shazeer 2019), ``Nkv = Nq`` multi-head attention. Fewer key/value heads
    mean fewer parameters and, when decoding, a smaller KV cache.

    .. math::
        Q_n = x_q W^Q_n + b^Q_n, \quad K_m = x_k W^K_m + b^K_m, \quad V_m = x_v W^V_m + b^V_m,

        C_n = \operatorname{softmax}\!\big(Q_n K_{n//G}^\top / \sqrt{H}\ \text{(masked)}\big)\, V_{n//G},
        \qquad \text{output} = \sum_n (C_n \odot g_n) W^O_n + b^O,

    with the gate :math:`g_n = \sigma(x_q W^G_n + b^G_n)` when ``use_gate`` (else 1).

    Parameters
    ----------
    head_dim : int
        Size ``H`` of every head (queries, keys and values).
    num_query_heads : int
        ``Nq``.
    num_key_value_heads : int
        ``Nkv``; must divide ``Nq``.
    dropout : float, default 0.0
        Dropout on the attention weights (training only).
    use_bias : bool, default True
    sliding_window : int, optional
        Query ``i`` sees keys ``j`` with ``|i - j| < sliding_window`` (a symmetric band, as
        Keras); with ``use_causal_mask=True`` the causal sliding window of Mistral.
    flash_attention : bool, optional
        ``None`` (default) or ``False``: ordinary attention. ``True`` insists on a fused
        flash kernel, which the TensorFlow backend does not have: as Keras's layer, this one
        then raises with ``dropout > 0`` at construction and at every call (Keras calls
        ``keras.ops.dot_product_attention(flash_attention=True)``, which raises, or refuses
        ``return_attention_scores=True``).
    kernel_initializer, bias_initializer
        As in Keras. Each weight gets its own copy of the initialiser (Keras 3 initialisers
        are stateless), kernels are initialised as the 2-D matrices they are.
    kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint
        As in Keras, except that the activity regularizer is applied to the layer's output
        only (Keras also applies it to each projection's output).
    use_gate : bool, default False
        Gated attention (Qiu et al. 2025): the context is multiplied by a sigmoid gate
        computed from the query before the output projection.
    seed : int, optional
        Seeds the dropout and, as in :class:`attention_lessons.layers.MultiHeadAttention`,
        the initial weights.
    **kwargs
        ``name``, ``dtype`` (e.g. ``"mixed_float16"``), ``trainable``.

    Call arguments
    --------------
    query : tensor, shape (B, T, D)
    value : tensor, shape (B, S, D_v)
    key : tensor, shape (B, S, D_k), optional
        Defaults to ``value``.
    query_mask, value_mask, key_mask : bool tensors (B, T) / (B, S), optional
        Padding masks; Keras fills them in from the inputs' Keras masks.
    attention_mask : bool tensor broadcastable to (B, T, S) or (B, Nq, T, S), optional
        True = may attend.
    return_attention_scores : bool, default False
        Also return the weights ``(B, Nq, T, S)`` (before dropout).
    training : bool, optional
    use_causal_mask : bool, default False

    Returns
    -------
    output : tensor, shape (B, T, D)
        The query's feature size; it keeps the query's Keras mask.
    scores : tensor, shape (B, Nq, T, S)
        Only with ``return_attention_scores=True``.

    Notes
    -----
    *One code path*, the one of :class:`attention_lessons.layers.MultiHeadAttention`: in
    float32 equal to Keras's explicit path (``return_attention_scores=True`` or
    ``dropout > 0``) and to its fast path (``keras.ops.dot_product_attention``) up to float32
    rounding; a fully masked query row gets zero weights (output = output bias), where
    Keras's fast path gives it uniform weights.

    *Weights* (``get_weights()`` order, as Keras): query kernel ``(D, Nq, H)`` and bias
    ``(Nq, H)``, key kernel ``(D_k, Nkv, H)`` and bias ``(Nkv, H)``, [gate kernel
    ``(D, Nq, H)`` and bias ``(Nq, H)``], value kernel ``(D_v, Nkv, H)`` and bias
    ``(Nkv, H)``, output kernel ``(Nq, H, D)`` and bias ``(D,)``. They are named
    ``query_kernel``, ``query_bias``, … , ``output_kernel``, ``output_bias``: Keras's
    ``query/kernel``, … , ``attention_output/kernel`` with the sub-layer level flattened.

    *Overriding.* ``_compute_attention(query, key, value, attention_mask=None,
    training=None, use_causal_mask=False) -> (context, scores)`` is the override point of
    Keras's layer; here it receives ``key`` and ``value`` with ``num_key_value_heads``
    heads (Keras repeats them to ``num_query_heads`` first; such tensors work too).

    As Keras, ``compute_output_shape`` (used by functional models) requires ``value`` to
    have the query's feature size; eager calls accept any.
    """

    def __init__(
        self,
        head_dim: int,
        num_query_heads: int,
        num_key_value_heads: int,
        dropout: float = 0.0,
        use_bias: bool = True,
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
        head_dim = _check_int(head_dim, "head_dim")
        num_query_heads = _check_int(num_query_heads, "num_query_heads")
        num_key_value_heads = _check_int(num_key_value_heads, "num_key_value_heads")
        if num_query_heads % num_key_value_heads:
            raise ValueError(
                f"`num_query_heads`={num_query_heads} must be divisible by "
                f"`num_key_value_heads`={num_key_value_heads} (each key/value head serves a "
                "group of query heads)."
            )
        dropout = _check_rate(dropout, "dropout")
        use_bias = _check_bool(use_bias, "use_bias")
        use_gate = _check_bool(use_gate, "use_gate")
        sliding_window = _check_int(sliding_window, "sliding_window", allow_none=True)
        if flash_attention is not None:
            flash_attention = _check_bool(flash_attention, "flash_attention")
        if flash_attention and dropout > 0.0:       # Keras's check, at Keras's time
            raise ValueError(
                f"`dropout`={dropout} with `flash_attention=True`: Dropout is not supported when "
                "flash attention is enabled (a fused kernel never holds the weights to drop). "
                "Set dropout=0.0, or flash_attention=None."
            )
        seed = _check_int(seed, "seed", minimum=0, allow_none=True)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.supports_masking = True
        self.head_dim = head_dim
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.num_repeats = num_query_heads // num_key_value_heads     # G, Keras's name
        self.dropout = dropout
        self.use_bias = use_bias
        self.use_gate = use_gate
        self.sliding_window = sliding_window
        self.flash_attention = flash_attention
        self._flash_attention = bool(flash_attention)     # Keras's name: "must use the kernel"
        self.seed = seed
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._inverse_sqrt_head_dim = 1.0 / math.sqrt(float(head_dim))
        self._return_attention_scores = False      # Keras's attribute (its _compute_attention reads it)
        self.dropout_layer = keras.layers.Dropout(
            rate=dropout, seed=seed, dtype=self.dtype_policy, name="attention_dropout"
        )

    # ------------------------------------------------------------------ build

    def build(self, query_shape, value_shape, key_shape=None):
        """Create the weights in Keras's order: query, key, [gate], value, output."""
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
        d, n_q, n_kv, h = query_shape[-1], self.num_query_heads, self.num_key_value_heads, self.head_dim

        def weight(index, name, shape):
            # `index` picks the weight's seed: it stays the same with or without biases and gate.
            if name.endswith("kernel"):
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

        self.query_kernel = weight(0, "query_kernel", (d, n_q, h))
        self.query_bias = bias(1, "query_bias", (n_q, h))
        self.key_kernel = weight(2, "key_kernel", (key_shape[-1], n_kv, h))
        self.key_bias = bias(3, "key_bias", (n_kv, h))
        self.gate_kernel = self.gate_bias = None
        if self.use_gate:                       # Keras creates the gate between key and value
            self.gate_kernel = weight(8, "gate_kernel", (d, n_q, h))
            self.gate_bias = bias(9, "gate_bias", (n_q, h))
        self.value_kernel = weight(4, "value_kernel", (value_shape[-1], n_kv, h))
        self.value_bias = bias(5, "value_bias", (n_kv, h))
        self.output_kernel = weight(6, "output_kernel", (n_q, h, d))
        self.output_bias = bias(7, "output_bias", (d,))
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
        self._return_attention_scores = return_attention_scores
        if self._flash_attention:
            if return_attention_scores:
                raise ValueError(
                    "Returning attention scores is not supported when flash attention is enabled. "
                    "Please disable flash attention to access attention scores."
                )
            raise ValueError("`flash_attention=True`: Flash attention is not supported in tensorflow "
                             "backend (as keras.ops.dot_product_attention says); use None or False.")
        if key is None:
            key = value
        # Layer.__call__ fills the *_mask arguments from the inputs' Keras masks, a direct
        # .call() does not: read them here too.
        query_mask = _get_keras_mask(query) if query_mask is None else query_mask
        value_mask = _get_keras_mask(value) if value_mask is None else value_mask
        if key_mask is None and key is not value:
            key_mask = _get_keras_mask(key)
        if attention_mask is not None:
            _check_attention_mask(attention_mask, query.shape[1], value.shape[1], self.num_query_heads,
                                  f"`query` {tuple(query.shape)} and `value` {tuple(value.shape)}")
        t, s = _dim(query, 1), _dim(value, 1)
        mask = _and(
            None if query_mask is None else ops.expand_dims(ops.cast(query_mask, "bool"), -1),  # (B, T, 1)
            None if value_mask is None else ops.expand_dims(ops.cast(value_mask, "bool"), -2),  # (B, 1, S)
            None if key_mask is None else ops.expand_dims(ops.cast(key_mask, "bool"), -2),      # (B, 1, S)
            _band(t, s, causal=use_causal_mask, window=self.sliding_window),                    # (1, T, S)
            attention_mask,                                                                     # (B, T, S)
        )
        q, gate = self._project_query(query)                     # (B, T, Nq, H)
        k, v = self._project_key_value(key, value)               # (B, S, Nkv, H)
        context, scores = self._compute_attention(q, k, v, attention_mask=mask, training=training)
        output = self._project_output(context, gate)             # (B, T, D)
        if query_mask is not None:
            _set_keras_mask(output, query_mask)
        if return_attention_scores:
            return output, scores
        return output

    def _project_query(self, query):
        """The query heads (B, T, Nq, H) and the gate (B, T, Nq, H) or None."""
        q = _project(query, self.query_kernel, self.query_bias)
        gate = None
        if self.use_gate:
            gate = ops.sigmoid(_project(query, self.gate_kernel, self.gate_bias))
        return q, gate

    def _project_key_value(self, key, value):
        """The key and value heads, (B, S, Nkv, H) each."""
        return (_project(key, self.key_kernel, self.key_bias),
                _project(value, self.value_kernel, self.value_bias))

    def _project_output(self, context, gate=None):
        """(B, T, Nq, H) -> (B, T, D), after the gate."""
        if gate is not None:
            context = ops.multiply(context, gate)
        output = _einsum("btnh,nhd->btd", context, self.output_kernel)
        return output if self.output_bias is None else ops.add(output, self.output_bias)

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           use_causal_mask=False):
        """Attention on projected heads: ``query`` (B, T, Nq, H), ``key``/``value`` (B, S, Nk, H).

        ``Nk`` may be ``num_key_value_heads`` or any divisor of ``Nq`` (Keras passes the
        key/value heads repeated to ``Nq``). ``use_causal_mask`` is ANDed with
        ``attention_mask``. Returns the context (B, T, Nq, H) and the weights (B, Nq, T, S).
        """
        query, key, value = (ops.convert_to_tensor(x) for x in (query, key, value))
        n_q, n_k = query.shape[2], key.shape[2]
        if len(query.shape) != 4 or len(key.shape) != 4 or n_q % n_k or value.shape[2] != n_k:
            raise ValueError(
                f"`query` has shape {tuple(query.shape)}, `key` {tuple(key.shape)} and `value` "
                f"{tuple(value.shape)}: expected (B, T, Nq, H), (B, S, Nk, H) and (B, S, Nk, H) "
                "with Nk dividing Nq."
            )
        if use_causal_mask:
            attention_mask = _and(attention_mask, _band(_dim(query, 1), _dim(key, 1), causal=True))
        return _grouped_attention(query, key, value, attention_mask, self._inverse_sqrt_head_dim,
                                  self.dropout_layer if self.dropout > 0 else None, training,
                                  return_scores=self._return_attention_scores)

    # ------------------------------------------------------------ Keras plumbing

    def compute_mask(self, query, previous_mask=None):
        """The output keeps the query's Keras mask."""
        return previous_mask

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        # Keras's checks, word for word where it matters ("must be equal").
        if query_shape[-1] != value_shape[-1]:
            raise ValueError(
                f"The last dimension of `query_shape` and `value_shape` must be equal, but are "
                f"{query_shape[-1]}, {value_shape[-1]}. Received: query_shape={query_shape}, "
                f"value_shape={value_shape}"
            )
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(
                "All dimensions of `value` and `key`, except the last one, must be equal. "
                f"Received: value_shape={value_shape} and key_shape={key_shape}"
            )
        return tuple(query_shape)

    def compute_output_spec(self, query, value, key=None, query_mask=None, value_mask=None,
                            key_mask=None, attention_mask=None, return_attention_scores=False,
                            training=None, use_causal_mask=False):
        output = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape, None if key is None else key.shape),
            dtype=self.compute_dtype,
        )
        if not return_attention_scores:
            return output
        s = (value if key is None else key).shape[1]
        return output, keras.KerasTensor((query.shape[0], self.num_query_heads, query.shape[1], s),
                                         dtype=self.compute_dtype)

    def get_config(self) -> dict:
        config = super().get_config()      # holds activity_regularizer when set
        config.update({
            "head_dim": self.head_dim,
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "use_bias": self.use_bias,
            "use_gate": self.use_gate,
            "sliding_window": self.sliding_window,
            "dropout": self.dropout,
            "flash_attention": self.flash_attention,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "seed": self.seed,
        })
        return config


# ------------------------------------------------------------------------- KV cache


class _CachedAttention:
    """keras_hub's cached call, shared by the two cached layers.

    A subclass provides ``_project_query``, ``_project_key_value``, ``_project_output``,
    ``_attend`` and the sizes ``_cache_heads`` / ``_cache_head_dim`` of one cache slot.
    """

    _sliding_window = None

    def call(
        self,
        query,
        value,
        key=None,
        attention_mask=None,
        cache=None,
        cache_update_index=None,
        return_attention_scores=False,
        training=None,
    ):
        if getattr(self, "_flash_attention", False):      # flash_attention=True: see GroupQueryAttention
            raise ValueError("`flash_attention=True`: Flash attention is not supported in tensorflow "
                             "backend (as keras.ops.dot_product_attention says); use None or False.")
        if key is None:
            key = value
        if cache is None and cache_update_index is not None:
            raise ValueError(
                "`cache_update_index` should not be set if `cache` is `None`. "
                f"Received: cache={cache}, cache_update_index={cache_update_index}"
            )
        q, gate = self._project_query(query)                      # (B, T, Nq, H)
        if cache is None:
            k, v = self._project_key_value(key, value)            # (B, S, Nk, H)
        else:
            self._check_cache(cache, query, key, cache_update_index)
            if cache_update_index is not None:   # write the new keys/values at their positions
                k_new, v_new = self._project_key_value(key, value)           # (B, S*, Nk, H)
                # One write of both (B, 2, S*, Nk, H) into the cache, not two writes and a re-stack.
                start = [0, 0, ops.cast(cache_update_index, "int32"), 0, 0]
                cache = ops.slice_update(cache, start, ops.cast(ops.stack((k_new, v_new), axis=1), cache.dtype))
            k, v = cache[:, 0, ...], cache[:, 1, ...]             # (B, S_max, Nk, H)
        if attention_mask is not None:
            source = (f"`query` {tuple(query.shape)} and `value` {tuple(value.shape)}" if cache is None
                      else f"`query` {tuple(query.shape)} and `cache` {tuple(cache.shape)}")
            _check_attention_mask(attention_mask, query.shape[1], k.shape[1], q.shape[2], source)
        # The queries sit at positions cache_update_index .. + T - 1 (0 .. T - 1 without one).
        start = 0 if cache_update_index is None else cache_update_index
        mask = _and(attention_mask, _band(_dim(q, 1), _dim(k, 1), start=start, window=self._sliding_window))
        self._return_attention_scores = bool(return_attention_scores)
        context, scores = self._attend(q, k, v, mask, training)   # (B, T, Nq, H)
        output = self._project_output(context, gate)              # (B, T, D)
        if return_attention_scores and cache is not None:
            return output, scores, cache
        if return_attention_scores:
            return output, scores
        if cache is not None:
            return output, cache
        return output

    def _check_cache(self, cache, query, key, cache_update_index):
        n, h = self._cache_heads, self._cache_head_dim
        shape = tuple(cache.shape)
        want = (query.shape[0], 2, None, n, h)
        if len(shape) != 5 or any(w is not None and d is not None and d != w for d, w in zip(shape, want)):
            raise ValueError(
                f"`cache` has shape {shape} but this layer needs (batch, 2, max_length, heads, "
                f"head_dim) = ({query.shape[0]}, 2, max_length, {n}, {h}) for `query` of shape "
                f"{tuple(query.shape)}: keys at [:, 0], values at [:, 1]."
            )
        if isinstance(cache_update_index, numbers.Integral) and not isinstance(cache_update_index, bool):
            s_new, s_max = key.shape[1], shape[2]
            if cache_update_index < 0 or (None not in (s_new, s_max) and cache_update_index + s_new > s_max):
                raise ValueError(
                    f"`cache_update_index`={cache_update_index} with {s_new} new keys (`key`/`value` "
                    f"of shape {tuple(key.shape)}) does not fit in the {s_max} slots of `cache` "
                    f"with shape {shape}."
                )

    def compute_output_spec(self, query, value, key=None, attention_mask=None, cache=None,
                            cache_update_index=None, return_attention_scores=False, training=None):
        outputs = [keras.KerasTensor(self._output_shape_for(query.shape, value.shape), dtype=self.compute_dtype)]
        if return_attention_scores:
            s = cache.shape[2] if cache is not None else (value if key is None else key).shape[1]
            outputs.append(keras.KerasTensor((query.shape[0], self._cache_query_heads, query.shape[1], s),
                                             dtype=self.compute_dtype))
        if cache is not None:
            outputs.append(keras.KerasTensor(cache.shape, dtype=cache.dtype))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


_CACHE_DOC = """

    Call arguments (keras_hub's ``CachedMultiHeadAttention`` convention)
    --------------------------------------------------------------------
    query : tensor, shape (B, T, D)
    value : tensor, shape (B, S*, D_v)
        The new tokens' values (ignored when ``cache`` is given without an index).
    key : tensor, shape (B, S*, D_k), optional
        Defaults to ``value``.
    attention_mask : bool tensor broadcastable to (B, T, S), optional
        ``S`` = ``S_max`` with a cache. True = may attend. It must hide the cache slots not
        written yet: :func:`compute_causal_mask` ``(B, S_max, T, cache_update_index)`` does.
        (keras_hub's convention has no Keras masks and no ``use_causal_mask``.)
    cache : tensor, shape {cache_shape}, optional
        Keys at ``[:, 0]``, values at ``[:, 1]``, in the compute dtype.
    cache_update_index : int or int tensor, optional
        Where the new keys/values go: slots ``cache_update_index .. + S* - 1``, which are
        also the queries' positions (for ``sliding_window``). ``None`` with a cache: the
        cache is used as it is (e.g. cross-attention to a fixed encoder output). A tensor
        works inside ``tf.function`` / XLA; out-of-range tensor indices are clamped by
        ``ops.slice_update``, Python ints are checked.
    return_attention_scores : bool, default False
    training : bool, optional

    Returns
    -------
    ``output``; ``(output, scores)``; ``(output, cache)``; or ``(output, scores, cache)``
    — as keras_hub: the cache is returned (updated) whenever one is passed, scores
    ``(B, N, T, S)`` when asked.

    A cache is for inference, as in keras_hub: TensorFlow has no gradient for the cache
    update (``XlaDynamicUpdateSlice``); train without one (``cache=None``).
    """


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CachedMultiHeadAttention(_CachedAttention, MultiHeadAttention):
    """:class:`attention_lessons.layers.MultiHeadAttention` with a key/value cache.

    The same constructor, the same weights (``set_weights`` from a
    ``MultiHeadAttention`` or ``keras.layers.MultiHeadAttention`` works), and keras_hub's
    call: with a cache, the keys and values of earlier tokens are read from it instead of
    being projected again, so decoding token ``t`` costs ``O(t)`` instead of ``O(t²)``.
    Keys and values share one cache tensor, so ``value_dim`` must equal ``key_dim``; inputs
    are ``(batch, time, features)`` (time is what a cache grows along), so
    ``attention_axes`` other than the time axis and ``flash_attention=True`` are refused.
    ``use_gate``, ``sliding_window`` and ``output_shape`` work as in the parent.
    """ + _CACHE_DOC.format(cache_shape="(B, 2, S_max, num_heads, key_dim)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.value_dim != self.key_dim:
            raise ValueError(
                f"`value_dim`={self.value_dim} must equal `key_dim`={self.key_dim}: keys and "
                "values share one cache tensor (B, 2, S_max, num_heads, key_dim)."
            )
        # The parent's arguments, read from its config (Keras's names), so that this check
        # follows whatever the parent supports.
        config = MultiHeadAttention.get_config(self)
        axes = config.get("attention_axes")
        if axes is not None and tuple(np.atleast_1d(axes)) not in ((1,), (-2,)):
            raise ValueError(f"`attention_axes`={axes} is not supported with a cache: inputs are "
                             "(batch, time, features) and the cache grows along time (axis 1).")
        if config.get("flash_attention"):
            raise ValueError("`flash_attention`=True: the TensorFlow backend has no flash attention "
                             "kernel; use None or False.")
        self._sliding_window = config.get("sliding_window")

    def _output_shape_for(self, query_shape, value_shape):
        return MultiHeadAttention.compute_output_shape(self, query_shape, value_shape)

    @property
    def _cache_heads(self):
        return self.num_heads

    @property
    def _cache_query_heads(self):
        return self.num_heads

    @property
    def _cache_head_dim(self):
        return self.key_dim

    def _project_query(self, query):
        if len(query.shape) != 3:
            raise ValueError(f"`query` must have shape (batch, time, features); got shape {tuple(query.shape)}.")
        gate = None
        if getattr(self, "gate_kernel", None) is not None:       # use_gate=True
            gate = ops.sigmoid(_project(query, self.gate_kernel, getattr(self, "gate_bias", None)))
        return _project(query, self.query_kernel, self.query_bias), gate

    def _project_key_value(self, key, value):
        return (_project(key, self.key_kernel, self.key_bias),
                _project(value, self.value_kernel, self.value_bias))

    def _project_output(self, context, gate=None):
        if gate is not None:
            context = ops.multiply(context, gate)
        n, h, *out_axes = self.output_kernel.shape          # out_axes: output_shape, e.g. [D]
        kernel = ops.reshape(self.output_kernel, (n, h, -1))            # several output axes as one
        output = _einsum("btnh,nhd->btd", context, kernel)               # (B, T, prod(out_axes))
        if len(out_axes) != 1:
            output = ops.reshape(output, (-1, _dim(context, 1), *out_axes))   # (B, T, *output_shape)
        return output if self.output_bias is None else ops.add(output, self.output_bias)

    def _attend(self, q, k, v, mask, training):
        return _grouped_attention(q, k, v, mask, 1.0 / math.sqrt(float(self.key_dim)),
                                  self.dropout_layer if self.dropout > 0 else None, training,
                                  return_scores=self._return_attention_scores)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CachedGroupQueryAttention(_CachedAttention, GroupQueryAttention):
    """:class:`GroupQueryAttention` with a key/value cache of ``num_key_value_heads`` heads.

    The same constructor and weights as :class:`GroupQueryAttention`; keras_hub's cached
    call. The cache holds only the ``Nkv`` key/value heads, ``Nq / Nkv`` times less than
    multi-head attention's. ``sliding_window`` applies at the queries' absolute positions.
    """ + _CACHE_DOC.format(cache_shape="(B, 2, S_max, num_key_value_heads, head_dim)")

    def _output_shape_for(self, query_shape, value_shape):
        return tuple(query_shape)

    @property
    def _cache_heads(self):
        return self.num_key_value_heads

    @property
    def _cache_query_heads(self):
        return self.num_query_heads

    @property
    def _cache_head_dim(self):
        return self.head_dim

    @property
    def _sliding_window(self):
        return self.sliding_window

    def _attend(self, q, k, v, mask, training):
        return self._compute_attention(q, k, v, attention_mask=mask, training=training)


# ----------------------------------------------------------------- rotary positions


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RotaryEmbedding(keras.layers.Layer):
    r"""Rotary position embedding (RoPE) with keras_hub's signature; no weights.

    Feature ``i`` of every position ``p`` is paired with feature ``i + D/2`` and the pair
    is rotated by the angle ``p · ω_i / scaling_factor`` with
    ``ω_i = max_wavelength^(-2i/D)`` (see :func:`attention_lessons.attention.rotary_embedding`,
    its NumPy reference). Applied to queries and keys, it makes ``q · k`` depend only on
    the offset between their positions.

    Parameters
    ----------
    max_wavelength : float, default 10000
    scaling_factor : float, default 1.0
        Divides the positions (linear position interpolation, to stretch a trained
        context length).
    sequence_axis : int, default 1
    feature_axis : int, default -1
        The feature size must be even.
    **kwargs
        ``name``, ``dtype``, ...

    Call arguments
    --------------
    inputs : tensor
        Any rank >= 2 with a sequence and a feature axis: ``(B, T, D)`` or heads
        ``(B, T, N, H)``.
    start_index : int or int tensor, default 0
        Position of the first element (``cache_update_index`` when decoding with a cache).
    positions : tensor, shape (T,) or (B, T), optional
        Explicit positions; ``start_index`` is then ignored.

    Returns
    -------
    tensor
        Same shape and dtype as ``inputs``.

    Notes
    -----
    As keras_hub, the angles are computed in float32 and the cosines and sines are cast to
    the compute dtype. A float32 angle ``p · ω`` carries a rounding error of about
    ``p · 2⁻²³`` radians (1e-3 at ``p = 10⁴``); the NumPy reference computes in float64.
    """

    def __init__(self, max_wavelength=10000, scaling_factor=1.0, sequence_axis: int = 1,
                 feature_axis: int = -1, **kwargs):
        _check_positive_number(max_wavelength, "max_wavelength")
        _check_positive_number(scaling_factor, "scaling_factor")
        sequence_axis = _check_axis(sequence_axis, "sequence_axis")
        feature_axis = _check_axis(feature_axis, "feature_axis")
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.scaling_factor = scaling_factor
        self.sequence_axis = sequence_axis
        self.feature_axis = feature_axis
        self.built = True      # no weights

    def call(self, inputs, start_index=0, positions=None):
        rank = len(inputs.shape)
        seq, feat = self.sequence_axis % rank, self.feature_axis % rank
        if not (-rank <= self.sequence_axis < rank and -rank <= self.feature_axis < rank) or seq == feat:
            raise ValueError(
                f"`sequence_axis`={self.sequence_axis} and `feature_axis`={self.feature_axis} must be "
                f"two different axes of `inputs` with shape {tuple(inputs.shape)}."
            )
        d = inputs.shape[feat]
        if d is None or d % 2:
            raise ValueError(
                f"`inputs` has shape {tuple(inputs.shape)}: its feature size (axis {self.feature_axis}) "
                "must be known and even (features i and i + D/2 are rotated as a pair)."
            )
        x = ops.moveaxis(inputs, (feat, seq), (-1, 1))                     # (B, T, ..., D)
        t = _dim(x, 1)
        if positions is None:
            positions = ops.arange(t, dtype="float32") + ops.cast(start_index, "float32")
        else:
            positions = ops.cast(positions, "float32")
            p_shape = tuple(positions.shape)
            t_known = x.shape[1]
            if len(p_shape) not in (1, 2) or (t_known is not None and p_shape[-1] not in (None, t_known)):
                raise ValueError(
                    f"`positions` has shape {p_shape} but must be (T,) or (B, T) with T = {x.shape[1]} "
                    f"for `inputs` of shape {tuple(inputs.shape)}."
                )
        if len(positions.shape) == 1:
            positions = ops.expand_dims(positions, 0)                     # (1|B, T)
        # ω_i / scaling_factor, computed as keras_hub does (float32) so both agree bit for bit.
        exponents = ops.arange(0, d, 2, dtype="float32") / ops.cast(d, "float32")
        inverse_freq = ops.power(ops.cast(self.max_wavelength, "float32"), -exponents)
        inverse_freq = inverse_freq / ops.cast(self.scaling_factor, "float32")        # (D/2,)
        angles = ops.einsum("bt,i->bti", positions, inverse_freq)                    # (1|B, T, D/2)
        angles = ops.concatenate([angles, angles], axis=-1)                          # (1|B, T, D)
        for axis in range(2, rank - 1):               # broadcast over the axes between T and D
            angles = ops.expand_dims(angles, axis)                                    # (1|B, T, 1.., D)
        cos = ops.cast(ops.cos(angles), self.compute_dtype)
        sin = ops.cast(ops.sin(angles), self.compute_dtype)
        x1, x2 = ops.split(x, 2, axis=-1)
        rotated = ops.concatenate([ops.negative(x2), x1], axis=-1)    # (-x2, x1): the pairs turned 90°
        out = ops.add(ops.multiply(x, cos), ops.multiply(rotated, sin))
        return ops.moveaxis(out, (-1, 1), (feat, seq))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "max_wavelength": self.max_wavelength,
            "scaling_factor": self.scaling_factor,
            "sequence_axis": self.sequence_axis,
            "feature_axis": self.feature_axis,
        })
        return config
