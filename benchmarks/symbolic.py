"""Time of the concrete symbolic proof (V and U, every layer) for widths [3] * (L + 2).

Prints, side by side, for L = 1..10: bpcheck's checker in the ReLU model and in the
sigma model (SymEngine differentiation and expansion, see bpcheck.symbolic.check), and
for small L a plain-SymPy reference that checks V alone (Matrix.jacobian of z^(L+1),
then expand every entry of jacobian - recursion).  Targets on a 2-core CPU: L = 6 under
1 s, L = 8 under 5 s.

    python benchmarks/symbolic.py [--max-L 10] [--baseline-max-L 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import sympy as sp

from bpcheck.symbolic import build_network, check_recursion


def plain_sympy_V(widths) -> float:
    """V^(l) by the recursion vs SymPy's Matrix.jacobian, per-entry expand (V only)."""
    start = time.perf_counter()
    net = build_network(widths, "relu")
    out = net.z[net.L + 1]
    V = sp.eye(net.K)
    for l in range(net.L, 0, -1):
        V = V * net.B[l + 1] * net.D[l]
        J = out.jacobian(list(net.b[l]))
        assert all(sp.expand(e) == 0 for e in (J - V)), f"V^({l}) differs"
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-L", type=int, default=10)
    parser.add_argument("--baseline-max-L", type=int, default=5)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"sympy {sp.__version__}")
    print(f"{'L':>3} {'widths':>8} {'relu (s)':>10} {'sigma (s)':>10} {'monomials':>10} "
          f"{'plain SymPy, V only (s)':>24}")
    for L in range(1, args.max_L + 1):
        widths = [3] * (L + 2)
        relu = check_recursion(widths, activation="relu")
        sigma = check_recursion(widths, activation="sigma")
        assert relu.holds and sigma.holds
        monomials = sum(c.monomials for c in relu.layers)
        base = f"{plain_sympy_V(widths):.3f}" if L <= args.baseline_max_L else "-"
        print(f"{L:>3} {'[3]*' + str(L + 2):>8} {relu.seconds:>10.3f} {sigma.seconds:>10.3f} "
              f"{monomials:>10} {base:>24}", flush=True)


if __name__ == "__main__":
    main()
