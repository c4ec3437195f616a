"""Keras's own tests of ``keras.layers.MultiHeadAttention``, run unmodified against ours.

The keras wheel ships its test file, ``keras/src/layers/attention/multi_head_attention_test.py``.
It is loaded here from the installed source, byte for byte, as a module of its own
(``keras_mha_suite_on_ours``), and then its global name ``layers`` — the only route by
which its tests reach the class under test, as ``layers.MultiHeadAttention`` — is rebound
to a copy of ``keras.src.layers`` whose ``MultiHeadAttention`` is ours. Keras's real
module, and every other Keras layer the tests use (``Embedding``, ``Input``), are untouched.
Its ``MultiHeadAttentionTest`` (a ``unittest.TestCase`` built on Keras's
``testing.TestCase`` and absl's ``parameterized``) is bound below under the same name, so
pytest collects it as it would in Keras's repository, one test per parameterized case.

A few of Keras's tests test Keras's internals rather than the layer's behaviour. They are
listed, with why, in :data:`KERAS_INTERNALS` (one place) and marked
``xfail(strict=True)``: each must fail, so that one that starts passing (a new Keras, or a
change here) fails the run and gets a second look. What they check about behaviour
(initialisers that differ per weight, constraints on every kernel, a config that keeps
``sliding_window``) is checked on our layer in ``tests/test_layers_complete.py``.

Keras's wheel ships the file from 3.15 on (3.13 on the Colab-like stack does not): without
it this module is skipped, with that reason. Whatever tests a newer Keras adds run too.

``setUp`` of Keras's test class disables flash attention globally and ``tearDown``
re-enables it (``keras.config.enable_flash_attention()``, which restores the default); the
fixture below also restores whatever the setting was before, so later test files see no
change.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path

import pytest

from attention_lessons.device import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402
from keras.src import layers as keras_src_layers  # noqa: E402
from keras.src.backend.common import global_state  # noqa: E402

from attention_lessons.layers import MultiHeadAttention  # noqa: E402

SUITE_PATH = Path(keras.__file__).parent / "src" / "layers" / "attention" / "multi_head_attention_test.py"

#: Keras's tests of Keras's internals, not of the layer's behaviour: expected to fail (strict).
KERAS_INTERNALS = {
    "test_initializer": "reads the kernels of Keras's private sublayers (`_query_dense.kernel`, "
                        "`_gate_dense.kernel`, ...); ours are plain weights (`query_kernel`, ...). "
                        "Distinct initial kernels: test_layers_complete.py",
    "test_mha_constraints": "reads `_query_dense.kernel.constraint` etc. of Keras's private sublayers. "
                            "Constraints on every kernel and bias, the gate's included: test_layers_complete.py",
    "test_lora": "LoRA: `layer.query_dense.enable_lora(2)` needs Keras's EinsumDense sublayers",
    "test_dtype_policy_map": "a DTypePolicyMap keyed by Keras's sublayer paths (`mha/query`) and int8 "
                             "quantization of those sublayers",
    "test_quantize_int8": "int8 quantization of Keras's EinsumDense sublayers (`_query_dense._kernel`)",
    "test_sliding_window_serialization": "reads Keras's private attribute `_sliding_window`; ours is the "
                                         "public `sliding_window`. The config round trip: test_layers_complete.py",
}


def _load_suite():
    """Keras's test module, from its installed source, with ``layers.MultiHeadAttention`` = ours."""
    spec = importlib.util.spec_from_file_location("keras_mha_suite_on_ours", SUITE_PATH)
    suite = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = suite            # so that pickling, inspect etc. find the module
    with warnings.catch_warnings():
        # Its `@pytest.mark.requires_trainable_backend` is registered by Keras's own conftest.py
        # (it skips on the numpy backend); here it is an unknown, harmless mark.
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(suite)        # the file as shipped, nothing edited

    class LayersWithOurs(types.ModuleType):
        """``keras.src.layers`` with one name bound to ours; everything else is Keras's."""

        def __getattr__(self, name):
            return getattr(keras_src_layers, name)

    layers = LayersWithOurs("keras.src.layers (MultiHeadAttention from attention_lessons)")
    layers.MultiHeadAttention = MultiHeadAttention
    assert suite.layers is keras_src_layers, "Keras's test file no longer reaches the layer as `layers`"
    suite.layers = layers
    return suite


def _expect_failure(test_case, name, reason):
    """Mark test method ``name`` (and its parameterized variants) xfail(strict=True)."""
    for attr in dir(test_case):
        if attr == name or (attr.startswith(name + "_") and callable(getattr(test_case, attr))):
            method = getattr(test_case, attr)

            def wrapper(self, _method=method):   # a new function: the original stays unmarked
                return _method(self)

            wrapper.__name__ = wrapper.__qualname__ = attr
            setattr(test_case, attr, pytest.mark.xfail(strict=True, reason=f"Keras internals: {reason}")(wrapper))


if not SUITE_PATH.exists():
    pytest.skip(f"keras {keras.__version__} ships no {SUITE_PATH.name} (the wheel has it from 3.15 on)",
                allow_module_level=True)

_suite = _load_suite()


class MultiHeadAttentionTest(_suite.MultiHeadAttentionTest):
    """Keras's test class, unchanged; only the internals above are marked as expected failures."""


for _name, _reason in KERAS_INTERNALS.items():
    _expect_failure(MultiHeadAttentionTest, _name, _reason)


@pytest.fixture(autouse=True, scope="module")
def _restore_flash_attention_setting():
    before = global_state.get_global_attribute("flash_attention", default=None)
    yield
    global_state.set_global_attribute("flash_attention", before)


def test_the_suite_really_tests_our_layer():
    assert _suite.layers.MultiHeadAttention is MultiHeadAttention
    assert _suite.layers.Embedding is keras.layers.Embedding          # everything else is Keras's
    # Not a vacuous run: the file holds Keras's tests, and every listed internal exists in it.
    tests = [n for n in dir(MultiHeadAttentionTest) if n.startswith("test_")]
    assert len(tests) >= 40, tests
    missing = [n for n in KERAS_INTERNALS if not any(t == n or t.startswith(n + "_") for t in tests)]
    assert not missing, f"KERAS_INTERNALS names tests this Keras does not have: {missing}"
