"""Grading speed: one complete correct submission, and `grade-batch` over 20 submissions.

Prints the wall time of `bpcheck grade` on the correct submission (target: under 10 s on
a 2-core CPU; all four exercises, each in its own sandboxed child) and the throughput of
`grade-batch` with 1 and 2 jobs.

    python benchmarks/grade.py [--submissions 20]
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
CORRECT = HERE.parent / "tests" / "grade_submissions" / "correct.py"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submissions", type=int, default=20)
    args = p.parse_args()
    from bpcheck.grade.grader import grade

    print(f"CPU cores: {os.cpu_count()}, euid {os.geteuid()}")
    grade(CORRECT, seed=0)  # warm the file cache
    t0 = time.perf_counter()
    report = grade(CORRECT, seed=1)
    one = time.perf_counter() - t0
    print(f"one correct submission, in process: {one:6.2f} s  (score {report.score:g} / "
          f"{report.max_score:g}; target < 10 s)")
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


if __name__ == "__main__":
    main()
