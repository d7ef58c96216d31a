"""bpcheck against its peers, side by side in one process, on the same weights and data.

Run (the peers live in their own virtual environment, kept out of the project's):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0 backpack-for-pytorch opacus curvlinops-for-pytorch flax -e .
    .venv-bench/bin/python benchmarks/peers.py [--repeats 7]
        [--only pergrad,norms,ggn,ggnop,ntk,jacobian,flax] [--nt-python PYTHON_WITH_NEURAL_TANGENTS]

ReLU MLPs, float32, one process, CPU (or whatever JAX and PyTorch run on by default).
Each row is timed as the best of ``--repeats`` calls (7; 3 for a method whose first timed
call takes over 1 s, said in its line) after one warm-up call (JAX compiles there); a call
under 1 ms is timed as the mean of 50 in a row (said in its line), single calls of that size
being mostly the noise of waking threads; the methods
of a row are timed in alternation, so that load from other processes on a shared machine
hits them alike.  Timings on a shared machine are noisy: compare the methods of one row.

Tasks and sizes:

- per-example gradients of the cross-entropy (per example, not averaged), 784-1024-1024-10
  with N = 128 and 64-256-256-256-10 with N = 256: bpcheck (NumPy and JAX, JAX called as is
  and inside ``jax.jit``), ``torch.func`` ``vmap(grad)``, BackPACK ``BatchGrad``, Opacus
  ``GradSampleModule`` and ``jax.vmap(jax.grad)``;
- their norms, same nets: bpcheck ``per_example_grad_norms``, BackPACK ``BatchL2Grad``, and
  the norms of the per-example gradients of each other peer;
- Gauss-Newton-vector products ``mean_n J_n' H_n J_n v`` (cross-entropy), 784-1024-1024-10
  with N = 128 and 10-32-32-3 with N = 64: bpcheck ``gauss_newton_matvec``, curvlinops
  ``GGNLinearOperator``, BackPACK ``ggn_vector_product_from_plist`` and ``jax.jvp`` /
  output Hessian / ``jax.vjp``; the row ends with a floor line (the products timed alone),
  the rate 1.2x the fastest peer needs for the product's multiply-adds against the fastest
  single matrix product timed on the machine in the same run, the time the products take
  at the rates timed for their own shapes (and the stacked ones they can join), a NumPy
  kernel written by hand with the fewest calls, and bpcheck's parts each timed alone; a
  row under 1 ms with JAX on the CPU adds a line on XLA's CPU runtime: the peer's program
  waited for per call against 50 calls in a row (they overlap on XLA's threads), and
  bpcheck's JAX call against the peer's with XLA's calls on the calling thread
  (``jax_cpu_enable_async_dispatch`` off, in a process of its own), and a line on the
  other way for JAX arguments: bpcheck's NumPy computation on the host plus handing its
  result back to JAX (the same for the ten products' small row, at once);
- ten Gauss-Newton-vector products with the same parameters and data (a short CG run),
  same nets, each method set up once inside the timing: bpcheck ``gauss_newton_operator``
  (factors once; products one by one, as CG needs them, and all ten as one ``(P, 10)``
  block) against ``jax.jvp``/``jax.vjp`` per product, ``jax.linearize`` + ``jax.vjp`` once
  with ``lax.map`` over the ten directions (all known in advance), curvlinops
  ``GGNLinearOperator`` and BackPACK on one forward pass; the row ends with a floor line
  (the layer-sized matrix products of the ten products at once, timed alone) and with
  bpcheck's setup and products each timed alone, against the time 1.2x the fastest peer
  needs;
- the NTK, 784-1024-1024-1024-10 with N = 32 and N = 256, full ``(N, N, K, K)`` and trace
  ``(N, N)``: bpcheck ``ntk`` against ``jax.vmap(jax.jacrev)`` and ``torch.func``
  ``vmap(jacrev)`` followed by the contraction ``J_i J_j'`` (skipped where their
  ``(N, K, P)`` Jacobian would exceed 8 GiB: at N = 256 it is 28 GiB), and neural-tangents'
  three ``empirical_ntk_fn`` implementations when ``--nt-python`` names a Python that has
  it (it runs on JAX 0.4.x only, so ``nt_peer.py`` times it there, in its own process);
- per-example gradients of a Flax NNX model (``nnx.Sequential`` of ``nnx.Linear``, kernels
  ``(d_in, d_out)``), the per-example gradient sizes, in the model's own structure:
  bpcheck given the model (``bpcheck.network``), called as is and inside ``jax.jit``,
  against ``jax.vmap(jax.grad)`` of the model (when flax is installed);
- the full Jacobian ``(N, K, P)``, 64-256-256-256-256-10 with N = 128: bpcheck ``jacobian``
  (NumPy; JAX called as is and inside ``jax.jit``) against ``jax.vmap(jax.jacrev)`` and
  ``torch.func`` ``vmap(jacrev)``.

Inside a user's ``jax.jit`` XLA writes the result, into memory it allocates per call (on
the CPU: fresh pages, zeroed by the system on first touch), where bpcheck called as is
fills it with NumPy's threads in memory kept from earlier results.  The per-example
gradient and Jacobian rows therefore end with floor lines: one ``jax.jit`` program that
only writes the per-layer outer products of the result's size; the same with what every
method computes before them (the forward and backward passes that give the per-example
``delta^(l)`` and ``a^(l-1)``; for the Jacobian the factors ``V^(l)``), timed alone and
added; and the same products written into one flat buffer.  Each is set against the time
that 1.2x the fastest peer (the fastest flat peer, for the flat buffer) needs.

Layouts: "flat" is one ``(N, P)`` (or ``(N, K, P)``) array in bpcheck's ``beta`` order;
"per-layer" is what the peers return, one array per weight and bias with ``N`` (and ``K``)
in front (bpcheck: ``flat=False``).  The peers' flat rows add the concatenation to their
per-layer call.  "vs fastest peer" is the fastest peer's time over this method's time
(above 1: faster than every peer, whatever layout they return); "same layout" compares
with the fastest peer that returns this method's layout; "rel. error" is ``max |this - bpcheck NumPy| / max
|bpcheck NumPy|`` over the flat results (float32, so about 1e-6 is agreement).  A peer
that is not installed is skipped with a line saying so.

Three thread pools share the two cores here (OpenBLAS for NumPy, XLA's for JAX, OpenMP
for PyTorch), and each keeps its threads spinning for a while after a call: the next
library's call then competes with them.  So PyTorch's OpenMP threads wait passively
(``OMP_WAIT_POLICY=PASSIVE``, set before torch is imported), and every timed call
starts after ``SETTLE`` seconds of idle: OpenBLAS spins about 0.1 s after a product
(measured: a JAX call took 44 ms right after a NumPy product, 29 ms after a pause, and
82 against 25 ms inside an interleaved row), and a call under ``QUICK`` seconds is then
called untimed for ``WARM`` seconds (three calls at least) before it is timed, so that
the pause does not count as its cost (after one untimed call only, a ``jax.jit`` program
still took 1.4x its time in a row).  The first calls of a process
run slower than later ones (seen: 78 ms, then 32 ms, for the same JAX call), so the
best of the repeats is what counts, and a rerun is the check.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import jax.numpy as jnp
import numpy as np

import bpcheck
from bpcheck._activations import resolve_activations
from bpcheck._compiled import written
from bpcheck._losses import resolve_loss
from bpcheck._pergrad import deltas_and_inputs
from bpcheck._recursion import _factors

TASKS = ("pergrad", "norms", "ggn", "ggnop", "ntk", "jacobian", "flax")
SLOW = 1.0
"""Seconds: a method whose warm-up call takes longer is timed 3 times, not ``--repeats``."""
SETTLE = 0.2
"""Seconds of idle before each timed call, for the previous call's spinning threads."""
QUICK = 0.05
"""Seconds: a faster method is called untimed after the idle before it is timed (see
``_settled``)."""
WARM, WARM_CALLS = 0.05, 3
"""Seconds and calls, at least, of the untimed calls after the idle.  One call was not
enough: the 784-1024-1024-10 GGN product's ``jax.jvp``/``jax.vjp`` peer took 11.3 ms
(best of 40 calls in a row), but 16.0 ms (best of 7) after the idle and one untimed call,
and 11.6 ms after three; bpcheck's NumPy call moved less (13.6 ms in a row, 14.8 ms after
one).  The rows of this script until then favoured the methods that wake fast."""
TINY = 1e-3
"""Seconds: a method whose warm-up call is faster is timed over ``LOOP`` calls in a row
(the mean of each such run counts as one time), not one: single calls of a few hundred
microseconds after an idle pause varied 2x from run to run (the 10-32-32-3 GGN product's
fastest peer: 0.21, then 0.11 ms)."""
LOOP = 50
PEER_JACOBIAN_BYTES = 8 << 30
"""The NTK peers form the ``(N, K, P)`` Jacobian; above this size they are skipped."""


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


HAVE = {name: have(name) for name in ("torch", "backpack", "opacus", "curvlinops", "flax")}
if HAVE["torch"]:
    import torch
    import torch.nn.functional as F


def block(x):
    """Wait for JAX results; a no-op for NumPy and PyTorch (synchronous on the CPU)."""
    return jax.block_until_ready(x)


def _settled(fn, quick, loop=1):
    """Seconds for one call of ``fn`` after ``SETTLE`` seconds of idle; a ``quick`` one
    (under ``QUICK`` seconds) is first called untimed, ``WARM_CALLS`` times and for
    ``WARM`` seconds at least, so that its own threads are awake and the pause does not
    count as its cost.  ``loop``: the mean over that many calls in a row (each waited
    for) instead."""
    time.sleep(SETTLE)
    if quick:
        _warm(fn)
    t = time.perf_counter()
    for _ in range(loop):
        block(fn())
    return (time.perf_counter() - t) / loop


def _warm(fn):
    """Call ``fn`` untimed, ``WARM_CALLS`` times and for ``WARM`` seconds at least."""
    start, calls = time.perf_counter(), 0
    while calls < WARM_CALLS or time.perf_counter() - start < WARM:
        block(fn())
        calls += 1


def best_ms(fn, repeats):
    """Milliseconds: the best of ``repeats`` :func:`_settled` times of ``fn``, warmed up
    first, each the mean of ``LOOP`` calls in a row when a call takes under ``TINY``: how
    the rows time their methods, for the parts timed alone."""
    block(fn())
    loop = LOOP if _settled(fn, True) < TINY else 1
    return 1e3 * min(_settled(fn, True, loop) for _ in range(repeats))


def _rel_err(flat, ref):
    return float(np.max(np.abs(flat - ref)) / max(np.max(np.abs(ref)), 1e-30))


class Row:
    """One table: methods timed in alternation, each checked against the reference."""

    def __init__(self, title: str, repeats: int):
        self.title, self.repeats, self.methods = title, repeats, []

    def add(self, name, layout, fn, to_flat, peer=True):
        """``fn()`` computes; ``to_flat(result)`` gives a NumPy array comparable with the
        reference (the first bpcheck method added)."""
        self.methods.append(dict(name=name, layout=layout, fn=fn, to_flat=to_flat, peer=peer))

    def add_measured(self, name, layout, seconds, result, to_flat, note):
        """A peer timed elsewhere (its own process): ``seconds`` and ``result`` as given."""
        self.methods.append(dict(name=name, layout=layout, best=seconds, result=result,
                                 to_flat=to_flat, peer=True, note=note, repeats=self.repeats))

    def skip(self, line: str):
        self.methods.append(dict(skip=line))

    def run(self):
        timed = [m for m in self.methods if "fn" in m]
        ref = None
        for m in timed:
            out = block(m["fn"]())  # warm-up (JAX compiles here)
            m["best"] = _settled(m["fn"], quick=True)
            m["loop"] = LOOP if m["best"] < TINY else 1
            if m["loop"] > 1:
                m["best"] = _settled(m["fn"], True, m["loop"])
            m["repeats"] = self.repeats if m["best"] < SLOW else min(self.repeats, 3)
            flat = np.asarray(m["to_flat"](out), dtype=np.float64)
            ref = flat if ref is None else ref
            m["err"] = _rel_err(flat, ref)  # now: the results may be large
        for i in range(max(m["repeats"] for m in timed) - 1):
            for m in timed:
                if i < m["repeats"] - 1:
                    m["best"] = min(m["best"], _settled(m["fn"], m["best"] < QUICK, m["loop"]))
        for m in self.methods:  # timed in their own process (their note says how)
            if "result" in m:
                m["err"] = _rel_err(m["to_flat"](m["result"]), ref)
        live = [m for m in self.methods if "skip" not in m]
        peers = [m["best"] for m in live if m["peer"]]
        fastest = min(peers) if peers else None
        self.fastest_flat = min((m["best"] for m in live if m["peer"] and m["layout"] == "flat"),
                                default=None)
        print(f"\n{self.title}")
        print(f"  {'method':44s} {'layout':10s} {'ms':>10s} {'vs fastest peer':>16s} "
              f"{'same layout':>12s} {'rel. error':>11s}")
        for m in self.methods:
            if "skip" in m:
                print(f"  {m['skip']}")
                continue
            ratio = f"{fastest / m['best']:.2f}x" if fastest else "-"
            alike = [p["best"] for p in live if p["peer"] and p["layout"] == m["layout"]]
            same = f"{min(alike) / m['best']:.2f}x" if alike else "-"
            note = "" if m["repeats"] == self.repeats else f"  (best of {m['repeats']})"
            note += f"  (mean of {m['loop']} in a row)" if m.get("loop", 1) > 1 else ""
            note += f"  ({m['note']})" if "note" in m else ""
            print(f"  {m['name']:44s} {m['layout']:10s} {1e3 * m['best']:10.2f} {ratio:>16s} "
                  f"{same:>12s} {m['err']:11.1e}{note}", flush=True)
        return fastest


# --- the network, in every library --------------------------------------------------


def make(widths, N, seed=0):
    """float32 weights (bpcheck's (B, b), B (out, in)), inputs, labels, a GGN direction."""
    rng = np.random.default_rng(seed)
    params = [(B.astype(np.float32), (0.1 * rng.standard_normal(b.shape)).astype(np.float32))
              for B, b in bpcheck.init_params(widths, seed=seed)]
    X = rng.standard_normal((N, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], N)
    v = rng.standard_normal(bpcheck.param_count(widths)).astype(np.float32)
    return params, X, y, v


def jax_mlp(params, x):
    for B, b in params[:-1]:
        x = jax.nn.relu(x @ B.T + b)
    B, b = params[-1]
    return x @ B.T + b


def torch_model(params):
    layers = []
    for l, (B, b) in enumerate(params):
        lin = torch.nn.Linear(B.shape[1], B.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(B))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin] + ([torch.nn.ReLU()] if l < len(params) - 1 else [])
    return torch.nn.Sequential(*layers)


def flat_layers(leaves, lead):
    """Concatenate per-layer arrays (weight, bias, weight, ...) into ``beta`` order."""
    return np.concatenate([np.asarray(t).reshape(*lead, -1) for t in leaves], axis=-1)


def torch_flat(ts, lead):
    return torch.cat([t.reshape(*lead, -1) for t in ts], dim=-1)


def ce_loss_of_example(params, x, y):
    return -jax.nn.log_softmax(jax_mlp(params, x))[y]


# --- per-example gradients and norms -------------------------------------------------


def torch_peers(row, params, X, y, norms: bool):
    """torch.func vmap(grad), BackPACK and Opacus on one network."""
    N = X.shape[0]
    if not HAVE["torch"]:
        row.skip("torch.func, BackPACK, Opacus: skipped (torch is not installed)")
        return
    from torch.func import functional_call, grad, vmap

    model = torch_model(params)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    p = {k: v.detach() for k, v in model.named_parameters()}

    def loss1(p, x, t):
        return F.cross_entropy(functional_call(model, p, (x[None],)), t[None], reduction="sum")

    g = vmap(grad(loss1), in_dims=(None, 0, 0))
    if norms:
        def tf_norms():
            return torch.sqrt(sum((t.reshape(N, -1) ** 2).sum(1) for t in g(p, Xt, yt).values()))

        row.add("torch.func vmap(grad), then norms", "-", tf_norms, lambda o: o.numpy())
    else:
        row.add("torch.func vmap(grad)", "per-layer", lambda: g(p, Xt, yt),
                lambda o: flat_layers([t.numpy() for t in o.values()], (N,)))
        row.add("torch.func vmap(grad)", "flat", lambda: torch_flat(g(p, Xt, yt).values(), (N,)),
                lambda o: o.numpy())

    if HAVE["backpack"]:
        from backpack import backpack, extend
        from backpack.extensions import BatchGrad, BatchL2Grad

        bmodel = extend(torch_model(params))
        bloss = extend(torch.nn.CrossEntropyLoss(reduction="sum"))

        def bp(ext, attr):
            bmodel.zero_grad()
            loss = bloss(bmodel(Xt), yt)
            with backpack(ext()):
                loss.backward()
            return [getattr(q, attr) for q in bmodel.parameters()]

        if norms:
            row.add("BackPACK BatchL2Grad", "-",
                    lambda: torch.sqrt(sum(bp(BatchL2Grad, "batch_l2"))), lambda o: o.numpy())
        else:
            row.add("BackPACK BatchGrad", "per-layer", lambda: bp(BatchGrad, "grad_batch"),
                    lambda o: flat_layers([t.numpy() for t in o], (N,)))
            row.add("BackPACK BatchGrad", "flat",
                    lambda: torch_flat(bp(BatchGrad, "grad_batch"), (N,)), lambda o: o.numpy())
    else:
        row.skip("BackPACK: skipped (backpack-for-pytorch is not installed)")

    if HAVE["opacus"]:
        from opacus import GradSampleModule

        gsm = GradSampleModule(torch_model(params), loss_reduction="sum")

        def op():
            for q in gsm.parameters():
                q.grad, q.grad_sample = None, None
            F.cross_entropy(gsm(Xt), yt, reduction="sum").backward()
            return [q.grad_sample for q in gsm.parameters()]

        if norms:
            row.add("Opacus GradSampleModule, then norms", "-",
                    lambda: torch.sqrt(sum((t.reshape(N, -1) ** 2).sum(1) for t in op())),
                    lambda o: o.numpy())
        else:
            row.add("Opacus GradSampleModule", "per-layer", op,
                    lambda o: flat_layers([t.numpy() for t in o], (N,)))
            row.add("Opacus GradSampleModule", "flat", lambda: torch_flat(op(), (N,)),
                    lambda o: o.numpy())
    else:
        row.skip("Opacus: skipped (opacus is not installed)")


def jax_pergrad_peer(row, params, X, y, norms: bool):
    N = X.shape[0]
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    g = jax.vmap(jax.grad(ce_loss_of_example), in_axes=(None, 0, 0))
    if norms:
        f = jax.jit(lambda p, X, y: jnp.sqrt(sum(jnp.sum(t.reshape(N, -1) ** 2, 1)
                                                 for t in jax.tree_util.tree_leaves(g(p, X, y)))))
        row.add("jax.vmap(jax.grad), then norms (jit)", "-", lambda: f(pj, Xj, yj), np.asarray)
        return
    per = jax.jit(g)
    flat = jax.jit(lambda p, X, y: jnp.concatenate(
        [t.reshape(N, -1) for t in jax.tree_util.tree_leaves(g(p, X, y))], axis=1))
    row.add("jax.vmap(jax.grad) (jit)", "per-layer", lambda: per(pj, Xj, yj),
            lambda o: flat_layers(jax.tree_util.tree_leaves(o), (N,)))
    row.add("jax.vmap(jax.grad) (jit)", "flat", lambda: flat(pj, Xj, yj), np.asarray)


def pergrad_row(widths, N, repeats, norms: bool):
    params, X, y, _ = make(widths, N)
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    what = "per-example gradient norms" if norms else "per-example gradients"
    row = Row(f"{what}, {'-'.join(map(str, widths))}, N = {N}, cross-entropy, float32", repeats)
    per_layer = lambda o: flat_layers([t for pair in o for t in pair], (N,))  # noqa: E731
    for lib, p, Xl, yl in (("NumPy", params, X, y), ("JAX", pj, jnp.asarray(X), jnp.asarray(y))):
        if norms:
            row.add(f"bpcheck {lib}", "-",
                    lambda p=p, X=Xl, y=yl: bpcheck.per_example_grad_norms(p, X, y),
                    np.asarray, peer=False)
            continue
        row.add(f"bpcheck {lib}", "flat", lambda p=p, X=Xl, y=yl: bpcheck.per_example_grads(p, X, y),
                np.asarray, peer=False)
        row.add(f"bpcheck {lib}", "per-layer",
                lambda p=p, X=Xl, y=yl: bpcheck.per_example_grads(p, X, y, flat=False),
                per_layer, peer=False)
    if not norms:
        Xj, yj = jnp.asarray(X), jnp.asarray(y)
        for layout, flat in (("flat", True), ("per-layer", False)):
            jitted = jax.jit(functools.partial(bpcheck.per_example_grads, flat=flat))
            row.add("bpcheck JAX, inside jax.jit", layout, lambda f=jitted: f(pj, Xj, yj),
                    np.asarray if flat else per_layer, peer=False)
    torch_peers(row, params, X, y, norms)
    jax_pergrad_peer(row, params, X, y, norms)
    fastest = row.run()
    if not norms:
        rng = np.random.default_rng(1)
        pairs = [(rng.standard_normal((N, d), np.float32), rng.standard_normal((N, dp), np.float32))
                 for dp, d in zip(widths, widths[1:])]
        loss, acts = resolve_loss("cross_entropy"), resolve_activations("relu", len(widths) - 2)
        passes = lambda p, X, y: deltas_and_inputs(p, X, y, loss, acts, False, jnp)  # noqa: E731
        xla_write_floor(pairs, fastest, repeats,
                        ("the forward and backward passes (bpcheck's deltas and layer inputs)",
                         passes, (pj, jnp.asarray(X), jnp.asarray(y))), row.fastest_flat)


def pergrad_rows(repeats, norms: bool):
    for widths, N in (([784, 1024, 1024, 10], 128), ([64, 256, 256, 256, 10], 256)):
        pergrad_row(widths, N, repeats, norms)


# --- Gauss-Newton-vector products ----------------------------------------------------


def ggn_row(widths, N, repeats):
    params, X, y, v = make(widths, N)
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    row = Row(f"Gauss-Newton-vector product, {'-'.join(map(str, widths))}, N = {N}, "
              f"cross-entropy (mean over examples), float32", repeats)
    row.add("bpcheck NumPy", "flat", lambda: bpcheck.gauss_newton_matvec(params, X, v),
            np.asarray, peer=False)
    vj, Xj = jnp.asarray(v), jnp.asarray(X)
    row.add("bpcheck JAX", "flat", lambda: bpcheck.gauss_newton_matvec(pj, Xj, vj),
            np.asarray, peer=False)

    vt = [(jnp.asarray(dB), jnp.asarray(db))
          for dB, db in bpcheck.unflatten_params(v, widths)]
    row.add("jax.jvp / Hessian / jax.vjp (jit)", "per-layer", lambda: jvp_vjp(pj, Xj, vt),
            lambda o: flat_layers(jax.tree_util.tree_leaves(o), ()))
    if not HAVE["torch"]:
        row.skip("curvlinops, BackPACK: skipped (torch is not installed)")
        row.run()
        return
    model = torch_model(params)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    plist = list(model.parameters())
    vlist = [torch.from_numpy(np.ascontiguousarray(t))
             for pair in bpcheck.unflatten_params(v, widths) for t in pair]
    if HAVE["curvlinops"]:
        from curvlinops import GGNLinearOperator

        op = GGNLinearOperator(model, torch.nn.CrossEntropyLoss(reduction="mean"), plist,
                               [(Xt, yt)], check_deterministic=False)
        vt_flat = torch.from_numpy(v)
        row.add("curvlinops GGNLinearOperator", "flat", lambda: op @ vt_flat,
                lambda o: np.asarray(o))
    else:
        row.skip("curvlinops: skipped (curvlinops-for-pytorch is not installed)")
    if HAVE["backpack"]:
        from backpack.hessianfree.ggnvp import ggn_vector_product_from_plist

        def bp_ggnvp():
            out = model(Xt)
            loss = F.cross_entropy(out, yt)
            return ggn_vector_product_from_plist(loss, out, plist, vlist)

        row.add("BackPACK ggn_vector_product_from_plist", "per-layer", bp_ggnvp,
                lambda o: flat_layers([t.detach().numpy() for t in o], ()))
    else:
        row.skip("BackPACK: skipped (backpack-for-pytorch is not installed)")
    fastest = row.run()
    if fastest:
        floor, jax_floor = matmul_floor(params, X, repeats), jax_matmul_floor(params, X, repeats)
        print(f"  floor: the layer-sized products that J v and J' u need (forward, two for J v, "
              f"one for J' u, one for the gradient per layer; {madds(matmul_count(widths, N))} "
              f"multiply-adds), timed alone: NumPy {1e3 * floor:.2f} ms, one jax.jit program "
              f"{1e3 * jax_floor:.2f} ms; 1.2x the fastest peer needs "
              f"{1e3 * fastest / 1.2:.2f} ms")
        rate_lines(widths, N, fastest, repeats)
        parts = ggn_parts(params, X, v, pj, Xj, vj, repeats)
        print(f"  bpcheck's parts, each timed alone: its input checks (shapes, dtypes, NaN and "
              f"inf), which a repeat call skips, NumPy {parts[0]:.2f} ms, JAX {parts[1]:.2f} ms; "
              f"the computation alone NumPy {parts[2]:.2f} ms, its jax.jit program "
              f"{parts[3]:.2f} ms, with the NaN/inf flag read back {parts[4]:.2f} ms")
        hand = hand_kernel_ms(params, X, v, repeats)
        print(f"  a NumPy kernel written by hand for this case alone (ReLU, mean cross-entropy; "
              f"library.py's fewest_calls_ggn), no checks: {hand:.2f} ms against the "
              f"{1e3 * fastest / 1.2:.2f} ms that 1.2x needs "
              f"({'within reach' if hand <= 1e3 * fastest / 1.2 else 'out of reach'} for NumPy "
              f"as far as these calls go)")
        for name, least in (("NumPy", parts[2]), ("JAX", parts[4])):
            print(f"  a repeat {name} call takes at least the computation = {least:.2f} ms "
                  f"against the {1e3 * fastest / 1.2:.2f} ms that 1.2x needs "
                  f"({'within reach' if least <= 1e3 * fastest / 1.2 else 'out of reach'} "
                  f"with these parts)")
        if fastest < TINY and jax.devices()[0].platform == "cpu":
            xla_runtime_line(pj, Xj, vt, widths, N, repeats)
            host_route_line(parts[2], v, fastest, repeats)


@jax.jit
def jvp_vjp(p, X, t):
    """The GGN-vector product's peer in JAX: ``jax.jvp``, the cross-entropy's output
    Hessian, ``jax.vjp`` (mean over examples), per-layer tangents ``t`` in, per-layer out."""
    f = lambda q: jax_mlp(q, X)  # noqa: E731
    z, Jv = jax.jvp(f, (p,), (t,))
    s = jax.nn.softmax(z)
    u = s * Jv - s * jnp.sum(s * Jv, axis=1, keepdims=True)
    return jax.vjp(f, p)[1](u / X.shape[0])[0]


def xla_runtime_line(pj, Xj, vt, widths, N, repeats):
    """A line on what a small JAX row measures besides the products: XLA's CPU client runs
    each call of a program on its own threads, handing every step of it on between them,
    so a call that is waited for (as the rows time them, and as bpcheck's call must wait,
    to read its NaN/inf flag) takes longer than the same call among ``LOOP`` made before
    any is waited for; and in a process of its own where XLA runs each call on the calling
    thread (``jax_cpu_enable_async_dispatch`` off, :func:`inline_ggn`), bpcheck's JAX
    call against the peer's program, both waited for."""
    import json
    import subprocess
    import sys

    waited = best_ms(lambda: jvp_vjp(pj, Xj, vt), repeats)
    paused = {us: best_ms(_after_pause(lambda: jvp_vjp(pj, Xj, vt), us), repeats)
              for us in PAUSES_US}
    in_a_row = best_ms(lambda: [jvp_vjp(pj, Xj, vt) for _ in range(LOOP)], repeats) / LOOP
    cmd = [sys.executable, os.path.abspath(__file__), "--inline-ggn",
           f"{'-'.join(map(str, widths))}:{N}", "--repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        inline = (f"the same in a process with calls on the calling thread failed (exit "
                  f"{proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    else:
        r = lines[-1]
        inline = (f"in a process of its own with XLA's calls run on the calling thread "
                  f"(jax_cpu_enable_async_dispatch off), each waited for: bpcheck JAX "
                  f"{r['bpcheck_ms']:.2f} ms, the peer's program {r['peer_ms']:.2f} ms "
                  f"({r['peer_ms'] / r['bpcheck_ms']:.2f}x)")
    print(f"  XLA's CPU runtime: the peer's program, each call waited for, {waited:.2f} ms; "
          f"{LOOP} calls made before waiting, {in_a_row:.2f} ms each (XLA runs a call's steps "
          f"on its own threads, so calls in a row overlap; bpcheck's JAX call reads its "
          f"NaN/inf flag back, so it waits); {inline}")
    shown = ", ".join(f"{us} us: {ms:.3f} ms" for us, ms in paused.items())
    print(f"  the peer's program again, each call waited for after a pause of Python (a busy "
          f"wait, as a library's own handling of its arguments is) of {shown}: the threads "
          f"that ran a call sleep when the next does not come within a few microseconds, "
          f"and waking them costs more than the pause")


def host_route_line(numpy_ms, result, fastest, repeats, what="the NumPy computation"):
    """A small JAX row's other way: JAX in, JAX out, computed by bpcheck's NumPy code on
    the host (where XLA's per-step costs outweigh the products).  Its least cost is
    ``numpy_ms`` (that computation, timed alone) plus handing the NumPy ``result`` back to
    JAX (``jnp.asarray``, timed here; the arguments' way in is nearly free for arrays JAX
    has already shown to NumPy), against the time 1.2x the fastest peer needs."""
    back = best_ms(lambda: jnp.asarray(result), repeats)
    total, need = numpy_ms + back, 1e3 * fastest / 1.2
    print(f"  JAX in, JAX out by way of NumPy on the host: {what} {numpy_ms:.3f} ms and "
          f"the result handed back to JAX (jnp.asarray of a NumPy {result.shape} array) "
          f"{back:.3f} ms, at least {total:.3f} ms against the {need:.3f} ms that 1.2x needs "
          f"({'within reach' if total <= need else 'out of reach'} that way)", flush=True)


PAUSES_US = (0, 1, 2, 4, 8)
"""Busy pauses (microseconds) before each call of the peer's program, in
:func:`xla_runtime_line`."""


def _after_pause(fn, us):
    """``fn`` called after a busy wait of ``us`` microseconds (Python running, as a
    library's argument checks do, not a sleep)."""
    def paused():
        end = time.perf_counter() + us * 1e-6
        while time.perf_counter() < end:
            pass
        return fn()
    return paused


def inline_ggn(spec, repeats):
    """``--inline-ggn WIDTHS:N`` (for :func:`xla_runtime_line`, in a process of its own):
    with ``jax_cpu_enable_async_dispatch`` off before JAX starts its CPU client, one JSON
    line with bpcheck's JAX Gauss-Newton-vector product and the peer's program, each
    waited for, in ms."""
    import json

    from jax._src import xla_bridge

    assert not xla_bridge.backends_are_initialized(), "JAX started before the setting"
    jax.config.update("jax_cpu_enable_async_dispatch", False)

    text, N = spec.split(":")
    widths = [int(w) for w in text.split("-")]
    params, X, _, v = make(widths, int(N))
    pj, Xj, vj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params], jnp.asarray(X), jnp.asarray(v)
    vt = [(jnp.asarray(dB), jnp.asarray(db)) for dB, db in bpcheck.unflatten_params(v, widths)]
    ours = lambda: bpcheck.gauss_newton_matvec(pj, Xj, vj)  # noqa: E731
    peer = lambda: jvp_vjp(pj, Xj, vt)  # noqa: E731
    ref = np.asarray(ours())
    err = _rel_err(flat_layers(jax.tree_util.tree_leaves(peer()), ()), ref)
    assert err < 1e-4, f"the peer disagrees with bpcheck: {err:.1e}"
    times = {"bpcheck_ms": [], "peer_ms": []}
    for _ in range(repeats):  # in alternation, as the rows are timed
        times["bpcheck_ms"].append(best_ms(ours, 1))
        times["peer_ms"].append(best_ms(peer, 1))
    print(json.dumps({k: min(t) for k, t in times.items()}))


def hand_kernel_ms(params, X, v, repeats):
    """Milliseconds of ``library.fewest_calls_ggn`` (the GGN-vector product with the fewest
    NumPy calls, for ReLU and mean cross-entropy only), checked against bpcheck first."""
    from library import fewest_calls_ggn

    from bpcheck._params import _layer_slices

    slices = _layer_slices(tuple([params[0][0].shape[1]] + [B.shape[0] for B, _ in params]))
    out = np.empty_like(v)
    ref = bpcheck.gauss_newton_matvec(params, X, v)
    err = np.max(np.abs(fewest_calls_ggn(params, X, v, slices, out) - ref)) / np.max(np.abs(ref))
    assert err < 1e-5, f"the hand-written kernel disagrees with bpcheck: {err:.1e}"
    return best_ms(lambda: fewest_calls_ggn(params, X, v, slices, out), repeats)


def ggn_parts(params, X, v, pj, Xj, vj, repeats):
    """Milliseconds of bpcheck's GGN-vector product split in two, each part timed alone:
    the checking of the arguments (NumPy, JAX), which a repeat call with the same
    signature skips, and the computation (NumPy, and the JAX program called directly,
    without checks and with the NaN/inf flag that a checked call's program also computes
    and reads back)."""
    from bpcheck._compiled import call
    from bpcheck._gauss_newton import _gauss_newton_matvec, _setup

    def checks(p, X, v):
        return lambda: _setup(p, X, None, "cross_entropy", "mean", "relu", v=v)

    static = _setup(params, X, None, "cross_entropy", "mean", "relu", v=v)[6]
    unchecked = _setup(pj, Xj, None, "cross_entropy", "mean", "relu", v=vj)[7]
    fns = [checks(params, X, v), checks(pj, Xj, vj),
           lambda: _gauss_newton_matvec(params, X, None, v, *static, np),
           lambda: call(_gauss_newton_matvec, jnp, static, pj, Xj, None, vj, join=-1),
           lambda: call(_gauss_newton_matvec, jnp, static, pj, Xj, None, vj, join=-1,
                        unchecked=unchecked)]
    return [best_ms(fn, repeats) for fn in fns]


def product_shapes(widths, N):
    """The layer-sized matrix products of one GGN-vector product, as ``(m, k, n)`` shapes
    (an ``(m, k)`` by ``(k, n)`` product), each with the shapes of the stacked products it
    can be part of: the forward product ``a B'`` shares ``a`` with the tangent's own term
    ``a dB'`` (``(N, d_prev, 2 d)`` at once) and ``B`` with the carried tangent ``t B'``
    (``(2 N, d_prev, d)`` at once); the pull-back ``delta B`` and the gradient
    ``delta' a`` share no factor with another product of the same step.  The same products
    as :func:`matmul_count` counts."""
    products = []
    for l, (d_prev, d) in enumerate(zip(widths, widths[1:])):
        own = (N, d_prev, d)
        products += [(own, (own, (2 * N, d_prev, d), (N, d_prev, 2 * d))),  # a B'
                     (own, (own, (N, d_prev, 2 * d)))]  # a dB'
        if l:
            products += [(own, (own, (2 * N, d_prev, d))),  # t B'
                         ((N, d, d_prev), ((N, d, d_prev),))]  # delta B
        products.append(((d, N, d_prev), ((d, N, d_prev),)))  # delta' a
    return products


def product_rates(shapes, repeats):
    """Multiply-adds per second of each float32 matrix product shape ``(m, k, n)``: the
    faster of NumPy and a ``jax.jit`` program, as ``{shape: (rate, library)}``."""
    matmul = jax.jit(jnp.matmul)
    rates = {}
    for m, k, n in sorted(shapes):
        A = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
        B = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
        Aj, Bj = jnp.asarray(A), jnp.asarray(B)
        rates[m, k, n] = max(
            (m * k * n / (best_ms(fn, repeats) / 1e3), lib)
            for lib, fn in (("NumPy", lambda A=A, B=B: A @ B),
                            ("XLA", lambda Aj=Aj, Bj=Bj: matmul(Aj, Bj))))
    return rates


def rate_lines(widths, N, fastest, repeats):
    """Two bounds on the GGN row: the multiply-add rate 1.2x the fastest peer needs against
    the fastest product the machine ran (a 2048-square one, or one of the row's shapes),
    and the time the row's products take at the rates timed for their own shapes."""
    products = product_shapes(widths, N)
    square = (2048, 2048, 2048)
    rates = product_rates({square} | {s for _, stacks in products for s in stacks}, repeats)
    madd_count = matmul_count(widths, N)
    assert madd_count == sum(m * k * n for (m, k, n), _ in products)
    needed = madd_count / (fastest / 1.2)
    rate, lib = rates[square]
    best_shape = max((s for s in rates if s != square), key=lambda s: rates[s][0])
    verdict = ("out of reach for any method doing them as matrix products" if rate < needed
               else "within reach at that rate")
    print(f"  rate: 1.2x the fastest peer needs its {madds(madd_count)} multiply-adds at "
          f"{needed / 1e9:.1f} G/s at least (the peer: {madd_count / fastest / 1e9:.1f} G/s); "
          f"a 2048-square product ran at {rate / 1e9:.1f} G/s ({lib}): {verdict}; the fastest "
          f"of the row's own shapes, {best_shape}, at {rates[best_shape][0] / 1e9:.1f} G/s "
          f"({rates[best_shape][1]})")
    floor = sum(m * k * n / max(rates[s][0] for s in stacks) for (m, k, n), stacks in products)
    reach = "within reach" if floor <= fastest / 1.2 else "out of reach"
    print(f"  products at their shapes' rates: each of the {len(products)} products at the "
          f"fastest rate timed above for its own shape or a stacked one it can join (forward "
          f"with the tangent's term, (N, d_prev, 2 d); forward with the carried tangent, "
          f"(2 N, d_prev, d)), NumPy or XLA, adds up to {1e3 * floor:.2f} ms against the "
          f"{1e3 * fastest / 1.2:.2f} ms 1.2x needs: {reach} for any method that runs these "
          f"products at these shapes or stacked in those pairs (each has N = {N} as a side)")


def madds(n):
    """A count of multiply-adds, in G or M."""
    return f"{n / 1e9:.2f} G" if n >= 1e8 else f"{n / 1e6:.2f} M"


def matmul_count(widths, N):
    """Multiply-adds of one GGN-vector product's layer-sized products (the first layer has
    no incoming tangent and no input gradient)."""
    sizes = [d * dp for dp, d in zip(widths, widths[1:])]
    return N * (sizes[0] * 3 + sum(sizes[1:]) * 5)


def matmul_floor(params, X, repeats):
    """Seconds for just the matrix products of one GGN-vector product, in float32 NumPy."""
    N = X.shape[0]
    acts = [X] + [np.ones((N, B.shape[0]), np.float32) for B, _ in params[:-1]]
    outs = [np.ones((N, B.shape[0]), np.float32) for B, _ in params]

    def products():
        for l, (B, _) in enumerate(params):
            a, d = acts[l], outs[l]
            a @ B.T  # forward
            a @ B.T  # the tangent's own term dB a
            if l:
                d @ B  # B t, carrying the incoming tangent
                d @ B  # B' delta, the pull-back
            d.T @ a  # the gradient delta' a

    return best_ms(products, repeats) / 1e3


def jax_matmul_floor(params, X, repeats):
    """:func:`matmul_floor`'s products as one ``jax.jit`` program (the outputs summed so
    that none is dropped as dead code)."""
    N = X.shape[0]
    acts = [jnp.asarray(X)] + [jnp.ones((N, B.shape[0]), jnp.float32) for B, _ in params[:-1]]
    outs = [jnp.ones((N, B.shape[0]), jnp.float32) for B, _ in params]
    Bs = [jnp.asarray(B) for B, _ in params]

    @jax.jit
    def products(Bs, acts, outs):
        total = 0.0
        for l, B in enumerate(Bs):
            a, d = acts[l], outs[l]
            total += jnp.sum(a @ B.T) + jnp.sum(a @ (B + 1).T)  # forward, dB a
            if l:
                total += jnp.sum(d @ B) + jnp.sum(d @ (B + 1))  # B t, B' delta
            total += jnp.sum(d.T @ a)  # delta' a
        return total

    return best_ms(lambda: products(Bs, acts, outs), repeats) / 1e3


def ggn_rows(repeats):
    for widths, N in (([784, 1024, 1024, 10], 128), ([10, 32, 32, 3], 64)):
        ggn_row(widths, N, repeats)


PRODUCTS = 10
"""Products per row of the ``ggnop`` task (a short conjugate-gradient run)."""


def ggn_operator_row(widths, N, repeats):
    """``PRODUCTS`` Gauss-Newton-vector products with the same parameters and data, each
    method set up once inside the timing: what a conjugate-gradient or Lanczos run does."""
    params, X, y, v = make(widths, N)
    vs = [v * (1 + 0.1 * i) for i in range(PRODUCTS)]  # distinct vectors, in sequence
    pj, Xj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params], jnp.asarray(X)
    row = Row(f"{PRODUCTS} Gauss-Newton-vector products after one setup, "
              f"{'-'.join(map(str, widths))}, N = {N}, cross-entropy (mean), float32", repeats)
    seq = lambda o: np.concatenate([np.asarray(t) for t in o])
    for lib, p, Xl, vl in (("NumPy", params, X, vs), ("JAX", pj, Xj, [jnp.asarray(t) for t in vs])):
        def one_by_one(p=p, Xl=Xl, vl=vl):
            op = bpcheck.gauss_newton_operator(p, Xl)
            return [op @ t for t in vl]

        block = np.stack(vs, axis=1) if lib == "NumPy" else jnp.asarray(np.stack(vs, axis=1))

        def at_once(p=p, Xl=Xl, Vm=block):
            return bpcheck.gauss_newton_operator(p, Xl) @ Vm

        row.add(f"bpcheck operator, {lib}, one by one", "flat", one_by_one, seq, peer=False)
        row.add(f"bpcheck operator, {lib}, (P, {PRODUCTS}) at once", "flat", at_once,
                lambda o: np.asarray(o).T.reshape(-1), peer=False)
    row.add("bpcheck gauss_newton_matvec each time, NumPy", "flat",
            lambda: [bpcheck.gauss_newton_matvec(params, X, t) for t in vs], seq, peer=False)

    T = jax.tree.map(lambda *ts: jnp.stack(ts),
                     *[[(jnp.asarray(dB), jnp.asarray(db)) for dB, db in
                        bpcheck.unflatten_params(t, widths)] for t in vs])

    @jax.jit
    def linearized(p, X, T):
        f = lambda q: jax_mlp(q, X)
        z, f_jvp = jax.linearize(f, p)
        f_vjp = jax.vjp(f, p)[1]
        s = jax.nn.softmax(z)

        def one(t):
            Jv = f_jvp(t)
            u = s * Jv - s * jnp.sum(s * Jv, axis=1, keepdims=True)
            return f_vjp(u / X.shape[0])[0]
        return jax.lax.map(one, T)

    ts = [jax.tree.map(lambda a, i=i: a[i], T) for i in range(PRODUCTS)]
    row.add("jax.jvp / Hessian / jax.vjp (jit), one by one", "per-layer",  # as a CG loop calls it
            lambda: [jvp_vjp(pj, Xj, t) for t in ts],
            lambda o: np.concatenate([flat_layers(jax.tree_util.tree_leaves(r), ()) for r in o]))
    row.add(f"jax.linearize + jax.vjp once, lax.map over {PRODUCTS} (jit)", "per-layer",
            lambda: linearized(pj, Xj, T),
            lambda o: np.concatenate([flat_layers([np.asarray(t)[i] for t in
                                                   jax.tree_util.tree_leaves(o)], ())
                                      for i in range(PRODUCTS)]))
    if HAVE["curvlinops"]:
        from curvlinops import GGNLinearOperator

        model = torch_model(params)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        plist = list(model.parameters())
        vts = [torch.from_numpy(t) for t in vs]

        def theirs():
            op = GGNLinearOperator(model, torch.nn.CrossEntropyLoss(reduction="mean"), plist,
                                   [(Xt, yt)], check_deterministic=False)
            return [op @ t for t in vts]

        row.add("curvlinops GGNLinearOperator", "flat", theirs,
                lambda o: np.concatenate([np.asarray(t) for t in o]))
    else:
        row.skip("curvlinops: skipped (curvlinops-for-pytorch or torch is not installed)")
    if HAVE["backpack"]:
        from backpack.hessianfree.ggnvp import ggn_vector_product_from_plist

        model = torch_model(params)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        plist = list(model.parameters())
        vlists = [[torch.from_numpy(np.ascontiguousarray(q))
                   for pair in bpcheck.unflatten_params(t, widths) for q in pair] for t in vs]

        def bp_many():  # one forward pass, then the products on its graph
            out = model(Xt)
            loss = F.cross_entropy(out, yt)
            return [ggn_vector_product_from_plist(loss, out, plist, vl) for vl in vlists]

        row.add("BackPACK ggn_vector_product_from_plist, one forward", "per-layer", bp_many,
                lambda o: np.concatenate([flat_layers([t.detach().numpy() for t in r], ())
                                          for r in o]))
    else:
        row.skip("BackPACK: skipped (backpack-for-pytorch or torch is not installed)")
    fastest = row.run()
    ours, theirs = operator_count(widths, N, PRODUCTS), linearize_count(widths, N, PRODUCTS)
    print(f"  multiply-adds of the layer-sized products: bpcheck's operator {madds(ours)} "
          f"(forward and V^(l) once, two per layer per product), jax.linearize + jax.vjp "
          f"{madds(theirs)} (forward once, five per layer per product, three for the "
          f"first): at equal speed the operator is {theirs / ours:.2f}x faster")
    if fastest:
        need = 1e3 * fastest / 1.2
        floor = operator_floor(params, X, PRODUCTS, repeats)
        print(f"  floor: the operator's layer-sized products of {PRODUCTS} products at once "
              f"(dB a and delta' a per layer, as (N, d_(l-1)) by (d_(l-1), {PRODUCTS} d_l) "
              f"matrix products), timed alone: NumPy {floor[0]:.2f} ms, one jax.jit program "
              f"{floor[1]:.2f} ms; 1.2x the fastest peer needs {need:.2f} ms")
        parts = operator_parts(params, X, vs, repeats)
        print(f"  bpcheck's parts, each timed alone: the setup (gauss_newton_operator: checks, "
              f"forward pass, V^(l)) NumPy {parts[0][0]:.2f} ms, JAX {parts[1][0]:.2f} ms; "
              f"then {PRODUCTS} products one by one NumPy {parts[0][1]:.2f} ms, JAX "
              f"{parts[1][1]:.2f} ms, or at once NumPy {parts[0][2]:.2f} ms, JAX "
              f"{parts[1][2]:.2f} ms")
        for lib, (setup, one, many) in zip(("NumPy", "JAX"), parts):
            for how, total in (("one by one", setup + one), ("at once", setup + many)):
                print(f"  {lib} {how}: setup and products take at least {total:.2f} ms "
                      f"against the {need:.2f} ms that 1.2x needs "
                      f"({'within reach' if total <= need else 'out of reach'} with these parts)")
        if fastest < TINY and jax.devices()[0].platform == "cpu":
            setup, _, many = parts[0]
            host_route_line(setup + many, np.stack(vs, axis=1), fastest, repeats,
                            f"NumPy's setup and {PRODUCTS} products at once")


def operator_floor(params, X, m, repeats):
    """Milliseconds for just the layer-sized products of ``m`` operator products at once,
    in float32 NumPy and as one ``jax.jit`` program: per layer ``a^(l-1) dB'`` and
    ``delta' a^(l-1)`` for the ``m`` vectors, each as one matrix product."""
    N = X.shape[0]
    acts = [X] + [np.ones((N, B.shape[0]), np.float32) for B, _ in params[:-1]]
    dBs = [np.ones((B.shape[1], m * B.shape[0]), np.float32) for B, _ in params]
    deltas = [np.ones((N, m * B.shape[0]), np.float32) for B, _ in params]

    def products():
        for a, dB, delta in zip(acts, dBs, deltas):
            a @ dB  # J v's own term of the layer, for the m vectors
            a.T @ delta  # the layer's rows of J' u

    @jax.jit
    def jax_products(acts, dBs, deltas):
        return sum(jnp.sum(a @ dB) + jnp.sum(a.T @ delta) for a, dB, delta in
                   zip(acts, dBs, deltas))

    jargs = [[jnp.asarray(t) for t in ts] for ts in (acts, dBs, deltas)]
    return [best_ms(products, repeats), best_ms(lambda: jax_products(*jargs), repeats)]


def operator_parts(params, X, vs, repeats):
    """Milliseconds of the operator rows' calls split in two, each part timed alone, for
    NumPy and JAX: ``(setup, products one by one, products at once)``, the setup being
    :func:`bpcheck.gauss_newton_operator` and the products those of an operator built
    beforehand."""
    out = []
    for to in (np.asarray, jnp.asarray):
        p, Xl = [(to(B), to(b)) for B, b in params], to(X)
        out.append(_operator_part_times(p, Xl, [to(t) for t in vs], to(np.stack(vs, axis=1)),
                                        repeats))
    return out


def _operator_part_times(p, Xl, vl, block_, repeats):
    op = bpcheck.gauss_newton_operator(p, Xl)
    return [best_ms(fn, repeats) for fn in (lambda: bpcheck.gauss_newton_operator(p, Xl),
                                            lambda: [op @ t for t in vl], lambda: op @ block_)]


def operator_count(widths, N, m):
    """Multiply-adds of ``m`` products by :class:`bpcheck.GaussNewtonOperator`, its setup
    included: the forward pass, ``V^(l) = V^(l+1) B^(l+1) D^(l)`` (``N K`` rows), and per
    product ``dB a`` and ``delta' a`` per layer plus the contractions with ``V^(l)``."""
    sizes = [d * dp for dp, d in zip(widths, widths[1:])]
    K, hidden = widths[-1], widths[1:-1]
    setup = N * sum(sizes) + N * K * sum(d * d_next for d, d_next in zip(hidden, widths[2:]))
    return setup + m * (2 * N * sum(sizes) + 2 * N * K * sum(hidden))


def linearize_count(widths, N, m):
    """Multiply-adds of ``m`` products by ``jax.linearize`` and ``jax.vjp`` traced once:
    one forward pass, then :func:`matmul_count` less that forward pass per product."""
    forward = N * sum(d * dp for dp, d in zip(widths, widths[1:]))
    return forward + m * (matmul_count(widths, N) - forward)


def ggn_operator_rows(repeats):
    for widths, N in (([784, 1024, 1024, 10], 128), ([10, 32, 32, 3], 64)):
        ggn_operator_row(widths, N, repeats)


# --- NTK and Jacobian ----------------------------------------------------------------


def jax_jacobian():
    """``jax.vmap(jax.jacrev)`` of the network, and its per-layer result in ``beta`` order."""
    jac = jax.vmap(jax.jacrev(jax_mlp), in_axes=(None, 0))
    return jac, lambda o: flat_layers(jax.tree_util.tree_leaves(o), o[0][1].shape[:2])


def torch_jacobian(params):
    """``torch.func`` ``vmap(jacrev)`` of the network: ``X -> {name: (N, K, *shape)}``."""
    from torch.func import functional_call, jacrev, vmap

    model = torch_model(params)
    p = {k: v.detach() for k, v in model.named_parameters()}
    jac = vmap(jacrev(lambda p, x: functional_call(model, p, (x[None],))[0]), in_dims=(None, 0))
    return lambda X: jac(p, X)


def ntk_row(N, trace, repeats):
    widths = [784, 1024, 1024, 1024, 10]
    params, X, _, _ = make(widths, N)
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    Xj = jnp.asarray(X)
    jac, _ = jax_jacobian()
    what = "trace (N, N)" if trace else "full (N, N, K, K)"
    row = Row(f"NTK {what}, {'-'.join(map(str, widths))}, N = {N}, float32", repeats)
    row.add("bpcheck NumPy", "-", lambda: bpcheck.ntk(params, X, trace=trace), np.asarray,
            peer=False)
    row.add("bpcheck JAX", "-", lambda: bpcheck.ntk(pj, Xj, trace=trace), np.asarray, peer=False)
    spec = "ika,jka->ij" if trace else "ika,jla->ijkl"
    J_bytes = 4 * N * widths[-1] * bpcheck.param_count(widths)
    if J_bytes > PEER_JACOBIAN_BYTES:
        row.skip(f"jax.vmap(jax.jacrev), torch.func vmap(jacrev): skipped (their (N, K, P) "
                 f"Jacobian would take {J_bytes / 2**30:.0f} GiB)")
        nt_peer(row, params, X, trace, repeats)  # structured derivatives: no (N, K, P)
        row.run()
        return

    @jax.jit
    def contract(p, X):
        leaves = [t.reshape(N, t.shape[1], -1) for t in jax.tree_util.tree_leaves(jac(p, X))]
        return sum(jnp.einsum(spec, t, t) for t in leaves)

    row.add("jax.vmap(jax.jacrev), then J J' (jit)", "-", lambda: contract(pj, Xj), np.asarray)
    if HAVE["torch"]:
        tj, Xt = torch_jacobian(params), torch.from_numpy(X)

        def torch_ntk():
            leaves = [t.reshape(N, t.shape[1], -1) for t in tj(Xt).values()]
            return sum(torch.einsum(spec, t, t) for t in leaves)

        row.add("torch.func vmap(jacrev), then J J'", "-", torch_ntk, lambda o: o.numpy())
    else:
        row.skip("torch.func: skipped (torch is not installed)")
    nt_peer(row, params, X, trace, repeats)
    row.run()


NT_PYTHON = os.environ.get("BPCHECK_NT_PYTHON")
"""A Python with neural-tangents (``--nt-python``); it needs JAX 0.4.x, so it runs apart."""


def nt_peer(row, params, X, trace, repeats):
    """neural-tangents' three NTK implementations, timed by ``nt_peer.py`` in ``NT_PYTHON``
    on the same inputs (not interleaved with the others: it is another process)."""
    if not NT_PYTHON:
        row.skip("neural-tangents: skipped (it needs JAX 0.4.x; give a Python that has it "
                 "with --nt-python or BPCHECK_NT_PYTHON)")
        return
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        arrays = {"X": X}
        for l, (B, b) in enumerate(params):
            arrays[f"B{l}"], arrays[f"b{l}"] = B, b
        np.savez(f"{tmp}/inputs.npz", **arrays)
        cmd = [NT_PYTHON, os.path.join(os.path.dirname(__file__), "nt_peer.py"),
               f"{tmp}/inputs.npz", f"{tmp}/ntk", "--repeats", str(repeats)]
        proc = subprocess.run(cmd + (["--trace"] if trace else []), capture_output=True,
                              text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            row.skip(f"neural-tangents: failed in {NT_PYTHON} (exit {proc.returncode}): "
                     f"{proc.stderr.strip().splitlines()[-1:]}")
            return
        for r in lines:
            row.add_measured(f"neural-tangents, {r['name']} (jit)", "-", r["best_s"],
                             np.load(r["file"]), lambda o: np.asarray(o, np.float64),
                             f"best of {r['repeats']}, own process: {r['versions']}")


def ntk_rows(repeats):
    for N in (32, 256):
        for trace in (False, True):
            ntk_row(N, trace, repeats)


def jacobian_rows(repeats):
    widths, N = [64, 256, 256, 256, 256, 10], 128
    params, X, _, _ = make(widths, N)
    pj = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    Xj = jnp.asarray(X)
    K = widths[-1]
    row = Row(f"full Jacobian (N, K, P), {'-'.join(map(str, widths))}, N = {N}, float32", repeats)
    per_layer = lambda o: flat_layers([t for pair in o for t in pair], (N, K))  # noqa: E731
    row.add("bpcheck NumPy", "flat", lambda: bpcheck.jacobian(params, X), np.asarray, peer=False)
    row.add("bpcheck NumPy", "per-layer", lambda: bpcheck.jacobian(params, X, flat=False),
            per_layer, peer=False)
    row.add("bpcheck JAX, called as is", "flat", lambda: bpcheck.jacobian(pj, Xj), np.asarray,
            peer=False)
    row.add("bpcheck JAX, called as is", "per-layer", lambda: bpcheck.jacobian(pj, Xj, flat=False),
            per_layer, peer=False)
    jitted = jax.jit(bpcheck.jacobian)
    row.add("bpcheck JAX, inside jax.jit", "flat", lambda: jitted(pj, Xj), np.asarray, peer=False)
    layers = jax.jit(functools.partial(bpcheck.jacobian, flat=False))
    row.add("bpcheck JAX, inside jax.jit", "per-layer", lambda: layers(pj, Xj),
            per_layer, peer=False)
    jac, to_flat = jax_jacobian()
    per = jax.jit(jac)
    flat = jax.jit(lambda p, X: jnp.concatenate(
        [t.reshape(N, K, -1) for t in jax.tree_util.tree_leaves(jac(p, X))], axis=2))
    row.add("jax.vmap(jax.jacrev) (jit)", "per-layer", lambda: per(pj, Xj), to_flat)
    row.add("jax.vmap(jax.jacrev) (jit)", "flat", lambda: flat(pj, Xj), np.asarray)
    if HAVE["torch"]:
        tj, Xt = torch_jacobian(params), torch.from_numpy(X)
        row.add("torch.func vmap(jacrev)", "per-layer", lambda: tj(Xt),
                lambda o: flat_layers([t.numpy() for t in o.values()], (N, K)))
        row.add("torch.func vmap(jacrev)", "flat", lambda: torch_flat(tj(Xt).values(), (N, K)),
                lambda o: o.numpy())
    else:
        row.skip("torch.func: skipped (torch is not installed)")
    fastest = row.run()
    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal((N, K, d), np.float32), rng.standard_normal((N, dp), np.float32))
             for dp, d in zip(widths, widths[1:])]
    acts = resolve_activations("relu", len(widths) - 2)
    factors = lambda p, X: [(f.V, f.a_prev) for f in _factors(p, X, acts, jnp)]  # noqa: E731
    xla_write_floor(pairs, fastest, repeats,
                    ("the forward pass and the factors V^(l) (K rows per example)", factors,
                     (pj, Xj)), row.fastest_flat)


# --- a Flax model, as a researcher brings it --------------------------------------------


def flax_model(params):
    """An ``nnx.Sequential`` of ``nnx.Linear`` and ``nnx.relu`` holding ``params`` (its
    kernels ``(d_in, d_out)``: ``B^(l)'``)."""
    from flax import nnx

    parts = []
    for B, b in params:
        layer = nnx.Linear(B.shape[1], B.shape[0], rngs=nnx.Rngs(0))
        layer.kernel.value, layer.bias.value = jnp.asarray(B.T), jnp.asarray(b)
        parts += [layer, nnx.relu]
    return nnx.Sequential(*parts[:-1])


def flax_flat(tree):
    """A Flax state of per-example gradients (each layer's bias, then its kernel ``(N,
    d_in, d_out)``) -> ``(N, P)`` in ``beta`` order."""
    leaves = [np.asarray(t) for t in jax.tree_util.tree_leaves(tree)]
    N = leaves[0].shape[0]
    return np.concatenate([t for b, W in zip(leaves[0::2], leaves[1::2])
                           for t in (np.swapaxes(W, -1, -2).reshape(N, -1), b)], axis=1)


def flax_rows(repeats):
    if not HAVE["flax"]:
        print("\nper-example gradients of a Flax model: skipped (flax is not installed)")
        return
    for widths, N in (([784, 1024, 1024, 10], 128), ([64, 256, 256, 256, 10], 256)):
        flax_row(widths, N, repeats)


def flax_row(widths, N, repeats):
    """Per-example gradients of a Flax NNX model, in its own structure (its state, kernels
    ``(d_in, d_out)``): bpcheck given the model (read once with ``bpcheck.network``)
    against ``jax.vmap(jax.grad)`` of the model's loss."""
    from flax import nnx

    params, X, y, _ = make(widths, N)
    model = flax_model(params)
    net = bpcheck.network(model)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    row = Row(f"per-example gradients of a Flax NNX model, {'-'.join(map(str, widths))}, "
              f"N = {N}, cross-entropy, float32", repeats)
    row.add("bpcheck NumPy, (B, b) list", "flat", lambda: bpcheck.per_example_grads(params, X, y),
            np.asarray, peer=False)
    row.add("bpcheck JAX, model's state", "per-layer",
            lambda: bpcheck.per_example_grads(net, Xj, yj), flax_flat, peer=False)
    jitted = jax.jit(lambda X, y: bpcheck.per_example_grads(net, X, y))
    row.add("bpcheck JAX, model's state, inside jax.jit", "per-layer",
            lambda: jitted(Xj, yj), flax_flat, peer=False)
    graphdef, state = nnx.split(model)

    def loss(state, x, t):
        return -jax.nn.log_softmax(nnx.merge(graphdef, state)(x[None])[0])[t]

    per = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))
    row.add("jax.vmap(jax.grad) of the model (jit)", "per-layer", lambda: per(state, Xj, yj),
            flax_flat)
    row.run()


def xla_write_floor(pairs, fastest, repeats, before=None, fastest_flat=None):
    """Print what one ``jax.jit`` program takes to write only the per-layer outer products
    ``left[..., :, None] * right[:, None, ..., None, :]`` of ``pairs`` (``left`` ``(N, ...,
    d_l)``, ``right`` ``(N, d_{l-1})``), nothing computed before them: the writes of a
    per-layer result of this size, which is what a call inside a user's ``jax.jit`` gives
    XLA to do at the least, against the time that 1.2x the fastest peer needs.

    ``before``: ``(name, program, args)``, a ``jax.jit`` program of what every method
    computes before those writes (the forward and backward passes), timed alone and added.
    ``fastest_flat``: the fastest peer's time for the flat result; the same writes into
    one flat buffer (``concatenate`` and ``dynamic_update_slice`` into zeros, the faster)
    are then timed against 1.2x that."""
    def outer(pairs):
        out = []
        for left, right in pairs:
            mid = (None,) * (left.ndim - 1)
            out.append(left[..., :, None] * right[(slice(None),) + mid + (slice(None),)])
        return out

    lead = pairs[0][0].ndim - 1
    flat_forms = (lambda pairs: jnp.concatenate([t.reshape(t.shape[:lead] + (-1,)) for t in
                                                 outer(pairs)], axis=-1),
                  lambda pairs: written([t.reshape(t.shape[:lead] + (-1,)) for t in
                                         outer(pairs)], axis=-1))
    args = [(jnp.asarray(a), jnp.asarray(b)) for a, b in pairs]
    best = jit_ms(outer, args, repeats=repeats)
    entries = sum(a.size * b.shape[1] for a, b in pairs)
    print(f"  floor inside jax.jit: the per-layer outer products alone ({entries / 1e6:.0f} M "
          f"entries, nothing computed before them), one jax.jit program: {best:.2f} ms; "
          f"1.2x the fastest peer needs {1e3 * fastest / 1.2:.2f} ms (that peer writes a "
          f"result of this size too: its time is {fastest * 1e3 / best:.2f}x this floor)",
          flush=True)
    if before is not None:
        name, program, before_args = before
        first = jit_ms(program, *before_args, repeats=repeats)
        total = first + best
        print(f"  with {name} before them, alone {first:.2f} ms: at least {total:.2f} ms "
              f"against the {1e3 * fastest / 1.2:.2f} ms that 1.2x needs "
              f"({'within reach' if total <= 1e3 * fastest / 1.2 else 'out of reach'})",
              flush=True)
    if fastest_flat is not None:
        flat = min(jit_ms(form, args, repeats=repeats) for form in flat_forms)
        total = flat + (first if before is not None else 0.0)
        print(f"  flat: the same products written into one flat buffer, alone: {flat:.2f} ms"
              + (f", with {name} {total:.2f} ms" if before is not None else "")
              + f"; 1.2x the fastest flat peer needs {1e3 * fastest_flat / 1.2:.2f} ms "
              f"({'within reach' if total <= 1e3 * fastest_flat / 1.2 else 'out of reach'})",
              flush=True)


def jit_ms(fn, *args, repeats):
    """Best milliseconds of ``jax.jit(fn)(*args)``, compiled first."""
    program = jax.jit(fn)
    block(program(*args))
    return 1e3 * min(_settled(lambda: program(*args), False) for _ in range(repeats))


def main():
    global NT_PYTHON
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--nt-python", default=os.environ.get("BPCHECK_NT_PYTHON"),
                    help="a Python with neural-tangents (and JAX 0.4.x) for the NTK rows")
    ap.add_argument("--only", default=",".join(TASKS),
                    help=f"comma-separated tasks out of {', '.join(TASKS)}")
    ap.add_argument("--inline-ggn", metavar="WIDTHS:N", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inline_ggn:  # (a process of xla_runtime_line's own)
        inline_ggn(args.inline_ggn, args.repeats)
        return
    NT_PYTHON = args.nt_python
    only = args.only.split(",")
    for task in only:
        if task not in TASKS:
            ap.error(f"--only: unknown task {task!r}; expected some of {', '.join(TASKS)}")
    versions = [f"numpy {np.__version__}", f"jax {jax.__version__}"]
    for name, dist in (("torch", "torch"), ("backpack", "backpack-for-pytorch"),
                       ("opacus", "opacus"), ("curvlinops", "curvlinops-for-pytorch"),
                       ("flax", "flax")):
        if HAVE[name]:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
    print(f"bpcheck {bpcheck.__version__}; " + ", ".join(versions) + f"; JAX on {jax.devices()[0].platform}")
    if "pergrad" in only:
        pergrad_rows(args.repeats, norms=False)
    if "norms" in only:
        pergrad_rows(args.repeats, norms=True)
    if "ggn" in only:
        ggn_rows(args.repeats)
    if "ggnop" in only:
        ggn_operator_rows(args.repeats)
    if "ntk" in only:
        ntk_rows(args.repeats)
    if "jacobian" in only:
        jacobian_rows(args.repeats)
    if "flax" in only:
        flax_rows(args.repeats)


if __name__ == "__main__":
    main()
