"""Load the submission in the child: a ``.py`` file run whole, or a notebook cell by cell.

Standard library only.  The submission runs in a fresh module named ``submission``;
every module's namespace is snapshot before it runs, and :func:`restorer`'s function puts
back whatever the submission patched (builtins, numpy, json ...) after each of its calls.
"""

import os
import signal
import sys
import traceback
import types


class CellTimeout(BaseException):
    """Raised in a notebook cell that ran past its time budget."""


def new_module(box):
    """The empty ``submission`` module, registered in ``sys.modules``."""
    module = types.ModuleType("submission")
    module.__file__ = os.path.join(box, "submission.py")
    sys.modules["submission"] = module
    return module


def restorer(module):
    """Snapshot every module's namespace now; returns the function that restores them."""
    snapshots = [(m, dict(m.__dict__)) for m in list(sys.modules.values())
                 if getattr(m, "__dict__", None) is not None]

    def restore():
        for mod, snap in snapshots:
            d = mod.__dict__
            for k, v in snap.items():
                if d.get(k, restore) is not v:
                    d[k] = v
        sys.modules["submission"] = module

    return restore


def error_describer():
    """``describe(exc)``: one exception as text, at most 2000 characters (bound now)."""
    _format_exc = traceback.format_exception_only
    _type = type

    _syntax = SyntaxError
    _str, _isinstance = str, isinstance

    def where(exc):
        """Where in the submission it was raised: the innermost frame of the submission's
        own code (``submission.py``, or a notebook cell's label), as ``" (submission.py,
        line 12, in two_layer_loss)"``; empty when none (raised in NumPy, say)."""
        found = ""
        try:
            tb = exc.__traceback__
            for _ in range(1000):
                if tb is None:
                    break
                code = tb.tb_frame.f_code
                name = code.co_filename
                if _isinstance(name, _str) and (name == "submission.py"
                                                or name.startswith("cell ")):
                    found = f" ({name[:40]}, line {tb.tb_lineno}, in {_str(code.co_name)[:60]})"
                tb = tb.tb_next
        except Exception:  # noqa: BLE001 - a location is a courtesy
            return ""
        return found

    def describe(exc):
        if isinstance(exc, _syntax):  # one line, not the caret drawing of four
            code = str(exc.text or "").strip()
            text = (f"{_type(exc).__name__}: {exc.msg} ({exc.filename}, line {exc.lineno}"
                    + (f": {code}" if code else "") + ")")
            return text[:2000]
        text = "".join(_format_exc(_type(exc), exc)).strip()
        at = where(exc)
        return text[:2000 - len(at)] + at

    return describe


def watchers(plan, blocker):
    """``(forbidden_loaded, forbidden_seen)``: the forbidden modules in ``sys.modules``, and
    those plus the blocker's recorded attempts (names bound now)."""
    _modules = sys.modules
    _list = list

    def forbidden_loaded():
        return [name for name in plan["forbidden"] if name in _modules]

    def forbidden_seen():
        seen = _list(blocker.attempts)
        for name in forbidden_loaded():
            if name not in seen:
                seen.append(name)
        return seen

    return forbidden_loaded, forbidden_seen


def load(plan, source, module, restore, describe_error, blocker, forbidden_loaded,
         forbidden_seen):
    """Run the submission into ``module``.

    Returns ``(load_error, cell_errors, forbidden)``: the error of a ``.py`` file (``None``
    when it loaded), the notebook cells that raised, and the forbidden modules used.
    """
    load_error, cell_errors = None, []
    cells = plan.get("cells")
    module.__dict__["display"] = lambda *objs, **kwargs: print(*objs)
    budget = float(plan.get("cell_timeout_s") or 0)
    _signal, _setitimer, _ALRM, _REAL = signal.signal, signal.setitimer, signal.SIGALRM, \
        signal.ITIMER_REAL

    def stop(signum, frame):
        raise CellTimeout

    if cells:
        # A notebook runs cell by cell, as "run all" that goes on after an error: a failing
        # cell (the lecture's PyTorch part, a plot) is reported and the next one runs.
        # Imports blocked in a cell cost nothing more: that cell failed.  A forbidden module
        # that is loaded all the same (the blocker bypassed) still zeroes the submission.
        # Each cell has its own time budget: a cell past it is stopped (SIGALRM) and named,
        # and the next one runs.
        for label, cell_source in cells:
            try:
                if budget > 0:
                    _signal(_ALRM, stop)
                    _setitimer(_REAL, budget)
                try:
                    exec(compile(cell_source, label, "exec"), module.__dict__)
                finally:
                    _setitimer(_REAL, 0)
            except CellTimeout:
                restore()
                cell_errors.append(f"{label} stopped after {budget:g} s")
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
    return load_error, cell_errors, forbidden
