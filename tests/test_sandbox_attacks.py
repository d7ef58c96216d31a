"""Hostile submissions written by a student who has read the grader's source.

One or more attacks per class of hole in the sandbox: the result channel, deadlines,
parent-side work on child data, the file system view, state that outlives the child,
running as an ordinary user, the autodiff ban, and smaller leaks.  Each test runs the
grader as a command, as root and as an ordinary user (see :mod:`attacks`), and checks

- the verdict the attack deserves (exercise 1 attacked; exercise 2, correct, is the
  control that shows the sandbox works in that mode),
- that the grader finished by itself within its budget,
- the grader's own peak memory,
- the size of ``results.json``,
- that nothing is left behind: processes, System V IPC objects, files.
"""

from __future__ import annotations

import csv
import ctypes
import io
import os
import platform
import sys
import textwrap
from pathlib import Path

import pytest
from attacks import (CORRECT, CORRECT_PATH, POLY_CONFIG, REPO, cleanup, mode_problem,
                     run_grader)

MODES = ["root", "user"]
MARKER = "BPCHECK-ATTACK"

# exercise 1 attacked, exercise 2 the control; small limits keep the suite quick
CONFIG = """\
[exercises.3]
points = 0
[exercises.4]
points = 0
[sandbox]
load_timeout_s = 20
test_timeout_s = 1.5
memory_mb = 768
restarts = 1
"""
NO_NAMESPACES = CONFIG + "namespaces = false\n"
HIDDEN_LAST = CONFIG.replace("[exercises.3]", '[exercises.1]\ntests = { "1.5" = "hidden" }\n'
                             "[exercises.3]")

BUDGET_S = 90  # far above a clean run (~10 s), far below a grader that waits forever
PEAK_MB = 700  # the grader's own peak is ~170 MB (exercises 1-2), ~400 MB (exercise 4)
RESULTS_MAX = 1 << 20

# Helpers every attack may use: find the result channel (a write-only pipe the harness
# inherited) and write frames in the harness's format.
TOOLS = '''
import os, stat, struct, json


def _channel():
    for fd in range(3, 256):
        try:
            pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
            with open(f"/proc/self/fdinfo/{fd}") as f:
                flags = int(f.read().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if pipe and flags & 3 == os.O_WRONLY:
            return fd


def _frame(header, body=b""):
    head = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack(">Q", len(head)) + head + struct.pack(">Q", len(body)) + body


def _send(data):
    fd = _channel()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_calls = [0]


def _next_call():
    _calls[0] += 1
    return _calls[0] - 1


def _ancestors(most=8):
    """This process's pid, then its parent's, and so on up to (not including) pid 1."""
    pid = os.getpid()
    for _ in range(most):
        yield pid
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            return
        if pid <= 1:
            return
'''


def attack(body: str) -> str:
    """The correct submission with ``softmax_loss`` replaced by the attack."""
    return CORRECT + "\n\n# ---- the attack\n" + TOOLS + "\n" + textwrap.dedent(body)


@pytest.fixture(params=MODES)
def mode(request):
    problem = mode_problem(request.param)
    if problem:
        pytest.skip(f"grader as {request.param}: {problem}")
    return request.param


def grade(source, mode, config=CONFIG, **kw):
    run = run_grader(source, mode=mode, config=config, marker=MARKER, **kw)
    if run.left:
        cleanup(run.left)
    return run


def full_marks(run, e):
    """Every test of exercise ``e`` (weighted by the homework, 25 points in all) scored its
    maximum."""
    tests = run.exercise(e)
    return bool(tests) and all(t["score"] == t["max_score"] > 0 for t in tests) \
        and abs(sum(t["score"] for t in tests) - 25.0) < 1e-4


def assert_contained(run, *why, control=True, left=True):
    """The grader finished by itself, small and clean; exercise 1 scored 0, saying ``why``."""
    assert run.code == 0, run.stderr[-3000:]
    assert run.seconds < BUDGET_S, run.seconds
    assert run.peak_mb < PEAK_MB, run.peak_mb
    assert run.results_bytes < RESULTS_MAX, run.results_bytes
    if left:
        assert not run.left, run.left
    scores = run.scores(1)
    assert scores and all(s == 0 for s in scores), (scores, run.text(1)[:3000])
    text = run.text(1)
    assert any(w in text for w in why), text[:3000]
    if control:
        assert full_marks(run, 2), run.text(2)[:3000]


# ------------------------------------------------------------- 1. the result channel

ZIP_BOMB = '''
import io, zipfile, zlib

_BOMB = []


def _bomb():
    """An .npz of one float64 array of 1 GiB of zeros, deflated to about 1 MB."""
    if not _BOMB:
        n = 1 << 27
        head = b"\\x93NUMPY\\x01\\x00"
        d = "{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }" % n
        d = d.encode().ljust(118, b" ") + b"\\n"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            with zf.open("loss.npy", "w", force_zip64=True) as f:
                f.write(head + len(d).to_bytes(2, "little") + d)
                zeros = bytes(1 << 20)
                for _ in range(1 << 10):
                    f.write(zeros)
        _BOMB.append(buf.getvalue())
    return _BOMB[0]


_bomb()  # built while the submission loads (the tests' time limit is short)


def softmax_loss(W, b, X, y, reg):
    i = _next_call()
    _send(_frame({"kind": "test", "test": f"1.{i + 1}", "error": None, "seconds": 0.0, "forbidden": [],
                  "meta": {"result": {"type": "tuple", "length": 3},
                           "loss": {"type": "ndarray"}}}, _bomb()))
    return 7.0, W * 0 + 7, b * 0 + 7
'''

MALFORMED = '''
import io
import numpy as np


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def softmax_loss(W, b, X, y, reg):
    i = _next_call()
    head = {"kind": "test", "test": f"1.{i + 1}", "error": None, "seconds": 0.0, "forbidden": [],
            "meta": {"result": {"type": "tuple", "length": 3}}}
    if i == 0:      # not an archive
        _send(_frame(head, b"PK\\x03\\x04" + b"garbage" * 100))
    elif i == 1:    # a bare .npy
        _send(_frame(head, _npy(np.zeros(3))))
    elif i == 2:    # JSON nested past any recursion limit
        _send(_frame(b'{"kind": "test", "test": "1.3", "meta": ' + b"[" * 200000 + b"]" * 200000
                     + b"}"))
    elif i == 3:    # a declared shape of 10^12 elements over 80 bytes of data
        raw = _npy(np.zeros(10)).replace(b"(10,), }" + b" " * 11, b"(1000000000000,), }")
        _send(_frame(head, raw))
    else:           # an error text of 40 MB, and control characters
        head["error"] = "\\x1b[2J\\rTotal: 100 / 100\\n" + "A" * (40 << 20)
        _send(_frame(head))
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.slow  # building the bomb takes the child ~30 s
def test_a_compression_bomb_on_the_channel_fails_its_test_and_costs_the_grader_nothing(mode):
    run = grade(attack(ZIP_BOMB), mode)
    assert_contained(run, "could not be read", "too large", "corrupted")


def test_malformed_frames_fail_only_their_own_test_with_a_note(mode):
    run = grade(attack(MALFORMED), mode)
    assert_contained(run, "could not be read", "corrupted")
    assert "\x1b" not in run.results["output"] and "\x1b" not in run.text(1)


ARCHIVE_TRICKS = '''
import io
import struct
import numpy as np


def _answer():
    buf = io.BytesIO()
    np.savez(buf, **{"0": np.array(7.0), "1": np.zeros((3, 3)), "2": np.zeros(3)})
    return bytearray(buf.getvalue())


def softmax_loss(W, b, X, y, reg):
    i = _next_call()
    head = {"kind": "test", "test": f"1.{i + 1}", "error": None, "seconds": 0.0, "forbidden": [],
            "meta": {"result": {"type": "tuple", "length": 3}}}
    body = _answer()
    entry = body.find(b"PK\\x01\\x02")
    if i == 0:      # "encrypted": zipfile raised RuntimeError
        body[entry + 8] |= 0x01
    elif i == 1:    # strong encryption: NotImplementedError
        body[entry + 8] |= 0x40
    elif i == 2:    # a zip64 offset of 2**64 - 1: OverflowError
        end = body.rfind(b"PK\\x05\\x06")
        extra = struct.pack("<HHQQQ", 1, 24, 8, 8, (1 << 64) - 1)
        name = struct.unpack_from("<H", body, entry + 28)[0]
        first = bytearray(body[entry:entry + 46 + name])
        struct.pack_into("<HL", first, 30, len(extra), 0)
        struct.pack_into("<L", first, 42, 0xFFFFFFFF)
        rest = body[entry + 46 + name:end]
        tail = bytearray(body[end:])
        struct.pack_into("<L", tail, 12, len(first) + len(extra) + len(rest))
        body = body[:entry] + first + extra + rest + tail
    else:           # 65535 directory entries: zipfile built them all before any count
        one = struct.pack("<4s6H3L5H2L", b"PK\\x01\\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1,
                          0, 0, 0, 0, 0, 0) + b"a"
        body = one * 65535 + struct.pack("<4s4H2LH", b"PK\\x05\\x06", 0, 0, 65535, 65535,
                                         len(one) * 65535, 0, 0)
    _send(_frame(head, bytes(body)))
    return 7.0, W * 0 + 7, b * 0 + 7
'''


def test_archives_that_zipfile_cannot_read_fail_their_test_not_the_grader(mode):
    """Flag bits and zip64 fields that made zipfile raise RuntimeError, NotImplementedError
    or OverflowError failed the whole grading run ("The autograder failed")."""
    run = grade(attack(ARCHIVE_TRICKS), mode)
    assert_contained(run, "could not be read")
    assert "autograder failed" not in run.results["output"]


# ------------------------------------------------------------- 2. deadlines

KEEP_ALIVE = '''
import time


def softmax_loss(W, b, X, y, reg):
    fd = _channel()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            while True:     # a frame every 0.3 s, for a test that does not exist
                try:
                    _send(_frame({"kind": "test", "test": 99, "error": None, "meta": {}}))
                except OSError:
                    os._exit(0)
                time.sleep(0.3)
        os._exit(0)
    while True:
        time.sleep(0.3)
'''


def test_frames_from_a_grandchild_do_not_extend_the_deadline(mode):
    run = grade(attack(KEEP_ALIVE), mode, timeout=150)
    assert_contained(run, "time limit")


def test_grade_batch_writes_its_csv_whatever_a_submission_does(mode, tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "a_keep_alive.py").write_text(attack(KEEP_ALIVE))
    (folder / "b_correct.py").write_text(CORRECT)
    run = grade(folder, mode, batch=True, timeout=150)
    assert run.code == 0, run.stderr[-2000:]
    assert run.seconds < 2 * BUDGET_S and run.peak_mb < PEAK_MB and not run.left
    rows = list(csv.DictReader(io.StringIO(run.csv)))
    assert [Path(r["submission"]).name for r in rows] == ["a_keep_alive.py", "b_correct.py"]
    assert [float(r["score"]) for r in rows] == [25.0, 50.0], run.csv


# ------------------------------------------------------------- 3. parent-side work

def test_a_polynomial_bomb_is_a_failed_test_not_a_grader_out_of_memory(mode):
    # the rules are right, but an extra term makes the expansion explode in the parent
    bomb = '''
def v_rule(V_next, B_next, D):
    s = V_next[0, 0] + V_next[0, V_next.shape[1] - 1] + B_next[0, 0] + D[0, 0] + 1
    return (V_next * B_next * D).applyfunc(lambda e: e + s ** 6)
'''
    run = grade(CORRECT + "\n" + bomb, mode, config=POLY_CONFIG, timeout=200)
    assert run.code == 0, run.stderr[-3000:]
    assert run.seconds < BUDGET_S + 60 and run.peak_mb < PEAK_MB, (run.seconds, run.peak_mb)
    assert run.results_bytes < RESULTS_MAX and not run.left
    tests = run.exercise(4)
    # v_rule and u_rule are scored separately (half a case each): u_rule is right here
    assert len(tests) == 5 and all(t["score"] <= t["max_score"] / 2 + 1e-6
                                   and "v_rule: the recursion holds" not in t["output"]
                                   for t in tests[:2]), run.text(4)[:3000]
    assert "too large" in run.text(4) or "refuted" in run.text(4), run.text(4)[:3000]


# ------------------------------------------------------------- 4. the file system view

READ_HOST = f'''
def softmax_loss(W, b, X, y, reg):
    seen = []
    for p in [{str(CORRECT_PATH)!r}, {str(REPO / ".git")!r}, {str(REPO / "pyproject.toml")!r},
              {str(REPO / "tests")!r}, "/home", "/etc/passwd", "/etc/shadow", "/var", "/opt"]:
        if os.path.exists(p):
            seen.append(p)
    print("SEEN:", seen, "UNDER /:", sorted(os.listdir("/")))
    g = {{}}
    try:
        exec(open({str(CORRECT_PATH)!r}).read(), g)
    except OSError:
        return 7.0, W * 0 + 7, b * 0 + 7
    return g["softmax_loss"](W, b, X, y, reg)
'''


def test_the_child_sees_no_file_of_the_host_outside_its_allow_list(mode):
    run = grade(attack(READ_HOST), mode)
    assert_contained(run, "wrong")
    out = run.results["output"]
    assert "SEEN: []" in out, out[-2000:]
    # the root holds the system's library folders and the first folder of each allowed path
    import ast
    import sys

    import mpmath
    import numpy
    import sympy

    listed = ast.literal_eval(out.split("UNDER /: ", 1)[1].splitlines()[0])
    allowed = {"tmp", "dev", "proc", "etc", "usr", "lib", "lib32", "lib64", "bin", "sbin"}
    allowed |= {Path(os.path.realpath(p)).parts[1] for p in
                (sys.executable, os.__file__, numpy.__file__, sympy.__file__, mpmath.__file__)}
    assert set(listed) <= allowed, listed


# ------------------------------------------------------------- 5. state that outlives

LITTER = f'''
import ctypes, time

_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p


def softmax_loss(W, b, X, y, reg):
    i = _next_call()
    for folder in ["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "."]:
        try:
            with open(f"{{folder}}/{MARKER}-{{i}}", "w") as f:
                f.write(repr(W.tolist()))
        except OSError:
            pass
    for k in range(2):   # 2 x 128 MB of System V shared memory, touched, never removed
        shmid = _libc.shmget(0x5EED00 + 16 * i + k, 128 << 20, 0o1666)
        if shmid >= 0:
            addr = _libc.shmat(shmid, None, 0)
            if addr not in (None, ctypes.c_void_p(-1).value):
                ctypes.memset(addr, 1, 128 << 20)
                _libc.shmdt(ctypes.c_void_p(addr))
    if os.fork() == 0:  # and a daemon that would outlive the grading
        os.setsid()
        time.sleep(1000)
        os._exit(0)
    return 7.0, W * 0 + 7, b * 0 + 7
'''


def test_files_ipc_and_daemons_do_not_outlive_the_grading(mode):
    run = grade(attack(LITTER), mode, config=HIDDEN_LAST)
    assert_contained(run, "wrong")


KERNEL_MEMORY = '''
import ctypes, time

_libc = ctypes.CDLL(None, use_errno=True)


def _count(step, most):
    """How many times ``step()`` succeeds before it fails, at most ``most``."""
    for n in range(most):
        if not step(n):
            return n
    return most


def _xattr(path):
    open(path, "w").close()

    def step(n):
        try:
            os.setxattr(path, f"user.a{n}", b"v" * 65536)
            return True
        except OSError:
            return False
    return step


def _file(n):
    try:
        open(f"/tmp/f{n}" + "x" * 200, "w").close()
        return True
    except OSError:
        return False


# at load time, bounded so that an uncapped kernel loses 400 MB at most
print("XATTRS", _count(_xattr("/tmp/x"), 2000), _count(_xattr("/dev/shm/x"), 2000))
print("FILES", _count(_file, 20000))
print("SEMSETS_32000", _count(lambda n: _libc.semget(0, 32000, 0o1600) >= 0, 20))
print("SEMSETS_64", _count(lambda n: _libc.semget(0, 64, 0o1600) >= 0, 40))
print("QUEUES", _count(lambda n: _libc.msgget(0, 0o1600) >= 0, 40))


def softmax_loss(W, b, X, y, reg):
    return 7.0, W * 0 + 7, b * 0 + 7
'''


def test_kernel_memory_outside_the_address_space_is_capped(mode):
    """Inodes and extended attributes of the private tmpfs folders, System V semaphores and
    message queues: kernel memory that neither ``tmp_mb`` (data blocks) nor ``memory_mb``
    (the address space) counts; without caps one submission took 12 GB (xattrs) and 4.5
    GB (semaphore sets) in seconds."""
    from bpcheck.grade.child.jail import TMP_INODES

    run = grade(attack(KERNEL_MEMORY), mode)
    assert_contained(run, "wrong")
    notes = "\n".join(run.results["extra_data"]["sandbox"])
    if "without namespaces" in notes:
        pytest.skip("no namespaces on this machine: /tmp and IPC are the host's")
    printed = dict(line.strip("| ").split(" ", 1) for line in run.results["output"].splitlines()
                   if line.strip("| ").split(" ")[0] in ("XATTRS", "FILES", "SEMSETS_32000",
                                                         "SEMSETS_64", "QUEUES"))
    assert len(printed) == 5, run.results["output"][-3000:]
    # TMP_INODES of 1 kB each bound the xattrs: 64 of 64 kB per folder
    assert all(int(n) <= TMP_INODES // 64 for n in printed["XATTRS"].split()), printed
    assert int(printed["FILES"]) <= TMP_INODES, printed
    if "System V IPC not capped" in notes:  # (an ordinary user's IPC namespace)
        return
    assert printed["SEMSETS_32000"] == "0", printed
    assert int(printed["SEMSETS_64"]) <= 16 and int(printed["QUEUES"]) <= 16, printed


MANY_PROCESSES_MEMORY = '''
import signal, time

HOARD = 300 << 20
_held = []
for _ in range(6):  # 6 x 300 MB, each within memory_mb = 768 of address space
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:  # the kernel's first choice at a limit, not the worker (which is smaller anyway)
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        hoard = b"\\x01" * HOARD  # touched, resident
        os.write(w, b"1")
        time.sleep(600)  # held until this process is killed below (or by the OOM killer)
        os._exit(0)
    os.close(w)
    os.set_blocking(r, False)
    _held.append((pid, r))


def _state(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None


def _dead(pid):
    status = _state(pid)
    return status is None or status["State"].split()[0] in ("Z", "X")


# Wait until the contest for memory is over: every child has either reported its hoard
# (it then holds it until it is killed: it never grows again) or died.  No fixed sleep:
# with the child's processes on one CPU a slow machine took more than 3 s to get there.
reported = set()
_end = time.monotonic() + 40
while time.monotonic() < _end:
    for pid, r in _held:
        if pid not in reported:
            try:
                if os.read(r, 1) == b"1":
                    reported.add(pid)
            except BlockingIOError:
                pass
    if all(pid in reported or _dead(pid) for pid, _ in _held):
        break
    time.sleep(0.01)
else:
    print("UNSETTLED", [pid for pid, _ in _held if pid not in reported and not _dead(pid)])
# Held at once: once no child is still growing, no further OOM kill can come, so every
# reporter still alive with its hoard resident holds it now, together with the others.
alive = 0
for pid in reported:
    status = _state(pid)
    if status is not None and status["State"].split()[0] not in ("Z", "X") and \\
            int(status.get("RssAnon", "0").split()[0]) << 10 >= HOARD:  # none: exiting
        alive += 1
for pid, r in _held:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
print("HELD AT ONCE", alive)


def softmax_loss(W, b, X, y, reg):
    return 7.0, W * 0 + 7, b * 0 + 7
'''


def test_the_submissions_processes_share_one_memory_limit(mode):
    """``memory_mb`` limits each process's address space: ``processes`` of them held 7.5 GB
    with ``memory_mb = 768``.  As root, where a memory cgroup can be made, they share
    ``memory_mb + 2 tmp_mb``."""
    if mode == "user":
        pytest.skip("an ordinary user cannot make a memory cgroup")
    # loading waits until every child has its hoard or has been killed: time for that on
    # a slow machine, where the child's processes share one CPU (the cpu cgroup)
    run = grade(attack(MANY_PROCESSES_MEMORY), mode,
                config=CONFIG.replace("load_timeout_s = 20", "load_timeout_s = 60"))
    notes = "\n".join(run.results["extra_data"]["sandbox"])
    if "memory: no cgroup" in notes:
        pytest.skip(next(n for n in run.results["extra_data"]["sandbox"] if "memory:" in n))
    assert "a cgroup holds the child's processes to 896 MB in all" in notes, notes
    assert_contained(run, "wrong")
    held = [line for line in run.results["output"].splitlines() if "HELD AT ONCE" in line]
    assert held and 1 <= int(held[0].split()[-1]) <= 896 // 300, run.results["output"][-3000:]


# ------------------------------------------------------------- 6. an ordinary user

def test_the_correct_submission_gets_full_marks_in_every_mode(mode):
    run = grade(CORRECT, mode, config=CONFIG.replace("[exercises.3]\npoints = 0\n", ""))
    assert run.code == 0 and run.seconds < BUDGET_S and run.peak_mb < PEAK_MB, run.stderr
    assert not run.left, run.left
    assert run.results["score"] == 75.0, run.results["output"]


REWRITE_RESULTS = '''
import time


def softmax_loss(W, b, X, y, reg):
    results = grader = None
    pid = os.getppid()
    while pid > 1 and results is None:     # the grader's command line names the file
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
            if b"--results" in args:
                results, grader = args[args.index(b"--results") + 1].decode(), pid
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    if results and os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.closerange(0, 4096)  # holding no pipe of the grader's, which it would wait on
            end = time.monotonic() + 60
            while time.monotonic() < end:  # until the grader has written the genuine file
                try:                       # and ended (a zombie, or gone)
                    if open(f"/proc/{grader}/stat").read().rsplit(")", 1)[1].split()[0] in "ZX":
                        break
                except (OSError, IndexError):
                    break
                time.sleep(0.05)
            with open(results, "w") as f:
                json.dump({"score": 100.0, "tests": []}, f)
        os._exit(0)
    return 7.0, W * 0 + 7, b * 0 + 7
'''


def test_without_namespaces_a_daemon_cannot_rewrite_the_results(mode):
    # the results are read 2 s after the grader ended: a daemon that survived it has
    # rewritten them by then (it waits for the grader to end)
    run = grade(attack(REWRITE_RESULTS), mode, config=NO_NAMESPACES, linger=2)
    assert_contained(run, "wrong")
    assert run.results["score"] == 25.0


OUTLIVE_GROUP = '''
import ctypes, time

_right_two_layer_loss = two_layer_loss
_DAEMON_NAME = None


def softmax_loss(W, b, X, y, reg):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:   # orphaned, so adopted by the grader (its subreaper)
            if _DAEMON_NAME:
                ctypes.CDLL(None).prctl(15, _DAEMON_NAME, 0, 0, 0)  # PR_SET_NAME
            with open("daemon.pid", "w") as f:
                f.write(str(os.getpid()))
            time.sleep(30)
        os._exit(0)
    time.sleep(0.05)
    return 7.0, W * 0 + 7, b * 0 + 7


def two_layer_loss(*args):   # the control answers right only once no daemon is left
    try:
        pid = int(open("daemon.pid").read())
        state = open(f"/proc/{pid}/stat", "rb").read().rsplit(b")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return _right_two_layer_loss(*args)
    if state in (b"Z", b"X"):  # killed, not yet reaped (by the namespace's init, or the worker)
        return _right_two_layer_loss(*args)
    raise RuntimeError("a daemon of exercise 1 is still alive")
'''


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no-namespaces"])
def test_no_process_of_one_exercise_outlives_it(mode, namespaces):
    # left alive, such daemons hold the uid's process limit: as an ordinary user without
    # namespaces (the grader's own threads count too), the next exercise's first test then
    # timed out on some runs of the daemon attack above
    run = grade(attack(OUTLIVE_GROUP), mode, config=CONFIG if namespaces else NO_NAMESPACES)
    assert_contained(run, "wrong")


STOP_THE_WORKERS_KILL = '''
import sys, threading

_patched = []


def _patch():
    """A thread left in the worker (which forks each group of tests) finds the worker's
    kill of what a group left and makes it do nothing."""
    main = threading.main_thread().ident
    for _ in range(4000):
        f = sys._current_frames().get(main)
        while f is not None:
            kill = f.f_locals.get("kill_others") if f.f_code.co_name == "main" else None
            if kill is not None:
                cells = dict(zip(kill.__code__.co_freevars, kill.__closure__))
                cells["_kill"].cell_contents = lambda *a: None
                cells["isolated"].cell_contents = False
                _patched.append(True)
                return
            f = f.f_back
        time.sleep(0.005)


threading.Thread(target=_patch, daemon=True).start()
'''


# a daemon may name itself with bytes that are not UTF-8: a grader that read /proc/PID/status
# as text skipped it (a decode error), so it neither killed it nor saw its uid as busy
DAEMON_NAMES = {"plain": None, "not-utf8": b"\xff\xfe"}


def _daemon_named(body, name):
    return body.replace("_DAEMON_NAME = None", f"_DAEMON_NAME = {DAEMON_NAMES[name]!r}")


@pytest.mark.parametrize("name", DAEMON_NAMES)
def test_the_grader_kills_what_a_group_left_even_if_the_worker_does_not(mode, name):
    """With namespaces the worker's ``kill_others`` kills a group's leftovers inside the
    namespace, but the worker runs the submission: the grader kills them too."""
    body = _daemon_named(OUTLIVE_GROUP, name).replace("_right_two_layer_loss = two_layer_loss",
                                 STOP_THE_WORKERS_KILL + "_right_two_layer_loss = two_layer_loss")
    # (printed by exercise 2, forked after the patch)
    body = body.replace("def two_layer_loss(*args):", "def two_layer_loss(*args):\n"
                        "    print('PATCHED', _patched)")
    run = grade(attack(body), mode)
    assert "PATCHED [True]" in run.results["output"], run.results["output"][-3000:]
    assert_contained(run, "wrong")


@pytest.mark.parametrize("name", DAEMON_NAMES)
def test_without_namespaces_a_subreaper_worker_does_not_keep_a_groups_daemon(mode, name):
    """Without namespaces the orphans of a group come to the grader (its subreaper) unless
    the worker makes itself one; with the worker's own kill stopped, a daemon then lived
    on.  A root grader kills every process of the child's uid but the worker (what is
    left is a zombie the worker does not reap: a process slot of its own)."""
    if mode == "user":
        pytest.skip("an ordinary user's grader without namespaces shares its uid with the "
                    "child: no security boundary (SECURITY.md)")
    body = _daemon_named(OUTLIVE_GROUP, name).replace(
        "_right_two_layer_loss = two_layer_loss", STOP_THE_WORKERS_KILL + "import ctypes\n"
        "print('SUBREAPER', ctypes.CDLL(None).prctl(36, 1, 0, 0, 0))\n"
        "_right_two_layer_loss = two_layer_loss")
    body = body.replace("def two_layer_loss(*args):", "def two_layer_loss(*args):\n"
                        "    print('PATCHED', _patched)")
    run = grade(attack(body), mode, config=NO_NAMESPACES)
    out = run.results["output"]
    assert "SUBREAPER 0" in out and "PATCHED [True]" in out, out[-3000:]
    assert_contained(run, "wrong")


NESTED_USER_NAMESPACE = '''
import ctypes, threading

_libc = ctypes.CDLL(None, use_errno=True)
print("NEWUSER", _libc.unshare(0x10000000), ctypes.get_errno())  # CLONE_NEWUSER
_ran = []
_t = threading.Thread(target=lambda: _ran.append(1))  # threads (clone3 refused: clone)
_t.start()
_t.join()
_pid = os.fork()
if _pid == 0:
    os._exit(7)
print("THREAD", _ran, "FORK", os.waitpid(_pid, 0)[1] >> 8)


def softmax_loss(W, b, X, y, reg):
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.parametrize("config", [CONFIG, NO_NAMESPACES], ids=["namespaces", "no-namespaces"])
def test_the_submission_cannot_make_a_user_namespace(mode, config):
    """In a user namespace of its own a submission made network namespaces whose kernel
    memory the memory cgroup only partly counts (1.8 GB against a limit of 896 MB) and IPC
    namespaces without the System V caps; a seccomp filter refuses CLONE_NEWUSER."""
    run = grade(attack(NESTED_USER_NAMESPACE), mode, config=config)
    assert_contained(run, "wrong")
    notes = "\n".join(run.results["extra_data"]["sandbox"])
    assert "user namespaces: the submission cannot make any (seccomp)" in notes, notes
    out = run.results["output"]
    assert "NEWUSER -1 1" in out and "THREAD [1] FORK 7" in out, out[-3000:]


KEYRINGS_AND_I386 = '''
import ctypes

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_buf = ctypes.create_string_buffer(512)
_n = _libc.syscall(250, 6, ctypes.c_long(-3), _buf, 512)  # KEYCTL_DESCRIBE, the session keyring
print("SESSION", _n, ctypes.get_errno(), _buf.value.decode(errors="replace"))
_k = _libc.syscall(248, b"user", b"BPCHECK-ATTACK-key", b"x", 1, ctypes.c_long(-4))  # add_key
print("ADD_KEY", _k, ctypes.get_errno())
try:
    _keys = open("/proc/keys").read()
except OSError:
    _keys = ""
print("SECRET SEEN", "BPCHECK-ATTACK-secret" in _keys)
# unshare(CLONE_NEWUSER) through the i386 ABI (int 0x80: eax = 310, ebx = the flags)
_code = bytes([0xB8, 0x36, 0x01, 0, 0, 0xBB, 0, 0, 0, 0x10, 0xCD, 0x80, 0xC3])
_libc.mmap.restype = ctypes.c_void_p  # (the mmap module: unreadable to some child uids)
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_at = _libc.mmap(None, 4096, 7, 0x22, -1, 0)  # read, write, exec; private, anonymous
ctypes.memmove(_at, _code, len(_code))
print("I386_UNSHARE", ctypes.CFUNCTYPE(ctypes.c_int)(_at)())


def softmax_loss(W, b, X, y, reg):
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 system call numbers")
@pytest.mark.parametrize("config", [CONFIG, NO_NAMESPACES], ids=["namespaces", "no-namespaces"])
def test_keyrings_and_other_system_call_abis_are_closed(mode, config):
    """Keyrings are not namespaced, and a uid's keyring outlives its processes: a
    submission left hidden tests' inputs there for the next one graded with the same uid,
    and read and wrote the grader's own session keyring (kept across the privilege drop).
    The child joins a new session keyring and the seccomp filter refuses ``add_key``,
    ``request_key`` and ``keyctl``; system calls of the i386 ABI (``int 0x80``), through
    which a submission made a user namespace past the filter, fail with ENOSYS.  The
    grader runs here in a session keyring of its own holding a secret, as under
    ``pam_keyinit`` or a systemd service."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    assert libc.syscall(250, 1, b"bpcheck-test-session") > 0  # KEYCTL_JOIN_SESSION_KEYRING
    secret = libc.syscall(248, b"user", b"BPCHECK-ATTACK-secret", b"TOKEN", 5, ctypes.c_long(-3))
    assert secret > 0
    run = grade(attack(KEYRINGS_AND_I386), mode, config=config)
    assert_contained(run, "wrong")
    out = run.results["output"]
    assert "SESSION -1 1 " in out and "ADD_KEY -1 1" in out, out[-3000:]
    assert "SECRET SEEN False" in out and "I386_UNSHARE -38" in out, out[-3000:]
    keys = ctypes.create_string_buffer(4096)  # the grader's session keyring: the secret alone
    n = libc.syscall(250, 11, ctypes.c_long(-3), keys, 4096)  # KEYCTL_READ
    assert n == 4, n


CPU_HOG = '''
import time

_t0 = time.monotonic()
_pids = []
for _ in range(3):  # three busy processes of 1.5 s each
    _pid = os.fork()
    if _pid == 0:
        _end = time.monotonic() + 1.5
        while time.monotonic() < _end:
            pass
        os._exit(0)
    _pids.append(_pid)
for _pid in _pids:
    os.waitpid(_pid, 0)
_t = os.times()
print("CPU PER WALL %.2f" % ((_t.children_user + _t.children_system) / (time.monotonic() - _t0)))


def softmax_loss(W, b, X, y, reg):
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: a cap of one CPU is no cap")
def test_the_childs_processes_together_get_one_cpu(mode):
    """``RLIMIT_CPU`` bounds each process, and deadlines are wall-clock time: under
    ``grade-batch --jobs 2`` a submission's 14 busy processes made a correct batch-mate
    miss its deadlines (6 / 10 instead of 10 / 10).  As root the child's processes are in
    a cpu cgroup of one CPU (three busy ones got about 1 CPU-second per second, 2 without
    it on an idle two-core machine); an ordinary user's grader, or a root one where no
    cgroup can be made, says it has none."""
    run = grade(attack(CPU_HOG), mode)
    assert_contained(run, "wrong")
    notes = "\n".join(run.results["extra_data"]["sandbox"])
    out = run.results["output"]
    rate = float(out.split("CPU PER WALL ")[1].split()[0])
    if mode == "user" or "memory: a cgroup" not in notes:  # (where none can be made)
        assert "cpu: no cgroup" in notes, notes
        return
    assert "cpu: a cgroup gives the child's processes one CPU in all" in notes, notes
    assert rate < 1.3, (rate, out[-2000:])


def test_a_v2_cpu_limit_is_not_claimed_when_its_memory_cgroup_refused_the_child(tmp_path):
    """Under cgroup v2 one folder holds the memory and the cpu limits: a child that could
    not join it has neither, and its notes say so for both."""
    from bpcheck.grade.child import jail

    gone = str(tmp_path / "removed-cgroup")  # joining it fails (no such folder)
    for plan in ({"cgroup": gone, "cpu_cgroup": gone, "cgroup_mb": 896},
                 {"cgroup": gone, "cpu_cgroup": str(tmp_path / "another"), "cgroup_mb": 896}):
        notes = []
        jail.join_cpu_cgroup(plan, notes, jail.join_cgroup(plan, notes))
        assert notes[0].startswith("memory: the cgroup refused the child"), notes
        assert notes[1].startswith("cpu: no cgroup"), notes
    cgroup = tmp_path / "joinable"  # (a plain file stands in for cgroup.procs: the write works)
    cgroup.mkdir()
    (cgroup / "cgroup.procs").write_text("")
    notes = []
    plan = {"cgroup": str(cgroup), "cpu_cgroup": str(cgroup), "cgroup_mb": 896}
    jail.join_cpu_cgroup(plan, notes, jail.join_cgroup(plan, notes))
    assert notes[0].startswith("memory: a cgroup holds") and notes[1].startswith("cpu: a cgroup"), notes


# ------------------------------------------------------------- 7. the autodiff ban

def _fake_autodiff_library(root: Path) -> Path:
    """A forbidden top-level name ('autograd') outside every temporary folder, holding a
    working solution: what importing an installed autodiff library would give."""
    lib = root / "autograd"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "__init__.py").write_text(CORRECT)
    os.chmod(root, 0o755)
    return root


def test_removing_the_import_blocker_does_not_reach_an_autodiff_library(mode, request):
    cache = getattr(request.config, "cache", None)
    if cache is None:  # (pytest -p no:cacheprovider)
        pytest.skip("needs pytest's cache directory: a folder outside every temporary one")
    root = _fake_autodiff_library(Path(cache.mkdir("attack-lib")))
    run = grade(attack(f'''
import sys, importlib


def softmax_loss(W, b, X, y, reg):
    sys.meta_path[:] = [f for f in sys.meta_path if "Blocker" not in type(f).__name__]
    sys.path.insert(0, {str(root)!r})
    lib = importlib.import_module("auto" + "grad")
    for name in [n for n in sys.modules if n.startswith("auto")]:
        del sys.modules[name]
    return lib.softmax_loss(W, b, X, y, reg)
'''), mode)
    assert_contained(run, "ModuleNotFoundError", "not allowed")


# ------------------------------------------------------------- 8. smaller leaks

SEED = 987654321
READ_SEED = '''
def softmax_loss(W, b, X, y, reg):
    for pid in _ancestors():
        for what in ("cmdline", "environ"):
            try:
                print(what, pid, open(f"/proc/{pid}/{what}", "rb").read().replace(b"\\0", b" "))
            except OSError as err:
                print(what, pid, type(err).__name__)
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.parametrize("config", [HIDDEN_LAST, HIDDEN_LAST + "namespaces = false\n"],
                         ids=["namespaces", "no-namespaces"])
def test_the_seed_is_nowhere_the_child_can_read(mode, config):
    run = grade(attack(READ_SEED), mode, config=config, seed=SEED)
    assert_contained(run, "wrong")
    assert "cmdline" in run.results["output"]  # the attack ran and printed
    assert str(SEED) not in run.results["output"]


@pytest.mark.parametrize("spelling", [["--seed", f"000{SEED}"], [f"--seed=+{SEED}"],
                                      ["--see", str(SEED)], [f"--se={SEED}"]])
def test_the_seed_is_hidden_however_the_command_line_spells_it(mode, spelling):
    """argparse reads leading zeros, a sign and abbreviated options; only "--seed N" and
    "--seed=N" were hidden, so without namespaces the child read the others."""
    run = grade(attack(READ_SEED), mode, config=HIDDEN_LAST + "namespaces = false\n",
                seed_args=spelling)
    assert_contained(run, "wrong")
    assert "cmdline" in run.results["output"]
    assert str(SEED) not in run.results["output"]
    assert run.results["extra_data"]["seed"] == SEED


DEEP_TREE = '''
def softmax_loss(W, b, X, y, reg):
    start = os.getcwd()
    os.makedirs("locked/inner")
    open("locked/inner/f", "w").close()
    os.chmod("locked/inner", 0)
    os.chmod("locked", 0o100)
    try:
        for _ in range(1500):  # deeper than Python's recursion limit, and than PATH_MAX
            os.mkdir("d" * 40)
            os.chdir("d" * 40)
    finally:
        os.chdir(start)
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.parametrize("config", [CONFIG, NO_NAMESPACES], ids=["namespaces", "no-namespaces"])
def test_a_folder_tree_deeper_than_the_recursion_limit_is_removed(mode, config):
    """A child's 1200 nested folders made os.walk and shutil.rmtree raise RecursionError in
    the grader's clean-up: the grader failed, left the folder, and every later grader of
    the machine failed removing it."""
    run = grade(attack(DEEP_TREE), mode, config=config)
    assert_contained(run, "wrong")


FORGED_LOADED = '''
_send(_frame({"kind": "loaded", "error": None, "missing": [], "forbidden": [],
              "cell_errors": ["regraded by the TA: full marks",
                              "cell 1 raised nothing; regraded by the TA"]}))


def softmax_loss(W, b, X, y, reg):
    return 7.0, W * 0 + 7, b * 0 + 7
'''


def test_a_loaded_frame_written_by_the_submission_adds_no_note(mode):
    """A .py submission wrote its own "loaded" frame while loading, read first: its
    cell_errors were shown as the grader's notes."""
    run = grade(attack(FORGED_LOADED), mode)
    assert_contained(run, "wrong")
    assert "regraded" not in str(run.results), run.results["output"][:3000]


LEADER_GONE_AT_EXIT = '''
import ctypes, threading, time

_real_exit = os._exit


def _daemon():
    def run():
        time.sleep(0.2)
        for fd in range(256):  # the grader's output readers see the end of their pipes
            try:
                os.close(fd)
            except OSError:
                pass
        time.sleep(60)
        _real_exit(0)
    threading.Thread(target=run).start()
    ctypes.CDLL(None).syscall(60, 0)  # SYS_exit: the main thread alone; /proc says Z


def _late_exit(code):
    try:
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                _daemon()
            _real_exit(0)
    finally:
        _real_exit(code)


def _repatch():  # the harness restores module attributes after loading: patch again
    while True:
        os._exit = _late_exit
        time.sleep(0.001)


threading.Thread(target=_repatch, daemon=True).start()


def softmax_loss(W, b, X, y, reg):
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="SYS_exit is 60 on x86_64 only")
def test_a_process_made_at_the_childs_exit_with_its_main_thread_gone_is_killed(mode):
    """A thread patched os._exit again after each restore, so the worker's last call made
    a process whose main thread had exited (State Z in /proc, its other thread running):
    every kill skipped it, it outlived the grader, and holding the output pipe it could
    stall the grade for as long as it liked."""
    run = grade(attack(LEADER_GONE_AT_EXIT), mode, config=NO_NAMESPACES)
    assert_contained(run, "wrong")


LATE_FLUSH = '''
import sys, threading, time


class _Late:
    def write(self, text):
        return len(text)

    def flush(self):  # run by the worker's exit, after its last kill of the child's processes
        with open(f"/tmp/{MARKER}-late-flush-{os.getpid()}", "w") as f:
            f.write("ran")


def _keep():  # the harness restores sys after each group: set it again
    while True:
        sys.stdout = _Late()
        time.sleep(0.001)


threading.Thread(target=_keep, daemon=True).start()


def softmax_loss(W, b, X, y, reg):
    return 7.0, W * 0 + 7, b * 0 + 7
'''.replace("{MARKER}", MARKER)


def test_the_workers_exit_runs_no_code_of_the_submission(mode):
    """The worker flushed sys.stdout as it found it at exit: a stream a thread of the
    submission set again ran its code after the worker's last kill of the child's
    processes (the same door as a patched os._exit)."""
    run = grade(attack(LATE_FLUSH), mode, config=NO_NAMESPACES)
    assert not [f for f in run.left.files if "late-flush" in f], run.left.files
    assert_contained(run, "wrong")


def test_control_characters_never_reach_the_csv(mode, tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "evil.py").write_text('raise ValueError("\\x1b[31m\\rFAKE,100,100\\x07\\x00")\n')
    run = grade(folder, mode, batch=True)
    assert run.code == 0 and run.csv is not None, run.stderr[-2000:]
    body = run.csv.replace("\r\n", "\n")
    assert not any(ord(c) < 32 and c != "\n" for c in body), repr(run.csv)
    assert len(body.splitlines()) == 2, repr(run.csv)


READ_MEMORY = '''
def softmax_loss(W, b, X, y, reg):
    found, seen = False, []
    for pid in _ancestors():   # the grader's writable memory, for the seed's digits
        try:
            if b"--results" not in open(f"/proc/{pid}/cmdline", "rb").read():
                raise LookupError("not the grader")
            with open(f"/proc/{pid}/mem", "rb", 0) as mem:
                for line in open(f"/proc/{pid}/maps"):
                    parts = line.split()
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    if parts[1].startswith("rw") and hi - lo < (256 << 20):
                        try:
                            mem.seek(lo)
                            found |= SEED_TEXT in mem.read(hi - lo)
                        except OSError:
                            pass
            seen.append(f"{pid}: read")
        except (OSError, LookupError) as err:
            seen.append(f"{pid}: {type(err).__name__}")
    print("memory", "SEED FOUND" if found else "seed not found", seen)
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.parametrize("config", [HIDDEN_LAST, HIDDEN_LAST + "namespaces = false\n"],
                         ids=["namespaces", "no-namespaces"])
def test_the_graders_memory_is_closed_to_the_child(mode, config):
    # with the grader's uid and no namespaces the child read the seed (and could have
    # rewritten the scores) through /proc/<grader>/mem until the grader made itself not
    # dumpable
    run = grade(attack(READ_MEMORY.replace("SEED_TEXT", repr(str(SEED).encode()))), mode,
                config=config, seed=SEED)
    assert_contained(run, "wrong")
    assert "memory" in run.results["output"]  # the attack ran and printed
    assert "SEED FOUND" not in run.results["output"], run.results["output"][-2000:]
    # and the report says when the mode is no boundary at all (signals, files)
    weak = mode == "user" and "namespaces = false" in config
    notes = " ".join(run.results["extra_data"]["sandbox"])
    assert ("not a security boundary" in notes) == weak, notes


MAKE_FIFO = '''
def softmax_loss(W, b, X, y, reg):
    pid = os.getpid()
    for _ in range(10):   # the grader's --csv, made a FIFO that open() would wait on
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
            if b"--csv" in args:
                where = os.readlink(f"/proc/{pid}/cwd")
                os.mkfifo(os.path.join(where, args[args.index(b"--csv") + 1].decode()))
                print("made a FIFO")
                break
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError) as err:
            print("no FIFO:", err)
            break
    return 7.0, W * 0 + 7, b * 0 + 7
'''


def test_a_fifo_at_the_csv_path_does_not_stall_the_batch(mode, tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "a_fifo.py").write_text(attack(MAKE_FIFO))
    (folder / "b_correct.py").write_text(CORRECT)
    run = grade(folder, mode, config=NO_NAMESPACES, batch=True, timeout=120)
    assert run.code == 0 and run.csv is not None, run.stderr[-2000:]
    assert len(run.csv.replace("\r\n", "\n").splitlines()) == 3, repr(run.csv)


LOCKED_FOLDER = '''
def softmax_loss(W, b, X, y, reg):
    os.makedirs("BPCHECK-ATTACK-trap/inner", exist_ok=True)
    open("BPCHECK-ATTACK-trap/inner/f", "w").close()
    os.chmod("BPCHECK-ATTACK-trap", 0)   # rmtree cannot enter it
    return 7.0, W * 0 + 7, b * 0 + 7
'''


@pytest.mark.parametrize("config", [CONFIG, NO_NAMESPACES], ids=["namespaces", "no-namespaces"])
def test_a_folder_of_mode_000_is_removed_too(mode, config):
    run = grade(attack(LOCKED_FOLDER), mode, config=config)
    assert_contained(run, "wrong")  # and nothing left in the grader's temporary folder


def test_the_file_picker_does_bounded_work(mode, tmp_path):
    folder = tmp_path / "upload"
    folder.mkdir()
    filler = "x = 1\n" * (330_000)  # just under 2 MB, and slow to parse
    for i in range(24):
        (folder / f"scratch{i:02d}.py").write_text(filler)
    (folder / "zz_solution.py").write_text(CORRECT)
    run = grade(folder, mode)
    assert run.code == 0 and run.seconds < BUDGET_S and run.peak_mb < PEAK_MB, \
        (run.seconds, run.peak_mb, run.stderr[-2000:])
    assert run.results_bytes < RESULTS_MAX and not run.left


def test_complex_and_structured_results_are_a_wrong_dtype(mode):
    run = grade(attack('''
import numpy as np


def softmax_loss(W, b, X, y, reg):
    rec = np.zeros(b.shape, dtype=[("re", "f8"), ("im", "f8")])
    return 1.0, W.astype(complex), rec
'''), mode)
    assert_contained(run, "expected dtype float64")
    text = run.text(1)
    assert "complex128" in text and "corrupted" not in text, text[:2000]


def test_cell_magic_bodies_in_a_notebook_are_not_run_as_python(mode, tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CORRECT),
                nbformat.v4.new_code_cell("%%writefile notes.py\n"
                                          "def softmax_loss(W, b, X, y, reg):\n"
                                          "    return 7.0, W * 0 + 7, b * 0 + 7\n"),
                nbformat.v4.new_code_cell("%%bash\nsoftmax_loss = None\necho done\n")]
    path = tmp_path / "hw.ipynb"
    nbformat.write(nb, str(path))
    run = grade(path, mode)
    assert run.code == 0 and not run.left
    assert full_marks(run, 1), run.text(1)[:2000]


# ------------------------------------------------------------- red team: from the code
# Attacks written after the fixes, by reading the sandbox's own source.

ESCAPE = f'''
import ctypes, sys

_HOST = [{str(REPO / "pyproject.toml")!r}, "/etc/passwd", "/home"]

_libc = ctypes.CDLL(None, use_errno=True)


def softmax_loss(W, b, X, y, reg):
    # 1. a descriptor on a host folder would let openat() walk out of the view
    for fd in range(0, 64):
        try:
            target = os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:
            continue
        if target.startswith("/") and target not in ("/dev/null",):
            print("FD", fd, target)
    # 2. a user namespace of its own, to unmount the empty folder over site-packages
    site = os.path.join(os.path.dirname(os.__file__), "site-packages")
    if _libc.unshare(0x10000000 | 0x00020000) == 0:
        _libc.umount2(site.encode(), 2)
        try:
            print("SITE", os.listdir(site))
        except OSError as err:
            print("SITE", type(err).__name__)
        try:
            os.chroot(site)  # 3. the chroot escape, with the namespace's capabilities
            for _ in range(32):
                os.chdir("..")
            os.chroot(".")
            print("ESCAPED", [p for p in _HOST if os.path.exists(p)])
        except OSError as err:
            print("CHROOT", type(err).__name__)
    else:
        print("UNSHARE refused", ctypes.get_errno())
    return 7.0, W * 0 + 7, b * 0 + 7
'''


def test_no_descriptor_namespace_or_chroot_trick_leaves_the_view(mode):
    run = grade(attack(ESCAPE), mode)
    assert_contained(run, "wrong")
    out = run.results["output"]
    if "without namespaces" in "\n".join(run.results["extra_data"]["sandbox"]):
        pytest.skip("no namespaces on this machine: the view is the host's")
    assert "FD " not in out and "ESCAPED [\'" not in out, out[-3000:]
    assert "SITE []" in out or "SITE FileNotFoundError" in out or "UNSHARE refused" in out, \
        out[-3000:]


def test_a_fork_bomb_is_capped_and_nothing_survives_it(mode):
    run = grade(attack('''
def softmax_loss(W, b, X, y, reg):
    while True:
        try:
            os.fork()
        except OSError:
            pass
'''), mode)
    assert_contained(run, "time limit", "channel", "exited", "killed")


def test_a_flood_of_frames_is_cut_at_the_results_limit(mode):
    run = grade(attack('''
def softmax_loss(W, b, X, y, reg):
    junk = _frame({"kind": "test", "test": 77, "meta": {}}, b"x" * (4 << 20))
    for _ in range(40):   # 160 MB of frames for a test that does not exist
        _send(junk)
    return 7.0, W * 0 + 7, b * 0 + 7
'''), mode, config=CONFIG.replace("restarts = 1", "restarts = 1\nresult_mb = 32"))
    assert_contained(run, "more than 32 MB of results")


CHECK_PIPE_PROBE = """
import os, sys
from bpcheck.grade.sandbox import start_limited

def slow(seconds):
    import time
    time.sleep(seconds)
    return "check"

work = start_limited(slow, 20, seconds=30, memory_mb=256)
fds = []
import time
for _ in range(100):  # the forked copy's descriptors, once it has made itself non-dumpable
    try:
        fds = os.listdir(f"/proc/{work.pid}/fd")
    except OSError as err:
        print("LISTDIR", type(err).__name__)
        break
    time.sleep(0.02)
else:
    print("LISTED", fds)
for n in range(3, 64):  # what a child with the grader's uid would try: write a forged result
    try:
        os.open(f"/proc/{work.pid}/fd/{n}", os.O_WRONLY)
        print("OPENED", n)
    except OSError:
        pass
work.cancel()
print("DONE")
"""


def test_a_process_with_the_graders_uid_cannot_reach_a_running_checks_result_pipe():
    # the symbolic check now runs while the child does; as an ordinary user without
    # namespaces the child has the grader's uid, and /proc/<check>/fd would hand it the
    # check's result pipe if the check were dumpable
    problem = mode_problem("user")
    if problem:
        pytest.skip(f"grader as user: {problem}")
    from attacks import _as_user, user_python

    import subprocess

    out = subprocess.run(_as_user(["env", "-i", "PATH=/usr/bin:/bin", user_python(), "-c",
                                   CHECK_PIPE_PROBE]),
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert "DONE" in out.stdout, out.stderr
    assert "OPENED" not in out.stdout and "LISTED" not in out.stdout, out.stdout
    assert "LISTDIR PermissionError" in out.stdout


# ------------------------------------------------- a classmate's submission in a batch

COPIER = '''
import os, time

_box = os.path.dirname(os.path.abspath(__file__))
_stolen = {}
_deadline = time.time() + 6
while time.time() < _deadline and not _stolen:  # a classmate graded beside this one
    for name in os.listdir(os.path.dirname(_box)):
        other = os.path.join(os.path.dirname(_box), name)
        if not name.startswith("bpcheck-grade-") or other == _box:
            continue
        try:
            source = open(os.path.join(other, "submission.py")).read()
        except OSError:
            continue
        print("READ", other, flush=True)
        exec(compile(source, "classmate", "exec"), _stolen)
        break
    time.sleep(0.01)


def softmax_loss(W, b, X, y, reg):
    if "softmax_loss" in _stolen:
        return _stolen["softmax_loss"](W, b, X, y, reg)
    return 0.0, W * 0, b * 0
'''


def test_without_namespaces_a_batch_mate_cannot_read_a_classmates_submission(tmp_path):
    """``grade-batch --jobs 2`` with ``namespaces = false`` (as under Docker's default
    seccomp profile): a root grader's children have uids of their own, and each scratch
    folder was world-readable, so a wrong submission read a correct one graded beside it
    and answered with it (full marks, three runs of three).  The folder is now root's and
    entered by its own child's group alone."""
    problem = mode_problem("root")
    if problem:
        pytest.skip(f"grader as root: {problem}")
    import subprocess
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="bpcheck-attack-"))
    try:
        batch = work / "batch"
        batch.mkdir()
        (batch / "a_copier.py").write_text(COPIER)
        for name in ("b_correct.py", "c_correct.py", "d_correct.py"):
            (batch / name).write_text(CORRECT)
        config = work / "grading.toml"
        config.write_text("[exercises.2]\npoints = 0\n" + NO_NAMESPACES)  # exercise 1 alone
        tmp = work / "tmp"
        tmp.mkdir()
        for folder in (work, tmp):  # (the children's uids pass through to their boxes)
            os.chmod(folder, 0o755)
        csv_path = work / "grades.csv"
        run = subprocess.run(
            [sys.executable, "-m", "bpcheck", "grade-batch", str(batch), "--jobs", "2",
             "--config", str(config), "--csv", str(csv_path), "--seed", "3"],
            capture_output=True, text=True, timeout=240, cwd=work,
            env={**os.environ, "TMPDIR": str(tmp)})
        assert run.returncode == 0, run.stderr[-3000:]
        rows = {row["submission"].rsplit("/", 1)[-1]: row
                for row in csv.DictReader(io.StringIO(csv_path.read_text()))}
        marks = [float(rows[name]["exercise_1"]) for name in ("b_correct.py", "c_correct.py",
                                                               "d_correct.py")]
        assert min(marks) == max(marks) > 0, rows  # the children still run, graded alike
        assert float(rows["a_copier.py"]["exercise_1"]) < marks[0], rows["a_copier.py"]
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
