"""One compiled program per kernel and static configuration, for every JAX entry point.

A kernel is a pure function ``kernel(*arrays, *static, xp)``: ``arrays`` are traced,
``static`` (loss names, activations, tile sizes: hashable) is baked into the program, and
``xp`` is the array module.  NumPy calls run the kernel directly; JAX calls run it through
``jax.jit``, compiled once per ``(kernel, static, jit options)`` and kept, with matmuls at
``precision="highest"`` (no TF32 or bf16 passes on GPUs and TPUs).  Inside an outer
``jax.jit`` or ``jax.vmap`` the compiled program is simply inlined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_programs: dict = {}


def compiled(kernel: Callable, static: tuple = (), *, key: Any = None, **jit_options: Any):
    """``jax.jit`` of ``lambda *arrays: kernel(*arrays, *static, jnp)``, built once and kept.

    ``key``: what identifies ``kernel`` in the cache (default: ``kernel`` itself); pass one
    when ``kernel`` is a closure made afresh per call.  ``jit_options`` go to ``jax.jit``
    (e.g. ``out_shardings``) and are part of the cache key.
    """
    cache_key = (kernel if key is None else key, static, tuple(sorted(jit_options.items())))
    program = _programs.get(cache_key)
    if program is None:
        import jax
        import jax.numpy as jnp

        def run(*arrays):
            with jax.default_matmul_precision("highest"):
                return kernel(*arrays, *static, jnp)

        program = _programs[cache_key] = jax.jit(run, **jit_options)
    return program


def call(kernel: Callable, xp, static: tuple, *arrays: Any):
    """``kernel(*arrays, *static, xp)``: directly for NumPy, compiled (:func:`compiled`) for JAX."""
    if xp is np:
        return kernel(*arrays, *static, np)
    return compiled(kernel, static)(*arrays)
