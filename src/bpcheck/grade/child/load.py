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


def error_describer(allowed=""):
    """``describe(exc)``: one exception as text, at most 2000 characters (bound now).
    ``allowed``: what submissions may use, said after a ``ModuleNotFoundError`` (scipy is
    installed for the grader, but not there for the submission: "No module named 'scipy'"
    alone reads as a broken grader; a student's own second file is not there either); a
    standard-library module that is missing is said to be the sandbox's doing."""
    _format_exc = traceback.format_exception_only
    _type = type
    _missing = ModuleNotFoundError

    _syntax = SyntaxError
    _str, _isinstance = str, isinstance
    _stdlib = frozenset(getattr(sys, "stdlib_module_names", ()))

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
        if _isinstance(exc, _missing):
            try:  # (the submission's exception: its name may be anything)
                name = exc.name if _type(exc.name) is _str else ""
            except BaseException:  # noqa: BLE001
                name = ""
            if name and name in _stdlib:  # a top-level module of the standard library: the
                # sandbox could not open it (see its notes); `email.MIMEText`, a missing
                # submodule, is the submission's own mistake
                text += (" (a standard-library module, which the grader's sandbox could not "
                         "give the submission: see the sandbox notes)")
            elif allowed:
                text += (f" (submissions may use {allowed}; the graded file is the only one, "
                         "and it cannot import another)")
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


PYTHON_CELL_MAGICS = ("time", "capture", "prun", "debug")
"""Cell magics whose body IPython runs as Python (as the parent's notebook reader has it)."""


class _Shell:
    """What ``get_ipython()`` returns in the child: line magics and shell commands do
    nothing (``%matplotlib inline``, ``!pip install``), a cell magic whose body is Python
    (``%%time``) runs the body in the submission's namespace, as IPython does; for a ``.py``
    file exported from Jupyter (``get_ipython().run_line_magic(...)``)."""

    def __init__(self, namespace):
        self.user_ns = namespace

    def run_line_magic(self, name, line, *args, **kwargs):
        statement = str(line).strip()
        if name == "time" and statement and not statement.startswith("#"):
            exec(compile(statement, "<line magic>", "exec"), self.user_ns)  # as IPython does
        return None

    def run_cell_magic(self, name, line, cell, *args, **kwargs):
        if name in PYTHON_CELL_MAGICS:
            exec(compile(str(cell), "<cell magic>", "exec"), self.user_ns)
        return None

    def system(self, *args, **kwargs):
        return None

    def getoutput(self, *args, **kwargs):
        return []

    def magic(self, *args, **kwargs):
        return None

    def __repr__(self):
        return "<the grader's stand-in for IPython>"


def _shown(*objs, **kwargs):
    """``display``: each object printed (a plot or a table shows as its text)."""
    for obj in objs:
        print(getattr(obj, "data", obj))


class _Rich:
    """``Markdown(...)``, ``HTML(...)``, ``Image(...)`` and the like: keep what was given."""

    def __init__(self, data=None, *args, **kwargs):
        self.data = data

    def __repr__(self):
        return repr(self.data)


def _display_module(name):
    module = types.ModuleType(name)
    module.display = _shown
    module.clear_output = lambda *args, **kwargs: None
    module.update_display = lambda *args, **kwargs: None

    def __getattr__(attr):  # Markdown, HTML, Image, Latex, Math, JSON, IFrame ...
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (_Rich,), {}) if attr[:1].isupper() else (lambda *a, **k: None)

    module.__getattr__ = __getattr__
    return module


def notebook_stand_ins(module):
    """What a notebook (or a ``.py`` file exported from one) may use of Jupyter, which the
    child has not: ``display``, ``get_ipython()``, and, where no such package is
    installed, the modules ``IPython``, ``IPython.display`` and ``IPython.core.display`` (their
    ``display`` prints, ``Markdown``/``HTML``/``Image`` ... keep their data, anything else
    does nothing; ``IPython.get_ipython()`` is ``None``, as outside a kernel), and
    ``tqdm`` (``tqdm``, ``trange``, ``tqdm.auto``, ``tqdm.notebook``: a bar that iterates
    and shows nothing, see :class:`_Bar`).  So a student's ``from IPython.display import display``
    or progress bar does not take its cell's other imports down with it."""
    import importlib.util

    shell = _Shell(module.__dict__)
    module.__dict__["display"] = _shown
    module.__dict__["get_ipython"] = lambda: shell

    def absent(name):
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    if absent("IPython"):
        ipython = types.ModuleType("IPython")
        # None, as outside a kernel: libraries that look for IPython (matplotlib's pyplot
        # registers its hooks with a kernel it finds) leave it alone
        ipython.get_ipython = lambda: None
        ipython.version_info, ipython.__version__ = (9, 0, 0, ""), "9.0.0"  # (matplotlib
        # asks, to skip its hooks for IPython before 8.24)
        ipython.display = _display_module("IPython.display")
        ipython.core = types.ModuleType("IPython.core")
        ipython.core.display = _display_module("IPython.core.display")
        ipython.__path__ = []  # a package: its submodules are the ones above
        ipython.core.__path__ = []
        sys.modules.update({"IPython": ipython, "IPython.display": ipython.display,
                            "IPython.core": ipython.core,
                            "IPython.core.display": ipython.core.display})
    if absent("tqdm"):
        def trange(*args, **kwargs):
            return _Bar(range(*args))

        bars = {}
        for name in ("tqdm", "tqdm.auto", "tqdm.notebook", "tqdm.autonotebook"):
            bars[name] = types.ModuleType(name)
            bars[name].tqdm, bars[name].trange = _Bar, trange
            bars[name].tqdm_notebook, bars[name].tnrange = _Bar, trange
        bars["tqdm"].__path__ = []
        for name in ("auto", "notebook", "autonotebook"):
            setattr(bars["tqdm"], name, bars["tqdm." + name])
        sys.modules.update(bars)


class _Bar:
    """``tqdm(iterable)``: iterates as the iterable does and shows nothing; the bar's
    methods a notebook calls (``set_description``, ``set_postfix``, ``update``, ``write``
    ...) do nothing but count, and it is a context manager, as tqdm's bar is."""

    def __init__(self, iterable=None, *args, total=None, initial=0, **kwargs):
        self.iterable, self.n = iterable, initial
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                pass
        self.total = total

    def __iter__(self):
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.n += 1

    def __len__(self):
        if self.iterable is not None and hasattr(self.iterable, "__len__"):
            return len(self.iterable)
        return int(self.total or 0)

    def __bool__(self):
        return True

    def __reversed__(self):  # tqdm's bar over a sequence may be reversed
        return reversed(self.iterable if self.iterable is not None else ())

    def update(self, n=1):
        self.n += n
        return True

    def set_description(self, desc=None, *args, **kwargs):
        self.desc = desc or ""

    def _nothing(self, *args, **kwargs):
        return None

    desc = ""
    set_description_str = set_postfix = set_postfix_str = _nothing
    refresh = reset = clear = display = unpause = close = _nothing

    @staticmethod
    def write(text, *args, **kwargs):
        print(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def load(plan, source, module, restore, describe_error, blocker, forbidden_loaded,
         forbidden_seen):
    """Run the submission into ``module``.

    Returns ``(load_error, cell_errors, forbidden)``: the error of a ``.py`` file (``None``
    when it loaded), the notebook cells that raised, and the forbidden modules used.
    """
    load_error, cell_errors = None, []
    cells = plan.get("cells")
    notebook_stand_ins(module)
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
