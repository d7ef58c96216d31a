"""Parameters: He-style initialisation and the ``beta`` flattening of the lecture.

``beta = [vec(B^(1)'), b^(1), ..., vec(B^(L+1)'), b^(L+1)]`` where ``vec(B')``
stacks the *rows* of ``B`` (``B.reshape(-1)`` in C order).  A layer without a bias
(``(B, None)`` in ``params``) has no ``b^(l)`` entries in ``beta``: results in ``beta``
order are computed with a zero bias and those entries left out (:func:`trim_beta`).
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Sequence

import numpy as np

from ._arrays import as_array, backend, bias_flags, check_params, check_widths


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


def param_count(widths: Sequence[int], biases: Sequence[bool] | None = None) -> int:
    """``P = sum_l d_l (d_{l-1} + 1)``, the length of ``beta``; ``biases``: one bool per
    layer, ``False`` for a layer without a bias (``d_l d_{l-1}`` entries), default all."""
    widths = check_widths(widths)
    biases = _checked_biases(biases, len(widths) - 1)
    return sum(d * (d_prev + (1 if bias else 0))
               for d_prev, d, bias in zip(widths[:-1], widths[1:], biases))


def _checked_biases(biases: Any, layers: int) -> tuple[bool, ...]:
    """``biases`` as a tuple of ``layers`` bools (a list, tuple or NumPy bool array; not
    0/1 numbers, which could be widths)."""
    if biases is None:
        return (True,) * layers
    if isinstance(biases, np.ndarray) and biases.ndim == 1 and biases.dtype == bool:
        biases = biases.tolist()
    if isinstance(biases, (str, bytes)) or not isinstance(biases, Sequence):
        raise TypeError(f"biases: expected one True or False per layer ({layers} layers), got "
                        f"{type(biases).__name__} {biases!r:.80}")
    if not all(isinstance(t, (bool, np.bool_)) for t in biases):
        raise TypeError(f"biases: expected True or False for each layer, got {list(biases)!r:.80}")
    if len(biases) != layers:
        raise ValueError(f"biases: expected one True or False per layer ({layers} layers), got "
                         f"{len(biases)}: {list(biases)!r:.80}")
    return tuple(bool(t) for t in biases)


@functools.lru_cache(maxsize=64)
def kept_entries(widths: tuple[int, ...], biases: tuple[bool, ...]) -> np.ndarray:
    """The positions in the full ``beta`` (every layer with its bias) of the entries a
    network with ``biases`` has: every weight, and the bias of each layer that has one."""
    keep = []
    for (sB, sb), bias in zip(_layer_slices(widths), biases):
        keep.append(np.arange(sB.start, sB.stop))
        if bias:
            keep.append(np.arange(sb.start, sb.stop))
    out = np.concatenate(keep)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=256)
def _kept_runs(widths: tuple[int, ...], biases: tuple[bool, ...]) -> tuple[tuple[int, int], ...]:
    """:func:`kept_entries` as ``(start, stop)`` runs of consecutive positions (one more
    than the layers without a bias, at most)."""
    runs, start = [], 0
    for (sB, sb), bias in zip(_layer_slices(widths), biases):
        if not bias:
            runs.append((start, sB.stop))
            start = sb.stop
    runs.append((start, _layer_slices(widths)[-1][1].stop))
    return tuple((a, b) for a, b in runs if b > a)


def _trimmed(result, runs, axes, xp):
    for axis in axes:
        axis %= result.ndim
        result = xp.concatenate([result[(slice(None),) * axis + (slice(a, b),)] for a, b in runs],
                                axis=axis)
    return result


def trim_beta(result: Any, widths: Sequence[int], biases: tuple[bool, ...] | None, axes=(-1,)):
    """``result`` with its ``axes`` in the full ``beta`` order reduced to the entries of a
    network with ``biases`` (:func:`kept_entries`); as it is for ``biases`` ``None``.  The
    kept entries are a few runs, copied (NumPy) or joined by one compiled program (JAX)."""
    if biases is None:
        return result
    runs = _kept_runs(tuple(widths), tuple(biases))
    if backend(result) is np:
        return _trimmed(result, runs, axes, np)
    from ._compiled import compiled  # (which imports this module)

    return compiled(_trimmed, (runs, tuple(axes)))(result)


def expand_beta(v: Any, widths: Sequence[int], biases: tuple[bool, ...] | None):
    """The inverse of :func:`trim_beta` on the first axis of ``v`` ``(P, ...)``: zeros for the
    biases a network with ``biases`` lacks."""
    if biases is None:
        return v
    keep = kept_entries(tuple(widths), biases)
    full = _layer_slices(tuple(widths))[-1][1].stop
    xp = backend(v)
    if xp is np:
        out = np.zeros((full,) + tuple(v.shape[1:]), dtype=v.dtype)
        out[keep] = v
        return out
    return xp.zeros((full,) + tuple(v.shape[1:]), dtype=v.dtype).at[keep].set(v)


def without_biases(layers: list, biases: tuple[bool, ...] | None) -> list:
    """Per-layer results ``[(G_B^(l), G_b^(l))]`` with ``None`` for the biases a network with
    ``biases`` lacks."""
    if biases is None:
        return layers
    return [(gB, gb if bias else None) for (gB, gb), bias in zip(layers, biases)]


def beta_size(widths: Sequence[int]) -> int:
    """:func:`param_count` for widths already checked, from a cache: for kernels that run
    on every call."""
    return _layer_slices(tuple(widths))[-1][1].stop


def layer_slices(widths: Sequence[int]) -> list[tuple[slice, slice]]:
    """For each layer ``l``, the slices of ``beta`` holding ``vec(B^(l)')`` and ``b^(l)``."""
    return list(_layer_slices(tuple(check_widths(widths))))


@functools.lru_cache(maxsize=256)
def _layer_slices(widths: tuple[int, ...], biases: tuple[bool, ...] | None = None
                  ) -> tuple[tuple[slice, slice | None], ...]:
    out = []
    off = 0
    for l, (d_prev, d) in enumerate(zip(widths[:-1], widths[1:])):
        if biases is not None and not biases[l]:
            out.append((slice(off, off + d * d_prev), None))
            off += d * d_prev
            continue
        out.append((slice(off, off + d * d_prev), slice(off + d * d_prev, off + d * (d_prev + 1))))
        off += d * (d_prev + 1)
    return tuple(out)


def layers_from_beta(G: Any, widths: Sequence[int], biases: tuple[bool, ...] | None = None) -> list:
    """``(..., P)`` in ``beta`` order -> ``[(G_B^(l), G_b^(l))]`` of shapes
    ``(..., d_l, d_{l-1})`` and ``(..., d_l)`` (views of ``G`` for NumPy); unchecked.
    ``biases``: the layers that have a bias (``None``: all); ``G_b^(l)`` is ``None`` for
    the others, which have no entries in ``G``."""
    slices = _layer_slices(tuple(widths), biases)
    if G.ndim == 1:  # a vector: plain slices (a call of a small network's kernel reads them)
        return [(G[sB].reshape(d, d_prev), None if sb is None else G[sb])
                for d_prev, d, (sB, sb) in zip(widths[:-1], widths[1:], slices)]
    lead = tuple(G.shape[:-1])
    return [(G[..., sB].reshape(lead + (d, d_prev)), None if sb is None else G[..., sb])
            for d_prev, d, (sB, sb) in zip(widths[:-1], widths[1:], slices)]


def flatten_params(params: Any):
    """``beta`` of shape ``(P,)``: ``[vec(B^(1)'), b^(1), ..., vec(B^(L+1)'), b^(L+1)]``.

    ``vec(B')`` is ``B.reshape(-1)``, the rows of ``B^(l)`` stacked.  NumPy in, NumPy
    out; JAX in, JAX out.  A :class:`bpcheck.Network` or a model gives its weights in
    this order (as :meth:`bpcheck.Network.to_beta` of the model's own structure).

    >>> B = np.array([[1., 2.], [3., 4.]]); b = np.array([5., 6.])
    >>> flatten_params([(B, b)])
    array([1., 2., 3., 4., 5., 6.])
    """
    from ._model import model_params

    if not isinstance(params, (list, tuple)) and (
            getattr(params, "activation", "") is None or type(params).__name__ == "State"):
        # (an Equinox model whose activation was filtered out, an nnx.State)
        raise TypeError(f"params: a {type(params).__name__} that holds arrays in a model's "
                        f"structure (bpcheck's results, eqx.filter(model, eqx.is_array), an "
                        f"nnx.State) is no model: flatten it with "
                        f"bpcheck.network(model).to_beta(tree)")
    params = model_params(params, None)[0]
    biases = bias_flags(params)
    params, _, xp = check_params(params)
    parts = []
    for l, (B, b) in enumerate(params):
        parts.extend([B.reshape(-1), b] if biases is None or biases[l] else [B.reshape(-1)])
    return xp.concatenate(parts)


def unflatten_params(beta: Any, widths: Sequence[int], biases: Sequence[bool] | None = None):
    """Inverse of :func:`flatten_params`: ``beta`` ``(P,)`` -> ``[(B^(l), b^(l))]``.

    ``B^(l)`` comes back with shape ``(d_l, d_{l-1})`` and ``b^(l)`` with ``(d_l,)``;
    ``biases``: one bool per layer, ``False`` for a layer without a bias (its ``b^(l)``
    comes back ``None``, and ``beta`` has no entries for it), default all.
    """
    widths = check_widths(widths)
    flags = _checked_biases(biases, len(widths) - 1)
    xp = backend(beta)
    beta = as_array("beta", beta, xp)
    P = param_count(widths, flags)
    if beta.shape != (P,):
        raise ValueError(
            f"beta: expected shape ({P},) for widths {widths} "
            f"(P = sum_l d_l (d_(l-1) + 1)" + (", no b^(l) where biases is False"
                                               if not all(flags) else "")
            + f"), got {tuple(beta.shape)}"
        )
    return layers_from_beta(beta, widths, None if all(flags) else flags)
