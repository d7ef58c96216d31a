"""Exercise 4: the student's v_rule and u_rule run in the child, come back as plain
polynomial data, and are judged by bpcheck.symbolic.check_recursion in the grader."""

from pathlib import Path

import numpy as np
import pytest
import sympy

from bpcheck.grade.config import parse_config
from bpcheck.grade.grader import grade
from bpcheck.grade.polymap import PolyMatrix, rule_callables

pytest.importorskip("bpcheck.symbolic")

CORRECT = (Path(__file__).parent / "grade_submissions" / "correct.py").read_text()
ONLY_4 = {"exercises": {"1": {"points": 0}, "2": {"points": 0}, "3": {"points": 0},
                        "4": {"points": 25}}}

RULES = '''
import numpy as np
import sympy

def v_rule(V_next, B_next, D):
    return {v}

def u_rule(V, a_prev):
    return {u}
'''
GOOD_V = "V_next * B_next * D"
GOOD_U = "V * sympy.kronecker_product(sympy.eye(V.shape[1]), a_prev.T)"


def graded(tmp_path, v=GOOD_V, u=GOOD_U):
    path = tmp_path / "rules.py"
    path.write_text(RULES.format(v=v, u=u))
    report = grade(path, parse_config(ONLY_4), seed=0)
    return report, "\n".join(ln for t in report.tests for ln in t.lines)


def test_lecture_rules_hold_for_every_architecture_tried(tmp_path):
    report, text = graded(tmp_path)
    assert report.score == report.max_score == 25, text
    assert text.count("v_rule: the recursion holds for widths") == 5
    assert text.count("u_rule: the recursion holds for widths") == 5
    deep = [t for t in report.tests if "deep" in t.name][0]
    widths = deep.lines[0].split("widths ")[1]
    assert widths.count(",") == 5  # six widths: L = 4, drawn from the seed


def test_a_wrong_rule_outside_the_catalogue_is_refuted_and_the_refutation_is_shown(tmp_path):
    report, text = graded(tmp_path, v="2 * V_next * B_next * D")
    assert report.score == report.max_score / 2  # u_rule is right and scored on its own
    assert "v_rule: refuted" in text and "claim" in text and "true" in text
    assert not any(ln.startswith("refuted: ") for ln in text.splitlines()), text  # said once


def test_rule_without_D_is_named_with_a_short_counterexample(tmp_path):
    report, text = graded(tmp_path, v="V_next * B_next")
    assert report.score == report.max_score / 2  # u_rule is right and scored on its own
    lines = [ln for ln in text.splitlines() if ln.startswith("v_rule")]
    assert len(lines) == 5
    for line in lines:
        assert "likely mistake: D^(l) is left out" in line and "entry [" in line
        assert len(line) < 400


def test_swapped_kronecker_factors_are_named_on_every_architecture(tmp_path):
    report, text = graded(
        tmp_path, u="V * sympy.kronecker_product(a_prev.T, sympy.eye(V.shape[1]))")
    # the drawn widths are never all 1: every architecture refutes it, and v_rule keeps its half
    assert report.score == report.max_score / 2
    assert text.count("u_rule: refuted") == 5
    assert text.count("likely mistake: the Kronecker factors are swapped") == 5
    assert max(len(ln) for ln in text.splitlines()) < 400


def _halves(report):
    """Each test's score is half its points: one rule refuted, the other proved."""
    return all(t.score == pytest.approx(t.max_score / 2) for t in report.tests
               if t.number != "4.3")  # 4.3: L = 0, no v_rule, so u_rule alone scores it


def test_non_polynomial_rule_is_refuted_with_a_message(tmp_path):
    report, text = graded(tmp_path, v="(V_next * B_next * D).applyfunc(sympy.exp)")
    assert _halves(report), text  # u_rule is right and scored on its own
    assert "not a polynomial" in text


def test_rule_returning_a_number_is_refuted_with_a_message(tmp_path):
    report, text = graded(tmp_path, u="0")
    assert report.score == report.max_score / 2, text
    assert "expected a SymPy Matrix" in text


def test_float_coefficients_count_at_their_exact_value_never_rounded(tmp_path):
    # V * Matrix(np.kron(np.eye(d), a')) (floats 1.0 and 0.0 from
    # NumPy) is the lecture's rule, and scored 0 ("coefficients that are not rational")
    report, text = graded(tmp_path, v="0.5 * (V_next * B_next * D) * 2",
                          u="V * sympy.Matrix(np.kron(np.eye(V.shape[1]), np.array(a_prev.T)))")
    assert report.score == report.max_score, text
    report, text = graded(tmp_path, v="(V_next * B_next * D) * (1 + 1e-12)")
    assert _halves(report), text  # 1 + 1e-12 is not 1
    assert "v_rule: refuted" in text


@pytest.mark.parametrize("raising", ["v", "u"])
def test_a_rule_that_raises_costs_its_own_half_only(tmp_path, raising):
    # the template's `raise NotImplementedError` left in v_rule gave
    # the correct u_rule 0 of 25 too (the whole test failed on the first exception)
    stub = "(_ for _ in ()).throw(NotImplementedError('not yet'))"
    report, text = graded(tmp_path, **{raising: stub})
    assert report.score == report.max_score / 2, text
    assert f"{raising}_rule on inputs of shapes" in text
    assert "raised NotImplementedError: not yet" in text  # the message too, as for a call
    other = "u" if raising == "v" else "v"
    assert text.count(f"{other}_rule: the recursion holds for widths") == 5


def test_a_missing_rule_costs_its_own_half_only(tmp_path):
    """A submission with v_rule right and no u_rule scored 0 of 25, where a
    u_rule that raises left v_rule its half."""
    path = tmp_path / "rules.py"
    path.write_text(RULES.format(v=GOOD_V, u=GOOD_U).split("def u_rule")[0])
    report = grade(path, parse_config(ONLY_4), seed=0)
    text = "\n".join(ln for t in report.tests for ln in t.lines)
    assert report.score == report.max_score / 2, text
    assert text.count("u_rule is not defined (expected a function named u_rule)") == 5
    assert text.count("v_rule: the recursion holds for widths") == 5
    path.write_text("import sympy\n")
    report = grade(path, parse_config(ONLY_4), seed=0)
    assert report.score == 0
    assert report.tests[0].lines == ["v_rule and u_rule are not defined (expected functions "
                                     "named v_rule and u_rule)"]


def test_exercise_4_with_a_forbidden_import_scores_zero(tmp_path):
    report, text = graded(tmp_path, v="__import__('torch') and V_next")
    assert report.score == 0
    assert "torch" in text


def test_polynomial_map_evaluates_like_the_rule():
    # u_rule(V, a) = V * (I kron a') for K = 1, d = 1, d_prev = 2: [v0*a0, v0*a1]
    exps = np.array([[1, 1, 0], [1, 0, 1]], dtype=np.int64)
    pm = PolyMatrix.from_arrays([1, 2], exps, np.array([1, 1], np.int64),
                                np.array([1, 1], np.int64), np.array([1, 1], np.int64), 3)
    _, u_rule = rule_callables({("u_rule", (1, 1, 2)): pm})
    v, a0, a1 = sympy.symbols("v a0 a1")
    assert u_rule(sympy.Matrix([[v]]), sympy.Matrix([a0, a1])) == sympy.Matrix([[v * a0, v * a1]])


@pytest.mark.parametrize("bad", [
    dict(shape=[1, 2, 3]), dict(den=np.array([0, 1], np.int64)),
    dict(counts=np.array([5, 1], np.int64)), dict(exps=np.array([[1, 1], [1, 0]], np.int64)),
    dict(num=np.array([1.0, 2.0])),
])
def test_malformed_polynomial_data_is_rejected(bad):
    args = dict(shape=[1, 2], exps=np.array([[1, 1, 0], [1, 0, 1]], np.int64),
                num=np.array([1, 1], np.int64), den=np.array([1, 1], np.int64),
                counts=np.array([1, 1], np.int64))
    args.update(bad)
    with pytest.raises(ValueError):
        PolyMatrix.from_arrays(args["shape"], args["exps"], args["num"], args["den"],
                               args["counts"], 3)


def test_correct_submission_grades_exercise_4_in_full(tmp_path):
    path = tmp_path / "sub.py"
    path.write_text(CORRECT)
    report = grade(path, parse_config(ONLY_4), seed=1)
    assert report.score == 25
