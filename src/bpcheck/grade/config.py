"""The instructor's grading config, a TOML file; every key is optional.

Example (``bpcheck grade --template-config`` prints a complete one)::

    homework = "conv_hw.py"   # the homework module (default: the lecture's homework)
    submission = "hw.ipynb"   # the file graded in an upload of several files
    tolerance = 1e-6          # float64 relative error at or below which an output passes,
                              # for every exercise (it replaces the homework's own tol)
    seed = 2024               # fixed seed for every submission (default: a fresh one each run)

    [exercises.1]             # or [exercises.softmax_loss]
    points = 30
    tolerance = 1e-4          # this exercise's (before the one above)
    visibility = "visible"    # visible | hidden | after_due_date | after_published
    tests = { "1.5" = "after_due_date" }   # per-test visibility

    [sandbox]
    test_timeout_s = 10       # per test, wall clock
    load_timeout_s = 30       # start-up and loading the submission
    cell_timeout_s = 30       # each notebook cell
    memory_mb = 1536          # address space of the child, beyond the libraries it loaded
                              # (a memory cgroup, as root: memory_mb + 2 x tmp_mb of pages
                              # in all, the libraries' included)

Values are checked when the file is read (a named :class:`ConfigError`), and exercise
names and numbers against the homework before anything runs (:meth:`GradingConfig.bind`).
"""

from __future__ import annotations

import json

import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .homework import VISIBILITIES, Exercise, Homework, HomeworkError
from .sandbox import Limits


class ConfigError(ValueError):
    """A config key has a value of the wrong kind; the message names key, value, expectation."""


@dataclass
class ExerciseConfig:
    """Overrides for one exercise; ``None``: the homework's value."""

    points: float | None = None
    visibility: str | None = None
    tolerance: float | None = None
    tests: dict[str, str] = field(default_factory=dict)


@dataclass
class GradingConfig:
    exercises: dict[str, ExerciseConfig] = field(default_factory=dict)
    """Keyed as written: an exercise's number (``"1"``) or name (``"softmax_loss"``)."""
    tolerance: float | None = None
    seed: int | None = None
    limits: Limits = field(default_factory=Limits)
    path: str | None = None
    homework_path: str | None = None
    submission: str | None = None
    _homework: Homework | None = None

    def __getstate__(self):  # the homework is reloaded from its path in another process
        return {**self.__dict__, "_homework": None}

    @property
    def homework(self) -> Homework:
        """The homework graded (loaded on first use; the lecture's by default)."""
        if self._homework is None:
            if self.homework_path is None:
                from .lecture import hw
                self._homework = hw
            else:
                from .homework import load_homework
                try:
                    self._homework = load_homework(self.homework_path)
                except HomeworkError as err:
                    raise ConfigError(str(err)) from None
            self.bind(self._homework)
        return self._homework

    def bind(self, hw: Homework) -> None:
        """Check every ``[exercises.X]`` (``X`` an exercise's number or its function's name)
        against ``hw``; a :class:`ConfigError` names the unknown exercise or test, or the
        two tables that configure one exercise."""
        self._homework = hw
        seen: dict[Exercise, str] = {}
        for key, ex_cfg in self.exercises.items():
            ex = self._find(hw, key)
            if ex in seen:  # one table would be used and the other silently dropped
                raise ConfigError(f"exercises.{seen[ex]} and exercises.{key} both configure "
                                  f"exercise {ex.number} ({ex.name}); expected one table")
            seen[ex] = key
            if ex_cfg.tolerance is not None and not hasattr(ex.scorer, "tol"):
                raise ConfigError(
                    f"exercises.{key}.tolerance: exercise {ex.number} ({ex.name}) is scored by "
                    f"{type(ex.scorer).__name__}, which has no tolerance; expected it only for "
                    "an exercise scored by relative error (RelativeError)")
            for number in ex_cfg.tests:
                if not number.startswith(f"{ex.number}.") or not number[len(f"{ex.number}."):] \
                        .isdigit() or not 1 <= int(number.split(".")[1]) <= len(ex.weights()):
                    raise ConfigError(f"exercises.{key}.tests.{number}: expected a test number "
                                      f"\"{ex.number}.T\" with T in 1..{len(ex.weights())}")

    @staticmethod
    def _find(hw, key) -> Exercise:
        for ex in hw.exercises:
            if key in (str(ex.number), ex.name):
                return ex
        known = ", ".join(f"{ex.number} ({ex.name})" for ex in hw.exercises)
        raise ConfigError(f"exercises.{key}: no such exercise in the homework; expected one "
                          f"of {known}")

    def _override(self, ex: Exercise) -> ExerciseConfig:
        for key in (str(ex.number), ex.name):
            if key in self.exercises:
                return self.exercises[key]
        return ExerciseConfig()

    def points(self, ex: Exercise) -> float:
        p = self._override(ex).points
        return ex.points if p is None else p

    def tolerance_for(self, ex: Exercise) -> float | None:
        """The relative-error tolerance that replaces ``ex``'s scorer's own ``tol``: the
        exercise's ``tolerance``, else the config's, else ``None`` (the homework's holds)."""
        own = self._override(ex).tolerance
        return self.tolerance if own is None else own

    def visibility(self, case) -> str:
        o = self._override(case.exercise)
        return o.tests.get(case.number, o.visibility or case.visibility)


def _number(where, value, kind=float, minimum=0, strict=False):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigError(f"{where} = {value!r}: expected a{'n integer' if kind is int else ' number'}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r}: expected a finite number")
    if value < minimum or (strict and value == minimum):
        raise ConfigError(f"{where} = {value!r}: expected a value {'>' if strict else '>='} "
                          f"{minimum}")
    return kind(value)


def _visibility(where, value):
    if value not in VISIBILITIES:
        raise ConfigError(f"{where} = {value!r}: expected one of {', '.join(VISIBILITIES)}")
    return value


_POSITIVE = ("load_timeout_s", "test_timeout_s", "cell_timeout_s", "memory_mb", "processes")


def parse_config(doc: dict, path: str | None = None) -> GradingConfig:
    """A :class:`GradingConfig` from a parsed TOML document; unknown keys are errors.

    ``path``: the file it came from (``homework`` is relative to its folder)."""
    cfg = GradingConfig(path=path)
    keys = ("homework", "submission", "tolerance", "seed", "exercises", "sandbox")
    for key in doc:
        if key not in keys:
            raise ConfigError(f"{key}: unknown key; expected homework, submission, tolerance, "
                              "seed, [exercises.N] or [sandbox]")
    if "homework" in doc:
        if not isinstance(doc["homework"], str) or not doc["homework"].endswith(".py"):
            raise ConfigError(f"homework = {doc['homework']!r}: expected the path of a .py file")
        base = Path(path).parent if path else Path.cwd()
        cfg.homework_path = str((base / doc["homework"]).resolve())
        if not Path(cfg.homework_path).is_file():
            raise ConfigError(f"homework = {doc['homework']!r}: no such file "
                              f"({cfg.homework_path})")
    if "submission" in doc:
        name = doc["submission"]
        if not isinstance(name, str) or "/" in name or not name.endswith((".py", ".ipynb")):
            raise ConfigError(f"submission = {name!r}: expected a file name ending in .py or "
                              ".ipynb (no folder)")
        cfg.submission = name
    if "tolerance" in doc:
        cfg.tolerance = _number("tolerance", doc["tolerance"], strict=True)
    if "seed" in doc:
        cfg.seed = _number("seed", doc["seed"], int)
    exercises = doc.get("exercises", {})
    if not isinstance(exercises, dict):
        raise ConfigError("exercises: expected tables [exercises.N]")
    for name, table in exercises.items():
        if not isinstance(table, dict):
            raise ConfigError(f"exercises.{name}: expected a table [exercises.{name}]")
        ex = cfg.exercises.setdefault(str(name), ExerciseConfig())
        for key, value in table.items():
            where = f"exercises.{name}.{key}"
            if key == "points":
                ex.points = _number(where, value)
            elif key == "visibility":
                ex.visibility = _visibility(where, value)
            elif key == "tolerance":
                ex.tolerance = _number(where, value, strict=True)
            elif key == "tests":
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: expected a table of test number -> visibility")
                for number, vis in value.items():
                    ex.tests[number] = _visibility(f"{where}.{number}", vis)
            else:
                raise ConfigError(f"{where}: unknown key; expected points, visibility, "
                                  "tolerance or tests")
    known = {f.name: f for f in fields(Limits)}
    for key, value in doc.get("sandbox", {}).items():
        where = f"sandbox.{key}"
        if key not in known:
            raise ConfigError(f"{where}: unknown key; expected one of {', '.join(known)}")
        default = getattr(Limits(), key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where} = {value!r}: expected true or false")
        elif key == "uid" or isinstance(default, int):
            value = _number(where, value, int, strict=key in _POSITIVE)
        else:
            value = _number(where, value, strict=key in _POSITIVE)
        setattr(cfg.limits, key, value)
    return cfg


def load_config(path=None, homework=None) -> GradingConfig:
    """The config at ``path`` (TOML), or the defaults when ``path`` is ``None``;
    ``homework`` (a module's path) overrides the config's.  Checked against the homework."""
    if path is None:
        cfg = GradingConfig()
    else:
        p = Path(path)
        try:
            with p.open("rb") as f:
                doc = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"--config {path}: no such file") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"--config {path}: not valid TOML ({err})") from None
        cfg = parse_config(doc, str(p.resolve()))
    if homework is not None:
        if not Path(homework).is_file():
            raise ConfigError(f"--homework {homework}: no such file")
        cfg.homework_path = str(Path(homework).resolve())
        cfg._homework = None
    cfg.homework  # noqa: B018 - loads and checks the homework now, before anything runs
    return cfg


def template_config(hw: Homework, homework: str | None = None) -> str:
    """A complete sample config for ``hw``; ``homework``: the path of its module as the
    config names it (relative to the config's folder), written as an active key, so that
    the config graded with and ``gradescope-zip --config`` bundle that homework (``None``:
    the lecture's, left as a comment)."""
    where = ([f"homework = {json.dumps(homework)}  # the homework module (relative to this "
              "file's folder)"] if homework is not None else
             ['# homework = "my_homework.py"  # the homework module (default: the lecture\'s)'])
    out = ["# bpcheck grading config (TOML).  Every key is optional.", *where,
           '# submission = "hw.ipynb"      # the file graded when a student uploads several',
           "# tolerance = 1e-6             # float64 relative error at which an output passes,",
           "#                              # for every exercise: it replaces each exercise's own",
           "# seed = 2024                  # fixed seed for every submission (not with hidden "
           "tests: a student who finds it from a visible test rebuilds the hidden inputs)", ""]
    for ex in hw.exercises:
        own = {}
        for case in ex.draw(0):
            own.setdefault(case.visibility, []).append(case.number)
        said = "; ".join(f"{vis}: {', '.join(numbers)}" for vis, numbers in own.items())
        out += [f"[exercises.{ex.number}]{' ' * max(1, 10 - len(str(ex.number)))}# {ex.name}",
                f"points = {ex.points:g}",
                f"# the homework's own visibilities ({said}) hold unless set here;",
                "# visibility sets every test of the exercise, tests one test's",
                '# visibility = "visible"  # visible | hidden | after_due_date | after_published',
                f'# tests = {{ "{ex.number}.1" = "hidden" }}']
        if hasattr(ex.scorer, "tol"):
            out.append(f"# tolerance = {ex.scorer.tol:g}  # the homework's own; set here for "
                       "this exercise alone")
        out.append("")
    out += ["[sandbox]",
            "load_timeout_s = 30     # child start-up and loading the submission",
            "cell_timeout_s = 30     # each notebook cell; a cell past it is stopped and named",
            "test_timeout_s = 10     # each test, wall clock",
            "memory_mb = 1536        # address space of the child, beyond its libraries (as "
            "root, a memory cgroup: memory_mb + 2 x tmp_mb of pages, libraries included)",
            "file_mb = 16            # largest file the child may write",
            "tmp_mb = 64             # size of the child's private /tmp",
            "processes = 16          # processes and threads of the child's uid",
            "output_kb = 64          # student output kept for the report",
            "result_mb = 64          # results the child may send, in all",
            "namespaces = true       # private mount, PID, network and IPC namespaces; false "
            "turns them off (the child then sees every file its uid may read)",
            "restarts = 1            # fresh children after a crash or time-out, per exercise",
            "submission_timeout_s = 480  # wall clock for the whole submission, whatever its "
            "children do (Gradescope's default timeout for the whole run is 10 minutes)",
            "check_timeout_s = 60    # each symbolic check of the student's rules, wall clock",
            "check_memory_mb = 2048  # memory of that check, beyond the grader's own",
            ""]
    return "\n".join(out)


GRADESCOPE_TIMEOUT_S = 600
"""Gradescope's default timeout for an autograder run (the assignment's settings)."""

_NOT_SHOWN = ("hidden", "after_due_date", "after_published")


def deployment_warnings(cfg: GradingConfig) -> list[str]:
    """Lines on a config that grades but misleads on Gradescope (``gradescope-zip`` prints
    them): a fixed ``seed`` with tests the students do not see (the homework's own or the
    config's), whose inputs a student can rebuild once the seed is found from a visible
    test's (a lookup table of them then scores full marks); a whole-submission budget that,
    with start-up and writing the results, outlasts Gradescope's default timeout
    (Gradescope then shows its own failure, and no results)."""
    lines = []
    hw = cfg.homework
    hides = any(cfg.visibility(case) in _NOT_SHOWN for ex in hw.exercises if cfg.points(ex) > 0
                for case in ex.draw(cfg.seed or 0))
    if cfg.seed is not None and hides:
        lines.append(f"seed = {cfg.seed} is fixed and some tests are not shown to students: a "
                     "student who finds the seed (by trying seeds until a visible test's inputs "
                     "match) can rebuild the hidden tests' inputs; leave seed out, and each "
                     "submission gets a fresh seed, recorded in its results")
    need = cfg.limits.submission_timeout_s + 60
    if need > GRADESCOPE_TIMEOUT_S:
        minutes = -(-need // 60)
        lines.append(f"submission_timeout_s = {cfg.limits.submission_timeout_s:g}: with start-up "
                     "and writing the results, one submission may take longer than Gradescope's "
                     "default autograder timeout of 10 minutes, after which Gradescope shows its "
                     "own failure and no results; raise the timeout in the assignment's settings "
                     f"to at least {minutes:g} minutes, or lower submission_timeout_s")
    return lines
