"""The student template written by ``bpcheck grade --template PATH``."""

TEMPLATE = '''\
"""Homework: backpropagation, from the softmax classifier to the bonus question.

Fill in the functions below; keep their names and signatures (the autograder calls
them).  Use NumPy (and SymPy in exercise 4) and the standard library only: code that
uses bpcheck, JAX, PyTorch or another autodiff library scores 0 on that exercise.
All arrays are NumPy float64.  The grader draws its own inputs, of several sizes
(one example, one class, a linear network, wide and deep networks).
"""

import numpy as np


def softmax_loss(W, b, X, y, reg):
    """Exercise 1: loss and gradients of the linear softmax classifier.

    W: (D, K) weights; b: (K,) biases; X: (N, D) inputs, one example per row;
    y: (N,) integer labels in 0..K-1; reg: regularisation strength (a float).
    scores = X @ W + b;  loss = mean cross-entropy + 0.5 * reg * sum(W * W).

    Returns (loss, dW, db): loss a float, dW with W's shape (D, K), db with b's shape (K,).
    Keep the softmax stable for large scores.
    """
    raise NotImplementedError


def two_layer_loss(W1, b1, W2, b2, X, y, reg):
    """Exercise 2: the two-layer network of the lecture, one ReLU hidden layer.

    W1: (D, H); b1: (H,); W2: (H, K); b2: (K,); X: (N, D); y: (N,); reg: a float.
    hidden = max(0, X @ W1 + b1); scores = hidden @ W2 + b2;
    loss = mean cross-entropy + 0.5 * reg * (sum(W1 * W1) + sum(W2 * W2)).
    The ReLU's derivative at 0 is 0.

    Returns (loss, dW1, db1, dW2, db2), each gradient with its parameter's shape.
    """
    raise NotImplementedError


def backprop_factors(Bs, bs, x):
    """Exercise 3: the factors of the Jacobian, for one example and any depth L >= 0.

    Bs[l-1] = B^(l), shape (d_l, d_{l-1}); bs[l-1] = b^(l), shape (d_l,), l = 1..L+1;
    x: (d_0,).  z^(l) = B^(l) a^(l-1) + b^(l), a^(l) = max(0, z^(l)), a^(0) = x.

    Returns (Vs, Us), two lists of L+1 arrays, l = 1..L+1:
    Vs[l-1] = V^(l) = d z^(L+1) / d b^(l)', shape (K, d_l), with V^(L+1) = I_K and
        V^(l) = V^(l+1) B^(l+1) D^(l), D^(l) = diag(1[z^(l) > 0]);
    Us[l-1] = U^(l) = d z^(L+1) / d beta^(l)', shape (K, d_l * d_{l-1}), with
        beta^(l) = vec(B^(l)') (the rows of B^(l) stacked) and U^(l) = V^(l) (I kron a^(l-1)').
    """
    raise NotImplementedError


def v_rule(V_next, B_next, D):
    """Exercise 4 (the bonus question): V^(l) from V^(l+1), B^(l+1) and D^(l).

    SymPy matrices: V_next (K, d_{l+1}), B_next (d_{l+1}, d_l), D diagonal (d_l, d_l).
    Return a SymPy Matrix (K, d_l).  Checked symbolically for several architectures.
    """
    raise NotImplementedError


def u_rule(V, a_prev):
    """Exercise 4: U^(l) from V^(l) (K, d_l) and a^(l-1), a SymPy column (d_{l-1}, 1).

    Return a SymPy Matrix (K, d_l * d_{l-1}), columns in the order of beta^(l) = vec(B^(l)').
    """
    raise NotImplementedError
'''
