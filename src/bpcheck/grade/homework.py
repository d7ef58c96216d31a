"""The public exercise API: a homework is one Python file that declares its exercises.

An instructor writes, say, ``conv_hw.py``::

    import numpy as np
    from bpcheck.grade.homework import Homework

    hw = Homework("Convolutions", allow=["numpy"])

    @hw.exercise(points=10, returns=["out"])
    def conv2d_forward(x, w, b):
        \"\"\"Valid 2-D convolution: x (H, W), w (kh, kw), b a float -> out (H-kh+1, W-kw+1).\"\"\"
        kh, kw = w.shape
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw))
        return (np.einsum("ijkl,kl->ij", windows, w) + b,)

    conv2d_forward.case("3x3 kernel", lambda rng: dict(
        x=rng.standard_normal((6, 7)), w=rng.standard_normal((3, 3)), b=0.5))
    conv2d_forward.case("1x1 kernel", ..., weight=0.5, visibility="hidden")

    @conv2d_forward.mistake("the kernel is flipped (that is a true convolution, "
                            "the lecture's layer is a cross-correlation)")
    def _(x, w, b):
        return conv2d_forward(x, w[::-1, ::-1], b)

and grades with ``bpcheck grade --homework conv_hw.py submission.py``.

- The decorated function is the **reference** (it runs in the grader's process only,
  never in the sandbox); its name, signature and docstring are the student's stub in the
  template (``--template``).  It returns a tuple in the order of ``returns``; a name
  ending in ``[]`` is a list of arrays (``"Vs[]"``).
- **Cases** are drawn from ``np.random.default_rng([seed, exercise number, case
  number])``; ``make(rng)`` returns the keyword arguments.  Each case has a label, a
  ``weight`` (its share of the exercise's points) and a ``visibility`` (Gradescope's:
  ``visible``, ``hidden``, ``after_due_date``, ``after_published``).
- **Scoring**: :class:`RelativeError` (the default: CS231n relative error per output, with
  per-output weights and a dtype policy), :class:`RuleCheck` (symbolic backprop rules
  proved or refuted by :func:`bpcheck.symbolic.check_recursion`) or :class:`Custom`.
- **Mistakes**: wrong variants of the reference, run on the same inputs; an output that
  matches one (and not the reference) is told the mistake's name.  A variant may return
  the whole tuple or a dict of the outputs it changes.
- The **import policy** (``allow``, ``forbid``) is sent to the sandbox with the plan.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .compare import Verdict, check_value, rel_error

VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")

#: Modules no homework may allow (the grader itself).
ALWAYS_FORBIDDEN = ("bpcheck",)

#: Autodiff libraries, forbidden unless a homework allows them.
AUTODIFF = ("jax", "jaxlib", "torch", "tensorflow", "autograd", "mxnet", "chainer", "theano",
            "flax", "keras", "paddle", "mlx", "tinygrad", "micrograd", "pytensor", "aesara",
            "equinox", "optax", "functorch", "haiku")


class HomeworkError(ValueError):
    """A homework module declares something the grader cannot use; the message says what."""


def _finite(where: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise HomeworkError(f"{where} = {value!r}: expected a number")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise HomeworkError(f"{where} = {value!r}: expected a finite number {bound}")
    return value


@dataclass
class Case:
    """One test of an exercise: its inputs (keyword arguments) and how much it counts.

    ``number`` is ``"E.T"`` (exercise E, case T, both from 1)."""

    exercise: Exercise
    index: int
    label: str
    args: dict[str, Any]
    weight: float = 1.0
    visibility: str = "visible"
    misses: tuple = ()
    """Catalogued mistakes this case cannot tell from the right answer (it credits them)."""

    @property
    def number(self) -> str:
        return f"{self.exercise.number}.{self.index + 1}"


@dataclass
class _CaseSpec:
    label: str
    make: Callable
    weight: float
    visibility: str
    misses: tuple


@dataclass
class Scored:
    """A case's score as a fraction of its points, and its feedback lines."""

    fraction: float
    lines: list[str]


class Exercise:
    """One exercise: student functions, points, cases, reference, scorer, mistakes.

    Made by :meth:`Homework.exercise`; calling it calls the reference.
    """

    def __init__(self, reference: Callable, *, number: int, points: float, returns,
                 score=None, title: str | None = None, functions=None, driver: str | None = None):
        self.reference = reference
        self.name = reference.__name__
        self.number = number
        self.points = _finite(f"{self.name}: points", points)
        if isinstance(returns, str):  # tuple("idx") would be three outputs i, d, x
            raise HomeworkError(f"{self.name}: returns = {returns!r}: expected a list of the "
                                f"outputs' names, as returns=[{returns!r}]")
        self.returns = tuple(returns or ())
        self.scorer = score if score is not None else RelativeError()
        self.functions: tuple[Callable, ...] = tuple(functions or (reference,))
        self.title = title or (inspect.getdoc(reference) or self.name).splitlines()[0]
        self.driver = driver
        self._cases: list[_CaseSpec] = []
        self._mistakes: list[tuple[str, Callable]] = []
        self._mistake_tables: list[Callable] = []
        if not callable(getattr(self.scorer, "score", None)):
            raise HomeworkError(f"{self.name}: score = {self.scorer!r}: expected RelativeError(), "
                                "RuleCheck() or Custom(fn)")
        if isinstance(self.scorer, RelativeError):  # a misspelt name was silently ignored
            names = [n.removesuffix("[]") for n in self.returns]
            for what, table in (("weights", self.scorer.weights), ("lists", self.scorer.lists)):
                unknown = sorted(map(str, set(table) - set(names)))
                if unknown:
                    raise HomeworkError(f"{self.name}: RelativeError({what}=...) names "
                                        f"{', '.join(unknown)}, which is not one of the "
                                        f"outputs ({', '.join(names)})")

    def __call__(self, *args, **kwargs):
        return self.reference(*args, **kwargs)

    def __repr__(self):
        return f"<exercise {self.number} {self.name}: {self.points:g} points>"

    @property
    def student_functions(self) -> tuple[str, ...]:
        """The names the submission must define."""
        return tuple(f.__name__ for f in self.functions)

    # ------------------------------------------------------------- declaring

    def case(self, label: str, make: Callable, *, weight: float = 1.0,
             visibility: str = "visible", misses=()) -> Exercise:
        """Add a case: ``make(rng)`` returns the reference's keyword arguments.

        ``misses``: names of catalogued mistakes this case cannot tell from the right
        answer (a single example cannot show a forgotten 1/N); every other mistake must
        lose points on it, which :func:`mistake_scores` shows."""
        if not isinstance(label, str) or not label:
            raise HomeworkError(f"{self.name}: case label {label!r}: expected a non-empty string")
        if not callable(make):
            raise HomeworkError(f"{self.name}: case {label!r}: make = {make!r}: expected a "
                                "function of an rng")
        w = _finite(f"{self.name}: case {label!r} weight", weight, strict=True)
        if visibility not in VISIBILITIES:
            raise HomeworkError(f"{self.name}: case {label!r} visibility = {visibility!r}: "
                                f"expected one of {', '.join(VISIBILITIES)}")
        self._cases.append(_CaseSpec(label, make, w, visibility, tuple(misses)))
        return self

    def mistake(self, name: str) -> Callable:
        """Decorator: a wrong variant of the reference (same arguments), told as ``name``
        when an answer matches it.  It returns the whole tuple or a dict of the outputs it
        changes (for :class:`RuleCheck`: ``{"v_rule": f}`` and/or ``{"u_rule": g}``)."""
        def add(fn):
            self._mistakes.append((name, fn))
            return fn
        return add

    def mistakes(self, fn: Callable) -> Callable:
        """Decorator: ``fn(**args)`` returns many mistakes at once, ``[(name, {output:
        value})]`` (for variants that share intermediate results)."""
        self._mistake_tables.append(fn)
        return fn

    # ------------------------------------------------------------- grading

    def draw(self, seed: int) -> list[Case]:
        """The cases, inputs drawn from ``default_rng([seed, number, T])``."""
        out = []
        for i, spec in enumerate(self._cases):
            rng = np.random.default_rng([seed, self.number, i + 1])
            args = spec.make(rng)
            if not isinstance(args, dict):
                raise HomeworkError(f"{self.name}: case {spec.label!r} returned "
                                    f"{type(args).__name__}, expected a dict of arguments")
            out.append(Case(self, i, spec.label, args, spec.weight, spec.visibility,
                            spec.misses))
        return out

    def expected(self, case: Case):
        """The reference's outputs on ``case`` as the tuple of ``returns``, computed once per
        case and checked: a case whose arguments the reference cannot take, a reference
        that raises, or one that returns other than ``returns`` says is a
        :class:`HomeworkError` naming the exercise and the case (the grader checks every
        case before the submission runs; a student must not lose points for it)."""
        want = case.__dict__.get("_want")
        if want is not None:
            return want
        where = f"{self.name}: case {case.number} ({case.label!r})"
        try:
            inspect.signature(self.reference).bind(**case.args)
        except TypeError as err:
            raise HomeworkError(f"{where} gives the arguments {sorted(case.args)}, which the "
                                f"reference {self.name}{inspect.signature(self.reference)} "
                                f"cannot take ({err})") from None
        try:
            want = self.as_outputs(self.reference(**case.args))
        except Exception as err:  # noqa: BLE001 - the instructor's code, named
            raise HomeworkError(f"{where}: the reference raised {type(err).__name__}: "
                                f"{err}") from err
        if self.scorer.kind == "rules":  # (its reference gives the rules' own record)
            widths = case.args.get("widths")
            if (not isinstance(widths, (list, tuple)) or len(widths) < 2
                    or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool)
                               and w >= 1 for w in widths)):
                raise HomeworkError(f"{where}: widths = {widths!r}: a RuleCheck case gives "
                                    "'widths', the network's widths d_0, ..., d_(L+1) (at "
                                    "least two positive integers)")
            if len(self.functions) != 2:
                raise HomeworkError(f"{self.name}: a RuleCheck exercise has two student "
                                    f"functions, functions=[v_rule, u_rule]; got "
                                    f"{len(self.functions)}")
            case._want = want
            return want
        outputs = _output_names(self.returns)
        names = ", ".join(n for n, _ in outputs)
        if not isinstance(want, (tuple, list)) or len(want) != len(outputs):
            got = (f"{len(want)} value{'s' * (len(want) != 1)}" if isinstance(want, (tuple, list))
                   else type(want).__name__)
            raise HomeworkError(f"{where}: the reference returned {got}, but returns= says "
                                f"a tuple of {len(outputs)} ({names})")
        for (name, kind), value in zip(outputs, want):
            if kind == "list" and not isinstance(value, (list, tuple)):
                raise HomeworkError(f"{where}: the reference's {name} is a "
                                    f"{type(value).__name__}, but returns= says a list "
                                    f"({name}[])")
        if isinstance(self.scorer, RelativeError):
            _check_finite_reference(where, outputs, want)
        want = case._want = Outputs(want, [n for n, _ in outputs])
        return want

    def as_outputs(self, got):
        """``got`` as the tuple of ``returns``: an exercise with one (non-list) output may
        return it bare, as ``return out`` rather than ``return (out,)``."""
        single = len(self.returns) == 1 and not self.returns[0].endswith("[]")
        return (got,) if single and not isinstance(got, (tuple, list, dict)) else got

    def wrong_answers(self, case: Case) -> list[tuple[str, dict]]:
        """Each catalogued mistake's outputs on ``case``: ``[(name, {output: value})]``,
        computed once per case and checked like :meth:`expected` (the grader checks every
        case before the submission runs): a mistake that raises, returns other than the
        outputs' tuple or a dict of them, or names an output ``returns`` does not have is a
        :class:`HomeworkError` naming the exercise, the case and the mistake (a correct
        answer scored 0 when a mistake raised, and a misnamed output was never matched)."""
        out = case.__dict__.get("_wrong")
        if out is not None:
            return out
        where = f"{self.name}: case {case.number} ({case.label!r})"
        if self.scorer.kind == "rules":
            names = list(self.student_functions)
        else:
            names = [n.removesuffix("[]") for n in self.returns]
        out = []
        # a mistake may overflow (that is what some of them are): quietly, not on the
        # grader's stderr (Gradescope's output) for every test
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for name, fn in self._mistakes:
                try:
                    got = self.as_outputs(fn(**case.args))
                except Exception as err:  # noqa: BLE001 - the instructor's code, named
                    raise HomeworkError(f"{where}: the mistake {name!r} raised "
                                        f"{type(err).__name__}: {err}") from err
                if not isinstance(got, dict):
                    if not isinstance(got, (tuple, list)) or len(got) != len(names):
                        raise HomeworkError(
                            f"{where}: the mistake {name!r} returned {type(got).__name__}; "
                            f"expected the outputs' tuple ({', '.join(names)}) or a dict of "
                            "those it changes")
                    got = dict(zip(names, got))
                out.append((name, got))
            for table in self._mistake_tables:
                try:
                    out.extend((name, dict(vals)) for name, vals in table(**case.args))
                except Exception as err:  # noqa: BLE001
                    raise HomeworkError(f"{where}: the mistakes table "
                                        f"{getattr(table, '__name__', table)!r} raised "
                                        f"{type(err).__name__}: {err}") from err
        for name, vals in out:
            unknown = sorted(map(str, set(vals) - set(names)))
            if unknown:
                raise HomeworkError(f"{where}: the mistake {name!r} gives {', '.join(unknown)}, "
                                    f"which is not one of the outputs ({', '.join(names)})")
        if out and isinstance(self.scorer, Custom):
            raise HomeworkError(f"{self.name}: its mistakes are never named: a Custom scorer "
                                "gets no catalogued mistakes (name them in its own lines)")
        case._wrong = out
        return out

    @property
    def mistake_names(self) -> list[str]:
        return [n for n, _ in self._mistakes]

    def weights(self) -> list[float]:
        return [c.weight for c in self._cases]

    def stub(self) -> str:
        """The student's stub: the signature, the docstring, ``raise NotImplementedError``."""
        parts = []
        for f in self.functions:
            doc = inspect.getdoc(f) or ""
            body = '    """' + doc.replace("\n", "\n    ").replace("\n    \n", "\n\n") + '\n    """\n'
            parts.append(f"def {f.__name__}{inspect.signature(f)}:\n{body}"
                         "    raise NotImplementedError\n")
        return "\n\n".join(parts)


# ------------------------------------------------------------------ scorers


class Outputs(tuple):
    """The reference's outputs on a case: a tuple in the order of ``returns``
    (``want[0]``) that also takes an output's name, as ``got`` does (``want["dW"]``;
    a list output by its name without ``[]``)."""

    def __new__(cls, values, names):
        out = super().__new__(cls, values)
        out.names = tuple(names)
        return out

    def __getnewargs__(self):  # pickled with its names (grade-batch's processes)
        return tuple(self), self.names

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"no output named {key!r}; the outputs are "
                               f"{', '.join(self.names)} (returns=)")
            key = self.names.index(key)
        return tuple.__getitem__(self, key)


def _output_names(returns):
    return [(n[:-2], "list") if n.endswith("[]") else (n, "value") for n in returns]


def _tuple_problem(meta, names, lone_list=False) -> str | None:
    """What is wrong with the returned tuple's shape, or ``None``.  ``lone_list``: the one
    output is a list (``returns=["acts[]"]``), which must come back as ``(acts,)``."""
    res = meta.get("result")
    if res is None:
        return "nothing came back"
    if res.get("type") not in ("tuple", "list"):
        return f"expected a tuple ({', '.join(names)}), got {res.get('type')}"
    if res.get("length") != len(names):
        if lone_list and res.get("type") == "list":
            return (f"expected a tuple of 1 value ({names[0]}), got a list of "
                    f"{res.get('length')}: return ({names[0]},), the list inside a tuple")
        return (f"expected a tuple of {len(names)} value{'s' * (len(names) != 1)} "
                f"({', '.join(names)}), got {res.get('length')}")
    return None


def _check_finite_reference(where, outputs, want):
    """A reference output of floats with NaN or inf is the homework's error: an answer that
    holds NaN or inf fails (:func:`bpcheck.grade.compare.check_value`), and a finite one
    is infinitely far from it, so no answer could pass the case (an unstable reference,
    ``-np.log(p)`` with ``p`` underflowing to 0 on a large-scores case, say)."""
    for (name, kind), value in zip(outputs, want):
        for label, entry in ([(name, value)] if kind == "value" else
                             [(f"{name}[{j}]", v) for j, v in enumerate(value)]):
            try:
                array = np.asarray(entry)
            except Exception:  # noqa: BLE001 - not an array: the scorer says what it is
                continue
            if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
                bad = int(array.size - np.count_nonzero(np.isfinite(array)))
                raise HomeworkError(
                    f"{where}: the reference's {label} holds NaN or inf ({bad} of "
                    f"{array.size} entries), which no answer can match (an answer with NaN "
                    "or inf fails, and a finite one is infinitely far from it): compute it "
                    "stably, or change the case")


class RelativeError:
    """Each output compared with the reference by the CS231n relative error.

    ``tol``: float64 answers pass at or below it; ``float32_tol``: float32 answers pass at
    or below it (an entry under 1% of the output's largest counts relative to that 1%, as
    float32 rounds relative to the terms summed), unless ``float64=True`` demands float64.
    ``weights``: per output name (default 1 each); a list output shares its weight among
    its arrays.  ``unstable``:
    ``unstable(case)`` says whether to hint, when an output is NaN or inf, that the softmax
    overflows.  ``lists``: per list output, what its length is, for the feedback
    (``"L+1 = {n} arrays"``, ``{n}`` the expected length).  An output whose reference is
    an integer or boolean array (indices, counts, a mask) must come back in the reference's
    dtype and equal it entry for entry; no tolerance applies to it.
    """

    kind = "call"

    def __init__(self, tol: float = 1e-6, *, float32_tol: float = 1e-4, float64: bool = False,
                 weights: dict | None = None, unstable: Callable | None = None,
                 lists: dict | None = None):
        self.tol = _finite("RelativeError tol", tol, strict=True)
        self.float32_tol = _finite("RelativeError float32_tol", float32_tol, strict=True)
        self.float64 = bool(float64)
        self.weights = {k: _finite(f"RelativeError weights[{k!r}]", v)
                        for k, v in (weights or {}).items()}
        self.unstable = unstable
        self.lists = dict(lists or {})

    def _check(self, name, meta, array, want, mistakes, case, scalar) -> Verdict:
        accept32 = (not self.float64 and type(array) is np.ndarray and array.dtype == np.float32
                    and np.asarray(want).dtype.kind == "f")
        tol = self.float32_tol if accept32 else self.tol
        floor = 1e-8
        if accept32:
            array = array.astype(np.float64)
            # float32's rounding is relative to the terms summed, not to the entry: an entry
            # near 0 of a correct float32 gradient was off by 3e-4 relative to itself (the
            # wide case failed on 5 seeds of 6); entries are compared at least at 1% of the
            # array's largest
            scale = np.abs(np.asarray(want, dtype=np.float64))
            floor = max(floor, 1e-2 * float(scale.max())) if scale.size and \
                np.isfinite(scale).all() else floor
        hint = bool(self.unstable and self.unstable(case))
        v = check_value(name, meta, array, want, tol, mistakes=mistakes, unstable_hint=hint,
                        scalar=scalar, floor=floor)
        if accept32 and v.message.endswith(")") and v.ok:
            v.message = v.message[:-1] + ", float32)"
        return v

    def score(self, exercise: Exercise, case: Case, meta: dict, arrays: dict) -> Scored:
        outputs = _output_names(exercise.returns)
        names = [n for n, _ in outputs]
        problem = _tuple_problem(meta, names, [k for _, k in outputs] == ["list"])
        if problem is not None and "got" in problem and "tuple of" not in problem:
            return Scored(0.0, [problem])
        want = exercise.expected(case)
        wrong = _by_consistency(exercise.wrong_answers(case), arrays, self.tol)
        lines = [problem] if problem else []
        total = got = 0.0
        bad: list[Verdict] = []
        for (name, kind), w in zip(outputs, want):
            weight = self.weights.get(name, 1.0)
            total += weight
            if kind == "value":
                cands = [(msg, vals[name]) for msg, vals in wrong if name in vals]
                v = self._check(name, meta.get(name), arrays.get(name), w, cands, case,
                                np.ndim(w) == 0)
                got += weight * v.ok
                lines.append(v.message)
                continue
            m = meta.get(name)
            n = len(w)
            what = self.lists.get(name, "{n} arrays").format(n=n)
            if m is None or m.get("type") != "list":
                lines.append(f"{name}: expected a list of {what}, got "
                             f"{'nothing' if m is None else m.get('type')}")
                continue
            if m.get("length") != n:
                lines.append(f"{name}: expected a list of {what}, got {m.get('length')}")
            verdicts = []
            for j, wj in enumerate(w):
                cands = [(msg, vals[name][j]) for msg, vals in wrong
                         if name in vals and j < len(vals[name])]
                verdicts.append(self._check(f"{name}[{j}]", meta.get(f"{name}/{j}"),
                                            arrays.get(f"{name}/{j}"), wj, cands, case, False))
            got += weight * sum(v.ok for v in verdicts) / max(n, 1)
            bad += [v for v in verdicts if not v.ok]
            if all(v.ok for v in verdicts):
                lines.append(f"{name}: all {n} arrays ok (largest relative error "
                             f"{max((v.error for v in verdicts), default=0.0):.1e})")
        lines += _grouped(bad)
        return Scored(got / total if total else 0.0, lines)


def _by_consistency(mistakes, arrays, tol):
    """Mistakes ordered by how many of the outputs they change match what came back, so
    that the diagnosis that explains the most outputs is named first."""
    def matched(vals):
        hits = 0
        for name, value in vals.items():
            got = arrays.get(name)
            if isinstance(value, list):
                continue
            if type(got) is np.ndarray and got.dtype.kind == "f" and got.size == np.size(value):
                hits += rel_error(got.reshape(np.shape(value)), value) <= max(tol, 1e-4)
        return hits / max(len(vals), 1)

    return sorted(mistakes, key=lambda m: -matched(m[1]))


def _grouped(bad: list[Verdict], most: int = 8) -> list[str]:
    """One line per distinct diagnosis: ``Us[0], Us[1]: wrong; likely mistake: ...``."""
    groups: dict[str, list[str]] = {}
    for v in bad:  # (by the verdict's own mistake: a message may quote the submission, which
        # can write "likely mistake: " into it, as a type's name)
        if v.mistake is None:
            groups[v.message] = []
        else:
            groups.setdefault("likely mistake: " + v.mistake, []).append(v.name)
    lines = [f"{', '.join(names)}: wrong; {key}" if names else key
             for key, names in groups.items()]
    if len(lines) > most:
        lines = lines[:most] + [f"... and {len(lines) - most} more wrong arrays"]
    return lines


class ScorerError(Exception):
    """An instructor's :class:`Custom` scorer raised: the test scores 0 with this message,
    which says the fault is the homework's."""


class Custom:
    """A scorer written by the instructor: ``fn(got, want, case) -> fraction`` or
    ``(fraction, [lines])``.  ``got``: ``{output: ndarray}`` as returned (plain arrays;
    lists as lists of arrays; ``None`` where nothing usable came back).  ``want``: the
    reference's outputs on the case, a tuple in the order of ``returns`` (``want[0]`` is
    the first output) that also takes the names ``got`` has (``want["dW"]``,
    :class:`Outputs`).  ``case``: its ``args``, ``label`` and
    ``number``.  An exception in ``fn`` scores the test 0 with a note that the homework's
    scorer failed (not the student's answer).  The ``lines`` go to the report and, for a
    visible test, to the students; for a test that is not visible ``results.json`` keeps
    only those in the form of the grader's own lines and leaves the others out (bpcheck
    cannot tell whether a line quotes the submission, which may have written that test's
    inputs into what it returned; see :func:`bpcheck.grade.results.public_line`)."""

    kind = "call"

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise HomeworkError(f"Custom({fn!r}): expected a function (got, want, case)")
        self.fn = fn

    def score(self, exercise: Exercise, case: Case, meta: dict, arrays: dict) -> Scored:
        got: dict[str, Any] = {}
        for name, kind in _output_names(exercise.returns):
            if kind == "list":
                m = meta.get(name) or {}
                n = m.get("length") if isinstance(m.get("length"), int) else 0
                got[name] = [arrays.get(f"{name}/{j}") for j in range(min(n, 64))]
            else:
                got[name] = arrays.get(name)
        try:
            out = self.fn(got, exercise.expected(case), case)
            fraction, lines = (out, []) if not isinstance(out, tuple) else out
            fraction = float(fraction)
        except HomeworkError:
            raise
        except Exception as err:  # noqa: BLE001 - the instructor's scorer, named as such
            raise ScorerError(f"the homework's scorer raised {type(err).__name__}: {err} "
                              f"(a fault of the homework, not a verdict on this answer; "
                              f"tell the instructor)") from err
        if not math.isfinite(fraction):
            fraction = 0.0
        return Scored(min(1.0, max(0.0, fraction)), [str(x) for x in lines])


class RuleCheck:
    """Symbolic backprop rules ``v_rule(V_next, B_next, D)`` and ``u_rule(V, a_prev)``,
    proved or refuted for the case's ``widths`` by :func:`bpcheck.symbolic.check_recursion`.

    Each rule is scored on its own (half of the case each), with the lecture's rule
    standing in for the other; a rule equal to a catalogued wrong rule (the exercise's
    mistakes, as ``{"v_rule": f}`` / ``{"u_rule": g}``, keyed by the student functions'
    names) is told the mistake's name and a one-entry counterexample.

    Declared as the lecture's exercise 4 is (``bpcheck.grade.lecture``)::

        @hw.exercise(points=25, functions=[v_rule, u_rule], score=RuleCheck())
        def rules(widths):                      # the reference: the right rules
            return {"v_rule": v_rule, "u_rule": u_rule}

        rules.case("non-square", lambda rng: {"widths": (3, 4, 2)})

    ``functions``: the two student functions, ``v_rule(V_next, B_next, D)`` and
    ``u_rule(V, a_prev)`` (SymPy matrices in, a SymPy matrix out, entries polynomial in
    the inputs' entries), their stubs and docstrings the template's; each case gives
    ``widths``, the network's ``d_0, ..., d_(L+1)``, for which both rules are checked
    against the recursion.  The homework must ``allow`` SymPy for the submission to
    import it (the lecture's homework does).
    """

    kind = "rules"

    def score(self, exercise: Exercise, case: Case, meta: dict, arrays: dict) -> Scored:
        from . import rules

        return rules.score(exercise, case, meta, arrays)


def mistake_scores(exercise: Exercise, seed: int = 0) -> dict[str, list[float]]:
    """What each catalogued mistake of ``exercise`` scores on each of its cases (drawn with
    ``seed``), as fractions of the cases in order: the exercise's own scorer run on an
    answer that is the reference's outputs with the mistake's in their place.  An
    instructor's check that every mistake loses points where it should (a mistake that
    scores 1.0 on a case costs a student nothing there; the case's ``misses`` should name
    it)::

        scores = mistake_scores(hw.exercises[0], seed=1)
        for case, fractions in zip(hw.exercises[0].draw(1), zip(*scores.values())):
            ...

    For exercises scored by :class:`RelativeError` (a :class:`Custom` scorer takes no
    mistakes; :class:`RuleCheck` names a mistake only for a rule that is refuted)."""
    if not isinstance(exercise.scorer, RelativeError):
        raise HomeworkError(f"{exercise.name}: mistake_scores needs an exercise scored by "
                            f"RelativeError, not {type(exercise.scorer).__name__}")
    outputs = _output_names(exercise.returns)
    scores: dict[str, list[float]] = {}
    for case in exercise.draw(seed):
        want = exercise.expected(case)
        for name, vals in exercise.wrong_answers(case):
            answer = [vals.get(out, w) for (out, _), w in zip(outputs, want)]
            meta, arrays = _as_returned(outputs, answer)
            fraction = exercise.scorer.score(exercise, case, meta, arrays).fraction
            scores.setdefault(name, []).append(fraction)
    return scores


def free_mistakes(hw: Homework, seed: int = 0) -> list[str]:
    """Lines for the catalogued mistakes that score full marks on a case whose ``misses``
    does not name them (drawn with ``seed``; exercises scored by :class:`RelativeError`):
    a student who makes one loses nothing there, and the instructor likely meant the case
    to catch it.  ``bpcheck gradescope-zip`` prints them as warnings."""
    lines = []
    for ex in hw.exercises:
        if not isinstance(ex.scorer, RelativeError):
            continue
        for name, fractions in mistake_scores(ex, seed).items():
            free = [case.number for case, fraction in zip(ex.draw(seed), fractions)
                    if fraction >= 1.0 and name not in case.misses]
            if free:
                lines.append(f"{ex.name}: the mistake {name!r} scores full marks on case"
                             f"{'s' * (len(free) > 1)} {', '.join(free)} (seed {seed}); name "
                             f"it in the case's misses= if no case can tell it, or change the "
                             f"case")
    return lines


def _as_returned(outputs, answer):
    """``(meta, arrays)`` as the child sends them for an answer of these values."""
    meta: dict = {"result": {"type": "tuple", "length": len(answer)}}
    arrays: dict = {}

    def pack(key, value):
        if type(value) is float or isinstance(value, np.float64):
            meta[key] = {"type": "float" if type(value) is float else "numpy.float64"}
            arrays[key] = np.array(float(value))
        else:
            value = np.asarray(value)
            meta[key] = {"type": "ndarray", "dtype": str(value.dtype), "shape": list(value.shape)}
            arrays[key] = value

    for (name, kind), value in zip(outputs, answer):
        if kind == "list":
            meta[name] = {"type": "list", "length": len(value)}
            for j, part in enumerate(value):
                pack(f"{name}/{j}", part)
        else:
            pack(name, value)
    return meta, arrays


# ------------------------------------------------------------------ the homework


class Homework:
    """A set of exercises and the rules for the submissions that answer them.

    ``allow``: top-level modules the submission may import besides the standard library
    (default NumPy only); ``forbid``: modules refused even so (default: autodiff libraries,
    except those allowed; bpcheck always).  ``submission``: the file name to grade in an
    upload of several files (``"hw.ipynb"``); ``intro``: the template's docstring.
    """

    def __init__(self, title: str, *, allow=("numpy",), forbid=None,
                 submission: str | None = None, intro: str = ""):
        self.title = title
        self.allow = tuple(allow)
        bad = [m for m in self.allow if m.partition(".")[0] in ALWAYS_FORBIDDEN]
        if bad:
            raise HomeworkError(f"allow = {list(self.allow)!r}: {', '.join(bad)} cannot be allowed")
        forbid = AUTODIFF if forbid is None else tuple(forbid)
        self.forbid = ALWAYS_FORBIDDEN + tuple(m for m in forbid if m not in self.allow
                                               and m not in ALWAYS_FORBIDDEN)
        self.submission = submission
        self.intro = intro
        self.exercises: list[Exercise] = []
        self.path: str | None = None

    def exercise(self, *, points: float, returns=(), score=None, title: str | None = None,
                 functions=None, driver: str | None = None) -> Callable[[Callable], Exercise]:
        """Decorator: the function is the reference; returns the :class:`Exercise`.

        ``functions``: the student functions when they are not the reference's own name and
        signature (the symbolic exercise: ``[v_rule, u_rule]``).  ``driver``: Python source,
        sent to the sandbox, defining ``drive(submission, **args)`` that calls the
        student's code and returns the outputs as NumPy arrays (for a PyTorch homework);
        never the reference.
        """
        def make(reference):
            ex = Exercise(reference, number=len(self.exercises) + 1, points=points,
                          returns=returns, score=score, title=title, functions=functions,
                          driver=driver)
            if ex.name in [e.name for e in self.exercises]:
                raise HomeworkError(f"two exercises are named {ex.name}")
            self.exercises.append(ex)
            return ex
        return make

    def by_name(self, name: str) -> Exercise:
        for ex in self.exercises:
            if ex.name == name:
                return ex
        raise KeyError(name)

    def function_owner(self) -> dict[str, list[int]]:
        """Student function name -> the numbers of the exercises that call it."""
        out: dict[str, list[int]] = {}
        for ex in self.exercises:
            for f in ex.student_functions:
                out.setdefault(f, []).append(ex.number)
        return out

    def _template_head(self) -> tuple[str, str]:
        """The template's intro and its import lines: numpy, and an autodiff library the
        homework allows (torch: the exercise is about it)."""
        intro = self.intro or f"{self.title}.\n\nFill in the functions below; keep their names " \
            "and signatures (the autograder calls them)."
        imports = "".join("import numpy as np\n" if m == "numpy" else f"import {m}\n"
                          for m in self.allow if m == "numpy" or m.partition(".")[0] in AUTODIFF)
        return intro, imports

    def template(self) -> str:
        """The student's file: the intro, the imports, one stub per student function."""
        intro, imports = self._template_head()
        head = '"""' + intro.strip() + '\n"""\n\n' + imports
        return head + "\n\n" + "\n\n".join(ex.stub() for ex in self.exercises)

    def notebook_template(self) -> str:
        """:meth:`template` as a Jupyter notebook (its JSON text): the intro as a markdown
        cell, the imports, then one code cell per exercise, under a markdown cell with its
        title."""
        import nbformat

        intro, imports = self._template_head()
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        cells = [nbformat.v4.new_markdown_cell(intro.strip())]
        if imports:
            cells.append(nbformat.v4.new_code_cell(imports.rstrip("\n")))
        for ex in self.exercises:
            cells.append(nbformat.v4.new_markdown_cell(f"## Exercise {ex.number}: {ex.title}"))
            cells.append(nbformat.v4.new_code_cell(ex.stub().strip("\n")))
        nb.cells = cells
        return nbformat.writes(nb)


def load_homework(path) -> Homework:
    """The :class:`Homework` defined in the module at ``path`` (exactly one)."""
    p = Path(path)
    if not p.is_file():
        raise HomeworkError(f"--homework {path}: no such file")
    name = f"_bpcheck_homework_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except HomeworkError as err:
        raise HomeworkError(f"--homework {path}: {err}") from None
    except ModuleNotFoundError as err:
        raise HomeworkError(
            f"--homework {path}: importing it failed ({err}); a homework is one Python file "
            f"(grade-batch and the Gradescope zip take that file alone), so put the helpers "
            f"it imports into it") from None
    except Exception as err:  # noqa: BLE001 - the instructor's module, named
        raise HomeworkError(f"--homework {path}: running it raised {type(err).__name__}: "
                            f"{err}") from err
    found = [v for v in vars(module).values() if isinstance(v, Homework)]
    if len(found) != 1:
        raise HomeworkError(f"--homework {path}: expected one Homework(...) in the module, "
                            f"found {len(found)}")
    hw = found[0]
    if not hw.exercises:
        raise HomeworkError(f"--homework {path}: the homework declares no exercise")
    for ex in hw.exercises:
        if not ex._cases:
            raise HomeworkError(f"--homework {path}: exercise {ex.name} has no case")
    hw.path = str(p.resolve())
    return hw


def lecture() -> Homework:
    """The lecture's homework (:mod:`bpcheck.grade.lecture`)."""
    from .lecture import hw

    return hw


__all__ = ["AUTODIFF", "Case", "Custom", "Exercise", "Homework", "HomeworkError",
           "RelativeError", "RuleCheck", "Scored", "load_homework"]
