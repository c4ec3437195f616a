"""Interactive explorers built with ipywidgets (lesson 03 and later).

Each explorer is displayed as a live widget where a widget frontend exists (JupyterLab,
Notebook 7, Colab) and as a static figure everywhere else (GitHub, nbviewer, nbval): its
display bundle carries both, and a frontend picks the richest one it can render.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from .softmax import softmax

__all__ = ["TemperatureExplorer", "temperature_explorer"]


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


class TemperatureExplorer:
    """A slider for the softmax temperature and the weights it gives to fixed scores.

    Parameters
    ----------
    scores : array_like, shape (k,)
        Relevance scores (logits) of ``k`` items.
    labels : sequence of str, optional
        One label per item (e.g. the tokens).
    temperature : float
        Initial temperature.
    t_min, t_max : float
        Slider range (log scale).
    static_temperatures : sequence of float
        Temperatures drawn side by side in the static fallback figure.
    """

    def __init__(self, scores, labels: Sequence[str] | None = None, temperature: float = 1.0,
                 t_min: float = 0.05, t_max: float = 20.0,
                 static_temperatures: Sequence[float] = (0.25, 1.0, 4.0)):
        self.scores = np.asarray(scores, dtype=float)
        if self.scores.ndim != 1 or self.scores.size < 2:
            raise ValueError(f"`scores` must be 1-D with at least 2 items; got shape {self.scores.shape}.")
        self.labels = [str(i) for i in range(self.scores.size)] if labels is None else [str(s) for s in labels]
        if len(self.labels) != self.scores.size:
            raise ValueError(f"got {len(self.labels)} labels for {self.scores.size} scores.")
        if not 0 < t_min <= temperature <= t_max:
            raise ValueError(f"need 0 < t_min <= temperature <= t_max; got {t_min}, {temperature}, {t_max}.")
        self.static_temperatures = tuple(float(t) for t in static_temperatures)
        self.slider = widgets.FloatLogSlider(
            value=temperature, base=10, min=np.log10(t_min), max=np.log10(t_max), step=0.01,
            description="temperature", readout_format=".2f", continuous_update=True,
            style={"description_width": "initial"}, layout=widgets.Layout(width="420px"),
        )
        self.readout = widgets.HTML()
        self.plot = widgets.Output()
        self.widget = widgets.VBox([self.slider, self.readout, self.plot])
        self.slider.observe(lambda change: self.update(), names="value")
        self.update()

    @property
    def temperature(self) -> float:
        return float(self.slider.value)

    def weights(self, temperature: float | None = None) -> np.ndarray:
        """Softmax weights at ``temperature`` (default: the slider's)."""
        return softmax(self.scores, temperature=self.temperature if temperature is None else temperature)

    def _draw(self, ax, temperature: float) -> None:
        w = self.weights(temperature)
        ax.bar(range(w.size), w, color="#21918c")
        ax.set_xticks(range(w.size), self.labels)
        ax.set_ylim(0, 1)
        ax.set_ylabel("weight")
        ax.set_title(f"T = {temperature:.2f}   entropy = {_entropy(w):.2f} nats")

    def figure(self, temperatures: Sequence[float] | None = None) -> Figure:
        """A static figure of the weights at each of ``temperatures`` (default: the slider's)."""
        temperatures = [self.temperature] if temperatures is None else list(temperatures)
        fig = Figure(figsize=(3.6 * len(temperatures), 2.8))
        axes = fig.subplots(1, len(temperatures), squeeze=False)[0]
        for ax, t in zip(axes, temperatures):
            self._draw(ax, t)
        fig.suptitle("Softmax weights: low T sharpens toward the top score, high T flattens toward uniform")
        fig.tight_layout()
        return fig

    def update(self) -> None:
        """Redraw for the slider's current temperature (called when the slider moves)."""
        w = self.weights()
        cells = "".join(f"<td style='padding:0 8px'>{lab}: <b>{x:.3f}</b></td>" for lab, x in zip(self.labels, w))
        self.readout.value = f"<table class='temperature-weights'><tr>{cells}</tr></table>"
        png = _png(self.figure())
        self.plot.outputs = ({"output_type": "display_data", "metadata": {},
                              "data": {"image/png": png, "text/plain": "<weights figure>"}},)

    def __repr__(self) -> str:
        weights = ", ".join(f"{x:.3f}" for x in self.weights())
        return f"TemperatureExplorer(T={self.temperature:.2f}, weights=[{weights}])"

    def _repr_mimebundle_(self, include=None, exclude=None):
        # The widget-view entry, written out because ipywidgets 7 (still on Colab) has no
        # _repr_mimebundle_; version 2.0 is the view format both 7 and 8 front ends read.
        bundle = {"application/vnd.jupyter.widget-view+json": {
            "version_major": 2, "version_minor": 0, "model_id": self.widget.model_id}}
        # The static figure is what GitHub, nbviewer and a frontend without ipywidgets show.
        bundle["image/png"] = _png(self.figure(self.static_temperatures))
        bundle["text/plain"] = repr(self)
        return bundle


def temperature_explorer(scores, labels: Sequence[str] | None = None, **kwargs) -> TemperatureExplorer:
    """Build a :class:`TemperatureExplorer`; display it by leaving it last in a cell."""
    return TemperatureExplorer(scores, labels, **kwargs)
