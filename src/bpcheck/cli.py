"""The ``bpcheck`` command: one entry point, a sub-command per user.

Each sub-command lives in its own module with a ``main(argv) -> int``; it is imported
only when chosen, so ``bpcheck --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "verify": ("bpcheck.verify", "check the backprop recursion: every depth, a grid, numerically"),
    "train": ("bpcheck.train.cli", "train the lecture's models on the spiral task"),
    "grade": ("bpcheck.grade.cli", "grade a homework submission (.py or .ipynb)"),
    "grade-batch": ("bpcheck.grade.cli", "grade a folder of submissions in parallel"),
    "gradescope-zip": ("bpcheck.grade.cli", "build a Gradescope autograder zip"),
}

USAGE = """usage: bpcheck COMMAND [options]

Checks the backpropagation recursion V^(l) = V^(l+1) B^(l+1) D^(l),
U^(l) = V^(l) (I kron a^(l-1)') of deep ReLU networks, and puts it to work.

commands:
{commands}

Run `bpcheck COMMAND --help` for a command's options and an example;
`bpcheck --version` (or -V) prints the version.
example:
  bpcheck verify --quick      # prints a summary and ends with 'VERDICT: PASS ...'
"""


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        from . import __version__

        print(f"bpcheck {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"bpcheck: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        if module.__name__ == "bpcheck.grade.cli":
            return int(module.main(argv) or 0)  # the grade module serves three commands
        return int(module.main(argv[1:]) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line, not SymPy's chained tracebacks
        print(f"\nbpcheck {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bpcheck ... | head`: the reader has gone, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # (Python's flush at exit would raise again)
        os.close(devnull)
        return 141  # as a process killed by SIGPIPE, which a shell pipeline expects


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
