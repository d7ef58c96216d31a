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


# --- a call like one checked before ------------------------------------------------------
# prepare() remembers what the checks of shapes and dtypes found for a signature (kinds,
# shapes, dtypes) of a call's arrays; a repeat must come out exactly as the full check would


def _described(prep):
    arrays = [t for pair in prep.params for t in pair] + [prep.X] + list(prep.others.values())
    return (prep.widths, prep.single, prep.xp.__name__, [n for n, _ in prep.unchecked],
            [(type(a).__name__, tuple(a.shape), str(a.dtype)) for a in arrays if a is not None])


MIXES = {
    "numpy": lambda B, b, X, v: (np.asarray(B), np.asarray(b), X, v),
    "jax": lambda B, b, X, v: (jnp.asarray(B), jnp.asarray(b), jnp.asarray(X), jnp.asarray(v)),
    "numpy params, jax X": lambda B, b, X, v: (B, b, jnp.asarray(X), v),
    "jax params, numpy X": lambda B, b, X, v: (jnp.asarray(B), jnp.asarray(b), X, v),
    "float32 params, float64 X": lambda B, b, X, v: (B.astype(np.float32), b.astype(np.float32), X, v),
    "int X": lambda B, b, X, v: (B, b, np.ones_like(X, dtype=np.int64), v),
    "one example": lambda B, b, X, v: (B, b, X[0], v),
    "jax, one example": lambda B, b, X, v: (jnp.asarray(B), jnp.asarray(b), jnp.asarray(X[0]), v),
}


@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("defer", [True, False])
def test_a_repeated_signature_is_prepared_as_the_full_check_prepares_it(params, mix, defer):
    from bpcheck._arrays import prepare

    X, v = np.random.default_rng(0).standard_normal((5, 3)), np.ones(P)
    made = [MIXES[mix](B, b, X, v) for B, b in params]
    ps = [(B, b) for B, b, _, _ in made]
    X2, v2 = made[0][2], made[0][3]
    first = prepare(ps, X2, defer_finite=defer, v=v2)
    again = prepare(ps, X2, defer_finite=defer, v=v2)
    assert _described(again) == _described(first)
    np.testing.assert_array_equal(np.asarray(again.X), np.asarray(first.X))


@pytest.mark.parametrize("lib", ["numpy", "jax"])
def test_a_call_like_one_checked_before_still_checks_its_values(params, lib):
    as_ = np.asarray if lib == "numpy" else jnp.asarray
    ps = [(as_(B), as_(b)) for B, b in params]
    X, v = np.random.default_rng(0).standard_normal((5, 3)), np.ones(P)
    bpcheck.gauss_newton_matvec(ps, as_(X), as_(v))  # checked in full, its signature kept
    bad_X, bad_v, bad_B = X.copy(), v.copy(), np.array(params[1][0])
    bad_X[2, 1], bad_v[-1], bad_B[0, 0] = np.nan, np.inf, np.nan
    with pytest.raises(ValueError, match=r"^X: contains NaN or inf"):
        bpcheck.gauss_newton_matvec(ps, as_(bad_X), as_(v))
    with pytest.raises(ValueError, match=r"^v: contains NaN or inf"):
        bpcheck.gauss_newton_matvec(ps, as_(X), as_(bad_v))
    with pytest.raises(ValueError, match=r"^B\^\(2\) \(params\[1\]\[0\]\): contains NaN"):
        bpcheck.gauss_newton_matvec([ps[0], (as_(bad_B), ps[1][1])], as_(X), as_(v))


def test_the_same_arrays_under_another_name_are_named_as_given(params):
    from bpcheck._arrays import prepare

    X, a = np.ones((5, 3)), np.ones(7)
    assert [n for n, _ in prepare(params, X, defer_finite=False, y=a).unchecked] == []
    a[0] = np.nan
    with pytest.raises(ValueError, match=r"^v: contains NaN"):
        prepare(params, X, defer_finite=False, v=a)
    with pytest.raises(ValueError, match=r"^y: contains NaN"):
        prepare(params, X, defer_finite=False, y=a)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_matrix_inputs_are_read_as_arrays_and_masked_ones_are_named_errors(params):
    """np.matrix passed the checks and then failed deep inside (its products and reductions
    differ from an ndarray's); a masked array's mask would be dropped."""
    X = np.random.default_rng(0).standard_normal((5, 3))
    v = np.random.default_rng(1).standard_normal(P)
    with_matrix = [(np.asmatrix(B), b) for B, b in params]
    for fn in (bpcheck.forward, bpcheck.jacobian, bpcheck.ntk):
        for p, x in ((params, np.asmatrix(X)), (with_matrix, X)):
            got = fn(p, x)
            assert type(got) is np.ndarray and np.array_equal(got, fn(params, X))
    assert np.array_equal(bpcheck.per_example_grads(params, np.asmatrix(X), np.zeros(5, int)),
                          bpcheck.per_example_grads(params, X, np.zeros(5, int)))
    op = bpcheck.gauss_newton_operator(params, X)
    assert np.array_equal(op @ np.asmatrix(v).T, op @ v[:, None])
    masked = np.ma.masked_array(X, mask=X > 1)
    for fn in (bpcheck.forward, bpcheck.jacobian):
        with pytest.raises(TypeError, match=r"X: a masked array, whose mask bpcheck would drop"):
            fn(params, masked)
    with pytest.raises(TypeError, match=r"v: a masked array"):
        op @ np.ma.masked_array(v)


def test_empty_jax_batches_give_empty_results_like_numpy(params):
    """reshape(..., -1) of a zero-size array raised ZeroDivisionError in the JAX Jacobian
    and in a JAX operator's (P, 0) block."""
    jp = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    empty = np.zeros((0, 3))
    got = bpcheck.jacobian(jp, jnp.asarray(empty))
    assert isinstance(got, jax.Array) and got.shape == bpcheck.jacobian(params, empty).shape == (0, 2, P)
    X = np.random.default_rng(0).standard_normal((5, 3))
    block = bpcheck.gauss_newton_operator(jp, jnp.asarray(X)) @ jnp.ones((P, 0))
    assert block.shape == (bpcheck.gauss_newton_operator(params, X) @ np.ones((P, 0))).shape == (P, 0)


def test_jax_integer_inputs_follow_jax_promotion(params):
    """float32 weights with integer X: float32 as jnp promotes (np.result_type gave float64:
    JAX warned five times with x64 off, and results doubled in size with it on)."""
    jp = [(jnp.asarray(B, jnp.float32), jnp.asarray(b, jnp.float32)) for B, b in params]
    Xi = np.arange(15).reshape(5, 3) % 4 - 2
    got = bpcheck.jacobian(jp, jnp.asarray(Xi))
    assert got.dtype == jnp.float32
    assert np.array_equal(got, bpcheck.jacobian(jp, jnp.asarray(Xi, jnp.float32)))
    assert bpcheck.forward(params, Xi).dtype == np.float64  # NumPy keeps NumPy's promotion


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_nan_in_params_is_named_for_an_empty_batch_by_every_function(params, backend):
    # the JAX per-example gradients of an empty batch returned zeros (0, P) before the
    # parameters' NaN check, which a JAX call leaves to its kernel program, had run
    to = jnp.asarray if backend == "jax" else np.asarray
    bad = [(to(B), to(b)) for B, b in params]
    bad[0] = (to(np.where(np.arange(params[0][0].size).reshape(params[0][0].shape) == 0, np.nan,
                          params[0][0])), bad[0][1])
    X, y = to(np.zeros((0, 3))), to(np.zeros(0, dtype=int))
    for call in (lambda: bpcheck.forward(bad, X), lambda: bpcheck.jacobian(bad, X),
                 lambda: bpcheck.jacobian(bad, X, flat=False), lambda: bpcheck.ntk(bad, X),
                 lambda: bpcheck.per_example_grads(bad, X, y),
                 lambda: bpcheck.per_example_grads(bad, X, y, flat=False),
                 lambda: bpcheck.per_example_grad_norms(bad, X, y)):
        with pytest.raises(ValueError, match=r"B\^\(1\) \(params\[0\]\[0\]\): contains NaN"):
            call()


def test_big_endian_arrays_give_the_native_results(params):
    """Arrays in the other byte order (read from a big-endian file) were accepted, but
    gauss_newton_matvec failed with NumPy's "output array is not acceptable" and a JAX call
    with JAX's "Error interpreting argument"; they are read in the native order now."""
    X = np.random.default_rng(0).standard_normal((5, WIDTHS[0]))
    y = np.array([0, 1, 1, 0, 1])
    v = np.random.default_rng(1).standard_normal(P)
    swap = lambda a: a.astype(a.dtype.newbyteorder("S"))  # noqa: E731 - same values
    assert not swap(X).dtype.isnative and np.array_equal(swap(X), X)
    other = [(swap(B), swap(b)) for B, b in params]
    for name, call in [
        ("forward", lambda p, X, v: bpcheck.forward(p, X)),
        ("per_example_grads", lambda p, X, v: bpcheck.per_example_grads(p, X, y)),
        ("gauss_newton_matvec", lambda p, X, v: bpcheck.gauss_newton_matvec(p, X, v)),
        ("operator", lambda p, X, v: bpcheck.gauss_newton_operator(p, X) @ v),
        ("ntk", lambda p, X, v: bpcheck.ntk(p, X)),
        ("jacobian", lambda p, X, v: bpcheck.jacobian(p, X)),
    ]:
        want = call(params, X, v)
        assert np.array_equal(call(other, swap(X), swap(v)), want), name
        jax_params = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
        got = call(jax_params, swap(X.astype(np.float32)), swap(v.astype(np.float32)))
        assert np.allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5), name
