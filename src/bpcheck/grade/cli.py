"""``bpcheck grade``, ``bpcheck grade-batch`` and ``bpcheck gradescope-zip``.

``main(argv)`` receives the command word as ``argv[0]`` (one module serves three
commands).  Exit status 0 whenever grading completed, whatever the score; 1 when the
grader itself failed (a results file saying so is still written); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

GRADE_EXAMPLE = """\
example:
  bpcheck grade hw.py --results results.json --seed 7
    prints one line per test ('1.1  passed   7.14 / 7.14  N = 5, D = 3, K = 4, ...',
    feedback under failed ones) and 'Total: 100 / 100  (... s)'; writes results.json for
    Gradescope.
  bpcheck grade --template hw.py        # writes the student template
  bpcheck grade --homework conv_hw.py sub.py   # an instructor's own homework module
"""

BATCH_EXAMPLE = """\
example:
  bpcheck grade-batch submissions/ --jobs 2 --csv grades.csv
    shows a progress bar '[#####...] 7/20 graded' and writes one row per submission:
    submission,score,max_score,exercise_1,...,error
"""

ZIP_EXAMPLE = """\
example:
  bpcheck gradescope-zip autograder.zip --config grading.toml
    writes autograder.zip (setup.sh, run_autograder, this bpcheck's source, a pinned
    requirements.txt, grading.toml when --config is given and the homework module unless
    it is the lecture's, which bpcheck holds) for Gradescope's 'Zip file upload'
    autograder, after running every case's reference; prints the homework it bundled and
    warnings on the config.
"""


def _common(p):
    p.add_argument("--config", metavar="TOML", help="instructor config: points per exercise, "
                   "test visibility, tolerance, sandbox limits")
    p.add_argument("--homework", metavar="PY", help="the homework module that declares the "
                   "exercises (default: the config's, else the lecture's homework)")
    p.add_argument("--seed", type=int, help="seed of the test inputs (default: the config's, "
                   "else fresh); recorded in the results so a failure can be replayed")


def _hide_seed(args) -> None:
    """Blank ``--seed``'s value in this process's command line as other processes read it
    (``/proc/<pid>/cmdline``): a submission that finds the grader's seed rebuilds the hidden
    tests' inputs.  The kernel shows the original argument memory, which is rewritten in
    place (``/proc/self/stat`` gives its address); a no-op where that is not possible."""
    if getattr(args, "seed", None) is None:
        return
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        if not 0 < start < end or end - start > 1 << 20:
            return
        raw = ctypes.string_at(start, end - start)
        parts = raw.split(b"\0")
        for i, part in enumerate(parts[1:], 1):  # every spelling argparse reads as the seed:
            # "0005", "+5", "--seed=5", "--see 5", "--se=5" (any argument that is the number)
            key, equals, value = part.rpartition(b"=")
            if _is_number(part, args.seed):
                parts[i] = b"*" * len(part)
            elif equals and _is_number(value, args.seed):
                parts[i] = key + equals + b"*" * len(value)
        ctypes.memmove(start, b"\0".join(parts), end - start)
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux, or no access
        return


def _is_number(text: bytes, n: int) -> bool:
    """Whether ``int(text)`` (as argparse reads ``--seed``) gives ``n``."""
    try:
        return int(text) == n
    except ValueError:
        return False


def _load_cfg(args):
    from .config import ConfigError, load_config

    try:
        return load_config(args.config, getattr(args, "homework", None))
    except ConfigError as err:
        print(f"bpcheck {args.command}: {err}", file=sys.stderr)
        return None


def _grade(argv) -> int:
    p = argparse.ArgumentParser(
        prog="bpcheck grade", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Grade one homework submission (.py or .ipynb) in a sandboxed child "
                    "process: a readable report on stdout and a Gradescope results.json.",
        epilog=GRADE_EXAMPLE)
    p.add_argument("submission", nargs="?", help="the student's .py file or .ipynb notebook, "
                   "or a folder of uploaded files (one is chosen and graded, with a note)")
    p.add_argument("--results", default="results.json", metavar="PATH",
                   help="where to write Gradescope's results.json (default: ./results.json)")
    _common(p)
    p.add_argument("--template", metavar="PATH", help="write the student template to PATH "
                   "and exit (PATH ending in .ipynb: a Jupyter notebook, a cell per exercise)")
    p.add_argument("--template-config", metavar="PATH", help="write a sample grading.toml "
                   "to PATH and exit")
    p.add_argument("--quiet", action="store_true", help="print only the total")
    args = p.parse_args(argv)
    args.command = "grade"
    _hide_seed(args)
    if args.template or args.template_config:
        _check_outputs(p, template=args.template, template_config=args.template_config)
    else:
        _check_outputs(p, results=args.results)
    if args.template or args.template_config:
        from .config import template_config

        cfg = _load_cfg(args)
        if cfg is None:
            return 2
        hw = cfg.homework
        named = None
        if args.template_config and cfg.homework_path is not None:
            named = os.path.relpath(cfg.homework_path,
                                    Path(args.template_config).resolve().parent)
        student = None if not args.template else (
            hw.notebook_template() if Path(args.template).suffix.lower() == ".ipynb"
            else hw.template())
        for path, text in ((args.template, student),
                           (args.template_config, template_config(hw, named))):
            if path:
                Path(path).write_text(text)
                print(f"wrote {path}")
        return 0
    if not args.submission:
        p.error("the following argument is required: submission (or --template PATH)")
    if not Path(args.submission).exists():
        from .results import failure_results, write_results

        msg = f"submission {args.submission!r}: no such file"
        write_results(failure_results(msg), args.results)
        print(f"bpcheck grade: {msg}", file=sys.stderr)
        return 2
    cfg = _load_cfg(args)
    if cfg is None:
        return 2
    from .grader import grade
    from .gradescope import not_installed
    from .results import failure_results, render_text, results_json, write_results

    for module in not_installed(cfg.homework.allow):  # (a student's import of it fails)
        print(f"warning: the homework allows {module}, which is not installed here: a "
              f"submission that imports it fails (install {module} to grade such work)",
              file=sys.stderr)
    try:
        report = grade(args.submission, cfg, args.seed)
    except Exception as err:  # noqa: BLE001 - the results file is written whatever happens
        write_results(failure_results(f"{type(err).__name__}: {err}"), args.results)
        print(f"bpcheck grade: the grader failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    piped = True  # whether the report reached standard output
    try:  # the report first: a results file that cannot be written loses nothing
        if args.quiet:
            print(f"{report.score:g} / {report.max_score:g}")
        else:
            sys.stdout.write(render_text(report))
        sys.stdout.flush()
    except BrokenPipeError:  # `bpcheck grade ... | head`: the results file is still due
        piped = False
        _stdout_to_devnull()
    try:
        write_results(results_json(report), args.results)
    except OSError as err:
        print(f"bpcheck grade: could not write {args.results}: {err}", file=sys.stderr)
        return 1
    if not args.quiet and piped:
        try:
            print(f"results written to {args.results}", flush=True)
        except BrokenPipeError:
            _stdout_to_devnull()
    return 0


def _stdout_to_devnull() -> None:
    """Standard output, whose reader has gone (a closed pipe), pointed at ``/dev/null``:
    what is still printed is dropped, and Python's flush at exit raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _check_outputs(parser, **paths) -> None:
    """Each output path given can be written, checked before any grading (a grade-batch
    run in a folder it could not write graded every submission, then lost the grades with a
    traceback).  ``results`` and ``results_dir`` are made with their folders (as
    ``run_autograder``'s results folder may be): not a folder where a file is due (for
    ``results_dir``, not a file), and the nearest existing folder on the way writable; the
    others as every command's outputs (:func:`bpcheck._cliargs.check_output_paths`)."""
    from .._cliargs import check_output_paths

    made = ("results", "results_dir")
    check_output_paths(parser, **{k: v for k, v in paths.items() if k not in made})
    for name, path in paths.items():
        if path is None or name not in made:
            continue
        option = "--" + name.replace("_", "-")
        if not path:
            parser.error(f"argument {option}: expected a path, got an empty string")
        target = Path(path).absolute()
        if name == "results" and target.is_dir():
            parser.error(f"argument {option}: expected a file path, got the folder {path!r}")
        if name == "results_dir" and target.exists() and not target.is_dir():
            parser.error(f"argument {option}: expected a folder, got the file {path!r}")
        folder = target if name == "results_dir" else target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            parser.error(f"argument {option}: the folder {str(folder)!r} of {path!r} is not "
                         "writable")
        if target.exists() and not target.is_dir() and not os.access(target, os.W_OK):
            parser.error(f"argument {option}: {path!r} exists and cannot be overwritten")


def _batch(argv) -> int:
    p = argparse.ArgumentParser(
        prog="bpcheck grade-batch", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Grade a folder of submissions (.py/.ipynb files, or one per sub-folder) "
                    "in parallel; one broken submission never stops the batch.",
        epilog=BATCH_EXAMPLE)
    p.add_argument("folder")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    p.add_argument("--csv", default="grades.csv", metavar="PATH",
                   help="where to write the grades (default: ./grades.csv)")
    p.add_argument("--results-dir", metavar="DIR",
                   help="also write each submission's results.json into DIR, as NAME.json "
                        "for NAME.py, NAME.ipynb or the folder NAME (NAME.py.json where two "
                        "share NAME)")
    _common(p)
    args = p.parse_args(argv)
    args.command = "grade-batch"
    _hide_seed(args)
    _check_outputs(p, csv=args.csv, results_dir=args.results_dir)
    if not Path(args.folder).is_dir():
        print(f"bpcheck grade-batch: folder {args.folder!r}: not a directory", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"bpcheck grade-batch: --jobs {args.jobs}: expected at least 1", file=sys.stderr)
        return 2
    cfg = _load_cfg(args)
    if cfg is None:
        return 2
    from .batch import grade_batch
    from .config import ConfigError

    t0 = time.monotonic()
    try:
        rows = grade_batch(args.folder, cfg, args.jobs, args.csv, args.seed, args.results_dir)
    except ConfigError as err:  # (checked before anything is graded)
        print(f"bpcheck grade-batch: {err}", file=sys.stderr)
        return 2
    dt = time.monotonic() - t0
    from .batch import LINK_NOTE

    links = sum(1 for r in rows if r["error"] == LINK_NOTE)
    flagged = sum(1 for r in rows if r["error"]) - links
    print(f"graded {len(rows) - links} submissions in {dt:.1f} s with {args.jobs} job(s); "
          f"{flagged} with a note in the error column"
          + (f"; {links} symbolic link(s) not graded (a row each)" if links else "")
          + f"; grades written to {args.csv}")
    return 0


def _zip(argv) -> int:
    p = argparse.ArgumentParser(
        prog="bpcheck gradescope-zip", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build a Gradescope autograder zip (setup.sh, run_autograder and the "
                    "config).", epilog=ZIP_EXAMPLE)
    p.add_argument("out", help="the zip to write")
    p.add_argument("--config", metavar="TOML", help="grading config to include")
    p.add_argument("--homework", metavar="PY", help="homework module to include (default: "
                   "the config's, else the lecture's homework, which bpcheck holds)")
    p.add_argument("--wheel", metavar="WHL", help="bundle this bpcheck wheel instead of "
                   "the running bpcheck's own source")
    args = p.parse_args(argv)
    from .config import ConfigError
    from .config import deployment_warnings, load_config
    from .gradescope import build_zip, not_installed

    from .homework import HomeworkError, free_mistakes

    try:
        names = build_zip(args.out, args.config, args.wheel, args.homework)
        cfg = load_config(args.config, args.homework)
        missing = not_installed(cfg.homework.allow)
        free = free_mistakes(cfg.homework, cfg.seed or 0) + deployment_warnings(cfg)
    except (ConfigError, HomeworkError, OSError) as err:
        print(f"bpcheck gradescope-zip: {type(err).__name__}: {err}" if isinstance(
            err, HomeworkError) else f"bpcheck gradescope-zip: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {', '.join(names)}")
    which = cfg.homework_path or "the lecture's, built into bpcheck"
    exercises = ", ".join(f"{ex.number} {ex.name}" for ex in cfg.homework.exercises)
    print(f"homework: {which} ({cfg.homework.title!r}; exercises {exercises})")
    for line in free:
        print(f"warning: {line}", file=sys.stderr)
    for module in missing:
        print(f"warning: the homework allows {module}, which is not installed here, so the "
              f"zip does not install it and a submission that imports it fails on Gradescope "
              f"(install {module} here and build the zip again)", file=sys.stderr)
    return 0


COMMANDS = {"grade": _grade, "grade-batch": _batch, "gradescope-zip": _zip}


def main(argv=None) -> int:
    """Entry point; ``argv[0]`` is the command word (``grade``, ``grade-batch``,
    ``gradescope-zip``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"bpcheck: expected one of {', '.join(COMMANDS)} as the command",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except SystemExit as exc:  # argparse: --help exits 0, bad arguments 2
        return int(exc.code or 0)
