"""The induction over the layers holds with symbolic widths, and a wrong step is rejected."""

import pytest
import sympy as sp

from bpcheck.symbolic import induction_base, induction_step

MODELS = ["relu", "sigma"]


def test_base_case_W_is_the_identity_and_c_is_zero():
    step = induction_base()
    assert step.holds is True
    assert len(step.checks) == 3 and all(step.checks.values()), step.checks


def test_the_base_cases_derivatives_are_checked_and_catch_a_wrong_output_layer(monkeypatch):
    """V^(L+1) = I_K and U^(L+1) = I_K kron a^(L)' are checked with K and n_L symbolic; an
    output layer written with B transposed must fail the U check (and only that one)."""
    from bpcheck.symbolic import induction

    def transposed(B, b, a, r, j, n):
        return sp.Sum(B[j, r] * a[j], (j, 0, n - 1)) + b[r]

    monkeypatch.setattr(induction, "output_layer", transposed)
    step = induction_base()
    failed = [name for name, ok in step.checks.items() if not ok]
    assert step.holds is False and failed == ["d z^(L+1)_k / d B^(L+1)_pq = (I_K)_kp a^(L)_q"]


@pytest.mark.parametrize("model", MODELS)
def test_induction_step_and_its_derivatives_hold_for_symbolic_widths(model):
    step = induction_step(model)
    assert step.holds is True
    assert len(step.checks) == 5 and all(step.checks.values()), step.checks
    assert "W^{(l)} = W^{(l+1)} B^{(l+1)} D^{(l)}" in step.latex


@pytest.mark.parametrize("model", MODELS)
def test_induction_step_with_D_on_the_wrong_index_is_rejected(model):
    def D_on_the_row_of_B(W_next, B_next, D, k, m, t):
        return W_next[k, t] * B_next[t, m] * D[t]

    step = induction_step(model, summand=D_on_the_row_of_B)
    assert step.holds is False
    failed = [name for name, ok in step.checks.items() if not ok]
    assert len(failed) == 1 and "W^(l)" in failed[0]


@pytest.mark.parametrize("model", MODELS)
def test_induction_step_without_D_or_with_B_transposed_is_rejected(model):
    def without_D(W_next, B_next, D, k, m, t):
        return W_next[k, t] * B_next[t, m]

    def B_transposed(W_next, B_next, D, k, m, t):
        return W_next[k, t] * B_next[m, t] * D[m]

    assert induction_step(model, summand=without_D).holds is False
    assert induction_step(model, summand=B_transposed).holds is False


def test_a_W_that_uses_the_layers_own_matrix_is_not_free_of_layer_l():
    B_own = sp.IndexedBase("B^{(l)}")  # the same IndexedBase as the step's B^(l)

    def uses_B_own(W_next, B_next, D, k, m, t):
        return W_next[k, t] * B_next[t, m] * D[m] * (1 + B_own[m, 0] - B_own[m, 0])

    # the extra factor is 1, so the identity holds; the freeness check reads the symbols
    def uses_B_own_for_real(W_next, B_next, D, k, m, t):
        return W_next[k, t] * B_next[t, m] * D[m] * B_own[m, 0]

    assert induction_step("relu", summand=uses_B_own).holds is True
    step = induction_step("relu", summand=uses_B_own_for_real)
    assert step.checks["W^(l), c^(l) free of layers <= l"] is False and not step.holds


def test_unknown_activation_names_the_argument():
    with pytest.raises(ValueError, match="activation: expected 'relu' or 'sigma', got 'tanh'"):
        induction_step("tanh")


@pytest.mark.parametrize("model", MODELS)
def test_a_wrong_step_written_with_a_free_symbol_named_like_a_bound_index_is_rejected(model):
    J = sp.Symbol("_j0", integer=True)  # the name the normal form gives its first bound index

    def D_on_a_free_index(W_next, B_next, D, k, m, t):
        return W_next[k, t] * B_next[t, m] * D[J]

    def no_sum_over_t(W_next, B_next, D, k, m, t):
        return W_next[k, J] * B_next[J, m] * D[m]

    for wrong in (D_on_a_free_index, no_sum_over_t):
        assert induction_step(model, summand=wrong).holds is False, wrong.__name__


def test_relu_steps_use_that_each_pattern_entry_is_zero_or_one_as_check_recursion_does():
    """D^2 = D for a 0/1 pattern: check_recursion accepts V B D D, and so does the step now
    (it was refuted); with a generic sigma D^2 is wrong and stays refuted."""
    def D_squared(W_next, B_next, D, k, m, t):
        return W_next[k, t] * B_next[t, m] * D[m] ** 2

    def D_doubled(W_next, B_next, D, k, m, t):
        return 2 * W_next[k, t] * B_next[t, m] * D[m]

    assert induction_step("relu", summand=D_squared).holds is True
    assert induction_step("sigma", summand=D_squared).holds is False
    assert induction_step("relu", summand=D_doubled).holds is False
