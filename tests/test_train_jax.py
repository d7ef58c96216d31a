"""bpcheck.train.jax_loop: the compiled loop (jit over lax.scan) and vmap over networks."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bpcheck._compat import enable_x64
from bpcheck.spiral import make_spiral
from bpcheck.train import (
    TrainingDiverged,
    jax_step,
    lecture_init,
    train_jax,
    train_jax_many,
    train_softmax,
    train_two_layer,
)


@pytest.fixture(scope="module")
def case_study():
    rng = np.random.RandomState(0)
    X, y = make_spiral(seed=rng)
    return X, y, rng.get_state()


def _rng(state):
    rng = np.random.RandomState()
    rng.set_state(state)
    return rng


@pytest.mark.parametrize("widths", [[2, 3], [2, 100, 3]])
def test_numpy_and_jax_trainers_follow_the_same_loss_trajectory(case_study, widths):
    X, y, state = case_study
    params = lecture_init(widths, _rng(state))
    numpy_trainer = train_softmax if len(widths) == 2 else train_two_layer
    reference = numpy_trainer(X, y, params, iters=100)
    compiled = train_jax(X, y, params, iters=100)
    assert compiled.losses.dtype == np.float64
    np.testing.assert_allclose(compiled.losses, reference.losses, rtol=1e-9, atol=0)
    np.testing.assert_allclose(compiled.final_loss, reference.final_loss, rtol=1e-9)
    for (B, b), (B2, b2) in zip(compiled.params, reference.params):
        np.testing.assert_allclose(B, B2, rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(b, b2, rtol=1e-7, atol=1e-12)


def test_jax_two_layer_10000_steps_reaches_the_case_study_accuracy(case_study):
    X, y, state = case_study
    result = train_jax(X, y, lecture_init([2, 100, 3], _rng(state)), iters=10_000)
    assert result.train_accuracy >= 0.97
    assert abs(result.losses[0] - np.log(3)) < 0.003
    assert result.losses.shape == (10_000,)


def test_jax_softmax_reaches_the_case_study_accuracy(case_study):
    X, y, state = case_study
    result = train_jax(X, y, lecture_init([2, 3], _rng(state)), iters=200)
    assert 0.45 <= result.train_accuracy <= 0.56


def test_progress_reports_in_chunks_without_changing_the_arithmetic(case_study):
    X, y, state = case_study
    params = lecture_init([2, 100, 3], _rng(state))
    reports = []
    chunked = train_jax(X, y, params, iters=120, progress=lambda i, loss: reports.append((i, loss)))
    whole = train_jax(X, y, params, iters=120)
    np.testing.assert_array_equal(chunked.losses, whole.losses)
    assert reports[-1] == (120, chunked.losses[-1]) and len(reports) > 10
    assert [i for i, _ in reports] == sorted(i for i, _ in reports)


def test_vmap_over_seeds_equals_separate_runs():
    X, y = make_spiral()
    nets = [lecture_init([2, 16, 3], seed) for seed in (0, 1, 2)]
    many = train_jax_many(X, y, nets, iters=50)
    assert many.losses.shape == (3, 50) and many.params[0][0].shape == (3, 16, 2)
    for m, params in enumerate(nets):
        one = train_jax(X, y, params, iters=50)
        np.testing.assert_allclose(many.losses[m], one.losses, rtol=1e-12)
        np.testing.assert_allclose(many.final_losses[m], one.final_loss, rtol=1e-12)
        assert many.train_accuracies[m] == one.train_accuracy


def test_networks_trained_in_groups_equal_networks_trained_all_at_once():
    X, y = make_spiral()
    nets = [lecture_init([2, 8, 3], seed) for seed in range(5)]
    together = train_jax_many(X, y, nets, iters=30, group_size=None)
    grouped = train_jax_many(X, y, nets, iters=30, group_size=2)  # groups 2, 2 and a rest of 1
    np.testing.assert_allclose(grouped.losses, together.losses, rtol=1e-12)
    np.testing.assert_allclose(grouped.params[0][0], together.params[0][0], rtol=1e-12)
    with pytest.raises(ValueError, match="group_size: expected an int >= 1"):
        train_jax_many(X, y, nets, iters=3, group_size=0)


@pytest.mark.parametrize("workers", [2, 3, 9])
def test_networks_split_across_worker_threads_equal_one_worker(workers):
    X, y = make_spiral()
    nets = [lecture_init([2, 8, 3], seed) for seed in range(5)]
    steps = [0.5, 1.0, 0.25, 1.0, 0.75]  # each network keeps its own step size in its slice
    one = train_jax_many(X, y, nets, step_size=steps, iters=30, workers=1)
    split = train_jax_many(X, y, nets, step_size=steps, iters=30, workers=workers, group_size=2)
    # the same arithmetic per network; batched kernels of other sizes may round differently
    np.testing.assert_allclose(split.losses, one.losses, rtol=1e-12)
    for (B1, b1), (B2, b2) in zip(split.params, one.params):
        np.testing.assert_allclose(B1, B2, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(b1, b2, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(split.train_accuracies, one.train_accuracies)


def test_worker_threads_keep_the_callers_x64_context():
    """The enable_x64 context manager holds for the calling thread only; the workers must
    train in the caller's mode (they ran in 32-bit mode and failed inside the scan)."""
    X, y = make_spiral(n_per_class=20)
    nets = [lecture_init([2, 6, 3], seed) for seed in range(3)]
    jax.config.update("jax_enable_x64", False)
    try:
        with enable_x64(True):
            split = train_jax_many(X, y, nets, iters=20, dtype="float64", workers=2)
    finally:
        jax.config.update("jax_enable_x64", True)
    one = train_jax_many(X, y, nets, iters=20, dtype="float64", workers=1)
    assert split.params[0][0].dtype == np.float64
    np.testing.assert_allclose(split.losses, one.losses, rtol=1e-12)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, None, "many"])
def test_a_bad_worker_count_is_reported(workers):
    X, y = make_spiral(n_per_class=5)
    with pytest.raises(ValueError, match=f"workers: expected an int >= 1.*got {workers!r}"):
        train_jax_many(X, y, [lecture_init([2, 3], 0)] * 2, iters=3, workers=workers)


def test_vmap_over_step_sizes_equals_separate_runs():
    X, y = make_spiral()
    params = lecture_init([2, 16, 3], 0)
    steps = [0.1, 0.5, 1.0]
    many = train_jax_many(X, y, [params] * 3, step_size=steps, iters=40)
    for m, step in enumerate(steps):
        one = train_jax(X, y, params, step_size=step, iters=40)
        np.testing.assert_allclose(many.losses[m], one.losses, rtol=1e-12)
    assert many.losses[2, -1] < many.losses[0, -1]  # the bigger step gets further in 40 steps


def test_divergence_names_iteration_step_size_and_network():
    X, y = make_spiral()
    params = lecture_init([2, 16, 3], 0)
    with pytest.raises(TrainingDiverged, match=r"at iteration \d+ with step size 100000000.0"):
        train_jax(X, y, params, step_size=1e8, iters=50)
    with pytest.raises(TrainingDiverged, match="network 1 became .* with step size 100000000.0"):
        train_jax_many(X, y, [params] * 2, step_size=[1.0, 1e8], iters=50)
    many = train_jax_many(X, y, [params] * 2, step_size=[1.0, 1e8], iters=50,
                          allow_divergence=True)
    assert np.isfinite(many.losses[0]).all() and not np.isfinite(many.losses[1]).all()
    # the diverged network's accuracy is NaN (it read 1/3: argmax of a row of NaN is 0)
    assert np.isfinite(many.train_accuracies[0]) and np.isnan(many.train_accuracies[1])


def test_float32_runs_and_float64_without_x64_mode_is_a_clear_error():
    X, y = make_spiral()
    params = lecture_init([2, 16, 3], 0)
    result = train_jax(X, y, params, iters=20, dtype="float32")
    assert result.params[0][0].dtype == np.float32
    with enable_x64(False), pytest.raises(ValueError, match="float64 needs JAX's 64-bit"):
        train_jax(X, y, params, iters=20, dtype="float64")


def test_step_size_list_of_the_wrong_length_is_reported():
    X, y = make_spiral(n_per_class=5)
    with pytest.raises(ValueError, match="step_size: expected one number or 2"):
        train_jax_many(X, y, [lecture_init([2, 3], 0)] * 2, step_size=[1.0, 2.0, 3.0], iters=5)


def test_jax_step_is_a_pure_function_of_its_inputs():
    X, y = make_spiral(n_per_class=5)
    params = [(jax.numpy.asarray(B), jax.numpy.asarray(b)) for B, b in lecture_init([2, 4, 3], 0)]
    Y = jax.numpy.asarray(np.eye(3)[y])
    step = jax.jit(jax_step)
    a, loss_a = step(params, X, Y, 1.0, 1e-3)
    b, loss_b = step(params, X, Y, 1.0, 1e-3)
    assert float(loss_a) == float(loss_b)
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_importing_bpcheck_changes_no_jax_setting_and_loads_no_optional_extra():
    code = (
        "import sys, jax; before = jax.config.jax_enable_x64\n"
        "import bpcheck, bpcheck.train, bpcheck.spiral, bpcheck.train.cli\n"
        "assert jax.config.jax_enable_x64 == before == False, 'x64 changed'\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'extra loaded'\n"
    )
    env = {"PATH": ""}  # no JAX_* variable; a source tree on PYTHONPATH still found
    env.update({k: v for k, v in os.environ.items() if k == "PYTHONPATH"})
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
