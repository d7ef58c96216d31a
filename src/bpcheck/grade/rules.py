"""Scoring the symbolic rules (:class:`bpcheck.grade.homework.RuleCheck`).

In the child, the student's ``v_rule(V_next, B_next, D)`` and ``u_rule(V, a_prev)`` are
applied to matrices of fresh symbols ``x0, x1, ...`` for every input shape the checker
needs, and come back as plain polynomial data (:mod:`.polymap`).  Here each rule is
proved or refuted on its own by :func:`bpcheck.symbolic.check_recursion` (the lecture's
rule standing in for the other), and compared with the exercise's catalogued wrong rules
on the same symbolic inputs: an equal one is named, with a one-entry counterexample.

SymPy is imported where it is used: planning the child's requests needs none of it.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .grader import not_defined
from .homework import Case, Exercise, Scored


def rule_requests(widths, v_name="v_rule", u_name="u_rule") -> list:
    """The (rule, shape) pairs that :func:`bpcheck.symbolic.check_recursion` may call for
    ``widths``: ``v_rule`` on ``(K, d_{l+1}, d_l)`` for l = 1..L, ``u_rule`` on
    ``(K, d_l, d_{l-1})`` for l = 1..L+1."""
    K = widths[-1]
    L = len(widths) - 2
    reqs = [(v_name, [K, widths[l + 1], widths[l]]) for l in range(1, L + 1)]
    reqs += [(u_name, [K, widths[l], widths[l - 1]]) for l in range(1, L + 2)]
    seen, out = set(), []
    for r in reqs:
        key = (r[0], tuple(r[1]))
        if key not in seen:
            seen.add(key)
            out.append([r[0], r[1]])
    return out


def plan_entry(exercise: Exercise, case: Case) -> dict:
    v_name, u_name = exercise.student_functions
    return {"kind": "rules", "functions": [v_name, u_name],
            "requests": rule_requests(case.args["widths"], v_name, u_name)}


def _symbols(n):
    import sympy

    return [sympy.Symbol(f"x{i}") for i in range(n)]


def symbolic_inputs(is_v: bool, shape):
    """The child's symbolic arguments for one request, and the number of variables."""
    import sympy

    if is_v:
        K, dn, d = shape
        xs = _symbols(K * dn + dn * d + d)
        V = sympy.Matrix(K, dn, xs[:K * dn])
        B = sympy.Matrix(dn, d, xs[K * dn:K * dn + dn * d])
        return (V, B, sympy.diag(*xs[K * dn + dn * d:])), len(xs)
    K, d, dp = shape
    xs = _symbols(K * d + dp)
    return (sympy.Matrix(K, d, xs[:K * d]), sympy.Matrix(dp, 1, xs[K * d:])), len(xs)


def _shapes_text(is_v, shape):
    if is_v:
        K, dn, d = shape
        return f"V_next {K}x{dn}, B_next {dn}x{d}, D {d}x{d}"
    K, d, dp = shape
    return f"V {K}x{d}, a_prev {dp}x1"


def _as_dicts(entries):
    return [dict(terms) for terms in entries]


def _entries_of(matrix, n):
    import sympy

    gens = _symbols(n)
    out = []
    for entry in sympy.Matrix(matrix):
        poly = sympy.Poly(sympy.expand(entry), *gens)
        out.append({m: Fraction(int(sympy.Rational(c).p), int(sympy.Rational(c).q))
                    for m, c in poly.terms()})
    return out


def decode(exercise: Exercise, case: Case, meta: dict, arrays: dict):
    """Plain polynomial data from the child -> ``({(rule, shape): PolyMatrix}, {rule:
    error})``: a rule with an error has no entries (the other rule is scored on its own)."""
    from .polymap import PolyMatrix

    v_name, _ = exercise.student_functions
    out, errors = {}, {}
    for r, (rule, shape) in enumerate(plan_entry(exercise, case)["requests"]):
        if rule in errors:
            continue
        m = meta.get(f"r{r}")
        is_v = rule == v_name
        if not isinstance(m, dict):
            errors[rule] = f"{rule}: nothing came back for input shapes {shape}"
        elif m.get("missing") is True:  # the other rule is still scored
            errors[rule] = not_defined([rule])
        elif "error" in m:
            errors[rule] = f"{rule} on inputs of shapes {_shapes_text(is_v, shape)}: {m['error']}"
        else:
            n = symbolic_inputs(is_v, shape)[1]
            try:
                out[(rule, tuple(shape))] = PolyMatrix.from_arrays(
                    m.get("shape"), arrays.get(f"r{r}/exps"), arrays.get(f"r{r}/num"),
                    arrays.get(f"r{r}/den"), arrays.get(f"r{r}/counts"), n)
            except ValueError as err:
                errors[rule] = f"{rule}: {err}"
    return {key: p for key, p in out.items() if key[0] not in errors}, errors


def _counterexample(is_v, shape, got, want) -> str:
    """One entry where the student's rule and a reference differ, on small integers."""
    import sympy

    args, n = symbolic_inputs(is_v, shape)
    values = np.random.default_rng(0).integers(-2, 3, n)
    subs = dict(zip(_symbols(n), (int(v) for v in values)))
    g = got.evaluate([subs[s] for s in _symbols(n)])
    w = sympy.Matrix(want(*args)).subs(subs)
    for i in range(min(g.rows, w.rows)):
        for j in range(min(g.cols, w.cols)):
            if g[i, j] != w[i, j]:
                return (f"with {_shapes_text(is_v, shape)} of integers in -2..2, entry "
                        f"[{i}, {j}] is {g[i, j]} where the lecture's rule gives {w[i, j]}")
    return f"with {_shapes_text(is_v, shape)}: the output has shape {g.shape}, expected {w.shape}"


def _named_mistake(exercise, case, rule_index, polys):
    """The catalogued mistake whose ``rule`` equals the student's on every shape, if any."""
    import sympy

    names = exercise.student_functions
    rule = names[rule_index]
    mine = {shape: _as_dicts(p.entries) for (r, shape), p in polys.items() if r == rule}
    for name, wrong in exercise.wrong_answers(case):
        fn = wrong.get(rule)
        if fn is None:
            continue
        try:
            same = all(_entries_of(fn(*symbolic_inputs(rule_index == 0, shape)[0]),
                                   symbolic_inputs(rule_index == 0, shape)[1]) == entries
                       for shape, entries in mine.items())
        except (sympy.ShapeError, ValueError, TypeError):
            same = False
        if same:
            return name
    return None


def _fast(check, widths) -> dict:
    """``method="direct"`` for the small networks of a homework: it decides a correct rule
    three to four times faster than the layerwise method (both compare exact polynomials),
    but its cost grows with depth, and its refutations are in the whole network's symbols."""
    from ..symbolic import check_recursion

    return {"method": "direct"} if check is check_recursion and len(widths) <= 7 else {}


def score(exercise: Exercise, case: Case, meta: dict, arrays: dict, check=None) -> Scored:
    """Half of the case for each rule that the checker proves for the case's widths (a
    rule that raised, or whose answer could not be read, loses its half only)."""
    polys, errors = decode(exercise, case, meta, arrays)
    from .polymap import rule_callables

    if check is None:
        from ..symbolic import check_recursion as check
    widths = tuple(case.args["widths"])
    v_name, u_name = exercise.student_functions
    renamed = {(("v_rule" if r == v_name else "u_rule"), s): p for (r, s), p in polys.items()}
    v_rule, u_rule = rule_callables(renamed)
    right = exercise.expected(case)
    got, lines = 0.0, []
    fast = _fast(check, widths)
    for index, (name, mine) in enumerate(((v_name, v_rule), (u_name, u_rule))):
        if name in errors:  # this rule failed in the child: no half for it, the other scored
            lines.append(errors[name])
            continue
        kwargs = {"v_rule": mine} if index == 0 else {"u_rule": mine}
        report = check(list(widths), **kwargs, **fast)
        if getattr(report, "holds", None) is not True and fast:
            report = check(list(widths), **kwargs)  # the layerwise report names the layer
        if getattr(report, "holds", None) is True:
            got += 0.5
            lines.append(f"{name}: the recursion holds for widths {widths}")
            continue
        mistake = _named_mistake(exercise, case, index, polys)
        if mistake is not None:
            shape = next(s for (r, s) in polys if r == name)
            reference = list(right.values())[index]
            example = _counterexample(index == 0, shape, polys[(name, shape)], reference)
            lines.append(f"{name}: refuted for widths {widths}; likely mistake: {mistake} "
                         f"({example})")
            continue
        text = [ln if len(ln) <= 300 else ln[:300] + " ..." for ln in str(report).splitlines()]
        verdict = "rejected" if text and text[0].startswith("rejected: ") else "refuted"
        if text:  # the report's own first line begins "refuted: widths [...]" too
            text[0] = text[0].removeprefix("refuted: ").removeprefix("rejected: ")
        lines += [f"{name}: {verdict} for widths {widths}:", *text[:12]]
    return Scored(got, lines)
