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


def test_a_u_rule_that_edits_its_V_in_place_cannot_hide_a_wrong_v_rule():
    from bpcheck.symbolic.wrong_rules import v_rule_without_D

    def u_rule_that_repairs_V(V, a_prev, *, D, l, widths):
        if l <= len(widths) - 2:
            V[:, :] = V * D  # would turn the wrong V^(l) into the right one, if it were used
        return V * sp.kronecker_product(sp.eye(V.shape[1]), a_prev.T)

    for activation in ("relu", "sigma"):
        report = check_recursion([2, 3, 3, 2], v_rule=v_rule_without_D,
                                 u_rule=u_rule_that_repairs_V, activation=activation)
        assert not report.holds and report.mismatch.quantity == "V"


def test_symbols_named_like_the_networks_are_refused():
    def v_rule_with_a_lookalike_D(V, B, D):
        return V * B * sp.diag(*[sp.Dummy(f"d1[{i}]") for i in range(D.shape[0])])

    def u_rule_with_internal_names(V, a_prev, *, l, widths):
        a = a_prev if l == 1 else sp.Matrix(
            [sp.Symbol(f"d{l - 1}[{j}]") * sp.Symbol(f"zeta{l - 1}[{j}]") for j in range(widths[l - 1])])
        return V * sp.kronecker_product(sp.eye(V.shape[1]), a.T)

    r = check_recursion([2, 3, 2], v_rule=v_rule_with_a_lookalike_D)
    assert not r.holds and "named like the network's but not the network's own: d1[0]" in r.error
    r = check_recursion([2, 3, 3, 2], u_rule=u_rule_with_internal_names)
    assert not r.holds and "zeta" in r.error


def test_matrix_valued_entries_and_matrix_expressions_are_refuted_with_a_reason():
    r = check_recursion([2, 3, 2], v_rule=lambda V, B, D: sp.Matrix(
        2, 3, lambda k, i: sp.ImmutableMatrix([[1]])))
    assert not r.holds and "not a SymPy scalar expression" in r.error
    r = check_recursion([2, 3, 2], v_rule=lambda V, B, D: sp.MatMul(
        sp.ImmutableMatrix(V), sp.ImmutableMatrix(B), sp.ImmutableMatrix(D)))
    assert not r.holds and "call .as_explicit() or .doit()" in r.error
    r = check_recursion([2, 3, 2], v_rule=lambda V, B, D: sp.MatMul(
        sp.ImmutableMatrix(V), sp.ImmutableMatrix(B), sp.ImmutableMatrix(D)).as_explicit())
    assert r.holds


def test_a_pass_at_small_depth_says_what_it_did_not_cover():
    r0 = check_recursion([3, 2], v_rule=lambda V, B, D: None)
    assert r0.holds and "L = 0: v_rule was not called" in str(r0)
    r1 = check_recursion([2, 3, 2], v_rule=lambda V, B, D: B * D)
    assert r1.holds and "L = 1: v_rule was called only with V^(l+1) = I_K" in str(r1)
    r2 = check_recursion([2, 3, 3, 2], v_rule=lambda V, B, D: B * D)
    assert not r2.holds  # at L = 2 the missing V^(l+1) shows
    assert check_recursion([2, 3, 3, 2]).notes == []
    # at L = 0 u_rule sees V = I_K only: one that drops V passes there, and the note says so
    def without_V(V, a_prev):
        return sp.kronecker_product(sp.eye(V.shape[1]), a_prev.T)

    r0 = check_recursion([3, 2], u_rule=without_V)
    assert r0.holds and "u_rule was called only with V = I_K" in str(r0)
    assert not check_recursion([3, 3, 2], u_rule=without_V).holds


def test_a_wrong_rule_with_a_float_in_a_later_entry_is_refuted_not_a_crash():
    """The first wrong entry is shown; naming the known mistake compares every entry, and a
    float there (which SymEngine does not take exactly) raised TypeError out of the check."""
    def D_omitted_and_a_float(V_next, B_next, D):
        V = V_next * B_next
        V[-1, -1] = sp.Float(1.0) * V[-1, -1]
        return V

    for method in ("layerwise", "direct"):
        r = check_recursion([2, 3, 3, 2], v_rule=D_omitted_and_a_float, method=method)
        assert not r.holds and "claim - true" in str(r), str(r)


@pytest.mark.filterwarnings("ignore::sympy.utilities.exceptions.SymPyDeprecationWarning")
def test_an_entry_that_is_no_scalar_expression_blames_the_rule_that_returned_it():
    """sp.true or a Tuple in a v_rule's matrix used to pass the entry check and then fail
    inside the lecture's default u_rule, which the report blamed."""
    def with_true(V_next, B_next, D):
        V = V_next * B_next * D
        V[0, 0] = sp.true
        return V

    def with_tuples(V_next, B_next, D):
        return (V_next * B_next * D).applyfunc(lambda e: sp.Tuple(e))

    for rule in (with_true, with_tuples):
        r = check_recursion([2, 3, 3, 2], v_rule=rule)
        assert not r.holds and "v_rule at layer l = 2 returned an entry" in r.error, r.error


def test_a_refutation_gives_values_at_which_claim_and_truth_differ():
    """The report showed the polynomial claim - true = B3[0,0] - d2[0]*B3[0,0] but no point
    where it is not 0 (here only a dead unit, d2[0] = 0, shows it)."""
    import re

    import symengine as se

    report = check_recursion([2, 3, 3, 2], v_rule=lambda V, B, D: V * B)
    text = str(report)
    found = re.search(r"for instance at (.*): claim - true = (-?\d+)", text)
    assert found, text
    values = {se.Symbol(k): se.Integer(int(v))
              for k, v in (pair.split(" = ") for pair in found.group(1).split(", "))}
    difference = se.sympify(report.mismatch.difference.replace("[", "_").replace(",", "_")
                            .replace("]", ""))
    at = {se.Symbol(str(k).replace("[", "_").replace(",", "_").replace("]", "")): v
          for k, v in values.items()}
    assert difference.subs(at) == int(found.group(2)) != 0
    assert values[se.Symbol("d2[0]")] == 0
