"""Deciding equality of two polynomials on a canonical form (SymEngine's expanded form).

A polynomial with rational coefficients has one expanded form: a sum of distinct
monomials with non-zero coefficients.  Two expressions are equal exactly when their
difference expands to ``0``.  This module does nothing else: it converts SymPy to
SymEngine, expands (memoised over shared subexpressions, so a network's nested
expression is expanded once per node, not once per path), and classifies the
difference:

* ``EQUAL``: the difference expands to exactly ``0`` (after ``d^2 = d`` for 0/1 symbols);
* ``DIFFERENT``: it expands to a polynomial that is not ``0``;
* ``UNDECIDED``: it is not a polynomial with rational coefficients (a float, a
  division, an unknown function), so the expanded form is not known to be canonical.

``UNDECIDED`` never counts as a pass, just as SymPy's ``None`` does not.

Expansion can *rename* subexpressions first (``replacements``): the true derivative
in the sigma model is written with ``sigma(z)`` and ``sigma'(z)``, which become the
symbols ``a`` and ``s``; and a proof may replace a forward value ``z^(m)_j`` by a free
symbol ``zeta`` on both sides.  Equality of the renamed polynomials in free symbols
implies equality after substituting the values back, so ``EQUAL`` stays a proof;
a renamed ``DIFFERENT`` is only a hint and must be confirmed without the renaming.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import symengine as se
import sympy as sp


class Decision(enum.Enum):
    EQUAL = "equal"
    DIFFERENT = "different"
    UNDECIDED = "undecided"


_SE_INEXACT = tuple(getattr(se, name) for name in
                    ("RealDouble", "ComplexDouble", "RealMPFR", "ComplexMPFR")
                    if hasattr(se, name))


def _inexact(number) -> TypeError:
    return TypeError(f"the floating-point number {number} is not exact; "
                     "use integers or sympy.Rational")


class ToSymEngine:
    """SymPy -> SymEngine conversion, memoised by object identity.

    The recursion's claims share subexpressions (``V^(l)`` is built from the entries
    of ``V^(l+1)``); converting each SymPy node once keeps the cost linear in the
    number of distinct nodes.  Unknown node types go through ``symengine.sympify``,
    which raises for what SymEngine cannot represent; a ``Float`` raises ``TypeError``
    (rounding could make unequal things look equal, so floats are never compared),
    wherever it sits: inside an unevaluated node (``Abs(Float(1e-17), evaluate=False)``)
    SymEngine would evaluate it in double precision, where ``1 + 1e-17`` is ``1``.
    """

    def __init__(self) -> None:
        self._memo: dict[int, tuple[object, se.Basic]] = {}

    def __call__(self, expr) -> se.Basic:
        hit = self._memo.get(id(expr))
        if hit is not None:
            return hit[1]
        if isinstance(expr, sp.Symbol):
            out = se.Symbol(expr.name)
        elif isinstance(expr, sp.Float):
            raise _inexact(expr)
        elif isinstance(expr, sp.Add):
            out = se.Add(*[self(a) for a in expr.args])
        elif isinstance(expr, sp.Mul):
            out = se.Mul(*[self(a) for a in expr.args])
        elif isinstance(expr, sp.Pow):
            out = se.Pow(self(expr.args[0]), self(expr.args[1]))
        else:
            floats = expr.atoms(sp.Float) if isinstance(expr, sp.Basic) else ()
            if floats:
                raise _inexact(min(floats, key=str))
            out = se.sympify(expr)
            inexact = out.atoms(*_SE_INEXACT)
            if inexact:
                raise _inexact(min(inexact, key=str))
        self._memo[id(expr)] = (expr, out)  # keep expr alive so its id is not reused
        return out


class Expander:
    """Expanded form of SymEngine expressions, memoised over shared subexpressions.

    ``replacements`` maps a subexpression to what it is renamed to before expanding
    (matched structurally, outermost first).  ``idempotents`` are 0/1 symbols: a
    difference is reduced with ``d^k = d`` before it is called non-zero.
    """

    def __init__(self, replacements: dict | None = None, idempotents: Iterable = ()) -> None:
        self.replacements = dict(replacements or {})
        self.idempotents = frozenset(idempotents)
        self._memo: dict[se.Basic, se.Basic] = {}

    def expand(self, expr: se.Basic) -> se.Basic:
        memo = self._memo
        out = memo.get(expr)
        if out is not None:
            return out
        if expr in self.replacements:
            out = self.replacements[expr]
        elif isinstance(expr, se.Add):
            out = se.Add(*[self.expand(a) for a in expr.args])
        elif isinstance(expr, se.Mul):
            out = se.expand(se.Mul(*[self.expand(a) for a in expr.args]))
        elif isinstance(expr, se.Pow):
            base, exponent = expr.args
            out = se.expand(se.Pow(self.expand(base), exponent))
        else:
            out = expr
        memo[expr] = out
        return out

    def reduce_idempotents(self, poly: se.Basic) -> se.Basic:
        """``poly`` with every power ``d^k`` (``k >= 1``) of a 0/1 symbol replaced by ``d``."""
        if not self.idempotents:
            return poly

        def factor(f):
            if isinstance(f, se.Pow) and f.args[0] in self.idempotents and f.args[1].is_Integer \
                    and int(f.args[1]) >= 1:
                return f.args[0]
            return f

        def term(t):
            if isinstance(t, se.Mul):
                return se.Mul(*[factor(f) for f in t.args])
            return factor(t)

        terms = poly.args if isinstance(poly, se.Add) else (poly,)
        return se.expand(se.Add(*[term(t) for t in terms]))

    def difference(self, claim: se.Basic, true: se.Basic) -> tuple[Decision, se.Basic]:
        """Decide ``claim == true``; returns the decision and the canonical difference."""
        diff = self.expand(claim) - self.expand(true)  # both expanded: like terms cancel
        if diff != 0:
            diff = self.reduce_idempotents(se.expand(diff))
        if diff == 0:
            return Decision.EQUAL, diff
        return (Decision.DIFFERENT if is_polynomial(diff) else Decision.UNDECIDED), diff


def _is_monomial_factor(f: se.Basic) -> bool:
    if isinstance(f, se.Symbol):
        return True
    if isinstance(f, (se.Integer, se.Rational)):
        return True
    if isinstance(f, se.Pow):
        base, exponent = f.args
        return isinstance(base, se.Symbol) and isinstance(exponent, se.Integer) \
            and int(exponent) >= 1
    return False


def is_polynomial(expr: se.Basic) -> bool:
    """Whether an *expanded* expression is a polynomial with rational coefficients."""
    terms = expr.args if isinstance(expr, se.Add) else (expr,)
    for t in terms:
        factors = t.args if isinstance(t, se.Mul) else (t,)
        if not all(_is_monomial_factor(f) for f in factors):
            return False
    return True


def count_terms(expr: se.Basic) -> int:
    """Number of monomials of an expanded expression."""
    if expr == 0:
        return 0
    return len(expr.args) if isinstance(expr, se.Add) else 1


def short(expr, limit: int = 400) -> str:
    """``str(expr)``, cut to ``limit`` characters with the number of terms when long."""
    text = str(expr)
    if len(text) <= limit:
        return text
    n = count_terms(expr) if isinstance(expr, se.Basic) else None
    more = f", {n} terms in all" if n else ""
    return text[:limit] + f" ... ({len(text)} characters{more})"
