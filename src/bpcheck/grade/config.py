"""The instructor's grading config, a TOML file; every key is optional.

Example (``bpcheck grade --template-config`` prints a complete one)::

    tolerance = 1e-6          # CS231n relative error at or below which an output passes
    seed = 2024               # fixed seed for every submission (default: a fresh one each run)

    [exercises.1]
    points = 30
    visibility = "visible"    # visible | hidden | after_due_date | after_published
    tests = { "1.5" = "after_due_date" }   # per-test visibility

    [exercises.4]
    points = 0                # 0: not graded

    [sandbox]
    test_timeout_s = 10       # per test, wall clock
    load_timeout_s = 30       # start-up and loading the submission
    memory_mb = 1536          # address space of the child
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .sandbox import Limits

VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
DEFAULT_POINTS = {1: 25.0, 2: 25.0, 3: 25.0, 4: 25.0}


class ConfigError(ValueError):
    """A config key has a value of the wrong kind; the message names key, value, expectation."""


@dataclass
class ExerciseConfig:
    points: float
    visibility: str = "visible"
    tests: dict[str, str] = field(default_factory=dict)


@dataclass
class GradingConfig:
    exercises: dict[int, ExerciseConfig] = field(
        default_factory=lambda: {e: ExerciseConfig(p) for e, p in DEFAULT_POINTS.items()})
    tolerance: float = 1e-6
    seed: int | None = None
    limits: Limits = field(default_factory=Limits)
    path: str | None = None

    def visibility(self, exercise: int, number: str) -> str:
        ex = self.exercises[exercise]
        return ex.tests.get(number, ex.visibility)


def _number(where, value, kind=float, minimum=0):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigError(f"{where} = {value!r}: expected a{'n integer' if kind is int else ' number'}")
    if value < minimum:
        raise ConfigError(f"{where} = {value!r}: expected a value >= {minimum}")
    return kind(value)


def _visibility(where, value):
    if value not in VISIBILITIES:
        raise ConfigError(f"{where} = {value!r}: expected one of {', '.join(VISIBILITIES)}")
    return value


def parse_config(doc: dict, path: str | None = None) -> GradingConfig:
    """A :class:`GradingConfig` from a parsed TOML document; unknown keys are errors."""
    cfg = GradingConfig(path=path)
    for key in doc:
        if key not in ("tolerance", "seed", "exercises", "sandbox"):
            raise ConfigError(f"{key}: unknown key; expected tolerance, seed, [exercises.N] "
                              "or [sandbox]")
    if "tolerance" in doc:
        cfg.tolerance = _number("tolerance", doc["tolerance"])
    if "seed" in doc:
        cfg.seed = _number("seed", doc["seed"], int)
    for name, table in doc.get("exercises", {}).items():
        if name not in ("1", "2", "3", "4") or not isinstance(table, dict):
            raise ConfigError(f"exercises.{name}: expected a table [exercises.N] with N in 1..4")
        e = int(name)
        ex = cfg.exercises[e]
        for key, value in table.items():
            where = f"exercises.{name}.{key}"
            if key == "points":
                ex.points = _number(where, value)
            elif key == "visibility":
                ex.visibility = _visibility(where, value)
            elif key == "tests":
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: expected a table of test number -> visibility")
                for number, vis in value.items():
                    if not number.startswith(f"{e}."):
                        raise ConfigError(f"{where}.{number}: expected a test number "
                                          f"\"{e}.T\" of exercise {e}")
                    ex.tests[number] = _visibility(f"{where}.{number}", vis)
            else:
                raise ConfigError(f"{where}: unknown key; expected points, visibility or tests")
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
            value = _number(where, value, int)
        else:
            value = _number(where, value)
        setattr(cfg.limits, key, value)
    return cfg


def load_config(path=None) -> GradingConfig:
    """The config at ``path`` (TOML), or the defaults when ``path`` is ``None``."""
    if path is None:
        return GradingConfig()
    p = Path(path)
    try:
        with p.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config {path}: not valid TOML ({err})") from None
    return parse_config(doc, str(p.resolve()))


TEMPLATE_CONFIG = '''\
# bpcheck grading config (TOML).  Every key is optional.
tolerance = 1e-6        # CS231n relative error at or below which an output passes
# seed = 2024           # fixed seed for every submission (default: a fresh seed per run)

[exercises.1]           # softmax_loss
points = 25
visibility = "visible"  # visible | hidden | after_due_date | after_published

[exercises.2]           # two_layer_loss
points = 25
visibility = "visible"

[exercises.3]           # backprop_factors
points = 25
visibility = "visible"
tests = { "3.5" = "after_due_date" }

[exercises.4]           # v_rule and u_rule
points = 25
visibility = "visible"

[sandbox]
load_timeout_s = 30     # child start-up and loading the submission
test_timeout_s = 10     # each test, wall clock
memory_mb = 1536        # address space of the child process
file_mb = 16            # largest file the child may write
tmp_mb = 64             # size of the child's private /tmp
processes = 16          # processes and threads of the child's uid
output_kb = 64          # student output kept for the report
restarts = 1            # fresh children after a crash or time-out, for the remaining tests
submission_timeout_s = 600  # wall clock for the whole submission, whatever its children do
check_timeout_s = 60    # exercise 4: each symbolic check of the student's rules, wall clock
check_memory_mb = 2048  # exercise 4: memory of that check, beyond the grader's own
'''
