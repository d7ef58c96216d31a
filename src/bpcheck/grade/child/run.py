"""Run the tests in the child: call the submission's functions on the inputs of each test
and send back what they returned, as plain data.  Standard library and NumPy only (SymPy
for the symbolic rules).

Outputs go back as exact ``ndarray`` s and Python floats; anything else is described by its
type name only.  The parent computes every score.
"""

import _thread
import os
import sys
import time

import numpy as np

from .wire import TEXT_MAX

PRINTED_MAX = TEXT_MAX
"""Bytes of what one test printed that are kept for that test's own report (a header's
string holds at most ``TEXT_MAX`` characters)."""

HELD_WAIT_S = 0.1
"""Seconds a test's output held open by a process it started is waited for (a daemon that a
test leaves holds it until the group ends: 1 s here put a test of many such past a 1.5 s
limit)."""

# bound when the harness is imported, before the submission runs (which may patch these)
_pipe, _dup, _dup2, _close, _read, _write = os.pipe, os.dup, os.dup2, os.close, os.read, os.write
_start, _lock = _thread.start_new_thread, _thread.allocate_lock
_stdio_flushes = (sys.stdout.flush, sys.stderr.flush)
_bytearray, _bytes, _memoryview = bytearray, bytes, memoryview


def flush_stdio():
    """Flush ``sys.stdout`` and ``sys.stderr`` as they were when the harness was imported."""
    for flush in _stdio_flushes:
        try:
            flush()
        except BaseException:  # noqa: BLE001 - the submission's own stream state
            pass


def _drain(r, out, kept, done):
    """Read what a test prints from ``r`` until every writer has closed it: the first
    ``PRINTED_MAX`` bytes kept for the test (``kept[1]`` counts the rest), all of it passed
    on to ``out`` (the output the parent reads)."""
    try:
        while True:
            chunk = _read(r, 65536)
            if not chunk:
                break
            room = PRINTED_MAX - len(kept[0])
            if room > 0:
                kept[0] += chunk[:room]
            kept[1] += max(0, len(chunk) - max(room, 0))
            view = _memoryview(chunk)
            while view:
                try:
                    view = view[_write(out, view):]
                except InterruptedError:
                    continue
                except OSError:
                    break
    except BaseException:  # noqa: BLE001
        pass
    finally:
        _close(r)
        done.release()


def captured(fn):
    """Run ``fn()`` (which raises nothing) with what it prints (file descriptors 1 and 2)
    read by a thread of this process; returns ``(printed, left_out)``: the first
    ``PRINTED_MAX`` bytes and the count of the rest.  The output still reaches the parent
    as before.  Without a pipe, a descriptor or a thread to spare (the submission's limits
    reached) ``fn`` runs uncaptured.  A process the test started that keeps the output open
    past the test is waited for ``HELD_WAIT_S``, then left to the group's clean-up."""
    flush_stdio()
    fds = []
    try:
        fds += _pipe()
        fds += [_dup(1), _dup(2)]
    except OSError:
        for fd in fds:
            _close(fd)
        fn()
        return b"", 0
    r, w, out, err = fds
    kept, done = [_bytearray(), 0], _lock()
    done.acquire()
    try:
        _start(_drain, (r, out, kept, done))
    except BaseException:  # noqa: BLE001 - no thread to spare
        for fd in fds:
            _close(fd)
        fn()
        return b"", 0
    try:
        _dup2(w, 1)
        _dup2(w, 2)
    finally:
        _close(w)
    try:
        fn()
    finally:
        flush_stdio()
        for fd, target in ((out, 1), (err, 2)):
            try:
                _dup2(fd, target)
            except OSError:  # the submission closed it: its own output is lost
                pass
        try:
            _close(err)
        except OSError:
            pass
        if done.acquire(timeout=HELD_WAIT_S):  # every writer gone: all read and passed on
            try:
                _close(out)
            except OSError:
                pass
    return _bytes(kept[0]), kept[1]


def runner(plan, module, drivers, describe_error=None):
    """``run(spec, inputs) -> (arrays, meta)`` for one test's plan entry; names bound now,
    before the submission runs.  ``drivers``: ``{name: drive}``, the homework's own code
    that calls the student's (``drive(namespace, *args)``).  ``describe_error``: the
    exception text of :func:`bpcheck.grade.child.load.error_describer`, for a rule that
    raised (its class alone without it)."""
    _ndarray = np.ndarray
    _type = type
    _isinstance = isinstance
    _float = float
    _np_float64, _np_float32 = np.float64, np.float32
    _list, _tuple, _len, _range, _str = list, tuple, len, range, str
    _Exception = Exception
    _class_name = type.__dict__["__name__"].__get__  # type's own slot: no metaclass's property

    def raised(exc):
        try:
            if describe_error is not None:  # the class and the message, as for a call
                return "raised " + _str(describe_error(exc))
            return "raised " + _str(_class_name(_type(exc)))[:200]
        except BaseException:  # noqa: BLE001
            return "raised an exception"

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
        elif t is _np_float32:  # what np.sum of float32 arrays gives: a float32 answer
            arrays[key] = np.array(value, dtype=_np_float32)
            meta[key] = {"type": "numpy.float32"}
        else:
            name = _str(getattr(t, "__module__", "?")) + "." + _str(getattr(t, "__qualname__", "?"))
            meta[key] = {"type": name[:200], "subclass": _isinstance(value, _ndarray)}

    def run_call(spec, inputs):
        fname = spec["function"]
        args = []
        for arg in spec["args"]:
            if arg["kind"] == "array":
                args.append(inputs[arg["key"]].copy())
            elif arg["kind"] == "list":
                args.append([inputs[k].copy() for k in arg["keys"]])
            else:
                args.append(arg["value"])
        if spec.get("driver"):
            result = drivers[spec["driver"]](module.__dict__, *args)
        else:
            result = module.__dict__[fname](*args)
        arrays, meta = {}, {}
        returns = spec["returns"]
        if _len(returns) == 1 and returns[0][1] != "list" \
                and _type(result) is not _tuple and _type(result) is not _list:
            result = (result,)  # one output may be returned bare
        if _type(result) is not _tuple and _type(result) is not _list:
            return arrays, {"result": {"type": _type(result).__qualname__}}
        meta["result"] = {"type": _type(result).__qualname__, "length": _len(result)}
        for i, (name, kind) in enumerate(spec["returns"]):
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

    def run_rules(spec, inputs):
        import sympy

        arrays, meta = {}, {}
        v_name = spec["functions"][0]
        for r, (rule_name, shape) in enumerate(spec["requests"]):
            rule = module.__dict__.get(rule_name)
            if not callable(rule):  # the other rule is still scored
                meta[f"r{r}"] = {"missing": True}
                continue
            if rule_name == v_name:
                K, d_next, d = shape
                V_next = sympy.Matrix(K, d_next, [sympy.Symbol(f"x{i}") for i in _range(K * d_next)])
                o = K * d_next
                B_next = sympy.Matrix(d_next, d, [sympy.Symbol(f"x{o + i}") for i in _range(d_next * d)])
                o += d_next * d
                D = sympy.diag(*[sympy.Symbol(f"x{o + i}") for i in _range(d)])
                nvars = o + d
                args = (V_next, B_next, D)
            else:
                K, d, d_prev = shape
                V = sympy.Matrix(K, d, [sympy.Symbol(f"x{i}") for i in _range(K * d)])
                o = K * d
                a_prev = sympy.Matrix(d_prev, 1, [sympy.Symbol(f"x{o + i}") for i in _range(d_prev)])
                nvars = o + d_prev
                args = (V, a_prev)
            key = f"r{r}"
            try:  # one rule's exception costs that rule only: the other is still scored
                out = rule(*args)
            except _Exception as exc:
                meta[key] = {"error": raised(exc)}
                continue
            gens = [sympy.Symbol(f"x{i}") for i in _range(nvars)]
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
                    # a float is its exact value (1.0 is 1, from np.eye say; 0.1 is not 1/10)
                    floats = entry.atoms(sympy.Float)
                    if floats:
                        entry = entry.xreplace({f: sympy.Rational(f) for f in floats})
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

    def run(spec, inputs):
        return (run_rules if spec["kind"] == "rules" else run_call)(spec, inputs)

    return run


def warm_up_rules():
    """SymPy's matrix product, Kronecker product and polynomial conversion once, on 2 x 2
    symbols, before the submission loads: the modules and caches they load on first use
    (a tenth of a second) are then loaded once, not in every forked group."""
    import sympy

    xs = [sympy.Symbol(f"x{i}") for i in range(6)]
    V, B = sympy.Matrix(1, 2, xs[:2]), sympy.Matrix(2, 2, xs[2:])
    out = V * B * sympy.diag(*xs[:2]) + V * sympy.kronecker_product(sympy.eye(2), V)[:, :2]
    for entry in out:
        sympy.Poly(sympy.expand(entry), *xs).terms()
    sympy.Rational(1, 2)


def run_tests(tests, inputs, run, send, restore, describe_error, forbidden_seen):
    """Run ``tests`` (``[(test id, plan entry)]``) on ``inputs``; one ``test`` message each."""
    _monotonic = time.monotonic
    for test, spec in tests:
        t0 = _monotonic()
        box = []

        def one(spec=spec, box=box):
            try:
                box.append((*run(spec, inputs), None))
            except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included
                restore()
                box.append(({}, {}, describe_error(exc)))

        printed, left_out = captured(one)
        restore()
        arrays, meta, error = box[0] if box else ({}, {}, "the error could not be described")
        header = {"kind": "test", "test": test, "error": error, "meta": meta,
                  "seconds": _monotonic() - t0, "forbidden": forbidden_seen(),
                  "printed": printed.decode("utf-8", "replace"), "printed_left_out": left_out}
        try:
            send(header, arrays)
        except BaseException as exc:  # noqa: BLE001
            send({"kind": "test", "test": test, "error": "the outputs could not be sent: "
                  + describe_error(exc), "meta": {}, "seconds": 0.0,
                  "forbidden": forbidden_seen()})
