"""bpcheck.train.factored: gradients from the Jacobian factors V, a (any depth)."""

from itertools import pairwise

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcheck.spiral import make_spiral
from bpcheck.train import (
    factored_loss_and_grads,
    factored_step,
    lecture_init,
    train_factored,
    train_two_layer,
)


def backprop_by_hand(params, X, y, reg):
    """The lecture's backward pass generalised to L hidden layers (layout B, NumPy)."""
    N = X.shape[0]
    activations = [X]
    for B, b in params[:-1]:
        activations.append(np.maximum(0, activations[-1] @ B.T + b))
    scores = activations[-1] @ params[-1][0].T + params[-1][1]
    shifted = scores - scores.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(probs[range(N), y])) + 0.5 * reg * sum(np.sum(B * B) for B, _ in params)
    dscores = probs.copy()
    dscores[range(N), y] -= 1
    dscores /= N
    grads = []
    delta = dscores
    for l in range(len(params) - 1, -1, -1):
        B = params[l][0]
        grads.append((delta.T @ activations[l] + reg * B, delta.sum(axis=0)))
        if l:
            delta = delta @ B
            delta[activations[l] <= 0] = 0
    return loss, grads[::-1]


def jax_reference(params, X, y, reg):
    def loss_fn(params):
        a = X
        for B, b in params[:-1]:
            a = jax.nn.relu(a @ B.T + b)
        logp = jax.nn.log_softmax(a @ params[-1][0].T + params[-1][1])
        return (-jnp.mean(logp[jnp.arange(X.shape[0]), y])
                + 0.5 * reg * sum(jnp.sum(B * B) for B, _ in params))

    jparams = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    return jax.value_and_grad(loss_fn)(jparams)


def _random_net(widths, seed):
    rng = np.random.RandomState(seed)
    return [(rng.randn(d, d_prev) / np.sqrt(d_prev), 0.1 * rng.randn(d))
            for d_prev, d in pairwise(widths)]


@settings(max_examples=15, deadline=None)
@given(hidden=st.lists(st.integers(1, 6), min_size=0, max_size=3), seed=st.integers(0, 2**16),
       reg=st.sampled_from([0.0, 1e-3, 0.5]))
def test_factored_gradient_equals_hand_written_backprop_at_any_depth(hidden, seed, reg):
    X, y = make_spiral(n_per_class=6, n_classes=3, seed=seed)
    params = _random_net([2, *hidden, 3], seed)
    loss, grads = factored_loss_and_grads(params, X, y, reg)
    ref_loss, ref = backprop_by_hand(params, X, y, reg)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    for (dB, db), (rB, rb) in zip(grads, ref):
        assert dB.shape == rB.shape and db.shape == rb.shape
        np.testing.assert_allclose(dB, rB, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(db, rb, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("widths", [[2, 3], [2, 8, 3], [2, 8, 5, 3], [2, 4, 4, 4, 3]])
def test_factored_gradient_equals_jax_grad(widths):
    X, y = make_spiral(n_per_class=8, seed=2)
    params = _random_net(widths, 11)
    loss, grads = factored_loss_and_grads(params, X, y, 1e-2)
    ref_loss, ref = jax_reference(params, X, y, 1e-2)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    for (dB, db), (rB, rb) in zip(grads, ref):
        np.testing.assert_allclose(dB, rB, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(db, rb, rtol=1e-10, atol=1e-15)


def test_factored_gradient_traces_under_jax_jit():
    X, y = make_spiral(n_per_class=8, seed=2)
    params = _random_net([2, 6, 3], 4)
    jparams = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    loss, grads = jax.jit(factored_loss_and_grads, static_argnums=3)(
        jparams, jnp.asarray(X), jnp.asarray(y), 1e-2)
    ref_loss, ref = jax_reference(params, X, y, 1e-2)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(grads[0][0], ref[0][0], rtol=1e-10, atol=1e-15)


def test_depth_L_trainer_with_L_1_equals_the_two_layer_trainer_step_for_step():
    X, y = make_spiral()
    params = lecture_init([2, 100, 3], 0)
    lecture = train_two_layer(X, y, params, iters=200)
    factored = train_factored(X, y, params, iters=200)
    np.testing.assert_allclose(factored.losses, lecture.losses, rtol=1e-12)
    for (B, b), (B2, b2) in zip(factored.params, lecture.params):
        np.testing.assert_allclose(B, B2, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(b, b2, rtol=1e-9, atol=1e-13)
    assert factored.train_accuracy == lecture.train_accuracy


def test_factored_step_is_pure():
    X, y = make_spiral(n_per_class=5)
    params = lecture_init([2, 4, 3], 1)
    copy = [(B.copy(), b.copy()) for B, b in params]
    factored_step(params, X, y, 1.0, 1e-3)
    assert all(np.array_equal(B, C) and np.array_equal(b, c)
               for (B, b), (C, c) in zip(params, copy))


def test_deeper_net_trains_on_the_spiral():
    rng = np.random.RandomState(0)
    X, y = make_spiral(seed=rng)
    result = train_factored(X, y, lecture_init([2, 30, 30, 3], rng), step_size=1.0, iters=600)
    assert result.final_loss < 0.4 * result.losses[0]
    assert result.train_accuracy >= 0.85


@pytest.mark.parametrize("widths", [[2, 100, 3], [2, 30, 20, 30, 3], [2, 3]])
def test_the_trainers_buffered_step_takes_factored_steps_and_leaves_the_callers_params(widths):
    rng = np.random.RandomState(1)
    X, y = make_spiral(n_per_class=40, seed=rng)
    params = lecture_init(widths, rng)
    copy = [(B.copy(), b.copy()) for B, b in params]
    result = train_factored(X, y, params, step_size=0.5, iters=30)
    expected, losses = params, []
    for _ in range(30):
        expected, loss = factored_step(expected, X, y, 0.5, 1e-3)
        losses.append(float(loss))
    np.testing.assert_allclose(result.losses, losses, rtol=1e-12)
    for (B, b), (B2, b2) in zip(result.params, expected):
        np.testing.assert_allclose(B, B2, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(b, b2, rtol=1e-10, atol=1e-14)
    assert all(np.array_equal(B, C) and np.array_equal(b, c)
               for (B, b), (C, c) in zip(params, copy))
