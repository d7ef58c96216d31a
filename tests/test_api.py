"""The public API: every name in __all__ imports, and importing changes no JAX setting."""

import subprocess
import sys

import bpcheck


def test_every_public_name_is_importable():
    for name in bpcheck.__all__:
        assert getattr(bpcheck, name) is not None, name
    assert sorted(bpcheck.__all__) == sorted(set(bpcheck.__all__))


def test_import_changes_no_global_jax_setting():
    code = (
        "import jax; before = {k: getattr(jax.config, k) for k in "
        "('jax_enable_x64', 'jax_default_matmul_precision', 'jax_platforms')}; "
        "import bpcheck, bpcheck.numcheck, bpcheck.verify; "
        "after = {k: getattr(jax.config, k) for k in before}; "
        "assert before == after, (before, after); print('unchanged', after['jax_enable_x64'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unchanged False"


def test_cli_help_lists_commands_and_an_example():
    out = subprocess.run([sys.executable, "-m", "bpcheck", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("verify", "train", "grade"):
        assert command in out
    assert "example" in out
    bad = subprocess.run([sys.executable, "-m", "bpcheck", "frobnicate"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr
