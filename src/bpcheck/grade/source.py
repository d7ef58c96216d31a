"""A submission's source: ``.py`` read as text, ``.ipynb`` read with nbformat (code cells
only), and the static scan for libraries a submission may not use.

The scan is one of three layers against bpcheck, JAX, PyTorch and other autodiff
libraries (the others: they are absent from the child's path and hidden by mounts, and
an import blocker records attempts at run time).  It attributes each use to the
exercises whose functions reach it: a forbidden import or a string naming a forbidden
module inside a function counts for every exercise function that calls that function
(directly or through other top-level functions); at module level it counts for all.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from .sandbox import FORBIDDEN

EXERCISE_OF = {"softmax_loss": 1, "two_layer_loss": 2, "backprop_factors": 3,
               "v_rule": 4, "u_rule": 4}


class SubmissionError(Exception):
    """The submission could not be read (not UTF-8, not a notebook, unknown suffix)."""


def read_submission(path) -> str:
    """Python source of a ``.py`` file or of a notebook's code cells.

    Notebook lines starting with ``%`` or ``!`` (IPython magics and shell escapes) are
    commented out.  Raises :class:`SubmissionError` with the reason.
    """
    path = Path(path)
    if path.suffix == ".ipynb":
        import nbformat

        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as err:
            raise SubmissionError(f"{path.name}: not a readable Jupyter notebook ({err})") from err
        cells = []
        for i, cell in enumerate(nb.cells):
            if cell.get("cell_type") != "code":
                continue
            lines = [("# " + ln if ln.lstrip().startswith(("%", "!")) else ln)
                     for ln in str(cell.get("source", "")).splitlines()]
            cells.append(f"# --- code cell {i + 1}\n" + "\n".join(lines))
        return "\n\n".join(cells) + "\n"
    if path.suffix != ".py":
        raise SubmissionError(f"{path.name}: expected a .py file or a .ipynb notebook")
    # decoded as Python decodes source: a UTF-8 BOM or a coding line is honoured
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{path.name}: not readable as Python source text ({err})") from err
    return text[1:] if text.startswith("\ufeff") else text


def _forbidden_name(name: str) -> str | None:
    top = name.partition(".")[0]
    return top if top in FORBIDDEN else None


class _Uses(ast.NodeVisitor):
    """Forbidden modules named in a body, and the names it refers to."""

    def __init__(self):
        self.forbidden: set[str] = set()
        self.names: set[str] = set()
        self.aliases: dict[str, str] = {}

    def visit_Import(self, node):
        for a in node.names:
            bad = _forbidden_name(a.name)
            if bad:
                self.forbidden.add(bad)
                self.aliases[(a.asname or a.name).partition(".")[0]] = bad

    def visit_ImportFrom(self, node):
        bad = _forbidden_name(node.module or "") if node.level == 0 else None
        if bad:
            self.forbidden.add(bad)
            for a in node.names:
                self.aliases[a.asname or a.name] = bad

    def visit_Constant(self, node):
        if isinstance(node.value, str):
            bad = _forbidden_name(node.value.strip())
            if bad:
                self.forbidden.add(bad)

    def visit_Name(self, node):
        self.names.add(node.id)


def forbidden_uses(source: str) -> dict[int, list[str]]:
    """``{exercise: [forbidden modules]}`` for the exercises whose code reaches them.

    Raises ``SyntaxError`` for source that does not parse.
    """
    tree = ast.parse(source)
    top_defs: dict[str, _Uses] = {}
    module_level = _Uses()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            u = _Uses()
            for child in node.body:
                u.visit(child)
            for dec in getattr(node, "decorator_list", []):
                u.visit(dec)
            top_defs[node.name] = u
        else:
            module_level.visit(node)
    out: dict[int, list[str]] = {}
    everywhere = set(module_level.forbidden)
    for fname, ex in EXERCISE_OF.items():
        if fname not in top_defs:
            continue
        seen, stack, found = set(), [fname], set(everywhere)
        while stack:
            name = stack.pop()
            if name in seen or name not in top_defs:
                continue
            seen.add(name)
            u = top_defs[name]
            found |= u.forbidden
            found |= {module_level.aliases[n] for n in u.names if n in module_level.aliases}
            stack.extend(n for n in u.names if n in top_defs)
        if found:
            out.setdefault(ex, [])
            out[ex] = sorted(set(out[ex]) | found)
    if everywhere:
        for ex in (1, 2, 3, 4):
            out[ex] = sorted(set(out.get(ex, [])) | everywhere)
    return out


SKIPPED_FOLDERS = ("__pycache__", ".ipynb_checkpoints", "__MACOSX")


def _defined_exercises(path: Path) -> int:
    """How many of the exercise functions a file defines at top level (0 if unreadable)."""
    try:
        tree = ast.parse(read_submission(path))
    except (SubmissionError, SyntaxError, ValueError, OSError):
        return 0
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name)}
    return len(names & set(EXERCISE_OF))


def pick_submission(folder) -> tuple[Path | None, str | None]:
    """The one file to grade in a folder of uploaded files, and a note when there was a choice.

    Candidates: ``.py`` and ``.ipynb`` files at any depth, except hidden ones (``.x``,
    ``._x`` from macOS) and those in ``__pycache__``, ``.ipynb_checkpoints`` and
    ``__MACOSX``, and symbolic links (a link could point at a file of the grader's).
    Among several, the file defining the most exercise functions wins, then
    a ``.py`` over a notebook, then the shallowest, then the first by name.  Only that file
    is graded: a submission cannot import a second file.
    """
    folder = Path(folder)
    found = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if (p.is_file() and not p.is_symlink() and p.suffix in (".py", ".ipynb")
                and not any(part.startswith(".") or part in SKIPPED_FOLDERS for part in rel)):
            found.append(p)
    if not found:
        return None, None
    if len(found) == 1:
        return found[0], None
    ranked = sorted(found, key=lambda p: (-_defined_exercises(p), p.suffix != ".py",
                                          len(p.relative_to(folder).parts), str(p)))
    names = ", ".join(str(p.relative_to(folder)) for p in found)
    chosen = ranked[0]
    return chosen, (f"{len(found)} files were submitted ({names}); graded "
                    f"{chosen.relative_to(folder)}, the one that defines the most exercise "
                    "functions (only one file is graded, and it cannot import the others)")
