"""The four exercises: their contract, the tests drawn for them, and how each test is scored.

Test ``T`` of exercise ``E`` (``number = "E.T"``) draws its inputs from
``np.random.default_rng([seed, E, T])``, so one seed, recorded in the results, replays
every test.  Inputs are drawn by the grader after the submission has loaded and are
handed to the child; expected values are computed here, in the grader's process only,
after the child has answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import reference
from .compare import Verdict, check_value, rel_error


@dataclass
class Case:
    """One test: its number, a label for the report, and the inputs (NumPy, float64)."""

    exercise: int
    index: int  # T - 1
    label: str
    args: dict[str, Any]
    unstable: bool = False
    widths: tuple = ()

    @property
    def number(self) -> str:
        return f"{self.exercise}.{self.index + 1}"


@dataclass
class Exercise:
    """An exercise: the functions it grades and the tests it draws."""

    number: int
    title: str
    functions: tuple[str, ...]
    returns: tuple[tuple[str, str], ...]  # (name, "value" | "list")
    sizes: list = field(default_factory=list)


def _no_kink(rng, make, layers_fn, margin=1e-3, tries=100):
    """Redraw until every hidden pre-activation is at least ``margin`` away from 0."""
    for _ in range(tries):
        args = make(rng)
        if all(np.min(np.abs(z)) > margin for z in layers_fn(args) if z.size):
            return args
    return args  # pragma: no cover - astronomically unlikely


# ---------------------------------------------------------------- exercise 1


def _softmax_case(rng, N, D, K, reg, shift=0.0):
    return {"W": rng.standard_normal((D, K)), "b": rng.standard_normal(K) + shift,
            "X": rng.standard_normal((N, D)), "y": rng.integers(0, K, N).astype(np.int64),
            "reg": float(reg)}


SOFTMAX_SIZES = [
    ("N = 5, D = 3, K = 4, reg = 1e-3", dict(N=5, D=3, K=4, reg=1e-3)),
    ("N = 1 (a single example), reg = 0", dict(N=1, D=3, K=3, reg=0.0)),
    ("K = 1 (a single class)", dict(N=4, D=3, K=1, reg=0.5)),
    ("wide: N = 50, D = 40, K = 10", dict(N=50, D=40, K=10, reg=1e-2)),
    ("scores near 1000: exp overflows unless the row maximum is subtracted",
     dict(N=6, D=4, K=5, reg=1e-3, shift=1000.0)),
]

# ---------------------------------------------------------------- exercise 2


def _two_layer_case(rng, N, D, H, K, reg):
    def make(rng):
        return {"W1": rng.standard_normal((D, H)), "b1": rng.standard_normal(H),
                "W2": rng.standard_normal((H, K)), "b2": rng.standard_normal(K),
                "X": rng.standard_normal((N, D)),
                "y": rng.integers(0, K, N).astype(np.int64), "reg": float(reg)}

    return _no_kink(rng, make, lambda a: [a["X"] @ a["W1"] + a["b1"]])


TWO_LAYER_SIZES = [
    ("N = 5, D = 3, H = 6, K = 4, reg = 1e-3", dict(N=5, D=3, H=6, K=4, reg=1e-3)),
    ("N = 1 (a single example)", dict(N=1, D=2, H=5, K=3, reg=0.1)),
    ("K = 1 (a single class)", dict(N=4, D=3, H=5, K=1, reg=0.5)),
    ("wide: N = 32, D = 20, H = 50, K = 10", dict(N=32, D=20, H=50, K=10, reg=1e-2)),
    ("H = 1 (one hidden unit)", dict(N=6, D=3, H=1, K=3, reg=1e-2)),
]

# ---------------------------------------------------------------- exercise 3


def _network_case(rng, widths):
    def make(rng):
        Bs = [rng.standard_normal((d, dp)) * np.sqrt(2.0 / dp) for dp, d in zip(widths, widths[1:])]
        bs = [0.5 * rng.standard_normal(d) for d in widths[1:]]
        return {"Bs": Bs, "bs": bs, "x": rng.standard_normal(widths[0])}

    def hidden(a):
        zs, h = [], a["x"]
        for B, b in list(zip(a["Bs"], a["bs"]))[:-1]:
            z = B @ h + b
            zs.append(z)
            h = np.maximum(0.0, z)
        return zs

    return _no_kink(rng, make, hidden)


BACKPROP_SIZES = [
    ("L = 1, widths (3, 4, 2)", (3, 4, 2)),
    ("L = 0 (linear), widths (3, 2)", (3, 2)),
    ("K = 1, widths (3, 5, 4, 1)", (3, 5, 4, 1)),
    ("wide: widths (16, 32, 10)", (16, 32, 10)),
    ("deep: L = 6, widths (3, 4, 4, 4, 4, 4, 4, 2)", (3, 4, 4, 4, 4, 4, 4, 2)),
]

# ---------------------------------------------------------------- exercise 4

RULE_WIDTHS = [
    ("L = 1, widths (2, 3, 2)", (2, 3, 2)),
    ("L = 2, widths (2, 2, 3, 2)", (2, 2, 3, 2)),
    ("L = 0 and K = 1, widths (3, 1)", (3, 1)),
    ("wide: widths (4, 5, 3)", (4, 5, 3)),
    ("deep: L = 4, widths (2, 2, 2, 2, 2, 2)", (2, 2, 2, 2, 2, 2)),
]

EXERCISES = {
    1: Exercise(1, "softmax_loss: the linear softmax classifier", ("softmax_loss",),
                (("loss", "value"), ("dW", "value"), ("db", "value")), SOFTMAX_SIZES),
    2: Exercise(2, "two_layer_loss: one ReLU hidden layer", ("two_layer_loss",),
                (("loss", "value"), ("dW1", "value"), ("db1", "value"), ("dW2", "value"),
                 ("db2", "value")), TWO_LAYER_SIZES),
    3: Exercise(3, "backprop_factors: V^(l) and U^(l) for any depth", ("backprop_factors",),
                (("Vs", "list"), ("Us", "list")), BACKPROP_SIZES),
    4: Exercise(4, "v_rule and u_rule: the bonus question's recursion", ("v_rule", "u_rule"),
                (), RULE_WIDTHS),
}

ARG_ORDER = {
    1: ("W", "b", "X", "y", "reg"),
    2: ("W1", "b1", "W2", "b2", "X", "y", "reg"),
    3: ("Bs", "bs", "x"),
}


def draw_cases(exercise: int, seed: int) -> list[Case]:
    """The tests of ``exercise``, inputs drawn from ``default_rng([seed, exercise, T])``."""
    ex = EXERCISES[exercise]
    cases = []
    for i, (label, size) in enumerate(ex.sizes):
        rng = np.random.default_rng([seed, exercise, i + 1])
        if exercise == 1:
            args = _softmax_case(rng, **size)
            cases.append(Case(1, i, label, args, unstable=size.get("shift", 0.0) > 0))
        elif exercise == 2:
            cases.append(Case(2, i, label, _two_layer_case(rng, **size)))
        elif exercise == 3:
            cases.append(Case(3, i, label, _network_case(rng, size), widths=size))
        else:
            cases.append(Case(4, i, label, {}, widths=size))
    return cases


def rule_requests(widths) -> list:
    """The (rule, shape) pairs that :func:`bpcheck.symbolic.check_recursion` may call for
    ``widths``: ``v_rule`` on ``(K, d_{l+1}, d_l)`` for l = 1..L, ``u_rule`` on
    ``(K, d_l, d_{l-1})`` for l = 1..L+1."""
    K = widths[-1]
    L = len(widths) - 2
    reqs = [("v_rule", [K, widths[l + 1], widths[l]]) for l in range(1, L + 1)]
    reqs += [("u_rule", [K, widths[l], widths[l - 1]]) for l in range(1, L + 2)]
    seen, out = set(), []
    for r in reqs:
        key = (r[0], tuple(r[1]))
        if key not in seen:
            seen.add(key)
            out.append([r[0], r[1]])
    return out


def child_plan(exercise: int, cases: list[Case], only=None) -> tuple[list, dict]:
    """Per-test plan entries for the harness and the input arrays they name.

    ``only``: the indices of the cases this child runs; the others get no entry (``None``)
    and none of their inputs."""
    ex = EXERCISES[exercise]
    tests, arrays = [], {}
    for c in cases:
        if only is not None and c.index not in only:
            tests.append(None)
            continue
        if exercise == 4:
            tests.append({"requests": rule_requests(c.widths)})
            continue
        spec = []
        for name in ARG_ORDER[exercise]:
            value = c.args[name]
            key = f"t{c.index}/{name}"
            if isinstance(value, list):
                keys = [f"{key}/{j}" for j in range(len(value))]
                arrays.update(zip(keys, value))
                spec.append({"kind": "list", "keys": keys})
            elif isinstance(value, np.ndarray):
                arrays[key] = value
                spec.append({"kind": "array", "key": key})
            else:
                spec.append({"kind": "value", "value": value})
        tests.append({"args": spec, "returns": [list(r) for r in ex.returns]})
    return tests, arrays


@dataclass
class Scored:
    """The score of one test, as a fraction of its points, and its feedback lines."""

    fraction: float
    lines: list[str]


def _tuple_problem(meta, names) -> str | None:
    res = meta.get("result")
    if res is None:
        return "nothing came back"
    if res.get("type") not in ("tuple", "list"):
        return f"expected a tuple ({', '.join(names)}), got {res.get('type')}"
    if res.get("length") != len(names):
        return (f"expected a tuple of {len(names)} values ({', '.join(names)}), "
                f"got {res.get('length')}")
    return None


def _by_consistency(mistakes, arrays, tol):
    """Mistakes ordered by how many of the outputs they change match what came back, so
    that the diagnosis that explains the most outputs is named first."""
    def matched(vals):
        hits = 0
        for name, value in vals.items():
            got = arrays.get(name)
            if type(got) is np.ndarray and got.dtype == np.float64 \
                    and got.size == np.size(value):
                hits += rel_error(got.reshape(np.shape(value)), value) <= tol
        return hits / len(vals)

    return sorted(mistakes, key=lambda m: -matched(m[1]))


def score_numeric(case: Case, meta: dict, arrays: dict, tol: float) -> Scored:
    """Score exercises 1 and 2: each output is one equal share of the test."""
    ex = EXERCISES[case.exercise]
    names = [n for n, _ in ex.returns]
    problem = _tuple_problem(meta, names)
    if problem is not None and "got" in problem and "tuple of" not in problem:
        return Scored(0.0, [problem])
    a = case.args
    if case.exercise == 1:
        want = reference.softmax_loss(a["W"], a["b"], a["X"], a["y"], a["reg"])
        mistakes = reference.softmax_loss_mistakes(a["W"], a["b"], a["X"], a["y"], a["reg"])
    else:
        args = [a[k] for k in ARG_ORDER[2]]
        want = reference.two_layer_loss(*args)
        mistakes = reference.two_layer_loss_mistakes(*args)
    mistakes = _by_consistency(mistakes, arrays, tol)
    verdicts = []
    for name, w in zip(names, want):
        cands = [(msg, vals[name]) for msg, vals in mistakes if name in vals]
        verdicts.append(check_value(name, meta.get(name), arrays.get(name), w, tol,
                                    mistakes=cands, unstable_hint=case.unstable,
                                    scalar=name == "loss"))
    lines = ([problem] if problem else []) + [v.message for v in verdicts]
    return Scored(sum(v.ok for v in verdicts) / len(verdicts), lines)


def score_backprop(case: Case, meta: dict, arrays: dict, tol: float) -> Scored:
    """Score exercise 3: each of the 2 (L+1) arrays is one equal share of the test."""
    a = case.args
    problem = _tuple_problem(meta, ["Vs", "Us"])
    n_layers = len(a["Bs"])
    if problem is not None and "tuple of" not in problem:
        return Scored(0.0, [problem])
    Vs, Us = reference.backprop_factors(a["Bs"], a["bs"], a["x"])
    mistakes = reference.backprop_factors_mistakes(a["Bs"], a["bs"], a["x"])
    lines = [problem] if problem else []
    verdicts: list[Verdict] = []
    for name, want_list, sym in (("Vs", Vs, "V"), ("Us", Us, "U")):
        m = meta.get(name)
        if m is None or m.get("type") != "list":
            got = "nothing" if m is None else m.get("type")
            lines.append(f"{name}: expected a list of L+1 = {n_layers} arrays, got {got}")
            verdicts += [Verdict(name, False, "")] * n_layers
            continue
        if m.get("length") != n_layers:
            lines.append(f"{name}: expected a list of L+1 = {n_layers} arrays (l = 1..L+1, "
                         f"the output layer's V^(L+1) = I_K included), got {m.get('length')}")
        for j, want in enumerate(want_list):
            cands = [(msg, vals[name][j]) for msg, vals in mistakes if name in vals]
            v = check_value(f"{name}[{j}] ({sym}^({j + 1}))", meta.get(f"{name}/{j}"),
                            arrays.get(f"{name}/{j}"), want, tol, mistakes=cands)
            verdicts.append(v)
    fraction = sum(v.ok for v in verdicts) / len(verdicts)
    bad = [v for v in verdicts if not v.ok and v.message]
    if not bad and fraction == 1.0:
        lines.append(f"all {len(verdicts)} arrays ok (largest relative error "
                     f"{max(v.error for v in verdicts):.1e})")
    lines += _grouped(bad)
    return Scored(fraction, lines)


def _grouped(bad: list[Verdict], most: int = 8) -> list[str]:
    """One line per distinct diagnosis: ``Us[0], Us[1]: wrong; likely mistake: ...``."""
    groups: dict[str, list[str]] = {}
    for v in bad:
        name, _, rest = v.message.partition(": ")
        key = rest.split("likely mistake: ", 1)[1] if "likely mistake: " in rest else None
        if key is None:
            groups[v.message] = []
        else:
            groups.setdefault("likely mistake: " + key, []).append(name.split(" ")[0])
    lines = [f"{', '.join(names)}: wrong; {key}" if names else key
             for key, names in groups.items()]
    if len(lines) > most:
        lines = lines[:most] + [f"... and {len(lines) - most} more wrong arrays"]
    return lines


def decode_rules(case: Case, meta: dict, arrays: dict):
    """Plain polynomial data from the child -> ``{(rule, shape): PolyMatrix}`` or an error."""
    from .polymap import PolyMatrix

    out = {}
    for r, (rule, shape) in enumerate(rule_requests(case.widths)):
        m = meta.get(f"r{r}")
        if not isinstance(m, dict):
            return None, f"{rule}: nothing came back for input shapes {shape}"
        if "error" in m:
            return None, f"{rule} on inputs of shapes {_rule_shapes(rule, shape)}: {m['error']}"
        try:
            out[(rule, tuple(shape))] = PolyMatrix.from_arrays(
                m.get("shape"), arrays.get(f"r{r}/exps"), arrays.get(f"r{r}/num"),
                arrays.get(f"r{r}/den"), arrays.get(f"r{r}/counts"), _n_vars(rule, shape))
        except ValueError as err:
            return None, f"{rule}: {err}"
    return out, None


def _rule_shapes(rule, shape):
    if rule == "v_rule":
        K, dn, d = shape
        return f"V_next {K}x{dn}, B_next {dn}x{d}, D {d}x{d}"
    K, d, dp = shape
    return f"V {K}x{d}, a_prev {dp}x1"


def _n_vars(rule, shape):
    if rule == "v_rule":
        K, dn, d = shape
        return K * dn + dn * d + d
    K, d, dp = shape
    return K * d + dp


def score_rules(case: Case, meta: dict, arrays: dict, check=None) -> Scored:
    """Score exercise 4 on one architecture with ``bpcheck.symbolic.check_recursion``."""
    polys, error = decode_rules(case, meta, arrays)
    if error:
        return Scored(0.0, [error])
    from .polymap import rule_callables

    if check is None:
        from ..symbolic import check_recursion as check
    v_rule, u_rule = rule_callables(polys)
    report = check(list(case.widths), v_rule=v_rule, u_rule=u_rule)
    holds = getattr(report, "holds", None)
    text = str(report).strip()
    if holds is True:
        return Scored(1.0, [f"the recursion holds for widths {case.widths}"])
    return Scored(0.0, [f"refuted for widths {case.widths}:", *text.splitlines()[:30]])


SCORERS: dict[int, Callable] = {1: score_numeric, 2: score_numeric, 3: score_backprop}
