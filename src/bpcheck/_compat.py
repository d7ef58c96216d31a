"""Spellings that differ across the supported versions of JAX.

Python 3.10 resolves jax 0.6, where the per-thread 64-bit switch is
``jax.experimental.enable_x64``; newer jax has ``jax.enable_x64`` and drops the old name.
The oldest declared jax (0.4.31) has ``shard_map`` only as
``jax.experimental.shard_map.shard_map``, whose ``check_rep`` is now ``check_vma``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any


def enable_x64(enabled: bool = True) -> AbstractContextManager:
    """JAX's 64-bit mode on (or off) for a ``with`` block, in the calling thread only."""
    import jax

    switch = getattr(jax, "enable_x64", None)
    if switch is None:
        from jax.experimental import enable_x64 as switch
    return switch(enabled)


def shard_map(f: Callable, *, mesh: Any, in_specs: Any, out_specs: Any, check: bool) -> Callable:
    """``jax.shard_map(f, ...)`` with its replication check on or off (``check``)."""
    import jax

    split = getattr(jax, "shard_map", None)
    if split is not None:
        return split(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check)
    from jax.experimental.shard_map import shard_map as split

    return split(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=check)
