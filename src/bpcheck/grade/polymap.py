"""Exercise 4's rules as plain data: a matrix of polynomials in the inputs' entries.

In the child, the student's ``v_rule(V_next, B_next, D)`` and ``u_rule(V, a_prev)`` are
applied to matrices of fresh symbols ``x0, x1, ...`` (row-major: the entries of the first
argument, then the second, then the diagonal of ``D``); each output entry is expanded to
a polynomial and sent back as integer arrays: exponents ``(terms, n_vars)``, numerators,
denominators and the number of terms per entry.  Here the grader rebuilds the map and
evaluates it on whatever matrices the checker passes.  No string from the child is ever
parsed or ``sympify``-ed.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import sympy

_MAX_TERMS = 200_000


def _int_array(name, a, ndim):
    if type(a) is not np.ndarray or a.dtype != np.int64 or a.ndim != ndim:
        raise ValueError(f"malformed polynomial data ({name})")
    return a


@dataclass
class PolyMatrix:
    """``rows x cols`` entries, each ``[(exponents tuple, Fraction)]``."""

    shape: tuple[int, int]
    n_vars: int
    entries: list

    @classmethod
    def from_arrays(cls, shape, exps, num, den, counts, n_vars) -> PolyMatrix:
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(s, int) and 0 <= s <= 64 for s in shape)):
            raise ValueError(f"malformed output shape {shape!r}")
        exps = _int_array("exponents", exps, 2)
        num, den, counts = (_int_array(n, a, 1) for n, a in
                            (("numerators", num), ("denominators", den), ("counts", counts)))
        T = exps.shape[0]
        if (exps.shape[1] != n_vars or num.shape != (T,) or den.shape != (T,)
                or counts.shape != (shape[0] * shape[1],) or T > _MAX_TERMS
                or int(counts.sum()) != T or (counts < 0).any() or (exps < 0).any()
                or (exps > 64).any() or (den <= 0).any()):
            raise ValueError("malformed polynomial data")
        entries, k = [], 0
        for c in counts.tolist():
            entries.append([(tuple(exps[t].tolist()), Fraction(int(num[t]), int(den[t])))
                            for t in range(k, k + c)])
            k += c
        return cls((shape[0], shape[1]), n_vars, entries)

    def evaluate(self, values) -> sympy.Matrix:
        """The matrix at ``values`` (``n_vars`` SymPy expressions or numbers)."""
        if len(values) != self.n_vars:
            raise ValueError(f"expected {self.n_vars} values, got {len(values)}")
        out = []
        for terms in self.entries:
            total = sympy.Integer(0)
            for exps, coeff in terms:
                term = sympy.Rational(coeff.numerator, coeff.denominator)
                for v, e in zip(values, exps):
                    if e:
                        term = term * v ** e
                total += term
            out.append(total)
        return sympy.Matrix(self.shape[0], self.shape[1], out)


def _entries(M):
    M = sympy.Matrix(M)
    return M.shape, list(M)


def rule_callables(polys: dict):
    """``v_rule`` and ``u_rule`` for the checker, evaluating the student's polynomial maps."""

    def lookup(rule, shape):
        try:
            return polys[(rule, shape)]
        except KeyError:
            raise ValueError(f"{rule} was not evaluated for input shape {shape}") from None

    def v_rule(V_next, B_next, D):
        (K, dn), v = _entries(V_next)
        (_, d), b = _entries(B_next)
        Dm = sympy.Matrix(D)
        diag = [Dm[i, i] for i in range(d)]
        return lookup("v_rule", (K, dn, d)).evaluate(v + b + diag)

    def u_rule(V, a_prev):
        (K, d), v = _entries(V)
        (dp, _), a = _entries(a_prev)
        return lookup("u_rule", (K, d, dp)).evaluate(v + a)

    return v_rule, u_rule
