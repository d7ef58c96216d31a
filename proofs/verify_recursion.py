#!/usr/bin/env python3
"""Check every step of proofs/backprop_recursion.md by machine.

The same run as ``bpcheck verify`` (same options: --quick, --verbose, --seed, --networks,
--json, --markdown): the induction over the layers (every depth), the chain at fixed
depths, the concrete proofs over a grid of architectures in both activation models, the
refutation controls, and the numeric checks against ``jax.jacrev`` and finite
differences.  Exit status 0 only when everything holds.
"""

import sys

from bpcheck.verify import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python proofs/verify_recursion.py"))
