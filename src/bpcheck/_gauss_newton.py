"""The generalised Gauss-Newton matrix ``G = mean_n J_n' H_n J_n``, from the factors.

``H_n`` is the Hessian of example ``n``'s loss with respect to its outputs ``z_n``
(``I_K`` for ``"mse"``, ``diag(p_n) - p_n p_n'`` for ``"cross_entropy"``,
``s_n (1 - s_n)`` for ``"binary_cross_entropy"``, or the user's; see
:mod:`bpcheck._losses`).  With the bias folded into an extended input
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

import functools
import itertools
from typing import Any

import numpy as np

from ._activations import resolve_activations
from ._arrays import (as_array, bias_flags, check_all_finite, derived, host_buffer, is_jax,
                      is_tracer, on_default_cpu, prepare, split_finite_checks, to_jax)
from ._compiled import built, call, recording, replayed, rerun, shape_of, written
from ._losses import _ones_column, check_reduction, numpy_targets_in_range, resolve_loss
from ._model import model_inputs, model_params, model_vector
from ._params import (_layer_slices, beta_size, expand_beta, layers_from_beta, param_count,
                      trim_beta)
from ._recursion import _backward, _factors, _forward_layers, by_rows, pullback, push


def _beta_order(widths):
    """Index array: position ``i`` of ``beta`` sits at ``perm[i]`` of the extended layout
    ``[(p, q~) for p < d_l for q~ <= d_{l-1}]`` (bias of row ``p`` at ``q~ = d_{l-1}``)."""
    parts, off = [], 0
    for d_prev, d in itertools.pairwise(widths):
        p, q = np.divmod(np.arange(d * d_prev), d_prev)
        parts += [off + p * (d_prev + 1) + q, off + np.arange(d) * (d_prev + 1) + d_prev]
        off += d * (d_prev + 1)
    return np.concatenate(parts)


def _gauss_newton(params, X, y, loss, acts, scale, widths, xp):
    N = X.shape[0]
    fs = _factors(params, X, acts, xp)
    ones = xp.ones((N, 1), dtype=X.dtype)
    a_ext = [xp.concatenate([f.a_prev, ones], axis=1) for f in fs]
    if loss.hessian_is_identity:
        HV = [f.V for f in fs]
    else:
        H = loss.hessian(fs[-1].z, y, xp)
        HV = [xp.einsum("nkj,njr->nkr", H, f.V) for f in fs]
    def block(l, m):
        M = xp.einsum("nkp,nkr->npr", fs[l].V, HV[m])  # V_n^(l)' H_n V_n^(m)
        AA = a_ext[l][:, :, None] * a_ext[m][:, None, :]  # a~^(l-1) a~^(m-1)'
        dl, dm = M.shape[1], M.shape[2]
        ql, qm = AA.shape[1], AA.shape[2]
        E = (M.reshape(N, dl * dm).T @ AA.reshape(N, ql * qm)) * scale
        return E.reshape(dl, dm, ql, qm).transpose(0, 2, 1, 3).reshape(dl * ql, dm * qm)

    L1 = len(fs)
    blocks = [[None] * L1 for _ in range(L1)]
    for l in range(L1):
        for m in range(l, L1):
            blocks[l][m] = block(l, m)
            if m > l:  # a user's H_n may not be symmetric: the blocks below of their own
                blocks[m][l] = block(m, l) if loss.name is None else blocks[l][m].T
    G = xp.block(blocks)
    perm = _beta_order(widths)
    return G[perm][:, perm]


def _gauss_newton_matvec(params, X, y, v, loss, acts, scale, widths, xp):
    if xp is np:
        return _gauss_newton_matvec_numpy(params, X, y, v, loss, acts, scale, widths)
    tangents = layers_from_beta(v, widths)
    a_prevs, zs, Ds = _forward_layers(params, X, acts, xp)
    u = loss.hessian_times(zs[-1], y, push(params, acts, Ds, a_prevs, tangents, xp), xp)
    u = np.multiply(u, scale, out=u) if xp is np else u * scale  # NumPy: u is a temporary
    return _beta_gradient(pullback(params, acts, Ds, u, xp), a_prevs, widths, xp)


def _gauss_newton_matvec_numpy(params, X, y, v, loss, acts, scale, widths):
    """NumPy's ``G v``: :func:`bpcheck._recursion.push` (``J v`` by Horner's rule) run in
    the same loop as the forward pass, then :func:`bpcheck._recursion.pullback` in the
    same loop as the gradient's blocks, written into the result in place, with ``np.dot``
    for every product and each temporary written over.  The outputs ``z``, ``J v`` and
    ``u`` are computed as ``(K, N)`` arrays and used through their ``(N, K)`` transposes,
    so that the loss's row reductions over the ``K`` outputs run along memory.  On a
    small network, where each NumPy call costs about a microsecond, 61 against 73
    microseconds for the composed steps (10-32-32-3, N = 64, float32, the same loss code
    in both); the same computation, its sums taken in another order."""
    dot, last = np.dot, len(params) - 1
    slices = _layer_slices(widths)
    a, t, a_prevs, Ds = X, None, [], []
    for l, ((B, b), (sB, sb)) in enumerate(zip(params, slices)):
        dB = v[sB].reshape(B.shape)
        if l < last:
            z, term = dot(a, B.T), dot(a, dB.T)
            if t is not None:
                term += dot(t, B.T)
        else:
            z, term = dot(B, a.T).T, dot(dB, a.T).T
            if t is not None:
                term += dot(B, t.T).T
        z += b
        term += v[sb]
        a_prevs.append(a)
        if l < last:
            a, D = acts[l].value_and_derivative(z, np)
            t = acts[l].times_derivative(term, D, np, True)
            Ds.append(D)
    u = loss.hessian_times(z, y, term, np)
    u *= scale
    out = host_buffer(v.shape, v.dtype)  # aligned: see to_jax
    ones = _ones_column(X.shape[0], u.dtype)[:, 0]
    for l in range(last, -1, -1):
        (sB, sb), B = slices[l], params[l][0]
        dot(u.T, a_prevs[l], out=out[sB].reshape(B.shape))
        dot(ones, u, out=out[sb])  # the column sums
        if l:
            u = acts[l - 1].times_derivative(dot(u, B), Ds[l - 1], np, True)
    return out


def _beta_gradient(deltas, a_prevs, widths, xp):
    """``J' u`` in ``beta`` order from ``delta^(l) = V^(l)' u``: ``[vec(delta' a^(0)),
    sum_n delta^(1), ...]``, shape ``(..., P)`` for deltas ``(..., N, d_l)``.  NumPy writes
    each layer's block in place (no concatenation); JAX returns the pieces in ``beta``
    order, for :func:`bpcheck._compiled.call` to join (``join=``: inside the kernel's
    program when small, outside when large)."""
    lead = tuple(deltas[0].shape[:-2])
    if xp is np:
        out = host_buffer(lead + (beta_size(widths),), deltas[0].dtype)  # aligned: see to_jax
        for (gB, gb), delta, a in zip(layers_from_beta(out, widths), deltas, a_prevs):
            np.matmul(delta.T if delta.ndim == 2 else delta.swapaxes(-1, -2), a, out=gB)
            np.add.reduce(delta, axis=-2, out=gb)
        return out
    # contractions without batch axes: XLA runs each as one matrix product (its batched
    # products over m vectors measured 14 times slower on the CPU)
    parts = []
    for delta, a in zip(deltas, a_prevs):
        parts += [xp.einsum("...nr,nc->...rc", delta, a).reshape(lead + (-1,)),
                  xp.sum(delta, axis=-2)]
    return parts


def _check_nonempty(X2):
    if X2.shape[0] == 0:
        raise ValueError(f"X: expected at least one example (the Gauss-Newton matrix is a mean "
                         f"over examples), got shape {tuple(X2.shape)}")


def _repeatable(params, X, loss="cross_entropy", *, y=None, **options):
    return numpy_targets_in_range(params, loss, y)


def _repeatable_matvec(params, X, v, loss="cross_entropy", *, y=None, **options):
    return numpy_targets_in_range(params, loss, y)


def _setup(params, X, y, loss, reduction, activation, **others):
    loss = resolve_loss(loss, hessian=True)
    mean = check_reduction(reduction) == "mean"
    params, widths, X2, single, xp, others, unchecked = prepare(params, X, defer_finite=True, y=y,
                                                                 **others)
    _check_nonempty(X2)
    acts = resolve_activations(activation, len(params) - 1)
    loss.check_outputs(widths[-1])
    y2 = loss.check_targets(y, X2.shape[0], widths[-1], single, xp, X2.dtype) if y is not None else None
    scale = 1 / X2.shape[0] if mean else 1.0
    return params, widths, X2, y2, xp, others, (loss, acts, scale, tuple(widths)), unchecked


@replayed("params", "X", "y", recheck=_repeatable)
def gauss_newton(params: Any, X: Any, loss: Any = "cross_entropy", *, y: Any = None,
                 reduction: str = "mean", activation: Any = None):
    """The generalised Gauss-Newton matrix ``mean_n J_n' H_n J_n``, shape ``(P, P)``.

    ``params``: ``[(B^(l), b^(l))]``, ``B^(l)`` of shape ``(d_l, d_{l-1})``.
    ``X``: inputs ``(N, d_0)`` (or ``(d_0,)``).  ``loss``: ``"cross_entropy"`` (softmax
    outputs, ``H_n = diag(p_n) - p_n p_n'``), ``"mse"`` (``H_n = I_K``),
    ``"binary_cross_entropy"`` (``K = 1``, ``H_n = s_n (1 - s_n)``), none of which needs
    the targets, or a :class:`bpcheck.Loss` with a ``hessian``, called as
    ``hessian(z, y)`` with ``y`` the targets given here (default ``None``).
    ``reduction``: ``"mean"`` (default, ``mean_n``) or ``"sum"`` (``sum_n``).
    ``activation``: as in :func:`bpcheck.forward`.  ``J_n`` is the ``(K, P)`` Jacobian of
    :func:`bpcheck.jacobian`, rows and columns of the result in ``beta`` order.  Built per
    pair of layers from the factors, never from ``J``.  NumPy in, NumPy out; JAX in, JAX
    out (compiled once per configuration; jit-able).
    """
    params, activation, net = model_params(params, activation)
    X = model_inputs(net, X)
    biases = bias_flags(params)  # layers without a bias: their rows and columns left out
    params, widths, X2, y2, xp, _, static, unchecked = _setup(params, X, y, loss, reduction,
                                                              activation)
    G = call(_gauss_newton, xp, static, params, X2, y2, unchecked=unchecked,
             bounds=static[0].target_bounds(y2, static[-1][-1]))
    if biases is not None and net is None:  # (built: a repeat call does the same)
        return built(G, lambda G: trim_beta(G, widths, biases, axes=(0, 1)))
    return trim_beta(G, widths, biases, axes=(0, 1))


@replayed("params", "X", "v", "y", recheck=_repeatable_matvec)
def gauss_newton_matvec(params: Any, X: Any, v: Any, loss: Any = "cross_entropy", *,
                        y: Any = None, reduction: str = "mean", activation: Any = None):
    """``G v = mean_n J_n' H_n (J_n v)`` without forming ``G`` or ``J``, shape ``(P,)``.

    ``X``: inputs ``(N, d_0)`` (or ``(d_0,)``); ``v``: a vector in ``beta`` order, shape
    ``(P,)`` with ``P = sum_l d_l (d_{l-1} + 1)`` (computed in the common floating dtype of
    ``params``, ``X`` and ``v``); ``loss``, ``y``, ``reduction`` and
    ``activation`` as in :func:`gauss_newton`.  ``J_n v`` is
    ``sum_l V_n^(l) (dB^(l) a_n^(l-1) + db^(l))`` by Horner's rule on the ``V`` recursion,
    and ``J_n' u`` the transposed recursion: about three forward passes.  NumPy in, NumPy
    out; JAX in, JAX out (compiled once per configuration; jit-able).  With a
    :class:`bpcheck.Network` or a model for ``params``, ``v`` may also be given in the
    model's own structure (as its per-example gradients come), and ``G v`` then comes back
    in it.
    """
    params, activation, net = model_params(params, activation)
    X = model_inputs(net, X)
    v, back = model_vector(net, v)
    biases = bias_flags(params)
    params, widths, X2, y2, xp, others, static, unchecked = _setup(params, X, y, loss, reduction,
                                                                    activation, v=v)
    P = param_count(widths, biases)
    v = others["v"]
    if tuple(v.shape) != (P,):
        raise ValueError(
            f"v: expected a vector in beta order of shape ({P},) for widths {widths} "
            f"(P = sum_l d_l (d_(l-1) + 1)" + ("" if biases is None else
                                               ", no b^(l) for a layer without a bias")
            + f"), got shape {tuple(v.shape)}"
        )
    if biases is not None:  # zeros for the biases a layer lacks (derived: a repeat call
        # does the same)
        def full(v):
            return expand_beta(v, widths, biases)

        v = derived(v, full(v), full)
    if v.dtype != X2.dtype:
        dtype = np.result_type(v.dtype, X2.dtype) if v.dtype.kind == "f" else X2.dtype
        if dtype != X2.dtype:  # a v more precise than params and X: all computed in its dtype
            params, X2 = [(B.astype(dtype), b.astype(dtype)) for B, b in params], X2.astype(dtype)
            y2 = y2.astype(dtype) if y2 is not None and y2.dtype.kind == "f" else y2
        v = v.astype(dtype)
    Gv = call(_gauss_newton_matvec, xp, static, params, X2, y2, v, unchecked=unchecked,
              bounds=static[0].target_bounds(y2, widths[-1]), join=-1)
    if biases is not None and net is None:
        return built(Gv, lambda Gv: trim_beta(Gv, widths, biases))
    return back(trim_beta(Gv, widths, biases))


# --- the Gauss-Newton matrix as an operator: factors once, products many times ---------


def _operator_setup(params, X, y, acts, loss, xp):
    """What every product reuses: ``V^(l)`` for the hidden layers below the last, the
    layer inputs ``a^(l-1)``, what ``H_n`` needs of the outputs
    (:meth:`bpcheck.Loss.hessian_state`) and ``top``: for the last hidden layer ``L``,
    ``(D^(L), B^(L+1))`` (``None`` without hidden layers).  ``V^(L) = B^(L+1) D^(L)`` is
    applied as that product (``N d_L`` numbers kept instead of ``N K d_L``, and read once
    instead of ``K`` times per product; NumPy keeps a copy of ``B^(L+1)``, which the caller
    may write into), and ``V^(L+1) = I`` is never stored."""
    a_prevs, zs, Ds = _forward_layers(params, X, acts, xp)
    if xp is np:
        a_prevs[0] = X.copy()  # the caller may refill X afterwards (see kept_factors)
    h = loss.hessian_state(zs[-1], y, xp)
    if xp is np and loss.name is None:
        h = np.array(h)  # a user's Hessians: the caller may write into them later
    if not Ds:
        return [], a_prevs, h, None
    # V^(l) below the last hidden layer only: with one hidden layer, no recursion at all
    Vs = _backward(params, acts, Ds, X.shape[0], xp, X.dtype)[:-2] if len(Ds) > 1 else []
    B = params[-1][0]
    return Vs, a_prevs, h, (Ds[-1], B.copy() if xp is np else B)


def _operator_products(Vs, a_prevs, h, top, Vm, loss, scale, widths, xp):
    """``J' H (J v)`` for the ``m`` rows ``v`` of ``Vm`` ``(m, P)``, from the stored factors:
    ``J v = sum_l V^(l) (dB^(l) a^(l-1) + db^(l))`` and, per layer, ``J' u`` is
    ``vec((V^(l)' u)' a^(l-1))``: two products with ``a^(l-1)`` per layer, contractions
    with the ``K`` rows of ``V^(l)`` below the last hidden layer, and for that layer
    ``B^(L+1) D^(L)`` in their place (``top``, see :func:`_operator_setup`); no forward pass.
    Returns ``(m, P)`` (JAX: its pieces, see :func:`_beta_gradient`)."""
    if xp is not np:
        return _operator_products_xla(Vs, a_prevs, h, top, Vm, loss, scale, widths, xp)
    Jv, last = 0, len(Vs)  # layer `last`: the last hidden one (top) or the output layer
    for l, (a, (dB, db)) in enumerate(zip(a_prevs, layers_from_beta(Vm, widths))):
        t = np.matmul(a, dB.transpose(0, 2, 1))  # (m, N, d_l)
        t += db[:, None, :]
        if l < last:
            # V^(l) t per example, batched over the N examples ((K, d_l) by (d_l, m)), not
            # over the m N pairs: N small products instead of m N matrix-vector ones
            t = np.matmul(Vs[l], t.transpose(1, 2, 0)).transpose(2, 0, 1)
        elif l == last and top is not None:
            t = np.multiply(t, top[0], out=t) @ top[1].T  # B^(L+1) D^(L) t
        Jv = Jv + t
    u = loss.times_hessian(h, Jv, np) * scale  # (m, N, K)
    uT = u.transpose(1, 0, 2)  # (N, m, K)
    deltas = [np.matmul(uT, V).transpose(1, 0, 2) for V in Vs]  # V' u, (m, N, d_l)
    if top is not None:
        delta = u @ top[1]
        deltas.append(np.multiply(delta, top[0], out=delta))  # D^(L) B^(L+1)' u
    deltas.append(u)
    return _beta_gradient(deltas, a_prevs, widths, np)


def _operator_products_xla(Vs, a_prevs, h, top, Vm, loss, scale, widths, xp):
    """:func:`_operator_products` for JAX: the products with ``a^(l-1)`` as contractions
    without batch axes, which XLA runs as one matrix product each (its batched products
    over the ``m`` vectors measured 14 times slower on the CPU)."""
    Jv, last = 0, len(Vs)
    for l, (a, (dB, db)) in enumerate(zip(a_prevs, layers_from_beta(Vm, widths))):
        t = xp.einsum("nc,mrc->mnr", a, dB) + db[:, None, :]  # (m, N, d_l)
        if l < last:
            t = xp.einsum("nkr,mnr->mnk", Vs[l], t)
        elif l == last and top is not None:
            t = xp.einsum("mnr,kr->mnk", t * top[0], top[1])
        Jv = Jv + t
    u = loss.times_hessian(h, Jv, xp) * scale  # (m, N, K)
    deltas = [xp.einsum("mnk,nkr->mnr", u, V) for V in Vs]  # V' u
    if top is not None:
        deltas.append(xp.einsum("mnk,kr->mnr", u, top[1]) * top[0])
    deltas.append(u)
    return _beta_gradient(deltas, a_prevs, widths, xp)


def _operator_columns(Vs, a_prevs, h, top, Vp, loss, scale, widths, xp):
    """:func:`_operator_products` for ``m`` vectors given as the columns of ``Vp``
    ``(P, m)``, the result ``(P, m)`` too (JAX).  Layer ``l``'s rows of
    ``Vp`` are read as ``dB`` ``(d_l, d_{l-1}, m)`` and its rows of the result are written
    as ``(d_{l-1}, d_l, m)`` by one matrix product with ``a^(l-1)``, then put in order
    with ``m`` entries moved at a time: neither ``(P, m)`` array is transposed whole (on
    the 784-1024-1024-10 network, ``m = 10``: 103 against 141 ms for the program that
    transposed both).  The pieces are written into the result inside the same program
    (:func:`bpcheck._compiled.written`: 119 ms with it, against 131 ms joined by a program
    of their own)."""
    m, last = Vp.shape[1], len(Vs)
    blocks = [(Vp[sB].reshape(d, d_prev, m), Vp[sb]) for d_prev, d, (sB, sb)
              in zip(widths[:-1], widths[1:], _layer_slices(tuple(widths)))]
    Jv = 0
    for l, (a, (dB, db)) in enumerate(zip(a_prevs, blocks)):
        t = xp.einsum("nc,rcm->mnr", a, dB) + db.T[:, None, :]  # (m, N, d_l)
        if l < last:
            t = xp.einsum("nkr,mnr->mnk", Vs[l], t)
        elif l == last and top is not None:
            t = xp.einsum("mnr,kr->mnk", t * top[0], top[1])
        Jv = Jv + t
    u = loss.times_hessian(h, Jv, xp) * scale  # (m, N, K)
    parts = []
    for l, a in enumerate(a_prevs):
        if l < last:
            delta = xp.einsum("mnk,nkr->nrm", u, Vs[l])
        elif l == last and top is not None:
            delta = xp.einsum("mnk,kr->nrm", u, top[1]) * top[0][:, :, None]
        else:
            delta = u.transpose(1, 2, 0)
        # (d_{l-1}, d_l m) is a plain matrix product; (d_l, d_{l-1}, m) moves m at a time
        gB = xp.einsum("nc,nrm->crm", a, delta).transpose(1, 0, 2)
        parts += [gB.reshape(gB.shape[0] * gB.shape[1], m), delta.sum(axis=0)]  # (m may be 0)
    return written(parts, axis=0)


def _columns_setup(params, X, y, acts, loss, scale, xp):
    """What :func:`_operator_columns_numpy` reuses, for a NumPy operator of a small network
    (``P`` at most ``_COLUMNS``): ``V^(l)`` ``(N, K, d_l)`` of every layer below the output
    layer and its transpose ``(N, d_l, K)``, both C-contiguous (``V^(L) = B^(L+1) D^(L)``
    and its transpose made directly), the layer inputs with a column of ones
    (``a~^(l-1) = [a^(l-1), 1]``, ``(N, d_{l-1} + 1)``: copies, as the caller may refill
    ``X`` later) and every ``scale H_n`` (``None`` for an identity Hessian)."""
    N = X.shape[0]
    a_prevs, zs, Ds = _forward_layers(params, X, acts, np)
    ones = np.ones((N, 1), X.dtype)
    a_exts = [np.concatenate([a, ones], axis=1) for a in a_prevs]
    # the outputs in F order: the loss's row reductions over K run along memory
    H = _hessians(loss.hessian_state(np.asfortranarray(zs[-1]), y, np), loss, scale)
    Vs, VTs = [], []
    for j in range(len(Ds) - 1, -1, -1):  # V^(j+1) = V^(j+2) B^(j+2) D^(j+1)
        B, D = params[j + 1][0], Ds[j]
        if not Vs:
            V, VT = B * D[:, None, :], D[:, :, None] * B.T
        else:
            V = np.dot(Vs[-1].reshape(-1, B.shape[0]), B).reshape(N, -1, B.shape[1])
            V *= D[:, None, :]
            VT = np.ascontiguousarray(V.transpose(0, 2, 1))
        Vs.append(V)
        VTs.append(VT)
    return Vs[::-1], VTs[::-1], a_exts, H


def _operator_columns_numpy(Vs, VTs, a_exts, H, Vp, loss, scale, widths, xp):
    """:func:`_operator_columns` for NumPy: the ``m`` products of the columns of ``Vp``
    ``(P, m)``, computed as ``(N, d_l, m)`` arrays per layer from what
    :func:`_columns_setup` made: ``V^(l)`` and its transpose ``VTs`` for every layer below
    the output layer, the layer inputs with a column of ones ``a_exts`` and ``H``, every
    ``scale H_n`` (``None``: the identity).  Each product with ``a~^(l-1)`` is one matrix
    product over all ``m`` vectors, the bias inside it (``t = [dB, db] a~``,
    ``[gB, gb] = delta' a~``), and only the contractions with ``V^(l)`` and ``H_n`` are
    batched (over the ``N`` examples); the block is never transposed whole, the layer
    blocks of ``Vp`` and of the result moved ``m`` entries at a time."""
    N, m = a_exts[0].shape[0], Vp.shape[1]
    out = host_buffer((Vp.shape[0], m), Vp.dtype)
    spans = list(zip(widths[:-1], widths[1:], _layer_slices(tuple(widths))))
    Jv = None
    for l, (a, (d_prev, d, (sB, sb))) in enumerate(zip(a_exts, spans)):
        W = np.empty((d_prev + 1, d, m), Vp.dtype)  # [dB, db]' for the m vectors
        W[:d_prev] = Vp[sB].reshape(d, d_prev, m).transpose(1, 0, 2)
        W[d_prev] = Vp[sb]
        t = np.dot(a, W.reshape(d_prev + 1, d * m)).reshape(N, d, m)
        if l < len(Vs):
            t = np.matmul(Vs[l], t)  # V_n^(l) t_n, (N, K, m)
        if Jv is None:
            Jv = t
        else:
            Jv += t
    u = np.multiply(Jv, scale, out=Jv) if H is None else np.matmul(H, Jv)  # (N, K, m)
    for l, (a, (d_prev, d, (sB, sb))) in enumerate(zip(a_exts, spans)):
        delta = np.matmul(VTs[l], u) if l < len(Vs) else u  # V' u, (N, d_l, m)
        g = np.dot(a.T, delta.reshape(N, d * m)).reshape(d_prev + 1, d, m)  # [gB, gb]'
        np.copyto(out[sB].reshape(d, d_prev, m), g[:d_prev].transpose(1, 0, 2))
        np.copyto(out[sb], g[d_prev])
    return out


def _columns_vector(Vs, VTs, a_exts, H, v, loss, scale, widths, xp):
    """:func:`_operator_columns_numpy` for one vector ``v`` ``(P,)``, result ``(P,)``."""
    return _operator_columns_numpy(Vs, VTs, a_exts, H, v[:, None], loss, scale, widths, xp)[:, 0]


def _hessians(h, loss, scale):
    """``scale H_n`` for every example, ``(N, K, K)``, from
    :meth:`bpcheck.Loss.hessian_state`'s ``h``; ``None`` for an identity Hessian."""
    H = loss.hessians_of_state(h, np)
    if H is None:
        return None
    if loss.name is None:  # a user's H_n: not written over
        return H * scale
    return np.multiply(H, scale, out=H)


def _operator_vector(Vs, a_prevs, h, top, v, loss, scale, widths, xp):
    """:func:`_operator_products` for one vector ``v`` ``(P,)``, result ``(P,)``: for JAX
    the vector's leading axis is added and dropped inside the program (as operations of
    their own, each cost more than the product of a small network)."""
    parts = _operator_products(Vs, a_prevs, h, top, v[None, :], loss, scale, widths, xp)
    return parts[0] if xp is np else [part[0] for part in parts]


def _transposed(v):
    """``v.T`` as a C-contiguous copy, ``(P, m) -> (m, P)`` or ``(m, P) -> (P, m)``, in
    cache-sized chunks of the long axis ``P`` on all cores: ``np.ascontiguousarray(v.T)``
    rereads ``v`` once per output row (measured 70 ms against 32 ms on one core for
    ``(1.9e6, 10)`` float32)."""
    if v.flags.f_contiguous:
        return v.T
    tall, P = v.shape[0] >= v.shape[1], max(v.shape)
    out = host_buffer(v.shape[::-1], v.dtype)  # aligned: see to_jax

    def chunks(k0, k1):
        for k in range(k0, k1, _CHUNK):
            piece = slice(k, min(k + _CHUNK, k1))
            if tall:
                out[:, piece] = v[piece].T
            else:
                out[piece] = v[:, piece].T

    by_rows(chunks, P, v.size)
    return out


_CHUNK = 8192  # rows of v per transposed piece: 8192 m-vectors stay in the cache


class GaussNewtonOperator:
    """``G = mean_n J_n' H_n J_n`` (or ``sum_n``) as a linear operator, from the factors.

    Built by :func:`gauss_newton_operator`: the forward pass and the factors ``V^(l)``
    are computed once (kept for the hidden layers below the last, ``N K`` numbers per
    unit; the last hidden layer's ``V^(L) = B^(L+1) D^(L)`` as ``D^(L)`` and a copy of
    ``B^(L+1)``), and each product ``G v`` costs two products with the layer inputs per
    layer (``J v`` and ``J' u``) plus contractions with the ``K`` rows of each
    ``V^(l)``: no forward pass and no recursion, against five layer-sized products per
    layer for ``jax.jvp`` and ``jax.vjp``.  For the many
    products of a conjugate-gradient or Lanczos run with the same parameters and data.

    ``op @ v`` or ``op.matvec(v)``: ``v`` of shape ``(P,)`` in ``beta`` order (or in the
    model's own structure when the operator was built from a model), or ``(P, m)`` for
    ``m`` products at once, computed in ``dtype``, fixed when the operator is built (a
    ``v`` of another dtype is cast to it: a float64 ``v`` for a float32 operator is rounded
    to float32; build it from float64 arrays for float64 products).  ``shape`` and
    ``dtype`` make it a SciPy ``LinearOperator``
    by ``scipy.sparse.linalg.aslinearoperator(op)``.  NumPy or JAX, as its inputs were (a
    JAX ``v`` for an operator of NumPy arrays gives a JAX result, computed with NumPy).
    """

    def __init__(self, stored, static, net, xp, dtype, P, host=None, by_columns=False):
        self._stored, self._static, self._net, self._xp = stored, static, net, xp
        self.shape = (P, P)
        self.dtype = np.dtype(dtype)
        self._again = {}  # (type, shape) of a first v -> the rerun of its product
        self._host = host  # a NumPy operator on views of the same factors (see _on_host)
        self._full = self._biases = None  # see _without_biases
        self._by_columns = by_columns  # stored: _columns_setup's (NumPy, a small network)
        self._transpose = None  # a user's loss: the operator of every H_n' (see T)

    @classmethod
    def _without_biases(cls, full, net, biases):
        """The operator of a network with layers without a bias (``biases``), on ``full``,
        the operator of the same factors with every bias: each ``v`` gets zeros for the
        biases a layer lacks, each result loses those rows (:func:`expand_beta`,
        :func:`trim_beta`)."""
        widths = full._static[-1]
        P = param_count(widths, biases)
        op = cls(full._stored, full._static, net, full._xp, full.dtype, P,
                 by_columns=full._by_columns)
        op._full, op._biases = full, biases
        return op

    def _trimmed(self, v):
        """:meth:`matvec` of an operator made by :meth:`_without_biases`."""
        v, back = model_vector(self._net, v)
        P, widths = self.shape[0], self._static[-1]
        if type(v) is not np.ndarray and not is_jax(v):  # a list, a torch tensor
            v = as_array("v", v, self._xp)
        if v.ndim not in (1, 2) or v.shape[0] != P:
            raise ValueError(f"v: expected a vector in beta order of shape ({P},) (or ({P}, m) "
                             f"for m products; no b^(l) for a layer without a bias), got shape "
                             f"{tuple(v.shape)}")
        out = self._full.matvec(expand_beta(v, widths, self._biases))
        return back(trim_beta(out, widths, self._biases, axes=(0,)))

    def __repr__(self) -> str:
        loss, _, widths = self._static
        return (f"GaussNewtonOperator(widths={list(widths)}, loss={loss.name or 'custom'!r}, "
                f"shape={self.shape}, dtype={self.dtype})")

    def matvec(self, v: Any):
        """``G v`` for a vector ``(P,)``, or for each column of a block ``(P, m)`` (see the class).

        A vector of the kind, shape ``(P,)`` and dtype of an earlier one (or a JAX block of
        an earlier block's) runs that product's kernel (JAX: its compiled program) again
        straight away, NaN and inf still checked: the products of an iterative solver cost
        their computation only."""
        if self._full is not None:
            return self._trimmed(v)
        again = self._again.get((type(v), getattr(v, "shape", None)))
        if again is not None and v.dtype == self.dtype:
            out = again(v)
            if out is not None:
                return out
        v, back = model_vector(self._net, v)
        P = self.shape[0]
        if self._host is not None and type(v) is np.ndarray and v.ndim in (1, 2) \
                and v.shape[0] == P:  # computed on the host as it is (checked there), not
            return back(self._on_host(v, v.ndim == 2))  # sent to JAX's default device first
        v = as_array("v", v, self._xp)
        if self._xp is np and is_jax(v):
            return back(self._jax_vector(v))
        block = v.ndim == 2 and v.shape[0] == P  # m products in one pass
        if not block and tuple(v.shape) != (P,):
            raise ValueError(f"v: expected a vector in beta order of shape ({P},) (or ({P}, m) "
                             f"for m products), got shape {tuple(v.shape)}")
        if self._host is not None and on_default_cpu([v]):
            return back(self._on_host(v, block))
        if self._by_columns:
            return back(self._columns(v, block))
        if block and self._xp is np:
            return self._products(_transposed(v)).T
        kernel = _operator_columns if block else _operator_vector
        if self._net is not None or shape_of(v) is None:
            return back(self._products(v, kernel))
        with recording([]) as records:
            out = self._products(v, kernel)
        again = rerun(records, v, out)
        if again is not None and len(self._again) < _RERUNS:
            self._again[(type(v), v.shape)] = again
        return out

    def _jax_vector(self, v):
        """A JAX ``v`` for an operator built from NumPy arrays: its products on the host,
        the result a JAX array (JAX inputs give JAX results, as everywhere)."""
        if is_tracer(v):
            raise TypeError(
                "v: a traced JAX array (inside jax.jit, jax.vmap or jax.grad), but this "
                "operator was built from NumPy arrays and computes with NumPy; build it from "
                "JAX arrays (gauss_newton_operator of jnp.asarray(...)) to use it there")
        import jax.numpy as jnp

        return jnp.asarray(self.matvec(np.asarray(v)))

    def _products(self, Vm, kernel=_operator_products):
        if Vm.dtype != self.dtype:
            Vm = Vm.astype(self.dtype)
        unchecked = split_finite_checks([("v", Vm)])
        Vs, a_prevs, h, top = self._stored
        return call(kernel, self._xp, self._static, Vs, a_prevs, h, top, Vm, unchecked=unchecked,
                    join=None if kernel is _operator_columns else -1)

    def _columns(self, v, block):
        """A NumPy operator of a small network (see :func:`_columns_setup`): ``G v`` for a
        vector or the columns of a block, by :func:`_operator_columns_numpy`; a vector's
        kernel run is noted for repeat calls (see :meth:`matvec`)."""
        if v.dtype != self.dtype:
            v = v.astype(self.dtype)
        split_finite_checks([("v", v)])  # (NumPy: checked now)
        kernel = _operator_columns_numpy if block else _columns_vector
        if block or self._net is not None:
            return call(kernel, np, self._static, *self._stored, v)
        with recording([]) as records:
            out = call(kernel, np, self._static, *self._stored, v)
        again = rerun(records, v, out)
        if again is not None and len(self._again) < _RERUNS:
            self._again[(type(v), v.shape)] = again
        return out

    def _on_host(self, v, block):
        """The products of a concrete JAX ``v`` on the CPU, by the NumPy operator on views
        of the same factors (:func:`gauss_newton_operator` says when), the result handed
        to JAX without a copy (a block: first copied from the NumPy operator's transposed
        view into C order)."""
        out = self._host.matvec(np.asarray(v))
        return to_jax(_transposed(out.T) if block else out)

    __matmul__ = matvec
    matmat = matvec
    __array_ufunc__ = None  # NumPy's M @ op defers to __rmatmul__

    def rmatvec(self, v: Any):
        """``G' v`` (``v' G`` as a column), for SciPy's adjoint products (``lsqr``)."""
        return self.T.matvec(v)

    rmatmat = rmatvec

    @property
    def T(self):
        """``G' = mean_n J_n' H_n' J_n``: the operator itself for the built-in losses, whose
        ``H_n`` are symmetric; for a user's loss the operator of the same factors with
        every ``H_n`` transposed (a Hessian that is not symmetric is taken as given, as
        :func:`gauss_newton` takes it), made on first use and kept."""
        if self._static[0].name is not None:
            return self
        if self._transpose is None:
            self._transpose = self._with_hessians_transposed()
            self._transpose._transpose = self
        return self._transpose

    H = T  # the adjoint, as SciPy names it (G is real)

    def _with_hessians_transposed(self):
        if self._full is not None:
            return GaussNewtonOperator._without_biases(self._full.T, self._net, self._biases)
        stored, at = list(self._stored), 3 if self._by_columns else 2  # where the H_n are
        H = stored[at].swapaxes(-1, -2)
        stored[at] = np.ascontiguousarray(H) if self._xp is np else H
        return GaussNewtonOperator(tuple(stored), self._static, self._net, self._xp, self.dtype,
                                   self.shape[0], None if self._host is None else self._host.T,
                                   by_columns=self._by_columns)

    def __rmatmul__(self, M):
        """``M @ G``: ``v @ G = G' v`` for a vector, ``(G' M')'`` for the ``m`` rows of a
        block ``M`` of shape ``(m, P)`` (``G' = G`` but for a user's loss whose ``H_n`` is
        not symmetric)."""
        shape = getattr(M, "shape", None)
        if shape is None or len(shape) != 2:
            return self.rmatvec(M)
        if shape[1] != self.shape[0]:
            raise ValueError(f"M: expected rows in beta order, shape (m, {self.shape[0]}) for "
                             f"M @ op, got shape {tuple(shape)}")
        if is_jax(M):
            check_all_finite([("M", M)])  # (else named v, as matvec takes M')
        else:
            M = as_array("M", M, np)
            split_finite_checks([("M", M)])
        return self.rmatvec(M.T).T

    def to_dense(self):
        """The ``(P, P)`` matrix itself, from ``P`` products (small networks only), taken
        :meth:`dense_block` columns at a time (all ``P`` at once held ``P`` times the
        products' temporaries: 13 GB for ``P = 2644``, ``N = 3000``)."""
        if self._full is not None:
            return trim_beta(self._full.to_dense(), self._static[-1], self._biases, axes=(0, 1))
        xp, P, m = self._xp, self.shape[0], self.dense_block()
        parts = []
        for i0 in range(0, P, m):
            # the block e_i0 .. e_(i0+m-1) (JAX: the last one padded to m, one program)
            cols = (xp.arange(m) + i0)[None, :] == xp.arange(P)[:, None]
            E = cols.astype(self.dtype)
            if self._by_columns:
                part = self._columns(E, True)  # (P, m): G e_i
            else:
                part = self._products(E.T).T  # row i of the products: (G e_i)'
            parts.append(part[:, :min(m, P - i0)])
        G = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=1)
        return np.ascontiguousarray(G) if xp is np else G

    DENSE_MB = 256
    """What :meth:`to_dense` lets one block of products hold in temporaries, about."""

    def dense_block(self) -> int:
        """How many columns :meth:`to_dense` computes at once: about :attr:`DENSE_MB` of
        the products' temporaries (three numbers per example, unit and vector)."""
        widths = self._static[-1]
        inputs = self._stored[2 if self._by_columns else 1]  # a~ (see _columns_setup), or a
        N = int(inputs[0].shape[0])
        per_column = 3 * N * sum(widths[1:]) * self.dtype.itemsize
        return int(max(1, min(self.shape[0], int(self.DENSE_MB * 2**20) // max(per_column, 1))))


@replayed("params", "X", "y", recheck=_repeatable)
def gauss_newton_operator(params: Any, X: Any, loss: Any = "cross_entropy", *, y: Any = None,
                          reduction: str = "mean", activation: Any = None) -> GaussNewtonOperator:
    """The Gauss-Newton matrix of :func:`gauss_newton` as a :class:`GaussNewtonOperator`.

    Same arguments as :func:`gauss_newton`.  The factors are computed here, once; each
    ``op @ v`` then equals ``gauss_newton_matvec(params, X, v, ...)`` at a fraction of its
    cost (no forward pass).  Memory: the factors, ``N K (d_1 + ... + d_(L-1)) + N d_L``
    numbers, and the layer inputs (a NumPy operator of at most 4096 parameters keeps
    ``2 N K (d_1 + ... + d_L)``, each ``V^(l)`` beside its transpose, and computes its
    products column by column: on 10-32-32-3, N = 64, float32, a block of 10 vectors in
    120 against 188 microseconds by rows, one vector in 47 against 58).  JAX inputs on
    the CPU with ``N P`` of at least ``2**23`` keep the factors as NumPy views too: the
    products of concrete JAX vectors then run with NumPy's matrix products and come back
    as JAX arrays without a copy (under ``jax.jit`` the compiled program runs).

    >>> import numpy as np, bpcheck
    >>> params = bpcheck.init_params([4, 8, 3], seed=0)
    >>> X = np.random.default_rng(0).standard_normal((5, 4))
    >>> op = bpcheck.gauss_newton_operator(params, X)
    >>> v = np.ones(op.shape[0])
    >>> bool(np.allclose(op @ v, bpcheck.gauss_newton_matvec(params, X, v)))
    True
    """
    params, activation, net = model_params(params, activation)
    X = model_inputs(net, X)
    biases = bias_flags(params)
    params, widths, X2, y2, xp, _, static, unchecked = _setup(params, X, y, loss, reduction,
                                                              activation)
    loss_, acts, scale, widths_t = static
    P = param_count(widths)
    by_columns = xp is np and P <= _COLUMNS
    setup, fixed = (_columns_setup, (acts, loss_, scale)) if by_columns else (_operator_setup,
                                                                               (acts, loss_))
    stored = call(setup, xp, fixed, params, X2, y2, unchecked=unchecked,
                  bounds=loss_.target_bounds(y2, widths[-1]))
    make = functools.partial(_operator, static=(loss_, scale, widths_t), net=net, xp=xp,
                             dtype=X2.dtype, P=P, N=X2.shape[0], by_columns=by_columns)
    if biases is not None:  # layers without a bias: the full operator, trimmed
        return GaussNewtonOperator._without_biases(make(stored, net=None), net, biases)
    # a repeat call with the same signature (plain (B, b) lists) runs the setup's program
    # again and builds the operator on its result, without the checks
    return make(stored) if net is not None else built(stored, make)


def _operator(stored, static, net, xp, dtype, P, N, by_columns):
    """The :class:`GaussNewtonOperator` on the factors ``stored`` (:func:`_operator_setup`,
    or :func:`_columns_setup` ``by_columns``), with its NumPy twin on views of them when
    its products are to run on the host."""
    if by_columns:
        return GaussNewtonOperator(stored, static, net, xp, dtype, P, by_columns=True)
    Vs, a_prevs, h, top = stored
    host = None
    if xp is not np and N * P >= _HOST_PRODUCTS and on_default_cpu([*Vs, *a_prevs, h,
                                                                    *(top or ())]):
        views = ([np.asarray(V) for V in Vs], [np.asarray(a) for a in a_prevs],
                 None if h is None else np.asarray(h),
                 None if top is None else tuple(np.asarray(x) for x in top))
        host = GaussNewtonOperator(views, static, None, np, dtype, P)
    return GaussNewtonOperator(stored, static, net, xp, dtype, P, host)


_COLUMNS = 4096
"""``P`` up to which a NumPy operator keeps :func:`_columns_setup`'s factors and computes its
products column-wise (:func:`_operator_columns_numpy`) rather than by rows
(:func:`_operator_products`, a block transposed to rows).
Microseconds of ``op @ block`` by rows and by columns (float32): 10-32-32-3 (``P`` 1507),
N = 64, m = 2, 10, 50: 82/58, 196/126, 776/543; N = 512, m = 10: 1020/651; 10-64-64-3
(``P`` 5059), N = 64: 114/83, 361/377, 3604/3151; 32-128-128-10 (``P`` 22026), N = 128:
428/394, 1849/1511, 14847/16170; 64-128-128-10, N = 32, m = 10: 772/874; 64-256-256-10,
N = 128, m = 10: 5745/7180."""

_RERUNS = 8  # kinds and shapes of v whose products an operator reruns (see matvec)

_HOST_PRODUCTS = 1 << 23
"""``N P`` from which a JAX operator on the CPU runs its products with NumPy, whose matrix
products are faster there than XLA's.  Ten products, one by one and as one ``(P, 10)``
block, NumPy against the compiled program: 784-1024-1024-10, N = 128: 80.9 and 98.6
against 89.2 and 125.4 ms; 64-256-256-10, N = 128 (``N P`` 1.1e7): 7.4 and 6.7 against
9.6 and 8.5 ms; N = 96 (8.2e6): 6.2 and 5.4 against 7.9 and 5.3 ms; 64-128-128-10,
N = 128 (3.3e6): 4.7 and 2.6 against 3.6 and 3.1 ms, one by one slower."""
