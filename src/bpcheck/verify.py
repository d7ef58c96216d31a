"""``bpcheck verify``: every machine check of the backprop recursion, one verdict.

Parts, in order: the symbolic proof (generic widths, concrete architectures, both
activation models), the refutation controls (planted wrong rules must be refuted),
and the numeric check against ``jax.jacrev`` and finite differences.  Exit status 0
only when every part holds.
"""

from __future__ import annotations

import argparse
import sys
import time

from ._cliargs import check_output_paths, int_at_least

EXAMPLE = """example:
  bpcheck verify --quick --json verify.json
  ... one table per part, then a line such as
  VERDICT: PASS (all 4 parts hold)
and exit status 0; any failure prints VERDICT: FAIL (...) and exits 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpcheck verify",
        description="Prove V^(l) = V^(l+1) B^(l+1) D^(l) and U^(l) = V^(l) (I kron a^(l-1)') "
                    "with SymPy, refute planted wrong rules, and check bpcheck.jacobian "
                    "numerically against jax.jacrev and finite differences.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int_at_least(0, 2**32 - 1), default=0,
                        help="seed of the random networks (default 0)")
    parser.add_argument("--networks", type=int_at_least(1), default=None,
                        help="number of random networks in the numeric check (default 24, 6 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smaller run, under 15 s")
    parser.add_argument("--numeric-only", action="store_true", help="skip the symbolic parts")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH",
                        help="also write a Markdown report (LaTeX rendered, for a course page)")
    return parser


def run(seed: int = 0, networks: int | None = None, quick: bool = False,
        numeric_only: bool = False):
    """Run every check; returns the list of report parts (see ``bpcheck._report.Part``)."""
    from ._compat import enable_x64
    from .numcheck import numeric_part

    parts = []
    if not numeric_only:
        from .symbolic import verify_parts

        parts.extend(verify_parts(quick=quick))
    if networks is None:
        networks = 6 if quick else 24
    with enable_x64(True):
        parts.append(numeric_part(seed=seed, networks=networks))
    return parts


def main(argv: list[str] | None = None) -> int:
    from ._report import render_json, render_markdown, render_text

    parser = build_parser()
    args = parser.parse_args(argv)
    check_output_paths(parser, json=args.json, markdown=args.markdown)
    t0 = time.perf_counter()
    parts = run(args.seed, args.networks, args.quick, args.numeric_only)
    elapsed = time.perf_counter() - t0
    networks = args.networks or (6 if args.quick else 24)
    meta = {"seed": args.seed, "quick": args.quick, "numeric_only": args.numeric_only,
            "networks": networks, "seconds": round(elapsed, 2)}
    skipped = "the symbolic parts (--numeric-only)" if args.numeric_only else ""
    print(render_text(parts, skipped))
    print(f"(total {elapsed:.1f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(render_json(parts, meta, skipped))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(render_markdown(parts, meta, skipped))
    return 0 if parts and all(p.passed for p in parts) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
