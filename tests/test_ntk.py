"""bpcheck.ntk: the empirical NTK from the factors equals J_i J_j' from two references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpcheck
from helpers import RTOL, mlp, rel_err
from bpcheck._ntk import ntk

def jacrev_jacobian(params, X, widths):
    """(N, K, P) by jax.jacrev with respect to beta: a reference independent of the factors."""
    beta = jnp.asarray(bpcheck.flatten_params(params))
    f = lambda beta, x: mlp(bpcheck.unflatten_params(beta, widths), x)
    return np.asarray(jax.vmap(jax.jacrev(f), (None, 0))(beta, jnp.asarray(X)))


def make_case(widths, N, N2=None, seed=0):
    rng = np.random.default_rng(seed)
    params = bpcheck.init_params(widths, seed=seed)
    params = [(B, rng.standard_normal(b.shape) * 0.1) for B, b in params]
    X1 = rng.standard_normal((N, widths[0]))
    X2 = None if N2 is None else rng.standard_normal((N2, widths[0]))
    return params, X1, X2


def to_jax(params):
    return [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]


widths_strategy = st.lists(st.integers(1, 6), min_size=2, max_size=5)


@settings(max_examples=25, deadline=None)
@given(widths=widths_strategy, N=st.integers(1, 6), N2=st.integers(1, 5), seed=st.integers(0, 99))
def test_ntk_equals_contraction_of_the_assembled_jacobian(widths, N, N2, seed):
    params, X1, X2 = make_case(widths, N, N2, seed)
    J1, J2 = bpcheck.jacobian(params, X1), bpcheck.jacobian(params, X2)
    assert rel_err(ntk(params, X1), np.einsum("ikp,jlp->ijkl", J1, J1)) < RTOL
    assert rel_err(ntk(params, X1, X2), np.einsum("ikp,jlp->ijkl", J1, J2)) < RTOL


def test_ntk_equals_contraction_of_the_jacrev_jacobian_numpy_and_jax():
    widths = [4, 6, 5, 3]
    params, X1, X2 = make_case(widths, 7, 5)
    J1, J2 = jacrev_jacobian(params, X1, widths), jacrev_jacobian(params, X2, widths)
    want = np.einsum("ikp,jlp->ijkl", J1, J2)
    got_np = ntk(params, X1, X2)
    got_jax = ntk(to_jax(params), jnp.asarray(X1), jnp.asarray(X2))
    assert isinstance(got_np, np.ndarray) and isinstance(got_jax, jax.Array)
    assert rel_err(got_np, want) < RTOL
    assert rel_err(got_jax, want) < RTOL


def test_trace_ntk_is_the_trace_of_the_full_ntk():
    params, X1, X2 = make_case([3, 5, 4, 4], 6, 4)
    full = ntk(params, X1, X2)
    assert rel_err(ntk(params, X1, X2, trace=True), np.einsum("ijkk->ij", full)) < RTOL
    full = ntk(params, X1)
    assert rel_err(ntk(to_jax(params), jnp.asarray(X1), trace=True),
                   np.einsum("ijkk->ij", full)) < RTOL


def test_ntk_of_a_batch_with_itself_is_symmetric_psd():
    params, X1, _ = make_case([3, 8, 8, 2], 9)
    T = ntk(params, X1).transpose(0, 2, 1, 3).reshape(18, 18)  # (N K, N K) Gram matrix
    assert rel_err(T, T.T) < RTOL
    assert np.linalg.eigvalsh(T).min() > -1e-10 * np.abs(T).max()


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("block_size", [1, 4, 64])
def test_tiled_ntk_equals_one_tile(backend, trace, block_size):
    params, X1, X2 = make_case([3, 5, 4, 3], 11, 7)
    if backend == "jax":
        params, X1, X2 = to_jax(params), jnp.asarray(X1), jnp.asarray(X2)
    for other in (None, X2):
        want = ntk(params, X1, other, trace=trace)
        got = ntk(params, X1, other, trace=trace, block_size=block_size)
        assert rel_err(got, want) < RTOL


@pytest.mark.parametrize("trace", [False, True])
def test_gradient_through_the_tiled_ntk_equals_the_one_tile_gradient(trace):
    # jax.grad of a loss of the kernel (e.g. kernel regression's fit) with the tile loops
    # running: the symmetric kernel's loop over tiles from the diagonal on has a static
    # length (reverse mode cannot go through a loop whose stop is traced)
    params, X1, X2 = make_case([3, 5, 4, 3], 11, 7)
    pj, X1 = to_jax(params), jnp.asarray(X1)
    for other in (None, jnp.asarray(X2)):
        def fit(p, block_size, other=other):
            return jnp.sum(jnp.tanh(ntk(p, X1, other, trace=trace, block_size=block_size)))

        want = jax.grad(fit)(pj, None)
        for block_size in (2, 4):
            got = jax.grad(fit)(pj, block_size)
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                assert rel_err(g, w) < RTOL
        tiled = jax.jit(jax.grad(fit), static_argnums=1)(pj, 3)
        assert rel_err(tiled[0][0], want[0][0]) < RTOL


def test_default_tiling_kicks_in_when_the_factors_outgrow_the_budget(monkeypatch):
    import bpcheck._ntk as mod

    params, X1, X2 = make_case([3, 16, 16, 2], 40, 9)
    want = ntk(params, X1, trace=True), ntk(params, X1, X2)
    monkeypatch.setattr(mod, "_SINGLE_TILE_BYTES", 0)
    monkeypatch.setattr(mod, "_TILE_BYTES", 0)
    assert mod._tile_sizes(40, 40, True, [3, 16, 16, 2], True, 8, None) != (40, 40)
    assert rel_err(ntk(params, X1, trace=True), want[0]) < RTOL
    assert rel_err(ntk(to_jax(params), jnp.asarray(X1), X2), want[1]) < RTOL


def test_ntk_under_jit_equals_eager():
    params, X1, X2 = make_case([4, 6, 3], 5, 4)
    pj = to_jax(params)
    f = jax.jit(ntk, static_argnames=("trace", "block_size"))
    assert rel_err(f(pj, X1, X2), ntk(params, X1, X2)) < RTOL
    assert rel_err(f(pj, X1, trace=True, block_size=2), ntk(params, X1, trace=True)) < RTOL


def test_linear_model_ntk_is_identity_times_inputs_gram_plus_one():
    # L = 0: J_i = I kron [x_i', 1], so Theta(x_i, x_j) = (x_i' x_j + 1) I_K.
    params, X1, X2 = make_case([4, 3], 5, 2)
    want = (X1 @ X2.T + 1)[:, :, None, None] * np.eye(3)
    assert rel_err(ntk(params, X1, X2), want) < RTOL


def test_ntk_takes_relu_derivative_zero_at_the_kink():
    widths = [3, 4, 2]
    params = [(np.ones((4, 3)), np.zeros(4)), (np.ones((2, 4)), np.zeros(2))]
    X = np.zeros((2, 3))  # every pre-activation of layer 1 is exactly 0
    J = jacrev_jacobian(params, X, widths)
    assert rel_err(ntk(params, X), np.einsum("ikp,jlp->ijkl", J, J)) < RTOL


def test_single_examples_drop_their_axis():
    params, X1, X2 = make_case([3, 4, 2], 3, 2)
    full = ntk(params, X1, X2)
    assert rel_err(ntk(params, X1[0], X2), full[0]) < RTOL
    assert rel_err(ntk(params, X1, X2[1]), full[:, 1]) < RTOL
    assert rel_err(ntk(params, X1[0], trace=True), np.trace(ntk(params, X1)[0, 0])) < RTOL


def test_float32_jax_inputs_agree_with_float64_to_float32_accuracy():
    params, X1, _ = make_case([16, 32, 32, 4], 6)
    p32 = [(jnp.asarray(B, jnp.float32), jnp.asarray(b, jnp.float32)) for B, b in params]
    got = ntk(p32, jnp.asarray(X1, jnp.float32))
    assert got.dtype == jnp.float32
    assert rel_err(got, ntk(params, X1)) < 1e-5


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"X1": np.ones((3, 5))}, ValueError, ["X1", "5 features", "d_0 = 4", "(3, 5)"]),
        ({"X2": np.ones((3, 2))}, ValueError, ["X2", "2 features", "(3, 2)"]),
        ({"X1": np.ones((2, 3, 4))}, ValueError, ["X1", "3-d", "(2, 3, 4)"]),
        ({"X1": np.array([[np.nan, 0, 0, 0]])}, ValueError, ["X1", "NaN"]),
        ({"trace": 1}, TypeError, ["trace", "True or False", "1"]),
        ({"block_size": 0}, ValueError, ["block_size", "0"]),
        ({"mesh": "cpu"}, TypeError, ["mesh", "Mesh", "str"]),
        ({"params": [(np.ones((3, 4)), np.ones(2))]}, ValueError, ["b^(1)", "(2,)", "(3,)"]),
    ],
)
def test_ntk_rejects_bad_input_naming_argument_value_and_expectation(kwargs, exc, words):
    args = {"params": bpcheck.init_params([4, 3, 2]), "X1": np.ones((3, 4)), "X2": None}
    args.update(kwargs)
    params, X1, X2 = args.pop("params"), args.pop("X1"), args.pop("X2")
    with pytest.raises(exc) as info:
        ntk(params, X1, X2, **args)
    for w in words:
        assert w in str(info.value)
