"""Grade one submission: draw the tests, run each exercise in its own child, score here.

Nothing the child says is a score: the child returns plain arrays, and every verdict is
computed in this process from bpcheck's reference.  An exercise whose child hangs or
dies loses the test in progress; a fresh child (up to ``restarts`` times) runs the
remaining tests, so one bad test costs one test.
"""

from __future__ import annotations

import ast
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import exercises as exs
from .config import GradingConfig
from .sandbox import LimitExceeded, run_child, run_limited, submission_budget
from .source import (
    SubmissionError,
    forbidden_uses_in_cells,
    join_cells,
    pick_submission,
    read_cells,
    read_submission,
)


@dataclass
class TestResult:
    """One Gradescope test: ``number`` is ``"E.T"``."""

    number: str
    name: str
    score: float
    max_score: float
    lines: list[str]
    visibility: str = "visible"

    @property
    def passed(self) -> bool:
        return self.score >= self.max_score - 1e-9


@dataclass
class GradeReport:
    """Everything the report and ``results.json`` are built from."""

    submission: str
    seed: int
    tests: list[TestResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    isolation: list[str] = field(default_factory=list)
    student_output: dict[int, str] = field(default_factory=dict)
    hidden_messages: list[str] = field(default_factory=list)
    """Notes from the children that ran tests students do not see (instructor view only)."""
    hidden_output: dict[int, str] = field(default_factory=dict)
    """What the submission printed in those children (instructor view only)."""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(t.score for t in self.tests), 6)

    @property
    def max_score(self) -> float:
        return round(sum(t.max_score for t in self.tests), 6)

    def exercise_score(self, e: int) -> float:
        return round(sum(t.score for t in self.tests if t.number.startswith(f"{e}.")), 6)


def _zero_all(report, cfg, cases_by_ex, message):
    for cases in cases_by_ex.values():
        for c in cases:
            _add(report, cfg, c, 0.0, [message])


def _add(report, cfg, case, fraction, lines):
    ex = cfg.exercises[case.exercise]
    n = len(exs.EXERCISES[case.exercise].sizes)
    points = ex.points / n
    function = exs.EXERCISES[case.exercise].functions[0] if case.exercise != 4 else "v_rule, u_rule"
    name = f"{function}: {case.label}"
    # unrounded, so that totals add up exactly; rounded where they are shown
    report.tests.append(TestResult(case.number, name, points * fraction, points, list(lines),
                                   cfg.visibility(case.exercise, case.number)))


def _strings(value, limit: int = 20) -> list[str]:
    """A list of strings from the child's (untrusted) header, capped."""
    return [str(v)[:2000] for v in value[:limit]] if isinstance(value, list) else []


def _run_exercise(source, e, cases, cfg: GradingConfig, report: GradeReport, cells=None):
    """Run exercise ``e``'s tests in children; returns ``{index: (fraction, lines)}``.

    Tests that students see and tests they do not (``hidden``, ``after_due_date`` ...) run
    in separate children: what a child's submission prints or raises can only carry the
    inputs that child held, so the visible results never carry a hidden test's inputs.
    ``cells``: a notebook's ``[(label, source)]``, run one by one (a failing cell is
    reported and the next one runs); ``None`` for a ``.py`` file, run whole."""
    outcome: dict[int, tuple[float, list[str]]] = {}
    for visible in (True, False):
        group = [c.index for c in cases
                 if (cfg.visibility(e, c.number) == "visible") == visible]
        if not group:
            continue
        tests, inputs = exs.child_plan(e, cases, only=set(group))
        outcome.update(_run_group(source, e, cases, group, tests, inputs, cfg, report, cells,
                                  visible))
    return outcome


def _run_group(source, e, cases, pending, tests, inputs, cfg, report, cells, visible):
    ex = exs.EXERCISES[e]
    limits = cfg.limits
    hide = [cfg.path] if cfg.path else []
    outcome: dict[int, tuple[float, list[str]]] = {}
    output = report.student_output if visible else report.hidden_output
    messages = report.messages if visible else report.hidden_messages
    attempts = 0
    while pending:
        run = run_child(source, e, list(ex.functions), tests, pending, inputs, limits, hide=hide,
                        extra_plan={"cells": cells})
        for note in run.notes:
            if note not in report.isolation:
                report.isolation.append(note)
        if run.stdout.strip():
            output[e] = output.get(e, "") + run.stdout
        loaded = run.loaded if isinstance(run.loaded, dict) else None
        for note in _strings((loaded or {}).get("cell_errors")):
            note = f"{note} (the other cells were run)"
            if note not in messages:
                messages.append(note)
        if loaded is None:
            why = run.failure or "the grading process ended before the submission loaded"
            for i in pending:
                outcome[i] = (0.0, [f"the submission could not be loaded: {why}"])
            break
        forbidden, missing = _strings(loaded.get("forbidden")), _strings(loaded.get("missing"))
        if forbidden:
            libs = ", ".join(forbidden)
            for i in pending:
                outcome[i] = (0.0, [f"the submission uses {libs}, which is not allowed "
                                    "(numpy, sympy and the standard library only)"])
            break
        if loaded.get("error"):
            for i in pending:
                outcome[i] = (0.0, ["loading the submission failed: "
                                    + str(loaded["error"])[:2000]])
            break
        if missing:
            names = ", ".join(missing)
            for i in pending:
                outcome[i] = (0.0, [f"{names} is not defined (expected a function named "
                                    f"{names})"])
            break
        for i in list(pending):
            msg = run.tests.get(i)
            if msg is None:
                continue
            pending.remove(i)
            try:
                outcome[i] = _score(cases[i], msg, cfg)
            except Exception as err:  # noqa: BLE001 - a forged message is a failed test
                outcome[i] = (0.0, [f"the result could not be read ({type(err).__name__})"])
        if pending:
            first = pending.pop(0)
            outcome[first] = (0.0, [run.failure or "no result came back"])
            attempts += 1
            if attempts > limits.restarts:
                for i in pending:
                    outcome[i] = (0.0, [f"not run: the submission's process failed {attempts} "
                                        "times in this exercise"])
                break
    return outcome


def _score(case, msg, cfg):
    header, arrays = msg.header, msg.arrays
    if msg.problem:
        return 0.0, [msg.problem]
    if header.get("forbidden"):
        libs = ", ".join(map(str, header["forbidden"]))
        return 0.0, [f"uses {libs}, which is not allowed (numpy, sympy and the standard "
                     "library only)"]
    if header.get("error"):
        return 0.0, ["raised " + str(header["error"])]
    meta = header.get("meta")
    if not isinstance(meta, dict):
        return 0.0, ["no result came back"]
    try:
        if case.exercise == 4:  # the symbolic check's cost is the child's to choose: limit it
            limits = cfg.limits
            _warm_up_the_check()
            try:
                return tuple(run_limited(_score_rules, case, meta, arrays,
                                         seconds=limits.check_timeout_s,
                                         memory_mb=limits.check_memory_mb))
            except LimitExceeded as err:
                return 0.0, [f"the rules are too large to check: {err} (the check's limits "
                             f"are {limits.check_timeout_s:g} s and "
                             f"{limits.check_memory_mb} MB)"]
        else:
            s = exs.SCORERS[case.exercise](case, meta, arrays, cfg.tolerance)
    except (ValueError, TypeError, KeyError) as err:
        return 0.0, [f"the returned value could not be checked ({type(err).__name__}: {err})"]
    return s.fraction, s.lines


_warm: list = []


def _warm_up_the_check():
    """Run the symbolic check once here on the lecture's own rules, so that the modules it
    imports on first use are loaded before each limited check is forked from this process."""
    if not _warm:
        from ..symbolic import check_recursion

        check_recursion([2, 2, 2])
        _warm.append(True)


def _score_rules(case, meta, arrays):
    s = exs.score_rules(case, meta, arrays)
    return [s.fraction, list(s.lines)]


def grade(path, cfg: GradingConfig | None = None, seed: int | None = None) -> GradeReport:
    """Grade the submission at ``path``: a ``.py`` or ``.ipynb`` file, or a folder of uploaded
    files, of which :func:`bpcheck.grade.source.pick_submission` chooses one.

    ``seed``: the tests' seed (default: the config's, else a fresh random one); it is
    recorded in the report so that any failure can be replayed with ``--seed``.
    """
    cfg = cfg or GradingConfig()
    t0 = time.monotonic()
    if seed is None:
        seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2 ** 31)
    report = GradeReport(str(path), int(seed))
    graded = [e for e in (1, 2, 3, 4) if cfg.exercises[e].points > 0]
    cases_by_ex = {e: exs.draw_cases(e, seed) for e in graded}
    if Path(path).is_dir():
        chosen, note = pick_submission(path)
        if chosen is None:
            msg = f"no .py or .ipynb file was submitted (in {Path(path).name}/)"
            report.messages.append(msg)
            _zero_all(report, cfg, cases_by_ex, msg)
            report.seconds = time.monotonic() - t0
            return report
        if note:
            report.messages.append(note)
        path = chosen
        report.submission = str(path)
    cells = None
    try:
        if Path(path).suffix == ".ipynb":
            cells = read_cells(path)
            source = join_cells(cells)
            uses, top_level = forbidden_uses_in_cells(cells)
            if top_level:
                report.messages.append(
                    f"notebook cells use {', '.join(top_level)} at top level; those cells fail "
                    "when graded (numpy, sympy and the standard library only) and the other "
                    "cells still run")
        else:
            source = read_submission(path)
            ast.parse(source)  # a SyntaxError is reported for the whole file
            uses, top_level = forbidden_uses_in_cells([("submission.py", source)])
            if top_level:  # the import would fail when the file is loaded: nothing runs
                msg = (f"the submission uses {', '.join(top_level)} at top level (outside "
                       "the exercise functions), which is not allowed (numpy, sympy and the "
                       "standard library only); remove that code")
                report.messages.append(msg)
                _zero_all(report, cfg, cases_by_ex, msg)
                report.seconds = time.monotonic() - t0
                return report
    except (SubmissionError, OSError) as err:
        report.messages.append(str(err))
        _zero_all(report, cfg, cases_by_ex, f"the submission could not be read: {err}")
        report.seconds = time.monotonic() - t0
        return report
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        where = f" (line {err.lineno})" if getattr(err, "lineno", None) else ""
        msg = f"the submission does not parse as Python: {err.__class__.__name__}{where}: " \
              f"{getattr(err, 'msg', err)}"
        report.messages.append(msg)
        _zero_all(report, cfg, cases_by_ex, msg)
        report.seconds = time.monotonic() - t0
        return report
    for e in graded:
        cases = cases_by_ex[e]
        if e in uses:
            libs = ", ".join(uses[e])
            for c in cases:
                _add(report, cfg, c, 0.0, [f"{', '.join(exs.EXERCISES[e].functions)} uses {libs}, "
                                           "which is not allowed (numpy, sympy and the standard "
                                           "library only); found in the source"])
            continue
        if e == 4:
            try:
                from ..symbolic import check_recursion  # noqa: F401
            except ImportError as err:
                for c in cases:
                    _add(report, cfg, c, 0.0, [f"not graded: the grader lacks "
                                               f"bpcheck.symbolic.check_recursion ({err})"])
                continue
        with submission_budget(cfg.limits, since=t0):
            outcome = _run_exercise(source, e, cases, cfg, report, cells)
        for c in cases:
            fraction, lines = outcome.get(c.index, (0.0, ["not run"]))
            _add(report, cfg, c, fraction, lines)
    report.seconds = time.monotonic() - t0
    return report
