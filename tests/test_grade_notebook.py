"""A lecture-style notebook is executed once: plots (headless), a long training loop and
the PyTorch cell (refused in the NumPy homework, reported once) cost nothing; a cell past
its time budget is stopped and named once, the next cells run and the functions already
defined are graded."""

import os
import sys
from pathlib import Path

import pytest

from bpcheck.grade.config import parse_config
from bpcheck.grade.grader import grade
from bpcheck.grade.source import SubmissionError

sys.path.insert(0, str(Path(__file__).parent / "grade_submissions"))
import lecture_notebook  # noqa: E402


def test_a_lecture_style_notebook_scores_full_marks_and_runs_once(tmp_path):
    path = tmp_path / "lecture.ipynb"
    lecture_notebook.write(path, steps=2000)
    report = grade(path, seed=3)
    assert report.score == report.max_score == 100, \
        [(t.number, t.lines) for t in report.tests if not t.passed]
    assert report.student_output.count("iteration 0: loss") == 1  # loaded once, printed once
    assert "training accuracy" in report.student_output  # the plot cell ran headless
    notes = "\n".join(report.messages)
    assert notes.count("cell 4 raised ImportError: torch is not allowed") == 1
    assert "cell 1" not in notes and "cell 3" not in notes


@pytest.mark.parametrize("budget", [2])
def test_a_cell_over_its_budget_is_stopped_and_named_once(tmp_path, budget):
    import nbformat

    source = lecture_notebook.CORRECT
    split = source.index("def backprop_factors")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source[:split]),
                nbformat.v4.new_code_cell("import time\nwhile True:\n    time.sleep(0.1)\n"),
                nbformat.v4.new_code_cell(source[split:])]
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, str(path))
    cfg = parse_config({"sandbox": {"cell_timeout_s": budget}})
    report = grade(path, cfg, seed=1)
    assert report.score == report.max_score, \
        [(t.number, t.lines) for t in report.tests if not t.passed]
    assert report.messages.count(f"cell 2 stopped after {budget} s (the other cells were run)") == 1


def test_a_cell_magic_after_blank_lines_is_still_a_cell_magic(tmp_path):
    # IPython drops a cell's leading blank lines before it looks for %%: a %%writefile
    # there was run as Python (a red-team notebook defined its answer that way, which
    # Jupyter never runs)
    import nbformat

    from bpcheck.grade.source import read_cells

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("\n\n%%writefile notes.py\ndef scale(x):\n    return 2 * x\n"),
                nbformat.v4.new_code_cell("  \n%%bash\nscale = None\n"),
                nbformat.v4.new_code_cell("\n%%time\ny = 1\n"),
                # %%timeit runs its body in a function of its own: nothing it defines is
                # kept in Jupyter (a red team defined its answer there)
                nbformat.v4.new_code_cell("%%timeit\ndef scale(x):\n    return 2 * x\n")]
    path = tmp_path / "hw.ipynb"
    nbformat.write(nb, str(path))
    cells = dict(read_cells(path, probe=False))
    for label in ("cell 1", "cell 2", "cell 4"):
        assert all(not ln.strip() or ln.startswith("# ") for ln in cells[label].splitlines()), cells
    assert "\ny = 1\n" in cells["cell 3"]  # %%time runs its body


def test_a_notebook_cell_that_is_not_valid_unicode_is_refused_not_a_crash(tmp_path):
    # a red-team notebook: JSON's "\udc80" (a lone surrogate) passes json and nbformat; the
    # grader failed when it wrote the cell to the child's file ("the autograder failed")
    import json

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1\n"),
                nbformat.v4.new_code_cell('def softmax_loss(W, X, y, reg):\n    return "\udc80"\n')]
    path = tmp_path / "odd.ipynb"
    path.write_text(json.dumps(nb, ensure_ascii=True))  # the surrogate as its JSON escape
    report = grade(path, seed=1)
    assert report.score == 0 and report.tests and not any(t.passed for t in report.tests)
    assert any("cell 2 is not valid Unicode" in m for m in report.messages), report.messages


def _notebook(path, *sources, outputs=None):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    if outputs is not None:
        nb.cells[0].outputs = outputs
    nbformat.write(nb, str(path))
    return path


def test_jupyter_display_imports_and_progress_bars_do_not_take_their_cell_down(tmp_path):
    # a trial's notebook began `from IPython.display import display, Markdown` then
    # `import numpy as np`: the import failed (no IPython in the child), the cell stopped
    # there, and every exercise failed on NameError: np (12.5 / 100)
    head = ("from IPython.display import display, Markdown, HTML, clear_output\n"
            "import matplotlib.pyplot as plt\n"
            "from tqdm.auto import tqdm\nfrom tqdm import trange\n"
            "import numpy as np\n"
            "display(Markdown('**hello**'))\nclear_output(wait=True)\n"
            "for _ in tqdm(range(3)): pass\nfor _ in trange(2): pass\n"
            "IN_COLAB = 'google.colab' in str(get_ipython())\n")
    path = _notebook(tmp_path / "hw.ipynb", head,
                     lecture_notebook.CORRECT.replace("import numpy as np\n", ""))
    report = grade(path, seed=1)
    assert report.score == report.max_score, \
        ([(t.number, t.lines) for t in report.tests if not t.passed], report.messages)
    assert not any("cell 1" in m for m in report.messages), report.messages
    assert "**hello**" in report.student_output


def test_a_py_file_exported_from_jupyter_runs_its_ipython_calls(tmp_path):
    # `jupyter nbconvert --to script` writes magics as get_ipython() calls: every test
    # failed on "NameError: name 'get_ipython' is not defined" (0 / 100); a %%time cell
    # becomes run_cell_magic('time', '', body), whose body IPython runs
    body = lecture_notebook.CORRECT
    split = body.index("def backprop_factors")
    source = ("#!/usr/bin/env python\n# coding: utf-8\n\n# In[1]:\n\n\n"
              "get_ipython().run_line_magic('matplotlib', 'inline')\n"
              "get_ipython().system('pip install tqdm')\n\n\n# In[2]:\n\n\n"
              + body[:split] + "\n\n# In[3]:\n\n\n"
              + f"get_ipython().run_cell_magic('time', '', {body[split:]!r})\n"
              + "get_ipython().run_cell_magic('bash', '', 'backprop_factors = None\\n')\n")
    path = tmp_path / "hw3.py"
    path.write_text(source)
    report = grade(path, seed=1)
    assert report.score == report.max_score, \
        ([(t.number, t.lines) for t in report.tests if not t.passed], report.messages)


def _png_output(mb):
    import base64

    import nbformat

    data = base64.b64encode(os.urandom(int(mb * 2**20 * 3 / 4))).decode()
    return [nbformat.v4.new_output("display_data", data={"image/png": data})]


def test_a_notebook_made_large_by_saved_plots_is_graded(tmp_path):
    # a trial's notebook with four saved plots (3.6 MB) scored 0: the 2 MB limit was on
    # the file, though outputs are never run; beside a small utils.py, the picker then
    # graded utils.py, "tied at 0 exercise functions"
    path = _notebook(tmp_path / "hw3.ipynb", lecture_notebook.CORRECT,
                     outputs=_png_output(3.5))
    assert path.stat().st_size > 3 * 2**20
    report = grade(path, seed=1)
    assert report.score == report.max_score, report.messages

    from bpcheck.grade.source import pick_submission

    (tmp_path / "utils.py").write_text("def helper():\n    return 1\n")
    chosen, note = pick_submission(tmp_path)
    assert chosen.name == "hw3.ipynb", note


def test_a_notebook_over_its_limits_is_refused_by_name(tmp_path):
    from bpcheck.grade import source
    from bpcheck.grade.source import SubmissionError, read_cells

    big_code = _notebook(tmp_path / "code.ipynb", "x = 1\n" * (source.MAX_BYTES // 6 + 10))
    with pytest.raises(SubmissionError, match="code cells hold more than 2 MB"):
        read_cells(big_code)
    huge = _notebook(tmp_path / "huge.ipynb", "x = 1\n",
                     outputs=_png_output(source.NOTEBOOK_MAX_BYTES / 2**20 + 1))
    with pytest.raises(SubmissionError, match=r"expected a file under 32 MB \(clear the "
                                              r"notebook's outputs"):
        read_cells(huge)
    many = _notebook(tmp_path / "many.ipynb", *(["x = 1\n"] * (source.MAX_CELLS + 1)))
    with pytest.raises(SubmissionError, match="more than 2000 code cells"):
        read_cells(many)
    many.unlink()
    # the picker says why a notebook it could not read counted no function
    (tmp_path / "utils.py").write_text("def helper():\n    return 1\n")
    big_code.unlink()
    chosen, note = source.pick_submission(tmp_path)
    assert chosen.name == "utils.py" and "'huge.ipynb' could not be read" in note, note


def test_reading_a_hostile_notebook_costs_the_grader_no_memory(tmp_path):
    # JSON of many tiny objects costs ~20x its size to read: the reading runs in a
    # forked copy with its own memory limit, and such a file is refused by name
    import resource

    from bpcheck.grade.source import SubmissionError, read_cells

    path = tmp_path / "bomb.ipynb"
    path.write_text('{"cells": [{"cell_type": "code", "source": "", "metadata": {}, '
                    '"outputs": [' + ",".join(["[]"] * (9 << 20)) + ']}], "metadata": {}, '
                    '"nbformat": 4, "nbformat_minor": 5}')
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SubmissionError, match="too large for the grader to read"):
        read_cells(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 << 10  # kB


def test_an_upper_case_suffix_and_a_byte_order_mark_are_read(tmp_path):
    path = _notebook(tmp_path / "HW3.IPYNB", lecture_notebook.CORRECT)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = grade(path, seed=1)
    assert report.score == report.max_score, report.messages


def test_a_module_the_submission_may_not_use_is_named_with_what_it_may(tmp_path):
    # "No module named 'scipy'" alone read as a broken grader (scipy is installed for the
    # grader, and hidden from the submission)
    path = _notebook(tmp_path / "hw.ipynb", "from scipy.special import logsumexp\n",
                     lecture_notebook.CORRECT)
    report = grade(path, seed=1)
    assert report.score == report.max_score
    assert any("cell 1 raised ModuleNotFoundError: No module named 'scipy' (submissions may "
               "use numpy, sympy, matplotlib and the standard library only; the graded file is "
               "the only one, and it cannot import another)" in m
               for m in report.messages), report.messages


def test_a_missing_module_of_the_standard_library_is_said_to_be_the_sandboxs(tmp_path):
    # a red team: where the sandbox could not open the standard library (a grader without
    # namespaces, Python under /root), `import glob` read "(submissions may use numpy ...
    # and the standard library only)", which glob is part of
    from bpcheck.grade.child.load import error_describer

    describe = error_describer("numpy and the standard library only")
    glob = describe(ModuleNotFoundError("No module named 'glob'", name="glob"))
    assert glob == ("ModuleNotFoundError: No module named 'glob' (a standard-library module, "
                    "which the grader's sandbox could not give the submission: see the sandbox "
                    "notes)")
    mine = describe(ModuleNotFoundError("No module named 'helpers'", name="helpers"))
    assert mine.endswith("(submissions may use numpy and the standard library only; the "
                         "graded file is the only one, and it cannot import another)")
    # a submodule that does not exist is the submission's mistake (a Python 2 idiom)
    old = describe(ModuleNotFoundError("No module named 'email.MIMEText'", name="email.MIMEText"))
    assert "sandbox" not in old and "submissions may use" in old

    class Hostile(str):
        def __bool__(self):
            raise RuntimeError("no")

        def __hash__(self):
            raise RuntimeError("no")

    # a name of the submission's making cannot take the description down
    assert describe(ModuleNotFoundError("x", name=Hostile("os"))).startswith("ModuleNotFoundError: x")


def test_a_missing_function_points_at_the_cell_that_defines_it_and_failed(tmp_path):
    # "softmax_loss is not defined" did not say that the cell defining it had failed on
    # an IndentationError (the note above said so, but nothing tied the two)
    body = lecture_notebook.CORRECT
    split = body.index("def two_layer_loss")
    broken = body[:split].replace("    N = X.shape[0]\n", "    N = X.shape[0]\n      x = 1\n", 1)
    path = _notebook(tmp_path / "hw.ipynb", "import numpy as np\n", broken, body[split:])
    report = grade(path, seed=1)
    first = next(t for t in report.tests if t.exercise == 1)
    assert first.lines[:2] == [
        "softmax_loss is not defined (expected a function named softmax_loss)",
        "cell 2, which defines it, failed before the definition ran (see the note above)"]
    assert any(m.startswith("cell 2 raised IndentationError") for m in report.messages)
    assert all(t.passed for t in report.tests if t.exercise != 1)


def test_the_picker_reads_notebooks_within_its_time_then_scans_their_text(tmp_path, monkeypatch):
    # a red team's folder of 20 notebooks whose outputs the schema's slow validator took
    # 5.5 s each to check held the picker 108 s past a 20 s budget: the picker reads the
    # notebooks without that check, all in one forked copy with a time limit, and past it
    # ranks them by their JSON text
    import time

    from bpcheck.grade import source

    body = lecture_notebook.CORRECT
    _notebook(tmp_path / "b.ipynb", body[:body.index("def two_layer_loss")])
    _notebook(tmp_path / "a.ipynb", *body.split("\n\n\n"))  # every function, cell by cell
    (tmp_path / "c.py").write_text(body[:body.index("def backprop_factors")])
    chosen, note = source.pick_submission(tmp_path)
    assert chosen.name == "a.ipynb", note
    assert "the one that defines the most exercise functions" in note
    monkeypatch.setattr(source, "PICK_SECONDS", 2)
    monkeypatch.setattr(source, "_notebook_cells", lambda path: time.sleep(60))
    start = time.monotonic()
    chosen, note = source.pick_submission(tmp_path)
    assert chosen.name == "a.ipynb" and time.monotonic() - start < 10, note


def test_the_picker_counts_a_notebooks_code_in_any_key_order_and_version(tmp_path):
    # a red team: the text scan took a cell's type from the "cell_type" key before its
    # "source", so a notebook written with "source" first, or a version-3 one (code under
    # "input"), counted no function, and a helper .py beside it was graded (0 / 10)
    import json

    from bpcheck.grade.source import pick_submission

    body = lecture_notebook.CORRECT
    (tmp_path / "plotting.py").write_text("import numpy as np\n\ndef plot(x):\n    return x\n")
    cells = [{"source": "# Homework 3", "metadata": {}, "cell_type": "markdown"},
             {"source": body.splitlines(True), "outputs": [], "metadata": {},
              "execution_count": None, "cell_type": "code"}]
    (tmp_path / "hw3.ipynb").write_text(json.dumps(
        {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    chosen, note = pick_submission(tmp_path)
    assert chosen.name == "hw3.ipynb", note
    (tmp_path / "hw3.ipynb").write_text(json.dumps({
        "nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"metadata": {}, "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# Homework 3"},
            {"cell_type": "code", "collapsed": False, "input": body.splitlines(True),
             "language": "python", "metadata": {}, "outputs": []}]}]}))
    chosen, note = pick_submission(tmp_path)
    assert chosen.name == "hw3.ipynb", note


def test_a_notebook_is_read_without_the_schema_check_of_its_outputs(tmp_path):
    import json

    from bpcheck.grade.source import read_cells

    path = _notebook(tmp_path / "hw.ipynb", "x = 1\n", "def f():\n    return 2\n")
    nb = json.loads(path.read_text())
    nb["cells"][0]["outputs"] = [{}] * 1000  # invalid outputs: never run, never checked
    nb["cells"][1]["source"] = ["def f():\n", "    return 2\n"]  # a list of lines
    path.write_text(json.dumps(nb))
    assert [src for _, src in read_cells(path)] == ["x = 1\n", "def f():\n    return 2\n"]
    path.write_text(json.dumps({**nb, "cells": [1, 2]}))
    with pytest.raises(SubmissionError, match="hw.ipynb: not a readable Jupyter notebook"):
        read_cells(path)


def test_the_configs_file_name_picks_an_upper_case_upload(tmp_path):
    # suffixes are read in any case: the config's `submission = "hw3.ipynb"` matched
    # HW3.IPYNB only by a ranking that said no file had that name
    from bpcheck.grade.source import pick_submission

    _notebook(tmp_path / "HW3.IPYNB", "x = 1\n")
    (tmp_path / "notes.py").write_text(lecture_notebook.CORRECT)
    chosen, note = pick_submission(tmp_path, name="hw3.ipynb")
    assert chosen.name == "HW3.IPYNB" and note is None


def test_a_report_notebook_quoting_the_code_is_not_graded_for_it(tmp_path):
    # a red team: a write-up notebook quoting every function in markdown, with a saved
    # output that made it the larger, tied with the real notebook and was graded (0 / 100)
    import nbformat

    from bpcheck.grade.source import pick_submission

    body = lecture_notebook.CORRECT
    _notebook(tmp_path / "hw3.ipynb", body)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# Write-up\n```python\n{body}\n```\n"),
                nbformat.v4.new_code_cell("print('see hw3.ipynb')")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                  text=f"x = 1\n{body}" + "x" * 20000)]
    nbformat.write(nb, str(tmp_path / "report.ipynb"))
    chosen, note = pick_submission(tmp_path)
    assert chosen.name == "hw3.ipynb", note
    assert "the one that defines the most exercise functions" in note


def test_the_cell_search_for_a_missing_function_is_linear(tmp_path):
    # a red team: `^\s*def` ran over a failed cell of blank lines in quadratic time, in the
    # grader's own process (a 150 kB notebook held grade-batch 306 s past a 20 s budget)
    from bpcheck.grade.grader import _defined_in_failed_cells
    from bpcheck.grade.sandbox import run_limited

    blank = "raise ValueError('boom')\n" + "\n" * 200_000
    cells = [("cell 1", blank), ("cell 2", "x = 1\n\n\ndef softmax_loss (X, y):\n  pass\n")]
    lines = run_limited(_defined_in_failed_cells, ["softmax_loss"], cells, ["cell 1", "cell 2"],
                        seconds=20, memory_mb=256)  # (the old search: about 70 s)
    assert lines == ["cell 2, which defines it, failed before the definition ran "
                     "(see the note above)"]


def test_the_pickers_scan_of_a_hostile_notebook_holds_little_memory(tmp_path):
    # a red team: 32 MB of `"ab=` made ten million matches, all held at once: 1.2 GB, and
    # Gradescope's 768 MB container killed the grader before it wrote any result
    import subprocess

    up = tmp_path / "up"
    up.mkdir()
    (up / "b.py").write_text(lecture_notebook.CORRECT)
    (up / "a.ipynb").write_text('"ab=' * (16 << 18))  # 16 MB
    script = ("import resource, sys; from bpcheck.grade.source import pick_submission; "
              "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
              "chosen, _ = pick_submission(sys.argv[1]); "
              "print(chosen.name, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) >> 10)")
    out = subprocess.run([sys.executable, "-c", script, str(up)], capture_output=True,
                         text=True, timeout=120)
    name, grown_mb = out.stdout.split()
    assert name == "b.py" and int(grown_mb) < 150, out  # the text itself: 32 MB as a str


def test_a_notebooks_progress_bar_calls_and_time_magic_run_as_in_jupyter(tmp_path):
    # a red team: each of these, in a cell that also defined the functions, took the cell
    # down (0 / 100): the stand-in bar was the bare iterable, and `%time z = 1` was
    # commented out, where Jupyter assigns z
    body = lecture_notebook.CORRECT
    split = body.index("def backprop_factors")
    head = ("import numpy as np\nfrom tqdm import tqdm, trange\n"
            "from tqdm.notebook import tnrange, tqdm_notebook\n"
            "pbar = tqdm(range(3))\npbar.set_description('epoch'); pbar.set_postfix(loss=1.0)\n"
            "for _ in pbar: pass\n"
            "with tqdm(range(2)) as it:\n    for _ in it: it.update(0)\n"
            "with tqdm(total=5) as bar:\n    bar.update(5)\n"
            "tqdm.write('written by tqdm.write')\n"
            "assert len(tqdm(range(4))) == 4 and list(trange(2)) == [0, 1]\n"
            "for _ in tnrange(2): pass\n"
            "assert list(reversed(trange(3))) == [2, 1, 0] and bool(tqdm(total=0))\n"
            "assert len(tqdm((i for i in range(9)), total=5)) == 5\n"
            "pbar.set_description('done'); assert pbar.desc == 'done'\n"
            "if True:\n    %time # warm-up\n"
            "%prun -s cumulative sum(range(3))\n"
            "%time z = 1\n")
    path = _notebook(tmp_path / "hw.ipynb", head + body[:split].replace("import numpy as np\n", ""),
                     "%time y = z + 1\n" + body[split:])
    report = grade(path, seed=1)
    assert report.score == report.max_score, \
        ([(t.number, t.lines) for t in report.tests if not t.passed], report.messages)
    assert not any(m.startswith("cell ") for m in report.messages), report.messages
    assert "written by tqdm.write" in report.student_output
    # a .py exported from Jupyter: %time's statement runs there too
    exported = tmp_path / "hw.py"
    exported.write_text(body[:split] + "get_ipython().run_line_magic('time', 'z = 1')\n"
                        + "assert z == 1\n" + body[split:])
    report = grade(exported, seed=1)
    assert report.score == report.max_score, report.messages
