"""On a GPU: JAX arrays there are computed there (results on the same device, never via
the host), agree with JAX's own derivatives in float64 and, with no TF32 passes, in
float32; a PyTorch model on CUDA is read and its per-example gradients equal torch.func's.
Skipped without a GPU (JAX's CUDA build, or torch with CUDA)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import bpcheck
from helpers import rel_err


def _jax_gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:  # no GPU backend in this JAX
        return None


GPU = _jax_gpu()
needs_jax_gpu = pytest.mark.skipif(GPU is None, reason="JAX sees no GPU")

WIDTHS = (20, 48, 48, 5)
N = 24
TOL = {"float64": 1e-10, "float32": 2e-5}
"""Relative to the largest entry.  float32 with TF32 passes (10-bit mantissas, JAX's
default matmul precision on NVIDIA GPUs) is off by about 1e-3 here."""


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = [((rng.standard_normal((d, dp)) / np.sqrt(dp)).astype(dtype),
               (0.1 * rng.standard_normal(d)).astype(dtype))
              for dp, d in zip(WIDTHS[:-1], WIDTHS[1:])]
    X = rng.standard_normal((N, WIDTHS[0])).astype(dtype)
    y = rng.integers(0, WIDTHS[-1], N)
    P = sum(d * (dp + 1) for dp, d in zip(WIDTHS[:-1], WIDTHS[1:]))
    v = rng.standard_normal(P).astype(dtype)
    on = lambda a: jax.device_put(a, GPU)
    return [(on(B), on(b)) for B, b in params], on(X), on(y), on(v)


def _mlp(act):
    def f(params, x):
        for B, b in params[:-1]:
            x = act(x @ B.T + b)
        B, b = params[-1]
        return x @ B.T + b
    return f


def _flat(tree_of_layers, lead):
    return jnp.concatenate([t.reshape(lead + (-1,)) for pair in tree_of_layers for t in pair],
                           axis=-1)


def _references(params, X, y, v, act):
    """Everything from JAX's own derivatives, at the highest matmul precision."""
    f = _mlp(act)
    with jax.default_matmul_precision("highest"):
        z = f(params, X)

        def loss(p, x, t):
            return -jax.nn.log_softmax(f(p, x[None])[0])[t]

        g = _flat(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, X, y), (N,))
        J = _flat(jax.vmap(jax.jacrev(lambda p, x: f(p, x[None])[0]), in_axes=(None, 0))(params, X),
                  (N, WIDTHS[-1]))
        p = jax.nn.softmax(z)
        Jv = J @ v
        u = (p * Jv - p * jnp.sum(p * Jv, axis=1, keepdims=True)) / N
        return {"forward": z, "per_example_grads": g,
                "per_example_grad_norms": jnp.linalg.norm(g, axis=1),
                "jacobian": J, "ntk": jnp.einsum("ikp,jlp->ijkl", J, J),
                "gauss_newton_matvec": jnp.einsum("nkp,nk->p", J, u)}


ACTS = {"relu": jax.nn.relu, "tanh": jnp.tanh}


@needs_jax_gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ACTS)
def test_jax_arrays_on_a_gpu_are_computed_there_and_agree_with_jax(dtype, act):
    params, X, y, v = _problem(dtype)
    want = _references(params, X, y, v, ACTS[act])
    op = bpcheck.gauss_newton_operator(params, X, activation=act)
    got = {"forward": bpcheck.forward(params, X, activation=act),
           "per_example_grads": bpcheck.per_example_grads(params, X, y, activation=act, flat=True),
           "per_example_grad_norms": bpcheck.per_example_grad_norms(params, X, y, activation=act),
           "jacobian": bpcheck.jacobian(params, X, activation=act),
           "ntk": bpcheck.ntk(params, X, activation=act),
           "gauss_newton_matvec": bpcheck.gauss_newton_matvec(params, X, v, activation=act),
           "operator": op @ v}
    want["operator"] = want["gauss_newton_matvec"]
    for name, result in got.items():
        assert isinstance(result, jax.Array), name
        assert result.devices() == {GPU}, f"{name} came back on {result.devices()}"
        assert result.dtype == np.dtype(dtype), name
        assert rel_err(result, want[name]) < TOL[dtype], (name, rel_err(result, want[name]))


@needs_jax_gpu
def test_a_repeat_call_on_a_gpu_gives_the_same_result_and_still_checks_for_nan():
    params, X, y, _ = _problem("float32")
    first = bpcheck.per_example_grads(params, X, y, flat=True)
    again = bpcheck.per_example_grads(params, X, y, flat=True)  # replayed
    assert again.devices() == {GPU}
    assert np.array_equal(np.asarray(first), np.asarray(again))
    bad = X.at[3, 2].set(jnp.nan)
    with pytest.raises(ValueError, match="X: contains NaN or inf"):
        bpcheck.per_example_grads(params, bad, y, flat=True)


def test_a_torch_model_on_cuda_is_read_and_its_gradients_equal_torch_func():
    torch = pytest.importorskip("torch", reason="the PyTorch adapter needs torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    from torch import nn
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 48), nn.Tanh(), nn.Linear(48, 48), nn.Tanh(),
                          nn.Linear(48, 5)).to(torch.float64).to("cuda")
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.standard_normal((N, 20))).to("cuda")
    y = torch.from_numpy(rng.integers(0, 5, N)).to("cuda")
    net = bpcheck.network(model)  # compares the model's own forward pass (on the GPU)
    with torch.no_grad():
        assert rel_err(bpcheck.forward(net, X), model(X).cpu().numpy()) < TOL["float64"]
    got = bpcheck.per_example_grads(model, X, y)
    params = {k: t.detach() for k, t in model.named_parameters()}

    def loss(p, x, t):
        return nn.functional.cross_entropy(functional_call(model, p, (x[None],)), t[None],
                                           reduction="sum")

    want = vmap(grad(loss), in_dims=(None, 0, 0))(params, X, y)
    assert set(got) == set(want)
    for k in want:
        assert rel_err(got[k], want[k].cpu().numpy()) < TOL["float64"], k
