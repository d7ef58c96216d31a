"""The homework autograder: exercises declared by a homework module, graded safely,
Gradescope-ready.

Three parts, on either side of the trust boundary:

- the exercises: :mod:`~bpcheck.grade.homework` (the public API: ``Homework``, cases,
  scorers, catalogued mistakes) and :mod:`~bpcheck.grade.lecture` (the lecture's four
  exercises, written with it; the default homework), with :mod:`~bpcheck.grade.reference`
  (reference solutions and the answers of the usual mistakes);
- :mod:`~bpcheck.grade.child`: what runs inside the sandbox (standard library, NumPy,
  and SymPy for the rule exercises; never bpcheck): the lock-down, loading the
  submission once, running the tests, the wire format;
- the parent: :mod:`~bpcheck.grade.sandbox` (limits, spawning, deadlines, reading
  frames), :mod:`~bpcheck.grade.source` (reading a ``.py`` or ``.ipynb``, the static scan),
  :mod:`~bpcheck.grade.grader` (one submission: plan, run, score),
  :mod:`~bpcheck.grade.compare` and :mod:`~bpcheck.grade.rules` (scoring),
  :mod:`~bpcheck.grade.results` (report, ``results.json``), :mod:`~bpcheck.grade.batch`,
  :mod:`~bpcheck.grade.gradescope`, :mod:`~bpcheck.grade.config`, :mod:`~bpcheck.grade.cli`.
"""

from .config import GradingConfig as GradingConfig
from .config import load_config as load_config
from .grader import GradeReport as GradeReport
from .grader import grade as grade

__all__ = ["GradeReport", "GradingConfig", "grade", "load_config"]
