"""The numeric checker: it passes the recursion and says no to planted errors."""

import json

import numpy as np
import pytest

import bpcheck
import bpcheck.numcheck
from bpcheck.numcheck import (
    check_network,
    draw_inputs,
    kink_margin,
    run_random_checks,
)
from bpcheck.verify import main as verify_main

WIDTHS = [4, 5, 5, 5, 3]  # equal hidden widths, so an off-by-one mask still has the right shape


def _network(widths=WIDTHS, seed=0):
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal((d, dp)) * np.sqrt(2.0 / dp), 0.1 * rng.standard_normal(d))
              for dp, d in zip(widths[:-1], widths[1:])]
    X, _ = draw_inputs(rng, params, 4)
    return params, X


def _assemble(factors, block):
    """A Jacobian from per-layer records, with ``block(V, a_prev)`` giving the weight block."""
    cols = []
    for f in factors:
        cols.append(block(f.V, f.a_prev))
        cols.append(f.V)
    return np.concatenate(cols, axis=2)


def _kron_I_a(V, a):  # correct: U[n, k, i*d_prev + j] = V[n, k, i] a[n, j]
    return np.einsum("nki,nj->nkij", V, a).reshape(V.shape[0], V.shape[1], -1)


def _kron_a_I(V, a):  # wrong: (a' kron I), index j*d + i
    return np.einsum("nki,nj->nkji", V, a).reshape(V.shape[0], V.shape[1], -1)


def swapped_kronecker(params, X):
    return _assemble(bpcheck.jacobian_factors(params, X), _kron_a_I)


def column_stacked_vec(params, X):
    """Columns of vec(B) ordered as B.T.reshape(-1) would put them (column-stacking)."""
    J = bpcheck.jacobian(params, X)
    out = J.copy()
    off = 0
    for B, _ in params:
        d, dp = B.shape
        order = np.arange(d * dp).reshape(d, dp).T.reshape(-1)
        out[:, :, off:off + d * dp] = J[:, :, off:off + d * dp][:, :, order]
        off += d * dp + d
    return out


def _factors_without_masks(params, X):
    """V^(l) = V^(l+1) B^(l+1): the recursion with D^(l) dropped."""
    f = bpcheck.jacobian_factors(params, X)
    V = f[-1].V
    out = [f[-1]]
    for l in range(len(params) - 2, -1, -1):
        V = V @ params[l + 1][0]
        out.append(f[l]._replace(V=V))
    return out[::-1]


def dropped_mask(params, X):
    return _assemble(_factors_without_masks(params, X), _kron_I_a)


def off_by_one_mask(params, X):
    """V^(l) = V^(l+1) B^(l+1) D^(l+1): the next layer's mask used one layer too early."""
    f = bpcheck.jacobian_factors(params, X)
    V = f[-1].V
    out = [f[-1]]
    for l in range(len(params) - 2, -1, -1):
        mask = f[l + 1].D if l + 1 < len(params) - 1 else f[l].D  # output layer has no mask
        V = (V @ params[l + 1][0]) * mask[:, None, :]
        out.append(f[l]._replace(V=V))
    return _assemble(out[::-1], _kron_I_a)


def off_by_one_input(params, X):
    """U^(l) = V^(l) (I kron a^(l)'): the layer's output used in place of its input."""
    f = bpcheck.jacobian_factors(params, X)
    shifted = [r._replace(a_prev=f[i + 1].a_prev) if 0 < i < len(f) - 1 else r
               for i, r in enumerate(f)]
    return _assemble(shifted, _kron_I_a)


def test_checker_passes_the_recursion():
    params, X = _network()
    result = check_network(params, X)
    assert result.passed, result.message
    assert result.jacrev_error < 1e-12 and result.fd_error < 1e-8 and result.fd_columns == 12


@pytest.mark.parametrize("planted", [swapped_kronecker, column_stacked_vec, dropped_mask,
                                     off_by_one_mask, off_by_one_input])
def test_checker_catches_planted_error(planted):
    params, X = _network()
    assert not np.allclose(planted(params, X), bpcheck.jacobian(params, X))  # it is really wrong
    result = check_network(params, X, jacobian_fn=planted, fd_columns=200)
    assert not result.passed
    assert result.jacrev_error > 1e-3
    assert result.fd_error > 1e-3
    assert "jacrev error" in result.message


def test_checker_reports_a_jacobian_that_raises_or_has_the_wrong_shape():
    params, X = _network()

    def raises(p, x):
        raise RuntimeError("boom")

    r = check_network(params, X, jacobian_fn=raises)
    assert not r.passed and "RuntimeError: boom" in r.message
    r = check_network(params, X, jacobian_fn=lambda p, x: bpcheck.jacobian(p, x)[:, :, :-1])
    assert not r.passed and "shape" in r.message


def test_random_checks_fail_when_the_implementation_is_wrong():
    results = run_random_checks(seed=3, networks=6, jacobian_fn=dropped_mask)
    assert not all(r.passed for r in results)


def test_kink_margin_flags_a_pre_activation_at_zero():
    B1 = np.array([[1.0, -1.0], [1.0, 1.0]])
    params = [(B1, np.zeros(2)), (np.ones((1, 2)), np.zeros(1))]
    assert kink_margin(params, np.array([0.3, 0.3])) < 1.0  # z_1 = 0 exactly
    assert kink_margin(params, np.array([0.3, 0.3 + 1e-17])) < 1.0  # within rounding
    assert kink_margin(params, np.array([0.3, 0.2])) > 1.0


def test_inputs_at_a_kink_are_detected_and_left_out():
    B1 = np.array([[1.0, -1.0], [1.0, 1.0]])
    params = [(B1, np.zeros(2)), (np.array([[1.0, 2.0]]), np.zeros(1))]
    X = np.array([[0.3, 0.3], [0.5, -0.2]])
    result = check_network(params, X)
    assert result.passed
    assert any("kink" in n and "[0]" in n for n in result.notes)


def test_draw_inputs_redraws_near_kinks_and_says_so():
    # z^(1) = x_1 rounded: a one-unit layer whose pre-activation is tiny everywhere
    params = [(np.array([[1e-300]]), np.zeros(1)), (np.ones((1, 1)), np.zeros(1))]

    class Grid:
        """An rng that first offers an input exactly at the kink."""

        def __init__(self):
            self.values = iter([0.0, 0.7])

        def standard_normal(self, n):
            return np.full(n, next(self.values))

    X, redrawn = draw_inputs(Grid(), params, 1)
    assert redrawn == 1 and X[0, 0] == 0.7


def test_finite_difference_columns_straddling_a_kink_are_replaced():
    # z^(1) = x - 1 + 3e-6: a +-1e-5 step on the bias flips the unit
    params = [(np.array([[1.0]]), np.array([-1.0 + 3e-6])), (np.array([[2.0]]), np.zeros(1))]
    result = check_network(params, np.array([[1.0]]))
    assert result.fd_kinks_skipped >= 1 and result.passed
    assert any("straddled a kink" in n for n in result.notes)


@pytest.mark.parametrize("activation, kink", [("relu6", 6.0), ("hard_tanh", -1.0),
                                              ("hard_swish", 3.0)])
def test_kinks_away_from_zero_are_redrawn_and_straddling_columns_replaced(activation, kink):
    """The clipped activations' kinks at the ends of their linear piece count as ReLU's at 0
    does: an input within rounding of one is redrawn, a step across one is replaced."""

    class Grid:
        def __init__(self):
            self.values = iter([kink, 0.7])

        def standard_normal(self, n):
            return np.full(n, next(self.values))

    params = [(np.array([[1.0]]), np.zeros(1)), (np.ones((1, 1)), np.zeros(1))]
    X, redrawn = draw_inputs(Grid(), params, 1, activation=activation)
    assert redrawn == 1 and X[0, 0] == 0.7
    params = [(np.array([[1.0]]), np.array([kink - 1.0 + 3e-6])), (np.array([[2.0]]), np.zeros(1))]
    result = check_network(params, np.array([[1.0]]), activation=activation)
    assert result.fd_kinks_skipped >= 1 and result.passed
    assert any("straddled a kink" in n for n in result.notes)


def test_verify_numeric_writes_json_and_exits_zero(tmp_path, capsys):
    out = tmp_path / "v.json"
    code = verify_main(["--numeric-only", "--networks", "3", "--seed", "5", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "VERDICT: PASS" in text
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["seed"] == 5
    assert len(doc["parts"][0]["rows"]) == 3


@pytest.mark.parametrize("argv, message", [
    (["--networks", "0"], "argument --networks: expected an int >= 1, got '0'"),
    (["--seed", "-1"], "argument --seed: expected an int in [0, 4294967295], got '-1'"),
    (["--json", "/nonexistent-folder/v.json"],
     "argument --json: the folder '/nonexistent-folder' of '/nonexistent-folder/v.json' does not exist"),
    (["--markdown", "."], "argument --markdown: expected a file path, got the folder '.'"),
    (["--json", ""], "argument --json: expected a file path, got an empty string"),
    (["--markdown", "/proc/bpcheck-report.md"],
     "argument --markdown: '/proc/bpcheck-report.md' cannot be written"),
])
def test_verify_rejects_bad_arguments_before_running(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        verify_main(["--numeric-only", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr()
    assert message in err.err
    assert "VERDICT" not in err.out  # nothing ran


def test_numeric_only_verdict_and_json_say_what_was_not_run(tmp_path, capsys):
    out = tmp_path / "v.json"
    assert verify_main(["--numeric-only", "--networks", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "VERDICT: PASS (the one part holds; the symbolic parts (--numeric-only) not run)" in text
    assert "(1 random network, seed 0" in text
    doc = json.loads(out.read_text())
    assert doc["numeric_only"] is True and doc["networks"] == 1
    assert doc["verdict"].endswith("not run)")


def test_report_cells_stay_on_one_line():
    from bpcheck._report import Part, render_markdown, render_text

    part = Part("t", ["case", "result"], [["a", "refuted: x\n  claim: 1\n  true: 2"]], passed=False)
    text = render_text([part])
    assert "refuted: x / claim: 1 / true: 2" in text
    table = [ln for ln in render_markdown([part], {}).splitlines() if ln.startswith("| a")]
    assert table == ["| a | refuted: x / claim: 1 / true: 2 |"]


def test_checker_passes_every_activation_and_catches_a_wrong_derivative():
    rng = np.random.default_rng(5)
    widths = [4, 6, 6, 3]
    params = [(rng.standard_normal((d, dp)) / np.sqrt(dp), 0.1 * rng.standard_normal(d))
              for dp, d in zip(widths[:-1], widths[1:])]
    for act in bpcheck.numcheck.ACTIVATION_POOL:
        X, _ = draw_inputs(rng, params, 3, activation=act)
        result = check_network(params, X, activation=act)
        assert result.passed, (act, result.message)
    X, _ = draw_inputs(rng, params, 3, activation="tanh")

    def sigmoid_derivative_in_tanh_net(p, x, activation):  # forward tanh, D from the wrong rule
        fs = bpcheck.jacobian_factors(p, x, activation=activation)
        wrong = bpcheck.jacobian_factors(p, x, activation="sigmoid")
        fs = [f._replace(V=w.V, a_prev=f.a_prev) for f, w in zip(fs, wrong)]
        return _assemble(fs, _kron_I_a)

    result = check_network(params, X, activation="tanh", jacobian_fn=sigmoid_derivative_in_tanh_net)
    assert not result.passed and result.jacrev_error > 1e-3 and result.fd_error > 1e-3


def test_random_checks_cover_the_activations_and_pass():
    results = run_random_checks(seed=1, networks=12, max_depth=4)
    assert {r.activation for r in results[5:]} - {"relu"}  # not only ReLU after the corners
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]


def test_the_random_networks_deal_every_activation_of_the_pool():
    """At seed 0 the default run's 24 networks drew ReLU and 15 others: sigmoid and
    hard_tanh never ran. Dealt from a shuffled deck, every one runs once the networks
    have as many hidden layers in all, at any seed."""
    pool = {a.name for a in bpcheck.numcheck.ACTIVATION_POOL}
    for seed in (0, 1):
        results = run_random_checks(seed=seed, networks=24, max_depth=3, examples=1,
                                    fd_columns=1)
        used = {name for r in results for name in str(r.activation).split(",")}
        assert pool <= used, sorted(pool - used)


def test_a_pre_activation_in_gelu_tanhs_tail_does_not_fail_a_correct_jacobian():
    """jax.grad of gelu_tanh's formula at z = -7.34 gives -3.5e-14 where the derivative is
    -4.5e-16 (bpcheck: 0.0): an error of the reference, which the floor for smooth
    activations absorbs (bpcheck verify --networks 25 failed on it); a wrong derivative
    is still caught."""
    params = [(np.array([[1.0], [1.0]]), np.array([0.0, 8.34])), (np.array([[1.0, 1.0]]), np.zeros(1))]
    X = np.array([[-7.34], [-7.0]])
    result = check_network(params, X, activation="gelu_tanh")
    assert result.passed, result.message

    def gelu_derivative_in_gelu_tanh_net(p, x, activation):
        return bpcheck.jacobian(p, x, activation="gelu")

    wrong = check_network(params, X, activation="gelu_tanh", jacobian_fn=gelu_derivative_in_gelu_tanh_net)
    assert not wrong.passed and wrong.jacrev_error > 1e-6


def test_verify_follows_a_symbolic_link_to_an_output_before_running(tmp_path, capsys):
    """A dangling link passed the checks of its own folder, then failed after the run."""
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "missing" / "out.json")
    with pytest.raises(SystemExit) as exc:
        verify_main(["--numeric-only", "--json", str(link)])
    assert exc.value.code == 2
    err = capsys.readouterr()
    assert f"the folder '{tmp_path / 'missing'}' of '{link}' does not exist" in err.err
    assert "VERDICT" not in err.out
    assert not (tmp_path / "missing").exists()


def test_check_network_takes_jax_layers_and_a_network_and_kink_margin_names_a_batch():
    """JAX layers failed inside astype (numpy.longdouble), a Network was 'not
    subscriptable', and kink_margin of a batch raised matmul's own error."""
    import jax.numpy as jnp

    params = bpcheck.init_params([3, 5, 2], seed=0)
    X, _ = bpcheck.numcheck.draw_inputs(np.random.default_rng(0), params, 4)
    as_jax = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    assert check_network(as_jax, X).passed
    net = bpcheck.network([(B, b) for B, b in params], layout="out_in", activation="tanh")
    tanh = check_network(net, X)
    assert tanh.passed and tanh.activation == "tanh", tanh
    X_net, _ = bpcheck.numcheck.draw_inputs(np.random.default_rng(1), net, 3)
    assert X_net.shape == (3, 3) and bpcheck.numcheck.live_fraction(net, X_net) > 0
    with pytest.raises(ValueError, match=r"x: expected one example, shape \(d_0,\), got shape \(4, 3\)"):
        bpcheck.numcheck.kink_margin(params, X)
    assert bpcheck.numcheck.kink_margin(as_jax, X[0]) > 1
