"""The child side of the grader: run one exercise of a submission in a locked-down process.

This file is copied into the child's scratch folder and run as a script with
``python -I -S harness.py plan.json``; it never imports bpcheck (bpcheck is hidden from
the child) and it must stay self-contained, standard library and NumPy only (SymPy for
exercise 4).  It is trusted code that runs *before* the submission, in this order:

1. read the plan, the submission's source and the test inputs into memory;
2. isolate: new network and mount namespaces where the kernel allows it, a small
   tmpfs over ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (the scratch folder is bound back
   read-only), empty mounts over bpcheck and the forbidden libraries, ``/dev/null``
   over the instructor's config;
3. import NumPy (and SymPy) and the usual standard-library modules;
4. install an import blocker for bpcheck, JAX, PyTorch and other autodiff libraries;
5. set resource limits (address space, CPU time, processes, file size);
6. drop to an unprivileged uid when started as root (irreversible);
7. load the submission and call the exercise's functions on each test's inputs.

What goes back to the parent, on the file descriptor named in the plan, is a stream of
messages: an 8-byte length and a JSON header made of plain numbers and strings, then an
8-byte length and an ``.npz`` archive written with ``np.savez`` (no pickles).  The parent
trusts none of it: it re-checks every array and computes every score itself.  A
submission that tampers with this file, the channel or NumPy can only change the arrays
it is graded on, which it could have returned anyway.
"""

import sys


def _setup_isolation(plan, notes):
    """Namespaces and mounts; best effort, each refusal recorded in ``notes``."""
    import ctypes
    import os
    import stat

    if not plan.get("namespaces", True):
        notes.append("namespaces: not requested")
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
    MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18

    flags = CLONE_NEWNS | CLONE_NEWNET
    if os.geteuid() != 0:
        flags |= CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        notes.append(f"namespaces: unshare refused ({os.strerror(err)}); "
                     "the child keeps the host's network and file system view")
        return None
    notes.append("network: none (new network namespace, no interfaces up)")

    def mount(src, target, fstype, mflags, data=None):
        r = libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(),
                       mflags, data and data.encode())
        if r != 0:
            raise OSError(ctypes.get_errno(), f"mount {target}")

    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as err:
        notes.append(f"mounts: not private ({err}); file system view unchanged")
        return None

    keep = [os.path.realpath(p) for p in plan["keep"] if os.path.exists(p)]

    def cover(directory, size_mb, mode):
        """A fresh tmpfs over ``directory``; the kept paths under it are bound back."""
        directory = os.path.realpath(directory)
        if not os.path.isdir(directory):
            return False
        inside = sorted({p for p in keep if p.startswith(directory + "/")})
        # keep only the outermost kept paths
        inside = [p for p in inside if not any(p.startswith(q + "/") for q in inside if q != p)]
        fds = [(p, os.open(p, os.O_PATH)) for p in inside]
        mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={int(size_mb)}m,mode={mode:o}")
        for p, fd in fds:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(p, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "wb").close()
            mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            os.close(fd)
        return True

    try:
        # Paths the interpreter needs but that another uid could not traverse (pyenv
        # under /root, say): cover the closed folder and bind back only what is needed.
        closed = []
        for p in keep:
            parts = p.split("/")
            for i in range(2, len(parts)):
                a = "/".join(parts[:i])
                if a and not (os.stat(a).st_mode & stat.S_IXOTH) and a not in closed:
                    closed.append(a)
        for a in closed:
            cover(a, 1, 0o755)
            notes.append(f"mounts: {a} replaced by an empty folder, interpreter bound back")
        tmp_mb = plan["tmp_mb"]
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            if cover(d, tmp_mb, 0o1777):
                notes.append(f"mounts: {d} is a private {tmp_mb} MB tmpfs")
        for p in plan["hide"]:
            if os.path.isdir(p):
                mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1k,mode=0")
            elif os.path.exists(p):
                mount("/dev/null", p, None, MS_BIND)
            else:
                continue
            notes.append(f"mounts: hidden {p}")
        box = plan["box"]
        try:
            mount(None, box, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        except OSError:
            pass
        work = "/tmp/work"
        os.makedirs(work, exist_ok=True)
        os.chmod(work, 0o700)
        if plan.get("uid") is not None and os.geteuid() == 0:
            os.chown(work, plan["uid"], plan["uid"])
        return work
    except OSError as err:
        notes.append(f"mounts: stopped early ({err})")
        return None


def _drop_privileges(plan, notes):
    import os

    if os.geteuid() != 0:
        notes.append(f"user: runs as uid {os.getuid()} (grader not root, no drop)")
        return
    uid = plan.get("uid")
    if uid is None:
        notes.append("user: root (privilege drop disabled by the config)")
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:  # pragma: no cover - the kernel guarantees it
        raise SystemExit("harness: could not drop root")
    notes.append(f"user: unprivileged uid {uid} (dropped from root before the submission ran)")


def _report_exposed(plan, notes):
    """Without the mounts, name each hidden path the submission's uid could still read.

    Run after the privilege drop, so ``os.access`` answers for the uid the submission gets.
    Nothing is hidden then except by file permissions: the Gradescope ``setup.sh`` removes
    other users' access to bpcheck, the libraries and the config for this case.
    """
    import os

    stdlib = os.path.dirname(os.__file__)
    if not os.access(stdlib, os.R_OK | os.X_OK):
        notes.append(f"stdlib: {stdlib} is not readable by the submission's uid; it can import "
                     "only the modules loaded before the drop (install Python where all users "
                     "can read it)")
    for p in plan["hide"]:
        if not os.path.exists(p):
            continue
        need = os.R_OK | os.X_OK if os.path.isdir(p) else os.R_OK
        if os.access(p, need):
            notes.append(f"exposed: {p} is readable by the submission (not hidden by a mount); "
                         "remove other users' access to it (chmod -R o-rwx)")


def _set_limits(plan, notes):
    import resource

    mb = 1 << 20
    limits = [
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_AS", plan["memory_mb"] * mb, plan["memory_mb"] * mb),
        ("RLIMIT_CPU", plan["cpu_s"], plan["cpu_s"] + 1),
        ("RLIMIT_FSIZE", plan["file_mb"] * mb, plan["file_mb"] * mb),
        ("RLIMIT_NPROC", plan["nproc"], plan["nproc"]),
    ]
    for name, soft, hard in limits:
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (ValueError, OSError) as err:
            notes.append(f"limits: {name} not set ({err})")
    notes.append(f"limits: memory {plan['memory_mb']} MB, CPU {plan['cpu_s']} s, "
                 f"files {plan['file_mb']} MB, processes {plan['nproc']}")


class _Blocker:
    """A meta-path finder that refuses the forbidden libraries and remembers the attempt.

    A hostile submission can remove it; that is why the libraries are also hidden by
    mounts, absent from ``sys.path``, and the source is scanned before it runs.
    """

    def __init__(self, forbidden):
        self.forbidden = tuple(forbidden)
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.forbidden:
            if top not in self.attempts:
                self.attempts.append(top)
            raise ImportError(f"{top} is not allowed in submissions (numpy, sympy and the "
                              "standard library only)", name=name)

    find_module = None


def main():
    import io
    import json
    import os
    import struct
    import time
    import traceback
    import types

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

    work = _setup_isolation(plan, notes)
    hidden_by_mounts = work is not None
    work = work or plan["fallback_work"]

    sys.path[:0] = [plan["libs"]]
    import numpy as np

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

    blocker = _Blocker(plan["forbidden"])
    sys.meta_path.insert(0, blocker)
    _set_limits(plan, notes)
    try:
        _drop_privileges(plan, notes)
    except OSError as err:
        notes.append(f"user: could not drop privileges ({err})")
    if not hidden_by_mounts:
        _report_exposed(plan, notes)
    os.chdir(work)
    os.environ["HOME"] = work

    # Everything the harness needs later, bound now, before the submission can patch it.
    _write = os.write
    _dumps = json.dumps
    _savez = np.savez
    _BytesIO = io.BytesIO
    _pack = struct.pack
    _ndarray = np.ndarray
    _type = type
    _isinstance = isinstance
    _float = float
    _np_float64 = np.float64
    _modules = sys.modules
    _monotonic = time.monotonic
    _format_exc = traceback.format_exception_only
    _list, _tuple, _len, _range, _str, _repr, _dict = list, tuple, len, range, str, repr, dict

    def send(header, arrays=None):
        buf = _BytesIO()
        if arrays:
            _savez(buf, **arrays)
        head = _dumps(header).encode()
        body = buf.getvalue()
        msg = _pack(">Q", _len(head)) + head + _pack(">Q", _len(body)) + body
        view = memoryview(msg)
        while view:
            n = _write(channel, view)
            view = view[n:]

    def describe_error(exc):
        text = "".join(_format_exc(_type(exc), exc)).strip()
        return text[:2000]

    def forbidden_loaded():
        return [name for name in plan["forbidden"] if name in _modules]

    def forbidden_seen():
        seen = _list(blocker.attempts)
        for name in forbidden_loaded():
            if name not in seen:
                seen.append(name)
        return seen

    module = types.ModuleType("submission")
    module.__file__ = os.path.join(box, "submission.py")
    sys.modules["submission"] = module
    send({"kind": "setup", "notes": notes})

    # Snapshot every module's namespace (builtins, numpy, json, ...) so that whatever the
    # submission patches is put back after each of its calls, before the harness goes on.
    snapshots = [(m, dict(m.__dict__)) for m in list(sys.modules.values())
                 if getattr(m, "__dict__", None) is not None]

    def restore():
        for mod, snap in snapshots:
            d = mod.__dict__
            for k, v in snap.items():
                if d.get(k, restore) is not v:
                    d[k] = v
        sys.modules["submission"] = module

    t0 = _monotonic()
    load_error, cell_errors = None, []
    cells = plan.get("cells")
    if cells:
        # A notebook runs cell by cell, as "run all" that goes on after an error: a failing
        # cell (the lecture's PyTorch part, a plot) is reported and the next one runs.
        # Imports blocked in a cell cost nothing more: that cell failed.  A forbidden module
        # that is loaded all the same (the blocker bypassed) still zeroes the submission.
        module.__dict__["display"] = lambda *objs, **kwargs: print(*objs)
        for label, cell_source in cells:
            try:
                exec(compile(cell_source, label, "exec"), module.__dict__)
            except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included
                restore()
                cell_errors.append(f"{label} raised {describe_error(exc)}")
        forbidden = forbidden_loaded()
        del blocker.attempts[:]  # tests are charged only for their own attempts
    else:
        try:
            code = compile(source, "submission.py", "exec")
            exec(code, module.__dict__)
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included
            restore()
            load_error = describe_error(exc)
        forbidden = forbidden_seen()
    restore()
    missing = [n for n in plan["functions"] if not callable(module.__dict__.get(n))]
    send({"kind": "loaded", "error": load_error, "missing": missing,
          "seconds": _monotonic() - t0, "forbidden": forbidden,
          "cell_errors": cell_errors[:20]})
    if load_error is not None or missing:
        return

    def pack_value(key, value, arrays, meta):
        """An output value as plain data: exact ndarrays and Python floats only."""
        t = _type(value)
        if t is _ndarray:
            if value.dtype.hasobject:
                meta[key] = {"type": "ndarray", "dtype": "object", "shape": _list(value.shape)}
                return
            arrays[key] = value
            meta[key] = {"type": "ndarray", "dtype": _str(value.dtype),
                         "shape": _list(value.shape)}
        elif t is _float or t is _np_float64:
            arrays[key] = np.array(_float(value))
            meta[key] = {"type": "float" if t is _float else "numpy.float64"}
        else:
            name = _str(getattr(t, "__module__", "?")) + "." + _str(getattr(t, "__qualname__", "?"))
            meta[key] = {"type": name[:200], "subclass": _isinstance(value, _ndarray)}

    def run_numeric(test):
        fname = plan["functions"][0]
        args = []
        for arg in plan["tests"][test]["args"]:
            if arg["kind"] == "array":
                args.append(inputs[arg["key"]].copy())
            elif arg["kind"] == "list":
                args.append([inputs[k].copy() for k in arg["keys"]])
            else:
                args.append(arg["value"])
        result = module.__dict__[fname](*args)
        arrays, meta = {}, {}
        spec = plan["tests"][test]["returns"]
        if _type(result) is not _tuple and _type(result) is not _list:
            return arrays, {"result": {"type": _type(result).__qualname__}}
        meta["result"] = {"type": _type(result).__qualname__, "length": _len(result)}
        for i, (name, kind) in enumerate(spec):
            if i >= _len(result):
                break
            value = result[i]
            if kind == "list":
                if _type(value) is not _list and _type(value) is not _tuple:
                    meta[name] = {"type": _type(value).__qualname__}
                    continue
                meta[name] = {"type": "list", "length": _len(value)}
                for j in _range(min(_len(value), 64)):
                    pack_value(f"{name}/{j}", value[j], arrays, meta)
            else:
                pack_value(name, value, arrays, meta)
        return arrays, meta

    def run_rules(test):
        import sympy

        req = plan["tests"][test]
        arrays, meta = {}, {}
        for r, (rule_name, shape) in enumerate(req["requests"]):
            rule = module.__dict__[rule_name]
            if rule_name == "v_rule":
                K, d_next, d = shape
                V_next = sympy.Matrix(K, d_next, [sympy.Symbol(f"x{i}") for i in _range(K * d_next)])
                o = K * d_next
                B_next = sympy.Matrix(d_next, d, [sympy.Symbol(f"x{o + i}") for i in _range(d_next * d)])
                o += d_next * d
                D = sympy.diag(*[sympy.Symbol(f"x{o + i}") for i in _range(d)])
                nvars = o + d
                out = rule(V_next, B_next, D)
            else:
                K, d, d_prev = shape
                V = sympy.Matrix(K, d, [sympy.Symbol(f"x{i}") for i in _range(K * d)])
                o = K * d
                a_prev = sympy.Matrix(d_prev, 1, [sympy.Symbol(f"x{o + i}") for i in _range(d_prev)])
                nvars = o + d_prev
                out = rule(V, a_prev)
            gens = [sympy.Symbol(f"x{i}") for i in _range(nvars)]
            key = f"r{r}"
            if _isinstance(out, sympy.MatrixExpr) and not _isinstance(out, sympy.MatrixBase):
                out = out.as_explicit()
            if not _isinstance(out, sympy.MatrixBase):
                meta[key] = {"error": f"returned {_type(out).__qualname__}, expected a SymPy Matrix"}
                continue
            rows, cols = out.shape
            meta[key] = {"shape": [int(rows), int(cols)]}
            exps, nums, dens, counts = [], [], [], []
            for entry in out:
                try:
                    poly = sympy.Poly(sympy.expand(entry), *gens)
                except (sympy.PolynomialError, sympy.GeneratorsNeeded, TypeError,
                        ValueError) as exc:
                    meta[key] = {"error": "an entry is not a polynomial in the input "
                                          f"matrices' entries ({_type(exc).__name__})"}
                    break
                if poly.free_symbols_in_domain or not poly.domain.is_QQ and not poly.domain.is_ZZ:
                    meta[key] = {"error": "an entry has coefficients that are not rational "
                                          f"numbers (domain {poly.domain})"}
                    break
                terms = poly.terms()
                if _len(terms) > plan["max_terms"]:
                    meta[key] = {"error": f"an entry has more than {plan['max_terms']} terms"}
                    break
                counts.append(_len(terms))
                for monom, coeff in terms:
                    c = sympy.Rational(coeff)
                    if max(abs(c.p), abs(c.q)) >= 2 ** 62 or max(monom) > plan["max_degree"]:
                        meta[key] = {"error": "coefficient or degree too large"}
                        break
                    exps.append(monom)
                    nums.append(int(c.p))
                    dens.append(int(c.q))
                else:
                    continue
                break
            if "error" in meta[key]:
                continue
            arrays[f"{key}/exps"] = np.array(exps, dtype=np.int64).reshape(-1, nvars)
            arrays[f"{key}/num"] = np.array(nums, dtype=np.int64)
            arrays[f"{key}/den"] = np.array(dens, dtype=np.int64)
            arrays[f"{key}/counts"] = np.array(counts, dtype=np.int64)
        return arrays, meta

    run = run_rules if plan["exercise"] == 4 else run_numeric
    for test in plan["run"]:
        t0 = _monotonic()
        try:
            arrays, meta = run(test)
            error = None
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included
            restore()
            arrays, meta, error = {}, {}, describe_error(exc)
        restore()
        header = {"kind": "test", "test": test, "error": error, "meta": meta,
                  "seconds": _monotonic() - t0, "forbidden": forbidden_seen()}
        try:
            send(header, arrays)
        except BaseException as exc:  # noqa: BLE001
            send({"kind": "test", "test": test, "error": "the outputs could not be sent: "
                  + describe_error(exc), "meta": {}, "seconds": 0.0,
                  "forbidden": forbidden_seen()})
    send({"kind": "done"})


if __name__ == "__main__":
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
