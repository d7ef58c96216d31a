"""An instructor's homework module: one new exercise, written without touching bpcheck.

    bpcheck grade --homework examples/conv2d_homework.py --template conv.py   # student stub
    bpcheck grade --homework examples/conv2d_homework.py submission.py
    bpcheck grade-batch --homework examples/conv2d_homework.py submissions/
    bpcheck gradescope-zip autograder.zip --homework examples/conv2d_homework.py

The reference below runs in the grader's process only; the sandbox never sees this file.
"""

import numpy as np

from bpcheck.grade.homework import Homework, RelativeError

hw = Homework("Convolutions", allow=["numpy"])


@hw.exercise(points=10, returns=["out"], score=RelativeError(tol=1e-7),
             title="conv2d_forward: a convolution layer's forward pass")
def conv2d_forward(x, w, b, stride, pad):
    """Forward pass of a 2-D convolution layer (cross-correlation, as in CS231n).

    x: (N, C, H, W) inputs; w: (F, C, HH, WW) filters; b: (F,) biases;
    stride, pad: ints (zero padding on every side).

    Returns (out,) with out of shape (N, F, H', W'),
    H' = 1 + (H + 2 pad - HH) // stride, W' = 1 + (W + 2 pad - WW) // stride.
    """
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    out = np.empty((N, F, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return (out,)


def _inputs(rng, N, C, H, W, F, k, stride, pad):
    return {"x": rng.standard_normal((N, C, H, W)), "w": rng.standard_normal((F, C, k, k)),
            "b": rng.standard_normal(F), "stride": stride, "pad": pad}


conv2d_forward.case("3x3 filters, stride 1, pad 1",
                    lambda rng: _inputs(rng, 2, 3, 5, 5, 4, 3, 1, 1), weight=2)
conv2d_forward.case("stride 2, no padding", lambda rng: _inputs(rng, 1, 2, 7, 7, 3, 3, 2, 0))
FLIPPED = "the filters are flipped (a true convolution; the layer is a cross-correlation)"
conv2d_forward.case("non-square input, 1x1 filters",
                    lambda rng: _inputs(rng, 2, 4, 3, 6, 5, 1, 1, 0),
                    misses=[FLIPPED])  # a 1x1 filter flipped is itself
conv2d_forward.case("hidden: larger batch", lambda rng: _inputs(rng, 4, 3, 8, 8, 2, 3, 1, 1),
                    visibility="hidden")


@conv2d_forward.mistake(FLIPPED)
def _(x, w, b, stride, pad):
    return conv2d_forward(x, w[:, :, ::-1, ::-1], b, stride, pad)


@conv2d_forward.mistake("the bias is left out")
def _(x, w, b, stride, pad):
    return conv2d_forward(x, w, 0 * b, stride, pad)
