"""One compiled program per kernel and static configuration, for every JAX entry point.

A kernel is a pure function ``kernel(*arrays, *static, xp)``: ``arrays`` are traced,
``static`` (loss names, activations, tile sizes: hashable) is baked into the program, and
``xp`` is the array module.  NumPy calls run the kernel directly; JAX calls run it through
``jax.jit``, compiled once per ``(kernel, static, jit options)`` and kept, with matmuls at
``precision="highest"`` (no TF32 or bf16 passes on GPUs and TPUs).  Inside an outer
``jax.jit`` or ``jax.vmap`` the compiled program is simply inlined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._arrays import check_on_host, finite_flags, is_tracer, raise_unless_finite

_programs: dict = {}


def compiled(kernel: Callable, static: tuple = (), *, key: Any = None, with_finite_flags: bool = False,
             join: int | None = None, **jit_options: Any):
    """``jax.jit`` of ``lambda *arrays: kernel(*arrays, *static, jnp)``, built once and kept.

    ``key``: what identifies ``kernel`` in the cache (default: ``kernel`` itself); pass one
    when ``kernel`` is a closure made afresh per call.  ``with_finite_flags``: the program
    takes one more argument, a list of arrays, and returns ``(result, flags)`` with one
    "all finite" flag per array of that list.  ``join``: the kernel returns a list of
    pieces to be joined along this axis; the program joins them itself when they are
    small (at most ``JOIN_IN_PROGRAM`` entries: one program call fewer) and returns the
    list otherwise, for :func:`joined`.  ``jit_options`` go to ``jax.jit`` (e.g.
    ``out_shardings``).  All of them are part of the cache key.
    """
    cache_key = (kernel if key is None else key, static, with_finite_flags,
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
            with jax.default_matmul_precision("highest"):
                if not with_finite_flags:
                    return work(*arrays)
                return work(*arrays[:-1]), finite_flags(arrays[-1], jnp)

        program = _programs[cache_key] = jax.jit(run, **jit_options)
    return program


JOIN_IN_PROGRAM = 1 << 16
"""Entries up to which a kernel's pieces are joined inside its own program (see
:func:`compiled`): small joins cost nothing there, a program call costs tens of
microseconds; large ones ran 3x slower inside (see :func:`joined`)."""


def call(kernel: Callable, xp, static: tuple, *arrays: Any, unchecked: Sequence = (),
         join: int | None = None):
    """``kernel(*arrays, *static, xp)``: directly for NumPy, compiled (:func:`compiled`) for JAX.

    ``unchecked``: ``(name, array)`` pairs (``Prepared.unchecked``) that the same compiled
    program checks for NaN and inf; the flags are read back once, and the error names the
    first offending array.  When an outer ``jax.jit`` or ``jax.vmap`` traces the call (the
    concrete ``unchecked`` arrays closed over, others traced), the flags are traced too, so
    the concrete arrays are checked on the host instead.  ``join``: for a JAX kernel that
    returns pieces, the axis to join them along (in its program or by :func:`joined`); the
    result is one array either way.
    """
    if xp is np:
        return kernel(*arrays, *static, np)
    if not unchecked:
        out = compiled(kernel, static, join=join)(*arrays)
    else:
        out, flags = compiled(kernel, static, with_finite_flags=True, join=join)(
            *arrays, [x for _, x in unchecked])
        if is_tracer(flags):
            # traced by an outer jit or vmap (a tracer among the arrays) with concrete arrays
            # closed over: those are checked now, once per trace
            check_on_host(unchecked)
        else:
            raise_unless_finite(unchecked, flags)
    return joined(out, join) if join is not None and isinstance(out, list) else out


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
