"""A trainer for any depth whose gradient comes from the Jacobian factors ``V`` and ``a``.

With ``p_i = softmax(z_i^(L+1))`` and ``g_i = (p_i - e_{y_i}) / N``, the chain rule through
``U^(l) = d z^(L+1) / d beta^(l)'`` gives, for each layer ``l``::

    d loss / d beta^(l) = sum_i U_i^(l)' g_i + reg * beta^(l)
                        = sum_i (I kron a_i^(l-1)) V_i^(l)' g_i + reg * beta^(l)
    d loss / d b^(l)    = sum_i V_i^(l)' g_i

and ``(I kron a) v = vec((v a')')``, so in matrix form, with ``delta_i = V_i^(l)' g_i``::

    d loss / d B^(l) = sum_i delta_i a_i^(l-1)' + reg * B^(l)     (shape (d_l, d_{l-1}))

``U`` is never materialised: ``V`` is contracted with ``g`` first (an einsum), then one
outer product summed over ``i`` (a matrix product).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._activations import resolve_activations
from .._arrays import backend
from .._recursion import _factors as layer_factors
from .._recursion import _single_threaded_blas, jacobian_factors
from ._core import (
    Progress,
    TrainResult,
    check_data,
    check_hyper,
    check_network,
    finish,
    run_loop,
)


def _loss_and_grads(params, factors, onehot, reg, xp):
    """Loss and ``[(dB^(l), db^(l))]`` from the factors of ``X`` and one-hot labels ``(N, K)``."""
    scores = factors[-1].z  # z^(L+1), shape (N, K)
    N = scores.shape[0]
    log_probs = scores - xp.max(scores, axis=1, keepdims=True)
    log_probs = log_probs - xp.log(xp.sum(xp.exp(log_probs), axis=1, keepdims=True))
    loss = -xp.sum(log_probs * onehot) / N
    loss = loss + 0.5 * reg * sum(xp.sum(B * B) for B, _ in params)
    g = (xp.exp(log_probs) - onehot) / N  # (p_i - e_{y_i}) / N
    grads = []
    for (B, _), f in zip(params, factors):
        delta = xp.einsum("nkd,nk->nd", f.V, g)  # V_i' g_i, per example
        grads.append((delta.T @ f.a_prev + reg * B, xp.sum(delta, axis=0)))
    return loss, grads


def factored_loss_and_grads(params: Any, X: Any, y: Any, reg: float):
    """Loss and gradients from :func:`bpcheck.jacobian_factors` (no backprop code here).

    ``params`` ``[(B^(l), b^(l))]`` (``B^(l)`` ``(d_l, d_{l-1})``), ``X`` ``(N, d_0)``, ``y``
    ``(N,)`` integer labels.  Loss = mean cross-entropy ``+ 0.5 * reg * sum_l |B^(l)|^2``
    (weights only).  Returns ``(loss, [(dB^(l), db^(l))])`` with the shapes of ``params``.
    NumPy in, NumPy out; JAX in, JAX out (traceable).
    """
    xp = backend(X, *[t for pair in params for t in pair])
    factors = jacobian_factors(params, X)
    K = factors[-1].z.shape[1]
    onehot = (xp.asarray(y)[:, None] == xp.arange(K)).astype(factors[-1].z.dtype)
    return _loss_and_grads(params, factors, onehot, reg, xp)


def factored_step(params, X, y, step_size, reg):
    """One gradient-descent step ``[(B, b)] -> ([(B, b)], loss)``; gradients from the factors."""
    loss, grads = factored_loss_and_grads(params, X, y, reg)
    return _update(params, grads, step_size), loss


def _update(params, grads, step_size):
    return [(B - step_size * dB, b - step_size * db) for (B, b), (dB, db) in zip(params, grads)]


_SMALL_PRODUCTS = 1 << 24
"""Below this many multiply-adds per layer product (``N K d_l d_{l-1}``), the trainer runs
BLAS on one thread: threads cost more than they save on products this small, and on a
busy machine their spinning makes each step several times slower."""


def train_factored(X: Any, y: Any, params: Any, *, step_size: float = 1.0, reg: float = 1e-3,
                   iters: int, progress: Progress = None) -> TrainResult:
    """Full-batch gradient descent for a ReLU net of any depth, gradients from the factors.

    ``params`` ``[(B^(1), b^(1)), ..., (B^(L+1), b^(L+1))]``, any ``L >= 0`` (e.g.
    ``lecture_init([2, 100, 50, 3], seed)``).  NumPy throughout; the data and network are
    checked once, and each step computes the factors (:func:`bpcheck.jacobian_factors`'s
    recursion) of the checked arrays.  With ``L = 1`` it takes the same steps as
    :func:`~bpcheck.train.train_two_layer` (a test checks it).
    """
    X, y, K = check_data(X, y)
    step_size, reg, iters = check_hyper(step_size, reg, iters)
    params, widths = check_network(params, X.shape[1], K)
    X = X.astype(np.result_type(X.dtype, params[0][0].dtype, np.float32))
    params = [(B.astype(X.dtype), b.astype(X.dtype)) for B, b in params]
    onehot = (y[:, None] == np.arange(widths[-1])).astype(X.dtype)  # K outputs, >= the classes
    acts = resolve_activations("relu", len(params) - 1)

    def step(p):
        loss, grads = _loss_and_grads(p, layer_factors(p, X, acts, np), onehot, reg, np)
        return _update(p, grads, step_size), loss

    largest = X.shape[0] * K * max(d * dp for dp, d in zip(widths, widths[1:]))
    with _single_threaded_blas(largest < _SMALL_PRODUCTS):
        params, losses = run_loop(step, params, iters, step_size=step_size, progress=progress)
    return finish(params, losses, X, y, reg, step_size)
