"""Candidate rules for ``V`` and ``U``, and the one place that calls them.

A rule is a plain Python callable on SymPy ``Matrix`` objects:

``v_rule(V_next, B_next, D) -> V``
    ``V_next`` = ``V^(l+1)`` ``K x d_{l+1}``, ``B_next`` = ``B^(l+1)`` ``d_{l+1} x d_l``,
    ``D`` = ``D^(l)`` diagonal ``d_l x d_l``; returns ``V^(l)``, ``K x d_l``.
``u_rule(V, a_prev) -> U``
    ``V`` = ``V^(l)`` ``K x d_l``, ``a_prev`` = ``a^(l-1)`` a column ``d_{l-1} x 1``;
    returns ``U^(l)``, ``K x d_l d_{l-1}``, column ``i*d_{l-1} + j`` holding the
    derivative with respect to ``B^(l)_{ij}`` (``vec(B^(l)')`` order).

Extra context, by name.  A rule may declare *keyword-only* parameters named in
:data:`CONTEXT` (``l``, ``B``, ``b``, ``a_prev``, ``D``, ``widths``); the checker passes
those, and only those.  This is how a candidate can use the wrong layer's matrix, the
student's off-by-one mistake ``V^(l) = V^(l+1) B^(l) D^(l)``, written
``def rule(V_next, B_next, D, *, B): return V_next * B * D``: the positional
arguments stay as they are, and a rule sees more only when it asks for it by name.

Whatever a rule does, :func:`call_rule` returns a Matrix of the expected shape or
raises :class:`RuleError` with a message that says what went wrong; the checker turns
that into a refutation, never a crash.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import sympy as sp

CONTEXT = ("l", "B", "b", "a_prev", "D", "widths")
"""Names a rule may ask for as keyword-only parameters."""

RESERVED = re.compile(r"(zeta|V|a)\d+\[")
"""Names the checker gives its own symbols (``zeta2[0]``, ``V3[0,1]``, ``a1[2]``)."""


def lecture_v_rule(V_next: sp.Matrix, B_next: sp.Matrix, D: sp.Matrix) -> sp.Matrix:
    """The lecture's ``V^(l) = V^(l+1) B^(l+1) D^(l)``: ``(K x d_{l+1})(d_{l+1} x d_l)(d_l x d_l)``."""
    return V_next * B_next * D


def lecture_u_rule(V: sp.Matrix, a_prev: sp.Matrix) -> sp.Matrix:
    """The lecture's ``U^(l) = V^(l) (I_{d_l} kron a^(l-1)')``: ``K x d_l d_{l-1}``."""
    return V * kron(sp.eye(V.shape[1]), a_prev.T)


def kron(A: sp.Matrix, C: sp.Matrix) -> sp.Matrix:
    """The Kronecker product, ``(A kron C)_{(r_1, r_2), (c_1, c_2)} = A_{r_1 c_1} C_{r_2 c_2}``
    (pairs in row-major order), entries used as they are.

    ``sympy.kronecker_product`` gives the same matrix but calls ``doit`` on every entry,
    which walks a network's nested forward values once per path.

    >>> kron(sp.eye(2), sp.Matrix([[1, 2]]))
    Matrix([
    [1, 2, 0, 0],
    [0, 0, 1, 2]])
    """
    r, c = C.shape
    return sp.Matrix(A.rows * r, A.cols * c,
                     lambda i, j: A[i // r, j // c] * C[i % r, j % c])


class RuleError(Exception):
    """A rule raised, or returned something other than a SymPy Matrix of the right shape."""


def _extras(rule: Callable, context: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(rule).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: context[p.name] for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in context}


def call_rule(rule: Callable, name: str, args: tuple, context: dict[str, Any],
              shape: tuple[int, int], symbols: frozenset = frozenset()) -> sp.Matrix:
    """Call ``rule(*args, **extras)`` and check it returned a SymPy matrix of ``shape``.

    The rule gets copies of the matrices, so changing them in place changes nothing the
    checker uses.  ``symbols``: the symbols the rule was given; a returned symbol that is
    not one of them but has one's name (or a name of the form the checker uses for its
    own symbols, :data:`RESERVED`) is an error, as entries are compared by symbol name.
    Returns a fresh mutable ``Matrix`` copy (the rule's object is not used further).
    Raises :class:`RuleError` naming the rule, the layer and what was wrong.
    """
    where = f"{name} at layer l = {context['l']}"
    args = tuple(_copy(a) for a in args)
    try:
        extras = {k: _copy(v) for k, v in _extras(rule, context).items()}
        result = rule(*args, **extras)
    except (Exception, SystemExit) as exc:  # noqa: BLE001  (refuted, never a crash)
        raise RuleError(f"{where} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(result, sp.MatrixBase):
        hint = (" (call .as_explicit() or .doit() on a matrix expression)"
                if isinstance(result, sp.MatrixExpr) else "")
        raise RuleError(f"{where} returned {type(result).__name__}; expected a SymPy Matrix "
                        f"of shape {shape}{hint}")
    if tuple(result.shape) != tuple(shape):
        raise RuleError(f"{where} returned shape {tuple(result.shape)}; expected {shape}")
    entries = list(result)
    bad = [e for e in entries if not isinstance(e, sp.Expr) or isinstance(e, sp.MatrixBase)]
    # (sp.Basic alone let sp.true, a Tuple or an Interval through, to fail later in a rule
    # the user did not write)
    if bad:
        raise RuleError(f"{where} returned an entry {short_repr(bad[0])} that is not a SymPy "
                        "scalar expression")
    if symbols:
        names = {str(s) for s in symbols}
        foreign = sorted({_name(s) for s in _symbols_in(entries)
                          if s not in symbols and (_name(s) in names or RESERVED.match(_name(s)))})
        if foreign:
            raise RuleError(f"{where} returned symbols named like the network's but not "
                            f"the network's own: {', '.join(foreign[:5])} (use the matrices "
                            "the rule is given)")
    return sp.Matrix(shape[0], shape[1], entries)


def _symbols_in(entries) -> set:
    """Every symbol in ``entries``, each shared subexpression visited once (unlike
    ``free_symbols``, which walks a shared node once per path)."""
    seen, out, stack = set(), set(), list(entries)
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, sp.Symbol):
            out.add(e)
        else:
            stack.extend(e.args)
    return out


def _name(symbol: Any) -> str:
    return str(getattr(symbol, "name", symbol))  # a Dummy prints as _x but is named x


def _copy(value: Any) -> Any:
    if isinstance(value, sp.MatrixBase):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value


def short_repr(value: Any, limit: int = 80) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
