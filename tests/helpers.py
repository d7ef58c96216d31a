"""Shared by the NTK, per-example-gradient and Gauss-Newton tests: a plain-JAX network
and the normwise relative error they are compared with."""

import jax
import numpy as np

RTOL = 1e-10


def rel_err(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


def mlp(params, x):
    """The network in plain JAX (jax.nn.relu has derivative 0 at 0, like bpcheck)."""
    for B, b in params[:-1]:
        x = jax.nn.relu(x @ B.T + b)
    B, b = params[-1]
    return x @ B.T + b
