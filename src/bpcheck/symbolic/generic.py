"""Proof steps with every width symbolic: ``n_0, n_1, ...`` are integer symbols.

Entries are SymPy ``Indexed`` objects and matrix products are explicit ``Sum``s, so
each statement is checked *entrywise* for an arbitrary entry ``(k, m)``:

(i) :func:`vec_kronecker_step`: ``B a = (I_{n_1} kron a') vec(B')``.
(ii) :func:`one_layer_step`: ``d z^(l+1) / d b^(l)' = B^(l+1) D^(l)`` (ReLU pattern
     ``D`` constant; or a generic ``sigma`` with ``D = diag(sigma'(z))``).
(iii) :func:`chain_step`: for a fixed depth ``L``, ``V^(1)`` built by the recursion
     equals ``d z^(L+1) / d b^(1)'`` and ``U^(1) = V^(1) (I kron x')`` equals
     ``d z^(L+1) / d beta^(1)'``, with all ``L+2`` widths symbolic.

The derivative side is SymPy's own ``diff`` of the nested sums with respect to one
``Indexed`` entry (``b^(l)_m`` or ``B^(1)_{pq}``); it yields ``KroneckerDelta``s that
:func:`~.sums.sum_normal_form` sums out.  Equality is decided on
:func:`~.sums.sum_normal_form`, never on ``==`` of raw expressions (their bound
variables have arbitrary names) and never on SymPy's ``None``.

Indexing conventions: the Kronecker product is defined on index pairs,
``(A kron C)_{(r_1, r_2), (c_1, c_2)} = A_{r_1 c_1} C_{r_2 c_2}``, and ``vec`` stacks
columns, ``vec(M)_{(c, r)} = M_{r c}``, pairs enumerated lexicographically (flat index
``c * rows + r``); so ``vec(B')_{(p, q)} = B_{pq}`` is entry ``p n_0 + q``, as in
``beta^(l)``.  The tests check these pair formulas against SymPy's
``kronecker_product`` on concrete sizes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sympy as sp

from .network import check_activation
from .sums import sum_normal_form


@dataclass
class GenericStep:
    """The outcome of one generic-width proof step."""

    name: str
    statement: str
    """Plain-text statement."""
    latex: str
    """The statement and the entrywise form that was compared, in LaTeX."""
    holds: bool
    seconds: float
    checks: dict = field(default_factory=dict)
    """The sub-statements that were checked, each with its outcome (where there are several)."""


def _index(name):
    return sp.Symbol(name, integer=True, nonnegative=True)


def widths(count: int):
    """``n_0, ..., n_{count-1}``: positive integer symbols."""
    return sp.symbols(f"n_0:{count}", integer=True, positive=True)


class _sigma_prime(sp.Function):
    """``sigma'``, an undefined function."""


    def _latex(self, printer):
        return rf"\sigma'\left({printer._print(self.args[0])}\right)"


class _sigma(sp.Function):
    """An undefined differentiable activation whose derivative is ``sigma'``.

    SymPy's chain rule (``Function._eval_derivative``) multiplies ``fdiff`` by the
    derivative of the argument; declaring ``fdiff`` is all that is assumed of sigma.
    """

    def fdiff(self, argindex=1):
        return _sigma_prime(self.args[0])

    def _latex(self, printer):
        return rf"\sigma\left({printer._print(self.args[0])}\right)"


def _row_of(z_entry, b):
    """The row ``r`` of a pre-activation ``z_r = sum_j B_{rj} a_j + b_r`` (from its ``b_r``)."""
    rows = [e.indices[0] for e in z_entry.atoms(sp.Indexed) if e.base == b]
    return rows[0] if len(rows) == 1 else None


def _identity(r, c):
    return sp.KroneckerDelta(r, c)


def _entries(M):
    """Entry function of a matrix of ``Indexed`` entries ``M[r, c]``."""
    return lambda r, c: M[r, c]


def _diagonal(entries):
    """Entry function of ``diag(entries)``: ``delta_rc entries[c]``."""
    return lambda r, c: sp.KroneckerDelta(r, c) * entries[c]


def _matmul(f, g, inner):
    """Entry function of a product: ``(F G)_{rc} = sum_t F_{rt} G_{tc}``, ``t < inner``."""
    def entry(r, c):
        t = sp.Dummy("t", integer=True, nonnegative=True)
        return sp.Sum(f(r, t) * g(t, c), (t, 0, inner - 1))
    return entry


def _equal(lhs, rhs, ranges) -> bool:
    return sum_normal_form(lhs, ranges) == sum_normal_form(rhs, ranges)


def vec_kronecker_step() -> GenericStep:
    """(i) ``(B a)_i = ((I_{n_1} kron a') vec(B'))_i`` for ``B`` ``n_1 x n_0``, ``a`` ``n_0 x 1``."""
    start = time.perf_counter()
    n0, n1 = widths(2)
    B, a = sp.IndexedBase("B"), sp.IndexedBase("a")
    i, j, p, q = (_index(s) for s in "ijpq")
    lhs = sp.Sum(B[i, j] * a[j], (j, 0, n0 - 1))
    kron = sp.KroneckerDelta(i, p) * a[q]      # (I kron a')_{(i, 0), (p, q)} = I_{ip} (a')_{0q}
    vec_Bt = B[p, q]                            # vec(B')_{(p, q)} = (B')_{qp} = B_{pq}
    rhs = sp.Sum(kron * vec_Bt, (q, 0, n0 - 1), (p, 0, n1 - 1))
    holds = _equal(lhs, rhs, {i: n1})
    tex = (r"B a = \left(I_{n_1} \otimes a'\right) \operatorname{vec}(B'):\quad "
           + sp.latex(lhs) + " = " + sp.latex(rhs))
    return GenericStep("vec/Kronecker identity", "B a = (I kron a') vec(B'), entry i",
                       tex, holds, time.perf_counter() - start)


def one_layer_step(activation: str = "relu") -> GenericStep:
    """(ii) ``d z^(l+1) / d b^(l)' = B^(l+1) D^(l)``, entry ``(k, m)``, widths ``n_{l-1..l+1}``."""
    check_activation(activation)
    start = time.perf_counter()
    n_prev, n, n_next = sp.symbols("n_{l-1} n_l n_{l+1}", integer=True, positive=True)
    B, B_next = sp.IndexedBase("B^{(l)}"), sp.IndexedBase("B^{(l+1)}")
    b, b_next = sp.IndexedBase("b^{(l)}"), sp.IndexedBase("b^{(l+1)}")
    a_prev = sp.IndexedBase("a^{(l-1)}")
    slope = sp.IndexedBase("d^{(l)}" if activation == "relu" else "s^{(l)}")
    i, j, k, m = (_index(s) for s in "ijkm")

    def z(r):
        return sp.Sum(B[r, j] * a_prev[j], (j, 0, n_prev - 1)) + b[r]

    act = (lambda r: slope[r] * z(r)) if activation == "relu" else (lambda r: _sigma(z(r)))
    z_next = sp.Sum(B_next[k, i] * act(i), (i, 0, n - 1)) + b_next[k]
    derivative = sp.diff(z_next, b[m])
    if activation != "relu":  # name sigma'(z^(l)_r) as the entry s^(l)_r of D^(l)
        derivative = derivative.replace(
            lambda e: isinstance(e, _sigma_prime),
            lambda e: slope[_row_of(e.args[0], b)] if e.args[0] == z(_row_of(e.args[0], b)) else e)
    claim = _matmul(_entries(B_next), _diagonal(slope), n)(k, m)
    holds = _equal(derivative, claim, {k: n_next, m: n})
    what = "D = diag(d), d constant" if activation == "relu" else "D = diag(sigma'(z))"
    tex = (r"\frac{\partial z^{(l+1)}}{\partial b^{(l)\prime}} = B^{(l+1)} D^{(l)}:\quad "
           r"\frac{\partial}{\partial b^{(l)}_{m}}\left(" + sp.latex(z_next) + r"\right) = "
           + sp.latex(derivative) + " = " + sp.latex(claim))
    return GenericStep(f"one layer ({activation})",
                       f"d z^(l+1)/d b^(l)' = B^(l+1) D^(l), {what}, entry (k, m)",
                       tex, holds, time.perf_counter() - start)


def chain_step(L: int) -> GenericStep:
    """(iii) ``V^(1)`` and ``U^(1)`` by the recursion equal the derivatives, depth ``L``."""
    if type(L) is not int or L < 0:
        raise ValueError(f"L: expected a depth, an int of at least 0, got {L!r}")
    start = time.perf_counter()
    n = widths(L + 2)
    B = [None] + [sp.IndexedBase(f"B^{{({l})}}") for l in range(1, L + 2)]
    b = [None] + [sp.IndexedBase(f"b^{{({l})}}") for l in range(1, L + 2)]
    d = [None] + [sp.IndexedBase(f"d^{{({l})}}") for l in range(1, L + 1)]
    x = sp.IndexedBase("x")
    idx = [_index(f"i_{l}") for l in range(L + 2)]  # i_l runs over n_l
    k, m, p, q = (_index(s) for s in "kmpq")

    def z(l, r):
        if l == 1:
            inner = sp.Sum(B[1][r, idx[0]] * x[idx[0]], (idx[0], 0, n[0] - 1))
        else:
            a = d[l - 1][idx[l - 1]] * z(l - 1, idx[l - 1])
            inner = sp.Sum(B[l][r, idx[l - 1]] * a, (idx[l - 1], 0, n[l - 1] - 1))
        return inner + b[l][r]

    out = z(L + 1, k)
    # the recursion, as entry functions: V^(L+1) = I, V^(l) = V^(l+1) B^(l+1) D^(l)
    V = _identity
    for l in range(L, 0, -1):
        V = _matmul(_matmul(V, _entries(B[l + 1]), n[l + 1]), _diagonal(d[l]), n[l])
    ranges_V = {k: n[L + 1], m: n[1]}
    holds_V = _equal(sp.diff(out, b[1][m]), V(k, m), ranges_V)
    # U^(1)_{k, (p, q)} = sum_c V^(1)_{kc} (I kron x')_{(c, 0), (p, q)}
    claim_U = _matmul(V, lambda r, c: sp.KroneckerDelta(r, p) * x[q], n[1])(k, 0)
    ranges_U = {k: n[L + 1], p: n[1], q: n[0]}
    holds_U = _equal(sp.diff(out, B[1][p, q]), claim_U, ranges_U)
    tex = (rf"L = {L}:\quad V^{{(1)}} = " + " ".join(
        rf"B^{{({l + 1})}} D^{{({l})}}" for l in range(L, 0, -1))
        + r" = \frac{\partial z^{(" + str(L + 1) + r")}}{\partial b^{(1)\prime}},\quad "
        r"U^{(1)} = V^{(1)} \left(I_{n_1} \otimes x'\right) = \frac{\partial z^{("
        + str(L + 1) + r")}}{\partial \beta^{(1)\prime}}")
    return GenericStep(f"chain, L = {L}",
                       f"V^(1) and U^(1) by the recursion = d z^({L + 1})/d b^(1)', "
                       f"d z^({L + 1})/d beta^(1)', widths n_0..n_{L + 1}",
                       tex, holds_V and holds_U, time.perf_counter() - start)
