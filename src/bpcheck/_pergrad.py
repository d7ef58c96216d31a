"""Per-example gradients of a loss, from the factors ``U^(l) = V^(l) (I kron a^(l-1)')``.

For one example with outputs ``z = z^(L+1)`` and ``e = d loss / d z`` (shape ``(K,)``),
the gradient with respect to ``beta`` is ``J' e = [U^(1)' e; V^(1)' e; ...]``, and

    U^(l)' e = (I kron a^(l-1)) V^(l)' e = vec((V^(l)' e) a^(l-1)'),

so layer ``l`` needs only the vector ``delta^(l) = V^(l)' e`` (shape ``(d_l,)``).  It is
evaluated right to left, ``V^(l)' e = D^(l) B^(l+1)' (V^(l+1)' e)`` with
``V^(L+1)' e = e``: the recursion for ``V`` applied to one vector, ``K`` times cheaper than
forming the ``(N, K, d_l)`` factors.  The squared norm then needs no gradient at all:

    ||J' e||^2 = sum_l ||delta^(l)||^2 (||a^(l-1)||^2 + 1).

The same two vector recursions, ``J v = sum_l V^(l) (dB^(l) a^(l-1) + db^(l))`` (left to
right, Horner's rule on ``V^(l) = V^(l+1) B^(l+1) D^(l)``) and ``J' u``, give the
matrix-free Gauss-Newton product in :mod:`bpcheck._gauss_newton`.

Losses (per example; never averaged here):

- ``"cross_entropy"``: ``y`` holds integer class labels, shape ``(N,)``, values in
  ``0..K-1``; ``loss_n = -log softmax(z_n)[y_n]``, ``e_n = softmax(z_n) - onehot(y_n)``,
  output Hessian ``H_n = diag(p_n) - p_n p_n'`` with ``p_n = softmax(z_n)``.
- ``"mse"``: ``y`` holds real targets, shape ``(N, K)``; ``loss_n = 0.5 ||z_n - y_n||^2``,
  ``e_n = z_n - y_n``, ``H_n = I_K``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_array, check_finite, is_tracer, prepare
from ._params import param_count

LOSSES = ("cross_entropy", "mse")


def check_loss(loss: Any) -> str:
    """Validate the loss name; return it."""
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    return loss


def check_targets(loss: str, y: Any, N: int, K: int, single: bool, xp):
    """Validate ``y`` for ``loss``; return it 2-d / 1-d batched as the loss expects.

    ``cross_entropy``: integer labels ``(N,)`` (``()`` for a single example), in ``0..K-1``.
    ``mse``: real targets ``(N, K)`` (``(K,)`` for a single example).
    """
    y = as_array("y", y, xp)
    if loss == "cross_entropy":
        want = "()" if single else f"({N},)"
        if np.dtype(y.dtype).kind not in "iu":
            raise TypeError(
                f"y: expected integer class labels in 0..{K - 1} of shape {want} for "
                f"loss='cross_entropy', got dtype {np.dtype(y.dtype)}"
            )
        if tuple(y.shape) != (() if single else (N,)):
            raise ValueError(
                f"y: expected integer class labels of shape {want} for loss='cross_entropy' "
                f"(one label per row of X), got shape {tuple(y.shape)}"
            )
        if not is_tracer(y) and y.size:
            lo, hi = (int(y.min()), int(y.max()))
            if lo < 0 or hi >= K:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"y: class labels must lie in 0..{K - 1} (K = {K} outputs), got {bad}"
                )
        return y[None] if single else y
    want = (K,) if single else (N, K)
    if tuple(y.shape) != want:
        raise ValueError(
            f"y: expected real targets of shape {want} for loss='mse' (one row of K = {K} "
            f"outputs per row of X), got shape {tuple(y.shape)}"
        )
    check_finite("y", y)
    return y[None] if single else y


def forward(params, X):
    """Layer inputs ``a^(l-1)`` (``L+1`` arrays ``(N, d_{l-1})``), ReLU masks ``diag D^(l)``
    (``L`` arrays ``(N, d_l)``) and outputs ``z^(L+1)`` ``(N, K)``."""
    a, a_prevs, masks = X, [], []
    for B, b in params[:-1]:
        z = a @ B.T + b
        mask = (z > 0).astype(z.dtype)  # ReLU'(0) = 0, the lecture's convention
        a_prevs.append(a)
        masks.append(mask)
        a = z * mask
    B, b = params[-1]
    a_prevs.append(a)
    return a_prevs, masks, a @ B.T + b


def pullback(params, masks, e):
    """``delta^(l) = V^(l)' e`` for every layer, from ``V^(L+1)' e = e`` (``e``: ``(N, K)``).

    ``V^(l)' e = D^(l) B^(l+1)' V^(l+1)' e``, the transpose of ``V^(l) = V^(l+1) B^(l+1) D^(l)``.
    Returns ``L+1`` arrays ``(N, d_l)`` in layer order.
    """
    deltas = [e]
    for l in range(len(params) - 2, -1, -1):
        deltas.append((deltas[-1] @ params[l + 1][0]) * masks[l])
    deltas.reverse()
    return deltas


def push(params, masks, a_prevs, tangents):
    """``J v = sum_l V^(l) (dB^(l) a^(l-1) + db^(l))`` by Horner's rule, shape ``(N, K)``.

    ``tangents``: ``[(dB^(l), db^(l))]`` shaped like ``params``.  With
    ``t^(l) = sum_{m <= l} (V^(l) of layer m's term)``: ``t^(1) = dB^(1) a^(0) + db^(1)``,
    ``t^(l) = B^(l) D^(l-1) t^(l-1) + dB^(l) a^(l-1) + db^(l)``, ``J v = t^(L+1)``.
    """
    t = None
    for l, ((B, _), (dB, db)) in enumerate(zip(params, tangents)):
        own = a_prevs[l] @ dB.T + db
        t = own if t is None else (t * masks[l - 1]) @ B.T + own
    return t


def softmax(z, xp):
    z = z - xp.max(z, axis=1, keepdims=True)
    p = xp.exp(z)
    return p / xp.sum(p, axis=1, keepdims=True)


def output_grad(loss: str, z, y, xp):
    """``e_n = d loss_n / d z_n``, shape ``(N, K)``."""
    if loss == "mse":
        return z - y
    K = z.shape[1]
    onehot = (y[:, None] == xp.arange(K)).astype(z.dtype)
    return softmax(z, xp) - onehot


def output_hessian(loss: str, z, xp):
    """``H_n = d^2 loss_n / d z_n d z_n'``, shape ``(N, K, K)`` (the identity for ``mse``)."""
    N, K = z.shape
    if loss == "mse":
        return xp.broadcast_to(xp.eye(K, dtype=z.dtype), (N, K, K))
    p = softmax(z, xp)
    return p[:, :, None] * xp.eye(K, dtype=z.dtype) - p[:, :, None] * p[:, None, :]


def output_hessian_times(loss: str, z, u, xp):
    """``H_n u_n`` for every example, shape ``(N, K)``, without forming ``H``."""
    if loss == "mse":
        return u
    p = softmax(z, xp)
    return p * u - p * xp.sum(p * u, axis=1, keepdims=True)


def _per_example_grads(params, X, y, loss, xp):
    a_prevs, masks, z = forward(params, X)
    deltas = pullback(params, masks, output_grad(loss, z, y, xp))
    N = X.shape[0]
    blocks = []
    for delta, a in zip(deltas, a_prevs):
        blocks.append((delta[:, :, None] * a[:, None, :]).reshape(N, -1))  # vec(delta a')
        blocks.append(delta)
    return xp.concatenate(blocks, axis=1)


def _per_example_grad_norms(params, X, y, loss, xp):
    a_prevs, masks, z = forward(params, X)
    deltas = pullback(params, masks, output_grad(loss, z, y, xp))
    sq = 0
    for delta, a in zip(deltas, a_prevs):
        sq = sq + xp.sum(delta * delta, axis=1) * (xp.sum(a * a, axis=1) + 1)
    return xp.sqrt(sq)


_jitted: dict = {}


def _run(kernel, params, X, y, loss, xp, mesh, gather):
    """Run ``kernel`` in NumPy, or jit-compiled in JAX at ``precision="highest"``, or over ``mesh``."""
    if mesh is not None:
        from ._sharding import batch_parallel

        return batch_parallel(
            lambda p, Xl, yl: kernel(p, Xl, yl, loss, _jnp()), mesh, (params,), (X, y), gather, "X",
            key=(kernel, loss),
        )
    if xp is np:
        return kernel(params, X, y, loss, np)
    key = (kernel, loss)
    if key not in _jitted:
        import jax

        def traced(p, Xj, yj):
            with jax.default_matmul_precision("highest"):
                return kernel(p, Xj, yj, loss, _jnp())

        _jitted[key] = jax.jit(traced)
    return _jitted[key](params, X, y)


def _jnp():
    import jax.numpy as jnp

    return jnp


def _setup(params, X, y, loss, mesh, gather):
    from ._sharding import resolve_mesh

    check_loss(loss)
    if not isinstance(gather, (bool, np.bool_)):
        raise TypeError(f"gather: expected True or False, got {gather!r}")
    mesh = resolve_mesh(mesh, X)
    xp = None
    if mesh is not None:
        xp = _jnp()
    params, widths, X2, single, xp = prepare(params, X, xp, y=y)
    y2 = check_targets(loss, y, X2.shape[0], widths[-1], single, xp)
    if loss == "mse":
        y2 = y2.astype(X2.dtype)
    return params, widths, X2, y2, single, xp, mesh


def per_example_grads(
    params: Any,
    X: Any,
    y: Any,
    loss: str = "cross_entropy",
    *,
    mesh: Any = None,
    gather: bool = True,
):
    """Gradients of each example's loss with respect to ``beta``, shape ``(N, P)``.

    ``params``: ``[(B^(l), b^(l))]``, ``B^(l)`` of shape ``(d_l, d_{l-1})``.
    ``X``: inputs ``(N, d_0)`` (or one example ``(d_0,)``, giving ``(P,)``).
    ``y``: for ``loss="cross_entropy"``, integer labels ``(N,)`` in ``0..K-1``, the loss
    being ``-log softmax(z_n)[y_n]``; for ``loss="mse"``, real targets ``(N, K)``, the loss
    being ``0.5 ||z_n - y_n||^2``.  Each row is the gradient of one example's loss (not
    divided by ``N``), columns in ``beta`` order ``[vec(B^(1)'), b^(1), ...]``:
    ``[vec(delta^(1) a^(0)'), delta^(1), ...]`` with ``delta^(l) = V^(l)' dloss/dz``.

    ``mesh``: a ``jax.sharding.Mesh``; the rows of ``X`` and ``y`` are split over all its
    devices (by default, the mesh ``X`` is already sharded over, if any).  With
    ``gather=True`` the result is replicated on every device, otherwise it stays split by
    rows (then ``N`` must be divisible by the number of devices).  NumPy in, NumPy out;
    JAX (or a mesh) in, JAX out; usable under ``jax.jit``.
    """
    params, widths, X2, y2, single, xp, mesh = _setup(params, X, y, loss, mesh, gather)
    if X2.shape[0] == 0:  # an empty batch: no rows
        return xp.zeros((0, param_count(widths)), X2.dtype)
    G = _run(_per_example_grads, params, X2, y2, loss, xp, mesh, bool(gather))
    return G[0] if single else G


def per_example_grad_norms(
    params: Any,
    X: Any,
    y: Any,
    loss: str = "cross_entropy",
    *,
    mesh: Any = None,
    gather: bool = True,
):
    """Euclidean norms of the per-example gradients, shape ``(N,)``, without forming them.

    Same arguments as :func:`per_example_grads`.  Uses
    ``||g_n||^2 = sum_l ||delta_n^(l)||^2 (||a_n^(l-1)||^2 + 1)``, where
    ``||U^(l)' e||^2 = ||V^(l)' e||^2 ||a^(l-1)||^2`` is the weight part and
    ``||V^(l)' e||^2`` the bias part: cost about two forward passes, memory ``O(N d)``.
    """
    params, _, X2, y2, single, xp, mesh = _setup(params, X, y, loss, mesh, gather)
    n = _run(_per_example_grad_norms, params, X2, y2, loss, xp, mesh, bool(gather))
    return n[0] if single else n
