"""Softmax and its relatives, in NumPy (lessons 02–03).

Conventions used throughout the course:

* masks are boolean with **True = may attend / keep**;
* a row whose entries are all masked gets zero weights, never NaN;
* the result has the input's floating dtype; float16 is computed in float32 and rounded
  once at the end, so it is as accurate as float16 can be.
"""

from __future__ import annotations

import numpy as np

__all__ = ["softmax", "log_softmax", "masked_softmax"]

_FLOATS = (np.float16, np.float32, np.float64)


def _as_float_array(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.number)):
        raise ValueError(f"`{name}` must hold numbers; got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"`{name}` must be real; got dtype {x.dtype}.")
    if x.dtype.type not in _FLOATS:
        x = x.astype(np.float64)  # integers (and long doubles) are computed in float64
    return x


def _check_axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise ValueError(f"`axis` must be an int; got {axis!r}.")
    if ndim == 0:
        raise ValueError("softmax needs at least one axis; got a scalar `x` (shape ()).")
    if not -ndim <= axis < ndim:
        raise ValueError(f"`axis`={axis} is out of range for `x` with {ndim} dimension(s).")
    return int(axis) % ndim


def _check_temperature(temperature: float) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"`temperature` must be a positive number; got {temperature!r}.") from None
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"`temperature` must be positive and finite; got {temperature!r}.")
    return t


def _check_mask(mask, shape: tuple) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all():
            mask = mask.astype(bool)  # 0/1 integers, as Keras accepts
        else:
            raise ValueError(
                f"`mask` must be boolean (True = keep) or 0/1 integers; got dtype {mask.dtype}. "
                "Additive masks (0 / -inf) belong in the scores, not in `mask`."
            )
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            f"`mask` with shape {mask.shape} does not broadcast to `x` with shape {shape}."
        ) from None


def _prepare(x, axis, temperature, mask):
    x = _as_float_array(x, "x")
    axis = _check_axis(axis, x.ndim)
    t = _check_temperature(temperature)
    keep = None if mask is None else _check_mask(mask, x.shape)
    # float16 has too little range for exp() of shifted logits; compute in float32.
    work = np.float32 if x.dtype == np.float16 else x.dtype.type
    z = x.astype(work, copy=False)
    visible = z if keep is None else z[keep]
    if np.isnan(visible).any() or np.isposinf(visible).any():
        raise ValueError("`x` contains NaN or +inf where it is not masked; softmax is undefined there.")
    z = z / work(t)
    if keep is not None:
        z = np.where(keep, z, -np.inf)
    # Subtracting the row maximum keeps exp() in [0, 1]: no overflow for logits of 1e4.
    # An empty axis (e.g. no keys to attend to) is like a fully masked one: max -inf.
    m = np.max(z, axis=axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)  # fully masked rows: max is -inf
    return x.dtype, axis, z - m


def softmax(x, axis: int = -1, temperature: float = 1.0, mask=None) -> np.ndarray:
    r"""Numerically stable softmax, :math:`e^{x_i/T} / \sum_j e^{x_j/T}`.

    Parameters
    ----------
    x : array_like
        Scores (logits). Integer input is computed in float64.
    axis : int, default -1
        Axis along which the weights sum to 1.
    temperature : float, default 1.0
        Positive temperature T; the scores are *divided* by it. T → 0 approaches argmax,
        T → ∞ the uniform distribution.
    mask : array_like of bool, optional
        Broadcastable to ``x.shape``; True = keep. Masked entries get weight exactly 0;
        a fully masked slice gets all zeros (not NaN).

    Returns
    -------
    numpy.ndarray
        Weights with the shape and floating dtype of ``x``.

    Raises
    ------
    ValueError
        For a bad ``axis``, ``temperature`` or ``mask``, or NaN / +inf in unmasked scores.

    Examples
    --------
    >>> softmax([0.0, 0.0])
    array([0.5, 0.5])
    """
    dtype, axis, shifted = _prepare(x, axis, temperature, mask)
    e = np.exp(shifted)
    total = np.sum(e, axis=axis, keepdims=True)
    out = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return out.astype(dtype, copy=False)


def log_softmax(x, axis: int = -1, temperature: float = 1.0, mask=None) -> np.ndarray:
    r"""Log of :func:`softmax`, computed as ``z - logsumexp(z)`` so it never takes ``log(0)``
    of an underflowed weight.

    Masked entries (and every entry of a fully masked slice) are ``-inf``. Parameters as in
    :func:`softmax`.
    """
    dtype, axis, shifted = _prepare(x, axis, temperature, mask)
    total = np.sum(np.exp(shifted), axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        out = shifted - np.log(total)
    out = np.where(np.isfinite(shifted), out, -np.inf)
    return out.astype(dtype, copy=False)


def masked_softmax(x, mask, axis: int = -1, temperature: float = 1.0) -> np.ndarray:
    """Softmax that gives masked entries (``mask == False``) exactly zero weight.

    The remaining weights of each slice are renormalised to sum to 1; a slice with nothing
    visible returns zeros. ``mask`` is required; see :func:`softmax` for the rest.
    """
    if mask is None:
        raise ValueError("`mask` is required for masked_softmax; use softmax() without a mask.")
    return softmax(x, axis=axis, temperature=temperature, mask=mask)
