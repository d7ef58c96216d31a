"""Grade one submission: draw the cases, load the submission once, score here.

The submission is loaded once in a sandboxed child; each exercise's visible cases run in
a process forked from that loaded state, then the cases students do not see, each group
with only its own inputs (:func:`bpcheck.grade.sandbox.run_session`).  Nothing the child
says is a score: it returns plain arrays, and every verdict is computed in this process
from the homework's reference.  A case whose process hangs or dies loses that case; a
fresh child (up to ``restarts`` times per exercise) runs the remaining cases.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import GradingConfig
from .homework import Case, Exercise, Homework, Scored, ScorerError
from .sandbox import (PREIMPORT, Group, LimitExceeded, pick_uid, run_session, start_limited,
                      submission_budget)
from .source import (
    SubmissionError,
    join_cells,
    pick_submission,
    read_cells,
    read_submission,
    scan_limited,
    submission_suffix,
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

    @property
    def exercise(self) -> int:
        return int(self.number.split(".")[0])


@dataclass
class GradeReport:
    """Everything the report and ``results.json`` are built from."""

    submission: str
    seed: int
    tests: list[TestResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    isolation: list[str] = field(default_factory=list)
    student_output: str = ""
    """What the submission printed while loading and in the cases students see."""
    hidden_messages: list[str] = field(default_factory=list)
    """Notes from the runs of cases students do not see (instructor view only)."""
    hidden_output: str = ""
    """What the submission printed in those runs (instructor view only)."""
    printed: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Test number -> what the submission printed in that test (the start of it, as the
    child kept it) and the count of the bytes left out; shown in the test's own output in
    ``results.json`` for the tests students see (the others' printout stays in the
    instructor's report)."""
    titles: dict[int, str] = field(default_factory=dict)
    """Exercise number -> title, in the homework's order."""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(t.score for t in self.tests), 6)

    @property
    def max_score(self) -> float:
        return round(sum(t.max_score for t in self.tests), 6)

    def exercise_score(self, e: int) -> float:
        return round(sum(t.score for t in self.tests if t.exercise == e), 6)


def _add(report, cfg: GradingConfig, case: Case, fraction, lines):
    ex = case.exercise
    points = cfg.points(ex) * case.weight / sum(ex.weights())
    name = f"{', '.join(ex.student_functions)}: {case.label}"
    # unrounded, so that totals add up exactly; rounded where they are shown
    report.tests.append(TestResult(case.number, name, points * fraction, points, list(lines),
                                   cfg.visibility(case)))


def _zero_all(report, cfg, cases, message):
    for c in cases:
        _add(report, cfg, c, 0.0, [message])


def _printed(header) -> tuple[str, int]:
    """What a test's (untrusted) header says the test printed and the count of the bytes
    left out; ``("", 0)`` for nothing or anything that is not text, a count of 0 for one
    that is not an integer in range."""
    text = header.get("printed") if isinstance(header, dict) else None
    if not isinstance(text, str) or not text.strip():
        return "", 0
    left = header.get("printed_left_out")
    ok = isinstance(left, int) and not isinstance(left, bool) and 0 < left < 1 << 62
    return text, left if ok else 0


def _strings(value, limit: int = 20) -> list[str]:
    """A list of strings from the child's (untrusted) header, capped."""
    return [str(v)[:2000] for v in value[:limit]] if isinstance(value, list) else []


def _test_id(case: Case) -> str:
    return case.number


def plan_entry(case: Case, arrays: dict) -> dict:
    """The child's plan entry for ``case``; its input arrays are added to ``arrays``."""
    ex = case.exercise
    if ex.scorer.kind == "rules":
        from .rules import plan_entry as rules_entry

        return rules_entry(ex, case)
    import inspect

    spec = []
    for name in inspect.signature(ex.reference).parameters:
        value = case.args[name]
        key = f"t{case.number}/{name}"
        if isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
            keys = [f"{key}/{j}" for j in range(len(value))]
            arrays.update(zip(keys, value))
            spec.append({"kind": "list", "keys": keys})
        elif isinstance(value, np.ndarray):
            arrays[key] = value
            spec.append({"kind": "array", "key": key})
        else:
            spec.append({"kind": "value", "value": value})
    returns = [[n[:-2], "list"] if n.endswith("[]") else [n, "value"] for n in ex.returns]
    return {"kind": "call", "function": ex.student_functions[0], "args": spec,
            "returns": returns, "driver": ex.name if ex.driver else None}


def _score(case: Case, msg, hw: Homework, cfg: GradingConfig) -> tuple[float, list[str]]:
    return _begin_score(case, msg, hw, cfg)[0]()


def _begin_score(case: Case, msg, hw: Homework, cfg: GradingConfig):
    """Start scoring ``msg``; returns ``(finish, work)``: ``finish() -> (fraction, lines)``
    completes it, and ``work`` is the :class:`~.sandbox.Limited` symbolic check it started
    (``None`` for other scorers).  The symbolic check (the child decides its cost) starts
    now in a forked copy under the check's limits, so that it can run while the child
    answers the next tests."""
    header, arrays = msg.header, msg.arrays
    if msg.problem:
        return (lambda: (0.0, [msg.problem])), None
    if header.get("forbidden"):
        libs = ", ".join(map(str, header["forbidden"]))
        return (lambda: (0.0, [f"uses {libs}, which is not allowed ({_allowed_text(hw)})"])), None
    if header.get("error"):
        return (lambda: (0.0, ["raised " + str(header["error"])])), None
    meta = header.get("meta")
    if not isinstance(meta, dict):
        return (lambda: (0.0, ["no result came back"])), None
    ex = case.exercise
    scorer = ex.scorer
    tol = cfg.tolerance_for(ex)
    if tol is not None and hasattr(scorer, "tol"):
        import copy

        scorer = copy.copy(scorer)
        scorer.tol = tol
    if scorer.kind != "rules":
        def finish():
            try:
                s: Scored = scorer.score(ex, case, meta, arrays)
            except ScorerError as err:
                return 0.0, [str(err)]
            except (ValueError, TypeError, KeyError, IndexError) as err:
                return 0.0, [f"the returned value could not be checked "
                             f"({type(err).__name__}: {err})"]
            return s.fraction, s.lines
        return finish, None
    limits = cfg.limits
    _warm_up_the_check()
    work = start_limited(_score_limited, scorer, ex, case, meta, arrays,
                         seconds=limits.check_timeout_s, memory_mb=limits.check_memory_mb)

    def finish_rules():
        try:
            fraction, lines = work.result()
        except LimitExceeded as err:
            return 0.0, [f"the rules are too large to check: {err} (the check's limits "
                         f"are {limits.check_timeout_s:g} s and {limits.check_memory_mb} MB)"]
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:  # NaN included: not what the check computes
            return 0.0, [f"the check returned a fraction of {fraction!r}, expected 0..1"]
        return fraction, [str(line)[:2000] for line in list(lines)[:50]]
    return finish_rules, work


_warm: list = []


def _warm_up_the_check():
    """Run the symbolic check once here on the lecture's own rules, so that the modules it
    imports on first use are loaded before each limited check is forked from this process."""
    if not _warm:
        from ..symbolic import check_recursion

        check_recursion([2, 2, 2])
        _warm.append(True)


def _score_limited(scorer, ex, case, meta, arrays):
    s = scorer.score(ex, case, meta, arrays)
    return [s.fraction, list(s.lines)]


def _allowed_text(hw: Homework) -> str:
    return ", ".join(hw.allow) + " and the standard library only"


def _cell_note(note: str, cells) -> bool:
    """``note`` has the form of the harness's note on a notebook cell, for one of the
    cells graded (``"cell 3 raised ..."``, ``"cell 3 stopped after 30 s"``): a ``.py``
    submission that wrote its own "loaded" frame had its words shown as the grader's
    notes ("regraded by the TA: full marks")."""
    for label, _ in cells or ():
        rest = note[len(label):] if note.startswith(label) else ""
        if rest.startswith(" raised ") or re.fullmatch(r" stopped after [0-9.e+-]+ s", rest):
            return True
    return False


def _run(source, hw, cfg, cases_by_ex, report, cells, outcome):
    """Run every case of ``cases_by_ex`` in as few children as the submission allows."""
    started: dict = {}  # test -> (finish, check) of the checks started while the child ran
    try:
        _run_sessions(source, hw, cfg, cases_by_ex, report, cells, outcome, started)
    finally:
        for _, work in started.values():
            work.cancel()


def _run_sessions(source, hw, cfg, cases_by_ex, report, cells, outcome, started):
    limits = cfg.limits
    hide = [p for p in (cfg.path, hw.path) if p]
    drivers = {ex.name: ex.driver for ex in cases_by_ex if ex.driver}
    preimport = list(PREIMPORT) + [m for m in hw.allow
                                   if m not in ("numpy", "matplotlib", "sympy")]
    if any(ex.scorer.kind == "rules" for ex in cases_by_ex):
        preimport.append("sympy")
    functions = sorted({f for ex in cases_by_ex for f in ex.student_functions})
    pending = {ex: [c for c in cases] for ex, cases in cases_by_ex.items()}
    attempts = {ex: 0 for ex in cases_by_ex}
    load_s = limits.load_timeout_s + (limits.cell_timeout_s * len(cells) if cells else 0)
    first = True
    while any(pending.values()):
        groups = []
        case_of = {}
        for visible in (True, False):
            for ex, cases in pending.items():
                group = [c for c in cases if (cfg.visibility(c) == "visible") == visible]
                if not group:
                    continue
                inputs, specs = {}, {}
                for c in group:
                    specs[_test_id(c)] = plan_entry(c, inputs)
                    case_of[_test_id(c)] = c
                # a group needing a function the submission lacks is not run, except for
                # rules: each is scored alone (the child answers "missing" for the other)
                needs = () if ex.scorer.kind == "rules" else ex.student_functions
                groups.append(Group(f"{ex.number}{'v' if visible else 'h'}", visible,
                                    [_test_id(c) for c in group], inputs, specs, needs))

        def on_test(test, msg, case_of=case_of):
            case = case_of.get(test)
            if case is None or case.exercise.scorer.kind != "rules":
                return
            # one check at a time, as after the session: a child that makes every check
            # expensive must not multiply the grader's memory (check_memory_mb) by the
            # number of cases; the others are scored after the session
            if any(work.running() for _, work in started.values()):
                return
            try:
                finish, work = _begin_score(case, msg, hw, cfg)
            except Exception:  # noqa: BLE001 - scored after the session instead
                return
            if work is not None:  # no check to run (an error came back): scored after
                started[test] = (finish, work)

        checks = any(ex.scorer.kind == "rules" for ex in pending)
        # Checks run beside the child only when the child has a uid of its own: with the
        # grader's uid (an ordinary user's grader) it could reach a running check through
        # /proc; then every check runs after the session, when the child is gone.
        beside = checks and pick_uid(limits) is not None
        run = run_session(source, groups, limits, on_test=on_test if beside else None,
                          while_starting=_warm_up_the_check if checks else None,
                          functions=functions, load_timeout_s=load_s, hide=hide,
                          allow=tuple(hw.allow) + (("sympy", "mpmath") if "sympy" in preimport
                                                   else ()),
                          forbidden=hw.forbid, preimport=preimport,
                          extra_plan={"cells": cells, "drivers": drivers,
                                      "allowed_text": _allowed_text(hw),
                                      "cell_timeout_s": limits.cell_timeout_s if cells else 0})
        for note in run.notes:
            if note not in report.isolation:
                report.isolation.append(note)
        any_visible = any(g.visible for g in groups)
        if first or not any_visible:
            if run.stdout.strip():
                report.student_output += run.stdout
        if run.hidden_stdout.strip():
            report.hidden_output += run.hidden_stdout
        loaded = run.loaded if isinstance(run.loaded, dict) else None
        messages = report.messages if any_visible else report.hidden_messages
        for note in _strings((loaded or {}).get("cell_errors")):
            if not _cell_note(note, cells):  # a frame the submission wrote itself
                continue
            note = f"{note} (the other cells were run)"
            if note not in report.messages and note not in messages:
                messages.append(note)
        first = False
        if loaded is None:
            why = run.failure or "the grading process ended before the submission loaded"
            _fail_all(pending, outcome, f"the submission could not be loaded: {why}")
            return
        forbidden = _strings(loaded.get("forbidden"))
        if forbidden:
            _fail_all(pending, outcome, f"the submission uses {', '.join(forbidden)}, which "
                                        f"is not allowed ({_allowed_text(hw)})")
            return
        if loaded.get("error"):
            _fail_all(pending, outcome, "loading the submission failed: "
                      + str(loaded["error"])[:2000])
            return
        missing = set(_strings(loaded.get("missing"), 64))
        raised = {" ".join(note.split()[:2]) for note in messages
                  if note.startswith("cell ") and note.endswith("(the other cells were run)")}
        for ex in list(pending):
            gone = [f for f in ex.student_functions if f in missing]
            if gone and (ex.scorer.kind != "rules" or len(gone) == len(ex.student_functions)):
                # (rules are scored one by one: a missing one costs its own half only)
                why = [not_defined(gone)] + _defined_in_failed_cells(gone, cells, raised)
                for c in pending.pop(ex):
                    outcome[c.number] = (0.0, why)
        arrived = [(c, run.tests[_test_id(c)]) for cases in pending.values() for c in cases
                   if run.tests.get(_test_id(c)) is not None]
        # the checks started while the child ran are finished first: a check started now
        # for another case must not run beside one of them (one check at a time)
        arrived.sort(key=lambda pair: _test_id(pair[0]) not in started)
        for c, msg in arrived:
            pending[c.exercise].remove(c)
            report.printed[c.number] = _printed(msg.header)
            try:
                finish, _ = started.pop(_test_id(c), (None, None))
                outcome[c.number] = finish() if finish else _score(c, msg, hw, cfg)
            except Exception as err:  # noqa: BLE001 - a forged message is a failed test
                outcome[c.number] = (0.0, [f"the result could not be read "
                                           f"({type(err).__name__})"])
        failed = case_of.get(run.failed_test) if run.failed_test else None
        if failed is None and any(pending.values()):
            # stopped between groups: charge the first case that did not run
            failed = next(c for cases in pending.values() for c in cases)
        if failed is None:
            break
        ex = failed.exercise
        pending[ex].remove(failed)
        outcome[failed.number] = (0.0, [run.failure or "no result came back"])
        attempts[ex] += 1
        if attempts[ex] > limits.restarts:
            for c in pending.pop(ex):
                outcome[c.number] = (0.0, [f"not run: {attempts[ex]} tests of this exercise "
                                           "ended without a result (a time limit, a crash or "
                                           "an exit; see the tests above)"])
        pending = {e: cs for e, cs in pending.items() if cs}


def _defined_in_failed_cells(names, cells, raised) -> list[str]:
    """For functions a notebook does not define: a line naming the cells that define them
    (a ``def`` at the start of a line) and failed, which is why (their notes say how);
    no line when none."""
    if not cells or not raised:
        return []
    # spaces and tabs only: with \s (newlines too) a cell of blank lines took quadratic
    # time, in the grader's own process (hours for a red team's cell of 2 MB)
    defines = re.compile(r"^[ \t\f]*(?:async[ \t]+)?def[ \t]+(?:"
                         + "|".join(re.escape(n) for n in names) + r")[ \t]*[(\[]", re.M)
    found = [label for label, source in cells if label in raised and defines.search(source)]
    if not found:
        return []
    which = found[0] if len(found) == 1 else ", ".join(found[:-1]) + f" and {found[-1]}"
    verb = "defines" if len(found) == 1 else "define"
    return [f"{which}, which {verb} it, failed before the definition ran (see the note above)"]


def not_defined(names) -> str:
    """The line for student functions the submission does not define."""
    if len(names) == 1:
        return f"{names[0]} is not defined (expected a function named {names[0]})"
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"{listed} are not defined (expected functions named {listed})"


def _fail_all(pending, outcome, message):
    for cases in pending.values():
        for c in cases:
            outcome[c.number] = (0.0, [message])


def grade(path, cfg: GradingConfig | None = None, seed: int | None = None) -> GradeReport:
    """Grade the submission at ``path``: a ``.py`` or ``.ipynb`` file, or a folder of uploaded
    files, of which :func:`bpcheck.grade.source.pick_submission` chooses one, against the
    config's homework (the lecture's by default).

    ``seed``: the cases' seed (default: the config's, else a fresh random one); it is
    recorded in the report so that any failure can be replayed with ``--seed``.
    """
    cfg = cfg or GradingConfig()
    hw = cfg.homework
    t0 = time.monotonic()
    if seed is None:
        seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2 ** 31)
    report = GradeReport(str(path), int(seed))
    report.titles = {ex.number: ex.title for ex in hw.exercises}
    graded = [ex for ex in hw.exercises if cfg.points(ex) > 0]
    cases_by_ex: dict[Exercise, list[Case]] = {ex: ex.draw(seed) for ex in graded}
    for ex, cases in cases_by_ex.items():  # the homework's own faults, before anything runs
        for case in cases:
            ex.expected(case)
            ex.wrong_answers(case)
    all_cases = [c for cases in cases_by_ex.values() for c in cases]

    def finish():
        report.tests.sort(key=lambda t: (t.exercise, int(t.number.split(".")[1])))
        report.seconds = time.monotonic() - t0
        return report

    if Path(path).is_dir():
        functions = [f for ex in hw.exercises for f in ex.student_functions]
        chosen, note = pick_submission(path, functions, cfg.submission or hw.submission)
        if chosen is None:
            msg = f"no .py or .ipynb file was submitted (in {Path(path).name}/)" + (
                f"; {note}" if note else "")
            report.messages.append(msg)
            _zero_all(report, cfg, all_cases, msg)
            return finish()
        if note:
            report.messages.append(note)
        path = chosen
        report.submission = str(path)
    owners = hw.function_owner()
    cells = None
    try:
        if submission_suffix(path) == ".ipynb":
            # (before the submission's budget starts: its time is the budget's too)
            cells = read_cells(path, seconds=min(60.0, cfg.limits.submission_timeout_s))
            source = join_cells(cells)
            uses, top_level = scan_limited(cells, owners, hw.forbid)
            if top_level:
                report.messages.append(
                    f"notebook cells use {', '.join(top_level)} at top level; those cells fail "
                    f"when graded ({_allowed_text(hw)}) and the other cells still run")
        else:
            source = read_submission(path)
            uses, top_level = scan_limited([("submission.py", source)], owners, hw.forbid,
                                           whole_file=True)
            if top_level:  # the import would fail when the file is loaded: nothing runs
                msg = (f"the submission uses {', '.join(top_level)} at top level (outside "
                       f"the exercise functions), which is not allowed ({_allowed_text(hw)}); "
                       "remove that code")
                report.messages.append(msg)
                _zero_all(report, cfg, all_cases, msg)
                return finish()
    except (SubmissionError, OSError) as err:
        report.messages.append(str(err))
        _zero_all(report, cfg, all_cases, f"the submission could not be read: {err}")
        return finish()
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        where = f" (line {err.lineno})" if getattr(err, "lineno", None) else ""
        msg = f"the submission does not parse as Python: {err.__class__.__name__}{where}: " \
              f"{getattr(err, 'msg', err)}"
        report.messages.append(msg)
        _zero_all(report, cfg, all_cases, msg)
        return finish()
    to_run: dict[Exercise, list[Case]] = {}
    for ex, cases in cases_by_ex.items():
        if ex.number in uses:
            libs = ", ".join(uses[ex.number])
            for c in cases:
                _add(report, cfg, c, 0.0, [f"{', '.join(ex.student_functions)} uses {libs}, "
                                           f"which is not allowed ({_allowed_text(hw)}); "
                                           "found in the source"])
            continue
        if ex.scorer.kind == "rules":
            # found, not imported: SymPy is imported while the child runs (on_test)
            if importlib.util.find_spec("sympy") is None:
                for c in cases:
                    _add(report, cfg, c, 0.0, ["not graded: the grader lacks SymPy, which "
                                               "bpcheck.symbolic.check_recursion needs"])
                continue
        to_run[ex] = cases
    outcome: dict[str, tuple[float, list[str]]] = {}
    if to_run:
        with submission_budget(cfg.limits, since=t0):
            _run(source, hw, cfg, to_run, report, cells, outcome)
    for cases in to_run.values():
        for c in cases:
            fraction, lines = outcome.get(c.number, (0.0, ["not run"]))
            _add(report, cfg, c, fraction, lines)
    return finish()
