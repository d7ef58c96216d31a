"""The child's entry point: read the plan, lock down, load the submission, run the tests.

The parent copies this package into the child's scratch folder and starts it as
``python -I -S -B harness/child/__main__.py plan.json``; it never imports bpcheck (bpcheck is
hidden from the child) and uses the standard library and NumPy only (SymPy for the
symbolic rules).  It is trusted code that runs *before* the submission, in this order:

1. read the plan and the submission's source into memory;
2. die with the grader (:func:`.jail.die_with_parent`), join the memory cgroup and the
   cpu cgroup of one CPU the parent made, where it could make them
   (:func:`.jail.join_cgroup`, :func:`.jail.join_cpu_cgroup`), and enter the namespaces
   (:func:`.jail.enter`);
3. import NumPy (and SymPy), JAX and PyTorch where the homework allows them, and the usual
   standard-library modules, then build the
   allow-listed file system view from what is loaded (:func:`.jail.build_view`);
4. install an import blocker for bpcheck, JAX, PyTorch and other autodiff libraries;
5. set resource limits (address space beyond what is loaded now, CPU time, processes,
   file size);
6. drop to an unprivileged uid when started as root (irreversible), die with the grader
   again (the drop clears that), join a new session keyring of its own
   (:func:`.jail.leave_session_keyring`) and install the seccomp filter
   (:func:`.jail.forbid_user_namespaces`: no user namespaces, no keyrings, no other ABI);
7. load the submission once (:mod:`.load`: a notebook cell by cell, each within its time
   budget);
8. for each group of tests the parent sends (its inputs come with it), fork: the forked
   process calls the student's functions on the group's inputs (:mod:`.run`) and sends
   the results in the format of :mod:`.wire`.  Before the first group that students do
   not see, the visible output is closed (``close_visible``), so what a hidden test
   prints can only reach the instructor's view.

A submission that tampers with this code, the channel or NumPy can only change the
arrays it is graded on, which it could have returned anyway: the parent re-checks every
array and computes every score itself.
"""

import sys

from . import jail
from .jail import _Blocker, _drop_privileges, _report_exposed, _set_limits


def main():
    import io
    import json
    import os
    import time

    plan_path = sys.argv[1]
    with open(plan_path) as f:
        plan = json.load(f)
    box = plan["box"]
    with open(os.path.join(box, "submission.py"), encoding="utf-8") as f:
        source = f.read()
    channel = plan["result_fd"]
    notes = []

    jail.die_with_parent(plan["grader_pid"])
    jail.join_cpu_cgroup(plan, notes, jail.join_cgroup(plan, notes))
    isolated = jail.enter(plan, notes)

    sys.path[:0] = [plan["libs"]]
    import numpy as np

    from . import load, run, wire

    # Inputs arrive later, as .npz: one round trip now imports every module np.load needs
    # (zipfile, encodings.cp437) while the interpreter's files can still be read.
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(1))
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as npz:
        npz["x"]
    for m in plan["preimport"]:
        try:
            __import__(m)
        except Exception:  # noqa: BLE001 - a missing optional module is fine
            pass
    if "sympy" in sys.modules:
        run.warm_up_rules()
    # matplotlib, where allowed, is imported by the submission itself, headless: the Agg
    # backend draws nothing on plt.show(), which would only warn that it cannot show.
    os.environ["MPLBACKEND"] = "Agg"
    import warnings

    warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
    drivers = {}
    for name, driver_source in plan.get("drivers", {}).items():
        namespace = {"__name__": f"driver_{name}"}
        exec(compile(driver_source, f"<driver of {name}>", "exec"), namespace)
        drivers[name] = namespace["drive"]

    # the allow-listed view is built from what is loaded now; nothing else exists after it
    work = jail.build_view(plan, notes) if isolated else None
    hidden_by_mounts = work is not None
    work = work or plan["fallback_work"]
    blocker = _Blocker(plan["forbidden"], str(plan.get("allowed_text", ""))[:500]
                       or "numpy and the standard library only")
    sys.meta_path.insert(0, blocker)
    _set_limits(plan, notes)
    parent = os.getppid()  # (the grader; with namespaces the init)
    try:
        _drop_privileges(plan, notes, userns=isolated and os.geteuid() != 0)
    except OSError as err:
        notes.append(f"user: could not drop privileges ({err})")
    jail.die_with_parent(parent)  # (the drop cleared it)
    jail.leave_session_keyring(notes)
    jail.forbid_user_namespaces(notes)
    if not hidden_by_mounts:
        _report_exposed(plan, notes)
    os.chdir(work)
    os.environ["HOME"] = work
    os.environ["MPLCONFIGDIR"] = os.path.join(work, "matplotlib")

    # Everything used later is bound now, before the submission can patch it.
    send = wire.sender(channel)
    receive = wire.receiver(plan["command_fd"])
    describe_error = load.error_describer(str(plan.get("allowed_text", ""))[:500])
    forbidden_loaded, forbidden_seen = load.watchers(plan, blocker)
    _monotonic = time.monotonic
    _fork, _exit, _waitpid, _dup2, _close = os.fork, os._exit, os.waitpid, os.dup2, os.close
    _listdir, _kill, _WNOHANG, _me, _sleep = os.listdir, os.kill, os.WNOHANG, os.getpid(), time.sleep
    _flush = run.flush_stdio  # bound at the harness's import

    _load_npz, _BytesIO = np.load, io.BytesIO
    _sorted, _int = sorted, int

    module = load.new_module(box)
    tests = run.runner(plan, module, drivers, describe_error)
    send({"kind": "setup", "notes": notes})
    restore = load.restorer(module)

    t0 = _monotonic()
    load_error, cell_errors, forbidden = load.load(plan, source, module, restore,
                                                   describe_error, blocker,
                                                   forbidden_loaded, forbidden_seen)
    missing = [n for n in plan["functions"] if not callable(module.__dict__.get(n))]
    send({"kind": "loaded", "error": load_error, "missing": missing,
          "seconds": _monotonic() - t0, "forbidden": forbidden,
          "cell_errors": cell_errors[:20]})
    if load_error is not None:
        return

    def kill_others():
        """Every other process of this (dedicated) uid, or of the PID namespace (its init
        excepted), killed, and this process's own ended children reaped: what a group of
        tests left holds the uid's process limit and may hold the students' output.  An
        ordinary user's grader without namespaces kills the orphans it adopted instead."""
        if plan.get("kill_others") or isolated:
            try:
                _kill(-1, 9)
            except OSError:
                pass
        for _ in range(200):  # namespace: until init and this process reaped them (1 s at most)
            while True:
                try:
                    if _waitpid(-1, _WNOHANG)[0] == 0:
                        break
                except OSError:  # no child left
                    break
            if not isolated:
                break
            try:
                if not [n for n in _listdir("/proc") if n.isdigit() and _int(n) not in (1, _me)]:
                    break
            except OSError:
                break
            _sleep(0.005)

    def close_visible_output():
        """From now on print goes to the hidden-output pipe; every other descriptor of
        this process is closed and every other process of this uid killed, so that no
        process holds the students' output when hidden inputs arrive."""
        try:
            _flush()
        except BaseException:  # noqa: BLE001
            pass
        hidden_out = plan["hidden_output_fd"]
        _dup2(hidden_out, 1)
        _dup2(hidden_out, 2)
        keep = {0, 1, 2, channel, plan["command_fd"]}
        try:
            open_fds = [_int(name) for name in _listdir("/proc/self/fd")]
        except OSError:  # no /proc in the view: every descriptor the limits allow
            open_fds = list(range(64))
        for fd in open_fds:
            if fd not in keep:
                try:
                    _close(fd)
                except OSError:
                    pass
        kill_others()

    import gc

    gc.freeze()  # the loaded state stays shared with the forks (no copy-on-write by the gc)

    # One forked process per group of tests, in the parent's order (the visible groups
    # first); a group's inputs arrive only when it runs.
    while True:
        header, body = receive()
        kind = header.get("kind")
        if kind == "close_visible":
            close_visible_output()
            send({"kind": "closed_visible"})
            continue
        if kind != "group":
            break
        try:
            _flush()  # or each fork would print the buffered output again
        except BaseException:  # noqa: BLE001
            pass
        pid = _fork()
        if pid == 0:
            code = 0
            try:
                inputs = {}
                if body:
                    with _load_npz(_BytesIO(body), allow_pickle=False) as npz:
                        inputs = {k: npz[k] for k in npz.files}
                group = [(t, header["specs"][t]) for t in header["tests"]]
                run.run_tests(group, inputs, tests, send, restore, describe_error,
                              forbidden_seen)
            except BaseException:  # noqa: BLE001 - the child's own failure: status 70
                import traceback

                traceback.print_exc(limit=3)
                code = 70
            try:
                _flush()
            except BaseException:  # noqa: BLE001
                pass
            _exit(code)
        del body
        _, status = _waitpid(pid, 0)
        kill_others()  # before the next group: nothing of this one outlives it
        send({"kind": "group_done", "group": header.get("group"), "status": status})
    send({"kind": "done"})


def entry():
    """Run :func:`main` and leave with ``os._exit``: status 0, or 70 when the child's own
    code failed (the traceback goes to the captured output)."""
    import os as _os

    _flushes = [_stream.flush for _stream in (sys.stdout, sys.stderr)]
    _leave = _os._exit  # bound before the submission runs: one that patches os._exit (a
    # thread of its own patched it again after each restore) got the last word here
    _code = 0
    try:
        main()
    except BaseException:  # noqa: BLE001 - a harness failure is reported by the exit status
        import traceback as _tb

        try:
            _tb.print_exc(limit=3)
        except BaseException:  # noqa: BLE001
            pass
        _code = 70
    for _flush in _flushes:  # the streams bound before the submission ran: sys.stdout
        try:  # read now could be one a thread of the submission set again, whose flush
            _flush()  # would run its code here, after the last kill of the child's processes
        except BaseException:  # noqa: BLE001
            pass
    _leave(_code)  # skip interpreter teardown, which the submission may have booby-trapped
