"""The one place where the two parameter layouts meet.

bpcheck writes a layer as ``z = B a + b`` with ``B^(l)`` of shape ``(d_l, d_{l-1})``
(batched: ``A_prev @ B.T + b``).  The lecture's NumPy code writes ``X @ W + b`` with
``W = B'`` of shape ``(d_{l-1}, d_l)``.  Every trainer takes and returns parameters in
bpcheck's layout; the lecture-faithful NumPy code converts with these two functions.
(``torch.nn.Linear.weight`` is already ``B``: shape ``(out, in)``.)
"""

from __future__ import annotations

from typing import Any


def to_lecture_layout(params: Any) -> list[tuple[Any, Any]]:
    """``[(B^(l), b^(l))]`` -> ``[(W_l, b_l)]`` with ``W_l = B^(l)'``, shape ``(d_{l-1}, d_l)``.

    Transposes are views for NumPy arrays (no copy).
    """
    return [(B.T, b) for B, b in params]


def from_lecture_layout(weights: Any) -> list[tuple[Any, Any]]:
    """``[(W_l, b_l)]`` -> ``[(B^(l), b^(l))]`` with ``B^(l) = W_l'``, shape ``(d_l, d_{l-1})``.

    A bias of the lecture's shape ``(1, d_l)`` comes back as ``(d_l,)``.
    """
    return [(W.T, b.reshape(-1)) for W, b in weights]
