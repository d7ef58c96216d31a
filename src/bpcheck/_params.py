"""Parameters: He-style initialisation and the ``beta`` flattening of the lecture.

``beta = [vec(B^(1)'), b^(1), ..., vec(B^(L+1)'), b^(L+1)]`` where ``vec(B')``
stacks the *rows* of ``B`` (``B.reshape(-1)`` in C order).
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Sequence

import numpy as np

from ._arrays import as_array, backend, check_params, check_widths


def init_params(widths: Sequence[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random parameters for a ReLU network with widths ``[d_0, d_1, ..., d_{L+1}]``.

    ``B^(l)`` has shape ``(d_l, d_{l-1})`` with entries ``N(0, 2 / d_{l-1})`` (He et
    al. 2015, the scale that keeps ReLU activations at unit variance); ``b^(l)`` is
    zero, shape ``(d_l,)``.  NumPy float64, drawn from ``np.random.default_rng(seed)``.

    >>> [(B.shape, b.shape) for B, b in init_params([2, 3, 1])]
    [((3, 2), (3,)), ((1, 3), (1,))]
    """
    widths = check_widths(widths)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    params = []
    for d_prev, d in zip(widths[:-1], widths[1:]):
        B = rng.standard_normal((d, d_prev)) * np.sqrt(2.0 / d_prev)
        params.append((B, np.zeros(d)))
    return params


def param_count(widths: Sequence[int]) -> int:
    """``P = sum_l d_l (d_{l-1} + 1)``, the length of ``beta``."""
    widths = check_widths(widths)
    return sum(d * (d_prev + 1) for d_prev, d in zip(widths[:-1], widths[1:]))


def beta_size(widths: Sequence[int]) -> int:
    """:func:`param_count` for widths already checked, from a cache: for kernels that run
    on every call."""
    return _layer_slices(tuple(widths))[-1][1].stop


def layer_slices(widths: Sequence[int]) -> list[tuple[slice, slice]]:
    """For each layer ``l``, the slices of ``beta`` holding ``vec(B^(l)')`` and ``b^(l)``."""
    return list(_layer_slices(tuple(check_widths(widths))))


@functools.lru_cache(maxsize=256)
def _layer_slices(widths: tuple[int, ...]) -> tuple[tuple[slice, slice], ...]:
    out = []
    off = 0
    for d_prev, d in zip(widths[:-1], widths[1:]):
        out.append((slice(off, off + d * d_prev), slice(off + d * d_prev, off + d * (d_prev + 1))))
        off += d * (d_prev + 1)
    return tuple(out)


def layers_from_beta(G: Any, widths: Sequence[int]) -> list:
    """``(..., P)`` in ``beta`` order -> ``[(G_B^(l), G_b^(l))]`` of shapes
    ``(..., d_l, d_{l-1})`` and ``(..., d_l)`` (views of ``G`` for NumPy); unchecked."""
    slices = _layer_slices(tuple(widths))
    if G.ndim == 1:  # a vector: plain slices (a call of a small network's kernel reads them)
        return [(G[sB].reshape(d, d_prev), G[sb])
                for d_prev, d, (sB, sb) in zip(widths[:-1], widths[1:], slices)]
    lead = tuple(G.shape[:-1])
    return [(G[..., sB].reshape(lead + (d, d_prev)), G[..., sb])
            for d_prev, d, (sB, sb) in zip(widths[:-1], widths[1:], slices)]


def flatten_params(params: Any):
    """``beta`` of shape ``(P,)``: ``[vec(B^(1)'), b^(1), ..., vec(B^(L+1)'), b^(L+1)]``.

    ``vec(B')`` is ``B.reshape(-1)``, the rows of ``B^(l)`` stacked.  NumPy in, NumPy
    out; JAX in, JAX out.

    >>> B = np.array([[1., 2.], [3., 4.]]); b = np.array([5., 6.])
    >>> flatten_params([(B, b)])
    array([1., 2., 3., 4., 5., 6.])
    """
    params, _, xp = check_params(params)
    parts = []
    for B, b in params:
        parts.extend([B.reshape(-1), b])
    return xp.concatenate(parts)


def unflatten_params(beta: Any, widths: Sequence[int]):
    """Inverse of :func:`flatten_params`: ``beta`` ``(P,)`` -> ``[(B^(l), b^(l))]``.

    ``B^(l)`` comes back with shape ``(d_l, d_{l-1})`` and ``b^(l)`` with ``(d_l,)``.
    """
    widths = check_widths(widths)
    xp = backend(beta)
    beta = as_array("beta", beta, xp)
    P = param_count(widths)
    if beta.shape != (P,):
        raise ValueError(
            f"beta: expected shape ({P},) for widths {widths} "
            f"(P = sum_l d_l (d_(l-1) + 1)), got {tuple(beta.shape)}"
        )
    return layers_from_beta(beta, widths)
