"""The induction over the layers, machine-checked with symbolic widths: every depth ``L``.

The invariant, for ``l = L+1, L, ..., 1`` (ReLU model)::

    P(l):  z^(L+1) = W^(l) z^(l) + c^(l),   W^(l) (K x n_l) and c^(l) (K x 1) free of
           every parameter of the layers 1..l.

Base case ``P(L+1)``: ``W^(L+1) = I_K``, ``c^(L+1) = 0`` (:func:`induction_base`).
Step ``P(l+1) => P(l)`` (:func:`induction_step`), with ``n_{l-1}, n_l, n_{l+1}, K``
symbolic and ``W^(l+1)``, ``c^(l+1)`` opaque (``Indexed`` entries of their own, which is
what "free of the parameters of layers ``<= l+1``" allows)::

    W^(l) = W^(l+1) B^(l+1) D^(l),   c^(l) = W^(l+1) b^(l+1) + c^(l+1)

and from ``P(l)``::

    d z^(L+1)_k / d b^(l)_m    = W^(l)_{km}              (so V^(l) = W^(l))
    d z^(L+1)_k / d B^(l)_{pq} = W^(l)_{kp} a^(l-1)_q    (so U^(l) = V^(l) (I kron a^(l-1)'))

With the base case this gives ``V^(L+1) = I_K`` and ``V^(l) = V^(l+1) B^(l+1) D^(l)``
for every ``L``; the one step left to a human is "downward induction on ``l``".

ReLU assumption: no pre-activation is exactly 0.  Then each ``D^(l)`` is constant on a
neighbourhood of the parameters, ``a^(l) = D^(l) z^(l)`` there, and functions equal on
an open set have equal derivatives; so ``P(l)`` (a piecewise-linear statement) may be
differentiated as the polynomial identity checked here, with ``d^(l)`` constants.

Sigma model (generic differentiable ``sigma``, ``D^(l) = diag(sigma'(z^(l)))``): the
invariant is ``z^(L+1) = F_l(z^(l))`` with ``F_l`` built from layers ``l+1..L+1`` only,
and ``W^(l) = d F_l / d z^(l)'``.  SymPy cannot write a function of ``n_{l+1}`` arguments
for a symbolic ``n_{l+1}``, so the chain rule for ``F_{l+1}``,
``d F_{l+1}(z^(l+1)) / d t = sum_r W^(l+1)_{kr} d z^(l+1)_r / d t``, is *assumed* (and
the same for ``F_l`` in the two derivatives); what is
checked is the rest: SymPy's ``diff`` through an undefined ``sigma`` gives
``sum_r W^(l+1)_{kr} d z^(l+1)_r / d z^(l)_m = (W^(l+1) B^(l+1) D^(l))_{km}`` and the two
derivatives above.

Equality is decided on :func:`~.sums.sum_normal_form` (bound indices renamed, Kronecker
deltas summed out), never on SymPy's ``None``; a step with ``D^(l)`` on the wrong index
is rejected (the tests plant one through ``summand``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sympy as sp

from .generic import GenericStep, _equal, _index, _sigma, _sigma_prime


def lecture_summand(W_next, B_next, D, k, m, t):
    """The summand of ``W^(l)_{km} = sum_t W^(l+1)_{kt} B^(l+1)_{tm} d^(l)_m``."""
    return W_next[k, t] * B_next[t, m] * D[m]


def _checked(summand: Callable) -> Callable:
    """``summand`` whose result must be a SymPy expression; its errors name it."""
    def term(*args):
        try:
            out = summand(*args)
        except Exception as exc:  # noqa: BLE001  (the user's function, whatever it raises)
            raise TypeError(f"summand: raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, sp.Expr):
            raise TypeError(f"summand: expected a SymPy expression, got {type(out).__name__}")
        return out

    return term


def _symbols():
    n_prev, n, n_next, K = sp.symbols("n_{l-1} n_l n_{l+1} K", integer=True, positive=True)
    names = {"W_next": "W^{(l+1)}", "c_next": "c^{(l+1)}", "B_next": "B^{(l+1)}",
             "b_next": "b^{(l+1)}", "B": "B^{(l)}", "b": "b^{(l)}", "a_prev": "a^{(l-1)}",
             "z": "z^{(l)}"}
    bases = {key: sp.IndexedBase(name) for key, name in names.items()}
    return (n_prev, n, n_next, K), bases


def _bases(expr) -> set:
    return {e.base for e in expr.atoms(sp.Indexed)}


def output_layer(B, b, a, r, j, n):
    """``z^(L+1)_r = sum_{j < n_L} B^(L+1)_{rj} a^(L)_j + b^(L+1)_r``."""
    return sp.Sum(B[r, j] * a[j], (j, 0, n - 1)) + b[r]


def induction_base() -> GenericStep:
    """``P(L+1)``: ``z^(L+1) = I_K z^(L+1) + 0``, entry ``k``, ``K`` symbolic, and the
    derivatives it gives for the output layer, ``n_L`` symbolic too: with
    ``z^(L+1) = B^(L+1) a^(L) + b^(L+1)``, ``d z^(L+1)_k / d b^(L+1)_m = (I_K)_{km}``
    (``V^(L+1) = I_K``) and ``d z^(L+1)_k / d B^(L+1)_{pq} = (I_K)_{kp} a^(L)_q``
    (``U^(L+1) = I_K kron a^(L)'``)."""
    start = time.perf_counter()
    K = sp.Symbol("K", integer=True, positive=True)
    n = sp.Symbol("n_L", integer=True, positive=True)
    z = sp.IndexedBase("z^{(L+1)}")
    B, b, a = (sp.IndexedBase(name) for name in ("B^{(L+1)}", "b^{(L+1)}", "a^{(L)}"))
    k, m, p, q, r, j = (_index(s) for s in "kmpqrj")
    identity = sp.Sum(sp.KroneckerDelta(k, r) * z[r], (r, 0, K - 1))
    written = output_layer(B, b, a, r, j, n)
    out = sp.Sum(sp.KroneckerDelta(k, r) * written, (r, 0, K - 1))  # W^(L+1) z^(L+1) + 0
    checks = {
        "z^(L+1) = I_K z^(L+1) + 0": _equal(identity, z[k], {k: K}),
        "d z^(L+1)_k / d b^(L+1)_m = (I_K)_km": _equal(sp.diff(out, b[m]),
                                                       sp.KroneckerDelta(k, m), {k: K, m: K}),
        "d z^(L+1)_k / d B^(L+1)_pq = (I_K)_kp a^(L)_q": _equal(
            sp.diff(out, B[p, q]), sp.KroneckerDelta(k, p) * a[q], {k: K, p: K, q: n}),
    }
    tex = (r"P(L+1):\quad z^{(L+1)} = I_K\, z^{(L+1)} + 0,\quad W^{(L+1)} = I_K,\ c^{(L+1)} = 0:"
           r"\quad " + sp.latex(identity) + " = " + sp.latex(z[k])
           + r",\quad V^{(L+1)} = I_K,\quad U^{(L+1)} = I_K \otimes a^{(L)\prime}")
    return GenericStep("induction base P(L+1)", "z^(L+1) = I_K z^(L+1) + 0: W^(L+1) = I_K, "
                       "c^(L+1) = 0, free of every parameter; d z^(L+1)/d b^(L+1)' = I_K, "
                       "d z^(L+1)/d B^(L+1)_pq = (I_K)_kp a^(L)_q; K, n_L symbolic",
                       tex, all(checks.values()), time.perf_counter() - start, checks)


def induction_step(activation: str = "relu", summand: Callable | None = None) -> GenericStep:
    """``P(l+1) => P(l)`` and the derivatives that ``P(l)`` gives, widths symbolic.

    ``summand(W_next, B_next, D, k, m, t)``: the term of the claimed
    ``W^(l)_{km} = sum_{t < n_{l+1}} summand``, on ``IndexedBase`` objects (``D`` holds the
    diagonal of ``D^(l)``); default :func:`lecture_summand`.  Returns a
    :class:`~.generic.GenericStep` whose ``holds`` is ``True`` only when every check holds;
    ``checks`` names each one with its outcome.
    """
    if activation not in ("relu", "sigma"):
        raise ValueError(f"activation: expected 'relu' or 'sigma', got {activation!r}")
    if summand is not None and not callable(summand):
        raise TypeError(f"summand: expected a function (W_next, B_next, D, k, m, t) -> the "
                        f"SymPy term, got {type(summand).__name__}")
    start = time.perf_counter()
    (n_prev, n, n_next, K), x = _symbols()
    summand = _checked(summand or lecture_summand)
    slope = sp.IndexedBase("d^{(l)}" if activation == "relu" else "s^{(l)}")
    k, m, p, q, i, j, r, t = (_index(s) for s in "kmpqijrt")

    def W(row, col):  # the claimed W^(l), an entry function
        term = summand(x["W_next"], x["B_next"], slope, row, col, t)
        if activation == "relu":  # each d^(l)_i is 0 or 1: d^k = d (as check_recursion uses)
            term = term.replace(lambda e: isinstance(e, sp.Pow) and isinstance(e.base, sp.Indexed)
                                and e.base.base == slope and e.exp.is_Integer and e.exp > 0,
                                lambda e: e.base)
        return sp.Sum(term, (t, 0, n_next - 1))

    def z(row):
        return sp.Sum(x["B"][row, j] * x["a_prev"][j], (j, 0, n_prev - 1)) + x["b"][row]

    c = sp.Sum(x["W_next"][k, r] * x["b_next"][r], (r, 0, n_next - 1)) + x["c_next"][k]
    checks = {}
    if activation == "relu":
        Z = x["z"]  # z^(l), the layer's own symbols
        z_next = sp.Sum(x["B_next"][r, i] * slope[i] * Z[i], (i, 0, n - 1)) + x["b_next"][r]
        hypothesis = sp.Sum(x["W_next"][k, r] * z_next, (r, 0, n_next - 1)) + x["c_next"][k]
        conclusion = sp.Sum(W(k, i) * Z[i], (i, 0, n - 1)) + c
        checks["P(l+1) => z^(L+1) = W^(l) z^(l) + c^(l)"] = _equal(hypothesis, conclusion, {k: K})
        allowed = {x["W_next"], x["c_next"], x["B_next"], x["b_next"], slope}
        checks["W^(l), c^(l) free of layers <= l"] = \
            _bases(W(k, m)) | _bases(c) <= allowed
        out = sp.Sum(W(k, i) * z(i), (i, 0, n - 1)) + c  # P(l) with z^(l) written out
        d_b, d_B = sp.diff(out, x["b"][m]), sp.diff(out, x["B"][p, q])
    else:
        Z = x["z"]
        z_next = sp.Sum(x["B_next"][r, i] * _sigma(Z[i]), (i, 0, n - 1)) + x["b_next"][r]
        # the chain rule for F_{l+1} (assumed): d z^(L+1)_k = sum_r W^(l+1)_{kr} d z^(l+1)_r
        jac = sp.Sum(x["W_next"][k, r] * sp.diff(z_next, Z[m]), (r, 0, n_next - 1))
        jac = jac.replace(lambda e: isinstance(e, _sigma_prime) and isinstance(e.args[0], sp.Indexed)
                          and e.args[0].base == Z,
                          lambda e: slope[e.args[0].indices[0]])
        checks["sum_r W^(l+1)_kr d z^(l+1)_r / d z^(l)_m = W^(l)_km"] = \
            _equal(jac, W(k, m), {k: K, m: n})
        allowed = {x["W_next"], x["B_next"], slope}
        checks["W^(l) built from layers > l and D^(l) only"] = _bases(W(k, m)) <= allowed
        # the chain rule for F_l (assumed): d z^(L+1)_k = sum_i W^(l)_{ki} d z^(l)_i
        d_b = sp.Sum(W(k, i) * sp.diff(z(i), x["b"][m]), (i, 0, n - 1))
        d_B = sp.Sum(W(k, i) * sp.diff(z(i), x["B"][p, q]), (i, 0, n - 1))
    checks["d z^(L+1)_k / d b^(l)_m = W^(l)_km"] = _equal(d_b, W(k, m), {k: K, m: n})
    kron = sp.Sum(W(k, i) * sp.KroneckerDelta(i, p) * x["a_prev"][q], (i, 0, n - 1))
    checks["d z^(L+1)_k / d B^(l)_pq = (W^(l) (I kron a^(l-1)'))_k,(p,q)"] = \
        _equal(d_B, kron, {k: K, p: n, q: n_prev})
    checks["... = W^(l)_kp a^(l-1)_q"] = _equal(d_B, W(k, p) * x["a_prev"][q], {k: K, p: n, q: n_prev})
    holds = all(checks.values())
    what = "D^(l) = diag(d), d constant near the point" if activation == "relu" else \
        "D^(l) = diag(sigma'(z^(l))), P(l): z^(L+1) = F_l(z^(l)), chain rule for F_(l+1) " \
        "and F_l assumed"
    tex = (r"P(l+1) \Rightarrow P(l):\quad W^{(l)} = W^{(l+1)} B^{(l+1)} D^{(l)},\quad "
           r"W^{(l)}_{km} = " + sp.latex(W(k, m)) + r",\quad "
           r"\frac{\partial z^{(L+1)}_k}{\partial b^{(l)}_m} = W^{(l)}_{km},\quad "
           r"\frac{\partial z^{(L+1)}_k}{\partial B^{(l)}_{pq}} = W^{(l)}_{kp}\, a^{(l-1)}_q")
    return GenericStep(f"induction step ({activation})",
                       f"P(l+1) => P(l) with W^(l) = W^(l+1) B^(l+1) D^(l), {what}; "
                       "d z^(L+1)/d b^(l)' = W^(l), d z^(L+1)/d B^(l)_pq = W^(l)_kp a^(l-1)_q; "
                       "widths n_(l-1), n_l, n_(l+1), K symbolic",
                       tex, holds, time.perf_counter() - start, checks)
