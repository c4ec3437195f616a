"""Figures the lessons share: attention heatmaps, weight bars and response curves.

Every function draws into ``ax`` (a new figure when ``ax`` is None), labels its axes, sets a
title, and returns the axes. Colour maps are viridis/cividis, readable with colour-blindness.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_attention", "plot_heads", "plot_weights", "plot_curves"]


def _axes(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_attention(weights, query_labels: Sequence[str] | None = None,
                   key_labels: Sequence[str] | None = None, ax=None,
                   title: str = "Attention weights", cmap: str = "viridis",
                   annotate: bool | None = None, vmin: float = 0.0, vmax: float | None = 1.0,
                   colorbar: bool = True):
    """Heatmap of a (queries, keys) weight matrix with a token label on every row and column.

    Parameters
    ----------
    weights : array_like, shape (queries, keys)
    query_labels, key_labels : sequence of str, optional
        Default to ``q0, q1, …`` and ``k0, k1, …``.
    annotate : bool, optional
        Write each weight in its cell; by default only for matrices up to 12 × 12.
    vmax : float or None
        Upper end of the colour scale (1 for probabilities; None = data maximum).
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"`weights` must be 2-D (queries, keys); got shape {w.shape}.")
    n_q, n_k = w.shape
    query_labels = [f"q{i}" for i in range(n_q)] if query_labels is None else list(query_labels)
    key_labels = [f"k{j}" for j in range(n_k)] if key_labels is None else list(key_labels)
    if len(query_labels) != n_q or len(key_labels) != n_k:
        raise ValueError(
            f"labels must match `weights` {w.shape}: got {len(query_labels)} query and "
            f"{len(key_labels)} key labels."
        )
    ax = _axes(ax, (0.6 * n_k + 2.5, 0.5 * n_q + 1.8))
    image = ax.imshow(w, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(n_k), key_labels, rotation=45 if max(map(len, key_labels), default=0) > 3 else 0)
    ax.set_yticks(range(n_q), query_labels)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    if annotate is None:
        annotate = n_q <= 12 and n_k <= 12
    if annotate:
        top = np.nanmax(w) if vmax is None else vmax
        for i in range(n_q):
            for j in range(n_k):
                # Dark text on the bright (yellow) end of viridis, light text elsewhere.
                colour = "black" if w[i, j] > 0.6 * top else "white"
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", color=colour, fontsize=8)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return ax


def plot_heads(weights, query_labels: Sequence[str] | None = None, key_labels: Sequence[str] | None = None,
               title: str = "Attention weights per head", cmap: str = "viridis", annotate: bool = False,
               ncols: int | None = None):
    """One heatmap per head for weights of shape (heads, queries, keys); returns the figure.

    All panels share one colour scale (0–1), so heads can be compared at a glance.
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 3:
        raise ValueError(f"`weights` must have shape (heads, queries, keys); got shape {w.shape}.")
    n = w.shape[0]
    ncols = min(n, 4) if ncols is None else ncols
    nrows = -(-n // ncols)
    # Constrained layout leaves room for the suptitle, panel titles and the shared colour bar.
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 1, 2.9 * nrows + 0.4), squeeze=False,
                             layout="constrained")
    for head, ax in enumerate(axes.flat):
        if head >= n:
            ax.axis("off")
            continue
        plot_attention(w[head], query_labels, key_labels, ax=ax, title=f"head {head}", cmap=cmap,
                       annotate=annotate, colorbar=False)
    fig.colorbar(axes.flat[0].images[0], ax=axes, shrink=0.8, label="weight")
    fig.suptitle(title)
    return fig


def plot_weights(weights, labels: Sequence[str] | None = None, ax=None,
                 title: str = "Weights", ylabel: str = "weight", ylim=(0.0, 1.0), color: str = "#440154"):
    """Bar chart of one weight vector (e.g. one softmax distribution), a label under each bar."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1:
        raise ValueError(f"`weights` must be 1-D; got shape {w.shape}.")
    labels = [str(i) for i in range(w.size)] if labels is None else list(labels)
    if len(labels) != w.size:
        raise ValueError(f"got {len(labels)} labels for {w.size} weights.")
    ax = _axes(ax, (max(4.0, 0.6 * w.size + 1.5), 3.0))
    ax.bar(range(w.size), w, color=color)
    ax.set_xticks(range(w.size), labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    return ax


def plot_curves(x, curves: Mapping[str, np.ndarray], ax=None, title: str = "", xlabel: str = "x",
                ylabel: str = "y", logx: bool = False, cmap: str = "viridis", styles=None):
    """Several labelled curves over one x axis, coloured along ``cmap``.

    ``styles`` may map a curve label to matplotlib keyword arguments (e.g. a dashed line).
    """
    x = np.asarray(x, dtype=float)
    ax = _axes(ax, (5.0, 3.5))
    colours = plt.get_cmap(cmap)(np.linspace(0.0, 0.85, max(len(curves), 1)))
    for colour, (label, y) in zip(colours, curves.items()):
        y = np.asarray(y, dtype=float)
        if y.shape != x.shape:
            raise ValueError(f"curve {label!r} has shape {y.shape}; x has shape {x.shape}.")
        kwargs = {"color": colour, "label": label, **((styles or {}).get(label, {}))}
        ax.plot(x, y, **kwargs)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if curves:
        ax.legend(frameon=False)
    return ax
