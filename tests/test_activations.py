"""Activations: sigma and sigma' against JAX's own definitions, the recursion's Jacobian for
every activation against jax.jacrev and centred finite differences (float64), and the
errors for a wrong name, list length or parameter."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpcheck
from bpcheck import Activation
from bpcheck._activations import NAMES, resolve_activations
from bpcheck.numcheck import _jax_activation

from helpers import rel_err

PARAMS = {"leaky_relu": {"slope": 0.2}, "elu": {"alpha": 0.7}, "celu": {"alpha": 0.6},
          "hard_tanh": {"min_val": -0.5, "max_val": 1.5}}
# JAX's own definitions (jax.nn.relu, jax.nn.gelu, ...), written independently of
# bpcheck._activations; bpcheck verify uses the same ones.
REFERENCE = {name: _jax_activation(Activation(name, **PARAMS.get(name, {}))) for name in NAMES}


def act(name):
    return Activation(name, **PARAMS.get(name, {}))


def ref_mlp(params, x, names):
    for (B, b), name in zip(params[:-1], names):
        x = REFERENCE[name](x @ B.T + b)
    B, b = params[-1]
    return x @ B.T + b


def away_from_kinks(params, X, names):
    """Inputs whose hidden pre-activations are all at least 1e-3 from 0 and from each kink."""
    a, keep = X, np.ones(len(X), bool)
    for (B, b), name in zip(params[:-1], names):
        z = a @ B.T + b
        kinks = np.array((0.0, *act(name).kinks))
        keep &= (np.abs(z[:, :, None] - kinks) > 1e-3).all(axis=(1, 2))
        a = np.asarray(act(name).value(z, np))
    return X[keep]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_value_and_derivative_equal_jax_definitions_and_jax_grad(name, xp):
    z = np.concatenate([np.linspace(-6, 6, 101), [-40.0, 40.0, -800.0, 800.0]])
    kinks = np.array((0.0, *act(name).kinks))  # sigma' at a kink is a convention, tested separately
    z = z[(np.abs(z[:, None] - kinks) > 1e-9).all(axis=1)]
    value, deriv = act(name).value_and_derivative(xp.asarray(z), xp)
    want = REFERENCE[name](jnp.asarray(z))
    want_d = jax.vmap(jax.grad(REFERENCE[name]))(jnp.asarray(z))
    assert rel_err(value, want) < 1e-14
    assert rel_err(deriv, want_d) < 1e-14
    assert np.isfinite(np.asarray(deriv)).all()


def test_value_and_derivative_are_jit_traceable():
    z = jnp.linspace(-3, 3, 11)
    for name in NAMES:
        v, d = jax.jit(functools.partial(act(name).value_and_derivative, xp=jnp))(z)
        assert rel_err(v, act(name).value(np.asarray(z), np)) < 1e-15
        assert rel_err(d, act(name).derivative(np.asarray(z), np)) < 1e-15


def test_kinked_activations_take_the_left_derivative_at_zero():
    z = np.zeros(1)
    assert Activation("relu").derivative(z, np)[0] == 0.0
    assert Activation("leaky_relu", slope=0.3).derivative(z, np)[0] == 0.3
    assert Activation("elu", alpha=0.5).derivative(z, np)[0] == 0.5
    assert Activation("selu").derivative(z, np)[0] == 1.0507009873554805 * 1.6732632423543772
    assert Activation("selu").has_kink
    assert Activation("relu").has_kink and not Activation("tanh").has_kink
    assert not Activation("elu").has_kink  # alpha = 1: sigma' is continuous


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_nan_stays_nan_through_every_activation(xp):
    """Under jax.jit nothing checks the values: a NaN input or weight (a diverged run), or one
    made by an overflow upstream, must reach the output as NaN, as through jax.nn.relu and
    torch; a select such as where(z > 0, z, 0) turned it into 0 (relu) or into the lower
    end (relu6, hard_tanh, hard_sigmoid)."""
    z = xp.asarray(np.array([np.nan, -1.0, 2.0]))
    for name in NAMES:
        value, deriv = act(name).value_and_derivative(z, xp)
        assert np.isnan(np.asarray(value)[0]), name
        assert np.isnan(np.asarray(act(name).value(z, xp))[0]), name
    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.standard_normal((5, 3))), jnp.asarray(rng.standard_normal(5))),
              (jnp.asarray(rng.standard_normal((2, 5))), jnp.asarray(rng.standard_normal(2)))]
    X = jnp.asarray(rng.standard_normal((4, 3))).at[0, 0].set(jnp.nan)
    for name in ("relu", "hard_tanh", "relu6"):
        out = jax.jit(lambda X, name=name: bpcheck.forward(params, X, activation=name))(X)
        assert np.isnan(np.asarray(out[0])).all() and np.isfinite(np.asarray(out[1:])).all()
    bad = [(params[0][0].at[:, 0].set(jnp.nan), params[0][1]), params[1]]
    g = jax.jit(lambda P: bpcheck.per_example_grads(P, X.at[0, 0].set(1.0), jnp.array([0, 1, 1, 0])))(bad)
    assert np.isnan(np.asarray(g)).any(axis=1).all()  # every row (as jax.grad: NaN, and 0 where
    # ReLU's derivative, 0 at NaN, masks it)


def test_clipped_activations_take_zero_at_both_ends_of_their_linear_piece():
    """As torch.autograd (and jax.grad for relu6 and hard_sigmoid; jax.nn.hard_tanh's is 1
    there); hard_swish takes the product rule with that: 0 at -3, 1 at 3, as both do."""
    at = {"relu6": (0.0, 6.0), "hard_tanh": (-1.0, 1.0), "hard_sigmoid": (-3.0, 3.0),
          "hard_swish": (-3.0, 3.0)}
    for name, kinks in at.items():
        a = Activation(name)
        assert a.kinks == kinks and a.has_kink
        for xp in (np, jnp):
            D = np.asarray(a.derivative(xp.asarray(np.array(kinks)), xp))
            np.testing.assert_array_equal(D, [0.0, 1.0] if name == "hard_swish" else [0.0, 0.0])
            assert not np.signbit(D).any()
    assert Activation("hard_tanh", min_val=-0.5, max_val=2.0).kinks == (-0.5, 2.0)
    for name in ("mish", "celu", "soft_sign", "silu", "tanh"):
        assert Activation(name).kinks == () and not Activation(name).has_kink
    assert not Activation("celu", alpha=0.3).has_kink  # sigma' = exp(z / alpha) -> 1 at 0
    assert Activation("leaky_relu", slope=1.0).kinks == ()
    with pytest.raises(ValueError, match=r"Activation\('celu'\): alpha must be positive "
                                         r"\(z / alpha\), got 0.0"):
        Activation("celu", alpha=0)
    with pytest.raises(ValueError, match=r"Activation\('hard_tanh'\): expected min_val < "
                                         r"max_val, got min_val=1.0, max_val=1.0"):
        Activation("hard_tanh", min_val=1.0, max_val=1.0)


MIXED = ["tanh", "gelu", "leaky_relu", "softplus"]


@pytest.mark.parametrize("names", [[n] * 3 for n in NAMES] + [MIXED],
                         ids=[*NAMES, "mixed"])
def test_jacobian_with_activation_equals_jacrev_and_finite_differences(names):
    rng = np.random.default_rng(1)
    widths = [3] + [6, 5, 4, 7][: len(names)] + [2]
    params = [(rng.standard_normal((d, dp)) / np.sqrt(dp), 0.3 * rng.standard_normal(d))
              for dp, d in zip(widths, widths[1:])]
    X = away_from_kinks(params, rng.standard_normal((12, 3)), names)[:5]
    assert len(X) >= 3
    activation = [act(n) for n in names]
    J = bpcheck.jacobian(params, X, activation=activation)
    beta = bpcheck.flatten_params(params)

    @jax.jit
    def f(beta, x):
        return ref_mlp(bpcheck.unflatten_params(beta, widths), x, names)

    J_ref = jax.jit(jax.vmap(jax.jacrev(f), in_axes=(None, 0)))(jnp.asarray(beta), jnp.asarray(X))
    assert rel_err(J, J_ref) < 1e-12
    h = 1e-6
    for p in rng.choice(beta.size, 8, replace=False):
        step = np.zeros_like(beta)
        step[p] = h
        fd = (np.asarray(f(beta + step, X)) - np.asarray(f(beta - step, X))) / (2 * h)
        assert np.max(np.abs(J[:, :, p] - fd)) < 1e-7 * max(1.0, np.max(np.abs(fd)))
    # the factors carry D = sigma'(z); the forward pass carries sigma
    fs = bpcheck.jacobian_factors(params, X, activation=activation)
    for f_l, a in zip(fs[:-1], activation):
        assert np.array_equal(f_l.D, a.derivative(f_l.z, np))
    assert rel_err(bpcheck.forward(params, X, activation=activation), ref_mlp(params, X, names)) < 1e-14


def test_jax_inputs_give_the_numpy_result_for_every_activation():
    rng = np.random.default_rng(2)
    params = bpcheck.init_params([4, 5, 5, 3], seed=2)
    X = rng.standard_normal((6, 4))
    jparams = [(jnp.asarray(B), jnp.asarray(b)) for B, b in params]
    for name in NAMES:
        a = act(name)
        assert rel_err(bpcheck.jacobian(jparams, jnp.asarray(X), activation=a),
                       bpcheck.jacobian(params, X, activation=a)) < 1e-14


def test_relu_is_the_default_and_a_single_value_covers_every_layer():
    assert resolve_activations("tanh", 3) == (Activation("tanh"),) * 3
    assert resolve_activations("relu", 0) == ()
    params = bpcheck.init_params([3, 4, 4, 2], seed=0)
    X = np.random.default_rng(0).standard_normal((4, 3))
    assert np.array_equal(bpcheck.jacobian(params, X), bpcheck.jacobian(params, X, activation="relu"))
    assert np.array_equal(bpcheck.forward(params, X, activation="tanh"),
                          bpcheck.forward(params, X, activation=["tanh", Activation("tanh")]))
    assert not np.allclose(bpcheck.forward(params, X, activation="tanh"), bpcheck.forward(params, X))


def test_wrong_activation_arguments_are_named_errors():
    params = bpcheck.init_params([3, 4, 4, 2], seed=0)
    X = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"activation: expected one of .*'relu'.*got 'swoosh'"):
        bpcheck.forward(params, X, activation="swoosh")
    with pytest.raises(ValueError, match=r"activation: expected one entry per hidden layer "
                                         r"\(L = 2 .*got a list of 3"):
        bpcheck.jacobian(params, X, activation=["tanh"] * 3)
    with pytest.raises(ValueError, match=r"activation\[1\]: expected one of .*got 'Tanh'"):
        bpcheck.jacobian_factors(params, X, activation=["tanh", "Tanh"])
    with pytest.raises(TypeError, match=r"activation: expected an activation name .*got int 3"):
        bpcheck.forward(params, X, activation=3)
    with pytest.raises(TypeError, match=r"Activation\('leaky_relu'\): unknown parameter alpha=1"):
        Activation("leaky_relu", alpha=1)
    with pytest.raises(TypeError, match=r"Activation\('tanh'\): unknown parameter slope=0.1; "
                                        r"it takes no parameters"):
        Activation("tanh", slope=0.1)
    with pytest.raises(ValueError, match=r"Activation\('elu'\): alpha must be finite, got nan"):
        Activation("elu", alpha=float("nan"))
    with pytest.raises(TypeError, match=r"slope must be a real number, got '0.1'"):
        Activation("leaky_relu", slope="0.1")


def test_numpy_relu_selects_bitwise_like_where_without_negative_zeros():
    """NumPy's ReLU multiplies by the 0/1 mask (faster than np.where) and adds 0: the same
    bits as selecting, +0.0 (not -0.0) for negative inputs, -0.0 and 0 alike, and the mask
    broadcast over the rows of V in the backward recursion."""
    relu = Activation("relu")
    z = np.array([[-2.5, -0.0, 0.0, 1e-30, 3.0], [-1e-30, 7.0, -0.0, -4.0, 0.5]], np.float32)
    value, D = relu.value_and_derivative(z, np)
    want = np.where(z > 0, z, np.float32(0))
    assert value.dtype == D.dtype == np.float32
    np.testing.assert_array_equal(value.view(np.int32), want.view(np.int32))  # bits, signs included
    np.testing.assert_array_equal(D, (z > 0).astype(np.float32))
    M = np.random.default_rng(0).standard_normal((2, 3, 5))  # (N, K, d) rows of V, float64
    got = relu.times_derivative(M, D[:, None, :], np)
    want = np.where(D[:, None, :] > 0, M, 0.0)
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
    assert not np.signbit(got[np.broadcast_to(D[:, None, :] == 0, got.shape)]).any()
    jv, jD = relu.value_and_derivative(jnp.asarray(z), jnp)  # the JAX branch selects
    np.testing.assert_array_equal(np.asarray(jv).view(np.int32), value.view(np.int32))


@pytest.mark.parametrize("name", NAMES)
def test_value_alone_is_bitwise_the_value_beside_the_derivative_and_may_overwrite_z(name):
    """``value`` skips the derivative; with ``out=z`` (NumPy) relu, tanh and identity write
    over ``z``, the others return a new array; the bits are those of ``value_and_derivative``
    in every case, -0.0 included."""
    z = np.concatenate([np.linspace(-6, 6, 41), [-0.0, 0.0, -1e-30, 1e-30, -40.0, 40.0]])
    for dtype in (np.float32, np.float64):
        zd = z.astype(dtype)
        want = act(name).value_and_derivative(zd, np)[0]
        alone = act(name).value(zd, np)
        scratch = zd.copy()
        over = act(name).value(scratch, np, out=scratch)
        assert over.dtype == alone.dtype == dtype
        for got in (alone, over):
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
        assert (over is scratch) == (name in ("relu", "tanh", "identity"))
        jz = jnp.asarray(zd)
        np.testing.assert_array_equal(np.asarray(act(name).value(jz, jnp)),
                                      np.asarray(act(name).value_and_derivative(jz, jnp)[0]))


def test_softplus_with_beta_equals_its_formula_and_jax_grad():
    a = Activation("softplus", beta=2.5, threshold=3.0)
    assert repr(a) == "Activation('softplus', beta=2.5, threshold=3.0)"

    def reference(z):
        return jnp.where(2.5 * z > 3.0, z, jax.nn.softplus(2.5 * z) / 2.5)

    z = np.concatenate([np.linspace(-6, 6, 101), [1.2 - 1e-9, 1.2 + 1e-9, 40.0]])
    for xp in (np, jnp):
        value, deriv = a.value_and_derivative(xp.asarray(z), xp)
        assert rel_err(value, reference(jnp.asarray(z))) < 1e-14
        assert rel_err(deriv, jax.vmap(jax.grad(reference))(jnp.asarray(z))) < 1e-14
    assert rel_err(_jax_activation(a)(jnp.asarray(z)), reference(jnp.asarray(z))) < 1e-15
    with pytest.raises(ValueError, match="beta must be positive"):
        Activation("softplus", beta=0.0)


def test_a_thresholded_softplus_is_z_itself_above_its_threshold_as_torch_computes_it():
    """PyTorch's Softplus is linear above its threshold (default 20); the reference here is
    JAX's softplus with that switch written out, its derivative by jax.grad."""
    t = 0.75
    a = Activation("softplus", threshold=t)
    assert repr(a) == "Activation('softplus', threshold=0.75)"
    assert repr(Activation("softplus")) == "Activation('softplus')"
    assert a != Activation("softplus")
    assert Activation("softplus", threshold=float("inf")) == Activation("softplus")

    def reference(z):
        return jnp.where(z > t, z, jax.nn.softplus(z))

    z = np.concatenate([np.linspace(-6, 6, 101), [t - 1e-9, t + 1e-9, 40.0]])
    for xp in (np, jnp):
        value, deriv = a.value_and_derivative(xp.asarray(z), xp)
        assert rel_err(value, reference(jnp.asarray(z))) < 1e-14
        assert rel_err(deriv, jax.vmap(jax.grad(reference))(jnp.asarray(z))) < 1e-14
    assert np.asarray(a.derivative(np.array([t + 1e-9]), np))[0] == 1.0
    assert np.asarray(a.derivative(np.array([t - 1e-9]), np))[0] < 0.7
    # bpcheck verify's references (numcheck) honour the threshold too
    assert rel_err(_jax_activation(a)(jnp.asarray(z)), reference(jnp.asarray(z))) < 1e-15

    rng = np.random.default_rng(3)
    widths = [3, 6, 5, 2]
    params = [(rng.standard_normal((d, dp)), 0.3 * rng.standard_normal(d))
              for dp, d in zip(widths, widths[1:])]
    X = rng.standard_normal((8, 3))
    beta = bpcheck.flatten_params(params)

    def f(beta, x):
        h = x
        for B, b in bpcheck.unflatten_params(beta, widths)[:-1]:
            h = reference(h @ B.T + b)
        B, b = bpcheck.unflatten_params(beta, widths)[-1]
        return h @ B.T + b

    z1 = X @ params[0][0].T + params[0][1]
    assert (z1 > t).any() and (z1 < t).any()  # both sides of the switch are exercised
    J_ref = jax.vmap(jax.jacrev(f), in_axes=(None, 0))(jnp.asarray(beta), jnp.asarray(X))
    assert rel_err(bpcheck.jacobian(params, X, activation=a), J_ref) < 1e-12
    assert rel_err(bpcheck.jacobian(params, X, activation="softplus"), J_ref) > 1e-3


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "tanh", "elu", "softplus", "sigmoid",
                                  "silu", "selu", "mish", "celu", "soft_sign", "relu6",
                                  "hard_tanh", "hard_sigmoid", "hard_swish"])
def test_float16_networks_keep_float16_with_every_activation(name):
    """SciPy's erf has no float16 loop: exact gelu gave float64 Jacobians and gradients for
    float16 inputs (four times the memory), unlike forward and every other activation."""
    params = [(B.astype(np.float16), b.astype(np.float16))
              for B, b in bpcheck.init_params([3, 4, 2], seed=0)]
    X = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float16)
    y = np.array([0, 1, 1, 0, 1])
    for result in (bpcheck.forward(params, X, activation=name),
                   bpcheck.jacobian(params, X, activation=name),
                   bpcheck.per_example_grads(params, X, y, activation=name),
                   bpcheck.ntk(params, X, activation=name),
                   bpcheck.jacobian_factors(params, X, activation=name)[0].V):
        assert result.dtype == np.float16
    wide = [(B.astype(np.float64), b.astype(np.float64)) for B, b in params]
    assert rel_err(bpcheck.jacobian(params, X, activation=name),
                   bpcheck.jacobian(wide, X.astype(np.float64), activation=name)) < 1e-2


@pytest.mark.parametrize("xp_name", ["numpy", "jax"])
def test_gelu_tanh_is_finite_in_float16_where_its_cube_overflows(xp_name):
    """In float16 ``z^2`` overflows above |z| of about 256 and ``3 c z^2`` above 700, where
    tanh is already +-1 and ``1 - t^2`` is 0: the derivative was ``0 * inf = NaN``."""
    z = np.array([-2000, -1000, -500, -50, 50, 500, 1000, 2000], np.float16)
    if xp_name == "jax":
        xp, z = jnp, jnp.asarray(z)
    else:
        xp = np
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        value, D = bpcheck.Activation("gelu_tanh").value_and_derivative(z, xp)
    assert np.asarray(D).dtype == np.float16
    np.testing.assert_array_equal(np.asarray(D), [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(np.asarray(value), np.maximum(np.asarray(z), 0))


def test_swish_is_silu_by_its_other_name():
    # the README's "silu" is also called swish (jax.nn.swish is jax.nn.silu); the name
    # was refused
    from bpcheck import Activation

    params = bpcheck.init_params([3, 4, 2], seed=0)
    X = np.random.default_rng(0).standard_normal((5, 3))
    assert Activation("swish") == Activation("silu")
    assert np.array_equal(bpcheck.forward(params, X, activation="swish"),
                          bpcheck.forward(params, X, activation="silu"))
    assert np.array_equal(bpcheck.jacobian(params, X, activation=["swish"]),
                          bpcheck.jacobian(params, X, activation="silu"))
