"""One compiled program per kernel and static configuration, for every JAX entry point.

A kernel is a pure function ``kernel(*arrays, *static, xp)``: ``arrays`` are traced,
``static`` (loss names, activations, tile sizes: hashable) is baked into the program, and
``xp`` is the array module.  NumPy calls run the kernel directly; JAX calls run it through
``jax.jit``, compiled once per ``(kernel, static, jit options)`` and kept, with matmuls at
``precision="highest"`` (no TF32 or bf16 passes on GPUs and TPUs).  Inside an outer
``jax.jit`` or ``jax.vmap`` the compiled program is simply inlined.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ._arrays import (RECORDING, Derived, Reshaped, check_all_finite, check_on_host, finite_sum, is_jax,
                      is_tracer, with_batch_axis)
from ._model import Network

_programs: dict = {}


def compiled(kernel: Callable, static: tuple = (), *, key: Any = None, join: int | None = None,
             **jit_options: Any):
    """``jax.jit`` of ``lambda *arrays: kernel(*arrays, *static, jnp)``, built once and kept.

    ``key``: what identifies ``kernel`` in the cache (default: ``kernel`` itself); pass one
    when ``kernel`` is a closure made afresh per call.  ``join``: the kernel returns a list of
    pieces to be joined along this axis; the program joins them itself when they are
    small (at most ``JOIN_IN_PROGRAM`` entries: one program call fewer) and returns the
    list otherwise, for :func:`joined`.  ``jit_options`` go to ``jax.jit`` (e.g.
    ``out_shardings``).  All of them are part of the cache key.
    """
    cache_key = (kernel if key is None else key, static,
                 None if join is None else (join, JOIN_IN_PROGRAM), tuple(sorted(jit_options.items())))
    program = _programs.get(cache_key)
    if program is None:
        import jax
        import jax.numpy as jnp

        limit = JOIN_IN_PROGRAM

        def work(*arrays):
            out = kernel(*arrays, *static, jnp)
            if join is not None and sum(part.size for part in out) <= limit:
                return jnp.concatenate(out, axis=join)
            return out

        def run(*arrays):
            with settings():
                return work(*arrays)

        program = _programs[cache_key] = jax.jit(run, **jit_options)
    return program


def settings():
    """The JAX settings bpcheck's programs are traced under, whatever the caller's: matmuls
    at ``precision="highest"`` (no TF32 or bf16 passes on GPUs and TPUs), and rank
    promotion allowed (the kernels add a bias of shape ``(n,)`` to an ``(N, n)`` array: a
    caller's ``jax_numpy_rank_promotion = "raise"`` failed every call).  Entered while a
    program is traced, not per call."""
    import jax

    stack = contextlib.ExitStack()
    stack.enter_context(jax.default_matmul_precision("highest"))
    stack.enter_context(jax.numpy_rank_promotion("allow"))
    return stack


JOIN_IN_PROGRAM = 1 << 16
"""Entries up to which a kernel's pieces are joined inside its own program (see
:func:`compiled`): small joins cost nothing there, a program call costs tens of
microseconds; large ones ran 3x slower inside (see :func:`joined`)."""


def call(kernel: Callable, xp, static: tuple, *arrays: Any, unchecked: Sequence = (),
         bounds: Sequence = (), join: int | None = None):
    """``kernel(*arrays, *static, xp)``: directly for NumPy, compiled (:func:`compiled`) for JAX.

    ``unchecked``: ``(name, array)`` pairs (``Prepared.unchecked``) that the same compiled
    program checks for NaN and inf (:func:`checked_program`); its one "all finite" flag is
    read back, and when it is false the arrays are checked again one by one, for an error
    that names the first offending array.  When an outer ``jax.jit`` or ``jax.vmap``
    traces the call (the concrete ``unchecked`` arrays closed over, others traced), the
    flag is traced too, so the concrete arrays are checked on the host instead.
    ``bounds``: ``(array, lo, hi)`` triples, values the caller has already checked to lie in
    ``[lo, hi]`` (class labels); the flag covers them too, so that a repeat call
    (:func:`replayed`) that runs the program again checks them without reading them to the
    host (a second wait on the device: about 15 microseconds on the CPU).  ``join``:
    for a JAX kernel that returns pieces, the axis to join them along (in its program or
    by :func:`joined`); the result is one array either way.
    """
    if xp is np:
        out = kernel(*arrays, *static, np)
        _record((kernel, static), arrays, out, False)
        return out
    if not unchecked and not bounds:
        out = compiled(kernel, static, join=join)(*arrays)
    else:
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(arrays)
        extra = []

        def position(x):  # the checked arrays are mostly the kernel's own arguments
            i = next((i for i, leaf in enumerate(leaves) if leaf is x), None)
            if i is None:
                i = len(leaves) + len(extra)
                extra.append(x)
            return i

        positions = tuple(position(x) for _, x in unchecked)
        limits = tuple((position(x), lo, hi) for x, lo, hi in bounds)
        program = checked_program(kernel, static, treedef, positions, join, limits)
        leaves += extra
        out, ok = program(*leaves)
        if is_tracer(ok):
            # traced by an outer jit or vmap (a tracer among the arrays) with concrete arrays
            # closed over: those are checked now, once per trace
            check_on_host(unchecked)
        elif not np.asarray(ok):
            check_all_finite(unchecked)  # raises, naming the array
        else:
            _record(program, leaves, out, join is not None and isinstance(out, list))
    return joined(out, join) if join is not None and isinstance(out, list) else out


def checked_program(kernel: Callable, static: tuple, treedef: Any, positions: tuple,
                    join: int | None, limits: tuple = ()):
    """The compiled program of :func:`call` with a NaN/inf check: it takes the kernel's
    arrays as the leaves of ``treedef`` (``None`` dropped), followed by any further arrays
    to check, and returns ``(result, ok)``, ``ok`` true when the leaves at ``positions``
    are all finite and, for each ``(i, lo, hi)`` of ``limits``, leaf ``i`` lies in
    ``[lo, hi]``.  Built once per configuration and kept; :func:`replayed` calls the same
    program again without the checks."""
    cache_key = (kernel, static, "checked", treedef, positions,
                 None if join is None else (join, JOIN_IN_PROGRAM), limits)
    program = _programs.get(cache_key)
    if program is None:
        import jax
        import jax.numpy as jnp

        work = compiled(kernel, static, join=join)  # inlined when traced
        n = treedef.num_leaves

        def run(*leaves):
            with settings():
                out = work(*jax.tree_util.tree_unflatten(treedef, leaves[:n]))
                ok = all_finite([leaves[i] for i in positions], jnp)
                for i, lo, hi in limits:
                    ok = ok & jnp.all((leaves[i] >= lo) & (leaves[i] <= hi))
                return out, ok

        program = _programs[cache_key] = jax.jit(run)
        _CHECKED[program] = (kernel, static, treedef, positions, join, limits)
    return program


_CHECKED: dict = {}
"""A checked program -> the arguments of :func:`checked_program` that built it (for
:func:`_light`, which builds the same program without some of its checks)."""


def all_finite(arrays: Sequence[Any], xp) -> Any:
    """True when every entry of every array is finite (traceable; one flag for all).

    Small arrays (at most ``JOIN_IN_PROGRAM`` entries in all) are joined and tested entry
    by entry: one fused loop, where XLA on the CPU splits a float sum into a tree of
    partial sums (three more steps; the one-example Jacobian factors of a 10-32-32-3
    network ran their program in 41 against 71 microseconds).  Large ones by sums:
    ``sum(x * 0)`` is NaN exactly when ``x`` holds a NaN or an inf and 0 otherwise, so
    the sum of those sums is finite exactly when all entries are (:func:`finite_flags`).
    """
    if not arrays:  # (a call under an outer jit whose checked arrays are all traced)
        return xp.asarray(True)
    if sum(x.size for x in arrays) <= JOIN_IN_PROGRAM:
        return xp.all(xp.isfinite(xp.concatenate([x.reshape(-1) for x in arrays])))
    return xp.isfinite(sum(xp.sum(x * 0) for x in arrays))


def _joined(*args):
    *parts, axis, xp = args
    return xp.concatenate(parts, axis=axis)


def joined(parts: Sequence[Any], axis: int = -1):
    """``concatenate(parts, axis)``; for JAX arrays a compiled program of its own, or, when
    an outer ``jax.jit`` or ``jax.vmap`` traces the call, :func:`written` into its program.

    For kernels whose large output is made of pieces: with the concatenation inside the
    kernel's program, XLA on the CPU ran the Gauss-Newton-vector product of a
    784-1024-1024-10 network in 70-90 ms on most calls; the same kernel returning its
    pieces took 20-30 ms, and joining them in a program of their own 2 ms.
    """
    if all(type(part) is np.ndarray for part in parts):
        return np.concatenate(parts, axis=axis)
    if any(is_tracer(part) for part in parts):  # inside the caller's program
        return written(parts, axis)
    return compiled(_joined, (axis,))(*parts)


def written(parts: Sequence[Any], axis: int):
    """JAX pieces written one after the other into a fresh buffer along ``axis``: what
    ``concatenate`` does, in the form that XLA on the CPU runs better when the pieces come
    from the same program (each written once in its final place; the 784-1024-1024-10
    Gauss-Newton product under ``jax.jit``: 73-88 ms with ``concatenate`` on most calls,
    23-49 ms so; the Jacobian's blocks: ``concatenate`` 1.5-2.5x slower)."""
    import jax.numpy as jnp
    from jax import lax

    axis %= parts[0].ndim
    shape = list(parts[0].shape)
    shape[axis] = sum(part.shape[axis] for part in parts)
    out = jnp.zeros(shape, dtype=jnp.result_type(*parts))
    start = [0] * len(shape)
    for part in parts:
        out = lax.dynamic_update_slice(out, part, tuple(start))
        start[axis] += part.shape[axis]
    return out


def _entry_zero(*args):
    *leaves, axes, xp = args
    index = tuple(0 if i in axes else slice(None) for i in range(max(axes) + 1))
    return [leaf[index] for leaf in leaves]


def without_axis(tree: Any, axis: int | tuple = 0):
    """``tree`` (an array, or lists and tuples of arrays, named ones included) with every
    array ``t`` replaced by entry 0 of its ``axis`` (``t[0]``; ``t[:, 0]`` for ``axis=1``;
    ``t[0, 0]`` for ``axis=(0, 1)``): a single example's batch axis taken away.  NumPy:
    views.  JAX: one compiled program for all the arrays (eager indexing dispatches several
    operations per array: about 70 microseconds each on the CPU), inlined when an outer
    ``jax.jit`` traces the call."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    leaves: list = []
    _flatten(tree, leaves)
    if all(type(leaf) is np.ndarray for leaf in leaves):
        taken = _entry_zero(*leaves, axes, np)
    else:
        taken = compiled(_entry_zero, (axes,))(*leaves)
    out = _unflatten(tree, iter(taken))
    notes = RECORDING.get()
    if notes is not None:
        notes.append(Reshaped(tree, out, axis))
    return out


def _flatten(tree, leaves):
    if isinstance(tree, (list, tuple)):
        for item in tree:
            _flatten(item, leaves)
    else:
        leaves.append(tree)


def _unflatten(tree, leaves):
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple
        return type(tree)(*(_unflatten(item, leaves) for item in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(_unflatten(item, leaves) for item in tree)
    return next(leaves)


# --- repeat calls: the kernel of an earlier call with the same signature, run again ------
#
# A small call spends as much time checking its arguments as computing: the 10-32-32-3
# Gauss-Newton-vector product of 64 examples ran 0.25 ms as a JAX call against 0.08-0.12 ms
# under jax.jit, 0.07 ms of it the checks, and 0.24 ms in NumPy, 0.16 ms of it the kernel.
# Everything a call checks except NaN and inf follows from the kinds, shapes and dtypes of
# its arrays and from its other arguments, so a call that comes back with the signature of
# one that passed, and that handed its arrays unchanged to one kernel whose result it
# returned as is, runs that kernel again straight away (JAX: the same compiled program),
# with NaN and inf still checked.

_PLANS: dict = {}
_PLANS_MAX = 1024
_CONCRETE: set = {np.ndarray}  # and the types seen to be concrete JAX arrays
_SCALARS = (str, bool, int, float, type(None))


def _record(runner, arrays, out, joined_after) -> None:
    """Note a kernel's run for :func:`replayed` (when a replayed function is recording):
    what ran it (a checked program and the list of its arrays, or ``(kernel, static)`` and
    the NumPy kernel's arrays as given), and its result."""
    records = RECORDING.get()
    if records is not None:
        records.append(None if joined_after else (runner, arrays, out))


@contextlib.contextmanager
def recording(notes):
    """Within the block, :func:`call`, :func:`without_axis` and
    :func:`bpcheck._arrays.with_batch_axis` append their notes to ``notes`` (``None``:
    nowhere), as :func:`replayed`'s first call of a signature takes them."""
    token = RECORDING.set(notes)
    try:
        yield notes
    finally:
        RECORDING.reset(token)


def _passed(ok) -> bool:
    """A checked program's flag read on the host: true for a concrete ``True`` only (a
    traced flag, under an outer jit, is no answer)."""
    return type(ok) in _CONCRETE and bool(np.asarray(ok))


def _builder(arrays, leaves, added):
    """A function of a later call's leaves that gives ``arrays`` (lists and tuples of arrays
    and ``None``, as a NumPy kernel took them) with each array found in ``leaves`` by
    identity replaced by the one at its place, and each array made from a leaf (``added``:
    ``id(result) -> (result, leaf, make)``: a batch axis added, :class:`Derived`) by
    ``make`` of that leaf of the later call, or, made from nothing (``leaf`` ``None``), by
    itself; ``None`` when an array is none of these."""
    if arrays is None:
        return lambda later: None
    if type(arrays) in (list, tuple):
        builders = [_builder(part, leaves, added) for part in arrays]
        if None in builders:
            return None
        kind = type(arrays)
        return lambda later: kind([build(later) for build in builders])
    i = _leaf_index(arrays, leaves)
    if i is not None:
        return operator.itemgetter(i)
    result, source, make = added.get(id(arrays), (None, None, None))
    if result is not arrays:
        return None
    if source is None:  # a constant of the signature
        return lambda later: result
    i = _leaf_index(source, leaves)
    return None if i is None else lambda later: make(later[i])


def _leaf_index(x, leaves):
    return next((i for i, leaf in enumerate(leaves) if leaf is x), None)


class Built(NamedTuple):
    """A note of :func:`built`: the call's ``result`` is ``make(out)``, ``out`` a kernel's."""

    out: Any
    result: Any
    make: Callable


def built(out: Any, make: Callable) -> Any:
    """``make(out)``: an object built from a kernel's result ``out`` (one that holds it),
    noted so that :func:`replayed` runs the kernel again on a repeat call and returns
    ``make`` of its result.  ``make`` may depend on nothing but the call's signature."""
    result = make(out)
    notes = RECORDING.get()
    if notes is not None:
        notes.append(Built(out, result, make))
    return result


def _plan(records, leaves, result, trusted=()):
    """The plan of :func:`replayed` from a first call's notes (:data:`RECORDING`), or
    ``None``: ``(runner, take, after, light)``, ``take`` giving the runner's arrays from a
    later call's leaves (``None``: the leaves as they are) and ``after`` what becomes of its
    result: ``None`` returned as is, an axis the batch axis to take away, a function
    (:func:`built`) the object to build from it.  ``light``: for a JAX plan, the runner
    without the NaN/inf checks of the leaves that are one of ``trusted`` (the
    parameters), for calls whose parameters an earlier call found finite; else ``None``."""
    made = [r for r in records if type(r) is Built]
    if made:
        if len(made) != 1 or made[0].result is not result:
            return None
        plan = _plan([r for r in records if type(r) is not Built], leaves, made[0].out, trusted)
        if plan is None or plan[2] is not None:
            return None
        return plan[0], plan[1], made[0].make, plan[3]
    kernels = [r for r in records if type(r) is not Reshaped and type(r) is not Derived]
    if len(kernels) != 1 or kernels[0] is None or len({id(leaf) for leaf in leaves}) != len(leaves):
        # (an array given twice, as X and v say, would be taken for both in a later call
        # that gives two)
        return None
    runner, used, out = kernels[0]
    added = {id(r.result): (r.result, r.source, with_batch_axis) for r in records
             if type(r) is Reshaped and r.axis is None}
    added.update((id(r.result), (r.result, r.source, r.make)) for r in records
                 if type(r) is Derived)
    taken = [r for r in records if type(r) is Reshaped and r.axis is not None]
    axis = None
    if out is not result:  # one example: the result is the kernel's with its batch axis taken
        if len(taken) != 1 or taken[0].result is not result or taken[0].source is not out:
            return None
        axis = taken[0].axis
    if type(runner) is tuple:  # NumPy: (kernel, static) and the arrays as the kernel took them
        take = _builder(used, leaves, added)
        return None if take is None else (runner, take, axis, None)
    builders = [_builder(x, leaves, added) for x in used]
    if None in builders:
        return None
    light = _light(runner, used, trusted)
    indices = [_leaf_index(x, leaves) for x in used]
    if axis is None and indices == list(range(len(leaves))):
        return runner, None, None, light  # the caller's arrays, in their order
    if axis is None and None not in indices:
        return runner, indices, None, light
    take = lambda later: [build(later) for build in builders]
    import jax

    if not hasattr(jax.lax, "optimization_barrier"):  # (not in JAX 0.4.31): the three steps
        return runner, take, axis, light
    return (_fused(runner, take, axis), None, None,
            None if light is None else _fused(light, take, axis))


def _light(runner, used, trusted):
    """The checked program ``runner`` (run on the arrays ``used``) built again without the
    NaN/inf checks of the arrays that are one of ``trusted`` (by identity), or ``None``
    when it checks none of them."""
    spec = _CHECKED.get(runner)
    if spec is None:
        return None
    kernel, static, treedef, positions, join, limits = spec
    ids = {id(x) for x in trusted}
    kept = tuple(i for i in positions if id(used[i]) not in ids)
    return None if kept == positions else checked_program(kernel, static, treedef, kept, join,
                                                          limits)


def _fused(runner, take, axis):
    """One compiled program that does what a JAX plan with one example does in three
    steps: the batch axes added to the caller's arrays (``take``), the checked program
    ``runner`` (inlined), and the axis taken from its result (``axis``; ``None``: none).
    Each step eager is a program call of its own, 15-35 microseconds on the CPU against
    15-20 for a small kernel.  Optimization barriers keep XLA from seeing through the
    added axis into the kernel, or from the taken entry back into it: with an axis of 1
    it knows of, XLA may compute a product in another order (an NTK entry 1 ulp off on
    JAX 0.12), and the tests hold the fused program's results to the full path's, bit
    for bit."""
    import jax

    def run(*leaves):
        with recording(None):  # traced once: notes of no call
            arrays = jax.lax.optimization_barrier(take(leaves))
            out, ok = runner(*arrays)
            if axis is not None:
                out = without_axis(jax.lax.optimization_barrier(out), axis)
            return out, ok

    return jax.jit(run)


def rerun(records, x, result):
    """From the notes (:data:`RECORDING`) of a call that ran one kernel with ``x`` as its
    last array and returned that kernel's result as is: a function of a later ``x`` (of the
    same kind, shape and dtype: the caller's to ensure) that runs the same kernel or
    checked program again with the other arrays as they were, and returns its result, or
    ``None`` when the new ``x`` (NumPy: checked on the host; JAX: by the program's flag)
    holds NaN or inf.  ``None`` instead of a function when the notes are not of such a
    call.  For repeat calls with fixed stored arrays (``GaussNewtonOperator.matvec``)."""
    if len(records) != 1 or type(records[0]) is not tuple:  # (None: joined after its run)
        return None
    runner, used, out = records[0]
    if out is not result:
        return None
    if type(runner) is tuple:  # NumPy: the kernel's own arrays, as it took them
        if not used or used[-1] is not x:
            return None
        (kernel, static), rest = runner, tuple(used[:-1])
        return lambda later: kernel(*rest, later, *static, np) if _host_finite([later]) else None
    if _leaf_index(x, used) != len(used) - 1:
        return None
    rest = tuple(used[:-1])

    def again(later):
        out, ok = runner(*rest, later)
        return out if _passed(ok) else None

    return again


def _host_finite(leaves) -> bool:
    """Whether every floating NumPy array of ``leaves`` is all finite: small arrays joined
    and their entries tested at once (two NumPy calls instead of two each); large ones by
    sums (:func:`bpcheck._arrays.finite_sum`: NaN and inf propagate; a sum that overflows
    counts as not finite, and the full path then looks at the entries)."""
    floats = [x for x in leaves if x.dtype.kind == "f"]
    if sum(x.size for x in floats) <= JOIN_IN_PROGRAM:  # no sum, so nothing can overflow
        return not floats or bool(np.isfinite(np.concatenate(floats, axis=None)).all())
    with np.errstate(over="ignore", invalid="ignore"):
        return all(math.isfinite(finite_sum(x)) for x in floats)


def shape_of(x):
    """What a plan's key holds of an array: a concrete JAX array's ``aval`` (its shape, dtype
    and weak type, in one attribute whose hash JAX keeps: about 0.1 microseconds against
    0.4 for shape and dtype read and hashed), a NumPy array's ``(shape, dtype)``; ``None``
    for anything else (a subclass, a tracer, a list)."""
    t = type(x)
    if t is np.ndarray:
        return x.shape, x.dtype
    if t in _CONCRETE:
        return x.aval
    if is_jax(x) and not is_tracer(x):
        _CONCRETE.add(t)
        return x.aval
    return None


def _signature(fn, names, arrays, args, kwargs):
    """``(key, leaves, span)`` of a call for :func:`replayed`, or ``(None, None, None)``
    when it has an argument other than NumPy or concrete JAX arrays in the ``arrays``
    arguments (``params`` a list or tuple of ``(B, b)`` tuples of them, ``b`` ``None`` for
    a layer without a bias, or a :class:`bpcheck.Network` of such a list) and strings,
    numbers or ``None`` elsewhere.
    The key holds each array's shape and dtype (:func:`shape_of`) and the other arguments'
    types and values (one flat tuple: hashed on every call); ``span`` is the
    ``(start, stop)`` of the parameters' arrays among the leaves (``(0, 0)``: none)."""
    key, leaves, span = [fn], [], (0, 0)
    n = len(names)
    items = zip(names, args) if len(args) <= n else \
        [(names[i] if i < n else None, value) for i, value in enumerate(args)]
    if kwargs:
        items = [*items, *sorted(kwargs.items())]
    for name, value in items:
        key.append(name)
        if value is None or name not in arrays:
            if type(value) not in _SCALARS:
                return None, None, None
            key.append(type(value))
            key.append(value)
        elif name == "params":
            if type(value) is Network:  # a model read by bpcheck.network: its (B, b) list, and
                key.append(Network)  # its activations, which the call's configuration holds
                key.append(value.activation)
                value = value.params
            if type(value) not in (list, tuple):
                return None, None, None
            key.append(type(value))
            key.append(len(value))
            start = len(leaves)
            for pair in value:
                if type(pair) is not tuple or len(pair) != 2:
                    return None, None, None
                B, b = pair
                shape_B = shape_of(B)
                shape_b = () if b is None else shape_of(b)  # (): a layer without a bias
                if shape_B is None or shape_b is None:
                    return None, None, None
                leaves.append(B)
                if b is not None:
                    leaves.append(b)
                key.append(shape_B)
                key.append(shape_b)
            span = (start, len(leaves))
        else:
            shape = shape_of(value)
            if shape is None:
                return None, None, None
            leaves.append(value)
            key.append(shape)
    return tuple(key), leaves, span


class _Trust:
    """The parameters of a JAX plan's last call that its checks found finite, and the
    plan's program without their NaN/inf checks (:func:`_light`), for later calls with the
    very same parameter arrays: JAX arrays are immutable, so those are finite still.  A
    loop over inputs with fixed parameters (an NTK or Jacobian per example) then checks
    only its inputs.  The arrays are held by weak references: a plan keeps no parameters
    alive, and an array made later at a freed one's address is not taken for it."""

    __slots__ = ("runner", "start", "stop", "seen")

    def __init__(self, runner, start, stop):
        self.runner, self.start, self.stop, self.seen = runner, start, stop, ()

    def note(self, leaves) -> None:
        """``leaves`` (a call's arrays) passed their checks."""
        try:
            self.seen = tuple(weakref.ref(x) for x in leaves[self.start:self.stop])
        except TypeError:  # an array type without weak references: never trusted
            self.seen = ()

    def holds(self, leaves) -> bool:
        """Whether the parameters among ``leaves`` are those noted last, object for object."""
        seen = self.seen
        if not seen:
            return False
        i = self.start
        for ref in seen:
            x = ref()
            if x is None or x is not leaves[i]:
                return False
            i += 1
        return True


def replayed(*arrays: str, recheck: Callable | None = None):
    """Decorator: repeat calls of a public function skip its checks (see above).

    ``arrays``: the names of the arguments that may be arrays (``"params"``: the ``(B, b)``
    list); a call with an array anywhere else, or with lists, models, tracers or other
    objects, takes the function's full path.  The first call with a signature runs the
    function and notes its one kernel run (:func:`call`); it becomes the plan when every
    array the kernel took is one of the caller's, by identity (nothing converted, cast or
    reshaped), or one with a batch axis added by :func:`bpcheck._arrays.with_batch_axis`
    (one example), and the function returned the kernel's result itself, that result
    with the batch axis taken away by :func:`without_axis`, or an object built on it by
    :func:`built`; a later call does the same additions, taking away or building.  A JAX
    plan runs the same checked program, a NumPy plan the kernel after a check of the
    arrays' sums; when either finds NaN or inf, or an outer ``jax.jit`` traces the call,
    the full path runs again, and raises the error that names the array or checks on the
    host.  The wrapped function's outcome must depend on nothing but the signature and
    the values' being finite, or also on what ``recheck(*args, **kwargs)`` finds true on
    every repeat call before its plan's result is used (false: the full path; a NumPy
    plan is not run, a JAX plan's program runs while the recheck does and its result is
    dropped).
    """
    def wrap(fn):
        code = fn.__code__
        names = code.co_varnames[:code.co_argcount]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            key, leaves, span = _signature(fn, names, arrays, args, kwargs)
            if key is None:
                return fn(*args, **kwargs)
            plan = _PLANS.get(key)
            if plan is not None:
                runner, take, after, trust = plan
                if type(runner) is tuple:  # NumPy: the kernel, after the checks
                    if (recheck is not None and not recheck(*args, **kwargs)) or \
                            not _host_finite(leaves):
                        return fn(*args, **kwargs)
                    kernel, static = runner
                    out = kernel(*take(leaves), *static, np)
                else:
                    # the program first: the recheck runs while it does (Python before
                    # the call lets JAX's worker thread fall asleep: about 20 us to wake)
                    trusted = trust is not None and trust.holds(leaves)
                    out, ok = (trust.runner if trusted else runner)(
                        *(leaves if take is None else [leaves[i] for i in take]
                          if type(take) is list else take(leaves)))
                    if (recheck is not None and not recheck(*args, **kwargs)) or \
                            not _passed(ok):
                        return fn(*args, **kwargs)
                    if trust is not None and not trusted:
                        trust.note(leaves)
                if after is None:
                    return out
                return after(out) if callable(after) else without_axis(out, after)
            with recording([]) as records:
                result = fn(*args, **kwargs)
            trusted = leaves[span[0]:span[1]]
            plan = _plan(records, leaves, result, trusted)
            if plan is not None and len(_PLANS) < _PLANS_MAX:
                light = plan[3]
                trust = None if light is None else _Trust(light, *span)
                if trust is not None:
                    trust.note(leaves)  # the full path checked them
                _PLANS[key] = (*plan[:3], trust)
            return result

        return wrapper

    return wrap
