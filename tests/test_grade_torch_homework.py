"""The PyTorch homework (examples/torch_simplenn_homework.py): torch allowed there, the
student's model and training step driven in the sandbox by the homework's own driver,
graded against a NumPy reference, zipped and run through run_autograder."""

from pathlib import Path

import pytest

pytest.importorskip("torch")

from autograder_helpers import run_autograder  # noqa: E402

from bpcheck.cli import main as bpcheck_main  # noqa: E402
from bpcheck.grade.config import load_config  # noqa: E402
from bpcheck.grade.grader import grade  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HOMEWORK = EXAMPLES / "torch_simplenn_homework.py"
CORRECT = (EXAMPLES / "torch_submissions" / "correct.py").read_text()


def test_a_correct_model_and_training_step_score_full_marks(tmp_path):
    path = tmp_path / "nn.py"
    path.write_text(CORRECT)
    report = grade(path, load_config(None, HOMEWORK), seed=2)
    assert report.score == report.max_score == 20, [t.lines for t in report.tests]


def test_a_training_step_without_regularisation_is_named(tmp_path):
    path = tmp_path / "nn.py"
    path.write_text(CORRECT.replace("    loss = loss + 0.5 * reg", "    loss = loss + 0 * reg"))
    report = grade(path, load_config(None, HOMEWORK), seed=2)
    text = "\n".join(ln for t in report.tests for ln in t.lines)
    assert report.score < report.max_score
    assert "likely mistake: the weights are not regularised" in text


def test_the_torch_homework_runs_through_run_autograder(tmp_path):
    out = tmp_path / "autograder.zip"
    assert bpcheck_main(["gradescope-zip", str(out), "--homework", str(HOMEWORK)]) == 0
    root = tmp_path / "autograder"
    doc = run_autograder(out, root, {"nn.py": CORRECT})
    assert doc["score"] == 20, doc["output"]
    import torch

    assert f"torch=={torch.__version__.split('+')[0]}" in \
        (root / "source" / "requirements.txt").read_text().split()


def test_the_memory_limit_counts_from_torch_loaded(tmp_path):
    """PyPI's CUDA build of torch maps over 3 GB of address space on import: under the
    default memory_mb = 1536 a correct submission was killed by SIGSEGV while importing
    it. The child imports an allowed torch before the limits and the address space counts
    from there; here a limit below this CPU build's own mapping (about 620 MB) stands in."""
    path = tmp_path / "nn.py"
    path.write_text(CORRECT)
    config = tmp_path / "grading.toml"
    config.write_text("[sandbox]\nmemory_mb = 384\n")
    report = grade(path, load_config(config, HOMEWORK), seed=2)
    assert report.score == report.max_score == 20, [t.lines for t in report.tests]
    assert any("address space beyond the" in note for note in report.isolation), report.isolation
