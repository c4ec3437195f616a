"""The temperature explorer and the shared figures."""

import base64

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

from attention_lessons.plotting import plot_attention, plot_curves, plot_heads, plot_weights
from attention_lessons.softmax import softmax
from attention_lessons.widgets import temperature_explorer


def test_explorer_bundle_has_live_widget_and_static_fallback():
    bundle = temperature_explorer([2.0, 1.0, 0.0], ["a", "b", "c"])._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert bundle["text/plain"].startswith("TemperatureExplorer(T=1.00")


def test_moving_the_slider_changes_the_weights_and_the_readout():
    explorer = temperature_explorer([2.0, 1.0, 0.0], ["a", "b", "c"])
    before, readout = explorer.weights(), explorer.readout.value
    explorer.slider.value = 0.2
    np.testing.assert_allclose(explorer.weights(), softmax([2.0, 1.0, 0.0], temperature=0.2))
    assert explorer.weights()[0] > before[0] and explorer.readout.value != readout
    assert explorer.plot.outputs[0]["data"]["image/png"]


def test_explorer_validates_its_input():
    with pytest.raises(ValueError, match="scores"):
        temperature_explorer([1.0])
    with pytest.raises(ValueError, match="labels"):
        temperature_explorer([1.0, 2.0], ["only one"])


def test_attention_heatmap_labels_every_row_and_column():
    ax = plot_attention(np.full((2, 3), 1 / 3), ["q1", "q2"], ["k1", "k2", "k3"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["k1", "k2", "k3"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["q1", "q2"]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_attention_heatmap_rejects_wrong_label_count():
    with pytest.raises(ValueError, match="labels"):
        plot_attention(np.eye(2), ["a"], ["b", "c"])


def test_weights_and_curves_plots_are_labelled():
    ax = plot_weights([0.2, 0.8], ["x", "y"], title="w")
    assert ax.get_title() == "w" and len(ax.patches) == 2
    ax = plot_curves([1, 2, 3], {"a": [1, 2, 3], "b": [3, 2, 1]}, title="t", xlabel="x", ylabel="y")
    assert len(ax.get_lines()) == 2 and ax.get_legend() is not None
    with pytest.raises(ValueError, match="shape"):
        plot_curves([1, 2], {"bad": [1, 2, 3]})


def test_plot_heads_draws_one_labelled_panel_per_head():
    fig = plot_heads(np.full((3, 2, 4), 0.25), ["a", "b"], ["w", "x", "y", "z"])
    titled = [ax for ax in fig.axes if ax.get_title().startswith("head")]
    assert [ax.get_title() for ax in titled] == ["head 0", "head 1", "head 2"]
    assert [t.get_text() for t in titled[2].get_xticklabels()] == ["w", "x", "y", "z"]
    with pytest.raises(ValueError, match="heads, queries, keys"):
        plot_heads(np.eye(3))
