"""Argument types and checks shared by the ``bpcheck`` subcommands.

Each names what it expected and what it got; argparse puts the option's name in front.
"""

from __future__ import annotations

import argparse
import math
import os


def int_at_least(low: int, most: int | None = None):
    """An ``argparse`` type: an int ``>= low`` (and ``<= most`` when given)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}") from None
        if value < low or (most is not None and value > most):
            bound = f"in [{low}, {most}]" if most is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected an int {bound}, got {text!r}")
        return value
    return parse


def finite_float(strictly_positive: bool):
    """An ``argparse`` type: a finite number ``> 0`` or ``>= 0``."""
    expect = "a finite number > 0" if strictly_positive else "a finite number >= 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expect}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (strictly_positive and value == 0):
            raise argparse.ArgumentTypeError(f"expected {expect}, got {text!r}")
        return value
    return parse


def _try_create(parser, option: str, path: str, given: str) -> None:
    """Create the new file ``path`` and remove it again: what the checks of modes cannot
    tell (a folder such as /proc that takes no new files, a full disk)."""
    try:
        with open(path, "x", encoding="utf-8"):
            pass
    except OSError as err:
        parser.error(f"argument {option}: {given!r} cannot be written ({err.strerror})")
    os.remove(path)


def check_output_paths(parser: argparse.ArgumentParser, **paths: str | None) -> None:
    """Before any work: each output's folder exists and can be written, the output is not a
    folder and, if it exists, can be overwritten; no two options name the same file.

    ``paths``: option name (``json``, ``results_dir`` ...) -> path or ``None``.
    """
    seen: dict[str, str] = {}
    for name, path in paths.items():
        if path is None:
            continue
        option = "--" + name.replace("_", "-")
        if not path:
            parser.error(f"argument {option}: expected a file path, got an empty string")
        given, path = path, os.path.realpath(path)  # a symbolic link: where it points
        if os.path.isdir(path):
            parser.error(f"argument {option}: expected a file path, got the folder {given!r}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            parser.error(f"argument {option}: the folder {folder!r} of {given!r} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            parser.error(f"argument {option}: the folder {folder!r} of {given!r} is not writable")
        if os.path.exists(path):
            if not os.access(path, os.W_OK):
                parser.error(f"argument {option}: {given!r} exists and cannot be overwritten")
        else:
            _try_create(parser, option, path, given)
        if path in seen:
            parser.error(f"argument {option}: {given!r} is also the path given to {seen[path]}; "
                         "expected a different file")
        seen[path] = option
