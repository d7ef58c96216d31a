"""bpcheck: the backpropagation recursion of deep ReLU networks, checked and put to work.

Conventions (see DESIGN.md): ``B^(l)`` has shape ``(d_l, d_{l-1})``, inputs are rows of
``X`` ``(N, d_0)``, and ``beta = [vec(B^(1)'), b^(1), ..., vec(B^(L+1)'), b^(L+1)]``.
"""

from ._params import flatten_params as flatten_params
from ._params import init_params as init_params
from ._params import param_count as param_count
from ._params import unflatten_params as unflatten_params
from ._recursion import LayerFactors as LayerFactors
from ._recursion import forward as forward
from ._recursion import jacobian as jacobian
from ._recursion import jacobian_factors as jacobian_factors

__version__ = "0.1.0"

__all__ = [
    "LayerFactors",
    "flatten_params",
    "forward",
    "init_params",
    "jacobian",
    "jacobian_factors",
    "param_count",
    "unflatten_params",
]
