"""The zip's ``setup.sh`` as Gradescope runs it: as root, into a new ``/opt/bpcheck``,
from PyPI with the zip's pinned versions; then ``run_autograder`` on a correct upload.

Slow (a few minutes: it installs JAX, SymPy and the rest from PyPI) and needs root,
``unshare`` and the package index; run it with the Python that Gradescope's image has
(``python3.10 -m pytest -m slow tests/test_gradescope_setup.py``).  ``/opt`` and
``/autograder`` are fresh in-memory folders in a private mount namespace, as in a new image,
and ``apt-get`` / ``add-apt-repository`` only record what they were asked: the test
checks the Python side of the script (the venv, the pinned install, the permissions),
not Ubuntu's packages.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bpcheck.grade.gradescope import build_zip

HERE = Path(__file__).resolve().parent
CORRECT = HERE / "grade_submissions" / "correct.py"

SCRIPT = """\
set -e
mount -t tmpfs tmpfs /opt
mkdir -p /autograder && mount -t tmpfs tmpfs /autograder
mkdir -p /autograder/source /autograder/submission
cd /autograder/source && python3 -m zipfile -e "$ZIP" .
PATH="$SHIMS:$PATH" bash /autograder/source/setup.sh > "$OUT/setup.log" 2>&1
cp "$SUBMISSION" /autograder/submission/
env -u BPCHECK_PYTHON -u BPCHECK_AUTOGRADER_ROOT bash /autograder/source/run_autograder \
    > "$OUT/run.log" 2>&1
cp /autograder/results/results.json "$OUT/"
/opt/bpcheck/bin/python -c 'import sys; print(sys.version_info[:2])' > "$OUT/python.txt"
stat -c %a /autograder/source > "$OUT/mode.txt"
"""


@pytest.mark.slow
def test_setup_sh_installs_the_pinned_grader_and_it_grades_a_correct_upload(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a private mount namespace for /opt, /autograder)")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shims = tmp_path / "shims"
    shims.mkdir()
    for tool in ("apt-get", "add-apt-repository"):
        (shims / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/apt.log"\n')
        (shims / tool).chmod(0o755)
    (shims / f"python{version}").symlink_to(os.path.realpath(sys.executable))
    zip_path = tmp_path / "autograder.zip"
    build_zip(zip_path)
    env = {**os.environ, "ZIP": str(zip_path), "SHIMS": str(shims), "OUT": str(tmp_path),
           "SUBMISSION": str(CORRECT)}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", SCRIPT],
                          env=env, capture_output=True, text=True, timeout=1800)
    logs = "".join((tmp_path / n).read_text()[-3000:] for n in ("setup.log", "run.log")
                   if (tmp_path / n).exists())
    assert proc.returncode == 0, proc.stderr + logs
    assert (tmp_path / "python.txt").read_text().strip() == str(sys.version_info[:2])
    assert f"apt-get install -y python{version} python{version}-venv" in \
        (tmp_path / "apt.log").read_text()
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["score"] == 100, logs
    assert (tmp_path / "mode.txt").read_text().strip() == "750"  # closed to other users
