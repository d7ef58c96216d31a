"""check_recursion proves the lecture's recursion: claim (rules) = direct derivative."""

import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcheck.symbolic import check_recursion, lecture_u_rule, lecture_v_rule

MODELS = ["relu", "sigma"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("widths", [
    [3, 2],            # L = 0, the linear classifier
    [4, 1],            # L = 0, K = 1
    [2, 3, 1],         # K = 1
    [2, 3, 4, 2],      # non-square
    [3, 3, 3, 3],      # square
    [2, 4, 3, 2, 3],   # K > d_L
])
def test_V_recursion_equals_direct_derivative(widths, model):
    report = check_recursion(widths, activation=model)
    assert report.holds is True, str(report)
    L = len(widths) - 2
    checked = {(c.l, c.quantity) for c in report.layers}
    assert checked == {(l, q) for l in range(1, L + 2) for q in "VU"}
    assert all(c.holds for c in report.layers)
    assert str(report).startswith("holds:")


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=2, max_size=5), st.sampled_from(MODELS))
def test_recursion_holds_for_any_small_architecture(widths, model):
    assert check_recursion(widths, activation=model).holds is True


@pytest.mark.parametrize("method", ["direct", "layerwise"])
def test_rules_receive_sympy_matrices_of_the_documented_shapes(method):
    """Direct: each rule once per layer; layerwise: twice (the layer's own symbols, then
    the values of the running recursion), always with the documented shapes."""
    widths = [2, 3, 4, 2]
    seen = []

    def v_rule(V_next, B_next, D):
        seen.append(("v", V_next.shape, B_next.shape, D.shape, D.is_diagonal()))
        assert all(isinstance(m, sp.MatrixBase) for m in (V_next, B_next, D))
        return lecture_v_rule(V_next, B_next, D)

    def u_rule(V, a_prev):
        seen.append(("u", V.shape, a_prev.shape))
        return lecture_u_rule(V, a_prev)

    assert check_recursion(widths, v_rule, u_rule, method=method).holds
    K = widths[-1]
    expected = []
    for l in (3, 2, 1):  # the order the recursion runs
        if l <= 2:
            expected.append(("v", (K, widths[l + 1]), (widths[l + 1], widths[l]),
                             (widths[l], widths[l]), True))
        expected.append(("u", (K, widths[l]), (widths[l - 1], 1)))
    if method == "layerwise":
        expected = [call for call in expected for _ in range(2)]
    assert seen == expected


def test_an_equivalent_rule_written_differently_is_proved():
    """Equality is decided on the polynomial, not on how the rule spells it."""
    def v_rule(V_next, B_next, D):
        return (B_next.T * V_next.T).T * D + sp.zeros(*V_next.shape[:1], D.shape[0])

    def u_rule(V, a_prev):  # a_prev expanded first: no shared structure with the truth
        a = a_prev.applyfunc(sp.expand)
        return sp.Matrix(V.shape[0], V.shape[1] * a.shape[0],
                         lambda k, c: V[k, c // a.shape[0]] * a[c % a.shape[0]])

    for model in MODELS:
        assert check_recursion([2, 3, 3, 2], v_rule, u_rule, activation=model).holds


def test_relu_model_uses_that_the_pattern_is_zero_or_one():
    """V B D D equals V B D when d in {0, 1} (ReLU), but not for a generic sigma'."""
    def v_rule(V_next, B_next, D):
        return V_next * B_next * D * D

    assert check_recursion([2, 3, 3, 2], v_rule, activation="relu").holds
    assert not check_recursion([2, 3, 3, 2], v_rule, activation="sigma").holds


def test_floats_in_a_claim_are_undecided_and_never_a_pass():
    report = check_recursion([2, 3, 2], v_rule=lambda V_next, B_next, D: 1.0 * V_next * B_next * D)
    assert report.holds is False
    assert report.mismatch.decision == "undecided"
    assert "not proved" in str(report) and "floating-point" in str(report)


def test_a_non_polynomial_claim_is_undecided_even_when_true():
    """sin^2 + cos^2 - 1 + e equals e, but not on the polynomial form: not a pass."""
    def v_rule(V_next, B_next, D):
        return (V_next * B_next * D).applyfunc(lambda e: sp.sin(e) ** 2 + sp.cos(e) ** 2 - 1 + e)

    report = check_recursion([2, 3, 2], v_rule)
    assert report.holds is False
    assert report.mismatch.decision == "undecided" and "not proved" in str(report)


def test_unknown_activation_and_bad_widths_name_the_argument():
    with pytest.raises(ValueError, match="activation"):
        check_recursion([2, 2], activation="tanh")
    with pytest.raises(ValueError, match="widths"):
        check_recursion([2])


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_recursion_holds_at_depth_eight(model):
    report = check_recursion([3] * 10, activation=model)
    assert report.holds is True and len(report.layers) == 18
