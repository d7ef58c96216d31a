"""A torch.nn.Sequential in, its own structure out: forward, per-example gradients and
Jacobians equal torch's own and torch.func's, in the layout of model.state_dict()."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch adapter needs torch (pip install torch==2.13.0)")
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, jacrev, vmap  # noqa: E402

import bpcheck  # noqa: E402
from helpers import RTOL, rel_err  # noqa: E402

ACTIVATIONS = {
    "relu": nn.ReLU(),
    "leaky_relu": nn.LeakyReLU(0.2),
    "elu": nn.ELU(alpha=0.7),
    "tanh": nn.Tanh(),
    "sigmoid": nn.Sigmoid(),
    "softplus": nn.Softplus(),
    "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"),
    "silu": nn.SiLU(),
    "selu": nn.SELU(),
    "mish": nn.Mish(),
    # alpha = 0.5: torch's CELU gradient takes 1 / alpha in float32 (2e-8 off in float64
    # for alpha = 0.6, against exp(z / alpha) and jax.grad); 1 / 0.5 is exact
    "celu": nn.CELU(alpha=0.5),
    "soft_sign": nn.Softsign(),
    "relu6": nn.ReLU6(),
    "hard_tanh": nn.Hardtanh(-0.5, 1.5),
    "hard_sigmoid": nn.Hardsigmoid(),
    "hard_swish": nn.Hardswish(),
}
READ_AS = {  # the Activation each module is read as, where it has parameters
    "leaky_relu": bpcheck.Activation("leaky_relu", slope=0.2),
    "elu": bpcheck.Activation("elu", alpha=0.7),
    "softplus": bpcheck.Activation("softplus", threshold=20.0),
    "celu": bpcheck.Activation("celu", alpha=0.5),
    "hard_tanh": bpcheck.Activation("hard_tanh", min_val=-0.5, max_val=1.5),
}


def sequential(act, widths=(4, 6, 5, 3), dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(widths) - 2:
            layers.append(act)
    return nn.Sequential(*layers).to(dtype)


def data(d0=4, K=3, N=5, dtype=np.float64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d0)).astype(dtype), rng.integers(0, K, N)


def torch_per_example_grads(model, X, y):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, t):
        out = functional_call(model, p, (x[None],))
        return nn.functional.cross_entropy(out, t[None], reduction="sum")

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, torch.from_numpy(X), torch.from_numpy(y))
    return {k: v.numpy() for k, v in g.items()}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_forward_and_per_example_grads_equal_torch_for_each_activation_module(name):
    model = sequential(ACTIVATIONS[name])
    X, y = data()
    with torch.no_grad():
        want = model(torch.from_numpy(X)).numpy()
    assert rel_err(bpcheck.forward(model, X), want) < RTOL
    assert bpcheck.network(model).activation == (READ_AS.get(name, bpcheck.Activation(name)),) * 2
    got = bpcheck.per_example_grads(model, X, y)
    ref = torch_per_example_grads(model, X, y)
    assert list(got) == list(model.state_dict()) == list(ref)
    # torch's float64 Hardsigmoid gradient is 1/6 rounded to float32 (5e-9 off); bpcheck's
    # is checked against jax.grad in test_activations
    tol = 1e-7 if name == "hard_sigmoid" else RTOL
    for k in ref:
        assert got[k].shape == ref[k].shape and rel_err(got[k], ref[k]) < tol, k


def test_class_probabilities_give_torch_cross_entropy_with_a_probability_target():
    """torch's cross_entropy takes a floating (N, K) target as class probabilities (soft
    labels); bpcheck's per-example gradients and norms with the same targets equal it."""
    model = sequential(nn.Tanh())
    X, labels = data()
    Y = 0.8 * np.eye(3)[labels] + 0.2 / 3  # label smoothing
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, t):
        out = functional_call(model, p, (x[None],))
        return nn.functional.cross_entropy(out, t[None], reduction="sum")

    ref = vmap(grad(loss), in_dims=(None, 0, 0))(params, torch.from_numpy(X), torch.from_numpy(Y))
    got = bpcheck.per_example_grads(model, X, Y)
    for k in ref:
        assert rel_err(got[k], ref[k].numpy()) < RTOL, k
    norms = np.sqrt(sum((ref[k].numpy().reshape(len(X), -1) ** 2).sum(axis=1) for k in ref))
    assert rel_err(bpcheck.per_example_grad_norms(model, X, Y), norms) < RTOL


def test_network_reads_the_activations_and_a_different_activation_is_an_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.3), nn.Linear(4, 4), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    net = bpcheck.network(model)
    assert net.widths == [3, 4, 4, 2] and net.layout == "out_in"
    assert net.activation == (bpcheck.Activation("leaky_relu", slope=0.3), bpcheck.Activation("tanh"))
    with pytest.raises(ValueError, match="activation"):
        bpcheck.network(model, activation="relu")
    with pytest.raises(ValueError, match="layout"):
        bpcheck.network(model, layout="in_out")


def test_jacobian_rows_in_the_state_dict_layout_equal_torch_func_jacrev():
    model = sequential(nn.Tanh())
    X, _ = data()
    params = {k: v.detach() for k, v in model.named_parameters()}
    want = vmap(jacrev(lambda p, x: functional_call(model, p, (x[None],))[0]), in_dims=(None, 0))(
        params, torch.from_numpy(X))
    got = bpcheck.jacobian(model, X, flat=False)
    assert list(got) == list(want)
    for k in want:
        assert got[k].shape == tuple(want[k].shape) and rel_err(got[k], want[k].numpy()) < RTOL, k
    flat = bpcheck.jacobian(model, X)
    assert flat.shape == (5, 3, bpcheck.param_count([4, 6, 5, 3]))


def test_ntk_norms_and_gauss_newton_take_the_model_in_place_of_params():
    model = sequential(nn.ELU())
    X, y = data()
    net = bpcheck.network(model)
    J = bpcheck.jacobian(net.params, X, activation=net.activation)
    assert rel_err(bpcheck.ntk(model, X), np.einsum("ikp,jlp->ijkl", J, J)) < RTOL
    G = bpcheck.per_example_grads(model, X, y, flat=True)
    assert rel_err(bpcheck.per_example_grad_norms(model, X, y), np.linalg.norm(G, axis=1)) < RTOL
    v = np.random.default_rng(0).standard_normal(G.shape[1])
    Gv = bpcheck.gauss_newton(model, X) @ v
    assert rel_err(bpcheck.gauss_newton_matvec(model, X, v), Gv) < RTOL
    v_in_model = {k: torch.from_numpy(np.ascontiguousarray(t)) for k, t in net.from_beta(v).items()}
    Gv_in_model = bpcheck.gauss_newton_matvec(model, X, v_in_model)
    assert list(Gv_in_model) == list(model.state_dict())
    assert rel_err(net.to_beta(Gv_in_model), Gv) < RTOL


def test_float32_models_stay_float32_and_tensors_that_require_grad_are_detached():
    model = sequential(nn.ReLU(), dtype=torch.float32)
    assert all(p.requires_grad for p in model.parameters())
    X, y = data(dtype=np.float32)
    net = bpcheck.network(model)
    assert all(B.dtype == np.float32 and b.dtype == np.float32 for B, b in net.params)
    got = bpcheck.per_example_grads(model, torch.from_numpy(X).requires_grad_(), y)
    ref = torch_per_example_grads(model, X, y)
    for k in ref:
        assert got[k].dtype == np.float32 and rel_err(got[k], ref[k]) < 1e-5, k
    with torch.no_grad():
        model[0].weight.add_(1.0)  # the network holds a copy, not a view of the model
    assert not np.allclose(net.params[0][0], model[0].weight.detach().numpy())


def test_parameters_as_bpcheck_params_or_as_v_are_detached_like_tensors():
    """``torch.nn.Parameter`` is a subclass of ``torch.Tensor`` (module
    ``torch.nn.parameter``): a ``(B, b)`` list of a model's own parameters, or ``v`` as
    ``dict(model.named_parameters())``, raised torch's "Can't call numpy() on Tensor that
    requires grad" from inside bpcheck."""
    model = sequential(nn.Tanh())
    X, y = data()
    pairs = [(model[i].weight, model[i].bias) for i in (0, 2, 4)]
    assert all(type(t) is nn.Parameter and t.requires_grad for pair in pairs for t in pair)
    detached = [(B.detach().numpy(), b.detach().numpy()) for B, b in pairs]
    assert np.array_equal(bpcheck.forward(pairs, X, activation="tanh"),
                          bpcheck.forward(detached, X, activation="tanh"))
    assert np.array_equal(bpcheck.flatten_params(pairs), bpcheck.flatten_params(detached))
    v = dict(model.named_parameters())
    want = bpcheck.gauss_newton_matvec(model, X, {k: t.detach().numpy() for k, t in v.items()})
    got = bpcheck.gauss_newton_matvec(model, X, v)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_sparse_inputs_and_mixed_dtype_models_are_named_errors():
    X, _ = data()
    sparse = torch.from_numpy(X).to_sparse()
    with pytest.raises(TypeError, match=r"X: a torch tensor of layout torch.sparse_coo; .* "
                                        r"X.to_dense\(\)"):
        bpcheck.forward(sequential(nn.ReLU()), sparse)
    mixed = sequential(nn.ReLU())
    mixed[2].float()
    with pytest.raises(ValueError, match=r"model\[2\] \(Linear\) holds float32 weights and "
                                         r"model\[0\] \(Linear\) float64; .*\(model.double\(\)"):
        bpcheck.network(mixed)


def test_a_network_or_model_flattens_to_beta_in_place_of_params():
    model = sequential(nn.ReLU())
    model[4] = nn.Linear(5, 3, bias=False).double()
    net = bpcheck.network(model)
    state = {k: t.detach().numpy() for k, t in model.state_dict().items()}
    want = net.to_beta(state)
    assert want.shape == (bpcheck.param_count(net.widths, [True, True, False]),)
    assert np.array_equal(bpcheck.flatten_params(net), want)
    assert np.array_equal(bpcheck.flatten_params(model), want)


def test_flatten_first_identity_and_dropout_in_eval_mode_are_accepted():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Dropout(0.5), nn.ReLU(),
                          nn.Identity(), nn.Linear(4, 2)).double().eval()
    X, _ = data(d0=6)
    with torch.no_grad():
        want = model(torch.from_numpy(X)).numpy()
    assert rel_err(bpcheck.forward(model, X), want) < RTOL
    assert list(bpcheck.per_example_grads(model, X, np.zeros(5, dtype=int))) == [
        "1.weight", "1.bias", "5.weight", "5.bias"]


def test_two_linear_layers_in_a_row_have_the_identity_between_them():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    assert bpcheck.network(model).activation == (bpcheck.Activation("identity"),)


@pytest.mark.parametrize("layer, where", [
    (nn.Conv1d(1, 1, 1), r"model\[1\] \(Conv1d\)"),
    (nn.BatchNorm1d(4), r"model\[1\] \(BatchNorm1d\)"),
    (nn.LayerNorm(4), r"model\[1\] \(LayerNorm\)"),
    (nn.MultiheadAttention(4, 1), r"model\[1\] \(MultiheadAttention\)"),
    (nn.Softmax(dim=1), r"model\[1\] \(Softmax\)"),
])
def test_unsupported_layers_get_an_error_naming_the_layer_and_its_position(layer, where):
    model = nn.Sequential(nn.Linear(3, 4), layer, nn.Linear(4, 2))
    with pytest.raises(ValueError, match=where + " is a .* which bpcheck does not support"):
        bpcheck.network(model)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 2)), r"training mode.*model\.eval\(\)"),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Sigmoid()), r"ends with model\[3\]"),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Tanh(), nn.Linear(4, 2)), "one activation per"),
    (nn.Sequential(nn.ReLU(), nn.Linear(3, 2)), "before the first dense layer"),
    (nn.Sequential(nn.Linear(3, 4), nn.Flatten(), nn.Linear(4, 2)), "Flatten"),
])
def test_models_bpcheck_cannot_read_exactly_are_named_errors(model, message):
    with pytest.raises(ValueError, match=message):
        bpcheck.network(model)


class CappedReLU(nn.ReLU):
    """min(relu(z), 5): on inputs of the model's scale the same as ReLU (the forward-pass
    check cannot tell), elsewhere not."""

    def forward(self, x):
        return torch.clamp(x, 0, 5)


class WideLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


def _hooked(module):
    module.register_forward_hook(lambda m, args, out: 2 * out)
    return module


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(3, 4), CappedReLU(), nn.Linear(4, 2)),
     r"model\[1\] \(CappedReLU\), a torch.nn.ReLU with its own forward"),
    (nn.Sequential(WideLinear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
     r"model\[0\] \(WideLinear\), a torch.nn.Linear with its own forward"),
    (nn.Sequential(nn.Linear(3, 4), _hooked(nn.Tanh()), nn.Linear(4, 2)),
     r"model\[1\] \(Tanh\), a torch.nn.Tanh with forward hooks"),
])
def test_layers_that_compute_other_than_their_torch_class_are_refused(model, message):
    with pytest.raises(ValueError, match=message):
        bpcheck.network(model)


class FrozenBlock(nn.Sequential):
    """A fixed feature extractor: the same forward pass, no gradient through it."""

    def forward(self, x):
        return super().forward(x).detach()


def _detached(module):
    module.register_forward_hook(lambda m, args, out: out.detach())
    return module


def _halved_gradient(module):
    module.register_full_backward_hook(lambda m, grad_in, grad_out: (grad_in[0] / 2,))
    return module


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(FrozenBlock(nn.Linear(6, 8), nn.Tanh()), nn.Linear(8, 3)),
     r"model\[0\] \(FrozenBlock\), a torch.nn.Sequential with its own forward"),
    (nn.Sequential(_detached(nn.Sequential(nn.Linear(6, 8), nn.Tanh())), nn.Linear(8, 3)),
     r"model\[0\] \(Sequential\), a torch.nn.Sequential with forward hooks"),
    (_detached(nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))),
     r"model \(Sequential\), a torch.nn.Sequential with forward hooks"),
    (nn.Sequential(nn.Linear(6, 8), _halved_gradient(nn.Tanh()), nn.Linear(8, 3)),
     r"model\[1\] \(Tanh\), a torch.nn.Tanh with backward hooks"),
])
def test_containers_and_hooks_that_change_only_gradients_are_refused(model, message):
    """A Sequential subclass that detaches its output, or a hook on a container, passed
    the forward-pass check (the same outputs) and gave gradients torch says are 0."""
    with pytest.raises(ValueError, match=message):
        bpcheck.per_example_grads(model, np.ones((2, 6)), np.array([0, 1]))


class Swish15(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.5 * x)


def test_a_module_of_the_users_own_is_named_as_an_unsupported_layer():
    # (it was "a torch.nn.Module with its own forward ... use torch.nn.Module itself")
    with pytest.raises(ValueError, match=r"model\[1\] \(Swish15\) is a Swish15 layer, which "
                                         r"bpcheck does not support; .* \(relu, leaky_relu"):
        bpcheck.network(nn.Sequential(nn.Linear(4, 6), Swish15(), nn.Linear(6, 3)))


def test_a_module_other_than_sequential_is_an_error_that_says_what_to_do():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Sequential .* got Net"):
        bpcheck.forward(Net(), np.ones((2, 3)))


def test_per_example_grads_into_a_state_dict_shaped_buffer_equal_torch_func():
    """out= in the state_dict's layout, reused over two batches of the same size."""
    model = sequential(nn.Tanh())
    buffers = {k: np.full((5,) + tuple(v.shape), np.nan) for k, v in model.state_dict().items()}
    for seed in (1, 2):
        X, y = data(seed=seed)
        assert bpcheck.per_example_grads(model, X, y, out=buffers) is buffers
        ref = torch_per_example_grads(model, X, y)
        for k in ref:
            assert rel_err(buffers[k], ref[k]) < RTOL, k
    del buffers["2.bias"]
    with pytest.raises(TypeError, match=r"out: expected the model's structure.*'2\.bias'"):
        bpcheck.per_example_grads(model, X, y, out=buffers)


def test_a_softplus_with_beta_is_read_and_matches_torch():
    """Softplus(beta=2) was refused ('bpcheck's softplus is log(1 + exp(z)), beta=1')."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Softplus(beta=2.0, threshold=1.5),
                          nn.Linear(6, 6), nn.Softplus(beta=0.5), nn.Linear(6, 3)).double()
    assert bpcheck.network(model).activation[0] == \
        bpcheck.Activation("softplus", beta=2.0, threshold=1.5)
    X, y = data()
    X = 4 * X  # beta z on both sides of 1.5
    with torch.no_grad():
        z1 = 2.0 * model[0](torch.from_numpy(X)).numpy()
        want = model(torch.from_numpy(X)).numpy()
    assert (z1 > 1.5).any() and (z1 < 1.5).any()
    assert rel_err(bpcheck.forward(model, X), want) < RTOL
    got, ref = bpcheck.per_example_grads(model, X, y), torch_per_example_grads(model, X, y)
    for k in ref:
        assert rel_err(got[k], ref[k]) < RTOL, k


def test_a_softplus_is_read_with_its_threshold_and_matches_torch_on_both_sides_of_it():
    """torch's Softplus is z itself above its threshold (default 20): read as such, the
    gradients match torch.func where pre-activations pass the threshold."""
    assert bpcheck.network(sequential(nn.Softplus())).activation[0] == \
        bpcheck.Activation("softplus", threshold=20.0)
    model = sequential(nn.Softplus(threshold=1.5))
    X, y = data()
    X = 4 * X  # pre-activations on both sides of 1.5
    with torch.no_grad():
        z1 = model[0](torch.from_numpy(X)).numpy()
        want = model(torch.from_numpy(X)).numpy()
    assert (z1 > 1.5).any() and (z1 < 1.5).any()
    assert rel_err(bpcheck.forward(model, X), want) < RTOL
    got, ref = bpcheck.per_example_grads(model, X, y), torch_per_example_grads(model, X, y)
    for k in ref:
        assert rel_err(got[k], ref[k]) < RTOL, k
    with pytest.raises(ValueError, match="activation"):  # the model states its threshold
        bpcheck.network(model, activation="softplus")


class _ScaledLinear(nn.Linear):
    def __init__(self, *args):
        super().__init__(*args)
        self.scale = nn.Parameter(torch.ones(1))


def _old_weight_norm(layer):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of parametrizations
        return torch.nn.utils.weight_norm(layer)


@pytest.mark.parametrize("first, message", [
    (lambda: nn.utils.parametrizations.weight_norm(nn.Linear(4, 5)),
     r"model\[0\] \(ParametrizedLinear\) is parametrized"),
    (lambda: nn.utils.parametrizations.spectral_norm(nn.Linear(4, 5)), "is parametrized"),
    # (the old weight_norm computes the weight in a forward pre-hook)
    (lambda: _old_weight_norm(nn.Linear(4, 5)), r"model\[0\] \(Linear\), a torch.nn.Linear with "
                                                r"forward hooks"),
    (lambda: _ScaledLinear(4, 5), "the parameter 0.scale belongs to no Linear"),
], ids=["weight_norm", "spectral_norm", "old_weight_norm", "extra_parameter"])
def test_parameters_other_than_the_linear_weights_and_biases_are_named_errors(first, message):
    """Results are keyed like the model's parameters: a weight computed from others would
    get a gradient under a name that is no parameter, and the real ones none."""
    model = nn.Sequential(first(), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(ValueError, match=message):
        bpcheck.network(model)


def test_a_vector_in_the_models_structure_with_a_missing_or_unexpected_key_is_named():
    model = sequential(nn.Tanh(), widths=(4, 5, 3))
    X, _ = data()
    v = {k: torch.randn_like(p) for k, p in model.state_dict().items()}
    assert set(bpcheck.gauss_newton_matvec(model, X, v)) == set(v)
    missing = {k: t for k, t in v.items() if k != "0.bias"}
    with pytest.raises(ValueError, match=r"v: in the structure of the torch Sequential: .*"
                                         r"missing \['0.bias'\], unexpected \[\]"):
        bpcheck.gauss_newton_matvec(model, X, missing)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['2.weigth'\]"):
        bpcheck.gauss_newton_matvec(model, X, {**v, "2.weigth": torch.zeros(3, 5)})


def test_tensors_and_models_on_the_meta_device_are_named_errors():
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"X: a tensor on the meta device, which holds no values"):
        bpcheck.per_example_grads(model, torch.empty(6, 4, device="meta"), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"model\[0\]\.weight: a tensor on the meta device"):
        bpcheck.network(model.to("meta"))


def test_a_model_that_flattens_first_takes_its_inputs_as_the_model_does():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    rng = np.random.default_rng(2)
    images, y = rng.standard_normal((5, 3, 2, 2)), rng.integers(0, 3, 5)
    flat = images.reshape(5, 12)
    assert bpcheck.network(model).flattens and not bpcheck.network(model[1:]).flattens
    with torch.no_grad():
        want = model(torch.from_numpy(images)).numpy()
    assert rel_err(bpcheck.forward(model, images), want) < RTOL
    assert rel_err(bpcheck.forward(model, torch.from_numpy(images)), want) < RTOL
    got, ref = bpcheck.per_example_grads(model, images, y), torch_per_example_grads(model, images, y)
    for k in ref:
        assert rel_err(got[k], ref[k]) < RTOL, k
    v = rng.standard_normal(bpcheck.param_count([12, 6, 3]))
    pairs = [
        (bpcheck.jacobian(model, images, flat=True), bpcheck.jacobian(model, flat, flat=True)),
        (bpcheck.ntk(model, images, images[:2]), bpcheck.ntk(model, flat, flat[:2])),
        (bpcheck.per_example_grad_norms(model, images, y), bpcheck.per_example_grad_norms(model, flat, y)),
        (bpcheck.gauss_newton(model, images), bpcheck.gauss_newton(model, flat)),
        (bpcheck.gauss_newton_matvec(model, images, v), bpcheck.gauss_newton_matvec(model, flat, v)),
        (bpcheck.gauss_newton_operator(model, images) @ v, bpcheck.gauss_newton_operator(model, flat) @ v),
        (bpcheck.jacobian_factors(model, images)[0].V, bpcheck.jacobian_factors(model, flat)[0].V),
    ]
    for i, (a, b) in enumerate(pairs):
        assert np.array_equal(a, b), i
    with pytest.raises(ValueError, match=r"X: the model flattens each example .* into 12 inputs; "
                                         r"got shape \(5, 3, 5\), whose examples have 15 entries"):
        bpcheck.per_example_grads(model, rng.standard_normal((5, 3, 5)), y)
    with pytest.raises(ValueError, match=r"X2: the model flattens .* got shape \(2, 2, 2\)"):
        bpcheck.ntk(model, images, rng.standard_normal((2, 2, 2)))
    with pytest.raises(ValueError, match=r"X: expected shape \(N, 12\) or \(12,\), got a 3-d array"):
        bpcheck.forward(model[1:], rng.standard_normal((5, 3, 2)))  # no Flatten: no flattening


@pytest.mark.parametrize("wrap, attr", [(lambda m: nn.DataParallel(m), "module"),
                                        (lambda m: torch.compile(m), "_orig_mod")])
def test_a_wrapped_model_is_refused_with_the_attribute_that_holds_it(wrap, attr):
    with warnings.catch_warnings():  # torch.compile's own deprecation warnings, on some Pythons
        warnings.simplefilter("ignore", DeprecationWarning)
        model = wrap(sequential(nn.ReLU()))
    with pytest.raises(TypeError, match=rf"model: \w+ wraps a Sequential; pass the model it "
                                        rf"wraps, model\.{attr}"):
        bpcheck.network(model)


def test_one_linear_layer_a_linear_model_keyed_like_its_state_dict():
    # softmax regression as one nn.Linear: keys "weight" and "bias", as its state_dict
    X, y = data()
    for bias in (True, False):
        torch.manual_seed(3)
        layer = nn.Linear(4, 3, bias=bias).to(torch.float64)
        net = bpcheck.network(layer)
        assert net.widths == [4, 3] and net.names == ["model (Linear)"]
        with torch.no_grad():
            assert rel_err(bpcheck.forward(layer, X), layer(torch.from_numpy(X)).numpy()) < RTOL
        got, want = bpcheck.per_example_grads(layer, X, y), torch_per_example_grads(layer, X, y)
        assert set(got) == set(want) == set(layer.state_dict())
        for k in want:
            assert rel_err(got[k], want[k]) < RTOL
        rng = np.random.default_rng(4)  # (not all ones: softmax cross-entropy's G sends those to 0)
        v = {k: rng.standard_normal(t.shape) for k, t in layer.state_dict().items()}
        Gv = bpcheck.gauss_newton_matvec(layer, X, v)
        flat = bpcheck.gauss_newton(layer, X) @ np.concatenate([v[k].ravel() for k in v])
        assert rel_err(np.concatenate([Gv[k].ravel() for k in v]), flat) < RTOL


def _tied():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(),
                          nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    model[4].weight = model[2].weight
    return model


def _nan_weight():
    model = sequential(nn.Tanh())
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    return model


def _mixed_bias():
    model = sequential(nn.Tanh(), dtype=torch.float32)
    model[0].bias = nn.Parameter(model[0].bias.detach().double())
    return model


@pytest.mark.parametrize("make, error, message", [
    (lambda: nn.Sequential(nn.LazyLinear(6), nn.Tanh(), nn.Linear(6, 3)), ValueError,
     r"model\[0\] \(LazyLinear\) has not made its weights yet"),
    (_tied, ValueError, r"model\[4\] \(Linear\) appears twice or shares its weight"),
    (_nan_weight, ValueError, r"model\[0\]\.weight: contains NaN or inf"),
    (_mixed_bias, ValueError, r"model\[0\] \(Linear\) holds a torch.float32 weight and a "
                              r"torch.float64 bias"),
])
def test_torch_models_read_wrong_get_the_models_own_names(make, error, message):
    """An unmade lazy layer was told it had forward hooks; a weight shared through a
    Parameter was 'not among the model's parameters'; NaN in a weight was named B^(1)
    (params[0][0]); a float64 bias on a float32 weight raised torch's own RuntimeError."""
    with pytest.raises(error, match=message):
        bpcheck.per_example_grads(make(), *data())


def test_a_user_loss_written_in_torch_is_told_to_return_numpy():
    loss = bpcheck.Loss(grad=lambda z, t: torch.from_numpy(z) - torch.from_numpy(t),
                        hessian=lambda z, t: np.broadcast_to(np.eye(z.shape[1]), z.shape + z.shape[1:]))
    X, _ = data()
    with pytest.raises(TypeError, match=r"Loss.grad: expected a NumPy array .* got a torch.Tensor"):
        bpcheck.per_example_grads(sequential(nn.Tanh()), X, np.zeros((5, 3)), loss=loss)
