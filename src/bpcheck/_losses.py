"""Losses on the network outputs ``z_n = z^(L+1)(x_n)``: each example's gradient and Hessian.

Per example ``n`` (never summed or averaged here; the callers apply ``reduction``):

- ``"cross_entropy"``: ``y`` holds integer class labels ``(N,)`` in ``0..K-1``;
  ``loss_n = -log softmax(z_n)[y_n]``, ``e_n = p_n - onehot(y_n)``,
  ``H_n = diag(p_n) - p_n p_n'`` with ``p_n = softmax(z_n)``.  Or class probabilities
  (soft labels: label smoothing, distillation), a floating ``y`` ``(N, K)`` whose rows are
  non-negative and sum to 1 (within the square root of their dtype's epsilon), as
  ``torch.nn.functional.cross_entropy`` takes them: ``loss_n = -sum_k y_nk log p_nk``,
  ``e_n = s_n p_n - y_n`` with ``s_n = sum_k y_nk`` (the exact gradient), and the same
  ``H_n`` (exact for ``s_n = 1``; the Gauss-Newton functions need no targets).
- ``"mse"``: ``y`` holds real targets ``(N, K)``; ``loss_n = 0.5 ||z_n - y_n||^2``,
  ``e_n = z_n - y_n``, ``H_n = I_K``.
- ``"binary_cross_entropy"``: one logit (``K = 1``), ``y`` real in ``[0, 1]``, shape ``(N,)``
  or ``(N, 1)``; ``loss_n = -y_n log s(z_n) - (1 - y_n) log(1 - s(z_n))`` with the
  sigmoid ``s`` (PyTorch's ``BCEWithLogitsLoss``), ``e_n = s(z_n) - y_n``,
  ``H_n = s(z_n) (1 - s(z_n))``.
- ``Loss(grad=..., hessian=...)``: given by the user, see :class:`Loss`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ._arrays import as_array, backend, check_finite, is_tracer, with_batch_axis

NAMES = ("cross_entropy", "mse", "binary_cross_entropy")
REDUCTIONS = ("sum", "mean")


def _host_range(y):
    """``(min, max)`` of a concrete array; a JAX array's on the host, since inside an outer
    ``jax.jit``'s trace (the array closed over) its own reductions would be traced."""
    if type(y) is not np.ndarray:
        y = np.asarray(y)
    return y.min(), y.max()


def _softmax(z, xp):
    z = z - z.max(axis=1, keepdims=True)  # methods: no NumPy dispatch wrapper
    if xp is np:  # in place: no further arrays; the row sums as a product with ones
        p = np.exp(z, out=z)
        p /= np.dot(p, _ones_column(p.shape[1], p.dtype))
        return p
    p = xp.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=64)
def _ones_column(K: int, dtype) -> np.ndarray:
    """A read-only ``(K, 1)`` column of ones: ``x @ ones`` sums the rows of ``x``."""
    ones = np.ones((K, 1), dtype)
    ones.flags.writeable = False
    return ones


def _soft_label_grad(p, y, xp):
    """``p S - y`` (``S`` the row sums of the class probabilities ``y``) as
    ``p (S - y) - y (1 - p)``, with ``1 - p`` of each row's most probable class ``c`` (of
    ``y``) the sum of the other ``p_j``: where ``p_c`` saturates towards 1 the difference
    ``p_c - y_c`` of near-equal numbers loses its digits, these terms do not.  A one-hot
    row gives exactly what its label does (:meth:`Loss.grad`)."""
    S = y.sum(axis=1, keepdims=True)
    if xp is np:
        rows, c = np.arange(len(y)), y.argmax(axis=1)
        masked = p.copy()
        masked[rows, c] = 0
        q = 1 - p
        q[rows, c] = np.dot(masked, _ones_column(p.shape[1], p.dtype))[:, 0]
        return p * (S - y) - y * q
    top = xp.arange(y.shape[1]) == y.argmax(axis=1)[:, None]
    rest = xp.where(top, 0, p).sum(axis=1, keepdims=True)
    return p * (S - y) - y * xp.where(top, rest, 1 - p)


def _sigmoid(z, xp):
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _user_output(out, want: tuple, which: str, form: str, meaning: str, dtype=None):
    """A user loss's ``grad`` or ``hessian`` result, checked to have the shape ``want`` (known
    when tracing too): a batch mean ``(1, K)`` or a vector ``(K,)`` would otherwise be
    broadcast over the examples, or fail deep in a product; and the dtype of ``z``
    (``dtype``): a complex or integer result would pass into the gradients as it is, a
    float32 one for a float64 network would round them (or fail deep inside JAX)."""
    if type(out).__module__.partition(".")[0] == "torch":  # a loss written in torch
        raise TypeError(f"Loss.{which}: expected a NumPy array (a JAX one for JAX inputs), got a "
                        f"{type(out).__module__}.{type(out).__name__}; z and y come as NumPy "
                        f"arrays: compute with NumPy, or return the tensor's .numpy()")
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape) != want:
        got = f"shape {tuple(shape)}" if shape is not None else f"a {type(out).__name__}"
        raise ValueError(f"Loss.{which}: expected an array of shape {form} = {want} ({meaning}), "
                         f"got {got}")
    if dtype is not None and np.dtype(out.dtype) != np.dtype(dtype):
        raise TypeError(f"Loss.{which}: expected an array of the outputs' dtype {np.dtype(dtype)}, "
                        f"got {np.dtype(out.dtype)} (return it in z's dtype, e.g. "
                        f".astype(z.dtype))")
    return out


_RANGED = ("cross_entropy", "binary_cross_entropy")  # losses whose targets have a range


class Loss:
    """A loss of the outputs ``z`` ``(N, K)`` and targets ``y``, by name or by its derivatives.

    ``Loss("cross_entropy")``, ``Loss("mse")``, ``Loss("binary_cross_entropy")``: the
    built-in losses (the names alone do the same wherever ``loss=`` is accepted).
    ``Loss(grad=g, hessian=h)``: a loss given by its output gradient ``g(z, y)``, shape
    ``(N, K)`` with row ``n`` = ``d loss_n / d z_n``, and its output Hessian ``h(z, y)``,
    shape ``(N, K, K)`` (symmetric, positive semidefinite for the Gauss-Newton matrix to
    be), each in the dtype of ``z`` (checked, with the shape). Both receive batched arrays
    (NumPy or ``jax.numpy``, following the call's inputs; under JAX they are traced, so they
    must be written with ``jax.numpy``).
    ``y`` is passed through unchecked beyond its first axis having ``N`` rows, and
    ``hessian`` may be omitted when only gradients are asked for.  JAX calls compile one
    program per ``Loss`` (its functions are part of the program): make it once and reuse it.

    >>> Loss(grad=lambda z, y: z - y, hessian=None)
    Loss(grad=<lambda>, hessian=None)
    """

    __slots__ = ("name", "grad_fn", "hessian_fn")

    def __init__(self, name: str | None = None, *, grad: Callable | None = None,
                 hessian: Callable | None = None):
        if name is not None:
            if grad is not None or hessian is not None:
                raise TypeError(f"Loss({name!r}): give either a name or grad=/hessian=, not both")
            if name not in NAMES:
                raise ValueError(f"loss: expected one of {NAMES} or a bpcheck.Loss, got {name!r}")
        else:
            if not callable(grad):
                raise TypeError(f"Loss: grad must be a callable grad(z, y) -> (N, K), got {grad!r}")
            if hessian is not None and not callable(hessian):
                raise TypeError(
                    f"Loss: hessian must be a callable hessian(z, y) -> (N, K, K) or None, "
                    f"got {hessian!r}"
                )
        self.name, self.grad_fn, self.hessian_fn = name, grad, hessian

    def __repr__(self) -> str:
        if self.name is not None:
            return f"Loss({self.name!r})"
        names = [getattr(f, "__name__", repr(f)) if f is not None else "None"
                 for f in (self.grad_fn, self.hessian_fn)]
        return f"Loss(grad={names[0]}, hessian={names[1]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Loss) and (self.name, self.grad_fn, self.hessian_fn) == (
            other.name, other.grad_fn, other.hessian_fn)

    def __hash__(self) -> int:
        return hash((self.name, self.grad_fn, self.hessian_fn))

    # --- targets ----------------------------------------------------------------------

    def check_targets(self, y: Any, N: int, K: int, single: bool, xp, dtype):
        """``y`` validated for this loss and batched (a leading ``N`` axis added for a single
        example); real targets are cast to ``dtype``."""
        name = self.name
        if name is None:
            if y is None:
                return None
            y = as_array("y", y, xp)
            y = with_batch_axis(y) if single else y
            if y.ndim == 0 or y.shape[0] != N:
                raise ValueError(f"y: expected targets with one row per row of X (N = {N}), "
                                 f"got shape {tuple(y.shape)}")
            return y
        if y is None:
            raise TypeError(f"y: the targets are required for loss={name!r}")
        self.check_outputs(K)
        y = as_array("y", y, xp)
        if name == "cross_entropy":
            want = "()" if single else f"({N},)"
            labels_shape = () if single else (N,)
            if np.dtype(y.dtype).kind == "f" and tuple(y.shape) != labels_shape:
                return self._check_probabilities(y, N, K, single, dtype)  # class probabilities
            if np.dtype(y.dtype).kind not in "iu":
                raise TypeError(
                    f"y: expected integer class labels in 0..{K - 1} of shape {want} (or class "
                    f"probabilities, a floating array of shape {(K,) if single else (N, K)}) "
                    f"for loss='cross_entropy', got dtype {np.dtype(y.dtype)} of shape "
                    f"{tuple(y.shape)}"
                )
            if tuple(y.shape) != (() if single else (N,)):
                raise ValueError(
                    f"y: expected integer class labels of shape {want} for loss='cross_entropy' "
                    f"(one label per row of X), got shape {tuple(y.shape)}"
                )
            bad = self.target_out_of_range(y, K)
            if bad is not None:
                raise ValueError(f"y: class labels must lie in 0..{K - 1} (K = {K} outputs), got {bad}")
            return with_batch_axis(y) if single else y
        if name == "mse":
            want = (K,) if single else (N, K)
            if tuple(y.shape) != want:
                raise ValueError(
                    f"y: expected real targets of shape {want} for loss='mse' (one row of K = {K} "
                    f"outputs per row of X), got shape {tuple(y.shape)}"
                )
            check_finite("y", y)
            return (with_batch_axis(y) if single else y).astype(dtype)
        shapes = [(), (1,)] if single else [(N,), (N, 1)]
        if tuple(y.shape) not in shapes:
            raise ValueError(f"y: expected targets in [0, 1] of shape {shapes[0]} or {shapes[1]} "
                             f"for loss='binary_cross_entropy', got shape {tuple(y.shape)}")
        check_finite("y", y)
        bad = self.target_out_of_range(y, K)
        if bad is not None:
            raise ValueError(f"y: binary targets must lie in [0, 1], got {bad}")
        return y.reshape(N, 1).astype(dtype)

    def _check_probabilities(self, y, N: int, K: int, single: bool, dtype):
        """Cross-entropy's class probabilities ``(N, K)`` (``(K,)`` for one example): finite,
        non-negative, each row summing to 1; cast to ``dtype``."""
        want = (K,) if single else (N, K)
        if tuple(y.shape) != want:
            raise ValueError(
                f"y: expected class probabilities of shape {want} for loss='cross_entropy' (one "
                f"row of K = {K} per row of X; or integer class labels of shape "
                f"{() if single else (N,)}), got shape {tuple(y.shape)}")
        check_finite("y", y)
        bad = probabilities_problem(y)
        if bad is not None:
            raise ValueError(f"y: class probabilities {bad}")
        return (with_batch_axis(y) if single else y).astype(dtype)

    def check_outputs(self, K: int) -> None:
        """Binary cross-entropy takes one output logit, ``K = 1``, and cross-entropy at
        least two (its gradient is 0 for one output: a binary classifier's logit given the
        default loss) (checked with or without
        targets: the Gauss-Newton matrix needs none, and with ``K > 1`` its Hessian's shape
        would broadcast against the factors)."""
        if self.name == "binary_cross_entropy" and K != 1:
            raise ValueError(f"loss='binary_cross_entropy': expects one output logit (K = 1), "
                             f"but the network has K = {K} outputs")
        if self.name == "cross_entropy" and K == 1:  # (the default loss)
            raise ValueError("loss='cross_entropy': expects at least two outputs (K >= 2), but "
                             "the network has K = 1: the softmax of one output is 1, so every "
                             "gradient would be 0; for one logit of a binary classifier, pass "
                             "loss='binary_cross_entropy' (or 'mse' for a regression)")

    def target_out_of_range(self, y: Any, K: int):
        """The smallest or largest target of a concrete ``y`` where it lies outside its range
        (cross-entropy: class labels ``0..K-1``; binary cross-entropy: ``[0, 1]``), else
        ``None`` (also for the other losses and for traced or empty ``y``)."""
        if self.name not in _RANGED or is_tracer(y) or not y.size or soft_labels(self, y):
            return None
        low, high = self._target_range(K)
        kind = int if self.name == "cross_entropy" else float
        lo, hi = (kind(t) for t in _host_range(y))
        return lo if lo < low else hi if hi > high else None

    def target_bounds(self, y: Any, K: int) -> tuple:
        """``((y, lo, hi),)``: the range :meth:`target_out_of_range` checks, for a concrete
        JAX ``y`` of class labels or binary targets, to be checked again inside a compiled
        program (``bpcheck._compiled.call``'s ``bounds``); ``()`` otherwise."""
        if self.name not in _RANGED or y is None or type(y) is np.ndarray or is_tracer(y) \
                or soft_labels(self, y):  # (probabilities: checked on the host, every call)
            return ()
        return ((y, *self._target_range(K)),)

    def _target_range(self, K: int) -> tuple:
        """``(lo, hi)``: class labels ``0..K-1``, binary targets ``[0, 1]``."""
        return (0, K - 1) if self.name == "cross_entropy" else (0, 1)

    # --- derivatives with respect to z ------------------------------------------------

    def grad(self, z, y, xp=None):
        """``e_n = d loss_n / d z_n``, shape ``(N, K)`` (``xp``: the array module, ``numpy`` or
        ``jax.numpy``; default ``z``'s).  JAX: an example whose target is
        not one (a class label outside ``0..K-1``, class probabilities with a negative entry
        or a row sum off 1 by more than ``sqrt(eps)``, a binary target outside ``[0, 1]``)
        gets a row of NaN (so its gradients and their norm are NaN): under an outer
        ``jax.jit`` or ``jax.vmap`` the targets are traced, with no values to check and raise
        on (concrete ones are checked before)."""
        xp = xp if xp is not None else backend(z)
        e = self._grad(z, y, xp)
        if xp is np or self.name not in _RANGED:
            return e
        if y.ndim == 2 and self.name == "cross_entropy":  # class probabilities
            valid = (y.min(axis=1) >= 0) & (abs(y.sum(axis=1) - 1) <= _sum_tolerance(y.dtype))
        else:  # the range target_out_of_range checks on concrete targets
            lo, hi = self._target_range(z.shape[1])
            valid = (y >= lo) & (y <= hi)
        return xp.where(valid.reshape(-1, 1), e, xp.nan)

    def _grad(self, z, y, xp):
        if self.name == "mse":
            return z - y
        if self.name == "cross_entropy":
            p = _softmax(z, xp)
            if y.ndim == 2:  # class probabilities: d/dz of -sum_k y_k log p_k, p S - y
                return _soft_label_grad(p, y, xp)
            # p - onehot(y), its entry y_n as minus the sum of the other p_j: p_y - 1
            # loses every digit where p_y is within rounding of 1 (saturated outputs)
            if xp is np:
                rows = np.arange(len(y))
                p[rows, y] = 0
                others = np.dot(p, _ones_column(p.shape[1], p.dtype))[:, 0]
                p[rows, y] = -others
                return p
            onehot = y[:, None] == xp.arange(z.shape[1])
            p = xp.where(onehot, 0, p)
            return xp.where(onehot, -p.sum(axis=1, keepdims=True), p)
        if self.name == "binary_cross_entropy":
            # s(z) - y as s(z) (1 - y) - y s(-z): each term without a difference of near-equal
            # numbers (s(z) - 1 = -s(-z) loses every digit where s(z) rounds to 1)
            return _sigmoid(z, xp) * (1 - y) - y * _sigmoid(-z, xp)
        return _user_output(self.grad_fn(z, y), tuple(z.shape), "grad", "(N, K)",
                            "row n the gradient of example n's loss", z.dtype)

    def hessian(self, z, y, xp=None):
        """``H_n = d^2 loss_n / d z_n d z_n'``, shape ``(N, K, K)`` (``xp`` as for :meth:`grad`)."""
        xp = xp if xp is not None else backend(z)
        N, K = z.shape
        if self.name == "mse":
            return xp.broadcast_to(xp.eye(K, dtype=z.dtype), (N, K, K))
        if self.name in ("cross_entropy", "binary_cross_entropy"):
            return self.hessians_of_state(self.hessian_state(z, y, xp), xp)
        return self._user_hessian(z, y)

    def hessian_times(self, z, y, u, xp=None):
        """``H_n u_n`` for every example, shape ``(N, K)`` (or ``(m, N, K)`` for ``m`` sets of
        ``u``), without forming ``H`` where known (``xp`` as for :meth:`grad`)."""
        xp = xp if xp is not None else backend(z)
        return self.times_hessian(self.hessian_state(z, y, xp), u, xp)

    def hessian_state(self, z, y, xp):
        """What :meth:`times_hessian` needs of ``z`` and ``y``, computed once for many
        products: the softmax ``p`` (cross-entropy), ``s (1 - s)`` (binary cross-entropy),
        ``H`` itself (a user's loss), nothing for ``"mse"``."""
        if self.name == "mse":
            return None
        if self.name == "cross_entropy":
            return _softmax(z, xp)
        if self.name == "binary_cross_entropy":  # s (1 - s) as s(z) s(-z): no 1 - s near 0
            return _sigmoid(z, xp) * _sigmoid(-z, xp)
        return self._user_hessian(z, y)

    def _user_hessian(self, z, y):
        N, K = z.shape
        return _user_output(self.hessian_fn(z, y), (N, K, K), "hessian", "(N, K, K)",
                            "entry n the Hessian of example n's loss", z.dtype)

    def hessians_of_state(self, state, xp):
        """Every ``H_n``, ``(N, K, K)``, from :meth:`hessian_state`'s ``state`` (``None`` for
        ``"mse"``: the identity), for products that apply it as a matrix."""
        if self.name == "mse":
            return None
        if self.name is None:  # a user's loss: its Hessians themselves
            return state
        K = state.shape[1]
        eye = xp.eye(K, dtype=state.dtype)
        if self.name == "cross_entropy":
            # diag(p_n) - p_n p_n': entry (k, j) is p_k (d_kj - p_j), and the diagonal's
            # 1 - p_k is the sum of the other p_j (no cancellation where p_k is near 1)
            others = state @ (1 - eye)
            return state[:, :, None] * xp.where(eye > 0, others[:, None, :], -state[:, None, :])
        return state[:, :, None] * eye  # diag(s_n (1 - s_n))

    def times_hessian(self, state, u, xp):
        """``H_n u_n`` from :meth:`hessian_state`'s ``state``; ``u``: ``(N, K)`` or ``(m, N, K)``."""
        if self.name == "mse":
            return u
        if self.name == "cross_entropy":
            # p (u - p'u), written p (d - p'd) with d = u - u_c for the most likely class c
            # (sum_j p_j = 1): where p_c is near 1, u_c - p'u would be a difference of near
            # equals, p'd is small and exact in its own terms
            if xp is np and u.ndim == 2:  # (sums over K as products: fewer microseconds)
                d = u - u[np.arange(u.shape[0]), state.argmax(axis=1)][:, None]
                return state * (d - np.dot(state * d, _ones_column(u.shape[1], u.dtype)))
            top = xp.argmax(state, axis=-1)[:, None] == xp.arange(state.shape[-1])
            d = u - (u * top).sum(axis=-1, keepdims=True)
            return state * (d - (state * d).sum(axis=-1, keepdims=True))
        if self.name == "binary_cross_entropy":
            return state * u
        return xp.einsum("nkj,...nj->...nk", state, u)

    @property
    def hessian_is_identity(self) -> bool:
        return self.name == "mse"

    @property
    def needs_targets_for_hessian(self) -> bool:
        return self.name is None



def soft_labels(loss: Any, y: Any) -> bool:
    """Whether ``y`` holds cross-entropy's class probabilities (a floating array; class
    labels are integers); ``loss``: a :class:`Loss` or a loss's name."""
    return (getattr(loss, "name", loss) == "cross_entropy" and hasattr(y, "dtype")
            and np.dtype(y.dtype).kind == "f")


def _sum_tolerance(dtype) -> float:
    """How far a row of class probabilities may sum off 1: the square root of float32's
    epsilon, 3.5e-4, whatever the dtype (float32 probabilities cast to float64, a softmax
    computed in float32 then ``.double()``, carry float32's rounding: a row summing to
    0.99999991 was refused in float64)."""
    return float(np.sqrt(np.finfo(np.float32).eps))


def probabilities_problem(y: Any):
    """What is wrong with class probabilities ``y`` ``(N, K)`` (a concrete array, read on the
    host), as the end of an error message, or ``None``: an entry below 0, or a row whose sum
    is off 1 by more than 3.5e-4 (:func:`_sum_tolerance`: rounding, not a row of logits or of
    unnormalised weights).  ``None`` for a
    traced ``y`` too (under an outer ``jax.jit``: no values to read, as for class labels)."""
    if is_tracer(y):
        return None
    y = np.asarray(y)
    if not y.size:
        return None
    y = y.reshape(-1, y.shape[-1])  # one example: (K,)
    low = y.min()
    if low < 0:
        n, k = np.unravel_index(np.argmin(y), y.shape)
        return f"must be non-negative, got y[{n}, {k}] = {float(low):.6g}"
    sums = y.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1)
    tol = _sum_tolerance(y.dtype)
    if off.max() > tol:
        n = int(np.argmax(off))
        return (f"must sum to 1 in each row (within {tol:.2g}), got row {n} summing to "
                f"{sums[n]:.8g}")
    return None


def numpy_targets_in_range(params: Any, loss: Any, y: Any) -> bool:
    """For a repeat call (:func:`bpcheck._compiled.replayed`): NumPy targets in their range,
    as the first call found them (class labels, binary targets; JAX ones are checked by the
    program's flag, see :meth:`Loss.target_bounds`), and class probabilities, NumPy or JAX,
    non-negative with rows summing to 1 (checked on the host every call), without which the
    call takes its full path and raises the error that names them.  ``params``: the
    ``(B, b)`` list, or a :class:`bpcheck.Network` holding it."""
    if soft_labels(loss, y):
        return probabilities_problem(y) is None
    if type(y) is not np.ndarray:
        return True
    K = getattr(params, "params", params)[-1][0].shape[0]
    return Loss(loss).target_out_of_range(y, K) is None

def resolve_loss(loss: Any, *, hessian: bool = False) -> Loss:
    """The :class:`Loss` for a ``loss=`` argument (a name or a ``Loss``).

    ``hessian=True``: the caller needs ``H_n`` (Gauss-Newton), so a user loss must have one.
    """
    if isinstance(loss, Loss):
        out = loss
    elif isinstance(loss, str) and loss in NAMES:
        out = Loss(loss)
    else:
        raise ValueError(f"loss: expected one of {NAMES} or a bpcheck.Loss, got {loss!r}")
    if hessian and out.name is None and out.hessian_fn is None:
        raise ValueError(f"loss: {out!r} has no hessian; the Gauss-Newton matrix needs "
                         "Loss(grad=..., hessian=...)")
    return out


def check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    return reduction
