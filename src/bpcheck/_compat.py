"""Spellings that differ across the supported versions of JAX.

Python 3.10 resolves jax 0.6, where the per-thread 64-bit switch is
``jax.experimental.enable_x64``; newer jax has ``jax.enable_x64`` and drops the old name.
"""

from __future__ import annotations

from contextlib import AbstractContextManager


def enable_x64(enabled: bool = True) -> AbstractContextManager:
    """JAX's 64-bit mode on (or off) for a ``with`` block, in the calling thread only."""
    import jax

    switch = getattr(jax, "enable_x64", None)
    if switch is None:
        from jax.experimental import enable_x64 as switch
    return switch(enabled)
