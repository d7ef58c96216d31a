"""A submission's source: ``.py`` read as text, ``.ipynb`` read with nbformat (code cells
only), and the static scan for libraries a submission may not use.

The scan is one of three layers against bpcheck, JAX, PyTorch and other autodiff
libraries (the others: they are absent from the child's path and hidden by mounts, and
an import blocker records attempts at run time).  It attributes each use to the
exercises whose functions reach it: a forbidden import (a statement, or a call such as
``importlib.import_module("torch")`` with the name in a string) inside a function counts
for every exercise function that calls that function (directly or through other
top-level functions).  Uses at module level are listed apart:
in a ``.py`` file they zero the submission (the file could not be loaded); in a notebook
the cell that has them fails when graded and the other cells still run.
"""

from __future__ import annotations

import ast
import io
import os
import re
import sys
import tokenize
import warnings
from pathlib import Path

from .sandbox import FORBIDDEN


def _lecture_owners() -> dict[str, list[int]]:
    from .lecture import hw

    return hw.function_owner()


PROBE_NEEDED = sys.version_info < (3, 11)
"""Python 3.11 and later raise RecursionError on deep nesting instead of crashing."""


class SubmissionError(Exception):
    """The submission could not be read (not UTF-8, not a notebook, unknown suffix)."""


def read_cells(path, probe=PROBE_NEEDED, seconds: float = 60) -> list[tuple[str, str]]:
    """A notebook's code cells as ``[(label, source)]``, label ``"cell N"`` (N counts all
    cells, as Jupyter shows them).  IPython-only lines are commented out: magics and shell
    escapes (``%``, ``!``, at any indentation), ``x = !cmd`` and ``obj?`` help lookups
    (``pass`` where one is the first line of a block, :func:`_ipython_lines_out`).
    The file may be up to :data:`NOTEBOOK_MAX_BYTES` (saved outputs, plots and pictures
    count there, and are never run); its code cells together up to :data:`MAX_BYTES`.  It
    is read in a forked copy of the grader limited to ``seconds`` and :data:`NOTEBOOK_MB`
    (what JSON costs to read, the file decides).  Raises :class:`SubmissionError` with the
    reason."""
    import nbformat  # noqa: F401 - imported here, so that the forked copy has it

    from .sandbox import LimitExceeded, run_limited

    path = Path(path)
    _check_size(path, NOTEBOOK_MAX_BYTES)
    try:
        out = run_limited(_notebook_cells, str(path), seconds=seconds, memory_mb=NOTEBOOK_MB,
                          result_bytes=8 * MAX_BYTES)
    except LimitExceeded as err:
        raise SubmissionError(f"{path.name}: too large for the grader to read as a notebook "
                              f"({err})") from None
    if "error" in out:
        raise SubmissionError(str(out["error"]))
    cells = [(str(label), str(source)) for label, source in out["cells"]]
    if probe:
        probe_parser(src for _, src in cells)
    return cells


def _notebook_cells(path: str) -> dict:
    """:func:`read_cells`' work, in its forked copy: ``{"cells": [[label, source]]}`` or
    ``{"error": reason}``."""
    import nbformat

    name = Path(path).name
    try:
        data = Path(path).read_bytes()
        text = data.decode("utf-8-sig")  # (a UTF-8 BOM, as some editors write, is no JSON)
        with warnings.catch_warnings():  # (a cell without an id: nbformat warns on the
            warnings.simplefilter("ignore")  # instructor's terminal; the cells are read)
            # read, and upgraded to version 4, without the schema's validation: only the
            # code cells' sources are taken, and validating outputs cost a red team's
            # notebooks 120 us per byte (the slow validator, after the fast one refused)
            nb = nbformat.reader.reads(text)
            if nb.get("nbformat") != 4:
                nb = nbformat.convert(nb, 4)
        found = nb.get("cells")
        if not isinstance(found, list) or not all(isinstance(c, dict) for c in found):
            raise ValueError("its cells are not a list of cells")
    except MemoryError:
        raise
    except Exception as err:
        return {"error": f"{name}: not a readable Jupyter notebook ({err})"[:2000]}
    cells, size = [], 0
    for i, cell in enumerate(found):
        if cell.get("cell_type") != "code":
            continue
        if len(cells) == MAX_CELLS:
            return {"error": f"{name}: more than {MAX_CELLS} code cells; expected fewer"}
        source = cell.get("source", "")
        if isinstance(source, list):  # (version 4 allows a list of lines)
            source = "".join(str(part) for part in source)
        lines = str(source).splitlines()
        first = next((ln for ln in lines if ln.strip()), "")  # IPython drops blank lines
        magic = _CELL_MAGIC.match(first.strip())  # before it looks for a cell magic
        if magic and magic.group(1) not in PYTHON_CELL_MAGICS:  # %%bash, %%writefile ...
            lines = ["# " + ln for ln in lines]  # the body is not Python: none of it runs
        else:
            lines = _ipython_lines_out(lines)
        source = "\n".join(lines) + "\n"
        try:  # JSON's escapes allow lone surrogates, which no Python file can hold
            size += len(source.encode("utf-8"))
        except UnicodeEncodeError as err:
            return {"error": f"{name}: not a readable Jupyter notebook (cell {i + 1} is not "
                             f"valid Unicode: {err.reason} at character {err.start})"}
        if size > MAX_BYTES:
            return {"error": f"{name}: its code cells hold more than {MAX_BYTES >> 20} MB of "
                             f"source; expected less (saved outputs do not count)"}
        cells.append((f"cell {i + 1}", source))
    return {"cells": cells}


_CELL_MAGIC = re.compile(r"^%%([A-Za-z_]\w*)")
PYTHON_CELL_MAGICS = ("time", "capture", "prun", "debug")
"""Cell magics whose body IPython runs as Python in the notebook's namespace; any other's
body (``%%bash``, ``%%writefile``, ``%%html`` ..., and ``%%timeit``, whose body runs inside
a function of its own, so that nothing it defines is kept) is not run at all."""


_IPYTHON_ONLY = re.compile(
    r"^(%%?[A-Za-z_].*"                       # %magic, %%cell_magic
    r"|![^=].*"                               # !shell (not a continued `!= b`)
    r"|[A-Za-z_][\w, ]*=\s*[!%][A-Za-z_].*"   # x = !ls, t = %timeit f()
    r"|\?{1,2}[\w.]+|[\w.]+\?{1,2})$"         # ?obj, obj?, obj??
)


_TIMED_LINE = re.compile(r"^%time\s+([^\s#].*)$")
"""``%time stmt``, whose statement IPython runs in the notebook's namespace (``%timeit``'s
runs in a function of its own: nothing it assigns is kept; ``%prun`` takes options first:
both stay comments)."""


def _ipython_only(line: str) -> bool:
    return _IPYTHON_ONLY.match(line.strip()) is not None


def _ipython_lines_out(lines: list[str]) -> list[str]:
    """A cell's IPython-only lines commented out, or, right after a line that opens a block
    (ends with ``:``), made ``pass`` at their own indent with the line kept as a comment:
    a block whose one statement it is (``if DEBUG:`` / ``%load_ext ...``) stays a block."""
    out, opener, indent = [], False, 0  # indent: the last code line's
    for line in lines:
        text = line.lstrip()
        timed = _TIMED_LINE.match(text)
        if timed and (opener or len(line) - len(text) <= indent):
            # `%time z = f()`: IPython runs the statement in the notebook's namespace (one
            # indented past the line before, not in a block, stays a comment)
            line, text = line[:len(line) - len(text)] + timed.group(1), timed.group(1)
        if _ipython_only(line):
            out.append(line[:len(line) - len(text)] + "pass  # " + text if opener
                       else "# " + line)
            opener = False
            continue
        out.append(line)
        if text and not text.startswith("#"):
            opener, indent = _opens_block(text), len(line) - len(text)
    return out


_NOT_CODE = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER,
             tokenize.INDENT, tokenize.DEDENT)


def _opens_block(text: str) -> bool:
    """Whether a line's last token is a ``:`` (its comment left out by the tokenizer: a
    ``#`` inside a string is no comment); a line the tokenizer cannot take alone (inside a
    bracket or a string that spans lines, or one Python 3.12's tokenizer cannot encode, a
    lone surrogate say) by its text."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in _NOT_CODE]
    except (tokenize.TokenError, SyntaxError, ValueError):  # (UnicodeEncodeError is one)
        return text.rstrip().endswith(":")
    return bool(tokens) and tokens[-1].type == tokenize.OP and tokens[-1].string == ":"


MAX_BYTES = 2 << 20
"""The largest ``.py`` file read, and the most source a notebook's code cells may hold (a
homework is a few kB; parsing costs ~600x the size)."""

NOTEBOOK_MAX_BYTES = 32 << 20
"""The largest notebook file read: its saved outputs (plots, pictures) count here."""

MAX_CELLS = 2000
"""The most code cells a notebook may have (each is run, noted and labelled apart)."""

NOTEBOOK_MB = 512
"""Memory, beyond the grader's, for reading a notebook (:func:`read_cells`)."""


def submission_suffix(path) -> str | None:
    """``".py"`` or ``".ipynb"`` for a file the grader reads (the suffix in any case:
    ``HW3.IPYNB`` is a notebook), else ``None``."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in (".py", ".ipynb") else None


def _check_size(path: Path, limit: int = MAX_BYTES) -> None:
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SubmissionError(f"{path.name}: cannot be read ({err})") from err
    if not path.is_file():
        raise SubmissionError(f"{path.name}: not a regular file")
    if size > limit:
        raise SubmissionError(f"{path.name}: {size / 2**20:.1f} MB; expected a file under "
                              f"{limit >> 20} MB" + (" (clear the notebook's outputs to make it "
                                                     "smaller)" if limit == NOTEBOOK_MAX_BYTES
                                                     else ""))


def join_cells(cells: list[tuple[str, str]]) -> str:
    """A notebook's cells as one source text, each under a ``# --- cell N`` line."""
    return "".join(f"# --- {label}\n{src}\n" for label, src in cells)


_PROBE = """
import ast, json, sys
for text in json.load(sys.stdin):
    try:
        ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
"""


def probe_parser(texts, program=_PROBE) -> None:
    """Parse ``texts`` in a throw-away interpreter first: on Python 3.10 a deeply nested
    expression (``1+1+...+1``, a million terms) crashes ``ast.parse`` with a segmentation
    fault, which would take the grader (or a ``grade-batch`` worker) down with it.  Raises
    :class:`SubmissionError` when the parser crashes or takes more than 60 s."""
    import json
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", program], timeout=60,
                              input=json.dumps(list(texts)), text=True, capture_output=True)
    except subprocess.TimeoutExpired:
        raise SubmissionError("the submission takes Python's parser more than 60 s") from None
    if proc.returncode != 0:
        raise SubmissionError("the submission crashes Python's parser (status "
                              f"{proc.returncode}: an expression nested too deeply?)")


def read_submission(path, probe=PROBE_NEEDED) -> str:
    """Python source of a ``.py`` file, or of a notebook's code cells joined (see
    :func:`read_cells`).  ``probe``: run :func:`probe_parser` on it first.  Raises
    :class:`SubmissionError` with the reason."""
    path = Path(path)
    if submission_suffix(path) == ".ipynb":
        return join_cells(read_cells(path, probe))
    _check_size(path)
    if submission_suffix(path) != ".py":
        raise SubmissionError(f"{path.name}: expected a .py file or a .ipynb notebook")
    # decoded as Python decodes source: a UTF-8 BOM or a coding line is honoured
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{path.name}: not readable as Python source text ({err})") from err
    text = text[1:] if text.startswith("\ufeff") else text
    if probe:
        probe_parser([text])
    return text


IMPORTING_CALLS = frozenset({"__import__", "import_module", "load_module"})
"""Calls whose first argument (or ``name=``) names a module to import: a forbidden one
named there in a string is a use, as an ``import`` statement is (any other way to reach
one, a name built at run time say, meets the import blocker).  ``find_spec`` and its
like only ask whether a module is there (``find_spec("torch") is None``: an answer's
check for an optional library), and import nothing."""


class _Uses:
    """Forbidden modules named in a body, and the names it refers to.

    :meth:`visit` walks iteratively: ``ast.NodeVisitor`` recurses once per level, and a
    sum of 500 terms (a chain of 500 ``BinOp`` nodes, which Python itself compiles)
    raised RecursionError, reported as a file that does not parse.  A ``visit_X`` method
    handles a node of type ``X``; the nodes below it are walked too unless it returns
    ``False``."""

    def visit(self, node) -> None:
        stack = [node]
        while stack:
            node = stack.pop()
            handler = getattr(self, "visit_" + type(node).__name__, None)
            if handler is None or handler(node) is not False:
                stack.extend(ast.iter_child_nodes(node))

    def __init__(self, forbidden=FORBIDDEN):
        self.forbidden_modules = tuple(forbidden)
        self.forbidden: set[str] = set()
        self.names: set[str] = set()
        self.bound: set[str] = set()
        """Names the body assigns (its locals, for a function): they shadow module names."""
        self.aliases: dict[str, str] = {}

    def _forbidden_name(self, name: str) -> str | None:
        top = name.partition(".")[0]
        return top if top in self.forbidden_modules else None

    def visit_Import(self, node):
        for a in node.names:
            bad = self._forbidden_name(a.name)
            if bad:
                self.forbidden.add(bad)
                self.aliases[(a.asname or a.name).partition(".")[0]] = bad
        return False

    def visit_ImportFrom(self, node):
        bad = self._forbidden_name(node.module or "") if node.level == 0 else None
        if bad:
            self.forbidden.add(bad)
            for a in node.names:
                self.aliases[a.asname or a.name] = bad
        return False

    def _named(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            bad = self._forbidden_name(node.value.strip())
            if bad:
                self.forbidden.add(bad)

    def visit_Call(self, node):
        # a module named in a string only where it is imported by name: a string that
        # merely equals one (a label, "torch" in a message) is no use of it
        func = node.func
        called = func.id if isinstance(func, ast.Name) else \
            func.attr if isinstance(func, ast.Attribute) else None
        if called in IMPORTING_CALLS:
            for arg in [*node.args[:1], *(k.value for k in node.keywords if k.arg == "name")]:
                self._named(arg)

    def visit_Subscript(self, node):
        value = node.value  # sys.modules["torch"]
        if (isinstance(value, ast.Attribute) and value.attr == "modules") or \
                (isinstance(value, ast.Name) and value.id == "modules"):
            self._named(node.slice)

    def visit_Name(self, node):
        (self.bound if isinstance(node.ctx, ast.Store) else self.names).add(node.id)
        return False

    def visit_arg(self, node):
        self.bound.add(node.arg)
        self.annotation(node.annotation)
        return False

    def annotation(self, node) -> None:
        """An annotation: its importing calls count (``x: __import__("jax")`` imports when
        the ``def`` runs), not its names (``x: torch.Tensor`` is evaluated only without
        ``from __future__ import annotations``, and imports nothing)."""
        for sub in ast.walk(node) if node is not None else ():
            if isinstance(sub, ast.Call):
                self.visit_Call(sub)


def forbidden_uses_in_cells(cells: list[tuple[str, str]], owners=None, forbidden=FORBIDDEN
                            ) -> tuple[dict[int, list[str]], list[str]]:
    """``({exercise: [modules its functions reach]}, [modules used at top level])``.

    ``cells``: ``[(label, source)]``, a notebook's code cells or one ``.py`` file's source;
    ``owners``: student function name -> exercise numbers (default: the lecture's);
    ``forbidden``: the homework's forbidden modules.
    Top-level uses do not count for the exercises here (see the module docstring for what
    the grader does with them).  Cells that do not parse are skipped (the sandbox reports
    them).
    """
    trees = []
    for _, src in cells:
        try:
            trees.append(ast.parse(src))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # the sandbox runs (and reports) it
    uses, module_level = _scan(trees, owners or _lecture_owners(), forbidden)
    return uses, sorted(module_level)


SCAN_MB = 256
"""Memory the static scan may use beyond the grader's own: parsing takes about 900 times
the source's size (a 2 MB file of one-name lines took the grader to 1.9 GB, and Gradescope's
default container, 768 MB, killed it)."""


def _scan_job(cells, owners, forbidden, whole_file):
    if whole_file:  # a SyntaxError is reported for the whole file
        try:
            ast.parse(cells[0][1])
        except (SyntaxError, ValueError, RecursionError) as err:  # (Python's own limits)
            kind = type(err).__name__ if type(err) in (IndentationError, TabError, ValueError,
                                                       RecursionError) else "SyntaxError"
            return {"syntax": [kind, getattr(err, "lineno", None),
                               str(getattr(err, "msg", err))]}
    uses, top_level = forbidden_uses_in_cells(cells, owners, forbidden)
    return {"uses": {str(k): v for k, v in uses.items()}, "top": top_level}


def scan_limited(cells, owners, forbidden=FORBIDDEN, *, whole_file: bool = False, seconds=60):
    """:func:`forbidden_uses_in_cells` (and, for a ``.py`` file, ``whole_file``, the parse
    whose SyntaxError is reported for the whole file) in a forked copy of the grader
    limited to ``seconds`` and :data:`SCAN_MB`.  Returns ``(uses, top_level)``; raises
    ``SyntaxError`` for a file that does not parse and :class:`SubmissionError` for one
    the parser cannot take within the limits."""
    from .sandbox import LimitExceeded, run_limited

    try:
        out = run_limited(_scan_job, list(cells), dict(owners), tuple(forbidden), whole_file,
                          seconds=seconds, memory_mb=SCAN_MB)
    except LimitExceeded as err:
        raise SubmissionError(f"the submission is too large or too deeply nested for the "
                              f"grader to read: {err}") from None
    if "syntax" in out:
        kind, lineno, msg = out["syntax"]
        if kind in ("ValueError", "RecursionError"):  # null bytes; nested too deeply
            raise (RecursionError if kind == "RecursionError" else ValueError)(msg)
        err = {"IndentationError": IndentationError, "TabError": TabError}.get(kind, SyntaxError)(msg)
        err.lineno = lineno
        raise err
    return {int(k): v for k, v in out["uses"].items()}, out["top"]


def _scan(trees, owners, forbidden) -> tuple[dict[int, list[str]], set[str]]:
    top_defs: dict[str, _Uses] = {}
    module_level = _Uses(forbidden)
    for node in (n for tree in trees for n in tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            u = _Uses(forbidden)
            # what runs when the def or class statement runs counts at top level too:
            # decorators, defaults, annotations' importing calls, bases and keywords
            if isinstance(node, ast.ClassDef):
                heads = [*node.bases, *node.keywords]
            else:
                u.visit(node.args)
                u.annotation(node.returns)
                module_level.annotation(node.returns)
                a = node.args
                for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                    if arg is not None:
                        module_level.annotation(arg.annotation)
                heads = [d for d in (*a.defaults, *a.kw_defaults) if d is not None]
            for part in (*heads, *node.decorator_list):
                u.visit(part)
                module_level.visit(part)
            for child in node.body:
                u.visit(child)
            top_defs[node.name] = u
        else:
            module_level.visit(node)
    out: dict[int, list[str]] = {}
    for fname, numbers in owners.items():
        if fname not in top_defs:
            continue
        seen, stack, found = set(), [fname], set()
        while stack:
            name = stack.pop()
            if name in seen or name not in top_defs:
                continue
            seen.add(name)
            u = top_defs[name]
            found |= u.forbidden
            found |= {module_level.aliases[n] for n in u.names - u.bound
                      if n in module_level.aliases}
            stack.extend(n for n in u.names if n in top_defs)
        for ex in numbers if found else ():
            out[ex] = sorted(set(out.get(ex, [])) | found)
    return out, set(module_level.forbidden)


SKIPPED_FOLDERS = ("__pycache__", ".ipynb_checkpoints", "__MACOSX")


_DEFINES = re.compile(r"^(?:(?:async\s+)?def\s+(\w+)|class\s+(\w+)|(\w+)\s*=)", re.M)
_NOTEBOOK_DEFINES = re.compile(r'(?:"|\\n)(?:(?:async\s+)?def\s+(\w+)|class\s+(\w+)|(\w+)\s*=)')


def _scan_counts(found, functions, unread: list) -> dict:
    """How many of ``functions`` each candidate file defines at top level (0 for those
    not read: too large, past :data:`SCAN_BYTES` read in all, or unreadable, which are
    appended to ``unread``).  A ``.py`` file by a scan of its text (no parsing: the files
    compared are untrusted, and parsing costs ~600x their size); the notebooks by their
    code cells, read as :func:`read_cells` reads them, all in one forked copy limited to
    :data:`PICK_SECONDS` and :data:`NOTEBOOK_MB` (markdown and saved outputs quoting the
    code do not count, whatever the order of a cell's keys or the notebook's version),
    or, past those limits, by a scan of their JSON text."""
    budget, counts, notebooks = SCAN_BYTES, {}, []
    wanted = set(functions)
    for path in found:
        counts[path] = 0
        try:
            size = path.stat().st_size
            notebook = submission_suffix(path) == ".ipynb"
            if size > (NOTEBOOK_MAX_BYTES if notebook else MAX_BYTES) or size > budget:
                unread.append(path)
                continue
            budget -= size
            if notebook:
                notebooks.append(path)
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except (OSError, ValueError):
            unread.append(path)
            continue
        counts[path] = len(_names_defined(_DEFINES, text, wanted))
    if notebooks:
        import nbformat  # noqa: F401 - imported here, so that the forked copy has it

        from .sandbox import LimitExceeded, run_limited

        try:
            read = run_limited(_notebook_counts, [str(p) for p in notebooks], sorted(wanted),
                               seconds=PICK_SECONDS, memory_mb=NOTEBOOK_MB)
            for path, n in zip(notebooks, read):
                counts[path] = max(int(n), 0)
                if int(n) < 0:
                    unread.append(path)
        except (LimitExceeded, TypeError, ValueError):
            for path in notebooks:  # a definition starts a JSON string or follows an
                try:  # escaped newline, in any part of the notebook
                    text = path.read_text(encoding="utf-8", errors="replace")
                except (OSError, ValueError):
                    unread.append(path)
                    continue
                counts[path] = len(_names_defined(_NOTEBOOK_DEFINES, text, wanted))
    return counts


def _notebook_counts(paths: list, functions: list) -> list:
    """:func:`_scan_counts`' work on notebooks, in its forked copy: for each, how many of
    ``functions`` its code cells define at top level (-1: not a readable notebook)."""
    wanted, out = set(functions), []
    for path in paths:
        read = _notebook_cells(path)
        if "error" in read:
            out.append(-1)
            continue
        names: set = set()
        for _, source in read["cells"]:
            names |= _names_defined(_DEFINES, source, wanted)
        out.append(len(names))
    return out


def _names_defined(pattern, text: str, wanted: set) -> set:
    """The names in ``wanted`` that ``pattern`` finds defined in ``text``, match by match
    (a list of every match held 37 times a hostile file's size: 1.2 GB for 32 MB)."""
    found = set()
    for m in pattern.finditer(text):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in wanted:
            found.add(name)
            if len(found) == len(wanted):
                break
    return found


def pick_submission(folder, functions=None, name=None) -> tuple[Path | None, str | None]:
    """The one file to grade in a folder of uploaded files, and a note when there was a choice.

    Candidates: ``.py`` and ``.ipynb`` files at any depth, except hidden ones (``.x``,
    ``._x`` from macOS) and those in ``__pycache__``, ``.ipynb_checkpoints`` and
    ``__MACOSX``, and symbolic links (a link could point at a file of the grader's).
    Among several, the file defining the most exercise functions wins, then
    a ``.py`` over a notebook, then the shallowest, then the first by name.  Only that file
    is graded: a submission cannot import a second file.  ``functions``: the homework's
    student functions (default: the lecture's); ``name``: the file name the config asks
    for (``submission = "hw.ipynb"``), graded when it is among the candidates.  Folders
    more than ``MAX_DEPTH`` levels down are not searched, and only the first
    ``MAX_CANDIDATES`` files (by folder and name) are ranked; the note says so where it
    mattered (``(None, note)``: no file found, deeper folders left).
    """
    folder = Path(folder)
    functions = list(functions or _lecture_owners())
    wanted = name
    found, deep = [], False
    for root, dirs, files in os.walk(folder):  # never follows links to folders
        depth = len(Path(root).relative_to(folder).parts)
        kept = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_FOLDERS)
        deep = deep or (depth >= MAX_DEPTH and bool(kept))
        dirs[:] = kept if depth < MAX_DEPTH else []
        for name in sorted(files):
            p = Path(root) / name
            if (not name.startswith(".") and submission_suffix(p)
                    and p.is_file() and not p.is_symlink()):
                found.append(p)
        if len(found) > MAX_CANDIDATES:
            break
    if not found:
        return None, (f"folders more than {MAX_DEPTH} levels down were not searched"
                      if deep else None)
    named = [p for p in found if p.name == wanted] or [  # HW3.IPYNB for "hw3.ipynb" too
        p for p in found if wanted and p.name.casefold() == str(wanted).casefold()]
    if named:
        chosen = min(named, key=lambda p: (len(p.relative_to(folder).parts), str(p)))
        return chosen, None
    note = (f" (no file is named {quoted(wanted)}, as the config asks)" if wanted else
            " (the config's `submission = \"NAME\"` picks one by name)")
    if len(found) == 1:
        return found[0], (f"no file is named {quoted(wanted)}, as the config asks; graded "
                          f"{quoted(found[0].name)}" if wanted else None)
    capped = len(found) > MAX_CANDIDATES
    found = found[:MAX_CANDIDATES]

    unread: list = []
    counts = _scan_counts(found, functions, unread)

    def rank(p: Path):  # most exercise functions, then .py, shallowest, largest, name
        size = p.stat().st_size
        return (-counts[p], submission_suffix(p) != ".py",
                len(p.relative_to(folder).parts), -size, str(p))

    ranked = sorted((rank(p), p) for p in found)
    chosen = ranked[0][1]
    mine, next_best = ranked[0][0], ranked[1][0]
    decided = next(i for i, (a, b) in enumerate(zip(mine, next_best)) if a != b)
    defined = -mine[0]
    why = "the one that defines the most exercise functions" if decided == 0 else (
        f"tied with {quoted(ranked[1][1].relative_to(folder))} at {defined} exercise "
        "function" + "s" * (defined != 1) + ", " + (
            "and a .py file is graded before a notebook", "and the shallower",
            "and the larger", "and the first by name")[decided - 1])
    names = [quoted(p.relative_to(folder)) for p in found]
    listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    count = (f"more than {MAX_CANDIDATES} files were submitted (the first {MAX_CANDIDATES} "
             f"by folder and name were looked at: {listed})" if capped else
             f"{len(found)} files were submitted ({listed})")
    unread = [quoted(p.relative_to(folder)) for p in unread if p != chosen]
    unread_note = (f"; {', '.join(unread[:5])}{' and others' if len(unread) > 5 else ''} could "
                   f"not be read (too large, or not readable), so counted no function"
                   if unread else "")
    return chosen, (f"{count}; graded {quoted(chosen.relative_to(folder))}, {why} "
                    "(only one file is graded, and it cannot import the others)" + note
                    + unread_note)


MAX_DEPTH = 8
MAX_CANDIDATES = 200
SCAN_BYTES = 64 << 20
"""Bytes the file picker reads in all to rank the candidates (the rest rank last)."""
PICK_SECONDS = 20
"""The time the file picker's reading of notebooks may take, all together (then it scans
their text)."""


def quoted(name) -> str:
    """A submitted file's name in single quotes, for notes that list names
    (``notes.py); graded hw.py ...`` was a name that read as the note's own words): a quote
    or backslash in it escaped with a backslash, and anything but printable ASCII as its
    escape (a look-alike of the quote, U+A78C, closed the quotes to the eye)."""
    out = []
    for ch in str(name):
        if ch in "'\\":
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "'" + "".join(out) + "'"


def printable(text: str) -> str:
    """Submission-controlled text on one line: control characters (terminal escapes,
    carriage returns, newlines) shown as escapes, so it cannot fake report lines."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(text))
