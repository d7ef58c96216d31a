"""The layer-by-layer proof for concrete widths: each layer in its own symbols.

:mod:`.induction` proves, for every depth, that ``z^(L+1) = W^(l) z^(l) + c^(l)`` with
``W^(l) = W^(l+1) J^(l)``, ``J^(l) = d z^(l+1) / d z^(l)'``, and that then
``d z^(L+1) / d b^(l)' = W^(l)`` and ``d z^(L+1) / d B^(l)_{pq} = W^(l)_{kp} a^(l-1)_q``.
So the true ``V^(l)`` and ``U^(l)`` follow from the true ``V^(l+1)`` by one layer's
derivative, and a candidate rule can be checked one layer at a time, ``l = L+1, ..., 1``,
without expanding ``z^(L+1)``:

1. *The layer's own symbols.*  The rules are called with ``V^(l+1)`` as a matrix of
   symbols ``V{l+1}[k,r]`` (``V^(L+1) = I_K`` as it is) and ``a^(l-1)`` as symbols
   ``a{l-1}[j]`` (``x[j]`` for ``l = 1``); ``B^(l+1)``, ``D^(l)`` are the network's.  The
   truth is built from SymEngine derivatives of one layer in the same symbols::

       V^(l)_{km} = sum_i (sum_r V{l+1}[k,r] J^(l)_{ri}) d z^(l)_i / d b^(l)_m
       U^(l)_{k,(p,q)} = sum_i V{l}[k,i] d z^(l)_i / d B^(l)_{pq}

   with ``z^(l)_i = sum_j B^(l)_{ij} a{l-1}[j] + b^(l)_i``, and ``J^(l)`` the derivative of
   ``z^(l+1)`` by ``z^(l)`` (ReLU: ``a = d * z``; sigma: ``a = sigma(z)``, ``sigma'`` named
   ``s{l}[i]`` as in :mod:`.direct`).  Both sides are small polynomials: an entry is
   decided on its expanded form, and ``EQUAL`` holds for every value of the symbols.
2. *The real chain.*  The rules are also called as the recursion runs, on the
   previous claims and the network's ``a^(l-1)``.  Each such claim must be the
   layer-symbol claim with the symbols replaced by those values: checked as identical
   SymEngine expressions (canonical sums and products, shared nodes converted once),
   else on the expanded polynomials.  With step 1 and the claim
   ``V^(l+1)`` proved, the claim ``V^(l)`` is the true derivative.

A difference in step 1 is only a candidate refutation (the symbols stand for values
that may have more structure, e.g. ``V^(L+1) = I``): it is confirmed on the real chain's
expanded polynomials before it is reported, and then shown in the layer's own symbols.
An undecided comparison never passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import symengine as se
import sympy as sp

from .canonical import Decision, Expander, ToSymEngine, count_terms
from .network import SymbolicNetwork
from .recursion import _context, network_symbols
from .rules import call_rule, lecture_u_rule, lecture_v_rule


def _matrix_symbols(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda k, r: sp.Symbol(f"{name}[{k},{r}]"))


class LayerSymbols:
    """The own symbols of layer ``l`` (SymPy: ``a_prev``, ``V_next``, ``V``), the truths in
    them (SymEngine: ``true_V`` ``K x d_l``, ``true_U`` ``K x d_l d_{l-1}``, nested lists)
    and the rules' claims in them (``claim_V``, ``claim_U``, set by :func:`layer_claims`)."""

    def __init__(self, net: SymbolicNetwork, l: int, conv: ToSymEngine) -> None:
        w, L, K = net.widths, net.L, net.K
        self.l = l
        self.claim_V: sp.Matrix | None = None
        self.claim_U: sp.Matrix | None = None
        if l == 1 or net.activation == "sigma":
            self.a_prev = net.a[l - 1]  # x, or the sigma model's own a{l-1}[j] symbols
        else:
            self.a_prev = sp.Matrix([sp.Symbol(f"a{l - 1}[{j}]") for j in range(w[l - 1])])
        self.V_next = sp.eye(K) if l == L else (
            _matrix_symbols(f"V{l + 1}", K, w[l + 1]) if l < L else None)
        self.V = sp.eye(K) if l == L + 1 else _matrix_symbols(f"V{l}", K, w[l])
        B, b = net.B[l], net.b[l]
        alpha = [conv(e) for e in self.a_prev]
        z = [se.Add(*[conv(B[i, j]) * alpha[j] for j in range(w[l - 1])], conv(b[i]))
             for i in range(w[l])]
        b_sym = [conv(e) for e in b]
        beta = [conv(B[i, j]) for i in range(w[l]) for j in range(w[l - 1])]
        dz_db = [[zi.diff(p) for p in b_sym] for zi in z]          # d z^(l)_i / d b^(l)_m
        dz_dbeta = [[zi.diff(p) for p in beta] for zi in z]       # d z^(l)_i / d beta^(l)_c
        if l == L + 1:
            W = [[se.Integer(int(k == i)) for i in range(w[l])] for k in range(K)]
        else:
            J = _one_layer_jacobian(net, l, conv)
            Vn = [[conv(self.V_next[k, r]) for r in range(w[l + 1])] for k in range(K)]
            W = [[se.Add(*[Vn[k][r] * J[r][i] for r in range(w[l + 1])]) for i in range(w[l])]
                 for k in range(K)]
        Vs = [[conv(self.V[k, i]) for i in range(w[l])] for k in range(K)]
        self.true_V = [[se.Add(*[W[k][i] * dz_db[i][m] for i in range(w[l])])
                        for m in range(w[l])] for k in range(K)]
        self.true_U = [[se.Add(*[Vs[k][i] * dz_dbeta[i][c] for i in range(w[l])])
                        for c in range(w[l] * w[l - 1])] for k in range(K)]


def _one_layer_jacobian(net: SymbolicNetwork, l: int, conv: ToSymEngine):
    """``J[r][i] = d z^(l+1)_r / d z^(l)_i`` by SymEngine, ``z^(l)`` a free symbol ``zeta``."""
    w = net.widths
    zeta = [se.Symbol(f"zeta{l}[{i}]") for i in range(w[l])]
    if net.activation == "relu":
        act = [conv(net.slopes[l][i]) * zeta[i] for i in range(w[l])]
    else:
        sigma = se.Function("sigma")
        act = [sigma(zi) for zi in zeta]
    B_next, b_next = net.B[l + 1], net.b[l + 1]
    z_next = [se.Add(*[conv(B_next[r, i]) * act[i] for i in range(w[l])], conv(b_next[r]))
              for r in range(w[l + 1])]
    J = [[zr.diff(zi) for zi in zeta] for zr in z_next]
    if net.activation == "sigma":  # name sigma'(z^(l)_i) by the symbol s{l}[i] of D^(l)
        names = {act[i].diff(zeta[i]): conv(net.slopes[l][i]) for i in range(w[l])}
        J = [[e.xreplace(names) for e in row] for row in J]
    return J


class LayerClaims(NamedTuple):
    """Layer ``l``: ``own`` (its symbols, truths and the rules' claims in them, ``own.claim_V``,
    ``own.claim_U``) and the real chain's ``V^(l+1)``, ``V^(l)``, ``U^(l)`` as claimed."""

    l: int
    own: LayerSymbols
    V_next: sp.Matrix
    V: sp.Matrix
    U: sp.Matrix

    def own_to_real(self, quantity: str, net: SymbolicNetwork) -> dict:
        """Layer symbol -> real value, for the symbols the ``quantity`` claim was given."""
        own = self.own
        pairs = [] if own.a_prev is net.a[self.l - 1] else list(zip(own.a_prev, net.a[self.l - 1]))
        if quantity == "V":
            return dict(zip(own.V_next, self.V_next)) if self.l < net.L else {}
        return dict(pairs + (list(zip(own.V, self.V)) if self.l <= net.L else []))


def layer_claims(net: SymbolicNetwork, v_rule: Callable | None, u_rule: Callable | None,
                 conv: ToSymEngine):
    """Yield :class:`LayerClaims` for ``l = L+1, ..., 1`` (the order the recursion runs).

    ``None`` rules are the lecture's.  Raises :class:`~.rules.RuleError` from the generator.
    """
    v_rule = v_rule or lecture_v_rule
    u_rule = u_rule or lecture_u_rule
    K, L, w = net.K, net.L, net.widths
    symbols = network_symbols(net)
    V_real = V_real_next = sp.eye(K)
    for l in range(L + 1, 0, -1):
        own = LayerSymbols(net, l, conv)
        context = _context(net, l)
        own_symbols = symbols | set(own.a_prev) | set(own.V)
        if l <= L:
            own_symbols |= set(own.V_next)
            own.claim_V = call_rule(v_rule, "v_rule", (own.V_next, net.B[l + 1], net.D[l]),
                                    context, (K, w[l]), own_symbols)
            V_real_next = V_real
            V_real = call_rule(v_rule, "v_rule", (V_real_next, net.B[l + 1], net.D[l]),
                               context, (K, w[l]), symbols)
        else:
            own.claim_V = sp.eye(K)
        own.claim_U = call_rule(u_rule, "u_rule", (own.V, own.a_prev), context,
                                (K, w[l] * w[l - 1]), own_symbols)
        U_real = call_rule(u_rule, "u_rule", (V_real, net.a[l - 1]), context,
                           (K, w[l] * w[l - 1]), symbols)
        yield LayerClaims(l, own, V_real_next, V_real, U_real)


class LayerwiseDecider:
    """Decides one entry: own symbols first, then the real chain (see the module docstring)."""

    def __init__(self, net: SymbolicNetwork, conv: ToSymEngine) -> None:
        idempotents = [conv(s) for slope in net.slopes[1:] for s in slope] \
            if net.activation == "relu" else []
        self.own = Expander({}, idempotents)
        self.full = Expander({}, idempotents)
        self.conv = conv

    def decide(self, claim_own, true_own, claim_real, own_to_real: dict):
        """``(decision, shown, monomials)`` for one entry.

        ``claim_own`` (SymPy) and ``true_own`` (SymEngine): the claim and the truth in the
        layer's symbols; ``claim_real``: the SymPy claim of the real chain; ``own_to_real``:
        SymPy layer symbol -> its value in the real chain.  ``shown``: ``(claim, true,
        difference)`` as expanded SymEngine expressions, in the layer's symbols where the
        difference shows there.
        """
        conv = self.conv
        own_claim = conv(claim_own)
        decision, diff = self.own.difference(own_claim, true_own)
        monomials = count_terms(self.own.expand(true_own))
        shown = (self.own.expand(own_claim), self.own.expand(true_own), diff)
        if decision is Decision.UNDECIDED:
            return decision, shown, monomials
        values = {conv(k): conv(v) for k, v in own_to_real.items()}
        real_claim = conv(claim_real)
        if decision is Decision.EQUAL and real_claim == own_claim.xreplace(values):
            return Decision.EQUAL, shown, monomials
        real_true = true_own.xreplace(values)
        real, real_diff = self.full.difference(real_claim, real_true)
        if real is not Decision.EQUAL and decision is Decision.EQUAL:  # differs only as run
            shown = (self.full.expand(real_claim), self.full.expand(real_true), real_diff)
        return real, shown, monomials
