"""The empirical neural tangent kernel from the factors, never from the Jacobian.

``Theta(x_i, x_j) = J_i J_j'`` (``K x K``).  The block of ``beta^(l)`` in ``J_i`` is
``U_i^(l) = V_i^(l) (I kron a_i^(l-1)')`` and that of ``b^(l)`` is ``V_i^(l)``, so, with
``(I kron a_i')(I kron a_j) = (a_i' a_j) I``,

    Theta(x_i, x_j) = sum_l V_i^(l) V_j^(l)' (a_i^(l-1)' a_j^(l-1) + 1).

One layer costs a Gram matrix of the ``V`` rows, ``(N_1 K, d_l) x (d_l, N_2 K)``, scaled
entrywise by ``A A' + 1``: ``O(N^2 K^2 d_l)`` instead of ``O(N^2 K^2 d_l d_{l-1})`` for
the Jacobian contraction, and no ``(N, K, P)`` array.  The output layer has
``V^(L+1) = I_K`` and contributes ``I_K (a_i^(L)' a_j^(L) + 1)``.  The trace
``tr Theta(x_i, x_j) = sum_l <V_i^(l), V_j^(l)>_F (a_i' a_j + 1)`` is the same Gram
matrix over the flattened ``(K d_l)`` rows.

For large batches the kernel is computed tile by tile (rows ``block_size`` at a time,
columns an eighth of that), recomputing the column factors per row block, so memory
stays near the output's size; with ``X2`` omitted only the tiles on and above the
diagonal are computed and mirrored (``Theta(x_j, x_i) = Theta(x_i, x_j)'``).
Reference: the "structured derivatives" of Novak et al., "Fast Finite Width Neural
Tangent Kernel", ICML 2022, which exploit the same Kronecker structure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._activations import resolve_activations
from ._arrays import (backend, bias_flags, check_all_finite, check_inputs, check_params, common_dtype,
                      param_names, split_finite_checks)
from ._compiled import call, replayed, without_axis
from ._model import model_inputs, model_params
from ._recursion import _factors as layer_factors
from ._sharding import batch_parallel, resolve_mesh

_SINGLE_TILE_BYTES = 256 << 20
"""Factors of up to this many bytes (or up to the output's size) are held for all rows."""
_TILE_BYTES = 64 << 20
"""Otherwise a tile's row factors get this, or half the output if larger.  Trace NTK at
N = 8192 (784-1024-1024-1024-10, float32, 2-core CPU), rows per tile -> seconds, peak
over the inputs: 512 -> 33.7 s, 396 MiB; 768 -> 29.0 s, 465 MiB; 1024 -> 25.2 s,
539 MiB; 2048 -> 25.8 s, 801 MiB (the output is 256 MiB).  Half the output gives about
1000 rows there; the budget was the whole output (about 2000 rows, 28.6 s, 770 MiB)."""


def _factors(params, X, acts, xp):
    """``[(V^(l), a^(l-1))]`` for the hidden layers ``l = 1..L``, and ``a^(L)``."""
    fs = layer_factors(params, X, acts, xp)
    return [(f.V, f.a_prev) for f in fs[:-1]], fs[-1].a_prev


def _tile(f1, f2, K, trace, xp, biases=None):
    """``sum_l V_i V_j' (a_i' a_j + 1)`` for one tile: ``(n1, n2)`` or ``(n1, n2, K, K)``;
    without the ``+ 1`` (the bias's term) for a layer whose ``biases`` entry is ``False``."""
    (hidden1, aL1), (hidden2, aL2) = f1, f2
    n1, n2 = aL1.shape[0], aL2.shape[0]
    one = (lambda l: 1) if biases is None else (lambda l: 1 if biases[l] else 0)
    S = aL1 @ aL2.T + one(-1)  # output layer: V^(L+1) = I_K
    out = K * S if trace else S[:, None, :, None] * xp.eye(K, dtype=S.dtype)[:, None, :]
    for l, ((V1, a1), (V2, a2)) in enumerate(zip(hidden1, hidden2)):
        S = a1 @ a2.T + one(l)
        if trace:
            out = out + (V1.reshape(n1, -1) @ V2.reshape(n2, -1).T) * S
        else:
            d = V1.shape[2]
            G = (V1.reshape(n1 * K, d) @ V2.reshape(n2 * K, d).T).reshape(n1, K, n2, K)
            out = out + G * S[:, None, :, None]
    return out if trace else out.transpose(0, 2, 1, 3)


def _mirror(tile, trace):
    """``Theta(x_j, x_i) = Theta(x_i, x_j)'``: swap the two example axes and the two ``K`` axes."""
    return tile.T if trace else tile.transpose(1, 0, 3, 2)


def _tile_sizes(N1, N2, symmetric, widths, trace, itemsize, block_size):
    """Rows and columns per tile; one tile when the factors of all rows fit the budget."""
    K = widths[-1]
    per_row = itemsize * (K * sum(widths[1:-1]) + sum(widths[:-1]))  # V's and a's of one example
    if block_size is None:
        out_bytes = N1 * N2 * (1 if trace else K * K) * itemsize
        budget = max(out_bytes, _SINGLE_TILE_BYTES)
        if (N1 + (0 if symmetric else N2)) * per_row <= budget:
            return N1, N2
        block_size = max(1, max(out_bytes // 2, _TILE_BYTES) // per_row)
    return min(block_size, N1), min(max(1, math.ceil(block_size / 8)), N2)


def _ntk_numpy(params, X1, X2, K, trace, rows, cols, acts, biases, xp):
    symmetric = X2 is None
    Xc = X1 if symmetric else X2
    N1, N2 = X1.shape[0], Xc.shape[0]
    if (rows, cols) == (N1, N2):
        f1 = _factors(params, X1, acts, xp)
        return _tile(f1, f1 if symmetric else _factors(params, Xc, acts, xp), K, trace, np, biases)
    out = np.empty((N1, N2) if trace else (N1, N2, K, K), dtype=X1.dtype)
    for r in range(0, N1, rows):
        f1 = _factors(params, X1[r:r + rows], acts, xp)
        for c in range(r if symmetric else 0, N2, cols):
            t = _tile(f1, _factors(params, Xc[c:c + cols], acts, xp), K, trace, np, biases)
            out[r:r + rows, c:c + cols] = t
            if symmetric:
                out[c:c + cols, r:r + rows] = _mirror(t, trace)
    return out


def _ntk_traced(params, X1, X2, K, trace, rows, cols, acts, biases, xp):
    """The JAX version of :func:`_ntk_numpy`: ``lax`` loops over tiles whose starts are
    clamped (the last tile overlaps its neighbour and rewrites equal values), so every
    shape is static and the output buffer is updated in place."""
    import jax.numpy as jnp
    from jax import lax

    symmetric = X2 is None
    Xc = X1 if symmetric else X2
    N1, N2 = X1.shape[0], Xc.shape[0]
    if (rows, cols) == (N1, N2):
        f1 = _factors(params, X1, acts, xp)
        return _tile(f1, f1 if symmetric else _factors(params, Xc, acts, xp), K, trace, jnp,
                     biases)
    zeros = () if trace else (0, 0)

    def row_block(i, out):
        r = jnp.minimum(i * rows, N1 - rows)
        f1 = _factors(params, lax.dynamic_slice_in_dim(X1, r, rows), acts, xp)
        c0 = r if symmetric else 0

        def col_block(j, out):
            c = jnp.minimum(c0 + j * cols, N2 - cols)
            t = _tile(f1, _factors(params, lax.dynamic_slice_in_dim(Xc, c, cols), acts, xp), K, trace,
                      jnp, biases)
            out = lax.dynamic_update_slice(out, t, (r, c) + zeros)
            if symmetric:
                out = lax.dynamic_update_slice(out, _mirror(t, trace), (c, r) + zeros)
            return out

        count = -(-N2 // cols)
        if not symmetric:
            return lax.fori_loop(0, count, col_block, out)
        # the tiles from the diagonal on: fewer than ``count`` for a later row block, the
        # rest skipped; a loop of static length, which jax.grad can reverse (a fori_loop
        # with a traced stop is a while_loop, which it cannot)
        stop = (N2 - c0 + cols - 1) // cols
        return lax.fori_loop(0, count, lambda j, out: lax.cond(j < stop, col_block,
                                                               lambda j, out: out, j, out), out)

    out = jnp.zeros((N1, N2) if trace else (N1, N2, K, K), dtype=X1.dtype)
    return lax.fori_loop(0, -(-N1 // rows), row_block, out)


def _repeatable(params, X1, *args, **options):
    """For a repeat call (:func:`bpcheck._compiled.replayed`): ``X1`` still not split over
    devices (its mesh would be used), as in the first call."""
    return resolve_mesh(None, X1) is None


@replayed("params", "X1", "X2", recheck=_repeatable)
def ntk(
    params: Any,
    X1: Any,
    X2: Any = None,
    *,
    trace: bool = False,
    block_size: int | None = None,
    activation: Any = None,
    mesh: Any = None,
    gather: bool = True,
):
    """The empirical neural tangent kernel ``Theta(x_i, x_j) = J_i J_j'``, from the factors.

    ``params``: ``[(B^(l), b^(l))]``, ``B^(l)`` of shape ``(d_l, d_{l-1})``.
    ``X1``: inputs ``(N1, d_0)``; ``X2``: inputs ``(N2, d_0)``, or ``None`` for ``X1``
    (then only tiles on and above the diagonal are computed).  A single example
    ``(d_0,)`` drops its axis from the result.

    Returns ``(N1, N2, K, K)`` with ``[i, j] = sum_l V_i^(l) V_j^(l)' (a_i^(l-1)' a_j^(l-1)
    + 1)`` (``J`` with columns in ``beta`` order, as :func:`bpcheck.jacobian`; no ``+ 1``
    for a layer without a bias, ``(B, None)``), or with
    ``trace=True`` the ``(N1, N2)`` matrix of ``tr Theta(x_i, x_j)``.  Neither
    ``(N, K, P)`` nor, for the trace, ``(N1, N2, K, K)`` arrays are formed.

    ``block_size``: rows of ``X1`` per tile (columns: an eighth of that); ``None`` holds
    the factors of all rows when they fit in ``max(output size, 256 MiB)``, and otherwise
    picks tiles whose row factors fit ``max(output size / 2, 64 MiB)``, keeping the peak
    memory near the output's size (``block_size`` sets it directly).
    ``activation``: as in :func:`bpcheck.forward`.
    ``mesh``: a ``jax.sharding.Mesh``; the rows of ``X1`` are split over all its devices
    (by default, the mesh ``X1`` is already sharded over, if any), each device computing
    its rows of the kernel against all of ``X2``.  ``gather=True`` returns the result
    replicated on every device, ``gather=False`` leaves it split by rows.

    NumPy in, NumPy out; JAX (or a mesh) in, JAX out, jit-compiled with matmuls at
    ``precision="highest"``, once per configuration (usable under ``jax.jit`` with
    ``trace``, ``block_size``, ``activation`` and ``mesh`` static).

    >>> import numpy as np, bpcheck
    >>> params = bpcheck.init_params([3, 4, 2], seed=0)
    >>> X = np.ones((5, 3))
    >>> bpcheck.ntk(params, X).shape, bpcheck.ntk(params, X, trace=True).shape
    ((5, 5, 2, 2), (5, 5))
    """
    if not isinstance(trace, (bool, np.bool_)):
        raise TypeError(f"trace: expected True or False, got {trace!r}")
    trace = bool(trace)
    if not isinstance(gather, (bool, np.bool_)):
        raise TypeError(f"gather: expected True or False, got {gather!r}")
    gather = bool(gather)
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer))
        or block_size < 1
    ):
        raise ValueError(f"block_size: expected None or an int >= 1, got {block_size!r}")
    mesh = resolve_mesh(mesh, X1)
    xp = None
    if mesh is not None or backend(X1, X2) is not np:
        import jax.numpy as jnp

        xp = jnp
    params, activation, net = model_params(params, activation)
    X1, X2 = model_inputs(net, X1, "X1"), model_inputs(net, X2, "X2")
    biases = bias_flags(params)
    params, widths, xp = check_params(params, xp, finite=False)
    acts = resolve_activations(activation, len(params) - 1)
    X1c, single1 = check_inputs("X1", X1, widths[0], xp, finite=False)
    X2c, single2 = ((None, single1) if X2 is None
                    else check_inputs("X2", X2, widths[0], xp, finite=False))
    named = param_names(params) + [("X1", X1c), ("X2", X2c)]
    unchecked = split_finite_checks(named)  # the JAX arrays: in the kernel's program
    params, Xs, dtype = common_dtype(xp, params, [X1c] if X2c is None else [X1c, X2c])
    X1c, X2c = Xs if X2c is not None else (Xs[0], None)
    K = widths[-1]
    itemsize = np.dtype(dtype).itemsize
    N1, N2 = X1c.shape[0], (X1c if X2c is None else X2c).shape[0]
    if mesh is not None or N1 == 0 or N2 == 0:
        check_all_finite(unchecked)  # no kernel program of call() checks them
    if N1 == 0 or N2 == 0:  # an empty batch: an empty kernel
        out = xp.zeros((N1, N2) if trace else (N1, N2, K, K), dtype)
        return out[:, 0] if single2 and N2 else (out[0] if single1 and N1 else out)

    if mesh is not None:
        Xc = X1c if X2c is None else X2c
        n_local = -(-X1c.shape[0] // mesh.size)
        rows, cols = _tile_sizes(n_local, Xc.shape[0], False, widths, trace, itemsize, block_size)

        def local(params, Xc, X1_local):
            return _ntk_traced(params, X1_local, Xc, K, trace, rows, cols, acts, biases, jnp)

        out = batch_parallel(local, mesh, (params, Xc), (X1c,), gather, "X1",
                             key=("ntk", K, trace, rows, cols, acts, biases))
    else:
        N2 = X1c.shape[0] if X2c is None else X2c.shape[0]
        rows, cols = _tile_sizes(
            X1c.shape[0], N2, X2c is None, widths, trace, itemsize, block_size
        )
        kernel = _ntk_numpy if xp is np else _ntk_traced
        out = call(kernel, xp, (K, trace, rows, cols, acts, biases), params, X1c, X2c,
                   unchecked=unchecked)
    axes = tuple(axis for axis, single in ((0, single1), (1, single2)) if single)
    return without_axis(out, axes) if axes else out
