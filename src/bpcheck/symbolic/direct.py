"""The true derivatives, by differentiating ``z^(L+1)`` directly (no recursion involved).

For every layer ``l`` this differentiates each output ``z^(L+1)_k``, written as one
nested expression of all parameters, with respect to every entry of ``b^(l)`` and of
``beta^(l) = vec(B^(l)')`` (entry ``i*d_{l-1} + j`` is ``B^(l)_{ij}``).  SymEngine's
``diff`` does the differentiation (its chain rule, memoised over the shared nodes of
the expression); nothing here knows ``V``, ``B^(l+1) D^(l)`` or a Kronecker product.

ReLU model (a)
    ``z^(L+1)`` is the network of :mod:`.network` with ``a^(l) = d^(l) * z^(l)``
    entrywise, ``d`` constant 0/1 symbols (ReLU away from its kinks).
Sigma model (b)
    ``z^(L+1)`` is built with an undefined SymEngine function ``sigma``:
    ``a^(l)_i = sigma(z^(l)_i)``, nested down to ``x``.  Differentiating it, SymEngine
    applies the chain rule through ``sigma`` and writes ``sigma'(z)`` as
    ``Subs(Derivative(sigma(xi), xi), xi, z)``.  Afterwards, and only then, each
    ``sigma(z^(l)_i)`` is named ``a{l}[i]`` and each ``sigma'(z^(l)_i)`` is named
    ``s{l}[i]`` (the symbols the recursion is given).  The key for ``sigma'(z^(l)_i)``
    is obtained honestly as ``d sigma(z^(l)_i) / d b^(l)_i`` (``z^(l)_i`` contains
    ``b^(l)_i`` with coefficient 1), so it is SymEngine's own spelling of the derivative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import symengine as se

from .canonical import ToSymEngine
from .network import SymbolicNetwork


@dataclass(eq=False)
class DirectDerivatives:
    """``V[l][k][i] = d z^(L+1)_k / d b^(l)_i`` and ``U[l][k][i*d_{l-1}+j] = d z^(L+1)_k /
    d B^(l)_{ij}`` as (unexpanded) SymEngine expressions, lists indexed by ``l = 1..L+1``
    (``V[0]``, ``U[0]`` are ``None``).

    ``renaming``: subexpression -> symbol, applied before expanding (sigma model: the
    names ``a``, ``s`` of ``sigma(z)`` and ``sigma'(z)``).  ``forward_values``: for the
    ReLU model, each hidden pre-activation node ``z^(m)_j`` -> a free symbol
    ``zeta{m}[j]``; see :mod:`.check` for how that shortcut stays a proof.
    """

    V: list
    U: list
    renaming: dict = field(default_factory=dict)
    forward_values: dict = field(default_factory=dict)


def _outputs_relu(net: SymbolicNetwork, conv: ToSymEngine):
    L = net.L
    forward = {}
    for m in range(1, L + 1):
        for j in range(net.widths[m]):
            forward[conv(net.z[m][j])] = se.Symbol(f"zeta{m}[{j}]")
    return [conv(e) for e in net.z[L + 1]], {}, forward


def _outputs_sigma(net: SymbolicNetwork, conv: ToSymEngine):
    sigma = se.Function("sigma")
    L = net.L
    a = [conv(e) for e in net.x]
    renaming = {}
    for l in range(1, L + 2):
        B, b = net.B[l], net.b[l]
        z = [se.Add(*[conv(B[i, j]) * a[j] for j in range(net.widths[l - 1])], conv(b[i]))
             for i in range(net.widths[l])]
        if l == L + 1:
            return z, renaming, {}
        a = [sigma(zi) for zi in z]
        for i in range(len(z)):
            renaming[a[i]] = se.Symbol(f"a{l}[{i}]")
            renaming[a[i].diff(conv(b[i]))] = se.Symbol(f"s{l}[{i}]")
    raise AssertionError("unreachable")


def direct_derivatives(net: SymbolicNetwork, conv: ToSymEngine | None = None) -> DirectDerivatives:
    """Differentiate ``z^(L+1)`` with respect to every ``b^(l)`` and ``beta^(l)`` entry.

    Returns :class:`DirectDerivatives`; ``V[l]`` is ``K x d_l`` and ``U[l]`` is
    ``K x d_l d_{l-1}`` (nested lists), columns of ``U[l]`` in ``vec(B^(l)')`` order.
    """
    conv = conv or ToSymEngine()
    build = _outputs_relu if net.activation == "relu" else _outputs_sigma
    out, renaming, forward = build(net, conv)
    V, U = [None], [None]
    for l in range(1, net.L + 2):
        d, d_prev = net.widths[l], net.widths[l - 1]
        b = [conv(net.b[l][i]) for i in range(d)]
        beta = [conv(net.B[l][i, j]) for i in range(d) for j in range(d_prev)]
        V.append([[zk.diff(p) for p in b] for zk in out])
        U.append([[zk.diff(p) for p in beta] for zk in out])
    return DirectDerivatives(V, U, renaming, forward)
