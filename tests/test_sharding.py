"""Splitting the batch over devices: ntk and per_example_grads equal their one-device results.

The multi-device checks run in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_
device_count=2`` (the flag must be set before JAX starts, and this process's JAX has).
"""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import bpcheck
from bpcheck._ntk import ntk
from bpcheck._pergrad import per_example_grads

TWO_DEVICE_SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import bpcheck
    from bpcheck._ntk import ntk
    from bpcheck._pergrad import per_example_grads, per_example_grad_norms

    assert len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    rows, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
    rng = np.random.default_rng(0)
    params = bpcheck.init_params([5, 7, 6, 3], seed=1)
    X, X2 = rng.standard_normal((13, 5)), rng.standard_normal((9, 5))
    y = rng.integers(0, 3, 13)

    def same(got, want, sharding):
        assert got.sharding.is_equivalent_to(sharding, got.ndim), (got.sharding, sharding)
        err = np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))
        assert err < 1e-12, err

    # mesh given; odd batch (padded internally); gathered on every device
    same(ntk(params, X, mesh=mesh), ntk(params, X), replicated)
    same(ntk(params, X, X2, trace=True, mesh=mesh), ntk(params, X, X2, trace=True), replicated)
    same(ntk(params, X, X2, trace=True, block_size=2, mesh=mesh),
         ntk(params, X, X2, trace=True), replicated)
    same(per_example_grads(params, X, y, mesh=mesh), per_example_grads(params, X, y), replicated)
    same(per_example_grad_norms(params, X, y, mesh=mesh),
         per_example_grad_norms(params, X, y), replicated)

    # reduction="mean" divides by the batch's N, not by the rows one device holds (the
    # gradients came out N / rows-per-device times too large: 13 / 7 here, 2 when split)
    for reduction in ("mean", "sum"):
        same(per_example_grads(params, X, y, reduction=reduction, mesh=mesh),
             per_example_grads(params, X, y, reduction=reduction), replicated)
        same(per_example_grad_norms(params, X, y, reduction=reduction, mesh=mesh),
             per_example_grad_norms(params, X, y, reduction=reduction), replicated)
    X12s = jax.device_put(jnp.asarray(X[:12]), rows)
    same(per_example_grads(params, X12s, y[:12], reduction="mean", gather=False),
         per_example_grads(params, X[:12], y[:12], reduction="mean"), rows)

    # a loss that takes no targets (y=None) over an odd batch, padded
    half_square = bpcheck.Loss(grad=lambda z, t: z)
    same(per_example_grads(params, X, None, half_square, mesh=mesh),
         per_example_grads(params, X, None, half_square), replicated)

    # inputs already split: their mesh is used; gather=False leaves the result split
    Xs = jax.device_put(jnp.asarray(X[:12]), rows)
    same(ntk(params, Xs, gather=False), ntk(params, X[:12]), rows)
    same(ntk(params, Xs), ntk(params, X[:12]), replicated)
    same(per_example_grads(params, Xs, y[:12], gather=False),
         per_example_grads(params, X[:12], y[:12]), rows)

    # a repeat call of one signature whose X is split takes the full path: its mesh is used
    from bpcheck._pergrad import _repeatable
    from bpcheck._ntk import _repeatable as ntk_repeatable
    Xj, yj = jnp.asarray(X[:12]), jnp.asarray(y[:12])
    assert _repeatable(params, Xj, yj) and not _repeatable(params, Xs, yj)
    assert ntk_repeatable(params, Xj) and not ntk_repeatable(params, Xs)
    for _ in range(2):
        same(ntk(params, Xj, gather=False), ntk(params, X[:12]), Xj.sharding)
    same(ntk(params, Xs, gather=False), ntk(params, X[:12]), rows)
    same(ntk(params, Xs), ntk(params, X[:12]), replicated)
    for _ in range(2):
        same(per_example_grads(params, Xj, yj, gather=False), per_example_grads(params, X[:12], y[:12]),
             Xj.sharding)
    same(per_example_grads(params, Xs, yj, gather=False), per_example_grads(params, X[:12], y[:12]),
         rows)
    for _ in range(2):
        same(per_example_grad_norms(params, Xj, yj), per_example_grad_norms(params, X[:12], y[:12]),
             Xj.sharding)
        same(per_example_grads(params, Xj, yj), per_example_grads(params, X[:12], y[:12]),
             Xj.sharding)
    same(per_example_grads(params, Xs, yj), per_example_grads(params, X[:12], y[:12]), replicated)
    same(per_example_grad_norms(params, Xs, yj), per_example_grad_norms(params, X[:12], y[:12]),
         replicated)
    same(per_example_grad_norms(params, Xs, yj, gather=False),
         per_example_grad_norms(params, X[:12], y[:12]), rows)

    # under an outer jit
    f = jax.jit(lambda p, X: ntk(p, X, trace=True, mesh=mesh))
    same(f(params, X), ntk(params, X, trace=True), replicated)

    # an uneven split cannot stay split
    try:
        ntk(params, X, mesh=mesh, gather=False)
    except ValueError as err:
        assert "X1: 13 rows" in str(err) and "gather=True" in str(err), err
    else:
        raise AssertionError("no error for 13 rows over 2 devices with gather=False")
    print("OK")
    """
)


def test_ntk_and_per_example_grads_split_over_two_devices_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", TWO_DEVICE_SCRIPT], env=env, check=False,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


def test_a_one_device_mesh_gives_the_unsplit_result():
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    params = bpcheck.init_params([4, 5, 2], seed=0)
    X = np.random.default_rng(0).standard_normal((5, 4))
    y = np.array([0, 1, 1, 0, 1])
    np.testing.assert_allclose(np.asarray(ntk(params, X, mesh=mesh)), ntk(params, X), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(per_example_grads(params, X, y, mesh=mesh)),
                               per_example_grads(params, X, y), rtol=1e-12, atol=1e-15)


def test_repeated_mesh_calls_reuse_the_compiled_program():
    from bpcheck import _compiled

    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    params = bpcheck.init_params([4, 5, 2], seed=0)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 4))
    first = ntk(params, X, trace=True, mesh=mesh)
    programs = dict(_compiled._programs)
    sizes = {k: f._cache_size() for k, f in programs.items()}
    X_new = rng.standard_normal((6, 4))  # new values, same shapes: no new program
    np.testing.assert_allclose(np.asarray(ntk(params, X_new, trace=True, mesh=mesh)),
                               ntk(params, X_new, trace=True), rtol=1e-12)
    assert _compiled._programs == programs
    assert {k: f._cache_size() for k, f in programs.items()} == sizes
    # a different configuration is a different program, and gets the right answer
    np.testing.assert_allclose(np.asarray(ntk(params, X, mesh=mesh)), ntk(params, X), rtol=1e-12)
    assert len(_compiled._programs) == len(programs) + 1
    assert np.asarray(first).shape == (6, 6)


def test_sharding_arguments_are_checked():
    params, X = bpcheck.init_params([4, 2]), np.ones((2, 4))
    with pytest.raises(TypeError, match="mesh: expected a jax.sharding.Mesh or None, got list"):
        per_example_grads(params, X, np.array([0, 1]), mesh=[0, 1])
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    with pytest.raises(TypeError, match="gather: expected True or False, got 'yes'"):
        ntk(params, X, mesh=mesh, gather="yes")
