"""Attention in NumPy: the reference implementation of lessons 04–09.

Everything here is plain NumPy, so the lessons that use it start without loading
TensorFlow. The Keras layer of lesson 09 is checked against these functions.

Conventions (see COURSE.md §6):

* masks are boolean with **True = may attend** (the Keras convention) and broadcast to
  ``(..., queries, keys)``;
* shapes are ``(batch, time, features)``; heads are ``(batch, heads, time, head_dim)``;
* the softmax runs in at least float32 (float64 stays float64) and the result has the
  floating dtype of the query;
* a query that may attend to no key gets zero weights and a zero context (never NaN).
  ``keras.layers.MultiHeadAttention`` does the same on its explicit path
  (``return_attention_scores=True``), but its fast path gives such rows uniform weights,
  i.e. the mean of the values;
* shape mistakes raise ``ValueError`` naming the arguments and their shapes.
"""

from __future__ import annotations

import math

import numpy as np

from .softmax import softmax

__all__ = [
    "nadaraya_watson",
    "dot_scores",
    "scaled_dot_scores",
    "bilinear_scores",
    "additive_scores",
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "combine_masks",
    "key_padding_to_attention_mask",
    "split_heads",
    "merge_heads",
    "PARAM_NAMES",
    "init_params",
    "params_from_keras",
    "params_to_list",
    "multi_head_attention",
    "sinusoidal_positions",
    "online_softmax_attention",
]

# The order of keras.layers.MultiHeadAttention.get_weights() (use_bias=True).
PARAM_NAMES = (
    "query_kernel",
    "query_bias",
    "key_kernel",
    "key_bias",
    "value_kernel",
    "value_bias",
    "output_kernel",
    "output_bias",
)
_KERNELS = ("query_kernel", "key_kernel", "value_kernel", "output_kernel")
_BIASES = ("query_bias", "key_bias", "value_bias", "output_bias")


# --------------------------------------------------------------------------- helpers


def _as_float(x, name: str) -> np.ndarray:
    """``x`` as a real floating array; integers become float64, floats keep their dtype."""
    x = np.asarray(x)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"`{name}` must hold real numbers; got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"`{name}` must be real; got dtype {x.dtype}.")
    if x.dtype.type not in (np.float16, np.float32, np.float64):
        x = x.astype(np.float64)
    return x


def _work_dtype(*arrays: np.ndarray) -> np.dtype:
    # float16 has too little range for scores and exp(); never compute below float32.
    return np.result_type(*arrays, np.float32)


def _check_ndim(x: np.ndarray, name: str, min_ndim: int, what: str) -> None:
    if x.ndim < min_ndim:
        raise ValueError(f"`{name}` must have shape {what}; got shape {x.shape}.")


def _check_last_dims_agree(a, a_name, b, b_name, a_axis=-1, b_axis=-1, what="last dimensions"):
    if a.shape[a_axis] != b.shape[b_axis]:
        raise ValueError(
            f"`{a_name}` has shape {a.shape} and `{b_name}` has shape {b.shape}: "
            f"their {what} ({a.shape[a_axis]} and {b.shape[b_axis]}) must agree."
        )


def _broadcast_leading(shapes: dict[str, tuple]) -> tuple:
    """Broadcast the batch dimensions (all but the last two) of several arrays."""
    try:
        return np.broadcast_shapes(*(s[:-2] for s in shapes.values()))
    except ValueError:
        listed = ", ".join(f"`{n}` has shape {s}" for n, s in shapes.items())
        raise ValueError(
            f"{listed}: their leading (batch/head) dimensions do not broadcast together."
        ) from None


def _as_bool_mask(mask, name: str = "mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all():
        return mask.astype(bool)  # 0/1 integers, as Keras accepts
    raise ValueError(
        f"`{name}` must be boolean (True = may attend) or 0/1 integers; got dtype {mask.dtype}. "
        "Additive masks (0 / -inf) belong in the scores, not in a mask."
    )


def _broadcast_mask(mask, scores_shape: tuple, target_desc: str, name: str = "mask") -> np.ndarray:
    """The mask broadcast against the scores. It may add leading (batch) dimensions, e.g. one
    mask per example for keys shared by the batch, but must not change ``(T, S)``."""
    mask = _as_bool_mask(mask, name)
    try:
        target = np.broadcast_shapes(mask.shape, scores_shape)
    except ValueError:
        target = None
    if target is None or target[-2:] != tuple(scores_shape[-2:]):
        raise ValueError(
            f"`{name}` has shape {mask.shape}, which does not broadcast to the scores' shape "
            f"{tuple(scores_shape)} ({target_desc})."
        )
    return np.broadcast_to(mask, target)


def _check_positive_int(value, name: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an int; got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"`{name}` must be {bound}; got {value}.")
    return int(value)


def _attend(scores: np.ndarray, values: np.ndarray, mask, mask_desc: str):
    """softmax(scores) @ values over the last axis of ``scores``; fully masked rows -> 0."""
    if mask is not None:
        mask = _broadcast_mask(mask, scores.shape, mask_desc)
        scores = np.broadcast_to(scores, mask.shape)
    weights = softmax(scores, axis=-1, mask=mask)
    return weights, weights @ values


# ------------------------------------------------------------------ Nadaraya–Watson


def nadaraya_watson(queries, keys, values, bandwidth: float):
    r"""Gaussian-kernel Nadaraya–Watson regression, written as attention pooling.

    .. math::
        f(q) = \sum_i \operatorname{softmax}_i\!\left(-\frac{\lVert q - k_i\rVert^2}{2h^2}\right) v_i

    The query is the point where we predict, the keys are the training inputs ``x_i`` and
    the values their targets ``y_i``. The kernel's normalising constant cancels in the
    softmax, and ``1/h²`` acts as an inverse temperature: a small bandwidth gives sharp,
    local weights.

    Parameters
    ----------
    queries : array_like, shape (n_q,) or (n_q, d)
    keys : array_like, shape (n_k,) or (n_k, d)
        A 1-D array is read as ``d = 1``.
    values : array_like, shape (n_k,) or (n_k, d_v)
    bandwidth : float
        Kernel width ``h > 0``.

    Returns
    -------
    prediction : numpy.ndarray, shape (n_q,) or (n_q, d_v)
        Shaped like ``values`` with ``n_k`` replaced by ``n_q``.
    weights : numpy.ndarray, shape (n_q, n_k)
        Attention weights; every row sums to 1.

    Examples
    --------
    >>> pred, w = nadaraya_watson([0.0], [-1.0, 1.0], [0.0, 2.0], bandwidth=1.0)
    >>> pred, w
    (array([1.]), array([[0.5, 0.5]]))
    """
    q = _as_float(queries, "queries")
    k = _as_float(keys, "keys")
    v = _as_float(values, "values")
    for arr, name, what in ((q, "queries", "(n_q,) or (n_q, d)"), (k, "keys", "(n_k,) or (n_k, d)"),
                            (v, "values", "(n_k,) or (n_k, d_v)")):
        if arr.ndim not in (1, 2):
            raise ValueError(f"`{name}` must have shape {what}; got shape {arr.shape}.")
    try:
        h = float(bandwidth)
    except (TypeError, ValueError):
        raise ValueError(f"`bandwidth` must be a positive number; got {bandwidth!r}.") from None
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"`bandwidth` must be positive and finite; got {bandwidth!r}.")
    q2 = q.reshape(q.shape[0], -1) if q.ndim == 2 else q[:, None]
    k2 = k.reshape(k.shape[0], -1) if k.ndim == 2 else k[:, None]
    if q2.shape[1] != k2.shape[1]:
        raise ValueError(
            f"`queries` has shape {q.shape} and `keys` has shape {k.shape}: "
            f"their feature dimensions ({q2.shape[1]} and {k2.shape[1]}) must agree."
        )
    if v.shape[0] != k.shape[0]:
        raise ValueError(
            f"`keys` has shape {k.shape} and `values` has shape {v.shape}: "
            f"they need one value per key ({k.shape[0]} keys, {v.shape[0]} values)."
        )
    work = _work_dtype(q, k, v)
    # The explicit difference (not |q|² - 2q·k + |k|²) is exact: no cancellation for
    # queries far from the origin.
    diff = q2.astype(work)[:, None, :] - k2.astype(work)[None, :, :]
    sq_dist = np.sum(diff * diff, axis=-1)
    weights = softmax(-sq_dist / (2.0 * h * h), axis=-1)
    prediction = weights @ v.astype(work)
    out = np.result_type(q, k, v)
    return prediction.astype(out, copy=False), weights.astype(out, copy=False)


# ------------------------------------------------------------------- score functions


def _qk(q, k, q_what="(..., T, d)", k_what="(..., S, d)"):
    q = _as_float(q, "q")
    k = _as_float(k, "k")
    _check_ndim(q, "q", 2, q_what)
    _check_ndim(k, "k", 2, k_what)
    return q, k


def dot_scores(q, k) -> np.ndarray:
    r"""Dot-product scores :math:`s_{ts} = q_t \cdot k_s`.

    Parameters
    ----------
    q : array_like, shape (..., T, d)
    k : array_like, shape (..., S, d)
        Leading (batch, head) dimensions broadcast against those of ``q``.

    Returns
    -------
    numpy.ndarray, shape (..., T, S)
    """
    q, k = _qk(q, k)
    _check_last_dims_agree(q, "q", k, "k")
    _broadcast_leading({"q": q.shape, "k": k.shape})
    return q @ np.swapaxes(k, -1, -2)


def scaled_dot_scores(q, k) -> np.ndarray:
    r"""Scaled dot-product scores :math:`q_t \cdot k_s / \sqrt{d}`.

    With unit-variance entries, ``q · k`` has variance ``d``; dividing by ``√d`` keeps the
    scores of order 1, so the softmax does not saturate as ``d`` grows. Shapes as in
    :func:`dot_scores`.
    """
    scores = dot_scores(q, k)
    d = np.shape(q)[-1]
    return scores / scores.dtype.type(math.sqrt(d))


def bilinear_scores(q, k, W) -> np.ndarray:
    r"""Bilinear ("general", Luong) scores :math:`q_t W k_s^\top`.

    Parameters
    ----------
    q : array_like, shape (..., T, d_q)
    k : array_like, shape (..., S, d_k)
    W : array_like, shape (d_q, d_k)

    Returns
    -------
    numpy.ndarray, shape (..., T, S)
    """
    q, k = _qk(q, k, "(..., T, d_q)", "(..., S, d_k)")
    W = _as_float(W, "W")
    if W.ndim != 2:
        raise ValueError(f"`W` must have shape (d_q, d_k); got shape {W.shape}.")
    _check_last_dims_agree(q, "q", W, "W", -1, 0, "dimensions d_q (last of q, first of W)")
    _check_last_dims_agree(k, "k", W, "W", -1, 1, "dimensions d_k (last of k, second of W)")
    _broadcast_leading({"q": q.shape, "k": k.shape})
    return (q @ W) @ np.swapaxes(k, -1, -2)


def additive_scores(q, k, W_q, W_k, v) -> np.ndarray:
    r"""Additive (Bahdanau) scores :math:`s_{ts} = v^\top \tanh(q_t W_q + k_s W_k)`.

    Queries and keys may have different sizes; both are projected to ``h`` hidden units.

    Parameters
    ----------
    q : array_like, shape (..., T, d_q)
    k : array_like, shape (..., S, d_k)
    W_q : array_like, shape (d_q, h)
    W_k : array_like, shape (d_k, h)
    v : array_like, shape (h,)

    Returns
    -------
    numpy.ndarray, shape (..., T, S)
    """
    q, k = _qk(q, k, "(..., T, d_q)", "(..., S, d_k)")
    W_q = _as_float(W_q, "W_q")
    W_k = _as_float(W_k, "W_k")
    v = _as_float(v, "v")
    if W_q.ndim != 2:
        raise ValueError(f"`W_q` must have shape (d_q, h); got shape {W_q.shape}.")
    if W_k.ndim != 2:
        raise ValueError(f"`W_k` must have shape (d_k, h); got shape {W_k.shape}.")
    if v.ndim != 1:
        raise ValueError(f"`v` must have shape (h,); got shape {v.shape}.")
    _check_last_dims_agree(q, "q", W_q, "W_q", -1, 0, "dimensions d_q (last of q, first of W_q)")
    _check_last_dims_agree(k, "k", W_k, "W_k", -1, 0, "dimensions d_k (last of k, first of W_k)")
    _check_last_dims_agree(W_q, "W_q", W_k, "W_k", 1, 1, "hidden sizes h")
    _check_last_dims_agree(W_q, "W_q", v, "v", 1, 0, "hidden sizes h")
    _broadcast_leading({"q": q.shape, "k": k.shape})
    # (..., T, 1, h) + (..., 1, S, h): every query meets every key.
    hidden = np.tanh((q @ W_q)[..., :, None, :] + (k @ W_k)[..., None, :, :])
    return hidden @ v


# ---------------------------------------------------------- scaled dot-product attention


def _qkv(q, k, v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries (..., T, d), keys (..., S, d) and values (..., S, d_v) as float arrays, or a ValueError."""
    q, k, v = _as_float(q, "q"), _as_float(k, "k"), _as_float(v, "v")
    _check_ndim(q, "q", 2, "(..., T, d)")
    _check_ndim(k, "k", 2, "(..., S, d)")
    _check_ndim(v, "v", 2, "(..., S, d_v)")
    _check_last_dims_agree(q, "q", k, "k")
    _check_last_dims_agree(k, "k", v, "v", -2, -2, "numbers of keys and values (axis -2)")
    return q, k, v


def scaled_dot_product_attention(q, k, v, mask=None):
    r"""Scaled dot-product attention, :math:`\operatorname{softmax}(QK^\top/\sqrt{d})\,V`.

    Parameters
    ----------
    q : array_like, shape (..., T, d)
        Queries. Any leading (batch, head) dimensions; they broadcast against those of
        ``k`` and ``v``.
    k : array_like, shape (..., S, d)
        Keys.
    v : array_like, shape (..., S, d_v)
        Values, one per key.
    mask : array_like of bool, optional
        Broadcastable to ``(..., T, S)``; True = query ``t`` may attend to key ``s``. It may
        add leading dimensions (one mask per example for shared keys) but not change
        ``(T, S)``. See :func:`causal_mask`, :func:`padding_mask`, :func:`combine_masks`.

    Returns
    -------
    output : numpy.ndarray, shape (..., T, d_v)
        Weighted averages of the values; a query with no visible key gets zeros.
    weights : numpy.ndarray, shape (..., T, S)
        Attention weights: rows sum to 1 where any key is visible, masked keys get
        exactly 0, and fully masked rows are all 0.

    Notes
    -----
    The softmax runs in float32 for float16 inputs and in float64 for float64 inputs; both
    results are returned in the floating dtype of ``q`` (integers give float64).

    Examples
    --------
    >>> out, w = scaled_dot_product_attention([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]],
    ...                                       [[1.0], [0.0]])
    >>> w.round(3)
    array([[0.67, 0.33]])
    """
    q, k, v = _qkv(q, k, v)
    batch = _broadcast_leading({"q": q.shape, "k": k.shape, "v": v.shape})
    work = _work_dtype(q, k, v)
    scores = scaled_dot_scores(q.astype(work), k.astype(work))
    desc = f"(..., T, S) from `q` {q.shape} and `k` {k.shape}"
    scores = np.broadcast_to(scores, batch + scores.shape[-2:])
    weights, output = _attend(scores, v.astype(work), mask, desc)
    out_dtype = q.dtype
    return output.astype(out_dtype, copy=False), weights.astype(out_dtype, copy=False)


# ----------------------------------------------------------------------------- masks


def causal_mask(t: int, s: int | None = None) -> np.ndarray:
    """Causal mask: query ``i`` may attend to keys ``0..i`` (the diagonal included).

    Parameters
    ----------
    t : int
        Number of queries.
    s : int, optional
        Number of keys; defaults to ``t``. When ``t != s`` the triangle is aligned at the
        top-left corner (``mask[i, j] = j <= i``), like Keras's ``use_causal_mask=True``
        and ``keras.ops.dot_product_attention(is_causal=True)``.

    Returns
    -------
    numpy.ndarray of bool, shape (t, s)

    Examples
    --------
    >>> causal_mask(3).astype(int)
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 1]])
    """
    t = _check_positive_int(t, "t")
    s = t if s is None else _check_positive_int(s, "s")
    return np.arange(s)[None, :] <= np.arange(t)[:, None]


def padding_mask(lengths, max_len: int | None = None) -> np.ndarray:
    """Mask of the real (non-padding) tokens of a padded batch.

    Parameters
    ----------
    lengths : array_like of int, shape (batch,)
        True length of each sequence, ``0 <= length <= max_len``.
    max_len : int, optional
        Padded length; defaults to ``max(lengths)``.

    Returns
    -------
    numpy.ndarray of bool, shape (batch, max_len)
        True for real tokens. Use :func:`key_padding_to_attention_mask` to hide the padded
        keys from every query.

    Examples
    --------
    >>> padding_mask([1, 3], 4).astype(int)
    array([[1, 0, 0, 0],
           [1, 1, 1, 0]])
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"`lengths` must have shape (batch,); got shape {lengths.shape}.")
    if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
        if not (np.issubdtype(lengths.dtype, np.floating) and np.all(lengths == np.round(lengths))):
            raise ValueError(f"`lengths` must hold whole numbers; got {lengths!r}.")
        lengths = lengths.astype(np.int64)
    if max_len is None:
        max_len = int(lengths.max()) if lengths.size else 0
    max_len = _check_positive_int(max_len, "max_len", allow_zero=True)
    if lengths.size and (lengths.min() < 0 or lengths.max() > max_len):
        raise ValueError(
            f"`lengths` must lie in [0, max_len={max_len}]; got {lengths.tolist()}."
        )
    return np.arange(max_len)[None, :] < lengths[:, None]


def combine_masks(*masks):
    """Logical AND of several boolean masks, with broadcasting.

    ``None`` entries are skipped, so optional masks can be passed as they are; the result
    is ``None`` when every entry is ``None`` (no masking at all).

    Examples
    --------
    >>> keys = key_padding_to_attention_mask(padding_mask([2], 3))   # (1, 1, 3)
    >>> combine_masks(causal_mask(3), keys, None).astype(int)        # (1, 3, 3)
    array([[[1, 0, 0],
            [1, 1, 0],
            [1, 1, 0]]])
    """
    present = [(i, _as_bool_mask(m, f"masks[{i}]")) for i, m in enumerate(masks) if m is not None]
    if not present:
        return None
    try:
        np.broadcast_shapes(*(m.shape for _, m in present))
    except ValueError:
        listed = ", ".join(f"masks[{i}] has shape {m.shape}" for i, m in present)
        raise ValueError(f"cannot combine masks that do not broadcast together: {listed}.") from None
    result = present[0][1]
    for _, m in present[1:]:
        result = np.logical_and(result, m)
    return np.asarray(result, dtype=bool)


def key_padding_to_attention_mask(mask) -> np.ndarray:
    """Turn a key padding mask ``(batch, S)`` into an attention mask ``(batch, 1, S)``.

    The new axis broadcasts over the queries: every query sees the same keys.
    """
    mask = _as_bool_mask(mask, "mask")
    if mask.ndim != 2:
        raise ValueError(f"`mask` must have shape (batch, S); got shape {mask.shape}.")
    return mask[:, None, :]


# ----------------------------------------------------------------------------- heads


def split_heads(x, num_heads: int) -> np.ndarray:
    """Split the features into heads: ``(B, T, N*H) -> (B, N, T, H)`` (H: head size, as in lesson 08).

    First reshape to ``(B, T, N, H)``, then move the head axis in front of time. Reshaping
    straight to ``(B, N, T, H)`` (without the transpose) silently mixes time steps across
    heads. Any leading dimensions are allowed: ``(..., T, N*H) -> (..., N, T, H)``.
    """
    x = np.asarray(x)
    num_heads = _check_positive_int(num_heads, "num_heads")
    _check_ndim(x, "x", 2, "(..., T, num_heads * head_dim)")
    if x.shape[-1] % num_heads:
        raise ValueError(
            f"`x` has shape {x.shape}: its last dimension ({x.shape[-1]}) is not divisible "
            f"by `num_heads`={num_heads}."
        )
    head_dim = x.shape[-1] // num_heads
    x = x.reshape(x.shape[:-1] + (num_heads, head_dim))
    return np.swapaxes(x, -3, -2)


def merge_heads(x) -> np.ndarray:
    """Inverse of :func:`split_heads`: ``(B, N, T, H) -> (B, T, N*H)``.

    The head axis must go back behind time before the reshape.
    """
    x = np.asarray(x)
    _check_ndim(x, "x", 3, "(..., num_heads, T, head_dim)")
    x = np.swapaxes(x, -3, -2)
    return x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))


# ------------------------------------------------------------------ multi-head attention


def init_params(d_model: int, num_heads: int, key_dim: int, value_dim: int | None = None,
                output_dim: int | None = None, rng=None, use_bias: bool = True) -> dict:
    """Random parameters laid out like ``keras.layers.MultiHeadAttention``'s weights.

    Kernels are Glorot-uniform for the equivalent 2-D matrix (as Keras 3.15 does); biases
    are zero, as in Keras.

    Parameters
    ----------
    d_model : int
        Feature size of the query, key and value inputs.
    num_heads : int
    key_dim : int
        Size ``H`` of each query/key head.
    value_dim : int, optional
        Size ``Hv`` of each value head; defaults to ``key_dim``.
    output_dim : int, optional
        Output feature size; defaults to ``d_model``.
    rng : numpy.random.Generator or int or None
        Random generator or seed.
    use_bias : bool, default True
        Without biases the dict holds only the four kernels (Keras's ``use_bias=False``).

    Returns
    -------
    dict of numpy.ndarray
        Keys as in :data:`PARAM_NAMES`; see :func:`multi_head_attention` for the shapes.
    """
    d_model = _check_positive_int(d_model, "d_model")
    num_heads = _check_positive_int(num_heads, "num_heads")
    key_dim = _check_positive_int(key_dim, "key_dim")
    value_dim = key_dim if value_dim is None else _check_positive_int(value_dim, "value_dim")
    output_dim = d_model if output_dim is None else _check_positive_int(output_dim, "output_dim")
    rng = np.random.default_rng(rng)

    def glorot(shape, fan_in, fan_out):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape)

    params = {
        "query_kernel": glorot((d_model, num_heads, key_dim), d_model, num_heads * key_dim),
        "query_bias": np.zeros((num_heads, key_dim)),
        "key_kernel": glorot((d_model, num_heads, key_dim), d_model, num_heads * key_dim),
        "key_bias": np.zeros((num_heads, key_dim)),
        "value_kernel": glorot((d_model, num_heads, value_dim), d_model, num_heads * value_dim),
        "value_bias": np.zeros((num_heads, value_dim)),
        "output_kernel": glorot((num_heads, value_dim, output_dim), num_heads * value_dim, output_dim),
        "output_bias": np.zeros((output_dim,)),
    }
    if not use_bias:
        params = {name: params[name] for name in _KERNELS}
    return params


def params_from_keras(layer) -> dict:
    """The weights of a built ``keras.layers.MultiHeadAttention`` as a parameter dict.

    Only calls ``layer.get_weights()``, so this module never imports Keras. Works for any
    layer with the same weight layout (8 arrays, or 4 kernels with ``use_bias=False``).
    """
    weights = [np.asarray(w) for w in layer.get_weights()]
    if len(weights) == 8:
        params = dict(zip(PARAM_NAMES, weights))
    elif len(weights) == 4:
        params = dict(zip(_KERNELS, weights))
    else:
        shapes = [w.shape for w in weights]
        raise ValueError(
            f"`layer` has {len(weights)} weights with shapes {shapes}; expected the 8 (or 4 "
            "without biases) of a built MultiHeadAttention. Call the layer once to build it."
        )
    _check_params(params)
    return params


def params_to_list(params: dict) -> list:
    """The parameters in the order of ``MultiHeadAttention.get_weights()``.

    The result can be passed to ``layer.set_weights``. Missing (or ``None``) biases are
    left out, as for a layer built with ``use_bias=False``.
    """
    _check_params(params)
    names = PARAM_NAMES if _has_bias(params) else _KERNELS
    return [np.asarray(params[name]) for name in names]


def _has_bias(params: dict) -> bool:
    present = [params.get(name) is not None for name in _BIASES]
    if any(present) and not all(present):
        missing = [n for n, p in zip(_BIASES, present) if not p]
        raise ValueError(f"`params` has some biases but not {missing}: give all four or none.")
    return all(present)


def _check_params(params: dict) -> tuple:
    """Validate the kernel and bias shapes; return (N, H, Hv, D_out)."""
    if not isinstance(params, dict):
        raise ValueError(
            f"`params` must be a dict with keys {list(PARAM_NAMES)}; got {type(params).__name__}."
        )
    missing = [name for name in _KERNELS if params.get(name) is None]
    if missing:
        raise ValueError(f"`params` lacks {missing}; expected keys {list(PARAM_NAMES)}.")
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f"`params` has unknown keys {unknown}; expected keys {list(PARAM_NAMES)}.")
    shapes = {name: np.shape(params[name]) for name in params if params[name] is not None}
    for name in _KERNELS:
        if len(shapes[name]) != 3:
            layout = "(N, Hv, D_out)" if name == "output_kernel" else "(D, N, H)"
            raise ValueError(f"`params['{name}']` must have shape {layout}; got {shapes[name]}.")
    _, n, h = shapes["query_kernel"]
    _, n_v, h_v = shapes["value_kernel"]
    expected = {
        "key_kernel": (shapes["key_kernel"][0], n, h),
        "value_kernel": (shapes["value_kernel"][0], n, h_v),
        "output_kernel": (n, h_v, shapes["output_kernel"][2]),
    }
    if _has_bias(params):
        expected.update({
            "query_bias": (n, h),
            "key_bias": (n, h),
            "value_bias": (n, h_v),
            "output_bias": (shapes["output_kernel"][2],),
        })
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise ValueError(
                f"`params['{name}']` has shape {shapes[name]} but {shape} was expected from "
                f"`params['query_kernel']` {shapes['query_kernel']} and "
                f"`params['value_kernel']` {shapes['value_kernel']}."
            )
    return n, h, h_v, shapes["output_kernel"][2]


def multi_head_attention(query, value, params: dict, num_heads: int, mask=None, key=None,
                         return_weights: bool = False):
    r"""Multi-head attention, computed exactly like ``keras.layers.MultiHeadAttention``.

    For each head ``n``: :math:`Q_n = x_q W^Q_n + b^Q_n`, :math:`K_n = x_k W^K_n + b^K_n`,
    :math:`V_n = x_v W^V_n + b^V_n`; then
    :math:`O_n = \operatorname{softmax}(Q_n K_n^\top / \sqrt{H})\,V_n`, and the heads are
    combined by the output projection :math:`\sum_n O_n W^O_n + b^O`.

    Parameters
    ----------
    query : array_like, shape (B, T, D_q)
    value : array_like, shape (B, S, D_v)
    params : dict
        ``query_kernel`` (D_q, N, H), ``query_bias`` (N, H), ``key_kernel`` (D_k, N, H),
        ``key_bias`` (N, H), ``value_kernel`` (D_v, N, Hv), ``value_bias`` (N, Hv),
        ``output_kernel`` (N, Hv, D_out), ``output_bias`` (D_out,): the layouts and order
        of Keras's ``get_weights()`` (see :func:`params_from_keras`, :func:`init_params`).
        Biases may be omitted (``use_bias=False``).
    num_heads : int
        ``N``; must match the kernels.
    mask : array_like of bool, optional
        ``(B, T, S)`` or ``(T, S)`` (anything broadcastable to ``(B, T, S)``), True = may
        attend; the same mask serves every head. Keras's ``attention_mask``.
    key : array_like, shape (B, S, D_k), optional
        Defaults to ``value``.
    return_weights : bool, default False
        Also return the attention weights.

    Returns
    -------
    output : numpy.ndarray, shape (B, T, D_out)
        In the floating dtype of ``query``; computed in at least float32.
    weights : numpy.ndarray, shape (B, N, T, S)
        Only when ``return_weights``.

    Notes
    -----
    As in Keras, the *query* is scaled by ``1/√H`` before the dot product (the same up to
    rounding as scaling the scores). A query row with no visible key gets a zero context,
    so its output is ``output_bias``: Keras's explicit path (``return_attention_scores=True``)
    gives the same, its fast path the output for uniform weights instead.
    """
    x_q = _as_float(query, "query")
    x_v = _as_float(value, "value")
    x_k = x_v if key is None else _as_float(key, "key")
    for arr, name, what in ((x_q, "query", "(B, T, D_q)"), (x_v, "value", "(B, S, D_v)"),
                            (x_k, "key", "(B, S, D_k)")):
        if arr.ndim != 3:
            raise ValueError(f"`{name}` must have shape {what}; got shape {arr.shape}.")
    if x_q.shape[0] != x_v.shape[0] or x_k.shape[0] != x_v.shape[0]:
        raise ValueError(
            f"`query` {x_q.shape}, `key` {x_k.shape} and `value` {x_v.shape} must have the "
            "same batch size (axis 0)."
        )
    _check_last_dims_agree(x_k, "key", x_v, "value", 1, 1, "sequence lengths S (axis 1)")
    num_heads = _check_positive_int(num_heads, "num_heads")
    n, h, _, _ = _check_params(params)
    if n != num_heads:
        raise ValueError(
            f"`num_heads`={num_heads} but `params['query_kernel']` has shape "
            f"{np.shape(params['query_kernel'])}, i.e. {n} heads."
        )
    for arr, arg, pname in ((x_q, "query", "query_kernel"), (x_k, "key", "key_kernel"),
                            (x_v, "value", "value_kernel")):
        kernel_shape = np.shape(params[pname])
        if arr.shape[-1] != kernel_shape[0]:
            raise ValueError(
                f"`{arg}` has shape {arr.shape} and `params['{pname}']` has shape "
                f"{kernel_shape}: the features of `{arg}` ({arr.shape[-1]}) must equal the "
                f"kernel's first dimension ({kernel_shape[0]})."
            )

    p = {name: _as_float(val, f"params['{name}']") for name, val in params.items() if val is not None}
    work = _work_dtype(x_q, x_k, x_v, *p.values())
    p = {name: val.astype(work, copy=False) for name, val in p.items()}
    has_bias = "query_bias" in p

    def project(x, kernel, bias):
        out = np.einsum("btd,dnh->btnh", x.astype(work, copy=False), p[kernel])
        return out + p[bias] if has_bias else out

    q = project(x_q, "query_kernel", "query_bias")          # (B, T, N, H)
    k = project(x_k, "key_kernel", "key_bias")              # (B, S, N, H)
    v = project(x_v, "value_kernel", "value_bias")          # (B, S, N, Hv)
    q = q * work.type(1.0 / math.sqrt(h))
    scores = np.einsum("btnh,bsnh->bnts", q, k)             # (B, N, T, S)

    b, t, s = x_q.shape[0], x_q.shape[1], x_v.shape[1]
    if mask is not None:
        mask = _as_bool_mask(mask)
        try:
            mask = np.broadcast_to(mask, (b, t, s))
        except ValueError:
            raise ValueError(
                f"`mask` has shape {mask.shape}, which does not broadcast to (B, T, S) = "
                f"{(b, t, s)} from `query` {x_q.shape} and `value` {x_v.shape}."
            ) from None
        mask = mask[:, None, :, :]                          # one mask for every head
    weights, context = _attend(scores, np.swapaxes(v, 1, 2), mask, "(B, N, T, S)")
    # context: (B, N, T, Hv) -> combine the heads with the output kernel.
    output = np.einsum("bnth,nhd->btd", context, p["output_kernel"])
    if has_bias:
        output = output + p["output_bias"]
    output = output.astype(x_q.dtype, copy=False)
    if return_weights:
        return output, weights.astype(x_q.dtype, copy=False)
    return output


# ------------------------------------------------------------------------- positions


def sinusoidal_positions(length: int, dim: int, dtype=np.float64) -> np.ndarray:
    r"""Sinusoidal position encodings of Vaswani et al. (2017).

    .. math::
        PE_{p, 2i} = \sin\!\big(p / 10000^{2i/\mathrm{dim}}\big), \qquad
        PE_{p, 2i+1} = \cos\!\big(p / 10000^{2i/\mathrm{dim}}\big)

    Each pair of columns is a clock with its own period, from ``2π`` to ``10000·2π``; the
    encoding of ``p + k`` is a fixed rotation of that of ``p``.

    Parameters
    ----------
    length : int
        Number of positions ``0 .. length-1``.
    dim : int
        Encoding size; must be even (one sin and one cos per frequency).
    dtype : numpy dtype, default float64

    Returns
    -------
    numpy.ndarray, shape (length, dim)
    """
    length = _check_positive_int(length, "length", allow_zero=True)
    dim = _check_positive_int(dim, "dim")
    if dim % 2:
        raise ValueError(f"`dim` must be even (sin and cos come in pairs); got dim={dim}.")
    positions = np.arange(length, dtype=np.float64)[:, None]
    rates = 10000.0 ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)   # 1 / 10000^(2i/dim)
    angles = positions * rates[None, :]
    pe = np.empty((length, dim), dtype=np.float64)
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles)
    return pe.astype(dtype)


# ----------------------------------------------------------- long sequences (lesson 14)


def online_softmax_attention(q, k, v, chunk_size: int, mask=None, causal: bool = False,
                             query_chunk_size: int | None = None) -> np.ndarray:
    r"""Scaled dot-product attention over key chunks, without the ``(T, S)`` score matrix.

    Computes the same output as ``scaled_dot_product_attention(q, k, v, mask)[0]`` but
    visits the keys and values ``chunk_size`` at a time and keeps, per query, only three
    running quantities (the *online softmax*; Milakov & Gimelshein 2018, the core of
    FlashAttention, Dao et al. 2022). With scores :math:`s_j = q \cdot k_j / \sqrt{d}` of
    the chunk :math:`C` and, before the first chunk, :math:`m = -\infty,\ \ell = 0,\ a = 0`:

    .. math::
        m' &= \max\big(m,\ \max_{j \in C} s_j\big)                      && \text{running max} \\
        \alpha &= e^{\,m - m'}                                            && \text{rescales the old statistics} \\
        \ell' &= \alpha\,\ell + \sum_{j \in C} e^{\,s_j - m'}             && \text{running softmax denominator} \\
        a' &= \alpha\,a + \sum_{j \in C} e^{\,s_j - m'}\, v_j              && \text{running un-normalised output}

    and after the last chunk the output is :math:`a / \ell`. Every exponent is :math:`\le 0`
    (no overflow), and when the max grows the old sums are multiplied by
    :math:`\alpha = e^{m - m'} < 1`, as if they had been computed with the new max from the
    start. Masked keys get :math:`s_j = -\infty`, i.e. :math:`e^{s_j - m'} = 0`; a query
    that sees no key keeps :math:`\ell = 0` and gets a zero output, as in
    :func:`scaled_dot_product_attention`.

    Parameters
    ----------
    q : array_like, shape (..., T, d)
        Queries; leading (batch, head) dimensions broadcast against those of ``k``, ``v``.
    k : array_like, shape (..., S, d)
    v : array_like, shape (..., S, d_v)
    chunk_size : int
        Keys per chunk, ``>= 1``; it need not divide ``S`` (the last chunk is shorter).
    mask : array_like of bool, optional
        Broadcastable to ``(..., T, S)``, True = may attend, as in
        :func:`scaled_dot_product_attention`. It is only ever read chunk by chunk (a
        broadcast view, never expanded to ``(T, S)``).
    causal : bool, default False
        Query ``i`` sees keys ``j <= i`` (top-left aligned, :func:`causal_mask`); combined
        with ``mask`` by logical AND. Key chunks that lie wholly in the future of a query
        block are skipped, which halves the work for ``T = S``.
    query_chunk_size : int, optional
        Also process the queries in blocks of this many (default: all ``T`` at once).

    Returns
    -------
    numpy.ndarray, shape (..., T, d_v)
        In the floating dtype of ``q`` (integers give float64); computed in float32 for
        float16/float32 inputs and in float64 for float64 inputs.

    Notes
    -----
    Memory: besides the inputs and the output, the largest temporaries are the chunk's
    scores, ``batch · T_q · chunk_size`` numbers (``T_q`` = ``query_chunk_size`` or ``T``),
    plus ``batch · T_q · (d_v + 2)`` for the running statistics — ``O(T · chunk)``, never
    ``O(T · S)``. The arithmetic is the same as for the naive version (``≈ 4·T·S·d``
    FLOPs per batch element and head); what is saved is memory and memory traffic.

    Examples
    --------
    >>> q = [[1.0, 0.0]]; k = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]; v = [[1.0], [0.0], [2.0]]
    >>> bool(np.allclose(online_softmax_attention(q, k, v, chunk_size=2),
    ...                  scaled_dot_product_attention(q, k, v)[0]))
    True
    """
    q, k, v = _qkv(q, k, v)
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    if query_chunk_size is not None:
        query_chunk_size = _check_positive_int(query_chunk_size, "query_chunk_size")
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"`causal` must be True or False; got {causal!r}.")
    batch = _broadcast_leading({"q": q.shape, "k": k.shape, "v": v.shape})
    T, S, d_v = q.shape[-2], k.shape[-2], v.shape[-1]
    if mask is not None:   # a broadcast view: no (T, S) array is made here
        mask = _broadcast_mask(mask, batch + (T, S), f"(..., T, S) from `q` {q.shape} and `k` {k.shape}")
        batch = mask.shape[:-2]

    out_dtype, work = q.dtype, _work_dtype(q, k, v)
    q = q.astype(work) * work.type(1.0 / math.sqrt(q.shape[-1]))   # scale T·d numbers, not T·S
    k = k.astype(work, copy=False)
    v = v.astype(work, copy=False)
    out = np.zeros(batch + (T, d_v), dtype=work)
    block = max(T, 1) if query_chunk_size is None else query_chunk_size
    for i0 in range(0, T, block):
        i1 = min(i0 + block, T)
        rows = np.arange(i0, i1)[:, None]                               # (T_q, 1) query positions
        m = np.full(batch + (i1 - i0,), -np.inf, dtype=work)            # running max
        l = np.zeros(batch + (i1 - i0,), dtype=work)                    # running sum
        acc = np.zeros(batch + (i1 - i0, d_v), dtype=work)              # running sum of e^(s-m) v
        for j0 in range(0, S, chunk_size):
            if causal and j0 > i1 - 1:
                break                                   # this chunk and all later ones are in the future
            j1 = min(j0 + chunk_size, S)
            s = q[..., i0:i1, :] @ np.swapaxes(k[..., j0:j1, :], -1, -2)   # (..., T_q, C) scores
            if s.shape[:-2] != batch:                   # v or the mask has more batch dimensions
                s = np.broadcast_to(s, batch + s.shape[-2:]).copy()
            hidden = None if mask is None else ~mask[..., i0:i1, j0:j1]
            if causal and j1 - 1 > i0:                  # the chunk crosses the diagonal
                future = np.arange(j0, j1)[None, :] > rows                  # (T_q, C)
                hidden = future if hidden is None else hidden | future
            if hidden is not None:
                np.copyto(s, -np.inf, where=hidden)                        # masked: e^(-inf) = 0
            m_new = np.maximum(m, s.max(axis=-1))
            m_ref = np.where(np.isfinite(m_new), m_new, 0)  # rows with nothing visible yet: any finite ref
            alpha = np.exp(m - m_ref)                                       # rescale the old statistics
            s -= m_ref[..., None]
            p = np.exp(s, out=s)                                            # e^(s - m'), in place
            l = alpha * l + p.sum(axis=-1)
            acc *= alpha[..., None]
            acc += p @ v[..., j0:j1, :]
            m = m_new
        np.divide(acc, l[..., None], out=out[..., i0:i1, :], where=l[..., None] > 0)
    return out.astype(out_dtype, copy=False)


# ------------------------------------------------- today's attention (Part V)

__all__ += ["rotary_embedding", "grouped_query_attention", "sliding_window_mask"]


def rotary_embedding(x, positions=None, max_wavelength: float = 10000.0) -> np.ndarray:
    r"""Rotary position embedding (RoPE, Su et al. 2021) with half-split pairs.

    The features of a position ``p`` are read as ``D/2`` pairs, feature ``i`` paired with
    feature ``i + D/2`` (as in Llama and keras_hub; the original paper pairs neighbours
    ``2i, 2i+1``, which is the same up to a permutation of the features), and pair ``i``
    is rotated by the angle :math:`\theta_{p,i} = p \cdot \omega_i`:

    .. math::
        \omega_i = \text{max\_wavelength}^{-2i/D}, \qquad
        \begin{pmatrix} y_i \\ y_{i+D/2} \end{pmatrix} =
        \begin{pmatrix} \cos\theta_{p,i} & -\sin\theta_{p,i} \\
                        \sin\theta_{p,i} & \cos\theta_{p,i} \end{pmatrix}
        \begin{pmatrix} x_i \\ x_{i+D/2} \end{pmatrix}.

    Rotating queries and keys this way makes their dot product depend on the positions
    only through the offset: :math:`R_p q \cdot R_{p'} k = q \cdot R_{p'-p} k`.

    Parameters
    ----------
    x : array_like, shape (..., T, D)
        Queries or keys (e.g. ``(B, N, T, H)`` heads); ``D`` must be even.
    positions : array_like, shape (T,) or broadcastable to (..., T), optional
        The position of each row; defaults to ``0 .. T-1``. May be fractional or negative.
    max_wavelength : float, default 10000.0
        The longest wavelength, :math:`2\pi \cdot` ``max_wavelength`` positions (pair
        ``i = 0`` turns fastest, by one radian per position).

    Returns
    -------
    numpy.ndarray, shape (..., T, D)
        In the floating dtype of ``x`` (integers give float64); the angles, sines and
        cosines are computed in float64.

    Examples
    --------
    >>> rotary_embedding([[1.0, 0.0]], positions=[np.pi / 2]).round(6)
    array([[0., 1.]])
    """
    x = _as_float(x, "x")
    _check_ndim(x, "x", 2, "(..., T, D)")
    t, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"`x` has shape {x.shape}: its feature size D={d} must be even "
                         "(features i and i + D/2 are rotated as a pair).")
    try:
        max_wavelength = float(max_wavelength)
    except (TypeError, ValueError):
        raise ValueError(f"`max_wavelength` must be a positive number; got {max_wavelength!r}.") from None
    if not (np.isfinite(max_wavelength) and max_wavelength > 0):
        raise ValueError(f"`max_wavelength` must be positive and finite; got {max_wavelength!r}.")
    if positions is None:
        positions = np.arange(t, dtype=np.float64)
    else:
        positions = _as_float(positions, "positions").astype(np.float64)
        try:
            fits = positions.ndim >= 1 and np.broadcast_shapes(positions.shape, x.shape[:-1]) == x.shape[:-1]
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"`positions` has shape {positions.shape}, which does not broadcast to "
                             f"(..., T) = {x.shape[:-1]} from `x` with shape {x.shape}.")
    frequencies = max_wavelength ** (-np.arange(0, d, 2, dtype=np.float64) / d)   # ω_i, (D/2,)
    angles = positions[..., None] * frequencies                                 # (..., T, D/2)
    cos, sin = np.cos(angles), np.sin(angles)
    x1, x2 = x[..., : d // 2].astype(np.float64), x[..., d // 2:].astype(np.float64)
    y = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)      # (..., T, D)
    return y.astype(x.dtype, copy=False)


def grouped_query_attention(q, k, v, mask=None):
    r"""Grouped-query attention (Ainslie et al. 2023): several query heads share one key/value head.

    The ``Nq`` query heads form ``Nkv`` groups of ``G = Nq / Nkv`` consecutive heads, and
    query head ``i`` attends with key/value head ``i // G``. ``Nkv = Nq`` is multi-head
    attention, ``Nkv = 1`` multi-query attention (Shazeer 2019). Only the keys and values
    of ``Nkv`` heads need to be stored, which is what shrinks a KV cache.

    Parameters
    ----------
    q : array_like, shape (B, Nq, T, H)
        Query heads. Any number of leading dimensions before the head axis.
    k : array_like, shape (B, Nkv, S, H)
        Key heads; ``Nkv`` must divide ``Nq``.
    v : array_like, shape (B, Nkv, S, H_v)
        Value heads, one per key.
    mask : array_like of bool, optional
        Broadcastable to ``(B, Nq, T, S)``, True = may attend (e.g. ``(T, S)`` for all heads,
        ``(B, 1, 1, S)`` for padding).

    Returns
    -------
    output : numpy.ndarray, shape (B, Nq, T, H_v)
    weights : numpy.ndarray, shape (B, Nq, T, S)
        As :func:`scaled_dot_product_attention`: masked keys get 0, fully masked rows are
        all 0 and give a zero output.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = rng.normal(size=(1, 4, 3, 2)), rng.normal(size=(1, 2, 3, 2)), rng.normal(size=(1, 2, 3, 2))
    >>> out, w = grouped_query_attention(q, k, v)
    >>> bool(np.allclose(out[:, 3], scaled_dot_product_attention(q[:, 3], k[:, 1], v[:, 1])[0]))
    True
    """
    q, k, v = _qkv(q, k, v)
    for x, name, what in ((q, "q", "(B, Nq, T, H)"), (k, "k", "(B, Nkv, S, H)"), (v, "v", "(B, Nkv, S, H_v)")):
        _check_ndim(x, name, 3, what)
    _check_last_dims_agree(k, "k", v, "v", -3, -3, "numbers of key and value heads (axis -3)")
    n_q, n_kv = q.shape[-3], k.shape[-3]
    if n_kv == 0 or n_q % n_kv:
        raise ValueError(f"`q` has shape {q.shape} and `k` has shape {k.shape}: the number of key/value "
                         f"heads ({n_kv}) must divide the number of query heads ({n_q}).")
    group = n_q // n_kv
    # Repeat each key/value head for the G query heads of its group: head i reads head i // G.
    k = np.repeat(k, group, axis=-3)                     # (B, Nq, S, H)
    v = np.repeat(v, group, axis=-3)                     # (B, Nq, S, H_v)
    return scaled_dot_product_attention(q, k, v, mask)


def sliding_window_mask(t: int, s: int | None = None, *, window: int) -> np.ndarray:
    """Sliding-window (banded) mask: query ``i`` may attend to keys ``j`` with ``|i - j| < window``.

    The band of ``keras.layers.MultiHeadAttention(sliding_window=window)`` and
    ``GroupQueryAttention``: symmetric, ``window - 1`` keys on either side of the diagonal
    (top-left aligned when ``t != s``, like :func:`causal_mask`). Combined with
    :func:`causal_mask` it gives the causal sliding window of Mistral: each query sees
    itself and the ``window - 1`` keys before it.

    Parameters
    ----------
    t : int
        Number of queries.
    s : int, optional
        Number of keys; defaults to ``t``.
    window : int
        Width of the band on each side, counting the diagonal, ``>= 1``; keyword only.

    Returns
    -------
    numpy.ndarray of bool, shape (t, s)

    Examples
    --------
    >>> (sliding_window_mask(4, window=2) & causal_mask(4)).astype(int)
    array([[1, 0, 0, 0],
           [1, 1, 0, 0],
           [0, 1, 1, 0],
           [0, 0, 1, 1]])
    """
    t = _check_positive_int(t, "t")
    s = t if s is None else _check_positive_int(s, "s")
    window = _check_positive_int(window, "window")
    return np.abs(np.arange(t)[:, None] - np.arange(s)[None, :]) < window
