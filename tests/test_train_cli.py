"""bpcheck.train.cli: `bpcheck train`, its output, --json, --plot, and its error messages."""

import json
import re
import sys

import pytest

from bpcheck import cli as top_level
from bpcheck.train import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def final_loss(out: str) -> float:
    return float(re.search(r"final loss: (\S+)", out).group(1))


def test_help_shows_an_example_with_its_expected_result(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and "bpcheck train --model mlp" in out
    assert "final loss: 0.24503" in out and "train accuracy: 0.9800" in out


def test_the_help_example_prints_what_the_help_says(capsys, tmp_path):
    code, out, _ = run(capsys, "--model", "mlp", "--backend", "numpy", "--hidden", "100",
                         "--iters", "10000")
    assert code == 0
    assert abs(final_loss(out) - 0.24503) < 5e-6 and "train accuracy: 0.9800" in out
    code, out, _ = run(capsys, "--model", "softmax", "--no-progress")
    assert "final loss: 0.786281" in out and "train accuracy: 0.4933" in out


def test_softmax_run_prints_loss_and_accuracy_and_shows_progress_on_stderr(capsys, tmp_path):
    path = tmp_path / "run.json"
    code, out, err = run(capsys, "--model", "softmax", "--iters", "50", "--json", str(path))
    assert code == 0
    assert "final loss:" in out and "train accuracy:" in out
    assert "loss" in err and "50/50" in err and "final loss" not in err
    record = json.loads(path.read_text())
    assert len(record["losses"]) == 50
    assert {"losses", "final_loss", "train_accuracy"} <= set(record)
    assert record["widths"] == [2, 3] and record["loss_includes_penalty"] is True


def test_numpy_and_jax_backends_print_the_same_softmax_result(capsys):
    _, numpy_out, _ = run(capsys, "--model", "softmax", "--no-progress")
    _, jax_out, _ = run(capsys, "--model", "softmax", "--backend", "jax", "--no-progress")
    pick = [line for line in numpy_out.splitlines() if line.startswith(("final loss", "train accuracy"))]
    assert pick and all(line in jax_out for line in pick)


def test_deeper_numpy_nets_train_with_the_factored_gradient(capsys, tmp_path):
    path = tmp_path / "deep.json"
    code, out, _ = run(capsys, "--hidden", "8", "--hidden", "8", "--iters", "20",
                       "--no-progress", "--json", str(path))
    assert code == 0 and "Jacobian factors" in out
    assert json.loads(path.read_text())["widths"] == [2, 8, 8, 3]


def test_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "spiral.png"
    code, out, _ = run(capsys, "--iters", "30", "--hidden", "10", "--plot", str(path),
                       "--no-progress")
    assert code == 0 and f"wrote {path}" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_gets_a_clear_message_before_training(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    code, out, err = run(capsys, "--iters", "5", "--plot", str(tmp_path / "a.png"))
    assert code == 2 and "pip install 'bpcheck[plot]'" in err and "final loss" not in out


def test_missing_torch_gets_a_clear_message(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    code, _, err = run(capsys, "--backend", "torch", "--iters", "5")
    assert code == 2 and "pip install 'bpcheck[torch]'" in err


def test_torch_backend_runs_the_lecture_loop(capsys):
    pytest.importorskip("torch")
    code, out, _ = run(capsys, "--backend", "torch", "--iters", "20", "--hidden", "10",
                       "--no-progress")
    assert code == 0 and "cross-entropy only" in out and "float32" in out


def test_divergence_exits_1_naming_iteration_and_step_size(capsys):
    code, _, err = run(capsys, "--step-size", "1e8", "--iters", "100", "--hidden", "10",
                         "--no-progress")
    assert code == 1
    assert "diverged" in err and "at iteration" in err and "step size 100000000.0" in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--iters", "0"], ["argument --iters", "'0'", "[1, 100000000]"]),
        (["--iters", "ten"], ["argument --iters", "'ten'", "int"]),
        (["--step-size", "-1"], ["argument --step-size", "'-1'", "> 0"]),
        (["--step-size", "inf"], ["argument --step-size", "'inf'", "finite"]),
        (["--reg", "nan"], ["argument --reg", "'nan'", ">= 0"]),
        (["--seed", "-3"], ["argument --seed", "'-3'", "[0, 4294967295]"]),
        (["--hidden", "0"], ["argument --hidden", "'0'", ">= 1"]),
        (["--backend", "tensorflow"], ["argument --backend", "'tensorflow'", "numpy"]),
        (["--model", "softmax", "--hidden", "100"], ["argument --hidden", "100", "no hidden"]),
        (["--plot", "out.jpg"], ["argument --plot", "'out.jpg'", ".png"]),
        (["--json", "/no/such/folder/x.json"], ["argument --json", "/no/such/folder", "exist"]),
        # the torch backend (float32) raised a traceback for these
        (["--backend", "torch", "--step-size", "1e200"],
         ["argument --step-size", "3.403e+38 in float32", "1e+200"]),
        (["--dtype", "float32", "--reg", "1e39"], ["argument --reg", "float32", "1e+39"]),
    ],
)
def test_bad_arguments_name_the_argument_the_value_and_the_expectation(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_a_large_reg_is_named_and_a_rising_loss_is_noted(capsys):
    """--reg 1e200 was reported as a step-size problem, and a loss that
    climbed from 1.10 to 164 ended with exit status 0 and no word."""
    code, _, err = run(capsys, "--reg", "1e200", "--iters", "5", "--hidden", "10",
                       "--no-progress")
    assert code == 1 and "a smaller --reg: each step multiplies the weights by 1 - step " \
        "size x reg = -1e+200" in err
    code, out, err = run(capsys, "--step-size", "1000", "--iters", "200", "--hidden", "10",
                         "--no-progress")
    assert code == 0 and re.search(r"note: the loss rose from 1\.09\d* to \d", err), err
    code, _, err = run(capsys, "--iters", "50", "--hidden", "10", "--no-progress")
    assert code == 0 and "rose" not in err


def test_top_level_bpcheck_dispatches_train(capsys):
    assert top_level.main(["train", "--model", "softmax", "--iters", "3", "--no-progress"]) == 0
    assert "train accuracy:" in capsys.readouterr().out


def test_a_network_too_large_for_memory_is_named_not_a_traceback(monkeypatch, capsys):
    # `bpcheck train --hidden 100000000` ended in NumPy's _ArrayMemoryError traceback
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.49 GiB")

    monkeypatch.setattr(cli, "_train", no_memory)
    assert cli.main(["--hidden", "100000000", "--iters", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bpcheck train: error: --hidden 100000000: the network does not fit in memory " \
           "(Unable to allocate 1.49 GiB)" in err


def test_plot_grid_step_is_checked():
    pytest.importorskip("matplotlib")
    from bpcheck.spiral import make_spiral
    from bpcheck.train import lecture_init, train_two_layer
    from bpcheck.train.plot import plot_training

    X, y = make_spiral(n_per_class=10)
    result = train_two_layer(X, y, lecture_init([2, 5, 3], 0), iters=2)
    for bad in (0, -0.02, float("nan"), 1e-5, "0.1", True):
        with pytest.raises(ValueError, match="grid_step: expected a positive number giving at "
                                             "most 4,000,000 grid points"):
            plot_training(result, X, y, "/nonexistent/x.png", grid_step=bad)
