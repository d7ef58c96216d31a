"""Elementwise activations ``a = sigma(z)`` and their derivatives ``D = diag(sigma'(z))``.

The recursion ``V^(l) = V^(l+1) B^(l+1) D^(l)`` holds for any elementwise activation with
``D^(l) = diag(sigma'(z^(l)))``; each :class:`Activation` gives ``sigma`` and ``sigma'``
side by side, for NumPy and for ``jax.numpy`` (traceable under ``jax.jit``).

ReLU keeps the lecture's exact 0/1 mask, ``sigma'(0) = 0`` (``dhidden[hidden_layer <= 0] =
0``); leaky ReLU, ELU and SELU take the left derivative at their kink too (``slope``,
``alpha``).  The clipped ones (``relu6``, ``hard_tanh``, ``hard_sigmoid``) take 0 at both
ends of their linear piece, as ``torch.autograd`` and ``jax.grad`` do for ``relu6``, and
``hard_swish`` the product rule with that (0 at -3, 1 at 3, as both frameworks).  The
output layer has no activation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715
_SELU_ALPHA = 1.6732632423543772848170429916717  # as jax.nn.selu and torch.nn.SELU
_SELU_SCALE = 1.0507009873554804934193349852946

_PARAMETERS = {
    "relu": {},
    "leaky_relu": {"slope": 0.01},
    "elu": {"alpha": 1.0},
    "selu": {},
    "tanh": {},
    "sigmoid": {},
    "softplus": {"beta": 1.0, "threshold": math.inf},  # inf: none
    "gelu": {},
    "gelu_tanh": {},
    "silu": {},
    "mish": {},
    "celu": {"alpha": 1.0},
    "soft_sign": {},
    "relu6": {},
    "hard_tanh": {"min_val": -1.0, "max_val": 1.0},
    "hard_sigmoid": {},
    "hard_swish": {},
    "identity": {},
}
NAMES = tuple(_PARAMETERS)


def _erf(z, xp):
    if xp is not np:
        import jax.scipy.special

        return jax.scipy.special.erf(z)
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scipy comes with JAX
        return np.frompyfunc(math.erf, 1, 1)(z).astype(z.dtype)
    out = erf(z)  # (float64 for float16: SciPy has no float16 loop)
    return out if out.dtype == z.dtype else out.astype(z.dtype)


def _dtype(x, dtype):
    """``x`` in ``dtype`` (no copy when it is already)."""
    return x if x.dtype == dtype else x.astype(dtype)


def _sigmoid(z, xp):
    e = xp.exp(-xp.abs(z))  # never overflows
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _module(z, xp):
    """``xp``, or the array module of ``z`` (``jax.numpy`` for a JAX array, else NumPy)."""
    if xp is not None:
        return xp
    from ._arrays import backend

    return backend(z)


ALIASES = {"swish": "silu"}
"""Other names of the activations: ``"swish"`` is ``"silu"`` (``jax.nn.swish`` is
``jax.nn.silu``)."""


class Activation:
    """An elementwise activation by name, with its parameters.

    ``Activation("relu")`` (default of every function), ``"leaky_relu"`` (``slope``,
    default 0.01: ``z`` for ``z > 0``, ``slope * z`` otherwise), ``"elu"`` (``alpha``,
    default 1.0: ``alpha (exp(z) - 1)`` for ``z <= 0``), ``"selu"`` (the self-normalising
    ``scale * elu(z, alpha)`` with the fixed ``alpha = 1.6733`` and ``scale = 1.0507`` of
    ``jax.nn.selu`` and ``torch.nn.SELU``), ``"tanh"``, ``"sigmoid"``,
    ``"softplus"`` (``log(1 + exp(beta z)) / beta``, ``beta`` > 0, default 1;
    ``threshold``, default none: ``z`` itself for ``beta z > threshold``, as PyTorch's
    ``Softplus`` computes it, whose default is 20),
    ``"gelu"`` (exact, ``z Phi(z)`` with the normal CDF ``Phi``), ``"gelu_tanh"`` (the
    tanh approximation
    ``0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))``), ``"silu"`` (also called swish,
    ``z sigmoid(z)``), ``"mish"`` (``z tanh(softplus(z))``), ``"celu"`` (``alpha`` > 0,
    default 1.0: ``alpha (exp(z / alpha) - 1)`` for ``z <= 0``), ``"soft_sign"``
    (``z / (1 + |z|)``), ``"relu6"`` (``min(max(z, 0), 6)``), ``"hard_tanh"``
    (``min_val`` < ``max_val``, default -1.0 and 1.0: ``z`` clipped to them),
    ``"hard_sigmoid"`` (``relu6(z + 3) / 6``), ``"hard_swish"`` (``z relu6(z + 3) / 6``)
    and ``"identity"``.  The clipped ones have ``sigma' = 0`` at the ends of their linear
    piece, as ``torch.nn.Hardtanh`` (``jax.nn.hard_tanh``'s gradient there is 1; they agree
    everywhere else).

    >>> Activation("leaky_relu", slope=0.2)
    Activation('leaky_relu', slope=0.2)
    """

    __slots__ = ("name", "params")

    def __init__(self, name: str, **params: float):
        name = ALIASES.get(name, name) if isinstance(name, str) else name
        if not isinstance(name, str) or name not in _PARAMETERS:
            raise ValueError(f"activation: expected one of {NAMES} or an Activation, got {name!r}")
        allowed = _PARAMETERS[name]
        for key, value in params.items():
            if key not in allowed:
                want = f"its parameters are {tuple(allowed)}" if allowed else "it takes no parameters"
                raise TypeError(f"Activation({name!r}): unknown parameter {key}={value!r}; {want}")
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"Activation({name!r}): {key} must be a real number, got {value!r}")
            if not math.isfinite(value) and not (key == "threshold" and value == math.inf):
                raise ValueError(f"Activation({name!r}): {key} must be finite, got {value!r}")
        self.name = name
        self.params = tuple((k, float(params.get(k, v))) for k, v in allowed.items())
        p = dict(self.params)
        if name == "softplus" and not p["beta"] > 0:
            raise ValueError(f"Activation('softplus'): beta must be positive (log(1 + "
                             f"exp(beta z)) / beta), got {p['beta']!r}")
        if name == "celu" and not p["alpha"] > 0:
            raise ValueError(f"Activation('celu'): alpha must be positive (z / alpha), got "
                             f"{p['alpha']!r}")
        if name == "hard_tanh" and not p["min_val"] < p["max_val"]:
            raise ValueError(f"Activation('hard_tanh'): expected min_val < max_val, got "
                             f"min_val={p['min_val']!r}, max_val={p['max_val']!r}")

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params
                        if v != math.inf and not (self.name == "softplus" and k == "beta" and v == 1))
        return f"Activation({self.name!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Activation) and (self.name, self.params) == (other.name, other.params)

    def __hash__(self) -> int:
        return hash((self.name, self.params))

    @property
    def kinks(self) -> tuple[float, ...]:
        """The points where ``sigma'`` jumps, in increasing order: ``(0.0,)`` for relu, leaky
        relu (``slope != 1``), elu (``alpha != 1``) and selu; both ends of the linear piece
        for relu6 ``(0, 6)``, hard_tanh ``(min_val, max_val)``, hard_sigmoid and hard_swish
        ``(-3, 3)``; ``()`` for the smooth ones."""
        p = dict(self.params)
        name = self.name
        if name == "relu" or name == "selu" or (name == "leaky_relu" and p["slope"] != 1.0) \
                or (name == "elu" and p["alpha"] != 1.0):
            return (0.0,)
        if name == "relu6":
            return (0.0, 6.0)
        if name == "hard_tanh":
            return (p["min_val"], p["max_val"])
        if name in ("hard_sigmoid", "hard_swish"):
            return (-3.0, 3.0)
        return ()

    @property
    def has_kink(self) -> bool:
        """True where ``sigma'`` jumps somewhere (:attr:`kinks` is not empty)."""
        return bool(self.kinks)

    def value(self, z, xp=None, out=None):
        """``sigma(z)``, elementwise, same shape and dtype as ``z`` (no derivative computed).

        ``xp``: the array module, ``numpy`` or ``jax.numpy`` (default: ``z``'s).  ``out``:
        NumPy only, ``z`` itself when the caller no longer needs it: relu, tanh and
        identity then write the value over it; the others return a new array."""
        return self._evaluate(z, _module(z, xp), False, out)[0]

    def derivative(self, z, xp=None):
        """``sigma'(z)``, elementwise: the diagonal of ``D`` (``xp`` as for :meth:`value`)."""
        return self._evaluate(z, _module(z, xp), True, None)[1]

    def value_and_derivative(self, z, xp=None):
        """``(sigma(z), sigma'(z))``, sharing the work between the two."""
        return self._evaluate(z, _module(z, xp), True, None)

    def _evaluate(self, z, xp, with_derivative, out):
        """``(sigma(z), sigma'(z) or None)``: each activation's value beside its derivative."""
        name = self.name
        if name == "relu":
            if not with_derivative:  # max(0, z); NumPy's maximum gives 0.0 for z = -0.0
                # (NaN stays NaN: where(z <= 0, 0, z), not where(z > 0, z, 0))
                return (np.maximum(z, 0, out=out) if xp is np else xp.where(z <= 0, 0, z)), None
            if xp is np:  # maximum: one pass (+0.0 for -0.0 too: tested bitwise against where)
                zero = _ZERO.get(z.dtype, 0)
                return np.maximum(z, zero), (z > zero).astype(z.dtype)
            D = (z > 0).astype(z.dtype)
            return xp.where(z <= 0, 0, z), D  # where: max(0, z) without -0.0, NaN kept
        if name == "tanh":
            t = np.tanh(z, out=out) if xp is np else xp.tanh(z)
            return t, (1 - t * t if with_derivative else None)
        if name == "identity":
            return z, (xp.ones_like(z) if with_derivative else None)
        p = dict(self.params)
        one = xp.ones((), dtype=z.dtype)
        if name == "leaky_relu":
            on = z > 0
            return (xp.where(on, z, p["slope"] * z),
                    xp.where(on, one, p["slope"]).astype(z.dtype) if with_derivative else None)
        if name == "elu":
            on = z > 0
            e = xp.exp(xp.minimum(z, 0))  # never overflows
            return (xp.where(on, z, p["alpha"] * (e - 1)),
                    xp.where(on, one, p["alpha"] * e).astype(z.dtype) if with_derivative else None)
        if name == "selu":  # the left derivative at the kink, scale * alpha, as for elu
            on = z > 0
            e = xp.exp(xp.minimum(z, 0))
            return (xp.where(on, _SELU_SCALE * z, (_SELU_SCALE * _SELU_ALPHA) * (e - 1)),
                    xp.where(on, _SELU_SCALE, (_SELU_SCALE * _SELU_ALPHA) * e).astype(z.dtype)
                    if with_derivative else None)
        if name == "sigmoid":
            s = _sigmoid(z, xp)
            return s, (s * (1 - s) if with_derivative else None)
        if name == "softplus":  # log(1 + exp(beta z)) / beta, sigma' = sigmoid(beta z)
            beta = p["beta"]
            u = z if beta == 1 else z * beta
            value = xp.log1p(xp.exp(-xp.abs(u))) + xp.maximum(u, 0)
            value = value if beta == 1 else value * (1 / beta)
            D = _sigmoid(u, xp) if with_derivative else None
            if p["threshold"] != math.inf:  # linear where beta z is above it, as torch's
                above = u > p["threshold"]
                value = xp.where(above, z, value)
                D = xp.where(above, one, D) if with_derivative else None
            return value, D
        if name == "silu":  # sigma' = s + z s (1 - s) = s (1 + z (1 - s)), s = sigmoid(z)
            s = _sigmoid(z, xp)
            return z * s, (s * (1 + z * (1 - s)) if with_derivative else None)
        if name == "mish":  # z tanh(sp), sigma' = tanh(sp) + z (1 - tanh(sp)^2) sigmoid(z)
            t = xp.tanh(xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0))
            return z * t, (t + z * (1 - t * t) * _sigmoid(z, xp) if with_derivative else None)
        if name == "celu":
            on, alpha = z > 0, p["alpha"]
            e = xp.exp(xp.minimum(z, 0) * (1 / alpha))  # never overflows
            return (xp.where(on, z, alpha * (e - 1)),
                    xp.where(on, one, e).astype(z.dtype) if with_derivative else None)
        if name == "soft_sign":
            r = 1 / (1 + xp.abs(z))
            return z * r, (r * r if with_derivative else None)
        if name in ("relu6", "hard_tanh", "hard_sigmoid", "hard_swish"):  # a clipped line
            lo, hi = self.kinks  # the ends of the linear piece
            # no -0.0 at lo = 0, and NaN stays NaN (an overflow upstream is not clipped away)
            clipped = _dtype(xp.where(z <= lo, lo, xp.where(z >= hi, hi, z)), z.dtype)
            D = _dtype(((z > lo) & (z < hi)), z.dtype) if with_derivative else None
            if name in ("relu6", "hard_tanh"):
                return clipped, D
            h = (clipped + 3) / 6  # hard_sigmoid, as relu6(z + 3) / 6
            if name == "hard_sigmoid":
                return h, (D / 6 if with_derivative else None)
            # hard_swish z h(z): sigma' = h + z h' = (2 z + 3) / 6 inside, 0 below, 1 above
            return z * h, (_dtype(xp.where(z > lo, xp.where(z < hi, (2 * z + 3) / 6, 1), 0),
                                  z.dtype) if with_derivative else None)
        if name == "gelu":
            cdf = 0.5 * (1 + _erf(z * (1 / math.sqrt(2.0)), xp))
            if not with_derivative:
                return z * cdf, None
            pdf = xp.exp(-0.5 * z * z) * (1 / math.sqrt(2 * math.pi))
            return z * cdf, cdf + z * pdf
        # gelu_tanh; z^3 and z^2 overflow in float16 (|z| above about 40 and 700), where
        # tanh is already +-1 and 1 - t^2 is 0: the product of 0 and inf is taken as 0
        with np.errstate(over="ignore", invalid="ignore"):
            inner = _SQRT_2_OVER_PI * (z + _GELU_TANH_C * z * z * z)
            t = xp.tanh(inner)
            if not with_derivative:
                return 0.5 * z * (1 + t), None
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * z * z)
            sech2 = 1 - t * t
            slope = xp.where(sech2 == 0, 0, sech2 * d_inner)
            return 0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * slope

    def times_derivative(self, M, D, xp, own=False):
        """``M * D`` with ``D = sigma'(z)`` broadcast over ``M``'s last axis; ReLU selects
        by its 0/1 mask (no ``-0.0``, no multiplication).  ``own``: ``M`` is a NumPy
        temporary of the caller's, of the result's shape, which may be written over."""
        if self.name == "relu":
            return _masked(M, D, M if own else None) if xp is np else xp.where(D > 0, M, 0)
        if self.name == "identity":
            return M
        return np.multiply(M, D, out=M) if own else M * D


RELU = Activation("relu")


def _masked(M, D, out=None):
    """``where(D > 0, M, 0)`` for NumPy and a 0/1 mask ``D`` (into ``out``, which may be
    ``M``): ``M * D``, then ``+ 0``, which turns the ``-0.0`` of a negative entry times 0
    into ``0.0`` (bitwise what ``where`` gives for finite ``M``).  NumPy's ``where`` loop
    is 6-10 times slower than the two passes (256 x 10 x 256 float32: 1.48 ms against
    0.25 ms)."""
    out = np.multiply(M, D, out=out)
    out += _ZERO.get(out.dtype, 0)  # a 0-d array of out's dtype: half the time of Python's 0
    return out


_ZERO = {np.dtype(t): np.zeros((), t) for t in (np.float16, np.float32, np.float64)}


def _one(value: Any, where: str) -> Activation:
    if isinstance(value, Activation):
        return value
    if isinstance(value, str):
        value = ALIASES.get(value, value)
        if value not in _PARAMETERS:
            raise ValueError(f"{where}: expected one of {NAMES} or an Activation, got {value!r}")
        return Activation(value)
    raise TypeError(
        f"{where}: expected an activation name {NAMES}, an Activation, or a list of those "
        f"(one per hidden layer), got {type(value).__name__} {value!r:.60}"
    )


def resolve_activations(activation: Any, L: int) -> tuple[Activation, ...]:
    """One :class:`Activation` per hidden layer ``l = 1..L`` from the ``activation=`` argument.

    ``activation``: a name, an :class:`Activation`, or a list/tuple of ``L`` of those (one
    per hidden layer, in layer order).  A single value applies to every hidden layer.
    """
    if isinstance(activation, (list, tuple)):
        if len(activation) != L:
            raise ValueError(
                f"activation: expected one entry per hidden layer (L = {L} for these params), "
                f"got a {type(activation).__name__} of {len(activation)}: {list(activation)!r:.120}"
            )
        return tuple(_one(a, f"activation[{i}]") for i, a in enumerate(activation))
    if isinstance(activation, Sequence) and not isinstance(activation, str):
        raise TypeError(
            f"activation: expected a name, an Activation, or a list/tuple of those, "
            f"got {type(activation).__name__}"
        )
    return (_one(activation, "activation"),) * L
