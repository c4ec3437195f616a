"""Neurons as weighted sums, and how attention modulates them (lessons 01–02).

Everything here is NumPy: a neuron's fixed weighted sum, gain modulation, divisive
normalization and the Normalization Model of Attention of Reynolds & Heeger (2009).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "get_activation",
    "neuron",
    "layer",
    "modulate",
    "tuning_curve",
    "divisive_normalization",
    "two_stimulus_response",
    "naka_rushton",
    "fit_naka_rushton",
    "NMAResult",
    "normalization_model_of_attention",
    "nma_contrast_response",
]


def _relu(z):
    return np.maximum(z, 0.0)


def _sigmoid(z):
    # exp of a non-positive number only: no overflow for large |z|.
    ez = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda z: z,
    "relu": _relu,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
}


def get_activation(activation: str | Callable | None) -> Callable[[np.ndarray], np.ndarray]:
    """Return the activation function named ``activation`` (or ``activation`` itself if callable).

    ``None`` means linear. Known names: ``"linear"``, ``"relu"``, ``"sigmoid"``, ``"tanh"``.
    """
    if activation is None:
        return ACTIVATIONS["linear"]
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(
            f"`activation` must be one of {sorted(ACTIVATIONS)} or a callable; got {activation!r}."
        ) from None


def neuron(x, w, b: float = 0.0, activation: str | Callable | None = "relu") -> np.ndarray:
    r"""Firing rate of a point neuron, :math:`r = f(\sum_i w_i x_i + b)`.

    Parameters
    ----------
    x : array_like, shape (..., n)
        Inputs; leading axes are independent examples.
    w : array_like, shape (n,)
        Synaptic weights.
    b : float
        Bias (threshold with the opposite sign).
    activation : str or callable or None
        Nonlinearity ``f``; see :func:`get_activation`.

    Returns
    -------
    numpy.ndarray, shape (...)
    """
    x = np.asarray(x, dtype=float)
    w = np.asarray(w, dtype=float)
    if w.ndim != 1 or x.ndim == 0 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"`x` must end in the length of `w`: x has shape {x.shape}, w has shape {w.shape}."
        )
    return get_activation(activation)(x @ w + b)


def layer(X, W, b=None, activation: str | Callable | None = None) -> np.ndarray:
    """A layer of neurons as one matrix product, ``f(X @ W + b)``.

    Parameters
    ----------
    X : array_like, shape (batch, n_in)
    W : array_like, shape (n_in, n_out)
        Column j holds the weights of neuron j (the layout of ``keras.layers.Dense``).
    b : array_like, shape (n_out,), optional
    activation : str or callable or None, default None (linear)

    Returns
    -------
    numpy.ndarray, shape (batch, n_out)
    """
    X = np.asarray(X, dtype=float)
    W = np.asarray(W, dtype=float)
    if W.ndim != 2 or X.ndim < 1 or X.shape[-1] != W.shape[0]:
        raise ValueError(
            f"`X` must end in W's first dimension: X has shape {X.shape}, W has shape {W.shape}."
        )
    out = X @ W
    if b is not None:
        b = np.asarray(b, dtype=float)
        if b.shape != (W.shape[1],):
            raise ValueError(f"`b` must have shape ({W.shape[1]},) to match W {W.shape}; got {b.shape}.")
        out = out + b
    return get_activation(activation)(out)


def modulate(rates, gain: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Attentional modulation of firing rates: ``gain * rates + shift``.

    A multiplicative ``gain`` scales the whole tuning curve and keeps its shape (what
    McAdams & Maunsell 1999 saw in V4: median +26 %); an additive ``shift`` raises every
    response by the same amount and flattens the curve's relative selectivity.
    """
    rates = np.asarray(rates, dtype=float)
    if not np.isfinite(gain) or gain < 0:
        raise ValueError(f"`gain` must be a finite number >= 0; got {gain!r}.")
    return gain * rates + shift


def tuning_curve(theta, preferred: float = 0.0, width: float = 30.0, r_max: float = 1.0,
                 baseline: float = 0.0) -> np.ndarray:
    """Gaussian tuning curve over a circular feature in degrees, with circular distance on 360°.

    The distance wraps every 360°, as for the direction of motion (lesson 02's MT neurons).
    For orientation, which repeats every 180° (lesson 01), pass doubled angles.

    ``r(θ) = baseline + r_max · exp(-(θ - preferred)² / (2 width²))``.
    """
    if width <= 0:
        raise ValueError(f"`width` must be positive; got {width!r}.")
    d = (np.asarray(theta, dtype=float) - preferred + 180.0) % 360.0 - 180.0
    return baseline + r_max * np.exp(-d**2 / (2.0 * width**2))


def divisive_normalization(drive, sigma: float = 1.0, n: float = 2.0, gamma: float = 1.0,
                           axis: int = -1) -> np.ndarray:
    r"""Divisive normalization (Carandini & Heeger 2012),
    :math:`R_j = \gamma D_j^n / (\sigma^n + \sum_k D_k^n)`.

    Parameters
    ----------
    drive : array_like
        Non-negative driving inputs ``D``; the pool runs over ``axis``.
    sigma : float
        Semi-saturation constant (>= 0). With ``sigma = 0`` and ``D = exp(z)`` this is exactly
        ``softmax(n * z)``; ``sigma > 0`` acts as an extra "null" input, so the responses sum
        to less than ``gamma``.
    n : float
        Exponent (> 0); plays the role of the inverse temperature.
    gamma : float
        Overall responsiveness.
    """
    d = np.asarray(drive, dtype=float)
    if (d < 0).any():
        raise ValueError("`drive` must be non-negative (rates or exponentiated scores).")
    if not sigma >= 0:
        raise ValueError(f"`sigma` must be >= 0; got {sigma!r}.")
    if not n > 0:
        raise ValueError(f"`n` must be > 0; got {n!r}.")
    # Work with logs so that large drives and exponents do not overflow.
    with np.errstate(divide="ignore"):
        logs = n * np.log(d)
        log_sigma = n * np.log(sigma) if sigma > 0 else -np.inf
    m = np.maximum(np.max(logs, axis=axis, keepdims=True), log_sigma)
    m = np.where(np.isfinite(m), m, 0.0)
    num = np.exp(logs - m)
    den = np.exp(log_sigma - m) + np.sum(num, axis=axis, keepdims=True)
    return gamma * np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def two_stimulus_response(single_responses, gains, contrasts=None, sigma: float = 0.0) -> np.ndarray:
    r"""Biased competition between stimuli that share one receptive field.

    :math:`R = \sum_i \beta_i c_i L_i / (\sum_k \beta_k c_k + \sigma)`: with equal contrasts
    and ``sigma = 0`` this is attention pooling, ``softmax(log β) @ L``.

    Parameters
    ----------
    single_responses : array_like, shape (..., k)
        ``L_i``, the neuron's response to each stimulus shown alone.
    gains : array_like, shape (..., k)
        Attentional gains ``β_i > 0``.
    contrasts : array_like, shape (..., k), optional
        Defaults to 1 for every stimulus.
    sigma : float
        Semi-saturation constant.
    """
    L = np.asarray(single_responses, dtype=float)
    beta = np.asarray(gains, dtype=float)
    c = np.ones_like(L) if contrasts is None else np.asarray(contrasts, dtype=float)
    try:
        L, beta, c = np.broadcast_arrays(L, beta, c)
    except ValueError:
        raise ValueError(
            f"`single_responses` {np.shape(single_responses)}, `gains` {np.shape(gains)} and "
            f"`contrasts` {np.shape(contrasts)} must broadcast together."
        ) from None
    if (beta <= 0).any():
        raise ValueError("`gains` must be positive.")
    return np.sum(beta * c * L, axis=-1) / (np.sum(beta * c, axis=-1) + sigma)


# --------------------------------------------------------------------------------------
# Normalization Model of Attention (Reynolds & Heeger 2009)
# --------------------------------------------------------------------------------------

def naka_rushton(c, r_max: float, c50: float, n: float = 1.0) -> np.ndarray:
    """Contrast-response function ``r_max · c^n / (c^n + c50^n)``."""
    c = np.asarray(c, dtype=float)
    return r_max * c**n / (c**n + c50**n)


def fit_naka_rushton(c, r, n_grid=None) -> tuple[float, float, float]:
    """Least-squares fit of :func:`naka_rushton` to a measured contrast-response curve.

    For a fixed exponent the model is linear in ``c^-n`` after taking reciprocals
    (``1/r = 1/r_max + (c50^n / r_max) c^-n``), so each candidate ``n`` is solved in closed
    form and the best ``n`` on a grid is kept; relative errors are minimised, so low and high
    contrasts count alike.

    Returns
    -------
    (r_max, c50, n)
    """
    c = np.asarray(c, dtype=float)
    r = np.asarray(r, dtype=float)
    if c.shape != r.shape or c.ndim != 1 or c.size < 3:
        raise ValueError(f"`c` and `r` must be 1-D of equal length >= 3; got {c.shape} and {r.shape}.")
    if (c <= 0).any() or (r <= 0).any():
        raise ValueError("`c` and `r` must be positive to fit a Naka–Rushton curve.")
    n_grid = np.arange(0.5, 4.0001, 0.01) if n_grid is None else np.asarray(n_grid, dtype=float)
    best = None
    for n in n_grid:
        A = np.stack([np.ones_like(c), c**-n], axis=1) * r[:, None]  # rows scaled: relative error
        (a, b), *_ = np.linalg.lstsq(A, np.ones_like(c), rcond=None)
        if a <= 0 or b <= 0:
            continue
        r_max, c50 = 1.0 / a, (b / a) ** (1.0 / n)
        err = np.sum((naka_rushton(c, r_max, c50, n) / r - 1.0) ** 2)
        if best is None or err < best[0]:
            best = (err, r_max, c50, n)
    if best is None:
        raise ValueError("no Naka–Rushton curve fits these data (is the response increasing?).")
    return float(best[1]), float(best[2]), float(round(best[3], 2))


def _gauss_pdf(u, sd):
    return np.exp(-(u**2) / (2.0 * sd**2)) / (np.sqrt(2.0 * np.pi) * sd)


def _conv_x(field, kernel):
    """Linear (zero-padded) convolution along x (axis 1), same size."""
    return np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, field)


def _conv_theta(field, kernel):
    """Circular convolution along theta (axis 0) by FFT; kernel centred at index 0."""
    return np.real(np.fft.ifft(np.fft.fft(field, axis=0) * np.fft.fft(kernel)[:, None], axis=0))


@dataclass
class NMAResult:
    """Population response of the Normalization Model of Attention on a (theta, x) grid."""

    x: np.ndarray           # (nx,) receptive-field centres (arbitrary units)
    theta: np.ndarray       # (ntheta,) preferred directions of motion (degrees, a full circle)
    stimulus_drive: np.ndarray      # E, (ntheta, nx)
    attention_field: np.ndarray     # A, (ntheta, nx)
    suppressive_drive: np.ndarray   # S, (ntheta, nx)
    response: np.ndarray            # R, (ntheta, nx)

    def at(self, x: float, theta: float = 0.0) -> float:
        """Response of the neuron whose receptive field is centred at ``x`` and prefers ``theta``."""
        return float(self.response[np.argmin(np.abs(self.theta - theta)), np.argmin(np.abs(self.x - x))])


def normalization_model_of_attention(
    stimulus,
    x,
    theta,
    attention_x: float | None = None,
    attention_width: float = 30.0,
    a_peak: float = 2.0,
    a_base: float = 1.0,
    ex_width: float = 5.0,
    etheta_width: float = 60.0,
    ix_width: float = 20.0,
    itheta_width: float = 360.0,
    sigma: float = 1e-6,
) -> NMAResult:
    r"""The Normalization Model of Attention (Reynolds & Heeger 2009).

    .. math::
        E = \mathrm{stim} * (K^x_E \otimes K^\theta_E),\quad
        S = (A E) * (K^x_I \otimes K^\theta_I),\quad
        R = \frac{A E}{S + \sigma}

    Kernels are unit-area Gaussians; convolution is linear in x and circular in theta.
    The attention field ``A = a_base + (a_peak - a_base) · exp(-(x - attention_x)² / 2w²)``
    (no feature attention); ``attention_x=None`` means no attention (A ≡ 1).

    Parameters
    ----------
    stimulus : array_like, shape (len(theta), len(x))
        Stimulus contrast over direction of motion and space.
    x, theta : array_like
        Evenly spaced grids; theta in degrees covering a full circle (e.g. -180..179).
    Defaults are the authors' code defaults (MT-like tuning widths, sigma = 1e-6).
    """
    x = np.asarray(x, dtype=float)
    theta = np.asarray(theta, dtype=float)
    stim = np.asarray(stimulus, dtype=float)
    if stim.shape != (theta.size, x.size):
        raise ValueError(
            f"`stimulus` must have shape (len(theta), len(x)) = ({theta.size}, {x.size}); got {stim.shape}."
        )
    dx = x[1] - x[0]
    dth = theta[1] - theta[0]
    kx = x - x[x.size // 2]
    kth = (theta - theta[0] + 180.0) % 360.0 - 180.0  # circular offsets, 0 at index 0
    E = _conv_theta(_conv_x(stim, _gauss_pdf(kx, ex_width) * dx), _gauss_pdf(kth, etheta_width) * dth)
    if attention_x is None:
        A = np.ones_like(E)
    else:
        ax = np.exp(-((x - attention_x) ** 2) / (2.0 * attention_width**2))
        A = np.broadcast_to(a_base + (a_peak - a_base) * ax[None, :], E.shape).copy()
    S = _conv_theta(_conv_x(A * E, _gauss_pdf(kx, ix_width) * dx), _gauss_pdf(kth, itheta_width) * dth)
    R = A * E / (S + sigma)
    return NMAResult(x=x, theta=theta, stimulus_drive=E, attention_field=A, suppressive_drive=S, response=R)


def nma_contrast_response(stimulus_width: float, attention_width: float, contrasts=None,
                          **model_kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contrast-response functions of the neuron at x = +100, θ = 0, attended vs unattended.

    Two identical stimuli (Gaussian in x with SD ``stimulus_width``, 1° wide in direction)
    sit at x = ±100; attention is directed either to +100 (attended) or to -100
    (unattended). This reproduces Reynolds & Heeger's Fig. 2: a large attention field gives
    contrast gain, a small one response gain.

    Returns
    -------
    contrasts, attended, unattended : numpy.ndarray, each (n_contrasts,)
    """
    contrasts = np.logspace(-5, 0, 25) if contrasts is None else np.asarray(contrasts, dtype=float)
    x = np.arange(-200.0, 201.0)
    theta = np.arange(-180.0, 180.0)
    profile = (np.exp(-((x - 100) ** 2) / (2 * stimulus_width**2))
               + np.exp(-((x + 100) ** 2) / (2 * stimulus_width**2)))
    orient = np.exp(-(theta**2) / 2.0)
    unit = orient[:, None] * profile[None, :]
    att, un = [], []
    for c in contrasts:
        for target, out in ((100.0, att), (-100.0, un)):
            res = normalization_model_of_attention(c * unit, x, theta, attention_x=target,
                                                   attention_width=attention_width, **model_kwargs)
            out.append(res.at(100.0, 0.0))
    return contrasts, np.array(att), np.array(un)
