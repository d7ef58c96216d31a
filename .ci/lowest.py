"""Print pip constraints that pin every dependency pyproject.toml declares with a lower
bound (``name>=X``, in ``dependencies`` and the ``dev`` extra) to exactly that bound, and
jaxlib to jax's: the oldest versions bpcheck says it works with, for .ci/run's lowest lane.

    python3 .ci/lowest.py > constraints.txt

Run with Python 3.11 or newer (tomllib), or with tomli installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

LOWER = re.compile(r"^([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(?:;\s*(.+))?$")


def pins(project: dict) -> list[str]:
    """``name==X`` for each ``name>=X`` (a marker kept), in the order declared; any other
    form of requirement but an exact pin is an error."""
    declared = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    out = []
    for spec in declared:
        if "==" in spec:
            continue  # an exact pin: nothing to lower
        match = LOWER.match(spec.strip())
        if match is None:
            raise SystemExit(f"{sys.argv[0]}: cannot find the lowest version of {spec!r}; "
                             "declare it as name>=version")
        name, version, marker = match.groups()
        out.append(f"{name}=={version}" + (f"; {marker}" if marker else ""))
        if name == "jax":
            out.append(f"jaxlib=={version}")
    return out


def main() -> int:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = pins(project)
    if not lines:
        print(f"{sys.argv[0]}: no 'name>=version' dependency in {pyproject}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
