"""The spiral data set of the CS231n "Minimal Neural Network Case Study".

The recipe (cs231n.github.io/neural-networks-case-study), for class ``j``::

    r = linspace(0, 1, N)                                  # radius
    t = linspace(4 j, 4 (j + 1), N) + 0.2 * randn(N)       # angle
    x = (r sin t, r cos t),   label j

The case study calls ``np.random.seed(0)`` and draws ``randn`` from NumPy's legacy global
stream.  :func:`make_spiral` draws from ``np.random.RandomState(seed)`` instead: the same
Mersenne-Twister stream, value for value (a test checks it), without touching the global
generator that other code may rely on.
"""

from __future__ import annotations

import math

import numpy as np

Seed = int | np.integer | np.random.RandomState


def legacy_rng(seed: Seed, name: str = "seed") -> np.random.RandomState:
    """``np.random.RandomState(seed)`` with a clear error; a ``RandomState`` passes through.

    ``RandomState(seed)`` produces the stream that ``np.random.seed(seed)`` gives the global
    functions (``np.random.randn``), which is what the lecture's code uses.
    """
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            f"{name}: expected an int in [0, 2**32) or a np.random.RandomState, "
            f"got {seed!r} ({type(seed).__name__})"
        )
    if not 0 <= seed < 2**32:
        raise ValueError(f"{name}: expected an int in [0, 2**32) (legacy NumPy seed), got {seed}")
    return np.random.RandomState(int(seed))


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {value!r} "
                        f"({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def make_spiral(
    n_per_class: int = 100, n_classes: int = 3, noise: float = 0.2, seed: Seed = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The CS231n spiral: ``n_classes`` interleaved arms of ``n_per_class`` points each.

    ``seed``: an int (the case study uses ``0``) or a ``np.random.RandomState``, which is
    then advanced, so that parameters drawn from it next continue the stream as in the
    lecture's notebook.  The global NumPy generator is left untouched.

    Returns ``X`` of shape ``(n_per_class * n_classes, 2)``, float64, one example per row,
    class by class, and ``y`` of shape ``(n_per_class * n_classes,)``, int64 labels
    ``0 .. n_classes - 1`` (the recipe stores ``uint8``; the values are the same).

    >>> X, y = make_spiral()
    >>> X.shape, y.shape, np.bincount(y).tolist()
    ((300, 2), (300,), [100, 100, 100])
    >>> X[150].round(6).tolist()
    [-0.137938, 0.485849]
    """
    N = _check_count("n_per_class", n_per_class, 1)
    K = _check_count("n_classes", n_classes, 2)
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise TypeError(f"noise: expected a real number >= 0, got {noise!r} "
                        f"({type(noise).__name__})")
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise: expected a finite real number >= 0, got {noise!r}")
    rng = legacy_rng(seed)
    X = np.zeros((N * K, 2))
    y = np.zeros(N * K, dtype=np.int64)
    for j in range(K):
        ix = range(N * j, N * (j + 1))
        r = np.linspace(0.0, 1, N)
        t = np.linspace(j * 4, (j + 1) * 4, N) + rng.randn(N) * noise
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return X, y
