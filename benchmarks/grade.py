"""Grading speed: a lecture-style notebook against one plain run of it, one correct .py
submission, and `grade-batch` over 20 submissions.

The notebook (plots, the 10,000-step NumPy training loop, the PyTorch part, the four
exercises answered correctly) is graded once and executed once, plainly, by the same
Python (its cells run in one namespace, as "run all" does): target grading time <= 1.3 x
the plain run + 2 s, with full marks.  The .py submission: target under 3 s.  Then the
throughput of `grade-batch` with 1 and 2 jobs.

With ``--against SRC`` (the ``src`` folder of another checkout of bpcheck), it instead
times both graders side by side on the .py submission, alternating, and prints the ratio
of their best grading times (``execution_time`` in results.json, which leaves out the
interpreter's start-up).

    python benchmarks/grade.py [--submissions 20] [--steps 10000]
    python benchmarks/grade.py --against /path/to/old/src [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUBMISSIONS = HERE.parent / "tests" / "grade_submissions"
CORRECT = SUBMISSIONS / "correct.py"

PLAIN_RUN = """\
import sys
from bpcheck.grade.source import read_cells
cells = read_cells(sys.argv[1])
namespace = {"__name__": "__main__", "display": print}
for label, source in cells:
    try:
        exec(compile(source, label, "exec"), namespace)
    except Exception as err:
        print(label, "raised", type(err).__name__, err)
"""


def notebook_versus_plain(steps: int) -> None:
    sys.path.insert(0, str(SUBMISSIONS))
    import lecture_notebook

    from bpcheck.grade.grader import grade

    with tempfile.TemporaryDirectory() as tmp:
        nb = Path(tmp) / "lecture.ipynb"
        lecture_notebook.write(nb, steps)
        env = {**os.environ, "MPLBACKEND": "Agg"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", PLAIN_RUN, str(nb)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = grade(nb, seed=1)
        graded = time.perf_counter() - t0
    print(f"lecture-style notebook ({steps} training steps, plots, a PyTorch cell):")
    print(f"  plain execution (one process, all cells):     {plain:6.2f} s")
    print(f"  bpcheck grade (loaded once, all 4 exercises): {graded:6.2f} s  "
          f"(score {report.score:g} / {report.max_score:g})")
    print(f"  ratio {graded / plain:.2f}x; target <= 1.3 x plain + 2 s = {1.3 * plain + 2:.2f} s: "
          f"{'met' if graded <= 1.3 * plain + 2 else 'NOT met'}")
    for note in report.messages:
        print(f"  note: {note[:150]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submissions", type=int, default=20)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--against", metavar="SRC", help="another bpcheck source tree to compare with")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.against:
        return compare(Path(args.against).resolve(), args.repeats)
    from bpcheck.grade.grader import grade

    print(f"CPU cores: {os.cpu_count()}, euid {os.geteuid()}")
    grade(CORRECT, seed=0)  # warm the file cache
    notebook_versus_plain(args.steps)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        report = grade(CORRECT, seed=1)
        times.append(time.perf_counter() - t0)
    print(f"one correct .py submission, in process: {min(times):6.2f} s best of 3 "
          f"({', '.join(f'{t:.2f}' for t in times)}; score {report.score:g} / "
          f"{report.max_score:g}; target < 3 s)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bpcheck", "grade", str(CORRECT), "--quiet",
                        "--results", os.path.join(tmp, "r.json"), "--seed", "1"], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"one correct submission, `bpcheck grade` command: {time.perf_counter() - t0:6.2f} s")
        folder = Path(tmp) / "subs"
        folder.mkdir()
        for i in range(args.submissions):
            shutil.copy(CORRECT, folder / f"student{i:02d}.py")
        for jobs in (1, 2):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bpcheck", "grade-batch", str(folder),
                            "--jobs", str(jobs), "--csv", os.path.join(tmp, "g.csv"),
                            "--seed", "1"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            dt = time.perf_counter() - t0
            print(f"grade-batch, {args.submissions} submissions, --jobs {jobs}: {dt:6.2f} s  "
                  f"({args.submissions / dt:.2f} submissions/s)")


def _grading_seconds(src: Path | None, tmp: str) -> tuple[float, float]:
    """(grading time in results.json, wall time of the command) of one `bpcheck grade`."""
    import json

    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = os.path.join(tmp, "r.json")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bpcheck", "grade", str(CORRECT), "--quiet",
                    "--results", out, "--seed", "1"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with open(out) as f:
        doc = json.load(f)
    assert doc["score"] == 100, doc["score"]
    return doc["execution_time"], wall


def compare(src: Path, repeats: int) -> None:
    print(f"CPU cores: {os.cpu_count()}, euid {os.geteuid()}, load {os.getloadavg()[0]:.1f}; "
          f"this tree vs {src}, {repeats} alternating runs each, best of each")
    this, other = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            other.append(_grading_seconds(src, tmp))
            this.append(_grading_seconds(None, tmp))
    for label, i in (("grading time (results.json)", 0), ("`bpcheck grade` wall time", 1)):
        a, b = min(r[i] for r in this), min(r[i] for r in other)
        print(f"{label:30s} this {a:6.2f} s   other {b:6.2f} s   ratio {a / b:5.2f}")


if __name__ == "__main__":
    main()
