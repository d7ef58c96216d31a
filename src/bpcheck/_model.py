"""The user's model in, the user's layout out: adapters from frameworks to ``(B, b)`` lists.

bpcheck computes with ``params = [(B^(l), b^(l))]``, ``B^(l)`` shaped ``(d_l, d_{l-1})``
(the ``"out_in"`` layout: ``z = a @ B.T + b``).  Frameworks store dense layers in two
orientations:

==========================  ===================  ==========
model                        weight               layout
==========================  ===================  ==========
``torch.nn.Linear``          ``weight``           ``out_in``
``equinox.nn.Linear``        ``weight``           ``out_in``
``flax.nnx.Linear``          ``kernel``           ``in_out``
``flax.linen.Dense``         ``kernel``           ``in_out``
a plain pytree of layers     stated by the user   ``layout=``
==========================  ===================  ==========

The orientation is never guessed from shapes (a square layer would be silently wrong):
it is known from the framework, or stated with ``layout=``.  :func:`network` reads the
model once into a :class:`Network`: the ``(B, b)`` list, one activation per hidden layer
(read from the model where the model says it), and the way back from bpcheck's results
to the model's own structure.  Every public function takes a :class:`Network`, or the
model itself, in place of ``params``; per-example gradients (and, with ``flat=False``,
the rows of the Jacobian) then come back in the model's structure: a dict keyed like
``model.state_dict()`` for PyTorch, the model's own pytree for Equinox, Flax and plain
pytrees, each array with the result's leading axes (``N``, or ``N, K``) in front and
the weight in the model's own orientation.

A layer without a bias (``torch.nn.Linear(bias=False)``, ``use_bias=False``) is read as
``(B, None)``: its bias has no entries in ``beta`` and none in results in the model's
structure.

Before a :class:`Network` is handed out, the model's own forward pass is compared with
bpcheck's on a few random inputs; a model that bpcheck would read differently from how it
computes (layers in another order, another activation) is an error, not a wrong result.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ._activations import NAMES as ACTIVATION_NAMES
from ._activations import Activation, resolve_activations
from ._arrays import check_finite, is_jax, is_tracer, torch_values
from ._params import layers_from_beta

LAYOUTS = ("in_out", "out_in")
_WEIGHT_KEYS = ("W", "w", "weight", "kernel")
_BIAS_KEYS = ("b", "bias")


class Dense(NamedTuple):
    """One dense layer read from a model: its weight as stored, and where it came from."""

    name: str
    """Where the layer sits in the model, e.g. ``"model[2] (Linear)"``; used in errors."""
    W: Any
    """The weight, in the model's orientation."""
    b: Any
    """The bias, shape ``(out,)``, or ``None`` for a layer without one."""
    layout: str
    """``"out_in"`` (``W`` is ``B^(l)``) or ``"in_out"`` (``W`` is ``B^(l)'``)."""
    keys: tuple
    """The weight's and the bias's keys in the model's structure (state-dict names for
    PyTorch, leaf positions for JAX pytrees); the bias's is ``None`` for a layer without
    one."""


class Network:
    """A model's dense layers in bpcheck's layout, with the way back to the model's structure.

    Made by :func:`network`; pass it (or the model itself) wherever a function takes
    ``params``.

    ``params``: ``[(B^(l), b^(l))]``, ``B^(l)`` shaped ``(d_l, d_{l-1})``, in the model's
    dtype (NumPy for PyTorch models, JAX arrays for JAX models).  ``activation``: one
    :class:`bpcheck.Activation` per hidden layer.  ``widths``: ``[d_0, ..., d_{L+1}]``.
    ``names``: where each layer sits in the model.  ``layout``: the model's orientation,
    ``"out_in"`` or ``"in_out"``.  ``source``: what the model was, e.g.
    ``"torch Sequential"``.  ``flattens``: the model flattens each example first (a torch
    ``Flatten`` before the first ``Linear``), so inputs may also come as ``(N, ...)``
    with ``d_0`` entries per example, as the model takes them (images ``(N, C, H, W)``).
    """

    def __init__(self, layers: Sequence[Dense], activation, source: str, structure,
                 flattens: bool = False):
        self.params = [(_oriented(d.W, d.layout), d.b) for d in layers]
        self.activation = tuple(activation)
        self.widths = [int(self.params[0][0].shape[1])] + [int(B.shape[0]) for B, _ in self.params]
        self.names = [d.name for d in layers]
        self.layout = layers[0].layout
        self.source = source
        self.flattens = flattens
        self._layers = list(layers)
        self._layouts = tuple(d.layout for d in layers)
        self._structure = structure

    def __repr__(self) -> str:
        acts = ", ".join(str(a) for a in self.activation)
        return f"Network({self.source}, widths={self.widths}, layout={self.layout!r}, activation=[{acts}])"

    def from_layers(self, pairs: Sequence[tuple[Any, Any]]):
        """Per-layer results ``[(gB^(l), gb^(l))]`` in the model's structure.

        ``gB^(l)``: shape ``(..., d_l, d_{l-1})`` (bpcheck's orientation), ``gb^(l)``:
        ``(..., d_l)``, with the same leading axes ``...`` for every layer.  Returns the
        model's structure (see :func:`network`) holding, for each weight, ``gB^(l)`` in
        the model's orientation (``(..., d_{l-1}, d_l)`` for ``"in_out"``), and for each
        bias ``gb^(l)``.
        """
        leaves = [t for pair in pairs for t in pair]
        return self._rebuilt(_converted(_in_layouts, (self._layouts,), leaves))

    def _rebuilt(self, leaves):
        """The model's structure from ``[W^(1), b^(1), ...]`` in the model's orientation
        (``b^(l)`` ``None`` for a layer without a bias)."""
        values = {}
        for d, W, b in zip(self._layers, leaves[0::2], leaves[1::2]):
            values[d.keys[0]] = W
            if d.keys[1] is not None:
                values[d.keys[1]] = b
        return self._structure.rebuild(values)

    @property
    def biases(self) -> tuple | None:
        """Which layers have a bias: ``None`` when all do, else one bool per layer."""
        flags = tuple(d.b is not None for d in self._layers)
        return None if all(flags) else flags

    def from_beta(self, G: Any):
        """An array whose last axis is in ``beta`` order, ``(..., P)``, in the model's structure.

        ``beta = [vec(B^(1)'), b^(1), ...]``.  E.g. per-example gradients ``(N, P)`` give
        weights ``(N, d_l, d_{l-1})`` (``out_in``) or ``(N, d_{l-1}, d_l)`` (``in_out``)
        and biases ``(N, d_l)``; a Jacobian ``(N, K, P)`` gives ``(N, K, ...)``.  NumPy
        results are views of ``G``.
        """
        return self._rebuilt(_converted(_beta_in_layouts,
                                        (tuple(self.widths), self._layouts, self.biases), [G]))

    def to_beta(self, tree: Any):
        """The inverse of :meth:`from_beta` for one vector: the model's structure -> ``(P,)``.

        Each weight in the model's orientation, each bias ``(d_l,)``; returns ``beta``
        order ``[vec(B^(1)'), b^(1), ...]``, NumPy or JAX following the leaves.
        """
        from ._arrays import as_array, backend

        pairs = self._leaves_of(tree)
        xp = backend(*(t for pair in pairs for t in pair if t is not None))
        parts = []
        for (B, _), d, (W, b) in zip(self.params, self._layers, pairs):
            W = as_array(f"{d.name} weight", W, xp)
            want = weight_shape(*B.shape, d.layout)
            if d.b is None:  # a layer without a bias
                if tuple(W.shape) != want:
                    raise ValueError(f"{d.name}: expected a weight of shape {want} as in the "
                                     f"model, got {tuple(W.shape)}")
                parts.append(W)
                continue
            b = as_array(f"{d.name} bias", b, xp)
            if tuple(W.shape) != want or tuple(b.shape) != (B.shape[0],):
                raise ValueError(
                    f"{d.name}: expected a weight of shape {want} and a bias of shape "
                    f"({B.shape[0]},) as in the model, got {tuple(W.shape)} and {tuple(b.shape)}"
                )
            parts += [W, b]
        return _converted(_beta_of_layouts, (self._layouts, self.biases), parts)

    def _leaves_of(self, tree):
        """``[(W, b)]`` of a tree in the model's structure (the inverse of ``from_layers``)."""
        flat = self._structure.leaves(tree)
        return [(flat[d.keys[0]], None if d.keys[1] is None else flat[d.keys[1]])
                for d in self._layers]


def in_model_layout(result: Any, widths: Sequence[int], net: Network | None, flat: bool | None,
                    biases: tuple | None = None):
    """A result in ``beta`` order ``(..., P)`` as the caller asked for it.

    ``flat=True``: as it is.  ``flat=False``: per layer, ``[(G_B^(l), G_b^(l))]`` for
    bpcheck's params (``G_b^(l)`` ``None`` for a layer without a bias, ``biases``), or the
    model's own structure for a :class:`Network` (see :meth:`Network.from_beta`).
    ``flat=None``: the model's structure for a network, flat otherwise.
    """
    if wanted_flat(flat, net):
        return result
    return layers_from_beta(result, widths, biases) if net is None else net.from_beta(result)


def wanted_flat(flat: Any, net: Network | None) -> bool:
    """Whether ``flat`` asks for one array in ``beta`` order: ``None`` means yes for
    bpcheck's params, no (the model's structure) for a :class:`Network`."""
    if flat is None:
        return net is None
    if not isinstance(flat, (bool, np.bool_)):
        raise TypeError(f"flat: expected True or False, got {flat!r}")
    return bool(flat)


def layouts_of(net: Network | None, n: int) -> tuple:
    """The orientation of each of the ``n`` layers' weights: the model's for a
    :class:`Network`, ``"out_in"`` (bpcheck's ``B^(l)``) otherwise."""
    return ("out_in",) * n if net is None else net._layouts


def weight_shape(d: int, d_prev: int, layout: str) -> tuple:
    """The shape of a ``(d_l, d_{l-1})`` weight as ``layout`` stores it."""
    return (d, d_prev) if layout == "out_in" else (d_prev, d)


def in_model_layers(layers: list, net: Network | None):
    """Per-layer results ``[(G_W^(l), G_b^(l))]``, each ``G_W^(l)`` already in its layer's
    layout (:func:`layouts_of`), in the model's structure for a :class:`Network`, as they
    are for bpcheck's params."""
    return layers if net is None else net._rebuilt([t for pair in layers for t in pair])


def _converted(kernel, static, arrays):
    """``kernel(*arrays, *static, xp)``: NumPy's views and copies for NumPy arrays, one
    compiled program for JAX ones (eager, each slice, reshape and transpose is a program
    call of its own: the 10-32-32-3 Gauss-Newton-vector product of a pytree model took
    1.4 ms against 0.08 ms for its ``(B, b)`` list, 1.2 ms of it converting ``v`` and
    the result).  ``None`` entries (the biases a layer lacks) pass through as they are."""
    if all(t is None or type(t) is np.ndarray for t in arrays):
        return kernel(*arrays, *static, np)
    from ._compiled import compiled

    return compiled(kernel, static)(*arrays)


def _in_layouts(*args):
    """``[gB^(1), gb^(1), ...]`` in bpcheck's orientation -> each weight in its layer's
    layout (``layouts``), biases as they are."""
    *leaves, layouts, xp = args
    return [t if i % 2 or layouts[i // 2] == "out_in" else _swap_last(t)
            for i, t in enumerate(leaves)]


def _beta_in_layouts(G, widths, layouts, biases, xp):
    """``(..., P)`` in ``beta`` order -> ``[W^(1), b^(1), ...]`` in the layers' layouts
    (``b^(l)`` ``None`` for a layer without a bias, ``biases``)."""
    return _in_layouts(*[t for pair in layers_from_beta(G, widths, biases) for t in pair],
                       layouts, xp)


def _beta_of_layouts(*args):
    """``[W^(1), b^(1), ...]`` in the layers' layouts (no ``b^(l)`` for a layer without a
    bias, ``biases``) -> ``beta`` ``(P,)``."""
    *leaves, layouts, biases, xp = args
    parts, leaves = [], iter(leaves)
    for l, layout in enumerate(layouts):
        parts.append(_oriented(next(leaves), layout).reshape(-1))
        if biases is None or biases[l]:
            parts.append(next(leaves))
    return xp.concatenate(parts)


def _swap_last(x):
    return x.swapaxes(-1, -2)


def _oriented(W, layout):
    """``B^(l)`` from a weight stored in ``layout``."""
    return W if layout == "out_in" else W.T


# --- reading activations -----------------------------------------------------------


def _jax_activations() -> dict:
    """The JAX activation functions bpcheck knows (compared by identity), as Activations."""
    import jax
    import jax.numpy as jnp

    known = {
        jax.nn.relu: Activation("relu"),
        jax.nn.tanh: Activation("tanh"),
        jnp.tanh: Activation("tanh"),
        jax.nn.sigmoid: Activation("sigmoid"),
        jax.nn.softplus: Activation("softplus"),
        jax.nn.elu: Activation("elu", alpha=1.0),
        jax.nn.leaky_relu: Activation("leaky_relu", slope=0.01),
        jax.nn.gelu: Activation("gelu_tanh"),  # jax.nn.gelu's default is approximate=True
        jax.nn.silu: Activation("silu"),
        jax.nn.selu: Activation("selu"),
        jax.nn.mish: Activation("mish"),
        jax.nn.celu: Activation("celu", alpha=1.0),
        jax.nn.soft_sign: Activation("soft_sign"),
        jax.nn.relu6: Activation("relu6"),
        jax.nn.hard_tanh: Activation("hard_tanh"),
        jax.nn.hard_sigmoid: Activation("hard_sigmoid"),
        jax.nn.hard_swish: Activation("hard_swish"),  # also jax.nn.hard_silu
        jax.nn.hard_silu: Activation("hard_swish"),
    }
    if hasattr(jax.nn, "swish"):  # (an alias of silu, or its own function in some versions)
        known[jax.nn.swish] = Activation("silu")
    if hasattr(jax.nn, "identity"):
        known[jax.nn.identity] = Activation("identity")
    return known


def _read_jax_activation(fn):
    """The :class:`Activation` of a JAX callable, or ``None`` when bpcheck cannot tell.

    Known: the ``jax.nn`` functions (``flax.nnx.relu`` and ``flax.linen.relu`` are the
    same objects), ``jnp.tanh``, and ``functools.partial`` of ``leaky_relu``
    (``negative_slope``), ``elu`` and ``celu`` (``alpha``) and ``gelu`` (``approximate``).
    """
    import jax

    known = _jax_activations()
    if not isinstance(fn, functools.partial):
        try:
            return known.get(fn)
        except TypeError:  # an unhashable callable
            return None
    if fn.args or fn.func not in known:
        return None
    kw = dict(fn.keywords)
    if fn.func is jax.nn.leaky_relu and set(kw) <= {"negative_slope"}:
        return Activation("leaky_relu", slope=float(kw.get("negative_slope", 0.01)))
    if fn.func is jax.nn.elu and set(kw) <= {"alpha"}:
        return Activation("elu", alpha=float(kw.get("alpha", 1.0)))
    if fn.func is jax.nn.celu and set(kw) <= {"alpha"}:
        return Activation("celu", alpha=float(kw.get("alpha", 1.0)))
    if fn.func is jax.nn.gelu and set(kw) <= {"approximate"}:
        return Activation("gelu_tanh" if kw.get("approximate", True) else "gelu")
    return None if kw else known[fn.func]


def _is_identity(fn) -> bool:
    """``jax.nn.identity``, or a function that returns its input unchanged on a probe with
    negative, zero and positive entries from 1e-3 to 1e6 in size (``eqx.nn.MLP``'s default
    final activation is a ``lambda x: x``; a clip of the logits at 3.5 passed a probe of
    entries up to 3 and then went unseen, since random inputs rarely reach it)."""
    import jax
    import jax.numpy as jnp

    if getattr(jax.nn, "identity", None) is not None and fn is jax.nn.identity:
        return True
    with jax.ensure_compile_time_eval():  # concrete also inside a jax.jit trace
        probe = jnp.asarray([-1e6, -1e3, -30.0, -2.5, -0.5, -1e-3, 0.0, 1e-3, 0.25, 3.0, 30.0,
                             1e3, 1e6])
        try:
            out = fn(probe)
        except Exception:  # a function that does not take a vector is no identity
            return False
    if is_tracer(out):  # the function closes over a traced array: it is no identity
        return False
    return bool(np.array_equal(np.asarray(out), np.asarray(probe)))


def _callable_name(fn) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_callable_name(fn.func)}, ...)"
    return getattr(fn, "__name__", None) or repr(fn)


# --- the order of layers and activations --------------------------------------------


class _Walk:
    """Collects dense layers, and what stands between consecutive ones, in forward order.

    ``activation`` gets one ``(Activation or None, where)`` per hidden layer: ``None`` when
    the model holds an activation bpcheck cannot read (then ``activation=`` must state it);
    two dense layers with nothing between them have the identity.
    """

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.layers: list[Dense] = []
        self.activation: list = []
        self.pending = None

    def dense(self, layer: Dense):
        if self.layers:
            self.activation.append(self.pending or (Activation("identity"), layer.name))
        self.layers.append(layer)
        self.pending = None

    def act(self, activation, where: str):
        if not self.layers:
            raise ValueError(
                f"{self.model_name}: {where} comes before the first dense layer; bpcheck's "
                f"networks start with a dense layer (only a Flatten may precede it)"
            )
        if self.pending is not None:
            raise ValueError(
                f"{self.model_name}: {where} follows {self.pending[1]} with no dense layer "
                f"between them; bpcheck takes one activation per hidden layer"
            )
        self.pending = (activation, where)

    def finish(self):
        if not self.layers:
            raise ValueError(f"{self.model_name}: has no dense layer")
        if self.pending is not None:
            raise ValueError(
                f"{self.model_name}: ends with {self.pending[1]}; bpcheck's outputs z^(L+1) are "
                f"the last dense layer's outputs (put a final softmax or sigmoid into the loss, "
                f"or drop the final activation)"
            )
        return self.layers, self.activation


def _unsupported(where: str, what: str):
    return ValueError(
        f"model: {where} is {what}, which bpcheck does not support; bpcheck's networks are "
        f"dense layers with one elementwise activation between them (relu, leaky_relu, elu, "
        f"selu, tanh, sigmoid, softplus, gelu, gelu_tanh, silu, mish, celu, soft_sign, relu6, "
        f"hard_tanh, hard_sigmoid, hard_swish, identity)"
    )


# --- PyTorch -----------------------------------------------------------------------


def _torch_activation(m):
    """The :class:`Activation` of a torch activation module, ``None`` for other modules."""
    import torch.nn as tnn

    if isinstance(m, tnn.ReLU):
        return Activation("relu")
    if isinstance(m, tnn.LeakyReLU):
        return Activation("leaky_relu", slope=float(m.negative_slope))
    if isinstance(m, tnn.ELU):
        return Activation("elu", alpha=float(m.alpha))
    if isinstance(m, tnn.SELU):
        return Activation("selu")
    if isinstance(m, tnn.Tanh):
        return Activation("tanh")
    if isinstance(m, tnn.Sigmoid):
        return Activation("sigmoid")
    if isinstance(m, tnn.GELU):
        return Activation("gelu" if m.approximate == "none" else "gelu_tanh")
    if isinstance(m, tnn.SiLU):
        return Activation("silu")
    if isinstance(m, tnn.Mish):
        return Activation("mish")
    if isinstance(m, tnn.CELU):
        return Activation("celu", alpha=float(m.alpha))
    if isinstance(m, tnn.Softsign):
        return Activation("soft_sign")
    if isinstance(m, tnn.ReLU6):  # (a subclass of Hardtanh)
        return Activation("relu6")
    if isinstance(m, tnn.Hardtanh):
        return Activation("hard_tanh", min_val=float(m.min_val), max_val=float(m.max_val))
    if isinstance(m, tnn.Hardsigmoid):
        return Activation("hard_sigmoid")
    if isinstance(m, tnn.Hardswish):
        return Activation("hard_swish")
    if isinstance(m, tnn.Softplus):  # z itself where beta z is above the threshold
        return Activation("softplus", beta=float(m.beta), threshold=float(m.threshold))
    return None


def _torch_parametrized(m) -> bool:
    from torch.nn.utils import parametrize

    return parametrize.is_parametrized(m)


def _torch_parameters_are(model, keys: list) -> None:
    """The model's parameters are exactly the weights and biases read (``keys``, named as
    in ``state_dict``): results are keyed by them, so a parameter read from elsewhere (the
    old ``weight_norm``'s ``weight_g`` and ``weight_v``) or one left out is an error."""
    names = [name for name, _ in model.named_parameters()]
    for name in names:
        if name not in keys:
            raise ValueError(
                f"model: the parameter {name} belongs to no Linear layer's weight or bias; "
                f"bpcheck models Linear layers with elementwise activations only (a layer "
                f"whose weight is computed, as by weight_norm, is not supported)")
    for key in keys:
        if key not in names:
            raise ValueError(f"model: {key} is not among the model's parameters "
                             f"(named_parameters: {names}); bpcheck reads plain Linear layers")


def _torch_array(t, name: str):
    """A detached NumPy copy of a tensor (moved to the CPU, dtype kept), finite (NaN in a
    weight was named ``B^(1) (params[0][0])``, not the model's own name for it)."""
    out = torch_values(name, t).copy()
    check_finite(name, out)
    return out


def _torch_items(model, prefix=""):
    """``(state-dict prefix, module)`` in forward order, nested ``Sequential``s flattened
    (a module that appears twice is listed twice, as it runs; ``named_children`` would list
    it once)."""
    import torch.nn as tnn

    for name, child in model._modules.items():
        if isinstance(child, tnn.Sequential):  # a container of its own: plain too
            _torch_plain(child, f"model[{prefix}{name}] ({type(child).__name__})")
            yield from _torch_items(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


def _torch_plain(m, where: str) -> None:
    """``m`` computes what its torch class does: a subclass with its own ``forward`` (a
    ReLU capped at 5, say; a ``Sequential`` that detaches its output) or a module with
    forward or backward hooks is refused, since bpcheck reads the layer by its class (and
    the forward-pass check, on inputs of the model's scale, may not reach where they
    differ, and never sees what changes gradients only)."""
    base = next((cls for cls in type(m).__mro__ if cls.__module__.startswith("torch.")), None)
    if base is not None and base.__name__ == "Module" and base.__module__.startswith("torch.nn"):
        return  # a module of the user's own, no torch layer: not read (an unsupported layer)
    backward = getattr(m, "_backward_hooks", None) or getattr(m, "_backward_pre_hooks", None)
    if base is not None and (type(m).forward is not base.forward or m._forward_hooks
                             or m._forward_pre_hooks or backward):
        what = "its own forward" if type(m).forward is not base.forward else \
            "backward hooks" if backward else "forward hooks"
        raise ValueError(f"model: {where}, a torch.nn.{base.__name__} with {what}, may compute "
                         f"something else; bpcheck reads torch's own layers only (use "
                         f"torch.nn.{base.__name__} itself, without hooks)")


def _read_torch(model):
    import torch.nn as tnn

    wrapped = ("_orig_mod" if type(model).__name__ == "OptimizedModule" else "module"
               if isinstance(model, (tnn.DataParallel, tnn.parallel.DistributedDataParallel))
               else None)
    if wrapped is not None and isinstance(getattr(model, wrapped, None), tnn.Module):
        raise TypeError(
            f"model: {type(model).__name__} wraps a {type(getattr(model, wrapped)).__name__}; "
            f"pass the model it wraps, model.{wrapped} (bpcheck reads the layers' weights and "
            f"computes with them itself; results are keyed like that model's state_dict())")
    lone = isinstance(model, tnn.Linear)  # one layer: a linear model (softmax regression)
    if not (lone or isinstance(model, tnn.Sequential)):
        raise TypeError(
            f"model: expected a torch.nn.Sequential of Linear layers and activations (or one "
            f"Linear), got {type(model).__name__}; put the layers into nn.Sequential(...) "
            f"(bpcheck reads the order of the layers from it)"
        )
    if not lone:  # (a lone Linear is checked as the layer below)
        _torch_plain(model, f"model ({type(model).__name__})")
    walk = _Walk(f"model (torch.nn.{type(model).__name__})")
    linears = []
    for key, m in [("", model)] if lone else _torch_items(model):
        where = f"model[{key}] ({type(m).__name__})" if key else f"model ({type(m).__name__})"
        prefix = f"{key}." if key else ""  # a lone Linear's state_dict: weight, bias
        if isinstance(m, tnn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            raise ValueError(f"model: {where} has not made its weights yet (a lazy layer "
                             f"makes them on its first call): run the model on one input first")
        _torch_plain(m, where)
        if isinstance(m, tnn.Linear):
            if any(m is seen for seen in linears) or any(
                    m.weight is seen.weight for seen in linears):
                raise ValueError(f"model: {where} appears twice or shares its weight with "
                                 f"another layer (tied weights are not supported)")
            if m.bias is not None and m.bias.dtype != m.weight.dtype:
                raise ValueError(f"model: {where} holds a {m.weight.dtype} weight and a "
                                 f"{m.bias.dtype} bias; bpcheck computes in one dtype, as "
                                 f"torch does: cast the model first (model.double() or "
                                 f"model.float())")
            if _torch_parametrized(m):
                raise ValueError(
                    f"model: {where} is parametrized (weight_norm, spectral_norm, ...): its "
                    f"weight is computed from other parameters, whose gradients bpcheck does not "
                    f"give; remove the parametrization first "
                    f"(torch.nn.utils.parametrize.remove_parametrizations)")
            linears.append(m)
            no_bias = m.bias is None  # Linear(bias=False)
            walk.dense(Dense(where, _torch_array(m.weight, f"model[{key}].weight"),
                             None if no_bias else _torch_array(m.bias, f"model[{key}].bias"),
                             "out_in", (f"{prefix}weight", None if no_bias else f"{prefix}bias")))
        elif isinstance(m, tnn.Flatten):
            if walk.layers or m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"model: {where} is supported only as Flatten(1, -1) before the "
                                 f"first Linear layer")
        elif isinstance(m, tnn.Identity):
            continue
        elif isinstance(m, tnn.modules.dropout._DropoutNd):
            if m.training:
                raise ValueError(f"model: {where} is in training mode (random); call "
                                 f"model.eval() first, which makes it the identity")
        elif _torch_activation(m) is not None:
            walk.act(_torch_activation(m), where)
        elif type(m).__name__ == "OptimizedModule" and isinstance(
                getattr(m, "_orig_mod", None), tnn.Module):
            raise TypeError(f"model: {where} is a torch.compile'd layer; put the layer it "
                            f"wraps, {where.split(' ')[0]}._orig_mod, in the Sequential "
                            f"(bpcheck computes with the weights itself)")
        else:
            raise _unsupported(where, f"a {type(m).__name__} layer")
    layers, acts = walk.finish()
    other = next((d for d in layers if d.W.dtype != layers[0].W.dtype), None)
    if other is not None:  # (torch's own forward refuses it too, in its own words)
        raise ValueError(f"model: {other.name} holds {other.W.dtype} weights and "
                         f"{layers[0].name} {layers[0].W.dtype}; bpcheck computes in one "
                         f"dtype, as torch does: cast the model first (model.double() or "
                         f"model.float())")
    keys = [k for d in layers for k in d.keys if k is not None]
    _torch_parameters_are(model, keys)

    def rebuild(values):
        return {k: values[k] for k in keys}

    def run(X):
        import torch

        device = linears[0].weight.device  # the model's device (a GPU's too): X goes there
        with torch.no_grad():
            return model(torch.from_numpy(X).to(device)).cpu().numpy()

    def leaves(tree):
        if not isinstance(tree, Mapping):
            raise TypeError(f"expected a dict keyed like the model's state_dict ({keys}), "
                            f"got {type(tree).__name__}")
        missing, extra = [k for k in keys if k not in tree], [k for k in tree if k not in keys]
        if missing or extra:
            raise ValueError(f"expected the keys of the model's state_dict, {keys}; "
                             f"missing {missing}, unexpected {extra}")
        return tree

    return layers, acts, _Structure(rebuild, leaves), run


class _Structure(NamedTuple):
    """How results go back to the model's structure: ``rebuild({key: array}) -> tree``, and
    ``leaves(tree) -> {key: array}`` the other way."""

    rebuild: Any
    leaves: Any


# --- JAX pytrees: Equinox, Flax, plain ----------------------------------------------


def _by_identity(template, layers: Sequence[Dense]) -> _Structure:
    """The structure of a pytree ``template`` whose array leaves are the layers' arrays.

    Each leaf is matched to its layer by object identity; a leaf that belongs to no dense
    layer is a parameter bpcheck does not model (an error naming its path).
    """
    import jax

    owner = {}
    for d in layers:
        for arr, key in zip((d.W, d.b), d.keys):
            if arr is None:  # a layer without a bias
                continue
            if id(arr) in owner:
                raise ValueError(f"model: {d.name} shares an array with another layer (tied "
                                 f"weights are not supported)")
            owner[id(arr)] = key
    with_path, treedef = jax.tree_util.tree_flatten_with_path(template)
    order = []
    for path, leaf in with_path:
        if id(leaf) not in owner:
            raise ValueError(
                f"model: the parameter at {jax.tree_util.keystr(path)} (shape "
                f"{tuple(np.shape(leaf))}) belongs to no dense layer; bpcheck models dense "
                f"layers with elementwise activations only"
            )
        order.append(owner.pop(id(leaf)))
    if owner:
        raise ValueError(f"model: {sorted(owner.values())[0]} was not found among the model's "
                         f"parameters")

    def rebuild(values):
        return jax.tree_util.tree_unflatten(treedef, [values[k] for k in order])

    def leaves(tree):
        got, got_def = jax.tree_util.tree_flatten(tree)
        if got_def != treedef:
            raise ValueError(f"expected a pytree shaped like the model's parameters, "
                             f"{treedef}; got {got_def}")
        return dict(zip(order, got))

    return _Structure(rebuild, leaves)


def _highest(run):
    """``run`` with JAX matmuls at ``precision="highest"`` (no TF32 on GPUs)."""

    def f(X):
        import jax

        with jax.default_matmul_precision("highest"):
            return run(X)

    return f


def _read_equinox(model):
    import equinox as eqx
    import jax

    if isinstance(model, eqx.nn.MLP):
        layers, acts = _read_eqx_mlp(model)
    elif isinstance(model, eqx.nn.Sequential):
        walk = _Walk("model (equinox.nn.Sequential)")
        for i, m in enumerate(model.layers):
            _eqx_item(walk, m, f"model.layers[{i}] ({type(m).__name__})")
        layers, acts = walk.finish()
    elif isinstance(model, eqx.nn.Linear):  # one layer: a linear model
        walk = _Walk("model (equinox.nn.Linear)")
        walk.dense(_eqx_dense(model, "model"))
        layers, acts = walk.finish()
    else:
        raise TypeError(
            f"model: expected an equinox.nn.MLP, equinox.nn.Sequential or equinox.nn.Linear, got "
            f"{type(model).__name__}; for another module pass its layers as a list of (W, b) "
            f"with bpcheck.network(layers, layout='out_in')"
        )
    structure = _by_identity(eqx.filter(model, eqx.is_array), layers)
    return layers, acts, structure, _highest(jax.vmap(model))


def _eqx_dense(m, where: str) -> Dense:
    if m.in_features == "scalar" or m.out_features == "scalar":
        raise ValueError(f"model: {where} has a scalar input or output (in_size or out_size "
                         f"'scalar'); bpcheck's layers map vectors to vectors")
    return Dense(where, m.weight, m.bias, "out_in",
                 (f"{where}.weight", None if m.bias is None else f"{where}.bias"))


def _eqx_item(walk: _Walk, m, where: str):
    import equinox as eqx

    if isinstance(m, eqx.nn.Linear):
        walk.dense(_eqx_dense(m, where))
    elif isinstance(m, eqx.nn.Identity):
        return
    elif isinstance(m, eqx.nn.Lambda):
        walk.act(_read_jax_activation(m.fn), f"{where} ({_callable_name(m.fn)})")
    elif isinstance(m, eqx.nn.Dropout):
        if not m.inference:
            raise ValueError(f"model: {where} is in training mode (inference=False); use "
                             f"eqx.nn.inference_mode(model) first")
    else:
        raise _unsupported(where, f"a {type(m).__name__} layer")


def _read_eqx_mlp(model):
    walk = _Walk("model (equinox.nn.MLP)")
    fns = model.activation
    for i, m in enumerate(model.layers):
        if i > 0:
            fn = fns[i - 1] if isinstance(fns, (tuple, list)) else fns
            walk.act(_read_jax_activation(fn), f"model.activation ({_callable_name(fn)})")
        walk.dense(_eqx_dense(m, f"model.layers[{i}]"))
    if not _is_identity(model.final_activation):
        raise ValueError(
            f"model.final_activation: expected the identity, got "
            f"{_callable_name(model.final_activation)}; bpcheck's outputs z^(L+1) are the last "
            f"layer's outputs (put a final softmax or sigmoid into the loss)"
        )
    return walk.finish()


def _value(variable):
    """The array of a Flax NNX ``Variable``."""
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


def _nnx_dense(m, where: str) -> Dense:
    no_bias = m.bias is None  # use_bias=False
    kernel = _value(m.kernel)
    _check_compute_dtype(m, kernel, where)
    return Dense(where, kernel, None if no_bias else _value(m.bias), "in_out",
                 (f"{where}.kernel", None if no_bias else f"{where}.bias"))


def _check_compute_dtype(m, kernel, where: str) -> None:
    """A Flax layer (``nnx.Linear``, ``linen.Dense``) that computes in a dtype of its own
    (``dtype=jnp.float16`` on float32 parameters) is an error naming it: bpcheck computes
    in the parameters' dtype, so its numbers would not be the model's."""
    stated = getattr(m, "dtype", None)
    if stated is None or kernel is None:
        return
    own, params = np.dtype(stated), np.dtype(kernel.dtype)
    if own != params:
        raise ValueError(
            f"{where}: computes in {own} (dtype={own.name}) while its parameters are "
            f"{params}; bpcheck computes in the parameters' dtype, so its results would not "
            f"be the model's: let the layer compute in {params} (dtype=None) or cast the "
            f"parameters to {own}")


def _order_of_use(run, template, layers: list[Dense]) -> list[Dense]:
    """``layers`` (``in_out``) in the order ``run(template, X)`` first reads their weights.

    ``run`` maps a pytree shaped like ``template`` (whose leaves include every layer's
    weight) and inputs ``X`` ``(1, d_0)`` to the model's outputs.  The order is read from
    its jaxpr (sub-jaxprs of ``jit`` and custom derivatives followed), so it is the order
    the model computes in, not the order its attributes are listed in.  ``d_0`` is the
    input width of one of the layers: the first that the model can be traced with.
    """
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(template)
    where = {id(leaf): i for i, leaf in enumerate(leaves)}
    slot = {where[id(d.W)]: d for d in layers if id(d.W) in where}
    closed = failed = None
    for d0 in dict.fromkeys(int(np.shape(d.W)[0]) for d in layers):
        X = np.zeros((1, d0), np.dtype(layers[0].W.dtype))
        try:
            closed = jax.make_jaxpr(lambda ls, X=X: run(jax.tree_util.tree_unflatten(treedef, ls), X))(
                leaves)
            break
        except Exception as e:  # noqa: BLE001 - the wrong width, in whatever words the
            failed = e  # framework has for it (Flax: ScopeParamShapeError, no ValueError)
    if closed is None:
        raise ValueError(f"model: could not run the model on inputs of any of its layers' input "
                         f"widths (layers {[d.name for d in layers]}); the last attempt raised "
                         f"{type(failed).__name__}: {str(failed).splitlines()[0][:300]}")
    order: list[Dense] = []

    def visit(jaxpr, tracked):
        for eqn in jaxpr.eqns:
            subs = [p for p in eqn.params.values() if hasattr(p, "eqns") or hasattr(p, "jaxpr")]
            for sub in subs:
                inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
                visit(inner, {id(iv): tracked[id(ov)] for ov, iv in zip(eqn.invars, inner.invars)
                              if id(ov) in tracked})
            for v in eqn.invars:
                d = tracked.get(id(v))
                if d is not None and d not in order:
                    order.append(d)

    visit(closed.jaxpr, {id(v): slot[i] for i, v in enumerate(closed.jaxpr.invars) if i in slot})
    unused = [d.name for d in layers if d not in order]
    if unused:
        raise ValueError(f"model: {unused[0]} is not used by the model's forward pass")
    return order


def _read_nnx(model):
    from flax import nnx

    name = f"model (flax.nnx.{type(model).__name__})"
    walk = _Walk(name)
    if isinstance(model, nnx.Sequential):
        for i, m in enumerate(model.layers):
            kind = type(m).__name__ if isinstance(m, nnx.Module) else _callable_name(m)
            where = f"model.layers[{i}] ({kind})"
            if isinstance(m, nnx.Linear):
                walk.dense(_nnx_dense(m, f"model.layers[{i}]"))
            elif isinstance(m, nnx.Dropout):
                if not m.deterministic:
                    raise ValueError(f"model: {where} is in training mode; call model.eval() "
                                     f"first")
            elif isinstance(m, nnx.Module):
                raise _unsupported(where, f"a {type(m).__name__} layer")
            else:
                walk.act(_read_jax_activation(m), where)
        layers, acts = walk.finish()
    else:
        found = []
        for path, m in _nnx_modules(model):
            where = "model." + ".".join(map(str, path)) if path else "model"
            if isinstance(m, nnx.Linear):
                found.append(_nnx_dense(m, where))
            elif _own_variables(m):
                raise _unsupported(f"{where} ({type(m).__name__})",
                                   f"a {type(m).__name__} layer")
        if not found:
            raise ValueError(f"{name}: has no nnx.Linear layer")
        graphdef, state = nnx.split(model)
        found = _order_of_use(lambda st, X: nnx.merge(graphdef, st)(X), state, found)
        for d in found:
            if walk.layers:
                walk.act(None, "the model's __call__ (NNX does not expose its activations)")
            walk.dense(d)
        layers, acts = walk.finish()
    structure = _by_identity(nnx.state(model, nnx.Param), layers)
    return layers, acts, structure, _highest(lambda X: model(X))


def _nnx_modules(model):
    from flax import nnx

    if hasattr(nnx, "iter_modules"):
        return nnx.iter_modules(model)
    return model.iter_modules()


def _own_variables(m) -> bool:
    """True for a module that holds variables itself (not only through submodules)."""
    from flax import nnx

    return any(isinstance(v, nnx.Variable) for v in vars(m).values())


def _read_linen(module, variables):
    from flax import linen as nn

    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(
            f"variables: expected the dict of a Linen module's variables (module.init(...)), "
            f"with a 'params' entry, got {type(variables).__name__}"
        )
    for collection in variables:
        if collection != "params":
            raise ValueError(
                f"variables: has a {collection!r} collection (e.g. BatchNorm statistics); bpcheck "
                f"supports modules whose only variables are the Dense layers' 'params'"
            )
    params = variables["params"]
    walk = _Walk(f"model (flax.linen.{type(module).__name__})")

    def run(X):
        return module.apply(variables, X)

    if isinstance(module, nn.Sequential):
        for i, m in enumerate(module.layers):
            kind = type(m).__name__ if isinstance(m, nn.Module) else _callable_name(m)
            where = f"module.layers[{i}] ({kind})"
            if isinstance(m, nn.Dense):
                dense = _linen_dense(params.get(f"layers_{i}"), f"params['layers_{i}']")
                _check_compute_dtype(m, dense.W, where)
                walk.dense(dense)
            elif isinstance(m, nn.Module):
                raise _unsupported(where, f"a {type(m).__name__} layer")
            else:
                walk.act(_read_jax_activation(m), where)
    elif isinstance(module, nn.Dense):  # one layer: a linear model
        walk.dense(_linen_dense(params, "params"))
    else:
        found = [_linen_dense(entry, "params" + "".join(f"[{p!r}]" for p in path))
                 for path, entry in _linen_layers(params, ())]
        if not found:
            raise ValueError(f"variables: no Dense layer in {type(module).__name__}'s params")
        for d in _order_of_use(module.apply, variables, found):
            if walk.layers:
                walk.act(None, "the module's __call__ (Linen does not expose its activations)")
            walk.dense(d)
    layers, acts = walk.finish()
    return layers, acts, _by_identity(variables, layers), _highest(run)


def _linen_layers(tree, path):
    """``(path, {'kernel', 'bias'})`` of every Dense layer in ``tree``."""
    for name, entry in tree.items():
        if isinstance(entry, Mapping) and "kernel" in entry:
            yield path + (name,), entry
        elif isinstance(entry, Mapping):
            yield from _linen_layers(entry, path + (name,))
        else:
            where = "params" + "".join(f"[{p!r}]" for p in path + (name,))
            raise _unsupported(where, f"a parameter of shape {tuple(np.shape(entry))} outside "
                                      f"any Dense layer")


def _linen_dense(entry, where: str) -> Dense:
    if entry is None:
        raise ValueError(f"variables: {where} is missing")
    extra = set(entry) - {"kernel", "bias"}
    if extra or np.ndim(entry["kernel"]) != 2:
        raise _unsupported(where, f"a layer with parameters {sorted(entry)} and a kernel of shape "
                                  f"{tuple(np.shape(entry['kernel']))} (not a Dense layer)")
    no_bias = "bias" not in entry  # use_bias=False
    return Dense(where, entry["kernel"], None if no_bias else entry["bias"], "in_out",
                 (f"{where}['kernel']", None if no_bias else f"{where}['bias']"))


def _read_pytree(layers, layout):
    if layout is None:
        raise ValueError(
            "layout: a plain list of layers does not say how its weights are oriented, and "
            "bpcheck never guesses it (a square layer would be silently wrong); state it: "
            "bpcheck.network(layers, layout='in_out') for weights W of shape (d_in, d_out) used "
            "as x @ W + b (JAX, Flax), or layout='out_in' for (d_out, d_in) used as W @ x + b "
            "(PyTorch, bpcheck's own params)"
        )
    if isinstance(layers, Mapping) or not isinstance(layers, Sequence) or not layers:
        raise TypeError(f"model: expected a non-empty list of layers, each a dict with a "
                        f"weight and a bias or a pair (W, b), got {type(layers).__name__}")
    walk = _Walk("layers")
    kinds = []
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        if isinstance(layer, Mapping):
            wk = [k for k in _WEIGHT_KEYS if k in layer]
            bk = [k for k in _BIAS_KEYS if k in layer]
            if len(wk) != 1 or len(bk) > 1 or len(layer) != 1 + len(bk):
                raise ValueError(
                    f"{where}: expected a dict with one weight key (one of {_WEIGHT_KEYS}) and "
                    f"one bias key (one of {_BIAS_KEYS}; none, or None, for a layer without a "
                    f"bias), got keys {sorted(layer)}"
                )
            W, b, keys = layer[wk[0]], layer[bk[0]] if bk else None, (wk[0], bk[0] if bk else None)
        elif isinstance(layer, Sequence) and not isinstance(layer, (str, bytes)) and len(layer) == 2:
            (W, b), keys = layer, (0, 1)
        else:
            raise TypeError(f"{where}: expected a dict with a weight and a bias or a pair "
                            f"(W, b), got {type(layer).__name__}")
        kinds.append((type(layer), keys))
        W, b = (x.copy() if isinstance(x, np.ndarray) else x for x in (W, b))  # the weights read,
        walk.dense(Dense(where, W, b, layout,  # whatever the caller writes into its arrays later
                         ((i, keys[0]), None if b is None and keys[1] is None else (i, keys[1]))))
    found, acts = walk.finish()

    def rebuild(values):
        out = []
        for i, (kind, (wk, bk)) in enumerate(kinds):
            W, b = values[(i, wk)], values.get((i, bk))  # (no bias key: a layer without one)
            if issubclass(kind, Mapping):
                out.append({wk: W} if bk is None else {wk: W, bk: b})
            else:
                out.append(kind((W, b)))
        return out

    def leaves(tree):
        if not isinstance(tree, Sequence) or len(tree) != len(kinds):
            raise ValueError(f"expected a list of {len(kinds)} layers shaped like the model's")
        for i, (_, keys) in enumerate(kinds):
            keys = [k for k in keys if k is not None]
            if isinstance(tree[i], Mapping) and sorted(tree[i]) != sorted(keys):
                raise ValueError(f"layer {i}: expected the keys {keys}, got {list(tree[i])}")
        return {(i, k): tree[i][k] for i, (_, keys) in enumerate(kinds) for k in keys
                if k is not None}

    return found, None, _Structure(rebuild, leaves), None


# --- the public entry point and the hook of the public functions ----------------------


def _framework(model) -> str | None:
    """Which framework ``model`` belongs to, without importing one the caller has not."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    eqx = sys.modules.get("equinox")
    if eqx is not None and isinstance(model, eqx.Module):
        return "equinox"
    if "flax" in sys.modules:
        if "flax.nnx" in sys.modules and isinstance(model, sys.modules["flax.nnx"].Module):
            return "flax.nnx"
        if "flax.linen" in sys.modules and isinstance(model, sys.modules["flax.linen"].Module):
            return "flax.linen"
    return None


_MODEL_LAYOUT = {"torch": "out_in", "equinox": "out_in", "flax.nnx": "in_out",
                 "flax.linen": "in_out"}


def network(model: Any, variables: Any = None, *, layout: str | None = None,
            activation: Any = None) -> Network:
    """Read a model into a :class:`Network`: bpcheck's ``(B, b)`` list plus the way back.

    ``model``, one of:

    - a ``torch.nn.Sequential`` of ``Linear`` layers and activation modules (``ReLU``,
      ``LeakyReLU``, ``ELU``, ``SELU``, ``Tanh``, ``Sigmoid``, ``Softplus`` (``beta``, ``threshold``),
      ``GELU``, ``SiLU``, ``Mish``, ``CELU``, ``Softsign``, ``ReLU6``, ``Hardtanh``,
      ``Hardsigmoid``, ``Hardswish``, ``Identity``; a ``Flatten`` first, after which inputs may come as the
      model takes them, ``(N, ...)``, flattened to ``(N, d_0)``; ``Dropout`` in eval mode;
      torch's own classes, without forward hooks: a subclass with its own ``forward`` is
      refused, since bpcheck reads a layer by its class), or one ``Linear`` (a linear
      model, keys ``weight`` and ``bias``).  Weights are copied to NumPy
      (detached, on the CPU, dtype kept); results are NumPy (JAX arrays for JAX inputs, as
      everywhere), and per-example gradients a dict keyed like ``model.state_dict()``,
      ``{"0.weight": (N, out, in), "0.bias": (N, out), ...}``.
    - an ``equinox.nn.MLP`` (its ``activation`` is read; ``final_activation`` must be the
      identity), an ``equinox.nn.Sequential`` of ``Linear``, ``Lambda(jax.nn.<activation>)``
      and ``Identity``, or one ``equinox.nn.Linear``.  Results have the model's pytree
      structure (``eqx.filter(model, eqx.is_array)``), weights ``(out, in)``.
    - a Flax NNX module: ``nnx.Sequential`` of ``nnx.Linear`` and ``jax.nn``/``nnx``
      activation functions (read), or another module of ``nnx.Linear`` layers, taken in
      the order its forward pass uses them (read from its jaxpr), with ``activation=``
      required (bpcheck cannot read the activations of a ``__call__``).  Results have the
      structure of ``nnx.state(model, nnx.Param)``, kernels ``(in, out)``.
    - a Flax Linen module with its ``variables`` (``module.init(...)``): ``nn.Sequential``
      (activations read), one ``nn.Dense``, or a module of ``nn.Dense`` layers, taken in
      the order its forward pass uses them, with ``activation=`` required.  Results have the structure of
      ``variables``, kernels ``(in, out)``.
    - a plain list of layers, each a dict with one weight (``W``, ``w``, ``weight`` or
      ``kernel``) and one bias (``b`` or ``bias``), or a pair ``(W, b)``, with ``layout=``
      stated: ``"in_out"`` for ``W`` of shape ``(d_in, d_out)`` used as ``x @ W + b``,
      ``"out_in"`` for ``(d_out, d_in)`` used as ``W @ x + b``.  The activation is
      ``activation=`` (ReLU by default, as for bpcheck's own params).  Results come back
      as a list of layers of the same kinds.

    ``layout``: required for a plain list of layers (the orientation is never guessed from
    shapes); for a framework's model it is known, and a different one is an error.
    ``activation``: an activation name, a :class:`bpcheck.Activation`, or a list of them
    (one per hidden layer); where the model states its activations, a different one is an
    error.

    The model's own forward pass is compared with bpcheck's on random inputs at three
    scales (1, 10, 100; float16: 1 and 10); a difference beyond rounding is an error (the
    model is not the network bpcheck read).  A JAX model whose weights are traced (an
    argument of ``jax.jit``, ``nnx.jit``, ``eqx.filter_jit``) is compared so with random
    weights of the same shapes in their place, once per trace.
    """
    kind = _framework(model)
    if kind != "flax.linen" and variables is not None:
        raise TypeError(f"variables: only a Flax Linen module takes its variables separately; "
                        f"got a {type(model).__name__} with variables")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    if kind is not None and layout is not None and layout != _MODEL_LAYOUT[kind]:
        raise ValueError(
            f"layout: a {kind} model stores its weights as {_MODEL_LAYOUT[kind]!r}, got "
            f"layout={layout!r} (leave layout out for a framework's model)"
        )
    standin = _standin(kind, model, variables)
    if standin is not None:  # its weights traced (the model an argument of jax.jit or
        import jax  # nnx.jit): checked on this, read as outside the trace

        with jax.ensure_compile_time_eval():
            network(*standin, layout=layout, activation=activation)
    if kind == "torch":
        found, acts, structure, run = _read_torch(model)
    elif kind == "equinox":
        found, acts, structure, run = _read_equinox(model)
    elif kind == "flax.nnx":
        found, acts, structure, run = _read_nnx(model)
    elif kind == "flax.linen":
        if variables is None:
            raise TypeError("variables: a Flax Linen module holds no weights; pass its "
                            "variables too: bpcheck.network(module, variables, activation=...)")
        found, acts, structure, run = _read_linen(model, variables)
    else:
        if not isinstance(model, (list, tuple)):  # not a model, not a list of layers
            raise TypeError(
                f"model: expected a PyTorch nn.Sequential, an Equinox eqx.nn.MLP, a Flax NNX "
                f"or Linen model, or a plain list of layers (with layout='in_out' or "
                f"'out_in'), got {type(model).__name__}")
        found, acts, structure, run = _read_pytree(model, layout)
    _check_orientation(found)
    source = f"{kind} {type(model).__name__}" if kind else "list of layers"
    flattens = kind == "torch" and any(isinstance(m, sys.modules["torch"].nn.Flatten)
                                       for _, m in _torch_items(model))
    net = Network(found, _merge_activation(acts, activation, len(found) - 1), source, structure,
                  flattens)
    if run is not None:
        _check_forward(net, run)
    return net


def _standin(kind: str | None, model: Any, variables: Any):
    """For a JAX model whose weights are tracers (an argument of ``jax.jit``, ``nnx.jit``
    or ``eqx.filter_jit``), where its forward pass cannot be run to compare with
    bpcheck's: ``(model, variables)`` of the same model with concrete random weights of the
    same shapes and dtypes in place of the traced ones, whose reading runs that comparison
    (the activations and the architecture are the model's, whatever its weights); ``None``
    when nothing is traced (or for torch and plain lists of layers)."""
    if kind not in ("equinox", "flax.nnx", "flax.linen"):
        return None
    import jax

    tree = variables if kind == "flax.linen" else model
    if kind == "flax.nnx":
        from flax import nnx

        graphdef, tree = nnx.split(model)

    def traced(leaf):  # (traced keys and counts, of a Dropout's Rngs say, are left as they are)
        return is_tracer(leaf) and jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating)

    if not any(traced(leaf) for leaf in jax.tree_util.tree_leaves(tree)):
        return None
    rng = np.random.default_rng(0)

    def fill(leaf):
        if not traced(leaf):
            return leaf
        shape = tuple(leaf.shape)
        scale = 1 / math.sqrt(max(shape)) if len(shape) > 1 else 0.1  # outputs of the inputs' scale
        return jax.numpy.asarray((scale * rng.standard_normal(shape)).astype(np.dtype(leaf.dtype)))

    with jax.ensure_compile_time_eval():  # (a concrete array, not a constant of the trace)
        filled = jax.tree_util.tree_map(fill, tree)
        if kind == "flax.linen":
            return model, filled
        if kind == "flax.nnx":
            return nnx.merge(graphdef, filled), None
        return filled, None


def _check_orientation(layers: Sequence[Dense]) -> None:
    """Shapes that chain under the stated layout; an error naming the layout if not."""
    prev = None
    for d in layers:
        shape, bshape = tuple(np.shape(d.W)), tuple(np.shape(d.b))
        if len(shape) != 2:
            raise ValueError(f"{d.name}: expected a 2-d weight, got shape {shape}")
        n_out, n_in = shape if d.layout == "out_in" else shape[::-1]
        other = "in_out" if d.layout == "out_in" else "out_in"
        stored = "(out, in)" if d.layout == "out_in" else "(in, out)"
        if d.b is not None and bshape != (n_out,):  # (a layer without a bias: chaining only)
            hint = (f"; the weight looks stored the other way: state layout={other!r}"
                    if bshape == (n_in,) else "")
            raise ValueError(
                f"{d.name}: with layout={d.layout!r} a weight of shape {shape} is {stored}, "
                f"{n_in} inputs to {n_out} outputs, but the bias has shape {bshape}{hint}"
            )
        if prev is not None and n_in != prev:
            raise ValueError(
                f"{d.name}: with layout={d.layout!r} a weight of shape {shape} takes {n_in} "
                f"inputs, but the layer before gives {prev} outputs"
            )
        prev = n_out


_PROBE_TOL = {8: 1e-9, 4: 1e-4, 2: 1e-2}
_PROBE_SCALES = {8: (1.0, 10.0, 100.0), 4: (1.0, 10.0, 100.0), 2: (1.0, 10.0)}
"""The scales of :func:`_check_forward`'s inputs by the parameters' itemsize (float16: up to
10, its outputs overflow sooner)."""


def _concrete(params):
    """``jax.ensure_compile_time_eval()`` for a model of JAX arrays (inside a ``jax.jit``
    trace JAX's operations give tracers even on concrete arrays, from JAX 0.4.36 on);
    nothing for NumPy and PyTorch."""
    if any(is_jax(t) for pair in params for t in pair):
        import jax

        return jax.ensure_compile_time_eval()
    return contextlib.nullcontext()


def _check_forward(net: Network, run) -> None:
    """The model's forward pass equals bpcheck's on random inputs at three scales, three of
    each (relative to the largest output at that scale: an activation stated wrongly may
    agree near 0, a ReLU capped at 5 with ``"relu"`` up to 5), unless the weights are JAX
    tracers (the model an argument of a ``jax.jit``); a model closed over by a traced
    function is run concretely (``jax.ensure_compile_time_eval``), as outside it."""
    from ._recursion import forward

    B1 = net.params[0][0]
    if any(is_tracer(t) for pair in net.params for t in pair):
        return
    dtype = np.dtype(B1.dtype)
    scales = _PROBE_SCALES.get(dtype.itemsize, (1.0,))
    X = (np.random.default_rng(0).standard_normal((3 * len(scales), net.widths[0]))
         * np.repeat(scales, 3)[:, None]).astype(dtype)
    with _concrete(net.params):
        ours, theirs = forward(net, X), run(X)
    if is_tracer(ours) or is_tracer(theirs):  # the model closes over a traced array
        return
    computed = np.dtype(getattr(theirs, "dtype", dtype))
    if computed.kind == "f" and computed != dtype:
        raise ValueError(
            f"model: it computes in {computed} (its output's dtype) while its parameters are "
            f"{dtype}; bpcheck computes in the parameters' dtype, so its results would not be "
            f"the model's: let the layers compute in {dtype} (Flax: dtype=None) or cast the "
            f"parameters to {computed}")
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if theirs.shape != ours.shape:
        raise ValueError(f"model: its forward pass gives shape {theirs.shape} for inputs "
                         f"{X.shape}, bpcheck's network {ours.shape}")
    err = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
              for a, b in zip(np.split(ours, len(scales)), np.split(theirs, len(scales))))
    if not err <= _PROBE_TOL.get(dtype.itemsize, 1e-2):
        raise ValueError(
            f"model: bpcheck's network {net.widths} with activation "
            f"[{', '.join(map(str, net.activation))}] does not reproduce the model's forward "
            f"pass (relative difference {err:.2e} on random inputs); the layers bpcheck read "
            f"are {net.names}: check the activation= given, that the layers run in this "
            f"order and that each computes in the parameters' dtype"
        )


def _merge_activation(read, given, L: int) -> tuple:
    """The activations of a model: those it states (``read``: one ``(Activation or None,
    where)`` per hidden layer, ``None`` where it does not say), or ``given`` where it does
    not; a ``given`` that differs from a stated one is an error.  ``read=None`` (a plain
    list of layers): ``given``, by default ReLU as for bpcheck's own params."""
    want = None if given is None else resolve_activations(given, L)
    if read is None:
        return want if want is not None else (Activation("relu"),) * L
    out = []
    for l, (act, where) in enumerate(read):
        if act is None and want is None:
            raise ValueError(
                f"activation: bpcheck cannot read the activation of hidden layer {l + 1} from "
                f"{where}; if it is one of bpcheck's ({', '.join(ACTIVATION_NAMES)}), state it, "
                f"e.g. activation='tanh' (a name, a bpcheck.Activation, or a list of them, one "
                f"per hidden layer): the model's forward pass is compared with it; another "
                f"activation is not supported"
            )
        if act is not None and want is not None and want[l] != act:
            raise ValueError(f"activation: the model has {act} after hidden layer {l + 1} "
                             f"({where}), got activation={given!r}")
        out.append(act if act is not None else want[l])
    return tuple(out)


def _merge_network_activation(net: Network, given) -> tuple:
    if given is None:
        return net.activation
    if resolve_activations(given, len(net.activation)) != net.activation:
        raise ValueError(f"activation: the network has [{', '.join(map(str, net.activation))}] "
                         f"({net.source}), got activation={given!r}")
    return net.activation


def model_vector(net: Network | None, v: Any):
    """``v`` in ``beta`` order, and how to give a result in ``beta`` order back in ``v``'s form.

    With a network, ``v`` may be in the model's structure (no ``shape``, not a list of
    numbers); it is flattened with :meth:`Network.to_beta` and results come back through
    :meth:`Network.from_beta`.  Otherwise ``v`` and results pass unchanged.
    """
    plain = (net is None or hasattr(v, "shape")  # a list of numbers, not of layers' dicts:
             or (isinstance(v, (list, tuple))
                 and all(isinstance(t, (int, float, np.number)) for t in v)))
    if plain:
        return v, lambda result: result
    try:
        return net.to_beta(v), net.from_beta
    except (KeyError, IndexError, TypeError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        kind = TypeError if isinstance(err, TypeError) else ValueError
        raise kind(f"v: in the structure of the {net.source}: {message}") from None


def model_inputs(net: Network | None, X: Any, name: str = "X") -> Any:
    """``X`` as the network takes it: for a model that flattens each example first
    (:attr:`Network.flattens`), inputs ``(N, ...)`` of 3 or more axes become ``(N, d_0)``
    (a view where the array allows one), as the model's ``Flatten`` would make them; a
    product of the trailing axes other than ``d_0`` is an error naming the shape.  Else
    (and for 1- and 2-d inputs) ``X`` unchanged, checked later as for any network."""
    if net is None or not net.flattens or X is None:
        return X
    shape = tuple(getattr(X, "shape", None) or np.shape(X))
    if len(shape) < 3:
        return X
    d0, per_example = net.widths[0], math.prod(shape[1:])
    if per_example != d0:
        raise ValueError(
            f"{name}: the model flattens each example (its Flatten before the first Linear) "
            f"into {d0} inputs; got shape {shape}, whose examples have {per_example} entries")
    return X.reshape(shape[0], d0) if hasattr(X, "reshape") else np.reshape(X, (shape[0], d0))


def model_params(params: Any, activation: Any):
    """The hook of every public function: ``params`` may be bpcheck's ``(B, b)`` list, a
    :class:`Network` or a model; returns ``(params, activation, network or None)``."""
    if isinstance(params, Network):
        return params.params, _merge_network_activation(params, activation), params
    if _framework(params) is not None:
        net = network(params, activation=activation)
        return net.params, net.activation, net
    if (isinstance(params, (list, tuple)) and params
            and (kind := _framework(params[0])) is not None):
        how = ("bpcheck.network(module, variables, activation=...)" if kind == "flax.linen"
               else "the model itself, or bpcheck.network(model)")
        raise TypeError(
            f"params: got a {type(params).__name__} holding a {kind} model "
            f"({type(params[0]).__name__}); give {how} in its place")
    if (isinstance(params, Sequence) and not isinstance(params, (str, bytes))
            and any(isinstance(layer, Mapping) for layer in params)):
        raise TypeError(
            "params: a list of dicts is a model's layers, whose weight orientation bpcheck "
            "does not guess; read it with bpcheck.network(layers, layout='in_out') (weights "
            "(d_in, d_out), x @ W + b) or layout='out_in' ((d_out, d_in), W @ x + b)"
        )
    return params, "relu" if activation is None else activation, None
