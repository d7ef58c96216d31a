"""The README's examples print what the README says they print; CI runs its commands."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

EXAMPLES = {
    "library": r"## The library\n\n",
    "factors at work": r"What the factors buy.*?",
    "activations and losses": r"Activations and losses: .*?",
    "refutation": r"Candidate rules can be checked.*?",
    "training": r"Training from Python.*?",
    "torch model": r"## Your model\n.*?",
    "equinox model": r"and the pytree of an Equinox model.*?",
    "layers without a bias": r"Layers without a bias \(.*?",
    "numeric checks": r"The numeric checks as a library.*?",
}
NEEDS = {"torch model": "torch", "equinox model": "equinox"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_readme_example_output_is_real(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name], reason=f"the README's {name} example needs {NEEDS[name]}")
    pattern = EXAMPLES[name] + r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```"
    code, expected = re.search(pattern, README.read_text(), re.DOTALL).groups()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == expected


def test_ci_runs_the_readme_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "ci:setup" in ci and "ci:test" in ci
    text = README.read_text()
    for marker in ("<!-- ci:setup -->", "<!-- ci:test -->"):
        block = text.split(marker, 1)[1].split("```", 2)[1]
        assert block.startswith("sh\n") and "pip install" in block
