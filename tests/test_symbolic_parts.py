"""verify_parts gives the tables of `bpcheck verify`, and its controls can fail."""

import pytest

from bpcheck._report import Part, render_markdown, render_text
from bpcheck.symbolic import parts as parts_module
from bpcheck.symbolic import verify_parts
from bpcheck.symbolic.wrong_rules import PlantedRule


@pytest.fixture(scope="module")
def quick_parts():
    return verify_parts(quick=True)


def test_quick_parts_all_pass_with_tables_latex_and_a_summary(quick_parts):
    assert [type(p) for p in quick_parts] == [Part] * 4
    for p in quick_parts:
        assert p.passed is True, render_text([p])
        assert p.rows and all(len(r) == len(p.columns) for r in p.rows)
        assert p.latex and p.seconds > 0
        assert p.summary and "\n" not in p.summary
    md = render_markdown(quick_parts, {})
    assert "$$ V^{(l)} =" in md


def test_grid_covers_L_0_to_6_square_non_square_and_K_1(quick_parts):
    grid = parts_module.GRID
    assert {len(w) - 2 for w in grid} == set(range(7))
    assert any(w[-1] == 1 for w in grid)
    assert any(len(set(w)) == 1 for w in grid) and any(len(set(w)) > 1 for w in grid)
    models = {row[3] for row in quick_parts[2].rows}
    assert models == {"relu", "sigma"}


def test_the_induction_part_states_base_step_and_every_assumption(quick_parts):
    induction = quick_parts[0]
    names = [row[0] for row in induction.rows]
    assert names[:3] == ["induction base P(L+1)", "induction step (relu)", "induction step (sigma)"]
    notes = " ".join(induction.notes)
    assert "P(l+1) => P(l)" in notes and "exactly 0" in notes and "chain rule" in notes
    assert "every depth L" in induction.title


def test_the_controls_include_the_induction_step_with_D_on_the_wrong_index(quick_parts):
    rows = [r for r in quick_parts[3].rows if r[0] == "induction step, D on the wrong index"]
    assert [r[3] for r in rows] == ["relu", "sigma"] and all(r[5] is True for r in rows)


def test_concrete_part_fails_when_the_recursion_fails(monkeypatch):
    from bpcheck.symbolic import check as check_module

    def wrong(widths, v_rule=None, u_rule=None, activation="relu", **kw):
        return check_module.check_recursion(widths, lambda V, B, D: V * B, u_rule, activation, **kw)

    monkeypatch.setattr(parts_module, "check_recursion", wrong)
    part = parts_module.concrete_part(quick=True)
    assert part.passed is False and any(n.startswith("refuted") for n in part.notes)


def test_refutation_part_fails_when_a_planted_rule_is_not_refuted(monkeypatch):
    correct = PlantedRule("not a mistake", "the lecture's rule", lambda V, B, D: V * B * D,
                          None, (2, 3, 2))
    monkeypatch.setattr(parts_module, "PLANTED", parts_module.PLANTED + (correct,))
    part = parts_module.refutation_part()
    assert part.passed is False
    assert any(row[0] == "not a mistake" and row[5] is False for row in part.rows)


def test_an_undecided_planted_rule_does_not_count_as_refuted(monkeypatch):
    """A claim the checker cannot decide (a float entry) is never a pass, but neither is it
    a refutation: a control that ends undecided fails, instead of counting as caught."""
    import sympy as sp

    undecided = PlantedRule("undecided", "a float factor", lambda V, B, D: V * B * D * sp.Float(1.0),
                            None, (2, 3, 2))
    monkeypatch.setattr(parts_module, "PLANTED", (undecided,))
    monkeypatch.setattr(parts_module, "WIDTH_DEPENDENT", ())
    part = parts_module.refutation_part(quick=True)
    row = next(r for r in part.rows if r[0] == "undecided")
    assert row[5] is False and part.passed is False
    assert "(not comparable" in row[6] or "undecided" in row[6]


@pytest.mark.parametrize("quick", ["no", 0, None, 1.0])
def test_quick_must_be_a_bool(quick):
    from bpcheck.symbolic.parts import chain_part, concrete_part, induction_part, refutation_part

    for fn in (verify_parts, induction_part, chain_part, concrete_part, refutation_part):
        with pytest.raises(TypeError, match=r"quick: expected True or False, got " + repr(quick)):
            fn(quick=quick)
