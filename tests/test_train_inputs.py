"""Trainer inputs and outcomes at the edges: every trainer checks parameters as the library
does, and a loss that turns NaN or inf on the last update is reported like any other."""

import jax.numpy as jnp
import numpy as np
import pytest

from bpcheck.spiral import make_spiral
from bpcheck.train import (
    TrainingDiverged,
    lecture_init,
    train_factored,
    train_jax,
    train_jax_many,
    train_softmax,
    train_two_layer,
)
from bpcheck.train.cli import main as train_main

X, Y = make_spiral(n_per_class=20)
TRAINERS = {
    "softmax": (train_softmax, [2, 3]),
    "two_layer": (train_two_layer, [2, 10, 3]),
    "factored": (train_factored, [2, 10, 3]),
    "jax": (train_jax, [2, 10, 3]),
}


@pytest.mark.parametrize("name", TRAINERS)
def test_divergence_on_the_last_update_is_reported(name):
    trainer, widths = TRAINERS[name]
    with pytest.raises(TrainingDiverged, match=r"became (inf|nan) at iteration 1 with step size 1e\+300"):
        trainer(X, Y, lecture_init(widths, 0), step_size=1e300, iters=1)


def test_divergence_on_the_last_update_is_reported_for_many_networks():
    nets = [lecture_init([2, 10, 3], s) for s in range(2)]
    with pytest.raises(TrainingDiverged, match="network 1 became .* at iteration 1 with step size"):
        train_jax_many(X, Y, nets, step_size=[1.0, 1e300], iters=1)
    many = train_jax_many(X, Y, nets, step_size=[1.0, 1e300], iters=1, allow_divergence=True)
    assert np.isfinite(many.final_losses[0]) and not np.isfinite(many.final_losses[1])


@pytest.mark.parametrize("name", TRAINERS)
def test_a_bias_of_the_wrong_length_is_an_error_not_a_broadcast(name):
    trainer, widths = TRAINERS[name]
    params = lecture_init(widths, 0)
    params[0] = (params[0][0], np.zeros(1))
    with pytest.raises(ValueError, match=r"b\^\(1\) \(params\[0\]\[1\]\): expected shape \(\d+,\)"):
        trainer(X, Y, params, iters=2)


@pytest.mark.parametrize("name", TRAINERS)
def test_a_layer_without_a_bias_is_refused_not_given_a_bias_to_train(name):
    # the library computes such a layer with a zero bias; a trainer would move that zero
    trainer, widths = TRAINERS[name]
    params = lecture_init(widths, 0)
    params[-1] = (params[-1][0], None)
    with pytest.raises(ValueError, match=rf"params: b\^\({len(widths) - 1}\) is None .*give zeros"):
        trainer(X, Y, params, iters=2)


@pytest.mark.parametrize("name", TRAINERS)
def test_nan_in_the_starting_parameters_is_named(name):
    trainer, widths = TRAINERS[name]
    params = lecture_init(widths, 0)
    params[-1][0][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"B\^\(\d\) \(params\[\d\]\[0\]\).*NaN"):
        trainer(X, Y, params, iters=2)


@pytest.mark.parametrize("name", ["softmax", "two_layer", "factored"])
def test_jax_parameters_are_accepted_by_the_numpy_trainers(name):
    trainer, widths = TRAINERS[name]
    params = lecture_init(widths, 0)
    want = trainer(X, Y, params, iters=5)
    got = trainer(X, Y, [(jnp.asarray(B), jnp.asarray(b)) for B, b in params], iters=5)
    np.testing.assert_allclose(got.losses, want.losses, rtol=1e-12)


def test_networks_of_different_widths_cannot_be_trained_together():
    nets = [lecture_init([2, 10, 3], 0), lecture_init([2, 10, 3, 3], 1)]
    with pytest.raises(ValueError, match=r"params_list\[1\]: widths \[2, 10, 3, 3\] differ from "
                                         r"params_list\[0\]'s \[2, 10, 3\]"):
        train_jax_many(X, Y, nets, iters=2)
    bad = [lecture_init([2, 10, 3], 0), lecture_init([2, 10, 3], 1)]
    bad[1][1] = (bad[1][1][0], np.zeros(1))
    with pytest.raises(ValueError, match=r"params_list\[1\]: b\^\(2\)"):
        train_jax_many(X, Y, bad, iters=2)


def test_counts_and_dtypes_are_checked_and_numpy_ints_accepted():
    nets = [lecture_init([2, 6, 3], s) for s in range(3)]
    one = train_jax_many(X, Y, nets, iters=3, group_size=np.int64(2), workers=np.int64(2))
    assert one.losses.shape == (3, 3)
    with pytest.raises(ValueError, match="dtype: expected float32 or float64, got 'bogus'"):
        train_jax(X, Y, nets[0], iters=2, dtype="bogus")
    with pytest.raises(ValueError, match=r"iters: expected an int in \[1, 100_000_000\], got 10000000000"):
        train_two_layer(X, Y, lecture_init([2, 10, 3], 0), iters=10**10)


def test_cli_refuses_one_file_for_two_outputs(tmp_path, capsys):
    path = str(tmp_path / "out.png")
    with pytest.raises(SystemExit) as exc:
        train_main(["--json", path, "--plot", path, "--iters", "2"])
    assert exc.value.code == 2
    assert "is also the path given to --plot" in capsys.readouterr().err


def test_the_trainers_take_the_network_the_layout_hint_makes():
    # the error for the lecture's (in, out) weights says to read them with
    # bpcheck.network(layers, layout='in_out'); the trainers then refused what it made
    import bpcheck
    from bpcheck.spiral import make_spiral
    from bpcheck.train import lecture_init, train_factored, train_softmax, train_two_layer

    X, y = make_spiral(n_per_class=20)
    params = lecture_init([2, 10, 3], 0)
    lecture_layout = [(B.T, b) for B, b in params]
    with pytest.raises(ValueError, match="layout='in_out'"):
        train_two_layer(X, y, lecture_layout, iters=3)
    net = bpcheck.network(lecture_layout, layout="in_out")
    for train in (train_two_layer, train_factored):
        np.testing.assert_array_equal(train(X, y, net, iters=3).losses,
                                      train(X, y, params, iters=3).losses)
    soft = lecture_init([2, 3], 1)
    np.testing.assert_array_equal(
        train_softmax(X, y, bpcheck.network([(B.T, b) for B, b in soft], layout="in_out"),
                      iters=3).losses, train_softmax(X, y, soft, iters=3).losses)
    tanh = bpcheck.network(lecture_layout, layout="in_out", activation="tanh")
    with pytest.raises(ValueError, match="the trainers train ReLU networks; this model's "
                                         "hidden layers use tanh"):
        train_two_layer(X, y, tanh, iters=3)
