"""Input checking and backend choice shared by every numeric entry point.

A call is served by NumPy when every array it receives is a NumPy array (or a
nested list of numbers), and by JAX as soon as one of them is a JAX array or a
tracer; the result then comes back in the same library.  Shapes are checked
always (they are static under ``jax.jit``); NaN and inf are checked only for
concrete arrays.
"""

from __future__ import annotations

import contextvars
import math
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


_JAX: list = []  # [jax] once the caller has imported it (a module never leaves sys.modules)


def _jax():
    """The ``jax`` module if the caller has imported it, else ``None``.

    A JAX array or tracer can only exist once ``jax`` is imported, so NumPy-only use
    (``bpcheck verify --quick``'s symbolic part, the grader) never pays for importing it.
    """
    if _JAX:
        return _JAX[0]
    jax = sys.modules.get("jax")
    if jax is not None and hasattr(jax, "Array"):
        _JAX.append(jax)
        return jax
    return None


_ARRAY_TYPES: set = set()  # types seen to be jax.Array (concrete arrays and tracers)
_TRACER_TYPES: set = set()  # types seen to be jax.core.Tracer


def is_jax(x: Any) -> bool:
    """True for a JAX array or a tracer (inside ``jit``/``vmap``/``grad``)."""
    t = type(x)
    if t is np.ndarray:
        return False
    if t in _ARRAY_TYPES:  # isinstance against jax.Array costs more than the rest of a check
        return True
    jax = _jax()
    if jax is not None and isinstance(x, jax.Array):
        _ARRAY_TYPES.add(t)
        return True
    return False


RECORDING: contextvars.ContextVar = contextvars.ContextVar("bpcheck_recording", default=None)
"""The notes of a call that :func:`bpcheck._compiled.replayed` records: its kernel runs,
and the batch axes added to and taken from arrays (:class:`Reshaped`)."""


class Reshaped(NamedTuple):
    """A note for :data:`RECORDING`: ``result`` is ``source`` with a batch axis added
    (``axis`` ``None``) or with entry 0 of ``axis`` taken."""

    source: Any
    result: Any
    axis: int | None


class Derived(NamedTuple):
    """A note for :data:`RECORDING`: ``result`` is ``make(source)``, by a function that
    depends on nothing but the call's signature (a vector with zeros put in for the biases
    a network lacks, say); ``source`` ``None``: ``result`` is a constant of the signature
    (the zero bias of a layer without one), used again as it is."""

    source: Any
    result: Any
    make: Any


def derived(source: Any, result: Any, make: Any) -> Any:
    """``result``, noted as :class:`Derived` for a call that :data:`RECORDING` records."""
    notes = RECORDING.get()
    if notes is not None:
        notes.append(Derived(source, result, make))
    return result


_ZERO_BIASES: dict = {}


def zero_bias(d: int, dtype: Any, xp) -> Any:
    """The zeros ``(d,)`` that stand for the bias of a layer without one, the same array on
    every call with this ``d`` and ``dtype`` (read-only for NumPy), so that a repeat call
    can run its kernel on it again (:class:`Derived`)."""
    key = (d, np.dtype(dtype), xp is np)
    z = _ZERO_BIASES.get(key)
    if z is None:
        z = xp.zeros((d,), dtype=dtype)
        if xp is np:
            z.flags.writeable = False
        elif is_tracer(z) or z.dtype != dtype:  # made inside an outer jax.jit's trace (that
            return z  # trace's own), or float32 for float64 with JAX's 64-bit mode off
        if len(_ZERO_BIASES) >= 256:
            _ZERO_BIASES.clear()
        _ZERO_BIASES[key] = z
    return derived(None, z, None)


def with_batch_axis(x):
    """``x[None]``, a leading axis of 1 (a single example made a batch): a view of a NumPy
    array; for JAX ``lax.broadcast_in_dim``, one operation where eager indexing dispatches
    several (measured on the CPU: 27 against 78 microseconds)."""
    if type(x) is np.ndarray:
        out = x[None]
    else:
        from jax import lax

        out = lax.broadcast_in_dim(x, (1, *x.shape), tuple(range(1, x.ndim + 1)))
    notes = RECORDING.get()
    if notes is not None:
        notes.append(Reshaped(x, out, None))
    return out


def is_tracer(x: Any) -> bool:
    t = type(x)
    if t is np.ndarray:
        return False
    if t in _TRACER_TYPES:
        return True
    jax = _jax()
    if jax is not None and isinstance(x, jax.core.Tracer):
        _TRACER_TYPES.add(t)
        return True
    return False


def backend(*arrays: Any):
    """``jax.numpy`` if any argument is a JAX array, else ``np``."""
    if any(type(a) is not np.ndarray and is_jax(a) for a in arrays):
        import jax.numpy as jnp

        return jnp
    return np


def _check_dtype(name: str, x: Any) -> None:
    dtype = x.dtype if isinstance(x.dtype, np.dtype) else np.dtype(x.dtype)
    if dtype.kind in "fiub":  # the common case, checked first
        return
    if dtype.name == "bfloat16":
        raise TypeError(f"{name}: bfloat16 is not supported; use float16, float32 or float64")
    if dtype.kind not in "fiub":
        raise TypeError(
            f"{name}: expected a real numeric array (float, int or bool), "
            f"got dtype {dtype}"
        )


def as_array(name: str, x: Any, xp) -> Any:
    """Convert ``x`` to an array of ``xp`` without copying JAX arrays; check its dtype."""
    if type(x) is np.ndarray:  # the common cases first
        if x.dtype.kind not in "fiub":
            _check_dtype(name, x)
        if not x.dtype.isnative:  # big-endian on a little-endian machine, or the reverse:
            x = x.astype(x.dtype.newbyteorder("="))  # NumPy's out= and JAX take neither
        return x if xp is np else xp.asarray(x)
    if is_jax(x):
        _check_dtype(name, x)
        return x
    if isinstance(x, np.ndarray):  # a subclass: np.matrix, a masked array, a memmap
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(f"{name}: a masked array, whose mask bpcheck would drop; pass "
                            f"{name}.filled(value) or {name}.data")
        x = np.asarray(x)  # (a matrix's products and reductions are not an ndarray's)
        _check_dtype(name, x)
        return x if xp is np else xp.asarray(x)
    if is_torch(x):
        x = torch_values(name, x)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array of numbers, got {type(x).__name__}") from err
    if arr.dtype == object:
        raise TypeError(f"{name}: expected an array of numbers, got {type(x).__name__} of objects")
    _check_dtype(name, arr)
    return arr if xp is np else xp.asarray(arr)


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, a subclass (``torch.nn.Parameter``) included;
    without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def torch_values(name: str, t: Any) -> np.ndarray:
    """A torch tensor's values as NumPy (detached, on the CPU, dtype kept; a view where
    torch allows one); bfloat16, sparse tensors and tensors on the meta device are named
    errors."""
    if str(t.dtype) == "torch.bfloat16":
        raise TypeError(f"{name}: bfloat16 is not supported; use float16, float32 or float64")
    if str(t.layout) != "torch.strided":
        raise TypeError(f"{name}: a torch tensor of layout {t.layout}; bpcheck takes dense "
                        f"tensors: pass {name}.to_dense()")
    if t.is_meta:
        raise ValueError(f"{name}: a tensor on the meta device, which holds no values; "
                         f"materialise it first (a model: model.to_empty(device='cpu'), then "
                         f"initialise or load its weights)")
    return t.detach().cpu().numpy()


def check_finite(name: str, x: Any) -> None:
    """Raise ``ValueError`` when a concrete array holds NaN or inf (skipped for tracers)."""
    if type(x) is np.ndarray:  # the common case first: no JAX lookups
        _check_numpy_finite([(name, x)])
        return
    if is_tracer(x):
        return
    if np.dtype(x.dtype).kind in "iub":
        return
    if is_jax(x):
        import jax.numpy as jnp

        ok = jnp.all(jnp.isfinite(x))
        if is_tracer(ok):  # inside an outer jit's trace
            check_on_host([(name, x)])
            return
        ok = bool(ok)
    else:
        ok = bool(np.isfinite(x).all())
    if not ok:
        raise ValueError(f"{name}: contains NaN or inf; expected finite values")


def finite_flags(arrays, xp):
    """One flag per array: all its entries finite (traceable; a compiled program's output).

    ``isfinite(sum(x * 0))``: ``x * 0`` is NaN exactly where ``x`` is NaN or inf, and a
    float sum is a vectorised reduction where XLA's boolean ``all`` on the CPU is not
    (measured 0.28 against 1.09 ms for 1.9 million float32 entries).
    """
    return (xp.stack([xp.isfinite(xp.sum(x * 0)) for x in arrays]) if arrays
            else xp.ones(0, bool))


def raise_unless_finite(named: Sequence[tuple[str, Any]], flags: Any) -> None:
    """The error of :func:`check_finite` for the first of ``named`` whose flag is false."""
    flags = np.asarray(flags)
    if not flags.all():
        name = named[int(np.argmin(flags))][0]
        raise ValueError(f"{name}: contains NaN or inf; expected finite values")


def split_finite_checks(named: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Check the NumPy arrays of ``named`` for NaN and inf now; return the concrete JAX
    floating arrays, whose flags a compiled program computes (:func:`finite_flags`) and
    :func:`raise_unless_finite` reads back once.  Tracers and integer arrays are skipped."""
    device, host = [], []
    for name, x in named:
        if type(x) is np.ndarray:
            host.append((name, x))
            continue
        if x is None or is_tracer(x) or np.dtype(x.dtype).kind in "iub":
            continue
        if is_jax(x):
            device.append((name, x))
        else:
            check_finite(name, x)
    _check_numpy_finite(host)
    return device


def _check_numpy_finite(named: Sequence[tuple[str, np.ndarray]]) -> None:
    """:func:`check_finite` for NumPy arrays, all under one ``errstate``.

    A finite sum means finite entries (NaN and inf propagate); only an overflowing sum
    needs the elementwise test, which allocates a mask as large as the array.  Large
    contiguous float32/float64 arrays are summed as ``x . x`` by BLAS (NaN and inf
    propagate there too): 0.16 against 0.58 ms for 1.9 million float32 entries.
    """
    floats = [(name, x) for name, x in named if x.dtype.kind == "f"]
    if not floats:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        for name, x in floats:
            if not math.isfinite(finite_sum(x)) and not np.isfinite(x).all():
                raise ValueError(f"{name}: contains NaN or inf; expected finite values")


def finite_sum(x: np.ndarray):
    """A number that is finite when every entry of the floating array ``x`` is (NaN and
    inf propagate into it), and only then unless it overflows: ``x . x`` by BLAS for large
    contiguous float32/float64 arrays, else the sum (call it under
    ``np.errstate(over="ignore", invalid="ignore")``)."""
    if x.size >= _DOT_SIZE and x.dtype in _BLAS_FLOATS and x.flags.c_contiguous:
        flat = x.reshape(-1)
        return np.dot(flat, flat)
    return np.add.reduce(x, axis=None)


_DOT_SIZE = 1 << 14  # entries from which BLAS's dot beats NumPy's summation
_BLAS_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


_FINITE: dict = {}


def check_all_finite(named: Sequence[tuple[str, Any]]) -> None:
    """:func:`check_finite` for many ``(name, array)`` pairs in one pass: the concrete JAX
    arrays among them are reduced by one compiled program and read back once, instead of
    waiting on the device once per array."""
    device = split_finite_checks(named)
    if device:
        if "program" not in _FINITE:
            import jax
            import jax.numpy as jnp

            _FINITE["program"] = jax.jit(lambda xs: finite_flags(xs, jnp))
        flags = _FINITE["program"]([x for _, x in device])
        if is_tracer(flags):  # inside an outer jit's trace
            check_on_host(device)
            return
        raise_unless_finite(device, flags)


def check_on_host(named: Sequence[tuple[str, Any]]) -> None:
    """:func:`check_finite` for concrete JAX arrays, read back to the host: inside an outer
    ``jax.jit``'s trace any JAX operation on them, even a reduction, would be traced too."""
    _check_numpy_finite([(name, np.asarray(x)) for name, x in named])


def result_dtype(xp, arrays: Sequence[Any]):
    """Common floating dtype, by the backend's own promotion (JAX: float32 weights and integer
    inputs stay float32), and for integers alone float64 (NumPy) or JAX's default float."""
    dtype = np.dtype((np if xp is np else xp).result_type(*[a.dtype for a in arrays]))
    if dtype.kind != "f":
        dtype = np.dtype(np.float64) if xp is np else xp.zeros(()).dtype
    return dtype


_TRANSPOSED = (
    "; the weight looks stored (in, out), layout 'in_out', but params are in layout 'out_in', "
    "B^(l) of shape (d_l, d_(l-1)) used as x @ B.T + b: read (in, out) weights, used as "
    "x @ W + b (JAX, Flax), with bpcheck.network(layers, layout='in_out')"
)


def _pairs(params: Any) -> list:
    """``params`` checked to be a non-empty list of ``(B, b)`` pairs (their arrays unchecked)."""
    if type(params) is not list and type(params) is not tuple and (
            isinstance(params, (str, bytes)) or not isinstance(params, Sequence)):
        raise TypeError(
            "params: expected a list of (B, b) pairs, one per layer, "
            f"got {type(params).__name__}"
        )
    if len(params) == 0:
        raise ValueError("params: empty parameter list; expected at least one (B, b) pair")
    flat = []
    for l, pair in enumerate(params, start=1):
        if (type(pair) is tuple or type(pair) is list) and len(pair) == 2:  # the common case
            flat.append(tuple(pair))
            continue
        if not isinstance(pair, Sequence) or isinstance(pair, (str, bytes)) or len(pair) != 2:
            got = (f"an array of shape {tuple(pair.shape)}" if hasattr(pair, "shape")
                   else f"a {type(pair).__name__} of {len(pair)} item(s)"
                   if isinstance(pair, Sequence) else f"{type(pair).__name__} {pair!r:.60}")
            raise TypeError(f"params[{l - 1}] (layer {l}): expected a pair (B, b), got {got}")
        flat.append(tuple(pair))
    return flat


def _stored_in_out(params, l) -> bool:
    """Whether a bias of ``B^(l)``'s column count may mean the weights are stored
    ``(in, out)``: not past layer 1 (``B^(l)``'s columns matched the layer below, so it
    is the right way round), nor when the next weight's columns continue ``B^(1)``'s rows
    (``B^(1)`` is then the right way round too, and the bias is simply wrong)."""
    if l > 1:
        return False
    following = getattr(params[1][0], "shape", None) if len(params) > 1 else None
    rows, cols = params[0][0].shape
    return following is None or len(following) != 2 or following[1] != rows or \
        following[0] == cols


def check_params(params: Any, xp=None, *, finite: bool = True):
    """Validate ``[(B1, b1), ..., (B_{L+1}, b_{L+1})]``; return (params as arrays, widths, xp).

    ``B^(l)`` must have shape ``(d_l, d_{l-1})`` and ``b^(l)`` shape ``(d_l,)``.
    ``finite=False`` leaves the NaN/inf check to the caller (:func:`check_all_finite`).
    """
    params = _pairs(params)
    if xp is None:
        xp = backend(*[t for pair in params for t in pair])
    out = []
    widths: list[int] = []
    for l, (B, b) in enumerate(params, start=1):
        B = as_array(f"B^({l}) (params[{l - 1}][0])", B, xp)
        # a layer without a bias (b None): computed with zeros, its entries left out of
        # every result in beta order by the public functions (see bias_flags)
        b = (zero_bias(B.shape[0] if B.ndim == 2 else 0, B.dtype, xp) if b is None
             else as_array(f"b^({l}) (params[{l - 1}][1])", b, xp))
        if B.ndim != 2:
            raise ValueError(
                f"B^({l}) (params[{l - 1}][0]): expected a 2-d array (d_{l}, d_{l - 1}), "
                f"got shape {tuple(B.shape)}"
            )
        if l == 1:
            widths.append(int(B.shape[1]))
        elif B.shape[1] != widths[-1]:
            raise ValueError(
                f"B^({l}) (params[{l - 1}][0]): has {B.shape[1]} columns but layer {l - 1} has "
                f"width d_{l - 1} = {widths[-1]}; expected shape ({B.shape[0]}, {widths[-1]}), "
                f"got {tuple(B.shape)}" + (_TRANSPOSED if B.shape[0] == widths[-1] else "")
            )
        if 0 in B.shape:
            raise ValueError(
                f"B^({l}) (params[{l - 1}][0]): widths must be >= 1, got shape {tuple(B.shape)}"
            )
        widths.append(int(B.shape[0]))
        if b.shape != (B.shape[0],):
            raise ValueError(
                f"b^({l}) (params[{l - 1}][1]): expected shape ({B.shape[0]},) to match "
                f"B^({l}) of shape {tuple(B.shape)}, got {tuple(b.shape)}"
                + (_TRANSPOSED if b.shape == (B.shape[1],) and _stored_in_out(params, l)
                   else "")
            )
        out.append((B, b))
    if finite:
        check_all_finite(param_names(out))
    return out, widths, xp


def bias_flags(params: Any) -> tuple[bool, ...] | None:
    """Which layers of ``params`` (a ``(B, b)`` list) have a bias: ``None`` when all do (the
    common case: nothing to leave out), else one bool per layer, ``False`` where ``b`` is
    ``None`` (``torch.nn.Linear(bias=False)``, ``use_bias=False``).  Anything that is not a
    list of pairs gives ``None``: :func:`check_params` names what is wrong with it."""
    if type(params) is not list and type(params) is not tuple:
        return None
    flags = tuple(not (isinstance(pair, Sequence) and not isinstance(pair, (str, bytes))
                       and len(pair) == 2 and pair[1] is None)  # a pair as _pairs takes it
                  for pair in params)
    return None if all(flags) else flags


def param_names(params) -> list[tuple[str, Any]]:
    """``(name, array)`` for every ``B^(l)`` and ``b^(l)``, as the errors name them."""
    return [(f"{'Bb'[i]}^({l}) (params[{l - 1}][{i}])", t)
            for l, pair in enumerate(params, start=1) for i, t in enumerate(pair)]


def check_inputs(name: str, X: Any, d0: int, xp, *, finite: bool = True):
    """Validate ``X`` of shape ``(N, d_0)`` or ``(d_0,)``; return (X as 2-d, was_single)."""
    X = as_array(name, X, xp)
    if X.ndim not in (1, 2):
        raise ValueError(
            f"{name}: expected shape (N, {d0}) or ({d0},), got a {X.ndim}-d array of shape "
            f"{tuple(X.shape)}"
        )
    if X.shape[-1] != d0:
        raise ValueError(
            f"{name}: has {X.shape[-1]} features but B^(1) expects d_0 = {d0}; "
            f"expected shape (N, {d0}), got {tuple(X.shape)}"
        )
    if finite:
        check_finite(name, X)
    single = X.ndim == 1
    return (with_batch_axis(X) if single else X), single


def check_widths(widths: Any) -> list[int]:
    """Validate a width list ``[d_0, d_1, ..., d_{L+1}]`` (at least two entries, each >= 1)."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"widths: expected a list of ints [d_0, ..., d_(L+1)], got {widths!r}")
    if len(widths) < 2:
        raise ValueError(
            f"widths: expected at least two entries [d_0, ..., d_(L+1)], got {list(widths)!r}"
        )
    out = []
    for i, w in enumerate(widths):
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            raise TypeError(f"widths[{i}]: expected an int, got {w!r} ({type(w).__name__})")
        if w < 1:
            raise ValueError(f"widths[{i}]: expected a width >= 1, got {w}")
        out.append(int(w))
    return out


class Prepared(NamedTuple):
    """The checked arguments of one call (see :func:`prepare`)."""

    params: list
    widths: list
    X: Any
    single: bool
    xp: Any
    others: dict
    unchecked: list
    """``(name, array)`` of the concrete JAX arrays still to be checked for NaN and inf
    (with ``defer_finite=True``): pass it to :func:`bpcheck._compiled.call`."""


def common_dtype(xp, params, arrays):
    """``params`` and ``arrays`` in their common floating dtype (cast only where it differs)."""
    dtypes = {a.dtype for a in arrays}.union(t.dtype for pair in params for t in pair)
    if len(dtypes) == 1 and next(iter(dtypes)).kind == "f":  # the common case: nothing to cast
        return list(params), list(arrays), dtypes.pop()
    dtype = result_dtype(xp, list(arrays) + [t for pair in params for t in pair])
    cast = lambda t: t if t.dtype == dtype else t.astype(dtype)
    return [(cast(B), cast(b)) for B, b in params], [cast(a) for a in arrays], dtype


def prepare(params: Any, X: Any, xp=None, *, defer_finite: bool = False, **others: Any) -> Prepared:
    """One checking pass over a call's arrays: params, ``X`` (made 2-d) and ``others``.

    The backend is JAX when ``xp`` says so or when any of params, ``X`` and ``others``
    (further arrays of the call, e.g. ``y``, ``v``) is a JAX array.  Shapes and dtypes are
    checked first, then NaN and inf in all of them at once (one read-back from the device
    for JAX; with ``defer_finite=True`` the JAX arrays are left in ``unchecked``, for the
    compiled program of the call to check alongside its work).  Params and ``X`` come back
    in their common floating dtype; ``others`` (by name, ``None`` left as is) converted to
    the backend but not cast.  A call whose arrays match, in kind, shape and dtype, those of
    an earlier call that passed and needed no conversion skips the shape and dtype checks
    (:data:`_CHECKED`); NaN and inf are checked every time.
    """
    pairs = _pairs(params)
    leaves = [t for pair in pairs for t in pair]
    given = list(others.values())
    key = _signature(leaves + [X] + given, xp, defer_finite, tuple(others))
    seen = _CHECKED.get(key) if key is not None else None
    if seen is not None:  # arrays of the same kinds, shapes and dtypes passed every check before
        widths, xp, names = seen
        single = X.ndim == 1
        X2 = with_batch_axis(X) if single else X
        unchecked = _finite_pass(list(zip(names, leaves + [X2] + given)), defer_finite)
        return Prepared(pairs, widths, X2, single, xp, others, unchecked)
    if xp is None:
        xp = backend(*leaves, X, *given)
    checked, widths, xp = check_params(pairs, xp, finite=False)
    X2, single = check_inputs("X", X, widths[0], xp, finite=False)
    others = {k: None if v is None else as_array(k, v, xp) for k, v in others.items()}
    named = param_names(checked) + [("X", X2)] + list(others.items())
    unchecked = _finite_pass(named, defer_finite)
    checked, (X2,), _ = common_dtype(xp, checked, [X2])
    if key is not None and len(_CHECKED) < _CHECKED_MAX and _unchanged(
            leaves, X, given, [t for pair in checked for t in pair], X2, list(others.values())):
        _CHECKED[key] = (widths, xp, [name for name, _ in named])
    return Prepared(checked, widths, X2, single, xp, others, unchecked)


def _finite_pass(named: list, defer: bool) -> list:
    """The NaN/inf check of :func:`prepare`: all of ``named`` now, or (``defer``) the NumPy
    arrays now and the concrete JAX ones returned, for the call's compiled program."""
    if defer:
        return split_finite_checks(named)
    check_all_finite(named)
    return []


_CHECKED: dict = {}
"""What :func:`prepare` found for a signature of a call's arguments (:func:`_signature`):
the widths, the backend and the arrays' names.  The checks of shapes and dtypes depend on
nothing else, so a call with a signature seen before skips them; the NaN/inf check, which
depends on the values, runs every time."""
_CHECKED_MAX = 1024


def _signature(arrays: list, xp: Any, defer_finite: bool, names: tuple):
    """``(xp, defer_finite, names, (type, shape, dtype) of each array)`` when every array is
    a NumPy array or a concrete JAX array (or ``None``), else ``None``: lists, other
    libraries' tensors, subclasses and tracers take the full checks every time."""
    key = [xp, defer_finite, names]
    for x in arrays:
        t = type(x)
        if t is np.ndarray or (t in _ARRAY_TYPES and not is_tracer(x)):
            key.append((t, x.shape, x.dtype))
        elif x is None:
            key.append(None)
        else:
            return None
    return tuple(key)


def _unchanged(leaves, X, given, checked, X2, others) -> bool:
    """Whether :func:`prepare` handed back the caller's own arrays, ``X`` at most made 2-d:
    nothing converted to another library and nothing cast, so that a later call with the
    same signature may use them as they come."""
    same_X = X2 is X or (X.ndim == 1 and type(X2) is type(X) and X2.dtype == X.dtype)
    return (same_X and all(a is b for a, b in zip(leaves, checked))
            and all(a is b for a, b in zip(given, others)))


def check_out(name: str, out: Any, shape: tuple, dtype: Any, inputs: Sequence[Any]) -> np.ndarray:
    """A caller's buffer for a result written in place: a writeable NumPy array of exactly
    ``shape`` and ``dtype`` (nothing is cast, broadcast or reshaped) that shares no memory
    with any of ``inputs`` (the call's arrays, which the writing would change while they
    are read).  Returns it; any strides are fine."""
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    want = f"a writeable NumPy array of shape {shape} and dtype {dtype}"
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected {want} to write the result into (NumPy inputs only), "
                        f"got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (the dtype of the result), got "
                         f"{out.dtype}; it is not cast")
    if not out.flags.writeable:
        raise ValueError(f"{name}: expected {want}, got a read-only array")
    if _self_overlapping(out):
        raise ValueError(f"{name}: its entries overlap in memory (strides {out.strides} for shape "
                         f"{out.shape}): several results would be written to one place; "
                         f"expected {want} whose every entry has memory of its own")
    for x in inputs:
        if isinstance(x, np.ndarray) and overlaps(out, x):
            raise ValueError(f"{name}: shares memory with one of the call's input arrays; "
                             f"expected a separate buffer")
    return out


def _self_overlapping(a: np.ndarray) -> bool:
    """Whether two entries of ``a`` may share memory (``as_strided`` with a stride of 0, or
    strides shorter than the axes below them span); contiguous arrays never do.  Axes
    sorted by stride, each stride must clear the span of the smaller ones: a layout that
    interleaves its axes without overlap counts as overlapping (conservative)."""
    if a.size <= 1 or a.flags.c_contiguous or a.flags.f_contiguous:
        return False
    span = a.itemsize
    for stride, n in sorted((abs(st), n) for st, n in zip(a.strides, a.shape) if n > 1):
        if stride < span:
            return True
        span += stride * (n - 1)
    return False


def overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` share memory; a case too hard to decide counts as shared."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 16))
    except getattr(np, "exceptions", np).TooHardError:  # np.exceptions: NumPy >= 1.25
        return True


# --- large JAX results on the CPU, written by NumPy -------------------------------------
#
# XLA on the CPU writes a large elementwise product (the (N, P) per-example gradients of a
# 784-1024-1024-10 network, 950 MB) at about a quarter of the speed of NumPy's threaded fill
# (750 against 196 ms).  For concrete arrays on the default CPU device the small factors
# come from the compiled program, the large result is filled on the host into a 64-byte
# aligned buffer, and JAX takes that buffer over without copying (DLPack).


def on_default_cpu(arrays: Sequence[Any]) -> bool:
    """Whether every JAX array in ``arrays`` (``None`` and NumPy arrays skipped) is a
    concrete array on the default CPU device, none of them a tracer or spread over devices."""
    target = None
    for x in arrays:
        if x is None or type(x) is np.ndarray:
            continue
        if is_tracer(x) or not is_jax(x):
            return False
        devices = x.devices()
        if len(devices) != 1:
            return False
        if target is None:
            target = _default_cpu()
        if next(iter(devices)) != target:
            return False
    return target is not None


_CPU: list = []


def _default_cpu():
    if not _CPU:
        jax = _jax()
        try:
            _CPU.append(jax.local_devices(backend="cpu")[0])
        except RuntimeError:  # no CPU backend
            _CPU.append(None)
    return _CPU[0]


def host_buffer(shape: tuple, dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting on a 64-byte boundary, which JAX's CPU client
    needs to take the memory over without a copy (:func:`to_jax`), from ``ALIGN_MIN``
    bytes (a smaller one is NumPy's own, which JAX copies); a large one (at least
    ``POOL_MIN`` bytes) in memory that an earlier result has given back (see
    :class:`_Block`), when there is such a block of a fitting size."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < POOL_MIN:
        if nbytes < ALIGN_MIN:  # to_jax copies it: less than aligning costs (0.4 against 5.6 us)
            return np.empty(shape, dtype)
        raw = np.empty(nbytes + 64, np.uint8)
        start = _aligned(raw)
        return raw[start:start + nbytes].view(dtype).reshape(shape)
    raw = _take(nbytes + 64)
    if raw is None:
        raw = np.empty(nbytes + 64, np.uint8)
    return np.asarray(_Block(raw, shape, dtype))


def _aligned(raw: np.ndarray) -> int:
    """The offset into ``raw`` of its first byte on a 64-byte boundary."""
    return -raw.ctypes.data % 64


class _Block:
    """The owner of a large result's memory: every array made from it keeps it alive, and
    when the last one goes the memory returns to a pool, resident, for the next large
    result of a fitting size, instead of to the system.

    A fresh large array is mapped anew by the system, which zeroes each page on first
    write: for the ``(256, 206,000)`` float32 per-example gradients of a 64-256-256-256-10
    network, 16 of 24 ms went to that (the kernel's time) on a 2-core machine, and ten
    Gauss-Newton-vector products of a 784-1024-1024-10 network (7.4 MB each) took 70 ms
    with fresh memory against 61 ms from the pool.  A loop over batches drops each result
    before the next call, so the pool serves it.  At most ``POOL_MAX`` bytes in at most
    ``POOL_BLOCKS`` blocks are kept; :func:`release_memory` frees them.
    """

    __slots__ = ("raw", "__array_interface__")

    def __init__(self, raw: np.ndarray, shape: tuple, dtype: np.dtype):
        self.raw = raw
        self.__array_interface__ = {"data": (raw.ctypes.data + _aligned(raw), False), "shape": shape,
                                    "typestr": dtype.str, "descr": dtype.descr, "version": 3}

    def __del__(self):
        try:
            _give_back(self.raw)
        except Exception:  # noqa: BLE001 - at interpreter exit the module may be half gone
            pass


ALIGN_MIN = 1 << 16  # bytes from which a result is 64-byte aligned (below: NumPy's own)
POOL_MIN = 1 << 20  # bytes from which a result comes from the pool (below: the allocator's own reuse)
POOL_MAX = min(1 << 31, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
               if hasattr(os, "sysconf") else 1 << 31)
"""Bytes of given-back blocks kept at most: 2 GiB, or an eighth of the memory if less."""
POOL_BLOCKS = 64  # given-back blocks kept at most (each result taken looks at all of them)
_FREE: list = []  # given-back blocks (uint8 arrays), oldest first
_FREE_BYTES = [0]  # their bytes together
_FREE_LOCK = threading.RLock()  # reentrant: a block may be given back by a collection inside
_TAKING = [False]  # _take is choosing a block (under the lock)
_LATE: list = []  # blocks given back meanwhile, by a collection inside _take


def _take(nbytes: int):
    """The smallest pooled block of ``nbytes`` to ``2 nbytes`` bytes, taken out of the pool;
    of equal ones the last given back (its pages the likeliest still in the cache).

    A garbage collection may start inside (any allocation can start one) and free a result
    in a reference cycle, whose block :func:`_give_back` then returns on this same thread:
    it waits in ``_LATE`` until the choice is made, so that the pool's list does not shift
    under the positions read from it (a block half the size was once handed out)."""
    with _FREE_LOCK:
        _TAKING[0] = True
        try:
            fits = [i for i, raw in enumerate(_FREE) if nbytes <= raw.nbytes <= 2 * nbytes]
            raw = _FREE.pop(min(fits, key=lambda i: (_FREE[i].nbytes, -i))) if fits else None
            if raw is not None:
                _FREE_BYTES[0] -= raw.nbytes
        finally:
            _TAKING[0] = False
        while _LATE:
            _give_back(_LATE.pop())
        return raw


def _give_back(raw: np.ndarray) -> None:
    with _FREE_LOCK:
        if _TAKING[0]:  # inside _take, on this thread (see there)
            _LATE.append(raw)
            return
        _FREE.append(raw)
        _FREE_BYTES[0] += raw.nbytes
        while _FREE_BYTES[0] > POOL_MAX or len(_FREE) > POOL_BLOCKS:
            _FREE_BYTES[0] -= _FREE.pop(0).nbytes  # the oldest goes back to the system


def release_memory() -> None:
    """Give the memory that large results have left for reuse back to the system.

    NumPy results of 1 MB and more (per-example gradients, Jacobians, Gauss-Newton
    products; also JAX ones filled on the CPU) are made in memory that earlier results
    gave back, kept resident for the next result of a fitting size (at most 64 blocks and
    2 GiB, or an eighth of the machine's memory if that is less):
    a fresh mapping costs the system's zeroing of every page on first write.  Call this
    when no more such results are coming and the memory is wanted elsewhere.
    """
    with _FREE_LOCK:
        _FREE.clear()
        _FREE_BYTES[0] = 0


def to_jax(x: np.ndarray):
    """A NumPy array that nothing else refers to, as a JAX array on the default CPU device;
    without a copy when ``x`` is 64-byte aligned and contiguous (see :func:`host_buffer`)."""
    import jax.numpy as jnp

    return jnp.from_dlpack(x)
