"""The cells of a lecture-style notebook: plots, the NumPy two-layer network trained on the
spiral for STEPS steps, the PyTorch part, and the four exercises answered correctly.

``cells(steps)`` returns the code cells' sources; ``write(path, steps)`` writes the
notebook.  Used by the grader's tests and by benchmarks/grade.py."""

from pathlib import Path

CORRECT = (Path(__file__).parent / "correct.py").read_text()

SETUP = """\
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
np.random.seed(0)
N, D, K = 100, 2, 3
X = np.zeros((N * K, D))
y = np.zeros(N * K, dtype='uint8')
for j in range(K):
    ix = range(N * j, N * (j + 1))
    r = np.linspace(0.0, 1, N)
    t = np.linspace(j * 4, (j + 1) * 4, N) + np.random.randn(N) * 0.2
    X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
    y[ix] = j
plt.scatter(X[:, 0], X[:, 1], c=y, s=40, cmap=plt.cm.Spectral)
plt.show()
"""

TRAIN = """\
h = 100
W = 0.01 * np.random.randn(D, h); b = np.zeros((1, h))
W2 = 0.01 * np.random.randn(h, K); b2 = np.zeros((1, K))
step_size, reg = 1e-0, 1e-3
num_examples = X.shape[0]
losses = []
for i in range({steps}):
    hidden_layer = np.maximum(0, np.dot(X, W) + b)
    scores = np.dot(hidden_layer, W2) + b2
    exp_scores = np.exp(scores)
    probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    correct_logprobs = -np.log(probs[range(num_examples), y])
    loss = np.sum(correct_logprobs) / num_examples + 0.5 * reg * np.sum(W * W) \\
        + 0.5 * reg * np.sum(W2 * W2)
    if i % 1000 == 0:
        print("iteration %d: loss %f" % (i, loss))
        losses.append(loss)
    dscores = probs
    dscores[range(num_examples), y] -= 1
    dscores /= num_examples
    dW2 = np.dot(hidden_layer.T, dscores); db2 = np.sum(dscores, axis=0, keepdims=True)
    dhidden = np.dot(dscores, W2.T)
    dhidden[hidden_layer <= 0] = 0
    dW = np.dot(X.T, dhidden); db = np.sum(dhidden, axis=0, keepdims=True)
    dW2 += reg * W2; dW += reg * W
    W += -step_size * dW; b += -step_size * db
    W2 += -step_size * dW2; b2 += -step_size * db2
"""

PLOT = """\
plt.plot(losses)
plt.xlabel("iteration / 1000")
plt.show()
hidden_layer = np.maximum(0, np.dot(X, W) + b)
print("training accuracy: %.2f" % np.mean(np.argmax(hidden_layer @ W2 + b2, axis=1) == y))
"""

TORCH = """\
import torch
import torch.nn as nn

class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 100)
        self.fc2 = nn.Linear(100, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

model = SimpleNN()
optimizer = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=1e-3)
Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
for i in range(200):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(Xt), yt)
    loss.backward()
    optimizer.step()
print("torch loss", float(loss))
"""


def cells(steps: int = 10_000) -> list[str]:
    return [SETUP, TRAIN.format(steps=steps), PLOT, TORCH, CORRECT]


def write(path, steps: int = 10_000, extra=()) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [*cells(steps), *extra]]
    nbformat.write(nb, str(path))
