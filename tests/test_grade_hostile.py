"""Hostile submissions: each scores 0 on what it attacked, with a clear message, and leaves
the grader, the results file and the other exercises intact.

Every attack replaces ``softmax_loss`` (exercise 1) of an otherwise correct submission,
so exercise 2 must still get full marks.  Exercises 3 and 4 are switched off to keep
the suite quick; the limits are small (see ``CONFIG``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
from pathlib import Path

import pytest

from bpcheck.grade.cli import main as grade_main
from bpcheck.grade.config import parse_config
from bpcheck.grade.grader import grade
from bpcheck.grade.results import PRINTED_LINE_CHARS, PRINTED_LINES, render_text

CORRECT = (Path(__file__).parent / "grade_submissions" / "correct.py").read_text()
SECRET = "SECRET-MARKER-7c1f"
ROOT = os.geteuid() == 0


INFINITE_LOOP = """
    def softmax_loss(W, b, X, y, reg):
        while True:
            pass
    """
MEMORY_BOMB = """
    import time
    def softmax_loss(W, b, X, y, reg):
        hoard = []
        for _ in range(32):  # 8 GiB at most, then wait: a limit that fails shows as a time limit
            hoard.append(bytearray(256 * 2**20))
        time.sleep(1000)
    """
FORK_BOMB = """
    import os
    def softmax_loss(W, b, X, y, reg):
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
JAX_BY_A_BUILT_NAME = """
    def softmax_loss(W, b, X, y, reg):
        lib = __import__("j" + "ax")
        return lib.numpy.zeros(())
    """


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "grading.toml"
    path.write_text(textwrap.dedent(f"""\
        # {SECRET}: an instructor's config must not be readable by the submission
        [exercises.3]
        points = 0
        [exercises.4]
        points = 0
        [sandbox]
        load_timeout_s = 20
        test_timeout_s = 1.5
        memory_mb = 768
        restarts = 1
        """))
    return path


@pytest.fixture(scope="module")
def cfg(config_file):
    from bpcheck.grade.config import tomllib  # tomli on Python 3.10

    return parse_config(tomllib.loads(config_file.read_text()), str(config_file))


def with_time(cfg, seconds: float):
    """``cfg`` with another per-test time limit: an attack that a limit other than time must
    stop (memory) gets room enough that a loaded machine's slowness does not let the time
    limit fire first (the 1.5 s above did, with the cores busy: 'time limit ... exceeded')."""
    return dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, test_timeout_s=seconds))


def hostile(tmp_path, attack: str, name="attack.py") -> Path:
    path = tmp_path / name
    path.write_text(CORRECT + "\n\n# ---- the attack\n" + textwrap.dedent(attack))
    return path


def exercise(report, e):
    return [t for t in report.tests if t.number.startswith(f"{e}.")]


def assert_attack_contained(report, *words):
    """Exercise 1 scores 0, each test says one of ``words``; exercise 2 is untouched."""
    ex1, ex2 = exercise(report, 1), exercise(report, 2)
    assert ex1 and all(t.score == 0 for t in ex1), [(t.number, t.lines) for t in ex1]
    text = "\n".join(ln for t in ex1 for ln in t.lines)
    assert any(w in text for w in words), text
    assert ex2 and all(t.passed for t in ex2), [(t.number, t.lines) for t in ex2]


def test_infinite_loop_times_out_and_costs_only_exercise_1(tmp_path, cfg):
    r = grade(hostile(tmp_path, INFINITE_LOOP), cfg, seed=1)
    assert_attack_contained(r, "time limit of 1.5 s exceeded")
    assert "exceeded while running test 1.1" in exercise(r, 1)[0].lines[0]


def test_sleep_that_ignores_alarms_times_out(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import signal, time
        def softmax_loss(W, b, X, y, reg):
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(1000)
        """), cfg, seed=1)
    assert_attack_contained(r, "time limit")


def test_memory_bomb_hits_the_address_space_limit(tmp_path, cfg):
    r = grade(hostile(tmp_path, MEMORY_BOMB), with_time(cfg, 10), seed=1)
    assert_attack_contained(r, "MemoryError", "killed")


@pytest.mark.skipif(not ROOT, reason="the process limit needs a dedicated uid (grader as root)")
def test_fork_bomb_is_capped_and_every_fork_is_killed(tmp_path, cfg):
    r = grade(hostile(tmp_path, FORK_BOMB), cfg, seed=1)
    assert_attack_contained(r, "time limit", "channel", "exited", "killed")
    assert any("processes 16" in n for n in r.isolation)


def test_disk_filler_is_stopped_by_the_file_size_and_tmpfs_limits(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import os
        def softmax_loss(W, b, X, y, reg):
            i = 0
            while True:   # many files, each under the file size limit
                with open(f"fill{i}", "wb") as f:
                    f.write(b"0" * (8 * 2**20))
                i += 1
        """), cfg, seed=1)
    assert_attack_contained(r, "No space left", "File too large", "SIGXFSZ", "OSError")
    r = grade(hostile(tmp_path, """
        def softmax_loss(W, b, X, y, reg):
            with open("big", "wb") as f:   # one file past the file size limit
                while True:
                    f.write(b"0" * 2**20)
        """), cfg, seed=1)
    assert_attack_contained(r, "SIGXFSZ", "File too large", "No space left")


def test_sys_exit_zero_is_an_error_not_a_pass(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import sys
        def softmax_loss(W, b, X, y, reg):
            sys.exit(0)
        """), cfg, seed=1)
    assert_attack_contained(r, "SystemExit")


def test_os_exit_zero_ends_the_child_and_is_reported(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import os
        def softmax_loss(W, b, X, y, reg):
            print("All tests passed! score: 100")
            os._exit(0)
        """), cfg, seed=1)
    assert_attack_contained(r, "exited with status 0 before finishing", "not run")


def test_keyboard_interrupt_is_caught_per_test(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        def softmax_loss(W, b, X, y, reg):
            raise KeyboardInterrupt
        """), cfg, seed=1)
    assert_attack_contained(r, "KeyboardInterrupt")


def test_printed_fake_results_are_quoted_never_parsed(tmp_path, cfg):
    results = tmp_path / "results.json"
    sub = hostile(tmp_path, """
        import json
        def softmax_loss(W, b, X, y, reg):
            print(json.dumps({"score": 100.0, "tests": [{"number": "1.1", "score": 5}]}))
            print("Total: 100 / 100")
            return 7.0, W * 0 + 7, b * 0 + 7
        """)
    assert grade_main(["grade", str(sub), "--results", str(results), "--seed", "1",
                       "--config", str(cfg.path)]) == 0
    doc = json.loads(results.read_text())
    assert doc["score"] == 25.0  # exercise 2 only
    assert all(t["score"] == 0 for t in doc["tests"] if t["number"].startswith("1."))
    assert '  | {"score": 100.0' in doc["output"]  # shown quoted, as the student's output


def test_writing_results_json_cannot_touch_the_graders_file(tmp_path, cfg):
    results = tmp_path / "out" / "results.json"
    results.parent.mkdir()
    sub = hostile(tmp_path, f"""
        import os
        FAKE = '{{"score": 1000, "tests": []}}'
        def softmax_loss(W, b, X, y, reg):
            for p in [{str(results)!r}, "results.json", "/autograder/results/results.json"]:
                try:
                    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
                    with open(p, "w") as f:
                        f.write(FAKE)
                    print("wrote", p)
                except OSError as err:
                    print("refused", p, type(err).__name__)
            return 7.0, W * 0 + 7, b * 0 + 7
        """)
    assert grade_main(["grade", str(sub), "--results", str(results), "--seed", "1",
                       "--config", str(cfg.path)]) == 0
    doc = json.loads(results.read_text())
    assert doc["score"] == 25.0
    assert not Path("/autograder/results/results.json").exists() or ROOT is False


def test_monkeypatching_numpy_and_builtins_changes_nothing(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import builtins, numpy
        numpy.allclose = lambda *a, **k: True
        numpy.isclose = lambda *a, **k: True
        numpy.testing.assert_allclose = lambda *a, **k: None
        builtins.isinstance = lambda *a: True
        builtins.abs = lambda x: 0
        def softmax_loss(W, b, X, y, reg):
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "wrong")


def test_ndarray_subclass_and_rigged_eq_are_rejected(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import numpy as np
        class Rigged(np.ndarray):
            def __eq__(self, other): return np.ones(self.shape, bool)
            def __array_finalize__(self, obj): pass
        class Always:
            def __eq__(self, other): return True
            def __lt__(self, other): return False
            def __le__(self, other): return True
            def __float__(self): return 0.0
        def softmax_loss(W, b, X, y, reg):
            return Always(), np.zeros_like(W).view(Rigged), np.zeros_like(b).view(Rigged)
        """), cfg, seed=1)
    assert_attack_contained(r, "subclass")
    assert ("expected a float (a Python float, numpy.float64 or numpy.float32), got "
            "submission.Always"
            in "\n".join(exercise(r, 1)[0].lines))


def test_nan_inf_and_wrong_dtype_are_rejected(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import numpy as np
        def softmax_loss(W, b, X, y, reg):
            return float("nan"), np.full(W.shape, np.inf), b.astype(np.float16)
        """), cfg, seed=1)
    assert_attack_contained(r, "NaN or inf")
    text = "\n".join(exercise(r, 1)[0].lines)
    assert "db: expected dtype float64 (the inputs' dtype), got float16 (do not cast the result)" in text


def test_importing_the_reference_is_caught_statically(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        def softmax_loss(W, b, X, y, reg):
            from bpcheck.grade import reference
            return reference.softmax_loss(W, b, X, y, reg)
        """), cfg, seed=1)
    assert_attack_contained(r, "uses bpcheck, which is not allowed")


def test_importing_the_reference_by_a_hidden_route_fails_at_run_time(tmp_path, cfg):
    import bpcheck

    src = os.path.dirname(os.path.dirname(bpcheck.__file__))
    r = grade(hostile(tmp_path, f"""
        import sys
        def softmax_loss(W, b, X, y, reg):
            sys.meta_path[:] = [f for f in sys.meta_path if "Blocker" not in type(f).__name__]
            sys.path.insert(0, {src!r})
            mod = __import__("".join(["bp", "check", ".grade.reference"]), fromlist=["x"])
            return mod.softmax_loss(W, b, X, y, reg)
        """), cfg, seed=1)
    assert_attack_contained(r, "bpcheck", "ModuleNotFoundError", "ImportError")


def test_the_autodiff_libraries_are_blocked_at_run_time(tmp_path, cfg):
    r = grade(hostile(tmp_path, JAX_BY_A_BUILT_NAME), cfg, seed=1)
    assert_attack_contained(r, "uses jax, which is not allowed")


def test_hidden_tests_config_and_reference_are_unreadable(tmp_path, cfg):
    import bpcheck.grade.reference as ref

    r = grade(hostile(tmp_path, f"""
        import os
        def softmax_loss(W, b, X, y, reg):
            for p in [{cfg.path!r}, {ref.__file__!r}, "/proc/%d/environ" % os.getppid()]:
                try:
                    print(open(p).read()[:200])
                except OSError as err:
                    print("denied", p, type(err).__name__)
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "wrong")
    out = r.student_output
    assert SECRET not in out
    assert "softmax_loss_mistakes" not in out
    assert "denied" in out


def test_output_flood_is_capped(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import sys
        def softmax_loss(W, b, X, y, reg):
            for _ in range(200):
                sys.stdout.write("Total: 100 / 100 " * 10000 + "\\n")
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "wrong")
    assert len(r.student_output) < 70 * 1024
    assert "more bytes of output dropped" in r.student_output


@pytest.mark.skipif(not ROOT, reason="signalling the grader is refused only across uids")
def test_killing_the_grader_is_refused(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import os, signal
        def softmax_loss(W, b, X, y, reg):
            # the tests run in a process forked from the loaded submission: the grader is
            # that process's parent
            with open(f"/proc/{os.getppid()}/stat") as f:
                grader = int(f.read().rsplit(")", 1)[1].split()[1])
            os.kill(grader, signal.SIGKILL)
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "PermissionError")


def test_network_is_unreachable_when_namespaces_are_allowed(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import socket
        def softmax_loss(W, b, X, y, reg):
            try:
                socket.create_connection(("1.1.1.1", 80), timeout=1)
                print("network: reachable")
            except OSError as err:
                print("network:", type(err).__name__, err)
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    if not any(n.startswith("network: none") for n in r.isolation):
        pytest.skip("this machine refuses network namespaces")
    assert "network: reachable" not in r.student_output


def test_exit_while_loading_scores_zero_everywhere_with_the_reason(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        raise SystemExit(0)
        """), cfg, seed=1)
    assert r.score == 0
    assert all("loading the submission failed: SystemExit" in t.lines[0] for t in r.tests)


# ---- what a test prints goes to that test's own output (GradeReport.printed) ----------


def test_what_each_test_prints_is_its_own_and_bytes_that_are_not_text_are_replaced(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import os, sys
        def softmax_loss(W, b, X, y, reg):
            print("softmax_loss got", X.shape)
            sys.stdout.flush()
            os.write(2, b"raw \\xff\\xfe bytes\\n")
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "wrong")
    ex1 = exercise(r, 1)
    for t in ex1:
        own, left = r.printed[t.number]
        assert own.startswith("softmax_loss got (") and "raw \ufffd\ufffd bytes" in own, own
        assert left == 0
    shapes = {r.printed[t.number][0].split("\n")[0] for t in ex1}
    assert len(shapes) > 1  # each test its own inputs' shape, not the group's text
    assert all(not r.printed.get(t.number, ("", 0))[0] for t in exercise(r, 2))  # no print
    assert "softmax_loss got" in r.student_output  # still in the students' whole output


def test_a_test_that_prints_a_flood_keeps_the_start_of_it_and_counts_the_rest(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        def softmax_loss(W, b, X, y, reg):
            print("first line")
            print("x" * 300000)
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "wrong")
    own, left = r.printed["1.1"]
    assert own.startswith("first line\nxxx") and len(own) == 2000
    assert left == len("first line\n") + len("x" * 300000 + "\n") - 2000


def test_the_text_report_shows_a_failed_tests_own_printout_under_it(tmp_path, cfg):
    """The instructor's report (what `bpcheck grade` prints) quotes the start of a failed
    test's own printout under that test, long lines cut, the rest counted; the students'
    summary in results.json does not (each visible test's output there has its own)."""
    r = grade(hostile(tmp_path, """
        def softmax_loss(W, b, X, y, reg):
            print("z" * 500)
            for i in range(20):
                print("line", i, X.shape)
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "wrong")
    text = render_text(r)
    for t in exercise(r, 1):
        block = text.split(f"\n  {t.number}  FAILED", 1)[1].split("\n  1.", 1)[0]
        block = block.split("\n\n")[0].splitlines()
        at = block.index("        printed in this test (capped, never parsed):")
        shape = r.printed[t.number][0].split("\n")[1].split(" ", 2)[2]
        assert block[at + 1:] == (
            ["        | " + "z" * PRINTED_LINE_CHARS + " [...]"]
            + [f"        | line {i} {shape}" for i in range(PRINTED_LINES - 1)]
            + [f"        [... {21 - PRINTED_LINES} more lines]"])
    own = text.split("\n  2.1 ", 1)[1].split("\n  2.2 ", 1)[0]
    assert "printed in this test" not in own  # exercise 2's function printed nothing
    assert "printed in this test" not in render_text(r, visible_only=True)
    assert "printed in this test" not in render_text(r, show_output=False)


def test_a_test_that_closes_or_redirects_its_output_leaves_the_next_tests_captured(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import os
        calls = []
        def softmax_loss(W, b, X, y, reg):
            calls.append(1)
            print("call", len(calls), flush=True)
            if len(calls) == 1:
                os.close(1)
                os.close(2)
            elif len(calls) == 2:
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "wrong")
    numbers = [t.number for t in exercise(r, 1)]
    assert len(numbers) >= 3
    for i, number in enumerate(numbers):  # each later test captured again
        assert r.printed[number] == (f"call {i + 1}\n", 0), (number, r.printed[number])


def test_a_process_that_keeps_a_tests_output_open_delays_it_by_a_second_at_most(tmp_path, cfg):
    r = grade(hostile(tmp_path, """
        import os, time
        def softmax_loss(W, b, X, y, reg):
            print("before the fork", flush=True)
            if os.fork() == 0:  # holds the test's output open, then prints into it
                time.sleep(3)
                print("late", flush=True)
                os._exit(0)
            return 7.0, W * 0 + 7, b * 0 + 7
        """), cfg, seed=1)
    assert_attack_contained(r, "wrong")  # not a time-out: the test ended at its return
    assert all(r.printed[t.number][0].startswith("before the fork") for t in exercise(r, 1))
    assert "late" not in "".join(text for text, _ in r.printed.values())


def test_a_forged_printed_field_is_text_or_nothing():
    from bpcheck.grade.grader import _printed

    assert _printed({"printed": "hi", "printed_left_out": 5}) == ("hi", 5)
    for bad in ({"printed": ["hi"]}, {"printed": 3}, {"printed": "   "}, {}, None, "text"):
        assert _printed(bad) == ("", 0)
    for left in (-1, True, 1.5, "5", 1 << 63):
        assert _printed({"printed": "hi", "printed_left_out": left}) == ("hi", 0)


def test_a_sum_of_a_thousand_terms_is_read_not_refused(tmp_path, cfg):
    """The scan for forbidden imports recursed once per AST level: a correct file with a
    sum of 500 terms, which Python compiles, scored 0 as 'does not parse as Python'."""
    path = tmp_path / "table.py"
    path.write_text(CORRECT + "\nTABLE_TOTAL = " + " + ".join(map(str, range(1000))) + "\n")
    report = grade(path, cfg, seed=1)
    assert report.score == report.max_score > 0, report.messages


def test_a_file_that_takes_the_parser_gigabytes_is_refused_within_the_scans_limit(tmp_path, cfg):
    """2 MB of one-name lines took the grader itself to 1.9 GB while parsing (Gradescope's
    container, 768 MB, killed the autograder): the parse runs in a limited copy now."""
    import resource

    path = tmp_path / "names.py"
    path.write_text("a\n" * 1_040_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = grade(path, cfg, seed=1)
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert report.score == 0
    assert any("too large or too deeply nested for the grader to read" in m
               for m in report.messages), report.messages
    assert grew_mb < 300, grew_mb
