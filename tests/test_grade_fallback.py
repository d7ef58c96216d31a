"""The grader without mount and network namespaces (``[sandbox] namespaces = false``).

This is what a Docker-based autograder such as Gradescope's usually gets: ``unshare`` is
refused, so nothing is hidden by mounts.  The limits, the uid drop, the import blocker
and the separate processes must still hold, and the grader must say which hidden paths
the submission could read (only file permissions protect them then).
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import pytest
from test_grade_hostile import (
    CORRECT,
    FORK_BOMB,
    INFINITE_LOOP,
    JAX_BY_A_BUILT_NAME,
    MEMORY_BOMB,
    SECRET,
    assert_attack_contained,
    exercise,
    hostile,
    with_time,
)

from bpcheck.grade.config import parse_config
from bpcheck.grade.grader import grade

ROOT = os.geteuid() == 0

SANDBOX = """\
[exercises.3]
points = 0
[exercises.4]
points = 0
[sandbox]
namespaces = false
load_timeout_s = 20
test_timeout_s = 1.5
memory_mb = 768
restarts = 1
"""


def config_at(path):
    from bpcheck.grade.config import tomllib  # tomli on Python 3.10

    path.write_text(f"# {SECRET}\n" + SANDBOX)
    return parse_config(tomllib.loads(path.read_text()), str(path))


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return config_at(tmp_path_factory.mktemp("cfg") / "grading.toml")


READ_CONFIG = """
    def softmax_loss(W, b, X, y, reg):
        try:
            print(open({path!r}).read()[:200])
        except OSError as err:
            print("denied", type(err).__name__)
        return 7.0, W * 0 + 7, b * 0 + 7
    """


def test_without_namespaces_the_sandbox_says_so_and_still_times_out(tmp_path, cfg):
    r = grade(hostile(tmp_path, INFINITE_LOOP), cfg, seed=1)
    assert "namespaces: not requested" in r.isolation
    assert not any(n.startswith("network: none") for n in r.isolation)
    assert_attack_contained(r, "time limit of 1.5 s exceeded")


def test_without_namespaces_the_autodiff_libraries_are_still_blocked(tmp_path, cfg):
    r = grade(hostile(tmp_path, JAX_BY_A_BUILT_NAME), cfg, seed=1)
    assert_attack_contained(r, "uses jax, which is not allowed")


def test_without_namespaces_the_memory_limit_holds(tmp_path, cfg):
    r = grade(hostile(tmp_path, MEMORY_BOMB), with_time(cfg, 10), seed=1)
    assert_attack_contained(r, "MemoryError", "killed")


@pytest.mark.skipif(not ROOT, reason="the process limit needs a dedicated uid (grader as root)")
def test_without_namespaces_a_fork_bomb_is_capped_and_killed(tmp_path, cfg):
    r = grade(hostile(tmp_path, FORK_BOMB), cfg, seed=1)
    assert_attack_contained(r, "time limit", "channel", "exited", "killed")


@pytest.mark.skipif(not ROOT, reason="only a grader running as root drops to another uid")
def test_a_readable_config_is_reported_as_exposed_and_a_closed_one_is_not(tmp_path):
    # a folder every user may enter, as /autograder/source is before setup.sh closes it
    shared = tempfile.mkdtemp(prefix="bpcheck-fallback-")
    try:
        os.chmod(shared, 0o755)
        path = os.path.join(shared, "grading.toml")
        cfg = config_at(Path(path))
        os.chmod(path, 0o644)
        open_r = grade(hostile(tmp_path, READ_CONFIG.format(path=path)), cfg, seed=1)
        assert any(n.startswith(f"exposed: {path} is readable") for n in open_r.isolation), \
            open_r.isolation
        assert SECRET in open_r.student_output  # the note was right: the secret leaked

        os.chmod(path, 0o600)  # what setup.sh does with `chmod -R o-rwx`
        closed_r = grade(hostile(tmp_path, READ_CONFIG.format(path=path)), cfg, seed=1)
        assert not any(n.startswith(f"exposed: {path}") for n in closed_r.isolation)
        assert SECRET not in closed_r.student_output
        assert "denied PermissionError" in closed_r.student_output
        assert_attack_contained(closed_r, "wrong")
    finally:
        import shutil

        shutil.rmtree(shared, ignore_errors=True)


def test_the_exposure_report_names_a_readable_bpcheck(tmp_path, cfg):
    """The bpcheck package is world-readable in a development checkout: it must be named."""
    import bpcheck

    package_root = os.path.realpath(os.path.dirname(bpcheck.__file__))
    readable_by_others = all(os.stat(p).st_mode & 0o005 == 0o005 for p in _parents(package_root))
    if ROOT and not readable_by_others:
        pytest.skip("bpcheck is installed where other users cannot read it")
    r = grade(hostile(tmp_path, textwrap.dedent("""
        def softmax_loss(W, b, X, y, reg):
            return 7.0, W * 0 + 7, b * 0 + 7
        """)), cfg, seed=1)
    assert any(n.startswith(f"exposed: {package_root} is readable") for n in r.isolation), \
        r.isolation


def _parents(path):
    out = [path]
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        out.append(path)
    return out


def test_a_notebook_cell_that_loads_a_forbidden_module_still_zeroes_the_notebook(tmp_path, cfg):
    """Cells run one by one and a failing cell costs nothing, but a cell that gets past the
    import blocker (possible here: nothing is hidden by mounts) loads the module for the
    whole notebook, and that is charged to every exercise.  The module is a stand-in named
    like a forbidden library, in a folder every user can read."""
    import nbformat

    shared = tempfile.mkdtemp(prefix="bpcheck-fallback-")
    try:
        os.chmod(shared, 0o755)
        os.mkdir(os.path.join(shared, "tinygrad"), 0o755)
        with open(os.path.join(shared, "tinygrad", "__init__.py"), "w") as f:
            f.write("def grad(f):\n    return f\n")
        os.chmod(os.path.join(shared, "tinygrad", "__init__.py"), 0o644)
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell(
                "import sys\n"
                "sys.meta_path[:] = [f for f in sys.meta_path if 'Blocker' not in type(f).__name__]\n"
                f"sys.path.insert(0, {shared!r})\n"
                "import tinygrad\n"),
            nbformat.v4.new_code_cell(CORRECT),
        ]
        path = tmp_path / "hw.ipynb"
        nbformat.write(nb, str(path))
        r = grade(path, cfg, seed=1)
    finally:
        import shutil

        shutil.rmtree(shared, ignore_errors=True)
    assert not any(m.startswith("cell 1 raised") for m in r.messages), r.messages
    assert r.score == 0
    assert all("the submission uses tinygrad" in t.lines[0] for t in r.tests), r.tests[0].lines


def test_a_forged_setup_message_cannot_replace_the_sandbox_notes(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import json, os, struct
        plan = json.load(open(os.path.join(os.path.dirname(__file__), "plan.json")))
        head = json.dumps({"kind": "setup", "notes": ["all good"]}).encode()
        os.write(plan["result_fd"], struct.pack(">Q", len(head)) + head + struct.pack(">Q", 0))
        def softmax_loss(W, b, X, y, reg):
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert "namespaces: not requested" in r.isolation and "all good" not in r.isolation
    assert_attack_contained(r, "wrong")


def test_forged_messages_of_the_wrong_types_do_not_crash_the_grader(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import json, os, struct
        plan = json.load(open(os.path.join(os.path.dirname(__file__), "plan.json")))
        def send(header):
            head = json.dumps(header).encode()
            os.write(plan["result_fd"], struct.pack(">Q", len(head)) + head + struct.pack(">Q", 0))
        send({"kind": "loaded", "forbidden": 5, "missing": 5, "cell_errors": 7, "error": None})
        send({"kind": "test", "test": "2.1", "meta": {"loss": 5}, "forbidden": 3})
        def softmax_loss(W, b, X, y, reg):
            send({"kind": "test", "test": "1.1", "meta": {"loss": 5, "dW": []}, "forbidden": 3})
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    # forged while a test of exercise 1 runs: it takes the place of test 1.1's answer;
    # forged while loading (before any test runs): ignored
    first = {t.number: t.lines[0] for t in r.tests}
    assert "could not be read (TypeError)" in first["1.1"], first
    assert all(t.passed for t in exercise(r, 2))
