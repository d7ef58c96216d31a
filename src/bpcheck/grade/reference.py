"""Reference solutions of the homework, and the answers that the usual mistakes give.

Runs in the grader's process only; the child never sees this module (it is hidden from
it).  Layout as in the lecture: ``scores = X @ W + b``, ``W`` ``(D, K)``; the loss is the
mean cross-entropy plus ``0.5 * reg * sum(W*W)`` over weights only.  Exercise 3 uses
bpcheck's own backward recursion (:func:`bpcheck.jacobian_factors`).

Each ``*_mistakes`` function returns ``[(message, {output: value})]``: what a submission
that made that mistake would return for the outputs the mistake changes.  The grader
names a mistake when a wrong output matches it.
"""

from __future__ import annotations

import numpy as np

from .._recursion import jacobian_factors
from ..train._core import softmax_cross_entropy
from ..train.lecture import softmax_loss_and_grads, two_layer_loss_and_grads


def softmax_loss(W, b, X, y, reg):
    """Exercise 1.  ``W`` ``(D, K)``, ``b`` ``(K,)``, ``X`` ``(N, D)``, ``y`` ``(N,)``.

    Returns ``(loss, dW (D, K), db (K,))``; loss = mean cross-entropy ``+ 0.5 reg sum(W*W)``.
    The lecture's code, as the NumPy trainer runs it.
    """
    loss, dW, db = softmax_loss_and_grads(W, b, X, y, reg)
    return float(loss), dW, db


def softmax_loss_mistakes(W, b, X, y, reg):
    N = X.shape[0]
    data_loss, dscores = softmax_cross_entropy(X @ W + b, y)
    gW, gb = X.T @ dscores, dscores.sum(axis=0)
    R, Rb = np.sum(W * W), np.sum(b * b)
    return [
        ("the gradient is not divided by N (N = number of examples)",
         {"dW": N * gW + reg * W, "db": N * gb}),
        ("the gradient is divided by N twice", {"dW": gW / N + reg * W, "db": gb / N}),
        ("the loss sums over the examples instead of averaging (missing 1/N)",
         {"loss": N * data_loss + 0.5 * reg * R}),
        ("the loss is divided by N twice", {"loss": data_loss / N + 0.5 * reg * R}),
        ("the regularisation gradient is off by a factor 2 (d/dW of 0.5 reg sum(W*W) is reg W)",
         {"dW": gW + 2 * reg * W}),
        ("the regularisation gradient is off by a factor 2 (d/dW of 0.5 reg sum(W*W) is reg W)",
         {"dW": gW + 0.5 * reg * W}),
        ("the regularisation loss is off by a factor 2 (the lecture uses 0.5 * reg * sum(W*W))",
         {"loss": data_loss + reg * R}),
        ("the regularisation loss is off by a factor 2 (the lecture uses 0.5 * reg * sum(W*W))",
         {"loss": data_loss + 0.25 * reg * R}),
        ("the regularisation term is missing", {"loss": data_loss, "dW": gW}),
        ("the biases are regularised (only W is)",
         {"db": gb + reg * b, "loss": data_loss + 0.5 * reg * (R + Rb)}),
        ("the sign is flipped (dscores is p - 1[k = y], not 1[k = y] - p)",
         {"dW": -gW + reg * W, "db": -gb}),
        ("the sign is flipped", {"dW": -(gW + reg * W), "loss": -(data_loss + 0.5 * reg * R)}),
    ]


def _two_layer_parts(W1, b1, W2, b2, X, y):
    H = np.maximum(0.0, X @ W1 + b1)
    data_loss, dscores = softmax_cross_entropy(H @ W2 + b2, y)
    dH = dscores @ W2.T
    return H, data_loss, dscores, dH


def two_layer_loss(W1, b1, W2, b2, X, y, reg):
    """Exercise 2.  ``W1`` ``(D, H)``, ``b1`` ``(H,)``, ``W2`` ``(H, K)``, ``b2`` ``(K,)``.

    Returns ``(loss, dW1, db1, dW2, db2)``; regularisation ``0.5 reg (sum W1^2 + sum W2^2)``.
    The ReLU's derivative at 0 is 0 (``dhidden[hidden <= 0] = 0``).  The lecture's code, as
    the NumPy trainer runs it.
    """
    loss, *grads = two_layer_loss_and_grads(W1, b1, W2, b2, X, y, reg)
    return (float(loss), *grads)


def two_layer_loss_mistakes(W1, b1, W2, b2, X, y, reg):
    N = X.shape[0]
    H, data_loss, dscores, dH = _two_layer_parts(W1, b1, W2, b2, X, y)
    mask = H > 0
    dZ = dH * mask
    g = {"dW1": X.T @ dZ, "db1": dZ.sum(axis=0), "dW2": H.T @ dscores, "db2": dscores.sum(axis=0)}
    W = {"dW1": W1, "dW2": W2}
    R = np.sum(W1 * W1) + np.sum(W2 * W2)

    def with_reg(grads, factor=1.0, on=("dW1", "dW2")):
        return {k: v + factor * reg * W[k] if k in on else v for k, v in grads.items()}

    def scaled(s):
        return with_reg({k: s * v for k, v in g.items()})

    unmasked = {"dW1": X.T @ dH, "db1": dH.sum(axis=0)}
    inverted = {"dW1": X.T @ (dH * ~mask), "db1": (dH * ~mask).sum(axis=0)}
    return [
        ("the gradient is not divided by N (N = number of examples)", scaled(N)),
        ("the gradient is divided by N twice", scaled(1.0 / N)),
        ("the loss sums over the examples instead of averaging (missing 1/N)",
         {"loss": N * data_loss + 0.5 * reg * R}),
        ("the ReLU mask is missing or never applies (use dhidden[hidden <= 0] = 0)",
         with_reg(unmasked, on=("dW1",))),
        ("the ReLU mask is inverted (it zeroes the units that are active)",
         with_reg(inverted, on=("dW1",))),
        ("the regularisation gradient is off by a factor 2 (d/dW of 0.5 reg sum(W*W) is reg W)",
         with_reg(g, 2.0)),
        ("the regularisation gradient is off by a factor 2 (d/dW of 0.5 reg sum(W*W) is reg W)",
         with_reg(g, 0.5)),
        ("the regularisation loss is off by a factor 2 (the lecture uses 0.5 * reg * sum(W*W))",
         {"loss": data_loss + reg * R}),
        ("the regularisation term is missing", {"loss": data_loss, **g}),
        ("W1 is left out of the regularisation",
         {"loss": data_loss + 0.5 * reg * np.sum(W2 * W2), **with_reg(g, on=("dW2",))}),
        ("W2 is left out of the regularisation",
         {"loss": data_loss + 0.5 * reg * np.sum(W1 * W1), **with_reg(g, on=("dW1",))}),
        ("the biases are regularised (only W1 and W2 are)",
         {"db1": g["db1"] + reg * b1, "db2": g["db2"] + reg * b2,
          "loss": data_loss + 0.5 * reg * (R + np.sum(b1 * b1) + np.sum(b2 * b2))}),
        ("the sign is flipped (dscores is p - 1[k = y], not 1[k = y] - p)", scaled(-1.0)),
    ]


def backprop_factors(Bs, bs, x):
    """Exercise 3.  ``Bs[l-1]`` ``(d_l, d_{l-1})``, ``bs[l-1]`` ``(d_l,)``, ``x`` ``(d_0,)``.

    Returns ``(Vs, Us)`` with ``Vs[l-1]`` = ``V^(l)`` ``(K, d_l)`` and ``Us[l-1]`` =
    ``U^(l) = V^(l) (I kron a^(l-1)')`` ``(K, d_l d_{l-1})``, l = 1..L+1, from
    :func:`bpcheck.jacobian_factors`.
    """
    factors = jacobian_factors(list(zip(Bs, bs)), x)
    Vs = [np.asarray(f.V, dtype=np.float64) for f in factors]
    Us = [(f.V[:, :, None] * f.a_prev[None, None, :]).reshape(f.V.shape[0], -1)
          for f in factors]
    return Vs, Us


def backprop_factors_mistakes(Bs, bs, x):
    """Whole-list mistakes: ``[(message, {"Vs": [...], "Us": [...]})]``."""
    factors = jacobian_factors(list(zip(Bs, bs)), x)
    K = factors[-1].V.shape[0]
    Vs = [f.V for f in factors]
    swapped = [(f.V[:, None, :] * f.a_prev[None, :, None]).reshape(K, -1) for f in factors]
    # D left out: V^(l) = V^(l+1) B^(l+1)
    noD = [np.eye(K)]
    for B in reversed(Bs[1:]):
        noD.insert(0, noD[0] @ B)
    noD_U = [(V[:, :, None] * f.a_prev[None, None, :]).reshape(K, -1)
             for V, f in zip(noD, factors)]
    # D^(l) = diag(a^(l)) instead of diag(1[z^(l) > 0])
    diag_a = [np.eye(K)]
    for B, f_next in zip(reversed(Bs[1:]), reversed(factors[1:])):  # a^(l): layer l+1's input
        diag_a.insert(0, diag_a[0] @ B @ np.diag(f_next.a_prev))
    diag_a_U = [(V[:, :, None] * f.a_prev[None, None, :]).reshape(K, -1)
                for V, f in zip(diag_a, factors)]
    # z^(l-1) where a^(l-1) = max(0, z^(l-1)) belongs
    a_as_z = [x] + [f.z for f in factors[:-1]]
    zU = [(f.V[:, :, None] * a[None, None, :]).reshape(K, -1) for f, a in zip(factors, a_as_z)]
    return [
        ("the Kronecker factors are swapped (a' kron I instead of I kron a'); equivalently "
         "vec(B) is column-stacked instead of vec(B') (rows of B stacked)", {"Us": swapped}),
        ("D^(l) is left out of V^(l) = V^(l+1) B^(l+1) D^(l)", {"Vs": noD, "Us": noD_U}),
        ("D^(l) is diag(a^(l)) instead of diag(1[z^(l) > 0]) (the ReLU's slope is 0 or 1)",
         {"Vs": diag_a, "Us": diag_a_U}),
        ("U^(l) uses the pre-activation z^(l-1) instead of a^(l-1) = max(0, z^(l-1))",
         {"Us": zU}),
        ("the lists are in reverse order (Vs[0] must be V^(1), Vs[-1] = V^(L+1) = I_K)",
         {"Vs": Vs[::-1]}),
    ]
