"""What every trainer shares: the result record, the thin loop, input checks, the init.

A trainer is a pure step ``state -> (state, loss)`` plus :func:`run_loop`, which calls it
``iters`` times, records the losses and stops on the first NaN or inf.  ``losses[i]`` is
the loss at the start of iteration ``i`` (before its update), as the lecture prints it;
``final_loss`` is the loss of the parameters that come back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from .._arrays import check_finite
from ..spiral import Seed, legacy_rng
from .layout import from_lecture_layout

Progress = Callable[[int, float], None] | None
"""Called as ``progress(iterations_done, latest_loss)`` while training."""


class TrainResult(NamedTuple):
    """The outcome of one training run."""

    params: list
    """``[(B^(l), b^(l))]`` after training, bpcheck layout, NumPy arrays."""
    losses: np.ndarray
    """Shape ``(iters,)``: the loss at the start of each iteration."""
    final_loss: float
    """The loss of ``params`` (after the last update)."""
    train_accuracy: float
    """Fraction of training examples whose largest score is the true class."""


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or inf; carries ``iteration``, ``loss`` and ``step_size``."""

    def __init__(self, iteration: int, loss: float, step_size: Any, network: int | None = None):
        self.iteration, self.loss, self.step_size, self.network = iteration, loss, step_size, network
        which = "" if network is None else f" of network {network}"
        super().__init__(
            f"training diverged: the loss{which} became {loss} at iteration {iteration} "
            f"with step size {step_size}; try a smaller step size"
        )


def check_data(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """``X`` ``(N, d_0)`` finite floats, ``y`` ``(N,)`` integer labels; returns ``(X, y, K)``.

    ``K = max(y) + 1`` classes.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.dtype.kind not in "fiu":
        raise ValueError(f"X: expected a real array of shape (N, d_0) with N >= 1, "
                         f"got dtype {X.dtype} and shape {X.shape}")
    check_finite("X", X)
    y = np.asarray(y)
    if y.shape != (X.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"y: expected integer labels of shape ({X.shape[0]},) to match X, "
                         f"got dtype {y.dtype} and shape {y.shape}")
    if y.min() < 0:
        raise ValueError(f"y: expected labels 0 .. K-1, got {int(y.min())}")
    return X, y.astype(np.int64), int(y.max()) + 1


MAX_ITERS = 100_000_000
"""The most iterations one run takes (its loss curve alone is 800 MB of float64)."""


def check_hyper(step_size: Any, reg: Any, iters: Any) -> tuple[float, float, int]:
    """``step_size`` finite > 0, ``reg`` finite >= 0, ``iters`` an int >= 1."""
    for name, value, low in (("step_size", step_size, "> 0"), ("reg", reg, ">= 0")):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name}: expected a real number {low}, got {value!r}")
        if not math.isfinite(value) or (value <= 0 if low == "> 0" else value < 0):
            raise ValueError(f"{name}: expected a finite number {low}, got {value!r}")
    if (isinstance(iters, bool) or not isinstance(iters, (int, np.integer))
            or not 1 <= iters <= MAX_ITERS):
        raise ValueError(f"iters: expected an int in [1, {MAX_ITERS:_}], got {iters!r}")
    return float(step_size), float(reg), int(iters)


def check_network(params: Any, d0: int, K: int, name: str = "params") -> tuple[list, list[int]]:
    """``params`` checked as the library checks them (each ``B^(l)`` ``(d_l, d_{l-1})``, each
    ``b^(l)`` ``(d_l,)``, not None, finite values), as NumPy arrays, with its widths; the first and
    last widths must fit the data.  ``name`` prefixes the messages (``params_list[3]``)."""
    from .._arrays import bias_flags, check_params

    try:
        params = _relu_network_params(params)
        flags = bias_flags(params)
        if flags is not None:  # (check_params would stand zeros in, which training would move)
            l = flags.index(False) + 1
            raise ValueError(
                f"params: b^({l}) is None (a layer without a bias); the trainers train a bias "
                f"in every layer: give zeros for b^({l}) to train one, or train the model in "
                f"its own framework")
        checked, widths, _ = check_params(params, np)
        checked = [(np.asarray(B), np.asarray(b)) for B, b in checked]  # JAX arrays too
        check_widths_match(widths, d0, K)
    except (TypeError, ValueError) as err:
        if name == "params":
            raise
        raise type(err)(f"{name}: {err}") from None
    return checked, widths


def _relu_network_params(params: Any) -> Any:
    """A :class:`bpcheck.Network` (what ``bpcheck.network(layers, layout=...)`` reads) or a
    model as its ``(B, b)`` list, the network being ReLU's (what the trainers train);
    anything else as given."""
    from .._activations import resolve_activations
    from .._model import Network, _framework, model_params

    if not isinstance(params, Network) and _framework(params) is None:
        return params
    layers, activation, _ = model_params(params, None)
    names = sorted({a.name for a in resolve_activations(activation, len(layers) - 1)} - {"relu"})
    if names:
        raise ValueError(f"params: the trainers train ReLU networks; this model's hidden "
                         f"layers use {', '.join(names)}")
    return layers


def check_widths_match(widths: Sequence[int], d0: int, K: int, name: str = "params") -> list[int]:
    """Widths ``[d_0, ..., d_{L+1}]`` whose ends must match the data: ``d_0`` columns of
    ``X`` and at least ``K`` outputs; returned as a list.  ``name``: the argument they
    came from, for the error."""
    widths = [int(w) for w in widths]
    if widths[0] != d0:
        raise ValueError(f"{name}: B^(1) expects d_0 = {widths[0]} inputs but X has {d0} columns")
    if widths[-1] < K:
        raise ValueError(f"{name}: the network has {widths[-1]} outputs but y has labels "
                         f"up to {K - 1}; expected at least {K} outputs")
    return widths


def lecture_init(widths: Sequence[int], seed: Seed = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The lecture's initialisation: ``W_l = 0.01 * randn(d_{l-1}, d_l)``, ``b_l = 0``.

    ``widths``: ``[d_0, ..., d_{L+1}]`` (``[2, 3]``: the softmax classifier; ``[2, 100, 3]``:
    the two-layer net).  ``seed``: an int, or a ``np.random.RandomState`` to continue (as the
    case study continues the stream it drew the data from).  The draws are made in the
    lecture's layout, layer by layer, so the numbers are the lecture's; they come back in
    bpcheck's layout ``[(B^(l), b^(l))]``, ``B^(l) = W_l'`` of shape ``(d_l, d_{l-1})``.
    """
    from .._arrays import check_widths

    widths = check_widths(widths)
    rng = legacy_rng(seed)
    weights = [(0.01 * rng.randn(d_prev, d), np.zeros(d)) for d_prev, d in pairwise(widths)]
    return [(np.ascontiguousarray(B), b) for B, b in from_lecture_layout(weights)]


def run_loop(step: Callable[[Any], tuple[Any, float]], state: Any, iters: int, *,
             step_size: Any, progress: Progress = None) -> tuple[Any, np.ndarray]:
    """Call ``state, loss = step(state)`` ``iters`` times; return the last state and losses.

    Raises :class:`TrainingDiverged` (naming the iteration and step size) as soon as a loss
    is NaN or inf.  Floating-point warnings are silenced inside, because the explicit check
    reports the problem better than an overflow warning from deep inside a step would.
    """
    losses = np.empty(iters)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for i in range(iters):
            state, loss = step(state)
            loss = float(loss)
            if not math.isfinite(loss):
                raise TrainingDiverged(i, loss, step_size)
            losses[i] = loss
            if progress is not None:
                progress(i + 1, loss)
    return state, losses


def scores(params: Any, X: Any) -> np.ndarray:
    """Output scores ``z^(L+1)`` ``(N, K)`` of a ReLU network in bpcheck's layout (NumPy)."""
    a = np.asarray(X)
    for B, b in params[:-1]:
        a = np.maximum(0, a @ np.asarray(B).T + np.asarray(b))
    B, b = params[-1]
    return a @ np.asarray(B).T + np.asarray(b)


def accuracy(params: Any, X: Any, y: Any) -> float:
    """Fraction of rows of ``X`` whose largest score is at the label in ``y``; NaN where
    the scores are not all finite (a diverged network: ``argmax`` of a row of NaN is 0,
    which would count the labels 0 as right)."""
    return _accuracy(scores(params, X), y)


def _accuracy(S: np.ndarray, y: Any) -> float:
    if not np.all(np.isfinite(S)):
        return float("nan")
    return float(np.mean(np.argmax(S, axis=1) == np.asarray(y)))


def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``scores`` ``(N, K)`` and its gradient ``(p_i - e_{y_i}) / N``.

    Numerically stable: the row maximum is subtracted before ``exp`` (no overflow), and
    ``-log p_y`` is computed as ``log sum exp - score_y`` (no ``log 0``).  This is the
    lecture's code, with those two changes.
    """
    num_examples = scores.shape[0]
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    exp_scores = np.exp(shifted)
    sums = np.sum(exp_scores, axis=1, keepdims=True)
    probs = exp_scores / sums
    correct_logprobs = np.log(sums[:, 0]) - shifted[range(num_examples), y]
    data_loss = np.sum(correct_logprobs) / num_examples
    probs[range(num_examples), y] -= 1
    dscores = probs / num_examples
    return data_loss, dscores


def finish(params: list, losses: np.ndarray, X: np.ndarray, y: np.ndarray, reg: float,
           step_size: float, loss_fn: Callable[[list], float] | None = None) -> TrainResult:
    """Package a run: NumPy float64 parameters, final loss and training accuracy.

    Raises :class:`TrainingDiverged` when the last update made the loss NaN or inf (the
    loop checks each loss before its update, so only this one is left).
    """
    params = [(np.asarray(B), np.asarray(b)) for B, b in params]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if loss_fn is None:
            data_loss, _ = softmax_cross_entropy(scores(params, X), y)
            final = data_loss + 0.5 * reg * sum(float(np.sum(B * B)) for B, _ in params)
        else:
            final = loss_fn(params)
        if not math.isfinite(final):
            raise TrainingDiverged(len(losses), float(final), step_size)
        return TrainResult(params, losses, float(final), accuracy(params, X, y))
