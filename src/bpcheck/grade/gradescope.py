"""The Gradescope autograder zip: ``setup.sh``, ``run_autograder`` and the config.

Gradescope unpacks the zip in ``/autograder/source``, runs ``setup.sh`` once as root
when it builds the image, and runs ``run_autograder`` for each submission, which must
write ``/autograder/results/results.json``.  Here ``run_autograder`` calls ``bpcheck
grade`` on the folder ``/autograder/submission``, which picks the file to grade
(:func:`bpcheck.grade.source.pick_submission`, as ``grade-batch`` does); the root
``/autograder`` can be moved with the ``BPCHECK_AUTOGRADER_ROOT`` environment variable
(the test suite does so).  If grading itself fails, it still writes a results file.
"""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

from .. import __version__

SETUP_SH = """\
#!/usr/bin/env bash
# Runs once, as root, when Gradescope builds the autograder image (Ubuntu 22.04: Python 3.10).
# The grader runs on the Python minor version and the exact package versions the
# instructor graded with (requirements.txt, from the instructor's environment).
set -euo pipefail
PY=python{python}
apt-get update
if ! command -v "$PY" >/dev/null; then
  apt-get install -y software-properties-common
  add-apt-repository -y ppa:deadsnakes/ppa
  apt-get update
fi
apt-get install -y "$PY" "$PY-venv"
"$PY" -m venv /opt/bpcheck
/opt/bpcheck/bin/pip install --upgrade pip
/opt/bpcheck/bin/pip install -r /autograder/source/requirements.txt
/opt/bpcheck/bin/pip install --no-deps {install}
# The submission runs as an unprivileged uid: make sure it cannot read the grader's files,
# bpcheck (the reference) or the autodiff libraries the homework does not allow, even where
# mount namespaces are refused (an allowed library stays readable: it may load more of
# itself while a test runs).
chmod -R o-rwx /autograder/source
SITE="$(/opt/bpcheck/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for pkg in {hidden}; do
  if [ -e "$SITE/$pkg" ]; then chmod -R o-rwx "$SITE/$pkg"; fi
done
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Runs for each submission; must write $ROOT/results/results.json whatever happens.
ROOT="${BPCHECK_AUTOGRADER_ROOT:-/autograder}"
ROOT="$(cd "$ROOT" 2>/dev/null && pwd -P || printf %s "$ROOT")"  # a relative root: made absolute
PYTHON="${BPCHECK_PYTHON:-/opt/bpcheck/bin/python}"
# -I and this folder: nothing of the submission's on the grader's import path
cd "$ROOT" || cd /
mkdir -p "$ROOT/results"
chmod 700 "$ROOT/results" 2>/dev/null || true
# Gradescope's metadata holds the earlier submissions' results (hidden tests' scores and
# outputs): the grader's alone, even where the submission runs without namespaces
chmod 600 "$ROOT/submission_metadata.json" 2>/dev/null || true
if ! "$PYTHON" -I -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("bpcheck") is None)' 2>/dev/null; then
  echo "run_autograder: $PYTHON cannot import bpcheck: set BPCHECK_PYTHON to a Python that has it (setup.sh builds /opt/bpcheck)" >&2
fi
CONFIG=()
if [ -f "$ROOT/source/grading.toml" ]; then CONFIG=(--config "$ROOT/source/grading.toml"); fi
if [ -f "$ROOT/source/homework.py" ]; then CONFIG+=(--homework "$ROOT/source/homework.py"); fi
# the whole upload: bpcheck picks the file to grade (and says so when there were several)
"$PYTHON" -I -m bpcheck grade "$ROOT/submission" --results "$ROOT/results/results.json" "${CONFIG[@]}"
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
  "$PYTHON" -I -c 'import json,sys; json.dump({"score": 0.0, "output": "The autograder failed (status " + sys.argv[2] + "); please tell your instructor.", "tests": []}, open(sys.argv[1], "w"))' "$ROOT/results/results.json" "$status"
fi
exit 0
"""


_SOURCE_DIR = "bpcheck-src"

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "bpcheck"
version = "{version}"
requires-python = ">=3.10"
dependencies = {dependencies}

[tool.setuptools.packages.find]
where = ["src"]
"""


def _bundle_source(zf: zipfile.ZipFile) -> list[str]:
    """Put this very bpcheck (the grader and its references) in the zip as a source tree.

    The grader in the image is then the one the instructor tested, whatever is or is not
    published on PyPI.  Dependencies are copied from the installed distribution.
    """
    from importlib import metadata

    package = Path(__file__).resolve().parents[1]
    try:
        requires = metadata.requires("bpcheck") or []
    except metadata.PackageNotFoundError:  # running from a bare source tree
        requires = ["numpy", "jax", "sympy", "symengine", "nbformat"]
    dependencies = [r for r in requires if "extra ==" not in r]
    names = []
    pyproject = _PYPROJECT.format(version=__version__, dependencies=json.dumps(dependencies))
    zf.writestr(f"{_SOURCE_DIR}/pyproject.toml", pyproject)  # a JSON array is a TOML array
    names.append(f"{_SOURCE_DIR}/pyproject.toml")
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            name = f"{_SOURCE_DIR}/src/bpcheck/{path.relative_to(package).as_posix()}"
            zf.write(path, name)
            names.append(name)
    return names


def _distribution_of(module: str) -> str | None:
    from .sandbox import _packages_distributions  # complete on Python 3.10 too

    dists = _packages_distributions().get(module.partition(".")[0]) or []
    return dists[0] if dists else None


def pinned_requirements(allow=()) -> list[str]:
    """``name==version`` for bpcheck's dependencies and the homework's allowed modules, as
    installed here (``importlib.metadata``), and their own dependencies; requirements
    for other Pythons keep their markers.  A local version label (``2.13.0+cpu``) is
    dropped: the public index has the release itself."""
    from importlib import metadata

    try:
        requires = metadata.requires("bpcheck") or []
    except metadata.PackageNotFoundError:  # running from a bare source tree
        requires = ["numpy", "jax", "sympy", "symengine", "nbformat", "threadpoolctl",
                    "tomli; python_version < '3.11'"]
    todo = [r for r in requires if "extra ==" not in r]
    todo += [d for m in allow if (d := _distribution_of(m))]
    pins, seen = {}, set()
    while todo:
        req = todo.pop(0)
        name, _, marker = req.partition(";")
        for sep in "<>=!~[ (":
            name = name.split(sep)[0]
        key = name.strip().lower().replace("_", "-")
        if not key or key in seen:
            continue
        seen.add(key)
        try:
            version = metadata.version(key)
        except metadata.PackageNotFoundError:
            if marker.strip():
                pins[key] = req.strip()  # not for this Python: kept as written
            continue
        pins[key] = f"{key}=={version.split('+')[0]}" + \
            (f"; {marker.strip()}" if marker.strip() else "")
        todo += [r for r in (metadata.requires(key) or []) if "extra ==" not in r]
    return [pins[k] for k in sorted(pins)]


HIDDEN_PACKAGES = ("bpcheck", "jax", "jaxlib", "torch", "functorch")
"""The packages ``setup.sh`` closes to other users, unless the homework allows them."""

_PARTS = {"jax": ("jax", "jaxlib"), "torch": ("torch", "functorch")}
"""An allowed module's top-level name -> the packages it loads from, whether or not it
is installed here (:func:`bpcheck.grade.sandbox.required_modules` adds what it requires)."""


def hidden_packages(allow) -> list[str]:
    """:data:`HIDDEN_PACKAGES` less those an allowed module needs: ``torch`` allowed, its
    submodules, loaded later by a test, must stay readable to the submission's uid, and
    ``flax`` or ``equinox`` allowed, jax and jaxlib (what they require, as installed)."""
    from .sandbox import required_modules

    tops = {m.partition(".")[0] for m in allow}
    needed = required_modules(tops) | {part for top in tops for part in _PARTS.get(top, (top,))}
    needed |= {part for top in list(needed) for part in _PARTS.get(top, ())}
    return [p for p in HIDDEN_PACKAGES if p not in needed]


def not_installed(allow) -> list[str]:
    """The homework's allowed modules that this Python cannot import: the zip cannot pin
    them, so Gradescope's image would lack them."""
    import importlib.util

    return [m for m in allow if importlib.util.find_spec(m.partition(".")[0]) is None]


def build_zip(out, config_path=None, wheel=None, homework=None) -> list[str]:
    """Write the autograder zip to ``out``; returns the names it holds.

    ``config_path``: a grading TOML copied in as ``grading.toml`` (validated first);
    ``homework``: the homework module (default: the config's, else the lecture's, which
    bpcheck holds), copied in as ``homework.py``, where only the grader can read it.
    ``wheel``: a bpcheck wheel to bundle and install; by default the running bpcheck's
    own source is bundled (``bpcheck-src/``) and installed from there.  Every package is
    pinned to the version installed here (``requirements.txt``).  A fault of the config or
    of the homework (a reference that raises, say: :class:`~.homework.HomeworkError`) is
    raised before anything is written.
    """
    import re
    import sys

    from .config import load_config

    cfg = load_config(config_path, homework)  # fail now, not on Gradescope
    seed = cfg.seed if cfg.seed is not None else 0
    for ex in cfg.homework.exercises:  # the homework's own faults too (HomeworkError)
        for case in ex.draw(seed):
            ex.expected(case)
            ex.wrong_answers(case)
    names = []
    out = Path(out)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        if wheel is not None:
            install = f'"/autograder/source/{Path(wheel).name}"'
            zf.write(wheel, Path(wheel).name)
            names.append(Path(wheel).name)
        else:
            install = f'"/autograder/source/{_SOURCE_DIR}"'
            names.extend(_bundle_source(zf))
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        zf.writestr("requirements.txt", "\n".join(pinned_requirements(cfg.homework.allow)) + "\n")
        names.append("requirements.txt")
        hidden = " ".join(hidden_packages(cfg.homework.allow))
        for name, text in (("setup.sh", SETUP_SH.format(install=install, python=python,
                                                        hidden=hidden)),
                           ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
            names.append(name)
        if config_path is not None:
            text = Path(config_path).read_text()
            first_table = re.search(r"(?m)^\[", text)
            cut = first_table.start() if first_table else len(text)
            head = re.sub(r"(?m)^homework\s*=.*$", "# homework: bundled as homework.py",
                          text[:cut])
            zf.writestr("grading.toml", head + text[cut:])
            names.append("grading.toml")
        if cfg.homework_path is not None:
            zf.write(cfg.homework_path, "homework.py")
            names.append("homework.py")
    return names
