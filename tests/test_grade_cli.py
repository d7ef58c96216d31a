"""The commands: `bpcheck grade` (report + results.json), `--template`, notebooks, the
config, `grade-batch` (parallel, CSV, survives broken submissions) and `gradescope-zip`
(run_autograder against a temporary /autograder)."""

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from bpcheck.cli import main as bpcheck_main
from bpcheck.grade.config import ConfigError, load_config, parse_config
from bpcheck.grade.grader import grade
from bpcheck.grade.source import forbidden_uses_in_cells, read_submission

HERE = Path(__file__).parent / "grade_submissions"
CORRECT = (HERE / "correct.py").read_text()
FAST = """\
[exercises.3]
points = 0
[exercises.4]
points = 0
[sandbox]
test_timeout_s = 5
"""


def test_grade_command_writes_gradescope_results_with_E_T_numbers(tmp_path, capsys):
    results = tmp_path / "results.json"
    assert bpcheck_main(["grade", str(HERE / "correct.py"), "--results", str(results),
                         "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "Total: 100 / 100" in out and "--seed 5" in out
    doc = json.loads(results.read_text())
    assert doc["score"] == 100 and doc["extra_data"]["seed"] == 5
    numbers = [t["number"] for t in doc["tests"]]
    assert numbers[0] == "1.1" and all(n.split(".")[0] in "1234" for n in numbers)
    for t in doc["tests"]:
        assert set(t) >= {"name", "number", "score", "max_score", "status", "output", "visibility"}
        assert t["status"] == "passed"


def test_same_seed_replays_the_same_grade(tmp_path):
    sub = tmp_path / "sub.py"
    sub.write_text(CORRECT.replace("dscores /= N\n    return loss", "return loss"))
    cfg = parse_config({"exercises": {"2": {"points": 0}, "3": {"points": 0},
                                      "4": {"points": 0}}})
    a, b = grade(sub, cfg, seed=9), grade(sub, cfg, seed=9)
    assert [(t.score, t.lines) for t in a.tests] == [(t.score, t.lines) for t in b.tests]


def test_template_writes_stubs_that_score_zero_with_messages(tmp_path, capsys):
    tpl = tmp_path / "hw.py"
    assert bpcheck_main(["grade", "--template", str(tpl)]) == 0
    text = tpl.read_text()
    for name in ("softmax_loss(W, b, X, y, reg)", "two_layer_loss(W1, b1, W2, b2, X, y, reg)",
                 "backprop_factors(Bs, bs, x)", "v_rule(V_next, B_next, D)", "u_rule(V, a_prev)"):
        assert f"def {name}" in text
    cfg = tmp_path / "grading.toml"
    cfg.write_text(FAST)
    results = tmp_path / "r.json"
    assert bpcheck_main(["grade", str(tpl), "--results", str(results), "--config", str(cfg)]) == 0
    doc = json.loads(results.read_text())
    assert doc["score"] == 0
    assert "raised NotImplementedError" in doc["tests"][0]["output"]


def test_a_notebook_template_is_a_notebook_of_the_same_stubs(tmp_path):
    # `--template stub.ipynb` wrote Python source into the .ipynb (Jupyter and the grader
    # refused it): a course that collects notebooks hands out a notebook
    bpcheck_main(["grade", "--template", str(tmp_path / "hw.py")])
    tpl = tmp_path / "HW.IPYNB"
    assert bpcheck_main(["grade", "--template", str(tpl)]) == 0
    nb = nbformat.read(str(tpl), as_version=4)
    nbformat.validate(nb)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    py = (tmp_path / "hw.py").read_text()
    for name in ("softmax_loss(W, b, X, y, reg)", "backprop_factors(Bs, bs, x)",
                 "u_rule(V, a_prev)"):
        assert f"def {name}" in code and f"def {name}" in py
    assert nb.cells[0].cell_type == "markdown" and "Homework" in nb.cells[0].source
    cfg = tmp_path / "grading.toml"
    cfg.write_text(FAST)
    results = tmp_path / "r.json"
    assert bpcheck_main(["grade", str(tpl), "--results", str(results), "--config", str(cfg)]) == 0
    doc = json.loads(results.read_text())
    assert doc["score"] == 0 and "raised NotImplementedError" in doc["tests"][0]["output"]
    assert "Exercise 1" in doc["output"] and "\n\nExercise 1" in doc["output"]


def test_notebook_submissions_count_only_code_cells(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("def softmax_loss(): pass  # markdown, ignored"),
                nbformat.v4.new_code_cell("%matplotlib inline\n" + CORRECT)]
    path = tmp_path / "hw.ipynb"
    nbformat.write(nb, str(path))
    assert "markdown" not in read_submission(path)
    cfg = parse_config({"exercises": {"3": {"points": 0}, "4": {"points": 0}}})
    assert grade(path, cfg, seed=1).score == 50


def test_a_notebook_runs_cell_by_cell_and_failing_cells_cost_nothing(tmp_path):
    """The lecture's notebook has a PyTorch part and plots: the torch cell fails in the sandbox,
    are reported, and the exercise functions in the other cells are graded in full."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%matplotlib inline\nimport numpy as np"),
        nbformat.v4.new_code_cell("import torch\nimport torch.nn as nn\n"
                                  "class SimpleNN(nn.Module):\n    pass"),
        nbformat.v4.new_code_cell(CORRECT),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2])"),
        nbformat.v4.new_code_cell("display(np.zeros(2))\nfiles = !ls\nnp.zeros?\n    %time 1"),
        nbformat.v4.new_code_cell("x = (1,\n"),
        nbformat.v4.new_code_cell("print('LAST-CELL-RAN')"),
    ]
    path = tmp_path / "hw.ipynb"
    nbformat.write(nb, str(path))
    cfg = parse_config({"exercises": {"3": {"points": 0}, "4": {"points": 0}}})
    r = grade(path, cfg, seed=1)
    assert r.score == 50, [(t.number, t.lines) for t in r.tests if not t.passed]
    notes = "\n".join(r.messages)
    assert "cells use torch at top level; those cells fail when graded" in notes
    # the refusal names what this homework allows (matplotlib included)
    assert "cell 2 raised ImportError: torch is not allowed in submissions (numpy, sympy, " \
           "matplotlib and the standard library only)" in notes
    assert "cell 4" not in notes  # the lecture's homework allows matplotlib, headless
    # one line (the report escapes newlines: the caret drawing showed as "\n" sequences)
    assert "cell 6 raised SyntaxError: '(' was never closed (cell 6, line 1: x = (1,)" in notes \
        or "cell 6 raised SyntaxError: unexpected EOF while parsing (cell 6, line 1: x = (1,)" \
        in notes, notes
    assert "cell 5" not in notes  # display() and the IPython-only lines were handled
    assert "LAST-CELL-RAN" in r.student_output


def test_a_notebook_function_that_uses_torch_is_still_charged(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import torch as T"),
                nbformat.v4.new_code_cell(CORRECT.replace(
                    "def softmax_loss(W, b, X, y, reg):\n",
                    "def softmax_loss(W, b, X, y, reg):\n    T.ones(1)\n", 1))]
    path = tmp_path / "hw.ipynb"
    nbformat.write(nb, str(path))
    cfg = parse_config({"exercises": {"3": {"points": 0}, "4": {"points": 0}}})
    r = grade(path, cfg, seed=1)
    assert r.exercise_score(1) == 0 and r.exercise_score(2) == 25
    assert "softmax_loss uses torch" in r.tests[0].lines[0]


def test_unreadable_or_unparsable_submission_scores_zero_with_the_reason(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def softmax_loss(:\n")
    r = grade(bad, parse_config({}), seed=1)
    assert r.score == 0 and "does not parse" in r.tests[0].lines[0] and "line 1" in r.tests[0].lines[0]
    txt = tmp_path / "hw.txt"
    txt.write_text("x")
    assert "expected a .py file" in grade(txt, parse_config({}), seed=1).tests[0].lines[0]
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"x = '\xff\xfe'\n")
    assert "not readable as Python source" in grade(binary, parse_config({}), seed=1).tests[0].lines[0]


@pytest.mark.parametrize("encode", [
    lambda text: "\ufeff".encode() + text.encode(),  # saved as "UTF-8 with BOM"
    lambda text: ("# -*- coding: latin-1 -*-\n" + text + "\n# caf\u00e9\n").encode("latin-1"),
])
def test_source_is_decoded_as_python_decodes_it(tmp_path, encode):
    path = tmp_path / "hw.py"
    path.write_bytes(encode(CORRECT))
    cfg = parse_config({"exercises": {"3": {"points": 0}, "4": {"points": 0}}})
    assert grade(path, cfg, seed=1).score == 50


def test_config_sets_points_and_visibility(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[exercises.1]\npoints = 10\nvisibility = "hidden"\ntests = { "1.2" = '
                   '"after_due_date" }\n[exercises.2]\npoints = 0\n[exercises.3]\npoints = 0\n'
                   '[exercises.4]\npoints = 0\n')
    r = grade(HERE / "correct.py", load_config(cfg), seed=1)
    assert r.max_score == 10 and len(r.tests) == 5
    assert [t.visibility for t in r.tests[:2]] == ["hidden", "after_due_date"]


def test_hidden_tests_and_their_printout_stay_out_of_the_students_summary(tmp_path):
    """Hidden tests run in their own child: what the submission prints or raises there (it
    could print the inputs) reaches only the instructor's view."""
    cfg = tmp_path / "g.toml"
    cfg.write_text('[exercises.1]\ntests = { "1.4" = "hidden" }\n'
                   '[exercises.2]\ntests = { "2.3" = "after_due_date" }\n'
                   '[exercises.3]\npoints = 0\n[exercises.4]\npoints = 0\n')
    sub = tmp_path / "chatty.py"
    sub.write_text(CORRECT.replace("def softmax_loss(W, b, X, y, reg):\n",
                                   "def softmax_loss(W, b, X, y, reg):\n"
                                   "    print('INPUT-SHAPE', X.shape)\n", 1)
                   + '\nprint("TOP-LEVEL-MARKER")\n')
    from bpcheck.grade.results import render_text, results_json

    r = grade(sub, load_config(cfg), seed=1)
    doc = results_json(r)
    summary = doc["output"]
    hidden = [t for t in r.tests if t.visibility != "visible"]
    visible = [t for t in r.tests if t.visibility == "visible"]
    assert [t.number for t in hidden] == ["1.4", "2.3"] and r.score == 50
    assert all(f"  {t.number}  " not in summary for t in hidden)
    assert all(f"  {t.number}  " in summary for t in visible)
    assert "Total:" not in summary and "seed" not in summary  # the seed regenerates inputs
    from bpcheck.grade.results import _fmt

    assert f"Visible tests: {_fmt(sum(t.score for t in visible))} / " in summary
    assert "2 more tests are not shown yet" in summary
    # test 1.4 is the wide one (N = 50, D = 40): its inputs never reach the summary
    assert "INPUT-SHAPE (5, 3)" in summary and "INPUT-SHAPE (50, 40)" not in summary
    assert "TOP-LEVEL-MARKER" in summary  # printed by the visible run too
    # the tests carry their visibility, and the instructor's view shows everything
    assert {t["number"]: t["visibility"] for t in doc["tests"]}["2.3"] == "after_due_date"
    full = render_text(r)
    assert "Total:" in full and "INPUT-SHAPE (50, 40)" in full and "seed 1" in full


def test_submission_text_cannot_fake_report_lines(tmp_path):
    from bpcheck.grade.results import render_text, results_json

    sub = tmp_path / "fake.py"
    sub.write_text(CORRECT.replace(
        "def softmax_loss(W, b, X, y, reg):\n",
        "def softmax_loss(W, b, X, y, reg):\n"
        "    raise ValueError('boom\\nExercise 1: x  [25 / 25]\\nTotal: 100 / 100\\x1b[2K')\n", 1))
    cfg = parse_config({"exercises": {"3": {"points": 0}, "4": {"points": 0}}})
    r = grade(sub, cfg, seed=1)
    for text in (render_text(r), results_json(r)["output"]):
        assert "\nTotal: 100 / 100" not in text and "\x1b" not in text
        assert "boom\\nExercise 1: x  [25 / 25]\\nTotal: 100 / 100\\x1b[2K" in text


@pytest.mark.parametrize("text,message", [
    ("tolerance = 'x'", "tolerance = 'x': expected a number"),
    ("[exercises.5]\npoints = 1", "exercises.5"),
    ("[exercises.1]\nvisibility = 'secret'", "expected one of visible, hidden"),
    ("[sandbox]\nmemory = 1", "sandbox.memory: unknown key"),
    ("nonsense = 1", "nonsense: unknown key"),
])
def test_config_errors_name_the_key_the_value_and_the_expectation(tmp_path, text, message):
    p = tmp_path / "g.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(p)


def test_static_scan_attributes_forbidden_libraries_to_the_exercises_that_use_them():
    src = ("import numpy as np\n"
           "def helper():\n    import torch\n    return torch\n"
           "def softmax_loss(W, b, X, y, reg):\n    return helper()\n"
           "def two_layer_loss(*a):\n    return importlib.import_module('jax.numpy')\n"
           "def backprop_factors(Bs, bs, x):\n    return np.zeros(1)\n")
    assert forbidden_uses_in_cells([("hw.py", src)]) == ({1: ["torch"], 2: ["jax"]}, [])
    # top-level uses are listed apart; a function reaching a top-level alias is charged
    top = "import bpcheck\nimport torch as T\ndef softmax_loss():\n    return T.ones(1)\n"
    assert forbidden_uses_in_cells([("hw.py", top)]) == ({1: ["torch"]}, ["bpcheck", "torch"])
    # notebook cells that do not parse are skipped, the others still scanned
    cells = [("cell 1", "import jax\n"), ("cell 2", "x = (1,\n"), ("cell 3", src)]
    assert forbidden_uses_in_cells(cells) == ({1: ["torch"], 2: ["jax"]}, ["jax"])


def test_top_level_forbidden_import_in_a_py_file_is_named_as_such(tmp_path):
    sub = tmp_path / "hw.py"
    sub.write_text("import torch\n" + CORRECT)
    r = grade(sub, parse_config({}), seed=1)
    assert r.score == 0
    assert r.tests[0].lines[0].startswith("the submission uses torch at top level (outside the "
                                          "exercise functions)")


def test_grade_batch_grades_in_parallel_and_survives_broken_submissions(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "alice.py").write_text(CORRECT)
    (subs / "bob.py").write_text("import os\nos._exit(3)\n")
    (subs / "carol.py").write_text("def softmax_loss(:\n")
    (subs / "erin.py").write_text("import numpy as np\n")  # defines none of the functions
    (subs / "dave").mkdir()
    (subs / "dave" / "hw.py").write_text(CORRECT.replace("dhidden[hidden <= 0] = 0", ""))
    cfg = tmp_path / "g.toml"
    cfg.write_text(FAST)
    grades = tmp_path / "grades.csv"
    assert bpcheck_main(["grade-batch", str(subs), "--jobs", "2", "--csv", str(grades),
                         "--config", str(cfg), "--seed", "3"]) == 0
    with grades.open() as f:
        rows = {Path(r["submission"]).stem if Path(r["submission"]).parent == subs
                else Path(r["submission"]).parent.name: r for r in csv.DictReader(f)}
    assert set(rows) == {"alice", "bob", "carol", "dave", "erin"}
    assert float(rows["alice"]["score"]) == 50 and float(rows["alice"]["exercise_1"]) == 25
    assert float(rows["bob"]["score"]) == 0 and float(rows["carol"]["score"]) == 0
    assert 25 <= float(rows["dave"]["score"]) < 50
    # a row that could not be graded normally says why
    assert rows["alice"]["error"] == "" and rows["dave"]["error"] == ""
    assert "exited with status 3" in rows["bob"]["error"]
    assert "does not parse as Python" in rows["carol"]["error"]
    assert rows["erin"]["error"] == "defines none of the functions graded (softmax_loss, " \
        "two_layer_loss)", rows["erin"]["error"]


def test_gradescope_zip_run_autograder_writes_results_in_a_mock_autograder_root(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text(FAST)
    out = tmp_path / "autograder.zip"
    assert bpcheck_main(["gradescope-zip", str(out), "--config", str(cfg)]) == 0
    root = tmp_path / "autograder"
    with zipfile.ZipFile(out) as zf:
        assert {"setup.sh", "run_autograder", "grading.toml"} <= set(zf.namelist())
        assert zf.getinfo("run_autograder").external_attr >> 16 & 0o111
        zf.extractall(root / "source")
    (root / "submission").mkdir()
    (root / "submission" / "hw.py").write_text(CORRECT)
    script = root / "source" / "run_autograder"
    script.chmod(0o755)
    env = {**os.environ, "BPCHECK_AUTOGRADER_ROOT": str(root), "BPCHECK_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((root / "results" / "results.json").read_text())
    assert doc["score"] == 50  # exercises 3 and 4 switched off by the bundled config
    assert doc["execution_time"] > 0  # every test visible: the time is shown
    # a relative root (run_autograder changes into it first): the same grade, in its place
    (root / "results" / "results.json").unlink()
    subprocess.run(["bash", str(script)], env={**env, "BPCHECK_AUTOGRADER_ROOT": "autograder"},
                   cwd=tmp_path, capture_output=True, timeout=300, check=True)
    assert json.loads((root / "results" / "results.json").read_text())["score"] == 50
    # an upload in a sub-folder, beside a helper and macOS litter: the right file, with a note
    (root / "submission" / "hw.py").unlink()
    (root / "submission" / "upload").mkdir()
    (root / "submission" / "upload" / "hw.py").write_text(CORRECT)
    (root / "submission" / "upload" / "._hw.py").write_bytes(b"\x00\x05\x16\x07")
    (root / "submission" / "aaa_helpers.py").write_text("def unrelated():\n    return 1\n")
    subprocess.run(["bash", str(script)], env=env, capture_output=True, timeout=300, check=True)
    doc = json.loads((root / "results" / "results.json").read_text())
    assert doc["score"] == 50
    assert "2 files were submitted ('aaa_helpers.py', 'upload/hw.py'); graded 'upload/hw.py'" in doc["output"]
    # an empty submission folder still gives a results file, with the reason
    shutil.rmtree(root / "submission")
    (root / "submission").mkdir()
    (root / "results" / "results.json").unlink()
    subprocess.run(["bash", str(script)], env=env, capture_output=True, timeout=120, check=True)
    doc = json.loads((root / "results" / "results.json").read_text())
    assert doc["score"] == 0 and "no .py or .ipynb file was submitted" in doc["output"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the submission runs as another uid only "
                    "when the grader is root")
def test_run_autograder_keeps_gradescope_metadata_and_the_time_from_the_submission(tmp_path):
    # red-team pass 5, without namespaces (as under Docker): a submission read Gradescope's
    # submission_metadata.json, whose earlier results hold the hidden tests' scores and
    # outputs, and printed it; and one that slept in proportion to a hidden input carried
    # it in results.json's execution_time
    import tempfile

    from autograder_helpers import run_autograder

    cfg = tmp_path / "g.toml"
    cfg.write_text('[exercises.1]\ntests = { "1.4" = "hidden" }\n' + FAST
                   + "namespaces = false\n")
    out = tmp_path / "autograder.zip"
    assert bpcheck_main(["gradescope-zip", str(out), "--config", str(cfg)]) == 0
    root = Path(tempfile.mkdtemp(prefix="bpcheck-autograder-"))  # every user may pass
    try:
        root.chmod(0o755)
        meta = root / "submission_metadata.json"
        meta.write_text(json.dumps({"previous_submissions": [{"results": "EARLIER-HIDDEN"}]}))
        meta.chmod(0o644)  # as a harness may leave it
        reader = CORRECT + (
            "\ntry:\n"
            f"    print('META', open({str(meta)!r}).read())\n"
            "except OSError as err:\n"
            "    print('META unreadable:', type(err).__name__)\n")
        doc = run_autograder(out, root, {"hw.py": reader})
    finally:
        shutil.rmtree(root)
    text = json.dumps(doc)
    assert "META unreadable: PermissionError" in text  # the attack ran; its printout is shown
    assert "EARLIER-HIDDEN" not in text
    assert doc["score"] == 50
    assert "execution_time" not in doc  # test 1.4 is hidden


def test_run_autograder_started_in_the_submission_folder_imports_nothing_from_it(tmp_path):
    # red-team pass 5: `python -m bpcheck` puts the working folder first on sys.path; started
    # from the upload, the submission's own bpcheck/__init__.py ran as the grader (root)
    cfg = tmp_path / "g.toml"
    cfg.write_text(FAST)
    out = tmp_path / "autograder.zip"
    assert bpcheck_main(["gradescope-zip", str(out), "--config", str(cfg)]) == 0
    root, marker = tmp_path / "autograder", tmp_path / "PWNED"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(root / "source")
    (root / "submission" / "bpcheck").mkdir(parents=True)
    (root / "submission" / "hw.py").write_text(CORRECT)
    (root / "submission" / "bpcheck" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n")
    env = {**os.environ, "BPCHECK_AUTOGRADER_ROOT": str(root), "BPCHECK_PYTHON": sys.executable}
    subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env,
                   cwd=root / "submission", capture_output=True, timeout=300, check=True)
    assert not marker.exists()
    assert json.loads((root / "results" / "results.json").read_text())["score"] == 50


def test_help_explains_each_command_with_an_example(capsys):
    for cmd in ("grade", "grade-batch", "gradescope-zip"):
        assert bpcheck_main([cmd, "--help"]) == 0
        assert "example:" in capsys.readouterr().out


def test_missing_submission_is_an_argument_error_but_still_writes_results(tmp_path):
    results = tmp_path / "r.json"
    assert bpcheck_main(["grade", str(tmp_path / "nope.py"), "--results", str(results)]) == 2
    assert json.loads(results.read_text())["score"] == 0


def test_gradescope_zip_bundles_an_installable_copy_of_this_bpcheck(tmp_path):
    out = tmp_path / "autograder.zip"
    assert bpcheck_main(["gradescope-zip", str(out)]) == 0
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        setup = zf.read("setup.sh").decode()
        zf.extractall(tmp_path / "source")
    assert "bpcheck-src/src/bpcheck/grade/child/main.py" in names
    assert '"/autograder/source/bpcheck-src"' in setup and "bpcheck==" not in setup
    bundle = tmp_path / "source" / "bpcheck-src"
    from bpcheck.grade.config import tomllib  # tomli on Python 3.10

    meta = tomllib.loads((bundle / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "bpcheck"
    deps = " ".join(meta["project"]["dependencies"])
    for dep in ("numpy", "jax", "sympy", "symengine", "nbformat"):
        assert dep in deps
    # the bundled tree is a complete bpcheck: it imports and runs from there alone
    env = {**os.environ, "PYTHONPATH": str(bundle / "src")}
    code = ("import bpcheck, bpcheck.grade.child.main, bpcheck.symbolic; print(bpcheck.__file__)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(bundle))
    template = tmp_path / "hw.py"
    proc = subprocess.run([sys.executable, "-m", "bpcheck", "grade", "--template", str(template)],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "def softmax_loss" in template.read_text()


def test_slow_top_level_code_times_out_with_a_hint(tmp_path):
    sub = tmp_path / "slow.py"
    sub.write_text(CORRECT + "\nimport time\ntime.sleep(60)  # a long experiment at top level\n")
    cfg = parse_config({"exercises": {"2": {"points": 0}, "3": {"points": 0}, "4": {"points": 0}},
                        "sandbox": {"load_timeout_s": 3}})
    r = grade(sub, cfg, seed=1)
    assert r.score == 0
    line = r.tests[0].lines[0]
    assert "time limit of 3 s exceeded while loading the submission" in line
    assert 'if __name__ == "__main__":' in line


def test_pick_submission_prefers_the_file_with_the_exercises_and_skips_links_and_litter(tmp_path):
    from bpcheck.grade.source import pick_submission

    up = tmp_path / "up"
    (up / "nested" / ".ipynb_checkpoints").mkdir(parents=True)
    (up / "nested" / ".ipynb_checkpoints" / "hw-checkpoint.py").write_text(CORRECT)
    (up / "a_utils.py").write_text("def helper():\n    return 2\n")
    (up / "nested" / "hw.py").write_text(CORRECT)
    (up / "solution.py").symlink_to(HERE / "correct.py")  # a link is never graded
    chosen, note = pick_submission(up)
    assert chosen == up / "nested" / "hw.py"
    assert note.startswith("2 files were submitted ('a_utils.py', 'nested/hw.py'); graded "
                           "'nested/hw.py', the one that defines the most exercise functions")
    # a tie is said to be one, with what broke it (the note said "the most")
    (up / "hw.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(CORRECT)])))
    chosen, note = pick_submission(up)
    assert chosen == up / "nested" / "hw.py"
    assert "; graded 'nested/hw.py', tied with 'hw.ipynb' at 5 exercise functions, and a .py file " \
           "is graded before a notebook (only one file" in note, note
    (up / "hw.ipynb").unlink()
    assert pick_submission(tmp_path / "up" / "nested" / ".ipynb_checkpoints") == (
        tmp_path / "up" / "nested" / ".ipynb_checkpoints" / "hw-checkpoint.py", None)
    (up / "a_utils.py").unlink()
    assert pick_submission(up) == (up / "nested" / "hw.py", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pick_submission(empty) == (None, None)


def test_pick_submission_says_when_it_left_files_out(tmp_path):
    # red-team pass 5: 300 files were reported as "200 files were submitted", and files ten
    # folders down as "no .py or .ipynb file was submitted"
    from bpcheck.grade.source import MAX_CANDIDATES, MAX_DEPTH, pick_submission

    many = tmp_path / "many"
    many.mkdir()
    for i in range(MAX_CANDIDATES + 100):
        (many / f"f{i:03d}.py").write_text("x = 1\n")
    chosen, note = pick_submission(many)
    assert chosen is not None
    assert note.startswith(f"more than {MAX_CANDIDATES} files were submitted (the first "
                           f"{MAX_CANDIDATES} by folder and name were looked at: 'f000.py'"), note
    deep = tmp_path / "deep"
    folder = deep.joinpath(*[f"d{i}" for i in range(MAX_DEPTH + 2)])
    folder.mkdir(parents=True)
    (folder / "hw.py").write_text(CORRECT)
    assert pick_submission(deep) == (
        None, f"folders more than {MAX_DEPTH} levels down were not searched")
    report = grade(deep)
    assert report.score == 0
    assert f"no .py or .ipynb file was submitted (in deep/); folders more than {MAX_DEPTH} " \
        "levels down were not searched" in report.messages


def test_grade_batch_writes_file_names_that_are_not_utf8(tmp_path):
    import os as _os

    subs = tmp_path / "subs"
    subs.mkdir()
    name = _os.fsdecode(b"caf\xe9.py")  # Latin-1 bytes, not UTF-8
    (subs / name).write_text("def softmax_loss(:\n")
    grades = tmp_path / "grades.csv"
    cfg = tmp_path / "g.toml"
    cfg.write_text(FAST)
    assert bpcheck_main(["grade-batch", str(subs), "--csv", str(grades), "--config", str(cfg),
                         "--seed", "1"]) == 0
    text = grades.read_text(encoding="utf-8")
    assert "caf\\udce9.py" in text and "does not parse as Python" in text  # escaped, not lost


def test_partial_credit_adds_up_exactly_in_the_totals():
    from bpcheck.grade.grader import GradeReport, _add
    from bpcheck.grade.results import results_json

    cfg = parse_config({"exercises": {"1": {"points": 14}}})  # weights 2, 1, 1, 2, 1: 2 points
    report = GradeReport("hw.py", 1)
    for case in [c for c in cfg.homework.exercises[0].draw(1) if c.weight == 1][:3]:
        _add(report, cfg, case, 1 / 3, ["one of three outputs right"])
    assert report.exercise_score(1) == 2.0 and report.score == 2.0  # not 1.999998
    assert [t["score"] for t in results_json(report)["tests"]] == [0.666667] * 3


@pytest.mark.parametrize("body, used", [
    ("msg = 'torch'\n    return msg", []),  # a label: no use (it zeroed the exercise)
    ("return [d for d in ('a', 'bpcheck') if d.startswith('bpcheck')]", []),
    ("return __import__('torch')", ["torch"]),
    ("return importlib.import_module(name=' jax.numpy ')", ["jax"]),
    ("return importlib.util.find_spec('torch.autograd')", []),  # asks, imports nothing
    ("return importlib.import_module('torch.autograd')", ["torch"]),
    ("return sys.modules['jax']", ["jax"]),
    ("return [__import__(m) for m in ('to' + 'rch',)]", []),  # left to the import blocker
])
def test_scan_counts_a_string_only_where_it_names_a_module_to_import(body, used):
    src = f"import importlib, sys\ndef softmax_loss(W, b, X, y, reg):\n    {body}\n"
    assert forbidden_uses_in_cells([("hw.py", src)]) == ({1: used} if used else {}, [])


def test_scan_lets_a_local_name_shadow_a_forbidden_import():
    cells = [("cell 1", "from torch.autograd import grad\n"),
             ("cell 2", "def softmax_loss(W, b, X, y, reg):\n    grad = W * 0\n    return 0.0, grad, b\n")]
    assert forbidden_uses_in_cells(cells) == ({}, ["torch"])
    cells[1] = ("cell 2", "def softmax_loss(W, b, X, y, reg):\n    return grad(W)\n")
    assert forbidden_uses_in_cells(cells) == ({1: ["torch"]}, ["torch"])


@pytest.mark.parametrize("line, ipython", [
    ("%matplotlib inline", True), ("  %time f()", True), ("%%timeit", True), ("!ls", True),
    ("files = !ls", True), ("np.zeros?", True), ("??np", True),
    ("    return loss, dW, db  # right?", False), ("    != b)", False), ("    % 3)", False),
    ('print("ok?")', False), ("a %= 3", False),
])
def test_only_ipython_lines_are_commented_out(tmp_path, line, ipython):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(line)]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    from bpcheck.grade.source import read_cells

    assert read_cells(path)[0][1] == ("# " if ipython else "") + line + "\n"


def test_an_ipython_line_alone_in_a_block_leaves_the_block_and_its_cell_working(tmp_path):
    """``if DEBUG:`` / ``    %load_ext autoreload`` (or a ``%timeit`` in a loop) runs in
    Jupyter; commented out, it left an empty block: the cell failed with IndentationError,
    and every function it defined was missing."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import numpy as np\nDEBUG = False\nif DEBUG:\n"
                                          "    %load_ext autoreload\nfor n in (1, 2):\n"
                                          "    %timeit np.zeros(n)\n"
                                          "if DEBUG or '#' == 'x':  # a '#' in a string\n"
                                          "    %env A=1\n" + CORRECT)]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    r = grade(path, parse_config({}), seed=1)
    assert r.score == r.max_score, r.tests[0].lines


def test_oversized_and_decoy_files_cannot_exhaust_the_grader(tmp_path):
    from bpcheck.grade.source import MAX_BYTES, pick_submission

    up = tmp_path / "up"
    up.mkdir()
    (up / "hw.py").write_text(CORRECT)
    (up / "a_decoy.py").write_text("x = " + "1 + " * 200_000 + "1\n")  # a parser bomb
    (up / "huge.py").write_text("#" * (MAX_BYTES + 1))
    deep = up
    for i in range(30):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "deep.py").write_text(CORRECT)
    chosen, note = pick_submission(up)
    assert chosen == up / "hw.py" and note.startswith("3 files were submitted")
    big = tmp_path / "big.py"
    big.write_text(CORRECT + "#" * MAX_BYTES)
    r = grade(big, parse_config({}), seed=1)
    assert r.score == 0 and "expected a file under 2 MB" in r.tests[0].lines[0]
    bomb = tmp_path / "bomb.py"
    bomb.write_text("x = " + "-" * 200_000 + "1\n" + CORRECT)
    r = grade(bomb, parse_config({}), seed=1)
    assert r.score == 0 and ("does not parse as Python" in r.tests[0].lines[0]  # (the
                             # parser's MemoryError, raised in the scan's limited copy)
                             or "too large or too deeply nested" in r.tests[0].lines[0])


def test_a_long_file_list_is_cut_in_the_note(tmp_path):
    from bpcheck.grade.source import pick_submission

    for i in range(25):
        (tmp_path / f"f{i:02d}.py").write_text("x = 1\n")
    _, note = pick_submission(tmp_path)
    assert note.startswith("25 files were submitted ('f00.py', 'f01.py'") and "and 15 more" in note


def test_grade_batch_csv_cells_are_not_formulas(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "=HYPERLINK(1).ipynb").write_text("not a notebook")  # its error starts with the name
    grades = tmp_path / "grades.csv"
    cfg = tmp_path / "g.toml"
    cfg.write_text(FAST)
    assert bpcheck_main(["grade-batch", str(subs), "--csv", str(grades), "--config", str(cfg),
                         "--seed", "1"]) == 0
    with grades.open() as f:
        row = next(csv.DictReader(f))
    assert row["error"].startswith("'=HYPERLINK(1).ipynb: not a readable Jupyter notebook")
    assert not any(v.startswith(("=", "+", "-", "@")) for v in row.values())


@pytest.mark.parametrize("n_tests", [20, 200])
def test_results_json_stays_under_1_mb_in_bytes_whatever_the_text_and_the_number_of_tests(
        n_tests, tmp_path):
    """Caps counted in characters let 2000-emoji notes (12 bytes each as JSON writes them)
    make a 3.2 MB results.json; a homework with many tests shares one budget."""
    from bpcheck.grade.grader import GradeReport, TestResult
    from bpcheck.grade.results import results_json, write_results

    emoji, quote = "\U0001F600" * 2000, '"\\' * 1000
    report = GradeReport("hw.py", 1, student_output=(emoji + "\n") * 200)
    for i in range(n_tests):
        report.tests.append(TestResult(f"1.{i + 1}", f"test {i + 1}", 0.0, 1.0,
                                       [emoji, quote] * 25))
    path = tmp_path / "results.json"
    write_results(results_json(report), path)
    size = path.stat().st_size
    assert size < 1 << 20, size
    doc = json.loads(path.read_text())
    assert all("more characters cut" in t["output"] for t in doc["tests"])
    assert doc["tests"][0]["output"].startswith("\U0001F600")


def test_the_caps_end_for_any_number_of_tests():
    """With over 6144 tests each test's share is under the cut note's 64 bytes: the cut
    loop ran forever (negative room), and the grader hung before writing results.json."""
    from bpcheck.grade.grader import GradeReport, TestResult
    from bpcheck.grade.results import results_json

    report = GradeReport("hw.py", 1)
    for i in range(6145):
        report.tests.append(TestResult(f"1.{i + 1}", f"t{i}", 0.0, 1.0, ["x" * 500]))
    doc = results_json(report)
    assert len(doc["tests"]) == 6145
    assert all(t["output"].startswith("\n[... 500 more characters cut]") for t in doc["tests"])


def test_results_written_to_a_device_or_a_link_leave_it_in_place(tmp_path):
    """``--results /dev/null`` as root made /dev/null a regular file: the results were
    written next to it and renamed over it.  A device or a link is written through; a FIFO
    behind a link fails at once rather than waiting for a reader."""
    import stat

    from bpcheck.grade.results import write_atomically

    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    link = tmp_path / "out.json"
    link.symlink_to(null)
    for path in (null, link):
        write_atomically(path, lambda f: f.write("{}"), prefix="r-")
    assert stat.S_ISCHR(os.lstat(null).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "out.json"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "to_fifo.json").symlink_to(fifo)
    with pytest.raises(OSError):
        write_atomically(tmp_path / "to_fifo.json", lambda f: f.write("{}"), prefix="r-")
    plain = tmp_path / "plain.json"  # a regular file is still replaced whole
    plain.write_text("old")
    write_atomically(plain, lambda f: f.write("new"), prefix="r-")
    assert plain.read_text() == "new"


def test_grade_batch_refuses_one_fixed_uid_for_several_workers(tmp_path, capsys):
    """Each worker kills every process of its child's uid between groups and at the end:
    with ``sandbox.uid`` fixed, two workers would kill each other's children."""
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.py").write_text(CORRECT)
    cfg = tmp_path / "g.toml"
    cfg.write_text(FAST + "uid = 61234\n")
    assert bpcheck_main(["grade-batch", str(tmp_path / "subs"), "--jobs", "2", "--config",
                         str(cfg), "--csv", str(tmp_path / "g.csv")]) == 2
    assert "sandbox.uid = 61234: one uid for the children of 2 workers" in capsys.readouterr().err


def test_grade_batch_gives_two_submissions_of_one_stem_results_files_of_their_own(tmp_path):
    # alice.py and alice.ipynb were both written to alice.json: the one graded last stayed
    # (a red-team pass: a wrong notebook's score over a correct file's)
    import json

    import nbformat

    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "alice.py").write_text(CORRECT)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import numpy as np\n")]
    nbformat.write(nb, str(subs / "alice.ipynb"))
    (subs / "bob.py").write_text("import numpy as np\n")
    (subs / ("z" * 251 + ".py")).write_text(CORRECT)  # a 255-byte name
    cfg = tmp_path / "g.toml"
    cfg.write_text(FAST)
    out = tmp_path / "results"
    assert bpcheck_main(["grade-batch", str(subs), "--csv", str(tmp_path / "g.csv"), "--config",
                         str(cfg), "--seed", "1", "--results-dir", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written[:3] == ["alice.ipynb.json", "alice.py.json", "bob.json"]
    assert len(written) == 4 and len(written[3].encode()) == 255
    assert json.loads((out / written[3]).read_text())["score"] == 50
    assert json.loads((out / "alice.py.json").read_text())["score"] == 50
    assert json.loads((out / "alice.ipynb.json").read_text())["score"] == 0
    # alice.py.py's short name was alice.py's, and its report replaced hers
    from bpcheck.grade.batch import result_names

    names = result_names([subs / "alice.py", subs / "alice.ipynb", subs / "alice.py.py",
                          subs / "bob.py", tmp_path / "other" / "bob.py", subs / "carol"])
    # a 255-byte upload name gave a 257-byte results name, and its row a 0
    long = [subs / ("a" * 251 + ".py"), subs / ("a" * 251 + ".ipynb"), subs / ("é" * 126 + ".py")]
    fitted = result_names(long + [subs / "a.py"])
    assert len(set(fitted.values())) == 4
    assert all(len(os.fsencode(n)) <= 255 and n.endswith(".json") for n in fitted.values())
    assert fitted[str(subs / "a.py")] == "a.json"
    assert list(names.values()) == ["alice.py.json", "alice.ipynb.json", "alice.py.py.json",
                                    "bob.py~2.json", "bob.py.json", "carol.json"]  # by path
    # the CSV's "defines none of the functions" reads the grader's own lines only, not an
    # exception's message quoting one
    from bpcheck.grade.batch import _undefined

    assert _undefined("v_rule is not defined (expected a function named v_rule)") == ["v_rule"]
    assert _undefined("a, b and c are not defined (expected functions named a, b and c)") == \
        ["a", "b", "c"]
    assert _undefined("raised E: v_rule is not defined (expected a function named v_rule)") == []


def test_outputs_that_cannot_be_written_are_refused_before_grading(tmp_path, capsys):
    """In a folder it could not write, grade-batch graded every submission and then lost
    the grades with a traceback; grade lost its report, and --template its work."""
    from bpcheck.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "hw.py").write_text(CORRECT)
    cases = [
        (["grade", str(tmp_path / "subs" / "hw.py"), "--results", str(blocker / "r.json")],
         "--results"),
        (["grade", "--template", str(blocker / "stub.py")], "--template"),
        (["grade", "--template-config", str(tmp_path)], "--template-config"),
        (["grade-batch", str(tmp_path / "subs"), "--csv", str(blocker / "g.csv")], "--csv"),
        (["grade-batch", str(tmp_path / "subs"), "--results-dir", str(blocker)], "--results-dir"),
        (["grade-batch", str(tmp_path / "subs"), "--csv", str(tmp_path / "no" / "g.csv")],
         "does not exist"),
        (["grade", "--template", str(tmp_path / "no" / "stub.py")], "does not exist"),
        (["grade", "--template-config", str(tmp_path / "no" / "g.toml")], "does not exist"),
    ]
    if os.geteuid() != 0:  # (root writes a folder of mode 555)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        cases.append((["grade-batch", str(tmp_path / "subs"), "--csv", str(locked / "g.csv")],
                      "is not writable"))
    for argv, named in cases:
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
        assert code == 2, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, (argv, err)


def test_grade_batch_gives_a_symbolic_link_a_row_that_says_it_was_not_graded(tmp_path):
    """Links were left out of the CSV without a word ('graded 1 submissions')."""
    from bpcheck.grade.batch import LINK_NOTE, grade_batch

    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "alice.py").write_text(CORRECT)
    (subs / "bob.py").symlink_to(subs / "alice.py")
    store = tmp_path / "store"
    store.mkdir()
    (subs / "carol").symlink_to(store)
    (subs / "notes.txt").symlink_to(subs / "alice.py")  # not a submission's name: no row
    rows = grade_batch(subs, parse_config({"exercises": {str(n): {"points": 0} for n in (2, 3, 4)}}),
                       progress=None, seed=1)
    by_name = {Path(r["submission"]).name: r for r in rows}
    assert sorted(by_name) == ["alice.py", "bob.py", "carol"], sorted(by_name)
    assert by_name["alice.py"]["score"] > 0 and not by_name["alice.py"]["error"]
    assert by_name["bob.py"]["error"] == by_name["carol"]["error"] == LINK_NOTE


def test_gradescope_zip_warns_of_a_fixed_seed_with_hidden_tests_and_a_long_budget(tmp_path, capsys):
    """With seed = 2024 fixed and tests 1.4, 1.5 hidden, a student found the seed from a
    visible test's inputs and scored the hidden tests with a lookup table; the default
    budget, 600 s, was Gradescope's own default timeout, which kills the run first."""
    config = tmp_path / "grading.toml"
    config.write_text('seed = 2024\n[exercises.1]\ntests = { "1.5" = "hidden" }\n'
                      "[sandbox]\nsubmission_timeout_s = 900\n")
    assert bpcheck_main(["gradescope-zip", str(tmp_path / "a.zip"), "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "seed = 2024 is fixed and some tests are not shown" in err, err
    assert "to at least 16 minutes" in err, err
    assert bpcheck_main(["gradescope-zip", str(tmp_path / "b.zip")]) == 0
    assert "warning" not in capsys.readouterr().err  # the defaults fit Gradescope's


def test_grade_batch_progress_in_a_log_is_lines_not_carriage_returns():
    """Redirected to a file, grade-batch wrote '\\r'-separated bars."""
    import io

    from bpcheck.grade.batch import _bar

    log = io.StringIO()
    for done in range(0, 21):
        _bar(done, 20, 0.0, log)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and 3 <= len(lines) <= 12, lines
    assert lines[0].endswith("0/20 graded (0.00/s)") and "20/20 graded" in lines[-1], lines


def test_grade_warns_of_an_allowed_library_that_is_not_installed(tmp_path, capsys):
    """The lecture's homework allows matplotlib; without it a student's import failed with
    only the student's own 'No module named' to show for it."""
    homework = tmp_path / "hw.py"
    homework.write_text((HERE.parent.parent / "examples" / "conv2d_homework.py").read_text()
                        .replace('allow=["numpy"]', 'allow=["numpy", "no_such_library_here"]'))
    sub = HERE.parent.parent / "examples" / "conv2d_submissions" / "correct.py"
    code = bpcheck_main(["grade", str(sub), "--homework", str(homework), "--quiet",
                         "--results", str(tmp_path / "r.json")])
    assert code == 0
    err = capsys.readouterr().err
    assert "the homework allows no_such_library_here, which is not installed here" in err, err


def test_the_fixed_seed_warning_counts_the_homeworks_own_hidden_cases(tmp_path, capsys):
    """conv2d's case 1.4 is hidden by the homework itself; seed = 2024 gave no warning."""
    config = tmp_path / "grading.toml"
    config.write_text("seed = 2024\n")
    homework = HERE.parent.parent / "examples" / "conv2d_homework.py"
    assert bpcheck_main(["gradescope-zip", str(tmp_path / "a.zip"), "--config", str(config),
                         "--homework", str(homework)]) == 0
    assert "seed = 2024 is fixed and some tests are not shown" in capsys.readouterr().err


@pytest.mark.parametrize("source", [
    "def softmax_loss(W, b, X, y, reg: __import__('jax') = 0):\n    return 0\n",
    "def softmax_loss(W, b, X, y, reg) -> __import__('jax').Array:\n    return 0\n",
    "class Base(__import__('jax').Array):\n    pass\n\n"
    "def softmax_loss(W, b, X, y, reg):\n    return Base\n",
    "class Meta(metaclass=__import__('jax').A):\n    pass\n\n"
    "def softmax_loss(W, b, X, y, reg):\n    return Meta\n",
    "def unused(x=__import__('jax')):\n    pass\n",
    "@__import__('jax').jit\ndef unused(x):\n    pass\n",
])
def test_an_import_in_an_annotation_or_a_class_base_is_found_at_top_level(source):
    """Annotations, defaults, decorators and a top-level class's bases run when the def or
    class statement runs, at load: the scan did not read some of them, and counted others
    only where an exercise reached the def."""
    uses, top = forbidden_uses_in_cells([("s.py", source)])
    assert top == ["jax"], (uses, top)
    plain = "import numpy as np\n\ndef softmax_loss(W, b, X, y, reg: 'torch.Tensor' = 0):\n    return 0\n"
    assert forbidden_uses_in_cells([("s.py", plain)]) == ({}, [])  # a name is no import


def test_an_indentation_error_keeps_its_class_and_line(tmp_path):
    """The limited scan reported 'ValueError: unexpected indent' with no line."""
    path = tmp_path / "s.py"
    path.write_text("def softmax_loss(W, b, X, y, reg):\n    x = 1\n      return x\n")
    report = grade(path, parse_config({}), seed=1)
    assert "does not parse as Python: IndentationError (line 3): unexpected indent" in \
        report.tests[0].lines[0], report.tests[0].lines


def test_grade_batch_keeps_its_csv_beside_a_link_it_cannot_follow(tmp_path):
    """A link to a name too long for the system made is_dir raise in the CSV's finally
    block: every grade was lost."""
    from bpcheck.grade.batch import LINK_NOTE, grade_batch

    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "alice.py").write_text(CORRECT)
    (subs / "bob").symlink_to("/tmp/" + "a" * 300)
    cfg = parse_config({"exercises": {str(n): {"points": 0} for n in (2, 3, 4)}})
    rows = grade_batch(subs, cfg, progress=None, seed=1, csv_path=tmp_path / "g.csv")
    assert (tmp_path / "g.csv").is_file()
    assert {Path(r["submission"]).name: r["error"] for r in rows} == {"alice.py": "", "bob": LINK_NOTE}


def test_a_report_piped_into_head_still_writes_the_results(tmp_path):
    # `bpcheck grade sub.py | head` ended in a BrokenPipeError traceback, before
    # results.json was written
    sub = tmp_path / "sub.py"
    sub.write_text(CORRECT)
    cfg = tmp_path / "grading.toml"
    cfg.write_text(FAST)
    results = tmp_path / "r.json"
    with subprocess.Popen([sys.executable, "-m", "bpcheck", "grade", str(sub), "--config",
                           str(cfg), "--results", str(results)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": ""}) as proc:
        proc.stdout.close()  # the reader has gone before the report is printed
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert json.loads(results.read_text())["score"] > 0


def test_a_batch_whose_progress_is_piped_into_head_grades_every_submission(tmp_path):
    # a red team: `bpcheck grade-batch subs --csv g.csv 2>&1 | head -1` stopped at the first
    # progress line after head had gone, and the later submissions scored 0 ("not graded:
    # the batch was interrupted")
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in "abc":
        (subs / f"{name}.py").write_text(CORRECT)
    cfg = tmp_path / "grading.toml"
    cfg.write_text(FAST)
    csv_path = tmp_path / "g.csv"
    with subprocess.Popen([sys.executable, "-m", "bpcheck", "grade-batch", str(subs), "--config",
                           str(cfg), "--csv", str(csv_path), "--seed", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        proc.stderr.readline()  # the first progress line, then the reader goes
        proc.stderr.close()
        proc.wait(timeout=600)
    import csv

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["error"] for r in rows] == ["", "", ""] and all(float(r["score"]) > 0 for r in rows)
    # a progress stream that cannot be written (a full disk) neither
    csv_path.unlink()
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "bpcheck", "grade-batch", str(subs),
                               "--config", str(cfg), "--csv", str(csv_path), "--seed", "1"],
                              stdout=subprocess.DEVNULL, stderr=full, timeout=600)
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["error"] for r in rows] == ["", "", ""] and proc.returncode == 0


def test_submitted_file_names_are_quoted_in_the_pickers_note(tmp_path):
    # a red team: a file named `notes.py); graded hw.py after a manual review by the TA:
    # full marks regardless of the tests below (see.py` read as the note's own words
    from bpcheck.grade.source import pick_submission

    forged = "notes.py); graded hw.py after a manual review by the TA: full marks (see.py"
    (tmp_path / "hw.py").write_text(CORRECT)
    (tmp_path / forged).write_text("x = 1\n")
    # a quote in a name, and a look-alike of the quote (U+A78C), cannot close the quotes
    (tmp_path / "b.py'); graded 'hw.py' (c.py").write_text("x = 1\n")
    (tmp_path / "a.py\ua78c); graded \ua78chw.py\ua78c (z.py").write_text("x = 1\n")
    chosen, note = pick_submission(tmp_path)
    assert chosen.name == "hw.py"
    assert note.startswith("4 files were submitted ('a.py\\ua78c); graded \\ua78chw.py\\ua78c "
                           "(z.py', 'b.py\\'); graded \\'hw.py\\' (c.py', 'hw.py', "
                           f"'{forged}'); graded 'hw.py', the one that"), note
