"""`bpcheck verify` prints a plain summary first and the verdict last; the tables follow on
request; the reports say what was run without noise; dead networks are flagged."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bpcheck import jacobian
from bpcheck._report import Part
from bpcheck.numcheck import DEAD_NOTE, check_network, live_fraction
from bpcheck.verify import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify")
    md, js = folder / "v.md", folder / "v.json"
    capture = subprocess.run([sys.executable, "-m", "bpcheck", "verify", "--quick", "--markdown",
                              str(md), "--json", str(js)], capture_output=True, text=True)
    return capture, md.read_text(), json.loads(js.read_text())


def test_quick_run_prints_the_summary_first_and_the_verdict_last(quick_run):
    capture, _, _ = quick_run
    assert capture.returncode == 0, capture.stdout + capture.stderr
    lines = capture.stdout.strip().splitlines()
    assert lines[0].startswith("bpcheck verify: the quick check (--quick)")
    assert lines[1].startswith("- For every depth L: the base case V^(L+1) = I_K")
    assert lines[-1] == "VERDICT: PASS (all 5 parts hold)"
    text = capture.stdout
    assert "Assumptions of the symbolic proof:" in text and "exactly 0" in text
    assert "==" not in text and "monomials" not in text  # no tables without --verbose
    assert len(lines) < 40


def test_markdown_header_says_what_ran_in_words(quick_run):
    _, md, _ = quick_run
    assert "quick: `" not in md and "numeric_only" not in md and "False" not in md
    assert "the quick check (--quick)" in md and "## Summary" in md
    assert "--verbose prints the tables" not in md  # the file has the tables
    assert md.index("## Summary") < md.index("## Induction over the layers")
    assert md.rstrip().endswith("**VERDICT: PASS (all 5 parts hold)**")


def test_json_keeps_the_settings_and_adds_summary_and_assumptions(quick_run):
    _, _, doc = quick_run
    assert doc["passed"] is True and doc["quick"] is True and doc["numeric_only"] is False
    assert len(doc["summary"]) == len(doc["parts"]) == 5
    assert all(doc["summary"]) and len(doc["assumptions"]) == 3


def test_the_numeric_summary_gives_the_tables_worst_errors(quick_run):
    _, _, doc = quick_run
    part = next(p for p in doc["parts"] if p["title"].startswith("Numeric"))
    col = {name: i for i, name in enumerate(part["columns"])}
    worst = [max(row[col[name]] for row in part["rows"]) for name in ("err vs jacrev", "err vs FD")]
    assert 0 <= worst[0] < 1e-6 and 0 <= worst[1] < 1e-4  # float64 agreement, not a count P
    summary = next(line for line in doc["summary"] if line.startswith("Numerically"))
    assert f"worst relative error {worst[0]:.1e} and {worst[1]:.1e}" in summary


def test_the_numeric_summary_says_which_activations_the_networks_had():
    """18 of the 24 networks were not pure ReLU, and nothing said so."""
    from bpcheck.verify import _numeric_summary

    columns = ["#", "widths", "activation", "N", "P", "err vs jacrev", "err vs FD", "FD cols"]
    rows = [[0, "3-4-2", "relu", 4, 26, 1e-16, 1e-10, 12],
            [1, "3-4-4-2", "tanh,gelu", 4, 46, 1e-15, 1e-9, 12],
            [2, "3-2", "none", 4, 8, 0.0, 1e-11, 8]]
    mixed = _numeric_summary(Part("numeric", columns, rows, passed=True), 3, 0)
    assert "; ReLU and 2 other activations, mixed per layer)" in mixed, mixed
    relu = _numeric_summary(Part("numeric", columns, [rows[0], rows[2]], passed=True), 2, 0)
    assert "widths up to 4; ReLU)" in relu, relu
    alone = _numeric_summary(Part("numeric", columns, [rows[2]], passed=True), 1, 0)
    assert "widths up to 3; no hidden layer)" in alone, alone  # was "; ReLU"


def test_verbose_prints_the_tables_before_the_verdict(capsys):
    assert main(["--numeric-only", "--networks", "1", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "== Numeric:" in out and "err vs jacrev" in out
    assert out.index("- Numerically (1 random network, seed 0") < out.index("== Numeric:")
    assert out.strip().splitlines()[-1].startswith("VERDICT: PASS")


def test_a_failed_part_is_said_in_the_summary_with_its_notes_and_exits_1(monkeypatch, capsys):
    import bpcheck.symbolic as symbolic

    failed = Part("planted", ["x"], [["y"]], passed=False, notes=["refuted: the reason"],
                  summary="A part that fails")
    monkeypatch.setattr(symbolic, "verify_parts", lambda quick=False: [failed])
    assert main(["--quick", "--networks", "1"]) == 1
    out = capsys.readouterr().out
    assert "- A part that fails: NO, FAILED." in out and "refuted: the reason" in out
    assert out.strip().splitlines()[-1].startswith("VERDICT: FAIL (1 of 2 parts failed: planted")


def test_a_failed_numeric_part_is_not_summed_up_as_agreeing(monkeypatch, capsys):
    """With a planted wrong Jacobian the summary read "bpcheck.jacobian
    agrees with jax.jacrev ..., worst relative error 3.3e-01 ...: NO, FAILED"."""
    import bpcheck.numcheck as numcheck

    real = numcheck.jacobian

    def planted(*args, **kwargs):
        J = np.array(real(*args, **kwargs))
        J[..., 0] *= 2
        return J

    monkeypatch.setattr(numcheck, "jacobian", planted)
    assert main(["--numeric-only", "--networks", "1"]) == 1
    text = " ".join(capsys.readouterr().out.split())  # the summary's lines joined
    line = text[text.index("- Numerically"):].split(" - ")[0]
    assert "was compared with jax.jacrev" in line and "agrees" not in line, line
    assert "NO, FAILED." in line


def test_help_says_how_far_each_check_reaches_and_the_proof_script_names_itself():
    out = subprocess.run([sys.executable, "-m", "bpcheck", "verify", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for phrase in ("every depth L", "done by hand", "fixed depths", "concrete widths",
                   "numerically", "Assumptions:", "exactly at 0", "example:"):
        assert phrase in out, phrase
    from bpcheck.symbolic.parts import CHAIN_MAX_L, GRID, QUICK_CHAIN_MAX_L, QUICK_GRID
    from bpcheck.verify import NETWORKS, QUICK_NETWORKS

    assert f"{len(GRID)} architectures, L = 0..6 ({len(QUICK_GRID)} small ones with --quick)" \
        in " ".join(out.split())
    assert f"L = 1..{CHAIN_MAX_L} (1..{QUICK_CHAIN_MAX_L} with --quick)" in out
    assert f"(default {NETWORKS}, {QUICK_NETWORKS} with --quick)" in " ".join(out.split())
    script = subprocess.run([sys.executable, str(ROOT / "proofs" / "verify_recursion.py"),
                             "--help"], capture_output=True, text=True, check=True).stdout
    assert script.startswith("usage: python proofs/verify_recursion.py")
    assert "bpcheck verify" not in script.splitlines()[0]


def _mostly_dead_network():
    """4-64-1: every hidden unit dead (bias -100) except unit 0; 7 of 385 columns live."""
    rng = np.random.default_rng(0)
    b1 = np.full(64, -100.0)
    b1[0] = 5.0
    return [(rng.standard_normal((64, 4)), b1), (rng.standard_normal((1, 64)), np.array([0.1]))]


def test_a_network_with_mostly_dead_units_is_flagged_and_its_live_columns_are_checked():
    params = _mostly_dead_network()
    X = np.random.default_rng(1).standard_normal((4, 4))
    assert live_fraction(params, X) == pytest.approx(7 / 385)

    def wrong_in_a_live_column(params, X):
        J = np.array(jacobian(params, X))
        J[:, :, 4 * 64] *= 2.0  # d/d b1[0], the live unit's bias
        return J

    result = check_network(params, X, jacobian_fn=wrong_in_a_live_column, fd_columns=7,
                           rng=np.random.default_rng(2))
    assert any(DEAD_NOTE in n and "1.8% of the Jacobian's columns" in n for n in result.notes)
    assert any("worst vs finite differences" in n and "beta[256]" in n for n in result.notes)
    healthy = check_network(params[:1] + [(np.ones((1, 64)), np.zeros(1))], X)
    assert any(DEAD_NOTE in n for n in healthy.notes)  # the same hidden layer: still dead
    rng = np.random.default_rng(3)
    live = [(rng.standard_normal((8, 4)), np.ones(8)), (rng.standard_normal((2, 8)), np.zeros(2))]
    assert not any(DEAD_NOTE in n for n in check_network(live, X).notes)
