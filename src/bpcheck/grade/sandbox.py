"""Run student code in a child process, under limits, and collect what it returns.

The parent's side of :mod:`bpcheck.grade.child`.  One child runs one exercise (all of
its tests, each with its own deadline), so nothing an exercise-1 function does in its
process can touch exercise 2's.  The child package is copied into a scratch folder and started as
``python -I -S child/__main__.py``
(no site-packages, no ``PYTHONPATH``, no user site; only NumPy, SymPy and mpmath are put
on its path, through a folder of links), with a minimal environment, its output capped
and never parsed, and its results read from a dedicated pipe as length-prefixed JSON
headers and ``.npz`` archives loaded with ``allow_pickle=False``.

When the grader runs as root the child drops to an unused uid (one per grading
process, so parallel children cannot signal one another) after its trusted setup; after
each run every process left with that uid is killed, which ends fork bombs and
daemonised children.  Otherwise the child's process group is killed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .child.wire import Frames

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

@dataclass
class Limits:
    """Per-child limits; see :class:`bpcheck.grade.config.SandboxConfig`."""

    load_timeout_s: float = 30.0
    test_timeout_s: float = 10.0
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


@dataclass
class TestMessage:
    """What the child reported for one test: a plain JSON header and checked arrays."""

    header: dict
    arrays: dict


@dataclass
class ChildRun:
    """The outcome of one child process."""

    notes: list = field(default_factory=list)
    loaded: dict | None = None
    tests: dict = field(default_factory=dict)
    failure: str | None = None  # why the run ended before "done"; applies to the test in progress
    stdout: str = ""
    seconds: float = 0.0


def _library_dirs():
    """Real folders of the allowed libraries (and numpy's bundled shared libraries)."""
    out = {}
    for name in ALLOWED_LIBRARIES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        pkg = os.path.realpath(list(spec.submodule_search_locations)[0])
        out[name] = pkg
        libs = pkg + ".libs"
        if os.path.isdir(libs):
            out[name + ".libs"] = libs
    return out


def _hidden_paths(extra=()):
    """Folders the child must not see: bpcheck and the forbidden libraries."""
    paths = [os.path.realpath(os.path.dirname(os.path.dirname(__file__)))]  # the bpcheck package
    for name in FORBIDDEN[1:]:
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

    Unless the config names one, a uid with no passwd entry in 61000..64999, chosen from
    this process's id so that parallel graders use different uids.
    """
    if os.geteuid() != 0 or not limits.drop_privileges:
        return None
    if limits.uid is not None:
        return int(limits.uid)
    start = os.getpid() % 4000
    for i in range(4000):
        uid = 61000 + (start + i) % 4000
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    return 65534  # pragma: no cover


def _kill_uid(uid: int) -> None:
    """SIGKILL every process whose real uid is ``uid``, until none is left."""
    for _ in range(50):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            ruid = int(line.split()[1])
                            break
                    else:
                        continue
            except OSError:
                continue
            if ruid == uid:
                found = True
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return
        time.sleep(0.01)


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
               "SIGSEGV": " (crashed)"}.get(name, "")
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


def run_child(source: str, exercise: int, functions: list, tests: list, run: list,
              inputs: dict, limits: Limits, hide=(), extra_plan=None) -> ChildRun:
    """Run the harness once for ``exercise`` on the tests numbered in ``run``.

    ``tests``: per-test plan entries (argument keys, expected outputs' names); ``inputs``:
    the arrays they name.  Returns what the child reported, whatever it did.
    """
    started = time.monotonic()
    uid = pick_uid(limits)
    box = tempfile.mkdtemp(prefix="bpcheck-grade-")
    result = ChildRun()
    proc = None
    reader = None
    r_fd = w_fd = None
    try:
        os.chmod(box, 0o755)
        _copy_child(box)
        with open(os.path.join(box, "submission.py"), "w", encoding="utf-8") as f:
            f.write(source)
        np.savez(os.path.join(box, "inputs.npz"), **inputs)
        libs = os.path.join(box, "libs")
        os.mkdir(libs)
        lib_dirs = _library_dirs()
        for name, target in lib_dirs.items():
            os.symlink(target, os.path.join(libs, name))
        work = os.path.join(box, "work")
        os.mkdir(work, 0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        exe = os.path.realpath(sys.executable)
        keep = [box, exe, os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                *lib_dirs.values()]
        load_s = limits.load_timeout_s
        plan = {
            "exercise": exercise, "functions": functions, "tests": tests, "run": list(run),
            "box": box, "libs": libs, "fallback_work": work, "keep": keep,
            "hide": _hidden_paths(hide), "namespaces": limits.namespaces, "uid": uid,
            "memory_mb": limits.memory_mb, "file_mb": limits.file_mb, "tmp_mb": limits.tmp_mb,
            "nproc": limits.processes,
            "cpu_s": int(load_s + limits.test_timeout_s * max(1, len(run))) + 1,
            "forbidden": list(FORBIDDEN), "preimport": list(PREIMPORT), "result_fd": None,
            "max_terms": 2000, "max_degree": 8, **(extra_plan or {}),
        }
        r_fd, w_fd = os.pipe()
        plan["result_fd"] = w_fd
        with open(os.path.join(box, "plan.json"), "w") as f:
            json.dump(plan, f)
        for name in os.listdir(box):
            if name not in ("work", "libs", "harness"):
                os.chmod(os.path.join(box, name), 0o644)
        proc = subprocess.Popen(
            [exe, "-I", "-S", "-B", os.path.join(box, _CHILD_MAIN), os.path.join(box, "plan.json")],
            cwd=box, env=_child_env(work), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, pass_fds=(w_fd,), start_new_session=True, close_fds=True)
        os.close(w_fd)
        w_fd = None
        reader = _OutputReader(proc.stdout, limits.output_kb * 1024)
        reader.start()
        _collect(proc, r_fd, result, limits, run, exercise)
    finally:
        if proc is not None:
            if proc.poll() is None:
                _killpg(proc.pid)
            if uid is not None:
                _kill_uid(uid)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            _killpg(proc.pid)
        for fd in (r_fd, w_fd):
            if fd is not None:
                os.close(fd)
        if reader is not None:
            reader.join(timeout=2)
            result.stdout = reader.text()
            try:
                proc.stdout.close()
            except OSError:  # pragma: no cover
                pass
        shutil.rmtree(box, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _collect(proc, r_fd, result: ChildRun, limits: Limits, run: list, exercise: int) -> None:
    frames = Frames(limits.result_mb << 20)
    deadline = time.monotonic() + limits.load_timeout_s
    pending = list(run)
    finished = False
    setup_seen = False
    while True:
        now = time.monotonic()
        if now > deadline:
            what = "loading the submission" if result.loaded is None else \
                f"test {exercise}.{pending[0] + 1}" if pending else "finishing"
            limit = limits.load_timeout_s if result.loaded is None else limits.test_timeout_s
            result.failure = f"time limit of {limit:g} s exceeded while {what}"
            if result.loaded is None:
                result.failure += (" (top-level code runs when the submission is loaded: put "
                                   "long computations under `if __name__ == \"__main__\":`)")
            _killpg(proc.pid)
            return
        ready, _, _ = select.select([r_fd], [], [], min(0.5, deadline - now))
        if not ready:
            continue
        data = os.read(r_fd, 1 << 20)
        if not data:
            break
        try:
            frames.feed(data)
            for header, arrays in frames.messages():
                kind = header.get("kind")
                if kind == "setup" and not setup_seen:  # the harness's, sent before the
                    setup_seen = True                     # submission runs; later ones are forged
                    notes = header.get("notes")
                    result.notes = [str(n)[:500] for n in notes[:50]] \
                        if isinstance(notes, list) else []
                elif kind == "loaded" and result.loaded is None:  # first one only, as above
                    result.loaded = header
                    deadline = time.monotonic() + limits.test_timeout_s
                elif kind == "test":
                    test = header.get("test")
                    if test in pending and test not in result.tests:
                        result.tests[test] = TestMessage(header, arrays)
                        pending.remove(test)
                    deadline = time.monotonic() + limits.test_timeout_s
                elif kind == "done":
                    finished = True
        except (ValueError, UnicodeDecodeError, OSError, KeyError) as err:
            result.failure = f"the results channel was corrupted ({err})"
            _killpg(proc.pid)
            return
    try:
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    if not finished and result.failure is None:
        if result.loaded is not None and (result.loaded.get("error") or result.loaded.get("missing")):
            return
        result.failure = f"the grading process {_describe_exit(code)}"
