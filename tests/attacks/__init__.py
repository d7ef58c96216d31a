"""Run the grader on a hostile submission the way an instructor does, and inspect what it did.

The grader runs as a command (``bpcheck grade`` or ``bpcheck grade-batch``) in a process of
its own, in one of two modes:

- ``root``: the test process's own uid, when that is root (Gradescope's case); the
  children get a uid of this test run's own (``[sandbox] uid``);
- ``user``: an ordinary uid.  When the tests run as root, the grader is started with
  ``setpriv`` as a uid that exists for nothing else (its processes, IPC objects and files
  are then unmistakable); when the tests already run as an ordinary user, as that user.

:func:`run_grader` returns what the checks need: the exit status, the wall time, the
grader's own peak resident memory (``VmHWM`` of the grader process, read inside it, so
the sandboxed children do not count), the results document and its size, and
everything the run left behind on the host: live processes of the sandbox's uids, System V
IPC objects, files in the shared writable folders and in the grader's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
CORRECT_PATH = TESTS / "grade_submissions" / "correct.py"
CORRECT = CORRECT_PATH.read_text()

IS_ROOT = os.geteuid() == 0
TEST_UID = 58000 + os.getpid() % 1000  # the ordinary user, when the tests run as root
CHILD_UID = 57000 + os.getpid() % 1000  # the uid a root grader gives its children here
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

# Runs the command in the grader's process, then reports that process's own peak resident
# memory: VmHWM, not ru_maxrss, which Linux carries over from the forking process (pytest)
# across exec.
_WRAPPER = """\
import sys
from bpcheck.grade.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as f:
    print("PEAK_KB", next(ln.split()[1] for ln in f if ln.startswith("VmHWM:")), file=sys.stderr)
sys.exit(code)
"""


def user_python() -> str:
    """The interpreter an ordinary user runs the grader with (``BPCHECK_USER_PYTHON``, else
    this one)."""
    return os.environ.get("BPCHECK_USER_PYTHON", sys.executable)


@cache
def user_mode_problem() -> str | None:
    """Why the grader cannot run as an ordinary user here, or ``None`` when it can."""
    if not IS_ROOT:
        return None
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    probe = subprocess.run(_as_user(["env", "-i", "PATH=/usr/bin:/bin", user_python(), "-c",
                                     "import bpcheck.grade.cli"]),
                           capture_output=True, text=True, timeout=300, cwd="/")
    if probe.returncode != 0:
        return (f"uid {TEST_UID} cannot run the grader with {user_python()} (set "
                "BPCHECK_USER_PYTHON to an interpreter with bpcheck installed that every user "
                f"can read): {probe.stderr.strip()[-300:]}")
    return None


def _as_user(cmd):
    if not IS_ROOT:
        return list(cmd)
    return ["setpriv", f"--reuid={TEST_UID}", f"--regid={TEST_UID}", "--clear-groups",
            "--", *cmd]


def mode_problem(mode: str) -> str | None:
    if mode == "root":
        return None if IS_ROOT else "the tests do not run as root"
    return user_mode_problem()


@dataclass
class Leftovers:
    """What a run left on the host (all empty when the sandbox cleaned up)."""

    processes: list = field(default_factory=list)
    ipc: list = field(default_factory=list)
    files: list = field(default_factory=list)

    def __bool__(self):
        return bool(self.processes or self.ipc or self.files)


@dataclass
class Run:
    code: int
    seconds: float
    peak_mb: float
    stdout: str
    stderr: str
    results: dict | None
    results_bytes: int
    left: Leftovers
    csv: str | None = None

    def exercise(self, e):
        return [t for t in (self.results or {}).get("tests", []) if t["number"].startswith(f"{e}.")]

    def scores(self, e):
        return [t["score"] for t in self.exercise(e)]

    def text(self, e):
        return "\n".join(t["output"] for t in self.exercise(e))


def _uids(mode):
    if mode == "user":
        return {TEST_UID} if IS_ROOT else {os.getuid()}
    return {CHILD_UID}


def _processes(uids):
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line[:4] in ("Stat", "Uid:"))
            if int(fields["Uid"].split()[0]) in uids and (
                    fields["State"].split()[0] != "Z"
                    or len(os.listdir(f"/proc/{entry}/task")) > 1):
                out.add(int(entry))  # a zombie is a dead process waiting for its parent,
                # unless a thread of it runs on (its main thread alone has exited)
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return out


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def _ipc(uids):
    found = set()
    for kind in ("shm", "sem", "msg"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            continue
        head = lines[0].split()
        for line in lines[1:]:
            row = dict(zip(head, line.split()))
            if int(row.get("uid", -1)) in uids or int(row.get("cuid", -1)) in uids:
                found.add((kind, row.get("key"), row.get("shmid") or row.get("semid")
                           or row.get("msqid")))
    return found


def _marked_files(marker):
    found = []
    for folder in SHARED_FOLDERS:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found += [f"{folder}/{n}" for n in names if marker in n]
    return found


def run_grader(submission: str | Path, *, mode: str, config: str = "",
               seed: int = 1, batch: bool = False, timeout: float = 240,
               marker: str = "BPCHECK-ATTACK", extra=(), seed_args=None,
               linger: float = 0.0) -> Run:
    """Grade ``submission`` (source text, or a path) with the ``config`` TOML text.

    ``batch``: ``submission`` is a folder, graded with ``grade-batch`` into a CSV.  The
    grader is killed after ``timeout`` s (a hang is then a failed test, never a stuck
    suite).  ``marker``: files whose name contains it in the shared folders count as
    left behind.  ``seed_args``: the seed's arguments as written (default
    ``["--seed", str(seed)]``).  ``linger``: seconds to wait after the grader has ended
    before what it left and wrote is looked at (what a surviving process could still do).
    """
    # not under pytest's tmp_path: that folder is private to the test's own uid
    work = Path(tempfile.mkdtemp(prefix="bpcheck-attack-"))
    try:
        seed_args = ["--seed", str(seed)] if seed_args is None else list(seed_args)
        return _run(work, submission, mode, config, seed_args, batch, timeout, marker, extra,
                    linger)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(work, submission, mode, config, seed_args, batch, timeout, marker, extra, linger):
    if isinstance(submission, str):
        sub = work / "submission.py"
        sub.write_text(submission)
    else:
        sub = work / Path(submission).name
        (shutil.copytree if Path(submission).is_dir() else shutil.copy)(submission, sub)
        if mode == "user" and IS_ROOT:
            for p in [sub, *(sub.rglob("*") if sub.is_dir() else [])]:
                os.chown(p, TEST_UID, TEST_UID)
    cfg = work / "grading.toml"
    config = textwrap.dedent(config)
    if mode == "root":  # a uid of this test's own: what it leaves is unmistakable
        assert "[sandbox]" in config and "[" not in config.split("[sandbox]")[1], config
        config += f"uid = {CHILD_UID}\n"
    cfg.write_text(config)
    grader_tmp = work / "tmp"
    grader_tmp.mkdir()
    results = work / "out" / "results.json"
    results.parent.mkdir()
    csv = work / "out" / "grades.csv"
    for p in (work, grader_tmp, results.parent):
        os.chmod(p, 0o755)
        if mode == "user" and IS_ROOT:
            os.chown(p, TEST_UID, TEST_UID)
    for p in [cfg, *([sub] if sub.is_file() else [])]:
        os.chmod(p, 0o644)
    if batch:
        args = ["grade-batch", str(sub), "--csv", str(csv), "--jobs", "1"]
    else:
        args = ["grade", str(sub), "--results", str(results), "--quiet"]
    args += ["--config", str(cfg), *seed_args, *extra]
    python = user_python() if mode == "user" else sys.executable
    cmd = [python, "-c", _WRAPPER, *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(grader_tmp),
           "HOME": str(work), "LANG": "C.UTF-8"}
    if "PYTHONPATH" in os.environ:  # a grader from another source tree (benchmarks, bisecting)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if mode == "user" and IS_ROOT:
        cmd = _as_user(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd])
    uids = _uids(mode)
    procs_before, ipc_before = _processes(uids), _ipc(uids)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=work, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        err += f"\n[the grader did not finish within {timeout} s and was killed]"
        proc.returncode = -9
    seconds = time.monotonic() - t0
    time.sleep(linger)
    peak = [ln.split()[1] for ln in err.splitlines() if ln.startswith("PEAK_KB ")]
    for _ in range(20):  # a process on its way out (multiprocessing's tracker) is not left
        procs = _processes(uids) - procs_before
        if not procs:
            break
        time.sleep(0.1)
    left = Leftovers(sorted(f"{pid} {_cmdline(pid)}" for pid in procs),
                     sorted(_ipc(uids) - ipc_before),
                     _marked_files(marker) + [str(p) for p in grader_tmp.iterdir()])
    doc, size = None, 0
    if results.is_file():  # (not a FIFO a submission made: reading it would wait)
        size = results.stat().st_size
        doc = json.loads(results.read_text())
    return Run(proc.returncode, seconds, int(peak[-1]) / 1024 if peak else float("nan"), out,
               err, doc, size, left, csv.read_text(errors="replace") if csv.is_file() else None)


def cleanup(left: Leftovers) -> None:
    """Remove what a failed run left (so one failure does not spill into the next test)."""
    for entry in left.processes:
        try:
            os.kill(int(entry.split()[0]), 9)
        except OSError:
            pass
    for kind, _key, ident in left.ipc:
        flag = {"shm": "-m", "sem": "-s", "msg": "-q"}[kind]
        subprocess.run(["ipcrm", flag, str(ident)], capture_output=True)
    for f in left.files:
        shutil.rmtree(f, ignore_errors=True) if os.path.isdir(f) else Path(f).unlink(missing_ok=True)


POLY_CONFIG = """\
[exercises.1]
points = 0
[exercises.2]
points = 0
[exercises.3]
points = 0
[sandbox]
load_timeout_s = 20
test_timeout_s = 5
memory_mb = 1024
"""
"""A config that grades exercise 4 (the symbolic rules) only."""
