"""Planted wrong rules: the common mistakes of the bonus question (FACTS.md).

Each must be refuted by :func:`~bpcheck.symbolic.check_recursion`; a checker is only
trusted once it says "no" to these.  They differ from the truth only where the
mistake matters: the two Kronecker/vec mistakes need ``d_l > 1`` and ``d_{l-1} > 1``
(``a' kron I = I kron a'`` when either is 1), and the order swap and off-by-one are
refuted by value on square widths (on other widths they fail by shape, which is also
a refutation).  ``a' kron I`` and the column-stacked ``vec(B)`` are two spellings of
one matrix (they differ from the truth by the commutation matrix); both are kept
because students write both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import sympy as sp


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
    return V * sp.kronecker_product(a_prev.T, sp.eye(V.shape[1]))


def u_rule_column_stacked(V, a_prev):
    """Derivatives laid out in column-stacked ``vec(B^(l))`` order (``j*d_l + i``)."""
    K, d = V.shape
    return sp.Matrix(K, d * a_prev.shape[0], lambda k, c: V[k, c % d] * a_prev[c // d])


def v_rule_raises(V_next, B_next, D):
    """A rule that raises."""
    raise ValueError("this rule always fails")


def v_rule_wrong_shape(V_next, B_next, D):
    """The right product, transposed: shape ``d_l x K`` instead of ``K x d_l``."""
    return (V_next * B_next * D).T


def u_rule_wrong_type(V, a_prev):
    """Returns a list of lists instead of a SymPy Matrix."""
    return (V * sp.kronecker_product(sp.eye(V.shape[1]), a_prev.T)).tolist()


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
