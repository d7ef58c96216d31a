"""The claim: ``V^(l)`` and ``U^(l)`` built by the recursion only.

Starting from ``V^(L+1) = I_K`` the rules are applied backwards, ``l = L+1, ..., 1``::

    V^(l) = v_rule(V^(l+1), B^(l+1), D^(l))        (l <= L)
    U^(l) = u_rule(V^(l), a^(l-1))

with the network's symbols and forward values; no derivative is taken here.  The
claims are produced lazily, layer by layer, so that a checker can stop at the first
layer where a claim fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import sympy as sp

from .network import SymbolicNetwork
from .rules import call_rule, lecture_u_rule, lecture_v_rule


class LayerClaim(NamedTuple):
    """``V`` = ``V^(l)`` (``K x d_l``) and ``U`` = ``U^(l)`` (``K x d_l d_{l-1}``) as claimed."""

    l: int
    V: sp.Matrix
    U: sp.Matrix


def _context(net: SymbolicNetwork, l: int) -> dict:
    return {"l": l, "B": net.B[l], "b": net.b[l], "a_prev": net.a[l - 1],
            "D": net.D[l] if l <= net.L else sp.eye(net.widths[l]), "widths": net.widths}


def claims(net: SymbolicNetwork, v_rule: Callable | None = None,
           u_rule: Callable | None = None) -> Iterator[LayerClaim]:
    """Yield :class:`LayerClaim` for ``l = L+1, L, ..., 1`` (the order the recursion runs).

    ``None`` rules are the lecture's.  A rule that misbehaves raises
    :class:`~bpcheck.symbolic.rules.RuleError` from the generator.
    """
    v_rule = v_rule or lecture_v_rule
    u_rule = u_rule or lecture_u_rule
    K, L, w = net.K, net.L, net.widths
    symbols = network_symbols(net)
    V = sp.eye(K)  # the seed V^(L+1) = I_K
    for l in range(L + 1, 0, -1):
        context = _context(net, l)
        if l <= L:
            V = call_rule(v_rule, "v_rule", (V, net.B[l + 1], net.D[l]), context, (K, w[l]),
                          symbols)
        U = call_rule(u_rule, "u_rule", (V, net.a[l - 1]), context, (K, w[l] * w[l - 1]),
                      symbols)
        yield LayerClaim(l, V, U)


def network_symbols(net: SymbolicNetwork) -> frozenset:
    """Every symbol of the network: inputs, parameters, activation-pattern symbols and
    (sigma model) the activation values ``a{l}[i]``."""
    out = set(net.x)
    for l in range(1, len(net.widths)):
        out |= set(net.B[l]) | set(net.b[l])
        if l <= net.L:
            out |= set(net.slopes[l])
            if net.activation == "sigma":
                out |= set(net.a[l])
    return frozenset(out)
