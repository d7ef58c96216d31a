"""The child's entry point: read the plan, lock down, load the submission, run the tests.

The parent copies this package into the child's scratch folder and starts it as
``python -I -S -B harness/child/__main__.py plan.json``; it never imports bpcheck (bpcheck is
hidden from the child) and uses the standard library and NumPy only (SymPy for the
symbolic rules).  It is trusted code that runs *before* the submission, in this order:

1. read the plan, the submission's source and the test inputs into memory;
2. enter the namespaces (:func:`.jail.enter`);
3. import NumPy (and SymPy) and the usual standard-library modules, then build the
   allow-listed file system view from what is loaded (:func:`.jail.build_view`);
4. install an import blocker for bpcheck, JAX, PyTorch and other autodiff libraries;
5. set resource limits (address space, CPU time, processes, file size);
6. drop to an unprivileged uid when started as root (irreversible);
7. load the submission (:mod:`.load`) and call the exercise's functions on each test's
   inputs (:mod:`.run`), sending the results in the format of :mod:`.wire`.

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
    with open(os.path.join(box, "inputs.npz"), "rb") as f:
        inputs_bytes = f.read()
    channel = plan["result_fd"]
    notes = []

    isolated = jail.enter(plan, notes)

    sys.path[:0] = [plan["libs"]]
    import numpy as np

    from . import load, run, wire

    # The test inputs are read now, while every module np.load needs can still be imported.
    with np.load(io.BytesIO(inputs_bytes), allow_pickle=False) as npz:
        inputs = {k: npz[k] for k in npz.files}

    for m in plan["preimport"]:
        try:
            __import__(m)
        except Exception:  # noqa: BLE001 - a missing optional module is fine
            pass
    if plan["exercise"] == 4:
        import sympy  # noqa: F401

    # the allow-listed view is built from what is loaded now; nothing else exists after it
    work = jail.build_view(plan, notes) if isolated else None
    hidden_by_mounts = work is not None
    work = work or plan["fallback_work"]
    blocker = _Blocker(plan["forbidden"])
    sys.meta_path.insert(0, blocker)
    _set_limits(plan, notes)
    try:
        _drop_privileges(plan, notes, userns=isolated and os.geteuid() != 0)
    except OSError as err:
        notes.append(f"user: could not drop privileges ({err})")
    if not hidden_by_mounts:
        _report_exposed(plan, notes)
    os.chdir(work)
    os.environ["HOME"] = work

    # Everything used later is bound now, before the submission can patch it.
    send = wire.sender(channel)
    describe_error = load.error_describer()
    forbidden_loaded, forbidden_seen = load.watchers(plan, blocker)
    _monotonic = time.monotonic

    module = load.new_module(box)
    tests = run.runner(plan, module, inputs)
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
    if load_error is not None or missing:
        return
    run.run_tests(plan, tests, send, restore, describe_error, forbidden_seen)
    send({"kind": "done"})


def entry():
    """Run :func:`main` and leave with ``os._exit``: status 0, or 70 when the child's own
    code failed (the traceback goes to the captured output)."""
    import os as _os

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
    for _stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            _stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    _os._exit(_code)  # skip interpreter teardown, which the submission may have booby-trapped
