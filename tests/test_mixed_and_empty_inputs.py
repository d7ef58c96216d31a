"""Inputs at the edges of every numeric entry point: NumPy parameters with JAX inputs,
empty batches, and argument types that used to slip through or fail unclearly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpcheck

WIDTHS = [3, 4, 2]
P = bpcheck.param_count(WIDTHS)


@pytest.fixture
def params():
    return bpcheck.init_params(WIDTHS, seed=0)


def test_numpy_params_with_jax_inputs_give_jax_results_under_jit(params):
    X = np.random.default_rng(0).standard_normal((5, 3))
    Xj = jnp.asarray(X)
    for fn in (bpcheck.forward, bpcheck.jacobian):
        got = jax.jit(lambda X, fn=fn: fn(params, X))(Xj)  # params stay NumPy constants
        assert isinstance(got, jax.Array)
        np.testing.assert_allclose(np.asarray(got), fn(params, X), rtol=1e-13)
    records = bpcheck.jacobian_factors(params, Xj)
    assert all(isinstance(t, jax.Array) and t.dtype == jnp.float64 for r in records for t in r)


def test_empty_batches_give_empty_results(params):
    E, X = np.zeros((0, 3)), np.ones((4, 3))
    assert bpcheck.ntk(params, E).shape == (0, 0, 2, 2)
    assert bpcheck.ntk(params, E, trace=True).shape == (0, 0)
    assert bpcheck.ntk(params, X, E, trace=True).shape == (4, 0)
    assert bpcheck.ntk(params, jnp.asarray(X), jnp.asarray(E), block_size=2).shape == (4, 0, 2, 2)
    assert bpcheck.ntk(params, X[0], E).shape == (0, 2, 2)
    assert bpcheck.per_example_grads(params, E, np.zeros(0, int)).shape == (0, P)
    assert bpcheck.per_example_grads(params, jnp.asarray(E), jnp.zeros(0, int)).shape == (0, P)
    assert bpcheck.per_example_grad_norms(params, E, np.zeros(0, int)).shape == (0,)


@pytest.mark.parametrize("xp", [np, jnp])
def test_gauss_newton_of_an_empty_batch_is_an_error_not_nan(params, xp):
    E = xp.zeros((0, 3))
    with pytest.raises(ValueError, match=r"X: expected at least one example .* got shape \(0, 3\)"):
        bpcheck.gauss_newton(params, E)
    with pytest.raises(ValueError, match="X: expected at least one example"):
        bpcheck.gauss_newton_matvec(params, E, xp.zeros(P))


def test_gather_is_checked_with_or_without_a_mesh(params):
    X = np.ones((4, 3))
    with pytest.raises(TypeError, match="gather: expected True or False, got 'yes'"):
        bpcheck.ntk(params, X, gather="yes")
    with pytest.raises(TypeError, match="gather: expected True or False, got 1"):
        bpcheck.per_example_grads(params, X, np.zeros(4, int), gather=1)
    # NumPy booleans are booleans
    assert bpcheck.ntk(params, X, trace=np.bool_(True), gather=np.bool_(False)).shape == (4, 4)


def test_bfloat16_and_negative_seeds_are_named_errors(params):
    with pytest.raises(TypeError, match="X: bfloat16 is not supported; use float16, float32"):
        bpcheck.forward(params, jnp.ones((2, 3), jnp.bfloat16))
    with pytest.raises(ValueError, match="seed: expected an int >= 0, got -1"):
        bpcheck.init_params(WIDTHS, seed=-1)


@pytest.mark.parametrize("bad, got", [
    ([np.ones((3, 2))], "got an array of shape (3, 2)"),
    ([(np.ones((3, 2)),)], "got a tuple of 1 item(s)"),
    ([5], "got int 5"),
])
def test_a_layer_that_is_not_a_pair_is_described_in_one_line(bad, got):
    with pytest.raises(TypeError) as err:
        bpcheck.forward(bad, np.ones((1, 2)))
    assert str(err.value) == f"params[0] (layer 1): expected a pair (B, b), {got}"
