"""A canonical form for sums over symbolic ranges (generic widths).

SymPy's ``Sum`` objects carry bound variables whose names are arbitrary (matrix
entries get fresh ``Dummy`` names), and two sums nested differently can be equal.
:func:`sum_normal_form` maps an expression to a dictionary

    (bound ranges, monomial) -> coefficient

by pulling every ``Sum`` out to the front of its term (bound variables first renamed
apart), expanding the body, and renaming the bound variables canonically: ordered by
their range, ties broken by trying each order and keeping the smallest result.  Each
step keeps the value, so equal normal forms prove equal expressions; this is how
structural comparison is made meaningful despite the fresh dummy names.

``KroneckerDelta`` factors are summed out on the way (``sum_v delta(v, e) f(v) = f(e)``),
but only when ``e`` is known to range over exactly ``v``'s range (a free index whose
size is given, or another bound variable with the same limits); SymPy's own ``doit``
would leave ``Piecewise`` guards behind instead.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import sympy as sp


def _terms(expr):
    """``[(limits, body)]`` with ``expr == sum(Sum(body, *limits))`` and no Sum in bodies."""
    if isinstance(expr, sp.Add):
        return [t for a in expr.args for t in _terms(a)]
    if isinstance(expr, sp.Mul):
        out = [((), sp.Integer(1))]
        for f in expr.args:
            out = [(l1 + l2, b1 * b2) for l1, b1 in out for l2, b2 in _terms(f)]
        return out
    if isinstance(expr, sp.Sum):
        body, limits = expr.function, []
        for v, lo, hi in expr.limits:
            fresh = sp.Dummy(v.name, integer=True)
            body = body.xreplace({v: fresh})
            limits.append((fresh, lo, hi))
        return [(tuple(limits) + l, b) for l, b in _terms(body)]
    if isinstance(expr, sp.Pow) and expr.exp.is_Integer and expr.exp > 0 and expr.base.has(sp.Sum):
        return _terms(sp.Mul(*([expr.base] * int(expr.exp)), evaluate=False))
    return [((), expr)]


class _Bound(sp.Symbol):
    """The canonical name of a bound index: a class of its own, so that no free symbol of
    the caller's (a ``Symbol("_j0", integer=True)`` say) is ever taken for one."""


def _rename(limits, body):
    if not limits:
        return (), body
    ranges = sorted({(lo, hi) for _, lo, hi in limits}, key=sp.default_sort_key)
    groups = [[v for v, lo, hi in limits if (lo, hi) == r] for r in ranges]
    best = None
    for order in itertools.product(*[itertools.permutations(g) for g in groups]):
        names, key, n = {}, [], 0
        for r, vs in zip(ranges, order):
            for v in vs:
                names[v] = _Bound(f"_j{n}", integer=True)
                key.append((names[v], r[0], r[1]))
                n += 1
        candidate = (tuple(key), body.xreplace(names))
        text = sp.srepr(candidate)
        if best is None or text < best[0]:
            best = (text, candidate)
    return best[1]


def _collapse_deltas(limits, mono, ranges):
    """Sum over ``v`` of ``delta(v, e) f(v)`` is ``f(e)`` when ``e`` ranges over ``v``'s range."""
    limits = list(limits)
    changed = True
    while changed:
        changed = False
        for delta in [f for f in sp.Mul.make_args(mono) if isinstance(f, sp.KroneckerDelta)]:
            for pos, (v, lo, hi) in enumerate(limits):
                if v not in delta.args:
                    continue
                e = delta.args[1] if delta.args[0] == v else delta.args[0]
                same_free = e in ranges and (lo, hi) == (0, ranges[e] - 1)
                same_bound = any(w == e and (lo2, hi2) == (lo, hi) for w, lo2, hi2 in limits)
                if e != v and (same_free or same_bound):
                    mono = (mono / delta).xreplace({v: e})
                    del limits[pos]
                    changed = True
                    break
            if changed:
                break
    return tuple(limits), mono


def sum_normal_form(expr, ranges: dict | None = None) -> dict:
    """``{(ranges, monomial): coefficient}``, a canonical form of a sum of products.

    ``ranges``: free index -> its size; used to sum out ``KroneckerDelta`` factors.
    """
    ranges = ranges or {}
    out: dict = defaultdict(lambda: sp.Integer(0))
    for limits, body in _terms(expr):
        for mono in sp.Add.make_args(sp.expand(body)):
            limits_left, mono = _collapse_deltas(limits, mono, ranges)
            coeff, rest = mono.as_coeff_Mul()
            out[_rename(limits_left, rest)] += coeff
    return {k: v for k, v in out.items() if v != 0}
