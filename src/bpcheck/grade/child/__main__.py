"""``python -I -S -B <box>/harness/child/__main__.py plan.json``: the child process.

Run as a script from the scratch folder (``-I`` puts no folder of it on ``sys.path``), it
makes its own parent folder importable so that the package's relative imports work.
"""

import os
import sys

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from child.main import entry
else:  # pragma: no cover - python -m bpcheck.grade.child
    from .main import entry

entry()
