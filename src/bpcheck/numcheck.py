"""The numeric check: ``bpcheck.jacobian`` against ``jax.jacrev`` and finite differences.

On random deep networks (float64; ReLU, and from the sixth network on also the other
activations of :class:`bpcheck.Activation`, mixed per layer) the Jacobian from the V/U
recursion is compared with two independent references:

* ``jax.jacrev`` of a forward pass written here from scratch as a function of the flat
  ``beta`` (its own slicing of ``beta``, JAX's own activations: ``jax.nn.relu`` whose
  derivative at 0 is 0, as in the lecture's ``dhidden[hidden_layer <= 0] = 0``,
  ``jax.nn.gelu``, ``jnp.tanh``, ...);
* centred finite differences ``(f(beta + h e_p) - f(beta - h e_p)) / 2h`` with
  ``h = 1e-5`` (CS231n "Gradient checks") on a random sample of columns ``p``.

Relative error follows the CS231n assignments, ``|a - r| / max(|a| + |r|, floor)``, with
``floor = 1e-8 * max(1, max |r|)`` so that entries that are exactly zero in both do not
divide by zero.  With a smooth activation in the network, ``floor = 1e-3 * max(1, max |r|)``:
no entry is then exactly zero, and the entries far below the largest are sums whose terms
cancel, so the two references round them differently (about ``1e-15`` of the largest
entry), and ``jax.grad`` of an activation's formula loses digits in its tails (``gelu_tanh``
at ``z = -7.34``: ``-3.46e-14`` where the derivative is ``-4.5e-16``, an error of 1.3e-10
against a floor of ``1e-4``); they are compared in absolute terms.  Pass thresholds:
1e-10 against ``jacrev``, 1e-6 against finite differences.

Kinks: the derivative of ReLU (leaky ReLU, ELU with ``alpha != 1``, SELU) at ``z = 0``
is a convention, as is that of the clipped ones (relu6, hard_tanh, hard_sigmoid,
hard_swish) at both ends of their linear piece (:attr:`bpcheck.Activation.kinks`).  An
input whose pre-activation lies within rounding of a kink is detected, reported and
redrawn; a finite-difference column whose ``+-h`` step crosses a kink is detected,
reported and replaced by another column.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import numpy as np

from ._activations import Activation, resolve_activations
from ._arrays import bias_flags
from ._params import flatten_params, param_count
from ._recursion import jacobian

JACREV_TOL = 1e-10
FD_TOL = 1e-6
FD_STEP = 1e-5
DEAD_LIMIT = 0.5
DEAD_NOTE = "mostly dead units"
"""Flag for a network whose Jacobian has more than ``DEAD_LIMIT`` zero columns."""


PIECEWISE_LINEAR_FLOOR = 1e-8
SMOOTH_FLOOR = 1e-3


def rel_error(actual: np.ndarray, reference: np.ndarray, floor: float = PIECEWISE_LINEAR_FLOOR
              ) -> np.ndarray:
    """Entrywise ``|a - r| / max(|a| + |r|, floor * max(1, max |r|))``."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(reference), initial=0.0)))
    denom = np.maximum(np.abs(actual) + np.abs(reference), floor * scale)
    return np.abs(actual - reference) / denom


# --- an independent forward pass, as a function of the flat beta --------------------

def _split_beta(beta, widths):
    """Slices of ``beta`` per layer, written without ``unflatten_params`` on purpose."""
    layers, start = [], 0
    for i in range(1, len(widths)):
        rows, cols = widths[i], widths[i - 1]
        W = beta[start:start + rows * cols].reshape(rows, cols)
        start += rows * cols
        layers.append((W, beta[start:start + rows]))
        start += rows
    return layers


def _jax_activation(act: Activation):
    """JAX's own definition of ``act`` (not :meth:`Activation.value`)."""
    import jax
    import jax.numpy as jnp

    p = dict(act.params)
    return {
        "relu": jax.nn.relu,
        "leaky_relu": lambda z: jax.nn.leaky_relu(z, p.get("slope")),
        "elu": lambda z: jax.nn.elu(z, p.get("alpha")),
        "selu": jax.nn.selu,
        "tanh": jnp.tanh,
        "sigmoid": jax.nn.sigmoid,
        "softplus": lambda z: _above(z, p["threshold"], jax.nn.softplus(p["beta"] * z) / p["beta"],
                                     jnp, p["beta"]),
        "gelu": lambda z: jax.nn.gelu(z, approximate=False),
        "gelu_tanh": lambda z: jax.nn.gelu(z, approximate=True),
        "silu": jax.nn.silu,
        "mish": jax.nn.mish,
        "celu": lambda z: jax.nn.celu(z, p.get("alpha")),
        "soft_sign": jax.nn.soft_sign,
        "relu6": jax.nn.relu6,
        "hard_tanh": lambda z: jnp.clip(z, p.get("min_val"), p.get("max_val")),
        "hard_sigmoid": jax.nn.hard_sigmoid,
        "hard_swish": jax.nn.hard_swish,
        "identity": lambda z: z,
    }[act.name]


def _above(z, threshold, value, xp, beta=1.0):
    """``value``, but ``z`` itself where ``beta z > threshold`` (a thresholded softplus)."""
    return value if threshold == math.inf else xp.where(beta * z > threshold, z, value)


def _numpy_activation(act: Activation):
    """``act`` in NumPy, written out here (works in ``np.longdouble``; gelu's ``erf`` in float64)."""
    p = dict(act.params)
    erf = np.frompyfunc(math.erf, 1, 1)
    return {
        "relu": lambda z: np.where(z > 0, z, 0.0),
        "leaky_relu": lambda z: np.where(z > 0, z, p.get("slope") * z),
        "elu": lambda z: np.where(z > 0, z, p.get("alpha") * np.expm1(np.minimum(z, 0))),
        "selu": lambda z: 1.0507009873554804934193349852946 * np.where(
            z > 0, z, 1.6732632423543772848170429916717 * np.expm1(np.minimum(z, 0))),
        "tanh": np.tanh,
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "softplus": lambda z: _above(z, p["threshold"], np.logaddexp(0, p["beta"] * z) / p["beta"],
                                     np, p["beta"]),
        "gelu": lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2)).astype(z.dtype)),
        "gelu_tanh": lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3))),
        "silu": lambda z: z / (1 + np.exp(-z)),
        "mish": lambda z: z * np.tanh(np.logaddexp(0, z)),
        "celu": lambda z: np.where(z > 0, z, p.get("alpha") * np.expm1(np.minimum(z, 0) / p.get("alpha"))),
        "soft_sign": lambda z: z / (1 + np.abs(z)),
        "relu6": lambda z: np.clip(z, 0, 6),
        "hard_tanh": lambda z: np.clip(z, p.get("min_val"), p.get("max_val")),
        "hard_sigmoid": lambda z: np.clip(z + 3, 0, 6) / 6,
        "hard_swish": lambda z: z * np.clip(z + 3, 0, 6) / 6,
        "identity": lambda z: z,
    }[act.name]


def reference_forward_jax(beta, x, widths, acts=None):
    """``z^(L+1)`` for one example ``x`` ``(d_0,)`` as a JAX function of ``beta`` ``(P,)``.

    ``acts``: one :class:`bpcheck.Activation` per hidden layer (default ReLU).
    """
    layers = _split_beta(beta, widths)
    acts = resolve_activations("relu" if acts is None else acts, len(layers) - 1)
    h = x
    for (W, c), act in zip(layers[:-1], acts):
        h = _jax_activation(act)(W @ h + c)
    W, c = layers[-1]
    return W @ h + c


def reference_forward_numpy(beta, X, widths, acts=None):
    """``z^(L+1)`` for a batch ``X`` ``(N, d_0)`` in NumPy, and the activation pattern.

    Works in the dtype of ``beta``; the finite differences use ``np.longdouble`` so that
    the rounding error of the quotient, about ``eps |f| / h``, stays far below the
    tolerance even for Jacobian entries near 1e-7 (in float64 it would be about 1e-11
    absolute, i.e. 1e-4 relative for such entries).
    """
    h = X.astype(beta.dtype)
    pattern = []
    layers = _split_beta(beta, widths)
    acts = resolve_activations("relu" if acts is None else acts, len(layers) - 1)
    for (W, c), act in zip(layers[:-1], acts):
        z = h @ W.T + c
        pattern += [z > kink for kink in act.kinks]  # which side of each kink
        h = _numpy_activation(act)(z)
    W, c = layers[-1]
    return h @ W.T + c, pattern


@functools.lru_cache(maxsize=64)
def _compiled_jacrev(widths: tuple[int, ...], acts: tuple[Activation, ...]):
    import jax

    f = jax.jacrev(lambda bt, x: reference_forward_jax(bt, x, widths, acts))
    return jax.jit(jax.vmap(f, in_axes=(None, 0)))


def jacrev_jacobian(params, X, activation: Any = "relu") -> np.ndarray:
    """``(N, K, P)`` Jacobian by ``jax.vmap(jax.jacrev(...))`` of the independent forward pass.

    Needs float64 in JAX (``jax_enable_x64``); compiled once per architecture.
    """
    import jax.numpy as jnp

    if not jnp.zeros((), dtype=jnp.float64).dtype == np.float64:
        raise RuntimeError("jacrev_jacobian needs jax_enable_x64 (float64); "
                           "turn on JAX's 64-bit mode (jax_enable_x64)")
    widths = tuple(_widths_of(params))
    acts = resolve_activations(activation, len(widths) - 2)
    beta = jnp.asarray(flatten_params(params), dtype=jnp.float64)
    return np.asarray(_compiled_jacrev(widths, acts)(beta, jnp.asarray(X, dtype=jnp.float64)))


# --- kinks ---------------------------------------------------------------------------

def _as_float64(params, activation):
    """``(params, activation)`` in NumPy float64: a :class:`~bpcheck.Network` gives its own
    layers and activations (``activation`` left at ``"relu"``), JAX or torch layers are
    copied (the references compute in NumPy float64)."""
    from ._model import Network

    if isinstance(params, Network):
        if activation != "relu" and tuple(resolve_activations(activation, len(params.params) - 1)) \
                != tuple(params.activation):
            raise ValueError("activation: a Network holds its own activations; leave "
                             "activation out")
        activation = list(params.activation)
        params = params.params
    if not isinstance(params, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in params):
        raise TypeError(f"params: expected a list of (B, b) pairs or a bpcheck.Network, got "
                        f"{type(params).__name__}")
    return [(np.asarray(B, dtype=np.float64), None if b is None else np.asarray(b, dtype=np.float64))
            for B, b in params], activation


def kink_margin(params, x, activation: Any = "relu") -> float:
    """Smallest ``|z_i^(l) - c|`` over the hidden units of layers whose activation has a
    kink, ``c`` each of its :attr:`~bpcheck.Activation.kinks` (``inf`` if none has), in
    units of the rounding-error bound of ``z_i^(l)``.

    The bound for ``z = B a + b`` computed in float64 is ``d * eps * (|B| |a| + |b|)``;
    a margin below 1 means the sign of ``z_i`` (and so ``D^(l)``) is not determined by
    the arithmetic: the derivative there is a convention.
    """
    params, activation = _as_float64(params, activation)
    eps = np.finfo(np.float64).eps
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"x: expected one example, shape (d_0,), got shape {a.shape} (for a "
                         f"batch, take the least margin of its rows)")
    margin = np.inf
    for (B, b), act in zip(params[:-1], resolve_activations(activation, len(params) - 1)):
        z = B @ a + b
        if not act.has_kink:
            a = act.value(z, np)
            continue
        bound = (B.shape[1] + 1) * eps * (np.abs(B) @ np.abs(a) + np.abs(b))
        for kink in act.kinks:
            gap = np.abs(z - kink)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(bound > 0, gap / bound, np.where(gap == 0, 0.0, np.inf))
            margin = min(margin, float(ratio.min()))
        a = act.value(z, np)
    return margin


# --- one network ---------------------------------------------------------------------

@dataclass
class NetworkResult:
    """Worst errors for one network; ``passed`` is decided against the module thresholds."""

    widths: list[int]
    N: int
    P: int
    jacrev_error: float
    fd_error: float
    fd_columns: int
    kinks_redrawn: int = 0
    fd_kinks_skipped: int = 0
    message: str = ""
    passed: bool = False
    notes: list[str] = field(default_factory=list)
    activation: str = "relu"
    """The hidden layers' activations, e.g. ``"relu"`` or ``"tanh,gelu"``."""


def _widths_of(params):
    return [int(params[0][0].shape[1])] + [int(B.shape[0]) for B, _ in params]


def check_network(
    params,
    X,
    *,
    jacobian_fn: Callable[..., Any] | None = None,
    activation: Any = "relu",
    fd_columns: int = 12,
    rng: np.random.Generator | None = None,
) -> NetworkResult:
    """Compare ``jacobian_fn(params, X)`` with ``jax.jacrev`` and finite differences.

    ``params``: ``[(B^(l), b^(l))]`` (JAX or torch arrays are copied to NumPy float64) or
    a :class:`~bpcheck.Network` (its activations too); ``X``: ``(N, d_0)`` inputs, assumed
    away from kinks (see :func:`draw_inputs`).  ``activation``: as in
    :func:`bpcheck.forward`; the references use their own definitions of it.
    ``jacobian_fn`` defaults to ``bpcheck.jacobian`` with that activation; tests pass
    deliberately wrong versions (called as ``jacobian_fn(params, X)`` for ReLU networks,
    with ``activation=`` otherwise) to show the check fails.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    params, activation = _as_float64(params, activation)
    if bias_flags(params) is not None:
        raise ValueError("params: check_network checks networks with a bias in every layer (its "
                         "references split beta that way); give the layers without one a zero "
                         "bias, b = np.zeros(d_l)")
    widths = _widths_of(params)
    acts = resolve_activations(activation, len(widths) - 2)
    X = np.asarray(X, dtype=np.float64)
    N, K, P = X.shape[0], widths[-1], param_count(widths)
    names = list(dict.fromkeys(a.name for a in acts))  # distinct, in layer order
    result = NetworkResult(widths, N, P, np.inf, np.inf, 0, activation=",".join(names) or "none")
    relu = all(a.name == "relu" for a in acts)
    try:
        if jacobian_fn is None:
            J = jacobian(params, X, activation=acts)
        else:
            J = jacobian_fn(params, X) if relu else jacobian_fn(params, X, activation=acts)
        J = np.asarray(J, dtype=np.float64)
    except Exception as err:  # a wrong implementation must be reported, not crash the check
        result.message = f"jacobian raised {type(err).__name__}: {err}"
        return result
    if J.shape != (N, K, P):
        result.message = f"jacobian has shape {J.shape}, expected (N, K, P) = {(N, K, P)}"
        return result
    at_kink = [n for n in range(N) if kink_margin(params, X[n], acts) <= 1.0]
    if at_kink:
        result.notes.append(
            f"example(s) {at_kink} sit within rounding of a kink (z = 0 in a ReLU-type layer, "
            "an end of a clipped one), where the derivative is a convention, not a fact; they "
            "are left out of the comparison"
        )
        keep = [n for n in range(N) if n not in at_kink]
        if not keep:
            result.message = "every example sits at a kink; nothing left to compare"
            return result
        X, J, N = X[keep], J[keep], len(keep)
    J_ref = jacrev_jacobian(params, X, acts)
    floor = (PIECEWISE_LINEAR_FLOOR if all(a.name in ("relu", "leaky_relu", "identity") for a in acts)
             else SMOOTH_FLOOR)
    err = rel_error(J, J_ref, floor)
    result.jacrev_error = float(err.max())
    if result.jacrev_error >= JACREV_TOL:
        n, k, p = np.unravel_index(int(err.argmax()), err.shape)
        result.notes.append(
            f"worst vs jacrev at example {n}, output {k}, beta[{p}]: "
            f"recursion {J[n, k, p]:.6g}, jacrev {J_ref[n, k, p]:.6g}"
        )

    beta = flatten_params(params).astype(np.longdouble)
    _, base_pattern = reference_forward_numpy(beta, X, widths, acts)
    worst, used, skipped = 0.0, 0, 0
    live = np.abs(J_ref).max(axis=(0, 1)) > 0  # columns some example depends on
    if live.mean() < 1 - DEAD_LIMIT:
        result.notes.append(
            f"{DEAD_NOTE}: {100 * live.mean():.1f}% of the Jacobian's columns are non-zero "
            "(dead ReLUs); the finite differences are drawn from the live columns first"
        )
    order = rng.permutation(P)
    for p in np.concatenate([order[live[order]], order[~live[order]]]):
        if used == min(fd_columns, P):
            break
        step = np.zeros(P, dtype=np.longdouble)
        step[p] = FD_STEP
        f_plus, pat_plus = reference_forward_numpy(beta + step, X, widths, acts)
        f_minus, pat_minus = reference_forward_numpy(beta - step, X, widths, acts)
        if any((pp != bp).any() or (pm != bp).any()
               for pp, pm, bp in zip(pat_plus, pat_minus, base_pattern)):
            skipped += 1  # the +-h step crosses a kink: a difference quotient is wrong there
            continue
        fd = ((f_plus - f_minus) / (2 * step[p])).astype(np.float64)  # (N, K): column p
        e = rel_error(J[:, :, p], fd, floor)
        if e.max() > worst:
            worst = float(e.max())
            if worst >= FD_TOL:
                n, k = np.unravel_index(int(e.argmax()), e.shape)
                result.notes.append(
                    f"worst vs finite differences at example {n}, output {k}, beta[{p}]: "
                    f"recursion {J[n, k, p]:.6g}, difference quotient {fd[n, k]:.6g}"
                )
        used += 1
    result.fd_error, result.fd_columns, result.fd_kinks_skipped = worst, used, skipped
    if skipped:
        result.notes.append(
            f"{skipped} finite-difference column(s) straddled a kink and were replaced"
        )
    result.passed = result.jacrev_error < JACREV_TOL and result.fd_error < FD_TOL and used > 0
    if not result.passed and not result.message:
        result.message = (
            f"jacrev error {result.jacrev_error:.2e} (limit {JACREV_TOL:g}), finite-difference "
            f"error {result.fd_error:.2e} (limit {FD_TOL:g})"
        )
    return result


# --- random networks -------------------------------------------------------------------

def live_fraction(params, X, activation: Any = "relu") -> float:
    """The fraction of Jacobian columns (parameters) that some example of ``X`` depends on."""
    params, activation = _as_float64(params, activation)
    J = np.asarray(jacobian(params, np.asarray(X, dtype=np.float64), activation=activation))
    return float((np.abs(J).max(axis=(0, 1)) > 0).mean())


def random_network(rng: np.random.Generator, *, max_depth: int = 12, max_width: int = 64,
                   max_outputs: int = 10):
    """Random widths (depth ``L`` in ``0..max_depth``, hidden widths ``1..max_width``,
    ``K`` in ``1..max_outputs``) and He-scaled parameters with random biases, float64."""
    L = int(rng.integers(0, max_depth + 1))
    widths = [int(w) for w in rng.integers(1, max_width + 1, size=L + 1)]
    widths.append(int(rng.integers(1, max_outputs + 1)))
    params = []
    for d_prev, d in zip(widths[:-1], widths[1:]):
        B = rng.standard_normal((d, d_prev)) * np.sqrt(2.0 / d_prev)
        params.append((B, 0.1 * rng.standard_normal(d)))
    return widths, params


def draw_inputs(rng: np.random.Generator, params, N: int, *, max_tries: int = 1000,
                activation: Any = "relu"):
    """``N`` standard-normal inputs, each redrawn while it sits within rounding of a kink.

    Returns ``(X, redrawn)``, ``redrawn`` the number of inputs that were replaced.
    ``params`` as for :func:`check_network`.
    """
    params, activation = _as_float64(params, activation)
    d0 = params[0][0].shape[1]
    rows, redrawn = [], 0
    while len(rows) < N:
        for _ in range(max_tries):
            x = rng.standard_normal(d0)
            if kink_margin(params, x, activation) > 1.0:
                break
            redrawn += 1
        else:
            raise RuntimeError(f"no input away from the kinks after {max_tries} draws")
        rows.append(x)
    return np.stack(rows), redrawn


ACTIVATION_POOL = (
    Activation("tanh"), Activation("gelu"), Activation("leaky_relu", slope=0.1),
    Activation("sigmoid"), Activation("elu", alpha=0.5), Activation("softplus"),
    Activation("gelu_tanh"), Activation("elu"), Activation("identity"), Activation("relu"),
    Activation("silu"), Activation("selu"), Activation("mish"), Activation("relu6"),
    Activation("celu", alpha=0.5), Activation("hard_swish"), Activation("soft_sign"),
    Activation("hard_tanh"), Activation("hard_sigmoid"),
)
"""Activations of the random networks after the corners, dealt from a shuffled deck of
the whole pool (reshuffled when used up): network ``i`` takes one for every hidden layer
when ``i`` is odd, and one per hidden layer (a mix) when even; so every activation in the
pool is dealt once before any is dealt twice, and once ``len(ACTIVATION_POOL)`` have been
dealt (one per odd network, one per hidden layer of an even one) each has run."""


class _Deck:
    """The pool dealt in a shuffled order, reshuffled when used up."""

    def __init__(self, rng: np.random.Generator):
        self._rng, self._cards = rng, []

    def peek(self, k: int) -> list:
        while len(self._cards) < k:
            self._cards += [ACTIVATION_POOL[int(j)]
                            for j in self._rng.permutation(len(ACTIVATION_POOL))]
        return self._cards[:k]

    def take(self, k: int) -> None:
        del self._cards[:k]


def _activations_for(i: int, L: int, deck: _Deck):
    """Network ``i``'s activation (odd ``i``: one for all its layers) or per-layer list, and
    how many cards it uses."""
    if L == 0:  # no hidden layer: nothing to deal
        return [], 0
    if i % 2:
        return deck.peek(1)[0], 1
    return deck.peek(L), L


def run_random_checks(seed: int = 0, networks: int = 24, *, examples: int = 4,
                      fd_columns: int = 12, jacobian_fn=None, max_depth: int = 12,
                      activations: bool = True):
    """Check ``networks`` random networks; returns a list of :class:`NetworkResult`.

    The first networks pin the corners (``L = 0``, ``K = 1``, widths 1 and 64, the
    deepest ``L``), with ReLU; the rest are drawn at random, each redrawn (up to 20 times)
    while fewer than half its Jacobian's columns are live (mostly dead ReLUs), and with
    ``activations`` their hidden layers take the other activations too
    (:data:`ACTIVATION_POOL`).
    """
    rng = np.random.default_rng(seed)
    deck = _Deck(np.random.default_rng([seed, 1]))  # the networks drawn do not depend on it
    corners = [[3, 1], [5, 7, 1], [1, 1, 1, 1], [64, 64, 10],
               [8] + [16] * max_depth + [4]]
    results = []
    for i in range(networks):
        if i < len(corners):
            widths = corners[i]
            params = [(rng.standard_normal((d, dp)) * np.sqrt(2.0 / dp),
                       0.1 * rng.standard_normal(d))
                      for dp, d in zip(widths[:-1], widths[1:])]
        else:
            widths, params = random_network(rng, max_depth=max_depth)
        L = len(widths) - 2
        activation, cards = (_activations_for(i, L, deck) if activations and i >= len(corners)
                             else ("relu", 0))
        X, redrawn = draw_inputs(rng, params, examples, activation=activation)
        for _ in range(20 if i >= len(corners) else 0):  # a random network: enough live units
            if live_fraction(params, X, activation) >= 1 - DEAD_LIMIT:
                break
            widths, params = random_network(rng, max_depth=max_depth)
            L = len(widths) - 2
            activation, cards = _activations_for(i, L, deck) if activations else ("relu", 0)
            X, redrawn = draw_inputs(rng, params, examples, activation=activation)
        deck.take(cards)
        res = check_network(params, X, jacobian_fn=jacobian_fn, activation=activation,
                            fd_columns=fd_columns, rng=rng)
        res.kinks_redrawn = redrawn
        if redrawn:
            res.notes.insert(0, f"{redrawn} input(s) sat within rounding of a kink; redrawn")
        results.append(res)
    return results


def numeric_part(seed: int = 0, networks: int = 24, **kwargs):
    """The numeric check as a report :class:`~bpcheck._report.Part` for ``bpcheck verify``."""
    from ._report import Part

    t0 = time.perf_counter()
    results = run_random_checks(seed, networks, **kwargs)
    part = Part(
        title=f"Numeric: bpcheck.jacobian vs jax.jacrev and finite differences "
              f"({networks} random network{'' if networks == 1 else 's'}, seed {seed}, float64)",
        columns=["#", "widths", "activation", "N", "P", "err vs jacrev", "err vs FD", "FD cols",
                 "kinks redrawn", "ok"],
    )
    for i, r in enumerate(results):
        w = "-".join(map(str, r.widths))
        part.rows.append([i, w if len(w) <= 40 else w[:37] + "...", r.activation, r.N, r.P,
                          r.jacrev_error, r.fd_error, r.fd_columns,
                          r.kinks_redrawn + r.fd_kinks_skipped, r.passed])
        part.notes.extend(f"network {i}: {n}" for n in r.notes)
        if r.message and not r.passed:
            part.notes.append(f"network {i} FAILED: {r.message}")
    worst_j = max(r.jacrev_error for r in results)
    worst_f = max(r.fd_error for r in results)
    part.notes.insert(0, f"worst relative error overall: {worst_j:.2e} vs jacrev "
                         f"(limit {JACREV_TOL:g}), {worst_f:.2e} vs finite differences "
                         f"(limit {FD_TOL:g})")
    part.passed = bool(results) and all(r.passed for r in results)
    part.seconds = time.perf_counter() - t0
    return part
