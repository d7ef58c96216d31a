"""The generic-width steps hold, and the canonical sum form is what makes them decidable."""

import pytest
import sympy as sp

from bpcheck.symbolic import chain_step, one_layer_step, vec_kronecker_step
from bpcheck.symbolic.sums import sum_normal_form


def test_vec_kronecker_identity_holds_for_symbolic_widths():
    assert vec_kronecker_step().holds is True


@pytest.mark.parametrize("model", ["relu", "sigma"])
def test_one_layer_step_holds_for_symbolic_widths(model):
    assert one_layer_step(model).holds is True


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_V1_and_U1_chain_holds_with_every_width_symbolic(L):
    assert chain_step(L).holds is True


def test_kronecker_pair_indexing_matches_sympy_kronecker_product():
    """(I kron a')_{i, p n0 + q} = delta_ip a_q and vec(B')_{p n0 + q} = B_pq, as in generic.py."""
    n1, n0 = 2, 3
    a = sp.Matrix(n0, 1, sp.symbols("a:3"))
    B = sp.Matrix(n1, n0, sp.symbols("B:6"))
    K = sp.kronecker_product(sp.eye(n1), a.T)
    vec_Bt = sp.Matrix(B.T.T.reshape(n1 * n0, 1))  # rows of B stacked = columns of B'
    for i in range(n1):
        for p in range(n1):
            for q in range(n0):
                assert K[i, p * n0 + q] == sp.KroneckerDelta(i, p) * a[q]
                assert vec_Bt[p * n0 + q] == B[p, q]
    assert K * vec_Bt == B * a


def test_normal_form_sees_through_bound_variable_names_where_eq_does_not():
    n = sp.Symbol("n", integer=True, positive=True)
    A, v = sp.IndexedBase("A"), sp.IndexedBase("v")
    k = sp.Symbol("k", integer=True, nonnegative=True)
    i, j = sp.Dummy("i", integer=True), sp.Dummy("i", integer=True)
    e1 = sp.Sum(A[k, i] * v[i], (i, 0, n - 1))
    e2 = sp.Sum(v[j] * A[k, j], (j, 0, n - 1))
    assert e1 != e2  # fresh dummies: structurally different
    assert sum_normal_form(e1) == sum_normal_form(e2)


def test_normal_form_tells_a_transposed_product_apart():
    n0, n1 = sp.symbols("n_0 n_1", integer=True, positive=True)
    B, a = sp.IndexedBase("B"), sp.IndexedBase("a")
    i, j = sp.symbols("i j", integer=True, nonnegative=True)
    right = sp.Sum(B[i, j] * a[j], (j, 0, n0 - 1))
    wrong = sp.Sum(B[j, i] * a[j], (j, 0, n0 - 1))
    assert sum_normal_form(right, {i: n1}) != sum_normal_form(wrong, {i: n1})


def test_normal_form_sums_out_a_delta_only_over_a_matching_range():
    n, m_ = sp.symbols("n m", integer=True, positive=True)
    f = sp.IndexedBase("f")
    i, t = sp.symbols("i t", integer=True, nonnegative=True)
    delta_sum = sp.Sum(sp.KroneckerDelta(t, i) * f[t], (t, 0, n - 1))
    assert sum_normal_form(delta_sum, {i: n}) == sum_normal_form(f[i])
    assert sum_normal_form(delta_sum, {i: m_}) != sum_normal_form(f[i])


def test_normal_form_never_takes_a_free_symbol_for_a_bound_index():
    """Bound indices are renamed canonically; a caller's free symbol with the same name and
    assumptions (``_j0``, integer) must stay a different symbol, or sum_t f_t g_J and
    sum_t f_t g_t (different numbers) get one normal form."""
    J = sp.Symbol("_j0", integer=True)
    t = sp.Symbol("t", integer=True, nonnegative=True)
    n = sp.Symbol("n", integer=True, positive=True)
    f, g = sp.IndexedBase("f"), sp.IndexedBase("g")
    lhs, rhs = sp.Sum(f[t] * g[J], (t, 0, n - 1)), sp.Sum(f[t] * g[t], (t, 0, n - 1))
    values = {n: 2, J: 1}
    numbers = [e.subs(values).doit().subs({f[0]: 1, f[1]: 2, g[0]: 3, g[1]: 5}) for e in (lhs, rhs)]
    assert numbers == [15, 13]
    assert sum_normal_form(lhs) != sum_normal_form(rhs)
    assert sum_normal_form(lhs) == sum_normal_form(sp.Sum(g[J] * f[t], (t, 0, n - 1)))


def test_bad_arguments_name_the_argument_instead_of_passing_or_crashing():
    """one_layer_step('banana') returned holds=True (anything but 'relu' was read as sigma);
    chain_step(-1) and a summand returning None raised from deep inside SymPy."""
    from bpcheck.symbolic import check_recursion, induction_step, recursion_latex

    for call in (lambda: one_layer_step("banana"), lambda: one_layer_step(None),
                 lambda: recursion_latex("x")):
        with pytest.raises(ValueError, match=r"activation: expected one of \('relu', 'sigma'\)"):
            call()
    for L in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="L: expected a depth, an int of at least 0"):
            chain_step(L)
    assert chain_step(0).holds is True
    with pytest.raises(TypeError, match="summand: expected a function"):
        induction_step(summand=3)
    with pytest.raises(TypeError, match="summand: expected a SymPy expression, got NoneType"):
        induction_step(summand=lambda *args: None)
    with pytest.raises(TypeError, match="summand: raised TypeError"):
        induction_step(summand=lambda a, b: a)
    for seed in ("a", -1, 1.5):
        with pytest.raises(ValueError, match="seed: expected an int of at least 0"):
            check_recursion(seed=seed)
