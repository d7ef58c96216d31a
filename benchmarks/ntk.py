"""What the factors buy: the NTK and per-example gradient norms, side by side with autodiff.

Run:  python benchmarks/ntk.py [--quick] [--repeats R]

MLP 784-1024-1024-1024-10, float32, on whatever JAX runs on (CPU or GPU, unchanged).
Three parts, each printed as a table:

1. Full NTK (N, N, K, K), N = 32:
     bpcheck.ntk           jax.jit(bpcheck.ntk): sum_l V_i V_j' (a_i'a_j + 1)
     contraction           jax.jit: vmap(jacrev) over the parameter pytree, then einsum
                           of each leaf's Jacobian with itself (the JAX/PyTorch NTK tutorials)
     NTK-vector products   jax.jit: for each pair, vjp of the K basis vectors at x_i, then
                           jvp at x_j, vmapped over both examples (the same tutorials)
     matmul                a plain float32 matmul of about the same FLOP count, for the
                           machine's GFLOP/s
   with bpcheck's FLOP count (forward, V recursion, Gram matrices) and rate.
2. Trace NTK (N, N), N = 8192, tiled over the batch, in a fresh process so that the peak
   memory it prints (VmHWM from /proc/self/status, else getrusage ru_maxrss; on a GPU
   also the device's peak) is its own.
3. Per-example gradient norms, N = 4096: bpcheck.per_example_grad_norms against
   vmap(grad) followed by the norm (in chunks of 128 examples: the (N, P) array would
   need 48 GB).

Targets: contraction / bpcheck >= 300, NTK-vector products / bpcheck >= 100,
bpcheck >= 50% of the matmul GFLOP/s; trace NTK at N = 8192 with memory near the
output's size; gradient norms >= 5x faster than vmap(grad).  --quick shrinks every size
for a smoke test (targets then do not apply).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import bpcheck

WIDTHS = [784, 1024, 1024, 1024, 10]
MiB = 1 << 20


def best_of(fn, repeats):
    """Best wall time of ``repeats`` calls, after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


def best_interleaved(fns, repeats):
    """Best wall time of each of ``fns``, timed in alternation so that load from other
    processes on a shared machine hits them alike."""
    for fn in fns:
        jax.block_until_ready(fn())
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def setup(N, seed=0):
    params = [(jnp.asarray(B, jnp.float32), jnp.asarray(b, jnp.float32))
              for B, b in bpcheck.init_params(WIDTHS, seed=seed)]
    X = jnp.asarray(np.random.default_rng(seed).standard_normal((N, WIDTHS[0])), jnp.float32)
    return params, X


def mlp(params, x):
    """The network in plain JAX, for autodiff (jax.nn.relu: derivative 0 at 0, as bpcheck)."""
    for B, b in params[:-1]:
        x = jax.nn.relu(x @ B.T + b)
    B, b = params[-1]
    return x @ B.T + b


@jax.jit
def ntk_contraction(params, X):
    J = jax.vmap(jax.jacrev(mlp), (None, 0))(params, X)  # pytree of (N, K, *leaf.shape)
    N, K = X.shape[0], WIDTHS[-1]
    return sum(jnp.einsum("ikp,jlp->ijkl", j.reshape(N, K, -1), j.reshape(N, K, -1),
                          precision="highest") for j in jax.tree.leaves(J))


@jax.jit
def ntk_vector_products(params, X):
    def pair(x1, x2):
        out, vjp_fn = jax.vjp(lambda p: mlp(p, x1), params)
        def column(vec):
            (cotangent,) = vjp_fn(vec)
            return jax.jvp(lambda p: mlp(p, x2), (params,), (cotangent,))[1]
        return jax.vmap(column)(jnp.eye(out.shape[0], dtype=out.dtype))  # row k: e_k' J_i J_j'
    return jax.vmap(jax.vmap(pair, (None, 0)), (0, None))(X, X)


def ntk_flops(N, widths=WIDTHS):
    """FLOPs of bpcheck.ntk on N examples (X2 = X1): forward, V recursion, Gram matrices."""
    K = widths[-1]
    fwd = sum(2 * N * a * b for a, b in itertools.pairwise(widths))
    # V^(L) = I B^(L+1) D^(L), then V^(l) = V^(l+1) B^(l+1) D^(l) for l = L-1..1
    back = 2 * N * K * K * widths[-2] + sum(2 * N * K * widths[l + 1] * widths[l]
                                            for l in range(1, len(widths) - 2))
    gram = sum(2 * (N * K) ** 2 * d for d in widths[1:-1])  # V V' per hidden layer
    gram += sum(2 * N * N * d for d in widths[:-1])  # A A' per layer
    return fwd + back + gram


def part_full(N, repeats, slow_repeats):
    params, X = setup(N)
    ours = jax.jit(bpcheck.ntk)
    n = 1024
    A = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)), jnp.float32)
    mm = jax.jit(lambda A: jnp.matmul(A, A, precision="highest"))
    t_ours, t_eager, t_mm = best_interleaved(
        [lambda: ours(params, X), lambda: bpcheck.ntk(params, X), lambda: mm(A)], repeats)
    t_con = best_of(lambda: ntk_contraction(params, X), slow_repeats)
    t_nvp = best_of(lambda: ntk_vector_products(params, X), slow_repeats)
    ref = np.asarray(ntk_contraction(params, X))
    got = np.asarray(ours(params, X))
    nvp = np.asarray(ntk_vector_products(params, X))
    flops, mm_flops = ntk_flops(N), 2 * n ** 3
    rate, mm_rate = flops / t_ours / 1e9, mm_flops / t_mm / 1e9

    print(f"\n1. full NTK ({N}, {N}, 10, 10), MLP {'-'.join(map(str, WIDTHS))}, float32, "
          f"{jax.devices()[0].platform}")
    print(f"   {'method':<44}{'time':>12}{'x bpcheck':>11}{'GFLOP':>8}{'GFLOP/s':>9}")
    rows = [
        ("bpcheck.ntk under jax.jit", t_ours, flops),
        ("bpcheck.ntk, eager (input checks included)", t_eager, flops),
        ("Jacobian contraction (vmap(jacrev), einsum)", t_con, None),
        ("NTK-vector products (vjp then jvp)", t_nvp, None),
        (f"float32 matmul {n}x{n} @ {n}x{n}", t_mm, mm_flops),
    ]
    for name, t, f in rows:
        gf = f"{f / 1e9:8.2f}{f / t / 1e9:9.1f}" if f else ""
        print(f"   {name:<44}{t * 1e3:10.2f}ms{t / t_ours:10.1f}x{gf}")
    err_con = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    err_nvp = np.max(np.abs(nvp - ref)) / np.max(np.abs(ref))
    print(f"   max relative difference to the contraction: bpcheck {err_con:.1e}, "
          f"NTK-vector products {err_nvp:.1e}")
    print(f"   targets: contraction/bpcheck {t_con / t_ours:.0f}x (>= 300), NTK-vector products/"
          f"bpcheck {t_nvp / t_ours:.0f}x (>= 100), rate {rate:.1f} GFLOP/s = "
          f"{100 * rate / mm_rate:.0f}% of matmul (>= 50%)")


def peak_rss_bytes():
    """This process's peak resident memory: VmHWM (Linux, reset at exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def part_trace(N):
    """Run in a fresh process: compile, then one timed call; print peak memory."""
    params, X = setup(N)
    base = peak_rss_bytes()
    f = jax.jit(partial(bpcheck.ntk, trace=True)).lower(params, X).compile()
    t = time.perf_counter()
    out = jax.block_until_ready(f(params, X))
    t = time.perf_counter() - t
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    K, P = WIDTHS[-1], bpcheck.param_count(WIDTHS)
    probe = np.asarray(out[:64, :64])
    X64 = np.asarray(X[:64], np.float64)
    p64 = [(np.asarray(B, np.float64), np.asarray(b, np.float64)) for B, b in params]
    ref = bpcheck.ntk(p64, X64, trace=True)
    print(json.dumps({
        "N": N, "seconds": t, "shape": list(out.shape),
        "output_MiB": out.nbytes / MiB,
        "rss_before_MiB": base / MiB,
        "rss_peak_MiB": peak_rss_bytes() / MiB,
        "device_peak_MiB": None if not stats else stats.get("peak_bytes_in_use", 0) / MiB,
        "all_factors_MiB": N * (K * sum(WIDTHS[1:-1]) + sum(WIDTHS[:-1])) * 4 / MiB,
        "NNKK_MiB": N * N * K * K * 4 / MiB, "NKP_MiB": N * K * P * 4 / MiB,
        "flops": N * N * sum(2 * K * d for d in WIDTHS[1:-1]) / 2,
        "rel_err_64x64_vs_float64": float(np.max(np.abs(probe - ref)) / np.max(np.abs(ref))),
    }))


def report_trace(N):
    out = subprocess.run([sys.executable, __file__, "--part-trace", str(N)],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n2. trace NTK ({N}, {N}), float32, tiled, fresh process")
    print(f"   time {r['seconds']:.2f} s (compiled beforehand); V-Gram part alone "
          f"{r['flops'] / 1e12:.2f} TFLOP with the symmetry = {r['flops'] / r['seconds'] / 1e9:.0f} "
          f"GFLOP/s")
    print(f"   output {r['output_MiB']:.0f} MiB; process peak RSS {r['rss_peak_MiB']:.0f} MiB "
          f"(before the call, after importing JAX and making inputs: {r['rss_before_MiB']:.0f} MiB)"
          + ("" if r["device_peak_MiB"] is None else
             f"; device peak {r['device_peak_MiB']:.0f} MiB"))
    print(f"   never held: all factors {r['all_factors_MiB']:.0f} MiB, (N,N,K,K) "
          f"{r['NNKK_MiB']:.0f} MiB, (N,K,P) {r['NKP_MiB'] / 1024:.0f} GiB")
    print(f"   max relative difference on a 64x64 corner vs NumPy float64: "
          f"{r['rel_err_64x64_vs_float64']:.1e}")


def part_norms(N, repeats, chunk=128):
    params, X = setup(N)
    y = jnp.asarray(np.random.default_rng(2).integers(0, WIDTHS[-1], N))

    def loss(params, x, label):
        return -jax.nn.log_softmax(mlp(params, x))[label]

    @jax.jit
    def vmap_grad_norms(params, X, y):
        def chunk_norms(xy):
            g = jax.vmap(jax.grad(loss), (None, 0, 0))(params, *xy)
            return jnp.sqrt(sum(jnp.sum(l.reshape(l.shape[0], -1) ** 2, axis=1)
                                for l in jax.tree.leaves(g)))
        return jax.lax.map(chunk_norms, (X.reshape(-1, chunk, X.shape[1]),
                                          y.reshape(-1, chunk))).reshape(-1)

    ours = jax.jit(bpcheck.per_example_grad_norms)
    t_ours = best_of(lambda: ours(params, X, y), repeats)
    t_ref = best_of(lambda: vmap_grad_norms(params, X, y), 1)
    a, b = np.asarray(ours(params, X, y)), np.asarray(vmap_grad_norms(params, X, y))
    print(f"\n3. per-example gradient norms, N = {N}, cross-entropy, float32 "
          f"(P = {bpcheck.param_count(WIDTHS)})")
    print(f"   {'bpcheck.per_example_grad_norms under jax.jit':<52}{t_ours * 1e3:10.1f} ms")
    print(f"   {f'vmap(grad) then norm, chunks of {chunk} under lax.map':<52}{t_ref * 1e3:10.1f} ms"
          f"{t_ref / t_ours:8.1f}x  (target >= 5x)")
    print(f"   max relative difference {np.max(np.abs(a - b) / np.abs(b)):.1e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke test")
    ap.add_argument("--repeats", type=int, default=20, help="best of R for the fast methods")
    ap.add_argument("--part-trace", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part_trace:
        return part_trace(args.part_trace)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind} "
          f"({os.cpu_count()} CPU cores visible, 1-minute load average {load:.1f})")
    if args.quick:
        report_trace(1024)
        part_full(8, 2, 1)
        part_norms(512, 2)
    else:
        report_trace(8192)  # first, while this process is small (a fork copies its size)
        part_full(32, args.repeats, 1)
        part_norms(4096, 3)


if __name__ == "__main__":
    main()
