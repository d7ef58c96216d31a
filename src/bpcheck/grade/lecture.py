"""The lecture's homework, written with :mod:`bpcheck.grade.homework`: the example to read.

Four exercises, from the softmax classifier to the bonus question's recursion.  Each is a
reference function (its docstring is the student's stub), cases drawn from a seeded rng,
and the mistakes students make, named in the feedback when an answer matches one.  A
case that cannot tell a mistake from the right answer says so (``misses``): the N = 1
case cannot see a forgotten 1/N, for example.

Layout as in the lecture: ``scores = X @ W + b``, ``W`` ``(D, K)``; the loss is the mean
cross-entropy plus ``0.5 * reg * sum(W*W)`` over weights only.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from . import reference
from .homework import Homework, RelativeError, RuleCheck

hw = Homework(
    "Backpropagation, from the softmax classifier to the bonus question",
    allow=["numpy", "sympy", "matplotlib"],
    intro="""Homework: backpropagation, from the softmax classifier to the bonus question.

Fill in the functions below; keep their names and signatures (the autograder calls
them).  Use NumPy (and SymPy in the rules) and the standard library only: an exercise
whose functions use bpcheck, JAX, PyTorch or another autodiff library scores 0; in a
.py file, an import of one outside the functions (even inside try) scores 0 on every
exercise, and in a notebook the cell that has it fails.
All arrays are NumPy float64 (float32 answers are accepted at a float32 tolerance).
The grader draws its own inputs, of several sizes (one example, one class, a linear
network, wide and deep networks).""")


def _no_kink(rng, make, pre_activations, margin=1e-3, tries=100):
    """Redraw until every hidden pre-activation is at least ``margin`` away from 0."""
    for _ in range(tries):
        args = make(rng)
        if all(np.min(np.abs(z)) > margin for z in pre_activations(args) if z.size):
            return args
    return args  # pragma: no cover - astronomically unlikely


# ---------------------------------------------------------------- softmax_loss

# The mistakes that a single example (N = 1) or a single class (K = 1, every data
# gradient 0) cannot show; names as in the catalogue (bpcheck.grade.reference).
ONE_EXAMPLE = ["the gradient is not divided by N (N = number of examples)",
               "the gradient is divided by N twice",
               "the loss sums over the examples instead of averaging (missing 1/N)"]
SIGN = "the sign is flipped (dscores is p - 1[k = y], not 1[k = y] - p)"
MASK = ["the ReLU mask is missing or never applies (use dhidden[hidden <= 0] = 0)",
        "the ReLU mask is inverted (it zeroes the units that are active)"]


@hw.exercise(points=25, returns=["loss", "dW", "db"], title="softmax_loss: the linear "
             "softmax classifier", score=RelativeError(
                 unstable=lambda case: case.label.startswith("scores near")))
def softmax_loss(W, b, X, y, reg):
    """Exercise 1: loss and gradients of the linear softmax classifier.

    W: (D, K) weights; b: (K,) biases; X: (N, D) inputs, one example per row;
    y: (N,) integer labels in 0..K-1; reg: regularisation strength (a float).
    scores = X @ W + b;  loss = mean cross-entropy + 0.5 * reg * sum(W * W).

    Returns (loss, dW, db): loss a float, dW with W's shape (D, K), db with b's shape (K,).
    Keep the softmax stable for large scores.
    """
    return reference.softmax_loss(W, b, X, y, reg)


softmax_loss.mistakes(reference.softmax_loss_mistakes)


def _softmax_case(rng, N, D, K, reg, shift=0.0):
    return {"W": rng.standard_normal((D, K)), "b": rng.standard_normal(K) + shift,
            "X": rng.standard_normal((N, D)), "y": rng.integers(0, K, N).astype(np.int64),
            "reg": float(reg)}


softmax_loss.case("N = 5, D = 3, K = 4, reg = 1e-3", partial(_softmax_case, N=5, D=3, K=4,
                                                            reg=1e-3), weight=2)
softmax_loss.case("N = 1 (a single example), reg = 0.1",
                  partial(_softmax_case, N=1, D=3, K=3, reg=0.1),
                  misses=[*ONE_EXAMPLE, "the loss is divided by N twice"])
softmax_loss.case("K = 1 (a single class), reg = 0.5",
                  partial(_softmax_case, N=4, D=3, K=1, reg=0.5),
                  misses=[*ONE_EXAMPLE, "the loss is divided by N twice", SIGN])
softmax_loss.case("wide: N = 50, D = 40, K = 10", partial(_softmax_case, N=50, D=40, K=10,
                                                         reg=1e-2), weight=2)
softmax_loss.case("scores near 1000: exp overflows unless the row maximum is subtracted",
                  partial(_softmax_case, N=6, D=4, K=5, reg=1e-3, shift=1000.0))

# ---------------------------------------------------------------- two_layer_loss


@hw.exercise(points=25, returns=["loss", "dW1", "db1", "dW2", "db2"],
             title="two_layer_loss: one ReLU hidden layer")
def two_layer_loss(W1, b1, W2, b2, X, y, reg):
    """Exercise 2: the two-layer network of the lecture, one ReLU hidden layer.

    W1: (D, H); b1: (H,); W2: (H, K); b2: (K,); X: (N, D); y: (N,); reg: a float.
    hidden = max(0, X @ W1 + b1); scores = hidden @ W2 + b2;
    loss = mean cross-entropy + 0.5 * reg * (sum(W1 * W1) + sum(W2 * W2)).
    The ReLU's derivative at 0 is 0.

    Returns (loss, dW1, db1, dW2, db2), each gradient with its parameter's shape.
    """
    return reference.two_layer_loss(W1, b1, W2, b2, X, y, reg)


two_layer_loss.mistakes(reference.two_layer_loss_mistakes)


def _two_layer_case(rng, N, D, H, K, reg):
    """Inputs for ``two_layer_loss``; with ``N > 1`` every hidden unit is active for some
    example and inactive for another, so that a missing ReLU mask shows."""
    def make(rng):
        return {"W1": rng.standard_normal((D, H)), "b1": rng.standard_normal(H),
                "W2": rng.standard_normal((H, K)), "b2": rng.standard_normal(K),
                "X": rng.standard_normal((N, D)),
                "y": rng.integers(0, K, N).astype(np.int64), "reg": float(reg)}

    def hidden(a):
        z = a["X"] @ a["W1"] + a["b1"]
        mixed = N == 1 or bool(np.all((z > 0).any(axis=0) & (z < 0).any(axis=0)))
        return [z if mixed else np.zeros(1)]  # zeros: redraw

    return _no_kink(rng, make, hidden)


two_layer_loss.case("N = 5, D = 3, H = 6, K = 4, reg = 1e-3",
                    partial(_two_layer_case, N=5, D=3, H=6, K=4, reg=1e-3), weight=2)
two_layer_loss.case("N = 1 (a single example)", partial(_two_layer_case, N=1, D=2, H=5, K=3,
                                                        reg=0.1),
                    misses=ONE_EXAMPLE)
two_layer_loss.case("K = 1 (a single class)", partial(_two_layer_case, N=4, D=3, H=5, K=1,
                                                      reg=0.5), misses=[*ONE_EXAMPLE, *MASK, SIGN])
two_layer_loss.case("wide: N = 32, D = 20, H = 50, K = 10",
                    partial(_two_layer_case, N=32, D=20, H=50, K=10, reg=1e-2), weight=2)
two_layer_loss.case("H = 1 (one hidden unit)", partial(_two_layer_case, N=6, D=3, H=1, K=3,
                                                       reg=1e-2))

# ---------------------------------------------------------------- backprop_factors


_LENGTH = "L+1 = {n} arrays (l = 1..L+1, the output layer's V^(L+1) = I_K included)"
_U_LENGTH = ("L+1 = {n} arrays (l = 1..L+1, the output layer's U^(L+1) = I_K kron a^(L)' "
             "included)")


@hw.exercise(points=25, returns=["Vs[]", "Us[]"],
             title="backprop_factors: V^(l) and U^(l) for any depth",
             score=RelativeError(lists={"Vs": _LENGTH, "Us": _U_LENGTH}))
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
    return reference.backprop_factors(Bs, bs, x)


backprop_factors.mistakes(reference.backprop_factors_mistakes)


def _network_case(rng, widths):
    """Inputs for ``backprop_factors``: every hidden layer has a live unit (a dead layer
    makes every ``V^(l)`` below it 0, where most mistakes match the reference) and, where
    the network has hidden units to spare, some unit is dead (so that a missing ``D^(l)``
    shows)."""
    def make(rng):
        Bs = [rng.standard_normal((d, dp)) * np.sqrt(2.0 / dp) for dp, d in zip(widths, widths[1:])]
        bs = [0.5 * rng.standard_normal(d) for d in widths[1:]]
        return {"Bs": Bs, "bs": bs, "x": rng.standard_normal(widths[0])}

    def hidden(a):
        zs, h = [], a["x"]
        for B, b in list(zip(a["Bs"], a["bs"]))[:-1]:
            z = B @ h + b
            zs.append(z)
            h = np.maximum(0.0, z)
        live = all((z > 0).any() for z in zs)
        some_dead = not zs or sum(z.size for z in zs) == len(zs) or any((z < 0).any() for z in zs)
        return zs if live and some_dead else [np.zeros(1)]  # zeros: redraw

    return _no_kink(rng, make, hidden)


backprop_factors.case("L = 1, widths (3, 4, 2)", partial(_network_case, widths=(3, 4, 2)),
                      weight=2)
backprop_factors.case("L = 0 (linear), widths (3, 2)", partial(_network_case, widths=(3, 2)),
                      misses=["D^(l) is left out of V^(l) = V^(l+1) B^(l+1) D^(l)",
                              "D^(l) is diag(a^(l)) instead of diag(1[z^(l) > 0]) (the ReLU's "
                              "slope is 0 or 1)",
                              "U^(l) uses the pre-activation z^(l-1) instead of a^(l-1) = "
                              "max(0, z^(l-1))",
                              "the lists are in reverse order (Vs[0] must be V^(1), Vs[-1] = "
                              "V^(L+1) = I_K)"])
backprop_factors.case("K = 1, widths (3, 5, 4, 1)", partial(_network_case, widths=(3, 5, 4, 1)))
backprop_factors.case("wide: widths (16, 32, 10)", partial(_network_case, widths=(16, 32, 10)))
backprop_factors.case("deep: L = 6, widths (3, 4, 4, 4, 4, 4, 4, 2)",
                      partial(_network_case, widths=(3, 4, 4, 4, 4, 4, 4, 2)), weight=2)

# ---------------------------------------------------------------- v_rule and u_rule


def v_rule(V_next, B_next, D):
    """Exercise 4 (the bonus question): V^(l) from V^(l+1), B^(l+1) and D^(l).

    SymPy matrices: V_next (K, d_{l+1}), B_next (d_{l+1}, d_l), D diagonal (d_l, d_l).
    Return a SymPy Matrix (K, d_l).  Checked symbolically for several architectures.
    """
    return V_next * B_next * D


def u_rule(V, a_prev):
    """Exercise 4: U^(l) from V^(l) (K, d_l) and a^(l-1), a SymPy column (d_{l-1}, 1).

    Return a SymPy Matrix (K, d_l * d_{l-1}), columns in the order of beta^(l) = vec(B^(l)').
    """
    import sympy  # here, not at the top: grading starts before SymPy is needed

    return V * sympy.kronecker_product(sympy.eye(V.shape[1]), a_prev.T)


@hw.exercise(points=25, functions=[v_rule, u_rule], score=RuleCheck(),
             title="v_rule and u_rule: the bonus question's recursion")
def rules(widths):
    """The lecture's rules, for any widths."""
    return {"v_rule": v_rule, "u_rule": u_rule}


@rules.mistake("D^(l) is left out of V^(l) = V^(l+1) B^(l+1) D^(l)")
def _(widths):
    return {"v_rule": lambda V_next, B_next, D: V_next * B_next}


@rules.mistake("the Kronecker factors are swapped (a' kron I instead of I kron a')")
def _(widths):
    import sympy

    return {"u_rule": lambda V, a_prev: V * sympy.kronecker_product(a_prev.T,
                                                                    sympy.eye(V.shape[1]))}


def _widths(rng, shape):
    """Widths drawn for one architecture: L hidden layers between d_0 and K."""
    def width(lo=2, hi=4):
        return int(rng.integers(lo, hi + 1))

    if shape == "non-square":
        d0 = width()
        return (d0, d0 + 1, width())
    if shape == "growing":
        d0 = width(1, 2)
        return (d0, d0 + 1, d0 + 2, d0 + 3)
    if shape == "narrowing":
        d0 = width(3, 4)
        return (d0 + 1, d0, d0 - 1, d0 - 2)
    if shape == "K = 1":
        return (width(), width(), 1)
    return tuple(width(2, 3) for _ in range(6))  # deep: L = 4


for _shape, _weight in (("non-square", 1), ("growing", 1), ("narrowing", 1), ("K = 1", 1),
                        ("deep", 2)):
    rules.case(f"{_shape}: widths drawn from the seed",
               lambda rng, s=_shape: {"widths": _widths(rng, s)}, weight=_weight)
