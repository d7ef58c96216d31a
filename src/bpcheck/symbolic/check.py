"""``check_recursion``: claim (the recursion) against truth (direct derivative), entry by entry.

The three steps are separate and named: :func:`~.recursion.claims` builds ``V^(l)``,
``U^(l)`` from the rules, :func:`~.direct.direct_derivatives` differentiates
``z^(L+1)``, and :class:`~.canonical.Expander` decides each equality on the expanded
(canonical) polynomial form.

Speed without giving up exactness (ReLU model).  The ``U^(l)`` entries are products
``V^(l)_{ki} a^(l-1)_j`` whose expanded form has ``|V| * |a|`` monomials.  The check
first renames each hidden pre-activation ``z^(m)_j`` (the same node on both sides) to
a free symbol ``zeta{m}[j]`` and expands.  Equal polynomials in free symbols stay equal
after substituting ``zeta = z`` back, so ``EQUAL`` there is a proof.  Only when that
comparison is not ``EQUAL`` is the entry decided again on the fully expanded
polynomials, so a refutation is never produced by the renaming.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .canonical import Decision, Expander, ToSymEngine, count_terms, short
from .direct import direct_derivatives
from .network import build_network
from .recursion import claims
from .rules import RuleError


@dataclass
class LayerCheck:
    """One claimed matrix that was compared entry by entry."""

    l: int
    quantity: str
    """``"V"`` or ``"U"``."""
    shape: tuple[int, int]
    holds: bool
    monomials: int
    """Monomials of the true derivative, summed over the entries (as compared)."""


@dataclass
class Mismatch:
    """The first entry where the claim and the true derivative differ (or could not be decided)."""

    l: int
    quantity: str
    entry: tuple[int, int]
    parameter: str
    """The parameter the entry differentiates by, e.g. ``b2[1]`` or ``B2[1,0]``."""
    claim: str
    true: str
    difference: str
    decision: str
    """``"different"`` or ``"undecided"`` (not a polynomial; never a pass)."""


@dataclass
class RecursionReport:
    """Result of :func:`check_recursion`.  ``holds`` is a plain ``bool``."""

    widths: tuple[int, ...]
    activation: str
    holds: bool
    layers: list[LayerCheck] = field(default_factory=list)
    mismatch: Mismatch | None = None
    error: str | None = None
    """Set when a rule raised or returned the wrong type or shape."""
    seconds: float = 0.0

    @property
    def notes(self) -> list[str]:
        """What a pass at these widths does not cover: the V rule at small depth."""
        L = len(self.widths) - 2
        if L == 0:
            return ["L = 0: v_rule was not called (V^(1) = I_K); use widths with a hidden "
                    "layer to check it"]
        if L == 1:
            return ["L = 1: v_rule was called only with V^(l+1) = I_K; use L >= 2 to check "
                    "how it combines V^(l+1)"]
        return []

    @property
    def message(self) -> str:
        return str(self)

    def __str__(self) -> str:
        head = f"widths {list(self.widths)}, {self.activation} model"
        if self.holds:
            n = sum(c.monomials for c in self.layers)
            return (f"holds: {head}; V^(l) and U^(l) equal the direct derivatives for every "
                    f"layer l = 1..{len(self.widths) - 1} ({n} monomials compared)"
                    + "".join(f"\n  note: {note}" for note in self.notes))
        if self.error is not None:
            return f"refuted: {head}; {self.error}"
        m = self.mismatch
        assert m is not None
        what = "refuted" if m.decision == "different" else "not proved (undecided)"
        out = len(self.widths) - 1
        return (f"{what}: {head}; first difference at layer l = {m.l}, "
                f"{m.quantity}^({m.l}) entry {m.entry} = d z^({out})_{m.entry[0]} / d {m.parameter}\n"
                f"  claim: {m.claim}\n"
                f"  true:  {m.true}\n"
                f"  claim - true = {m.difference}")


def _parameter(quantity: str, l: int, col: int, d_prev: int) -> str:
    if quantity == "V":
        return f"b{l}[{col}]"
    return f"B{l}[{col // d_prev},{col % d_prev}]"


def check_recursion(widths: Sequence[int], v_rule: Callable | None = None,
                    u_rule: Callable | None = None, activation: str = "relu") -> RecursionReport:
    """Prove or refute the recursion for one architecture, every layer ``l = 1..L+1``.

    ``widths``: ``[d_0, ..., d_{L+1}]`` (``L >= 0``; ``K = d_{L+1}``).  ``v_rule`` and
    ``u_rule``: candidate rules on SymPy matrices (see :mod:`.rules`; ``None`` means
    the lecture's ``V^(l+1) B^(l+1) D^(l)`` and ``V^(l) (I kron a^(l-1)')``).
    ``activation``: ``"relu"`` (0/1 activation pattern) or ``"sigma"`` (generic).

    Returns a :class:`RecursionReport`: ``holds`` is ``True`` only when every entry of
    every claimed ``V^(l)`` and ``U^(l)`` expands to the same polynomial as the direct
    derivative.  Otherwise the report names the first layer (in the order the
    recursion runs, ``l = L+1`` down to ``1``; ``V`` before ``U``) and entry that
    differs, with the claim and the true derivative, or the rule's error.

    >>> check_recursion([2, 3, 2]).holds
    True
    >>> bad = check_recursion([2, 3, 2], v_rule=lambda V_next, B_next, D: V_next * B_next)
    >>> bad.holds, bad.mismatch.l, bad.mismatch.quantity
    (False, 1, 'V')
    """
    start = time.perf_counter()
    net = build_network(widths, activation)
    conv = ToSymEngine()
    true = direct_derivatives(net, conv)
    idempotents = [conv(s) for slope in net.slopes[1:] for s in slope] \
        if activation == "relu" else []
    fast = Expander({**true.renaming, **true.forward_values}, idempotents)
    full = Expander(true.renaming, idempotents) if true.forward_values else None
    report = RecursionReport(net.widths, activation, holds=False)
    try:
        for claim in claims(net, v_rule, u_rule):
            for quantity, matrix, truth in (("V", claim.V, true.V[claim.l]),
                                            ("U", claim.U, true.U[claim.l])):
                mismatch, monomials = _compare(claim.l, quantity, matrix, truth, conv, fast,
                                               full, net.widths[claim.l - 1])
                report.layers.append(LayerCheck(claim.l, quantity, tuple(matrix.shape),
                                                mismatch is None, monomials))
                if mismatch is not None:
                    report.mismatch = mismatch
                    report.seconds = time.perf_counter() - start
                    return report
    except RuleError as exc:
        report.error = str(exc)
        report.seconds = time.perf_counter() - start
        return report
    report.holds = True
    report.seconds = time.perf_counter() - start
    return report


def _compare(l, quantity, matrix, truth, conv, fast, full, d_prev):
    monomials = 0
    rows, cols = matrix.shape
    for r in range(rows):
        for c in range(cols):
            try:
                claim = conv(matrix[r, c])
            except Exception as exc:  # noqa: BLE001  (SymEngine cannot represent the entry)
                return Mismatch(l, quantity, (r, c), _parameter(quantity, l, c, d_prev),
                                short(matrix[r, c]), short(truth[r][c]),
                                f"(not comparable: {type(exc).__name__}: {exc})",
                                Decision.UNDECIDED.value), monomials
            try:
                decision, diff = fast.difference(claim, truth[r][c])
                shown = fast
                if decision is not Decision.EQUAL and full is not None:
                    decision, diff = full.difference(claim, truth[r][c])
                    shown = full
            except Exception as exc:  # noqa: BLE001  (refuted as undecided, never a crash)
                return Mismatch(l, quantity, (r, c), _parameter(quantity, l, c, d_prev),
                                short(matrix[r, c]), short(truth[r][c]),
                                f"(not comparable: {type(exc).__name__}: {exc})",
                                Decision.UNDECIDED.value), monomials
            if decision is not Decision.EQUAL:
                return Mismatch(l, quantity, (r, c), _parameter(quantity, l, c, d_prev),
                                short(shown.expand(claim)), short(shown.expand(truth[r][c])),
                                short(diff), decision.value), monomials
            monomials += count_terms(fast.expand(truth[r][c]))
    return None, monomials
