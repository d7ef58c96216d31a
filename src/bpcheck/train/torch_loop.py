"""The lecture's PyTorch ``SimpleNN`` training loop (optional extra: ``bpcheck[torch]``).

As the lecture writes it (slides "PyTorch Implementation")::

    model = SimpleNN(D, h, K)                      # nn.Linear default init
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=1e-0, weight_decay=1e-3)
    for epoch in range(num_epochs):
        loss = criterion(model(X_tensor), y_tensor)
        optimizer.zero_grad(); loss.backward(); optimizer.step()

This differs from the NumPy code in meaning, not only in init: ``SGD(weight_decay=wd)`` adds
``wd * theta`` to the gradient of *every* parameter, biases included, and the decay term
never appears in the loss that ``nn.CrossEntropyLoss`` reports.  The NumPy loss adds
``0.5 * reg * sum(W*W)`` over weights only.  :func:`train_torch` reproduces the lecture by
default; ``decay_biases=False`` (a parameter group with ``weight_decay=0``) plus
``penalty_in_loss=True`` (the term added to the reported loss, outside autograd) makes it
mean what the NumPy trainers mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from ._core import (
    Progress,
    TrainingDiverged,
    TrainResult,
    check_data,
    check_hyper,
    check_network,
    check_widths_match,
)
from .._arrays import check_widths
from ..spiral import legacy_rng


def import_torch():
    """``import torch``, or an ``ImportError`` that says how to install it."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "the torch backend needs PyTorch, which is not installed; "
            "install it with: pip install 'bpcheck[torch]'"
        ) from err
    return torch


def simple_nn(widths: Sequence[int]):
    """The lecture's ``SimpleNN`` for widths ``[D, h, K]`` (``fc1``, ReLU, ``fc2``),
    generalised to ``[d_0, ..., d_{L+1}]``: ``nn.Linear`` layers with ReLU between them.
    Returns an ``nn.Module`` with PyTorch's default ``nn.Linear`` initialisation."""
    torch = import_torch()
    nn = torch.nn
    layers: list = []
    for i, (d_in, d_out) in enumerate(pairwise(widths)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def train_torch(X: Any, y: Any, params: Any = None, *, widths: Sequence[int] | None = None,
                step_size: float = 1.0, reg: float = 1e-3, iters: int, seed: int = 0,
                decay_biases: bool = True, penalty_in_loss: bool = False,
                dtype: str = "float32", progress: Progress = None) -> TrainResult:
    """Train with the lecture's PyTorch loop: ``nn.CrossEntropyLoss`` and ``optim.SGD``.

    ``params``: ``[(B^(l), b^(l))]`` to start from (``nn.Linear.weight`` has ``B``'s shape
    ``(d_out, d_in)``), or ``None`` for PyTorch's default init of ``widths``, drawn under
    ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the global torch RNG is
    left as it was).  ``decay_biases`` (lecture: True) decays biases too; ``penalty_in_loss``
    (lecture: False) adds ``0.5 * reg * sum |B|^2`` to the *reported* loss.  ``dtype``:
    ``"float32"`` (the lecture's ``X_tensor``) or ``"float64"``.

    ``losses``/``final_loss`` are what the loop reports under these settings; returned
    parameters are NumPy float64 in bpcheck's layout.
    """
    torch = import_torch()
    X, y, K = check_data(X, y)
    legacy_rng(seed)  # the seed's check: an int in [0, 2**32) (1.5 was taken as 1)
    step_size, reg, iters = check_hyper(step_size, reg, iters)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    tdtype = getattr(torch, dtype)
    if tdtype == torch.float32:
        big = float(np.finfo(np.float32).max)
        for name, value in (("step_size", step_size), ("reg", reg)):
            if value > big:
                raise ValueError(f"{name}: expected at most {big:.4g} in float32 (dtype="
                                 f"'float64' takes more), got {value!r}")
    if params is None:
        if widths is None:
            raise ValueError("widths: needed when params is None, e.g. widths=[2, 100, 3]")
        widths = check_widths_match(check_widths(widths), X.shape[1], K, "widths")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = simple_nn(list(widths))
    else:
        params, from_params = check_network(params, X.shape[1], K)
        if widths is not None and list(check_widths(widths)) != from_params:
            raise ValueError(f"widths: {list(widths)} contradicts params, whose widths are "
                             f"{from_params}; give one of them")
        widths = from_params
        model = simple_nn(widths)
    model = model.to(tdtype)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    if params is not None:
        with torch.no_grad():
            for lin, (B, b) in zip(linears, params):
                lin.weight.copy_(torch.as_tensor(np.asarray(B), dtype=tdtype))
                lin.bias.copy_(torch.as_tensor(np.asarray(b), dtype=tdtype))

    X_tensor = torch.tensor(X, dtype=tdtype)
    y_tensor = torch.tensor(y, dtype=torch.long)
    criterion = torch.nn.CrossEntropyLoss()
    if decay_biases:
        groups = model.parameters()
    else:
        groups = [{"params": [lin.weight for lin in linears], "weight_decay": reg},
                  {"params": [lin.bias for lin in linears], "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=step_size, weight_decay=reg)

    def penalty() -> float:
        if not penalty_in_loss:
            return 0.0
        with torch.no_grad():
            return 0.5 * reg * sum(float(torch.sum(lin.weight * lin.weight)) for lin in linears)

    losses = np.empty(iters)
    for i in range(iters):
        scores = model(X_tensor)
        loss = criterion(scores, y_tensor)
        value = loss.item() + penalty()
        if not np.isfinite(value):
            raise TrainingDiverged(i, value, step_size)
        losses[i] = value
        optimizer.zero_grad()  # zero grad!
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(i + 1, value)
    with torch.no_grad():
        scores = model(X_tensor)
        final = criterion(scores, y_tensor).item() + penalty()
        acc = float((scores.argmax(dim=1) == y_tensor).double().mean())
    if not np.isfinite(final):  # the last update, after the last loss the loop checked
        raise TrainingDiverged(iters, final, step_size)
    out = [(lin.weight.detach().double().numpy().copy(), lin.bias.detach().double().numpy().copy())
           for lin in linears]
    return TrainResult(out, losses, float(final), acc)
