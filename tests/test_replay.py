"""Repeat JAX calls run the program of an earlier call with the same signature, without
the checks (``bpcheck._compiled.replayed``): same results, NaN and inf still caught,
and every call that differs in anything the checks depend on takes the full path."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpcheck
from bpcheck import _compiled, _gauss_newton, _pergrad, _recursion

WIDTHS = [3, 5, 5, 2]
P = bpcheck.param_count(WIDTHS)


def network(seed, widths=WIDTHS, N=6):
    rng = np.random.default_rng(seed)
    params = [(jnp.asarray(B), jnp.asarray(0.1 * rng.standard_normal(b.shape)))
              for B, b in bpcheck.init_params(widths, seed)]
    X = jnp.asarray(rng.standard_normal((N, widths[0])))
    v = jnp.asarray(rng.standard_normal(bpcheck.param_count(widths)))
    return params, X, v


def as_numpy(params):
    return [(np.asarray(B), np.asarray(b)) for B, b in params]


@pytest.fixture(autouse=True)
def no_plans(monkeypatch):
    """Each test starts without plans (other tests make some for the same signatures)."""
    monkeypatch.setattr(_compiled, "_PLANS", {})


@pytest.fixture
def counted(monkeypatch):
    """How many times each function ran its checks (``prepare``)."""
    calls = []
    for module in (_gauss_newton, _pergrad, _recursion):
        real = module.prepare
        monkeypatch.setattr(module, "prepare",
                            lambda *a, real=real, **k: calls.append(1) or real(*a, **k))
    return calls


CALLS = {  # name -> (the public function, how the tests call it)
    "forward": (bpcheck.forward, lambda f, p, X, v: f(p, X, activation="tanh")),
    "jacobian_factors": (bpcheck.jacobian_factors, lambda f, p, X, v: f(p, X)),
    "gauss_newton": (bpcheck.gauss_newton, lambda f, p, X, v: f(p, X, "mse")),
    "gauss_newton_matvec": (bpcheck.gauss_newton_matvec, lambda f, p, X, v: f(p, X, v)),
    # the operator's setup replayed, the operator built on its result (one product each)
    "gauss_newton_operator": (bpcheck.gauss_newton_operator, lambda f, p, X, v: f(p, X) @ v),
}
LIBRARIES = {"jax": jnp.asarray, "numpy": np.asarray}


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", CALLS)
def test_a_repeat_call_skips_the_checks_and_gives_what_the_full_path_gives(name, library,
                                                                           counted):
    fn, use = CALLS[name]
    to = LIBRARIES[library]
    arrays = lambda p, X, v: ([(to(B), to(b)) for B, b in p], to(X), to(v))
    first = use(fn, *arrays(*network(0)))
    assert len(counted) == 1
    for seed in (1, 2):  # new arrays of the same signature: no checks, the values' results
        args = arrays(*network(seed))
        got = use(fn, *args)
        assert len(counted) == 1
        want = use(fn.__wrapped__, *args)  # the full path, checks and all
        counted.clear()
        counted.append(1)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                        strict=True):
            assert type(g) is type(w) and g.dtype == w.dtype
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    again = use(fn, *arrays(*network(0)))  # the first arrays again: the first result
    for g, w in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(first)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert len(counted) == 1


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("where", ["B^(2) (params[1][0])", "b^(3) (params[2][1])", "X", "v"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_caught_on_a_repeat_call_and_named(where, bad, library, counted):
    params, X, v = network(3)
    if library == "numpy":
        params, X, v = as_numpy(params), np.array(X), np.array(v)
    for _ in range(2):
        bpcheck.gauss_newton_matvec(params, X, v)
        bpcheck.forward(params, X)
    assert len(counted) == 2  # the second calls were repeats
    planted = lambda a, i: a.at[i].set(bad) if library == "jax" else np.where(
        np.arange(a.size).reshape(a.shape) == np.ravel_multi_index(i, a.shape), bad, a)
    if where == "X":
        X = planted(X, (2, 1))
    elif where == "v":
        v = planted(v, (P - 1,))
    else:
        layer, which = int(where[3]) - 1, where[0] == "b"  # B^(l): params[l - 1]
        pair = list(params[layer])
        pair[which] = planted(pair[which], (0,) * pair[which].ndim)
        params[layer] = tuple(pair)
    with pytest.raises(ValueError, match=re.escape(where) + ": contains NaN or inf"):
        bpcheck.gauss_newton_matvec(params, X, v)
    if where != "v":
        with pytest.raises(ValueError, match=re.escape(where) + ": contains NaN or inf"):
            bpcheck.forward(params, X)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", CALLS)
def test_single_examples_are_replayed_with_the_batch_axis_added_and_taken_as_the_full_path_does(
        name, library, counted):
    """One example ``x`` of shape ``(d_0,)``: the first call adds the batch axis, runs the
    kernel and takes the axis away from the result; repeat calls do the same three steps
    without the checks, with the bits, types and structure of the full path."""
    fn, use = CALLS[name]
    to = LIBRARIES[library]
    arrays = lambda p, X, v: ([(to(B), to(b)) for B, b in p], to(X[0]), to(v))
    use(fn, *arrays(*network(0)))
    assert len(counted) == 1
    for seed in (1, 2):
        args = arrays(*network(seed))
        got = use(fn, *args)
        assert len(counted) == 1
        want = use(fn.__wrapped__, *args)
        counted.clear()
        counted.append(1)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                        strict=True):
            assert type(g) is type(w) and g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    if name in ("forward", "jacobian_factors"):
        leaf = jax.tree_util.tree_leaves(got)[0]
        assert leaf.shape[0] == (2 if name == "forward" else WIDTHS[-1])  # no batch axis
    params, X, v = network(1)
    batch = use(fn, [(to(B), to(b)) for B, b in params], to(X[:1]), to(v))  # a plan of its own
    for g, w in zip(jax.tree_util.tree_leaves(batch),
                    jax.tree_util.tree_leaves(use(fn, *arrays(params, X, v))), strict=True):
        np.testing.assert_array_equal(np.asarray(g).reshape(np.shape(w)), np.asarray(w))


@pytest.mark.parametrize("library", LIBRARIES)
def test_nan_in_a_single_example_is_caught_on_a_repeat_call_and_named(library, counted):
    params, X, v = network(3)
    if library == "numpy":
        params, X, v = as_numpy(params), np.array(X), np.array(v)
    for _ in range(2):
        bpcheck.forward(params, X[1])
        bpcheck.gauss_newton_matvec(params, X[1], v)
    assert len(counted) == 2
    bad = X[1].at[2].set(np.inf) if library == "jax" else np.where(np.arange(3) == 2, np.inf, X[1])
    with pytest.raises(ValueError, match=r"X: contains NaN or inf"):
        bpcheck.forward(params, bad)
    with pytest.raises(ValueError, match=r"X: contains NaN or inf"):
        bpcheck.gauss_newton_matvec(params, bad, v)


def test_a_repeat_jax_jacobian_skips_the_checks_and_a_numpy_one_has_no_plan(counted):
    """JAX: the small Jacobian is its program's result (batch or one example, flat or per
    layer), replayed; NumPy's Jacobian, written in place by threads, is not."""
    for x_of in (lambda X: X, lambda X: X[1]):
        counted.clear()
        for seed in (0, 1, 2):
            params, X, _ = network(seed)
            got = bpcheck.jacobian(params, x_of(X))
            want = bpcheck.jacobian.__wrapped__(params, x_of(X))
            assert type(got) is type(want) and got.shape == want.shape
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert len(counted) == 1 + 3  # the first call, and the three full paths
    counted.clear()
    for seed in (0, 1):
        params, X, _ = network(seed)
        layers = bpcheck.jacobian(params, X, flat=False)
        full = bpcheck.jacobian.__wrapped__(params, X, flat=False)
        for got, want in zip(jax.tree_util.tree_leaves(layers), jax.tree_util.tree_leaves(full)):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        np.testing.assert_array_equal(np.asarray(layers[1][0]).reshape(6, 2, -1),
                                      np.asarray(bpcheck.jacobian(params, X))[:, :, 20:45])
        bpcheck.jacobian(as_numpy(params), np.asarray(X))
    assert len(counted) == 1 + 2 + 2  # per layer: the first call and two full paths; NumPy: both
    bad = X.at[3, 0].set(np.nan)
    with pytest.raises(ValueError, match="X: contains NaN or inf"):
        bpcheck.jacobian(params, bad)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("norms", [False, True], ids=["grads", "norms"])
def test_repeat_per_example_gradients_skip_the_checks_but_not_the_labels_range(library, norms,
                                                                                counted):
    """Class labels are values the signature does not hold: a repeat call checks their
    range again (NumPy: before its plan runs; JAX: in the plan's program, with NaN and
    inf), and one out of range takes the full path and its error."""
    fn = bpcheck.per_example_grad_norms if norms else bpcheck.per_example_grads
    to = LIBRARIES[library]
    labels = np.array([0, 1, 1, 0, 1, 0])
    for x_of in (lambda X: X, lambda X: X[2]):
        counted.clear()
        for seed in (0, 1, 2):
            params, X, _ = network(seed)
            args = ([(to(B), to(b)) for B, b in params], to(x_of(X)), to(x_of(labels)))
            got, want = fn(*args), fn.__wrapped__(*args)
            assert type(got) is type(want) and got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert len(counted) == 1 + 3
        for bad in (2, -1):
            with pytest.raises(ValueError, match=rf"y: class labels must lie in 0..1 .*got {bad}"):
                fn(args[0], args[1], to(np.where(x_of(labels) == 1, bad, 0)))
    counted.clear()
    for _ in range(2):  # mean squared error: real targets, NaN caught on a repeat call
        fn(args[0], to(X), to(np.ones((6, 2))), "mse")
    assert len(counted) == (1 if library == "jax" else 2)  # NumPy copies y in astype: no plan
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(args[0], to(X), to(np.full((6, 2), np.nan)), "mse")


GAUSS_NEWTON_WITH_LABELS = {  # the three take labels for cross-entropy, though H_n needs none
    "gauss_newton": lambda p, X, v, y: bpcheck.gauss_newton(p, X, y=y),
    "gauss_newton_matvec": lambda p, X, v, y: bpcheck.gauss_newton_matvec(p, X, v, y=y),
    "gauss_newton_operator": lambda p, X, v, y: bpcheck.gauss_newton_operator(p, X, y=y) @ v,
}


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", GAUSS_NEWTON_WITH_LABELS)
def test_repeat_gauss_newton_calls_with_labels_skip_the_checks_but_not_the_labels_range(
        library, name, counted):
    """Labels given to the Gauss-Newton functions are replayed as the per-example
    gradients' are: their range checked again on every repeat call (NumPy: before the
    plan runs; JAX: in its program), one out of range sent to the full path's error."""
    fn = GAUSS_NEWTON_WITH_LABELS[name]
    to = LIBRARIES[library]
    labels = np.array([0, 1, 1, 0, 1, 0])
    for x_of in (lambda X: X, lambda X: X[2]):
        counted.clear()
        for seed in (0, 1, 2):
            params, X, v = network(seed)
            args = ([(to(B), to(b)) for B, b in params], to(x_of(X)), to(v), to(x_of(labels)))
            got = fn(*args)
            _compiled._PLANS.clear()
            want = fn(*args)  # the full path
            assert type(got) is type(want) and got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        counted.clear()
        for _ in range(3):
            fn(*args)
        assert len(counted) == 0, "a repeat call with labels ran the checks"
        for bad in (2, -1):
            with pytest.raises(ValueError, match=rf"y: class labels must lie in 0..1 .*got {bad}"):
                fn(*args[:3], to(np.where(x_of(labels) == 1, bad, 0)))
        assert len(counted) == 2


@pytest.mark.parametrize("library", LIBRARIES)
def test_repeat_ntk_calls_skip_the_checks_and_catch_nan(library, monkeypatch):
    from bpcheck import _ntk

    checks = []
    real = _ntk.check_params
    monkeypatch.setattr(_ntk, "check_params", lambda *a, **k: checks.append(1) or real(*a, **k))
    to = LIBRARIES[library]
    cases = {  # (X1, X2) of a network's X -> options
        "X": (lambda X: (X, None), {}), "x": (lambda X: (X[1], None), {}),
        "x against X": (lambda X: (X[1], X[:4]), {}), "X against x": (lambda X: (X, X[2]), {}),
        "trace": (lambda X: (X, X[:3]), {"trace": True}),
    }
    for name, (inputs, options) in cases.items():
        checks.clear()
        for seed in (0, 1, 2):
            params, X, _ = network(seed)
            args = ([(to(B), to(b)) for B, b in params], *(None if a is None else to(a)
                                                          for a in inputs(X)))
            got = bpcheck.ntk(*args, **options)
            want = bpcheck.ntk.__wrapped__(*args, **options)
            assert type(got) is type(want) and got.shape == want.shape, name
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
        assert len(checks) == 1 + 3, name
    bad = to(np.where(np.arange(3) == 1, np.nan, np.asarray(X[1])))
    with pytest.raises(ValueError, match=r"X1: contains NaN or inf"):
        bpcheck.ntk(args[0], bad)  # a repeat call of the case "x"
    with pytest.raises(ValueError, match=r"X2: contains NaN or inf"):
        bpcheck.ntk(args[0], to(np.asarray(X[:4])), bad)
    nan_params = [(B, b) for B, b in args[0]]
    nan_params[1] = (nan_params[1][0], to(np.full(5, np.inf)))
    with pytest.raises(ValueError, match=re.escape("b^(2) (params[1][1]): contains NaN or inf")):
        bpcheck.ntk(nan_params, to(np.asarray(X)))
    with pytest.raises(ValueError, match=re.escape("b^(2) (params[1][1]): contains NaN or inf")):
        bpcheck.ntk(nan_params, to(np.zeros((0, 3))))  # an empty batch runs no kernel


def test_a_different_signature_takes_the_full_path_and_its_errors(counted):
    params, X, v = network(4)
    bpcheck.gauss_newton_matvec(params, X, v)
    with pytest.raises(ValueError, match=r"X: has 4 features but B\^\(1\) expects d_0 = 3"):
        bpcheck.gauss_newton_matvec(params, jnp.ones((6, 4)), v)
    with pytest.raises(ValueError, match=rf"v: expected a vector in beta order of shape \({P},\)"):
        bpcheck.gauss_newton_matvec(params, X, v[:-1])
    with pytest.raises(ValueError, match="reduction"):
        bpcheck.gauss_newton_matvec(params, X, v, reduction="avg")
    # other options are other plans, with their own results
    np.testing.assert_allclose(
        np.asarray(bpcheck.gauss_newton_matvec(params, X, v, reduction="sum")),
        6 * np.asarray(bpcheck.gauss_newton_matvec(params, X, v)), rtol=1e-12)
    tanh = bpcheck.forward(params, X, activation="tanh")
    relu = bpcheck.forward(params, X)
    np.testing.assert_allclose(np.asarray(bpcheck.forward(params, X, activation="tanh")), tanh)
    np.testing.assert_allclose(np.asarray(bpcheck.forward(params, X, activation="relu")), relu)
    assert not np.allclose(tanh, relu)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_dtype_other_than_the_plans_takes_the_full_path(library, counted):
    """The same shapes in another dtype are another signature: float32 ``v`` with float64
    parameters is cast to float64 by the full path (a plan for float64 ``v`` would hand the
    program float32), and all-float32 arrays give a float32 result."""
    to = LIBRARIES[library]
    params, X, v = network(8)
    params = [(to(B), to(b)) for B, b in params]
    X, v = to(X), to(v)
    for _ in range(2):
        bpcheck.gauss_newton_matvec(params, X, v)
    assert len(counted) == 1
    v32 = v.astype(np.float32)
    got = bpcheck.gauss_newton_matvec(params, X, v32)
    assert len(counted) == 2 and got.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(got), np.asarray(
        bpcheck.gauss_newton_matvec(params, X, v32.astype(np.float64))))
    small = [(B.astype(np.float32), b.astype(np.float32)) for B, b in params]
    for _ in range(2):
        assert bpcheck.forward(small, X.astype(np.float32)).dtype == np.float32
    assert bpcheck.forward(params, X).dtype == np.float64


def test_a_call_whose_arrays_were_converted_is_never_replayed(counted):
    params, X, v = network(5)
    for _ in range(3):  # float32 v with float64 params is cast: every call is checked
        got = bpcheck.gauss_newton_matvec(params, X, v.astype(jnp.float32))
    assert len(counted) == 3
    np.testing.assert_allclose(
        np.asarray(got),
        bpcheck.gauss_newton_matvec(as_numpy(params), np.asarray(X),
                                    np.asarray(v.astype(jnp.float32), dtype=float)), rtol=1e-12)
    assert len(counted) == 3 + 1  # with the NumPy reference
    for _ in range(2):  # one float32 example with float64 params, cast: checked
        assert bpcheck.forward(params, X[0].astype(jnp.float32)).shape == (2,)
    assert len(counted) == 6
    for _ in range(2):  # NumPy integers, cast to float: checked
        bpcheck.forward(as_numpy(params), np.ones((2, 3), dtype=int))
    assert len(counted) == 8
    for _ in range(2):  # lists: checked
        bpcheck.forward([(B.tolist(), b.tolist()) for B, b in as_numpy(params)], np.asarray(X))
    assert len(counted) == 10


def test_a_numpy_sum_that_overflows_takes_the_full_path_and_is_no_error(counted):
    """Small NumPy arrays have their entries tested (nothing to overflow): repeat calls are
    replayed.  Large ones are summed, and a sum that overflows sends the call to the full
    path, which looks at the entries: no error either way."""
    params = [(np.full((2, 3), 3e38, np.float32), np.zeros(2, np.float32))]
    X = np.eye(3, dtype=np.float32)
    for _ in range(3):  # the weights sum to more than float32 holds; each is finite
        np.testing.assert_array_equal(bpcheck.forward(params, X), np.full((3, 2), 3e38, np.float32))
    assert len(counted) == 1
    d = 2 * _compiled.JOIN_IN_PROGRAM
    params = [(np.full((2, d), 3e38, np.float32), np.zeros(2, np.float32))]
    X = np.zeros((1, d), np.float32)
    X[0, 0] = 1
    for _ in range(3):
        np.testing.assert_array_equal(bpcheck.forward(params, X), np.full((1, 2), 3e38, np.float32))
    assert len(counted) == 1 + 3  # each call looks at the entries again


def test_an_array_given_twice_does_not_make_a_plan_that_takes_it_twice():
    # square layers: the same (B, b) object for layers 1 and 2 in the first call; a later
    # call with two different layers must use both
    params, X, v = network(6, [4, 4, 4, 2])
    shared = [params[0], params[0], params[2]]
    first = bpcheck.forward(shared, X)
    np.testing.assert_allclose(np.asarray(first), bpcheck.forward(as_numpy(shared), np.asarray(X)))
    got = bpcheck.forward(params, X)
    np.testing.assert_allclose(np.asarray(got), bpcheck.forward(as_numpy(params), np.asarray(X)),
                               rtol=1e-12)


@pytest.mark.parametrize("norms", [False, True], ids=["grads", "norms"])
def test_labels_closed_over_by_an_outer_jit_are_checked_once_and_the_program_runs(norms):
    """Under ``jax.jit`` with ``params`` and ``X`` traced and the labels closed over, the
    program's flag covers the labels' range alone (no array left to test for NaN)."""
    fn = bpcheck.per_example_grad_norms if norms else bpcheck.per_example_grads
    params, X, _ = network(12)
    y = jnp.asarray([0, 1, 1, 0, 1, 0])
    got = jax.jit(lambda p, X: fn(p, X, y))(params, X)
    np.testing.assert_allclose(np.asarray(got), np.asarray(fn(params, X, y)), rtol=1e-12)
    bad = y + 1
    with pytest.raises(ValueError, match=r"y: class labels must lie in 0\.\.1"):
        jax.jit(lambda p, X: fn(p, X, bad))(params, X)


def test_a_repeat_call_traced_by_an_outer_jit_checks_its_concrete_arrays_on_the_host():
    params, X, v = network(7)
    want = bpcheck.gauss_newton_matvec(params, X, v)
    got = jax.jit(lambda: bpcheck.gauss_newton_matvec(params, X, v))()  # all closed over
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12)
    bad = X.at[0, 0].set(np.nan)
    with pytest.raises(ValueError, match="X: contains NaN or inf"):
        jax.jit(lambda: bpcheck.gauss_newton_matvec(params, bad, v))()


def test_plans_are_made_only_for_calls_that_return_the_programs_result():
    # the large product joins its pieces outside its program: no plan, still right
    params, X, v = network(8, [400, 200, 2], N=3)  # P = 80602
    before = len(_compiled._PLANS)
    for _ in range(2):
        got = bpcheck.gauss_newton_matvec(params, X, v)
    assert len(_compiled._PLANS) == before
    np.testing.assert_allclose(
        np.asarray(got), bpcheck.gauss_newton_matvec(as_numpy(params), np.asarray(X),
                                                     np.asarray(v)), rtol=1e-11, atol=1e-14)


def _outputs(params, X, xp):
    return X @ params[0][0].T + params[0][1]


@_compiled.replayed("params", "X")
def doubled(params, X):
    """A function that changes its program's result: never replayed."""
    from bpcheck._arrays import prepare

    params, _, X2, _, xp, _, unchecked = prepare(params, X, defer_finite=True)
    return 2 * _compiled.call(_outputs, xp, (), params, X2, unchecked=unchecked)


@_compiled.replayed("params", "X")
def two_programs(params, X):
    """A function that runs two programs: never replayed."""
    from bpcheck._arrays import prepare

    params, _, X2, _, xp, _, unchecked = prepare(params, X, defer_finite=True)
    first = _compiled.call(_outputs, xp, (), params, X2, unchecked=unchecked)
    return _compiled.call(_outputs, xp, (), params, first, unchecked=unchecked)


@_compiled.replayed("params", "X")
def row_of_the_inputs(params, X):
    """A function that takes a batch axis away from something other than its program's
    result: never replayed."""
    from bpcheck._arrays import prepare

    params, _, X2, _, xp, _, unchecked = prepare(params, X, defer_finite=True)
    _compiled.call(_outputs, xp, (), params, X2, unchecked=unchecked)
    return _compiled.without_axis(X2)


@_compiled.replayed("params", "X")
def row_of_a_row(params, X):
    """A function that takes two batch axes away: never replayed."""
    from bpcheck._arrays import prepare

    params, _, X2, _, xp, _, unchecked = prepare(params, X, defer_finite=True)
    out = _compiled.call(_outputs, xp, (), params, X2, unchecked=unchecked)
    return _compiled.without_axis(_compiled.without_axis(out[None]))


def test_only_a_function_that_returns_its_one_programs_result_is_replayed():
    params, X, _ = network(9, [3, 3])
    once = X @ params[0][0].T + params[0][1]
    for library in (jnp.asarray, np.asarray):
        for seed in range(3):
            p, Xs = [(library(B), library(b)) for B, b in params], library(X + seed)
            once = Xs @ p[0][0].T + p[0][1]
            np.testing.assert_allclose(np.asarray(doubled(p, Xs)), 2 * once, rtol=1e-14)
            np.testing.assert_allclose(np.asarray(two_programs(p, Xs)),
                                       once @ p[0][0].T + p[0][1], rtol=1e-14)
            np.testing.assert_array_equal(np.asarray(row_of_the_inputs(p, Xs)), np.asarray(Xs[0]))
            np.testing.assert_allclose(np.asarray(row_of_a_row(p, Xs)), np.asarray(once[0]),
                                       rtol=1e-14)
    assert not _compiled._PLANS


RECHECK = {"passes": True, "full": 0}


@_compiled.replayed("params", "X", recheck=lambda params, X: RECHECK["passes"])
def outputs_while_rechecked(params, X):
    """A function replayed while ``RECHECK["passes"]``; ``RECHECK["full"]`` counts its full
    paths."""
    from bpcheck._arrays import prepare

    RECHECK["full"] += 1
    params, _, X2, _, xp, _, unchecked = prepare(params, X, defer_finite=True)
    return _compiled.call(_outputs, xp, (), params, X2, unchecked=unchecked)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_recheck_that_fails_sends_a_repeat_call_to_the_full_path(library, monkeypatch):
    """A JAX plan's program runs while the recheck does; when the recheck fails, its result
    is dropped and the full path runs (NumPy: the plan does not run at all)."""
    monkeypatch.setitem(RECHECK, "full", 0)
    monkeypatch.setitem(RECHECK, "passes", True)
    to = LIBRARIES[library]
    params, X, _ = network(11, [3, 2])
    p, Xs = [(to(B), to(b)) for B, b in params], to(X)
    want = np.asarray(outputs_while_rechecked(p, Xs))
    outputs_while_rechecked(p, Xs)
    assert RECHECK["full"] == 1
    RECHECK["passes"] = False
    for _ in range(2):
        np.testing.assert_array_equal(np.asarray(outputs_while_rechecked(p, Xs)), want)
    assert RECHECK["full"] == 3


def test_numpy_and_jax_calls_of_one_shape_have_plans_of_their_own(counted):
    params, X, v = network(10)
    for _ in range(2):
        for args in ((params, X, v), (as_numpy(params), np.asarray(X), np.asarray(v))):
            got = bpcheck.gauss_newton_matvec(*args)
            assert type(got) is type(args[1])
    assert len(counted) == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_in_a_large_numpy_array_are_caught_on_a_repeat_call(bad, counted):
    params, X, v = network(11, [300, 250, 2], N=3)  # B^(1): 75000 entries, summed by BLAS
    params, X = as_numpy(params), np.asarray(X)
    for _ in range(2):
        bpcheck.forward(params, X)
    assert len(counted) == 1
    B = params[0][0].copy()
    B[-1, -1] = bad
    with pytest.raises(ValueError, match=re.escape("B^(1) (params[0][0]): contains NaN or inf")):
        bpcheck.forward([(B, params[0][1]), params[1]], X)


def _same(got, want):
    """Bit for bit the same result, or the same error."""
    if isinstance(want, Exception):
        return type(got) is type(want) and str(got) == str(want)
    return all(type(g) is type(w) and g.dtype == w.dtype and g.shape == w.shape
               and np.array_equal(np.asarray(g), np.asarray(w), equal_nan=True)
               for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                               strict=True))


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as error:
        return error


def _variants():
    """Arguments that a review of the cache tried against it: layouts, subclasses, byte
    orders, option values of other types (each a first and a repeat call, compared with
    the full path)."""
    params, X, v = network(12)
    P_, X_, v_ = as_numpy(params), np.asarray(X), np.asarray(v)
    yield "Fortran X", bpcheck.forward, (P_, np.asfortranarray(X_)), {}
    readonly = X_.copy()
    readonly.flags.writeable = False
    yield "read-only X", bpcheck.forward, (P_, readonly), {}
    yield "strided X", bpcheck.forward, (P_, np.repeat(X_, 2, axis=0)[::2]), {}
    yield "big-endian X", bpcheck.forward, (P_, X_.astype(">f8")), {}
    yield "big-endian params", bpcheck.forward, (
        [(B.astype(">f8"), b.astype(">f8")) for B, b in P_], X_), {}
    yield "ndarray subclass X", bpcheck.forward, (P_, X_.view(type("Sub", (np.ndarray,), {}))), {}
    yield "masked X", bpcheck.forward, (P_, np.ma.masked_array(X_, mask=X_ > 1)), {}
    yield "pairs as lists", bpcheck.forward, ([[B, b] for B, b in P_], X_), {}
    yield "params a tuple", bpcheck.forward, (tuple(params), X), {}
    yield "reduction True", bpcheck.gauss_newton_matvec, (params, X, v), {"reduction": True}
    yield "activation 1", bpcheck.forward, (params, X), {"activation": 1}
    yield "y 0", bpcheck.gauss_newton_matvec, (P_, X_, v_), {"y": 0}
    yield "empty batch", bpcheck.gauss_newton, (params, X[:0]), {}
    yield "float16", bpcheck.forward, ([(B.astype(np.float16), b.astype(np.float16))
                                        for B, b in P_], X_.astype(np.float16)), {}


@pytest.mark.parametrize("case", list(_variants()), ids=lambda case: case[0])
def test_a_repeat_call_of_any_kind_gives_what_the_full_path_gives(case):
    _, fn, args, kwargs = case
    first = _outcome(fn, *args, **kwargs)
    again = _outcome(fn, *args, **kwargs)
    full = _outcome(fn.__wrapped__, *args, **kwargs)
    assert _same(first, full) and _same(again, full)


def test_calls_from_several_threads_give_what_the_full_path_gives():
    from concurrent.futures import ThreadPoolExecutor

    cases = [network(seed) for seed in range(4)]
    cases += [(as_numpy(p), np.asarray(X), np.asarray(v)) for p, X, v in cases]

    def one(i):
        params, X, v = cases[i % len(cases)]
        if i % 3 == 0:
            X = X * np.nan
        fn = (bpcheck.gauss_newton_matvec, bpcheck.forward)[i % 2]
        args = (params, X, v) if fn is bpcheck.gauss_newton_matvec else (params, X)
        return _same(_outcome(fn, *args), _outcome(fn.__wrapped__, *args))

    with ThreadPoolExecutor(3) as pool:
        assert all(pool.map(one, range(120)))


def test_rerun_takes_only_one_kernel_run_whose_result_was_returned_as_is():
    """``_compiled.rerun`` (the operator's repeat products) refuses notes of anything else:
    no run, a joined result, a batch axis note, two runs, another result, another last
    array."""
    from bpcheck._arrays import Reshaped

    x, y, out = np.ones(3), np.ones(3), np.ones(3)
    run = ((_outputs, ()), (x,), out)
    assert _compiled.rerun([], x, out) is None
    assert _compiled.rerun([None], x, out) is None
    assert _compiled.rerun([Reshaped(x, out, None)], x, out) is None
    assert _compiled.rerun([run, run], x, out) is None
    assert _compiled.rerun([run], x, np.ones(3)) is None
    assert _compiled.rerun([run], y, out) is None
    double = (lambda x, xp: 2 * x, ())
    again = _compiled.rerun([(double, (x,), out)], x, out)
    np.testing.assert_array_equal(again(np.arange(3.0)), [0.0, 2.0, 4.0])
    assert again(np.array([0.0, np.nan, 1.0])) is None  # NaN: the caller's full path


NETWORK_CALLS = {  # name -> how the tests call it with a Network (y, v: the same each time)
    "forward": lambda f, net, X, to: f(net, X),
    "jacobian": lambda f, net, X, to: f(net, X),
    "per_example_grad_norms": lambda f, net, X, to: f(net, X, to(np.arange(6) % 2)),
    "gauss_newton_matvec": lambda f, net, X, to: f(net, X, to(np.linspace(-1, 1, P))),
}


@pytest.mark.parametrize("name, library", [(name, library) for name in NETWORK_CALLS
                                           for library in LIBRARIES
                                           if (name, library) != ("jacobian", "numpy")])
def test_a_network_is_replayed_as_its_params_with_its_activations_in_the_signature(
        name, library, counted):
    """A model read by ``bpcheck.network`` repeats like its ``(B, b)`` list: no checks, the
    full path's bits; a network of the same shapes with other activations is another
    signature; NaN and inf are still caught.  (NumPy's Jacobian has no plan: written in
    place by threads.)"""
    fn, use, to = getattr(bpcheck, name), NETWORK_CALLS[name], LIBRARIES[library]

    def read(seed, activation="tanh"):
        params, X, _ = network(seed)
        layers = [{"W": to(B).T, "b": to(b)} for B, b in params]  # x @ W + b
        return bpcheck.network(layers, layout="in_out", activation=activation), to(X)

    use(fn, *read(0), to)
    assert len(counted) == 1
    for seed in (1, 2):
        net, X = read(seed)
        got = use(fn, net, X, to)
        assert len(counted) == 1, "a repeat call checked its arguments"
        want = use(fn.__wrapped__, net, X, to)
        counted.pop()
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    net, X = read(1, activation="relu")
    got = use(fn, net, X, to)
    assert len(counted) == 2, "another network's activations took a plan"
    np.testing.assert_array_equal(np.asarray(got), np.asarray(use(fn.__wrapped__, net, X, to)))
    bad = X.at[1, 2].set(np.nan) if library == "jax" else np.where(X == X[1, 2], np.nan, X)
    with pytest.raises(ValueError, match=r"X: contains NaN or inf"):
        use(fn, read(2)[0], bad, to)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("where", ["B^(2) (params[1][0])", "X"])
def test_a_repeat_operator_setup_still_catches_nan_and_names_it(where, library, counted):
    """``gauss_newton_operator`` called again with the signature of an earlier call runs
    the setup's program (NumPy: kernel) again without the checks, but NaN and inf in its
    arrays still raise the full path's error."""
    to = LIBRARIES[library]
    params, X, v = network(4)
    params, X = [(to(B), to(b)) for B, b in params], to(X)
    want = bpcheck.gauss_newton_operator(params, X) @ to(v)
    got = bpcheck.gauss_newton_operator(params, X) @ to(v)
    assert len(counted) == 1
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    bad = np.array(params[1][0] if where != "X" else X)
    bad[0, 0] = np.nan
    if where == "X":
        X = to(bad)
    else:
        params[1] = (to(bad), params[1][1])
    with pytest.raises(ValueError, match=re.escape(where) + ": contains NaN or inf"):
        bpcheck.gauss_newton_operator(params, X)
    assert len(counted) == 2  # the full path ran, for its error


def test_an_operator_of_a_network_is_built_by_the_full_path_each_time(counted):
    """A ``Network`` operator keeps the network, whose structure maps vectors in and out
    and is not in the signature: no plan, every call checked, each operator its own."""
    params, X, v = network(5)
    ops = []
    for layout in ("in_out", "out_in"):
        layers = [{"W": B.T if layout == "in_out" else B, "b": b} for B, b in params]
        ops.append(bpcheck.gauss_newton_operator(bpcheck.network(layers, layout=layout), X))
    assert len(counted) == 2
    want = bpcheck.gauss_newton_operator(params, X) @ v
    for op in ops:
        np.testing.assert_array_equal(np.asarray(op @ v), np.asarray(want))


def _trusts(fn):
    """The plans' trusted-parameter records (``_compiled._Trust``) of ``fn``'s signatures."""
    return [plan[3] for key, plan in _compiled._PLANS.items()
            if key[0] is fn.__wrapped__ and plan[3] is not None]


@pytest.mark.parametrize("name", ["forward", "gauss_newton_matvec", "ntk one example",
                                  "per_example_grad_norms"])
def test_repeat_calls_with_the_same_parameters_check_only_the_other_arrays(name):
    """JAX arrays are immutable: parameters that a call found finite are still finite when
    the very same arrays come back, and the plan's program without their checks runs
    (less work for a loop over inputs); NaN and inf in the other arrays are still caught,
    and the same parameters' results are the full path's, bit for bit."""
    fn, use, bad_in = {
        "forward": (bpcheck.forward, lambda f, p, X, v: f(p, X), "X"),
        "gauss_newton_matvec": (bpcheck.gauss_newton_matvec, lambda f, p, X, v: f(p, X, v), "v"),
        "ntk one example": (bpcheck.ntk, lambda f, p, X, v: f(p, X[1]), "X1"),
        "per_example_grad_norms": (bpcheck.per_example_grad_norms,
                                   lambda f, p, X, v: f(p, X, jnp.arange(len(X)) % 2), "X"),
    }[name]
    params, X, v = network(4)
    use(fn, params, X, v)
    [trust] = _trusts(fn)
    ran = []
    light = trust.runner  # (set directly: monkeypatch.setattr forgets the plans, conftest.py)
    trust.runner = lambda *a: ran.append(1) or light(*a)
    for seed in (5, 6):  # new inputs, the same parameters: the light program
        _, X2, v2 = network(seed)
        got = use(fn, params, X2, v2)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(use(fn.__wrapped__, params, X2,
                                                                      v2)))
    assert len(ran) == 2
    # NaN in the input is caught and named on the light program's path
    planted = (X.at[1, 1].set(np.nan), v) if bad_in in ("X", "X1") else (X, v.at[3].set(np.inf))
    with pytest.raises(ValueError, match=bad_in + ": contains NaN or inf"):
        use(fn, params, *planted)
    assert len(ran) == 3
    # the same values in new arrays: the full checks again (then those are trusted)
    copied = [(jnp.array(B, copy=True), jnp.array(b, copy=True)) for B, b in params]
    use(fn, copied, X, v)
    assert len(ran) == 3
    use(fn, copied, X, v)
    assert len(ran) == 4
    # one parameter array replaced, by one with inf: not trusted, caught, named
    copied[2] = (copied[2][0], copied[2][1].at[0].set(np.inf))
    with pytest.raises(ValueError, match=re.escape("b^(3) (params[2][1]): contains NaN or inf")):
        use(fn, copied, X, v)
    assert len(ran) == 4


def test_a_plan_keeps_no_parameters_alive():
    import gc
    import weakref

    params, X, _ = network(7)
    bpcheck.forward(params, X)
    bpcheck.forward(params, X)  # a repeat call, noted as trusted
    assert _trusts(bpcheck.forward)[0].holds([B for pair in params for B in pair] + [X])
    watched = weakref.ref(params[0][0])
    del params
    gc.collect()
    assert watched() is None
    assert not _trusts(bpcheck.forward)[0].holds([None] * 6 + [X])


def test_numpy_parameters_are_checked_on_every_call():
    """NumPy arrays can change in place: a NumPy plan trusts nothing."""
    params, X, v = network(8)
    params, X = as_numpy(params), np.asarray(X)
    bpcheck.forward(params, X)
    bpcheck.forward(params, X)
    assert not _trusts(bpcheck.forward)
    params[1] = (np.array(params[1][0]), params[1][1])  # a writable copy, used twice
    bpcheck.forward(params, X)
    bpcheck.forward(params, X)
    params[1][0][0, 0] = np.nan  # the same array object, changed
    with pytest.raises(ValueError, match=re.escape("B^(2) (params[1][0]): contains NaN or inf")):
        bpcheck.forward(params, X)


BIAS_FREE_CALLS = {  # name -> how the tests call it, on params with some biases None
    "forward": lambda p, X, v, y: bpcheck.forward(p, X, activation="tanh"),
    "jacobian": lambda p, X, v, y: bpcheck.jacobian(p, X),
    "jacobian per layer": lambda p, X, v, y: bpcheck.jacobian(p, X, flat=False),
    "per_example_grads": lambda p, X, v, y: bpcheck.per_example_grads(p, X, y),
    "per_example_grads per layer": lambda p, X, v, y: bpcheck.per_example_grads(p, X, y,
                                                                                flat=False),
    "per_example_grad_norms": lambda p, X, v, y: bpcheck.per_example_grad_norms(p, X, y),
    "ntk": lambda p, X, v, y: bpcheck.ntk(p, X),
    "gauss_newton": lambda p, X, v, y: bpcheck.gauss_newton(p, X, "mse"),
    "gauss_newton_matvec": lambda p, X, v, y: bpcheck.gauss_newton_matvec(p, X, v),
}


def bias_free(seed, library, biases=(False, True, False)):
    params, X, _ = network(seed)
    to = LIBRARIES[library]
    params = [(to(B), to(b) if keep else None) for (B, b), keep in zip(params, biases)]
    v = np.random.default_rng(seed).standard_normal(bpcheck.param_count(WIDTHS, biases))
    return params, to(X), to(v), to(np.arange(6) % 2)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", BIAS_FREE_CALLS)
def test_repeat_calls_of_a_network_without_some_biases_skip_the_checks(name, library, counted,
                                                                        monkeypatch):
    # the None biases are in the signature; the zeros that stand for them are the same
    # arrays on every call, and results are trimmed as the full path trims them
    from bpcheck import _ntk

    real = _ntk.check_params
    monkeypatch.setattr(_ntk, "check_params", lambda *a, **k: counted.append(1) or real(*a, **k))
    use = BIAS_FREE_CALLS[name]
    planned = not (name.startswith("jacobian") and library == "numpy")  # (written in place
    # by threads: no plan, see above)
    use(*bias_free(0, library))
    assert len(counted) == 1
    for seed in (1, 2):
        args = bias_free(seed, library)
        got = use(*args)
        assert len(counted) == (1 if planned else 2), "a repeat call ran the checks"
        plans, _compiled._PLANS = _compiled._PLANS, {}  # (not monkeypatch: conftest's
        try:  # setattr forgets the plans)
            want = use(*args)  # a first call: the full path, checks and all
        finally:
            _compiled._PLANS = plans
        counted.clear()
        counted.append(1)
        assert _same(got, want)
    other = bias_free(3, library, biases=(True, False, False))  # same shapes, other biases:
    first = use(*other)  # a signature of its own, the full path
    assert len(counted) == 2
    assert _same(use(*other), first) and len(counted) == (2 if planned else 3)
    params, X, v, y = bias_free(4, library)
    params[1] = (params[1][0], params[1][1] * np.nan)  # NaN in a bias a repeat call takes
    with pytest.raises(ValueError, match=re.escape("b^(2) (params[1][1]): contains NaN")):
        use(params, X, v, y)
    with pytest.raises(ValueError, match=r"X1?: contains NaN"):
        use(bias_free(4, library)[0], X * np.nan, v, y)
