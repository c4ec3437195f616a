"""Tests of the named-axis shape checker (attention_lessons.shapes)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_lessons.shapes import check_shape


def zeros(*shape):
    return np.zeros(shape)


def test_returns_the_size_of_every_named_axis():
    binding = check_shape(zeros(2, 4, 5, 7), "batch heads query key")
    assert binding == {"batch": 2, "heads": 4, "query": 5, "key": 7}


def test_known_sizes_that_agree_pass():
    assert check_shape(zeros(2, 4, 5, 7), "batch heads query key", key=7, batch=2)["key"] == 7


def test_known_size_mismatch_names_axis_position_sizes_shape_and_spec():
    expected = ("axis 'key' (position 3) has size 7 but key=6 was expected; "
                "x has shape (2, 4, 5, 7) for spec 'batch heads query key'")
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        check_shape(zeros(2, 4, 5, 7), "batch heads query key", key=6)


def test_wrong_number_of_axes_is_reported():
    with pytest.raises(ValueError, match=r"x has 3 axes but spec 'batch heads query key' names 4; "
                                         r"x has shape \(2, 5, 7\)"):
        check_shape(zeros(2, 5, 7), "batch heads query key")


def test_too_many_axes_is_reported():
    with pytest.raises(ValueError, match=r"x has 3 axes but spec 'query key' names 2"):
        check_shape(zeros(2, 5, 7), "query key")


def test_name_argument_is_used_in_the_message():
    with pytest.raises(ValueError, match=r"scores has shape \(2, 3\) for spec 'query key'"):
        check_shape(zeros(2, 3), "query key", name="scores", query=4)


def test_repeated_name_binds_equal_sizes():
    assert check_shape(zeros(3, 5, 3), "d t d") == {"d": 3, "t": 5}


def test_repeated_name_with_different_sizes_fails():
    with pytest.raises(ValueError, match=r"axis 'd' \(position 2\) has size 4 but 'd' has size 3 at position 0"):
        check_shape(zeros(3, 5, 4), "d t d")


def test_integer_literal_requires_that_size():
    assert check_shape(zeros(2, 3), "batch 3") == {"batch": 2}
    with pytest.raises(ValueError, match=r"axis at position 1 has size 4 but 3 was expected"):
        check_shape(zeros(2, 4), "batch 3")


def test_ellipsis_matches_any_number_of_leading_axes():
    for shape in [(5, 8), (2, 5, 8), (2, 4, 3, 5, 8)]:
        assert check_shape(np.zeros(shape), "... time features") == {"time": 5, "features": 8}


def test_ellipsis_in_the_middle_binds_both_ends():
    binding = check_shape(zeros(2, 9, 9, 9, 4), "batch ... features")
    assert binding == {"batch": 2, "features": 4}


def test_ellipsis_positions_count_from_the_end():
    with pytest.raises(ValueError, match=r"axis 'key' \(position 4\) has size 7 but key=6"):
        check_shape(zeros(2, 3, 4, 5, 7), "... query key", key=6)


def test_ellipsis_still_needs_the_named_axes():
    with pytest.raises(ValueError, match=r"x has 1 axes but spec '... query key' needs at least 2"):
        check_shape(zeros(7), "... query key")


def test_two_ellipses_are_rejected():
    with pytest.raises(ValueError, match=r"'\.\.\.' only once"):
        check_shape(zeros(2, 3), "... t ...")


@pytest.mark.parametrize("spec", ["batch time-step", "batch 3.5", "batch -1", "b ..x"])
def test_invalid_spec_tokens_are_rejected(spec):
    with pytest.raises(ValueError, match="invalid axis"):
        check_shape(zeros(2, 3), spec)


def test_spec_must_be_a_string():
    with pytest.raises(ValueError, match="`spec` must be a string"):
        check_shape(zeros(2), ["batch"])


def test_known_size_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match=r"known size key=2.5"):
        check_shape(zeros(2), "key", key=2.5)


def test_binding_can_be_passed_to_the_next_check():
    q_axes = check_shape(zeros(2, 4, 5, 8), "batch heads query dim", name="q")
    k_axes = check_shape(zeros(2, 4, 6, 8), "batch heads key dim", name="k", **q_axes)
    assert k_axes == {"batch": 2, "heads": 4, "query": 5, "dim": 8, "key": 6}
    with pytest.raises(ValueError, match=r"axis 'dim' \(position 3\) has size 4 but dim=8 was expected; k has shape"):
        check_shape(zeros(2, 4, 6, 4), "batch heads key dim", name="k", **q_axes)


def test_array_like_input_is_accepted():
    assert check_shape([[1, 2, 3], [4, 5, 6]], "rows cols") == {"rows": 2, "cols": 3}


def test_scalar_matches_empty_spec():
    assert check_shape(np.float64(1.0), "") == {}
    with pytest.raises(ValueError, match="x has 0 axes"):
        check_shape(3.0, "n")


def test_objects_with_a_shape_attribute_and_unknown_sizes():
    # A symbolic TensorFlow shape can hold None: it matches anything and binds nothing.
    tensor = SimpleNamespace(shape=(None, 5, 8))
    assert check_shape(tensor, "batch time 8") == {"time": 5}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=0, max_size=5))
def test_distinct_names_bind_exactly_the_shape(shape):
    names = [f"a{i}" for i in range(len(shape))]
    assert check_shape(np.zeros(shape), " ".join(names)) == dict(zip(names, shape))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=5), st.data())
def test_any_wrong_known_size_is_caught(shape, data):
    names = [f"a{i}" for i in range(len(shape))]
    i = data.draw(st.integers(0, len(shape) - 1))
    wrong = shape[i] + data.draw(st.integers(1, 3))
    with pytest.raises(ValueError, match=f"axis 'a{i}' \\(position {i}\\) has size {shape[i]} but a{i}={wrong}"):
        check_shape(np.zeros(shape), " ".join(names), **{names[i]: wrong})
