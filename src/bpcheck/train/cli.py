"""``bpcheck train``: train the lecture's models on the spiral task, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .._cliargs import check_output_paths, finite_float, int_at_least
from ._core import MAX_ITERS

DESCRIPTION = """\
Train the lecture's models on the CS231n spiral (300 points, 3 classes) by full-batch
gradient descent, with a progress bar on stderr; print the final loss and the training
accuracy.  --model softmax is the linear softmax classifier; --model mlp is a ReLU net with
one hidden layer per --hidden (default: one layer of 100).  The data and the initial
weights (0.01 * randn) come from one legacy NumPy stream seeded with --seed, as in the case
study's notebook; the loss is mean cross-entropy + 0.5 * reg * sum(W*W) over weights only.

backends:
  numpy    the lecture's NumPy code (softmax, one hidden layer); deeper nets use the
           factored gradient, as with 'factors'
  factors  NumPy, gradient from bpcheck.jacobian_factors: sum_i U_i' (p_i - e_yi) / N
  jax      the whole loop compiled (jax.jit over lax.scan), gradient from jax.grad
  torch    the lecture's PyTorch SimpleNN loop as written: nn.Linear default init,
           optim.SGD(weight_decay=reg) on every parameter, biases included; the loss shown
           is nn.CrossEntropyLoss alone, without the decay term (needs bpcheck[torch])
"""

EPILOG = """\
example:
  bpcheck train --model mlp --backend numpy --hidden 100 --iters 10000 --plot spiral.png
  # prints, after about 2 s of training:
  #   final loss: 0.24503 (the sixth digit depends on NumPy's build)
  #   train accuracy: 0.9800
  # and writes spiral.png (decision regions beside the loss curve; needs bpcheck[plot]).
  bpcheck train --model softmax      # 200 iterations: final loss 0.786281, accuracy 0.4933
"""

DEFAULT_ITERS = {"softmax": 200, "mlp": 10_000}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpcheck train", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", choices=["softmax", "mlp"], default="mlp",
                        help="softmax classifier or ReLU net (default: mlp)")
    parser.add_argument("--backend", choices=["numpy", "factors", "jax", "torch"],
                        default="numpy", help="how to train (default: numpy; see above)")
    parser.add_argument("--hidden", type=int_at_least(1), action="append", metavar="H",
                        help="width of a hidden layer; repeat for more layers (mlp only; "
                             "default: one layer of 100)")
    parser.add_argument("--iters", type=int_at_least(1, MAX_ITERS), metavar="N",
                        help="gradient-descent iterations (default: 200 for softmax, "
                             "10000 for mlp, as in the case study)")
    parser.add_argument("--step-size", type=finite_float(True), default=1.0, metavar="S",
                        help="step size (learning rate) (default: 1.0)")
    parser.add_argument("--reg", type=finite_float(False), default=1e-3, metavar="R",
                        help="L2 regularisation strength (default: 1e-3)")
    parser.add_argument("--seed", type=int_at_least(0, 2**32 - 1), default=0, metavar="S",
                        help="seed of the legacy NumPy stream for data and init "
                             "(default: 0, the case study's; --backend torch draws its "
                             "initial weights with torch.manual_seed(S))")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="floating type (default: float64; float32 for torch, as in "
                             "the lecture)")
    parser.add_argument("--plot", metavar="PATH.png",
                        help="write decision regions beside the loss curve to this PNG")
    parser.add_argument("--json", metavar="PATH",
                        help="write losses (one per iteration, each before its step), "
                             "final_loss (after the last step), train_accuracy and the "
                             "settings to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.model == "softmax" and args.hidden:
        parser.error(f"argument --hidden: the softmax model has no hidden layer; got --hidden "
                     f"{' --hidden '.join(map(str, args.hidden))} (drop it, or use --model mlp)")
    check_output_paths(parser, plot=args.plot, json=args.json)
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        parser.error(f"argument --plot: expected a path ending in .png, got {args.plot!r}")


def _describe(args, widths) -> str:
    if args.backend == "numpy":
        if len(widths) == 2:
            return "the lecture's NumPy softmax code"
        if len(widths) == 3:
            return "the lecture's NumPy two-layer code"
        return "NumPy, gradient from the Jacobian factors (depth > 1)"
    return {"factors": "NumPy, gradient from the Jacobian factors V, a",
            "jax": "jax.jit over lax.scan",
            "torch": "the lecture's PyTorch loop"}[args.backend]


def _train(args, X, y, rng, widths, progress):
    from . import lecture_init, train_factored, train_softmax, train_torch, train_two_layer

    common = {"step_size": args.step_size, "reg": args.reg, "iters": args.iters,
              "progress": progress}
    if args.backend == "torch":
        return train_torch(X, y, widths=widths, seed=args.seed, dtype=args.dtype, **common)
    params = lecture_init(widths, rng)
    params = [(B.astype(args.dtype), b.astype(args.dtype)) for B, b in params]
    X = X.astype(args.dtype)
    if args.backend == "jax":
        from .._compat import enable_x64
        from .jax_loop import train_jax  # JAX is imported here only

        if args.dtype == "float64":
            with enable_x64(True):
                return train_jax(X, y, params, dtype=args.dtype, **common)
        return train_jax(X, y, params, dtype=args.dtype, **common)
    if args.backend == "numpy" and len(widths) == 2:
        return train_softmax(X, y, params, **common)
    if args.backend == "numpy" and len(widths) == 3:
        return train_two_layer(X, y, params, **common)
    return train_factored(X, y, params, **common)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if args.iters is None:
        args.iters = DEFAULT_ITERS[args.model]
    if args.dtype is None:
        args.dtype = "float32" if args.backend == "torch" else "float64"
    if args.dtype == "float32":  # (a value float32 cannot hold: refused here, as parse errors)
        big = float(np.finfo(np.float32).max)
        for flag, value in (("--step-size", args.step_size), ("--reg", args.reg)):
            if value > big:
                parser.error(f"argument {flag}: expected at most {big:.4g} in float32 "
                             f"(--dtype float64 takes more), got {value:g}")
    hidden = [] if args.model == "softmax" else (args.hidden or [100])

    from ..spiral import make_spiral
    from ._core import TrainingDiverged

    try:  # optional extras: fail before training, not after
        if args.backend == "torch":
            from .torch_loop import import_torch
            import_torch()
        if args.plot is not None:
            from .plot import import_matplotlib
            import_matplotlib()
    except ImportError as err:
        print(f"bpcheck train: error: {err}", file=sys.stderr)
        return 2

    rng = np.random.RandomState(args.seed)
    X, y = make_spiral(seed=rng)
    widths = [X.shape[1], *hidden, int(y.max()) + 1]
    how = _describe(args, widths)
    print(f"training {args.model} {widths} with {args.backend} ({how}): {args.iters} "
          f"iterations, step size {args.step_size:g}, reg {args.reg:g}, seed {args.seed}, "
          f"{args.dtype}")
    from .progress import ProgressBar

    bar = None if args.no_progress else ProgressBar(args.iters)
    start = time.perf_counter()
    try:
        result = _train(args, X, y, rng, widths, bar)
    except MemoryError as err:
        if bar is not None:
            bar.close()
        print(f"bpcheck train: error: --hidden {' '.join(map(str, widths[1:-1]))}: the network "
              f"does not fit in memory ({err})", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        if bar is not None:
            bar.close()
        shrink = 1 - args.step_size * args.reg  # what a step does to the weights, the decay
        why = (f" (or a smaller --reg: each step multiplies the weights by 1 - step size x "
               f"reg = {shrink:.3g}, which grows them)" if shrink < -1 else "")
        print(f"bpcheck train: {err}{why}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    penalty = args.backend != "torch"
    print(f"final loss: {result.final_loss:.6f}"
          + ("" if penalty else "  (cross-entropy only; SGD weight decay is not in it)"))
    print(f"train accuracy: {result.train_accuracy:.4f}")
    if len(result.losses) and result.final_loss > result.losses[0]:
        print(f"note: the loss rose from {float(result.losses[0]):.6g} to "
              f"{float(result.final_loss):.6g}: training diverged without reaching NaN or "
              f"inf; try a smaller --step-size", file=sys.stderr)
    print(f"time: {seconds:.2f} s")
    if args.json is not None:
        record = {
            "losses": [float(v) for v in result.losses],
            "final_loss": float(result.final_loss),
            "train_accuracy": float(result.train_accuracy),
            "model": args.model, "backend": args.backend, "trainer": how, "widths": widths,
            "iters": args.iters, "step_size": args.step_size, "reg": args.reg,
            "seed": args.seed, "dtype": args.dtype, "loss_includes_penalty": penalty,
            "seconds": seconds,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=1)
        print(f"wrote {args.json}")
    if args.plot is not None:
        from .plot import plot_training

        plot_training(result, X, y, args.plot,
                      title=f"{args.model} {widths}, {args.backend}, seed {args.seed}")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
