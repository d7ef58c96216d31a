"""The recursion and the proof steps render as readable LaTeX."""

import pytest

from bpcheck.symbolic import (
    chain_step,
    induction_base,
    induction_step,
    one_layer_step,
    recursion_latex,
    vec_kronecker_step,
)

INTERNALS = ["Dummy", "Indexed", "MatrixSymbol", "Symbol(", "_sigma", "Subs", "\\text"]


def test_recursion_renders_as_the_lecture_writes_it():
    tex = recursion_latex("relu")
    assert "V^{(l)} = \\frac{\\partial z^{(L+1)}}{\\partial b^{(l)\\prime}} = V^{(l+1)} B^{(l+1)} D^{(l)}" \
        in tex["V recursion"]
    assert "V^{(l)} \\left(I_{d_l} \\otimes a^{(l-1)\\prime}\\right)" in tex["U recursion"]
    assert "\\sigma'" in recursion_latex("sigma")["activation derivative"]


@pytest.mark.parametrize("step", [vec_kronecker_step, lambda: one_layer_step("relu"),
                                  lambda: one_layer_step("sigma"), lambda: chain_step(2),
                                  induction_base, lambda: induction_step("relu"),
                                  lambda: induction_step("sigma")])
def test_each_proof_step_renders_without_sympy_internals(step):
    tex = step().latex
    assert tex.count("{") == tex.count("}")
    assert not any(word in tex for word in INTERNALS), tex


def test_one_layer_step_shows_the_sums_and_the_named_matrices():
    tex = one_layer_step("sigma").latex
    assert "B^{(l+1)} D^{(l)}" in tex and "\\sum_{" in tex and "\\sigma\\left(" in tex
