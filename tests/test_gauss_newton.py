"""bpcheck.gauss_newton / gauss_newton_matvec equal mean_n J_n' H_n J_n from two references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpcheck
from helpers import RTOL, mlp, rel_err
from bpcheck._gauss_newton import gauss_newton, gauss_newton_matvec

def output_loss(loss):
    if loss == "cross_entropy":
        return lambda z: -jax.nn.log_softmax(z)[0]  # H does not depend on the label
    return lambda z: 0.5 * jnp.sum(z**2)


def autodiff_ggn(params, X, loss, widths):
    """mean_n J_n' H_n J_n with J from jax.jacrev and H from jax.hessian."""
    beta = jnp.asarray(bpcheck.flatten_params(params))
    f = lambda beta, x: mlp(bpcheck.unflatten_params(beta, widths), x)
    J = jax.vmap(jax.jacrev(f), (None, 0))(beta, jnp.asarray(X))
    Z = jax.vmap(f, (None, 0))(beta, jnp.asarray(X))
    H = jax.vmap(jax.hessian(output_loss(loss)))(Z)
    return np.asarray(jnp.einsum("nkp,nkj,njq->pq", J, H, J) / X.shape[0])


def make_case(widths, N, seed=0):
    rng = np.random.default_rng(seed)
    params = [(B, rng.standard_normal(b.shape) * 0.1)
              for B, b in bpcheck.init_params(widths, seed=seed)]
    return params, rng.standard_normal((N, widths[0]))


def jacobian_reference(params, X, loss):
    """mean_n J_n' H_n J_n with J from bpcheck.jacobian and H written out by hand."""
    J = bpcheck.jacobian(params, X)
    N, K, _ = J.shape
    if loss == "mse":
        return np.einsum("nkp,nkq->pq", J, J) / N
    z = bpcheck.forward(params, X)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    H = p[:, :, None] * np.eye(K) - p[:, :, None] * p[:, None, :]
    return np.einsum("nkp,nkj,njq->pq", J, H, J) / N


widths_strategy = st.lists(st.integers(1, 5), min_size=2, max_size=4)
losses = st.sampled_from(["cross_entropy", "mse"])


@settings(max_examples=25, deadline=None)
@given(widths=widths_strategy, N=st.integers(1, 5), loss=losses, seed=st.integers(0, 99))
def test_gauss_newton_and_matvec_equal_the_assembled_jacobian_reference(widths, N, loss, seed):
    params, X = make_case(widths, N, seed)
    if loss == "cross_entropy" and widths[-1] == 1:  # one output: refused (every gradient 0)
        with pytest.raises(ValueError, match=r"expects at least two outputs \(K >= 2\)"):
            gauss_newton(params, X, loss=loss)
        return
    want = jacobian_reference(params, X, loss)
    assert rel_err(gauss_newton(params, X, loss=loss), want) < RTOL
    v = np.random.default_rng(seed).standard_normal(want.shape[0])
    assert rel_err(gauss_newton_matvec(params, X, v, loss=loss), want @ v) < RTOL


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_gauss_newton_equals_jacrev_and_hessian_reference(loss):
    widths = [3, 5, 4, 3]
    params, X = make_case(widths, 6)
    assert rel_err(gauss_newton(params, X, loss=loss), autodiff_ggn(params, X, loss, widths)) < RTOL


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(widths=widths_strategy, N=st.integers(1, 5), loss=losses, seed=st.integers(0, 99))
def test_gauss_newton_equals_jacrev_and_hessian_reference_for_random_shapes(widths, N, loss, seed):
    params, X = make_case(widths, N, seed)
    want = autodiff_ggn(params, X, loss, widths)
    assert rel_err(gauss_newton(params, X, loss=loss), want) < RTOL


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_numpy_and_jax_inputs_give_the_reference_gauss_newton(loss):
    params, X = make_case([4, 6, 5, 3], 7)
    want = jacobian_reference(params, X, loss)
    assert rel_err(gauss_newton(params, X, loss=loss), want) < RTOL
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    got = gauss_newton(pj, jnp.asarray(X), loss=loss)
    assert isinstance(got, jax.Array) and rel_err(got, want) < RTOL


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_matvec_equals_the_matrix_times_the_vector(loss):
    params, X = make_case([4, 6, 5, 3], 7)
    G = gauss_newton(params, X, loss=loss)
    v = np.random.default_rng(1).standard_normal(G.shape[0])
    assert rel_err(gauss_newton_matvec(params, X, v, loss=loss), G @ v) < RTOL
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    f = jax.jit(gauss_newton_matvec, static_argnames="loss")
    assert rel_err(f(pj, jnp.asarray(X), jnp.asarray(v), loss=loss), G @ v) < RTOL


def test_gauss_newton_is_symmetric_positive_semidefinite_and_jit_able():
    params, X = make_case([3, 5, 4, 3], 6)
    G = gauss_newton(params, X)
    assert rel_err(G, G.T) < RTOL
    assert np.linalg.eigvalsh(G).min() > -1e-10 * np.abs(G).max()
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    assert rel_err(jax.jit(gauss_newton)(pj, X), G) < RTOL


@pytest.mark.parametrize(
    "v, loss, exc, words",
    [
        (np.ones(10), "mse", ValueError, ["v", "(23,)", "(10,)", "beta order"]),
        (np.ones((23, 1)), "mse", ValueError, ["v", "(23,)", "(23, 1)"]),
        (np.full(23, np.nan), "mse", ValueError, ["v", "NaN"]),
        (np.ones(23), "gauss", ValueError, ["loss", "'gauss'", "cross_entropy"]),
    ],
)
def test_gauss_newton_rejects_bad_vectors_and_loss_names(v, loss, exc, words):
    params = bpcheck.init_params([4, 3, 2])  # P = 3 * 5 + 2 * 4 = 23
    with pytest.raises(exc) as info:
        gauss_newton_matvec(params, np.ones((2, 4)), v, loss=loss)
    for w in words:
        assert w in str(info.value)
    if loss == "gauss":
        with pytest.raises(ValueError, match="loss"):
            gauss_newton(params, np.ones((2, 4)), loss=loss)


@pytest.mark.parametrize("limit", [0, 1 << 16])
def test_matvec_joins_its_pieces_under_vmap_and_jit_too(monkeypatch, limit):
    """JAX kernels return the product's pieces; their program joins small ones itself, and a
    separate program (``bpcheck._compiled.joined``) large ones (here every size with the limit
    at 0); under ``vmap`` and ``jit`` the join is traced with the rest."""
    from bpcheck import _compiled

    monkeypatch.setattr(_compiled, "JOIN_IN_PROGRAM", limit)
    params, X = make_case([3, 5, 4, 2], 6)
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    G = gauss_newton(params, X)
    Vs = np.random.default_rng(1).standard_normal((3, G.shape[0]))
    batched = jax.jit(jax.vmap(lambda v: gauss_newton_matvec(pj, jnp.asarray(X), v)))(jnp.asarray(Vs))
    assert rel_err(np.asarray(batched), Vs @ G) < RTOL
    op = bpcheck.gauss_newton_operator(pj, jnp.asarray(X))
    assert rel_err(np.asarray(jax.jit(op.matvec)(jnp.asarray(Vs.T))), G @ Vs.T) < RTOL
    assert rel_err(np.asarray(op @ jnp.asarray(Vs[0])), G @ Vs[0]) < RTOL
    assert rel_err(np.asarray(op @ jnp.asarray(Vs.T)), G @ Vs.T) < RTOL
    assert rel_err(np.asarray(gauss_newton_matvec(pj, jnp.asarray(X), jnp.asarray(Vs[1]))),
                   G @ Vs[1]) < RTOL


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_joined_equals_concatenate_eagerly_and_traced(axis):
    from bpcheck._compiled import joined

    rng = np.random.default_rng(0)
    shapes = {0: [(2, 3), (4, 3), (1, 3)], 1: [(3, 2), (3, 4), (3, 1)], -1: [(3, 2), (3, 4), (3, 1)]}[axis]
    parts = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    want = np.concatenate(parts, axis=axis)
    assert np.array_equal(joined(parts, axis), want)
    jparts = [jnp.asarray(p) for p in parts]
    assert np.array_equal(np.asarray(joined(jparts, axis)), want)
    assert np.array_equal(np.asarray(jax.jit(lambda *ps: joined(ps, axis))(*jparts)), want)
    batched = jax.vmap(lambda *ps: joined(ps, axis))(*[jnp.stack([p, 2 * p]) for p in jparts])
    assert np.array_equal(np.asarray(batched), np.stack([want, 2 * want]))


@pytest.mark.parametrize("loss, y", [("cross_entropy", None), ("mse", "real")])
def test_a_vector_more_precise_than_params_and_x_is_not_rounded_to_their_dtype(loss, y):
    """float32 params and X with a float64 v: the product in float64, as NumPy promotes
    (v was rounded to float32 before); a float32 v with float64 inputs stays float64."""
    rng = np.random.default_rng(4)
    params64 = bpcheck.init_params([3, 5, 2], seed=4)
    params32 = [(B.astype(np.float32), b.astype(np.float32)) for B, b in params64]
    X = rng.standard_normal((6, 3)).astype(np.float32)
    y = rng.standard_normal((6, 2)).astype(np.float32) if y else None
    v = 1 + 1e-9 * rng.standard_normal(bpcheck.param_count([3, 5, 2]))  # not a float32 vector
    got = bpcheck.gauss_newton_matvec(params32, X, v, loss, y=y)
    want = bpcheck.gauss_newton_matvec([(B.astype(np.float64), b.astype(np.float64))
                                        for B, b in params32], X.astype(np.float64), v, loss,
                                       y=None if y is None else y.astype(np.float64))
    assert got.dtype == np.float64 and np.array_equal(got, want)
    assert bpcheck.gauss_newton_matvec(params64, X.astype(np.float64), v.astype(np.float32),
                                       loss, y=y).dtype == np.float64


def _hessians_in_50_digits(z, loss):
    """Every H_n of the loss at the outputs z, in 50-digit arithmetic, rounded to float64."""
    import mpmath

    mpmath.mp.dps = 50
    out = np.zeros((z.shape[0], z.shape[1], z.shape[1]))
    for n, row in enumerate(z):
        if loss == "binary_cross_entropy":
            s = 1 / (1 + mpmath.exp(-mpmath.mpf(float(row[0]))))
            out[n, 0, 0] = float(s * (1 - s))
            continue
        e = [mpmath.exp(mpmath.mpf(float(x))) for x in row]
        p = [x / sum(e) for x in e]
        for k in range(len(p)):
            for j in range(len(p)):
                out[n, k, j] = float(p[k] * ((k == j) - p[j]))
    return out


@pytest.mark.parametrize("loss, K, lead", [("cross_entropy", 4, 40.0), ("cross_entropy", 2, -40.0),
                                           ("binary_cross_entropy", 1, 40.0)])
def test_gauss_newton_stays_accurate_where_the_outputs_saturate(loss, K, lead, monkeypatch):
    """Outputs where one class's probability is within e^-40 of 1 (or of 0) for every
    example: each H_n is e^-40 small, and 1 - p_c or u_c - p'u taken as differences of near
    equals would be wrong in their leading digits.  The dense matrix, the product, the
    operator (by columns and by rows) and JAX all equal mean_n J_n' H_n J_n v with H_n
    computed in 50-digit arithmetic, to 1e-10 of its size."""
    from bpcheck import _gauss_newton

    widths = [5, 8, 6, K]
    params = bpcheck.init_params(widths, seed=0)
    params[-1][1][:] = 0.0
    params[-1][1][0] = lead  # class 0 (or the one logit) far ahead of, or behind, the rest
    X = np.random.default_rng(0).standard_normal((6, 5))
    v = np.random.default_rng(1).standard_normal(bpcheck.param_count(widths))
    kw = dict(loss=loss, activation="tanh")
    J = bpcheck.jacobian(params, X, activation="tanh")
    H = _hessians_in_50_digits(bpcheck.forward(params, X, activation="tanh"), loss)
    want = np.einsum("nkp,nkj,njq,q->p", J, H, J, v) / X.shape[0]
    assert np.abs(want).max() < 1e-12  # the saturated regime indeed
    got = {"dense": bpcheck.gauss_newton(params, X, **kw) @ v,
           "matvec": bpcheck.gauss_newton_matvec(params, X, v, **kw),
           "operator": bpcheck.gauss_newton_operator(params, X, **kw) @ v,
           "JAX": np.asarray(bpcheck.gauss_newton_matvec(
               [(jnp.asarray(B), jnp.asarray(b)) for B, b in params], jnp.asarray(X),
               jnp.asarray(v), **kw))}
    monkeypatch.setattr(_gauss_newton, "_COLUMNS", 0)
    got["operator by rows"] = bpcheck.gauss_newton_operator(params, X, **kw) @ v
    for path, Gv in got.items():
        assert rel_err(Gv, want) < 1e-10, path
