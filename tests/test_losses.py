"""Losses, reductions, activations and per-layer results of per_example_grads,
per_example_grad_norms, gauss_newton and gauss_newton_matvec, against jax.grad and
jax.hessian of the loss written directly in plain JAX (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpcheck
from bpcheck import Activation, Loss

from helpers import RTOL, rel_err

ACT = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": lambda z: jax.nn.gelu(z, approximate=False),
       "leaky_relu": lambda z: jax.nn.leaky_relu(z, 0.1), "softplus": jax.nn.softplus}


def mlp(params, x, names):
    for (B, b), name in zip(params[:-1], names):
        x = ACT[name](x @ B.T + b)
    B, b = params[-1]
    return x @ B.T + b


def huber(z, y):  # a loss bpcheck does not know: given to it by its derivatives below
    r = z - y
    return jnp.sum(jnp.where(jnp.abs(r) < 1, 0.5 * r * r, jnp.abs(r) - 0.5))


def huber_grad(z, y):
    r = z - y
    return r.clip(-1, 1)


def huber_hessian(z, y):
    inside = (abs(z - y) < 1).astype(z.dtype)
    return inside[:, :, None] * (np.eye(z.shape[1]) if isinstance(z, np.ndarray) else jnp.eye(z.shape[1]))


HUBER = Loss(grad=huber_grad, hessian=huber_hessian)

LOSSES = {  # name -> (loss argument, one example's loss of (z, y) in plain JAX, K)
    "cross_entropy": ("cross_entropy", lambda z, y: -jax.nn.log_softmax(z)[y], 3),
    "cross_entropy_soft": ("cross_entropy", lambda z, y: -jnp.sum(y * jax.nn.log_softmax(z)), 3),
    "mse": ("mse", lambda z, y: 0.5 * jnp.sum((z - y) ** 2), 3),
    "binary_cross_entropy": ("binary_cross_entropy",
                             lambda z, y: jnp.sum(jax.nn.softplus(z) - y * z), 1),
    "user_huber": (HUBER, huber, 3),
}


def make_case(name, widths, N=6, seed=0):
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal((d, dp)) / np.sqrt(dp), 0.2 * rng.standard_normal(d))
              for dp, d in zip(widths, widths[1:])]
    X = rng.standard_normal((N, widths[0]))
    K = widths[-1]
    if name == "cross_entropy":
        y = rng.integers(0, K, N)
    elif name == "cross_entropy_soft":  # class probabilities, one row per example
        y = rng.random((N, K)) + 0.05
        y /= y.sum(axis=1, keepdims=True)
    elif name == "binary_cross_entropy":
        y = rng.random(N)
    else:
        y = 2 * rng.standard_normal((N, K))
    return params, X, y


def example_loss(name, widths, names):
    _, f, _ = LOSSES[name]

    def loss_of_beta(beta, x, y):
        return f(mlp(bpcheck.unflatten_params(beta, widths), x, names), y)

    return loss_of_beta


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("names", [["relu", "relu"], ["tanh", "gelu"], ["leaky_relu", "softplus"]],
                         ids=["relu", "tanh-gelu", "leaky-softplus"])
def test_per_example_grads_and_norms_equal_jax_grad_of_the_loss(name, names):
    loss, _, K = LOSSES[name]
    widths = [4, 5, 6, K]
    params, X, y = make_case(name, widths)
    activation = [Activation("leaky_relu", slope=0.1) if n == "leaky_relu" else n for n in names]
    beta = jnp.asarray(bpcheck.flatten_params(params))
    want = jax.jit(jax.vmap(jax.grad(example_loss(name, widths, names)), (None, 0, 0)))(beta, X, y)
    got = bpcheck.per_example_grads(params, X, y, loss, activation=activation)
    assert rel_err(got, want) < RTOL
    mean = bpcheck.per_example_grads(params, X, y, loss, reduction="mean", activation=activation)
    assert rel_err(mean, np.asarray(want) / len(X)) < RTOL
    norms = bpcheck.per_example_grad_norms(params, X, y, loss, activation=activation)
    assert rel_err(norms, np.linalg.norm(want, axis=1)) < RTOL
    jp = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    assert rel_err(bpcheck.per_example_grads(jp, jnp.asarray(X), jnp.asarray(y), loss,
                                             activation=activation), want) < RTOL


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("names", [["relu"], ["tanh"], ["gelu"]])
def test_gauss_newton_and_matvec_equal_jacrev_and_hessian_of_the_loss(name, names):
    loss, f, K = LOSSES[name]
    widths = [3, 5, K]
    params, X, y = make_case(name, widths, N=5, seed=1)
    beta = jnp.asarray(bpcheck.flatten_params(params))
    out = lambda b, x: mlp(bpcheck.unflatten_params(b, widths), x, names)
    J = jax.jit(jax.vmap(jax.jacrev(out), (None, 0)))(beta, X)  # (N, K, P)
    H = jax.jit(jax.vmap(jax.hessian(f)))(out(beta, X), jnp.asarray(y))  # (N, K, K)
    want = np.einsum("nkp,nkj,njq->pq", J, H, J)
    G = bpcheck.gauss_newton(params, X, loss, y=y, reduction="sum", activation=names)
    assert rel_err(G, want) < RTOL
    assert rel_err(bpcheck.gauss_newton(params, X, loss, y=y, activation=names), want / len(X)) < RTOL
    v = np.random.default_rng(2).standard_normal(beta.size)
    Gv = bpcheck.gauss_newton_matvec(params, X, v, loss, y=y, activation=names)
    assert rel_err(Gv, want @ v / len(X)) < RTOL
    jp = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    Gv_jax = bpcheck.gauss_newton_matvec(jp, jnp.asarray(X), jnp.asarray(v), loss, y=y,
                                         reduction="sum", activation=names)
    assert rel_err(Gv_jax, want @ v) < RTOL


def test_the_defaults_keep_their_meaning_sum_for_gradients_mean_for_gauss_newton():
    params, X, y = make_case("cross_entropy", [4, 5, 3])
    assert np.array_equal(bpcheck.per_example_grads(params, X, y),
                          bpcheck.per_example_grads(params, X, y, "cross_entropy", reduction="sum"))
    assert np.array_equal(bpcheck.gauss_newton(params, X),
                          bpcheck.gauss_newton(params, X, reduction="mean"))
    assert rel_err(bpcheck.gauss_newton(params, X, reduction="sum") / len(X),
                   bpcheck.gauss_newton(params, X)) < 1e-14


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_per_layer_gradients_have_the_layer_shapes_and_equal_the_flat_rows(xp):
    widths = [4, 5, 6, 3]
    params, X, y = make_case("cross_entropy", widths, N=7)
    if xp is jnp:
        params = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
        X, y = jnp.asarray(X), jnp.asarray(y)
    flat = bpcheck.per_example_grads(params, X, y, activation="tanh")
    layers = bpcheck.per_example_grads(params, X, y, activation="tanh", flat=False)
    assert [(gB.shape, gb.shape) for gB, gb in layers] == [
        ((7, d, dp), (7, d)) for dp, d in zip(widths, widths[1:])]
    rebuilt = np.concatenate([np.concatenate([np.asarray(gB).reshape(7, -1), np.asarray(gb)], 1)
                              for gB, gb in layers], axis=1)
    assert rel_err(rebuilt, flat) < 1e-15
    one = bpcheck.per_example_grads(params, X[2], y[2], flat=False, activation="tanh")
    assert [(gB.shape, gb.shape) for gB, gb in one] == [((d, dp), (d,)) for dp, d in zip(widths, widths[1:])]
    assert rel_err(one[0][0], layers[0][0][2]) < 1e-15


def test_the_flat_numpy_array_is_filled_in_place_in_beta_order():
    params, X, y = make_case("mse", [3, 4, 2])
    G = bpcheck.per_example_grads(params, X, y, "mse")
    assert G.flags.c_contiguous and G.shape == (6, 4 * 4 + 2 * 5)
    layers = bpcheck.per_example_grads(params, X, y, "mse", flat=False)
    assert np.array_equal(G[:, :12].reshape(6, 4, 3), layers[0][0])
    assert np.array_equal(G[:, 12:16], layers[0][1])


def test_a_user_loss_without_hessian_gives_gradients_but_not_gauss_newton():
    params, X, y = make_case("mse", [3, 4, 2])
    grad_only = Loss(grad=lambda z, y: z - y)
    assert rel_err(bpcheck.per_example_grads(params, X, y, grad_only),
                   bpcheck.per_example_grads(params, X, y, "mse")) < 1e-15
    with pytest.raises(ValueError, match=r"loss: Loss\(grad=<lambda>, hessian=None\) has no hessian"):
        bpcheck.gauss_newton(params, X, grad_only)


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda p, X: bpcheck.per_example_grads(p, X, np.zeros(4), reduction="avg"),
         ValueError, r"reduction: expected 'sum' or 'mean', got 'avg'"),
        (lambda p, X: bpcheck.gauss_newton(p, X, reduction=None),
         ValueError, r"reduction: expected 'sum' or 'mean', got None"),
        (lambda p, X: bpcheck.per_example_grads(p, X, np.zeros(4), "binary_cross_entropy"),
         ValueError, r"binary_cross_entropy.*one output logit \(K = 1\).*K = 2"),
        # without targets too: Gauss-Newton needs none, and its (N, K, 1) Hessian broadcast
        (lambda p, X: bpcheck.gauss_newton(p, X, "binary_cross_entropy"),
         ValueError, r"binary_cross_entropy.*one output logit \(K = 1\).*K = 2"),
        (lambda p, X: bpcheck.gauss_newton_matvec(p, X, np.ones(bpcheck.param_count([3, 5, 2])),
                                                  "binary_cross_entropy"),
         ValueError, r"binary_cross_entropy.*one output logit \(K = 1\).*K = 2"),
        (lambda p, X: bpcheck.gauss_newton_operator(p, X, "binary_cross_entropy"),
         ValueError, r"binary_cross_entropy.*one output logit \(K = 1\).*K = 2"),
        (lambda p, X: bpcheck.per_example_grads(p, X, np.zeros(4), "hinge"),
         ValueError, r"loss: expected one of \('cross_entropy', 'mse', 'binary_cross_entropy'\)"),
        (lambda p, X: bpcheck.per_example_grads(p, X, np.zeros(4, int), flat="no"),
         TypeError, r"flat: expected True or False, got 'no'"),
        (lambda p, X: bpcheck.per_example_grads(p, X, np.zeros(4, int), activation="swoosh"),
         ValueError, r"activation: expected one of"),
        (lambda p, X: Loss(grad="z - y"), TypeError, r"Loss: grad must be a callable"),
        (lambda p, X: Loss("mse", grad=len), TypeError, r"either a name or grad="),
    ],
)
def test_bad_loss_reduction_and_flat_arguments_are_named_errors(call, exc, pattern):
    params = bpcheck.init_params([3, 5, 2], seed=0)
    with pytest.raises(exc, match=pattern):
        call(params, np.ones((4, 3)))


@pytest.mark.parametrize("call", [
    lambda p, X: bpcheck.per_example_grads(p, X, np.zeros(4, int)),
    lambda p, X: bpcheck.per_example_grad_norms(p, X, np.zeros(4, int)),
    lambda p, X: bpcheck.gauss_newton(p, X),
    lambda p, X: bpcheck.gauss_newton_matvec(p, X, np.ones(bpcheck.param_count([3, 5, 1]))),
    lambda p, X: bpcheck.gauss_newton_operator(p, X),
])
def test_cross_entropy_on_one_output_points_to_binary_cross_entropy(call):
    """One logit under the default loss gave all-zero gradients and Gauss-Newton matrices
    (the softmax of one output is 1), without a word."""
    params = bpcheck.init_params([3, 5, 1], seed=0)
    with pytest.raises(ValueError, match=r"loss='cross_entropy': expects at least two outputs "
                                         r"\(K >= 2\), but the network has K = 1.*"
                                         r"loss='binary_cross_entropy'"):
        call(params, np.ones((4, 3)))


def test_binary_targets_outside_0_1_or_of_the_wrong_shape_are_rejected():
    params = bpcheck.init_params([3, 5, 1], seed=0)
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"y: binary targets must lie in \[0, 1\], got 2.0"):
        bpcheck.per_example_grads(params, X, np.array([0, 1, 2.0, 1]), "binary_cross_entropy")
    with pytest.raises(ValueError, match=r"y: expected targets in \[0, 1\] of shape \(4,\) or \(4, 1\)"):
        bpcheck.per_example_grads(params, X, np.zeros((4, 2)), "binary_cross_entropy")
    column = bpcheck.per_example_grads(params, X, np.array([[0.0], [1], [1], [0]]), "binary_cross_entropy")
    assert np.array_equal(column, bpcheck.per_example_grads(params, X, np.array([0.0, 1, 1, 0]),
                                                            "binary_cross_entropy"))


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_a_user_loss_whose_grad_or_hessian_has_the_wrong_shape_is_a_named_error(xp):
    """A batch mean (1, K) or a vector (K,) would be broadcast over the examples (JAX gave
    every example the same output gradient) or fail deep in a product."""
    params = [(xp.asarray(B), xp.asarray(b)) for B, b in bpcheck.init_params([3, 4, 2], seed=0)]
    rng = np.random.default_rng(0)
    X, y = xp.asarray(rng.standard_normal((5, 3))), xp.asarray(rng.standard_normal((5, 2)))
    v = xp.asarray(rng.standard_normal(bpcheck.param_count([3, 4, 2])))
    for wrong in (lambda z, y: (z - y).mean(0, keepdims=True), lambda z, y: (z - y).mean(0),
                  lambda z, y: (z - y).sum(1, keepdims=True)):
        bad = Loss(grad=wrong)
        for call in (bpcheck.per_example_grads, bpcheck.per_example_grad_norms):
            with pytest.raises(ValueError, match=r"Loss\.grad: expected an array of shape "
                                                 r"\(N, K\) = \(5, 2\) .*got shape"):
                call(params, X, y, bad)
    eye = xp.eye(2)
    for wrong in (lambda z, y: eye, lambda z, y: eye[None], lambda z, y: "H"):
        bad = Loss(grad=lambda z, y: z - y, hessian=wrong)
        for call in (bpcheck.gauss_newton, bpcheck.gauss_newton_operator):
            with pytest.raises(ValueError, match=r"Loss\.hessian: expected an array of shape "
                                                 r"\(N, K, K\) = \(5, 2, 2\) .*got (shape|a str)"):
                call(params, X, bad, y=y)
        with pytest.raises(ValueError, match=r"Loss\.hessian: expected an array of shape"):
            bpcheck.gauss_newton_matvec(params, X, v, bad, y=y)
    for wrong in (lambda z, y: (z - y).astype(np.float32), lambda z, y: (z - y).astype(int)):
        with pytest.raises(TypeError, match=r"Loss\.grad: expected an array of the outputs' dtype "
                                            r"float64, got (float32|int)"):
            bpcheck.per_example_grads(params, X, y, Loss(grad=wrong))
    if xp is np:  # (JAX has no complex results of real inputs here)
        with pytest.raises(TypeError, match=r"Loss\.grad: .*dtype float64, got complex128"):
            bpcheck.per_example_grads(params, X, y, Loss(grad=lambda z, y: (z - y) + 0j))
    with pytest.raises(TypeError, match=r"Loss\.hessian: .*dtype float64, got float32"):
        bpcheck.gauss_newton(params, X, Loss(grad=lambda z, y: z - y, hessian=lambda z, y: xp.broadcast_to(
            eye, (5, 2, 2)).astype(np.float32)), y=y)
    good = Loss(grad=lambda z, y: z - y, hessian=lambda z, y: xp.broadcast_to(eye, (5, 2, 2)))
    assert rel_err(bpcheck.gauss_newton_matvec(params, X, v, good, y=y),
                   bpcheck.gauss_newton_matvec(params, X, v, "mse", y=y)) < RTOL


def test_class_probabilities_are_checked_every_call_and_one_hot_rows_equal_labels():
    """Soft labels for cross-entropy (torch's cross_entropy with a floating (N, K) target):
    rows of one-hot probabilities give the labels' gradients; a negative entry, a row that
    does not sum to 1, or the wrong shape is a named error, also on a repeat call whose
    first call passed (NumPy and JAX), and whatever the targets' dtype."""
    params, X, labels = make_case("cross_entropy", [4, 5, 3])
    one_hot = np.eye(3)[labels]
    assert np.array_equal(bpcheck.per_example_grads(params, X, one_hot),
                          bpcheck.per_example_grads(params, X, labels))
    smooth = 0.9 * one_hot + 0.1 / 3  # label smoothing, rows summing to 1
    for y in (smooth, smooth.astype(np.float32)):
        bpcheck.per_example_grads(params, X, y)  # a plan for the repeat calls
        bad = y.copy()
        bad[2] *= 1.01
        with pytest.raises(ValueError, match=r"y: class probabilities must sum to 1 in each row "
                                             r"\(within .*\), got row 2 summing to 1.01"):
            bpcheck.per_example_grads(params, X, bad)
        neg = y.copy()
        neg[4, 1] = -0.05
        with pytest.raises(ValueError, match=r"must be non-negative, got y\[4, 1\] = -0.05"):
            bpcheck.per_example_grad_norms(params, X, neg)
    # a softmax computed in float32, then cast to float64 (torch's .double()), carries
    # float32's rounding: a row summing to 0.99999991 was refused in float64
    rounded = smooth.copy()
    rounded[1] *= 1 - 9e-8
    np.testing.assert_allclose(bpcheck.per_example_grads(params, X, rounded),
                               bpcheck.per_example_grads(params, X, smooth), rtol=1e-6)
    jp = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    bpcheck.per_example_grads(jp, jnp.asarray(X), jnp.asarray(smooth))
    with pytest.raises(ValueError, match=r"got row 0 summing to 2"):
        bpcheck.per_example_grads(jp, jnp.asarray(X), jnp.asarray(2 * smooth))
    with pytest.raises(ValueError, match=r"expected class probabilities of shape \(6, 3\) "
                                         r".*got shape \(6, 4\)"):
        bpcheck.per_example_grads(params, X, np.full((6, 4), 0.25))
    with pytest.raises(ValueError, match=r"y: class probabilities must sum to 1"):
        bpcheck.gauss_newton(params, X, y=2 * smooth)  # checked when given here too
    with pytest.raises(TypeError, match=r"integer class labels .* \(or class probabilities, a "
                                        r"floating array of shape \(6, 3\)\)"):
        bpcheck.per_example_grads(params, X, labels.astype(bool))
    with pytest.raises(TypeError, match=r"integer class labels .*got dtype float64 of "
                                        r"shape \(6,\)"):
        bpcheck.per_example_grads(params, X, labels.astype(float))  # labels stored as floats
    traced = jax.jit(lambda t: bpcheck.per_example_grads(jp, jnp.asarray(X), t))  # no values
    assert rel_err(traced(jnp.asarray(smooth)), bpcheck.per_example_grads(params, X, smooth)) < RTOL
    # one example: probabilities (K,)
    assert rel_err(bpcheck.per_example_grads(params, X[0], smooth[0]),
                   bpcheck.per_example_grads(params, X[:1], smooth[:1])[0]) == 0


def _output_gradients_in_50_digits(z, y, loss):
    """d loss_n / d z_n for every example in 50-digit arithmetic, rounded to float64: class
    labels (or probabilities, 2-d ``y``) for cross-entropy, targets in [0, 1] for binary."""
    import mpmath

    mpmath.mp.dps = 50
    out = np.zeros(z.shape)
    for n, row in enumerate(z):
        if loss == "binary_cross_entropy":
            s = 1 / (1 + mpmath.exp(-mpmath.mpf(float(row[0]))))
            out[n, 0] = float(s - mpmath.mpf(float(y[n])))
            continue
        e = [mpmath.exp(mpmath.mpf(float(x))) for x in row]
        t = y[n] if np.ndim(y) == 2 else np.eye(len(row))[y[n]]
        S = sum(mpmath.mpf(float(x)) for x in t)
        for k, x in enumerate(e):
            out[n, k] = float(x / sum(e) * S - mpmath.mpf(float(t[k])))
    return out


@pytest.mark.parametrize("loss, y", [
    ("cross_entropy", np.array([0, 1, 0, 2])),
    ("cross_entropy", np.eye(3)[[0, 1, 0, 2]]),  # one-hot rows as probabilities
    ("cross_entropy", np.array([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [1, 0, 0], [0.3, 0.6, 0.1]])),
    ("binary_cross_entropy", np.array([1.0, 0.0, 1.0, 0.3])),
])
def test_gradients_stay_accurate_where_the_outputs_saturate(loss, y):
    """Logits 40 apart: p_c is within e^-40 of 1 (or s(z) of 0 or 1), and p - onehot(y) or
    s(z) - y taken as a difference gave the labelled entry as 0 (a relative error of 1, the
    norms 42% off).  Per-example gradients and their norms, NumPy and JAX, equal the output
    gradients computed in 50-digit arithmetic (the bias rows of a linear model), to 1e-12
    of each row's size.  (Class probabilities that equal p_k to within its rounding, where
    p_k - y_k is itself a difference of near-equal numbers, are not among them.)"""
    K = 1 if loss == "binary_cross_entropy" else 3
    B = np.array([[40.0, -40.0], [0.0, 0.0], [0.0, 0.0]])[:K]
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 0.0]])
    params = [(B, np.zeros(K))]
    want = _output_gradients_in_50_digits(X @ B.T, y, loss)
    for xp in (np, jnp):
        p = [(xp.asarray(B), xp.asarray(b)) for B, b in params]
        grads = np.asarray(bpcheck.per_example_grads(p, xp.asarray(X), xp.asarray(y), loss=loss))
        bias = grads[:, -K:]  # the rows of d loss_n / d b = d loss_n / d z_n
        for n in range(len(X)):
            assert np.abs(bias[n] - want[n]).max() <= 1e-12 * np.abs(want[n]).max(), (xp, n)
        norms = np.asarray(bpcheck.per_example_grad_norms(p, xp.asarray(X), xp.asarray(y),
                                                          loss=loss))
        full = np.sqrt((want ** 2).sum(1) * (1 + (X ** 2).sum(1)))  # |e| |[x; 1]|
        assert rel_err(norms, full) < 1e-12 or np.all(np.abs(norms - full) <= 1e-12 * full)


@pytest.mark.parametrize("loss, K, bad, row", [
    ("cross_entropy", 3, np.array([0, 3, 1]), 1),
    ("cross_entropy", 3, np.array([0, -1, 1]), 1),
    ("cross_entropy", 3, np.array([[1.0, 0, 0], [0.2, 0.3, 0.5], [1, 1, 1]]), 2),
    ("cross_entropy", 3, np.array([[1.0, 0, 0], [-0.5, 1.0, 0.5], [0, 0, 1]]), 1),
    ("binary_cross_entropy", 1, np.array([0.0, 1.5, 1.0]), 1),
])
def test_targets_traced_under_jit_or_vmap_that_are_not_targets_give_rows_of_nan(loss, K, bad, row):
    """Under an outer jax.jit or jax.vmap the targets have no values to check: a label 3
    for K = 3 gave softmax(z) as its gradient (the one-hot of 3 is all zeros), finite and
    plausible.  Such an example's output error e_n is now NaN, so its gradient is (but where
    a ReLU unit that is off gives an exact 0) and so its norm; the other rows equal the
    eager call's."""
    params = [(jnp.asarray(B), jnp.asarray(b)) for B, b in bpcheck.init_params([4, 6, K], seed=0)]
    X = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    y = jnp.asarray(bad)
    with pytest.raises(ValueError, match="y: "):
        bpcheck.per_example_grads(params, X, y, loss=loss)
    good = np.ones(3, bool)
    good[row] = False
    fixed = np.asarray(bad).copy()
    fixed[row] = fixed[0]
    want = np.asarray(bpcheck.per_example_grads(params, X, jnp.asarray(fixed), loss=loss))
    jitted = jax.jit(lambda X, y: bpcheck.per_example_grads(params, X, y, loss=loss))(X, y)
    mapped = jax.vmap(lambda x, t: bpcheck.per_example_grads(params, x, t, loss=loss))(X, y)
    norms = jax.jit(lambda X, y: bpcheck.per_example_grad_norms(params, X, y, loss=loss))(X, y)
    for got in (np.asarray(jitted), np.asarray(mapped)):
        assert np.isnan(got[row][-K:]).all() and np.isfinite(got[good]).all()  # (the bias of
        # the output layer: e_n itself; below it, a ReLU unit that is off keeps its exact 0)
        assert rel_err(got[good], want[good]) < 1e-6
    assert np.isnan(norms[row]) and np.isfinite(np.asarray(norms)[good]).all()
