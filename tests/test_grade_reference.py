"""The grader's reference solutions against two independent references (JAX autodiff and
centered finite differences), and the planted-mistake answers differ from the truth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bpcheck import jacobian
from bpcheck.grade import reference
from bpcheck.grade.compare import rel_error
from bpcheck.grade.lecture import hw


def draw_cases(e, seed):
    return hw.exercises[e - 1].draw(seed)


def _jax_softmax_loss(W, b, X, y, reg):
    logp = jax.nn.log_softmax(X @ W + b, axis=1)
    return -jnp.mean(logp[jnp.arange(X.shape[0]), y]) + 0.5 * reg * jnp.sum(W * W)


def _jax_two_layer_loss(W1, b1, W2, b2, X, y, reg):
    H = jax.nn.relu(X @ W1 + b1)
    logp = jax.nn.log_softmax(H @ W2 + b2, axis=1)
    return (-jnp.mean(logp[jnp.arange(X.shape[0]), y])
            + 0.5 * reg * (jnp.sum(W1 * W1) + jnp.sum(W2 * W2)))


def _centered(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("case", draw_cases(1, seed=11), ids=lambda c: c.number)
def test_softmax_reference_matches_jax_grad_and_finite_differences(case):
    a = case.args
    loss, dW, db = reference.softmax_loss(a["W"], a["b"], a["X"], a["y"], a["reg"])
    jl = _jax_softmax_loss(a["W"], a["b"], a["X"], a["y"], a["reg"])
    gW, gb = jax.grad(_jax_softmax_loss, argnums=(0, 1))(a["W"], a["b"], a["X"], a["y"], a["reg"])
    assert rel_error(loss, jl) < 1e-10
    assert rel_error(dW, gW) < 1e-9 and rel_error(db, gb) < 1e-9
    if not case.label.startswith("scores near"):  # exp overflows there
        fd = _centered(lambda W: reference.softmax_loss(W, a["b"], a["X"], a["y"], a["reg"])[0],
                       a["W"])
        assert rel_error(dW, fd) < 1e-5


@pytest.mark.parametrize("case", draw_cases(2, seed=12), ids=lambda c: c.number)
def test_two_layer_reference_matches_jax_grad_and_finite_differences(case):
    a = case.args
    args = [a[k] for k in ("W1", "b1", "W2", "b2", "X", "y", "reg")]
    got = reference.two_layer_loss(*args)
    grads = jax.grad(_jax_two_layer_loss, argnums=(0, 1, 2, 3))(*args)
    assert rel_error(got[0], _jax_two_layer_loss(*args)) < 1e-10
    for mine, theirs in zip(got[1:], grads):
        assert rel_error(mine, theirs) < 1e-9
    fd = _centered(lambda W1: reference.two_layer_loss(W1, *args[1:])[0], a["W1"])
    assert rel_error(got[1], fd) < 1e-4  # CS231n: below 1e-4 is acceptable


@pytest.mark.parametrize("case", draw_cases(3, seed=13), ids=lambda c: c.number)
def test_backprop_reference_equals_the_blocks_of_the_full_jacobian(case):
    a = case.args
    Vs, Us = reference.backprop_factors(a["Bs"], a["bs"], a["x"])
    J = jacobian(list(zip(a["Bs"], a["bs"])), a["x"])
    off = 0
    for V, U in zip(Vs, Us):
        assert np.allclose(J[:, off:off + U.shape[1]], U)
        off += U.shape[1]
        assert np.allclose(J[:, off:off + V.shape[1]], V)
        off += V.shape[1]
    assert off == J.shape[1]
    assert np.array_equal(Vs[-1], np.eye(Vs[-1].shape[0]))


def test_planted_mistakes_differ_from_the_reference():
    a = draw_cases(1, seed=3)[0].args
    want = dict(zip(("loss", "dW", "db"), reference.softmax_loss(*a.values())))
    for message, values in reference.softmax_loss_mistakes(*a.values()):
        assert any(rel_error(v, want[k]) > 1e-6 for k, v in values.items()), message


def test_hidden_inputs_avoid_relu_kinks_and_replay_from_the_seed():
    for e in (2, 3):
        first, again = draw_cases(e, seed=5), draw_cases(e, seed=5)
        for c1, c2 in zip(first, again):
            for k in c1.args:
                v1, v2 = c1.args[k], c2.args[k]
                assert all(np.array_equal(p, q) for p, q in zip(v1, v2)) if isinstance(v1, list) \
                    else np.array_equal(v1, v2)
    other = draw_cases(1, seed=6)[0].args["W"]
    assert not np.array_equal(draw_cases(1, seed=5)[0].args["W"], other)
    for c in draw_cases(2, seed=5):
        assert np.min(np.abs(c.args["X"] @ c.args["W1"] + c.args["b1"])) > 1e-3


def test_every_exercise_has_edge_cases():
    labels = " ".join(c.label for ex in hw.exercises for c in ex.draw(0))
    for word in ("N = 1", "K = 1", "L = 0", "wide", "deep", "growing", "narrowing",
                 "non-square"):
        assert word in labels
