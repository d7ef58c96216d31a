"""The layer-by-layer proof agrees with the direct derivative, and cannot be fooled by a rule
that behaves differently on the layer's own symbols than on the running recursion."""

import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcheck.symbolic import check_recursion
from bpcheck.symbolic.wrong_rules import PLANTED, WIDTH_DEPENDENT

MODELS = ["relu", "sigma"]


def _where(report):
    m = report.mismatch
    return report.holds, report.error is not None, m and (m.l, m.quantity, m.entry, m.decision)


@pytest.mark.parametrize("planted", PLANTED + WIDTH_DEPENDENT[:3],
                         ids=[p.name for p in PLANTED + WIDTH_DEPENDENT[:3]])
@pytest.mark.parametrize("model", MODELS)
def test_layerwise_and_direct_refute_each_planted_rule_at_the_same_entry(planted, model):
    layerwise = check_recursion(planted.widths, planted.v_rule, planted.u_rule, model)
    direct = check_recursion(planted.widths, planted.v_rule, planted.u_rule, model,
                             method="direct")
    assert layerwise.holds is False
    assert _where(layerwise) == _where(direct)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=2, max_size=5), st.sampled_from(MODELS))
def test_layerwise_and_direct_agree_that_the_lecture_rules_hold(widths, model):
    assert check_recursion(widths, activation=model).holds is True
    assert check_recursion(widths, activation=model, method="direct").holds is True


def test_a_rule_that_is_right_only_on_symbols_is_refuted_on_the_running_recursion():
    def right_on_symbols(V_next, B_next, D):
        if all(e.is_Symbol or e.is_Number for e in V_next):
            return V_next * B_next * D
        return V_next * B_next  # D left out once V^(l+1) holds real expressions

    for model in MODELS:
        report = check_recursion([2, 3, 3, 3, 2], right_on_symbols, activation=model)
        assert report.holds is False and report.mismatch.decision == "different"
        assert report.mismatch.l == 2  # V^(3) = B4 D3 is a product, no longer a symbol


def test_a_rule_that_is_wrong_only_on_symbols_holds_where_the_recursion_is_right():
    """A difference in the layer's own symbols is confirmed on the running recursion first."""
    def wrong_on_symbols(V_next, B_next, D):
        if any(str(e).startswith("V") for e in V_next.free_symbols):
            return V_next * B_next
        return V_next * B_next * D

    assert check_recursion([2, 3, 3, 3, 2], wrong_on_symbols).holds is True


def test_a_counterexample_is_short_and_written_in_the_layers_own_symbols():
    report = check_recursion([3, 4, 4, 4, 4, 3], u_rule=lambda V, a_prev: V * sp.kronecker_product(
        a_prev.T, sp.eye(V.shape[1])))
    text = str(report)
    counterexample = "\n".join(text.splitlines()[1:4])  # claim, true, claim - true
    assert len(counterexample) < 300, counterexample
    assert "a4[" in text and "a^(4)_j" in text and "x[" not in text and "B1" not in text
    deep = check_recursion([2, 3, 3, 3, 3, 3, 2], v_rule=lambda V, B, D, *, l: V * B * D if l > 1
                           else V * B)
    assert deep.mismatch.l == 1 and "V2[" in str(deep) and "V^(2)_kr (proved)" in str(deep)
    assert len("\n".join(str(deep).splitlines()[1:4])) < 300
    assert 'known mistake: "D omitted"' in str(deep)


@pytest.mark.parametrize("model", MODELS)
def test_every_planted_counterexample_is_under_300_characters(model):
    for planted in PLANTED + WIDTH_DEPENDENT:
        widths = planted.widths if len(planted.widths) > 5 else planted.widths + (2, 2)
        report = check_recursion(widths, planted.v_rule, planted.u_rule, model)
        assert not report.holds
        if report.mismatch is not None:
            m = report.mismatch
            assert len("\n".join([m.claim, m.true, m.difference])) < 300, str(report)


def test_an_unknown_mistake_is_not_named():
    report = check_recursion([2, 3, 3, 2], v_rule=lambda V, B, D: 2 * V * B * D)
    assert not report.holds and report.mismatch.known == "" and "known mistake" not in str(report)


def test_the_direct_method_names_the_known_mistakes_the_layerwise_one_does():
    from bpcheck.symbolic.wrong_rules import KNOWN

    named = 0
    for planted in KNOWN:
        by = {method: check_recursion([2, 3, 2, 2], planted.v_rule, planted.u_rule,
                                      method=method) for method in ("layerwise", "direct")}
        layerwise, direct = by["layerwise"].mismatch, by["direct"].mismatch
        if layerwise is None:
            assert direct is None
            continue
        assert (direct.l, direct.quantity, direct.known) == \
            (layerwise.l, layerwise.quantity, layerwise.known)
        named += bool(direct.known)
    assert named >= 5
    unknown = check_recursion([2, 3, 3, 2], v_rule=lambda V, B, D: 2 * V * B * D, method="direct")
    assert not unknown.holds and unknown.mismatch.known == ""


def test_a_rule_right_in_the_layers_own_symbols_is_refuted_but_not_named():
    """A rule that drops D on every third call (or looks at its
    arguments' names) is right on the layer's own symbols and wrong on the network's; the
    refutation named "inner sum to min(d_l, d_(l+1))", which holds at these widths."""
    calls = {"n": 0}

    def v_rule(V_next, B_next, D):
        calls["n"] += 1
        return V_next * B_next if calls["n"] % 3 == 0 else V_next * B_next * D

    report = check_recursion([2, 3, 3, 3, 2], v_rule=v_rule)
    assert not report.holds and report.mismatch.known == ""
    assert "known mistake" not in str(report)


def test_unknown_method_names_the_argument():
    with pytest.raises(ValueError, match="method: expected one of"):
        check_recursion([2, 2], method="fast")


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_layerwise_proof_holds_at_depth_twelve(model):
    report = check_recursion([3] * 14, activation=model)
    assert report.holds is True and len(report.layers) == 26
