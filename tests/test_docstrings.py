"""Every docstring example in src/bpcheck runs and prints what it shows."""

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((SRC / "bpcheck").rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(SRC).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_modules_with_examples_are_found():
    assert {"bpcheck.symbolic.check", "bpcheck._params", "bpcheck.spiral"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_print_what_they_show(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.attempted > 0, f"{name} has '>>>' but no example doctest can run"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
