"""bpcheck.spiral: the CS231n spiral recipe, its random stream, and its argument checks."""

import numpy as np
import pytest

from bpcheck.spiral import legacy_rng, make_spiral


def _case_study_recipe_with_global_seed():
    """The case study's code verbatim (np.random.seed(0) and the global stream)."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        N, D, K = 100, 2, 3
        X = np.zeros((N * K, D))
        y = np.zeros(N * K, dtype="uint8")
        for j in range(K):
            ix = range(N * j, N * (j + 1))
            r = np.linspace(0.0, 1, N)
            t = np.linspace(j * 4, (j + 1) * 4, N) + np.random.randn(N) * 0.2
            X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
            y[ix] = j
        W = 0.01 * np.random.randn(D, K)  # the softmax init that follows on the page
        return X, y, W
    finally:
        np.random.set_state(state)


def test_seed_0_reproduces_the_case_study_data_bit_for_bit():
    X_page, y_page, _ = _case_study_recipe_with_global_seed()
    X, y = make_spiral(seed=0)
    assert np.array_equal(X, X_page)
    assert np.array_equal(y, y_page.astype(np.int64))


def test_randomstate_stream_continues_like_the_global_stream():
    _, _, W_page = _case_study_recipe_with_global_seed()
    rng = np.random.RandomState(0)
    make_spiral(seed=rng)
    assert np.array_equal(0.01 * rng.randn(2, 3), W_page)


def test_make_spiral_leaves_the_global_numpy_stream_alone():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    make_spiral(seed=0)
    assert np.array_equal(np.random.rand(3), expected)


def test_shapes_labels_and_radius_follow_the_recipe():
    X, y = make_spiral(n_per_class=50, n_classes=4, noise=0.0, seed=7)
    assert X.shape == (200, 2) and y.shape == (200,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [50] * 4
    radius = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radius[:50], np.linspace(0, 1, 50), atol=1e-15)
    # noise 0: angles are exactly linspace(4j, 4(j+1)); x = (r sin t, r cos t)
    t = np.linspace(4, 8, 50)
    r = np.linspace(0, 1, 50)
    np.testing.assert_allclose(X[50:100], np.c_[r * np.sin(t), r * np.cos(t)])


def test_different_seeds_give_different_data():
    assert not np.array_equal(make_spiral(seed=0)[0], make_spiral(seed=1)[0])


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"n_per_class": 0}, ValueError, ["n_per_class", ">= 1", "0"]),
        ({"n_per_class": 2.5}, TypeError, ["n_per_class", "int", "2.5"]),
        ({"n_classes": 1}, ValueError, ["n_classes", ">= 2", "1"]),
        ({"n_classes": True}, TypeError, ["n_classes", "int"]),
        ({"noise": -0.1}, ValueError, ["noise", ">= 0", "-0.1"]),
        ({"noise": float("nan")}, ValueError, ["noise", "finite"]),
        ({"noise": "0.2"}, TypeError, ["noise", "'0.2'"]),
        ({"seed": -1}, ValueError, ["seed", "2**32", "-1"]),
        ({"seed": 2**32}, ValueError, ["seed", "2**32"]),
        ({"seed": 1.0}, TypeError, ["seed", "RandomState", "1.0"]),
    ],
)
def test_bad_arguments_get_errors_naming_argument_value_and_expectation(kwargs, error, words):
    with pytest.raises(error) as info:
        make_spiral(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_legacy_rng_passes_a_randomstate_through():
    rng = np.random.RandomState(3)
    assert legacy_rng(rng) is rng
