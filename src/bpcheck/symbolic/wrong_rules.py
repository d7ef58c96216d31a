"""Planted wrong rules: the common mistakes of the bonus question (Kronecker factors in the
wrong order, ``vec(B)`` column-stacked, ``D`` left out, ``B^(l+1)`` vs ``B^(l)`` off by one),
and mistakes that are right on some widths only.

Each must be refuted (or rejected, by its shape or an error) by
:func:`~bpcheck.symbolic.check_recursion`; a checker is only
trusted once it says "no" to these.  They differ from the truth only where the
mistake matters: the two Kronecker/vec mistakes need ``d_l > 1`` and ``d_{l-1} > 1``
(``a' kron I = I kron a'`` when either is 1), and the order swap and off-by-one are
refuted by value on square widths (on other widths they fail by shape: rejected, the
wrong shape named).  ``a' kron I`` and the column-stacked ``vec(B)`` are two spellings of
one matrix (they differ from the truth by the commutation matrix); both are kept
because students write both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import sympy as sp

from .rules import kron


def v_rule_swapped_order(V_next, B_next, D):
    """``V^(l+1) D^(l) B^(l+1)``: ``D`` and ``B`` in the wrong order."""
    return V_next * D * B_next


def v_rule_without_D(V_next, B_next, D):
    """``V^(l+1) B^(l+1)``: the activation derivative left out."""
    return V_next * B_next


def v_rule_off_by_one(V_next, B_next, D, *, B):
    """``V^(l+1) B^(l) D^(l)``: the layer's own matrix instead of the next one's."""
    return V_next * B * D


def u_rule_swapped_kronecker(V, a_prev):
    """``V^(l) (a^(l-1)' kron I)``: Kronecker factors in the wrong order."""
    return V * kron(a_prev.T, sp.eye(V.shape[1]))


def u_rule_column_stacked(V, a_prev):
    """Derivatives laid out in column-stacked ``vec(B^(l))`` order (``j*d_l + i``)."""
    K, d = V.shape
    return sp.Matrix(K, d * a_prev.shape[0], lambda k, c: V[k, c % d] * a_prev[c // d])


def u_rule_split_by_d_l(V, a_prev):
    """Column ``i*d_l + j`` for ``V_{ki} a_j`` (split by ``d_l``, not ``d_{l-1}``): right only
    when ``d_l = d_{l-1}``; otherwise entries collide or stay 0."""
    K, d = V.shape
    d_prev = a_prev.shape[0]
    U = sp.zeros(K, d * d_prev)
    for k in range(K):
        for i in range(d):
            for j in range(d_prev):
                if i * d + j < d * d_prev:
                    U[k, i * d + j] = V[k, i] * a_prev[j]
    return U


def v_rule_inner_sum_min(V_next, B_next, D):
    """``sum_{t < min(d_l, d_{l+1})} V_kt B_tm d_m``: right only when ``d_{l+1} <= d_l``."""
    K, d_next = V_next.shape
    d = D.shape[0]
    n = min(d, d_next)
    return (V_next[:, :n] * B_next[:n, :]) * D


def v_rule_row_zero_copied(V_next, B_next, D):
    """Every row of ``V^(l)`` copied from row 0: right only for ``K = 1``."""
    row = V_next[0, :] * B_next * D
    return sp.Matrix.vstack(*[row] * V_next.shape[0])


def v_rule_wrong_beyond_depth_6(V_next, B_next, D, *, widths):
    """The lecture's rule for ``L <= 6``, ``D`` left out for ``L > 6``."""
    return V_next * B_next if len(widths) - 2 > 6 else V_next * B_next * D


def v_rule_wrong_above_width_4(V_next, B_next, D, *, widths):
    """The lecture's rule while every width is at most 4, ``D`` left out otherwise."""
    return V_next * B_next if max(widths) > 4 else V_next * B_next * D


def v_rule_raises(V_next, B_next, D):
    """A rule that raises."""
    raise ValueError("this rule always fails")


def v_rule_wrong_shape(V_next, B_next, D):
    """The right product, transposed: shape ``d_l x K`` instead of ``K x d_l``."""
    return (V_next * B_next * D).T


def u_rule_wrong_type(V, a_prev):
    """Returns a list of lists instead of a SymPy Matrix."""
    return (V * kron(sp.eye(V.shape[1]), a_prev.T)).tolist()


class PlantedRule(NamedTuple):
    name: str
    mistake: str
    v_rule: Callable | None
    u_rule: Callable | None
    widths: tuple[int, ...]
    """Widths on which the mistake shows."""


PLANTED: tuple[PlantedRule, ...] = (
    PlantedRule("swapped order", "V^(l+1) D^(l) B^(l+1)", v_rule_swapped_order, None, (3, 3, 3, 3)),
    PlantedRule("D omitted", "V^(l+1) B^(l+1)", v_rule_without_D, None, (2, 3, 4, 2)),
    PlantedRule("off by one", "V^(l+1) B^(l) D^(l)", v_rule_off_by_one, None, (3, 3, 3, 3)),
    PlantedRule("a' kron I", "V^(l) (a^(l-1)' kron I)", None, u_rule_swapped_kronecker,
                (2, 3, 4, 2)),
    PlantedRule("column-stacked vec(B)", "columns in vec(B^(l)) order", None,
                u_rule_column_stacked, (2, 3, 4, 2)),
    PlantedRule("rule raises", "raises ValueError", v_rule_raises, None, (2, 3, 2)),
    PlantedRule("wrong shape", "returns V^(l)' (d_l x K)", v_rule_wrong_shape, None, (2, 3, 2)),
    PlantedRule("wrong type", "returns a list", None, u_rule_wrong_type, (2, 3, 2)),
)
"""The refutation controls run by ``bpcheck verify``."""

WIDTH_DEPENDENT: tuple[PlantedRule, ...] = (
    PlantedRule("U split by d_l", "column i*d_l + j instead of i*d_(l-1) + j", None,
                u_rule_split_by_d_l, (2, 3, 2)),
    PlantedRule("inner sum to min(d_l, d_(l+1))", "sum_(t < min(d_l, d_(l+1))) V_kt B_tm d_m",
                v_rule_inner_sum_min, None, (2, 2, 3, 2)),
    PlantedRule("row 0 copied", "every row of V^(l) is row 0", v_rule_row_zero_copied, None,
                (2, 3, 3, 2)),
    PlantedRule("wrong beyond L = 6", "D left out when L > 6", v_rule_wrong_beyond_depth_6,
                None, (2,) * 9),
    PlantedRule("wrong above width 4", "D left out when a width exceeds 4",
                v_rule_wrong_above_width_4, None, (2, 5, 3, 2)),
)
"""Rules right on some widths only; each is refuted on the widths given, and the default
grid of :func:`~bpcheck.symbolic.check_recursion` refutes all but the one that is wrong
only beyond the grid's depth."""

KNOWN: tuple[PlantedRule, ...] = tuple(p for p in PLANTED + WIDTH_DEPENDENT
                                       if p.name not in ("rule raises", "wrong shape", "wrong type",
                                                         "wrong beyond L = 6",
                                                         "wrong above width 4"))
"""The known mistakes a refuted rule is compared with, to name it."""
