"""Grade a folder of submissions in parallel, with a progress bar and a CSV of grades.

Each submission is graded in a worker process (each worker's children get their own
uid); a submission that breaks anything, or a worker that fails, gives that row a score
of 0 and an ``error`` column, and the batch goes on.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import multiprocessing
import os
import re
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .config import ConfigError, GradingConfig
from .source import printable, submission_suffix


def columns(cfg: GradingConfig) -> list[str]:
    """The CSV's columns: one ``exercise_N`` per exercise of the config's homework."""
    return (["submission", "score", "max_score"]
            + [f"exercise_{ex.number}" for ex in cfg.homework.exercises]
            + ["seed", "seconds", "error"])


def find_submissions(folder) -> list[Path]:
    """One submission per ``.py``/``.ipynb`` file directly in ``folder`` and per sub-folder.

    A sub-folder is graded as ``bpcheck grade`` grades a folder (and ``run_autograder`` an
    upload): :func:`bpcheck.grade.source.pick_submission` picks its file, with a note.
    """
    folder = Path(folder)
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_symlink():
            continue
        if (p.is_file() and submission_suffix(p)) or p.is_dir():
            found.append(p)
    return found


def find_links(folder) -> list[Path]:
    """The symbolic links in ``folder`` that would be submissions if they were files or
    folders (a ``.py`` or ``.ipynb`` name, a name without a suffix, a link to a folder):
    never graded (a link could point at a file of the grader's), each given a row
    that says so (they were left out without a word)."""
    return [p for p in sorted(Path(folder).iterdir())
            if p.is_symlink() and not p.name.startswith(".")
            and (submission_suffix(p) or not p.suffix or os.path.isdir(p))]  # (isdir: False,
    # not OSError, for a link whose target's name is too long or cannot be reached)


LINK_NOTE = ("not graded: a symbolic link (a link could point at a file of the grader's); "
             "copy the submission itself into the folder")


def _die_with_batch(batch: int) -> None:
    """A pool worker's initializer: have the kernel SIGKILL it when ``grade-batch`` (pid
    ``batch``) ends (``PR_SET_PDEATHSIG``, Linux), and leave now if it has ended already.
    A worker waits for work on a queue whose writing end it holds itself, so it never sees
    the batch go: killed with SIGKILL (no clean-up), a batch left its workers idle for
    good, and a busy one grading on.  The grader's child dies with the worker in turn, and
    the next grader removes the child folders and cgroups they leave."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # (not Linux: no parent-death signal)
        return
    if os.getppid() != batch:
        os._exit(70)


def result_names(subs) -> dict[str, str]:
    """Each submission's ``results.json`` name in ``--results-dir``: ``alice.json`` for
    ``alice.py`` (or ``alice.ipynb``, or the folder ``alice``), ``alice.py.json`` when two
    of them share the stem (one file overwrote the other's), and the whole name for any
    whose short name is still another's (``alice.py.py`` beside ``alice.py`` and
    ``alice.ipynb``): no two submissions share a results file."""
    stems = collections.Counter(Path(p).stem for p in subs)
    short = {str(p): Path(p).stem if stems[Path(p).stem] == 1 else Path(p).name for p in subs}
    counts = collections.Counter(short.values())
    names = {p: n if counts[n] == 1 else Path(p).name for p, n in short.items()}
    out, used = {}, set()
    for p in sorted(names):  # (two folders' entries may still share a name: numbered)
        name, k = _fitting(names[p], p), 2
        while name in used:
            name, k = f"{_fitting(names[p], p, 8)}~{k}", k + 1
        used.add(name)
        out[p] = f"{name}.json"
    return {str(p): out[str(p)] for p in subs}


NAME_BYTES = 255 - len(".json")
"""The longest results-file name without ``.json`` that a file system takes (255 bytes)."""


def _fitting(name: str, path: str, room: int = 0) -> str:
    """``name``, or its first bytes and a digest of ``path`` when it is longer than
    :data:`NAME_BYTES` less ``room`` (a 255-byte upload name gave a 257-byte results name:
    the write failed, and the student's row read 0)."""
    raw = os.fsencode(name)  # the bytes the file system holds (a name need not be UTF-8)
    if len(raw) <= NAME_BYTES - room:
        return name
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return os.fsdecode(raw[:NAME_BYTES - room - len(digest) - 1]) + "~" + digest


def _grade_one(path: str, cfg: GradingConfig, seed, results_dir, name):
    from .grader import grade
    from .results import results_json, write_results

    report = grade(path, cfg, seed)
    if results_dir is not None:
        write_results(results_json(report), Path(results_dir) / name)
    return {"submission": path, "score": report.score, "max_score": report.max_score,
            **{f"exercise_{e}": report.exercise_score(e) for e in report.titles},
            "seed": report.seed, "seconds": round(report.seconds, 2), "error": _problem(report)}


def _cell(value):
    """A CSV cell a spreadsheet shows as text: control characters shown as escapes, and a
    leading ``= + - @`` (a formula) quoted."""
    if isinstance(value, str):
        value = printable(value)
        if value[:1] in ("=", "+", "-", "@"):
            return "'" + value
    return value


def _problem(report) -> str:
    """What kept a submission from being graded normally, for the CSV's ``error`` column."""
    notes = list(report.messages)
    firsts = {t.lines[0] for t in report.tests if t.lines and t.score == 0}
    if report.score == 0 and len(firsts) == 1 and len(report.tests) > 1:
        only = firsts.pop()  # the same reason for every test: loading or reading failed
        if only not in notes:
            notes.append(only)
    undefined = {name for t in report.tests if t.lines for name in _undefined(t.lines[0])}
    if report.score == 0 and len(undefined) > 1 and all(
            t.lines and _undefined(t.lines[0]) for t in report.tests):
        notes.append(f"defines none of the functions graded ({', '.join(sorted(undefined))})")
    return "; ".join(notes)


_NOT_DEFINED = [re.compile(r"([A-Za-z_]\w*) is not defined \(expected a function named \1\)"),
                re.compile(r"((?:[A-Za-z_]\w*, )*[A-Za-z_]\w* and [A-Za-z_]\w*) are not "
                           r"defined \(expected functions named \1\)")]


def _undefined(line: str) -> list[str]:
    """The functions a line of :func:`bpcheck.grade.grader.not_defined` names, else none:
    the whole line in that form (an exception's message that quotes it is not one)."""
    for form in _NOT_DEFINED:
        m = form.fullmatch(line)
        if m:
            return m.group(1).replace(" and ", ", ").split(", ")
    return []


def _bar(done, total, started, stream):
    """A progress bar redrawn in place on a terminal; elsewhere (a log file) a line at the
    start, at every tenth of the submissions and at the end, not carriage returns."""
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-9)
    text = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} graded ({rate:.2f}/s)"
    try:
        isatty = getattr(stream, "isatty", None)
        if isatty is not None and isatty():
            stream.write("\r" + text)
        elif done in (0, total) or done * 10 // max(total, 1) != (done - 1) * 10 // max(total, 1):
            stream.write(text + "\n")
        stream.flush()
    except OSError:  # `grade-batch ... 2>&1 | head` (the reader has gone), a full disk: the
        _silence(stream)  # batch goes on (it stopped, and later submissions scored 0)


def _silence(stream) -> None:
    """Later writes to ``stream`` (a pipe whose reader has gone) go nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a file: nothing to keep writing to
        pass


def grade_batch(folder, cfg: GradingConfig, jobs: int = 1, csv_path=None, seed=None,
                results_dir=None, progress=sys.stderr) -> list[dict]:
    """Grade every submission in ``folder`` with ``jobs`` workers; rows sorted by name."""
    if jobs > 1 and cfg.limits.uid is not None:
        raise ConfigError(f"sandbox.uid = {cfg.limits.uid}: one uid for the children of {jobs} "
                          f"workers, which kill every process of their child's uid between "
                          f"groups of tests and at the end; leave it out (each worker picks an "
                          f"unused one) or grade with --jobs 1")
    subs = find_submissions(folder)
    rows = []
    started = time.monotonic()
    if progress is not None:
        _bar(0, len(subs), started, progress)
    try:
        _grade_all(subs, cfg, jobs, seed, results_dir, rows, started, progress)
    finally:  # the CSV is written whatever happened, with a row for every submission
        graded = {r["submission"] for r in rows}
        rows += [_error_row(str(p), cfg, seed, "not graded: the batch was interrupted")
                 for p in subs if str(p) not in graded]
        rows += [_error_row(str(p), cfg, seed, LINK_NOTE) for p in find_links(folder)]
        rows.sort(key=lambda r: r["submission"])
        if csv_path is not None:
            _write_csv(csv_path, rows, columns(cfg))
    if progress is not None and getattr(progress, "isatty", lambda: False)():
        try:
            progress.write("\n")
        except OSError:
            _silence(progress)
    return rows


def _error_row(path, cfg, seed, error):
    return {"submission": path, "score": 0.0, "max_score": "",
            **{f"exercise_{ex.number}": 0.0 for ex in cfg.homework.exercises},
            "seed": seed or "",
            "seconds": "", "error": error}


def _grade_all(subs, cfg, jobs, seed, results_dir, rows, started, progress):
    """Grade ``subs`` into ``rows``.  A worker that dies (a crash in the grader's own
    process) breaks its pool: the submissions it left are graded again, each in a pool of
    its own, so only the one that crashed it gets an error row."""
    ctx = multiprocessing.get_context("spawn")
    todo, alone = list(subs), False
    names = result_names(subs)
    while todo:
        broken = []
        pools = [todo] if not alone else [[p] for p in todo]
        for batch in pools:
            with ProcessPoolExecutor(max_workers=1 if alone else max(1, jobs), mp_context=ctx,
                                     initializer=_die_with_batch,
                                     initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(_grade_one, str(p), cfg, seed,
                                       None if results_dir is None else str(results_dir),
                                       names[str(p)]): p
                           for p in batch}
                for fut in as_completed(futures):
                    path = futures[fut]
                    try:
                        rows.append(fut.result())
                    except BrokenProcessPool as err:
                        if alone:
                            rows.append(_error_row(str(path), cfg, seed, "the grader's process "
                                                   f"crashed on this submission ({err})"))
                        else:
                            broken.append(path)
                            continue
                    except Exception as err:  # noqa: BLE001 - one bad row never stops the batch
                        rows.append(_error_row(str(path), cfg, seed, f"{type(err).__name__}: {err}"))
                    if progress is not None:
                        _bar(len(rows), len(subs), started, progress)
        todo, alone = sorted(broken), True


def _write_csv(csv_path, rows, fieldnames):
    """Write the CSV once, atomically (a FIFO at ``csv_path`` is replaced, not waited on);
    file names that are not UTF-8 are written with backslash escapes."""
    from .results import write_atomically

    def fill(f):
        w = csv.DictWriter(f, fieldnames=fieldnames)
        w.writeheader()
        w.writerows({k: _cell(v) for k, v in row.items()} for row in rows)

    write_atomically(csv_path, fill, prefix=".grades-", newline="", encoding="utf-8",
                     errors="backslashreplace")
