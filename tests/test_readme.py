"""The README's library example prints what the README says it prints."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_output_is_real():
    text = README.read_text()
    code, expected = re.search(
        r"## The library\n\n```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", text, re.S
    ).groups()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == expected


def test_ci_runs_the_readme_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "ci:setup" in ci and "ci:test" in ci
    text = README.read_text()
    for marker in ("<!-- ci:setup -->", "<!-- ci:test -->"):
        block = text.split(marker, 1)[1].split("```", 2)[1]
        assert block.startswith("sh\n") and "pip install" in block


def test_readme_refutation_example_output_is_real():
    text = README.read_text()
    code, expected = re.search(
        r"## The proof checker\n.*?```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", text, re.S
    ).groups()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == expected


def test_readme_ntk_example_output_is_real():
    text = README.read_text()
    code, expected = re.search(
        r"What the factors buy.*?```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", text, re.S
    ).groups()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == expected
