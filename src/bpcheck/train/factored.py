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

from .._arrays import backend
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


class _Workspace:
    """:func:`factored_step` for ReLU nets with every array of a step allocated once.

    The same computation as ``_loss_and_grads(p, jacobian_factors(p, X), ...)`` followed
    by the update: ``z^(l)``, ``a^(l)``, the masks ``D^(l)``, the factors ``V^(l)``
    ``(N, K, d_l)`` by ``V^(l) = V^(l+1) B^(l+1) D^(l)``, ``delta^(l) = V^(l)' g`` and the
    gradients, each written into a buffer kept from step to step (``out=``), and the
    parameters updated in place.  A fresh ``(N, K, d)`` array per step made the allocator
    return memory to the system and fault it back in at every step: 5.9x the lecture's
    code per step over 2000 steps, instead of under 2x.
    """

    def __init__(self, params, X, onehot, reg, step_size):
        N, K = onehot.shape
        dtype = X.dtype
        self.X, self.onehot, self.reg, self.step_size = X, onehot, reg, step_size
        widths = [X.shape[1]] + [B.shape[0] for B, _ in params]
        hidden = widths[1:-1]
        self.z = [np.empty((N, d), dtype) for d in widths[1:]]
        self.a = [np.empty((N, d), dtype) for d in hidden]
        self.D = [np.empty((N, d), dtype) for d in hidden]
        self.V = [np.empty((N, K, d), dtype) for d in hidden]
        self.V.append(np.broadcast_to(np.eye(K, dtype=dtype), (N, K, K)))  # V^(L+1) = I
        self.delta = [np.empty((N, d), dtype) for d in widths[1:]]
        self.dB = [np.empty_like(B) for B, _ in params]
        self.db = [np.empty_like(b) for _, b in params]
        self.tmp = [np.empty_like(B) for B, _ in params]
        self.g, self.e = np.empty((N, K), dtype), np.empty((N, K), dtype)
        self.row = np.empty((N, 1), dtype)

    def step(self, params):
        X, onehot, reg = self.X, self.onehot, self.reg
        N = X.shape[0]
        a = X
        a_prevs = []
        for l, (B, b) in enumerate(params):  # forward: z^(l), a^(l), D^(l)
            a_prevs.append(a)
            z = np.matmul(a, B.T, out=self.z[l])
            z += b
            if l < len(params) - 1:
                np.greater(z, 0, out=self.D[l])
                a = np.maximum(z, 0, out=self.a[l])
        scores, g, e, row = self.z[-1], self.g, self.e, self.row  # as in _loss_and_grads
        np.max(scores, axis=1, keepdims=True, out=row)
        np.subtract(scores, row, out=g)
        np.sum(np.exp(g, out=e), axis=1, keepdims=True, out=row)
        g -= np.log(row, out=row)  # log softmax
        loss = -np.sum(g * onehot) / N
        loss = loss + 0.5 * reg * sum(np.sum(B * B) for B, _ in params)
        np.exp(g, out=g)
        g -= onehot
        g /= N  # (p_i - e_{y_i}) / N
        K = g.shape[1]
        for l in range(len(params) - 1, -1, -1):  # factors, right to left, and gradients
            if l < len(params) - 1:
                B_next = params[l + 1][0]
                V = self.V[l]
                np.matmul(self.V[l + 1].reshape(N * K, -1), B_next,
                          out=V.reshape(N * K, -1))
                V *= self.D[l][:, None, :]
            delta = np.einsum("nkd,nk->nd", self.V[l], g, out=self.delta[l])
            B, b = params[l]
            dB = np.matmul(delta.T, a_prevs[l], out=self.dB[l])
            dB += np.multiply(B, reg, out=self.tmp[l])
            np.sum(delta, axis=0, out=self.db[l])
        for (B, b), dB, db in zip(params, self.dB, self.db):
            dB *= self.step_size
            B -= dB
            db *= self.step_size
            b -= db
        return params, loss


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
    step = _Workspace(params, X, onehot, reg, step_size).step
    largest = X.shape[0] * K * max(d * dp for dp, d in zip(widths, widths[1:]))
    with _single_threaded_blas(largest < _SMALL_PRODUCTS):
        params, losses = run_loop(step, params, iters, step_size=step_size, progress=progress)
    return finish(params, losses, X, y, reg, step_size)
