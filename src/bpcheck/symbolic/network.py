"""The network of the bonus question, built from SymPy symbols (the unevaluated object).

For widths ``[d_0, ..., d_{L+1}]`` every entry of ``B^(l)``, ``b^(l)`` and ``x`` is its
own symbol, and the forward pass is written out entry by entry::

    z^(l) = B^(l) a^(l-1) + b^(l),   l = 1..L+1,   a^(0) = x

Two activation models give ``a^(l)`` and ``D^(l) = d a^(l) / d z^(l)'``:

``"relu"`` (model a)
    ``a^(l) = D^(l) z^(l)`` with ``D^(l) = diag(d^(l))`` and each ``d^(l)_i`` a 0/1
    symbol.  Away from a kink (``z^(l)_i != 0``) ReLU *is* this map, with the pattern
    constant in a neighbourhood, so its derivatives are those of ``D z``.  Equality is
    decided modulo ``d^2 = d``.
``"sigma"`` (model b)
    a generic differentiable ``sigma``: ``a^(l)_i`` is a symbol naming ``sigma(z^(l)_i)``
    and ``D^(l) = diag(s^(l))`` with ``s^(l)_i`` naming ``sigma'(z^(l)_i)``.  The direct
    derivative (:mod:`.direct`) differentiates the nested ``sigma(...)`` composition and
    then names these values by the same symbols.

Nothing here differentiates or applies a recursion: it only builds the objects that
:mod:`.recursion` (the claim) and :mod:`.direct` (the truth) start from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp

from .._arrays import check_widths

ACTIVATIONS = ("relu", "sigma")


@dataclass(frozen=True, eq=False)
class SymbolicNetwork:
    """The symbols and forward pass of one architecture.

    Lists are indexed by layer with a leading ``None`` so that ``B[l]`` is ``B^(l)``.
    """

    widths: tuple[int, ...]
    """``(d_0, ..., d_{L+1})``."""
    activation: str
    """``"relu"`` or ``"sigma"``."""
    x: sp.Matrix
    """The input, a column ``d_0 x 1`` of symbols ``x[j]``."""
    B: tuple
    """``B[l]`` = ``B^(l)``, ``d_l x d_{l-1}``, symbols ``B{l}[i,j]``; ``l = 1..L+1``."""
    b: tuple
    """``b[l]`` = ``b^(l)``, a column ``d_l x 1``, symbols ``b{l}[i]``."""
    z: tuple
    """``z[l]`` = ``z^(l) = B^(l) a^(l-1) + b^(l)``, a column ``d_l x 1``."""
    a: tuple
    """``a[l]`` = ``a^(l)``, a column ``d_l x 1``, ``l = 0..L`` (``a[0] = x``)."""
    D: tuple
    """``D[l]`` = ``D^(l)``, diagonal ``d_l x d_l``, ``l = 1..L`` (``D[0]`` is ``None``)."""
    slopes: tuple
    """``slopes[l]``: the diagonal symbols of ``D^(l)`` (``d{l}[i]`` or ``s{l}[i]``)."""

    @property
    def L(self) -> int:
        """The number of hidden layers."""
        return len(self.widths) - 2

    @property
    def K(self) -> int:
        """The number of outputs ``d_{L+1}``."""
        return self.widths[-1]


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    return activation


MAX_WEIGHTS = 10_000
"""Weights ``sum_l d_l d_(l-1)`` a symbolic network may have: the checks' cost grows about as
the fifth power of the widths (``[25, 25, 25]``: 12 s; ``[40, 40, 40]``: over a minute), and
far larger widths ran out of memory instead of saying so."""
MAX_DEPTH = 120
"""Hidden layers a symbolic network may have: deeper, SymPy's expressions pass Python's
recursion limit (``L = 165`` was reported undecided, with a ``RecursionError``)."""


def check_symbolic_size(widths: tuple[int, ...]) -> None:
    """A named error for widths too large or too deep for a symbolic check."""
    weights = sum(d * dp for dp, d in zip(widths, widths[1:]))
    if weights > MAX_WEIGHTS:
        raise ValueError(f"widths: {list(widths)[:8]}{' ...' if len(widths) > 8 else ''} has "
                         f"{weights} weights; a symbolic check handles at most {MAX_WEIGHTS} "
                         "(its cost grows about as the fifth power of the widths); check large "
                         "networks numerically (bpcheck.numcheck, bpcheck.jacobian)")
    if len(widths) - 2 > MAX_DEPTH:
        raise ValueError(f"widths: L = {len(widths) - 2} hidden layers; a symbolic check at "
                         f"fixed widths handles at most L = {MAX_DEPTH} (deeper, SymPy passes "
                         "Python's recursion limit); the induction over the layers "
                         "(bpcheck verify) covers every depth")


def build_network(widths: Sequence[int], activation: str = "relu") -> SymbolicNetwork:
    """Symbols and forward pass for ``widths = [d_0, ..., d_{L+1}]``.

    >>> net = build_network([2, 3, 1])
    >>> net.z[1][0]
    B1[0,0]*x[0] + B1[0,1]*x[1] + b1[0]
    >>> net.a[1][0]
    d1[0]*(B1[0,0]*x[0] + B1[0,1]*x[1] + b1[0])
    """
    widths = tuple(check_widths(widths))
    check_symbolic_size(widths)
    activation = check_activation(activation)
    L = len(widths) - 2
    x = sp.Matrix([sp.Symbol(f"x[{j}]") for j in range(widths[0])])
    Bs, bs, zs, As, Ds, slopes = [None], [None], [None], [x], [None], [None]
    for l in range(1, L + 2):
        d, d_prev = widths[l], widths[l - 1]
        B = sp.Matrix([[sp.Symbol(f"B{l}[{i},{j}]") for j in range(d_prev)] for i in range(d)])
        b = sp.Matrix([sp.Symbol(f"b{l}[{i}]") for i in range(d)])
        a_prev = As[-1]
        z = sp.Matrix([sp.Add(*[B[i, j] * a_prev[j] for j in range(d_prev)], b[i])
                       for i in range(d)])
        Bs.append(B)
        bs.append(b)
        zs.append(z)
        if l <= L:
            name = "d" if activation == "relu" else "s"
            slope = tuple(sp.Symbol(f"{name}{l}[{i}]") for i in range(d))
            slopes.append(slope)
            Ds.append(sp.diag(*slope))
            if activation == "relu":
                As.append(sp.Matrix([sp.Mul(slope[i], z[i]) for i in range(d)]))
            else:
                As.append(sp.Matrix([sp.Symbol(f"a{l}[{i}]") for i in range(d)]))
    return SymbolicNetwork(widths, activation, x, tuple(Bs), tuple(bs), tuple(zs), tuple(As),
                           tuple(Ds), tuple(slopes))
