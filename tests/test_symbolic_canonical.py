"""Equality is decided on the expanded polynomial; undecided is never equal."""

import pytest
import symengine as se
import sympy as sp

from bpcheck.symbolic.canonical import Decision, Expander, ToSymEngine, is_polynomial

x, y, d = se.symbols("x y d")


def test_equal_polynomials_written_differently_are_equal():
    decision, diff = Expander().difference((x + y) ** 2, x**2 + 2 * x * y + y**2)
    assert decision is Decision.EQUAL and diff == 0


def test_different_polynomials_are_different_with_the_difference():
    decision, diff = Expander().difference((x + y) ** 2, x**2 + y**2)
    assert decision is Decision.DIFFERENT and diff == 2 * x * y


def test_zero_one_symbols_reduce_powers_only_when_declared():
    assert Expander(idempotents=[d]).difference(d**3 * x, d * x)[0] is Decision.EQUAL
    assert Expander().difference(d**3 * x, d * x)[0] is Decision.DIFFERENT


def test_non_polynomial_difference_is_undecided():
    decision, _ = Expander().difference(se.sin(x) ** 2 + se.cos(x) ** 2, se.Integer(1))
    assert decision is Decision.UNDECIDED
    assert not is_polynomial(se.expand(se.sin(x) + x))
    assert is_polynomial(se.expand(3 * x**2 * y - se.Rational(1, 2)))


def test_renaming_applies_to_shared_subexpressions_before_expanding():
    z = x + y
    zeta = se.Symbol("zeta")
    e = Expander({z: zeta})
    assert e.expand(d * z * (x * z + 1)) == se.expand(d * zeta * (x * zeta + 1))


def test_conversion_keeps_shared_nodes_and_rejects_floats():
    conv = ToSymEngine()
    a, b = sp.symbols("a b")
    shared = a + b
    assert conv(shared * shared + shared) == se.sympify((a + b) ** 2 + a + b)
    with pytest.raises(TypeError, match="not exact"):
        conv(sp.Float(0.5) * a)


def test_a_float_inside_an_unevaluated_node_is_not_compared():
    # SymEngine evaluates Abs(1e-17) in double precision, where 1 + 1e-17 is 1: had the
    # float gone through, the claim V B D * (1 + 1e-17) would have been proved
    conv = ToSymEngine()
    a = sp.Symbol("a")
    with pytest.raises(TypeError, match="not exact"):
        conv(a * (1 + sp.Abs(sp.Float(1e-17), evaluate=False)))
    with pytest.raises(TypeError, match="not exact"):
        conv(3 * sp.Abs(sp.Float(1 / 3), evaluate=False))
    assert conv(sp.Abs(sp.Rational(1, 3), evaluate=False) * a) == se.Rational(1, 3) * se.Symbol("a")


def test_a_claim_off_by_a_float_hidden_in_an_unevaluated_node_is_not_proved():
    from bpcheck.symbolic import check_recursion
    factor = 1 + sp.Abs(sp.Float(1e-17), evaluate=False)
    result = check_recursion([2, 3, 3, 2],
                             v_rule=lambda V, B, D: (V * B * D).applyfunc(lambda e: e * factor))
    assert not result.holds
    assert "not exact" in str(result)
