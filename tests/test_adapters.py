"""bpcheck.network on plain lists of layers: the layout is stated, never guessed, and results
come back in the list's own structure and orientation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpcheck
from helpers import RTOL, rel_err


def in_out_layers(widths, seed=0, kind="dict"):
    """Layers as JAX code keeps them: W of shape (d_in, d_out), used as x @ W + b."""
    rng = np.random.default_rng(seed)
    layers = []
    for d_in, d_out in zip(widths[:-1], widths[1:]):
        W = rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)
        b = 0.1 * rng.standard_normal(d_out)
        layers.append({"W": W, "b": b} if kind == "dict" else (W, b))
    return layers


def in_out_forward(layers, X, act=np.tanh):
    for layer in layers[:-1]:
        X = act(X @ layer["W"] + layer["b"])
    return X @ layers[-1]["W"] + layers[-1]["b"]


def test_plain_layers_without_layout_are_an_error_that_says_how_to_state_it():
    layers = in_out_layers([3, 4, 2])
    with pytest.raises(ValueError, match=r"layout: .*layout='in_out'.*layout='out_in'"):
        bpcheck.network(layers)
    with pytest.raises(TypeError, match=r"bpcheck\.network\(layers, layout='in_out'\)"):
        bpcheck.forward(layers, np.ones((2, 3)))


def test_square_layers_give_different_networks_under_the_two_layouts_so_layout_is_required():
    layers = in_out_layers([4, 4, 4, 4], seed=1)
    X = np.random.default_rng(1).standard_normal((5, 4))
    as_in_out = bpcheck.network(layers, layout="in_out", activation="tanh")
    as_out_in = bpcheck.network(layers, layout="out_in", activation="tanh")
    want = in_out_forward(layers, X)
    assert rel_err(bpcheck.forward(as_in_out, X), want) < RTOL
    assert rel_err(bpcheck.forward(as_out_in, X), want) > 0.1  # the transposed network
    with pytest.raises(ValueError, match="layout"):
        bpcheck.network(layers)


def test_wrong_orientation_of_a_non_square_layer_names_the_layout_not_the_bias():
    layers = in_out_layers([3, 5, 2])
    with pytest.raises(ValueError, match=r"layers\[0\]: with layout='out_in' .*state layout='in_out'"):
        bpcheck.network(layers, layout="out_in")
    pairs = [(layer["W"], layer["b"]) for layer in layers]
    with pytest.raises(ValueError, match=r"layout 'out_in'.*bpcheck\.network\(layers, layout='in_out'\)"):
        bpcheck.forward(pairs, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"layout 'out_in'"):  # one layer: no evidence either way
        bpcheck.forward(pairs[:1], np.ones((2, 3)))


@pytest.mark.parametrize("layer", [0, 1])
def test_a_wrong_bias_beside_a_weight_the_right_way_round_is_not_blamed_on_the_layout(layer):
    """A bias of the wrong length, with every weight (out, in) and agreeing with its
    neighbours, was told "the weight looks stored (in, out)": following that advice would
    have transposed a right weight."""
    params = bpcheck.init_params([4, 5, 3], seed=0)
    B, b = params[layer]
    params[layer] = (B, np.zeros(B.shape[1]))
    with pytest.raises(ValueError, match=rf"b\^\({layer + 1}\) .*expected shape \({B.shape[0]},\)") as err:
        bpcheck.forward(params, np.ones((2, 4)))
    assert "layout" not in str(err.value)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_per_example_grads_come_back_in_the_layers_own_structure_and_orientation(kind):
    widths = [3, 5, 4, 2]
    layers = in_out_layers(widths, kind=kind)
    net = bpcheck.network(layers, layout="in_out", activation="tanh")
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)

    def loss(layers, x, y):
        h = x
        for i, layer in enumerate(layers):
            W, b = (layer["W"], layer["b"]) if kind == "dict" else layer
            h = h @ W + b
            if i < len(layers) - 1:
                h = jnp.tanh(h)
        return -jax.nn.log_softmax(h)[y]

    jl = jax.tree_util.tree_map(jnp.asarray, layers)
    want = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(jl, jnp.asarray(X), jnp.asarray(y))
    got = bpcheck.per_example_grads(net, X, y)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert rel_err(g, w) < RTOL
    flat = bpcheck.per_example_grads(net, X, y, flat=True)
    assert flat.shape == (6, bpcheck.param_count(widths))
    assert rel_err(flat, bpcheck.per_example_grads(net.params, X, y, activation="tanh")) < RTOL


def test_from_beta_and_to_beta_are_inverse_and_follow_beta_order():
    widths = [3, 4, 2]
    layers = in_out_layers(widths)
    net = bpcheck.network(layers, layout="in_out")
    beta = np.arange(bpcheck.param_count(widths), dtype=float)
    tree = net.from_beta(beta)
    B1 = beta[:12].reshape(4, 3)  # vec(B^(1)') = the rows of B^(1), (d_1, d_0)
    assert np.array_equal(tree[0]["W"], B1.T) and np.array_equal(tree[0]["b"], beta[12:16])
    assert np.array_equal(net.to_beta(tree), beta)
    assert np.array_equal(net.to_beta(layers), bpcheck.flatten_params(net.params))


def test_jacobian_rows_in_the_layers_structure_equal_jax_jacrev():
    widths = [3, 4, 2]
    layers = in_out_layers(widths, kind="tuple")
    net = bpcheck.network(layers, layout="in_out")
    X = np.random.default_rng(3).standard_normal((5, 3))

    def f(layers, x):
        for W, b in layers[:-1]:
            x = jax.nn.relu(x @ W + b)
        W, b = layers[-1]
        return x @ W + b

    want = jax.vmap(jax.jacrev(f), in_axes=(None, 0))(jax.tree_util.tree_map(jnp.asarray, layers),
                                                     jnp.asarray(X))
    got = bpcheck.jacobian(net, X, flat=False)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert g.shape == w.shape and rel_err(g, w) < RTOL


def test_an_activation_that_disagrees_with_the_networks_own_is_an_error():
    net = bpcheck.network(in_out_layers([3, 4, 2]), layout="in_out", activation="tanh")
    X = np.ones((2, 3))
    assert rel_err(bpcheck.forward(net, X, activation="tanh"), bpcheck.forward(net, X)) == 0
    with pytest.raises(ValueError, match="activation"):
        bpcheck.forward(net, X, activation="relu")


def test_layers_that_are_not_dense_are_named():
    with pytest.raises(ValueError, match=r"layers\[1\]: expected a dict with one weight key"):
        bpcheck.network([{"W": np.ones((2, 3)), "b": np.ones(3)},
                         {"kernel": np.ones((3, 3, 1)), "scale": np.ones(3)}], layout="in_out")
    with pytest.raises(ValueError, match=r"layers\[1\]: expected a 2-d weight"):
        bpcheck.network([{"W": np.ones((2, 3)), "b": np.ones(3)},
                         {"W": np.ones((3, 3, 1)), "b": np.ones(1)}], layout="in_out")
    with pytest.raises(ValueError, match="layout: expected one of"):
        bpcheck.network(in_out_layers([3, 2]), layout="row")


@pytest.mark.parametrize("library", ["numpy", "jax"])
def test_in_out_results_are_computed_in_the_layers_orientation_on_every_path(monkeypatch, library):
    """Per-layer per-example gradients and Jacobian rows of an ``in_out`` network are written
    in its orientation, not transposed afterwards (a copy of the whole result: 280 of 350 ms
    for the per-example gradients of a 784-1024-1024-10 network in JAX): the numbers of
    bpcheck's own ``(B, b)`` results transposed, from the compiled program, under
    ``jax.jit``, filled by NumPy's threads, and into ``out=``."""
    from bpcheck import _pergrad, _recursion

    widths, xp = [3, 5, 4, 2], np if library == "numpy" else jnp
    layers = [{"W": xp.asarray(layer["W"]), "b": xp.asarray(layer["b"])}
              for layer in in_out_layers(widths, seed=4)]
    net = bpcheck.network(layers, layout="in_out", activation="tanh")
    rng = np.random.default_rng(5)
    X, y = xp.asarray(rng.standard_normal((7, 3))), xp.asarray(rng.integers(0, 2, 7))
    want_g = bpcheck.per_example_grads(net.params, X, y, flat=False, activation="tanh")
    want_J = bpcheck.jacobian(net.params, X, flat=False, activation="tanh")

    def check(grads, rows, path):
        for got, (gB, gb) in zip(grads, want_g):
            if library == "numpy" and path != "jit":
                assert got["W"].flags.c_contiguous, path  # written so, not a transposed view
            np.testing.assert_allclose(np.asarray(got["W"]), np.swapaxes(np.asarray(gB), -1, -2),
                                       rtol=1e-13, atol=1e-15, err_msg=path)
            np.testing.assert_array_equal(np.asarray(got["b"]), np.asarray(gb), err_msg=path)
        for got, (JB, Jb) in zip(rows, want_J):
            assert got["W"].shape == (7, 2) + JB.shape[:1:-1], path
            np.testing.assert_allclose(np.asarray(got["W"]), np.swapaxes(np.asarray(JB), -1, -2),
                                       rtol=1e-13, atol=1e-15, err_msg=path)
            np.testing.assert_allclose(np.asarray(got["b"]), np.asarray(Jb), rtol=1e-13,
                                       atol=1e-15, err_msg=path)

    def grads(X, y):
        return bpcheck.per_example_grads(net, X, y)

    def rows(X):
        return bpcheck.jacobian(net, X, flat=False)

    check(grads(X, y), rows(X), "compiled" if library == "jax" else "numpy")
    if library == "jax":
        check(jax.jit(grads)(X, y), jax.jit(rows)(X), "jit")
        # no transposed copy of a result in the program (the forward pass's B' are 2-D)
        assert "permutation=(0, 2, 1)" not in str(jax.make_jaxpr(grads)(X, y))
        assert "permutation=(0, 1, 3, 2)" not in str(jax.make_jaxpr(rows)(X))
    else:
        out = jax.tree_util.tree_map(np.zeros_like, grads(X, y))
        assert bpcheck.per_example_grads(net, X, y, out=out) is out
        check(out, rows(X), "out=")
    for module in (_recursion, _pergrad):
        monkeypatch.setattr(module, "_THREADED_SIZE", 1)  # JAX: filled on the host
    monkeypatch.setattr(_recursion, "_THREADS", 3)  # rows split over threads
    check(grads(X, y), rows(X), "threads")


@pytest.mark.parametrize("layout, kind", [("in_out", "dict"), ("out_in", "pair")])
def test_a_network_of_numpy_layers_holds_the_weights_it_read(layout, kind):
    """A Network read from a plain list of NumPy layers held views of them: a training step
    written into the caller's arrays afterwards changed its forward pass (a torch model's
    weights were copied already)."""
    layers = in_out_layers([4, 5, 3], kind=kind)
    if layout == "out_in":
        layers = [(W.T.copy(), b) for W, b in layers]
    X = np.random.default_rng(2).standard_normal((3, 4))
    net = bpcheck.network(layers, layout=layout, activation="tanh")
    before = bpcheck.forward(net, X)
    for layer in layers:
        W, b = (layer["W"], layer["b"]) if kind == "dict" else layer
        W *= 0.5
        b += 1.0
    assert np.array_equal(bpcheck.forward(net, X), before)
    assert rel_err(bpcheck.forward(bpcheck.network(layers, layout=layout, activation="tanh"), X),
                   before) > 0.1  # read again: the new weights
