"""Comparing a returned output with the reference, and naming the likely mistake.

The measure is the CS231n relative error ``max |a - r| / max(1e-8, |a| + |r|)`` (the
assignments' ``rel_error``): about 1e-7 or less for correct float64 code, above 1e-2
for wrong code.  Everything here runs in the grader's process, on arrays that were
loaded with ``allow_pickle=False`` and whose exact type, dtype and shape are checked
first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOAT = np.dtype(np.float64)


def rel_error(got, want, floor: float = 1e-8) -> float:
    """CS231n relative error, the maximum over entries; ``inf`` on a shape mismatch.
    ``floor``: the least denominator ``|got| + |want|`` an entry is divided by."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    if got.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - want) / np.maximum(floor, np.abs(got) + np.abs(want))
    value = float(np.max(err))
    return value if np.isfinite(value) else float("inf")


@dataclass
class Verdict:
    """The verdict on one output: ``ok``, the relative error, and a message for the student."""

    name: str
    ok: bool
    message: str
    error: float = float("inf")
    mistake: str | None = None
    """The instructor's description of the mistake the answer matches, if any."""


def _shape(s) -> str:
    return "(" + ", ".join(str(int(n)) for n in s) + ("," if len(s) == 1 else "") + ")"


def _same_nonfinite(array, value, tol) -> bool:
    """``array`` (with NaN or inf) is ``value``: NaN and each inf (with its sign) in the same
    places, and the finite entries within ``tol``."""
    if value.shape != array.shape:
        return False
    finite = np.isfinite(array)
    if not (np.array_equal(finite, np.isfinite(value))
            and np.array_equal(np.isnan(array), np.isnan(value))
            and np.array_equal(array[np.isinf(array)], value[np.isinf(value)])):
        return False
    return not finite.any() or rel_error(array[finite], value[finite]) <= tol


def check_value(name, meta, array, want, tol, *, mistakes=(), unstable_hint=False,
                scalar=False, floor: float = 1e-8) -> Verdict:
    """Check one returned output against ``want``.

    ``meta``: the child's description of the value (``type``, ``dtype``, ``shape``),
    never trusted alone: the array itself is re-checked.  ``array``: the loaded array or
    ``None``.  ``mistakes``: ``[(message, value)]`` that a known mistake would give.
    ``scalar``: the output is a number (``float``, ``numpy.float64``, ``numpy.float32`` or a
    0-d array).
    ``floor``: the relative error's least denominator (:func:`rel_error`).
    """
    if meta is None:
        return Verdict(name, False, f"{name}: missing from the returned value")
    kind = meta.get("type")
    if scalar:
        if kind not in ("float", "numpy.float64", "numpy.float32", "ndarray"):
            return Verdict(name, False, f"{name}: expected a float (a Python float, "
                           f"numpy.float64 or numpy.float32), got {kind}")
    elif kind != "ndarray":
        return Verdict(name, False, f"{name}: expected a numpy.ndarray, got {kind}"
                       + (", a subclass of numpy.ndarray (return a plain ndarray)"
                          if meta.get("subclass") else ""))
    if type(array) is not np.ndarray:
        return Verdict(name, False, f"{name}: no array came back (type {kind})")
    exact = np.asarray(want).dtype
    exact = exact if exact.kind in "iub" and not scalar else None  # indices, counts, masks
    if exact is not None and array.dtype != exact:
        return Verdict(name, False, f"{name}: expected dtype {exact} (the reference's), got "
                       f"{array.dtype}")
    if exact is None and array.dtype != FLOAT:
        return Verdict(name, False, f"{name}: expected dtype float64 (the inputs' dtype), got "
                       f"{array.dtype}" + (" (do not cast the result)" if array.dtype.kind in "fiub"
                                            else ""))
    if exact is not None:  # compared entry for entry: no tolerance
        tol = 0.0
        if array.shape == np.shape(want) and np.array_equal(array, want):
            return Verdict(name, True, f"{name}: ok (relative error 0.0e+00)", 0.0)
        array = array.astype(np.float64)
    want = np.asarray(want, dtype=np.float64)
    if scalar and array.shape in ((), (1,)):
        array = array.reshape(())
    if array.shape != want.shape:
        msg = f"{name}: expected shape {_shape(want.shape)}, got {_shape(array.shape)}"
        if array.ndim == 2 and array.shape == want.shape[::-1] and want.ndim == 2:
            msg += " (transposed)"
        elif array.size == want.size and array.ndim != want.ndim:
            msg += (" (same entries, wrong number of axes: drop keepdims=True or reshape)"
                    if 1 in array.shape else " (same number of entries, wrong layout)")
        return Verdict(name, False, msg)
    if not np.all(np.isfinite(array)):
        msg = f"{name}: contains NaN or inf"
        for message, value in mistakes:  # a mistake that overflows the same way
            if _same_nonfinite(array, np.asarray(value, dtype=np.float64), tol):
                return Verdict(name, False, f"{msg}; likely mistake: {message}",
                               mistake=message)
        if unstable_hint:
            msg += (" - the softmax overflows on large scores; subtract each row's maximum "
                    "before np.exp")
        return Verdict(name, False, msg)
    err = rel_error(array, want, floor)
    if err <= tol and exact is None:
        return Verdict(name, True, f"{name}: ok (relative error {err:.1e})", err)
    if want.ndim == 2 and want.shape[0] == want.shape[1] and \
            rel_error(array, want.T, floor) <= tol:
        return Verdict(name, False, f"{name}: transposed", err)
    for message, value in mistakes:
        value = np.asarray(value, dtype=np.float64)
        if value.shape == want.shape and rel_error(value, want, floor) > tol \
                and rel_error(array, value, floor) <= tol:
            return Verdict(name, False, f"{name}: wrong (relative error {err:.1e}); likely "
                           f"mistake: {message}", err, mistake=message)
    # near the tolerance: rounding, a float32 step; far beyond it (an off-by-one at 5.7e-3
    # was called "too inaccurate"): a mistake
    grade = "probably wrong" if err > 100 * tol else "too inaccurate"
    return Verdict(name, False, f"{name}: wrong (relative error {err:.1e}, {grade})", err)
