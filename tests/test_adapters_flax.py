"""Flax NNX and Linen MLPs in, their own structure out: forward, per-example gradients and
Jacobians equal Flax's own and jax.vmap(jax.grad / jax.jacrev), kernels (in, out)."""

import numpy as np
import pytest

pytest.importorskip("flax", reason="the Flax adapters need flax (pip install flax)")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

import bpcheck  # noqa: E402
from helpers import RTOL, rel_err  # noqa: E402


def data(N=6, d0=4, K=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d0)), rng.integers(0, K, N)


def nnx_sequential(act=nnx.tanh):
    rngs = nnx.Rngs(0)
    return nnx.Sequential(nnx.Linear(4, 5, param_dtype=jnp.float64, rngs=rngs), act,
                          nnx.Linear(5, 5, param_dtype=jnp.float64, rngs=rngs), act,
                          nnx.Linear(5, 3, param_dtype=jnp.float64, rngs=rngs))


class NamedOutOfOrder(nnx.Module):
    """Attribute names that Flax lists in another order (l1, l10, l2) than they run."""

    def __init__(self, rngs):
        self.l2 = nnx.Linear(4, 5, param_dtype=jnp.float64, rngs=rngs)
        self.l10 = nnx.Linear(5, 5, param_dtype=jnp.float64, rngs=rngs)
        self.l1 = nnx.Linear(5, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.l1(jax.nn.sigmoid(self.l10(jax.nn.sigmoid(self.l2(x)))))


def nnx_reference_grads(model, X, y):
    graphdef, state = nnx.split(model, nnx.Param)

    def loss(state, x, t):
        return -jax.nn.log_softmax(nnx.merge(graphdef, state)(x[None])[0])[t]

    return jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(state, jnp.asarray(X), jnp.asarray(y))


def assert_same_tree(got, want, tol=RTOL):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert g.shape == w.shape and rel_err(g, w) < tol


def test_nnx_sequential_activations_are_read_and_grads_come_back_as_its_state():
    model = nnx_sequential()
    X, y = data()
    net = bpcheck.network(model)
    assert net.activation == (bpcheck.Activation("tanh"),) * 2 and net.layout == "in_out"
    assert rel_err(bpcheck.forward(model, X), model(jnp.asarray(X))) < RTOL
    assert_same_tree(bpcheck.per_example_grads(model, X, y), nnx_reference_grads(model, X, y))


def test_nnx_module_layers_are_taken_in_the_order_they_run_and_activation_is_required():
    model = NamedOutOfOrder(nnx.Rngs(0))
    X, y = data()
    with pytest.raises(ValueError, match=r"cannot read the activation .*NNX"):
        bpcheck.network(model)
    net = bpcheck.network(model, activation="sigmoid")
    assert net.names == ["model.l2", "model.l10", "model.l1"]
    assert rel_err(bpcheck.forward(net, X), model(jnp.asarray(X))) < RTOL
    assert_same_tree(bpcheck.per_example_grads(net, X, y), nnx_reference_grads(model, X, y))
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        bpcheck.network(model, activation="tanh")


class Residual(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(4, 4, param_dtype=jnp.float64, rngs=rngs)
        self.b = nnx.Linear(4, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.b(jax.nn.relu(self.a(x)) + x)


def test_models_given_to_a_jit_as_arguments_are_checked_on_random_weights():
    """Under ``nnx.jit`` (or ``jax.jit`` of Linen variables) the weights are tracers and
    the forward-pass comparison was skipped: a wrong ``activation=`` (gradients 2.0
    off, relative) and a residual connection (0.7 off) went through silently.  It now runs
    on the same model with random weights in place of the traced ones."""
    X, y = data()
    model = NamedOutOfOrder(nnx.Rngs(0))
    grads = nnx.jit(lambda m, X, act: bpcheck.per_example_grads(m, X, y, activation=act),
                    static_argnums=2)
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        grads(model, X, "tanh")
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        grads(Residual(nnx.Rngs(0)), X, "relu")
    assert_same_tree(grads(model, X, "sigmoid"), nnx_reference_grads(model, X, y))
    module = LinenMLP()
    variables = module.init(jax.random.PRNGKey(0), jnp.asarray(X))
    linen = jax.jit(lambda v, X, act: bpcheck.per_example_grads(bpcheck.network(module, v,
                                                                                activation=act),
                                                                X, y), static_argnums=2)
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        linen(variables, X, "relu")
    assert_same_tree(linen(variables, X, "tanh"),
                     bpcheck.per_example_grads(bpcheck.network(module, variables,
                                                               activation="tanh"), X, y))


class WithDropout(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(4, 5, param_dtype=jnp.float64, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)  # holds Rngs: a key and a count
        self.b = nnx.Linear(5, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.b(self.drop(jnp.tanh(self.a(x))))


def test_a_model_holding_rngs_is_read_under_a_jit_and_still_checked():
    """A Dropout's Rngs (a PRNG key and a count, traced with the weights) are no weights:
    the random stand-in leaves them as they are (a key has no float dtype to draw)."""
    X, y = data()
    model = WithDropout(nnx.Rngs(0))
    model.eval()
    grads = nnx.jit(lambda m, X, act: bpcheck.per_example_grads(m, X, y, activation=act),
                    static_argnums=2)
    assert_same_tree(grads(model, X, "tanh"),
                     bpcheck.per_example_grads(model, X, y, activation="tanh"))
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        grads(model, X, "relu")
    rngs = nnx.Rngs(0)
    seq = nnx.Sequential(nnx.Linear(4, 5, param_dtype=jnp.float64, rngs=rngs), nnx.relu,
                         nnx.Dropout(0.5, rngs=rngs),
                         nnx.Linear(5, 3, param_dtype=jnp.float64, rngs=rngs))
    seq.eval()
    assert_same_tree(nnx.jit(lambda m, X: bpcheck.per_example_grads(m, X, y))(seq, X),
                     bpcheck.per_example_grads(seq, X, y))


def test_nnx_jacobian_rows_in_the_state_structure_equal_jax_jacrev():
    model = nnx_sequential(nnx.relu)
    X, _ = data()
    graphdef, state = nnx.split(model, nnx.Param)
    want = jax.vmap(jax.jacrev(lambda s, x: nnx.merge(graphdef, s)(x[None])[0]),
                    in_axes=(None, 0))(state, jnp.asarray(X))
    assert_same_tree(bpcheck.jacobian(model, X, flat=False), want)


def test_nnx_normalisation_layers_are_named_errors():
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(nnx.Linear(4, 5, rngs=rngs), nnx.LayerNorm(5, rngs=rngs), nnx.relu,
                           nnx.Linear(5, 3, rngs=rngs))
    with pytest.raises(ValueError, match=r"model\.layers\[1\] \(LayerNorm\) is a LayerNorm layer"):
        bpcheck.network(model)


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(5, param_dtype=jnp.float64, name="hidden")(x))
        return nn.Dense(3, param_dtype=jnp.float64, name="a_output")(x)


def test_linen_needs_its_variables_and_the_activation_and_checks_the_statement():
    module = LinenMLP()
    X, y = data()
    variables = module.init(jax.random.PRNGKey(0), jnp.asarray(X))
    with pytest.raises(TypeError, match="variables: a Flax Linen module holds no weights"):
        bpcheck.network(module)
    with pytest.raises(ValueError, match=r"cannot read the activation .*Linen"):
        bpcheck.network(module, variables)
    # the pair given where params go: named, not read as a list of layers ("layout=")
    with pytest.raises(TypeError, match=r"tuple holding a flax.linen model \(LinenMLP\); "
                       r"give bpcheck.network\(module, variables"):
        bpcheck.per_example_grads((module, variables), X, y)
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        bpcheck.network(module, variables, activation="relu")
    net = bpcheck.network(module, variables, activation="tanh")
    assert net.names == ["params['hidden']", "params['a_output']"]
    assert rel_err(bpcheck.forward(net, X), module.apply(variables, jnp.asarray(X))) < RTOL

    def loss(v, x, t):
        return -jax.nn.log_softmax(module.apply(v, x))[t]

    want = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(variables, jnp.asarray(X), jnp.asarray(y))
    assert_same_tree(bpcheck.per_example_grads(net, X, y), want)


def test_linen_layers_built_outside_in_are_read_after_a_tree_map_too():
    """``Dense(3)(tanh(Dense(6)(x)))`` names the output layer ``Dense_0``; a ``jax.tree.map``
    (an SGD step, a restored checkpoint, ``jax.jit``) sorts the variables' keys, so the
    output layer comes first, and trying its input width raised Flax's own
    ``ScopeParamShapeError`` from inside bpcheck."""

    class OutsideIn(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, param_dtype=jnp.float64)(
                nn.tanh(nn.Dense(6, param_dtype=jnp.float64)(x)))

    module = OutsideIn()
    X, y = data()
    fresh = module.init(jax.random.PRNGKey(0), jnp.asarray(X))
    stepped = jax.tree.map(lambda p: p - 0.1, fresh)
    assert list(stepped["params"]) == ["Dense_0", "Dense_1"]

    def loss(v, x, t):
        return -jax.nn.log_softmax(module.apply(v, x))[t]

    for variables in (fresh, stepped):
        net = bpcheck.network(module, variables, activation="tanh")
        assert net.widths == [4, 6, 3] and net.names == ["params['Dense_1']", "params['Dense_0']"]
        want = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(variables, jnp.asarray(X),
                                                               jnp.asarray(y))
        assert_same_tree(bpcheck.per_example_grads(net, X, y), want)


@pytest.mark.parametrize("fn, name", [(nn.gelu, "gelu_tanh"), (nn.silu, "silu"),
                                      (nn.swish, "silu"), (nn.relu6, "relu6"),
                                      (nn.hard_tanh, "hard_tanh"), (nn.hard_swish, "hard_swish"),
                                      (nn.hard_silu, "hard_swish"), (nn.celu, "celu"),
                                      (nn.soft_sign, "soft_sign")])
def test_linen_sequential_activations_are_read(fn, name):
    module = nn.Sequential([nn.Dense(5), fn, nn.Dense(3)])
    X, _ = data()
    variables = module.init(jax.random.PRNGKey(0), jnp.asarray(X, jnp.float32))
    net = bpcheck.network(module, variables)
    assert net.activation == (bpcheck.Activation(name),)
    assert rel_err(bpcheck.forward(net, X.astype(np.float32)),
                   module.apply(variables, jnp.asarray(X, jnp.float32))) < 1e-5


def test_linen_batchnorm_statistics_are_a_named_error():
    class WithNorm(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.BatchNorm(use_running_average=True)(nn.Dense(5)(x))
            return nn.Dense(3)(nn.relu(x))

    module = WithNorm()
    variables = module.init(jax.random.PRNGKey(0), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="'batch_stats' collection"):
        bpcheck.network(module, variables, activation="relu")


@pytest.mark.parametrize("first, last, where", [(jnp.float16, jnp.float16, 0),
                                                 (jnp.float16, None, 0), (None, jnp.float16, 2)])
def test_layers_that_compute_in_another_dtype_than_their_parameters_are_a_named_error(
        first, last, where):
    """``Dense(dtype=float16)`` with float32 parameters (mixed precision): bpcheck computes
    in float32, so its results would not be the model's.  A Sequential's layer is named
    (a float16 hidden layer alone was "does not reproduce the model's forward pass", the
    cause unsaid); a module of its own is judged by its output's dtype, and the mismatch
    of a float16 hidden layer in it says to check the layers' dtype."""
    X, _ = data()
    linen = nn.Sequential([nn.Dense(8, dtype=first), nn.tanh, nn.Dense(3, dtype=last)])
    variables = linen.init(jax.random.PRNGKey(0), X[:1])
    with pytest.raises(ValueError, match=rf"module.layers\[{where}\] \(Dense\): computes in "
                                         rf"float16 \(dtype=float16\) while its parameters are "
                                         rf"float32"):
        bpcheck.network(linen, variables)
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match=rf"model.layers\[{where}\]: computes in float16"):
        bpcheck.network(nnx.Sequential(nnx.Linear(4, 8, dtype=first, rngs=rngs), nnx.tanh,
                                       nnx.Linear(8, 3, dtype=last, rngs=rngs)))

    class Own(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, dtype=last)(nn.tanh(nn.Dense(8, dtype=first)(x)))

    variables = Own().init(jax.random.PRNGKey(0), X[:1])
    message = (r"model: it computes in float16 \(its output's dtype\) while its parameters are "
               r"float32" if last is not None else
               r"does not reproduce the model's forward pass .* each computes in the "
               r"parameters' dtype")
    with pytest.raises(ValueError, match=message):
        bpcheck.network(Own(), variables, activation="tanh")


@pytest.mark.parametrize("use_bias", [True, False])
def test_one_dense_layer_a_linear_model_in_nnx_and_linen(use_bias):
    # softmax regression (the lecture's first model) as one layer: its gradients and
    # Jacobian, in the layer's own structure
    X, y = data()
    layer = nnx.Linear(4, 3, use_bias=use_bias, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert bpcheck.network(layer).widths == [4, 3]
    assert rel_err(bpcheck.forward(layer, X), layer(jnp.asarray(X))) < RTOL
    assert_same_tree(bpcheck.per_example_grads(layer, X, y), nnx_reference_grads(layer, X, y))
    dense = nn.Dense(3, use_bias=use_bias, param_dtype=jnp.float64)
    variables = dense.init(jax.random.PRNGKey(1), jnp.asarray(X))
    net = bpcheck.network(dense, variables)
    assert net.widths == [4, 3] and net.names == ["params"]
    assert rel_err(bpcheck.forward(net, X), dense.apply(variables, jnp.asarray(X))) < RTOL

    def loss(v, x, t):
        return -jax.nn.log_softmax(dense.apply(v, x))[t]

    want = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(variables, jnp.asarray(X), jnp.asarray(y))
    assert_same_tree(bpcheck.per_example_grads(net, X, y), want)

    def of_beta(beta, x):  # the layer as a function of beta = [vec(B'), b], B = kernel'
        params = {"kernel": beta[:12].reshape(3, 4).T}
        return dense.apply({"params": params | ({"bias": beta[12:]} if use_bias else {})}, x)

    kernel = variables["params"]["kernel"]
    beta = jnp.concatenate([kernel.T.ravel()] + ([variables["params"]["bias"]] if use_bias else []))
    J = jax.vmap(jax.jacrev(of_beta), in_axes=(None, 0))(beta, jnp.asarray(X))
    assert rel_err(bpcheck.jacobian(net, X, flat=True), J) < RTOL


class Capped(nnx.Module):
    """A ReLU capped at ``cap`` in the module's own __call__, which bpcheck cannot read."""

    def __init__(self, cap, rngs):
        self.cap = cap
        self.l1 = nnx.Linear(4, 5, param_dtype=jnp.float64, rngs=rngs)
        self.l2 = nnx.Linear(5, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.minimum(jax.nn.relu(self.l1(x)), self.cap))


@pytest.mark.parametrize("cap", [5.0, 30.0])
def test_a_stated_activation_that_differs_only_on_large_inputs_is_an_error(cap):
    # random inputs of the model's scale keep the pre-activations below the cap, so the
    # forward pass is also compared on inputs 10 and 100 times larger
    model = Capped(cap, nnx.Rngs(0))
    with pytest.raises(ValueError, match="does not reproduce the model's forward pass"):
        bpcheck.network(model, activation="relu")
    assert bpcheck.network(Capped(1e9, nnx.Rngs(0)), activation="relu").widths == [4, 5, 3]
