"""bpcheck.train.lecture (and _core, layout): the lecture's NumPy trainers on the spiral."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpcheck.spiral import make_spiral
from bpcheck.train import (
    TrainingDiverged,
    from_lecture_layout,
    lecture_init,
    softmax_loss_and_grads,
    softmax_step,
    to_lecture_layout,
    train_softmax,
    train_two_layer,
    two_layer_loss_and_grads,
)


@pytest.fixture(scope="module")
def case_study():
    """The case study's stream: np.random.seed(0), the data, then the weights."""
    rng = np.random.RandomState(0)
    X, y = make_spiral(seed=rng)
    return X, y, rng.get_state()


def _rng(state):
    rng = np.random.RandomState()
    rng.set_state(state)
    return rng


def test_initial_loss_is_within_0_003_of_ln_3(case_study):
    X, y, state = case_study
    for widths in ([2, 3], [2, 100, 3]):
        trainer = train_softmax if len(widths) == 2 else train_two_layer
        result = trainer(X, y, lecture_init(widths, _rng(state)), iters=1)
        assert abs(result.losses[0] - math.log(3)) < 0.003


def test_softmax_with_case_study_settings_reaches_accuracy_045_to_056(case_study):
    X, y, state = case_study
    result = train_softmax(X, y, lecture_init([2, 3], _rng(state)))  # step 1, reg 1e-3, 200 it
    assert 0.45 <= result.train_accuracy <= 0.56
    assert result.losses.shape == (200,)
    assert result.final_loss < result.losses[0]


def test_softmax_accuracy_stays_in_range_for_other_seeds():
    for seed in (1, 2, 3):
        rng = np.random.RandomState(seed)
        X, y = make_spiral(seed=rng)
        assert 0.45 <= train_softmax(X, y, lecture_init([2, 3], rng)).train_accuracy <= 0.56


def test_two_layer_with_case_study_settings_reaches_accuracy_097(case_study):
    X, y, state = case_study
    result = train_two_layer(X, y, lecture_init([2, 100, 3], _rng(state)))  # 10,000 iterations
    assert result.train_accuracy >= 0.97
    # the page prints about 0.29 at iteration 1000 and about 0.245 at 9000
    assert abs(result.losses[1000] - 0.29) < 0.01
    assert abs(result.losses[9000] - 0.245) < 0.005


def _reference_loss(params, X, y, reg):
    """The same objective in JAX, layout B, for jax.grad."""
    a = X
    for B, b in params[:-1]:
        a = jax.nn.relu(a @ B.T + b)
    B, b = params[-1]
    logp = jax.nn.log_softmax(a @ B.T + b)
    return -jnp.mean(logp[jnp.arange(len(y)), y]) + 0.5 * reg * sum(jnp.sum(B * B) for B, _ in params)


def _centered_difference(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def test_lecture_gradients_match_jax_grad_and_centered_differences():
    rng = np.random.RandomState(5)
    X, y = make_spiral(n_per_class=10, seed=rng)
    params = [(rng.randn(7, 2), rng.randn(7) * 0.1), (rng.randn(3, 7), rng.randn(3) * 0.1)]
    (W, b), (W2, b2) = to_lecture_layout(params)
    reg = 0.3
    loss, dW, db, dW2, db2 = two_layer_loss_and_grads(W, b, W2, b2, X, y, reg)
    jparams = [(jnp.asarray(B), jnp.asarray(c)) for B, c in params]
    ref_loss, ref = jax.value_and_grad(_reference_loss)(jparams, jnp.asarray(X), jnp.asarray(y), reg)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    for ours, (dB, dc) in zip([(dW.T, db), (dW2.T, db2)], ref):
        np.testing.assert_allclose(ours[0], dB, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(ours[1], dc, rtol=1e-11, atol=1e-14)
    numeric = _centered_difference(
        lambda w2: two_layer_loss_and_grads(W, b, w2, b2, X, y, reg)[0], W2)
    np.testing.assert_allclose(dW2, numeric, rtol=1e-6, atol=1e-9)
    Ws, bs = rng.randn(2, 3), rng.randn(3)
    _, dWs, dbs = softmax_loss_and_grads(Ws, bs, X, y, reg)
    np.testing.assert_allclose(
        dWs, _centered_difference(lambda w: softmax_loss_and_grads(w, bs, X, y, reg)[0], Ws),
        rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        dbs, _centered_difference(lambda c: softmax_loss_and_grads(Ws, c, X, y, reg)[0], bs),
        rtol=1e-6, atol=1e-9)


def test_regularisation_covers_weights_only_with_factor_one_half():
    rng = np.random.RandomState(1)
    X, y = make_spiral(n_per_class=5, seed=rng)
    W, b, W2, b2 = rng.randn(2, 4), 100 * rng.randn(4), rng.randn(4, 3), 100 * rng.randn(3)
    with np.errstate(all="ignore"):
        l0, *g0 = two_layer_loss_and_grads(W, b, W2, b2, X, y, 0.0)
        l1, *g1 = two_layer_loss_and_grads(W, b, W2, b2, X, y, 2.0)
    assert np.isclose(l1 - l0, np.sum(W * W) + np.sum(W2 * W2), rtol=1e-12)
    np.testing.assert_allclose(g1[1], g0[1])  # db: no decay on biases
    np.testing.assert_allclose(g1[3], g0[3])
    np.testing.assert_allclose(g1[0] - g0[0], 2.0 * W, atol=1e-12)


def test_softmax_is_stable_for_huge_scores():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1])
    W = np.array([[1e4, -1e4], [-1e4, 1e4]])  # exp would overflow without the max shift
    loss, dW, _ = softmax_loss_and_grads(W, np.zeros(2), X, y, 0.0)
    assert loss == 0.0 and np.all(np.isfinite(dW))
    loss, _, _ = softmax_loss_and_grads(-W, np.zeros(2), X, y, 0.0)  # p_y = 0 exactly: no log 0
    assert np.isclose(loss, 2e4)


def test_step_is_pure_and_leaves_its_input_untouched():
    X, y = make_spiral(n_per_class=5)
    weights = to_lecture_layout(lecture_init([2, 3], 0))
    copy = [(W.copy(), b.copy()) for W, b in weights]
    new, loss = softmax_step(weights, X, y, 1.0, 1e-3)
    for (W, b), (W0, b0) in zip(weights, copy):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
    again, loss2 = softmax_step(weights, X, y, 1.0, 1e-3)
    assert loss == loss2 and all(np.array_equal(a[0], c[0]) for a, c in zip(new, again))


def test_layout_conversion_is_the_transpose_and_round_trips():
    params = lecture_init([2, 5, 3], 4)
    weights = to_lecture_layout(params)
    assert [W.shape for W, _ in weights] == [(2, 5), (5, 3)]
    back = from_lecture_layout([(W, b.reshape(1, -1)) for W, b in weights])
    for (B, b), (B2, b2) in zip(params, back):
        assert np.array_equal(B, B2) and np.array_equal(b, b2) and b2.shape == b.shape


def test_lecture_init_draws_in_the_lecture_layout():
    rng = np.random.RandomState(9)
    W, W2 = 0.01 * rng.randn(2, 100), 0.01 * rng.randn(100, 3)
    (B, b), (B2, b2) = lecture_init([2, 100, 3], 9)
    assert np.array_equal(B, W.T) and np.array_equal(B2, W2.T)
    assert not b.any() and not b2.any()


def test_divergence_stops_with_a_message_naming_iteration_and_step_size():
    X, y = make_spiral()
    with pytest.raises(TrainingDiverged) as info:
        train_two_layer(X, y, lecture_init([2, 100, 3], 0), step_size=1e8, iters=100)
    err = info.value
    assert err.step_size == 1e8 and 0 < err.iteration < 100
    assert f"iteration {err.iteration}" in str(err) and "step size 100000000.0" in str(err)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"step_size": 0.0}, ["step_size", "> 0", "0.0"]),
        ({"step_size": float("inf")}, ["step_size", "finite"]),
        ({"reg": -1.0}, ["reg", ">= 0", "-1.0"]),
        ({"iters": 0}, ["iters", "[1, 100_000_000]", "0"]),
    ],
)
def test_bad_hyperparameters_are_named_in_the_error(kwargs, words):
    X, y = make_spiral(n_per_class=5)
    with pytest.raises(ValueError) as info:
        train_softmax(X, y, lecture_init([2, 3], 0), **kwargs)
    for word in words:
        assert word in str(info.value)


def test_mismatched_data_and_params_are_reported():
    X, y = make_spiral(n_per_class=5)
    with pytest.raises(ValueError, match="y: expected integer labels of shape"):
        train_softmax(X, y[:-1], lecture_init([2, 3], 0))
    with pytest.raises(ValueError, match="d_0 = 4 inputs but X has 2"):
        train_softmax(X, y, lecture_init([4, 3], 0))
    with pytest.raises(ValueError, match="two-layer net has 2 layer"):
        train_two_layer(X, y, lecture_init([2, 3], 0))
    with pytest.raises(ValueError, match="2 outputs but y has labels up to 2"):
        train_softmax(X, y, lecture_init([2, 2], 0))
