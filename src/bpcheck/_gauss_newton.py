"""The generalised Gauss-Newton matrix ``G = mean_n J_n' H_n J_n``, from the factors.

``H_n`` is the Hessian of example ``n``'s loss with respect to its outputs ``z_n``
(``I_K`` for ``"mse"``, ``diag(p_n) - p_n p_n'`` for ``"cross_entropy"``; see
:mod:`bpcheck._pergrad`).  With the bias folded into an extended input
``a~ = [a; 1]``, layer ``l``'s columns of ``J_n`` are ``V_n^(l) (I kron a~_n^(l-1)')``,
so the block of layers ``(l, m)`` is

    mean_n (V_n^(l)' H_n V_n^(m)) kron (a~_n^(l-1) a~_n^(m-1)'),

one ``(d_l d_m) x N`` by ``N x (d~_{l-1} d~_{m-1})`` product per pair of layers, ``K``
times cheaper than ``J' (H J)`` and without the ``(N, K, P)`` Jacobian; a fixed
permutation then puts rows and columns in ``beta`` order.  The matrix-free product
``G v`` needs no factor at all: ``J v`` by Horner's rule, ``H (J v)``, then ``J' u`` by
the transposed recursion, about three forward passes.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ._arrays import as_array, check_finite, prepare
from ._params import layer_slices, param_count
from ._pergrad import (
    check_loss,
    forward,
    output_hessian,
    output_hessian_times,
    pullback,
    push,
)
from ._recursion import jacobian_factors


def _beta_order(widths):
    """Index array: position ``i`` of ``beta`` sits at ``perm[i]`` of the extended layout
    ``[(p, q~) for p < d_l for q~ <= d_{l-1}]`` (bias of row ``p`` at ``q~ = d_{l-1}``)."""
    parts, off = [], 0
    for d_prev, d in itertools.pairwise(widths):
        p, q = np.divmod(np.arange(d * d_prev), d_prev)
        parts += [off + p * (d_prev + 1) + q, off + np.arange(d) * (d_prev + 1) + d_prev]
        off += d * (d_prev + 1)
    return np.concatenate(parts)


def _gauss_newton(params, X, loss, widths, xp):
    N = X.shape[0]
    fs = jacobian_factors(params, X)
    H = output_hessian(loss, fs[-1].z, xp)
    ones = xp.ones((N, 1), dtype=X.dtype)
    a_ext = [xp.concatenate([f.a_prev, ones], axis=1) for f in fs]
    HV = [f.V if loss == "mse" else xp.einsum("nkj,njr->nkr", H, f.V) for f in fs]
    L1 = len(fs)
    blocks = [[None] * L1 for _ in range(L1)]
    for l in range(L1):
        for m in range(l, L1):
            M = xp.einsum("nkp,nkr->npr", fs[l].V, HV[m])  # V_n^(l)' H_n V_n^(m)
            AA = a_ext[l][:, :, None] * a_ext[m][:, None, :]  # a~^(l-1) a~^(m-1)'
            dl, dm = M.shape[1], M.shape[2]
            ql, qm = AA.shape[1], AA.shape[2]
            E = (M.reshape(N, dl * dm).T @ AA.reshape(N, ql * qm)) / N
            E = E.reshape(dl, dm, ql, qm).transpose(0, 2, 1, 3).reshape(dl * ql, dm * qm)
            blocks[l][m] = E
            blocks[m][l] = E.T
    G = xp.block(blocks)
    perm = _beta_order(widths)
    return G[perm][:, perm]


def _gauss_newton_matvec(params, X, v, loss, widths, xp):
    N = X.shape[0]
    tangents = [(v[sB].reshape(B.shape), v[sb]) for (B, _), (sB, sb) in zip(params, layer_slices(widths))]
    a_prevs, masks, z = forward(params, X)
    u = output_hessian_times(loss, z, push(params, masks, a_prevs, tangents), xp)
    parts = []
    for delta, a in zip(pullback(params, masks, u), a_prevs):
        parts += [(delta.T @ a).reshape(-1) / N, xp.sum(delta, axis=0) / N]
    return xp.concatenate(parts)


_jitted: dict = {}


def _run(kernel, static, *args):
    """``kernel(*args, *static, jnp)`` jit-compiled with matmuls at ``precision="highest"``."""
    import jax
    import jax.numpy as jnp

    key = (kernel, static)
    if key not in _jitted:

        def f(*a):
            with jax.default_matmul_precision("highest"):
                return kernel(*a, *static, jnp)

        _jitted[key] = jax.jit(f)
    return _jitted[key](*args)


def _check_nonempty(X2):
    if X2.shape[0] == 0:
        raise ValueError(f"X: expected at least one example (the Gauss-Newton matrix is a mean "
                         f"over examples), got shape {tuple(X2.shape)}")


def gauss_newton(params: Any, X: Any, loss: str = "cross_entropy"):
    """The generalised Gauss-Newton matrix ``mean_n J_n' H_n J_n``, shape ``(P, P)``.

    ``params``: ``[(B^(l), b^(l))]``, ``B^(l)`` of shape ``(d_l, d_{l-1})``.
    ``X``: inputs ``(N, d_0)`` (or ``(d_0,)``).  ``loss``: ``"cross_entropy"`` (softmax
    outputs, ``H_n = diag(p_n) - p_n p_n'``) or ``"mse"`` (``H_n = I_K``); neither needs
    the targets.  ``J_n`` is the ``(K, P)`` Jacobian of :func:`bpcheck.jacobian`, rows and
    columns of the result in ``beta`` order.  Built per pair of layers from the factors,
    never from ``J``.  NumPy in, NumPy out; JAX in, JAX out (jit-able).
    """
    check_loss(loss)
    params, widths, X2, _, xp = prepare(params, X)
    _check_nonempty(X2)
    if xp is np:
        return _gauss_newton(params, X2, loss, tuple(widths), np)
    return _run(_gauss_newton, (loss, tuple(widths)), params, X2)


def gauss_newton_matvec(params: Any, X: Any, v: Any, loss: str = "cross_entropy"):
    """``G v = mean_n J_n' H_n (J_n v)`` without forming ``G`` or ``J``, shape ``(P,)``.

    ``X``: inputs ``(N, d_0)`` (or ``(d_0,)``); ``v``: a vector in ``beta`` order, shape
    ``(P,)`` with ``P = sum_l d_l (d_{l-1} + 1)``; ``loss`` as in :func:`gauss_newton`.
    ``J_n v`` is ``sum_l V_n^(l) (dB^(l) a_n^(l-1) + db^(l))`` by Horner's rule on the
    ``V`` recursion, and ``J_n' u`` the transposed recursion: about three forward passes.
    NumPy in, NumPy out; JAX in, JAX out (jit-able).
    """
    check_loss(loss)
    params, widths, X2, _, xp = prepare(params, X, v=v)
    _check_nonempty(X2)
    P = param_count(widths)
    v = as_array("v", v, xp)
    if tuple(v.shape) != (P,):
        raise ValueError(
            f"v: expected a vector in beta order of shape ({P},) for widths {widths} "
            f"(P = sum_l d_l (d_(l-1) + 1)), got shape {tuple(v.shape)}"
        )
    check_finite("v", v)
    v = v.astype(X2.dtype)
    if xp is np:
        return _gauss_newton_matvec(params, X2, v, loss, tuple(widths), np)
    return _run(_gauss_newton_matvec, (loss, tuple(widths)), params, X2, v)
