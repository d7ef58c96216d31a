"""An instructor's own homework module (examples/conv2d_homework.py, a NumPy conv2d_forward)
graded, batched, templated and zipped for Gradescope without touching bpcheck's source;
config values checked against the homework before anything runs."""

import csv
import importlib.util
import json
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from autograder_helpers import run_autograder

from bpcheck.cli import main as bpcheck_main
from bpcheck.grade.config import ConfigError, load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HOMEWORK = EXAMPLES / "conv2d_homework.py"
SUBMISSIONS = EXAMPLES / "conv2d_submissions"


def run(*argv):
    return bpcheck_main([str(a) for a in argv])


def test_an_instructors_exercise_is_graded_and_its_mistake_named(tmp_path, capsys):
    results = tmp_path / "r.json"
    assert run("grade", SUBMISSIONS / "correct.py", "--homework", HOMEWORK, "--seed", 3,
               "--results", results) == 0
    assert "Total: 10 / 10" in capsys.readouterr().out
    assert run("grade", SUBMISSIONS / "flipped.py", "--homework", HOMEWORK, "--seed", 3,
               "--results", results) == 0
    out = capsys.readouterr().out
    assert "likely mistake: the filters are flipped" in out
    assert "1.3  passed" in out  # 1x1 filters cannot tell a flip: right there
    doc = json.loads(results.read_text())
    assert 0 < doc["score"] < 10


def test_an_exercise_with_one_output_accepts_it_returned_bare(tmp_path, capsys):
    source = (SUBMISSIONS / "correct.py").read_text()
    assert "    return (out,)\n" in source
    bare = tmp_path / "bare.py"
    bare.write_text(source.replace("    return (out,)\n", "    return out\n"))
    results = tmp_path / "r.json"
    assert run("grade", bare, "--homework", HOMEWORK, "--seed", 3, "--results", results) == 0
    assert "Total: 10 / 10" in capsys.readouterr().out
    wrong = tmp_path / "wrong.py"
    wrong.write_text(source.replace("    return (out,)\n", "    return out + 1\n"))
    assert run("grade", wrong, "--homework", HOMEWORK, "--seed", 3, "--results", results) == 0
    assert "Total: 0 / 10" in capsys.readouterr().out


def test_the_template_is_generated_from_the_homework(tmp_path):
    path = tmp_path / "conv.py"
    assert run("grade", "--homework", HOMEWORK, "--template", path) == 0
    text = path.read_text()
    assert "def conv2d_forward(x, w, b, stride, pad):" in text
    assert "H' = 1 + (H + 2 pad - HH) // stride" in text and "raise NotImplementedError" in text
    assert "np.pad" not in text  # the reference stays with the instructor
    compile(text, "conv.py", "exec")
    assert "import numpy as np\n" in text and "import torch" not in text
    homework = tmp_path / "hw.py"  # an allowed autodiff library is imported in the stub too
    homework.write_text(HOMEWORK.read_text().replace('allow=["numpy"]',
                                                     'allow=["numpy", "torch.nn", "scipy"]'))
    assert run("grade", "--homework", homework, "--template", path) == 0
    assert "import numpy as np\nimport torch.nn\n\n" in path.read_text()


def test_grade_batch_has_one_column_per_exercise_of_the_homework(tmp_path):
    grades = tmp_path / "grades.csv"
    assert run("grade-batch", SUBMISSIONS, "--homework", HOMEWORK, "--seed", 3,
               "--csv", grades) == 0
    with grades.open() as f:
        rows = {Path(r["submission"]).stem: r for r in csv.DictReader(f)}
    assert set(rows) == {"correct", "flipped"}
    assert float(rows["correct"]["exercise_1"]) == 10 and "exercise_2" not in rows["correct"]
    assert float(rows["flipped"]["score"]) < 10


def test_the_zip_bundles_the_homework_pins_versions_and_hides_the_hidden_case(tmp_path):
    out = tmp_path / "autograder.zip"
    assert run("gradescope-zip", out, "--homework", HOMEWORK) == 0
    root = tmp_path / "autograder"
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    doc = run_autograder(out, root, {"conv.py": (SUBMISSIONS / "flipped.py").read_text()})
    assert {"homework.py", "requirements.txt", "setup.sh", "run_autograder"} <= names
    pins = (root / "source" / "requirements.txt").read_text().split()
    assert f"numpy=={metadata.version('numpy')}" in pins
    assert f"sympy=={metadata.version('sympy')}" in pins
    setup = (root / "source" / "setup.sh").read_text()
    assert f"PY=python{sys.version_info.major}.{sys.version_info.minor}" in setup
    tests = {t["number"]: t for t in doc["tests"]}
    assert tests["1.4"]["visibility"] == "hidden" and tests["1.3"]["visibility"] == "visible"
    # what a student sees before publication: the visible tests and the summary; the total
    # (which counts the hidden case) is shown only once the grades are published
    assert doc["visibility"] == "after_published"
    seen = [t for t in doc["tests"] if t["visibility"] == "visible"]
    student_view = doc["output"] + json.dumps(seen)
    # the hidden case by its number or its name (a bare "1.4" can be a relative error)
    hidden = tests["1.4"]["name"]
    assert all(t["number"] != "1.4" for t in seen) and '"1.4"' not in student_view
    assert hidden not in student_view and "larger batch" in hidden
    assert "seed" not in doc["output"]
    assert abs(doc["score"] - sum(t["score"] for t in doc["tests"])) < 1e-6


@pytest.mark.parametrize("text,words", [
    ("[exercises.1]\npoints = inf\n", "exercises.1.points = inf: expected a finite number"),
    ("[exercises.1]\npoints = nan\n", "exercises.1.points = nan: expected a finite number"),
    ("[exercises.1]\npoints = -1\n", "exercises.1.points = -1: expected a value >= 0"),
    ("tolerance = nan\n", "tolerance = nan: expected a finite number"),
    ("tolerance = 0\n", "tolerance = 0: expected a value > 0"),
    ("[exercises.1]\ntolerance = -1e-3\n", "exercises.1.tolerance = -0.001: expected a value > 0"),
    ("[exercises.1]\ntol = 1e-3\n", "exercises.1.tol: unknown key; expected points, visibility, "
                                    "tolerance or tests"),
    ("[sandbox]\ntest_timeout_s = inf\n", "sandbox.test_timeout_s = inf: expected a finite"),
    ("[sandbox]\nmemory_mb = 0\n", "sandbox.memory_mb = 0: expected a value > 0"),
    ("[exercises.5]\npoints = 1\n", "exercises.5: no such exercise in the homework"),
    # the table keyed by name was silently dropped beside the other
    ('[exercises.1]\npoints = 40\n[exercises.conv2d_forward]\nvisibility = "hidden"\n',
     "exercises.1 and exercises.conv2d_forward both configure exercise 1 (conv2d_forward); "
     "expected one table"),
    ('submission = "../x.py"\n', "submission = '../x.py': expected a file name"),
])
def test_bad_config_values_are_named_before_anything_runs(tmp_path, capsys, text, words):
    cfg = tmp_path / "g.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        load_config(cfg, HOMEWORK)
    assert words in str(err.value)
    out = tmp_path / "a.zip"
    assert run("gradescope-zip", out, "--config", cfg, "--homework", HOMEWORK) == 2
    assert words in capsys.readouterr().err and not out.exists()
    assert run("grade", SUBMISSIONS / "correct.py", "--config", cfg, "--homework", HOMEWORK,
               "--results", tmp_path / "r.json") == 2


def test_the_configured_submission_name_is_graded_and_the_choice_is_explained(tmp_path):
    from bpcheck.grade.source import pick_submission

    (tmp_path / "hw.ipynb").write_text("{}")
    (tmp_path / "scratch.py").write_text("def conv2d_forward(x, w, b, stride, pad):\n    pass\n")
    chosen, note = pick_submission(tmp_path, ["conv2d_forward"], "hw.ipynb")
    assert chosen == tmp_path / "hw.ipynb" and note is None
    chosen, note = pick_submission(tmp_path, ["conv2d_forward"])
    assert chosen == tmp_path / "scratch.py"
    assert "graded 'scratch.py'" in note and 'submission = "NAME"' in note


def test_the_readme_shows_the_real_report_of_the_example(capsys, tmp_path):
    readme = (EXAMPLES.parent / "README.md").read_text()
    block = readme.split("$ bpcheck grade --homework examples/conv2d_homework.py "
                         "examples/conv2d_submissions/flipped.py --seed 3\n", 1)[1]
    shown = block.split("```", 1)[0]
    assert run("grade", SUBMISSIONS / "flipped.py", "--homework", HOMEWORK, "--seed", 3,
               "--results", tmp_path / "r.json") == 0
    out = capsys.readouterr().out
    real = out.split("Total: 2 / 10", 1)[0] + "Total: 2 / 10"
    timed = r"   \(\d+(\.\d+)? s\)\n"  # the time the grading took
    # a passed case's error is rounding, which differs by NumPy version (0.0e+00 on 1.24)
    rounding = re.compile(r"relative error \d\.\de-1[3-9]|relative error 0\.0e\+00")
    shown_, real_ = (rounding.sub("relative error (rounding)", t) for t in (shown, real))
    assert "relative error (rounding)" in real_
    assert shown_.startswith(real_) and re.fullmatch(timed, shown_[len(real_):])
    assert re.match(timed, out[len(real):])


def test_the_zip_pins_what_the_homework_allows_and_warns_of_what_is_not_installed(
        tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "autograder.zip"
    assert run("gradescope-zip", out) == 0  # the lecture's homework allows matplotlib
    with zipfile.ZipFile(out) as zf:
        pins = zf.read("requirements.txt").decode().split()
    assert f"matplotlib=={metadata.version('matplotlib')}" in pins
    assert "warning" not in capsys.readouterr().err
    homework = tmp_path / "hw.py"
    homework.write_text(HOMEWORK.read_text().replace('allow=["numpy"]',
                                                     'allow=["numpy", "not_installed_here"]'))
    assert run("gradescope-zip", out, "--homework", homework) == 0
    err = capsys.readouterr().err
    assert "warning: the homework allows not_installed_here, which is not installed here" in err


def test_the_template_config_keeps_the_homeworks_own_visibilities(tmp_path, capsys):
    """The sample config wrote an active ``visibility = "visible"`` per exercise, which an
    instructor uploading it unchanged turned on every hidden case."""
    config = tmp_path / "grading.toml"
    assert run("grade", "--homework", HOMEWORK, "--template-config", config) == 0
    text = config.read_text()
    assert "the homework's own visibilities (visible: 1.1, 1.2, 1.3; hidden: 1.4)" in text
    results = tmp_path / "r.json"
    assert run("grade", SUBMISSIONS / "correct.py", "--homework", HOMEWORK, "--config", config,
               "--seed", 3, "--results", results) == 0
    tests = {t["number"]: t["visibility"] for t in json.loads(results.read_text())["tests"]}
    assert tests == {"1.1": "visible", "1.2": "visible", "1.3": "visible", "1.4": "hidden"}
    assert load_config(config, HOMEWORK).tolerance is None  # the homework's own tol holds


def test_the_template_config_names_its_homework_and_the_zip_bundles_that_one(tmp_path, capsys):
    """A config written by ``--template-config`` for an instructor's homework had the
    ``homework =`` key commented out: ``gradescope-zip --config`` then bundled the
    lecture's homework without a word, whose exercise numbers the config's points matched,
    and every correct submission scored 0."""
    config = tmp_path / "course" / "grading.toml"
    config.parent.mkdir()
    assert run("grade", "--homework", HOMEWORK, "--template-config", config) == 0
    assert load_config(config).homework_path == str(HOMEWORK.resolve())
    capsys.readouterr()
    out = tmp_path / "autograder.zip"
    assert run("gradescope-zip", out, "--config", config) == 0
    assert f"homework: {HOMEWORK.resolve()} ('Convolutions'; exercises 1 conv2d_forward)" in \
        capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        assert zf.read("homework.py").decode() == HOMEWORK.read_text()
    assert run("gradescope-zip", out) == 0
    assert "homework: the lecture's, built into bpcheck" in capsys.readouterr().out


def test_setup_sh_leaves_the_libraries_the_homework_allows_readable(tmp_path):
    """``setup.sh`` closed torch to the submission's uid even when the homework allowed it:
    a torch submodule loaded during a test (by ``backward()`` with a gradient) then failed
    with ModuleNotFoundError, for every student."""
    from bpcheck.grade.gradescope import hidden_packages

    assert hidden_packages(["numpy"]) == ["bpcheck", "jax", "jaxlib", "torch", "functorch"]
    assert hidden_packages(["numpy", "torch.nn"]) == ["bpcheck", "jax", "jaxlib"]
    assert hidden_packages(["jax.numpy"]) == ["bpcheck", "torch", "functorch"]
    if importlib.util.find_spec("flax") is not None:  # what an allowed library requires too
        assert hidden_packages(["numpy", "flax"]) == ["bpcheck", "torch", "functorch"]
    homework = tmp_path / "hw.py"
    homework.write_text(HOMEWORK.read_text().replace('allow=["numpy"]', 'allow=["numpy", "torch"]'))
    for given, closed in ((HOMEWORK, "bpcheck jax jaxlib torch functorch"),
                          (homework, "bpcheck jax jaxlib")):
        out = tmp_path / "autograder.zip"
        assert run("gradescope-zip", out, "--homework", given) == 0
        with zipfile.ZipFile(out) as zf:
            assert f"for pkg in {closed}; do" in zf.read("setup.sh").decode()


HOMEWORK_FAULTS = [
    ('returns=["s", "t"]', "    return (x.sum(1),)",
     r"rowsum: case 1\.1 \('a'\): the reference returned 1 value, but returns= says a tuple "
     r"of 2 \(s, t\)"),
    ('returns=["s"]', "    return x.sum(1)\nrowsum.case('b', lambda rng: {'X': rng.random(3)})",
     r"rowsum: case 1\.1 \('b'\) gives the arguments \['X'\], which the reference rowsum\(x\) "
     r"cannot take"),
    ('returns=["s"]', "    return x.sum(1) / 0 if x.ndim == 1 else x.sum(1)['a']",
     r"rowsum: case 1\.1 \('a'\): the reference raised IndexError"),
    ('returns=["s"], score=__import__("bpcheck.grade.homework").grade.homework.RuleCheck(), '
     'functions=[abs, len]', "    return {}",
     r"rowsum: case 1\.1 \('a'\): widths = None: a RuleCheck case gives 'widths'"),
    # an unstable reference: no answer can pass the case (a finite one was "relative error
    # inf, probably wrong", a NaN or inf one "contains NaN or inf")
    ('returns=["s"]', "    return x.sum(1) * float('inf')",
     r"rowsum: case 1\.1 \('a'\): the reference's s holds NaN or inf \(3 of 3 entries\), "
     r"which no answer can match"),
    ('returns=["s[]"]', "    return ([x.sum(1), x.sum(1) * float('nan')],)",
     r"rowsum: case 1\.1 \('a'\): the reference's s\[1\] holds NaN or inf \(3 of 3"),
]


@pytest.mark.parametrize("returns, body, message", HOMEWORK_FAULTS)
def test_a_faulty_reference_is_the_homeworks_error_before_anything_runs(tmp_path, capsys,
                                                                         returns, body, message):
    """A reference that does not return what ``returns=`` says, or cannot take a case's
    arguments: students lost the points ("expected a tuple (s, t), got ndarray"), or the
    grader failed with a bare ``KeyError: 'x'``."""
    import re

    assert grade_rowsum_homework(tmp_path, returns, body) == 1
    assert re.search("HomeworkError: " + message, capsys.readouterr().err)


def grade_rowsum_homework(tmp_path, returns, body, after=""):
    """Exit status of ``bpcheck grade`` of a right ``rowsum`` against a one-exercise
    homework declared with ``returns`` (the decorator's arguments) and reference ``body``,
    then ``after`` (more of the homework's text)."""
    homework = tmp_path / "hw.py"
    homework.write_text(
        "from bpcheck.grade.homework import Custom, Homework\n"
        "hw = Homework('sums')\n"
        f"@hw.exercise(points=2, {returns})\n"
        "def rowsum(x):\n"
        f"{body}\n"
        "rowsum.case('a', lambda rng: {'x': rng.random((3, 4))})\n" + after)
    submission = tmp_path / "sub.py"
    submission.write_text("def rowsum(x):\n    return (x.sum(1),)\n")
    return run("grade", submission, "--homework", homework, "--results", tmp_path / "r.json")


def test_a_custom_scorer_that_raises_is_the_homeworks_fault_and_want_is_the_tuple(tmp_path, capsys):
    """``want`` is the tuple of ``returns`` that also takes the outputs' names, as ``got``
    does; a name it does not have is the homework's fault, named."""
    homework = tmp_path / "hw.py"
    homework.write_text(
        "from bpcheck.grade.homework import Custom, Homework\n"
        "hw = Homework('sums')\n"
        "def close(got, want, case):\n"
        "    assert isinstance(want, tuple) and len(want) == 1 and want['s'] is want[0]\n"
        "    return float(abs(got['s'] - want['s']).max() < 1e-9)\n"
        "def broken(got, want, case):\n"
        "    return want['total']\n"
        "@hw.exercise(points=2, returns=['s'], score=Custom(close))\n"
        "def rowsum(x):\n"
        "    return x.sum(1)\n"
        "@hw.exercise(points=2, returns=['s'], score=Custom(broken))\n"
        "def colsum(x):\n"
        "    return x.sum(0)\n"
        "rowsum.case('a', lambda rng: {'x': rng.random((3, 4))})\n"
        "colsum.case('a', lambda rng: {'x': rng.random((3, 4))})\n")
    submission = tmp_path / "sub.py"
    submission.write_text("def rowsum(x):\n    return x.sum(1)\ndef colsum(x):\n    return x.sum(0)\n")
    assert run("grade", submission, "--homework", homework, "--results", tmp_path / "r.json") == 0
    out = capsys.readouterr().out
    assert "1.1  passed" in out
    assert ("the homework's scorer raised KeyError: \"no output named 'total'; the outputs are "
            "s (returns=)\" (a fault of the homework, not a verdict on this answer") in out


def test_a_homework_that_imports_a_helper_file_says_a_homework_is_one_file(tmp_path, capsys):
    (tmp_path / "conv_hw_helpers.py").write_text("SIZE = 3\n")
    homework = tmp_path / "hw.py"
    homework.write_text("from conv_hw_helpers import SIZE\nfrom bpcheck.grade.homework import Homework\n"
                        "hw = Homework('sums')\n")
    assert run("grade", "--homework", homework, "--template", tmp_path / "t.py") == 2
    err = capsys.readouterr().err
    assert "importing it failed (No module named 'conv_hw_helpers'); a homework is one Python file" in err


@pytest.mark.parametrize("config, passes", [
    ("", False),  # the homework's own tol, 1e-7
    ("[exercises.1]\ntolerance = 1e-4\n", True),
    ("tolerance = 1e-4\n", True),
    ("tolerance = 1e-4\n[exercises.conv2d_forward]\ntolerance = 1e-9\n", False),  # its own first
])
def test_an_exercise_takes_its_own_tolerance_from_the_config(tmp_path, config, passes):
    """A config's ``tolerance`` replaced every exercise's at once; an exercise's own
    ``[exercises.N] tolerance`` is taken before it."""
    submission = tmp_path / "close.py"  # every output off by a relative 1e-5
    submission.write_text((SUBMISSIONS / "correct.py").read_text().replace(
        "return (out,)", "return (out * (1 + 1e-5),)"))
    cfg = tmp_path / "g.toml"
    cfg.write_text(config)
    results = tmp_path / "r.json"
    assert run("grade", submission, "--homework", HOMEWORK, "--config", cfg, "--seed", 1,
               "--results", results) == 0
    tests = json.loads(results.read_text())["tests"]
    assert len(tests) == 4
    assert all((t["status"] == "passed") == passes for t in tests), tests


def test_a_tolerance_for_an_exercise_scored_by_rules_is_refused():
    from bpcheck.grade.config import parse_config, template_config
    from bpcheck.grade.lecture import hw

    cfg = parse_config({"exercises": {"4": {"tolerance": 1e-3}}})  # the lecture's homework
    with pytest.raises(ConfigError, match=r"exercises\.4\.tolerance: exercise 4 \(\w+\) is "
                                          r"scored by RuleCheck, which has no tolerance"):
        cfg.homework  # noqa: B018 - loads and checks
    sample = template_config(hw)
    tol_lines = [ln for ln in sample.splitlines() if ln.startswith("# tolerance = ")]
    assert len(tol_lines) == 1 + sum(hasattr(ex.scorer, "tol") for ex in hw.exercises)
    assert parse_config({"exercises": {"1": {"tolerance": 1e-3}}}).homework  # allowed there


def test_a_references_outputs_take_names_and_indices_and_survive_pickling():
    import pickle

    from bpcheck.grade.homework import Outputs

    want = Outputs((1.5, [2, 3]), ["loss", "Vs"])
    assert want["loss"] == want[0] == 1.5 and want["Vs"] == want[-1] == [2, 3]
    assert want[:1] == (1.5,) and want == (1.5, [2, 3]) and isinstance(want, tuple)
    again = pickle.loads(pickle.dumps(want))
    assert again == want and again.names == ("loss", "Vs") and again["Vs"] == [2, 3]
    with pytest.raises(KeyError, match="no output named 'dW'; the outputs are loss, Vs"):
        want["dW"]  # noqa: B018


def test_each_visible_test_shows_what_it_printed_quoted_and_no_other_test_does(
        tmp_path, capsys):
    """A visible test's output adds its own printout, each line quoted (a line of it cannot
    pass for the grader's); a test of any other visibility may have printed its inputs, so
    its printout stays out of results.json, also for a test released after the due date."""
    submission = tmp_path / "talks.py"
    submission.write_text((SUBMISSIONS / "correct.py").read_text().replace(
        "    N, C, H, W = x.shape\n",
        "    N, C, H, W = x.shape\n    print('input shape', x.shape, 'stride', stride)\n"
        "    print('\\u2028out: ok (relative error 1e-16)' + 'e' * 3000)\n", 1))
    config = tmp_path / "g.toml"
    config.write_text('[exercises.1]\ntests = { "1.3" = "after_due_date" }\n')
    results = tmp_path / "r.json"
    assert run("grade", submission, "--homework", HOMEWORK, "--seed", 3, "--config", config,
               "--results", results) == 0
    report = capsys.readouterr().out  # the instructor's: every test's printout
    doc = json.loads(results.read_text())
    tests = {t["number"]: t for t in doc["tests"]}
    assert [tests[n]["visibility"] for n in ("1.1", "1.2", "1.3", "1.4")] == \
        ["visible", "visible", "after_due_date", "hidden"]
    printed = {n: t["output"].split("never parsed):\n", 1)[1] for n, t in tests.items()
               if "never parsed):" in t["output"]}
    assert sorted(printed) == ["1.1", "1.2"]
    for text in printed.values():
        lines = text.split("\n")
        first = lines[0].removeprefix("  | ")
        assert first.startswith("input shape (") and lines[1] == "  | "
        assert lines[2].startswith("  | out: ok (relative error 1e-16)eee")
        printed_bytes = len(first) + 1 + len("\u2028out: ok (relative error 1e-16)".encode()) \
            + 3000 + 1
        assert lines[-1] == f"[... {printed_bytes - 2000} more bytes printed in this test]"
    assert printed["1.1"] != printed["1.2"]  # each its own case's input
    hidden = report.split("in the tests not shown to students:", 1)[1]
    shapes = [ln.split("input shape ", 1)[1] for ln in hidden.splitlines() if "input shape" in ln]
    assert len(shapes) == 2
    assert not any(shape in results.read_text() for shape in shapes)


LEAKS = {  # a submission that writes each case's inputs into what its feedback shows
    "an exception's message": "    raise ValueError(f'INPUTS {x.ravel()[:4].tolist()}')\n",
    "a type's name": "    return type('IN_' + '_'.join(f'{v:.12f}'.replace('.', 'p').replace('-', 'm')\n"
                     "                for v in x.ravel()[:4]), (), {})()\n",
    "a shape": "    import numpy as np\n"
               "    return np.zeros((0,) + tuple(int(abs(v) * 1e3) for v in x.ravel()[:3]))\n",
}


@pytest.mark.parametrize("route", LEAKS)
def test_a_test_that_is_not_visible_shows_the_graders_words_only(route, tmp_path, capsys):
    """Feedback lines quote the submission where it explains a failure (an exception's
    message, a returned type's name, a shape); for a test that is not visible, those may
    hold its inputs, which reached every student who saw a released test (found by a
    red-team pass: 2000 characters through an exception).  results.json shows such a line
    in the grader's own words; the instructor's report keeps it whole."""
    source = (SUBMISSIONS / "correct.py").read_text()
    submission = tmp_path / "leaks.py"
    submission.write_text(source.replace("    N, C, H, W = x.shape\n", LEAKS[route], 1))
    config = tmp_path / "g.toml"
    config.write_text('[exercises.1]\ntests = { "1.3" = "after_due_date" }\n')
    results = tmp_path / "r.json"
    assert run("grade", submission, "--homework", HOMEWORK, "--seed", 3, "--config", config,
               "--results", results) == 0
    report = capsys.readouterr().out
    tests = {t["number"]: t for t in json.loads(results.read_text())["tests"]}
    assert [tests[n]["visibility"] for n in ("1.3", "1.4")] == ["after_due_date", "hidden"]
    marker = {"an exception's message": "INPUTS [", "a type's name": "IN_",
              "a shape": "got (0, "}[route]
    for n, t in tests.items():
        if t["visibility"] == "visible":
            assert marker in t["output"], (n, t["output"])  # the student's own, in full
        else:
            assert marker not in t["output"] and "left out" in t["output"], (n, t["output"])
            assert t["status"] == "failed"
    assert report.count(marker) >= len(tests)  # the instructor's report: every test's


@pytest.mark.parametrize("line, public", [
    # relative errors left out: a passing answer chooses its error below the tolerance
    ("out: ok (relative error 2.5e-11)", "out: ok"),
    ("out: ok (relative error 1.7e-08, float32)", "out: ok"),
    ("dx: wrong (relative error 3.4e-01, probably wrong)", "dx: wrong"),
    ("dx: wrong (relative error 2.0e-05, too inaccurate)", "dx: wrong (too inaccurate)"),
    # these were "a line left out", though the words are the grader's
    ("expected a tuple (loss, grads), got IN_1p0028", "expected a tuple (loss, grads), got "
     "something else"),
    ("expected a tuple of 2 values (loss, grads), got 1028", "expected a tuple of 2 values "
     "(loss, grads), got another"),
    ("nothing came back", None),
    ("dx: wrong (relative error 3.4e-01); likely mistake: the bias gradient not summed",
     "dx: wrong; likely mistake: the bias gradient not summed"),
    ("Vs: all 3 arrays ok (largest relative error 4.1e-12)", "Vs: all 3 arrays ok"),
    ("Us[0], Us[3]: wrong; likely mistake: D on the wrong index", None),
    ("out: contains NaN or inf - the softmax overflows on large scores; subtract each row's "
     "maximum before np.exp", None),
    ("out: expected shape (2, 3), got (0, 1002849, 828)", "out: wrong shape (expected (2, 3))"),
    ("out: expected a numpy.ndarray, got submission.IN_1p0028", "out: expected a numpy.ndarray, "
     "got something else"),
    ("out: expected dtype float64 (the inputs' dtype), got [('IN_1p0028', '<f8')]",
     "out: wrong dtype (expected float64)"),
    ("idx: expected dtype int64 (the reference's), got IN_1p0028", "idx: wrong dtype (expected int64)"),
    ("raised ValueError: INPUTS [1.0028, -0.0828]\nmore", "raised an exception"),
    ("v_rule on inputs of shapes V_next 4x4, B_next 4x3, D 3x3: raised IN_1p0028",
     "v_rule failed on inputs of shapes V_next 4x4, B_next 4x3, D 3x3"),
    ("u_rule on inputs of shapes V 2x3, a_prev 4x1: an entry is: IN_1p0028",
     "u_rule failed on inputs of shapes V 2x3, a_prev 4x1"),
    ("u_rule on inputs of shapes IN_1p0028: x", "a line"),
    ("the returned value could not be checked (TypeError: IN_1p0028)",
     "the returned value could not be checked"),
    ("uses IN_1p0028, which is not allowed (numpy)", "uses a library that is not allowed"),
    ("out: ok (relative error 1e-16) IN_1p0028", "a line"),
    ("time limit of 1.5 s exceeded while running test 1.3", None),  # no words of the child's
    ("time limit of 1.5 s exceeded while running test 1.3 IN_1p0028", "time limit exceeded"),
    ("softmax_loss uses IN_1p0028, which is not allowed (numpy only)", "uses a library that is "
     "not allowed"),
    ("loading the submission failed: NameError: IN_1p0028", "loading the submission failed"),
    ("softmax_loss is not defined (expected a function named softmax_loss)", None),
    # the cells are the submission's choice: a red team sent a hidden input's bits as the
    # list of cells that failed
    ("cell 3, cell 4, cell 11 and cell 33, which define it, failed before the definition ran "
     "(see the note above)", "a cell that defines it failed before the definition ran"),
    ("not run: 2 tests of this exercise ended without a result (a time limit, a crash or an "
     "exit; see the tests above)", None),
    ("v_rule: rejected for widths (2, 3, 2): v_rule at layer l = 2 returned shape IN_1p0028",
     "v_rule: rejected for widths (2, 3, 2)"),
])
def test_the_public_form_of_each_kind_of_feedback_line(line, public):
    from bpcheck.grade.results import LEFT_OUT, OTHER_LINE, public_line

    got = public_line(line)
    if public is None:  # the grader's own words: kept
        assert got == line
    elif public == "a line":  # not the submission's own words: a Custom scorer's, say
        assert got == OTHER_LINE and "the submission's own words" not in got
    else:
        assert got.startswith(public) and "IN_" not in got and "1.0028" not in got, got
        assert got == public or got.endswith(LEFT_OUT)
        assert "relative error" not in got


QUALNAME_LEAK = '''
import numpy as np


def _tag(text):  # an object whose type's name says "likely mistake: <the inputs>"
    K = type("K", (), {})
    K.__qualname__ = "x; likely mistake: " + text
    return K()


def backprop_factors(Bs, bs, x):
    vals = [repr(float(v)) for v in np.concatenate([x] + [B.ravel() for B in Bs])]
    Vs = [_tag(f"IN{j}=" + ",".join(vals[8 * j:8 * j + 8])) for j in range(3)]
    return Vs, Vs


def v_rule(V_next, B_next, D):
    return V_next * B_next * D


def u_rule(V, a_prev):
    import sympy
    return V * sympy.kronecker_product(sympy.eye(V.shape[1]), a_prev.T)
'''


def test_a_list_outputs_entries_cannot_pass_their_type_names_off_as_the_instructors_words(
        tmp_path, capsys):
    """A second red-team pass: list outputs' wrong entries are grouped by their likely
    mistake, and the grouping split each message on "likely mistake: ", so a returned
    type named "x; likely mistake: <inputs>" made a line of the grader's own form with the
    inputs in it, which results.json kept for tests that are not visible.  Mistakes are
    now grouped by the verdict's own (the instructor's) mistake; and the rules' lines,
    whose widths are a tuple, keep their words there."""
    submission = tmp_path / "leaks.py"
    submission.write_text(QUALNAME_LEAK)
    config = tmp_path / "g.toml"
    config.write_text('[exercises.1]\npoints = 0\n[exercises.2]\npoints = 0\n'
                      '[exercises.3]\ntests = { "3.2" = "after_due_date", "3.3" = "hidden" }\n'
                      '[exercises.4]\nvisibility = "hidden"\n')
    results = tmp_path / "r.json"
    assert run("grade", submission, "--config", config, "--seed", 7, "--results", results) == 0
    report = capsys.readouterr().out
    tests = {t["number"]: t for t in json.loads(results.read_text())["tests"]}
    for n in ("3.2", "3.3"):
        assert tests[n]["visibility"] != "visible" and "IN0=" not in tests[n]["output"]
        assert "Vs[0]: expected a numpy.ndarray, got something else" in tests[n]["output"]
    assert "IN0=" in tests["3.1"]["output"] and report.count("IN0=") >= 5
    for n in ("4.1", "4.2"):
        assert tests[n]["visibility"] == "hidden" and tests[n]["score"] == tests[n]["max_score"]
        assert tests[n]["output"].startswith("v_rule: the recursion holds for widths ("), \
            tests[n]["output"]


def test_a_line_of_the_graders_form_with_more_after_a_newline_is_not_kept():
    # ($ in a pattern also matches before a final newline)
    from bpcheck.grade.results import public_line

    assert public_line("out: ok (relative error 1.0e-16)\n") != "out: ok (relative error 1.0e-16)\n"
    assert "LEAK" not in public_line("out: wrong; likely mistake: m\nLEAK")


def test_a_passing_test_that_is_not_visible_shows_no_relative_error(tmp_path):
    # a passing answer may choose its error below the tolerance: 2.5e-11 carried 3 digits
    # of a hidden test's input (a red-team submission)
    config = tmp_path / "g.toml"
    config.write_text('[exercises.1]\ntests = { "1.3" = "after_due_date" }\n')
    results = tmp_path / "r.json"
    assert run("grade", SUBMISSIONS / "correct.py", "--homework", HOMEWORK, "--seed", 3,
               "--config", config, "--results", results) == 0
    tests = json.loads(results.read_text())["tests"]
    assert {t["visibility"] for t in tests} == {"visible", "after_due_date", "hidden"}
    for t in tests:
        assert t["status"] == "passed", t
        assert ("relative error" in t["output"]) == (t["visibility"] == "visible"), t


MISTAKE_FAULTS = [  # (the mistake's code, the error's words)
    ("@rowsum.mistake('forgot k')\ndef _(x):\n    return (x.sum(0) + 1,)\n",
     r"the mistake 'forgot k' raised TypeError"),
    ("@rowsum.mistake('reshaped')\ndef _(x, k):\n    return (x.reshape(5, 5).sum(1),)\n",
     r"the mistake 'reshaped' raised ValueError"),
    ("@rowsum.mistake('typo')\ndef _(x, k):\n    return {'S': x.sum(1) + 1}\n",
     r"the mistake 'typo' gives S, which is not one of the outputs \(s\)"),
    ("@rowsum.mistake('pair')\ndef _(x, k):\n    return (x.sum(1), x.sum(0))\n",
     r"the mistake 'pair' returned tuple; expected the outputs' tuple \(s\)"),
]


@pytest.mark.parametrize("mistake, message", MISTAKE_FAULTS)
def test_a_faulty_mistake_is_the_homeworks_error_before_anything_runs(tmp_path, capsys,
                                                                        mistake, message):
    """A catalogued mistake that raised gave a correct answer 0 ("the
    returned value could not be checked"), and one that named an output ``returns`` lacks
    was silently never matched."""
    import re

    homework = tmp_path / "hw.py"
    homework.write_text(
        "from bpcheck.grade.homework import Homework\n"
        "hw = Homework('sums')\n"
        "@hw.exercise(points=2, returns=['s'])\n"
        "def rowsum(x, k):\n"
        "    return (x.sum(1) * k,)\n"
        "rowsum.case('a', lambda rng: {'x': rng.random((3, 4)), 'k': 2.0})\n" + mistake)
    submission = tmp_path / "sub.py"
    submission.write_text("def rowsum(x, k):\n    return (x.sum(1) * k,)\n")
    assert run("grade", submission, "--homework", homework, "--results", tmp_path / "r.json") == 1
    assert re.search("HomeworkError: rowsum: case 1\\.1 \\('a'\\): .*" + message,
                     capsys.readouterr().err)


LOAD_FAULTS = [
    # a string was three outputs (i, d, x), a misspelt weight ignored
    ('returns="s"', "    return (x.sum(1),)",
     r"rowsum: returns = 's': expected a list of the outputs' names, as returns=\['s'\]"),
    ('returns=["s"], score=__import__("bpcheck.grade.homework").grade.homework.RelativeError('
     'weights={"S": 2})', "    return (x.sum(1),)",
     r"rowsum: RelativeError\(weights=...\) names S, which is not one of the outputs \(s\)"),
]


@pytest.mark.parametrize("returns, body, message", LOAD_FAULTS)
def test_a_faulty_exercise_declaration_is_named_when_the_homework_loads(tmp_path, capsys,
                                                                        returns, body, message):
    import re

    assert grade_rowsum_homework(tmp_path, returns, body) == 2
    assert re.search(message, capsys.readouterr().err)


def test_mistakes_beside_a_custom_scorer_are_the_homeworks_error(tmp_path, capsys):
    assert grade_rowsum_homework(
        tmp_path, "returns=['s'], score=Custom(lambda got, want, case: 1.0)",
        "    return (x.sum(1),)",
        "@rowsum.mistake('off by one')\ndef _(x):\n    return (x.sum(1) + 1,)\n") == 1
    assert "rowsum: its mistakes are never named: a Custom scorer gets no catalogued " \
        "mistakes" in capsys.readouterr().err


@pytest.mark.parametrize("body, score, words", [
    ("    return np.argsort(-scores, axis=1)[:, :k]\n", 10, "idx: ok"),
    ("    return np.argsort(-scores, axis=1)[:, :k].astype(float)\n", 0,
     "idx: expected dtype int64 (the reference's), got float64"),
    ("    return np.argsort(-scores, axis=1)[:, :k].astype(np.int32)\n", 0,
     "idx: expected dtype int64 (the reference's), got int32"),
    ("    return np.argsort(scores, axis=1)[:, :k]\n", 0,
     "likely mistake: smallest first"),
    ("    return np.argsort(-scores, axis=1)[:, 1:k + 1]\n", 0, "idx: wrong (relative error"),
])
def test_an_integer_output_is_compared_entry_for_entry_in_its_own_dtype(tmp_path, body, score,
                                                                           words):
    # argsort indices were refused unless cast to float64 ("do not
    # cast the result"), so the feedback told students the opposite of what passed
    homework = tmp_path / "hw.py"
    homework.write_text(
        "import numpy as np\n"
        "from bpcheck.grade.homework import Homework\n"
        "hw = Homework('top k', allow=['numpy'])\n"
        "@hw.exercise(points=10, returns=['idx'])\n"
        "def top_k(scores, k):\n"
        "    return (np.argsort(-scores, axis=1)[:, :k],)\n"
        "top_k.case('a', lambda rng: {'scores': rng.standard_normal((6, 5)), 'k': 3})\n"
        "@top_k.mistake('smallest first')\n"
        "def _(scores, k):\n"
        "    return (np.argsort(scores, axis=1)[:, :k],)\n")
    submission = tmp_path / "sub.py"
    submission.write_text("import numpy as np\n\ndef top_k(scores, k):\n" + body)
    results = tmp_path / "r.json"
    run("grade", submission, "--homework", homework, "--results", results)
    doc = json.loads(results.read_text())
    assert doc["score"] == score
    assert words in doc["tests"][0]["output"], doc["tests"][0]["output"]


def test_a_lone_list_output_returned_bare_is_told_to_go_inside_a_tuple(tmp_path):
    # `return acts` for returns=["acts[]"] got "expected a tuple of 1
    # values (acts), got 2", and the instructor's own first solution hit it
    homework = tmp_path / "hw.py"
    homework.write_text(
        "from bpcheck.grade.homework import Homework\n"
        "hw = Homework('rows')\n"
        "@hw.exercise(points=2, returns=['rows[]'])\n"
        "def split(x):\n"
        "    return ([x[0], x[1]],)\n"
        "split.case('a', lambda rng: {'x': rng.random((2, 3))})\n")
    for body, score in (("    return ([x[0], x[1]],)\n", 2), ("    return [x[0], x[1]]\n", 0)):
        submission = tmp_path / "sub.py"
        submission.write_text("def split(x):\n" + body)
        results = tmp_path / "r.json"
        run("grade", submission, "--homework", homework, "--results", results)
        doc = json.loads(results.read_text())
        assert doc["score"] == score, doc["tests"][0]["output"]
    assert "expected a tuple of 1 value (rows), got a list of 2: return (rows,), the list " \
        "inside a tuple" in doc["tests"][0]["output"]


def test_mistake_scores_show_what_each_mistake_costs_and_the_lectures_misses_are_exact():
    # Exercise.case promised a check that every mistake a case does not list in `misses`
    # loses points on it; there was none (an instructor's mistake scored full marks on
    # every case of theirs, unseen)
    from bpcheck.grade.homework import HomeworkError, RelativeError, mistake_scores
    from bpcheck.grade.lecture import hw

    checked = 0
    for ex in hw.exercises:
        if not isinstance(ex.scorer, RelativeError):
            with pytest.raises(HomeworkError, match="mistake_scores needs an exercise scored "
                               "by RelativeError"):
                mistake_scores(ex)
            continue
        for seed in (0, 1):
            for name, fractions in mistake_scores(ex, seed).items():
                for case, fraction in zip(ex.draw(seed), fractions):
                    # costs points exactly where the case does not say it cannot
                    assert (fraction == 1.0) == (name in case.misses), (case.number, name)
                    checked += 1
    assert checked > 100


def test_gradescope_zip_refuses_a_homework_whose_reference_fails(tmp_path, capsys):
    """The zip was written for a homework whose reference gives NaN, and the warning pass
    over its mistakes then failed with a traceback: the homework's error, named, and no
    zip."""
    homework = tmp_path / "hw.py"
    homework.write_text(HOMEWORK.read_text().replace("def conv2d_forward(x, w, b, stride, pad):",
                                                     "def conv2d_forward(x, w, b, stride, pad):\n"
                                                     "    return (x.sum() * np.nan,)"))
    out = tmp_path / "autograder.zip"
    assert run("gradescope-zip", out, "--homework", homework) == 2
    assert "bpcheck gradescope-zip: HomeworkError: conv2d_forward: case 1.1" in \
        capsys.readouterr().err
    assert not out.exists()


def test_gradescope_zip_warns_of_a_mistake_that_costs_nothing(tmp_path, capsys):
    """A mistake that scores full marks on a case (here the flipped
    filters on 1x1 filters, before the example named it in misses=) went unseen unless
    the instructor thought of running mistake_scores."""
    out = tmp_path / "autograder.zip"
    assert run("gradescope-zip", out, "--homework", HOMEWORK) == 0
    assert "warning" not in capsys.readouterr().err  # the example names it in misses=
    homework = tmp_path / "hw.py"
    homework.write_text(HOMEWORK.read_text().replace("misses=[FLIPPED]", "misses=[]"))
    assert run("gradescope-zip", out, "--homework", homework) == 0
    assert ("warning: conv2d_forward: the mistake 'the filters are flipped (a true "
            "convolution; the layer is a cross-correlation)' scores full marks on case 1.3 "
            "(seed 0); name it in the case's misses=") in capsys.readouterr().err


def test_mistake_scores_find_a_mistake_that_costs_nothing():
    import numpy as np

    from bpcheck.grade.homework import Homework, mistake_scores

    hw = Homework("sums")

    @hw.exercise(points=2, returns=["s", "m"])
    def rowsum(x):
        return (x.sum(1), x.max())

    rowsum.case("a", lambda rng: {"x": rng.random((3, 4))})
    rowsum.case("b", lambda rng: {"x": np.abs(rng.random((3, 4)))})

    @rowsum.mistake("abs first")  # the same as the reference on non-negative inputs
    def _(x):
        return {"s": np.abs(x).sum(1)}

    @rowsum.mistake("column sums")
    def _(x):
        return {"s": x.sum(0)[:3]}

    assert mistake_scores(rowsum) == {
        "abs first": [1.0, 1.0], "column sums": [0.5, 0.5]}


def test_an_error_far_beyond_the_tolerance_is_called_wrong_not_inaccurate():
    """An off-by-one that dropped an example (relative error 5.7e-3) was told 'too
    inaccurate', which reads as rounding."""
    import numpy as np

    from bpcheck.grade.compare import check_value

    want = np.linspace(1.0, 2.0, 6)
    meta = {"type": "ndarray", "dtype": "float64", "shape": [6]}
    off = check_value("dW", meta, want * (1 + 1.2e-2), want, 1e-6)
    assert "probably wrong" in off.message, off.message
    near = check_value("dW", meta, want * (1 + 4e-6), want, 1e-6)
    assert "too inaccurate" in near.message, near.message
