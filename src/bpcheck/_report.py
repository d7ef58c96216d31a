"""Results of a verification run: parts with a table each, rendered as text, JSON or Markdown.

Every checker (numeric, symbolic, refutation controls) returns a :class:`Part`; the
``verify`` command prints a summary (one plain sentence per part), the tables on request,
and one verdict line for the whole run, last.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any


WRAP = 96
"""Line width of the summary."""


@dataclass
class Part:
    """One section of a verification report.

    ``columns`` name the table's columns; each row is a list of plain values (str,
    int, float, bool).  ``passed`` is the part's verdict, decided by the checker that
    built it; ``notes`` are lines printed under the table (kinks redrawn, failures
    explained).  ``latex`` optionally maps a row label to LaTeX for the Markdown report.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    passed: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    latex: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    """One plain sentence: what this part established (printed before any table)."""


def _fmt(value: Any) -> str:
    """One table cell, on one line (a multi-line message is joined with " / ")."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2e}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5) \
            else f"{value:.4g}"
    return " / ".join(line.strip() for line in str(value).splitlines() if line.strip())


def render_summary(parts: list[Part], assumptions=()) -> str:
    """The plain-words summary: one line per part with its verdict, then the assumptions."""
    out = []
    for part in parts:
        status = "yes" if part.passed else "NO, FAILED"
        text = part.summary or part.title
        out.extend(textwrap.wrap(f"- {text}: {status}.", width=WRAP, subsequent_indent="  "))
        if not part.passed:
            out.extend(f"    {line}" for n in part.notes for line in str(n).splitlines())
    if assumptions:
        out.append("Assumptions of the symbolic proof:")
        for i, a in enumerate(assumptions, start=1):
            out.extend(textwrap.wrap(f"  {i}. {a}", width=WRAP, subsequent_indent="     "))
    return "\n".join(out)


def render_tables(parts: list[Part]) -> str:
    """Every part's table and notes (the detail behind the summary)."""
    out = []
    for part in parts:
        status = "PASS" if part.passed else "FAIL"
        out.append(f"== {part.title} [{status}, {part.seconds:.2f} s]")
        cells = [part.columns] + [[_fmt(v) for v in row] for row in part.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(part.columns))]
        for j, row in enumerate(cells):
            out.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if j == 0:
                out.append("  " + "  ".join("-" * w for w in widths))
        out.extend(f"  note: {n}" for n in part.notes)
        out.append("")
    return "\n".join(out)


def render_text(parts: list[Part], skipped: str = "", *, verbose: bool = True,
                header: str = "", assumptions=()) -> str:
    """``header``, the summary, the tables (``verbose``), and the verdict line last."""
    out = [header] if header else []
    if any(p.summary for p in parts) or assumptions:
        out += [render_summary(parts, assumptions), ""]
    if verbose:
        out.append(render_tables(parts))
    out.append(verdict_line(parts, skipped))
    return "\n".join(out)


def verdict_line(parts: list[Part], skipped: str = "") -> str:
    """The last line of a run; ``skipped`` names what the run left out, if anything."""
    failed = [p.title for p in parts if not p.passed]
    if not parts:
        return "VERDICT: FAIL (nothing was checked)"
    tail = f"; {skipped} not run" if skipped else ""
    if failed:
        return f"VERDICT: FAIL ({len(failed)} of {len(parts)} parts failed: {'; '.join(failed)}{tail})"
    held = "the one part holds" if len(parts) == 1 else f"all {len(parts)} parts hold"
    return f"VERDICT: PASS ({held}{tail})"


def _plain(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def render_json(parts: list[Part], meta: dict[str, Any], skipped: str = "",
                assumptions=()) -> str:
    doc = {
        "passed": bool(parts) and all(p.passed for p in parts),
        "verdict": verdict_line(parts, skipped),
        **meta,
        "summary": [p.summary for p in parts],
        "assumptions": list(assumptions),
        "parts": [asdict(p) for p in parts],
    }
    return json.dumps(_plain(doc), indent=2, default=float, allow_nan=False)


def render_markdown(parts: list[Part], header: str = "", skipped: str = "",
                    assumptions=()) -> str:
    """A course-page report: ``header`` (one line saying what was run), the summary, the
    assumptions, then each part with its LaTeX, table and notes."""
    out = ["# bpcheck verification report", ""]
    if header:
        out += [header, ""]
    out += ["## Summary", ""]
    for part in parts:
        out.append(f"- {part.summary or part.title}: **{'yes' if part.passed else 'FAILED'}**")
    out.append("")
    if assumptions:
        out += ["Assumptions of the symbolic proof:", ""]
        out += [f"{i}. {a}" for i, a in enumerate(assumptions, start=1)]
        out.append("")
    for part in parts:
        status = "PASS" if part.passed else "FAIL"
        out.append(f"## {part.title} ({status})")
        out.append("")
        for label, tex in part.latex.items():
            out.append(f"**{label}**")
            out.append("")
            out.append(f"$$ {tex} $$")
            out.append("")
        out.append("| " + " | ".join(part.columns) + " |")
        out.append("|" + "---|" * len(part.columns))
        for row in part.rows:
            out.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
        out.append("")
        out.extend(f"- {n}" for n in part.notes)
        out.append("")
    out.append(f"**{verdict_line(parts, skipped)}**")
    return "\n".join(out) + "\n"
