"""The symbolic parts of ``bpcheck verify``, each as a :class:`bpcheck._report.Part` with a
one-sentence summary: the induction (every depth), the chain at fixed depths, the concrete
proofs over a grid, and the refutation controls."""

from __future__ import annotations

import time

from .._report import Part
from . import latex
from .canonical import Decision
from .check import check_recursion
from .generic import chain_step, one_layer_step, vec_kronecker_step
from .induction import induction_base, induction_step
from .wrong_rules import PLANTED, WIDTH_DEPENDENT

# (widths, label): L = 0..6, square and non-square, K = 1 included
GRID: tuple[tuple[int, ...], ...] = (
    (3, 2), (4, 1),
    (2, 3, 2), (3, 3, 1),
    (2, 3, 4, 2), (3, 3, 3, 3),
    (2, 4, 3, 2, 1), (3, 3, 3, 3, 3),
    (2, 3, 2, 3, 2, 2), (3, 3, 3, 3, 3, 3),
    (2, 3, 2, 3, 2, 3, 1), (3, 3, 3, 3, 3, 3, 3),
    (2, 3, 3, 2, 3, 3, 2, 2), (3, 3, 3, 3, 3, 3, 3, 3),
)
QUICK_GRID = ((3, 2), (2, 3, 2), (2, 3, 4, 2))
DIRECT_MAX_L = 4
"""The grid's architectures up to this depth are also proved by the direct method."""
MODELS = ("relu", "sigma")
CHAIN_MAX_L, QUICK_CHAIN_MAX_L = 6, 2

ASSUMPTIONS = (
    "the chain rule for differentiable maps",
    "ReLU: no pre-activation is exactly 0; then D^(l) is constant near the point, ReLU "
    "equals the linear map D^(l) z there, and functions equal on an open set have equal "
    "derivatives",
    "generic sigma: differentiable; the chain rule for the layers above l is assumed where "
    "SymPy cannot write a function of n_(l+1) (or n_l) inputs (the induction step)",
)
"""Every assumption the symbolic proof rests on."""


def _steps_part(title: str, steps, summary: str, start: float) -> Part:
    part = Part(title, ["step", "statement", "holds", "seconds"])
    for s in steps:
        part.rows.append([s.name, s.statement, s.holds, round(s.seconds, 3)])
        part.latex[s.name] = s.latex
        part.notes.extend(f"{s.name}: {name}: {'holds' if ok else 'FAILS'}"
                          for name, ok in s.checks.items())
    part.passed = bool(steps) and all(s.holds for s in steps)
    part.summary = summary
    part.seconds = time.perf_counter() - start
    return part


def induction_part(quick: bool = False) -> Part:
    """The base case, the induction step (both models) and the lemmas, widths symbolic
    (``quick``: Lemma 1 only)."""
    _check_quick(quick)
    start = time.perf_counter()
    steps = [induction_base(), induction_step("relu"), induction_step("sigma"),
             vec_kronecker_step()]
    if not quick:  # Lemma 2; the induction step contains it
        steps += [one_layer_step("relu"), one_layer_step("sigma")]
    part = _steps_part(
        "Induction over the layers, every depth L (widths n_(l-1), n_l, n_(l+1), K symbolic)",
        steps, "For every depth L: the base case V^(L+1) = I_K and the step from layer l+1 "
        "to layer l, machine-checked with symbolic widths (ReLU and generic sigma); the "
        "downward induction on l that joins them is the one step done by hand", start)
    part.latex = {**latex.recursion_latex("relu"), **part.latex}
    part.notes.append("invariant P(l), ReLU model: z^(L+1) = W^(l) z^(l) + c^(l) near the "
                      "point (where every D^(m) is constant), W^(l) and c^(l) free of the "
                      "parameters of layers 1..l; P(L+1) holds with W = I, c = 0; "
                      "P(l+1) => P(l) with W^(l) = W^(l+1) B^(l+1) D^(l); and P(l) gives "
                      "V^(l) = W^(l), U^(l) = V^(l) (I kron a^(l-1)')")
    part.notes.append("invariant P(l), sigma model: z^(L+1) = F_l(z^(l)), F_l built from the "
                      "layers l+1..L+1 only, W^(l) = d F_l / d z^(l)'; the chain rule for "
                      "F_(l+1) (in the step) and for F_l (in the derivatives) is assumed")
    part.notes.extend(f"assumption: {a}" for a in ASSUMPTIONS)
    return part


def chain_part(quick: bool = False) -> Part:
    """The whole chain at once for fixed depths ``L = 1..6`` (``1..2`` quick), widths symbolic."""
    _check_quick(quick)
    start = time.perf_counter()
    top = QUICK_CHAIN_MAX_L if quick else CHAIN_MAX_L
    part = _steps_part(
        "Chain at fixed depths, every width symbolic (n_0, ..., n_(L+1))",
        [chain_step(L) for L in range(1, top + 1)],
        f"For L = 1..{top} (ReLU model, a^(l) = D^(l) z^(l)): V^(1) and U^(1) built by the "
        "recursion equal SymPy's derivative "
        "of z^(L+1), all widths symbolic (no induction used)", start)
    part.notes.append("derivatives by SymPy's diff of nested Sums; equality on a canonical "
                      "form of sums (bound indices renamed, Kronecker deltas summed out)")
    return part


def concrete_part(quick: bool = False) -> Part:
    """Every grid architecture, both activation models, all layers ``l = 1..L+1``."""
    _check_quick(quick)
    start = time.perf_counter()
    part = Part("Concrete widths: recursion = derivative, every layer, exact",
                ["widths", "L", "K", "model", "method", "matrices", "monomials", "holds",
                 "seconds"])
    grid = QUICK_GRID if quick else GRID
    for widths in grid:
        for model in MODELS:
            methods = ("layerwise", "direct") if len(widths) - 2 <= DIRECT_MAX_L and not quick \
                else ("layerwise",)
            for method in methods:
                r = check_recursion(widths, activation=model, method=method)
                part.rows.append([str(list(widths)), len(widths) - 2, widths[-1], model, method,
                                  len(r.layers), sum(c.monomials for c in r.layers), r.holds,
                                  round(r.seconds, 3)])
                if not r.holds:
                    part.notes.append(str(r))
    part.passed = bool(part.rows) and all(row[7] is True for row in part.rows)
    depths = sorted({len(w) - 2 for w in grid})
    part.summary = (f"Exactly, for {len(grid)} concrete architectures (L = {depths[0]}.."
                    f"{depths[-1]}, ReLU and generic sigma): every entry of every V^(l) and "
                    "U^(l), layer by layer (a layer's truth is V^(l+1) times the layer's own "
                    "derivative: the chain rule, as in the invariant)"
                    + ("" if quick else f", and for L <= {DIRECT_MAX_L} also against z^(L+1) "
                       "differentiated directly (independent of the recursion)"))
    part.latex = {**latex.recursion_latex("relu"),
                  "activation derivative (sigma model)": latex.D_SIGMA}
    part.notes.append("layerwise: each layer in its own symbols (V^(l+1) as proved, a^(l-1)), "
                      "the truth from one layer's derivative, confirmed on the running "
                      "recursion; direct: z^(L+1) differentiated and expanded")
    part.notes.append("relu: 0/1 activation pattern d with d^2 = d; sigma: sigma(z) and "
                      "sigma'(z) named a and s after differentiating; equality on expanded "
                      "polynomials, an undecided comparison never passes")
    part.seconds = time.perf_counter() - start
    return part


def _where(r) -> str:
    if r.error is not None:
        return r.error
    if r.mismatch is not None:
        m = r.mismatch
        undecided = "" if m.decision == Decision.DIFFERENT.value else f", {m.decision}"
        return f"{m.quantity}^({m.l}) entry {m.entry} (d/d {m.parameter}{undecided})"
    return "not refuted"


def _refuted(r) -> bool:
    """Refuted outright: a rule error (the misbehaving-code mistakes), or an entry decided
    different; an undecided comparison fails the control (it is no refutation, though it
    is never a pass)."""
    return r.error is not None or (r.mismatch is not None
                                   and r.mismatch.decision == Decision.DIFFERENT.value)


def _wrong_index(W_next, B_next, D, k, m, t):
    return W_next[k, t] * B_next[t, m] * D[t]


def refutation_part(quick: bool = False) -> Part:
    """Each planted wrong rule must be refuted (both models; ``quick``: ReLU, the common
    mistakes only), on its widths and by the default grid; the induction step must reject
    ``D^(l)`` on the wrong index; the lecture's rules must hold on the same widths."""
    _check_quick(quick)
    start = time.perf_counter()
    part = Part("Refutation controls: planted wrong rules are refuted",
                ["rule", "mistake", "widths", "model", "expected", "as expected", "where"])
    ok = True
    planted_rules = PLANTED if quick else PLANTED + WIDTH_DEPENDENT
    models = ("relu",) if quick else MODELS
    for planted in planted_rules:
        for model in models:
            r = check_recursion(planted.widths, planted.v_rule, planted.u_rule, activation=model)
            refuted = _refuted(r)
            ok &= refuted
            part.rows.append([planted.name, planted.mistake, str(list(planted.widths)), model,
                              "refuted", refuted, _where(r)])
            if planted.name in latex.PLANTED:
                part.latex[planted.name] = latex.PLANTED[planted.name]
    if not quick:
        for planted in WIDTH_DEPENDENT:
            grid = check_recursion(v_rule=planted.v_rule, u_rule=planted.u_rule)
            beyond = planted.name == "wrong beyond L = 6"  # what a finite grid cannot catch
            as_expected = grid.holds if beyond else \
                grid.refutation is not None and _refuted(grid.refutation)
            ok &= as_expected
            part.rows.append([planted.name, planted.mistake, "default grid (seed 0)", "relu",
                              "passes (beyond the grid)" if beyond else "refuted", as_expected,
                              "holds on every grid architecture" if grid.holds
                              else f"{list(grid.widths)}: {_where(grid.refutation)}"])
    for model in MODELS:
        step = induction_step(model, summand=_wrong_index)
        ok &= not step.holds
        part.rows.append(["induction step, D on the wrong index", "W^(l+1) B^(l+1) diag(d_t)",
                          "symbolic", model, "refuted", not step.holds,
                          "; ".join(n for n, held in step.checks.items() if not held)
                          or "not refuted"])
    for widths in dict.fromkeys(p.widths for p in planted_rules):
        for model in models:
            r = check_recursion(widths, activation=model)
            ok &= r.holds
            part.rows.append(["lecture's rules (control)", "none", str(list(widths)), model,
                              "holds", r.holds, "every layer" if r.holds else str(r)])
    part.passed = ok
    count = len(planted_rules)
    part.summary = (f"Wrong rules are rejected: {count} planted wrong rules refuted or "
                    "rejected (those that raise, or return no matrix or one of the wrong shape, with "
                    "the error named) "
                    + ("(ReLU model)" if quick else "in both models")
                    + ("" if quick else ", the width-dependent ones also by the default grid "
                       "(except one wrong only beyond L = 6, which this grid does not "
                       "reach)")
                    + ", and an induction step with D on the wrong index")
    part.notes.append("passes only if every planted rule is refuted or rejected and the "
                      "lecture's rules "
                      "hold on the same widths")
    part.seconds = time.perf_counter() - start
    return part


def verify_parts(quick: bool = False) -> list[Part]:
    """The symbolic parts of ``bpcheck verify``, in the order they are printed.

    ``quick=True``: the induction, the chain for ``L = 1..2``, three small architectures
    and the common mistakes (ReLU); the default adds Lemma 2, the chain to ``L = 6``, the
    whole grid (with the direct method to ``L = 4``), the width-dependent mistakes and
    the sigma model's controls.
    """
    _check_quick(quick)
    return [induction_part(quick), chain_part(quick), concrete_part(quick),
            refutation_part(quick)]


def _check_quick(quick) -> None:
    """A part's ``quick`` must be a bool: ``quick="no"`` is a string, and true."""
    if not isinstance(quick, bool):
        raise TypeError(f"quick: expected True or False, got {quick!r}")
