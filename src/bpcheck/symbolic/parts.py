"""The symbolic parts of ``bpcheck verify``: generic widths, a grid of concrete proofs,
and the refutation controls, each as a :class:`bpcheck._report.Part`."""

from __future__ import annotations

import time

from .._report import Part
from . import latex
from .check import check_recursion
from .generic import chain_step, one_layer_step, vec_kronecker_step
from .wrong_rules import PLANTED

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
QUICK_GRID = tuple(w for w in GRID if len(w) <= 6 or w == (2, 3, 3, 2, 3, 3, 2, 2))
MODELS = ("relu", "sigma")


def generic_part(quick: bool = False) -> Part:
    """Steps (i)-(iii) with symbolic widths; the chain for ``L = 1..4`` (``1..6`` in full)."""
    start = time.perf_counter()
    steps = [vec_kronecker_step(), one_layer_step("relu"), one_layer_step("sigma")]
    steps += [chain_step(L) for L in range(1, (4 if quick else 6) + 1)]
    part = Part("Symbolic proof, generic widths n_0, n_1, ... (entrywise)",
                ["step", "statement", "holds", "seconds"])
    for s in steps:
        part.rows.append([s.name, s.statement, s.holds, round(s.seconds, 3)])
        part.latex[s.name] = s.latex
    part.latex = {**latex.recursion_latex("relu"), **part.latex}
    part.passed = all(s.holds for s in steps)
    part.notes.append("derivatives by SymPy's diff of nested Sums with respect to one "
                      "Indexed entry; equality on a canonical sum normal form (bound "
                      "indices renamed by range, KroneckerDelta summed out)")
    part.notes.append("the backward induction that joins (ii) over the layers is in "
                      "proofs/backprop_recursion.md; the chain rule is its one assumption")
    part.seconds = time.perf_counter() - start
    return part


def concrete_part(quick: bool = False) -> Part:
    """Every grid architecture, both activation models, all layers ``l = 1..L+1``."""
    start = time.perf_counter()
    part = Part("Symbolic proof, concrete widths: recursion = direct derivative, every layer",
                ["widths", "L", "K", "model", "matrices", "monomials", "holds", "seconds"])
    for widths in (QUICK_GRID if quick else GRID):
        for model in MODELS:
            r = check_recursion(widths, activation=model)
            part.rows.append([str(list(widths)), len(widths) - 2, widths[-1], model,
                              len(r.layers), sum(c.monomials for c in r.layers), r.holds,
                              round(r.seconds, 3)])
            if not r.holds:
                part.notes.append(str(r))
    part.passed = bool(part.rows) and all(row[6] is True for row in part.rows)
    part.latex = {**latex.recursion_latex("relu"),
                  "activation derivative (sigma model)": latex.D_SIGMA}
    part.notes.append("relu: 0/1 activation pattern d, equality modulo d^2 = d; sigma: "
                      "generic activation, sigma(z) and sigma'(z) named a and s after "
                      "differentiating")
    part.notes.append("equality decided on expanded polynomials (SymEngine); an undecided "
                      "comparison never counts as a pass")
    part.seconds = time.perf_counter() - start
    return part


def refutation_part(quick: bool = False) -> Part:
    """Each planted wrong rule must be refuted (both models); the lecture's rules must hold."""
    start = time.perf_counter()
    part = Part("Refutation controls: planted wrong rules are refuted",
                ["rule", "mistake", "widths", "model", "expected", "as expected", "where"])
    ok = True
    for planted in PLANTED:
        for model in MODELS:
            r = check_recursion(planted.widths, planted.v_rule, planted.u_rule, activation=model)
            if r.error is not None:
                where = r.error
            elif r.mismatch is not None:
                m = r.mismatch
                where = f"{m.quantity}^({m.l}) entry {m.entry} (d/d {m.parameter})"
            else:
                where = "not refuted"
            refuted = not r.holds
            ok &= refuted
            part.rows.append([planted.name, planted.mistake, str(list(planted.widths)), model,
                              "refuted", refuted, where])
            if planted.name in latex.PLANTED:
                part.latex[planted.name] = latex.PLANTED[planted.name]
    for widths in dict.fromkeys(p.widths for p in PLANTED):
        for model in MODELS:
            r = check_recursion(widths, activation=model)
            ok &= r.holds
            part.rows.append(["lecture's rules (control)", "none", str(list(widths)), model,
                              "holds", r.holds, "every layer" if r.holds else str(r)])
    part.passed = ok
    part.notes.append("passes only if every planted rule is refuted and the lecture's rules "
                      "hold on the same widths")
    part.seconds = time.perf_counter() - start
    return part


def verify_parts(quick: bool = False) -> list[Part]:
    """The symbolic parts of ``bpcheck verify``, in the order they are printed.

    ``quick=True`` runs the chain up to ``L = 4`` and the grid up to ``L = 4`` (plus one
    ``L = 6`` architecture); the default runs the chain to ``L = 6`` and the whole grid.
    """
    return [generic_part(quick), concrete_part(quick), refutation_part(quick)]
