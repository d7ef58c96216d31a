"""Side-by-side timings of the spiral trainers: NumPy, JAX (compiled), JAX many nets, PyTorch.

    python benchmarks/train.py            # 10,000 iterations, 64 networks (about 2 minutes)
    python benchmarks/train.py --iters 1000 --nets 16

Two-layer net 2-100-3 on the seed-0 spiral, step 1.0, reg 1e-3.  Times are the best of a
few runs of the trained loop alone; JAX compile time is reported separately.  Targets:
JAX >= 8x faster than NumPy for one network; 64 networks in < 4x the time of one.

The last lines are a floor for the second target, measured in the same run: the
floating-point work of one training step (its five matrix products, counted from the
shapes) times the number of networks and steps, divided by the float32 rate this machine
reaches on a large square matrix product (``jnp.dot`` of 2048 x 2048, the best case for
its BLAS).  No implementation of the same arithmetic can train the networks faster than
that, so the floor divided by one network's measured time is the smallest ratio this
machine allows.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)  # this process only: lets float64 be measured too

import jax.numpy as jnp

from bpcheck.spiral import make_spiral
from bpcheck.train import lecture_init, train_jax_many, train_two_layer
from bpcheck.train.jax_loop import (
    _train_compiled,
    _train_many_compiled,
    _train_parts,
    default_workers,
)


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def step_flops(N: int, widths: list[int]) -> int:
    """Multiply-adds x 2 of one two-layer training step: z = [X 1] A, scores, dscores' h,
    dscores B2 and [X 1]' dz (elementwise work, the softmax and the updates not counted)."""
    d0, h, K = widths
    return 2 * N * h * ((d0 + 1) * 2 + K * 3)


def gemm_rate(n: int = 2048, repeats: int = 5) -> float:
    """float32 flop/s of a compiled n x n matrix product on this machine (best of a few)."""
    a = jnp.asarray(np.random.RandomState(0).rand(n, n), "float32")
    product = jax.jit(lambda x: x @ x)
    jax.block_until_ready(product(a))
    return 2 * n ** 3 / best_of(repeats, lambda: jax.block_until_ready(product(a)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10_000)
    parser.add_argument("--nets", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    iters, M = args.iters, args.nets

    rng = np.random.RandomState(0)
    X, y = make_spiral(seed=rng)
    params = lecture_init([2, 100, 3], rng)
    Y = np.eye(3)[y]
    rows = []  # (label, seconds, note)

    numpy_s = best_of(args.repeats, lambda: train_two_layer(X, y, params, iters=iters))
    rows.append(("NumPy, lecture code (float64)", numpy_s, ""))

    single = {}
    for dtype in ("float32", "float64"):
        jp = [(jnp.asarray(B, dtype), jnp.asarray(b, dtype)) for B, b in params]
        jX, jY = jnp.asarray(X, dtype), jnp.asarray(Y, dtype)
        start = time.perf_counter()
        compiled = _train_compiled.lower(jp, jX, jY, 1.0, 1e-3, iters=iters).compile()
        compile_s = time.perf_counter() - start
        run_s = best_of(args.repeats, lambda c=compiled, a=(jp, jX, jY, 1.0, 1e-3):
                        jax.block_until_ready(c(*a)))
        single[dtype] = run_s
        rows.append((f"JAX jit(lax.scan), 1 net ({dtype})", run_s, f"compile {compile_s:.2f} s"))

    nets = [lecture_init([2, 100, 3], seed) for seed in range(M)]
    stacked = [(jnp.asarray(np.stack([p[l][0] for p in nets]), "float32"),
                jnp.asarray(np.stack([p[l][1] for p in nets]), "float32")) for l in range(2)]
    jX, jY = jnp.asarray(X, "float32"), jnp.asarray(Y, "float32")
    steps = jnp.ones(M, "float32")
    for group in (None, 16):
        start = time.perf_counter()
        compiled = _train_many_compiled.lower(stacked, jX, jY, steps, 1e-3, iters=iters,
                                              group_size=group).compile()
        compile_s = time.perf_counter() - start
        run_s = best_of(1, lambda c=compiled: jax.block_until_ready(c(stacked, jX, jY, steps, 1e-3)))
        how = "all at once" if group is None else f"{group} at a time"
        rows.append((f"JAX, {M} nets batched, {how} (float32)", run_s,
                     f"compile {compile_s:.2f} s; {run_s / single['float32']:.1f}x one net"))
    workers = default_workers()
    if workers > 1:
        parts = lambda: _train_parts(stacked, jX, jY, steps, 1e-3, iters, 16, workers)  # noqa: E731
        jax.block_until_ready(_train_parts(stacked, jX, jY, steps, 1e-3, 2, 16, workers))
        start = time.perf_counter()
        parts()  # compiles each slice size once (not timed below)
        first_s = time.perf_counter() - start
        run_s = best_of(1, parts)
        rows.append((f"JAX, {M} nets, {workers} threads, 16 at a time", run_s,
                     f"first call {first_s:.2f} s; {run_s / single['float32']:.1f}x one net"))
    # the public entry point agrees with what was timed
    check = train_jax_many(X, y, nets[:2], iters=10, dtype="float32")
    assert np.isfinite(check.losses).all()

    try:
        import torch

        from bpcheck.train import train_torch

        torch_s = best_of(1, lambda: train_torch(X, y, widths=[2, 100, 3], iters=iters, seed=0))
        rows.append(("PyTorch, lecture's SimpleNN loop (float32)", torch_s,
                     f"{torch.get_num_threads()} threads"))
    except ImportError:
        rows.append(("PyTorch", float("nan"), "not installed (pip install 'bpcheck[torch]')"))

    print(f"two-layer net 2-100-3, spiral N=300, {iters} iterations; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.default_backend()}")
    print(f"{'trainer':<46} {'time (s)':>9} {'vs NumPy':>9}  note")
    for label, seconds, note in rows:
        ratio = numpy_s / seconds if np.isfinite(seconds) else float("nan")
        print(f"{label:<46} {seconds:>9.3f} {ratio:>8.1f}x  {note}")
    print()
    best = min(single.values())
    print(f"target JAX >= 8x NumPy for one net: {numpy_s / best:.1f}x "
          f"({'met' if numpy_s / best >= 8 else 'missed'})")
    many = min(s for label, s, _ in rows if f"{M} nets" in label)
    print(f"target {M} nets < 4x one net: {many / single['float32']:.1f}x "
          f"({'met' if many / single['float32'] < 4 else 'missed'})")
    print(f"  ({M} nets against one NumPy net, the other way to read the target: "
          f"{many / numpy_s:.1f}x)")
    rate = gemm_rate()
    flops = step_flops(X.shape[0], [2, 100, 3]) * iters * M
    floor = flops / rate
    print(f"floor for {M} nets: {flops / 1e9:.0f} Gflop of products at this machine's float32 "
          f"2048^2 product rate ({rate / 1e9:.0f} Gflop/s) = {floor:.2f} s "
          f"= {floor / single['float32']:.1f}x one net; measured {many:.2f} s "
          f"({flops / many / 1e9:.0f} Gflop/s, {many / floor:.1f}x the floor)")


if __name__ == "__main__":
    main()
