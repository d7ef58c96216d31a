"""``check_recursion``: claim (the recursion) against truth (the derivative), entry by entry.

Two methods, the same verdicts:

``"layerwise"`` (the default)
    :mod:`.layerwise`: each layer in its own symbols, the truth from one layer's
    derivative and the true ``V^(l+1)`` (the invariant that :mod:`.induction` proves
    for every depth); nothing of size exponential in ``L`` is expanded.
``"direct"``
    :func:`~.recursion.claims` builds ``V^(l)``, ``U^(l)`` from the rules,
    :func:`~.direct.direct_derivatives` differentiates ``z^(L+1)`` as one nested
    expression, and :class:`~.canonical.Expander` decides each equality on the expanded
    (canonical) polynomial form.  Independent of the induction; its cost grows like
    ``d^L``.

Without ``widths``, :func:`check_recursion` checks a grid of architectures
(:func:`candidate_grid`) and stops at the first refutation.

Speed of the direct method without giving up exactness (ReLU model).  The ``U^(l)`` entries are products
``V^(l)_{ki} a^(l-1)_j`` whose expanded form has ``|V| * |a|`` monomials.  The check
first renames each hidden pre-activation ``z^(m)_j`` (the same node on both sides) to
a free symbol ``zeta{m}[j]`` and expands.  Equal polynomials in free symbols stay equal
after substituting ``zeta = z`` back, so ``EQUAL`` there is a proof.  Only when that
comparison is not ``EQUAL`` is the entry decided again on the fully expanded
polynomials, so a refutation is never produced by the renaming.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .canonical import Decision, Expander, ToSymEngine, count_terms, short
from .direct import direct_derivatives
from .layerwise import LayerwiseDecider, layer_claims
from .network import build_network, check_activation
from .recursion import _context, claims
from .rules import RuleError, call_rule
from .wrong_rules import KNOWN

METHODS = ("layerwise", "direct")
SHOWN = 70
"""Characters of the claim, the truth and their difference shown in a refutation."""


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
    known: str = ""
    """The known mistake(s) the rule matches at this layer (:data:`~.wrong_rules.KNOWN`),
    if any; two names when they give the same matrix."""
    own_symbols: bool = False
    """Whether claim and truth are written in the layer's own symbols (``V3[k,r]`` for
    the proved ``V^(3)``, ``a1[j]`` for ``a^(1)``)."""
    witness: str = ""
    """Values of the symbols at which ``claim - true`` is not 0 (:func:`_witness`), when
    decided different and small enough to search."""


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
    method: str = "layerwise"

    @property
    def notes(self) -> list[str]:
        """What a pass at these widths does not cover: the rules at small depth."""
        L = len(self.widths) - 2
        if L == 0:
            return ["L = 0: v_rule was not called (V^(1) = I_K), and u_rule was called only "
                    "with V = I_K (a u_rule that drops V passes here); use widths with a "
                    "hidden layer to check them"]
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
            return (f"holds: {head}; V^(l) and U^(l) equal the derivatives for every "
                    f"layer l = 1..{len(self.widths) - 1} ({n} monomials compared)"
                    + "".join(f"\n  note: {note}" for note in self.notes))
        if self.error is not None:
            return f"rejected: {head}; {self.error}"  # an error, not a wrong entry
        m = self.mismatch
        assert m is not None
        what = "refuted" if m.decision == "different" else "not proved (undecided)"
        out = len(self.widths) - 1
        lines = [f"{what}: {head}; layer l = {m.l}, {m.quantity}^({m.l}) entry {m.entry} = "
                 f"dz^({out})_{m.entry[0]}/d{m.parameter}",
                 f"  claim: {m.claim}", f"  true:  {m.true}", f"  claim - true = {m.difference}"]
        if m.witness:
            lines.append(f"  for instance {m.witness}")
        lines.extend(_legend(" ".join(lines[1:]), m.own_symbols))
        if m.known:
            lines.append(f"  this is the known mistake: {m.known}")
        return "\n".join(lines)


_LEGEND = (("V", "V{n}[k,r] = V^({n})_kr (proved)"), ("a", "a{n}[j] = a^({n})_j"),
           ("B", "B{n}[i,j] = B^({n})_ij"), ("b", "b{n}[i] = b^({n})_i"),
           ("d", "d{n}[i] = 1 if z^({n})_i > 0, else 0 (ReLU's pattern: D^({n}) = diag(d{n}))"),
           ("s", "s{n}[i] = sigma'(z^({n})_i) (D^({n}) = diag(s{n}))"),
           ("x", "x[j] = the input's x_j"))


def _witness(diff, decision, most: int = 12, tries: int = 200) -> str:
    """A readable point where the polynomial ``diff`` (SymEngine) is not 0: its symbols
    (at most ``most``) set to small integers, a ReLU pattern ``d`` to 0 or 1, e.g.
    ``"B3[0,0] = 1, d2[0] = 0: claim - true = 1"``; empty when ``diff`` is not decided
    different, has more symbols, or no point is found (the refutation stands on the
    polynomial itself: a non-zero polynomial is not 0 somewhere)."""
    import numpy as np
    import symengine as se

    if decision is not Decision.DIFFERENT or not isinstance(diff, se.Basic):
        return ""
    symbols = sorted(diff.free_symbols, key=str)
    if not symbols or len(symbols) > most:
        return ""
    pattern = [str(x).startswith("d") and str(x)[1:2].isdigit() for x in symbols]
    rng = np.random.default_rng(0)
    for t in range(tries):
        if t == 0:
            values = [1] * len(symbols)
        elif t <= len(symbols):  # one symbol at 0 (a dead unit), the others 1
            values = [0 if i == t - 1 else 1 for i in range(len(symbols))]
        else:
            values = [int(rng.integers(0, 2)) if is_d else int(rng.choice([-2, -1, 1, 2]))
                      for is_d in pattern]
        value = diff.subs(dict(zip(symbols, [se.Integer(v) for v in values])))
        if value.is_Number and value != 0:
            at = ", ".join(f"{x} = {v}" for x, v in zip(symbols, values))
            return f"at {at}: claim - true = {value}"
    return ""


def _legend(text: str, own_symbols: bool) -> list[str]:
    """What the symbols in ``text`` stand for (``V3[k,r]``, ``a1[j]``, ``d2[i]``, ...)."""
    parts = []
    for letter, words in _LEGEND:
        if letter == "x":
            parts += [words] if re.search(r"\bx\[", text) else []
            continue
        if letter in "Va" and not own_symbols:
            continue
        parts += [words.format(n=n) for n in sorted(set(re.findall(rf"\b{letter}(\d+)\[", text)),
                                                    key=int)]
    return [f"  ({'; '.join(parts)})"] if parts else []


def _parameter(quantity: str, l: int, col: int, d_prev: int) -> str:
    if quantity == "V":
        return f"b{l}[{col}]"
    return f"B{l}[{col // d_prev},{col % d_prev}]"


def check_recursion(widths: Sequence[int] | None = None, v_rule: Callable | None = None,
                    u_rule: Callable | None = None, activation: str = "relu", *,
                    method: str = "layerwise", seed: int = 0):
    """Prove or refute the recursion, every layer ``l = 1..L+1``.

    ``widths``: ``[d_0, ..., d_{L+1}]`` (``L >= 0``; ``K = d_{L+1}``); ``None`` checks the
    grid of :func:`candidate_grid` (``seed`` draws its random architectures) and returns a
    :class:`GridReport`.  ``v_rule`` and ``u_rule``: candidate rules on SymPy matrices
    (see :mod:`.rules`; ``None`` means the lecture's ``V^(l+1) B^(l+1) D^(l)`` and
    ``V^(l) (I kron a^(l-1)')``).  ``activation``: ``"relu"`` (0/1 activation pattern) or
    ``"sigma"`` (generic).  ``method``: ``"layerwise"`` or ``"direct"`` (module docstring).

    Returns a :class:`RecursionReport`: ``holds`` is ``True`` only when every entry of
    every claimed ``V^(l)`` and ``U^(l)`` equals the true derivative as a polynomial.
    Otherwise the report names the first layer (in the order the recursion runs,
    ``l = L+1`` down to ``1``; ``V`` before ``U``) and entry that differs, with the claim
    and the true derivative, or the rule's error.

    >>> check_recursion([2, 3, 2]).holds
    True
    >>> bad = check_recursion([2, 3, 2], v_rule=lambda V_next, B_next, D: V_next * B_next)
    >>> bad.holds, bad.mismatch.l, bad.mismatch.quantity
    (False, 1, 'V')
    >>> check_recursion(v_rule=lambda V_next, B_next, D: V_next * B_next * D).holds
    True
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    check_activation(activation)
    if type(seed) is not int or seed < 0:
        raise ValueError(f"seed: expected an int of at least 0, got {seed!r}")
    for name, rule in (("v_rule", v_rule), ("u_rule", u_rule)):
        if rule is not None and not callable(rule):
            raise TypeError(f"{name}: expected a function of SymPy matrices (or None for the "
                            f"lecture's rule), got {type(rule).__name__}")
    if widths is None:
        return _check_grid(v_rule, u_rule, activation, method, seed)
    if method == "direct":
        return _check_direct(widths, v_rule, u_rule, activation)
    return _check_layerwise(widths, v_rule, u_rule, activation)


def _check_layerwise(widths, v_rule, u_rule, activation) -> RecursionReport:
    start = time.perf_counter()
    net = build_network(widths, activation)
    conv = ToSymEngine()
    decider = LayerwiseDecider(net, conv)
    report = RecursionReport(net.widths, activation, holds=False, method="layerwise")

    def comparisons():
        for layer in layer_claims(net, v_rule, u_rule, conv):
            own = layer.own
            for quantity, own_claim, truth, real in (("V", own.claim_V, own.true_V, layer.V),
                                                     ("U", own.claim_U, own.true_U, layer.U)):
                yield (layer.l, quantity, real.shape,
                       *_compare_layerwise(layer, quantity, own_claim, truth, real, decider, net))

    return _record(report, comparisons(), start)


def _record(report: RecursionReport, comparisons, start: float) -> RecursionReport:
    """Fill ``report`` from ``(l, quantity, shape, mismatch, monomials)`` comparisons, in
    order, stopping at the first mismatch or at a rule's error."""
    try:
        for l, quantity, shape, mismatch, monomials in comparisons:
            report.layers.append(LayerCheck(l, quantity, tuple(shape), mismatch is None,
                                            monomials))
            if mismatch is not None:
                report.mismatch = mismatch
                break
        else:
            report.holds = True
    except RuleError as exc:
        report.error = str(exc)
    report.seconds = time.perf_counter() - start
    return report


def _compare_layerwise(layer, quantity, own_claim, truth, real, decider, net):
    l, monomials = layer.l, 0
    own_to_real = layer.own_to_real(quantity, net)
    d_prev = net.widths[l - 1]
    rows, cols = real.shape
    for r in range(rows):
        for c in range(cols):
            try:
                decision, shown, n = decider.decide(own_claim[r, c], truth[r][c], real[r, c],
                                                    own_to_real)
            except Exception as exc:  # noqa: BLE001  (refuted as undecided, never a crash)
                return Mismatch(l, quantity, (r, c), _parameter(quantity, l, c, d_prev),
                                short(own_claim[r, c], SHOWN), short(truth[r][c], SHOWN),
                                f"(not comparable: {type(exc).__name__}: {exc})",
                                Decision.UNDECIDED.value), monomials
            if decision is not Decision.EQUAL:
                claim, true, diff = shown
                return Mismatch(l, quantity, (r, c), _parameter(quantity, l, c, d_prev),
                                short(claim, SHOWN), short(true, SHOWN), short(diff, SHOWN),
                                decision.value, _known(layer, quantity, own_claim, decider, net),
                                own_symbols=True, witness=_witness(diff, decision)), monomials
            monomials += n
    return None, monomials


def _known(layer, quantity, own_claim, decider, net) -> str:
    """The name of the known mistake whose output at this layer equals the claim's."""
    own, l = layer.own, layer.l
    conv = decider.conv
    truth = own.true_V if quantity == "V" else own.true_U
    try:  # a claim right in the layer's own symbols was refuted on the network's values (a
        # rule that counts its calls or looks at its arguments' names): no mistake to name
        if all(decider.own.difference(conv(own_claim[r, c]), conv(truth[r][c]))[0]
               is Decision.EQUAL for r in range(own_claim.rows) for c in range(own_claim.cols)):
            return ""
    except Exception:  # noqa: BLE001  (an entry SymEngine cannot take: compared below)
        pass
    V = own.V_next if quantity == "V" else own.V
    return _known_mistakes(net, l, quantity, own_claim, V, own.a_prev,
                           lambda a, b: decider.own.difference(conv(a), conv(b))[0]
                           is Decision.EQUAL)


def _known_mistakes(net, l, quantity, claim, V, a_prev, same) -> str:
    """The known mistakes (:data:`KNOWN`) whose output at layer ``l``, from ``V`` (the
    proved ``V^(l+1)`` for ``V``, ``V^(l)`` for ``U``) and ``a_prev``, equals ``claim``
    entry for entry (``same``), joined by " = "; "" for none.  An entry SymEngine cannot
    take (a float, say) makes a claim no known mistake: the refutation itself is decided
    and shown already."""
    K, w = net.K, net.widths
    names = []
    for planted in KNOWN:
        rule = planted.v_rule if quantity == "V" else planted.u_rule
        if rule is None or (quantity == "V" and l > net.L):
            continue
        args = (V, net.B[l + 1], net.D[l]) if quantity == "V" else (V, a_prev)
        shape = (K, w[l]) if quantity == "V" else (K, w[l] * w[l - 1])
        try:
            theirs = call_rule(rule, quantity.lower() + "_rule", args, _context(net, l), shape)
        except RuleError:
            continue
        try:
            if all(same(a, b) for a, b in zip(claim, theirs)):
                names.append(f'"{planted.name}" ({planted.mistake})')
        except Exception:  # noqa: BLE001  (see the docstring)
            continue
    return " = ".join(names)


def _check_direct(widths, v_rule, u_rule, activation) -> RecursionReport:
    start = time.perf_counter()
    net = build_network(widths, activation)
    conv = ToSymEngine()
    true = direct_derivatives(net, conv)
    idempotents = [conv(s) for slope in net.slopes[1:] for s in slope] \
        if activation == "relu" else []
    fast = Expander({**true.renaming, **true.forward_values}, idempotents)
    full = Expander(true.renaming, idempotents) if true.forward_values else None
    report = RecursionReport(net.widths, activation, holds=False, method="direct")

    def same(a, b):
        decision = fast.difference(conv(a), conv(b))[0]
        if decision is not Decision.EQUAL and full is not None:
            decision = full.difference(conv(a), conv(b))[0]
        return decision is Decision.EQUAL

    def comparisons():
        V_next = None  # the claim's V^(l+1): equal to the truth when layer l is compared
        for claim in claims(net, v_rule, u_rule):
            for quantity, matrix, truth in (("V", claim.V, true.V[claim.l]),
                                            ("U", claim.U, true.U[claim.l])):
                mismatch, monomials = _compare(claim.l, quantity, matrix, truth, conv, fast,
                                               full, net.widths[claim.l - 1])
                if mismatch is not None and mismatch.decision == Decision.DIFFERENT.value:
                    given = V_next if quantity == "V" else claim.V
                    mismatch.known = _known_mistakes(net, claim.l, quantity, matrix, given,
                                                     net.a[claim.l - 1], same)
                yield claim.l, quantity, matrix.shape, mismatch, monomials
            V_next = claim.V

    return _record(report, comparisons(), start)


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
                                short(diff), decision.value,
                                witness=_witness(diff, decision)), monomials
            monomials += count_terms(fast.expand(truth[r][c]))
    return None, monomials


# --- a grid of architectures, for candidate rules --------------------------------------

FIXED_GRID: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("L = 0", (3, 2)),
    ("L = 1", (2, 3, 2)),  # the lecture's two-layer network, small
    ("K = 1", (3, 4, 2, 1)),
    ("square", (3, 3, 3, 3)),
    ("growing", (1, 2, 3, 4, 5)),
    ("narrowing", (6, 5, 4, 3, 2)),
    ("deep", (2, 3, 2, 3, 2, 3, 2, 2)),
    ("wide", (5, 6, 4)),
)
"""Named architectures every grid check covers (``L`` up to 6, widths up to 6); no other
architecture is covered, within those bounds either, but by a random draw."""
MAX_WIDTH, MAX_DEPTH, RANDOM_COUNT = 6, 6, 4


def candidate_grid(seed: int = 0, count: int = RANDOM_COUNT) -> list[tuple[str, tuple[int, ...]]]:
    """:data:`FIXED_GRID` plus ``count`` random architectures from ``seed``: ``L`` in
    ``0..6``, every width in ``1..6``, each drawn again while it is one already in the
    grid (a repeat checks nothing new).

    >>> [name for name, _ in candidate_grid(seed=0, count=1)]
    ['L = 0', 'L = 1', 'K = 1', 'square', 'growing', 'narrowing', 'deep', 'wide', 'random 1 (seed 0)']
    """
    rng = random.Random(seed)
    out = list(FIXED_GRID)
    seen = {widths for _, widths in out}
    for i in range(count):
        for _ in range(100):  # (ample: the grid holds a handful of the 10^5 choices)
            L = rng.randint(0, MAX_DEPTH)
            widths = tuple(rng.randint(1, MAX_WIDTH) for _ in range(L + 2))
            if widths not in seen:
                break
        seen.add(widths)
        out.append((f"random {i + 1} (seed {seed})", widths))
    return out


@dataclass
class GridReport:
    """Result of :func:`check_recursion` without widths: the architectures checked in order,
    up to the first refutation.  ``holds`` is a plain ``bool``."""

    holds: bool
    activation: str
    covered: list[tuple[int, ...]] = field(default_factory=list)
    """The widths checked and found to hold."""
    refutation: RecursionReport | None = None
    seed: int = 0
    seconds: float = 0.0

    @property
    def mismatch(self) -> Mismatch | None:
        return None if self.refutation is None else self.refutation.mismatch

    @property
    def widths(self) -> tuple[int, ...] | None:
        """The widths of the refutation, if any."""
        return None if self.refutation is None else self.refutation.widths

    def __str__(self) -> str:
        shown = ", ".join(str(list(w)) for w in self.covered)
        if self.holds:
            return (f"holds on the {len(self.covered)} architectures of the grid "
                    f"({self.activation} model, seed {self.seed}): {shown}\n"
                    f"  not covered: every other architecture, of depths L <= {MAX_DEPTH} and "
                    f"widths <= {MAX_WIDTH} too, and all of depths L > {MAX_DEPTH} or widths "
                    f"above {MAX_WIDTH} (a rule may branch on a depth or a width; no finite "
                    "grid covers every architecture)")
        before = f"\n  (held before on {shown})" if self.covered else ""
        return str(self.refutation) + before


def _check_grid(v_rule, u_rule, activation, method, seed) -> GridReport:
    start = time.perf_counter()
    report = GridReport(holds=False, activation=activation, seed=seed)
    for _, widths in candidate_grid(seed):
        one = check_recursion(widths, v_rule, u_rule, activation, method=method)
        if not one.holds:
            report.refutation = one
            report.seconds = time.perf_counter() - start
            return report
        report.covered.append(tuple(widths))
    report.holds = True
    report.seconds = time.perf_counter() - start
    return report
