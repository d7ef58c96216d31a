"""neural-tangents' empirical NTK, timed in its own Python for ``peers.py --nt-python``.

neural-tangents 0.6.5 runs on JAX up to 0.4.x, not on the JAX that bpcheck's benchmarks
use, so ``peers.py`` runs this script with an interpreter that has it (for example a
virtual environment with ``pip install neural-tangents==0.6.5 jax==0.4.25``):

    python benchmarks/nt_peer.py INPUTS.npz OUT_PREFIX [--trace] [--repeats R]

``INPUTS.npz`` holds ``X`` and ``B0, b0, B1, b1, ...`` (``B`` of shape ``(out, in)``); the
network is given to neural-tangents with ``W = B'`` of shape ``(in, out)``, the layout its
structured derivatives handle fast (see :func:`mlp`).
For each implementation asked for with ``--impl`` (default: structured derivatives,
neural-tangents' own choice for MLPs) the kernel is compiled with ``jax.jit``, called
once, then timed as ``peers.py`` times its methods (best of ``R``, of 3 when a call takes
over 1 s, each after ``SETTLE`` seconds of idle); its result is saved to
``OUT_PREFIX.<name>.npy`` and one JSON line per implementation is printed:
``{"name", "best_s", "repeats", "file", "versions"}``.  With
``--trace`` the kernel is ``(N, N)``, neural-tangents' ``trace_axes=(-1,)``, which is the
*mean* over the ``K`` outputs (its ``_trace_and_diagonal`` divides by ``K``): it is
multiplied by ``K`` here to be the trace, as bpcheck's ``ntk(trace=True)`` is.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

SETTLE, QUICK, SLOW, WARM, WARM_CALLS = 0.2, 0.05, 1.0, 0.05, 3  # as in peers.py
IMPLEMENTATIONS = {"structured derivatives": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
                   "Jacobian contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
                   "NTK-vector products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS}


def mlp(params, x):
    """The MLP in JAX's own layout, ``W = B'`` of shape ``(in, out)``, as neural-tangents'
    examples write it: its structured derivatives ran the 784-1024-1024-1024-10 NTK of 32
    examples in 25.5 ms (trace) and 35.9 ms (full) so, against 7394 and 8737 ms with
    ``x @ B.T`` on ``(out, in)`` weights (jax 0.4.25, 2 cores)."""
    for W, b in params[:-1]:
        x = jax.nn.relu(x @ W + b)
    W, b = params[-1]
    return x @ W + b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs")
    ap.add_argument("out_prefix")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--impl", action="append", choices=sorted(IMPLEMENTATIONS),
                    help="an implementation to time (repeatable; default: structured "
                         "derivatives)")
    args = ap.parse_args()
    data = np.load(args.inputs)
    X = jnp.asarray(data["X"])
    L = sum(1 for k in data.files if k.startswith("B"))
    params = [(jnp.asarray(np.ascontiguousarray(data[f"B{l}"].T)), jnp.asarray(data[f"b{l}"]))
              for l in range(L)]  # W = B', (in, out)
    K = params[-1][0].shape[1]
    for name in args.impl or ["structured derivatives"]:
        impl = IMPLEMENTATIONS[name]
        fn = jax.jit(nt.empirical_ntk_fn(mlp, trace_axes=(-1,) if args.trace else (),
                                         vmap_axes=0, implementation=impl))
        run = lambda fn=fn: jax.block_until_ready(fn(X, None, params))
        out = run()
        t = time.perf_counter()
        run()
        best = time.perf_counter() - t
        repeats = args.repeats if best < SLOW else min(args.repeats, 3)
        for _ in range(repeats - 1):
            time.sleep(SETTLE)
            if best < QUICK:  # wake the thread pool, as peers.py does for quick calls
                start, calls = time.perf_counter(), 0
                while calls < WARM_CALLS or time.perf_counter() - start < WARM:
                    run()
                    calls += 1
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
        out = np.asarray(out, dtype=np.float64) * (K if args.trace else 1)
        path = f"{args.out_prefix}.{name.replace(' ', '_')}.npy"
        np.save(path, out)
        print(json.dumps({"name": name, "best_s": best, "repeats": repeats, "file": path,
                          "versions": f"neural-tangents {nt.__version__}, jax {jax.__version__}"}),
              flush=True)


if __name__ == "__main__":
    main()
