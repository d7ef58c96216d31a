"""Pictures of a training run: decision regions over the data, beside the loss curve.

Optional extra ``bpcheck[plot]`` (matplotlib).  Drawn on matplotlib's Agg canvas directly
(``matplotlib.figure.Figure``), so no global backend is switched and no window opens.
"""

from __future__ import annotations

from typing import Any

import math

import numpy as np

from ._core import TrainResult, scores


def import_matplotlib():
    """``matplotlib.figure`` and the Agg canvas, or an ``ImportError`` saying how to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "plotting needs matplotlib, which is not installed; "
            "install it with: pip install 'bpcheck[plot]'"
        ) from err
    return Figure, FigureCanvasAgg


MAX_GRID_POINTS = 4_000_000
"""The most points :func:`plot_training`'s decision-region grid may have."""


def plot_training(result: TrainResult, X: Any, y: Any, path: str, title: str | None = None,
                  grid_step: float = 0.02) -> str:
    """Write a PNG: decision regions with the data (as in the case study), and the losses.

    ``result``: a :class:`~bpcheck.train.TrainResult` of a network on 2-d inputs; ``X``
    ``(N, 2)``, ``y`` ``(N,)``.  The regions are the argmax of the scores on a grid of
    spacing ``grid_step`` reaching 1 beyond the data.  Returns ``path``.
    """
    Figure, FigureCanvasAgg = import_matplotlib()
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X: decision regions need 2-d inputs, shape (N, 2); got {X.shape}")
    x_min, x_max = X[:, 0].min() - 1, X[:, 0].max() + 1
    y_min, y_max = X[:, 1].min() - 1, X[:, 1].max() + 1
    points = ((x_max - x_min) / grid_step) * ((y_max - y_min) / grid_step) \
        if isinstance(grid_step, (int, float, np.integer, np.floating)) \
        and not isinstance(grid_step, bool) and grid_step > 0 else math.nan
    if not 0 < points <= MAX_GRID_POINTS:  # (NaN too)
        raise ValueError(f"grid_step: expected a positive number giving at most "
                         f"{MAX_GRID_POINTS:,} grid points over the data, got {grid_step!r}")
    xx, yy = np.meshgrid(np.arange(x_min, x_max, grid_step), np.arange(y_min, y_max, grid_step))
    grid = np.c_[xx.ravel(), yy.ravel()]
    Z = np.argmax(scores(result.params, grid), axis=1).reshape(xx.shape)

    fig = Figure(figsize=(11, 4.8))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    K = max(int(y.max()), int(Z.max())) + 1
    colors = {"cmap": "Spectral", "vmin": 0, "vmax": max(K - 1, 1)}  # same colour per class
    left.contourf(xx, yy, Z, levels=np.arange(K + 1) - 0.5, alpha=0.8, **colors)
    left.scatter(X[:, 0], X[:, 1], c=y, s=40, edgecolors="k", linewidths=0.5, **colors)
    left.set_xlim(xx.min(), xx.max())
    left.set_ylim(yy.min(), yy.max())
    left.set_title(f"decision regions (training accuracy {result.train_accuracy:.3f})")
    right.plot(np.arange(len(result.losses)), result.losses)
    right.set_xlabel("iteration")
    right.set_ylabel("loss")
    right.set_title(f"loss (final {result.final_loss:.4f})")
    right.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path
