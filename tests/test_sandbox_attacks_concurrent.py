"""Hostile submissions against the symbolic check that runs while the child does.

The grader scores exercise 4 (``v_rule``/``u_rule``) in a forked copy of itself
(:func:`bpcheck.grade.sandbox.start_limited`) as soon as a rules case's answer arrives,
while the child goes on with the next cases.  These attacks target that concurrency: the
check's result pipe, its lifetime, its pid, and what a slow child does to it.  Each test
runs the grader as a command (see :mod:`attacks`) and checks the verdict the attack
deserves, that the grader finished within its budget, and that nothing is left behind.

Both attacks below worked against the first version of that concurrency; the fixes: a
check runs beside the child only when the child has a uid of its own (with the grader's
uid it could reach the check's pipe through ``/proc``), a result counts only from a check
that exited normally, fractions outside 0..1 are refused, and a check that ended in time
is read whenever the grader asks.
"""

from __future__ import annotations

import pytest
from attacks import CORRECT, POLY_CONFIG, cleanup, mode_problem, run_grader

MARKER = "BPCHECK-ATTACK"
BUDGET_S = 120
PEAK_MB = 700
RESULTS_MAX = 1 << 20

RULES_ONLY = POLY_CONFIG  # exercise 4 only
RULES_NO_NAMESPACES = RULES_ONLY + "namespaces = false\n"


def grade(source, mode, config, **kw):
    run = run_grader(source, mode=mode, config=config, marker=MARKER, **kw)
    if run.left:
        cleanup(run.left)
    return run


def assert_clean(run, budget=BUDGET_S):
    assert run.code == 0, run.stderr[-3000:]
    assert run.seconds < budget, run.seconds
    assert run.peak_mb < PEAK_MB, run.peak_mb
    assert run.results_bytes < RESULTS_MAX, run.results_bytes
    assert not run.left, run.left


# Wrong rules (zero matrices of the right shapes): they deserve 0 on every case.
WRONG_RULES = '''
def v_rule(V_next, B_next, D):
    import sympy
    _slow()
    return sympy.zeros(V_next.shape[0], B_next.shape[1])


def u_rule(V, a_prev):
    import sympy
    _slow()
    return sympy.zeros(V.shape[0], V.shape[1] * a_prev.shape[0])
'''

# ------------------------------------------------ 1. forging the check's result pipe
#
# Ordinary user, no namespaces: the child has the grader's uid.  Had a check run beside
# it, the grader holds the read end of the check's result pipe, and the grader is
# dumpable: /proc/<grader>/fd/<read end> opened O_WRONLY gives a writer on that pipe
# (pipes reopened through /proc behave as FIFOs).  The daemon kills the check (same uid),
# drains whatever it wrote, writes {"ok": [1.0, ...]} and closes.

FORGE_DAEMON = r'''
import os, signal, time, json


def _stat(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def _grader():
    pid = os.getpid()
    while pid > 1:
        pid = int(_stat(pid)[1])
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"harness/child" not in cmd:
            return pid
    return None


def _pipes(pid):
    out = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for n in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            continue
        if link.startswith("pipe:"):
            out[int(n)] = link
    return out


def _kids(pid):
    out = set()
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                if int(_stat(e)[1]) == pid:
                    out.add(int(e))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _forge(g, known_pipes, known_kids):
    forged = json.dumps({"ok": [1.0, ["v_rule: the recursion holds (FORGED)",
                                      "u_rule: the recursion holds (FORGED)"]]}).encode()
    end = time.time() + 300
    while time.time() < end and os.path.exists(f"/proc/{g}"):
        for fd, ino in _pipes(g).items():
            if ino in known_pipes:
                continue
            known_pipes.add(ino)
            try:
                w = os.open(f"/proc/{g}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
                r = os.open(f"/proc/{g}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            # the check: a new child of the grader, forked just after the pipe was made
            # (this process is one too: the grader is a subreaper, and took it in when its
            # parent exited)
            for _ in range(500):
                checks = _kids(g) - known_kids - {os.getpid()}
                if checks:
                    break
                time.sleep(0.002)
            for p in checks:
                known_kids.add(p)
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
            try:
                while os.read(r, 1 << 20):  # whatever the real check wrote
                    pass
            except OSError:
                pass
            os.write(w, forged)
            os.close(w)
            os.close(r)
        time.sleep(0.002)


def _start():
    g = _grader()
    if g is None:
        return
    known_pipes, known_kids = set(_pipes(g).values()), _kids(g)
    if os.fork() == 0:
        if os.fork() == 0:
            try:
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                # keeps the inherited result channel open: the grader then waits for
                # its end of file until the deadline, time for the last case's check
                _forge(g, known_pipes, known_kids)
            finally:
                os._exit(0)
        os._exit(0)
    os.wait()


_start()


def _slow():
    time.sleep(0.3)  # time for the forger between two cases
'''


def test_a_child_with_the_graders_uid_cannot_forge_a_rules_score_through_the_graders_pipe():
    problem = mode_problem("user")
    if problem:
        pytest.skip(f"grader as user: {problem}")
    run = grade(CORRECT + "\n" + FORGE_DAEMON + "\n" + WRONG_RULES, "user",
                RULES_NO_NAMESPACES, timeout=300)
    text = run.text(4)
    assert run.code == 0, run.stderr[-3000:]
    tests = run.exercise(4)
    assert len(tests) == 5
    assert all(t["score"] == 0 for t in tests), text[:3000]
    assert "FORGED" not in text, text[:3000]
    assert_clean(run, budget=BUDGET_S + 60)


# ------------------------------------------------ 2. the check's deadline and lifetime
#
# A check's deadline counts from its start, and Limited.result() is called only after the
# session: a correct rule whose check ended in a second must not become "too large to
# check" because the child spent longer than check_timeout_s on the cases that followed
# it (an honest, slow submission).

SHORT_CHECK = RULES_ONLY + "check_timeout_s = 3\n"

SLOW_CORRECT_RULES = '''
import time


def v_rule(V_next, B_next, D):
    time.sleep(0.4)  # slow, but far within test_timeout_s
    return V_next * B_next * D


def u_rule(V, a_prev):
    import sympy
    time.sleep(0.4)
    return V * sympy.kronecker_product(sympy.eye(V.shape[1]), a_prev.T)
'''


def test_a_slow_honest_submission_keeps_the_marks_of_its_correct_rules():
    run = grade(CORRECT + "\n" + SLOW_CORRECT_RULES, "root", SHORT_CHECK, timeout=300)
    assert_clean(run)
    tests = run.exercise(4)
    assert len(tests) == 5
    assert all(t["score"] == t["max_score"] for t in tests), run.text(4)[:3000]

