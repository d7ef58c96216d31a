"""init_params, flatten_params, unflatten_params: the beta convention of docs/conventions.md."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpcheck


def test_flatten_stacks_rows_of_B_then_b_layer_by_layer():
    B1 = np.arange(6.0).reshape(3, 2)
    b1 = np.array([10.0, 11.0, 12.0])
    B2 = np.array([[20.0, 21.0, 22.0]])
    b2 = np.array([30.0])
    beta = bpcheck.flatten_params([(B1, b1), (B2, b2)])
    np.testing.assert_array_equal(beta, [0, 1, 2, 3, 4, 5, 10, 11, 12, 20, 21, 22, 30])


@settings(max_examples=30, deadline=None)
@given(widths=st.lists(st.integers(1, 7), min_size=2, max_size=6), seed=st.integers(0, 1000))
def test_unflatten_inverts_flatten(widths, seed):
    params = bpcheck.init_params(widths, seed=seed)
    params = [(B, np.arange(b.size, dtype=float)) for B, b in params]
    beta = bpcheck.flatten_params(params)
    assert beta.shape == (bpcheck.param_count(widths),)
    back = bpcheck.unflatten_params(beta, widths)
    for (B, b), (B2, b2) in zip(params, back):
        np.testing.assert_array_equal(B, B2)
        np.testing.assert_array_equal(b, b2)


def test_flatten_keeps_jax_arrays_in_jax():
    params = [(jnp.ones((3, 2)), jnp.zeros(3))]
    beta = bpcheck.flatten_params(params)
    assert not isinstance(beta, np.ndarray)
    assert bpcheck.unflatten_params(beta, [2, 3])[0][0].shape == (3, 2)


def test_init_params_shapes_dtype_and_he_scale():
    params = bpcheck.init_params([400, 300, 2], seed=1)
    (B1, b1), (B2, b2) = params
    assert B1.shape == (300, 400) and b1.shape == (300,) and B2.shape == (2, 300)
    assert B1.dtype == np.float64
    assert abs(B1.var() * 400 / 2 - 1) < 0.02  # He: Var = 2 / d_{l-1}
    np.testing.assert_array_equal(b1, 0)
    np.testing.assert_array_equal(bpcheck.init_params([400, 300, 2], seed=1)[0][0], B1)
    assert not np.array_equal(bpcheck.init_params([400, 300, 2], seed=2)[0][0], B1)


@pytest.mark.parametrize("widths, error, message", [
    ([3], ValueError, "at least two entries"),
    ([3, 0, 2], ValueError, r"widths\[1\]: expected a width >= 1, got 0"),
    ([3, 2.5], TypeError, r"widths\[1\]: expected an int, got 2.5"),
    ("32", TypeError, "widths: expected a list"),
])
def test_bad_widths_are_rejected(widths, error, message):
    with pytest.raises(error, match=message):
        bpcheck.init_params(widths)


def test_unflatten_rejects_the_wrong_length():
    with pytest.raises(ValueError, match=r"beta: expected shape \(13,\) for widths \[2, 3, 1\].*got \(12,\)"):
        bpcheck.unflatten_params(np.zeros(12), [2, 3, 1])
