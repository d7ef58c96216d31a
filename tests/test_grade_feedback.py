"""Feedback names the likely mistake: each planted student bug, graded end to end
(child process included), gets less than full marks and the message that names it."""

from pathlib import Path

import pytest

from bpcheck.grade.config import parse_config
from bpcheck.grade.grader import grade

CORRECT = (Path(__file__).parent / "grade_submissions" / "correct.py").read_text()


def only(e):
    doc = {"exercises": {str(k): {"points": 25 if k == e else 0} for k in (1, 2, 3, 4)}}
    return parse_config(doc)


def graded(tmp_path, e, old, new):
    assert old in CORRECT, old
    path = tmp_path / "sub.py"
    path.write_text(CORRECT.replace(old, new))
    report = grade(path, only(e), seed=2)
    text = "\n".join(ln for t in report.tests for ln in t.lines)
    return report, text


def test_correct_submission_scores_full_marks(tmp_path):
    path = tmp_path / "sub.py"
    path.write_text(CORRECT)
    report = grade(path, parse_config({}), seed=4)
    assert report.score == report.max_score == 100, [(t.number, t.lines) for t in report.tests]
    assert [t.number for t in report.tests][:3] == ["1.1", "1.2", "1.3"]


SOFTMAX_BUGS = [
    ("missing_1_over_N", "    dscores /= N\n    return loss, X.T",
     "    return loss, X.T", "the gradient is not divided by N"),
    ("reg_gradient_twice", "X.T @ dscores + reg * W,", "X.T @ dscores + 2 * reg * W,",
     "regularisation gradient is off by a factor 2"),
    ("reg_loss_without_half", "+ 0.5 * reg * np.sum(W * W)", "+ reg * np.sum(W * W)",
     "regularisation loss is off by a factor 2"),
    ("bias_regularised", "dscores.sum(axis=0)\n\n\ndef two", "dscores.sum(axis=0) + reg * b\n\n\ndef two",
     "the biases are regularised"),
    ("sign_flipped", "    dscores[range(N), y] -= 1\n    dscores /= N\n    return",
     "    dscores[range(N), y] -= 1\n    dscores /= -N\n    return", "the sign is flipped"),
    ("unstable_softmax", "    scores = scores - scores.max(axis=1, keepdims=True)\n    exp_scores",
     "    exp_scores", "subtract each row's maximum"),
    ("db_keepdims", "dscores.sum(axis=0)\n\n\ndef two", "dscores.sum(axis=0, keepdims=True)\n\n\ndef two",
     "expected shape (4,), got (1, 4)"),
    ("dW_transposed", "return loss, X.T @ dscores + reg * W,", "return loss, (X.T @ dscores + reg * W).T,",
     "(transposed)"),
]


@pytest.mark.parametrize("name,old,new,message", SOFTMAX_BUGS, ids=[b[0] for b in SOFTMAX_BUGS])
def test_softmax_feedback_names_the_mistake(tmp_path, name, old, new, message):
    report, text = graded(tmp_path, 1, old, new)
    assert report.score < report.max_score
    assert message in text, text


TWO_LAYER_BUGS = [
    ("relu_mask_wrong_inequality", "dhidden[hidden <= 0] = 0", "dhidden[hidden < 0] = 0",
     "the ReLU mask is missing or never applies"),
    ("relu_mask_inverted", "dhidden[hidden <= 0] = 0", "dhidden[hidden > 0] = 0",
     "the ReLU mask is inverted"),
    ("W1_not_regularised", "dW1 = X.T @ dhidden + reg * W1", "dW1 = X.T @ dhidden",
     "W1 is left out of the regularisation"),
    ("gradient_times_N", "    dscores /= N\n    dW2", "    dW2", "the gradient is not divided by N"),
]


@pytest.mark.parametrize("name,old,new,message", TWO_LAYER_BUGS, ids=[b[0] for b in TWO_LAYER_BUGS])
def test_two_layer_feedback_names_the_mistake(tmp_path, name, old, new, message):
    report, text = graded(tmp_path, 2, old, new)
    assert report.score < report.max_score
    assert message in text, text


BACKPROP_BUGS = [
    ("kronecker_swapped", "np.kron(V, a_prev[None, :])", "np.kron(a_prev[None, :], V)",
     "Kronecker factors are swapped"),
    ("D_left_out", "Vs[0] @ Bs[l + 1] @ np.diag(masks[l])", "Vs[0] @ Bs[l + 1]",
     "D^(l) is left out"),
    ("V_transposed", "    return Vs, Us\n", "    return [V.T for V in Vs], Us\n",
     "expected shape (2, 4), got (4, 2) (transposed)"),
    ("output_layer_missing", "    return Vs, Us\n", "    return Vs[:-1], Us[:-1]\n",
     "expected a list of L+1"),
]


@pytest.mark.parametrize("name,old,new,message", BACKPROP_BUGS, ids=[b[0] for b in BACKPROP_BUGS])
def test_backprop_feedback_names_the_mistake(tmp_path, name, old, new, message):
    report, text = graded(tmp_path, 3, old, new)
    assert report.score < report.max_score
    assert message in text, text


def test_missing_function_scores_zero_with_its_name(tmp_path):
    report, text = graded(tmp_path, 2, "def two_layer_loss(", "def two_layer_loss_v2(")
    assert report.score == 0
    assert "two_layer_loss is not defined" in text


def test_partial_credit_is_per_output_and_per_test(tmp_path):
    report, _ = graded(tmp_path, 1, "dscores.sum(axis=0)\n\n\ndef two",
                       "dscores.sum(axis=0) * 3\n\n\ndef two")
    # db is wrong wherever it is non-zero; loss and dW are right: 2/3 of each such test
    assert 0 < report.score < report.max_score
    assert any(abs(t.score - t.max_score * 2 / 3) < 1e-6 for t in report.tests)


def test_an_exception_is_reported_with_its_line_in_the_submission(tmp_path):
    """'raised ValueError: matmul: ...' named neither the line nor the function."""
    report, text = graded(tmp_path, 1, "    scores = X @ W + b\n", "    scores = X @ W.T + b\n")
    assert report.score == 0
    line = CORRECT.splitlines().index("    scores = X @ W + b") + 1
    assert f"(submission.py, line {line}, in softmax_loss)" in text, text
