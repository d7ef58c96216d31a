"""bpcheck.per_example_grads / per_example_grad_norms equal autodiff and J' dloss/dz."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpcheck
from helpers import RTOL, mlp, rel_err
from bpcheck._pergrad import per_example_grad_norms, per_example_grads

def loss_of_beta(loss, widths):
    """One example's loss as a function of beta, in plain JAX (the autodiff reference)."""

    def f(beta, x, y):
        z = mlp(bpcheck.unflatten_params(beta, widths), x)
        if loss == "cross_entropy":
            return -jax.nn.log_softmax(z)[y]
        return 0.5 * jnp.sum((z - y) ** 2)

    return f


def make_case(widths, N, loss, seed=0):
    rng = np.random.default_rng(seed)
    params = [(B, rng.standard_normal(b.shape) * 0.1)
              for B, b in bpcheck.init_params(widths, seed=seed)]
    X = rng.standard_normal((N, widths[0]))
    K = widths[-1]
    y = rng.integers(0, K, N) if loss == "cross_entropy" else rng.standard_normal((N, K))
    return params, X, y


def autodiff_grads(params, X, y, loss, widths):
    beta = jnp.asarray(bpcheck.flatten_params(params))
    g = jax.vmap(jax.grad(loss_of_beta(loss, widths)), (None, 0, 0))
    return np.asarray(g(beta, jnp.asarray(X), jnp.asarray(y)))


def jacobian_reference(params, X, y, loss):
    """J_n' e_n with J from bpcheck.jacobian and e = dloss/dz written out by hand."""
    J = bpcheck.jacobian(params, X)
    z = bpcheck.forward(params, X)
    if loss == "cross_entropy":
        p = np.exp(z - z.max(1, keepdims=True))
        e = p / p.sum(1, keepdims=True) - np.eye(z.shape[1])[y]
    else:
        e = z - y
    return np.einsum("nkp,nk->np", J, e)


widths_strategy = st.lists(st.integers(1, 6), min_size=2, max_size=5)
losses = st.sampled_from(["cross_entropy", "mse"])


@settings(max_examples=30, deadline=None)
@given(widths=widths_strategy, N=st.integers(1, 6), loss=losses, seed=st.integers(0, 99))
def test_per_example_grads_and_norms_equal_the_assembled_jacobian_reference(widths, N, loss, seed):
    params, X, y = make_case(widths, N, loss, seed)
    if loss == "cross_entropy" and widths[-1] == 1:  # one output: refused (every gradient 0)
        with pytest.raises(ValueError, match=r"expects at least two outputs \(K >= 2\)"):
            per_example_grads(params, X, y, loss)
        return
    want = jacobian_reference(params, X, y, loss)
    assert rel_err(per_example_grads(params, X, y, loss), want) < RTOL
    norms = per_example_grad_norms(params, X, y, loss)
    assert rel_err(norms, np.linalg.norm(want, axis=1)) < RTOL


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("widths", [[4, 6, 5, 3], [3, 2], [2, 7, 1, 4, 3]])
def test_per_example_grads_and_norms_equal_vmap_of_jax_grad(widths, loss):
    params, X, y = make_case(widths, 5, loss)
    want = autodiff_grads(params, X, y, loss, widths)
    assert rel_err(per_example_grads(params, X, y, loss), want) < RTOL
    assert rel_err(per_example_grad_norms(params, X, y, loss), np.linalg.norm(want, axis=1)) < RTOL


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(widths=widths_strategy, N=st.integers(1, 6), loss=losses, seed=st.integers(0, 99))
def test_per_example_grads_equal_vmap_of_jax_grad_for_random_shapes(widths, N, loss, seed):
    params, X, y = make_case(widths, N, loss, seed)
    want = autodiff_grads(params, X, y, loss, widths)
    assert rel_err(per_example_grads(params, X, y, loss), want) < RTOL


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_jax_inputs_give_jax_gradients_equal_to_the_reference(loss):
    widths = [4, 6, 5, 3]
    params, X, y = make_case(widths, 7, loss)
    want = jacobian_reference(params, X, y, loss)
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    got = per_example_grads(pj, jnp.asarray(X), jnp.asarray(y), loss=loss)
    assert isinstance(got, jax.Array) and rel_err(got, want) < RTOL


def test_mean_of_per_example_grads_is_the_gradient_of_the_mean_loss():
    widths = [3, 5, 2]
    params, X, y = make_case(widths, 8, "cross_entropy")
    beta = jnp.asarray(bpcheck.flatten_params(params))
    f = loss_of_beta("cross_entropy", widths)
    mean_loss = lambda b: jnp.mean(jax.vmap(f, (None, 0, 0))(b, X, y))
    want = np.asarray(jax.grad(mean_loss)(beta))
    assert rel_err(per_example_grads(params, X, y).mean(0), want) < RTOL


def test_grads_and_norms_under_jit_equal_eager():
    params, X, y = make_case([4, 5, 3], 6, "mse")
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    g = jax.jit(per_example_grads, static_argnames="loss")
    n = jax.jit(per_example_grad_norms, static_argnames="loss")
    assert rel_err(g(pj, X, y, loss="mse"), per_example_grads(params, X, y, "mse")) < RTOL
    assert rel_err(n(pj, X, y, loss="mse"), per_example_grad_norms(params, X, y, "mse")) < RTOL
    params, X, y = make_case([4, 5, 3], 6, "cross_entropy")
    assert rel_err(jax.jit(per_example_grads)(params, X, y), per_example_grads(params, X, y)) < RTOL


def test_single_example_gives_one_gradient():
    params, X, y = make_case([4, 5, 3], 3, "cross_entropy")
    G = per_example_grads(params, X, y)
    assert rel_err(per_example_grads(params, X[1], y[1]), G[1]) < RTOL
    assert rel_err(per_example_grad_norms(params, X[1], y[1]), np.linalg.norm(G[1])) < RTOL


def test_grad_norms_take_relu_derivative_zero_at_the_kink():
    widths = [3, 4, 2]
    params = [(np.ones((4, 3)), np.zeros(4)), (np.ones((2, 4)), np.zeros(2))]
    X, y = np.zeros((2, 3)), np.array([0, 1])  # layer-1 pre-activations exactly 0
    want = autodiff_grads(params, X, y, "cross_entropy", widths)
    assert rel_err(per_example_grads(params, X, y), want) < RTOL


@pytest.mark.parametrize(
    "loss, y, exc, words",
    [
        ("cross_entropy", np.array([0.0, 1.0, 2.0]), TypeError, ["y", "integer class labels", "float64"]),
        ("cross_entropy", np.array([[0], [1], [2]]), ValueError, ["y", "(3,)", "(3, 1)"]),
        ("cross_entropy", np.array([0, 3, 1]), ValueError, ["y", "0..2", "K = 3", "got 3"]),
        ("cross_entropy", np.array([0, -1, 1]), ValueError, ["y", "0..2", "got -1"]),
        ("mse", np.ones((3, 2)), ValueError, ["y", "(3, 3)", "(3, 2)", "mse"]),
        ("mse", np.full((3, 3), np.inf), ValueError, ["y", "NaN or inf"]),
        ("hinge", np.array([0, 1, 2]), ValueError, ["loss", "'hinge'", "cross_entropy", "mse"]),
    ],
)
def test_per_example_grads_reject_bad_targets_and_loss_names(loss, y, exc, words):
    params = bpcheck.init_params([4, 5, 3])
    for fn in (per_example_grads, per_example_grad_norms):
        with pytest.raises(exc) as info:
            fn(params, np.ones((3, 4)), y, loss)
        for w in words:
            assert w in str(info.value)


def test_per_example_grads_reject_inputs_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"X: has 5 features but B\^\(1\) expects d_0 = 4"):
        per_example_grads(bpcheck.init_params([4, 3]), np.ones((2, 5)), np.array([0, 1]))


@pytest.mark.parametrize("flat", [True, False])
def test_numpy_rows_split_over_threads_equal_autodiff(monkeypatch, flat):
    """The NumPy fill splits rows over threads for large outputs; with the threshold
    lowered to every output and an odd number of threads, every row is still written."""
    from bpcheck import _recursion

    monkeypatch.setattr(_recursion, "_THREADED_SIZE", 1)
    monkeypatch.setattr(_recursion, "_THREADS", 3)
    widths, N = [3, 5, 4, 2], 7
    params, X, y = make_case(widths, N, "cross_entropy")
    G = per_example_grads(params, X, y, flat=flat)
    if not flat:
        G = np.concatenate([np.concatenate([gB.reshape(N, -1), gb], axis=1) for gB, gb in G], axis=1)
    assert rel_err(G, autodiff_grads(params, X, y, "cross_entropy", widths)) < RTOL


# --- out=: the caller's buffers, written in place ----------------------------------------


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("flat", [True, False])
def test_out_buffers_receive_the_gradients_of_a_fresh_call(monkeypatch, flat, threaded):
    """Buffers filled with NaN beforehand: every entry is written, with the rows split over
    threads too, and the call returns the buffers themselves."""
    if threaded:
        from bpcheck import _recursion

        monkeypatch.setattr(_recursion, "_THREADED_SIZE", 1)
        monkeypatch.setattr(_recursion, "_THREADS", 3)
    widths, N = [3, 5, 4, 2], 7
    params, X, y = make_case(widths, N, "cross_entropy")
    want = per_example_grads(params, X, y, flat=flat)
    if flat:
        out = np.full_like(want, np.nan)
    else:
        out = [(np.full_like(gB, np.nan), np.full_like(gb, np.nan)) for gB, gb in want]
    assert per_example_grads(params, X, y, flat=flat, out=out) is out
    for got, ref in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(got, ref)
    assert rel_err(per_example_grads(params, X, y), autodiff_grads(params, X, y, "cross_entropy",
                                                                   widths)) < RTOL


def test_out_may_be_a_strided_view_and_one_example_drops_the_batch_axis():
    widths = [3, 5, 4, 2]
    params, X, y = make_case(widths, 4, "mse")
    want = per_example_grads(params, X, y, "mse")
    wide = np.zeros((4, 2 * want.shape[1]))
    per_example_grads(params, X, y, "mse", out=wide[:, ::2])
    np.testing.assert_array_equal(wide[:, ::2], want)
    assert not wide[:, 1::2].any()  # nothing written between the columns
    one = np.full(want.shape[1], np.nan)
    assert per_example_grads(params, X[2], y[2], "mse", out=one) is one
    assert rel_err(one, want[2]) < RTOL
    pairs = [(np.zeros((d, dp)), np.zeros(d)) for dp, d in zip(widths, widths[1:])]
    per_example_grads(params, X[2], y[2], "mse", flat=False, out=pairs)
    assert rel_err(np.concatenate([np.r_[gB.ravel(), gb] for gB, gb in pairs]), want[2]) < RTOL


def test_out_in_a_models_structure_is_written_through_its_orientation():
    """Weights stored (d_in, d_out): the buffers in the model's own structure are filled
    through their transposed views, and equal the structure a fresh call returns."""
    from test_adapters import in_out_layers

    layers = in_out_layers([3, 5, 4, 2])
    net = bpcheck.network(layers, layout="in_out", activation="tanh")
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    want = per_example_grads(net, X, y)
    out = jax.tree_util.tree_map(lambda t: np.full(t.shape, np.nan), want)
    assert per_example_grads(net, X, y, out=out) is out
    assert out[0]["W"].shape == (6, 3, 5)
    for got, ref in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(got, ref)
    with pytest.raises(TypeError, match=r"out: expected the model's structure"):
        per_example_grads(net, X, y, out=out[:2])
    bad = jax.tree_util.tree_map(lambda t: t, out)
    bad[1]["W"] = np.zeros((6, 4, 5))  # (d_out, d_in): the other orientation
    with pytest.raises(ValueError, match=r"out: .*1.* weight: expected shape \(6, 5, 4\), got \(6, 4, 5\)"):
        per_example_grads(net, X, y, out=bad)


def test_bad_out_buffers_are_errors_that_name_them_and_nothing_is_cast():
    widths = [3, 5, 4, 2]
    params, X, y = make_case(widths, 4, "cross_entropy")
    P = bpcheck.param_count(widths)
    with pytest.raises(ValueError, match=rf"out: expected shape \(4, {P}\), got \(4, {P - 1}\)"):
        per_example_grads(params, X, y, out=np.zeros((4, P - 1)))
    with pytest.raises(ValueError, match=r"out: expected dtype float64 .*got float32; it is not cast"):
        per_example_grads(params, X, y, out=np.zeros((4, P), np.float32))
    with pytest.raises(TypeError, match=rf"out: expected a writeable NumPy array of shape \(4, {P}\)"):
        per_example_grads(params, X, y, out=[[0.0] * P] * 4)
    frozen = np.zeros((4, P))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"out: .*got a read-only array"):
        per_example_grads(params, X, y, out=frozen)
    with pytest.raises(TypeError, match=r"out: with flat=False, expected a list of 3 \(gB, gb\) pairs"):
        per_example_grads(params, X, y, flat=False, out=np.zeros((4, P)))
    pairs = [(np.zeros((4, d, dp)), np.zeros((4, d))) for dp, d in zip(widths, widths[1:])]
    pairs[1] = (pairs[1][0], pairs[1][0][:, :, 0])  # the bias a view of the weight
    with pytest.raises(ValueError, match=r"out\[1\]\[0\] and out\[1\]\[1\] share memory"):
        per_example_grads(params, X, y, flat=False, out=pairs)
    jp = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    with pytest.raises(TypeError, match=r"out: .*NumPy inputs only .*got JAX inputs"):
        per_example_grads(jp, X, y, out=np.zeros((4, P)))


def test_out_that_overlaps_an_input_is_refused_before_anything_is_written():
    """X stored in the same buffer as the gradients would be overwritten while it is read."""
    widths = [3, 5, 4, 2]
    params, X, y = make_case(widths, 4, "cross_entropy")
    P = bpcheck.param_count(widths)
    store = np.zeros((4, P + 3))
    store[:, P - 1:P + 2] = X  # X's first column is the gradients' last
    before = store.copy()
    with pytest.raises(ValueError, match=r"out: shares memory with one of the call's input arrays"):
        per_example_grads(params, store[:, P - 1:P + 2], y, out=store[:, :P])
    np.testing.assert_array_equal(store, before)
    W = np.zeros((4, P))  # a weight matrix inside the buffer
    params[0] = (W[:3, :5].T, params[0][1])
    with pytest.raises(ValueError, match=r"out: shares memory"):
        per_example_grads(params, X, y, out=W)
    # next to each other without overlapping is fine
    store[:, P:] = X
    per_example_grads(make_case(widths, 4, "cross_entropy")[0], store[:, P:], y, out=store[:, :P])


def test_out_whose_entries_share_memory_is_refused():
    """A buffer whose rows are one row (stride 0) or overlap by an entry took the gradients
    of every example in the same place and came back as garbage."""
    from numpy.lib.stride_tricks import as_strided

    widths = [3, 5, 4, 2]
    params, X, y = make_case(widths, 4, "cross_entropy")
    P = bpcheck.param_count(widths)
    base = np.zeros(4 * P)
    for strides in ((0, 8), ((P - 1) * 8, 8)):  # one shared row; rows overlapping by one entry
        out = as_strided(base, (4, P), strides)
        with pytest.raises(ValueError, match=r"out: its entries overlap in memory"):
            per_example_grads(params, X, y, out=out)
    with pytest.raises(ValueError, match=r"out: its entries overlap in memory"):
        bpcheck.jacobian(params, X, out=as_strided(np.zeros(2 * P), (4, 2, P), (0, P * 8, 8)))
    rows_apart = as_strided(np.zeros(4 * (P + 1)), (4, P), ((P + 1) * 8, 8))  # gaps: fine
    assert rel_err(per_example_grads(params, X, y, out=rows_apart), per_example_grads(params, X, y)) == 0


# --- large JAX results on the CPU: filled on the host, handed to JAX without a copy ------


def _host_fill_everywhere(monkeypatch):
    """Every output counts as large: concrete JAX arrays on the CPU take the host fill."""
    from bpcheck import _pergrad, _recursion

    monkeypatch.setattr(_pergrad, "_THREADED_SIZE", 1)
    monkeypatch.setattr(_recursion, "_THREADED_SIZE", 1)


@pytest.mark.parametrize("flat", [True, False])
def test_large_jax_gradients_filled_on_the_host_equal_the_compiled_ones(monkeypatch, flat):
    widths, N = [3, 5, 4, 2], 7
    params, X, y = make_case(widths, N, "cross_entropy")
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    compiled = per_example_grads(pj, Xj, yj, flat=flat)
    _host_fill_everywhere(monkeypatch)
    filled = per_example_grads(pj, Xj, yj, flat=flat)
    for got, want in zip(jax.tree_util.tree_leaves(filled), jax.tree_util.tree_leaves(compiled)):
        assert isinstance(got, jax.Array) and got.devices() == want.devices()
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # the same float operations
    G = filled if flat else jnp.concatenate(
        [jnp.concatenate([gB.reshape(N, -1), gb], axis=1) for gB, gb in filled], axis=1)
    assert rel_err(np.asarray(G), autodiff_grads(params, X, y, "cross_entropy", widths)) < RTOL
    assert rel_err(np.asarray(2 * G), 2 * np.asarray(G)) == 0  # an ordinary JAX array
    # under jit the arrays are tracers: the compiled path, the same numbers
    jitted = jax.jit(lambda X: per_example_grads(pj, X, yj, flat=flat))(Xj)
    for got, want in zip(jax.tree_util.tree_leaves(jitted), jax.tree_util.tree_leaves(compiled)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    bad = Xj.at[2, 1].set(jnp.nan)
    with pytest.raises(ValueError, match=r"X: contains NaN or inf"):
        per_example_grads(pj, bad, yj, flat=flat)


def test_on_default_cpu_takes_concrete_single_device_arrays_only():
    from bpcheck._arrays import on_default_cpu

    x = jax.device_put(jnp.ones(3), jax.local_devices(backend="cpu")[0])  # also where a GPU is default
    assert on_default_cpu([x, None, np.ones(2)])
    assert not on_default_cpu([np.ones(2)])  # no JAX array: the NumPy path
    seen = []
    jax.jit(lambda t: seen.append(on_default_cpu([x, t])) or t)(x)
    assert seen == [False]


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_float16_norms_are_summed_in_float32_and_do_not_overflow(xp):
    """Squared norms summed in float16 overflowed for any norm above about 256."""
    rng = np.random.default_rng(0)
    p64 = bpcheck.init_params([8, 16, 4], seed=0)
    p16 = [(xp.asarray(B.astype(np.float16)), xp.asarray(b.astype(np.float16))) for B, b in p64]
    X = (rng.standard_normal((3, 8)) * 4).astype(np.float16)
    Y = np.full((3, 4), -20, np.float16)
    got = bpcheck.per_example_grad_norms(p16, xp.asarray(X), xp.asarray(Y), "mse")
    want = np.linalg.norm(bpcheck.per_example_grads(
        [(np.asarray(B, np.float64), np.asarray(b, np.float64)) for B, b in p16],
        X.astype(np.float64), Y.astype(np.float64), "mse"), axis=1)
    assert got.dtype == np.float16 and want.min() > 300
    assert np.max(np.abs(np.asarray(got, np.float64) - want) / want) < 2e-3
