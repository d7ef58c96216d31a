"""Per-example gradients of a loss, from the factors ``U^(l) = V^(l) (I kron a^(l-1)')``.

For one example with outputs ``z = z^(L+1)`` and ``e = d loss / d z`` (shape ``(K,)``),
the gradient with respect to ``beta`` is ``J' e = [U^(1)' e; V^(1)' e; ...]``, and

    U^(l)' e = (I kron a^(l-1)) V^(l)' e = vec((V^(l)' e) a^(l-1)'),

so layer ``l`` needs only the vector ``delta^(l) = V^(l)' e`` (shape ``(d_l,)``).  It is
evaluated right to left, ``V^(l)' e = D^(l) B^(l+1)' (V^(l+1)' e)`` with
``V^(L+1)' e = e``: the recursion for ``V`` applied to one vector, ``K`` times cheaper than
forming the ``(N, K, d_l)`` factors.  The squared norm then needs no gradient at all:

    ||J' e||^2 = sum_l ||delta^(l)||^2 (||a^(l-1)||^2 + 1).

The same two vector recursions, ``J v = sum_l V^(l) (dB^(l) a^(l-1) + db^(l))`` (left to
right, Horner's rule on ``V^(l) = V^(l+1) B^(l+1) D^(l)``) and ``J' u``, give the
matrix-free Gauss-Newton product in :mod:`bpcheck._gauss_newton`.

The losses and their output gradients ``e_n`` and Hessians ``H_n`` are in
:mod:`bpcheck._losses`; the activations (``D^(l) = diag(sigma'(z^(l)))``) in
:mod:`bpcheck._activations`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ._activations import resolve_activations
from ._arrays import (bias_flags, check_all_finite, check_out, host_buffer, on_default_cpu, overlaps,
                      prepare, to_jax)
from ._compiled import built, call, replayed, without_axis, written
from ._losses import check_reduction, numpy_targets_in_range, resolve_loss
from ._model import (in_model_layers, layouts_of, model_inputs, model_params, wanted_flat,
                     weight_shape)
from ._params import param_count, trim_beta, without_biases
from ._recursion import (_THREADED_SIZE, _as_blocks, _forward_layers, _single_threaded_blas,
                         by_rows, outer, pullback)
from ._sharding import batch_parallel, resolve_mesh


def deltas_and_inputs(params, X, y, loss, acts, mean, xp):
    """``delta^(l) = V^(l)' e`` and ``a^(l-1)`` for every layer, ``e`` the output gradient of
    each example's loss, divided by ``N`` when ``mean``: ``True`` for ``X``'s own rows, or
    the batch's ``N`` itself when ``X`` is one device's part of it (:func:`_run`)."""
    a_prevs, zs, Ds = _forward_layers(params, X, acts, xp)
    e = loss.grad(zs[-1], y, xp)
    if mean:
        e = e / (X.shape[0] if mean is True else mean)
    return pullback(params, acts, Ds, e, xp), a_prevs


def _fill(out, deltas, a_prevs):
    """Write ``[vec(delta^(l) a^(l-1)'), delta^(l), ...]`` into the rows of ``out`` in place,
    the rows split over the cores (:func:`bpcheck._recursion.by_rows`)."""
    def rows(n0, n1):
        off = 0
        for delta, a in zip(deltas, a_prevs):
            d, dp = delta.shape[1], a.shape[1]
            np.multiply(delta[n0:n1, :, None], a[n0:n1, None, :],
                        out=_as_blocks(out[n0:n1, off:off + d * dp], d, dp))
            off += d * dp
            out[n0:n1, off:off + d] = delta[n0:n1]
            off += d

    by_rows(rows, out.shape[0], out.size)
    return out


def _outer_layers(deltas, a_prevs, gBs, layouts):
    """``[(delta^(l) a^(l-1)' per example, delta^(l))]``: the per-layer gradients, the
    products (``(N, d_l, d_{l-1})``, or ``(N, d_{l-1}, d_l)`` for an ``"in_out"`` layout)
    written into ``gBs`` in place with the rows split over the cores."""
    def rows(n0, n1):
        for gB, delta, a, layout in zip(gBs, deltas, a_prevs, layouts):
            outer(delta[n0:n1], a[n0:n1], layout, out=gB[n0:n1])

    by_rows(rows, a_prevs[0].shape[0], sum(gB.size for gB in gBs))
    return list(zip(gBs, deltas))


def _numpy_grads(deltas, a_prevs, flat, layouts):
    """The per-example gradients from NumPy deltas and layer inputs, written by NumPy's
    threads into fresh arrays (:func:`bpcheck._arrays.host_buffer`: aligned for JAX, large
    ones from resident memory): one ``(N, P)`` array (``flat``, :func:`_fill`) or the
    per-layer pairs, each weight's in its layer's layout (:func:`_outer_layers`)."""
    N, dtype = a_prevs[0].shape[0], deltas[0].dtype
    if flat:
        P = sum(delta.shape[1] * (a.shape[1] + 1) for delta, a in zip(deltas, a_prevs))
        return _fill(host_buffer((N, P), dtype), deltas, a_prevs)
    gBs = [host_buffer((N,) + weight_shape(delta.shape[1], a.shape[1], layout), dtype)
           for delta, a, layout in zip(deltas, a_prevs, layouts)]
    return _outer_layers(deltas, a_prevs, gBs, layouts)


def _assemble_jax(deltas, a_prevs):
    """The ``(N, P)`` rows as one buffer written block by block (XLA writes each once;
    :func:`bpcheck._compiled.written`)."""
    N = a_prevs[0].shape[0]
    blocks = []
    for delta, a in zip(deltas, a_prevs):
        blocks += [(delta[:, :, None] * a[:, None, :]).reshape(N, -1), delta]
    return written(blocks, axis=1)


def _per_example_grads(params, X, y, loss, acts, mean, flat, layouts, xp):
    if xp is np:
        # the products that give the deltas are small; OpenBLAS's threads would spin beside
        # the threaded fill that follows (see bpcheck._recursion._single_threaded_blas)
        P = sum(B.size + b.size for B, b in params)
        with _single_threaded_blas(X.shape[0] * P >= _THREADED_SIZE):
            deltas, a_prevs = deltas_and_inputs(params, X, y, loss, acts, mean, np)
        return _numpy_grads(deltas, a_prevs, flat, layouts)
    deltas, a_prevs = deltas_and_inputs(params, X, y, loss, acts, mean, xp)
    if not flat:
        return [(outer(delta, a, layout), delta)
                for delta, a, layout in zip(deltas, a_prevs, layouts)]
    return _assemble_jax(deltas, a_prevs)


def _per_example_grad_norms(params, X, y, loss, acts, mean, biases, xp):
    deltas, a_prevs = deltas_and_inputs(params, X, y, loss, acts, mean, xp)
    dtype = X.dtype
    if np.dtype(dtype).itemsize < 4:  # float16: squares summed in float32 (norms above 256
        # would overflow), the norms cast back
        deltas, a_prevs = ([t.astype(np.float32) for t in ts] for ts in (deltas, a_prevs))
    sq = 0
    for l, (delta, a) in enumerate(zip(deltas, a_prevs)):
        one = 1 if biases is None or biases[l] else 0  # the bias's part, where there is one
        if xp is np:  # row sums of squares without the squared arrays
            sq = sq + np.einsum("ij,ij->i", delta, delta) * (np.einsum("ij,ij->i", a, a) + one)
        else:
            sq = sq + xp.sum(delta * delta, axis=1) * (xp.sum(a * a, axis=1) + one)
    norms = xp.sqrt(sq)
    return norms if norms.dtype == dtype else norms.astype(dtype)


def _run(kernel, static, params, X, y, xp, mesh, gather, unchecked):
    """``kernel`` in NumPy, compiled in JAX (:func:`bpcheck._compiled.call`), or over ``mesh``."""
    if mesh is None:
        return call(kernel, xp, static, params, X, y, unchecked=unchecked,
                    bounds=static[0].target_bounds(y, params[-1][0].shape[0]))
    import jax.numpy as jnp

    loss, acts, mean, *rest = static  # each device sees its rows only: the mean over all N
    static = (loss, acts, X.shape[0] if mean else False, *rest)
    return batch_parallel(lambda p, Xl, yl: kernel(p, Xl, yl, *static, jnp), mesh, (params,),
                          (X, y), gather, "X", key=(kernel, static))


def _repeatable(params, X, y, loss="cross_entropy", **options):
    """For a repeat call (:func:`bpcheck._compiled.replayed`): what the checks depend on
    beyond the signature and NaN and inf, true as in the first call: NumPy targets in their
    range (class labels, binary targets; JAX ones are checked by the program's flag, see
    :meth:`bpcheck.Loss.target_bounds`) and ``X`` not split over devices (its mesh would
    be used)."""
    return numpy_targets_in_range(params, loss, y) and resolve_mesh(None, X) is None


def _setup(params, X, y, loss, reduction, activation, mesh, gather):
    loss = resolve_loss(loss)
    mean = check_reduction(reduction) == "mean"
    if not isinstance(gather, (bool, np.bool_)):
        raise TypeError(f"gather: expected True or False, got {gather!r}")
    mesh = resolve_mesh(mesh, X)
    xp = None
    if mesh is not None:
        import jax.numpy as jnp

        xp = jnp
    params, widths, X2, single, xp, _, unchecked = prepare(params, X, xp, defer_finite=mesh is None,
                                                            y=y)
    acts = resolve_activations(activation, len(params) - 1)
    y2 = loss.check_targets(y, X2.shape[0], widths[-1], single, xp, X2.dtype)
    return params, widths, X2, y2, single, xp, mesh, (loss, acts, mean), unchecked


@replayed("params", "X", "y", recheck=_repeatable)
def per_example_grads(
    params: Any,
    X: Any,
    y: Any,
    loss: Any = "cross_entropy",
    *,
    reduction: str = "sum",
    activation: Any = None,
    flat: bool | None = None,
    mesh: Any = None,
    gather: bool = True,
    out: Any = None,
):
    """Gradients of each example's loss with respect to the parameters.

    ``params``: ``[(B^(l), b^(l))]``, ``B^(l)`` of shape ``(d_l, d_{l-1})``.
    ``X``: inputs ``(N, d_0)`` (or one example ``(d_0,)``, dropping the ``N`` axis below).
    ``loss`` and ``y``: ``"cross_entropy"`` with integer labels ``(N,)`` in ``0..K-1``
    (``-log softmax(z_n)[y_n]``) or class probabilities, a floating ``(N, K)`` whose rows
    are non-negative and sum to 1 (``-sum_k y_nk log softmax(z_n)_k``, as torch's
    ``cross_entropy`` with such a target: soft labels, label smoothing); ``"mse"`` with
    real targets ``(N, K)`` (``0.5 ||z_n - y_n||^2``); ``"binary_cross_entropy"`` with one
    logit (``K = 1``) and targets in ``[0, 1]``, ``(N,)`` or ``(N, 1)``; or a
    :class:`bpcheck.Loss` given by its output gradient (``y`` passed to it as given).
    ``reduction``: ``"sum"`` (default): row ``n`` is the gradient of example ``n``'s loss,
    not divided by ``N`` (the rows sum to the gradient of the summed loss); ``"mean"``: row
    ``n`` is that divided by ``N`` (the rows sum to the gradient of the mean loss, as
    PyTorch's and Opacus's per-sample gradients of a ``reduction="mean"`` loss).
    ``activation``: as in :func:`bpcheck.forward`.

    ``flat=True``: one ``(N, P)`` array, columns in ``beta`` order
    ``[vec(B^(1)'), b^(1), ...]``, i.e. ``[vec(delta^(1) a^(0)'), delta^(1), ...]`` with
    ``delta^(l) = V^(l)' dloss/dz``.  ``flat=False``: a list with one pair
    ``(gB, gb)`` per layer, ``gB`` of shape ``(N, d_l, d_{l-1})`` (the layout of
    ``B^(l)``) and ``gb`` of shape ``(N, d_l)``, computed without the flat array.
    ``params`` may be a :class:`bpcheck.Network` or a model (:func:`bpcheck.network`):
    then ``flat=None`` (the default) and ``flat=False`` give the gradients in the model's
    own structure and orientation (e.g. ``{"0.weight": (N, out, in), ...}`` for PyTorch);
    for bpcheck's params ``flat=None`` is ``flat=True``.

    ``mesh``: a ``jax.sharding.Mesh``; the rows of ``X`` and ``y`` are split over all its
    devices (by default, the mesh ``X`` is already sharded over, if any).  With
    ``gather=True`` the result is replicated on every device, otherwise it stays split by
    rows (then ``N`` must be divisible by the number of devices).  NumPy in, NumPy out
    (the flat array filled in place); JAX (or a mesh) in, JAX out, compiled once per
    configuration; usable under ``jax.jit``.  Large results of concrete JAX arrays on the
    CPU are filled as NumPy's are, from the compiled deltas, and handed to JAX without a
    copy (XLA writes them about 4 times slower).

    ``out``: NumPy inputs only, the buffers to write the gradients into, in the form the
    call returns (an ``(N, P)`` array for ``flat=True``; a list of ``(gB, gb)`` pairs or the
    model's structure for ``flat=False``), each of exactly the result's shape and dtype and
    sharing no memory with the inputs; returned filled.  For loops that take gradients of
    batches of one size: no fresh memory for the kernel to zero on every call.
    """
    params, activation, net = model_params(params, activation)
    X = model_inputs(net, X)
    flat = wanted_flat(flat, net)
    biases = bias_flags(params)  # layers without a bias: their entries left out below
    params, widths, X2, y2, single, xp, mesh, static, unchecked = _setup(
        params, X, y, loss, reduction, activation, mesh, gather)
    if out is not None and (biases is None or not flat):
        return _grads_into(out, params, widths, X2, y2, single, xp, mesh, static, flat, net, biases)
    if out is not None:  # flat, layers without a bias: checked first, then filled with the result
        if xp is not np or mesh is not None:
            raise TypeError("out: gradients are written in place for NumPy inputs only (JAX "
                            "arrays are immutable); got " + ("a mesh" if mesh is not None
                                                            else "JAX inputs"))
        shape = (() if single else (X2.shape[0],)) + (param_count(widths, biases),)
        check_out("out", out, shape, X2.dtype, [t for pair in params for t in pair] + [X2, y2])
    if X2.shape[0] == 0 and flat:  # an empty batch: no rows (and no kernel program to check
        check_all_finite(unchecked)  # the arrays whose checks were left to it)
        return xp.zeros((0, param_count(widths, biases)), X2.dtype)
    large = X2.shape[0] * param_count(widths) >= _THREADED_SIZE
    layouts = () if flat else layouts_of(net, len(params))  # each weight's orientation
    if xp is not np and mesh is None and large and on_default_cpu(
            [t for pair in params for t in pair] + [X2, y2]):
        G = _host_filled(static, flat, layouts, params, X2, y2, xp, unchecked)
    else:
        G = _run(_per_example_grads, static + (flat, layouts), params, X2, y2, xp, mesh,
                 bool(gather), unchecked)
    if single:
        G = without_axis(G)
    if biases is not None and out is None and net is None:  # (built: a repeat call does the same)
        return built(G, lambda G: trim_beta(G, widths, biases) if flat else without_biases(G, biases))
    if flat:
        G = trim_beta(G, widths, biases)
        if out is not None:
            out[...] = G
            return out
        return G
    return in_model_layers(without_biases(G, biases), net)


def _host_filled(static, flat, layouts, params, X, y, xp, unchecked):
    """Large per-example gradients of concrete JAX arrays on the CPU: the deltas from the
    compiled program, the outer products filled by NumPy's threads into a buffer that JAX
    then takes over without a copy (see :func:`bpcheck._arrays.to_jax`)."""
    deltas, a_prevs = call(deltas_and_inputs, xp, static, params, X, y, unchecked=unchecked)
    G = _numpy_grads([np.asarray(delta) for delta in deltas], [np.asarray(a) for a in a_prevs],
                     flat, layouts)
    return to_jax(G) if flat else [(to_jax(gB), delta) for (gB, _), delta in zip(G, deltas)]


def _grads_into(out, params, widths, X, y, single, xp, mesh, static, flat, net, biases=None):
    """:func:`per_example_grads` written into the caller's buffers ``out`` (``flat``: every
    layer with its bias; per layer: ``None`` in the place of a bias a layer lacks)."""
    if xp is not np or mesh is not None:
        raise TypeError("out: gradients are written in place for NumPy inputs only (JAX arrays "
                        "are immutable); got " + ("a mesh" if mesh is not None else "JAX inputs"))
    N, dtype = X.shape[0], X.dtype
    lead = () if single else (N,)
    inputs = [t for pair in params for t in pair] + [X, y]
    specs = [("out", out, (param_count(widths),))] if flat else _out_specs(out, widths, net,
                                                                            biases)
    buffers = [None if shape is None else check_out(name, buf, lead + shape, dtype, inputs)
               for name, buf, shape in specs]
    for i, j in itertools.combinations(range(len(buffers)), 2):
        if buffers[i] is not None and buffers[j] is not None and overlaps(buffers[i], buffers[j]):
            raise ValueError(f"{specs[i][0]} and {specs[j][0]} share memory; expected separate "
                             f"buffers")
    rows = [b if b is None else b[None] if single else b for b in buffers]  # (N, ...), weights
    # in their layouts
    loss, acts, mean = static
    with _single_threaded_blas(N * param_count(widths) >= _THREADED_SIZE):
        deltas, a_prevs = deltas_and_inputs(params, X, y, loss, acts, mean, np)
    if flat:
        _fill(rows[0], deltas, a_prevs)
    else:
        _outer_layers(deltas, a_prevs, rows[0::2], layouts_of(net, len(params)))
        for gb, delta in zip(rows[1::2], deltas):
            if gb is not None:  # (None: a layer without a bias)
                gb[...] = delta
    return out


def _out_specs(out, widths, net, biases=None):
    """``(name, buffer, shape without N)`` for the weight and the bias of each layer of
    ``out`` as :func:`per_example_grads` returns it with ``flat=False``: bpcheck's list of
    ``(gB, gb)`` pairs, or the model's structure (a weight in its layer's layout).  A bias
    a layer lacks (``biases``) has the shape ``None``: its place must hold ``None``."""
    L1 = len(widths) - 1
    layers = zip(widths, widths[1:])
    if biases is not None and net is None:
        if isinstance(out, (list, tuple)) and len(out) == L1:
            for l, pair in enumerate(out):
                if not biases[l] and isinstance(pair, (list, tuple)) and len(pair) == 2 \
                        and pair[1] is not None:
                    raise TypeError(f"out[{l}][1]: layer {l + 1} has no bias; expected None in "
                                    f"its place, as per_example_grads returns it, got "
                                    f"{type(pair[1]).__name__}")
        specs = _out_specs(out, widths, None)
        return [(name, buf, None if buf is None and not biases[i // 2] else shape)
                for i, (name, buf, shape) in enumerate(specs)]
    if net is None:
        if (not isinstance(out, (list, tuple)) or len(out) != L1
                or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in out)):
            raise TypeError(f"out: with flat=False, expected a list of {L1} (gB, gb) pairs, one "
                            f"per layer, as per_example_grads returns them; got "
                            f"{type(out).__name__}")
        return [spec for l, ((gB, gb), (d_prev, d)) in enumerate(zip(out, layers))
                for spec in ((f"out[{l}][0]", gB, (d, d_prev)), (f"out[{l}][1]", gb, (d,)))]
    try:
        leaves = net._leaves_of(out)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise TypeError(f"out: expected the model's structure, as per_example_grads returns it "
                        f"for this {net.source} ({err!r})") from None
    specs = []
    for dense, (W, b), (d_prev, d) in zip(net._layers, leaves, layers):
        specs += [(f"out: {dense.name} weight", W, weight_shape(d, d_prev, dense.layout)),
                  (f"out: {dense.name} bias", b, None if dense.b is None else (d,))]
    return specs


@replayed("params", "X", "y", recheck=_repeatable)
def per_example_grad_norms(
    params: Any,
    X: Any,
    y: Any,
    loss: Any = "cross_entropy",
    *,
    reduction: str = "sum",
    activation: Any = None,
    mesh: Any = None,
    gather: bool = True,
):
    """Euclidean norms of the per-example gradients, shape ``(N,)``, without forming them.

    Same arguments as :func:`per_example_grads`.  Uses
    ``||g_n||^2 = sum_l ||delta_n^(l)||^2 (||a_n^(l-1)||^2 + 1)``, where
    ``||U^(l)' e||^2 = ||V^(l)' e||^2 ||a^(l-1)||^2`` is the weight part and
    ``||V^(l)' e||^2`` the bias part (none for a layer without a bias): cost about two
    forward passes, memory ``O(N d)``.
    """
    params, activation, net = model_params(params, activation)
    X = model_inputs(net, X)
    biases = bias_flags(params)
    params, _, X2, y2, single, xp, mesh, static, unchecked = _setup(
        params, X, y, loss, reduction, activation, mesh, gather)
    n = _run(_per_example_grad_norms, static + (biases,), params, X2, y2, xp, mesh, bool(gather),
             unchecked)
    return without_axis(n) if single else n
