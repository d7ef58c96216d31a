"""The public API: every name in __all__ imports, and importing changes no JAX setting."""

import subprocess
import sys

import bpcheck


def test_every_public_name_is_importable():
    for name in bpcheck.__all__:
        assert getattr(bpcheck, name) is not None, name
    assert sorted(bpcheck.__all__) == sorted(set(bpcheck.__all__))


def test_import_changes_no_global_jax_setting():
    code = (
        "import jax; before = {k: getattr(jax.config, k) for k in "
        "('jax_enable_x64', 'jax_default_matmul_precision', 'jax_platforms')}; "
        "import bpcheck, bpcheck.numcheck, bpcheck.verify; "
        "after = {k: getattr(jax.config, k) for k in before}; "
        "assert before == after, (before, after); print('unchanged', after['jax_enable_x64'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unchanged False"


def test_cli_help_lists_commands_and_an_example():
    out = subprocess.run([sys.executable, "-m", "bpcheck", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("verify", "train", "grade"):
        assert command in out
    assert "example" in out
    bad = subprocess.run([sys.executable, "-m", "bpcheck", "frobnicate"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr


def test_every_jax_call_works_under_strict_rank_promotion():
    """With jax_numpy_rank_promotion = "raise" (a common strict setting) every JAX call
    failed: the kernels add a bias of shape (n,) to an (N, n) array."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bpcheck.train.jax_loop import train_jax

    params = bpcheck.init_params([4, 6, 3], seed=0)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    v = rng.standard_normal(sum(B.size + b.size for B, b in params))
    calls = {
        "forward": lambda p, X: bpcheck.forward(p, X),
        "jacobian": lambda p, X: bpcheck.jacobian(p, X),
        "ntk": lambda p, X: bpcheck.ntk(p, X),
        "per_example_grads": lambda p, X: bpcheck.per_example_grads(p, X, y),
        "per_example_grad_norms": lambda p, X: bpcheck.per_example_grad_norms(p, X, y),
        "gauss_newton": lambda p, X: bpcheck.gauss_newton(p, X, y=y),
        "gauss_newton_matvec": lambda p, X: bpcheck.gauss_newton_matvec(p, X, v, y=y),
        "gauss_newton_operator": lambda p, X: bpcheck.gauss_newton_operator(p, X, y=y) @ v,
    }
    as_jax = [(jnp.asarray(B, jnp.float32), jnp.asarray(b, jnp.float32)) for B, b in params]
    X32 = jnp.asarray(X, jnp.float32)
    with jax.numpy_rank_promotion("raise"):
        for name, call in calls.items():
            for _ in range(2):  # the first call and the repeat (its own path)
                got = np.asarray(call(as_jax, X32), np.float64)
            want = np.asarray(call(params, X))
            assert np.allclose(got, want, rtol=1e-4, atol=1e-5), name
        train_jax(X, y, params, iters=3, dtype="float32")


def test_ctrl_c_ends_a_command_with_one_line_and_status_130(tmp_path):
    """Ctrl-C printed about 100 lines of chained SymPy tracebacks from bpcheck verify."""
    import signal
    import time

    # Ctrl-C as a terminal's user meets it: a suite started in the background by a shell
    # without job control ignores SIGINT, which every child inherits (and Python respects),
    # so the child sets Python's own handler before it runs `python -m bpcheck verify` (not
    # a preexec_fn: forking the suite's process warns under JAX, an error here)
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv = ['bpcheck', 'verify']; runpy.run_module('bpcheck', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", start], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, cwd=tmp_path)
    time.sleep(4)  # importing and starting the symbolic checks
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip() == "bpcheck verify: interrupted", err[-2000:]


def test_network_of_something_that_is_no_model_says_what_it_expected():
    """bpcheck.network(None) was told to state a layout, as a list of layers would be."""
    import pytest

    for thing in (None, 42, "mlp"):
        with pytest.raises(TypeError, match=rf"expected a PyTorch nn.Sequential.*got "
                                            rf"{type(thing).__name__}"):
            bpcheck.network(thing)


def test_activation_and_loss_methods_take_the_array_module_from_their_input():
    """Activation.value(z) and Loss.grad(z, y) needed an undocumented xp argument."""
    import jax.numpy as jnp
    import numpy as np

    act, loss = bpcheck.Activation("tanh"), bpcheck.Loss("cross_entropy")
    z, y = np.array([[0.5, -1.0, 2.0]]), np.array([2])
    assert np.allclose(act.value(z), np.tanh(z)) and type(act.value(z)) is np.ndarray
    assert np.allclose(act.derivative(jnp.asarray(z)), 1 - np.tanh(z) ** 2)
    p = np.exp(z) / np.exp(z).sum()
    assert np.allclose(loss.grad(z, y), p - np.eye(3)[y])
    assert np.allclose(loss.hessian(jnp.asarray(z), jnp.asarray(y))[0],
                       np.diag(p[0]) - np.outer(p[0], p[0]))
