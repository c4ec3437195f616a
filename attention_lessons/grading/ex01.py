"""Exercise 01 · Weighted sums: neuron, layer, modulate."""

from __future__ import annotations

import numpy as np

from ..neurons import layer as _layer
from ..neurons import modulate as _modulate
from ..neurons import neuron as _neuron
from .spec import Bug, Case, Check, Exercise, Question


def _ref_neuron(x, w, b, activation):
    return _neuron(x, w, b, activation)


def _ref_layer(X, W, b):
    return _layer(X, W, b)


def _ref_modulate(rates, gain, shift):
    return _modulate(rates, gain, shift)


def _no_bias(x, w, b, activation):
    return _neuron(x, w, 0.0, activation)


def _minus_bias(x, w, b, activation):
    return _neuron(x, w, -b, activation)


def _bias_after_activation(x, w, b, activation):
    return _neuron(x, w, 0.0, activation) + b


def _no_activation(x, w, b, activation):
    return _neuron(x, w, b, "linear")


def _layer_transposed(X, W, b):
    return np.asarray(X) @ np.asarray(W).T + b


def _layer_no_bias(X, W, b):
    return np.asarray(X) @ np.asarray(W)


def _gain_added(rates, gain, shift):
    return np.asarray(rates, dtype=float) + gain + shift


def _gain_after_shift(rates, gain, shift):
    return gain * (np.asarray(rates, dtype=float) + shift)


def _shift_multiplies(rates, gain, shift):
    return np.asarray(rates, dtype=float) * gain * (1 + shift)


def _linear_cases(rng):
    return [Case((np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0]), 0.5, "linear"),
                 label="x=[1, 2, 3], w=[0.5, -1, 2], b=0.5, linear"),
            Case((rng.normal(size=5), rng.normal(size=5), float(rng.normal()), "linear"), label="5 random inputs, linear")]


def _activation_cases(rng):
    x, w = rng.normal(size=6), rng.normal(size=6)
    return [Case((np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0]), -5.0, "relu"),
                 label="x=[1, 2, 3], w=[0.5, -1, 2], b=-5, relu"),
            Case((x, w, 0.3, "relu"), label="6 random inputs, b=0.3, relu"),
            Case((x, w, -0.2, "sigmoid"), label="6 random inputs, b=-0.2, sigmoid")]


def _batch_cases(rng):
    return [Case((rng.normal(size=(4, 3)), rng.normal(size=3), 0.1, "relu"), label="x of shape (4, 3), w of shape (3,)")]


def _neuron_bad(rng):
    return [Case((np.ones(3), np.ones(4), 0.0, "linear"), label="x of shape (3,) and w of shape (4,)")]


def _layer_cases(rng):
    return [Case((rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)), label="X (4, 3), W (3, 2), b (2,)"),
            Case((rng.normal(size=(2, 3)), rng.normal(size=(3, 3)), rng.normal(size=3)), label="X (2, 3), W (3, 3), b (3,)")]


def _layer_bad(rng):
    return [Case((np.ones((4, 3)), np.ones((2, 5)), np.zeros(5)), label="X (4, 3) with W (2, 5)")]


def _gain_cases(rng):
    rates = rng.uniform(0, 50, size=8)
    return [Case((rates, 1.26, 0.0), label="gain=1.26, shift=0"), Case((rates, 0.5, 0.0), label="gain=0.5, shift=0")]


def _both_cases(rng):
    rates = rng.uniform(0, 50, size=8)
    return [Case((rates, 1.5, 2.0), label="gain=1.5, shift=2"), Case((rates, 1.0, -3.0), label="gain=1, shift=-3")]


def _bad_gain(rng):
    return [Case((np.ones(3), -1.0, 0.0), label="gain=-1")]


neuron_q = Question(
    "ex01.q1", "neuron", "neuron(x, w, b, activation)", _ref_neuron, [
        Check("weighted sum plus bias (linear)", 1.0, _linear_cases,
              hint="Compute sum_i w_i x_i + b (np.dot(x, w) + b) before any activation.",
              bugs=[Bug("The bias is missing: add b to the weighted sum.", _no_bias),
                    Bug("You subtract the bias; the neuron computes w·x + b.", _minus_bias)]),
        Check("activation applied after adding the bias", 1.0, _activation_cases,
              hint="Apply the activation to (w·x + b): relu = max(z, 0), sigmoid = 1 / (1 + exp(-z)).",
              bugs=[Bug("You add the bias after the activation; it belongs inside: f(w·x + b).", _bias_after_activation),
                    Bug("The activation is never applied: return f(w·x + b) for 'relu' and 'sigmoid'.", _no_activation)]),
        Check("works on a batch x of shape (batch, n)", 0.5, _batch_cases,
              hint="Use x @ w (or np.dot(x, w)): it sums over the last axis of x for any batch."),
        Check("rejects x and w of different lengths with ValueError", 0.5, _neuron_bad, expect="raise",
              hint="Compare x.shape[-1] with w.shape[0] and raise ValueError naming both shapes."),
    ])

layer_q = Question(
    "ex01.q2", "layer", "layer(X, W, b)", _ref_layer, [
        Check("X @ W + b, one column per neuron", 1.5, _layer_cases,
              hint="W has shape (n_in, n_out): the layer is X @ W + b.",
              bugs=[Bug("W is used transposed: with W of shape (n_in, n_out) the product is X @ W, not X @ W.T.", _layer_transposed),
                    Bug("The bias is missing: add b (one per neuron) to X @ W.", _layer_no_bias)]),
        Check("rejects mismatched X and W with ValueError", 0.5, _layer_bad, expect="raise",
              hint="Check X.shape[-1] == W.shape[0] and raise ValueError naming both shapes."),
    ])

modulate_q = Question(
    "ex01.q3", "modulate", "modulate(rates, gain, shift)", _ref_modulate, [
        Check("a gain multiplies every rate", 1.0, _gain_cases,
              hint="Multiplicative gain: gain * rates.",
              bugs=[Bug("You add the gain; a gain multiplies the rates (gain * rates).", _gain_added)]),
        Check("gain * rates + shift", 1.0, _both_cases,
              hint="The shift is added after the gain: gain * rates + shift.",
              bugs=[Bug("You add the shift before applying the gain; it is gain * rates + shift.", _gain_after_shift),
                    Bug("The shift must be added, not multiplied: gain * rates + shift.", _shift_multiplies)]),
        Check("rejects a negative gain with ValueError", 0.5, _bad_gain, expect="raise",
              hint="A gain scales firing rates and cannot be negative: raise ValueError naming `gain`."),
    ])

EXERCISE = Exercise("ex01", "ex01_weighted_sums", "Weighted sums", [neuron_q, layer_q, modulate_q])
