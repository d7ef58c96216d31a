"""The homework autograder: the lecture's exercises, graded safely, Gradescope-ready.

Modules, in the order a grading run uses them:

- :mod:`~bpcheck.grade.source`: read a ``.py`` or ``.ipynb`` submission; static scan for
  forbidden libraries;
- :mod:`~bpcheck.grade.exercises`: the four exercises, their tests (drawn from a recorded
  seed) and scoring; :mod:`~bpcheck.grade.reference`: reference solutions and the answers
  of the usual mistakes; :mod:`~bpcheck.grade.compare`: CS231n relative error, verdicts;
  :mod:`~bpcheck.grade.polymap`: exercise 4's rules as plain polynomial data;
- :mod:`~bpcheck.grade.sandbox` (parent) and :mod:`~bpcheck.grade.child` (child): run
  student code in a locked-down process;
- :mod:`~bpcheck.grade.grader`: one submission, end to end; :mod:`~bpcheck.grade.results`:
  the report and ``results.json``; :mod:`~bpcheck.grade.batch`, :mod:`~bpcheck.grade.gradescope`,
  :mod:`~bpcheck.grade.config`, :mod:`~bpcheck.grade.cli`.
"""

from .config import GradingConfig as GradingConfig
from .config import load_config as load_config
from .grader import GradeReport as GradeReport
from .grader import grade as grade

__all__ = ["GradeReport", "GradingConfig", "grade", "load_config"]
