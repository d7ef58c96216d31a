"""Graders running as root at once give their children different uids.

Each grader kills every process of its child's uid between groups of tests and at the end,
so two that shared a uid would kill each other's submissions.  The uid was chosen from the
grader's pid modulo 4000 alone; now each grader also claims it (a lock the kernel drops
when the grader ends) and skips uids that have live processes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bpcheck.grade import sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only a grader running as root "
                                "gives its child a uid of its own")

# a grader whose pid is always 123: every one of them starts from the same uid
PICK = """
import os, sys
os.getpid = lambda: 123
from bpcheck.grade import sandbox
print(sandbox.pick_uid(sandbox.Limits()), sandbox.pick_uid(sandbox.Limits()), flush=True)
sys.stdin.read()  # holds its claim until told to end
"""


def _grader():
    proc = subprocess.Popen([sys.executable, "-c", PICK], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    first, again = proc.stdout.readline().split()
    assert first == again, "one grader got two uids"
    return proc, int(first)


def _end(proc):
    proc.communicate(timeout=30)  # (closes its stdin: it ends)
    assert proc.returncode == 0


def test_graders_whose_pids_agree_modulo_4000_claim_different_uids():
    a, uid_a = _grader()
    try:
        b, uid_b = _grader()
        _end(b)
        assert uid_a != uid_b
    finally:
        _end(a)
    c, uid_c = _grader()  # a's claim ended with it
    _end(c)
    assert uid_c == uid_a


# a process may name itself with bytes that are not UTF-8 (PR_SET_NAME): /proc/PID/status
# read as text then failed to decode, and the process was not seen
RENAMED = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'\\xff\\xfe', 0, 0, 0); "
           "print(open('/proc/self/stat', 'rb').read().split()[1], flush=True); time.sleep(60)")


@pytest.mark.parametrize("renamed", [False, True], ids=["sleep", "named-not-utf8"])
def test_a_uid_with_a_live_process_is_not_given_to_a_child(renamed):
    c, free = _grader()
    _end(c)
    if renamed:
        if not os.access("/usr/bin/python3", os.X_OK):
            pytest.skip("no system python3 for another uid to run")
        squatter = subprocess.Popen(["/usr/bin/python3", "-c", RENAMED], user=free, group=free,
                                    stdout=subprocess.PIPE, cwd="/")
        assert squatter.stdout.readline().strip() == b"b'(\\xff\\xfe)'"  # (renamed)
    else:
        squatter = subprocess.Popen(["sleep", "60"], user=free, group=free)
    try:
        d, uid = _grader()
        _end(d)
        assert uid != free
        sandbox._kill_uid(free)
        assert squatter.wait(timeout=10) == -9  # and the kill of a uid's processes finds it
    finally:
        squatter.kill()
        squatter.wait()
        if squatter.stdout:
            squatter.stdout.close()


def test_the_claims_folder_is_used_only_when_root_alone_may_enter_it(monkeypatch, tmp_path):
    open_folder = tmp_path / "uids"
    open_folder.mkdir(mode=0o777)
    os.chmod(open_folder, 0o777)
    monkeypatch.setattr(sandbox, "UID_LOCKS", str(open_folder))
    assert sandbox._uid_lock_folder() is None
    os.chmod(open_folder, 0o700)
    assert sandbox._uid_lock_folder() == str(open_folder)
