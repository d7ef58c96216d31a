"""The readable report and Gradescope's ``results.json``, both built from a GradeReport.

The results file is built in memory and written once, atomically (a temporary file in
the same folder, then ``os.replace``), by the grader's process.  Student output is shown
only as quoted text (each line prefixed with ``| ``), never parsed.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path

from .grader import GradeReport
from .source import printable


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _quoted(text: str) -> list[str]:
    return ["  | " + printable(ln) for ln in text.rstrip("\n").splitlines()]


def _notes(messages) -> list[str]:
    return [f"note: {printable(m)}" for m in messages]


PRINTED_LINES = 8
PRINTED_LINE_CHARS = 200
"""What the instructor's text report shows of a failed test's own printout, under the test:
its first lines, each cut to this many characters (the whole printout, capped, is in the
block at the end)."""


def _own_printout(report: GradeReport, number: str) -> list[str]:
    """The start of what test ``number`` printed (:attr:`GradeReport.printed`), quoted under
    its line in :func:`render_text`, with what was left out counted; no lines when it
    printed nothing."""
    text, left = report.printed.get(number, ("", 0))
    if not text.strip():
        return []
    lines = _quoted(text)  # "  | " + each line, escaped
    cut = len("  | ") + PRINTED_LINE_CHARS
    out = ["        printed in this test (capped, never parsed):"]
    out += ["      " + (q[:cut] + " [...]" if len(q) > cut else q) for q in lines[:PRINTED_LINES]]
    more = [f"{len(lines) - PRINTED_LINES} more lines"] if len(lines) > PRINTED_LINES else []
    more += [f"{left} more bytes not kept"] if left else []
    if more:
        out.append(f"        [... {', '.join(more)}]")
    return out


def render_text(report: GradeReport, *, show_output: bool = True,
                show_isolation: bool = True, visible_only: bool = False) -> str:
    """The report printed by ``bpcheck grade``: per exercise, per test, with feedback.

    ``visible_only``: the students' view, for the summary in ``results.json``: tests whose
    visibility is not ``visible`` are left out, with the totals, the notes and printout of
    the children that ran them, and the seed (which would regenerate their inputs).  The
    instructor's view, printed by the command, shows everything, and under each failed
    test the start of what that test printed (each visible test's ``output`` in
    ``results.json`` has its own).
    """
    shown = [t for t in report.tests if not visible_only or t.visibility == "visible"]
    all_shown = len(shown) == len(report.tests)
    name = printable(Path(report.submission).name)
    out = [f"bpcheck grade: {name} (seed {report.seed}; replay with --seed {report.seed})"
           if all_shown else f"bpcheck grade: {name}", ""]
    out += _notes(report.messages)
    if not visible_only:
        out += _notes(f"(in the run of tests not shown to students) {m}"
                      for m in report.hidden_messages)
    if out[-1]:  # the notes apart from the first exercise
        out.append("")
    for e, title in report.titles.items():
        tests = [t for t in shown if t.exercise == e]
        if not tests:
            continue
        got = sum(t.score for t in tests)
        total = sum(t.max_score for t in tests)
        out.append(f"Exercise {e}: {printable(title)}  [{_fmt(got)} / {_fmt(total)}]")
        for t in tests:
            status = "passed" if t.passed else "FAILED"
            label = t.name.split(": ", 1)[-1]
            out.append(f"  {t.number}  {status:<6}  {_fmt(t.score):>5} / {_fmt(t.max_score):<5} "
                       f"{label}")
            if not t.passed or len(t.lines) == 1:
                out += [f"        {printable(ln)}" for ln in t.lines]
            if not t.passed and not visible_only and show_output:
                out += _own_printout(report, t.number)
        out.append("")
    if all_shown:
        out.append(f"Total: {_fmt(report.score)} / {_fmt(report.max_score)}   "
                   f"({report.seconds:.1f} s)")
    else:
        got = sum(t.score for t in shown)
        total = sum(t.max_score for t in shown)
        out.append(f"Visible tests: {_fmt(got)} / {_fmt(total)}; {len(report.tests) - len(shown)} "
                   "more tests are not shown yet")
    if show_isolation and report.isolation:
        out += ["", "Sandbox:"] + [f"  {printable(n)}" for n in report.isolation]
    printed = [("while it loaded and in the tests shown to students", report.student_output)]
    if not visible_only:
        printed.append(("in the tests not shown to students", report.hidden_output))
    printed = [(label, text) for label, text in printed if text.strip()]
    if show_output and printed:
        out += ["", "Output printed by the submission (capped, never parsed):"]
        for label, text in printed:
            out.append(f"  {label}:")
            out += _quoted(text)
    return "\n".join(out) + "\n"


TEST_OUTPUT_MAX = 8 << 10
TESTS_OUTPUT_MAX = 384 << 10
SUMMARY_MAX = 256 << 10
"""Caps on the submission's text in ``results.json``, 640 kB in all whatever it printed or
raised, in bytes of the JSON text as written (non-ASCII escaped, ``\\ud83d\\ude00`` 12
bytes for one emoji, so counting characters is not enough): one test's output, all tests'
together (each test gets an equal share, however many tests the homework has), and the
summary.  The homework's own names and scores add about 350 bytes a test: under 1 MB in
all up to about 1000 tests."""


def _capped(text: str, cap: int) -> str:
    """``text``, cut so that its JSON encoding (as :func:`write_results` writes it, the cut
    note included) takes at most ``cap`` bytes."""
    if len(json.dumps(text)) <= cap:
        return text
    room = cap - 64  # the note
    keep = len(text)
    while keep > 0 and (size := len(json.dumps(text[:keep]))) > room:
        keep = max(0, min(keep - 1, keep * room // size))
    return text[:keep] + f"\n[... {len(text) - keep} more characters cut]\n"


_NAME = r"[A-Za-z_]\w*(?:\[\d+\])?"  # an output's name, or an entry of a list output
_NUM = r"[0-9][0-9.e+\-]*"
_WIDTHS = r"[\[(][\d, ]*[\])]"  # a list or a tuple of widths
_MISTAKE = r"likely mistake: .+"  # (after a template of the grader's: the instructor's words)
_OWN_WORDS = [re.compile(p) for p in (  # each matched against a whole line
    rf"{_NAME}: transposed",
    rf"{_NAME}: contains NaN or inf(; {_MISTAKE}| - the softmax overflows on large scores; "
    r"subtract each row's maximum before np\.exp)?",
    rf"{_NAME}: missing from the returned value",
    rf"{_NAME}(, {_NAME})*: wrong; {_MISTAKE}",
    r"\.\.\. and \d+ more wrong arrays",
    rf"{_NAME}: the recursion holds for widths {_WIDTHS}",
    r"no result came back",
    r"nothing came back",
    r"not run",
    r"not run: \d+ tests of this exercise ended without a result \(a time limit, a crash or "
    r"an exit; see the tests above\)",
    r"time limit of [0-9.]+ s exceeded while running test \d+\.\d+",
    r"time limit exceeded while running test \d+\.\d+ \(the time budget of this child or of "
    r"the whole submission is spent\)",
    rf"{_NAME} is not defined \(expected a function named {_NAME}\)",
    rf"{_NAME}(, {_NAME})* and {_NAME} are not defined \(expected functions named "
    rf"{_NAME}(, {_NAME})* and {_NAME}\)",
)]

LEFT_OUT = ("(the submission's own words left out: results.json shows them for visible "
            "tests only, since they may hold this test's inputs)")
_CUT = " " + LEFT_OUT
_REWRITES = [(re.compile(p), words) for p, words in (
    # kept without their relative errors: a passing answer may choose its error below the
    # tolerance, a digit or three of the inputs
    (rf"({_NAME}): ok \(relative error {_NUM}(, float32)?\)", r"\1: ok"),
    (rf"({_NAME}): wrong \(relative error {_NUM}, probably wrong\)", r"\1: wrong"),
    (rf"({_NAME}): wrong \(relative error {_NUM}, too inaccurate\)", r"\1: wrong (too inaccurate)"),
    (rf"({_NAME}): wrong \(relative error {_NUM}\); ({_MISTAKE})", r"\1: wrong; \2"),
    (rf"({_NAME}): all (\d+) arrays ok \(largest relative error {_NUM}\)",
     r"\1: all \2 arrays ok"),
    # their template's words without the submission's ((?s): a quote may span lines)
    (rf"(?s)({_NAME}): expected shape (\([\d, ]*\)), got .*",
     r"\1: wrong shape (expected \2)" + _CUT),
    (rf"(?s)({_NAME}): expected dtype (float64|u?int\d+|bool) .*", r"\1: wrong dtype (expected \2)"
     + _CUT),
    (rf"(?s)({_NAME}): expected (a float|a numpy\.ndarray|a list of .*?), got .*",
     r"\1: expected \2, got something else" + _CUT),
    (rf"(?s)({_NAME}): no array came back .*", r"\1: no array came back" + _CUT),
    (rf"(?s)expected a tuple \(({_NAME}(?:, {_NAME})*)\), got .*",
     r"expected a tuple (\1), got something else" + _CUT),
    (rf"(?s)expected a tuple of (\d+ values?) \(({_NAME}(?:, {_NAME})*)\), got .*",
     r"expected a tuple of \1 (\2), got another" + _CUT),
    (rf"(?s)({_NAME}): (refuted|rejected) for widths ({_WIDTHS}).*",
     r"\1: \2 for widths \3" + _CUT),
    (r"(?s)(" + _NAME + r") on inputs of shapes (V_next \d+x\d+, B_next \d+x\d+, D \d+x\d+|"
     r"V \d+x\d+, a_prev \d+x1): .*", r"\1 failed on inputs of shapes \2" + _CUT),
    # which cells: the submission chooses them (one bit each, a hidden input's bits)
    (r"cell \d+((, cell \d+)* and cell \d+)?, which defines? it, failed before the definition "
     r"ran \(see the note above\)", "a cell that defines it failed before the definition ran"
     + _CUT),
    (r"(?s)raised .*", "raised an exception" + _CUT),
    (r"(?s)time limit .*", "time limit exceeded" + _CUT),
    (r"(?s)(the submission could not be loaded|loading the submission failed|the returned "
     r"value could not be checked|the result could not be read|the rules are too large to "
     r"check|the check returned a fraction)\b.*", r"\1" + _CUT),
    (r"(?s)(.*\buses) .*, which is not allowed .*", "uses a library that is not allowed" + _CUT),
)]


def public_line(line: str) -> str:
    """A feedback line as ``results.json`` shows it for a test that is not visible: the
    grader's own words only.  A line made from a template of the grader's is kept, without
    its relative errors; one with the submission's text in it (an exception's message, a
    type's name, a shape) keeps its template's words; any other line is replaced.  (The
    submission can choose that text and those numbers: a released or hidden test's inputs,
    written into an exception's message, reached every student who saw the test, and a
    passing answer's error below the tolerance carried three digits of them.)"""
    if any(p.fullmatch(line) for p in _OWN_WORDS):
        return line
    for p, words in _REWRITES:
        m = p.fullmatch(line)
        if m:
            return m.expand(words)
    return OTHER_LINE


OTHER_LINE = ("a line left out: results.json shows a line in other words than the grader's "
              "own (a Custom scorer's, an error's message) for visible tests only, since it "
              "may quote the submission's output or this test's inputs")
"""What stands for such a line in a test that is not visible (:func:`public_line`)."""


def results_json(report: GradeReport) -> dict:
    """Gradescope's results document (schema: the gradescope-autograders "specs" page).

    The top-level ``output`` is the students' view (:func:`render_text` with
    ``visible_only``); what the submission printed comes only from its loading and the
    processes that ran visible tests, which never held a hidden test's inputs; each
    visible test's ``output`` adds what the submission printed in that test, quoted line by
    line (a test of any other visibility may have printed its inputs: its printout stays in
    the instructor's report, even after the test is released).  The
    top-level ``score`` is the grade, hidden tests included: when some test is not
    ``visible``, the document's own ``visibility`` is the most restrictive of the tests'
    (``after_due_date`` < ``after_published`` < ``hidden`` is shown as
    ``after_published``, Gradescope's publication), so that the total cannot tell a
    student how a hidden test went, and ``extra_data`` keeps per-exercise totals for the
    instructor.  (The specification itself says that students do not see their total
    score while test cases are hidden; a test's own ``visibility`` overrides the
    document's, which is why every visible test states ``visible``.)"""
    tests = []
    test_cap = min(TEST_OUTPUT_MAX, TESTS_OUTPUT_MAX // max(len(report.tests), 1))
    for t in report.tests:
        lines = t.lines if t.visibility == "visible" else [public_line(ln) for ln in t.lines]
        output = _capped("\n".join(printable(ln) for ln in lines), test_cap)
        printed, left = report.printed.get(t.number, ("", 0))
        if printed and t.visibility == "visible":  # (the others' inputs may be in it)
            head = "\n\nPrinted by the submission in this test (capped, never parsed):\n"
            note = f"\n[... {left} more bytes printed in this test]" if left else ""
            room = test_cap - len(json.dumps(output + head + note))
            if room > 64:  # the quoted lines cut to fit, the count after them
                output += head + _capped("\n".join(_quoted(printed)), room) + note
        tests.append({
            "name": t.name,
            "number": t.number,
            "score": round(t.score, 6),
            "max_score": round(t.max_score, 6),
            "status": "passed" if t.passed else "failed",
            "output": output,
            "output_format": "text",
            "visibility": t.visibility,
            "tags": [f"exercise {t.exercise}"],
        })
    summary = _capped(render_text(report, show_output=True, show_isolation=False,
                                  visible_only=True), SUMMARY_MAX)
    kinds = {t.visibility for t in report.tests} - {"visible"}
    overall = "visible" if not kinds else \
        "after_due_date" if kinds == {"after_due_date"} else "after_published"
    doc = {
        "score": report.score,
        "output": summary,
        "output_format": "text",
        "visibility": overall,
        "stdout_visibility": "hidden",
        "extra_data": {"seed": report.seed, "sandbox": [n[:500] for n in report.isolation[:50]],
                       "exercise_scores": {str(e): report.exercise_score(e)
                                           for e in report.titles}},
        "tests": tests,
    }
    if overall == "visible":  # else the time, hidden tests' included, is left out: a
        # submission that slept in proportion to a hidden input carried it there
        doc["execution_time"] = round(report.seconds, 3)
    return doc


def failure_results(message: str) -> dict:
    """The document written when the grader itself failed: score 0 and the reason (no
    time: tests that are not visible may have run before the failure)."""
    return {"score": 0.0,
            "output": f"The autograder failed; please tell your instructor.\n{message}\n",
            "output_format": "text", "visibility": "visible", "tests": []}


def write_results(doc: dict, path) -> None:
    """Write ``doc`` to ``path`` once, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fill(f):
        json.dump(doc, f, indent=2)
        f.write("\n")

    write_atomically(path, fill, prefix=".results-")


def write_atomically(path, fill, prefix: str, **open_options) -> None:
    """``fill(f)`` writes a new file next to ``path`` (opened for text with
    ``open_options``), which is then renamed over ``path``: a file or a FIFO standing there
    (one a submission made, which ``open`` would wait on forever) is replaced, never
    opened, and a reader never sees half a file.  A device or a symbolic link there
    (``/dev/null``, ``/dev/stdout``) is written through instead."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        # a device (--results /dev/null) or a link (/dev/stdout) is written through, never
        # replaced (as root, a rename made /dev/null a regular file); opened without
        # waiting, so that a FIFO behind a link fails (ENXIO) instead of stalling
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w", **open_options) as f:
            fill(f)
        return
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", **open_options) as f:
            fill(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
