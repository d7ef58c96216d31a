"""A grader killed with SIGKILL (no clean-up of its own) takes the submission with it, and
the next grader removes what it left (its child folder; as root, its memory cgroup).

The submission forks a daemon at load time (a new session, sleeping) and then sleeps in
its load, so that the grader is waiting on it when the test kills the grader.  Every
process below the grader then must end: the harness asks the kernel to kill it when the
grader ends (``PR_SET_PDEATHSIG``), and with it go the namespace's init and every process
of the namespace.  Run as root and as an ordinary user (see :mod:`attacks`), with
namespaces (without them, a daemon the submission made survives: SECURITY.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from attacks import CHILD_UID, CORRECT, CORRECT_PATH, IS_ROOT, TEST_UID, _as_user, mode_problem, \
    user_python

from bpcheck.grade import sandbox

CONFIG = """\
[exercises.3]
points = 0
[exercises.4]
points = 0
[sandbox]
load_timeout_s = 60
test_timeout_s = 5
memory_mb = 768
"""

SLEEPER = CORRECT + textwrap.dedent("""

    import os as _os
    import time as _time

    if _os.fork() == 0:  # a daemon of its own session, for as long as it can
        _os.setsid()
        while True:
            _time.sleep(1)
    _time.sleep(45)  # the load waits; the grader is killed meanwhile
""")


def _started(pid):
    """``(start time, state)`` of process ``pid``, or ``None`` when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19]), fields[0]


def _descendants(root):
    """``{pid: start time}`` of every process below ``root``."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            seen = _started(pid)
            if seen is not None:
                found[pid] = seen[0]
                todo.append(pid)
    return found


def _alive(processes):
    """Those of ``{pid: start time}`` still running (a zombie has ended)."""
    out = []
    for pid, start in processes.items():
        now = _started(pid)
        if now is not None and now[0] == start and now[1] != "Z":
            out.append(pid)
    return out


def _still_alive(processes):
    """Those of ``{pid: start time}`` still running 10 s on (killed then, not to spill into
    other tests)."""
    left = _alive(processes)
    for _ in range(100):
        if not left:
            break
        time.sleep(0.1)
        left = _alive(processes)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.fixture(params=["root", "user"])
def mode(request):
    problem = mode_problem(request.param)
    if problem:
        pytest.skip(f"grader as {request.param}: {problem}")
    return request.param


def _grader(work, submission, mode, namespaces=True):
    """Start ``bpcheck grade`` on ``submission`` with ``work/tmp`` as its TMPDIR."""
    config = CONFIG + (f"uid = {CHILD_UID}\n" if mode == "root" else "") + \
        ("" if namespaces else "namespaces = false\n")
    (work / "grading.toml").write_text(config)
    sub = work / "submission.py"
    sub.write_text(submission)
    for path in (work, work / "tmp", work / "out"):
        path.mkdir(exist_ok=True)
        os.chmod(path, 0o755)
        if mode == "user" and IS_ROOT:
            os.chown(path, TEST_UID, TEST_UID)
    for path in (sub, work / "grading.toml"):
        os.chmod(path, 0o644)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(work / "tmp"),
           "HOME": str(work), "LANG": "C.UTF-8"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    python = user_python() if mode == "user" else sys.executable
    cmd = [python, "-m", "bpcheck", "grade", str(sub), "--quiet", "--config",
           str(work / "grading.toml"), "--results", str(work / "out" / "results.json")]
    if mode == "user" and IS_ROOT:
        cmd = _as_user(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd])
    with open(work / "grader.log", "w") as log:  # (no pipe that survivors could hold)
        return subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)


def _stale_cgroups(pid):
    """The memory cgroups named after grader ``pid`` (``bpcheck-grade-PID-...``)."""
    found = []
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory"):
        for root, dirs, _ in os.walk(base):
            found += [os.path.join(root, d) for d in dirs
                      if d.startswith(f"bpcheck-grade-{pid}-")]
            if root.count("/") > 8:
                dirs.clear()
    return found


def test_a_grader_killed_with_sigkill_takes_the_submission_with_it_and_the_next_cleans_up(mode):
    work = Path(tempfile.mkdtemp(prefix="bpcheck-killed-"))
    try:
        grader = _grader(work, SLEEPER, mode)
        below = {}
        deadline = time.monotonic() + 40
        # keeper, init, worker and the daemon (setpriv and env exec in place; the grader's
        # own threads are not processes)
        while len(below) < 4 and time.monotonic() < deadline and grader.poll() is None:
            time.sleep(0.2)
            below = _descendants(grader.pid)
        assert grader.poll() is None, (work / "grader.log").read_text()
        if len(below) < 4:  # the worker and the daemon only: no namespaces here
            for pid in below:
                os.kill(pid, signal.SIGKILL)
            grader.kill()
            grader.wait()
            pytest.skip(f"the child runs without namespaces here ({len(below)} processes)")
        time.sleep(0.5)
        below = _descendants(grader.pid)
        os.kill(grader.pid, signal.SIGKILL)
        grader.wait()
        left = _still_alive(below)
        assert not left, f"alive after the grader was killed: {left} of {below}"
        boxes = [p for p in (work / "tmp").iterdir() if p.name.startswith("bpcheck-grade-")]
        assert boxes, "the killed grader left no child folder (nothing to test below)"
        cgroups = _stale_cgroups(grader.pid)

        # the next grader, same uid and TMPDIR: a correct submission, and no leftovers
        (work / "out" / "results.json").unlink(missing_ok=True)
        nxt = _grader(work, CORRECT_PATH.read_text(), mode)
        assert nxt.wait(timeout=240) == 0, (work / "grader.log").read_text()
        doc = json.loads((work / "out" / "results.json").read_text())
        assert doc["score"] > 0
        assert not [b for b in boxes if b.exists()], "the killed grader's folder is still there"
        assert not [c for c in cgroups if os.path.exists(c)], "its memory cgroup is still there"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_without_namespaces_the_worker_dies_with_the_grader_and_as_root_its_daemon_too(mode):
    """Without namespaces there is no init to take the submission's own processes with
    it: the worker dies with the grader (its parent-death signal set again after the
    privilege drop, which clears it), and a root grader's next run kills the daemon, which
    stayed in the killed grader's memory cgroup.  As an ordinary user the daemon lives on
    (SECURITY.md)."""
    work = Path(tempfile.mkdtemp(prefix="bpcheck-killed-"))
    below = {}
    try:
        grader = _grader(work, SLEEPER, mode, namespaces=False)
        deadline = time.monotonic() + 40
        while len(below) < 2 and time.monotonic() < deadline and grader.poll() is None:
            time.sleep(0.2)
            below = _descendants(grader.pid)
        assert len(below) == 2, (below, (work / "grader.log").read_text())
        time.sleep(1)  # past the privilege drop (the load sleeps after the fork)
        worker = [pid for pid in below if _descendants(pid)]
        assert len(worker) == 1, below
        cgroups = _stale_cgroups(grader.pid)
        os.kill(grader.pid, signal.SIGKILL)
        grader.wait()
        for _ in range(100):
            if not _alive({worker[0]: below[worker[0]]}):
                break
            time.sleep(0.1)
        assert not _alive({worker[0]: below[worker[0]]}), "the worker outlived the grader"
        if mode == "root" and cgroups:
            nxt = _grader(work, CORRECT_PATH.read_text(), mode, namespaces=False)
            assert nxt.wait(timeout=240) == 0, (work / "grader.log").read_text()
            assert not _alive(below), "the daemon outlived the next root grader"
            assert not [c for c in cgroups if os.path.exists(c)]
    finally:
        for pid in _alive(below):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="memory cgroups are made by a root grader only")
def test_a_stale_cgroups_processes_are_killed_and_a_live_graders_cgroup_is_kept():
    """The clean-up on its own: a cgroup named after a grader that has ended, with a
    process still in it, and one named after a grader that runs (this test)."""
    folder, why = sandbox.memory_cgroup(64)
    if folder is None:
        pytest.skip(f"no memory cgroup here: {why}")
    own = os.path.dirname(folder)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # a pid that ended
    stale = os.path.join(own, f"bpcheck-grade-{gone}-1-test")
    os.mkdir(stale)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(stale, "cgroup.procs"), "w") as f:
            f.write(str(sleeper.pid))
        second, _ = sandbox.memory_cgroup(64)  # cleans up below its own cgroup first
        try:
            assert sleeper.wait(timeout=5) == -signal.SIGKILL
            assert not os.path.exists(stale)
            assert os.path.exists(folder), "the cgroup of a running grader was removed"
        finally:
            sandbox.remove_cgroup(second)
    finally:
        sleeper.kill()
        sleeper.wait()
        if os.path.exists(stale):
            sandbox.remove_cgroup(stale)
        sandbox.remove_cgroup(folder)


def test_grade_batch_killed_with_sigkill_takes_its_workers_and_their_submissions_with_it(
        tmp_path):
    """``grade-batch``'s pool workers wait for work on a queue whose writing end they hold
    themselves: without a parent-death signal they outlived a batch killed with SIGKILL,
    grading on (and then idle for good).  Each now dies with the batch, and the
    submission it grades with it."""
    work = tmp_path
    subs = work / "subs"
    subs.mkdir()
    for name in ("a", "b"):  # each sleeps in its load while the batch is killed
        (subs / f"{name}.py").write_text(CORRECT + "\nimport time as _t\n_t.sleep(45)\n")
    (work / "tmp").mkdir()
    (work / "grading.toml").write_text(CONFIG)  # (as root each worker picks a uid)
    env = {**os.environ, "TMPDIR": str(work / "tmp")}
    with open(work / "batch.log", "w") as log:
        batch = subprocess.Popen(
            [sys.executable, "-m", "bpcheck", "grade-batch", str(subs), "--jobs", "2", "--csv",
             str(work / "grades.csv"), "--config", str(work / "grading.toml")],
            env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        below, deadline = {}, time.monotonic() + 60
        # two workers, each grading: at least one process of its child below it
        while time.monotonic() < deadline and batch.poll() is None:
            time.sleep(0.2)
            below = _descendants(batch.pid)
            grading = [pid for pid in below if _parent(pid) == batch.pid and _children(pid)]
            if len(grading) >= 2:  # (multiprocessing's resource tracker grades nothing)
                break
        else:
            pytest.fail(f"the batch never had two workers grading: {below}; "
                        + (work / "batch.log").read_text()[-2000:])
        time.sleep(0.5)
        below = _descendants(batch.pid)
        os.kill(batch.pid, signal.SIGKILL)
        batch.wait()
        left = _still_alive(below)
        assert not left, f"alive after grade-batch was killed: {left} of {below}"
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()


def _parent(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid):
    return list(_descendants(pid))


CHECKING_GRADER = """
import time
from bpcheck.grade import sandbox
work = sandbox.start_limited(time.sleep, 60, seconds=60, memory_mb=256)
print(work.pid, flush=True)
time.sleep(60)
"""


def test_a_grader_killed_with_sigkill_takes_its_running_checks_with_it():
    """The symbolic checks run in forked copies of the grader beside the child
    (``start_limited``): a grader killed with SIGKILL left them computing until their CPU
    limit; each now dies with it."""
    grader = subprocess.Popen([sys.executable, "-c", CHECKING_GRADER], stdout=subprocess.PIPE,
                              text=True)
    check = None
    try:
        check = int(grader.stdout.readline())
        started = _started(check)
        assert started is not None and started[1] != "Z"
        os.kill(grader.pid, signal.SIGKILL)
        grader.wait()
        assert not _still_alive({check: started[0]}), "the check outlived its grader"
    finally:
        grader.kill()
        grader.wait()
        grader.stdout.close()
        if check is not None and _started(check) is not None:
            os.kill(check, signal.SIGKILL)


LEADER_GONE = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(60,)).start()
time.sleep(0.2)
ctypes.CDLL(None).syscall(60, 0)  # SYS_exit (x86_64): the main thread alone ends
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="SYS_exit is 60 on x86_64 only")
def test_a_process_whose_main_thread_has_exited_is_alive_and_killed():
    """/proc shows such a process as a zombie (State Z) while its other thread runs: the
    grader's kills skipped it, and one made after the child's last kill outlived the grader,
    holding the child's output pipe open (the grade stalled for as long as it liked)."""
    spare = sandbox._children_of(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", LEADER_GONE])
    try:
        for _ in range(100):
            state = sandbox._processes().get(proc.pid, (0, ""))[1]
            if state == "Z":
                break
            time.sleep(0.05)
        assert state == "Z" and len(os.listdir(f"/proc/{proc.pid}/task")) == 2
        assert not sandbox._process_ended(proc.pid, state)
        sandbox._kill_tree(proc.pid, spare)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()


@pytest.mark.skipif(not IS_ROOT, reason="taking another uid needs root")
def test_every_process_of_the_childs_uid_is_killed_at_once():
    """A scan of /proc can be raced by a fork chain that changes its pid between the scan
    and the kill; kill(-1) from a process of the child's uid reaches every one at once."""
    procs = [subprocess.Popen(["sleep", "60"], user=CHILD_UID) for _ in range(3)]
    try:
        sandbox._kill_at_once(CHILD_UID)
        assert [p.wait(timeout=10) for p in procs] == [-signal.SIGKILL] * 3
    finally:
        for p in procs:
            p.kill()
