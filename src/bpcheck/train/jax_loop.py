"""JAX trainers: the whole loop compiled (``jax.jit`` over one ``lax.scan``), and ``vmap``.

The step is pure, ``(params, loss) = jax_step(params, X, Y, step_size, reg)``, with the
gradient from ``jax.value_and_grad`` of the lecture's loss.  :func:`train_jax` scans it
``iters`` times inside one compiled function; :func:`train_jax_many` runs it over a stack
of networks (different seeds, different step sizes, or both) as one compiled program:
``vmap`` of the loop, or for the two-layer net the step itself written with a leading
axis of networks.

Speed notes (2-core AVX-512 CPU, spiral, 2-100-3 net, float32; ``benchmarks/train.py``
prints the numbers).  XLA:CPU runs each fused operation of the step as a separate kernel;
at these sizes a product or a pass over the ``(N, h)`` hidden layer costs 1-5 us, so the
step was timed kernel by kernel (``jax.profiler``) and written to need few, fast ones.
For the two-layer net, :func:`_two_layer_step` replaces ``value_and_grad`` (45 us/step ->
about 23 us/step):

- Every matrix product is a plain ``(M, K) @ (K, N)`` row-major product, which XLA hands to
  its fast YNNPACK kernels.  A product with a transposed operand (``dscores' @ h`` as
  ``dot_general`` over axis 0) goes to a generic kernel instead, 3-6x slower: the old
  step's ``dh' @ X`` took 22 us of its 45.  So ``X1'`` is stored next to ``X1`` (loop
  constants) and ``dscores`` is produced transposed, ``(K, N)``.
- The bias of layer 1 rides in the product: ``X1 = [X, 1]`` and ``A = [B1'; b1]``, so
  ``z = X1 @ A`` and ``[dB1'; db1] = X1' @ dz`` are one product each, no sums.
- The softmax of a few classes (``K <= 8``) is written column by column, elementwise over
  ``N``: no reductions of length 3, and ``dscores'`` comes out as one stack.
- Loss terms and updates are as in :func:`jax_loss`; the losses agree with the NumPy
  trainer to rounding (the test compares 100 steps in float64 to 1e-9).
- Tried and slower: layer 1 or the weight gradients as broadcast-multiply-and-sum
  (XLA's reductions over ``N`` run at about 10 Gflop/s: 80-200 us/step); the hidden layer
  transposed ``(h, N)`` (30 us/step); ``lax.scan`` unrolling (no gain); XLA flags
  (vector width 512, split count, Eigen threading: no gain).
- Many networks: the same step with a leading axis of networks on every array (each
  product a batched product, batch axis first), not ``vmap`` of the one-network loop:
  ``vmap`` let XLA merge layer 1 into one ``(N, 3) @ (3, M h)`` product whose ``(N, M, h)``
  result then had to be transposed (and back) every step, 2x slower than one network at a
  time; ``vmap`` of the one-network step with ``X1`` broadcast and mapped like the state
  gives the same products but three more transposes per step, 20% slower with the
  threads below (measured, then reverted).  Per network the step then costs what one
  network's does (about 25 us at 16 at a time): the kernels are bound by memory traffic,
  not by per-call overhead, so 64 networks took about 80x one network's time (18 s, was
  33 s); more than about 16 at a time spill out of the 1 MiB L2 cache per core and run
  1.7x slower per network.
- XLA:CPU runs these small kernels on one core (one network trains as fast pinned to one
  core as on two), so the networks are split into one slice per core, each trained from
  its own thread: 64 networks in about 8 s, 2.3x faster.  A floor for any
  implementation of this arithmetic is the step's products (0.9 Mflop per network) at
  the machine's large-matrix-product rate (about 210 Gflop/s): 2.8 s for 64 networks,
  12x one network's time, which is why ``benchmarks/train.py`` prints it.
- float64 runs about 3.5x slower than float32 (0.78 s vs 0.22 s for 10,000 steps); it
  needs JAX's 64-bit mode (``jax.config.update('jax_enable_x64', True)`` or the
  ``enable_x64`` context manager of the installed jax).

Deeper nets keep the generic ``value_and_grad`` step, :func:`jax_step`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._compat import enable_x64
from ._core import (
    Progress,
    TrainingDiverged,
    TrainResult,
    _accuracy,
    check_data,
    check_hyper,
    check_network,
    finish,
)


def _rank_promotion_allowed(fn):
    """``fn`` traced with rank promotion allowed whatever the caller's setting (a bias of
    shape ``(n,)`` is added to an ``(N, n)`` array: ``jax_numpy_rank_promotion = "raise"``
    failed every step)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.numpy_rank_promotion("allow"):
            return fn(*args, **kwargs)

    return wrapper


@_rank_promotion_allowed
def jax_loss(params, X, Y, reg):
    """Mean cross-entropy ``+ 0.5 * reg * sum_l |B^(l)|^2`` (weights only), traceable.

    ``params`` ``[(B^(l), b^(l))]``, ``X`` ``(N, d_0)``, ``Y`` one-hot labels ``(N, K)``.
    ReLU is ``jax.nn.relu``, whose derivative at 0 is 0 as in the lecture (``jnp.maximum``
    would give 1/2).
    """
    a = X
    for B, b in params[:-1]:
        a = jax.nn.relu(a @ B.T + b)
    B, b = params[-1]
    log_probs = jax.nn.log_softmax(a @ B.T + b, axis=1)
    data_loss = -jnp.sum(log_probs * Y) / X.shape[0]
    return data_loss + 0.5 * reg * sum(jnp.sum(B * B) for B, _ in params)


@_rank_promotion_allowed
def jax_step(params, X, Y, step_size, reg):
    """One gradient-descent step ``params -> (params, loss)``; the loss is before the update."""
    loss, grads = jax.value_and_grad(jax_loss)(params, X, Y, reg)
    return jax.tree.map(lambda p, g: p - step_size * g, params, grads), loss


def _softmax_xent(s, Y):
    """``(mean cross-entropy, dscores')`` of scores ``s`` ``(..., N, K)``.

    ``dscores'`` has shape ``(..., K, N)``.

    For a few classes the softmax is written column by column (elementwise over ``N``,
    one fused loop) and ``dscores`` comes out transposed, ready for ``dscores' @ h``.
    """
    N, K = s.shape[-2:]
    if K > 8:
        log_probs = jax.nn.log_softmax(s, axis=-1)
        return (-jnp.sum(log_probs * Y, axis=(-2, -1)) / N,
                jnp.swapaxes((jnp.exp(log_probs) - Y) / N, -1, -2))
    cols = [s[..., k] for k in range(K)]
    m = cols[0]
    for c in cols[1:]:
        m = jnp.maximum(m, c)
    e = [jnp.exp(c - m) for c in cols]
    total = sum(e[1:], e[0])
    nll = m + jnp.log(total) - sum((Y[:, k] * cols[k] for k in range(1, K)), Y[:, 0] * cols[0])
    return (jnp.sum(nll, axis=-1) / N,
            jnp.stack([(e[k] / total - Y[:, k]) / N for k in range(K)], axis=-2))


def _two_layer_step(state, X1, X1T, Y, step_size, reg):
    """:func:`jax_step` for ``[(B1, b1), (B2, b2)]``, hand-written for XLA:CPU (see module doc).

    ``state`` ``(A, B2, b2)`` with ``A = [B1'; b1]`` ``(d_0 + 1, h)``; ``X1 = [X, 1]``
    ``(N, d_0 + 1)`` and its transpose ``X1T``, stored (both loop constants).  Any leading
    axes (``M`` networks) are batch axes of every product; ``X1``, ``X1T`` then carry them
    too and ``step_size`` has shape ``(M,)``.
    """
    A, B2, b2 = state
    step = jnp.asarray(step_size)[..., None]
    not_bias = jnp.ones((A.shape[-2], 1), A.dtype).at[-1].set(0)
    h = jax.nn.relu(X1 @ A)                                    # (N, h), bias included
    data_loss, dsT = _softmax_xent(h @ jnp.swapaxes(B2, -1, -2) + b2[..., None, :], Y)
    reg_loss = jnp.sum(A[..., :-1, :] ** 2, axis=(-2, -1)) + jnp.sum(B2 ** 2, axis=(-2, -1))
    loss = data_loss + 0.5 * reg * reg_loss
    dB2 = dsT @ h + reg * B2
    db2 = jnp.sum(dsT, axis=-1)
    dz = jnp.where(h > 0, jnp.swapaxes(dsT, -1, -2) @ B2, 0)   # ReLU' at 0 is 0, as NumPy's
    dA = X1T @ dz + reg * not_bias * A                         # [dB1'; db1]
    return (A - step[..., None] * dA, B2 - step[..., None] * dB2, b2 - step * db2), loss


def _pack_two_layer(params, X):
    """``[(B1, b1), (B2, b2)]`` (any leading axes) -> ``(A, B2, b2)`` and ``X1 = [X, 1]``."""
    (B1, b1), (B2, b2) = params
    A = jnp.concatenate([jnp.swapaxes(B1, -1, -2), b1[..., None, :]], axis=-2)
    return (A, B2, b2), jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1)


def _unpack_two_layer(state):
    A, B2, b2 = state
    return [(jnp.swapaxes(A[..., :-1, :], -1, -2), A[..., -1, :]), (B2, b2)]


def _scan_two_layer(state, X1, Y, step_size, reg, iters):
    """Scan :func:`_two_layer_step`; ``state`` may carry a leading axis of networks."""
    lead = state[0].shape[:-2]
    # X1 and X1' stored, with the networks' axis (broadcast here, outside the loop), so every
    # product in the loop is a plain (batched) matrix product with no transpose
    X1b = jnp.broadcast_to(X1, lead + X1.shape)
    X1Tb = jnp.broadcast_to(X1.T, lead + X1.T.shape)

    def body(state, _):
        return _two_layer_step(state, X1b, X1Tb, Y, step_size, reg)

    return jax.lax.scan(body, state, None, length=iters)


@_rank_promotion_allowed
def _scan(params, X, Y, step_size, reg, iters):
    if len(params) == 2:  # the lecture's two-layer net: the hand-written step
        state, X1 = _pack_two_layer(params, X)
        state, losses = _scan_two_layer(state, X1, Y, step_size, reg, iters)
        return _unpack_two_layer(state), losses

    def body(params, _):
        return jax_step(params, X, Y, step_size, reg)

    return jax.lax.scan(body, params, None, length=iters)


_train_compiled = jax.jit(_scan, static_argnames=("iters",))
"""``(params, X, Y, step_size, reg, iters) -> (params, losses (iters,))``, compiled."""

@_rank_promotion_allowed  # (traced in worker threads: settings are per thread)
def _scan_many(params, X, Y, step_sizes, reg, iters, group_size=None):
    M = step_sizes.shape[0]
    if len(params) == 2:  # the hand-written step, batched over networks (no vmap)
        state, X1 = _pack_two_layer(params, X)
        g = M if group_size is None else min(group_size, M)

        def train_group(args):
            state, losses = _scan_two_layer(args[0], X1, Y, args[1], reg, iters)
            return state, losses.T  # (g, iters)

        full = M - M % g
        grouped = jax.tree.map(lambda a: a[:full].reshape((full // g, g) + a.shape[1:]),
                               (state, step_sizes))
        out = jax.tree.map(lambda a: a.reshape((full,) + a.shape[2:]),
                           jax.lax.map(train_group, grouped))
        if full < M:  # the rest, a smaller group
            rest = train_group(jax.tree.map(lambda a: a[full:], (state, step_sizes)))
            out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, rest)
        state, losses = out
        return _unpack_two_layer(state), losses

    def train_one(ps):
        return _scan(ps[0], X, Y, ps[1], reg, iters)

    if group_size is None or group_size >= M:
        return jax.vmap(train_one)((params, step_sizes))
    # groups of `group_size` networks run their whole loop vmapped, one group after another
    return jax.lax.map(train_one, (params, step_sizes), batch_size=group_size)


_train_many_compiled = jax.jit(_scan_many, static_argnames=("iters", "group_size"))
"""The same, ``vmap``-ed over a leading axis of ``params`` and of ``step_size``."""


def _resolve_dtype(dtype, params):
    if dtype is None:
        dtype = np.result_type(*[np.asarray(B).dtype for B, _ in params], np.float32)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype: float64 needs JAX's 64-bit mode; turn it on (jax.config.update('jax_enable_x64', True), "
            "JAX_ENABLE_X64=1, or your jax's enable_x64 context manager) or ask for dtype='float32'"
        )
    return dtype


def _to_jax(params, X, y, K, dtype):
    jparams = [(jnp.asarray(B, dtype), jnp.asarray(b, dtype)) for B, b in params]
    Y = jnp.asarray(np.eye(int(params[-1][0].shape[0]), dtype=dtype)[y])
    return jparams, jnp.asarray(X, dtype), Y


def _chunks(iters: int, target: int = 50) -> list[int]:
    """Split ``iters`` into equal chunks (one compilation) when possible, else plus a rest."""
    for n in range(target, target // 5, -1):
        if iters % n == 0:
            return [iters // n] * n
    size = -(-iters // target)
    return [size] * (iters // size) + ([iters % size] if iters % size else [])


def _first_bad(losses: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(losses))
    return int(bad[0]) if bad.size else None


@_rank_promotion_allowed
def train_jax(X: Any, y: Any, params: Any, *, step_size: float = 1.0, reg: float = 1e-3,
              iters: int, dtype: Any = None, progress: Progress = None) -> TrainResult:
    """Full-batch gradient descent, the whole loop compiled with ``jax.jit`` over ``lax.scan``.

    ``params`` ``[(B^(l), b^(l))]``, any depth (e.g. ``lecture_init([2, 100, 3], seed)``).
    ``dtype``: ``float32`` or ``float64`` (default: that of ``params``, float64 needing
    JAX's 64-bit mode).  Without ``progress`` the loop is one compiled call; with it, the
    loop runs in about 50 compiled chunks with a progress report after each (same
    arithmetic).  Returns NumPy arrays; raises :class:`TrainingDiverged` on NaN or inf.
    """
    X, y, K = check_data(X, y)
    step_size, reg, iters = check_hyper(step_size, reg, iters)
    params, _ = check_network(params, X.shape[1], K)
    dtype = _resolve_dtype(dtype, params)
    jparams, jX, Y = _to_jax(params, X, y, K, dtype)
    chunks = [iters] if progress is None else _chunks(iters)
    pieces, done = [], 0
    for n in chunks:
        jparams, losses = _train_compiled(jparams, jX, Y, step_size, reg, iters=n)
        losses = np.asarray(losses, dtype=np.float64)
        bad = _first_bad(losses)
        if bad is not None:
            raise TrainingDiverged(done + bad, float(losses[bad]), step_size)
        pieces.append(losses)
        done += n
        if progress is not None:
            progress(done, float(losses[-1]))
    params_np = [(np.asarray(B), np.asarray(b)) for B, b in jparams]
    return finish(params_np, np.concatenate(pieces), X.astype(dtype), y, reg, step_size,
                  loss_fn=lambda p: float(jax_loss(jparams, jX, Y, reg)))


class ManyResult(NamedTuple):
    """The outcome of :func:`train_jax_many`, one row per network."""

    params: list
    """``[(B^(l), b^(l))]``, each array with a leading axis of length ``M`` (networks)."""
    losses: np.ndarray
    """Shape ``(M, iters)``."""
    final_losses: np.ndarray
    """Shape ``(M,)``."""
    train_accuracies: np.ndarray
    """Shape ``(M,)``."""


def stack_params(params_list: Any) -> list:
    """``M`` parameter lists of equal widths -> one list whose arrays have a leading ``M`` axis."""
    return [(np.stack([p[l][0] for p in params_list]), np.stack([p[l][1] for p in params_list]))
            for l in range(len(params_list[0]))]


def default_group_size() -> int | None:
    """16 networks at a time on a CPU (their activations stay in cache), all at once elsewhere."""
    return 16 if jax.default_backend() == "cpu" else None


def default_workers() -> int:
    """On a CPU, one worker thread per core this process may use; elsewhere 1."""
    if jax.default_backend() != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def _check_count(name: str, value: Any, allowed: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or value < 1):
        raise ValueError(f"{name}: expected an int >= 1, {allowed}, got {value!r}")
    return None if value is None else int(value)


def _train_parts(jparams, jX, Y, steps, reg, iters, group_size, workers):
    """:func:`_train_many_compiled` on ``workers`` consecutive slices of the networks at once.

    XLA:CPU runs the kernels of these small products on one core, so one call over all the
    networks leaves the other cores idle; a thread per slice (the compiled call releases
    the GIL) keeps them busy.  Each network's arithmetic is the same whichever slice or
    group it is in, up to rounding (batched kernels of other sizes may round differently).
    """
    M = int(steps.shape[0])
    bounds = np.linspace(0, M, min(workers, M) + 1).round().astype(int)
    x64 = bool(jax.config.jax_enable_x64)  # the enable_x64 context manager holds per thread

    def run(lo_hi):
        lo, hi = lo_hi
        part = jax.tree.map(lambda a: a[lo:hi], jparams)
        with enable_x64(x64):
            return jax.block_until_ready(_train_many_compiled(
                part, jX, Y, steps[lo:hi], reg, iters=iters, group_size=group_size))

    slices = list(zip(bounds[:-1], bounds[1:]))
    if len(slices) == 1:
        return run(slices[0])
    with ThreadPoolExecutor(len(slices)) as pool:
        outs = list(pool.map(run, slices))
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *outs)


@_rank_promotion_allowed
def train_jax_many(X: Any, y: Any, params_list: Any, *, step_size: Any = 1.0,
                   reg: float = 1e-3, iters: int, dtype: Any = None,
                   group_size: Any = "auto", workers: Any = "auto",
                   allow_divergence: bool = False) -> ManyResult:
    """Train ``M`` networks at once: ``jax.vmap`` of the compiled loop of :func:`train_jax`.

    ``params_list``: ``M`` parameter lists of the same widths (e.g. one
    ``lecture_init(widths, seed)`` per seed).  ``step_size``: one number, or ``M`` of them
    (a step-size sweep).  All networks share ``X``, ``y`` and ``reg``.  Raises
    :class:`TrainingDiverged` for the first network whose loss becomes NaN or inf, unless
    ``allow_divergence`` (then its losses keep the NaN, for sweeps that probe the edge).

    ``group_size``: how many networks share one vmapped loop; groups run one after another
    (``lax.map(..., batch_size=group_size)``), each through all ``iters`` steps.  ``None``:
    all at once.  ``"auto"``: :func:`default_group_size` (16 on a CPU, where 64 networks'
    activations at once spill out of cache and run about 1.7x slower per network).

    ``workers``: the networks are split into this many consecutive slices, trained at the
    same time from as many threads (each slice in groups of ``group_size``).  ``"auto"``:
    :func:`default_workers` (one per CPU core; 1 on a GPU).  The results depend on
    ``group_size`` and ``workers`` only through rounding; the time depends on them.
    """
    X, y, K = check_data(X, y)
    if isinstance(params_list, (str, bytes)) or not isinstance(params_list, Sequence):
        raise TypeError("params_list: expected a list of networks, each a list of (B, b) "
                        f"pairs (one network: [params]), got {type(params_list).__name__}")
    if len(params_list) == 0:
        raise ValueError("params_list: expected at least one network, got none")
    M = len(params_list)
    steps = np.broadcast_to(np.asarray(step_size, dtype=np.float64), (M,)).copy() \
        if np.ndim(step_size) in (0, 1) and np.size(step_size) in (1, M) else None
    if steps is None:
        raise ValueError(f"step_size: expected one number or {M} (one per network), "
                         f"got shape {np.shape(step_size)}")
    for s in steps:
        check_hyper(float(s), reg, iters)
    reg, iters = float(reg), int(iters)
    checked = []
    for m, p in enumerate(params_list):
        p, widths = check_network(p, X.shape[1], K, name=f"params_list[{m}]")
        if m == 0:
            first = widths
        elif widths != first:
            raise ValueError(f"params_list[{m}]: widths {widths} differ from params_list[0]'s "
                             f"{first}; networks trained together must have the same widths")
        checked.append(p)
    params_list = checked
    dtype = _resolve_dtype(dtype, params_list[0])
    stacked = stack_params(params_list)
    _, jX, Y = _to_jax([(B[0], b[0]) for B, b in stacked], X, y, K, dtype)
    jparams = [(jnp.asarray(B, dtype), jnp.asarray(b, dtype)) for B, b in stacked]
    if group_size == "auto":
        group_size = default_group_size()
    group_size = _check_count("group_size", group_size, "None or 'auto'")
    if workers == "auto":
        workers = default_workers()
    if workers is None:
        raise ValueError("workers: expected an int >= 1 or 'auto', got None")
    workers = _check_count("workers", workers, "or 'auto'")
    jparams, losses = _train_parts(jparams, jX, Y, jnp.asarray(steps, dtype), reg, iters,
                                   group_size, workers)
    losses = np.asarray(losses, dtype=np.float64)
    if not allow_divergence:
        for m in range(M):
            bad = _first_bad(losses[m])
            if bad is not None:
                raise TrainingDiverged(bad, float(losses[m, bad]), float(steps[m]), network=m)
    final = np.asarray(jax.vmap(jax_loss, in_axes=(0, None, None, None))(jparams, jX, Y, reg),
                       dtype=np.float64)
    if not allow_divergence:  # the last update, after the last loss the loop checked
        for m in np.flatnonzero(~np.isfinite(final)):
            raise TrainingDiverged(iters, float(final[m]), float(steps[m]), network=int(m))
    out = [(np.asarray(B), np.asarray(b)) for B, b in jparams]
    Xd = X.astype(dtype)
    accs = np.array([_accuracy(_np_scores([(B[m], b[m]) for B, b in out], Xd), y)
                     for m in range(M)])
    return ManyResult(out, losses, final, accs)


def _np_scores(params, X):
    from ._core import scores

    with np.errstate(over="ignore", invalid="ignore"):
        return scores(params, X)
