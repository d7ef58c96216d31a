"""Layers without a bias, ``(B, None)`` (``torch.nn.Linear(bias=False)``, ``use_bias=False``):
every function against jax.jacrev / jax.grad / jax.hessian of the bias-free network written
out in plain JAX (float64), NumPy and JAX inputs; ``beta`` holds no entries for the missing
biases, per-layer results have ``None`` in their place, and the model adapters key the
results like the model, without bias entries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpcheck

from helpers import RTOL, rel_err

WIDTHS = [3, 5, 4, 2]
BIASES = (False, True, False)  # the first and the output layer without a bias


def case(seed=0, N=6):
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal((d, dp)) / np.sqrt(dp), 0.3 * rng.standard_normal(d) if bias else None)
              for dp, d, bias in zip(WIDTHS, WIDTHS[1:], BIASES)]
    return params, rng.standard_normal((N, WIDTHS[0])), rng.integers(0, WIDTHS[-1], N)


def out_of(beta, x):
    """The network of a bias-free beta ``[vec(B1), vec(B2), b2, vec(B3)]``, written out."""
    B1, B2 = beta[:15].reshape(5, 3), beta[15:35].reshape(4, 5)
    b2, B3 = beta[35:39], beta[39:47].reshape(2, 4)
    return B3 @ jnp.tanh(B2 @ jnp.tanh(B1 @ x) + b2)


def loss_of(beta, x, t):
    return -jax.nn.log_softmax(out_of(beta, x))[t]


def as_jax(params):
    return [(jnp.asarray(B), None if b is None else jnp.asarray(b)) for B, b in params]


@pytest.fixture(scope="module")
def ref():
    params, X, y = case()
    beta = bpcheck.flatten_params(params)
    assert beta.shape == (47,) == (bpcheck.param_count(WIDTHS, BIASES),)
    jb, jX = jnp.asarray(beta), jnp.asarray(X)
    J = jax.vmap(jax.jacrev(out_of), (None, 0))(jb, jX)
    G = jax.vmap(jax.grad(loss_of), (None, 0, 0))(jb, jX, jnp.asarray(y))
    z = jax.vmap(out_of, (None, 0))(jb, jX)
    H = jax.vmap(jax.hessian(jax.nn.logsumexp))(z)
    GN = np.einsum("nkp,nkj,njq->pq", J, H, J) / len(X)
    return params, X, y, np.asarray(J), np.asarray(G), GN


@pytest.mark.parametrize("xp", ["numpy", "jax"])
def test_every_function_equals_autodiff_of_the_bias_free_network(ref, xp):
    params, X, y, J, G, GN = ref
    if xp == "jax":
        params, X, y = as_jax(params), jnp.asarray(X), jnp.asarray(y)
    kind = np.ndarray if xp == "numpy" else jax.Array
    assert rel_err(bpcheck.forward(params, X, activation="tanh"),
                   jax.vmap(out_of, (None, 0))(jnp.asarray(bpcheck.flatten_params(params)),
                                               jnp.asarray(X))) < RTOL
    got = bpcheck.jacobian(params, X, activation="tanh")
    assert isinstance(got, kind) and got.shape == J.shape and rel_err(got, J) < RTOL
    layers = bpcheck.jacobian(params, X, activation="tanh", flat=False)
    assert [gb is None for _, gb in layers] == [not b for b in BIASES]
    assert rel_err(layers[1][1], J[:, :, 35:39]) < RTOL
    assert rel_err(layers[2][0], J[:, :, 39:].reshape(6, 2, 2, 4)) < RTOL
    single = bpcheck.jacobian(params, X[0], activation="tanh", flat=False)
    assert single[0][1] is None and rel_err(single[1][1], J[0, :, 35:39]) < RTOL
    assert rel_err(bpcheck.jacobian(params, X[0], activation="tanh"), J[0]) < RTOL
    theta = np.einsum("nkp,mjp->nmkj", J, J)
    assert rel_err(bpcheck.ntk(params, X, activation="tanh"), theta) < RTOL
    assert rel_err(bpcheck.ntk(params, X, activation="tanh", block_size=2), theta) < RTOL
    assert rel_err(bpcheck.ntk(params, X, trace=True, activation="tanh"),
                   np.einsum("nmkk->nm", theta)) < RTOL
    assert rel_err(bpcheck.ntk(params, X[:2], X[2:], activation="tanh"), theta[:2, 2:]) < RTOL
    g = bpcheck.per_example_grads(params, X, y, activation="tanh")
    assert isinstance(g, kind) and g.shape == G.shape and rel_err(g, G) < RTOL
    assert rel_err(bpcheck.per_example_grads(params, X, y, reduction="mean", activation="tanh"),
                   G / len(G)) < RTOL
    per_layer = bpcheck.per_example_grads(params, X, y, activation="tanh", flat=False)
    assert per_layer[0][1] is None and per_layer[2][1] is None
    assert rel_err(per_layer[1][1], G[:, 35:39]) < RTOL
    assert rel_err(per_layer[0][0], G[:, :15].reshape(6, 5, 3)) < RTOL
    assert rel_err(bpcheck.per_example_grad_norms(params, X, y, activation="tanh"),
                   np.linalg.norm(G, axis=1)) < RTOL
    assert rel_err(bpcheck.gauss_newton(params, X, activation="tanh"), GN) < RTOL
    v = np.random.default_rng(1).standard_normal(47)
    vx = v if xp == "numpy" else jnp.asarray(v)
    assert rel_err(bpcheck.gauss_newton_matvec(params, X, vx, activation="tanh"), GN @ v) < RTOL
    op = bpcheck.gauss_newton_operator(params, X, activation="tanh")
    assert op.shape == (47, 47)
    assert rel_err(op @ vx, GN @ v) < RTOL
    V = np.random.default_rng(2).standard_normal((47, 3))
    Vx = V if xp == "numpy" else jnp.asarray(V)
    assert rel_err(op @ Vx, GN @ V) < RTOL and rel_err(Vx.T @ op, (GN @ V).T) < RTOL
    assert rel_err(op.to_dense(), GN) < RTOL
    with pytest.raises(ValueError, match=r"v: expected a vector in beta order of shape \(47,\)"):
        op @ np.ones(54)  # the length with every bias
    with pytest.raises(ValueError, match=r"v: expected a vector in beta order of shape \(47,\) "
                                         r".*no b\^\(l\) for a layer without a bias"):
        bpcheck.gauss_newton_matvec(params, X, np.ones(54), activation="tanh")


def test_numpy_buffers_and_the_beta_helpers(ref):
    params, X, y, J, G, _ = ref
    out = np.empty((6, 47))
    assert bpcheck.per_example_grads(params, X, y, activation="tanh", out=out) is out
    assert rel_err(out, G) < RTOL
    outJ = np.empty((6, 2, 47))
    assert bpcheck.jacobian(params, X, activation="tanh", out=outJ) is outJ and rel_err(outJ, J) < RTOL
    with pytest.raises(ValueError, match=r"out: expected shape \(6, 47\)"):
        bpcheck.per_example_grads(params, X, y, activation="tanh", out=np.empty((6, 54)))
    pairs = [(np.empty((6, 5, 3)), None), (np.empty((6, 4, 5)), np.empty((6, 4))),
             (np.empty((6, 2, 4)), None)]
    assert bpcheck.per_example_grads(params, X, y, activation="tanh", flat=False, out=pairs) is pairs
    assert rel_err(np.concatenate([pairs[0][0].reshape(6, -1), pairs[1][0].reshape(6, -1),
                                   pairs[1][1], pairs[2][0].reshape(6, -1)], axis=1), G) < RTOL
    with pytest.raises(TypeError, match=r"out\[2\]\[1\]: layer 3 has no bias; expected None"):
        bpcheck.per_example_grads(params, X, y, activation="tanh", flat=False,
                                  out=pairs[:2] + [(pairs[2][0], np.empty((6, 2)))])
    beta = bpcheck.flatten_params(params)
    back = bpcheck.unflatten_params(beta, WIDTHS, BIASES)
    assert [b is None for _, b in back] == [not b for b in BIASES]
    for (B, b), (B2, b2) in zip(params, back):
        assert np.array_equal(B, B2) and (b is None or np.array_equal(b, b2))
    assert bpcheck.param_count(WIDTHS) == 54
    with pytest.raises(ValueError, match=r"beta: expected shape \(47,\) .*no b\^\(l\) where "
                                         r"biases is False"):
        bpcheck.unflatten_params(np.ones(54), WIDTHS, BIASES)
    with pytest.raises(ValueError, match=r"biases: expected one True or False per layer "
                                         r"\(3 layers\), got 2"):
        bpcheck.param_count(WIDTHS, (True, False))
    with pytest.raises(TypeError, match=r"biases: expected True or False for each layer, got "
                                        r"\[0, 1, 0\]"):
        bpcheck.param_count(WIDTHS, (0, 1, 0))
    assert bpcheck.param_count(WIDTHS, np.array(BIASES)) == 47
    # with every bias present the results are those of a zero bias, bias entries included
    zeros = [(B, np.zeros(B.shape[0]) if b is None else b) for B, b in params]
    full = bpcheck.per_example_grads(zeros, X, y, activation="tanh")
    keep = np.r_[0:15, 20:52]
    assert np.array_equal(full[:, keep], bpcheck.per_example_grads(params, X, y, activation="tanh"))
    assert not np.allclose(bpcheck.ntk(zeros, X, activation="tanh"),
                           bpcheck.ntk(params, X, activation="tanh"))  # the bias terms differ
    from bpcheck.numcheck import check_network

    with pytest.raises(ValueError, match=r"params: check_network checks networks with a bias in "
                                         r"every layer"):
        check_network(params, X, activation="tanh")


def test_a_torch_model_with_linear_bias_false_is_read_and_keyed_like_its_state_dict():
    torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0)")
    from torch import nn
    from torch.func import functional_call, grad, jacrev, vmap

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(),
                          nn.Linear(5, 3, bias=False)).double()
    X = np.random.default_rng(1).standard_normal((5, 4))
    y = np.array([0, 1, 2, 1, 0])
    net = bpcheck.network(model)
    assert net.biases == (False, True, False)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, t):
        return nn.functional.cross_entropy(functional_call(model, p, (x[None],)), t[None],
                                           reduction="sum")

    want = vmap(grad(loss), in_dims=(None, 0, 0))(params, torch.from_numpy(X), torch.from_numpy(y))
    got = bpcheck.per_example_grads(model, X, y)
    assert list(got) == list(model.state_dict()) == ["0.weight", "2.weight", "2.bias", "4.weight"]
    for k in want:
        assert rel_err(got[k], want[k].numpy()) < RTOL, k
    jw = vmap(jacrev(lambda p, x: functional_call(model, p, (x[None],))[0]), in_dims=(None, 0))(
        params, torch.from_numpy(X))
    jg = bpcheck.jacobian(model, X, flat=False)
    for k in jw:
        assert rel_err(jg[k], jw[k].numpy()) < RTOL, k
    v = {k: np.random.default_rng(3).standard_normal(tuple(p.shape)) for k, p in params.items()}
    Gv = bpcheck.gauss_newton_matvec(model, X, v)
    assert list(Gv) == list(v)
    op = bpcheck.gauss_newton_operator(model, X)
    for k in v:
        assert rel_err((op @ v)[k], Gv[k]) < RTOL
    out = {k: np.empty((5,) + tuple(t.shape)) for k, t in model.state_dict().items()}
    assert bpcheck.per_example_grads(model, X, y, out=out) is out
    for k in want:
        assert rel_err(out[k], want[k].numpy()) < RTOL, k
    flat = bpcheck.per_example_grads(model, X, y, flat=True)
    assert flat.shape == (5, 24 + 30 + 5 + 15)
    assert rel_err(bpcheck.per_example_grad_norms(model, X, y), np.linalg.norm(flat, axis=1)) < RTOL


def test_equinox_and_flax_models_without_biases():
    eqx = pytest.importorskip("equinox", reason="needs equinox")
    X = np.random.default_rng(1).standard_normal((6, 4))
    y = np.array([0, 1, 2, 1, 0, 2])
    model = eqx.nn.MLP(4, 3, 5, 2, activation=jnp.tanh, use_bias=False, use_final_bias=True,
                       key=jax.random.PRNGKey(0))
    model = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, model)
    assert bpcheck.network(model).biases == (False, False, True)
    params, static = eqx.partition(model, eqx.is_array)

    def loss(p, x, t):
        return -jax.nn.log_softmax(eqx.combine(p, static)(x))[t]

    want = jax.vmap(jax.grad(loss), (None, 0, 0))(params, jnp.asarray(X), jnp.asarray(y))
    got = bpcheck.per_example_grads(model, X, y)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert rel_err(g, w) < RTOL
    nn = pytest.importorskip("flax.linen", reason="needs flax")

    class Linen(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.tanh(nn.Dense(5, use_bias=False)(x)))

    module = Linen()
    variables = module.init(jax.random.PRNGKey(0), jnp.ones((1, 4)))
    net = bpcheck.network(module, variables, activation="tanh")
    assert net.biases == (False, True)

    def loss2(v, x, t):
        return -jax.nn.log_softmax(module.apply(v, x))[t]

    want = jax.vmap(jax.grad(loss2), (None, 0, 0))(variables, jnp.asarray(X, jnp.float32),
                                                    jnp.asarray(y))
    got = bpcheck.per_example_grads(net, X.astype(np.float32), y)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert rel_err(g, w) < 1e-5
    from flax import nnx

    class Nnx(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 5, use_bias=False, rngs=rngs)
            self.l2 = nnx.Linear(5, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(nnx.relu(self.l1(x)))

    m = Nnx(nnx.Rngs(0))
    graphdef, state = nnx.split(m)

    def loss3(s, x, t):
        return -jax.nn.log_softmax(nnx.merge(graphdef, s)(x))[t]

    want = jax.vmap(jax.grad(loss3), (None, 0, 0))(state, jnp.asarray(X, jnp.float32),
                                                    jnp.asarray(y))
    got = bpcheck.per_example_grads(bpcheck.network(m, activation="relu"), X.astype(np.float32), y)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert rel_err(g, w) < 1e-5


def test_a_plain_list_of_layers_without_a_bias_key():
    """A layer dict with a weight key only (or a pair (W, None)) is a layer without a bias;
    results and vectors in the list's structure have no bias key there."""
    rng = np.random.default_rng(0)
    W1, b1, W2 = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal((5, 2))
    X, y = rng.standard_normal((4, 3)), np.array([0, 1, 1, 0])
    net = bpcheck.network([{"W": W1, "b": b1}, {"W": W2}], layout="in_out")
    assert net.biases == (True, False)
    same = bpcheck.network([(W1, b1), (W2, None)], layout="in_out")
    g, want = bpcheck.per_example_grads(net, X, y), bpcheck.per_example_grads(same, X, y)
    assert [sorted(d) for d in g] == [["W", "b"], ["W"]]
    assert rel_err(g[1]["W"], want[1][0]) == 0 and rel_err(g[0]["b"], want[0][1]) == 0
    params = [(W1.T, b1), (W2.T, None)]
    assert rel_err(g[1]["W"], bpcheck.per_example_grads(params, X, y, flat=False)[1][0].swapaxes(1, 2)) < RTOL
    v = [{"W": np.ones((3, 5)), "b": np.ones(5)}, {"W": np.ones((5, 2))}]
    assert [sorted(d) for d in bpcheck.gauss_newton_matvec(net, X, v)] == [["W", "b"], ["W"]]
    with pytest.raises(ValueError, match=r"layer 1: expected the keys \['W'\]"):
        bpcheck.gauss_newton_matvec(net, X, [v[0], {"W": np.ones((5, 2)), "b": np.ones(2)}])


def test_a_pair_given_as_another_sequence_is_read_as_the_same_pair(ref):
    # a (B, None) pair as a UserList was taken as a pair with a bias of zeros: results kept
    # the missing bias's entries, and the trainers trained it
    from collections import UserList

    from bpcheck.train import train_softmax

    params, X, y, J, *_ = ref
    as_lists = [UserList(pair) for pair in params]
    assert bpcheck._arrays.bias_flags(as_lists) == BIASES
    assert rel_err(bpcheck.jacobian(as_lists, X, activation="tanh"), J) < RTOL
    layers = bpcheck.jacobian(as_lists, X, activation="tanh", flat=False)
    assert [gb is None for _, gb in layers] == [not b for b in BIASES]
    assert bpcheck.flatten_params(as_lists).shape == (J.shape[-1],)
    with pytest.raises(ValueError, match=r"b\^\(1\) is None"):
        train_softmax(X, y % 2, [UserList([params[0][0][:2], None])], iters=2)
