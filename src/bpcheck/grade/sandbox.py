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


@dataclass
class TestMessage:
    """What the child reported for one test: a plain JSON header and checked arrays."""

    header: dict
    arrays: dict


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


def library_dirs(names) -> dict:
    """Real folders (or files) of the top-level modules ``names`` and of every distribution
    they require, with their bundled ``.libs`` folders: what the child may import."""
    from importlib import metadata

    top_to_dists = metadata.packages_distributions()
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
    return out


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
                forbidden=FORBIDDEN, preimport=PREIMPORT, extra_plan=None) -> SessionRun:
    """Load ``source`` once in a child and run ``groups`` in order, each in a forked process.

    ``groups``: :class:`Group` s, the visible ones first; a group's entries and inputs
    are written to the child only when it runs, and
    the first group students do not see runs only after the child has closed the
    students' output and no process holds it any more.  ``functions``: names the
    submission must define.  Returns what the child reported, whatever it did.
    """
    from .child.wire import frame

    started = time.monotonic()
    uid = pick_uid(limits)
    box = tempfile.mkdtemp(prefix="bpcheck-grade-")
    result = SessionRun()
    proc = None
    readers = []
    fds = []
    try:
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
        if uid is not None:
            os.chown(work, uid, uid)
        exe = os.path.realpath(sys.executable)
        keep = [box, exe, os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                *lib_dirs.values()]
        load_s = limits.load_timeout_s if load_timeout_s is None else load_timeout_s
        r_fd, w_fd = os.pipe()
        c_r, c_w = os.pipe()
        h_r, h_w = os.pipe()
        fds = [r_fd, w_fd, c_r, c_w, h_r, h_w]
        plan = {
            "functions": list(functions), "box": box, "libs": libs,
            "fallback_work": work, "keep": keep, "hide": _hidden_paths(hide, forbidden),
            "namespaces": limits.namespaces, "uid": uid, "memory_mb": limits.memory_mb,
            "file_mb": limits.file_mb, "tmp_mb": limits.tmp_mb, "nproc": limits.processes,
            "cpu_s": int(load_s + limits.test_timeout_s
                         * max(1, sum(len(g.tests) for g in groups))) + 1,
            "forbidden": list(forbidden), "preimport": list(preimport), "result_fd": w_fd,
            "command_fd": c_r, "hidden_output_fd": h_w, "kill_others": uid is not None,
            "max_terms": 2000, "max_degree": 8, **(extra_plan or {}),
        }
        with open(os.path.join(box, "plan.json"), "w") as f:
            json.dump(plan, f)
        for name in os.listdir(box):
            if name not in ("work", "libs", "harness"):
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
        _converse(proc, r_fd, c_w, result, limits, groups, load_s, visible_out, frame)
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
            for stream in (proc.stdout, readers[1].stream):
                try:
                    stream.close()
                except OSError:  # pragma: no cover
                    pass
        shutil.rmtree(box, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _converse(proc, r_fd, c_w, result: SessionRun, limits: Limits, groups, load_s,
              visible_out, frame) -> None:
    """Read the child's messages, send it its groups one at a time, keep the deadlines."""
    frames = Frames(limits.result_mb << 20)
    deadline = time.monotonic() + load_s
    queue = list(groups)
    group = None  # the group running now
    pending: list = []
    closing = False
    closed_visible = False
    setup_seen = False

    def next_group():
        nonlocal group, pending, deadline, closing
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
        if now > deadline:
            if result.loaded is None:
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
                                 f"while test {pending[0]}"
            _killpg(proc.pid)
            return
        ready, _, _ = select.select([r_fd], [], [], max(0.0, min(0.5, deadline - now)))
        if not ready:
            continue
        data = os.read(r_fd, 1 << 20)
        if not data:
            break
        try:
            frames.feed(data)
            for header, arrays in frames.messages():
                kind = header.get("kind")
                if kind == "setup" and not setup_seen:  # the child's, sent before the
                    setup_seen = True                     # submission runs; later ones are forged
                    notes = header.get("notes")
                    result.notes = [str(n)[:500] for n in notes[:50]] \
                        if isinstance(notes, list) else []
                elif kind == "loaded" and result.loaded is None:  # first one only, as above
                    result.loaded = header
                    if header.get("error"):
                        break
                    next_group()
                elif kind == "test" and group is not None:
                    test = header.get("test")
                    if test in pending and test not in result.tests:
                        result.tests[test] = TestMessage(header, arrays)
                        pending.remove(test)
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
                    next_group()
                elif kind == "closed_visible" and closing and closed_visible is False:
                    closed_visible = None  # now wait for the output pipe's end of file
        except (ValueError, UnicodeDecodeError, OSError, KeyError) as err:
            result.failure = f"the results channel was corrupted ({err})"
            result.failed_test = pending[0] if group is not None and pending else None
            _killpg(proc.pid)
            return
    try:
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    if result.loaded is not None and result.loaded.get("error"):
        return
    if (queue or group is not None) and result.failure is None:
        result.failure = f"the grading process {_describe_exit(code)}"
        result.failed_test = pending[0] if group is not None and pending else None
