"""A complete, correct submission (the lecture's code, adapted to the contract)."""
import numpy as np


def softmax_loss(W, b, X, y, reg):
    N = X.shape[0]
    scores = X @ W + b
    scores = scores - scores.max(axis=1, keepdims=True)
    exp_scores = np.exp(scores)
    probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    loss = -np.log(probs[range(N), y]).sum() / N + 0.5 * reg * np.sum(W * W)
    dscores = probs.copy()
    dscores[range(N), y] -= 1
    dscores /= N
    return loss, X.T @ dscores + reg * W, dscores.sum(axis=0)


def two_layer_loss(W1, b1, W2, b2, X, y, reg):
    N = X.shape[0]
    hidden = np.maximum(0, X @ W1 + b1)
    scores = hidden @ W2 + b2
    scores = scores - scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = -np.log(probs[range(N), y]).mean() + 0.5 * reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
    dscores = probs
    dscores[range(N), y] -= 1
    dscores /= N
    dW2 = hidden.T @ dscores + reg * W2
    db2 = dscores.sum(axis=0)
    dhidden = dscores @ W2.T
    dhidden[hidden <= 0] = 0
    dW1 = X.T @ dhidden + reg * W1
    db1 = dhidden.sum(axis=0)
    return loss, dW1, db1, dW2, db2


def backprop_factors(Bs, bs, x):
    a = [x]
    masks = []
    for B, b in zip(Bs[:-1], bs[:-1]):
        z = B @ a[-1] + b
        masks.append((z > 0).astype(float))
        a.append(np.maximum(z, 0))
    K = Bs[-1].shape[0]
    Vs = [np.eye(K)]
    for l in range(len(Bs) - 2, -1, -1):
        Vs.insert(0, Vs[0] @ Bs[l + 1] @ np.diag(masks[l]))
    Us = [np.kron(V, a_prev[None, :]) for V, a_prev in zip(Vs, a)]
    return Vs, Us


def v_rule(V_next, B_next, D):
    return V_next * B_next * D


def u_rule(V, a_prev):
    import sympy
    return V * sympy.kronecker_product(sympy.eye(V.shape[1]), a_prev.T)
