"""The lecture's PyTorch part as a homework: the student writes the model and one training
step; PyTorch (and its autodiff) is allowed here, unlike in the NumPy homework.

    bpcheck grade --homework examples/torch_simplenn_homework.py submission.py

The reference (NumPy, bpcheck's own two-layer gradients) runs in the grader's process only.
What runs in the sandbox besides the student's code is DRIVER below: it builds the
student's model, loads the case's weights, calls the student's training step and returns
plain arrays.  It is sent as source; it never sees the reference.
"""

import numpy as np

from bpcheck.grade.homework import Homework, RelativeError
from bpcheck.grade.reference import two_layer_loss

hw = Homework("PyTorch: the lecture's SimpleNN and one training step",
              allow=["numpy", "torch", "matplotlib"])

DRIVER = '''
import numpy as np
import torch


def drive(submission, W1, b1, W2, b2, X, y, lr, reg):
    torch.manual_seed(0)
    model = submission["build_model"](W1.shape[0], W1.shape[1], W2.shape[1]).double()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if len(linears) != 2:
        raise ValueError(f"expected a model with 2 nn.Linear layers, found {len(linears)}")
    with torch.no_grad():
        for layer, W, b in zip(linears, (W1, W2), (b1, b2)):
            layer.weight.copy_(torch.from_numpy(W.T.copy()))
            layer.bias.copy_(torch.from_numpy(b))
    loss = submission["train_step"](model, torch.from_numpy(X), torch.from_numpy(y), lr, reg)
    out = [float(loss)]
    for layer in linears:
        out += [layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()]
    return tuple(out)
'''


def build_model(D, H, K):
    """The lecture's SimpleNN: nn.Linear(D, H), ReLU, nn.Linear(H, K) (a torch.nn.Module)."""


def train_step(model, X, y, lr, reg):
    """One step of plain gradient descent on the model's parameters, in place.

    X: (N, D) float64 tensor; y: (N,) int64 labels; lr: step size; reg: L2 strength.
    loss = mean cross-entropy + 0.5 * reg * (sum of the squared weights of both layers,
    biases excluded).  Returns the loss before the step (a float or a 0-d tensor).
    """


@hw.exercise(points=20, returns=["loss", "W1", "b1", "W2", "b2"],
             functions=[build_model, train_step], driver=DRIVER,
             title="SimpleNN: the model and one training step",
             score=RelativeError(weights={"loss": 2}))
def simple_nn_step(W1, b1, W2, b2, X, y, lr, reg):
    """The loss and the parameters after one step (layout as in the lecture: W1 (D, H))."""
    loss, dW1, db1, dW2, db2 = two_layer_loss(W1, b1, W2, b2, X, y, reg)
    return loss, W1 - lr * dW1, b1 - lr * db1, W2 - lr * dW2, b2 - lr * db2


def _case(rng, N, D, H, K):
    return {"W1": 0.5 * rng.standard_normal((D, H)), "b1": 0.1 * rng.standard_normal(H),
            "W2": 0.5 * rng.standard_normal((H, K)), "b2": 0.1 * rng.standard_normal(K),
            "X": rng.standard_normal((N, D)), "y": rng.integers(0, K, N).astype(np.int64),
            "lr": 0.5, "reg": 1e-2}


simple_nn_step.case("the spiral's shapes: N = 30, D = 2, H = 100, K = 3",
                    lambda rng: _case(rng, 30, 2, 100, 3), weight=2)
simple_nn_step.case("N = 1, K = 2", lambda rng: _case(rng, 1, 3, 8, 2))
simple_nn_step.case("hidden: wider", lambda rng: _case(rng, 16, 5, 32, 4), visibility="hidden")


@simple_nn_step.mistake("the weights are not regularised")
def _(W1, b1, W2, b2, X, y, lr, reg):
    return simple_nn_step(W1, b1, W2, b2, X, y, lr, 0.0)


@simple_nn_step.mistake("the step goes up the gradient (params += lr * grad)")
def _(W1, b1, W2, b2, X, y, lr, reg):
    return simple_nn_step(W1, b1, W2, b2, X, y, -lr, reg)
