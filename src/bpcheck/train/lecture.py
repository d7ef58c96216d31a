"""The lecture's NumPy code: the softmax classifier and the two-layer ReLU net.

Faithful to the CS231n case study (and lecture 3): full-batch gradient descent, loss =
mean cross-entropy ``+ 0.5 * reg * sum(W*W)`` over the weight matrices only (biases are
not regularised), the lecture's row layout ``X @ W + b`` inside.  Two changes, both for
numerical safety: the softmax subtracts the row maximum, and ``-log p_y`` is computed as
``log sum exp - score_y`` (see :func:`softmax_cross_entropy`).

Each step is pure, ``weights -> (new weights, loss)`` in the lecture layout
``[(W, b), ...]``; the ``train_*`` functions take and return bpcheck's layout
``[(B, b), ...]`` and convert once, through :mod:`bpcheck.train.layout`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import (
    Progress,
    TrainResult,
    check_data,
    check_hyper,
    check_network,
    finish,
    run_loop,
    softmax_cross_entropy,
)
from .layout import from_lecture_layout, to_lecture_layout


def softmax_loss_and_grads(W, b, X, y, reg):
    """Loss and gradients of the linear softmax classifier (lecture slide "Forward-Backward").

    ``W`` ``(D, K)``, ``b`` ``(K,)``, ``X`` ``(N, D)``, ``y`` ``(N,)``.  Returns
    ``(loss, dW, db)``.
    """
    scores = np.dot(X, W) + b
    data_loss, dscores = softmax_cross_entropy(scores, y)
    loss = data_loss + 0.5 * reg * np.sum(W * W)
    dW = np.dot(X.T, dscores)
    db = np.sum(dscores, axis=0)
    dW += reg * W
    return loss, dW, db


def two_layer_loss_and_grads(W, b, W2, b2, X, y, reg):
    """Loss and gradients of the one-hidden-layer ReLU net (lecture slide "Neural Network").

    ``W`` ``(D, h)``, ``b`` ``(h,)``, ``W2`` ``(h, K)``, ``b2`` ``(K,)``.  Returns
    ``(loss, dW, db, dW2, db2)``.
    """
    hidden_layer = np.maximum(0, np.dot(X, W) + b)
    scores = np.dot(hidden_layer, W2) + b2
    data_loss, dscores = softmax_cross_entropy(scores, y)
    loss = data_loss + 0.5 * reg * np.sum(W * W) + 0.5 * reg * np.sum(W2 * W2)
    dW2 = np.dot(hidden_layer.T, dscores)
    db2 = np.sum(dscores, axis=0)
    dhidden = np.dot(dscores, W2.T)
    dhidden[hidden_layer <= 0] = 0  # ReLU
    dW = np.dot(X.T, dhidden)
    db = np.sum(dhidden, axis=0)
    dW2 += reg * W2
    dW += reg * W
    return loss, dW, db, dW2, db2


def softmax_step(weights, X, y, step_size, reg):
    """One gradient-descent step, ``[(W, b)] -> ([(W, b)], loss)`` (lecture layout).

    The loss is that of the weights given, before the update.
    """
    ((W, b),) = weights
    loss, dW, db = softmax_loss_and_grads(W, b, X, y, reg)
    return [(W - step_size * dW, b - step_size * db)], loss


def two_layer_step(weights, X, y, step_size, reg):
    """One gradient-descent step, ``[(W, b), (W2, b2)] -> (same, loss)`` (lecture layout)."""
    (W, b), (W2, b2) = weights
    loss, dW, db, dW2, db2 = two_layer_loss_and_grads(W, b, W2, b2, X, y, reg)
    return [(W - step_size * dW, b - step_size * db),
            (W2 - step_size * dW2, b2 - step_size * db2)], loss


def _train(step, depth_name, n_layers, X, y, params, step_size, reg, iters, progress):
    X, y, K = check_data(X, y)
    step_size, reg, iters = check_hyper(step_size, reg, iters)
    params, _ = check_network(params, X.shape[1], K)
    if len(params) != n_layers:
        raise ValueError(f"params: the {depth_name} has {n_layers} layer(s) (B, b), "
                         f"got {len(params)}")
    X = X.astype(np.result_type(X.dtype, params[0][0].dtype, np.float32))
    weights = to_lecture_layout(params)
    weights, losses = run_loop(lambda w: step(w, X, y, step_size, reg), weights, iters,
                               step_size=step_size, progress=progress)
    return finish(from_lecture_layout(weights), losses, X, y, reg, step_size)


def train_softmax(X: Any, y: Any, params: Any, *, step_size: float = 1.0, reg: float = 1e-3,
                  iters: int = 200, progress: Progress = None) -> TrainResult:
    """Train the linear softmax classifier by full-batch gradient descent (lecture code).

    ``X`` ``(N, D)``, ``y`` ``(N,)`` labels ``0 .. K-1``, ``params`` ``[(B, b)]`` with ``B``
    of shape ``(K, D)`` (e.g. ``lecture_init([D, K], seed)``).  Defaults are the case
    study's: step size 1.0, ``reg = 1e-3``, 200 iterations.

    >>> from bpcheck.spiral import make_spiral
    >>> from bpcheck.train import lecture_init
    >>> rng = np.random.RandomState(0)
    >>> X, y = make_spiral(seed=rng)
    >>> result = train_softmax(X, y, lecture_init([2, 3], rng))
    >>> round(float(result.losses[0]), 4), round(result.train_accuracy, 2)
    (1.0969, 0.49)
    """
    return _train(softmax_step, "softmax classifier", 1, X, y, params, step_size, reg, iters,
                  progress)


def train_two_layer(X: Any, y: Any, params: Any, *, step_size: float = 1.0, reg: float = 1e-3,
                    iters: int = 10_000, progress: Progress = None) -> TrainResult:
    """Train the one-hidden-layer ReLU net by full-batch gradient descent (lecture code).

    ``params`` ``[(B1, b1), (B2, b2)]``, ``B1`` ``(h, D)``, ``B2`` ``(K, h)`` (e.g.
    ``lecture_init([D, 100, K], seed)``).  Defaults: step 1.0, ``reg = 1e-3``, 10,000
    iterations, as in the case study.
    """
    return _train(two_layer_step, "two-layer net", 2, X, y, params, step_size, reg, iters,
                  progress)

