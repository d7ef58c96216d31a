"""``bpcheck verify``: every machine check of the backprop recursion, one verdict.

What is checked, and how far each check reaches (also in ``--help``):

* every depth ``L``: the induction over the layers, machine-checked with symbolic widths
  (:mod:`bpcheck.symbolic.induction`); the downward induction on ``l`` that joins base
  case and step is the one step done by hand;
* fixed depths ``L = 1..6`` (``1..2`` with ``--quick``): the whole chain with every width
  symbolic;
* a grid of concrete architectures (``L = 0..6``; three small ones with ``--quick``): every
  entry of every ``V^(l)``, ``U^(l)``, exactly;
* the refutation controls: planted wrong rules must be refuted;
* numerically: ``bpcheck.jacobian`` against ``jax.jacrev`` and finite differences on
  random networks (float64).

The output starts with a plain-words summary, then (``--verbose``) the tables, and ends
with a ``VERDICT:`` line.  Exit status 0 only when every part holds.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

from ._cliargs import check_output_paths, int_at_least

DESCRIPTION = """\
Check the backprop recursion V^(l) = V^(l+1) B^(l+1) D^(l), V^(L+1) = I_K and
U^(l) = V^(l) (I kron a^(l-1)'), and say exactly how far each check reaches:

  every depth L     the base case and the induction step from layer l+1 to layer l,
                    machine-checked by SymPy with symbolic widths; the downward
                    induction on l that joins them is the one step done by hand
  fixed depths      L = 1..6 (1..2 with --quick): the whole chain, every width symbolic
  concrete widths   14 architectures, L = 0..6 (3 small ones with --quick), ReLU and a
                    generic sigma: every entry of every V^(l), U^(l), exactly
  controls          planted wrong rules must be refuted
  numerically       bpcheck.jacobian vs jax.jacrev and finite differences on random
                    networks, float64

Assumptions: the chain rule; for ReLU, no pre-activation exactly at 0 (then D^(l) is
constant nearby and functions equal on an open set have equal derivatives); for a
generic sigma, the chain rule for the layers above l where SymPy cannot write it."""

EXAMPLE = """example:
  bpcheck verify --quick
  ... a short summary, one line per part, such as
  - For every depth L: the base case V^(L+1) = I_K and the step ...: yes.
  ...
  VERDICT: PASS (all 5 parts hold)
and exit status 0; any failure prints VERDICT: FAIL (...) and exits 1.
--verbose adds the tables; --json and --markdown write them to files."""


def build_parser(prog: str = "bpcheck verify") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int_at_least(0, 2**32 - 1), default=0,
                        help="seed of the random networks (default 0)")
    parser.add_argument("--networks", type=int_at_least(1), default=None,
                        help="number of random networks in the numeric check "
                             f"(default {NETWORKS}, {QUICK_NETWORKS} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="the quick check: the induction, small grids, few networks")
    parser.add_argument("--verbose", action="store_true",
                        help="print every part's table after the summary")
    parser.add_argument("--numeric-only", action="store_true", help="skip the symbolic parts")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH",
                        help="also write a Markdown report (LaTeX rendered, for a course page)")
    return parser


NETWORKS, QUICK_NETWORKS = 24, 3


def run(seed: int = 0, networks: int | None = None, quick: bool = False,
        numeric_only: bool = False):
    """Run every check; returns the list of report parts (see ``bpcheck._report.Part``).

    The numeric part (JAX) runs in a second Python process while this one does the
    symbolic part (SymPy), so the two use two cores instead of taking turns.
    """
    if networks is None:
        networks = QUICK_NETWORKS if quick else NETWORKS
    parts = []
    if numeric_only:
        part = _numeric_part(seed, networks)
    else:
        from .symbolic import verify_parts

        numeric = _start_numeric_part(seed, networks)
        try:
            parts = verify_parts(quick=quick)
        finally:
            out, _ = numeric.communicate()
        if numeric.returncode != 0:
            raise RuntimeError(f"the numeric checks' process failed (exit status "
                               f"{numeric.returncode}); its error is printed above")
        part = pickle.loads(out)
    part.summary = _numeric_summary(part, networks, seed)
    return [*parts, part]


def _numeric_part(seed: int, networks: int):
    from ._compat import enable_x64
    from .numcheck import numeric_part

    with enable_x64(True):
        return numeric_part(seed=seed, networks=networks)


def _start_numeric_part(seed: int, networks: int) -> subprocess.Popen:
    """:func:`_numeric_part` in a new interpreter; its report part comes back pickled on
    its standard output (our own process and code, nothing untrusted)."""
    code = ("import pickle, sys; from bpcheck.verify import _numeric_part; "
            f"sys.stdout.buffer.write(pickle.dumps(_numeric_part({int(seed)}, {int(networks)})))")
    package_root = str(Path(__file__).resolve().parents[1])  # bpcheck as this process has it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)


def _numeric_summary(part, networks: int, seed: int) -> str:
    from .numcheck import DEAD_NOTE

    column = {name: i for i, name in enumerate(part.columns)}  # by name: columns get added
    widths = [row[column["widths"]] for row in part.rows]
    depths = [w.count("-") - 1 for w in widths]
    widest = max(int(d) for w in widths for d in w.rstrip(".").split("-") if d)
    worst_jacrev = max(row[column["err vs jacrev"]] for row in part.rows)
    worst_fd = max(row[column["err vs FD"]] for row in part.rows)
    fd_cols = max(row[column["FD cols"]] for row in part.rows)
    dead = sum(DEAD_NOTE in n for n in part.notes)
    flagged = f"; {dead} flagged for mostly dead units" if dead else ""
    used = {name for row in part.rows for name in str(row[column["activation"]]).split(",")}
    acts = [a for a in used if a not in ("", "none")]  # ("none": no hidden layer)
    others = sorted(a for a in acts if a != "relu")
    activations = ("; no hidden layer" if not acts else "; ReLU" if not others else
                   f"; ReLU and {len(others)} other activation{'s' * (len(others) != 1)}, "
                   "mixed per layer" if "relu" in acts else f"; {', '.join(others)}")
    verb = "agrees with" if part.passed else "was compared with"  # (a failure: NO, FAILED)
    return (f"Numerically ({networks} random network{'s' if networks != 1 else ''}, seed "
            f"{seed}, float64; L up to {max(depths)}, widths up to {widest}{activations}"
            f"{flagged}): bpcheck.jacobian "
            f"{verb} jax.jacrev (every entry) and finite differences (at most {fd_cols} "
            f"sampled parameters per network), worst relative error {worst_jacrev:.1e} and "
            f"{worst_fd:.1e}")


def _header(args, elapsed: float) -> str:
    what = "the quick check (--quick)" if args.quick else "the full check"
    if args.numeric_only:
        what += ", numeric part only"
    return f"bpcheck verify: {what}, {elapsed:.1f} s"


def main(argv: list[str] | None = None, prog: str = "bpcheck verify") -> int:
    from ._report import render_json, render_markdown, render_text

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    check_output_paths(parser, json=args.json, markdown=args.markdown)
    if sys.stderr.isatty():  # (a minute of silence read as a hang; logs stay clean)
        what = "the numeric checks" if args.numeric_only else \
            "the quick check" if args.quick else "every check (a minute or less on 2 cores)"
        print(f"{prog}: running {what}; the summary follows", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    parts = run(args.seed, args.networks, args.quick, args.numeric_only)
    elapsed = time.perf_counter() - t0
    networks = args.networks or (QUICK_NETWORKS if args.quick else NETWORKS)
    meta = {"seed": args.seed, "quick": args.quick, "numeric_only": args.numeric_only,
            "networks": networks, "seconds": round(elapsed, 2)}
    skipped = "the symbolic parts (--numeric-only)" if args.numeric_only else ""
    assumptions = () if args.numeric_only else _assumptions()
    header = _header(args, elapsed)
    shown = header if args.verbose else header + " (--verbose prints the tables)"
    print(render_text(parts, skipped, verbose=args.verbose, header=shown,
                      assumptions=assumptions))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(render_json(parts, meta, skipped, assumptions))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(render_markdown(parts, header, skipped, assumptions))
    return 0 if parts and all(p.passed for p in parts) else 1


def _assumptions():
    from .symbolic.parts import ASSUMPTIONS

    return ASSUMPTIONS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
