"""The V/U recursion and the Jacobian it assembles, against jax.jacrev and by hand."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpcheck
from bpcheck._params import layers_from_beta
from bpcheck.numcheck import jacrev_jacobian, rel_error


def _network(widths, seed=0, bias=0.1):
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal((d, dp)) * np.sqrt(2.0 / dp), bias * rng.standard_normal(d))
              for dp, d in zip(widths[:-1], widths[1:])]
    X = rng.standard_normal((5, widths[0]))
    return params, X


def _to_jax(params):
    return [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]


architectures = st.lists(st.integers(1, 9), min_size=2, max_size=8)


@settings(max_examples=25, deadline=None)
@given(widths=architectures, seed=st.integers(0, 2**31 - 1))
def test_jacobian_equals_jacrev_on_random_architectures(widths, seed):
    params, X = _network(widths, seed)
    J = bpcheck.jacobian(params, X)
    assert J.shape == (5, widths[-1], bpcheck.param_count(widths))
    assert rel_error(J, jacrev_jacobian(params, X)).max() < 1e-10


def test_V_recursion_matches_definition_by_hand_for_one_hidden_layer():
    params, X = _network([3, 4, 2], seed=1)
    (B1, b1), (B2, b2) = params
    f = bpcheck.jacobian_factors(params, X)
    for n, x in enumerate(X):
        D1 = np.diag((B1 @ x + b1 > 0).astype(float))
        np.testing.assert_allclose(f[1].V[n], np.eye(2))
        np.testing.assert_allclose(f[0].V[n], B2 @ D1)
        a1 = np.maximum(B1 @ x + b1, 0)
        np.testing.assert_allclose(f[1].a_prev[n], a1)
        U2 = np.eye(2) @ np.kron(np.eye(2), a1[None, :])
        np.testing.assert_allclose(bpcheck.jacobian(params, x)[:, 16:24], U2)


def test_factor_records_have_the_documented_shapes():
    widths = [3, 5, 4, 2]
    params, X = _network(widths)
    f = bpcheck.jacobian_factors(params, X)
    assert len(f) == 3
    for l in range(1, 4):
        assert f[l - 1].V.shape == (5, 2, widths[l])
        assert f[l - 1].a_prev.shape == (5, widths[l - 1])
        assert f[l - 1].D.shape == f[l - 1].z.shape == (5, widths[l])
    np.testing.assert_array_equal(f[-1].D, 1.0)


def test_softmax_case_L0_jacobian_is_identity_kron_x():
    params, X = _network([4, 3])
    J = bpcheck.jacobian(params, X)
    for n, x in enumerate(X):
        np.testing.assert_array_equal(J[n], np.hstack([np.kron(np.eye(3), x[None, :]), np.eye(3)]))


def test_single_example_drops_the_batch_axis():
    params, X = _network([3, 4, 2])
    assert bpcheck.forward(params, X[0]).shape == (2,)
    np.testing.assert_array_equal(bpcheck.jacobian(params, X[0]), bpcheck.jacobian(params, X)[0])
    f = bpcheck.jacobian_factors(params, X[0])
    assert f[0].V.shape == (2, 4) and f[0].a_prev.shape == (3,)


def test_relu_derivative_at_exactly_zero_is_zero():
    B1 = np.array([[1.0, -1.0]])
    params = [(B1, np.zeros(1)), (np.array([[2.0]]), np.zeros(1))]
    x = np.array([1.0, 1.0])  # z^(1) = 0 exactly
    f = bpcheck.jacobian_factors(params, x)
    assert f[0].D[0] == 0.0 and f[0].V[0, 0] == 0.0


def test_forward_matches_jacobian_linearisation():
    params, X = _network([3, 6, 6, 2], seed=4)
    beta = bpcheck.flatten_params(params)
    J = bpcheck.jacobian(params, X)
    v = 1e-7 * np.random.default_rng(0).standard_normal(beta.shape)
    moved = bpcheck.forward(bpcheck.unflatten_params(beta + v, [3, 6, 6, 2]), X)
    np.testing.assert_allclose(moved - bpcheck.forward(params, X), J @ v, rtol=1e-5, atol=1e-12)


def test_jax_inputs_give_jax_outputs_equal_to_numpy():
    params, X = _network([4, 7, 5, 3], seed=2)
    J_np = bpcheck.jacobian(params, X)
    J_jx = bpcheck.jacobian(_to_jax(params), jnp.asarray(X))
    assert isinstance(J_jx, jax.Array) and isinstance(J_np, np.ndarray)
    np.testing.assert_allclose(np.asarray(J_jx), J_np, rtol=1e-13, atol=1e-15)
    f = bpcheck.jacobian_factors(_to_jax(params), jnp.asarray(X))
    assert all(isinstance(r.V, jax.Array) for r in f)


def test_jacobian_works_under_jit_and_vmap():
    params, X = _network([4, 7, 5, 3], seed=2)
    jp, jX = _to_jax(params), jnp.asarray(X)
    J = bpcheck.jacobian(params, X)
    np.testing.assert_allclose(np.asarray(jax.jit(bpcheck.jacobian)(jp, jX)), J, rtol=1e-13)
    per_example = jax.vmap(bpcheck.jacobian, in_axes=(None, 0))(jp, jX)
    np.testing.assert_allclose(np.asarray(per_example), J, rtol=1e-13)
    Vs = jax.jit(lambda p, x: [r.V for r in bpcheck.jacobian_factors(p, x)])(jp, jX)
    np.testing.assert_allclose(np.asarray(Vs[0]), bpcheck.jacobian_factors(params, X)[0].V)


def test_float32_inputs_stay_float32():
    params, X = _network([4, 5, 3])
    p32 = [(B.astype(np.float32), b.astype(np.float32)) for B, b in params]
    J = bpcheck.jacobian(p32, X.astype(np.float32))
    assert J.dtype == np.float32
    np.testing.assert_allclose(J, bpcheck.jacobian(params, X), rtol=1e-4, atol=1e-5)


def test_integer_inputs_are_promoted_to_float64():
    params, _ = _network([2, 3, 1])
    assert bpcheck.forward(params, np.array([[1, 2]])).dtype == np.float64


def test_jacobian_uses_threads_for_large_outputs_and_matches_small_path():
    params, _ = _network([64, 256, 10])
    X = np.random.default_rng(0).standard_normal((100, 64))
    J = bpcheck.jacobian(params, X)  # N K P = 100 * 10 * 19210 > 2^20: threaded path
    for n in (0, 57, 99):
        np.testing.assert_allclose(J[n], bpcheck.jacobian(params, X[n]), rtol=1e-12, atol=1e-14)


def test_bias_columns_are_V_and_weight_columns_are_U():
    params, X = _network([3, 4, 2])
    f = bpcheck.jacobian_factors(params, X)
    J = bpcheck.jacobian(params, X)
    np.testing.assert_array_equal(J[:, :, 12:16], f[0].V)
    U1 = np.einsum("nki,nj->nkij", f[0].V, f[0].a_prev).reshape(5, 2, 12)
    np.testing.assert_array_equal(J[:, :, :12], U1)


# --- bad input ---------------------------------------------------------------------

def test_wrong_column_count_names_the_layer_and_shapes():
    params, X = _network([3, 4, 2])
    params[1] = (np.ones((2, 5)), np.ones(2))
    with pytest.raises(ValueError, match=r"B\^\(2\).*5 columns.*d_1 = 4.*\(2, 5\)"):
        bpcheck.jacobian(params, X)


def test_wrong_bias_length_names_the_layer():
    params, X = _network([3, 4, 2])
    params[0] = (params[0][0], np.ones(3))
    with pytest.raises(ValueError, match=r"b\^\(1\).*expected shape \(4,\).*got \(3,\)"):
        bpcheck.forward(params, X)


@pytest.mark.parametrize("X, message", [
    (np.ones((5, 4)), r"X: has 4 features.*d_0 = 3"),
    (np.ones((2, 5, 3)), r"X: expected shape \(N, 3\) or \(3,\), got a 3-d array"),
    (np.ones(()), r"X: expected shape .*0-d"),
])
def test_wrong_input_shape_is_rejected(X, message):
    params, _ = _network([3, 4, 2])
    with pytest.raises(ValueError, match=message):
        bpcheck.jacobian_factors(params, X)


def test_empty_parameter_list_is_rejected():
    with pytest.raises(ValueError, match="params: empty"):
        bpcheck.jacobian([], np.ones((1, 2)))


@pytest.mark.parametrize("where", ["X", "B", "b"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_rejected(where, bad):
    params, X = _network([3, 4, 2])
    if where == "X":
        X[1, 2] = bad
    elif where == "B":
        params[1][0][0, 0] = bad
    else:
        params[0][1][2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        bpcheck.jacobian(params, X)
    with pytest.raises(ValueError, match="NaN or inf"):
        bpcheck.jacobian(_to_jax(params), jnp.asarray(X))


def test_non_numeric_dtypes_are_rejected():
    params, X = _network([3, 4, 2])
    with pytest.raises(TypeError, match="X: .*got dtype <U1|X: .*dtype"):
        bpcheck.forward(params, np.array([["a", "b", "c"]]))
    with pytest.raises(TypeError, match="complex"):
        bpcheck.forward(params, X.astype(complex))
    with pytest.raises(TypeError, match="params"):
        bpcheck.forward("not params", X)


def test_shape_checks_still_apply_under_jit():
    params, X = _network([3, 4, 2])
    with pytest.raises(ValueError, match="X: has 4 features"):
        jax.jit(bpcheck.jacobian)(_to_jax(params), jnp.ones((5, 4)))


def test_nan_check_is_skipped_under_jit_but_shapes_pass():
    params, X = _network([3, 4, 2])
    out = jax.jit(bpcheck.forward)(_to_jax(params), jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(out), bpcheck.forward(params, X))


def test_finite_values_whose_sum_overflows_are_accepted():
    """The NaN/inf check sums first; a sum that overflows must fall back, not reject."""
    params, X = _network([3, 4, 2])
    X = np.full((2, 3), 3e38, dtype=np.float32)  # finite; the sum is inf in float32
    out = bpcheck.forward([(B.astype(np.float32) * 0, b.astype(np.float32)) for B, b in params], X)
    assert np.isfinite(out).all()
    X[0, 0] = -np.inf  # a sum of +big and -inf is -inf: still caught
    with pytest.raises(ValueError, match="X: contains NaN or inf"):
        bpcheck.forward(params, X)


def test_finite_checks_of_one_call_name_the_array_that_holds_nan():
    """The NumPy arrays of a call are checked together: an overflowing but finite array
    earlier in the call neither masks nor takes the blame for a NaN in a later one."""
    params, X = _network([3, 4, 2])
    params = [(B.astype(np.float32), b.astype(np.float32)) for B, b in params]
    X = np.full((2, 3), 3e38, dtype=np.float32)
    params[0] = (np.full_like(params[0][0], 3e38), params[0][1])
    bad = [params[0], (params[1][0], params[1][1].copy())]
    bad[1][1][1] = np.nan
    with pytest.raises(ValueError, match=r"b\^\(2\) \(params\[1\]\[1\]\): contains NaN"):
        bpcheck.forward(bad, X)
    v = np.zeros(bpcheck.param_count([3, 4, 2]), np.float32)
    v[-1] = np.inf
    with pytest.raises(ValueError, match="v: contains NaN or inf"):
        bpcheck.gauss_newton_matvec(params, X, v, loss="mse")


def test_array_kind_caches_keep_arrays_and_tracers_apart():
    from bpcheck._arrays import is_jax, is_tracer

    seen = []
    jax.jit(lambda x: seen.append((is_jax(x), is_tracer(x))) or x)(jnp.ones(2))
    concrete = jnp.ones(2)
    assert seen == [(True, True)]
    assert (is_jax(concrete), is_tracer(concrete)) == (True, False)
    assert (is_jax(np.ones(2)), is_tracer(np.ones(2))) == (False, False)
    assert not is_jax(np.ones(2).view(np.matrix))


def test_jit_and_vmap_of_a_function_that_closes_over_jax_params():
    """The usual JAX idiom: params closed over, data traced.  The concrete params are
    still checked for NaN and inf (on the host, once per trace)."""
    params, X = _network([3, 4, 2])
    pj = _to_jax(params)
    want = bpcheck.forward(params, X)
    out = jax.jit(lambda X: bpcheck.forward(pj, X))(jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-12)
    out = jax.vmap(lambda x: bpcheck.forward(pj, x))(jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-12)
    J = jax.jit(lambda X: bpcheck.jacobian(pj, X))(jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(J), bpcheck.jacobian(params, X), rtol=1e-12)
    bad = [(pj[0][0], pj[0][1].at[2].set(jnp.nan)), pj[1]]
    with pytest.raises(ValueError, match=r"b\^\(1\) \(params\[0\]\[1\]\): contains NaN"):
        jax.jit(lambda X: bpcheck.forward(bad, X))(jnp.asarray(X))


def test_jit_of_every_entry_point_with_closed_over_params_and_targets():
    params, X = _network([3, 4, 2])
    pj, Xj = _to_jax(params), jnp.asarray(X)
    y = jnp.array([0, 1, 1, 0, 1][:X.shape[0]])
    np.testing.assert_allclose(np.asarray(jax.jit(lambda X: bpcheck.ntk(pj, X))(Xj)),
                               bpcheck.ntk(params, X), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda X: bpcheck.per_example_grads(pj, X, y))(Xj)),
                               bpcheck.per_example_grads(params, X, np.asarray(y)), rtol=1e-10)
    y5 = y.at[0].set(5)  # concrete: made outside the traced function
    with pytest.raises(ValueError, match=r"y: class labels must lie in 0\.\.1 \(K = 2 outputs\), got 5"):
        jax.jit(lambda X: bpcheck.per_example_grad_norms(pj, X, y5))(Xj)
    targets = jnp.zeros((X.shape[0], 2)).at[1, 1].set(jnp.inf)
    with pytest.raises(ValueError, match="y: contains NaN or inf"):
        jax.jit(lambda X: bpcheck.per_example_grads(pj, X, targets, loss="mse"))(Xj)
    bad = [pj[0], (pj[1][0].at[0, 0].set(jnp.nan), pj[1][1])]
    with pytest.raises(ValueError, match=r"B\^\(2\) \(params\[1\]\[0\]\): contains NaN"):
        jax.jit(lambda X: bpcheck.ntk(bad, X))(Xj)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_arrays_are_checked_by_their_dot_and_fall_back_when_it_overflows(dtype):
    """From 2^14 entries the NaN/inf check sums ``x . x`` by BLAS; squares that overflow
    (finite entries) fall back to the elementwise test, and views that are not contiguous
    take the plain sum."""
    from bpcheck._arrays import check_finite

    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, 12345, -1):
            x = np.ones(1 << 15, dtype)
            x[where] = bad
            with pytest.raises(ValueError, match="x: contains NaN or inf"):
                check_finite("x", x)
        y = np.ones((256, 512), dtype)
        y[200, 300] = bad
        with pytest.raises(ValueError, match="y: contains NaN or inf"):
            check_finite("y", y[:, ::2])
    check_finite("x", np.full(1 << 15, np.finfo(dtype).max / 2, dtype))


def test_jacobian_out_receives_the_fresh_jacobian_and_flat_false_gives_views_of_it(monkeypatch):
    from bpcheck import _recursion

    monkeypatch.setattr(_recursion, "_THREADED_SIZE", 1)  # rows split over threads
    monkeypatch.setattr(_recursion, "_THREADS", 3)
    params = bpcheck.init_params([4, 6, 5, 3], seed=0)
    X = np.random.default_rng(0).standard_normal((7, 4))
    want = bpcheck.jacobian(params, X)
    out = np.full_like(want, np.nan)
    assert bpcheck.jacobian(params, X, out=out) is out
    np.testing.assert_array_equal(out, want)
    one = np.full_like(want[0], np.nan)
    assert bpcheck.jacobian(params, X[3], out=one) is one
    np.testing.assert_allclose(one, want[3], rtol=1e-12, atol=1e-14)
    out[:] = 0
    layers = bpcheck.jacobian(params, X, flat=False, out=out)
    assert np.shares_memory(layers[1][0], out) and np.array_equal(out, want)
    with pytest.raises(ValueError, match=r"out: expected shape \(7, 3, 83\), got \(7, 83, 3\)"):
        bpcheck.jacobian(params, X, out=np.zeros((7, 83, 3)))
    with pytest.raises(ValueError, match=r"out: expected dtype float64 .*it is not cast"):
        bpcheck.jacobian(params, X, out=np.zeros((7, 3, 83), np.float32))
    store = np.zeros((7, 3, 90))
    store[:, 0, 80:84] = X
    with pytest.raises(ValueError, match=r"out: shares memory with one of the call's input arrays"):
        bpcheck.jacobian(params, store[:, 0, 80:84], out=store[:, :, :83])
    with pytest.raises(TypeError, match=r"out: .*NumPy inputs only"):
        bpcheck.jacobian([(jnp.asarray(B), jnp.asarray(b)) for B, b in params], X, out=out)


def test_large_jax_jacobian_filled_on_the_host_equals_the_compiled_one(monkeypatch):
    from bpcheck import _recursion

    params = [(jnp.asarray(B), jnp.asarray(b)) for B, b in bpcheck.init_params([4, 6, 5, 3], seed=0)]
    X = jnp.asarray(np.random.default_rng(0).standard_normal((7, 4)))
    compiled = bpcheck.jacobian(params, X)
    compiled_layers = bpcheck.jacobian(params, X, flat=False)
    monkeypatch.setattr(_recursion, "_THREADED_SIZE", 1)
    monkeypatch.setattr(_recursion, "_THREADS", 3)  # rows split over threads
    filled = bpcheck.jacobian(params, X)
    assert isinstance(filled, jax.Array) and filled.devices() == compiled.devices()
    np.testing.assert_array_equal(np.asarray(filled), np.asarray(compiled))
    assert rel_error(np.asarray(filled), jacrev_jacobian(params, X)).max() < 1e-10
    layers = bpcheck.jacobian(params, X, flat=False)
    for got, want, own in zip(jax.tree_util.tree_leaves(layers),
                              jax.tree_util.tree_leaves(layers_from_beta(compiled, [4, 6, 5, 3])),
                              jax.tree_util.tree_leaves(compiled_layers)):
        assert isinstance(got, jax.Array) and got.shape == want.shape == own.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        np.testing.assert_array_equal(np.asarray(got), np.asarray(own))


def test_jax_jacobian_per_layer_is_computed_without_the_flat_array():
    """``flat=False`` on JAX inputs computes each block on its own, called as is and inside
    ``jax.jit`` (slicing the flat array under jit copied it a second time: 820 against 165
    ms for 64-256x4-10, N = 128); the same numbers as the flat result's blocks."""
    widths = [4, 6, 5, 3]
    params = [(jnp.asarray(B), jnp.asarray(b)) for B, b in bpcheck.init_params(widths, seed=0)]
    X = jnp.asarray(np.random.default_rng(0).standard_normal((7, 4)))
    want = jax.tree_util.tree_leaves(layers_from_beta(bpcheck.jacobian(params, X), widths))
    per_layer = functools.partial(bpcheck.jacobian, flat=False)
    for name, f in (("as is", per_layer), ("jit", jax.jit(per_layer))):
        got = f(params, X)
        assert isinstance(got, list) and len(got) == 3, name
        leaves = jax.tree_util.tree_leaves(got)
        assert [t.shape for t in leaves] == [t.shape for t in want], name
        for g, w in zip(leaves, want):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-14, atol=0,
                                       err_msg=name)
    flat_shape = "f64[7,3,83]"  # (N, K, P)
    assert flat_shape in str(jax.make_jaxpr(bpcheck.jacobian)(params, X))
    assert flat_shape not in str(jax.make_jaxpr(per_layer)(params, X))


@pytest.mark.parametrize("N", [7, 2, 1])
def test_numpy_forward_with_rows_split_over_threads_equals_the_jax_forward_for_every_activation(
        monkeypatch, N):
    from bpcheck import _recursion
    from bpcheck._activations import NAMES

    monkeypatch.setattr(_recursion, "_SPLIT_WORK", 1)  # rows split over threads
    monkeypatch.setattr(_recursion, "_THREADS", 3)
    params = bpcheck.init_params([4, 6, 5, 3], seed=0)
    X = np.random.default_rng(1).standard_normal((N, 4))
    before = [lib.num_threads for lib in _recursion._blas_libraries()]
    for name in NAMES:
        got = bpcheck.forward(params, X, activation=name)
        want = bpcheck.forward([(jnp.asarray(B), jnp.asarray(b)) for B, b in params],
                               jnp.asarray(X), activation=name)
        assert got.shape == (N, 3) and got.dtype == np.float64
        assert rel_error(got, np.asarray(want)).max() < 1e-13, name
        np.testing.assert_array_equal(bpcheck.forward(params, X[0], activation=name),
                                      bpcheck.forward(params, X[:1], activation=name)[0])
    assert [lib.num_threads for lib in _recursion._blas_libraries()] == before


def test_single_threaded_blas_is_set_and_restored_by_the_main_thread_only(monkeypatch):
    """Inside the section the main thread's BLAS runs on one thread and gets its count back
    afterwards.  A section in another thread leaves the process-wide count alone: sections
    overlapping in two threads, each restoring what it saw on entry, would leave it at 1."""
    import threading

    from bpcheck import _recursion

    libraries = _recursion._blas_libraries()
    if libraries:
        saved = [lib.num_threads for lib in libraries]
        for lib in libraries:
            lib.set_num_threads(2)
        try:
            with _recursion._single_threaded_blas(True):
                inside = [lib.num_threads for lib in libraries]
            with _recursion._single_threaded_blas(False):
                inactive = [lib.num_threads for lib in libraries]
            after = [lib.num_threads for lib in libraries]
        finally:
            for lib, n in zip(libraries, saved):
                lib.set_num_threads(n)
        assert (inside, inactive, after) == ([1] * len(libraries), [2] * len(libraries),
                                             [2] * len(libraries))

    class Library:  # what the section does, whatever OpenBLAS makes of calls from threads
        num_threads = 4
        calls: list = []

        def set_num_threads(self, n):
            self.calls.append((threading.current_thread().name, n))
            Library.num_threads = n

    monkeypatch.setattr(_recursion, "_blas_libraries", lambda: [Library()])
    main_in, other_in, main_out = threading.Event(), threading.Event(), threading.Event()

    def other():
        main_in.wait(10)
        with _recursion._single_threaded_blas(True):
            other_in.set()
            main_out.wait(10)

    thread = threading.Thread(target=other, name="other")
    thread.start()
    with _recursion._single_threaded_blas(True):
        main_in.set()
        other_in.wait(10)
    main_out.set()
    thread.join(10)
    assert Library.calls == [("MainThread", 1), ("MainThread", 4)]
    assert Library.num_threads == 4


def test_numpy_forward_called_from_several_threads_at_once_is_right_in_each(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from bpcheck import _recursion

    monkeypatch.setattr(_recursion, "_SPLIT_WORK", 1)
    monkeypatch.setattr(_recursion, "_THREADS", 3)
    params = bpcheck.init_params([4, 6, 5, 3], seed=0)
    Xs = [np.random.default_rng(i).standard_normal((5 + i, 4)) for i in range(6)]
    want = [np.asarray(bpcheck.forward([(jnp.asarray(B), jnp.asarray(b)) for B, b in params],
                                       jnp.asarray(X), activation="tanh")) for X in Xs]
    before = [lib.num_threads for lib in _recursion._blas_libraries()]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(bpcheck.forward, params, X, activation="tanh") for X in Xs * 5]
        main = [bpcheck.forward(params, X, activation="tanh") for X in Xs * 5]
        got = [f.result() for f in futures]
    for g, w in zip(got + main, want * 10):
        assert rel_error(g, w).max() < 1e-13
    assert [lib.num_threads for lib in _recursion._blas_libraries()] == before


def test_by_rows_covers_every_row_once_and_raises_a_workers_exception_after_all_are_done(
        monkeypatch):
    import time

    from bpcheck import _recursion

    monkeypatch.setattr(_recursion, "_THREADS", 3)
    hits = np.zeros(10, int)
    _recursion.by_rows(lambda n0, n1: hits.__setitem__(slice(n0, n1), hits[n0:n1] + 1), 10, 5, 1)
    assert (hits == 1).all()
    finished = []

    def fill(n0, n1):  # ranges 0:3 (the caller's thread), 3:6 and 6:10 (the workers')
        if n0 == 3:
            raise RuntimeError(f"rows {n0}:{n1}")
        if n0 == 6:
            time.sleep(0.2)
        finished.append(n0)

    with pytest.raises(RuntimeError, match="rows 3:6"):
        _recursion.by_rows(fill, 10, 5, 1)
    assert sorted(finished) == [0, 6]  # the slow range was waited for before the raise


FORKED_FORWARD = """
import os, sys
import numpy as np
import bpcheck
from bpcheck import _recursion

_recursion._SPLIT_WORK, _recursion._THREADS = 1, 2  # one worker thread, idle after this call
params = bpcheck.init_params([4, 6, 5, 3], seed=0)
X = np.random.default_rng(1).standard_normal((9, 4))
want = bpcheck.forward(params, X, activation="tanh")  # the parent's worker thread started
assert _recursion._POOL
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    got = bpcheck.forward(params, X, activation="tanh")
    os.write(write, b"same" if np.array_equal(got, want) else b"different")
    os._exit(0)
os.close(write)
_, status = os.waitpid(pid, 0)
print(os.read(read, 100).decode(), status)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_numpy_forward_split_over_threads_runs_in_a_forked_child():
    """The worker threads do not survive a fork: a child gets a pool of its own (else its
    split forward would wait forever on threads that are not there)."""
    import signal
    import subprocess
    import sys

    run = subprocess.Popen([sys.executable, "-W", "ignore", "-c", FORKED_FORWARD],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        out, err = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # the parent and its hung child
        run.communicate()
        pytest.fail("the forked child's forward did not finish in 60 s")
    assert (run.returncode, out.split(), err) == (0, ["same", "0"], "")


def test_single_jax_examples_equal_a_batch_of_one_bit_for_bit_and_their_row_under_jit():
    """A single example's batch axis is added and taken away by one JAX operation each
    (``with_batch_axis``, ``without_axis``), not by eager indexing: the bits of a batch of
    one, eagerly, and row ``n`` of the batch inside ``jax.jit``, in the same structure."""
    params64, X64 = _network([3, 5, 4, 2], seed=3)
    params = [(jnp.asarray(B, jnp.float32), jnp.asarray(b, jnp.float32)) for B, b in params64]
    X = jnp.asarray(X64, jnp.float32)
    y = jnp.asarray(np.arange(X.shape[0]) % 2)
    calls = {  # f(x, t), and the same for a batch of one, its row taken
        "forward": (lambda x, t: bpcheck.forward(params, x), lambda t: t[0]),
        "jacobian_factors": (lambda x, t: bpcheck.jacobian_factors(params, x), lambda t: t[0]),
        "jacobian": (lambda x, t: bpcheck.jacobian(params, x), lambda t: t[0]),
        "jacobian per layer": (lambda x, t: bpcheck.jacobian(params, x, flat=False), lambda t: t[0]),
        "per_example_grads": (lambda x, t: bpcheck.per_example_grads(params, x, t), lambda t: t[0]),
        "per_example_grads per layer": (
            lambda x, t: bpcheck.per_example_grads(params, x, t, flat=False), lambda t: t[0]),
        "per_example_grad_norms": (lambda x, t: bpcheck.per_example_grad_norms(params, x, t),
                                   lambda t: t[0]),
        "ntk": (lambda x, t: bpcheck.ntk(params, x), lambda t: t[0, 0]),
        "ntk against the batch": (lambda x, t: bpcheck.ntk(params, X, x), lambda t: t[:, 0]),
    }
    for name, (f, take) in calls.items():
        one = jax.tree_util.tree_map(take, f(X[2:3], y[2:3]))
        for got, exact in ((f(X[2], y[2]), True), (jax.jit(f)(X[2], y[2]), False)):
            assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(one), name
            for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(one)):
                assert isinstance(g, jax.Array) and g.dtype == w.dtype == jnp.float32, name
                assert g.shape == w.shape, name
                if exact:
                    np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)
                else:
                    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-6,
                                               atol=1e-7, err_msg=name)
    f = bpcheck.jacobian_factors(params, X[2])
    assert type(f[0]).__name__ == "LayerFactors" and f[0].V.shape == (2, 5)
    assert f[0].a_prev.shape == (3,) and f[-1].D.shape == (2,)
