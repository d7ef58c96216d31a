"""Run student code in a child process, under limits, and collect what it returns.

The parent's side of :mod:`bpcheck.grade.child`.  One child loads one submission once and
then runs the groups of tests it is sent, each in a process forked from the loaded state
(:func:`run_session`).  The child package is copied into a scratch folder and started as
``python -I -S -B harness/child/__main__.py plan.json`` (no site-packages, no
``PYTHONPATH``, no user site; only the allowed libraries are put on its path, through a
folder of links) with a minimal environment; its output is capped and never parsed.

Where the kernel allows it the child locks itself in new user (when the grader is not
root), mount, PID, network and IPC namespaces, behind a trusted init process whose death
ends every process of the namespace, and sees only an allow-listed file system view
(:mod:`bpcheck.grade.child.jail`).  The parent kills the child's whole process tree after
each run whatever it did: the process group, every process of the child's dedicated uid
(grader as root), and every descendant of the grader (which is made a child subreaper,
so daemons that ``setsid`` and double-fork stay its descendants).

Nothing from the child is trusted (:mod:`bpcheck.grade.child.wire`): frames are bounded
before and after decoding, a malformed one fails its own test, deadlines are the
parent's (per test, per child and per submission) and no frame extends them.  Parent-side
work on child data that could be large runs in a forked process under its own time and
memory limits (:func:`run_limited`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import inspect
import functools
import json
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .child.wire import Frames, WireError, load_arrays

#: Top-level modules a submission may not use: bpcheck itself and autodiff libraries.
FORBIDDEN = ("bpcheck", "jax", "jaxlib", "torch", "tensorflow", "autograd", "mxnet",
             "chainer", "theano", "flax", "keras", "paddle", "mlx", "tinygrad", "micrograd",
             "pytensor", "aesara", "equinox", "optax", "functorch", "haiku")

#: The libraries the child may import besides the standard library.
ALLOWED_LIBRARIES = ("numpy", "sympy", "mpmath")

#: Standard-library modules imported before the privilege drop (also a speed-up).
PREIMPORT = ("math", "cmath", "itertools", "functools", "collections", "collections.abc",
             "typing", "dataclasses", "random", "statistics", "fractions", "decimal",
             "operator", "copy", "numbers", "re", "string", "time", "warnings", "abc", "enum",
             "heapq", "bisect", "contextlib", "json", "textwrap", "pprint", "zipfile",
             "numpy.linalg", "numpy.random", "numpy.fft", "numpy.polynomial")

#: Allowed frameworks imported before the limits, where a homework allows them: the
#: address-space limit counts from what the child holds then, and PyPI's CUDA build of
#: torch maps over 3 GB of address space on import (a correct torch submission was
#: killed by SIGSEGV at the default memory_mb = 1536).
PREIMPORT_ALLOWED = ("torch", "jax")

@dataclass
class Limits:
    """Per-child limits; see :class:`bpcheck.grade.config.SandboxConfig`."""

    load_timeout_s: float = 30.0
    test_timeout_s: float = 10.0
    cell_timeout_s: float = 30.0
    memory_mb: int = 1536
    file_mb: int = 16
    tmp_mb: int = 64
    processes: int = 16
    output_kb: int = 64
    result_mb: int = 64
    restarts: int = 1
    namespaces: bool = True
    drop_privileges: bool = True
    uid: int | None = None
    submission_timeout_s: float = 480.0
    check_timeout_s: float = 60.0
    check_memory_mb: int = 2048


@dataclass
class TestMessage:
    """What the child reported for one test: a plain JSON header and checked arrays.

    ``problem``: why the frame could not be read (the test fails with that note)."""

    header: dict
    arrays: dict
    problem: str | None = None


def _hidden_paths(extra=(), forbidden=FORBIDDEN):
    """Folders the child must not see: bpcheck and the forbidden libraries."""
    paths = [os.path.realpath(os.path.dirname(os.path.dirname(__file__)))]  # the bpcheck package
    for name in forbidden:
        if name == "bpcheck":
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            paths.append(os.path.realpath(list(spec.submodule_search_locations)[0]))
        elif spec is not None and spec.origin:
            paths.append(os.path.realpath(spec.origin))
    paths.extend(os.path.realpath(p) for p in extra)
    return sorted(set(paths))


def pick_uid(limits: Limits) -> int | None:
    """An unprivileged uid for the child, or ``None`` when there is nothing to drop from.

    Unless the config names one, a uid in 61000..64999 with no passwd entry and no live
    process, starting from this process's id, and claimed for this process's life: an
    exclusive ``flock`` on a file named after it in :data:`UID_LOCKS` (root's alone),
    which the kernel releases when the process ends, however it ends.  Graders kill every
    process of their child's uid, so two at once must never share one: chosen from the pid
    alone, two graders whose pids agreed modulo 4000 did.  The same process gets the same
    uid on every call.
    """
    if os.geteuid() != 0 or not limits.drop_privileges:
        return None
    if limits.uid is not None:
        return int(limits.uid)
    me = os.getpid()
    if _claimed and _claimed[0] == me:
        return _claimed[1]
    folder = _uid_lock_folder()
    busy = _live_uids()
    start = me % 4000
    for i in range(4000):
        uid = 61000 + (start + i) % 4000
        if uid in busy:
            continue
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        if folder is None or _claim(folder, uid):
            return uid
    return 65534  # pragma: no cover


UID_LOCKS = "/run/bpcheck-uids"
"""Where graders running as root claim their children's uids (made mode 0700 by the first;
not used unless root owns it and only root may enter it)."""

_claimed: list = []  # [pid, uid, the open lock file]: the claim of the process that made it


def _uid_lock_folder() -> str | None:
    try:
        os.mkdir(UID_LOCKS, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(UID_LOCKS)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
        return None
    return UID_LOCKS


def _claim(folder: str, uid: int) -> bool:
    """Lock ``folder/uid`` for this process (kept open, not inherited by what it runs);
    false when another process holds it."""
    import fcntl

    try:
        fd = os.open(os.path.join(folder, str(uid)),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    if _claimed:  # (a claim inherited through fork: the parent's lock stays with it)
        os.close(_claimed[2])
        _claimed.clear()
    _claimed.extend([os.getpid(), uid, fd])
    return True


def _process_ended(pid: int, state) -> bool:
    """Whether process ``pid``, in ``state`` (``/proc``'s letter), has ended: a zombie (or
    dead) with no thread left.  A process whose main thread has exited while another runs
    on shows ``Z`` too: one such, made after the last kill, outlived the grader and held
    the child's output pipe open, stalling the grade for as long as it liked."""
    if state not in ("Z", "X", b"Z", b"X"):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def _processes_by_uid():
    """``(pid, real uid, ended)`` of each process in ``/proc`` (``ended``: see :func:`_process_ended`).
    ``/proc/PID/status`` is read as bytes: a process names itself (``PR_SET_NAME``) with
    any bytes, which its ``Name:`` line shows as they are, and one named with bytes that
    are not UTF-8 was skipped by a reading as text (a decode error), so it lived on."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f if line[:4] in (b"Stat", b"Uid:"))
            yield (int(entry), int(fields[b"Uid"].split()[0]),
                   _process_ended(int(entry), fields[b"State"].split()[0]))
        except (OSError, KeyError, ValueError, IndexError):
            continue


def _live_uids() -> set:
    """The real uids of the processes in ``/proc`` (zombies too: not yet gone)."""
    return {uid for _, uid, _ in _processes_by_uid()}


def _fork() -> int:
    """``os.fork()`` without the warnings Python and JAX give for a fork of a threaded
    process (it may deadlock in the child when it takes a lock another thread held): the
    grader's forks only compute, or take a uid and signal, and exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return os.fork()


def _kill_at_once(uid: int) -> None:
    """SIGKILL every process of ``uid`` in one step, in the kernel: a fork of this process
    (root) takes the uid and calls ``kill(-1, SIGKILL)``.  A scan of ``/proc`` can be raced
    by a chain of forks that changes its pid between the scan and the kill; this cannot.
    Nothing for an ordinary user's grader (no uid of the child's own to take)."""
    if os.geteuid() != 0:
        return
    pid = _fork()
    if pid == 0:  # pragma: no cover - the fork: it only takes the uid and signals
        code = 0
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # pragma: no cover
        pass


def _kill_uid(uid: int, spare: set = frozenset()) -> None:
    """SIGKILL every live process whose real uid is ``uid``, except those in ``spare``, until
    none is left."""
    for _ in range(200):
        found = False
        for pid, ruid, ended in _processes_by_uid():
            if ruid == uid and not ended and pid not in spare:
                found = True
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return
        time.sleep(0.005)


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
_PR_SET_PDEATHSIG = 1


def _become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux >= 3.4), so that a
    child's daemon (``setsid`` and double fork) stays a descendant that can be found."""
    return _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _processes() -> dict:
    """``{pid: (parent pid, state)}`` of every process visible in ``/proc``."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                out[int(entry)] = (int(fields[1]), fields[0].decode())
            except (OSError, ValueError, IndexError):
                continue
    return out


def _children_of(pid: int) -> set:
    return {p for p, (ppid, _) in _processes().items() if ppid == pid}


def _kill_tree(root: int | None, spare: set) -> None:
    """SIGKILL ``root``'s process tree and the orphans it left with this process (the
    subreaper), until none is alive; ``spare``: this process's children from before, which
    are not the child's.  Zombies among this process's children are reaped, except ``root``
    (its ``Popen`` reaps it).  ``root=None``: the orphans only (with ``root`` in
    ``spare``: what a finished group of tests left, the child kept)."""
    me = os.getpid()
    for _ in range(500):
        procs = _processes()
        mine = {p for p, (ppid, _) in procs.items() if ppid == me} - spare - _limited_pids
        children: dict = {}
        for p, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(p)
        tree, stack = set(), [p for p in {root} | mine if p in procs]
        while stack:
            p = stack.pop()
            if p not in tree:
                tree.add(p)
                stack.extend(children.get(p, ()))
        alive = [p for p in tree if not _process_ended(p, procs[p][1])]
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        for p in mine - {root}:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        if not tree - {root}:  # nothing left, not even a zombie on its way to this process
            return
        time.sleep(0.005)


def _hierarchies(controller: str):
    """``(v1, own)`` for each mounted cgroup hierarchy that has ``controller`` (cgroup v1)
    or is the unified one (v2), ``own`` this process's cgroup folder in it."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split(" - ", 1) for line in f.read().splitlines() if " - " in line]
    with open("/proc/self/cgroup") as f:
        mine = [line.split(":", 2) for line in f.read().splitlines() if line.count(":") >= 2]
    for left, right in mounts:
        fields, (fstype, _, options) = left.split(), (right.split() + ["", "", ""])[:3]
        v1 = fstype == "cgroup" and controller in options.split(",")
        if not (v1 or fstype == "cgroup2") or len(fields) < 5:
            continue
        path = next((p for _, names, p in mine if (controller in names.split(",") if v1
                                                     else names == "")), None)
        root, point = fields[3], fields[4]
        if path is None or not (path + "/").startswith(root.rstrip("/") + "/"):
            continue
        yield v1, os.path.join(point, path[len(root.rstrip("/")):].lstrip("/"))


def _own_cgroups(controller: str) -> tuple:
    """``(list of (v1, own) from _hierarchies, None)`` for a root grader, else ``(None,
    why)``."""
    if os.geteuid() != 0:
        return None, "the grader is not root"
    try:
        return list(_hierarchies(controller)), None
    except OSError as err:
        return None, f"cannot read /proc ({err.strerror})"


def _fresh_cgroup(own: str) -> str:
    """A new cgroup folder below ``own`` named after this grader (:data:`_CGROUP_PREFIX`),
    made after removing those a killed grader left there."""
    _remove_stale_cgroups(own)
    return tempfile.mkdtemp(prefix=f"{_CGROUP_PREFIX}{_me()}-", dir=own)


def _delegated(own: str, controller: str) -> bool:
    """cgroup v2: whether ``controller`` is enabled for the cgroups below ``own``."""
    with open(os.path.join(own, "cgroup.subtree_control")) as f:
        return controller in f.read().split()


def memory_cgroup(mb: int) -> tuple:
    """``(folder, None)``: a fresh memory cgroup below this process's own, limited to ``mb``
    MB for all its processes together (their pages, tmpfs and ``memfd`` files, and the
    kernel memory charged to them: inodes, IPC objects), for one child to join; or
    ``(None, why)`` where none can be made: not root, no memory hierarchy mounted
    writable (most containers), or cgroup v2 without the memory controller delegated.
    ``memory_mb`` limits each process's address space only: ``processes`` of them took
    7.5 GB with ``memory_mb = 768``, and ``memfd`` files 5 GB."""
    found, why = _own_cgroups("memory")
    if found is None:
        return None, why
    for v1, own in found:
        try:
            if not v1 and not _delegated(own, "memory"):
                continue
            folder = _fresh_cgroup(own)
        except OSError:
            continue
        limits = ([("memory.limit_in_bytes", True), ("memory.memsw.limit_in_bytes", False)]
                  if v1 else [("memory.max", True), ("memory.swap.max", False)])
        try:
            for name, needed in limits:
                try:
                    with open(os.path.join(folder, name), "w") as f:
                        f.write(str(0 if name == "memory.swap.max" else mb << 20))
                except OSError:
                    if needed:
                        raise
        except OSError as err:
            remove_cgroup(folder)
            return None, f"{folder}: {err.strerror}"
        return folder, None
    return None, "no writable memory cgroup hierarchy"


CPU_PERIOD_US = 100_000


def cpu_cgroup(memory: str | None) -> tuple:
    """``(folder, None)``: a cgroup below this process's own in the ``cpu`` hierarchy, for
    one child to join, that gives all of its processes together one CPU at most, and, as
    one group among its siblings, an equal share of a busy machine however many
    processes it runs; ``folder`` is ``memory`` itself under cgroup v2, where one folder
    holds both.  ``(None, why)`` where none can be made.  ``RLIMIT_CPU`` bounds each
    process only and every deadline is wall-clock time: under ``grade-batch --jobs 2`` a
    submission's 14 busy processes made a correct batch-mate miss its deadlines."""
    found, why = _own_cgroups("cpu")
    if found is None:
        return None, why
    for v1, own in found:
        try:
            if not v1:
                if memory is None or os.path.dirname(memory) != own or \
                        not _delegated(own, "cpu"):
                    continue
                with open(os.path.join(memory, "cpu.max"), "w") as f:
                    f.write(f"{CPU_PERIOD_US} {CPU_PERIOD_US}")
                return memory, None
            folder = _fresh_cgroup(own)
        except OSError:
            continue
        try:
            for name, value in (("cpu.cfs_period_us", CPU_PERIOD_US),
                                ("cpu.cfs_quota_us", CPU_PERIOD_US)):
                with open(os.path.join(folder, name), "w") as f:
                    f.write(str(value))
        except OSError as err:
            remove_cgroup(folder)
            return None, f"{folder}: {err.strerror}"
        return folder, None
    return None, "no writable cpu cgroup hierarchy"


_CGROUP_PREFIX = "bpcheck-grade-"
"""The names of the grader's cgroups and child folders: ``bpcheck-grade-PID-START-...``,
with its pid and start time (:func:`_me`), so that a later grader can tell a killed
grader's leftovers (:func:`_remove_stale_cgroups`, :func:`_remove_stale_boxes`)."""


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, ``/proc/PID/stat`` field 22), or
    ``None`` when there is no such process: with the pid, it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # (bytes: see _processes_by_uid)
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _me() -> str:
    return f"{os.getpid()}-{_started(os.getpid())}"


def _remove_stale_cgroups(own: str) -> None:
    """Remove the cgroups of :func:`memory_cgroup` below ``own`` whose grader has ended
    (their name says which: ``bpcheck-grade-PID-START-...``) without removing them: a grader
    killed with SIGKILL.  Its child's processes die with it (``PR_SET_PDEATHSIG``), but
    without namespaces its processes' own children may not; any still in the cgroup are
    killed first.  A cgroup of a grader that still runs (a sibling ``grade-batch`` worker)
    is left alone."""
    try:
        names = [n for n in os.listdir(own) if n.startswith(_CGROUP_PREFIX)]
    except OSError:
        return
    for name in names:
        if not _ended(name):
            continue
        folder = os.path.join(own, name)
        for _ in range(50):
            try:
                with open(os.path.join(folder, "cgroup.procs")) as f:
                    members = [int(line) for line in f if line.strip()]
            except (OSError, ValueError):
                break
            if not members:
                break
            for member in members:
                try:
                    os.kill(member, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)
        remove_cgroup(folder)


def _ended(name: str) -> bool:
    """Whether the grader that named a folder ``bpcheck-grade-PID-START-...`` has ended."""
    pid, _, rest = name[len(_CGROUP_PREFIX):].partition("-")
    start = rest.partition("-")[0]
    return pid.isdigit() and start.isdigit() and _started(int(pid)) != int(start)


def _remove_stale_boxes(folder: str) -> None:
    """Remove the child folders (``bpcheck-grade-PID-START-...``) in ``folder`` that a
    grader of this uid made and, killed, did not remove.  :func:`remove_tree`, which never
    follows a link: without namespaces, a killed grader's orphans may still be running."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(_CGROUP_PREFIX) and _ended(n)]
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            remove_tree(path)


def oom_kills(folder: str) -> int:
    """How many processes of a :func:`memory_cgroup` the kernel killed at its limit."""
    for name in ("memory.oom_control", "memory.events"):  # v1, v2
        try:
            with open(os.path.join(folder, name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def remove_cgroup(folder: str) -> None:
    """Remove a cgroup of :func:`memory_cgroup` once its processes are gone (an exiting
    process leaves it a moment after it is killed)."""
    for _ in range(400):
        try:
            os.rmdir(folder)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.005)


def _kill_namespace_leftovers(keeper: int) -> None:
    """SIGKILL every process of the child's PID namespace below ``keeper`` except the
    namespace's init and the worker (its PIDs 1 and 2), until none is left alive: what a
    finished group of tests left.  The worker kills them itself (``kill_others``), but the
    worker runs the submission's code, and a thread left at load time can stop that (a
    red-team attack kept a daemon of exercise 1 alive through exercise 2).  Without a PID
    namespace there are none (the orphans come to this process: :func:`_kill_tree`)."""
    for _ in range(500):
        procs = _processes()
        alive = [p for p in _descendants(keeper, procs)
                 if not _process_ended(p, procs[p][1]) and _namespace_pid(p) not in (None, 1, 2)]
        if not alive:
            return
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)


def _after_group(keeper: int, spare: set, uid: int | None) -> None:
    """The processes a finished group left (daemons; zombies adopted by this process) are
    killed, and this process's reaped, before the next group starts: they count against
    the child's process limit (as an ordinary user without namespaces, with the grader's
    own threads), and a daemon could change what the next exercise sees.  With a uid of
    its own (a root grader), every process of that uid but the child's keeper, init and
    worker: without namespaces a submission that makes the worker a subreaper keeps the
    orphans from this process."""
    _kill_tree(None, spare | {keeper})
    _kill_namespace_leftovers(keeper)
    if uid is not None:
        _kill_uid(uid, {keeper} | {p for p in _descendants(keeper) if _namespace_pid(p) in (1, 2)})


def _descendants(pid: int, procs: dict | None = None) -> set:
    """Every process below ``pid`` in ``procs`` (:func:`_processes`; default: read now)."""
    procs = _processes() if procs is None else procs
    children: dict = {}
    for p, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(p)
    found, stack = set(), list(children.get(pid, ()))
    while stack:
        p = stack.pop()
        if p not in found:
            found.add(p)
            stack.extend(children.get(p, ()))
    return found


def _namespace_pid(pid: int) -> int | None:
    """``pid``'s number in the first PID namespace below this process's (``NSpid``'s second
    entry; the child's namespace), ``None`` when it is in this one or is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:  # (bytes: see _processes_by_uid)
            for line in f:
                if line.startswith(b"NSpid:"):
                    fields = line.split()
                    return int(fields[2]) if len(fields) > 2 else None
    except (OSError, ValueError):
        pass
    return None


class _OutputReader(threading.Thread):
    """Drain the child's stdout/stderr, keeping the first ``cap`` bytes."""

    def __init__(self, stream, cap):
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.kept = bytearray()
        self.dropped = 0

    def run(self):
        try:
            while True:
                chunk = self.stream.read1(65536) if hasattr(self.stream, "read1") \
                    else self.stream.read(65536)
                if not chunk:
                    break
                room = self.cap - len(self.kept)
                if room > 0:
                    self.kept += chunk[:room]
                self.dropped += max(0, len(chunk) - max(room, 0))
        except (OSError, ValueError):
            pass

    def text(self):
        out = self.kept.decode("utf-8", errors="replace")
        if self.dropped:
            out += f"\n[... {self.dropped} more bytes of output dropped]"
        return out


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        why = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)",
               "SIGKILL": " (killed: CPU time or memory limit)",
               "SIGSEGV": " (crashed: a fault in the code, or a library that could not map "
                          "memory within the memory limit)"}.get(name, "")
        return f"was killed by {name}{why}"
    if code == 70:
        return "failed inside the grading harness (exit status 70)"
    return f"exited with status {code} before finishing"


_CHILD_MAIN = os.path.join("harness", "child", "__main__.py")


def _copy_child(box):
    """Copy the child package (its ``.py`` files) to ``box/harness/child``, readable by all."""
    src = Path(__file__).with_name("child")
    dest = Path(box, "harness", "child")
    dest.mkdir(parents=True)
    for path in src.glob("*.py"):
        shutil.copyfile(path, dest / path.name)
        os.chmod(dest / path.name, 0o644)
    os.chmod(dest, 0o755)
    os.chmod(dest.parent, 0o755)


def _child_env(work):
    return {"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


_submission_end: list = []  # the deadline of the submission being graded (monotonic)


@contextlib.contextmanager
def submission_budget(limits: Limits, since: float):
    """Within the block, every child's deadline is also bounded by ``submission_timeout_s``
    after ``since`` (``time.monotonic()`` when the submission's grading began): the hard
    wall-clock budget of one submission, whatever its children do."""
    _submission_end.append(since + limits.submission_timeout_s)
    try:
        yield
    finally:
        _submission_end.pop()


def _element_budget(test_plan, inputs) -> int:
    """Most array elements one test's result frame may carry: the plan's ``max_elements``
    when the exercise gives one, else 64 times the test's inputs (at least 4M: the lecture's
    polynomial data)."""
    if not isinstance(test_plan, dict):
        return 0
    if "max_elements" in test_plan:
        return int(test_plan["max_elements"])
    keys = []
    for arg in test_plan.get("args", ()):
        keys += arg.get("keys", []) + ([arg["key"]] if "key" in arg else [])
    return max(4 << 20, 64 * sum(int(np.size(inputs[k])) for k in keys if k in inputs))


# ---------------------------------------------------------------- one submission, loaded once
#
# run_session starts one child that loads the submission once and then runs the groups
# of tests it is sent, each in a process forked from the loaded state.


@dataclass
class Group:
    """Tests run in one forked process: ``tests`` (ids), the ``inputs`` they name (sent
    only when the group runs), and whether students see what it prints."""

    name: str
    visible: bool
    tests: list
    inputs: dict
    specs: dict = field(default_factory=dict)
    """``{test id: plan entry}``: how to call the student's code (sent with the group)."""
    needs: tuple = ()
    """Functions the group calls: it is skipped when the submission does not define one."""


@dataclass
class SessionRun:
    """The outcome of one child: what it reported, and why it stopped early if it did.

    ``failed_test``: the test in progress when the child was stopped (``failure`` says
    why); ``stdout``: what students may see (printed while loading and in the visible
    groups); ``hidden_stdout``: what the groups they do not see printed."""

    notes: list = field(default_factory=list)
    loaded: dict | None = None
    tests: dict = field(default_factory=dict)
    failure: str | None = None
    failed_test: str | None = None
    stdout: str = ""
    hidden_stdout: str = ""
    seconds: float = 0.0


def _packages_distributions() -> dict:
    """``importlib.metadata.packages_distributions()``, completed on Python 3.10, whose
    version reads only ``top_level.txt``: a distribution without that file (packaging,
    for one) is mapped from the top-level names of its installed files, as 3.11 does."""
    from importlib import metadata

    out = metadata.packages_distributions()
    if sys.version_info >= (3, 11):
        return out
    for dist in metadata.distributions():
        if dist.read_text("top_level.txt") is not None:
            continue
        name = dist.metadata["Name"]
        tops = set()
        for path in dist.files or ():
            parts = Path(str(path)).parts
            top = parts[0] if len(parts) > 1 else inspect.getmodulename(str(path))
            if top and "." not in top and top != "..":
                tops.add(top)
        for top in tops:
            out.setdefault(top, [])
            if name not in out[top]:
                out[top].append(name)
    return out


def library_dirs(names) -> dict:
    """Real folders (or files) of the top-level modules ``names`` and of every distribution
    they require, with their bundled ``.libs`` folders: what the child may import, and what
    its file system view holds besides the standard library.  Worked out once per process
    for each set of names (reading every installed distribution's metadata takes a
    quarter of a second)."""
    return dict(_library_dirs(tuple(sorted(set(names)))))


def required_modules(names) -> set:
    """The top-level modules ``names`` and those of every distribution they require (as
    installed here): what an allowed module may load, jax for flax, functorch for torch."""
    return set(_requirements(tuple(sorted(set(names))))[0])


@functools.lru_cache(maxsize=16)
def _requirements(names: tuple) -> tuple[frozenset, frozenset]:
    """``(top-level modules, distributions)`` of ``names`` and what they require."""
    from importlib import metadata

    top_to_dists = _packages_distributions()
    dist_to_tops: dict[str, set] = {}
    for top, dists in top_to_dists.items():
        for d in dists:
            dist_to_tops.setdefault(d.lower().replace("_", "-"), set()).add(top)
    todo = [d.lower().replace("_", "-") for n in names for d in top_to_dists.get(n, [])]
    tops, seen = set(names), set()
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        tops |= dist_to_tops.get(d, set())
        try:
            reqs = metadata.requires(d) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            name = r.split(";")[0].strip()
            for sep in "<>=!~[ (":
                name = name.split(sep)[0]
            todo.append(name.lower().replace("_", "-"))
    return frozenset(tops), frozenset(seen)


@functools.lru_cache(maxsize=16)
def _library_dirs(names: tuple) -> dict:
    tops, seen = _requirements(names)
    out = {}
    for name in sorted(tops):
        if name.startswith("_") and name != "_distutils_hack" or name in FORBIDDEN[:1]:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            pkg = os.path.realpath(list(spec.submodule_search_locations)[0])
            out[name] = pkg
            if os.path.isdir(pkg + ".libs"):
                out[name + ".libs"] = pkg + ".libs"
        elif spec.origin and os.path.isfile(spec.origin):
            out[os.path.basename(spec.origin)] = os.path.realpath(spec.origin)
    # the shared libraries a distribution bundles under its own name (``pillow.libs`` for
    # PIL), which the child's file system view must hold as well
    for folder in {os.path.dirname(p) for p in list(out.values())}:
        for entry in os.listdir(folder):
            dist = entry[:-5].lower().replace("_", "-")
            if entry.endswith(".libs") and entry not in out and dist in seen | set(names) \
                    and os.path.isdir(os.path.join(folder, entry)):
                out[entry] = os.path.realpath(os.path.join(folder, entry))
    return out


def _remove(box: str) -> None:
    """Remove the child's folder, whatever the child left in it (:func:`remove_tree`)."""
    remove_tree(box)


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_OPEN_DEPTH = 32
"""The most folders :func:`remove_tree` holds open at once; a deeper one is moved up."""


def remove_tree(path: str) -> None:
    """Remove the folder ``path`` and everything in it, never following a link, whatever
    the child left there: folders of mode 000 (``rmtree`` stopped at them), trees deeper
    than Python's recursion limit (``os.walk`` and ``rmtree`` raised RecursionError on a
    child's 1200 nested folders, and every later grader's clean-up raised it again) or
    than ``PATH_MAX``.  Iterative, on folder descriptors; a folder more than
    ``_OPEN_DEPTH`` levels down is renamed into ``path`` itself and removed from there, so
    at most that many descriptors are open.  Errors are ignored, as ``ignore_errors``."""
    try:
        top = os.open(path, _DIRECTORY)
    except OSError:
        return
    moved = 0
    try:
        for _ in range(1_000_000):  # each pass moves or removes something, or stops
            moved, progress = _clear(top, moved)
            if not progress:
                break
    finally:
        os.close(top)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _clear(top: int, moved: int) -> tuple[int, bool]:
    """One pass of :func:`remove_tree` over the folder open as ``top``."""
    progress = False
    stack = [(top, None, None)]  # (descriptor, names left, its name in the folder above)
    while stack:
        fd, names, own = stack[-1]
        if names is None:
            try:
                names = os.listdir(fd)
            except OSError:
                names = []
            stack[-1] = (fd, names, own)
        if not names:
            stack.pop()
            if stack:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.rmdir(own, dir_fd=stack[-1][0])
                    progress = True
            continue
        name = names.pop()
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)
                progress = True
            continue
        if len(stack) > _OPEN_DEPTH:  # too deep to hold open: move it up, for a later pass
            moved += 1
            with contextlib.suppress(OSError):
                os.rename(name, f".bpcheck-removing-{moved}", src_dir_fd=fd, dst_dir_fd=top)
                progress = True
            continue
        try:
            child = os.open(name, _DIRECTORY, dir_fd=fd)
        except PermissionError:  # a folder of mode 000, the grader not root: it owns it
            try:
                os.chmod(name, 0o700, dir_fd=fd)
                child = os.open(name, _DIRECTORY, dir_fd=fd)
            except OSError:
                continue
        except OSError:
            continue
        with contextlib.suppress(OSError):
            os.fchmod(child, 0o700)  # its entries can be removed (a folder of mode 500)
        stack.append((child, None, name))
    return moved, progress


def _strings(value, limit: int = 64) -> list:
    return [str(v)[:200] for v in value[:limit]] if isinstance(value, list) else []


def _write_all(fd, data):
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass


def run_session(source: str, groups: list, limits: Limits, *, functions=(),
                load_timeout_s: float | None = None, hide=(), allow=ALLOWED_LIBRARIES,
                forbidden=FORBIDDEN, preimport=PREIMPORT, extra_plan=None,
                on_test=None, while_starting=None) -> SessionRun:
    """Load ``source`` once in a child and run ``groups`` in order, each in a forked process.

    ``groups``: :class:`Group` s, the visible ones first; a group's entries and inputs
    are written to the child only when it runs, and
    the first group students do not see runs only after the child has closed the
    students' output and no process holds it any more.  ``functions``: names the
    submission must define.  Returns what the child reported, whatever it did; when it
    returns, no process of the child is left.

    Deadlines are the parent's: loading gets ``load_timeout_s`` (or ``load_timeout_s``
    given here), each test ``test_timeout_s`` from the moment the previous answer or
    command, and the whole child ends by a budget of its own (loading, plus one
    ``test_timeout_s`` per test, per group and for closing the students' output), cut to
    what is left of the submission's (:func:`submission_budget`).

    ``on_test(test, message)``, when given, is called with each test's
    :class:`TestMessage` as soon as it is read (to start scoring it while the child goes
    on); it must return quickly.
    """
    from .child.wire import frame

    started = time.monotonic()
    load_s = limits.load_timeout_s if load_timeout_s is None else load_timeout_s
    n_tests = sum(len(g.tests) for g in groups)
    end = started + load_s + limits.test_timeout_s * (n_tests + len(groups) + 2) + 1
    if _submission_end:
        end = min(end, _submission_end[-1])
    result = SessionRun()
    if end <= started:
        result.failure = (f"the submission's time budget of {limits.submission_timeout_s:g} s "
                          "is spent")
        return result
    uid = pick_uid(limits)
    # not dumpable: this process's memory, descriptors and environment in /proc are closed
    # to a child that has its uid (an ordinary user's grader without namespaces), which
    # could otherwise read the seed and hidden inputs from its memory, or rewrite it
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    _remove_stale_boxes(tempfile.gettempdir())
    box = tempfile.mkdtemp(prefix=f"{_CGROUP_PREFIX}{_me()}-")
    proc = cgroup = cpu = None
    readers = []
    fds = []
    _become_subreaper()
    spare = _children_of(os.getpid())
    try:
        if uid is not None:  # root's, entered by the child's group (its gid is its uid) alone:
            # without namespaces, a classmate's child in the same batch (another uid) read
            # this submission from it and answered with it
            os.chown(box, 0, uid)
            os.chmod(box, 0o750)
        else:  # (the child has the grader's uid: nothing to keep from it)
            os.chmod(box, 0o755)
        _copy_child(box)
        with open(os.path.join(box, "submission.py"), "w", encoding="utf-8") as f:
            f.write(source)
        libs = os.path.join(box, "libs")
        os.mkdir(libs)
        lib_dirs = library_dirs(("numpy", *allow))
        for name, target in lib_dirs.items():
            os.symlink(target, os.path.join(libs, name))
        work = os.path.join(box, "work")
        os.mkdir(work, 0o700)
        os.mkdir(os.path.join(box, "root"), 0o755)
        if uid is not None:
            os.chown(work, uid, uid)
        exe = os.path.realpath(sys.executable)
        keep = [box, exe, os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                *lib_dirs.values()]
        r_fd, w_fd = os.pipe()
        c_r, c_w = os.pipe()
        h_r, h_w = os.pipe()
        fds = [r_fd, w_fd, c_r, c_w, h_r, h_w]
        cgroup_mb = limits.memory_mb + 2 * limits.tmp_mb
        cgroup, refused = memory_cgroup(cgroup_mb)
        cpu, cpu_refused = cpu_cgroup(cgroup)
        plan = {
            "cgroup": cgroup, "cgroup_mb": cgroup_mb, "cgroup_refused": refused,
            "cpu_cgroup": cpu, "cpu_cgroup_refused": cpu_refused,
            "functions": list(functions), "box": box, "libs": libs,
            "fallback_work": work, "keep": keep, "hide": _hidden_paths(hide, forbidden),
            "root": os.path.join(box, "root"), "exe": exe, "allowed": list(lib_dirs.values()),
            "namespaces": limits.namespaces, "uid": uid, "memory_mb": limits.memory_mb,
            "file_mb": limits.file_mb, "tmp_mb": limits.tmp_mb, "nproc": limits.processes,
            "cpu_s": int(end - started) + 1,
            "forbidden": list(forbidden),
            "preimport": [*preimport, *(m for m in PREIMPORT_ALLOWED if m in allow)],
            "result_fd": w_fd,
            "command_fd": c_r, "hidden_output_fd": h_w, "kill_others": uid is not None,
            "grader_pid": os.getpid(),
            "max_terms": 2000, "max_degree": 8, **(extra_plan or {}),
        }
        with open(os.path.join(box, "plan.json"), "w") as f:
            json.dump(plan, f)
        for name in os.listdir(box):
            if name not in ("work", "libs", "harness", "root"):
                os.chmod(os.path.join(box, name), 0o644)
        proc = subprocess.Popen(
            [exe, "-I", "-S", "-B", os.path.join(box, _CHILD_MAIN), os.path.join(box, "plan.json")],
            cwd=box, env=_child_env(work), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, pass_fds=(w_fd, c_r, h_w), start_new_session=True,
            close_fds=True)
        for fd in (w_fd, c_r, h_w):
            os.close(fd)
            fds.remove(fd)
        visible_out = _OutputReader(proc.stdout, limits.output_kb * 1024)
        hidden_out = _OutputReader(os.fdopen(h_r, "rb", buffering=0), limits.output_kb * 1024)
        fds.remove(h_r)
        readers = [visible_out, hidden_out]
        for reader in readers:
            reader.start()
        if while_starting is not None:
            while_starting()
        _converse(proc, r_fd, c_w, result, limits, groups, load_s, visible_out, frame, end,
                  on_test, lambda: _after_group(proc.pid, spare, uid))
    finally:
        if proc is not None:
            _killpg(proc.pid)
            _kill_tree(proc.pid, spare)
            if uid is not None:
                _kill_at_once(uid)
                _kill_uid(uid)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            _kill_tree(proc.pid, spare)
        if cgroup is not None:
            if result.failure is not None and oom_kills(cgroup):
                result.failure += (f" (its processes together reached the memory limit of "
                                   f"{cgroup_mb} MB)")
            remove_cgroup(cgroup)
        if cpu is not None and cpu != cgroup:
            remove_cgroup(cpu)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        for reader in readers:
            reader.join(timeout=2)
        if readers:
            shown, hidden = readers[0].text(), readers[1].text()
            if not any(g.visible for g in groups):  # a rerun of hidden tests only
                shown, hidden = "", shown + hidden
            result.stdout, result.hidden_stdout = shown, hidden
            for reader, stream in zip(readers, (proc.stdout, readers[1].stream)):
                if reader.is_alive():  # a writer outlived every kill: closing would wait
                    continue  # on the lock the blocked reader holds (a daemon thread)
                try:
                    stream.close()
                except OSError:  # pragma: no cover
                    pass
        _remove(box)
    result.seconds = time.monotonic() - started
    return result


def _converse(proc, r_fd, c_w, result: SessionRun, limits: Limits, groups, load_s,
              visible_out, frame, end, on_test=None, after_group=None) -> None:
    """Read the child's messages, send it its groups one at a time, keep the deadlines.

    Only the frame the parent waits for next (setup, loaded, then the running group's
    tests in order, its ``group_done``, ``closed_visible``) is acted on, and only a test's
    frame is decoded, within the element budget of that test (:func:`_element_budget`);
    any other frame is dropped unread.  A test's frame that cannot be read fails that test
    only.  No frame moves a deadline past ``end``.  ``after_group()``, when given, runs
    when a group has ended, before the next one is sent."""
    # what a child sends: setup, loaded, one frame per test and one at the end of each
    # group, closed_visible; twice that, and some, before the stream counts as a flood
    frames = Frames(limits.result_mb << 20,
                    most=64 + 2 * sum(len(g.tests) + 1 for g in groups))
    deadline = time.monotonic() + load_s
    queue = list(groups)
    group = None  # the group running now
    pending: list = []
    budgets: dict = {}
    closing = False
    closed_visible = False
    setup_seen = False

    def next_group():
        nonlocal group, pending, deadline, closing, budgets
        missing = set(_strings((result.loaded or {}).get("missing")))
        while queue and missing.intersection(queue[0].needs):
            queue.pop(0)
        if not queue:
            group = None
            threading.Thread(target=_write_all, args=(c_w, frame({"kind": "end"})),
                             daemon=True).start()
            deadline = time.monotonic() + limits.test_timeout_s
            return
        if not queue[0].visible and not closed_visible:
            closing = True
            threading.Thread(target=_write_all, args=(c_w, frame({"kind": "close_visible"})),
                             daemon=True).start()
            deadline = time.monotonic() + limits.test_timeout_s
            return
        group = queue.pop(0)
        pending = list(group.tests)
        budgets = {t: _element_budget(group.specs.get(t), group.inputs) for t in group.tests}
        threading.Thread(target=_write_all, daemon=True, args=(c_w, frame(
            {"kind": "group", "group": group.name, "tests": group.tests, "specs": group.specs},
            group.inputs))).start()
        deadline = time.monotonic() + limits.test_timeout_s

    while True:
        now = time.monotonic()
        if closing and result.loaded is not None and closed_visible is None:
            # waiting for the students' output to close: no process may still hold it
            visible_out.join(timeout=max(0.0, min(0.5, deadline - now)))
            if not visible_out.is_alive():
                closing, closed_visible = False, True
                next_group()
                continue
        if now > min(deadline, end):
            if now > end and end < deadline:
                what = "loading the submission" if result.loaded is None else \
                    f"running test {pending[0]}" if group is not None and pending else \
                    "the submission's processes ran"
                result.failure = f"time limit exceeded while {what} (the time budget of " \
                    "this child or of the whole submission is spent)"
                if group is not None and pending:
                    result.failed_test = pending[0]
            elif result.loaded is None:
                result.failure = (f"time limit of {load_s:g} s exceeded while loading the "
                                  "submission (top-level code runs when the submission is "
                                  "loaded: put long computations under `if __name__ == "
                                  "\"__main__\":`)")
            elif closing:
                result.failure = "the students' output was still held open by a process " \
                                 "of the submission"
            elif group is not None and pending:
                result.failed_test = pending[0]
                result.failure = f"time limit of {limits.test_timeout_s:g} s exceeded " \
                                 f"while running test {pending[0]}"
            _killpg(proc.pid)
            return
        ready, _, _ = select.select([r_fd], [], [],
                                    max(0.0, min(0.5, min(deadline, end) - now)))
        if not ready:
            continue
        data = os.read(r_fd, 1 << 20)
        if not data:
            break
        try:
            frames.feed(data)
            for header, body in frames.messages():
                if isinstance(header, WireError):
                    if group is not None and pending and not closing:  # the running test's
                        test = pending.pop(0)
                        result.tests[test] = TestMessage({}, {}, "the result could not be "
                                                         f"read: {header}")
                        deadline = time.monotonic() + limits.test_timeout_s
                    continue
                kind = header.get("kind")
                if kind == "setup" and not setup_seen and result.loaded is None:
                    setup_seen = True  # the child's own, sent before the submission runs
                    notes = header.get("notes")
                    result.notes = [str(n)[:500] for n in notes[:50]] \
                        if isinstance(notes, list) else []
                elif kind == "loaded" and result.loaded is None:  # first one only, as above
                    result.loaded = header
                    if header.get("error"):
                        break
                    next_group()
                elif kind == "test" and group is not None and pending \
                        and header.get("test") == pending[0]:
                    test = pending.pop(0)
                    try:
                        result.tests[test] = TestMessage(header, load_arrays(body, budgets[test]))
                    except WireError as err:
                        result.tests[test] = TestMessage(header, {}, "the result could not be "
                                                         f"read: {err}")
                    if on_test is not None:
                        on_test(test, result.tests[test])
                    deadline = time.monotonic() + limits.test_timeout_s
                elif kind == "group_done" and group is not None and not closing \
                        and header.get("group") == group.name:
                    if pending:
                        result.failed_test = pending[0]
                        status = header.get("status")
                        code = -(status & 0x7F) if isinstance(status, int) and status & 0x7F \
                            else (status >> 8 if isinstance(status, int) else None)
                        result.failure = f"the grading process {_describe_exit(code)}"
                        _killpg(proc.pid)
                        return
                    if after_group is not None:
                        after_group()
                    next_group()
                elif kind == "closed_visible" and closing and closed_visible is False:
                    closed_visible = None  # now wait for the output pipe's end of file
        except (WireError, ValueError, UnicodeDecodeError, OSError, KeyError) as err:
            result.failure = f"the results channel was corrupted ({err})"
            result.failed_test = pending[0] if group is not None and pending else None
            _killpg(proc.pid)
            return
    try:
        code = proc.wait(timeout=max(0.1, min(min(deadline, end) - time.monotonic(), 2.0)))
    except subprocess.TimeoutExpired:
        code = None
    if result.loaded is not None and result.loaded.get("error"):
        return
    if (queue or group is not None) and result.failure is None:
        result.failure = f"the grading process {_describe_exit(code)}"
        result.failed_test = pending[0] if group is not None and pending else None


class LimitExceeded(Exception):
    """:func:`run_limited`'s work ran past its time or memory limit, or crashed."""


def run_limited(fn, *args, seconds: float, memory_mb: int,
                result_bytes: int | None = None):
    """``fn(*args)`` in a forked copy of this process, under ``seconds`` of wall-clock time
    and ``memory_mb`` of address space beyond what this process uses now.

    For parent-side work on child data whose cost the data decides (the symbolic check of
    the student's rules); within :func:`submission_budget`, ``seconds`` is also cut to what is left.
    The result must be JSON data; it comes back through a pipe (at most ``result_bytes``
    of JSON, default :data:`_LIMITED_RESULT_BYTES`).  Raises
    :class:`LimitExceeded` with the reason when the work is killed, runs out of memory or
    fails.
    """
    return start_limited(fn, *args, seconds=seconds, memory_mb=memory_mb,
                         result_bytes=result_bytes).result()


# pids of the forked copies of start_limited still running: this process's own work, which
# the clean-up after a child (_kill_tree) leaves alone
_limited_pids: set = set()


class Limited:
    """A :func:`start_limited` computation under way: :meth:`result` waits for it (a copy
    still computing past its deadline, counted from the start, is stopped; one that ended
    in time is read whenever asked), :meth:`cancel` ends it."""

    def __init__(self, pid: int, fd: int, seconds: float, memory_mb: int,
                 result_bytes: int | None = None):
        self.pid, self.fd, self.seconds, self.memory_mb = pid, fd, seconds, memory_mb
        self.result_bytes = result_bytes or _LIMITED_RESULT_BYTES
        self.deadline = time.monotonic() + seconds
        self.done = False  # result taken or cancelled
        self.exited = False  # the forked copy is reaped (its pid may be reused: never kill it)
        self.status: int | None = None  # its wait status, once reaped

    def running(self) -> bool:
        """Whether the forked copy is still computing (reaps it once it has ended; what it
        wrote stays readable in the pipe)."""
        if not self.exited:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # pragma: no cover
                pid, status = self.pid, None
            if pid:
                self._reaped(status)
        return not self.exited

    def _reaped(self, status) -> None:
        self.exited, self.status = True, status
        _limited_pids.discard(self.pid)

    def result(self):
        if self.done:
            raise RuntimeError("the result of this computation was already taken")
        chunks, size = [], 0
        try:
            while True:
                if self.running():
                    left = self.deadline - time.monotonic()
                    if left <= 0:
                        raise LimitExceeded(f"it takes more than {self.seconds:g} s")
                    wait = min(left, 0.5)
                else:  # ended: all it wrote is in the pipe, and nothing else may hold it
                    wait = 1.0
                ready, _, _ = select.select([self.fd], [], [], wait)
                if not ready:
                    if self.exited:
                        break
                    continue
                data = os.read(self.fd, 1 << 20)
                if not data:
                    break
                size += len(data)
                if size > self.result_bytes:
                    raise LimitExceeded("its result is too large")
                chunks.append(data)
        finally:
            self.cancel()
        status = self.status
        if status is None or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            if status is not None and os.WIFSIGNALED(status) \
                    and os.WTERMSIG(status) == signal.SIGXCPU:
                raise LimitExceeded(f"it takes more than {self.seconds:g} s")
            raise LimitExceeded("it was killed (out of memory, or it crashed)")
        try:
            out = json.loads(b"".join(chunks))
        except ValueError:
            raise LimitExceeded("it was killed (out of memory, or it crashed)") from None
        if not isinstance(out, dict):
            raise LimitExceeded("it returned no result")
        if "error" in out:
            raise LimitExceeded(str(out["error"])[:200])
        return out["ok"]

    def cancel(self) -> None:
        if self.done:
            return
        self.done = True
        os.close(self.fd)
        if self.exited:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # pragma: no cover
            status = None
        self._reaped(status)


_LIMITED_RESULT_BYTES = 1 << 20
"""The most a limited computation may send back (its JSON result)."""


def start_limited(fn, *args, seconds: float, memory_mb: int,
                  result_bytes: int | None = None) -> Limited:
    """Start :func:`run_limited`'s work and return at once, so that this process can go on
    (reading a child's next answers) while the forked copy computes."""
    import resource

    if _submission_end:  # within a submission's budget (see submission_budget)
        seconds = max(0.1, min(seconds, _submission_end[-1] - time.monotonic()))
    r, w = os.pipe()
    parent = os.getpid()
    pid = _fork()  # (the copy runs SymPy only, whose locks are the GIL's, and a copy that
    # hangs is killed at ``seconds``)
    if pid == 0:  # pragma: no cover - the forked copy; it only computes and writes
        code = 0
        try:
            os.close(r)
            # it runs while the child does: not dumpable, its /proc entries (the result
            # pipe among its descriptors) are closed to a child that has the grader's uid
            _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
            # and it dies with the grader (with the thread that forked it, strictly: the one
            # that runs the grading and collects or cancels every check before it returns):
            # killed (SIGKILL, no clean-up), a grader left its checks computing to their CPU
            # limit, holding its claim on the child's uid
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)
            with open("/proc/self/status") as f:
                vm = next(int(ln.split()[1]) for ln in f if ln.startswith("VmSize:")) << 10
            cap = vm + (memory_mb << 20)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            # the parent reads the result (and stops it) only when asked: the CPU limit
            # ends a copy that computes past its time even while nobody is waiting
            cpu = int(seconds) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            try:
                out = {"ok": fn(*args)}
            except MemoryError:
                out = {"error": f"it needs more than {memory_mb} MB"}
            except RecursionError:
                out = {"error": "it is nested too deeply"}
            data = json.dumps(out).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except BaseException:  # noqa: BLE001
            code = 70
        os._exit(code)
    os.close(w)
    _limited_pids.add(pid)
    return Limited(pid, r, seconds, memory_mb, result_bytes)
