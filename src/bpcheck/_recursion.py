"""The backward recursion of the lecture's bonus question, and the Jacobian it gives.

For widths ``d_0, ..., d_{L+1}`` and elementwise activations ``sigma_l`` (ReLU by default)::

    z^(l) = B^(l) a^(l-1) + b^(l),      a^(l) = sigma_l(z^(l)),     a^(0) = x
    D^(l) = diag(sigma_l'(z^(l)))                             (ReLU: 1[z^(l) > 0])
    V^(L+1) = I_K,   V^(l) = V^(l+1) B^(l+1) D^(l)         (= d z^(L+1) / d b^(l)')
    U^(l) = V^(l) (I_{d_l} kron a^(l-1)')                    (= d z^(L+1) / d beta^(l)')

Batched, one example per row, ``U^(l)[n, k, i*d_{l-1} + j] = V^(l)[n, k, i] * a^(l-1)[n, j]``.
The same recursion applied to one vector per example gives ``J' e`` (:func:`pullback`,
right to left) and ``J v`` (:func:`push`, left to right) without the factors.
No autodiff is used here; the tests compare against ``jax.jacrev``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from ._activations import resolve_activations
from ._arrays import bias_flags, check_out, host_buffer, on_default_cpu, prepare, to_jax
from ._model import (in_model_layers, in_model_layout, layouts_of, model_inputs, model_params, wanted_flat,
                     weight_shape)
from ._compiled import built, call, replayed, without_axis, written
from ._params import param_count, trim_beta, without_biases


class LayerFactors(NamedTuple):
    """The factors of layer ``l`` (record ``l-1`` of :func:`jacobian_factors`).

    Shapes are batched; with a single example ``x`` of shape ``(d_0,)`` the leading
    ``N`` axis is dropped.
    """

    V: Any
    """``V^(l) = d z^(L+1) / d b^(l)'``, shape ``(N, K, d_l)``."""
    a_prev: Any
    """``a^(l-1)``, the layer's input, shape ``(N, d_{l-1})``."""
    D: Any
    """The diagonal of ``D^(l) = diag(sigma_l'(z^(l)))`` (ReLU: ``1[z^(l) > 0]``), shape
    ``(N, d_l)``; all ones for the output layer ``l = L+1``, which has no activation."""
    z: Any
    """The pre-activation ``z^(l)``, shape ``(N, d_l)``."""


def _forward_layers(params, X, acts, xp):
    """Inputs ``a^(l-1)`` and pre-activations ``z^(l)`` of every layer ``l = 1..L+1``, and the
    diagonals of ``D^(l)`` for the hidden layers ``l = 1..L``."""
    a = X
    a_prevs, zs, Ds = [], [], []
    for (B, b), act in zip(params, acts + (None,)):
        z = _product(a, B.T, xp)
        z = z + b if xp is not np else np.add(z, b, out=z)  # NumPy: no second array
        a_prevs.append(a)
        zs.append(z)
        if act is not None:
            a, D = act.value_and_derivative(z, xp)
            Ds.append(D)
    return a_prevs, zs, Ds


def _backward(params, acts, Ds, N, xp, dtype):
    """``V^(l)`` for ``l = L+1, ..., 1``: ``V^(l) = V^(l+1) B^(l+1) D^(l)`` from ``V^(L+1) = I``."""
    K = params[-1][0].shape[0]
    V = xp.broadcast_to(xp.eye(K, dtype=dtype), (N, K, K))
    Vs = [V]
    for l in range(len(params) - 2, -1, -1):
        B_next = params[l + 1][0]
        d_next, d = B_next.shape
        if xp is np:  # into memory of the result pool, masked in place: no second array
            VB = np.matmul(V.reshape(N * K, d_next), B_next,
                           out=host_buffer((N * K, d), np.result_type(V, B_next)))
            V = acts[l].times_derivative(VB.reshape(N, K, d), Ds[l][:, None, :], xp, True)
        else:
            VB = (V.reshape(N * K, d_next) @ B_next).reshape(N, K, d)
            V = acts[l].times_derivative(VB, Ds[l][:, None, :], xp)
        Vs.append(V)
    Vs.reverse()
    if xp is np:
        Vs[-1] = np.array(Vs[-1])  # a writable I, not a broadcast view
    return Vs


def pullback(params, acts, Ds, e, xp):
    """``delta^(l) = V^(l)' e`` for every layer, from ``V^(L+1)' e = e`` (``e``: ``(N, K)``).

    ``V^(l)' e = D^(l) B^(l+1)' V^(l+1)' e``, the transpose of :func:`_backward`'s step.
    Returns ``L+1`` arrays ``(N, d_l)`` in layer order.
    """
    deltas, own = [e], xp is np  # NumPy: each product masked in place
    for l in range(len(params) - 2, -1, -1):
        deltas.append(acts[l].times_derivative(_product(deltas[-1], params[l + 1][0], xp), Ds[l],
                                               xp, own))
    deltas.reverse()
    return deltas


def push(params, acts, Ds, a_prevs, tangents, xp):
    """``J v = sum_l V^(l) (dB^(l) a^(l-1) + db^(l))`` by Horner's rule, shape ``(N, K)``.

    ``tangents``: ``[(dB^(l), db^(l))]`` shaped like ``params``.  With
    ``t^(l) = sum_{m <= l} (V^(l) of layer m's term)``: ``t^(1) = dB^(1) a^(0) + db^(1)``,
    ``t^(l) = B^(l) D^(l-1) t^(l-1) + dB^(l) a^(l-1) + db^(l)``, ``J v = t^(L+1)``.
    """
    t = None  # (NumPy's G v runs this recursion inside its own loop: _gauss_newton)
    for l, ((B, _), (dB, db)) in enumerate(zip(params, tangents)):
        term = a_prevs[l] @ dB.T + db
        if t is not None:
            term = term + acts[l - 1].times_derivative(t, Ds[l - 1], xp) @ B.T
        t = term
    return t


def _product(x, y, xp):
    """``x @ y`` for a matrix ``y``; NumPy's ``np.dot`` for two matrices, whose call costs
    about 0.5 microseconds less than ``matmul``'s (a tenth of a product of 64 x 32 by
    32 x 32)."""
    return np.dot(x, y) if xp is np and x.ndim == 2 else x @ y


def _outputs(params, X, acts, xp):
    if xp is np:
        return _outputs_numpy(params, X, acts)
    a = X
    for (B, b), act in zip(params[:-1], acts):
        a = act.value(a @ B.T + b, xp)
    B, b = params[-1]
    return a @ B.T + b


_SPLIT_WORK = 1 << 22  # multiply-adds of a NumPy forward pass from which its rows are split


def _outputs_numpy(params, X, acts):
    """NumPy's forward pass, each layer's output written over its pre-activation; for a
    large batch the rows are split over the cores, each running the whole pass with
    BLAS on one thread (np.tanh and the other activations run on one core, so one
    thread per core beats BLAS's threads on the products alone)."""
    N = X.shape[0]
    out = np.empty((N, params[-1][0].shape[0]), dtype=X.dtype)

    def rows(n0, n1):
        a = X[n0:n1]
        for (B, b), act in zip(params[:-1], acts):
            z = a @ B.T
            z += b
            a = act.value(z, np, out=z)
        B, b = params[-1]
        np.matmul(a, B.T, out=out[n0:n1])
        out[n0:n1] += b

    work = N * sum(B.size for B, _ in params)
    if work < _SPLIT_WORK or min(_THREADS, N) < 2 or not _in_main_thread():
        rows(0, N)  # (another thread's split would run on BLAS's threads too: slower)
        return out
    with _single_threaded_blas(True):
        by_rows(rows, N, work, _SPLIT_WORK)
    return out


@replayed("params", "X")
def forward(params: Any, X: Any, *, activation: Any = None):
    """Network outputs ``z^(L+1)``.

    ``params``: ``[(B^(1), b^(1)), ..., (B^(L+1), b^(L+1))]``, ``B^(l)`` of shape
    ``(d_l, d_{l-1})``; ``b^(l)`` ``None`` for a layer without a bias (then, in every
    function, ``beta`` has no entries for it and per-layer results hold ``None`` in its
    place).  ``X``: inputs, shape ``(N, d_0)`` or ``(d_0,)``.
    ``activation``: a name (``"relu"``, ``"leaky_relu"``, ``"elu"``, ``"selu"``, ``"tanh"``,
    ``"sigmoid"``, ``"softplus"``, ``"gelu"``, ``"gelu_tanh"``, ``"silu"``, ``"mish"``,
    ``"celu"``, ``"soft_sign"``, ``"relu6"``, ``"hard_tanh"``, ``"hard_sigmoid"``,
    ``"hard_swish"``, ``"identity"``), a
    :class:`bpcheck.Activation`, or a list of ``L`` of those, one per hidden layer; the
    output layer is linear.  ``None``: ReLU, or the model's own when ``params`` is a
    :class:`bpcheck.Network` or a model (see :func:`bpcheck.network`, which every function
    here takes in place of ``params``).  Returns shape ``(N, K)`` (or ``(K,)``), in NumPy
    or JAX following the inputs (JAX: compiled once per configuration; NumPy: a large
    batch's rows split over the cores).
    """
    params, activation, net = model_params(params, activation)
    X = model_inputs(net, X)
    params, _, X2, single, xp, _, unchecked = prepare(params, X, defer_finite=True)
    acts = resolve_activations(activation, len(params) - 1)
    out = call(_outputs, xp, (acts,), params, X2, unchecked=unchecked)
    return without_axis(out) if single else out


def _factors(params, X, acts, xp):
    """The factors of every layer; NumPy's ``a^(0)`` is ``X`` itself (see
    :func:`kept_factors` for factors that outlive the call)."""
    a_prevs, zs, Ds = _forward_layers(params, X, acts, xp)
    Vs = _backward(params, acts, Ds, X.shape[0], xp, X.dtype)
    Ds = Ds + [xp.ones_like(zs[-1])]
    return [LayerFactors(V, a, D, z) for V, a, D, z in zip(Vs, a_prevs, Ds, zs)]


def kept_factors(params, X, acts, xp):
    """:func:`_factors` for a result the caller keeps (:func:`jacobian_factors`, an
    operator's stored factors): NumPy's ``a^(0)`` a copy of ``X``, since the caller may
    write into ``X`` or into the result afterwards."""
    fs = _factors(params, X, acts, xp)
    if xp is np:
        fs[0] = fs[0]._replace(a_prev=X.copy())
    return fs


@replayed("params", "X")
def jacobian_factors(params: Any, X: Any, *, activation: Any = None) -> list[LayerFactors]:
    """Per-layer factors of the Jacobian, by the backward recursion (no autodiff).

    ``params``: ``[(B^(l), b^(l))]``, ``B^(l)`` of shape ``(d_l, d_{l-1})``.
    ``X``: inputs, shape ``(N, d_0)`` or a single example ``(d_0,)``.
    ``activation``: as in :func:`forward`.

    Returns ``L+1`` :class:`LayerFactors`; record ``l-1`` holds ``V`` = ``V^(l)``
    ``(N, K, d_l)``, ``a_prev`` = ``a^(l-1)`` ``(N, d_{l-1})``, ``D`` (the diagonal of
    ``D^(l) = diag(sigma'(z^(l)))``) and ``z`` = ``z^(l)``, both ``(N, d_l)``.
    ``V^(l) = V^(l+1) B^(l+1) D^(l)`` with ``V^(L+1) = I_K``.  NumPy in, NumPy out; JAX in,
    JAX out (compiled once per configuration; jit/vmap-able).
    """
    params, activation, net = model_params(params, activation)
    X = model_inputs(net, X)
    params, _, X2, single, xp, _, unchecked = prepare(params, X, defer_finite=True)
    acts = resolve_activations(activation, len(params) - 1)
    records = call(kept_factors, xp, (acts,), params, X2, unchecked=unchecked)
    if single:
        records = without_axis(records)
    return records


def _as_blocks(block, d, dp):
    """A view of ``block`` (``(..., d * dp)``, last axis unit-strided) as ``(..., d, dp)``:
    where ``vec(M')`` of a ``(d, dp)`` matrix ``M`` is written in place."""
    s = block.strides
    return np.lib.stride_tricks.as_strided(block, shape=block.shape[:-1] + (d, dp),
                                           strides=s[:-1] + (s[-1] * dp, s[-1]))


def _fill_numpy(out, factors, n0, n1):
    """Write rows ``n0:n1`` of the Jacobian in place, block by block, in ``beta`` order."""
    off = 0
    for f in factors:
        V, a = f.V[n0:n1], f.a_prev[n0:n1]
        d, dp = V.shape[2], a.shape[1]
        view = _as_blocks(out[n0:n1, :, off:off + d * dp], d, dp)
        np.multiply(V[:, :, :, None], a[:, None, None, :], out=view)
        off += d * dp
        out[n0:n1, :, off:off + d] = V
        off += d


_THREADS = max(1, min(os.cpu_count() or 1, 8))
_THREADED_SIZE = 1 << 20  # entries of J from which the fill is split over threads


@functools.lru_cache(maxsize=1)
def _blas_libraries():
    """threadpoolctl's handles on the BLAS libraries loaded in this process."""
    from threadpoolctl import ThreadpoolController

    return [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _single_threaded_blas(active: bool):
    """BLAS on one thread inside the block, when ``active`` and called from the main thread.

    For products followed by a threaded fill, or computed by several threads at once:
    OpenBLAS's worker threads keep spinning for a while after a product, and other
    threads then share the cores with them (measured: 175 ms instead of 130 ms for the
    1.1 GB Jacobian of ``benchmarks/jacobian.py``).  The count is process-wide, so only
    the main thread changes it: sections overlapping in other threads would restore each
    other's counts (and OpenBLAS 0.3.31 ignores a count set by another thread once the
    main thread has set one).
    """
    if not (active and _in_main_thread()):
        yield
        return
    saved = [(lib, lib.num_threads) for lib in _blas_libraries()]
    for lib, _ in saved:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, threads in saved:
            lib.set_num_threads(threads)


_POOL: list = []  # the worker threads of by_rows, started on first use


def _pool() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max(1, _THREADS - 1), thread_name_prefix="bpcheck"))
    return _POOL[0]


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_POOL.clear)


def by_rows(fill, N: int, size: int, threshold: int | None = None) -> None:
    """``fill(n0, n1)`` for consecutive row ranges covering ``0..N``, one per core when
    ``size`` (the output's entries, or the work) is at least ``threshold`` (default
    ``_THREADED_SIZE``), else ``fill(0, N)``.  The caller's thread fills the first range,
    a pool of worker threads the others; every range is done when this returns.

    For writing large outputs in place: NumPy's elementwise products run on one core,
    and the writes (and first-touch page faults) of a fresh array are the cost.
    """
    threads = min(_THREADS, N) if size >= (_THREADED_SIZE if threshold is None else threshold) else 1
    if threads <= 1:
        fill(0, N)
        return
    bounds = np.linspace(0, N, threads + 1).astype(int).tolist()
    pool = _pool()
    others = [pool.submit(fill, bounds[i], bounds[i + 1]) for i in range(1, threads)]
    try:
        fill(bounds[0], bounds[1])
    finally:
        concurrent.futures.wait(others)
    for future in others:
        future.result()  # a worker's exception, raised here


def _assemble_numpy(factors, out=None):
    N, K, _ = factors[0].V.shape
    P = sum(f.V.shape[2] * (f.a_prev.shape[1] + 1) for f in factors)
    if out is None:
        out = host_buffer((N, K, P), factors[0].V.dtype)
    by_rows(lambda n0, n1: _fill_numpy(out, factors, n0, n1), N, N * K * P)
    return out


def _assemble_jax(factors):
    """The Jacobian as one buffer written block by block, in ``beta`` order
    (:func:`bpcheck._compiled.written`)."""
    N, K, _ = factors[0].V.shape
    blocks = []
    for f in factors:
        size = f.V.shape[2] * f.a_prev.shape[1]  # (not -1: N may be 0)
        blocks += [(f.V[:, :, :, None] * f.a_prev[:, None, None, :]).reshape(N, K, size), f.V]
    return written(blocks, axis=2)


def _jacobian_jax(params, X, acts, xp):
    return _assemble_jax(_factors(params, X, acts, xp))


def outer(left, right, layout: str, out=None):
    """``left right'`` per leading index, in ``layout``: ``left[..., :, None] *
    right[..., None, :]`` for ``"out_in"`` (``left``: the ``d_l`` side, ``(..., d_l)``;
    ``right``: ``a^(l-1)``, ``(N, d_{l-1})``, broadcast over any axes between), its
    transpose written as such for ``"in_out"`` (no transposed copy afterwards: for the
    per-example gradients of a 784-1024-1024-10 network that copy took 280 of 350 ms).
    ``out``: NumPy only, the array to write the product into."""
    mid = (None,) * (left.ndim - right.ndim)
    r = right[(slice(None),) + mid]
    x, y = (left[..., :, None], r[..., None, :]) if layout == "out_in" else \
        (r[..., :, None], left[..., None, :])
    return x * y if out is None else np.multiply(x, y, out=out)


def _jacobian_layers_jax(params, X, acts, layouts, xp):
    """The Jacobian per layer, ``[(J_W^(l), J_b^(l))]``, each block its own array, each
    weight's in its layer's layout (:func:`outer`): under ``jax.jit`` XLA on
    the CPU writes these about 2.5 times as fast as the one flat buffer (64-256x4-10,
    N = 128: 165 against 410-460 ms), and slicing that buffer into layers copies it again
    (820 ms)."""
    return [(outer(f.V, f.a_prev, layout), f.V)
            for f, layout in zip(_factors(params, X, acts, xp), layouts)]


def _fill_layers_numpy(blocks, factors, layouts, n0, n1):
    """Write rows ``n0:n1`` of each layer's ``J_W^(l)`` in place, in its layout."""
    for J_W, f, layout in zip(blocks, factors, layouts):
        outer(f.V[n0:n1], f.a_prev[n0:n1], layout, out=J_W[n0:n1])


@replayed("params", "X")
def jacobian(params: Any, X: Any, *, activation: Any = None, flat: bool = True, out: Any = None):
    """The per-example Jacobian ``d z^(L+1) / d beta'``, assembled from the factors.

    ``X``: inputs, shape ``(N, d_0)`` (or ``(d_0,)``); ``activation``: as in
    :func:`forward`.  Returns ``(N, K, P)`` (or ``(K, P)``), columns in ``beta`` order
    ``[vec(B^(1)'), b^(1), ...]``; the block of ``vec(B^(l)')`` is
    ``U^(l) = V^(l) (I kron a^(l-1)')`` and that of ``b^(l)`` is ``V^(l)``.  NumPy inputs:
    written once, in place, by all cores.  JAX inputs: compiled once per configuration,
    usable under ``jax.jit`` and ``jax.vmap``; a large Jacobian of concrete arrays on the
    CPU is written as NumPy's, from the compiled factors, and handed to JAX without a copy.

    ``flat=False``: the same numbers per layer, ``[(J_B^(l), J_b^(l))]`` of shapes
    ``(N, K, d_l, d_{l-1})`` and ``(N, K, d_l)`` (NumPy: views of the flat array; JAX: one
    array per block, the flat one never written, which under ``jax.jit`` on the CPU takes
    about half the flat result's time); for a
    :class:`bpcheck.Network` or a model, in the model's own structure and orientation.

    ``out``: NumPy inputs only, an array of exactly the flat result's shape and dtype,
    sharing no memory with the inputs, to write the Jacobian into (with ``flat=False`` the
    per-layer results are views of it): for repeated calls on batches of one size, no fresh
    memory for the kernel to zero each time.
    """
    params, activation, net = model_params(params, activation)
    X = model_inputs(net, X)
    flat = wanted_flat(flat, net)
    biases = bias_flags(params)  # layers without a bias: computed with zeros, columns left out
    params, widths, X2, single, xp, _, unchecked = prepare(params, X, defer_finite=True)
    acts = resolve_activations(activation, len(params) - 1)
    P = sum(d * (dp + 1) for dp, d in zip(widths, widths[1:]))
    inputs = [t for pair in params for t in pair] + [X2]
    if out is not None:
        if xp is not np:
            raise TypeError("out: the Jacobian is written in place for NumPy inputs only (JAX "
                            "arrays are immutable); got JAX inputs")
        shape = (() if single else (X2.shape[0],)) + (widths[-1], param_count(widths, biases))
        out = check_out("out", out, shape, X2.dtype, inputs)
    large = X2.shape[0] * widths[-1] * P >= _THREADED_SIZE
    layouts = layouts_of(net, len(params))  # each weight's orientation, for flat=False
    if xp is not np and large and on_default_cpu(inputs):
        # concrete arrays on the CPU: the factors from the compiled program, the Jacobian
        # filled by NumPy's threads (XLA writes it at a third of the speed) into a buffer
        # that JAX takes over without a copy; per layer, each block in its own buffer (J_b
        # is V itself)
        factors = call(_factors, xp, (acts,), params, X2, unchecked=unchecked)
        host = [LayerFactors(np.asarray(f.V), np.asarray(f.a_prev), None, None) for f in factors]
        N, K = X2.shape[0], widths[-1]
        if flat:
            J = to_jax(_assemble_numpy(host, host_buffer((N, K, P), host[0].V.dtype)))
        else:
            blocks = [host_buffer((N, K) + weight_shape(f.V.shape[2], f.a_prev.shape[1], layout),
                                  f.V.dtype) for f, layout in zip(host, layouts)]
            by_rows(lambda n0, n1: _fill_layers_numpy(blocks, host, layouts, n0, n1), N, N * K * P)
            J = [(to_jax(J_W), f.V) for J_W, f in zip(blocks, factors)]
    elif xp is not np:
        kernel, static = (_jacobian_jax, (acts,)) if flat else (_jacobian_layers_jax, (acts, layouts))
        J = call(kernel, xp, static, params, X2, unchecked=unchecked)
    else:
        rows = None if out is None or biases is not None else out[None] if single else out
        with _single_threaded_blas(large):
            J = _assemble_numpy(_factors(params, X2, acts, np), rows)
    J = out if out is not None and biases is None else without_axis(J) if single else J
    if type(J) is list:
        if biases is not None and net is None:  # (built: a repeat call does the same)
            return built(J, lambda J: without_biases(J, biases))
        return in_model_layers(without_biases(J, biases), net)
    if biases is not None:
        if out is None and net is None and flat:
            return built(J, lambda J: trim_beta(J, widths, biases))
        J = trim_beta(J, widths, biases)
        if out is not None:
            out[...] = J
            J = out
    return in_model_layout(J, widths, net, flat, biases)
