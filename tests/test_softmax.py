"""Specification of attention_lessons.softmax."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from attention_lessons.softmax import log_softmax, masked_softmax, softmax

finite = st.floats(-50, 50, allow_nan=False, width=64)
matrices = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6), elements=finite)


def test_small_example_matches_hand_computation():
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(softmax([1.0, 2.0, 3.0]), e / e.sum(), rtol=1e-15)


@settings(max_examples=60, deadline=None)
@given(matrices)
def test_weights_are_non_negative_and_sum_to_one(x):
    w = softmax(x)
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(matrices, st.floats(-1e3, 1e3))
def test_adding_a_constant_changes_nothing(x, c):
    np.testing.assert_allclose(softmax(x + c), softmax(x), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, (3, 4, 5), elements=finite), st.integers(-3, 2))
def test_axis_argument_normalises_along_that_axis(x, axis):
    np.testing.assert_allclose(softmax(x, axis=axis).sum(axis=axis), 1.0, rtol=1e-12)


def test_temperature_divides_the_scores():
    x = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(softmax(x, temperature=2.0), softmax(x / 2.0), rtol=1e-15)


def test_low_temperature_approaches_argmax_and_high_temperature_uniform():
    x = np.array([0.3, 2.0, 1.0])
    np.testing.assert_allclose(softmax(x, temperature=1e-3), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(softmax(x, temperature=1e6), [1 / 3] * 3, atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(np.float16, 1e-3), (np.float32, 1e-6), (np.float64, 1e-15)])
def test_stable_for_huge_logits_in_every_float_dtype(dtype, rtol):
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 8.0]]).astype(dtype)  # 1e4 - 8: representable in float16
    w = softmax(x)
    assert w.dtype == dtype
    assert np.isfinite(w).all()
    expected = np.array([[1.0, 0.0, 0.0, np.exp(-8.0)]]) / (1.0 + np.exp(-8.0))
    np.testing.assert_allclose(w.astype(np.float64), expected, rtol=rtol, atol=rtol * 1e-3)


def test_float16_result_is_as_accurate_as_float16_allows():
    x16 = (np.random.default_rng(0).normal(size=(50, 7)) * 4).astype(np.float16)
    exact = softmax(x16.astype(np.float64))
    w16 = softmax(x16).astype(np.float64)
    # Computed in float32 and rounded once: within half an ulp of float16 (2**-11 relative),
    # plus float16's subnormal spacing for tiny weights.
    assert np.all(np.abs(w16 - exact) <= 2**-11 * exact + 2**-25)


def test_integer_input_is_computed_in_float64():
    assert softmax(np.array([1, 2, 3])).dtype == np.float64


def test_mask_gives_masked_entries_exactly_zero_weight():
    x = np.array([[1.0, 5.0, 2.0, 0.5]])
    keep = np.array([[True, False, True, True]])
    w = softmax(x, mask=keep)
    assert w[0, 1] == 0.0
    np.testing.assert_allclose(w[0, [0, 2, 3]], softmax(x[0, [0, 2, 3]]), rtol=1e-15)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, (4, 6), elements=finite), hnp.arrays(bool, (4, 6)))
def test_masked_rows_sum_to_one_when_anything_is_visible_and_zero_otherwise(x, keep):
    w = masked_softmax(x, keep)
    assert (w[~keep] == 0).all()
    sums = w.sum(axis=-1)
    np.testing.assert_allclose(sums[keep.any(axis=-1)], 1.0, rtol=1e-12)
    assert (sums[~keep.any(axis=-1)] == 0).all()


def test_fully_masked_row_gives_zeros_not_nan():
    w = softmax(np.ones((2, 3)), mask=np.array([[False] * 3, [True] * 3]))
    assert not np.isnan(w).any()
    np.testing.assert_array_equal(w[0], 0.0)


def test_integer_zero_one_mask_is_accepted_like_keras():
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(softmax(x, mask=np.array([1, 0, 1])), softmax(x, mask=[True, False, True]))


def test_mask_broadcasts_over_rows():
    x = np.random.default_rng(1).normal(size=(3, 4))
    keep = np.array([True, True, False, True])
    np.testing.assert_array_equal(softmax(x, mask=keep), softmax(x, mask=np.tile(keep, (3, 1))))


def test_log_softmax_equals_log_of_softmax_and_stays_finite():
    x = np.array([1e4, 0.0, -1e4])
    ls = log_softmax(x)
    assert np.isfinite(ls).all()
    np.testing.assert_allclose(ls, [0.0, -1e4, -2e4], rtol=1e-12)
    y = np.random.default_rng(2).normal(size=(3, 5))
    np.testing.assert_allclose(np.exp(log_softmax(y)), softmax(y), rtol=1e-12)


def test_log_softmax_of_masked_entries_is_minus_infinity():
    ls = log_softmax(np.array([1.0, 2.0]), mask=[True, False])
    assert ls[1] == -np.inf and ls[0] == 0.0


@pytest.mark.parametrize("temperature", [0, -1.0, np.inf, np.nan, "hot"])
def test_bad_temperature_raises_value_error_naming_it(temperature):
    with pytest.raises(ValueError, match="temperature"):
        softmax([1.0, 2.0], temperature=temperature)


def test_mask_that_does_not_broadcast_names_both_shapes():
    with pytest.raises(ValueError, match=r"mask.*\(3,\).*\(2, 4\)"):
        softmax(np.zeros((2, 4)), mask=np.ones(3, dtype=bool))


def test_float_mask_is_rejected_with_advice():
    with pytest.raises(ValueError, match="boolean"):
        softmax(np.zeros(3), mask=np.array([0.0, -np.inf, 0.0]))


def test_axis_out_of_range_is_a_value_error():
    with pytest.raises(ValueError, match="axis"):
        softmax(np.zeros((2, 3)), axis=2)


def test_nan_in_visible_scores_is_an_error_not_a_silent_nan():
    with pytest.raises(ValueError, match="NaN"):
        softmax([1.0, np.nan])


def test_masked_softmax_requires_a_mask():
    with pytest.raises(ValueError, match="mask"):
        masked_softmax([1.0, 2.0], None)


def test_softmax_over_an_empty_axis_is_empty_and_attention_over_no_keys_is_zero():
    from attention_lessons.attention import scaled_dot_product_attention

    assert softmax(np.zeros((2, 0))).shape == (2, 0)
    out, weights = scaled_dot_product_attention(np.ones((2, 3)), np.zeros((0, 3)), np.zeros((0, 4)))
    np.testing.assert_array_equal(out, np.zeros((2, 4)))
    assert weights.shape == (2, 0)
