"""bpcheck's own speed ratios, side by side in one run.

    python benchmarks/library.py            # the smaller sizes (a few minutes on 2 cores)
    python benchmarks/library.py --large    # also 784-1024-1024-10 and 64-256x4-10 (slow)

Float32, best of ``--repeats`` calls after a warm-up (which compiles), JAX results waited
for with ``block_until_ready``.  Targets:

1. the NumPy path within 1.5x of the JAX path (``numpy / jax`` <= 1.5);
2. a JAX call without ``jax.jit`` within 1.5x of the same call under ``jax.jit``
   (``call / jit`` <= 1.5): the public functions compile themselves;
3. the factored NumPy trainer within 2x of the lecture's NumPy code per step at equal widths.

Calls of tens to hundreds of microseconds run at two or three speeds for seconds at a time
on a shared machine, so the best of separate runs of the call and of the jitted call may
each catch another (the 10-32-32-3 Gauss-Newton-vector product's ``call / jit`` read 3.18
in one run, 1.54 in the next): the rows whose jitted call takes under 1 ms are also timed
in turn, the call and the jitted call once each, ``INTERLEAVED`` times, and their medians
compared in a line after the table.

The column ``numpy 1 thr`` repeats the NumPy call with BLAS held to one thread
(threadpoolctl): on a machine whose cores are busy with other work, BLAS threads that wait
for each other cost more than they compute, and this column measures by how much.  The
column ``checks`` times bpcheck's checking of the arguments alone, which a call under
``jax.jit`` skips: ``call / jit`` cannot go below ``(checks + jit) / jit``.  It reads
``repeat`` where a repeat call skips them (``forward``, ``jacobian_factors``,
``gauss_newton``, ``gauss_newton_matvec``, the per-example gradients and norms, ``ntk``
and a JAX ``jacobian`` that its program writes run an earlier call's program again when the
signature is the same, with NaN and inf still checked in the program).  The column
``sys`` is the system CPU time of a NumPy call (median over the repeats, all threads): for
a large result mostly the kernel zeroing the fresh pages it is written into, which varies
with the machine's memory (on this one, the same call's ``sys`` ranged from 20 to 150 ms
between runs).  bpcheck makes a large result in memory that an earlier one gave back when
it was dropped (``bpcheck.release_memory``), so in a loop that cost falls on the first call
only.  The lines after the table time the calls with large results both returned and
written into a buffer the caller reuses (``out=``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_limits

import bpcheck
from bpcheck import _compiled
from bpcheck.spiral import make_spiral
from bpcheck.train import lecture_init, train_factored, train_two_layer
from bpcheck.train.factored import factored_step
from bpcheck.train.layout import to_lecture_layout
from bpcheck.train.lecture import two_layer_step


def best_ms(fn, repeats, *args):
    """Best of ``repeats`` calls ``fn(*args)`` in ms (more for fast calls: as many as fit in
    a quarter of a second, at most 200), after one warm-up call (which compiles), a pause of
    ``SETTLE`` seconds and one more untimed call: the previous measurement's thread pool
    (OpenBLAS spins about 0.1 s after a product) must not share the cores."""
    return best_and_sys_ms(fn, repeats, *args)[0]


def best_and_sys_ms(fn, repeats, *args):
    """:func:`best_ms`, and the median system CPU time per call in ms (all threads): the
    kernel's share, mostly the zeroing of the fresh pages a large result is written into."""
    jax.block_until_ready(fn(*args))
    time.sleep(SETTLE)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = time.perf_counter() - t0
    times, sys_times = [], []
    # calls under a millisecond vary by tens of percent from call to call (thread
    # wake-ups, caches): more of them, up to a quarter of a second
    for _ in range(max(repeats, min(200, int(0.25 / max(once, 1e-6))))):
        s0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        sys_times.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - s0)
    return 1e3 * min(times), 1e3 * float(np.median(sys_times))


SETTLE = 0.2


def network(widths, N, seed=0):
    rng = np.random.default_rng(seed)
    params = [(B.astype("float32"), (0.1 * rng.standard_normal(b.shape)).astype("float32"))
              for B, b in bpcheck.init_params(widths, seed)]
    X = rng.standard_normal((N, widths[0])).astype("float32")
    y = rng.integers(0, widths[-1], N)
    v = rng.standard_normal(bpcheck.param_count(widths)).astype("float32")
    to_jax = lambda t: jax.tree.map(jnp.asarray, t)
    return (params, X, y, v), to_jax((params, X, y, v))


CASES = {  # name -> function of (params, X, y, v)
    "per_example_grads": lambda p, X, y, v: bpcheck.per_example_grads(p, X, y),
    "per_example_grads flat=False": lambda p, X, y, v: bpcheck.per_example_grads(p, X, y, flat=False),
    "per_example_grad_norms": lambda p, X, y, v: bpcheck.per_example_grad_norms(p, X, y),
    "gauss_newton_matvec": lambda p, X, y, v: bpcheck.gauss_newton_matvec(p, X, v),
    "jacobian": lambda p, X, y, v: bpcheck.jacobian(p, X),
    "ntk trace": lambda p, X, y, v: bpcheck.ntk(p, X, trace=True),
    "forward tanh": lambda p, X, y, v: bpcheck.forward(p, X, activation="tanh"),
}
SMALL = [("per_example_grads", [64, 256, 256, 256, 10], 256),
         ("per_example_grads flat=False", [64, 256, 256, 256, 10], 256),
         ("per_example_grad_norms", [64, 256, 256, 256, 10], 256),
         ("gauss_newton_matvec", [10, 32, 32, 3], 64),
         ("gauss_newton_matvec", [784, 1024, 1024, 10], 128),
         ("jacobian", [16, 128, 128, 128, 10], 256),
         ("ntk trace", [784, 1024, 1024, 1024, 10], 32),
         ("forward tanh", [64, 256, 256, 256, 10], 256)]
LARGE = [("per_example_grads", [784, 1024, 1024, 10], 128),
         ("per_example_grad_norms", [784, 1024, 1024, 10], 128),
         ("jacobian", [64, 256, 256, 256, 256, 10], 128)]


USES = {  # name -> the arrays of (params, X, y, v) the call checks besides params and X
    "per_example_grads": ("y",), "per_example_grads flat=False": ("y",),
    "per_example_grad_norms": ("y",), "gauss_newton_matvec": ("v",),
}


def checks_ms(name, repeats, params, X, y, v):
    """What a checked JAX call does that the same call under ``jax.jit`` does not: bpcheck's
    one checking pass over its arguments (shapes, dtypes; the NaN/inf flags are folded into
    the program, which the call then reads back).  The call also dispatches the program the
    jitted call runs, so ``call / jit`` cannot go below ``(checks + jit) / jit``."""
    from bpcheck._arrays import prepare

    others = {k: {"y": y, "v": v}[k] for k in USES.get(name, ())}
    return best_ms(lambda: prepare(params, X, defer_finite=True, **others), repeats)


def library_rows(cases, repeats):
    print(f"{'function':<30} {'widths, N':<28} {'numpy':>9} {'sys':>6} {'numpy 1 thr':>11} "
          f"{'jax':>9} {'jax.jit':>9} {'numpy/jax':>9} {'call/jit':>8} {'checks':>7}   (ms; sys: "
          "the kernel's CPU time per NumPy call; checks: what a JAX call does beyond the jitted one)")
    worst = {"numpy/jax": 0.0, "call/jit": 0.0}
    notes = []
    for name, widths, N in cases:
        fn = CASES[name]
        np_args, jax_args = network(widths, N)
        jitted = jax.jit(fn)
        t_np, t_sys = best_and_sys_ms(fn, repeats, *np_args)
        with threadpool_limits(1, "blas"):
            t_np1 = best_ms(fn, repeats, *np_args)
        plans = len(_compiled._PLANS)
        t_jax = best_ms(fn, repeats, *jax_args)
        repeat = len(_compiled._PLANS) > plans  # its repeat calls skip the checks
        t_jit = best_ms(jitted, repeats, *jax_args)
        worst["numpy/jax"] = max(worst["numpy/jax"], t_np / t_jax)
        worst["call/jit"] = max(worst["call/jit"], t_jax / t_jit)
        if repeat:
            checks = f"{'repeat':>7}"
        else:
            t_checks = checks_ms(name, repeats, *jax_args)
            worst["checks"] = max(worst.get("checks", 0.0), (t_checks + t_jit) / t_jit)
            checks = f"{t_checks:7.3f}"
        label = f"{'-'.join(map(str, widths))}, {N}"
        print(f"{name:<30} {label:<28} {t_np:9.2f} {t_sys:6.1f} {t_np1:11.2f} {t_jax:9.2f} {t_jit:9.2f} "
              f"{t_np / t_jax:9.2f} {t_jax / t_jit:8.2f} {checks}", flush=True)
        if t_jit < 1:  # calls this short run at two or three speeds: also timed in turn
            m_jax, m_jit = in_turn_ms([functools.partial(fn, *jax_args),
                                       functools.partial(jitted, *jax_args)])
            worst["in turn rows"] = max(worst.get("in turn rows", (0.0,)), (m_jax / m_jit, name))
            notes.append(f"  call/jit on {name} {label}, timed in turn (medians of {INTERLEAVED}): "
                         f"call {m_jax:.3f} ms, jit {m_jit:.3f} ms, call/jit {m_jax / m_jit:.2f}")
        if t_np / t_jax > 1.5 and name in NUMPY_PARTS:
            notes.append(f"  numpy/jax on {name} {label}: " + NUMPY_PARTS[name](repeats, t_jax, *np_args))
    for line in notes:
        print(line)
    return worst


def _numpy_ggn_parts(repeats, t_jax, params, X, y, v):
    from bpcheck._gauss_newton import _gauss_newton_matvec, _setup
    from bpcheck._params import _layer_slices

    static = _setup(params, X, None, "cross_entropy", "mean", "relu", v=v)[6]
    t = best_ms(lambda: _gauss_newton_matvec(params, X, None, v, *static, np), repeats)
    slices = _layer_slices(tuple(static[3]))
    out = np.empty_like(v)
    err = np.max(np.abs(fewest_calls_ggn(params, X, v, slices, out) - bpcheck.gauss_newton_matvec(
        params, X, v))) / np.max(np.abs(out))
    assert err < 1e-5, f"the hand-written kernel disagrees with bpcheck: {err:.1e}"
    t_hand = best_ms(lambda: fewest_calls_ggn(params, X, v, slices, out), repeats)
    calls = 13 * (len(params) - 1) + 16
    return (f"the NumPy computation alone (no checks) takes {t:.3f} ms, {t / t_jax:.2f}x the "
            f"JAX call's {t_jax:.3f} ms; a kernel written by hand for this case alone (ReLU, "
            f"mean cross-entropy) with the fewest NumPy calls I could write ({calls}), no "
            f"checks, takes {t_hand:.3f} ms, {t_hand / t_jax:.2f}x the JAX call")


def fewest_calls_ggn(params, X, v, slices, out):
    """``G v`` of bpcheck.gauss_newton_matvec for ReLU and mean cross-entropy (``out``: the
    result, in beta order), with as few NumPy calls as I could write it, ``13 H + 16`` for
    ``H`` hidden layers (forward ``4 H + 2``, ``J v`` ``5 H + 2``, the Hessian 10, ``J' u``
    ``4 H + 2``; views and reshapes not counted): no checks, no generality.  On a small
    network, where each call costs 2-3 microseconds whatever it computes, about the
    floor of a NumPy implementation."""
    acts, masks = [X], []
    for B, b in params[:-1]:
        z = acts[-1] @ B.T
        z += b
        masks.append(z > 0)
        acts.append(np.multiply(z, masks[-1], out=z))
    B, b = params[-1]
    z = acts[-1] @ B.T
    z += b
    t = None  # J v, layer by layer
    for l, ((B, b), (sB, sb)) in enumerate(zip(params, slices)):
        term = acts[l] @ v[sB].reshape(b.shape[0], -1).T
        term += v[sb]
        if t is not None:
            t *= masks[l - 1]
            term += t @ B.T
        t = term
    z -= z.max(axis=1, keepdims=True)  # the softmax p, then u = H (J v) / N
    p = np.exp(z, out=z)
    p /= p.sum(axis=1, keepdims=True)
    t *= p
    u = t - p * t.sum(axis=1, keepdims=True)
    u *= 1 / X.shape[0]
    for l in range(len(params) - 1, -1, -1):  # J' u into out
        sB, sb = slices[l]
        np.matmul(u.T, acts[l], out=out[sB].reshape(params[l][1].shape[0], -1))
        np.add.reduce(u, axis=0, out=out[sb])
        if l:
            u = u @ params[l][0]
            u *= masks[l - 1]
    return out


def _numpy_tanh_parts(repeats, t_jax, params, X, y, v):
    from bpcheck._activations import resolve_activations
    from bpcheck._recursion import _outputs

    acts = resolve_activations("tanh", len(params) - 1)
    t_all = best_ms(lambda: _outputs(params, X, acts, np), repeats)
    zs, a = [], X
    for B, b in params[:-1]:
        zs.append(a @ B.T + b)
        a = np.tanh(zs[-1])
    t_tanh = best_ms(lambda: [np.tanh(z) for z in zs], repeats)
    ident = resolve_activations("identity", len(params) - 1)
    t_mm = best_ms(lambda: _outputs(params, X, ident, np), repeats)
    return (f"the NumPy computation alone (no checks) takes {t_all:.3f} ms, {t_all / t_jax:.2f}x "
            f"the JAX call's {t_jax:.3f} ms; of its parts, timed alone, np.tanh on the hidden "
            f"layers takes {t_tanh:.3f} ms and the products with their biases {t_mm:.3f} ms, "
            f"together {(t_tanh + t_mm) / t_jax:.2f}x the JAX call (one core runs np.tanh; "
            "XLA's tanh is a vectorised rational approximation)")


NUMPY_PARTS = {"gauss_newton_matvec": _numpy_ggn_parts, "forward tanh": _numpy_tanh_parts}
"""Rows whose NumPy path is timed in parts when ``numpy / jax`` misses its target."""


OUT_CASES = [  # NumPy calls whose result is large: fresh, and into the caller's buffer
    ("per_example_grads", [64, 256, 256, 256, 10], 256,
     lambda p, X, y, out: bpcheck.per_example_grads(p, X, y, out=out)),
    ("per_example_grads flat=False", [64, 256, 256, 256, 10], 256,
     lambda p, X, y, out: bpcheck.per_example_grads(p, X, y, flat=False, out=out)),
    ("jacobian", [16, 128, 128, 128, 10], 256, lambda p, X, y, out: bpcheck.jacobian(p, X, out=out)),
]


def out_rows(repeats):
    """A returned result is memory that the kernel must hand over zeroed (the ``sys``
    column) unless an earlier result, dropped, gave it back (``bpcheck.release_memory``);
    with ``out=`` a loop over batches of one size writes into the same buffer every time."""
    print(f"{'NumPy, result written into':<30} {'widths, N':<28} {'new':>9} {'sys':>6} "
          f"{'out=':>9} {'sys':>6} {'new/out=':>10}   (ms; new: the result returned, in "
          "memory the previous one gave back)")
    for name, widths, N, fn in OUT_CASES:
        (params, X, y, _), _ = network(widths, N)
        buffer = fn(params, X, y, None)
        t_fresh, s_fresh = best_and_sys_ms(fn, repeats, params, X, y, None)
        t_out, s_out = best_and_sys_ms(fn, repeats, params, X, y, buffer)
        label = f"{'-'.join(map(str, widths))}, {N}"
        print(f"{name:<30} {label:<28} {t_fresh:9.2f} {s_fresh:6.1f} {t_out:9.2f} {s_out:6.1f} "
              f"{t_fresh / t_out:10.2f}", flush=True)


SINGLE = {  # (params, x, y): one example, or a batch of one
    "forward": lambda p, x, y: bpcheck.forward(p, x),
    "jacobian_factors": lambda p, x, y: bpcheck.jacobian_factors(p, x),
    "jacobian": lambda p, x, y: bpcheck.jacobian(p, x),
    "per_example_grads": lambda p, x, y: bpcheck.per_example_grads(p, x, y),
    "per_example_grad_norms": lambda p, x, y: bpcheck.per_example_grad_norms(p, x, y),
    "ntk": lambda p, x, y: bpcheck.ntk(p, x),
}


def single_rows(repeats, worst, widths=(10, 32, 32, 3)):
    """JAX calls with one example ``x`` of shape ``(d_0,)``, against the same call with a
    batch of one ``(1, d_0)`` (what adding and taking away the batch axis costs) and the
    one-example call under ``jax.jit``; ``program``: the compiled program that a repeat call
    runs (:func:`plan_ms`), with its NaN/inf flag read back, timed alone.  The last three
    columns time the call, the program and the jitted call once each, in turn, ``INTERLEAVED``
    times, and give the medians' ratios: calls of tens of microseconds run at two or three
    speeds for seconds at a time on a shared machine, and calls in turn share them, where
    the best of separate runs may each catch another."""
    print(f"{'JAX, one example':<30} {'widths':<28} {'x':>9} {'X[:1]':>9} {'x, jit':>9} "
          f"{'program':>9} {'x/X[:1]':>9} {'call/jit':>8} {'program/jit':>11} {'in turn: x':>10} "
          f"{'x, jit':>7} {'call/jit':>8} {'program/jit':>11}   (ms)")
    _, (params, X, y, _) = network(list(widths), 4)
    for name, fn in SINGLE.items():
        plans = set(_compiled._PLANS)
        fn(params, X[0], y[0])
        new = [key for key in _compiled._PLANS if key not in plans]
        assert len(new) == 1, f"{name}: expected one new plan, found {len(new)}"
        jitted = jax.jit(fn)
        # calls of tens of microseconds run at one of two or three speeds for seconds at a
        # time on a shared machine: each column is the best of rounds taken in turn
        times = [(best_ms(fn, repeats, params, X[0], y[0]),
                  plan_ms(new[0], fn, repeats, params, X[0], y[0]),
                  best_ms(fn, repeats, params, X[:1], y[:1]),
                  best_ms(jitted, repeats, params, X[0], y[0])) for _ in range(ROUNDS)]
        t_one, t_program, t_batch, t_jit = map(min, zip(*times))
        x0, y0 = X[0], y[0]
        m_one, m_program, m_jit = in_turn_ms(
            [functools.partial(fn, params, x0, y0), plan_program(new[0], fn, params, x0, y0),
             functools.partial(jitted, params, x0, y0)])
        worst["call/jit"] = max(worst["call/jit"], t_one / t_jit)
        worst["single"] = max(worst.get("single", (0.0,)), (t_one / t_jit, t_program / t_jit, name))
        worst["in turn"] = max(worst.get("in turn", (0.0,)), (m_one / m_jit, m_program / m_jit, name))
        print(f"{name:<30} {'-'.join(map(str, widths)):<28} {t_one:9.3f} {t_batch:9.3f} "
              f"{t_jit:9.3f} {t_program:9.3f} {t_one / t_batch:9.2f} {t_one / t_jit:8.2f} "
              f"{t_program / t_jit:11.2f} {m_one:10.3f} {m_jit:7.3f} {m_one / m_jit:8.2f} "
              f"{m_program / m_jit:11.2f}", flush=True)


INTERLEAVED = 3000


def in_turn_ms(fns):
    """Median milliseconds of each of ``fns`` (results waited for), called once each in turn
    ``INTERLEAVED`` times after a warm-up round."""
    for fn in fns:
        jax.block_until_ready(fn())
    times = [[] for _ in fns]
    clock = time.perf_counter
    for _ in range(INTERLEAVED):
        for fn, spent in zip(fns, times):
            t0 = clock()
            jax.block_until_ready(fn())
            spent.append(clock() - t0)
    return [1e3 * float(np.median(spent)) for spent in times]


ROUNDS = 3


def plan_ms(key, fn, repeats, *args):
    """Milliseconds of :func:`plan_program`, best of ``repeats``: what a repeat call costs
    without its own Python (finding the plan from the arguments' shapes and dtypes)."""
    return best_ms(plan_program(key, fn, *args), repeats)


def plan_program(key, fn, *args):
    """The compiled program of the plan ``key`` (``bpcheck._compiled.replayed``) that calls
    ``fn(*args)`` repeat, as a function of nothing that runs it on the arrays a repeat call
    hands it and reads its NaN/inf flag back as a repeat call reads it."""
    plan = runner, take, axis, trust = _compiled._PLANS[key]
    given = []

    def spy(program):
        return lambda *arrays: given.append((program, arrays)) or program(*arrays)

    if trust is not None:  # (the parameters' checks left out, when the call's are trusted)
        trust = copy.copy(trust)
        trust.runner = spy(trust.runner)
    _compiled._PLANS[key] = (spy(runner), take, axis, trust)
    try:
        fn(*args)
    finally:
        _compiled._PLANS[key] = plan
    assert len(given) == 1, "the plan did not run"

    def program():
        out, ok = given[0][0](*given[0][1])
        assert np.asarray(ok)
        return out

    return program


def trainer_rows(repeats, iters):
    X, y = make_spiral(seed=np.random.RandomState(0))
    params = lecture_init([2, 100, 3], np.random.RandomState(0))
    weights = to_lecture_layout(params)
    t_lecture = best_ms(two_layer_step, repeats, weights, X, y, 1.0, 1e-3)
    t_factored = best_ms(factored_step, repeats, params, X, y, 1.0, 1e-3)
    print(f"one step, 2-100-3, spiral N = 300 (float64): lecture {t_lecture:.3f} ms, "
          f"factored_step {t_factored:.3f} ms, ratio {t_factored / t_lecture:.2f}")
    t0 = time.perf_counter()
    train_two_layer(X, y, params, iters=iters)
    t_lecture_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_factored(X, y, params, iters=iters)
    t_factored_loop = time.perf_counter() - t0
    ratio = t_factored_loop / t_lecture_loop
    print(f"{iters} steps, 2-100-3: train_two_layer {t_lecture_loop:.2f} s, train_factored "
          f"{t_factored_loop:.2f} s, ratio {ratio:.2f} per step")
    t0 = time.perf_counter()
    train_factored(X, y, lecture_init([2, 50, 50, 3], np.random.RandomState(0)), iters=iters)
    print(f"{iters} steps, 2-50-50-3: train_factored {time.perf_counter() - t0:.2f} s "
          "(the lecture's code has one hidden layer only)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2000, help="trainer loop length")
    parser.add_argument("--large", action="store_true",
                        help="also the large networks (784-1024-1024-10, 64-256x4-10)")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"jax {jax.__version__} on {jax.default_backend()}, numpy {np.__version__}, "
          f"{os.cpu_count()} cores, load average {load:.1f} at start")
    worst = library_rows(SMALL + (LARGE if args.large else []), args.repeats)
    print()
    out_rows(args.repeats)
    print()
    single_rows(args.repeats, worst)
    print()
    ratio = trainer_rows(max(args.repeats, 50), args.iters)
    print()
    for key, target in (("numpy/jax", 1.5), ("call/jit", 1.5)):
        print(f"target {key} <= {target}: worst row {worst[key]:.2f} "
              f"({'met' if worst[key] <= target else 'missed'})")
    print(f"  the checks alone keep call/jit at {worst.get('checks', 1.0):.2f} or more on the row "
          "where they weigh most, of those whose repeat calls do them")
    call_jit, program_jit, name = worst["single"]
    print(f"  worst one-example row, {name}: call/jit {call_jit:.2f}, of which the compiled program "
          f"a repeat call runs, alone with its NaN/inf flag read back, {program_jit:.2f}")
    if "in turn rows" in worst:
        call_jit, name = worst["in turn rows"]
        print(f"  the rows above under 1 ms timed in turn (medians): worst {name}, call/jit "
              f"{call_jit:.2f} ({'met' if call_jit <= 1.5 else 'missed'})")
    call_jit, program_jit, name = worst["in turn"]
    print(f"  the one-example rows timed in turn (medians): worst {name}, call/jit {call_jit:.2f} "
          f"({'met' if call_jit <= 1.5 else 'missed'}), its program alone {program_jit:.2f}")
    print(f"target factored trainer <= 2x the lecture's code per step: {ratio:.2f} "
          f"({'met' if ratio <= 2 else 'missed'})")


if __name__ == "__main__":
    main()
