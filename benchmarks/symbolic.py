"""Time and peak memory of the concrete symbolic proof (V and U, every layer), widths [3] * (L + 2).

For L = 1..12 prints, side by side: ``check_recursion`` layer by layer in each layer's own
symbols (``method="layerwise"``, the default; ReLU and sigma models) and by differentiating
and expanding ``z^(L+1)`` directly (``method="direct"``; ReLU, up to ``--direct-max-L``).
Each run is a fresh subprocess, so its peak resident memory (``ru_maxrss``, imports
included; the first line gives that of the imports alone) is its own.  Targets on a
2-core CPU: L = 10 under 5 s and 500 MB, L = 12 under 60 s (layerwise, ReLU).

    python benchmarks/symbolic.py [--max-L 12] [--direct-max-L 9]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def one(L: int, method: str, model: str) -> dict:
    """One proof in this process: seconds, peak MB, verdict, monomials compared."""
    from bpcheck.symbolic import check_recursion

    if L < 0:
        return {"seconds": 0.0, "peak_mb": _peak_mb(), "holds": True, "monomials": 0}
    report = check_recursion([3] * (L + 2), activation=model, method=method)
    return {"seconds": report.seconds, "peak_mb": _peak_mb(), "holds": report.holds,
            "monomials": sum(c.monomials for c in report.layers)}


def measure(L: int, method: str, model: str, timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--one", str(L), method, model]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout)


def _cell(r: dict | None) -> str:
    if r is None:
        return f"{'timeout':>18}"
    assert r["holds"], "the proof failed"
    return f"{r['seconds']:>8.2f} {r['peak_mb']:>9.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-L", type=int, default=12)
    parser.add_argument("--direct-max-L", type=int, default=9)
    parser.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    parser.add_argument("--one", nargs=3, metavar=("L", "METHOD", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        L, method, model = args.one
        print(json.dumps(one(int(L), method, model)))
        return
    import sympy

    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"sympy {sympy.__version__}; each cell: seconds, peak RSS in MB (fresh process)")
    base = measure(-1, "layerwise", "relu", args.timeout)
    print(f"# imports alone: peak RSS {base['peak_mb']:.0f} MB")
    print(f"{'L':>3} {'layerwise relu':>18} {'layerwise sigma':>18} {'direct relu':>18} "
          f"{'direct/layerwise time':>22}")
    for L in range(1, args.max_L + 1):
        relu = measure(L, "layerwise", "relu", args.timeout)
        sigma = measure(L, "layerwise", "sigma", args.timeout)
        direct = measure(L, "direct", "relu", args.timeout) if L <= args.direct_max_L else None
        ratio = (f"{direct['seconds'] / relu['seconds']:>22.1f}" if direct and relu
                 else f"{'-':>22}")
        shown = _cell(direct) if L <= args.direct_max_L else f"{'-':>18}"
        print(f"{L:>3} {_cell(relu)} {_cell(sigma)} {shown} {ratio}", flush=True)


if __name__ == "__main__":
    main()
