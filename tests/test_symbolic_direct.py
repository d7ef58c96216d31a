"""The direct derivatives agree with two numeric references: bpcheck.jacobian and jax.jacrev."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import symengine as se

from bpcheck import flatten_params, forward, init_params, jacobian, unflatten_params
from bpcheck.symbolic import build_network
from bpcheck.symbolic.direct import direct_derivatives


def _values(net, params, x, model):
    """Symbol values at a point: parameters, input, and the ReLU pattern / tanh values."""
    vals = {f"x[{j}]": x[j] for j in range(len(x))}
    a = x
    for l, (B, b) in enumerate(params, start=1):
        vals.update({f"B{l}[{i},{j}]": B[i, j] for i in range(B.shape[0]) for j in range(B.shape[1])})
        vals.update({f"b{l}[{i}]": b[i] for i in range(len(b))})
        z = B @ a + b
        if l <= net.L:
            if model == "relu":
                mask = (z > 0).astype(float)
                vals.update({f"d{l}[{i}]": mask[i] for i in range(len(z))})
                a = z * mask
            else:
                a = np.tanh(z)
                vals.update({f"a{l}[{i}]": a[i] for i in range(len(z))})
                vals.update({f"s{l}[{i}]": 1 - a[i] ** 2 for i in range(len(z))})
    return {se.Symbol(k): se.Float(float(v)) for k, v in vals.items()}


def _symbolic_jacobian(net, model, vals):
    true = direct_derivatives(net)
    cols = []
    for l in range(1, net.L + 2):
        for block in (true.U[l], true.V[l]):
            cols.append(np.array([[float(e.xreplace(true.renaming).xreplace(vals)) for e in row]
                                  for row in block]))
    return np.concatenate(cols, axis=1)


@pytest.mark.parametrize("widths", [[3, 2], [2, 3, 4, 2], [3, 4, 3, 1]])
def test_direct_derivative_matches_the_numeric_jacobian_relu(widths):
    net = build_network(widths, "relu")
    params = init_params(widths, seed=1)
    params = [(B, b + 0.1) for B, b in params]
    x = np.array([0.3, -0.7, 1.1][: widths[0]])
    J = _symbolic_jacobian(net, "relu", _values(net, params, x, "relu"))
    np.testing.assert_allclose(J, jacobian(params, x), rtol=1e-12, atol=1e-12)


def test_direct_derivative_matches_jax_jacrev_sigma_as_tanh():
    widths = [2, 3, 3, 2]
    net = build_network(widths, "sigma")
    params = init_params(widths, seed=2)
    x = np.array([0.4, -0.9])

    def out(beta):
        a = jnp.asarray(x)
        ps = unflatten_params(beta, widths)
        for B, b in ps[:-1]:
            a = jnp.tanh(B @ a + b)
        B, b = ps[-1]
        return B @ a + b

    J_ref = np.asarray(jax.jacrev(out)(jnp.asarray(flatten_params(params))))
    J = _symbolic_jacobian(net, "sigma", _values(net, params, x, "sigma"))
    np.testing.assert_allclose(J, J_ref, rtol=1e-10, atol=1e-12)
    assert forward(params, x).shape == (2,)
