"""Unpack a Gradescope autograder zip into a mock ``/autograder`` and run it on one upload."""

import json
import os
import subprocess
import sys
import zipfile


def run_autograder(zip_path, root, files: dict, timeout=600) -> dict:
    """Extract ``zip_path`` to ``root/source``, write ``files`` (name -> text) as the
    upload in ``root/submission`` and run ``run_autograder``; returns results.json."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
    (root / "submission").mkdir(exist_ok=True)
    for name, text in files.items():
        (root / "submission" / name).write_text(text)
    script = root / "source" / "run_autograder"
    script.chmod(0o755)
    env = {**os.environ, "BPCHECK_AUTOGRADER_ROOT": str(root), "BPCHECK_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads((root / "results" / "results.json").read_text())
