"""Without widths, check_recursion checks a grid of architectures: wrong rules that are right
on some widths are refuted; a pass says which widths it covered and what it did not."""

import pytest

from bpcheck.symbolic import check_recursion
from bpcheck.symbolic.check import FIXED_GRID, GridReport, candidate_grid
from bpcheck.symbolic.wrong_rules import (
    u_rule_split_by_d_l,
    v_rule_inner_sum_min,
    v_rule_row_zero_copied,
    v_rule_wrong_above_width_4,
    v_rule_wrong_beyond_depth_6,
)


def test_the_grid_covers_square_growing_narrowing_K_1_L_0_deep_and_random_widths():
    grid = dict(candidate_grid(seed=3))
    assert {"L = 0", "L = 1", "K = 1", "square", "growing", "narrowing", "deep",
            "wide"} <= set(grid)
    widths = list(grid.values())
    assert any(len(set(w)) == 1 for w in widths)
    assert any(all(a < b for a, b in zip(w, w[1:])) for w in widths)
    assert any(all(a > b for a, b in zip(w, w[1:])) for w in widths)
    assert max(len(w) - 2 for w in widths) == 6 and max(max(w) for w in widths) == 6
    randoms = [w for name, w in candidate_grid(seed=3) if name.startswith("random")]
    assert len(randoms) == 4 and all(len(w) <= 8 and max(w) <= 6 for w in randoms)
    assert randoms != [w for name, w in candidate_grid(seed=4) if name.startswith("random")]
    # no architecture twice (seed 1 drew (4, 4) twice)
    for seed in range(50):
        grid = [w for _, w in candidate_grid(seed)]
        assert len(set(grid)) == len(grid), (seed, grid)


def test_the_lecture_rules_hold_on_the_grid_and_the_pass_names_the_widths():
    report = check_recursion()
    assert isinstance(report, GridReport) and report.holds is True
    assert report.covered == [w for _, w in candidate_grid(0)]
    text = str(report)
    assert text.startswith("holds on the 12 architectures") and "[6, 5, 4, 3, 2]" in text
    assert "not covered: every other architecture, of depths L <= 6 and widths <= 6 too" in text


@pytest.mark.parametrize("rule, kind, right_on", [
    (u_rule_split_by_d_l, "u", (3, 3, 3, 3)),          # right only for square layers
    (v_rule_inner_sum_min, "v", (6, 5, 4, 3, 2)),      # right only when widths never grow
    (v_rule_row_zero_copied, "v", (3, 4, 2, 1)),       # right only for K = 1
    (v_rule_wrong_above_width_4, "v", (3, 3, 3, 3)),   # right while every width is <= 4
], ids=["U split by d_l", "inner sum to min", "row 0 copied", "wrong above width 4"])
def test_a_rule_right_on_some_widths_passes_there_and_the_grid_refutes_it(rule, kind, right_on):
    rules = {"v_rule": rule} if kind == "v" else {"u_rule": rule}
    assert check_recursion(right_on, **rules).holds is True
    report = check_recursion(**rules)
    assert report.holds is False and report.mismatch.decision == "different"
    assert report.widths in [w for _, w in candidate_grid(0)]
    assert str(report).startswith("refuted")


def test_the_grid_stops_at_the_first_refutation():
    calls = []

    def v_rule(V_next, B_next, D, *, widths):
        calls.append(tuple(widths))
        return V_next * B_next

    report = check_recursion(v_rule=v_rule)
    assert report.holds is False and report.widths == FIXED_GRID[1][1]
    assert set(calls) == {FIXED_GRID[1][1]}  # L = 0 never calls v_rule; K = 1 refutes it


def test_a_rule_wrong_only_beyond_the_grid_depth_passes_the_grid_and_fails_at_L_7():
    """What a finite grid cannot catch: the pass says so, and explicit widths refute it."""
    grid = check_recursion(v_rule=v_rule_wrong_beyond_depth_6)
    assert grid.holds is True and "all of depths L > 6" in str(grid)
    deep = check_recursion([2] * 9, v_rule=v_rule_wrong_beyond_depth_6)
    assert deep.holds is False and deep.mismatch.l == 7


def test_explicit_widths_still_give_one_report():
    report = check_recursion([2, 3, 2])
    assert report.holds is True and report.widths == (2, 3, 2)


def _d_left_out_when(condition):
    """The lecture's v_rule, but without D where ``condition(widths)`` holds."""
    def v_rule(V_next, B_next, D, *, widths):
        return V_next * B_next if condition(widths) else V_next * B_next * D
    return v_rule


@pytest.mark.parametrize("name, condition", [
    ("L == 1", lambda w: len(w) == 3),
    ("K == 4", lambda w: w[-1] == 4),
    ("d_0 == 5", lambda w: w[0] == 5),
    ("a hidden width of 6", lambda w: 6 in w[1:-1]),
])
def test_the_grid_refutes_rules_wrong_on_the_lectures_depth_and_the_wide_case(name, condition):
    # each of these passed the grid of 10 architectures (no L = 1,
    # the lecture's own depth; no K = 4, d_0 = 5 or hidden width 6), whose report said
    # only larger depths and widths were not covered
    report = check_recursion(v_rule=_d_left_out_when(condition))
    assert report.holds is False, name
    assert report.widths in [(2, 3, 2), (5, 6, 4)]


def test_a_pass_says_that_other_architectures_within_its_bounds_are_not_covered():
    report = check_recursion(v_rule=_d_left_out_when(lambda w: len(w) == 7))  # L == 5 only
    assert report.holds is True  # no architecture of the grid has L = 5: not covered, and said
    assert "not covered: every other architecture, of depths L <= 6 and widths <= 6 too" \
        in str(report)
    assert check_recursion([2, 3, 2, 3, 2, 3, 2], v_rule=_d_left_out_when(
        lambda w: len(w) == 7)).holds is False


@pytest.mark.parametrize("widths, words", [
    ([10 ** 5] * 3, "has 20000000000 weights; a symbolic check handles at most 10000"),
    ([2 ** 63, 2], "has 18446744073709551616 weights"),
    ([10 ** 4, 10 ** 4, 2], "has 100020000 weights"),
    ([2] * 167, "L = 165 hidden layers; a symbolic check at fixed widths handles at most "
                "L = 120"),
])
def test_widths_too_large_or_too_deep_for_sympy_are_named(widths, words):
    # ran out of memory after 25 s (once a segmentation fault), or reported the lecture's
    # own rules "not proved" with a RecursionError
    with pytest.raises(ValueError, match=None) as err:
        check_recursion(widths)
    assert words in str(err.value)


def test_a_rule_that_is_not_a_function_is_an_argument_error():
    # "V_next*B_next*D" as a string "held" on [3, 2] (L = 0 never calls v_rule)
    with pytest.raises(TypeError, match="v_rule: expected a function of SymPy matrices"):
        check_recursion([3, 2], v_rule="V_next*B_next*D")
    with pytest.raises(TypeError, match="u_rule: expected a function"):
        check_recursion(u_rule=3)
