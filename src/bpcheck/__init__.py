"""bpcheck: the backpropagation recursion of deep networks, checked and put to work.

Conventions (docs/conventions.md): ``B^(l)`` has shape ``(d_l, d_{l-1})``, inputs are rows of
``X`` ``(N, d_0)``, and ``beta = [vec(B^(1)'), b^(1), ..., vec(B^(L+1)'), b^(L+1)]``.
"""

from ._activations import Activation as Activation
from ._arrays import release_memory as release_memory
from ._gauss_newton import gauss_newton as gauss_newton
from ._gauss_newton import GaussNewtonOperator as GaussNewtonOperator
from ._gauss_newton import gauss_newton_matvec as gauss_newton_matvec
from ._gauss_newton import gauss_newton_operator as gauss_newton_operator
from ._losses import Loss as Loss
from ._model import Network as Network
from ._model import network as network
from ._ntk import ntk as ntk
from ._params import flatten_params as flatten_params
from ._params import init_params as init_params
from ._params import param_count as param_count
from ._params import unflatten_params as unflatten_params
from ._pergrad import per_example_grad_norms as per_example_grad_norms
from ._pergrad import per_example_grads as per_example_grads
from ._recursion import LayerFactors as LayerFactors
from ._recursion import forward as forward
from ._recursion import jacobian as jacobian
from ._recursion import jacobian_factors as jacobian_factors
from .spiral import make_spiral as make_spiral

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "GaussNewtonOperator",
    "LayerFactors",
    "Loss",
    "Network",
    "flatten_params",
    "forward",
    "gauss_newton",
    "gauss_newton_matvec",
    "gauss_newton_operator",
    "init_params",
    "jacobian",
    "jacobian_factors",
    "make_spiral",
    "network",
    "ntk",
    "param_count",
    "per_example_grad_norms",
    "per_example_grads",
    "release_memory",
    "unflatten_params",
]
