"""Splitting the batch axis over the devices of a ``jax.sharding.Mesh``.

Every per-example quantity here (NTK rows, per-example gradients) is a function of one
block of examples at a time, so the batch axis (axis 0) of the inputs is split over all
devices of the mesh with ``jax.shard_map``; parameters, and anything every row needs, are
replicated.  The result is split the same way, or gathered on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._arrays import is_jax, is_tracer
from ._compat import shard_map
from ._compiled import compiled


def resolve_mesh(mesh: Any, X: Any):
    """The mesh to split the batch over: ``mesh`` if given, else the one ``X`` is split on.

    ``X`` counts as split when it is a concrete JAX array with a ``NamedSharding`` over more
    than one device that partitions its first axis.  Returns ``None`` for one device.
    """
    if mesh is not None:
        from jax.sharding import Mesh

        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh: expected a jax.sharding.Mesh or None, got {type(mesh).__name__}")
        return mesh
    if is_jax(X) and not is_tracer(X):
        s = X.sharding
        if type(s) in _ONE_DEVICE:  # (a repeat call checks this: no import on its way)
            return None
        from jax.sharding import NamedSharding, SingleDeviceSharding

        _ONE_DEVICE.add(SingleDeviceSharding)
        if isinstance(s, NamedSharding) and s.mesh.size > 1 and len(s.spec) and s.spec[0]:
            return s.mesh
    return None


_ONE_DEVICE: set = set()
"""``{jax.sharding.SingleDeviceSharding}`` once JAX has been seen (an array on one device is
never split)."""


def batch_parallel(
    fn: Callable,
    mesh: Any,
    replicated: Sequence[Any],
    batched: Sequence[Any],
    gather: bool,
    name: str,
    key: Any,
):
    """``fn(*replicated, *batched)`` with axis 0 of every ``batched`` array split over ``mesh``.

    ``fn`` must map ``n`` rows of each batched array to ``n`` rows of output.  Rows are
    padded (with zeros) up to a multiple of the device count and the padding is cut off
    again.  ``gather=True``: the result is replicated on every device; ``gather=False``: it
    stays split by rows, which needs the row count to divide evenly (``name`` is the
    argument named in the error).

    ``key``: a hashable description of ``fn`` (two calls with equal keys must pass
    functions that compute the same thing).  The compiled program is kept per ``key``,
    mesh and ``gather`` (:func:`bpcheck._compiled.compiled`), so repeated calls with arrays
    of the same shapes do not compile again.
    """

    if not isinstance(gather, bool):
        raise TypeError(f"gather: expected True or False, got {gather!r}")
    n_dev = mesh.size
    N = batched[0].shape[0]
    if not gather and N % n_dev:
        raise ValueError(
            f"{name}: {N} rows cannot stay split evenly over the {n_dev} devices of the mesh; "
            f"pass gather=True, or a batch whose size is a multiple of {n_dev}"
        )
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    rows = P(tuple(mesh.axis_names))
    program = compiled(_split_rows(fn, mesh), key=("batch_parallel", key, mesh),
                       out_shardings=NamedSharding(mesh, P() if gather else rows))
    return program(list(replicated), list(batched))


def _split_rows(fn: Callable, mesh: Any):
    """``fn`` under ``jax.shard_map`` with the rows of the batched arrays split over ``mesh``,
    padded with zero rows to a multiple of the device count and cut back after."""
    import jax
    from jax.sharding import PartitionSpec as P

    rows = P(tuple(mesh.axis_names))

    def run(replicated, batched, jnp):
        N = batched[0].shape[0]
        pad = -N % mesh.size
        if pad:
            batched = [None if b is None else  # (y of a loss that takes no targets)
                       jnp.concatenate([b, jnp.zeros((pad,) + b.shape[1:], b.dtype)])
                       for b in batched]
        split = shard_map(
            lambda r, b: fn(*r, *b),
            mesh=mesh,
            in_specs=(P(), rows),
            out_specs=rows,
            check=False,  # per-device loops start from unsharded zeros
        )
        out = split(tuple(replicated), tuple(batched))
        return jax.tree.map(lambda o: o[:N], out) if pad else out

    return run
