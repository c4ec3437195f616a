"""Keras's own test of ``keras.layers.GroupQueryAttention``, run unmodified against ours.

The installed ``keras/src/layers/attention/grouped_query_attention_test.py`` is read and
executed as it is, in a module of its own; then that module's name ``layers`` (its
``from keras.src import layers``) is replaced by a view of ``keras.src.layers`` in which
``GroupedQueryAttention`` is :class:`attention_lessons.modern.GroupQueryAttention`. Every
test body therefore builds our layer (subclasses included) and uses Keras's everything
else (``Input``, ``Embedding``, ``run_layer_test``, serialization, mixed precision).

What is expected not to pass is listed in :data:`EXPECTED_FAILURES`, each with its reason,
as ``xfail(strict=True)``: if one starts to pass, the suite says so. Tests that Keras
itself skips on the TensorFlow backend (flash attention) skip here too. Keras wheels before
3.15 do not ship their tests; the suite is then skipped as a whole.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from attention_lessons.device import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402
import keras.src.layers as keras_layers  # noqa: E402
from keras.src.backend.common import global_state  # noqa: E402

from attention_lessons.modern import GroupQueryAttention  # noqa: E402

SOURCE = Path(keras_layers.__file__).parent / "attention" / "grouped_query_attention_test.py"

#: Keras's tests that do not apply to a layer written from scratch, and why (Keras internals).
#: Each entry: test name -> (the exception it must fail with, why).
EXPECTED_FAILURES = {
    "test_initializer": (
        AttributeError,
        "private sub-layer names: reads layer._query_dense.kernel etc. (Keras's EinsumDense "
        "sub-layers); ours holds the kernels itself (query_kernel, ...) and the same property, "
        "kernels that start different, is checked in test_modern_layers.py",
    ),
}

if not SOURCE.exists():
    pytest.skip(f"Keras {keras.__version__} does not ship {SOURCE.name}", allow_module_level=True)


class _LayersWithOurs(types.ModuleType):
    """``keras.src.layers`` with ``GroupedQueryAttention`` bound to our class."""

    def __init__(self):
        super().__init__("keras.src.layers")

    def __getattr__(self, name):
        if name in ("GroupedQueryAttention", "GroupQueryAttention"):
            return GroupQueryAttention
        return getattr(keras_layers, name)


def _load_keras_suite() -> types.ModuleType:
    module = types.ModuleType("keras_grouped_query_attention_test_on_ours")
    module.__file__ = str(SOURCE)
    sys.modules[module.__name__] = module          # pickling/inspection find it by name
    exec(compile(SOURCE.read_text(), str(SOURCE), "exec"), module.__dict__)   # unmodified
    module.layers = _LayersWithOurs()             # looked up at call time by every test
    return module


_suite = _load_keras_suite()
GroupedQueryAttentionTest = _suite.GroupedQueryAttentionTest      # collected by pytest

for _name, (_error, _reason) in EXPECTED_FAILURES.items():
    _test = getattr(GroupedQueryAttentionTest, _name, None)
    if _test is not None:               # tests of other Keras versions may be absent
        _mark = pytest.mark.xfail(strict=True, raises=_error, reason=_reason)
        setattr(GroupedQueryAttentionTest, _name, _mark(_test))


@pytest.fixture(autouse=True, scope="module")
def _restore_flash_attention_setting():
    """Keras's setUp/tearDown switch the global flash-attention setting; put it back."""
    before = global_state.get_global_attribute("flash_attention", default=None)
    yield
    global_state.set_global_attribute("flash_attention", before)


def test_the_suite_really_runs_on_our_layer():
    # Guards the binding above: a test body's `layers.GroupedQueryAttention` is our class.
    assert _suite.layers.GroupedQueryAttention is GroupQueryAttention
    assert _suite.layers.Embedding is keras.layers.Embedding
    assert len([n for n in dir(GroupedQueryAttentionTest) if n.startswith("test_")]) >= 20
