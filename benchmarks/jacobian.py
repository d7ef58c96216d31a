"""Time bpcheck.jacobian against jax.vmap(jax.jacrev) and against the memory floor.

Run:  python benchmarks/jacobian.py [--repeats R] [--sizes small|all]

For each network (float32) it prints, side by side, the best-of-R wall time of:
  numpy      bpcheck.jacobian on NumPy inputs (written once, in place, by all cores)
  jax        bpcheck.jacobian on JAX inputs, under jax.jit
  jacrev     jax.jit(jax.vmap(jax.jacrev(f))) over the parameter pytree, blocks
             concatenated into (N, K, P) in beta order, as a user would
  factors    bpcheck.jacobian_factors alone (NumPy and jitted JAX)
  np.full    np.full of the Jacobian's shape: the NumPy memory floor
  jnp.full   jnp.full of that shape under jit: the JAX memory floor
and the ratios the targets are stated in.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import bpcheck

SIZES = [([2, 100, 3], 300), ([16, 128, 128, 128, 10], 256), ([64, 256, 256, 256, 256, 10], 128)]


def best_of(fn, repeats):
    fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def block(x):
    return jax.block_until_ready(x)


def user_jacrev(params, X):
    def f(p, x):
        a = x
        for B, b in p[:-1]:
            a = jax.nn.relu(B @ a + b)
        B, b = p[-1]
        return B @ a + b

    grads = jax.vmap(jax.jacrev(f), in_axes=(None, 0))(params, X)
    N, K = X.shape[0], params[-1][0].shape[0]
    blocks = []
    for dB, db in grads:
        blocks.extend([dB.reshape(N, K, -1), db])
    return jnp.concatenate(blocks, axis=2)


def run(widths, N, repeats):
    rng = np.random.default_rng(0)
    params = [(B.astype(np.float32), (0.1 * rng.standard_normal(b.shape)).astype(np.float32))
              for B, b in bpcheck.init_params(widths, seed=0)]
    X = rng.standard_normal((N, widths[0])).astype(np.float32)
    jparams = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    jX = jnp.asarray(X)
    K, P = widths[-1], bpcheck.param_count(widths)
    shape = (N, K, P)

    jac_jit = jax.jit(bpcheck.jacobian)
    fac_jit = jax.jit(lambda p, x: [(r.V, r.a_prev) for r in bpcheck.jacobian_factors(p, x)])
    jacrev_jit = jax.jit(user_jacrev)
    full_jit = jax.jit(lambda: jnp.full(shape, 1.5, dtype=jnp.float32))

    # the recursion agrees with jacrev before anything is timed
    ref = np.asarray(jacrev_jit(jparams, jX))
    np.testing.assert_allclose(bpcheck.jacobian(params, X), ref, rtol=2e-3, atol=2e-4)

    t = {
        "numpy": best_of(lambda: bpcheck.jacobian(params, X), repeats),
        "jax": best_of(lambda: block(jac_jit(jparams, jX)), repeats),
        "jacrev": best_of(lambda: block(jacrev_jit(jparams, jX)), repeats),
        "factors np": best_of(lambda: bpcheck.jacobian_factors(params, X), repeats),
        "factors jax": best_of(lambda: block(fac_jit(jparams, jX)), repeats),
        "np.full": best_of(lambda: np.full(shape, 1.5, dtype=np.float32), repeats),
        "jnp.full": best_of(lambda: block(full_jit()), repeats),
    }
    return shape, t


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", choices=["small", "all"], default="all")
    args = parser.parse_args()
    sizes = SIZES[:2] if args.sizes == "small" else SIZES
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, numpy {np.__version__}, "
          f"float32, best of {args.repeats}")
    cols = ["numpy", "jax", "jacrev", "factors np", "factors jax", "np.full", "jnp.full"]
    print(f"{'network':<28} {'N':>4} {'GB':>6} " + " ".join(f"{c:>11}" for c in cols))
    results = []
    for widths, N in sizes:
        shape, t = run(widths, N, args.repeats)
        gb = np.prod(shape) * 4 / 1e9
        name = "-".join(map(str, widths))
        print(f"{name:<28} {N:>4} {gb:>6.3f} " + " ".join(f"{t[c] * 1e3:>9.2f}ms" for c in cols))
        results.append((name, t))
    print()
    print("ratios (targets at the largest size in brackets)")
    print(f"{'network':<28} {'jacrev/numpy':>13} {'numpy/np.full':>14} {'jacrev/jax':>11} "
          f"{'jax/jnp.full':>13} {'jacrev/factors':>15}")
    for name, t in results:
        print(f"{name:<28} {t['jacrev'] / t['numpy']:>12.2f}x {t['numpy'] / t['np.full']:>13.2f}x "
              f"{t['jacrev'] / t['jax']:>10.2f}x {t['jax'] / t['jnp.full']:>12.2f}x "
              f"{t['jacrev'] / min(t['factors np'], t['factors jax']):>14.1f}x")
    print(f"{'(targets)':<28} {'>= 4':>13} {'<= 2':>14} {'>= 1.5':>11} {'<= 1.5':>13} {'>= 100':>15}")


if __name__ == "__main__":
    main()
