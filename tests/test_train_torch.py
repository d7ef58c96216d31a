"""bpcheck.train.torch_loop: the lecture's PyTorch loop, and what it means next to NumPy."""

import numpy as np
import pytest

from bpcheck.spiral import make_spiral
from bpcheck.train import lecture_init, train_two_layer

torch = pytest.importorskip("torch")

from bpcheck.train import train_torch


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X, y = make_spiral(seed=rng)
    return X, y, lecture_init([2, 100, 3], rng)


def test_numpy_and_torch_agree_to_1e_6_when_configured_to_mean_the_same(data):
    X, y, params = data
    reference = train_two_layer(X, y, params, iters=150)
    same = train_torch(X, y, params, iters=150, decay_biases=False, penalty_in_loss=True,
                       dtype="float64")
    np.testing.assert_allclose(same.losses, reference.losses, rtol=1e-6)
    np.testing.assert_allclose(same.final_loss, reference.final_loss, rtol=1e-6)
    for (B, b), (B2, b2) in zip(same.params, reference.params):
        np.testing.assert_allclose(B, B2, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(b, b2, rtol=1e-6, atol=1e-9)


def test_sgd_weight_decay_is_absent_from_the_reported_loss(data):
    X, y, params = data
    numpy_loss = train_two_layer(X, y, params, iters=1).losses[0]
    lecture = train_torch(X, y, params, iters=1, dtype="float64")  # the lecture's settings
    penalty = 0.5 * 1e-3 * sum(np.sum(B * B) for B, _ in params)
    assert lecture.losses[0] != numpy_loss
    np.testing.assert_allclose(lecture.losses[0] + penalty, numpy_loss, rtol=1e-12)


def test_sgd_weight_decay_also_decays_the_biases(data):
    X, y, params = data
    start = [(B, b + 0.5) for B, b in params]  # non-zero biases, so decay shows at step 1
    numpy_run = train_two_layer(X, y, start, iters=1)
    lecture = train_torch(X, y, start, iters=1, dtype="float64")
    no_bias_decay = train_torch(X, y, start, iters=1, dtype="float64", decay_biases=False)
    for l in range(2):
        b0 = start[l][1]
        # torch: b - lr * (grad + wd * b); numpy: b - lr * grad
        np.testing.assert_allclose(lecture.params[l][1],
                                   numpy_run.params[l][1] - 1.0 * 1e-3 * b0, rtol=1e-9)
        np.testing.assert_allclose(no_bias_decay.params[l][1], numpy_run.params[l][1], rtol=1e-9)


def test_lecture_loop_with_default_init_learns_the_spiral():
    X, y = make_spiral()
    result = train_torch(X, y, widths=[2, 100, 3], iters=300, seed=0)
    assert result.losses.shape == (300,)
    assert result.final_loss < 0.75 * result.losses[0]
    assert result.train_accuracy >= 0.6


def test_default_init_is_seeded_and_leaves_the_global_torch_stream_alone():
    X, y = make_spiral(n_per_class=10)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = train_torch(X, y, widths=[2, 8, 3], iters=2, seed=5)
    assert torch.equal(torch.rand(3), expected)
    b = train_torch(X, y, widths=[2, 8, 3], iters=2, seed=5)
    np.testing.assert_array_equal(a.params[0][0], b.params[0][0])


def test_torch_backend_reports_bad_settings():
    X, y = make_spiral(n_per_class=5)
    with pytest.raises(ValueError, match="widths: needed when params is None"):
        train_torch(X, y, iters=2)
    with pytest.raises(ValueError, match="dtype: expected 'float32' or 'float64', got 'int8'"):
        train_torch(X, y, widths=[2, 3], iters=2, dtype="int8")


def test_torch_trainer_checks_widths_params_and_float32_range():
    X, y = make_spiral(n_per_class=10)
    params = lecture_init([2, 10, 3], 0)
    with pytest.raises(ValueError, match=r"widths: \[2, 20, 3\] contradicts params, whose widths "
                                         r"are \[2, 10, 3\]"):
        train_torch(X, y, params, widths=[2, 20, 3], iters=2)
    with pytest.raises(ValueError, match="widths"):
        train_torch(X, y, widths=[2, 0, 3], iters=2)
    bad = [(params[0][0], np.zeros(1)), params[1]]
    with pytest.raises(ValueError, match=r"b\^\(1\) \(params\[0\]\[1\]\): expected shape \(10,\)"):
        train_torch(X, y, bad, iters=2)
    with pytest.raises(ValueError, match="step_size: expected at most 3.403e\\+38 in float32"):
        train_torch(X, y, params, step_size=1e39, iters=2)
    assert train_torch(X, y, params, widths=[2, 10, 3], iters=2).losses.shape == (2,)
    # the seed is checked as every other seed is (1.5 trained as seed 1), and widths too
    # small for the labels name widths, not params (none were given)
    with pytest.raises(TypeError, match=r"seed: expected an int in \[0, 2\*\*32\)"):
        train_torch(X, y, widths=[2, 10, 3], iters=2, seed=1.5)
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2\*\*32\)"):
        train_torch(X, y, widths=[2, 10, 3], iters=2, seed=-1)
    with pytest.raises(ValueError, match="widths: the network has 2 outputs but y has labels"):
        train_torch(X, y, widths=[2, 5, 2], iters=2)
