"""The checker says "no" to every planted mistake of the bonus question, with the place."""

import pytest
import sympy as sp

from bpcheck.symbolic import PLANTED, check_recursion
from bpcheck.symbolic import wrong_rules as wr

MODELS = ["relu", "sigma"]


def _refuted_by_value(report, quantity):
    assert report.holds is False
    assert report.error is None, report.error
    m = report.mismatch
    assert m is not None and m.decision == "different" and m.quantity == quantity
    text = str(report)
    assert text.startswith("refuted") and "claim:" in text and "true:" in text
    assert f"layer l = {m.l}" in text
    return m


@pytest.mark.parametrize("model", MODELS)
def test_checker_rejects_swapped_D_B_order(model):
    m = _refuted_by_value(check_recursion([3, 3, 3, 3], wr.v_rule_swapped_order,
                                          activation=model), "V")
    assert m.l == 2  # the first layer the rule produces


@pytest.mark.parametrize("model", MODELS)
def test_checker_rejects_omitted_D(model):
    _refuted_by_value(check_recursion([2, 3, 4, 2], wr.v_rule_without_D, activation=model), "V")


@pytest.mark.parametrize("model", MODELS)
def test_checker_rejects_B_of_the_wrong_layer(model):
    m = _refuted_by_value(check_recursion([3, 3, 3, 3], wr.v_rule_off_by_one,
                                          activation=model), "V")
    assert "B2" in m.claim and "B3" in m.true


def test_off_by_one_on_non_square_widths_is_refuted_by_its_shape_error():
    report = check_recursion([2, 3, 4, 2], wr.v_rule_off_by_one)
    assert report.holds is False and "v_rule at layer l = 2 raised" in report.error


@pytest.mark.parametrize("model", MODELS)
def test_checker_rejects_swapped_kronecker_order(model):
    m = _refuted_by_value(check_recursion([2, 3, 4, 2], u_rule=wr.u_rule_swapped_kronecker,
                                          activation=model), "U")
    assert m.l == 3 and m.parameter.startswith("B3[")


@pytest.mark.parametrize("model", MODELS)
def test_checker_rejects_column_stacked_vec_B(model):
    _refuted_by_value(check_recursion([2, 3, 4, 2], u_rule=wr.u_rule_column_stacked,
                                      activation=model), "U")


def test_swapped_kronecker_order_is_right_when_a_width_is_one():
    """a' kron I = I kron a' if d_l = 1 or d_(l-1) = 1: why the controls use wider layers."""
    assert check_recursion([1, 1, 1], u_rule=wr.u_rule_swapped_kronecker).holds


def test_a_rule_that_raises_is_refuted_with_its_message():
    report = check_recursion([2, 3, 2], wr.v_rule_raises)
    assert report.holds is False
    assert "v_rule at layer l = 1 raised ValueError: this rule always fails" in str(report)


def test_a_rule_returning_the_wrong_shape_is_refuted():
    report = check_recursion([2, 3, 2], wr.v_rule_wrong_shape)
    assert report.holds is False and "returned shape (3, 2); expected (2, 3)" in report.error


@pytest.mark.parametrize("value", [[[1, 2]], None, 3, "V"])
def test_a_rule_returning_the_wrong_type_is_refuted(value):
    report = check_recursion([2, 3, 2], u_rule=lambda V, a_prev: value)
    assert report.holds is False and "expected a SymPy Matrix" in report.error


def test_a_rule_that_exits_is_refuted_not_a_crash():
    def rule(V_next, B_next, D):
        raise SystemExit(0)

    assert "raised SystemExit" in check_recursion([2, 3, 2], rule).error


def test_a_matrix_with_non_sympy_entries_is_refuted():
    report = check_recursion([2, 2], u_rule=lambda V, a_prev: sp.Matrix([[object()] * 4] * 2))
    assert report.holds is False


@pytest.mark.parametrize("planted", PLANTED, ids=[p.name for p in PLANTED])
def test_every_planted_rule_is_refuted_on_its_widths(planted):
    for model in MODELS:
        assert not check_recursion(planted.widths, planted.v_rule, planted.u_rule,
                                   activation=model).holds
