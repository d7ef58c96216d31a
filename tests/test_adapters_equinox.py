"""An Equinox MLP in, its own pytree out: forward, per-example gradients and Jacobians equal
Equinox's own and jax.vmap(jax.grad / jax.jacrev) over the model, leaf by leaf."""

import functools

import numpy as np
import pytest

eqx = pytest.importorskip("equinox", reason="the Equinox adapter needs equinox (pip install equinox)")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import bpcheck  # noqa: E402
from helpers import RTOL, rel_err  # noqa: E402

ACTIVATIONS = {
    "relu": (jax.nn.relu, bpcheck.Activation("relu")),
    "tanh": (jnp.tanh, bpcheck.Activation("tanh")),
    "sigmoid": (jax.nn.sigmoid, bpcheck.Activation("sigmoid")),
    "softplus": (jax.nn.softplus, bpcheck.Activation("softplus")),
    "elu": (functools.partial(jax.nn.elu, alpha=0.5), bpcheck.Activation("elu", alpha=0.5)),
    "leaky_relu": (functools.partial(jax.nn.leaky_relu, negative_slope=0.2),
                   bpcheck.Activation("leaky_relu", slope=0.2)),
    "gelu": (functools.partial(jax.nn.gelu, approximate=False), bpcheck.Activation("gelu")),
    "gelu_tanh": (jax.nn.gelu, bpcheck.Activation("gelu_tanh")),
    "silu": (jax.nn.silu, bpcheck.Activation("silu")),
    "selu": (jax.nn.selu, bpcheck.Activation("selu")),
    "mish": (jax.nn.mish, bpcheck.Activation("mish")),
    "celu": (functools.partial(jax.nn.celu, alpha=0.6), bpcheck.Activation("celu", alpha=0.6)),
    "soft_sign": (jax.nn.soft_sign, bpcheck.Activation("soft_sign")),
    "relu6": (jax.nn.relu6, bpcheck.Activation("relu6")),
    "hard_tanh": (jax.nn.hard_tanh, bpcheck.Activation("hard_tanh")),
    "hard_sigmoid": (jax.nn.hard_sigmoid, bpcheck.Activation("hard_sigmoid")),
    "hard_swish": (jax.nn.hard_swish, bpcheck.Activation("hard_swish")),
}


def mlp(fn, seed=0, depth=2, dtype=jnp.float64):
    model = eqx.nn.MLP(4, 3, 5, depth, activation=fn, key=jax.random.PRNGKey(seed))
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if eqx.is_array(x) else x, model)


def data(N=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, 4)), rng.integers(0, 3, N)


def reference_grads(model, X, y):
    def loss(model, x, t):
        return -jax.nn.log_softmax(model(x))[t]

    return eqx.filter_vmap(eqx.filter_grad(loss), in_axes=(None, 0, 0))(model, jnp.asarray(X),
                                                                       jnp.asarray(y))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_forward_and_per_example_grads_equal_equinox_for_each_activation(name):
    fn, act = ACTIVATIONS[name]
    model = mlp(fn)
    X, y = data()
    net = bpcheck.network(model)
    assert net.activation == (act, act) and net.layout == "out_in"
    assert rel_err(bpcheck.forward(model, X), jax.vmap(model)(jnp.asarray(X))) < RTOL
    got = bpcheck.per_example_grads(model, X, y)
    want = reference_grads(model, X, y)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert g.shape == w.shape and rel_err(g, w) < RTOL


def test_jacobian_rows_in_the_models_pytree_equal_jax_jacrev():
    model = mlp(jnp.tanh)
    X, _ = data()
    params, static = eqx.partition(model, eqx.is_array)
    want = jax.vmap(jax.jacrev(lambda p, x: eqx.combine(p, static)(x)), in_axes=(None, 0))(
        params, jnp.asarray(X))
    got = bpcheck.jacobian(model, X, flat=False)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert g.shape == w.shape and rel_err(g, w) < RTOL


def test_float32_models_give_float32_results_close_to_equinox():
    model = mlp(jax.nn.relu, dtype=jnp.float32)
    X, y = data()
    got = bpcheck.per_example_grads(model, X.astype(np.float32), y)
    want = reference_grads(model, X.astype(np.float32), y)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert g.dtype == jnp.float32 and rel_err(g, w) < 1e-5


def test_a_final_activation_is_a_named_error():
    model = eqx.nn.MLP(4, 3, 5, 2, final_activation=jax.nn.sigmoid, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="model.final_activation: expected the identity"):
        bpcheck.network(model)


def test_an_unknown_activation_must_be_stated_and_the_statement_is_checked():
    model = mlp(lambda x: jnp.tanh(x))
    with pytest.raises(ValueError, match="cannot read the activation .* state it"):
        bpcheck.network(model)
    # one bpcheck has no name for: the names it has, and that another is not supported
    with pytest.raises(ValueError, match=r"log_sigmoid\); if it is one of bpcheck's \(relu, "
                                         r".*identity\), state it.*another activation is not "
                                         r"supported"):
        bpcheck.network(mlp(jax.nn.log_sigmoid))
    net = bpcheck.network(model, activation="tanh")
    X, _ = data()
    assert rel_err(bpcheck.forward(net, X), jax.vmap(model)(jnp.asarray(X))) < RTOL
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        bpcheck.network(model, activation="sigmoid")


def test_equinox_sequential_of_linear_and_lambda_layers():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    model = eqx.nn.Sequential([eqx.nn.Linear(4, 5, key=keys[0]), eqx.nn.Lambda(jax.nn.softplus),
                               eqx.nn.Linear(5, 3, key=keys[1])])
    X, y = data()
    assert bpcheck.network(model).activation == (bpcheck.Activation("softplus"),)
    assert rel_err(bpcheck.forward(model, X), jax.vmap(model)(jnp.asarray(X, jnp.float32))) < 1e-5
    with pytest.raises(ValueError, match=r"model\.layers\[1\] \(LayerNorm\)"):
        bpcheck.network(eqx.nn.Sequential([eqx.nn.Linear(4, 5, key=keys[0]), eqx.nn.LayerNorm(5),
                                           eqx.nn.Linear(5, 3, key=keys[1])]))


def _same_trees(got, want, tol=RTOL):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert g.shape == w.shape and rel_err(g, w) < tol


def test_an_equinox_model_works_inside_jax_jit_closed_over_or_as_an_argument():
    """Inside a jit trace JAX's operations give tracers even on concrete arrays (JAX 0.4.36
    on): reading the model (its final activation, its forward pass) must still work."""
    model = mlp(jax.nn.softplus)
    X, y = data()
    eager = bpcheck.per_example_grads(model, X, y)
    _same_trees(jax.jit(lambda X: bpcheck.per_example_grads(model, X, y))(X), eager)
    _same_trees(eqx.filter_jit(lambda m, X: bpcheck.per_example_grads(m, X, y))(model, X), eager)
    assert rel_err(jax.jit(lambda X: bpcheck.forward(bpcheck.network(model), X))(X),
                   jax.vmap(model)(jnp.asarray(X))) < RTOL
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    seq = eqx.nn.Sequential([eqx.nn.Linear(4, 5, key=keys[0]), eqx.nn.Lambda(jnp.tanh),
                             eqx.nn.Linear(5, 3, key=keys[1])])
    X32 = X.astype(np.float32)
    _same_trees(jax.jit(lambda X: bpcheck.per_example_grads(seq, X, y))(X32),
                bpcheck.per_example_grads(seq, X32, y), tol=1e-6)


def test_inside_jax_jit_a_closed_over_model_is_still_checked_against_its_forward_pass():
    model = mlp(lambda x: jnp.tanh(x))
    X, _ = data()
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        jax.jit(lambda X: bpcheck.forward(bpcheck.network(model, activation="sigmoid"), X))(X)
    final = eqx.nn.MLP(4, 3, 5, 2, final_activation=jax.nn.sigmoid, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="model.final_activation: expected the identity"):
        jax.jit(lambda X: bpcheck.forward(final, X))(X)


def test_a_model_given_to_jax_jit_as_an_argument_is_checked_on_random_weights():
    """Its weights are tracers there, so its own forward pass cannot be compared with
    bpcheck's: the comparison was skipped, and a wrong ``activation=`` gave wrong
    gradients silently.  It now runs on the model with random weights in their place."""
    model = mlp(lambda x: jnp.tanh(x))
    X, y = data()
    traced = eqx.filter_jit(lambda m, X, act: bpcheck.per_example_grads(m, X, y, activation=act))
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        traced(model, X, "sigmoid")
    _same_trees(traced(model, X, "tanh"), bpcheck.per_example_grads(model, X, y, activation="tanh"))
    final = eqx.nn.MLP(4, 3, 5, 2, final_activation=jnp.tanh, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="model.final_activation: expected the identity"):
        eqx.filter_jit(lambda m, X: bpcheck.forward(m, X))(final, X)
    # an ensemble: the weights batch tracers of one model's shapes
    ensemble = eqx.filter_vmap(lambda key: eqx.nn.MLP(4, 3, 5, 2, activation=jax.nn.softplus,
                                                      key=key))(jax.random.split(jax.random.PRNGKey(1), 3))
    got = eqx.filter_vmap(lambda m: bpcheck.forward(m, X.astype(np.float32)))(ensemble)
    for i in range(3):
        one = jax.tree_util.tree_map(lambda t, i=i: t[i] if eqx.is_array(t) else t, ensemble)
        assert rel_err(got[i], jax.vmap(one)(jnp.asarray(X, jnp.float32))) < 1e-5


@pytest.mark.parametrize("bound", [3.5, 100.0, 1e4])
def test_a_final_activation_that_clips_large_logits_is_a_named_error(bound):
    """A clip of the logits is the identity on small values: random inputs never reach it,
    so bpcheck's forward pass and Jacobian silently left it out (Jacobian error 24.9)."""
    clip = lambda z: jnp.clip(z, -bound, bound)  # noqa: E731
    model = eqx.nn.MLP(4, 3, 5, 2, final_activation=clip, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="model.final_activation: expected the identity"):
        bpcheck.jacobian(model, np.ones((2, 4), np.float32))


@pytest.mark.parametrize("use_bias", [True, False])
def test_one_linear_layer_a_linear_model(use_bias):
    # softmax regression as one eqx.nn.Linear: gradients and Jacobian rows in its pytree
    X, y = data()
    layer = eqx.nn.Linear(4, 3, use_bias=use_bias, key=jax.random.PRNGKey(2), dtype=jnp.float64)
    net = bpcheck.network(layer)
    assert net.widths == [4, 3] and net.names == ["model"]
    assert rel_err(bpcheck.forward(layer, X), jax.vmap(layer)(jnp.asarray(X))) < RTOL
    _same_trees(bpcheck.per_example_grads(layer, X, y), reference_grads(layer, X, y))
    params, static = eqx.partition(layer, eqx.is_array)
    want = jax.vmap(jax.jacrev(lambda p, x: eqx.combine(p, static)(x)), in_axes=(None, 0))(
        params, jnp.asarray(X))
    _same_trees(bpcheck.jacobian(layer, X, flat=False), want)


def test_flatten_params_of_a_tree_of_arrays_points_to_to_beta():
    """flatten_params of bpcheck's own result in the model's structure was told to put a
    final softmax into the loss."""
    model = eqx.nn.MLP(4, 3, 6, 1, key=jax.random.PRNGKey(0))
    grads = bpcheck.per_example_grads(model, jnp.ones((2, 4)), jnp.zeros(2, int))
    mean = jax.tree_util.tree_map(lambda a: a.mean(0), grads)
    for tree in (mean, eqx.filter(model, eqx.is_array)):
        with pytest.raises(TypeError, match=r"no model: flatten it with "
                                            r"bpcheck.network\(model\).to_beta\(tree\)"):
            bpcheck.flatten_params(tree)
    assert bpcheck.network(model).to_beta(mean).shape == (51,)
