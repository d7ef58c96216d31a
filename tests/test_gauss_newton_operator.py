"""bpcheck.gauss_newton_operator: the factors once, then G v for many v, equal to
gauss_newton_matvec and to the assembled matrix, in NumPy and JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpcheck
from helpers import RTOL, rel_err
from bpcheck import Loss


def huber_grad(z, y):
    return (z - y).clip(-1, 1)


def huber_hessian(z, y):
    inside = (abs(z - y) < 1).astype(z.dtype)
    eye = np.eye(z.shape[1]) if isinstance(z, np.ndarray) else jnp.eye(z.shape[1])
    return inside[:, :, None] * eye


def make_case(widths, N, seed=0):
    rng = np.random.default_rng(seed)
    params = [(B, 0.1 * rng.standard_normal(b.shape))
              for B, b in bpcheck.init_params(widths, seed=seed)]
    X = rng.standard_normal((N, widths[0]))
    return params, X, rng


CASES = [  # (loss, targets of N examples with K outputs, activation)
    ("cross_entropy", None, "relu"),
    ("mse", None, "tanh"),
    ("binary_cross_entropy", None, ["gelu", "softplus"]),
    (Loss(grad=huber_grad, hessian=huber_hessian), "real", "leaky_relu"),
]


@pytest.mark.parametrize("loss, targets, activation", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_operator_products_equal_the_matvec_and_the_assembled_matrix(loss, targets, activation,
                                                                     reduction):
    K = 1 if loss == "binary_cross_entropy" else 3
    widths = [4, 6, 5, K] if isinstance(activation, list) else [4, 6, K]
    params, X, rng = make_case(widths, 7)
    y = rng.standard_normal((7, K)) if targets == "real" else None
    kw = dict(loss=loss, y=y, reduction=reduction, activation=activation)
    op = bpcheck.gauss_newton_operator(params, X, **kw)
    P = bpcheck.param_count(widths)
    assert op.shape == (P, P) and op.dtype == np.float64
    G = bpcheck.gauss_newton(params, X, **kw)
    v = rng.standard_normal(P)
    assert rel_err(op @ v, bpcheck.gauss_newton_matvec(params, X, v, **kw)) < RTOL
    assert rel_err(op @ v, G @ v) < RTOL
    assert rel_err(op.to_dense(), G) < RTOL
    V = rng.standard_normal((P, 3))
    assert rel_err(op @ V, G @ V) < RTOL  # m products at once


def lopsided_hessian(z, y):
    """Not symmetric (as a user's Hessian may be, though it should not): ``H_n u`` and
    ``H_n' u`` differ, and every path must apply ``H_n`` itself, as the matvec does."""
    K = z.shape[1]
    return huber_hessian(z, y) + np.triu(np.ones((K, K)), 1) * (1 + z[:, :, None] ** 2)


@pytest.mark.parametrize("widths", [[4, 3], [4, 6, 3], [4, 6, 5, 3], [4, 6, 5, 7, 3]])
@pytest.mark.parametrize("loss, targets, activation",
                         [*CASES, (Loss(grad=huber_grad, hessian=lopsided_hessian), "real", "elu")])
def test_numpy_blocks_by_columns_and_by_rows_equal_the_assembled_matrix(widths, loss, targets,
                                                                      activation, monkeypatch):
    """A NumPy operator of a small network computes its products column-wise, a large
    one's by rows (a block transposed): both equal ``G V``, at every depth (no hidden
    layer, the last hidden layer's ``B^(L+1) D^(L)``, the ``V^(l)`` below it), for every
    loss, and for a network with a layer without a bias; so do its vectors, repeat
    calls and its dense matrix."""
    from bpcheck import _gauss_newton

    K = widths[-1] = 1 if loss == "binary_cross_entropy" else 3
    acts = activation if not isinstance(activation, list) else activation[0]
    params, X, rng = make_case(widths, 7)
    y = rng.standard_normal((7, K)) if targets == "real" else None
    kw = dict(loss=loss, y=y, activation=acts)
    for net in (params, [*params[:-1], (params[-1][0], None)]):
        op = bpcheck.gauss_newton_operator(net, X, **kw)
        G = bpcheck.gauss_newton(net, X, **kw)
        V = rng.standard_normal((op.shape[0], 5))
        assert op.shape[0] <= _gauss_newton._COLUMNS
        by_columns = op @ V
        monkeypatch.setattr(_gauss_newton, "_COLUMNS", 0)
        by_rows = bpcheck.gauss_newton_operator(net, X, **kw) @ V
        monkeypatch.undo()
        for v, Gv in zip(V.T[:2], by_columns.T):  # one vector at a time, and a repeat
            assert rel_err(op @ v, Gv) < RTOL and rel_err(op @ v, Gv) < RTOL
        assert rel_err(op.to_dense(), G) < RTOL
        each = np.stack([bpcheck.gauss_newton_matvec(net, X, v, **kw) for v in V.T], axis=1)
        assert rel_err(by_columns, each) < RTOL and rel_err(by_rows, each) < RTOL
        assert rel_err(by_columns, G @ V) < RTOL  # (G's blocks below its diagonal: H_n itself)
        assert by_columns.shape == by_rows.shape == (op.shape[0], 5)


def test_jax_inputs_give_a_jax_operator_with_the_same_products():
    params, X, rng = make_case([5, 8, 8, 3], 6)
    v = rng.standard_normal(bpcheck.param_count([5, 8, 8, 3]))
    op = bpcheck.gauss_newton_operator(params, X, activation="tanh")
    jop = bpcheck.gauss_newton_operator([(jnp.asarray(B), jnp.asarray(b)) for B, b in params],
                                        jnp.asarray(X), activation="tanh")
    out = jop @ jnp.asarray(v)
    assert not isinstance(out, np.ndarray) and hasattr(out, "block_until_ready")
    assert rel_err(np.asarray(out), op @ v) < 1e-5  # JAX's default float32
    assert rel_err(np.asarray(jop @ v), op @ v) < 1e-5  # a NumPy v is taken as well
    V = rng.standard_normal((v.shape[0], 3))
    assert rel_err(np.asarray(jop @ jnp.asarray(V)), op @ V) < 1e-5  # m products at once


def test_jax_blocks_of_products_with_a_user_loss_equal_numpy():
    widths = [4, 6, 5, 2]
    params, X, rng = make_case(widths, 7)
    y = rng.standard_normal((7, 2))
    loss = Loss(grad=huber_grad, hessian=huber_hessian)
    op = bpcheck.gauss_newton_operator(params, X, loss, y=y)
    jop = bpcheck.gauss_newton_operator([(jnp.asarray(B), jnp.asarray(b)) for B, b in params],
                                        jnp.asarray(X), loss, y=jnp.asarray(y))
    V = rng.standard_normal((bpcheck.param_count(widths), 4))
    expected = bpcheck.gauss_newton(params, X, loss, y=y) @ V
    assert rel_err(op @ V, expected) < RTOL
    assert rel_err(np.asarray(jop @ jnp.asarray(V)), expected) < 1e-5
    assert rel_err(np.asarray(jop @ jnp.asarray(V[:, 1])), expected[:, 1]) < 1e-5


def _transposed_shapes(jaxpr):
    """The operand shapes of every ``transpose`` in ``jaxpr`` and the programs it calls."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "transpose":
            shapes.append(tuple(eqn.invars[0].aval.shape))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    shapes += _transposed_shapes(sub)
    return shapes


def test_a_jax_block_of_vectors_is_never_transposed_whole():
    """``op @ V`` for JAX ``V`` ``(P, m)`` reads each layer's rows of ``V`` in place and
    writes the result's rows in place: no ``(P, m)`` or ``(m, P)`` array is transposed,
    only per-layer products (and it equals NumPy's block and the vectors one by one)."""
    widths = [5, 7, 6, 3]
    params, X, rng = make_case(widths, 4)
    P, m = bpcheck.param_count(widths), 3
    V = rng.standard_normal((P, m))
    op = bpcheck.gauss_newton_operator(params, X, activation="tanh")
    jop = bpcheck.gauss_newton_operator([(jnp.asarray(B), jnp.asarray(b)) for B, b in params],
                                        jnp.asarray(X), activation="tanh")
    got = jop @ jnp.asarray(V)
    assert got.shape == (P, m)
    assert rel_err(np.asarray(got), op @ V) < 1e-5
    assert rel_err(np.asarray(got), np.stack([np.asarray(jop @ jnp.asarray(V[:, i]))
                                              for i in range(m)], axis=1)) < 1e-5
    shapes = _transposed_shapes(jax.make_jaxpr(lambda V: jop @ V)(jnp.asarray(V)).jaxpr)
    assert shapes, "expected the per-layer transposes"
    assert all(np.prod(shape) < P * m for shape in shapes), shapes


def test_a_large_jax_operator_on_the_cpu_runs_its_products_with_numpy(monkeypatch):
    """From ``N P >= _HOST_PRODUCTS`` a JAX operator on the CPU keeps NumPy views of its
    factors and computes ``op @ v`` and ``op @ V`` with them: JAX results equal to the
    compiled program's, NaN still named; under ``jax.jit`` the compiled program runs."""
    from bpcheck import _gauss_newton

    widths = [5, 7, 6, 3]
    params, X, rng = make_case(widths, 4)
    P, m = bpcheck.param_count(widths), 3
    cpu = jax.local_devices(backend="cpu")[0]  # the CPU also where a GPU is the default

    def on_cpu(a):
        return jax.device_put(jnp.asarray(a), cpu)

    jp = [(on_cpu(B), on_cpu(b)) for B, b in params]
    v, V = rng.standard_normal(P), rng.standard_normal((P, m))
    compiled = bpcheck.gauss_newton_operator(jp, on_cpu(X), activation="tanh")
    assert compiled._host is None  # small: the compiled program
    expected_v = np.asarray(compiled @ on_cpu(v))
    expected_V = np.asarray(compiled @ on_cpu(V))
    monkeypatch.setattr(_gauss_newton, "_HOST_PRODUCTS", 1)
    ran = []
    on_host = _gauss_newton.GaussNewtonOperator._on_host
    monkeypatch.setattr(_gauss_newton.GaussNewtonOperator, "_on_host",
                        lambda self, *a: ran.append(a[1]) or on_host(self, *a))
    op = bpcheck.gauss_newton_operator(jp, on_cpu(X), activation="tanh")
    for _ in range(2):  # a second vector of the same kind too
        got = op @ on_cpu(v)
        assert isinstance(got, jax.Array) and got.shape == (P,) and got.dtype == op.dtype
        assert rel_err(np.asarray(got), expected_v) < 1e-5
    got = op @ on_cpu(V)
    assert isinstance(got, jax.Array) and got.shape == (P, m)
    assert rel_err(np.asarray(got), expected_V) < 1e-5
    assert ran == [False, False, True]
    got = op @ v  # a NumPy v: the host products, a JAX result on the operator's CPU
    assert isinstance(got, jax.Array) and got.devices() == {cpu}
    assert rel_err(np.asarray(got), expected_v) < 1e-5
    with pytest.raises(ValueError, match="v"):
        op @ on_cpu(np.where(np.arange(P) == 3, np.nan, v))
    with pytest.raises(ValueError, match=r"v: expected a vector"):
        op @ jnp.ones(P + 1)
    traced = jax.jit(lambda t: op @ t)(on_cpu(v))  # a tracer: the compiled program
    assert rel_err(np.asarray(traced), expected_v) < 1e-5
    with pytest.raises(ValueError, match="v"):  # a NumPy one too
        op @ np.where(np.arange(P) == 3, np.nan, v)
    # the NaN vectors were checked there too; the traced one was not
    assert len(ran) == 6


def test_a_model_gives_and_takes_vectors_in_its_own_structure():
    rng = np.random.default_rng(2)
    layers = [{"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)},
              {"W": rng.standard_normal((4, 2)), "b": rng.standard_normal(2)}]
    net = bpcheck.network(layers, layout="in_out", activation="tanh")
    X = rng.standard_normal((5, 3))
    op = bpcheck.gauss_newton_operator(net, X)
    tree = net.from_beta(rng.standard_normal(op.shape[0]))
    Gv = op @ tree
    assert Gv[0]["W"].shape == (3, 4) and Gv[1]["b"].shape == (2,)
    assert rel_err(net.to_beta(Gv), bpcheck.gauss_newton(net, X) @ net.to_beta(tree)) < RTOL


def test_conjugate_gradients_through_scipy_solve_a_damped_gauss_newton_system():
    linalg = pytest.importorskip("scipy.sparse.linalg")
    params, X, rng = make_case([4, 10, 3], 20)
    op = bpcheck.gauss_newton_operator(params, X)
    P = op.shape[0]
    damped = linalg.LinearOperator((P, P), matvec=lambda v: op @ v + 0.1 * v, dtype=op.dtype)
    b = rng.standard_normal(P)
    x, info = linalg.cg(damped, b, rtol=1e-10, maxiter=10 * P)
    assert info == 0
    G = bpcheck.gauss_newton(params, X)
    assert rel_err(x, np.linalg.solve(G + 0.1 * np.eye(P), b)) < 1e-6
    assert linalg.aslinearoperator(op).shape == (P, P)


def test_bad_vectors_are_named():
    params, X, _ = make_case([3, 4, 2], 5)
    op = bpcheck.gauss_newton_operator(params, X)
    P = op.shape[0]
    with pytest.raises(ValueError, match=rf"v: expected a vector in beta order of shape \({P},\)"
                                         rf".*got shape \({P - 1},\)"):
        op @ np.ones(P - 1)
    with pytest.raises(ValueError, match="v: contains NaN or inf"):
        op @ np.full(P, np.nan)
    with pytest.raises(TypeError, match="v: expected a real numeric array"):
        op @ np.ones(P, dtype=complex)
    assert "GaussNewtonOperator(widths=[3, 4, 2], loss='cross_entropy'" in repr(op)


@pytest.mark.parametrize("library", ["numpy", "jax"])
def test_repeat_vector_products_rerun_the_first_ones_kernel_and_still_catch_nan(library,
                                                                               monkeypatch):
    """After one product with a vector, a vector of the same kind, shape and dtype runs
    that product's kernel (JAX: its checked program) again without the checks: the bits of
    a first product, NaN and inf still named, anything else the full path."""
    to = np.asarray if library == "numpy" else jnp.asarray
    params, X, rng = make_case([4, 6, 5, 3], 7)
    params = [(to(B), to(b)) for B, b in params]
    op = bpcheck.gauss_newton_operator(params, to(X), loss="mse", activation="tanh")
    P = op.shape[0]
    full = []  # products that took the full path
    for path in ("_products", "_columns"):  # (NumPy: a small block by columns)
        real = getattr(op, path)
        monkeypatch.setattr(op, path, lambda *a, real=real, **k: full.append(1) or real(*a, **k))
    vs = [to(rng.standard_normal(P)) for _ in range(3)]
    got = [op @ v for v in vs]
    assert len(full) == 1
    for v, g in zip(vs, got):  # each against the first product of an operator of its own
        want = bpcheck.gauss_newton_operator(params, to(X), loss="mse", activation="tanh") @ v
        assert type(g) is type(want) and g.dtype == want.dtype and g.shape == (P,)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(want))
    for bad in (np.nan, np.inf):
        planted = to(np.where(np.arange(P) == P - 2, bad, np.asarray(vs[0])))
        with pytest.raises(ValueError, match="v: contains NaN or inf"):
            op @ planted
    v32 = vs[1].astype(np.float32)  # another dtype: cast by the full path
    np.testing.assert_array_equal(np.asarray(op @ v32), np.asarray(op @ to(np.asarray(v32, float))))
    with pytest.raises(ValueError, match=rf"v: expected a vector in beta order of shape \({P},\)"):
        op @ to(np.ones(P - 1))
    block = to(np.stack([np.asarray(v) for v in vs], axis=1))  # (P, 3): the full path
    np.testing.assert_allclose(np.asarray(op @ block), np.stack([np.asarray(g) for g in got], 1),
                               rtol=1e-12, atol=1e-14)
    assert len(full) == 1 + 2 + 1 + 1  # NaN and inf; float32; the block (a wrong shape raises first)
    np.testing.assert_array_equal(np.asarray(op @ vs[2]), np.asarray(got[2]))
    assert len(full) == 5


@pytest.mark.parametrize("library", ["numpy", "jax"])
def test_repeat_jax_blocks_rerun_their_program_and_still_catch_nan(library, monkeypatch):
    """A JAX block ``(P, m)`` of the kind, shape and dtype of an earlier one runs that
    block's checked program again without the checks (NumPy blocks, by columns or
    transposed first, take the full path each time): the bits of a first product, NaN and
    inf still named."""
    to = np.asarray if library == "numpy" else jnp.asarray
    params, X, rng = make_case([4, 6, 5, 3], 7)
    params = [(to(B), to(b)) for B, b in params]
    op = bpcheck.gauss_newton_operator(params, to(X))
    P = op.shape[0]
    full = []
    for path in ("_products", "_columns"):
        real = getattr(op, path)
        monkeypatch.setattr(op, path, lambda *a, real=real, **k: full.append(1) or real(*a, **k))
    blocks = [to(rng.standard_normal((P, 3))) for _ in range(3)]
    got = [op @ V for V in blocks]
    assert len(full) == (1 if library == "jax" else 3)
    for V, g in zip(blocks, got):
        want = bpcheck.gauss_newton_operator(params, to(X)) @ V
        assert type(g) is type(want) and g.shape == (P, 3)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(want))
    planted = np.array(blocks[1])
    planted[P - 1, 2] = np.inf
    with pytest.raises(ValueError, match="v: contains NaN or inf"):
        op @ to(planted)
    np.testing.assert_allclose(np.asarray(op @ to(np.array(blocks[2])[:, :2])),
                               np.asarray(got[2])[:, :2], rtol=1e-12, atol=1e-14)  # another m
    assert len(full) == (3 if library == "jax" else 5)


def test_a_vector_product_traced_by_jax_jit_takes_the_full_path():
    params, X, rng = make_case([4, 6, 3], 5)
    op = bpcheck.gauss_newton_operator([(jnp.asarray(B), jnp.asarray(b)) for B, b in params],
                                       jnp.asarray(X))
    v = jnp.asarray(rng.standard_normal(op.shape[0]))
    want = op @ v
    op @ v  # a repeat
    np.testing.assert_allclose(np.asarray(jax.jit(lambda u: op @ u)(v)), np.asarray(want),
                               rtol=1e-12)


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_block_of_vectors_is_transposed_in_chunks_on_threads_without_losing_a_column(
        monkeypatch, order):
    """``op @ V`` for ``V`` of shape ``(P, m)`` copies ``V.T`` in chunks over threads; with
    chunks of 7 rows, 3 threads and every size threaded, each product is still right."""
    from bpcheck import _arrays, _gauss_newton, _recursion

    monkeypatch.setattr(_arrays, "ALIGN_MIN", 0)  # these small copies aligned too
    monkeypatch.setattr(_gauss_newton, "_CHUNK", 7)
    monkeypatch.setattr(_recursion, "_THREADED_SIZE", 1)
    monkeypatch.setattr(_recursion, "_THREADS", 3)
    monkeypatch.setattr(_gauss_newton, "_COLUMNS", 0)  # (a small block: else by columns)
    widths = [4, 6, 3]
    params, X, rng = make_case(widths, 5)
    op = bpcheck.gauss_newton_operator(params, X)
    V = np.asarray(rng.standard_normal((bpcheck.param_count(widths), 4)), order=order)
    assert rel_err(op @ V, bpcheck.gauss_newton(params, X) @ V) < RTOL


@pytest.mark.parametrize("shape", [(53, 4), (4, 53), (1, 9), (9, 1)])
def test_the_chunked_transpose_copies_tall_and_wide_blocks_aligned(monkeypatch, shape):
    """``_transposed`` of ``(P, m)`` (a block of vectors) and of ``(m, P)`` (the products'
    rows, back to a block): ``v.T`` exactly, C-contiguous, a copy 64-byte aligned (JAX takes
    it over without a copy), with chunks of 7 along ``P`` on 3 threads."""
    from bpcheck import _arrays, _gauss_newton, _recursion

    monkeypatch.setattr(_arrays, "ALIGN_MIN", 0)  # these small copies aligned too
    monkeypatch.setattr(_gauss_newton, "_CHUNK", 7)
    monkeypatch.setattr(_recursion, "_THREADED_SIZE", 1)
    monkeypatch.setattr(_recursion, "_THREADS", 3)
    v = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = _gauss_newton._transposed(v)
    np.testing.assert_array_equal(out, v.T)
    assert out.flags.c_contiguous
    # a single row or column is its own transpose: a view; otherwise a fresh aligned copy
    assert np.shares_memory(out, v) if 1 in shape else out.ctypes.data % 64 == 0


@pytest.mark.parametrize("widths, activation", [
    ([4, 3], "relu"),  # no hidden layer: no V stored, only the inputs
    ([4, 6, 3], "tanh"),  # V^(1) = B^(2) D^(1): the last hidden layer's D and B^(L+1) only
    ([4, 6, 5, 7, 3], ["elu", "sigmoid", "leaky_relu"]),  # V^(1), V^(2) stored, then B^(4) D^(3)
])
def test_products_for_any_depth_and_mixed_activations_equal_the_matrix(widths, activation):
    params, X, rng = make_case(widths, 6)
    G = bpcheck.gauss_newton(params, X, activation=activation)
    V = rng.standard_normal((bpcheck.param_count(widths), 3))
    op = bpcheck.gauss_newton_operator(params, X, activation=activation)
    assert rel_err(op @ V, G @ V) < 1e-10
    assert rel_err(op @ V[:, 0], G @ V[:, 0]) < 1e-10
    jop = bpcheck.gauss_newton_operator([(jnp.asarray(B), jnp.asarray(b)) for B, b in params],
                                        jnp.asarray(X), activation=activation)
    assert rel_err(np.asarray(jop @ jnp.asarray(V)), G @ V) < 1e-5


def test_an_operator_of_numpy_arrays_takes_jax_vectors_checked_and_gives_jax_results():
    params = bpcheck.init_params([3, 4, 2], seed=0)
    X = np.random.default_rng(0).standard_normal((5, 3))
    op = bpcheck.gauss_newton_operator(params, X)
    P = op.shape[0]
    V = np.random.default_rng(1).standard_normal((P, 3))
    for v in (V[:, 0], V):
        got = op @ jnp.asarray(v)
        assert isinstance(got, jax.Array) and got.shape == v.shape
        # (the same NumPy products; BLAS may round differently for differently aligned v)
        assert rel_err(got, op @ v) < 1e-13
    bad = V[:, 0].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="v: contains NaN or inf"):
        op @ jnp.asarray(bad)
    with pytest.raises(TypeError, match="v: a traced JAX array .* built from NumPy arrays"):
        jax.jit(lambda v: op @ v)(jnp.asarray(V[:, 0]))


def test_a_vector_whose_layers_have_other_keys_than_the_models_is_named():
    rng = np.random.default_rng(2)
    layers = [{"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)},
              {"W": rng.standard_normal((4, 2)), "b": rng.standard_normal(2)}]
    net = bpcheck.network(layers, layout="in_out", activation="tanh")
    op = bpcheck.gauss_newton_operator(net, rng.standard_normal((5, 3)))
    tree = net.from_beta(rng.standard_normal(op.shape[0]))
    with pytest.raises(ValueError, match=r"v: in the structure of the list of layers: layer 1: "
                                         r"expected the keys \['W', 'b'\], got \['W', 'b', 'c'\]"):
        op @ [tree[0], {**tree[1], "c": np.zeros(2)}]
    with pytest.raises(ValueError, match=r"v: .*layer 0: expected the keys \['W', 'b'\], got \['W'\]"):
        op @ [{"W": tree[0]["W"]}, tree[1]]


def test_an_operator_keeps_its_own_copy_of_the_data_it_was_built_from():
    """A batch loop that refills X must not change an operator built before (its factors
    and Hessian come from the old X; a^(0) was X itself), nor jacobian_factors' a^(0)."""
    rng = np.random.default_rng(0)
    params = bpcheck.init_params([3, 5, 2], seed=0)
    X, y = rng.standard_normal((4, 3)), rng.integers(0, 2, 4)
    v = rng.standard_normal(bpcheck.param_count([3, 5, 2]))
    for _ in range(2):  # the second time from the replayed plan
        X_old = X.copy()
        op = bpcheck.gauss_newton_operator(params, X, y=y)
        factors = bpcheck.jacobian_factors(params, X)
        X[:] = rng.standard_normal((4, 3))
        assert rel_err(op @ v, bpcheck.gauss_newton_matvec(params, X_old, v, y=y)) < RTOL
        assert not np.shares_memory(factors[0].a_prev, X)
        assert np.array_equal(factors[0].a_prev, X_old)


@pytest.mark.parametrize("widths", [[3, 5, 2], [3, 5, 4, 2]])
def test_an_operator_keeps_its_own_copy_of_the_output_weights(widths):
    """The last hidden layer's V^(L) = B^(L+1) D^(L) is applied as that product: the operator
    keeps B^(L+1) itself, so an optimiser that then updates the parameters in place must not
    change the products of an operator built before."""
    rng = np.random.default_rng(1)
    params = bpcheck.init_params(widths, seed=1)
    X = rng.standard_normal((6, 3))
    v = rng.standard_normal(bpcheck.param_count(widths))
    for _ in range(2):  # the second time from the replayed plan
        old = [(B.copy(), b.copy()) for B, b in params]
        op = bpcheck.gauss_newton_operator(params, X)
        for B, _ in params:
            B += 0.5 * rng.standard_normal(B.shape)
        assert rel_err(op @ v, bpcheck.gauss_newton_matvec(old, X, v)) < RTOL
        assert rel_err(op @ v, bpcheck.gauss_newton_matvec(params, X, v)) > 1e-3


@pytest.mark.parametrize("to", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_products_from_the_left_and_the_transpose_are_those_of_the_symmetric_G(to):
    """G is symmetric: M @ op, op.T and SciPy's adjoint products (which lsqr uses) are
    defined by it; before, M @ op raised NumPy's gufunc error and op.T AttributeError."""
    rng = np.random.default_rng(0)
    params = [(to(B), to(b)) for B, b in bpcheck.init_params([4, 6, 3], seed=0)]
    op = bpcheck.gauss_newton_operator(params, to(rng.standard_normal((7, 4))))
    P = op.shape[0]
    G = np.asarray(op.to_dense())
    M = rng.standard_normal((2, P))
    assert rel_err(np.asarray(to(M) @ op), M @ G) < RTOL
    assert rel_err(np.asarray(to(M[0]) @ op), M[0] @ G) < RTOL
    assert op.T is op and op.H is op
    with pytest.raises(ValueError, match=rf"M: expected rows in beta order, shape \(m, {P}\)"):
        to(M[:, :-1]) @ op
    if to is np.asarray:
        linalg = pytest.importorskip("scipy.sparse.linalg")
        lin = linalg.aslinearoperator(op)
        assert rel_err(lin.rmatvec(M[0]), G @ M[0]) < RTOL
        assert rel_err(lin.T @ M[0], G @ M[0]) < RTOL
        b = G @ M[0]  # in G's range: lsqr (adjoint products) finds an x with G x = b
        x = linalg.lsqr(lin, b, atol=1e-12, btol=1e-12, iter_lim=500)[0]
        assert rel_err(G @ x, b) < 1e-6


@pytest.mark.parametrize("rows", [False, True])
def test_an_operator_keeps_its_own_copy_of_a_users_hessians(rows, monkeypatch):
    """A user's loss that returns an array it keeps: writing into that array after the
    operator is built changes none of the operator's products (either kernel)."""
    from bpcheck import _gauss_newton

    if rows:
        monkeypatch.setattr(_gauss_newton, "_COLUMNS", 0)
    params, X, rng = make_case([4, 6, 3], 7)
    kept = np.broadcast_to(np.eye(3) + 0.5, (7, 3, 3)).copy()
    loss = Loss(grad=lambda z, y: z, hessian=lambda z, y: kept)
    op = bpcheck.gauss_newton_operator(params, X, loss)
    v = rng.standard_normal(op.shape[0])
    V = np.stack([v, -v], 1)
    before, block = op @ v, op @ V
    kept *= 3
    np.testing.assert_array_equal(op @ v, before)
    np.testing.assert_array_equal(op @ V, block)


def test_a_nan_in_the_rows_of_m_at_op_names_m():
    params, X, rng = make_case([4, 6, 3], 7)
    op = bpcheck.gauss_newton_operator(params, X)
    M = rng.standard_normal((2, op.shape[0]))
    np.testing.assert_allclose(M @ op, (op @ M.T).T, rtol=1e-12)
    M[1, 3] = np.nan
    with pytest.raises(ValueError, match="M: contains NaN or inf"):
        M @ op
    with pytest.raises(ValueError, match="M: contains NaN or inf"):
        jnp.asarray(M) @ op


def test_torch_vectors_for_an_operator_with_a_layer_without_a_bias():
    """A torch tensor as ``v``, ``V`` or in ``v @ op`` for the operator of a network with a
    layer without a bias: the products of its NumPy values (it was a TypeError from the
    zeros put in for the missing bias)."""
    torch = pytest.importorskip("torch")
    params, X, rng = make_case([4, 6, 3], 7)
    params = [(params[0][0], None), params[1]]
    op = bpcheck.gauss_newton_operator(params, X)
    v = rng.standard_normal(op.shape[0])
    want = bpcheck.gauss_newton_matvec(params, X, v)
    assert rel_err(op @ torch.from_numpy(v), want) < RTOL
    assert rel_err(torch.from_numpy(v) @ op, want) < RTOL
    V = torch.from_numpy(np.stack([v, 2 * v], 1))
    assert rel_err(op @ V, np.stack([want, 2 * want], 1)) < RTOL


@pytest.mark.parametrize("rows", [False, True])
def test_the_transpose_of_a_user_loss_whose_hessian_is_not_symmetric_applies_its_transpose(
        rows, monkeypatch):
    """``G = mean_n J_n' H_n J_n`` is not symmetric when a user's ``H_n`` is not: ``op.T``,
    ``op.H``, ``v @ op``, ``M @ op`` and SciPy's adjoint products gave ``G v`` for ``G' v``
    (the operator took itself for its transpose).  They now apply ``G'``, by columns and by
    rows, for a layer without a bias too, and in JAX; a built-in loss's operator is its
    own transpose."""
    import scipy.sparse.linalg as sla

    from bpcheck import _gauss_newton

    if rows:
        monkeypatch.setattr(_gauss_newton, "_COLUMNS", 0)
    params, X, rng = make_case([4, 6, 5, 3], 7)
    y = rng.standard_normal((7, 3))
    loss = Loss(grad=huber_grad, hessian=lopsided_hessian)
    for net in (params, [*params[:-1], (params[-1][0], None)]):
        G = bpcheck.gauss_newton(net, X, loss, y=y, activation="elu")
        assert rel_err(G, G.T) > 0.1  # not symmetric indeed
        op = bpcheck.gauss_newton_operator(net, X, loss, y=y, activation="elu")
        v, M = rng.standard_normal(G.shape[0]), rng.standard_normal((3, G.shape[0]))
        assert rel_err(op @ v, G @ v) < RTOL
        for Gtv in (op.T @ v, op.H @ v, v @ op, op.rmatvec(v), sla.aslinearoperator(op).rmatvec(v)):
            assert rel_err(Gtv, G.T @ v) < RTOL
        assert rel_err(M @ op, M @ G) < RTOL and rel_err(op.rmatmat(M.T), G.T @ M.T) < RTOL
        assert op.T.T is op and rel_err(op.T.to_dense(), G.T) < RTOL
    jop = bpcheck.gauss_newton_operator([(jnp.asarray(B), jnp.asarray(b)) for B, b in params],
                                        jnp.asarray(X), loss, y=jnp.asarray(y), activation="elu")
    G = bpcheck.gauss_newton(params, X, loss, y=y, activation="elu")
    v = rng.standard_normal(G.shape[0])
    assert rel_err(np.asarray(jop.T @ jnp.asarray(v)), G.T @ v) < 1e-5
    assert rel_err(np.asarray(jnp.asarray(v) @ jop), G.T @ v) < 1e-5
    builtin = bpcheck.gauss_newton_operator(params, X)
    assert builtin.T is builtin and builtin.H is builtin


@pytest.mark.parametrize("lib", ["numpy", "numpy-by-rows", "jax"])
def test_to_dense_takes_its_columns_a_block_at_a_time(lib, monkeypatch):
    # all P columns at once held P times the products' temporaries: 13 GB for P = 2644,
    # N = 3000 (a trial's run was killed), where gauss_newton needs 0.6 GB
    from bpcheck import _gauss_newton

    widths = [6, 9, 7, 3]
    params = bpcheck.init_params(widths, seed=1)
    X = np.random.default_rng(2).standard_normal((40, 6))
    if lib == "numpy-by-rows":  # the operator of more than _COLUMNS parameters
        monkeypatch.setattr(_gauss_newton, "_COLUMNS", 10)
    if lib == "jax":
        params = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
        X = jnp.asarray(X)
    G = np.asarray(bpcheck.gauss_newton(params, X))
    op = bpcheck.gauss_newton_operator(params, X)
    assert op.dense_block() == op.shape[0]  # small: one block
    op.DENSE_MB = 0.001  # about 1 kB: blocks of a column or so
    assert 1 <= op.dense_block() < op.shape[0] // 10
    D = op.to_dense()
    assert type(D) is (np.ndarray if lib != "jax" else type(jnp.zeros(1)))
    assert D.shape == G.shape and rel_err(np.asarray(D), G) < RTOL
