"""The symbolic proof checker for the backprop recursion (SymPy and SymEngine).

* :func:`check_recursion` proves (or refutes) ``V^(l) = V^(l+1) B^(l+1) D^(l)`` and
  ``U^(l) = V^(l) (I kron a^(l-1)')`` for concrete widths, every layer, by comparing
  the recursion's claim with the derivative on a canonical polynomial form, layer by
  layer in each layer's own symbols (:mod:`.layerwise`) or directly (:mod:`.direct`);
  without widths it checks a grid of architectures (:class:`GridReport`).
* :mod:`.induction` checks the induction over the layers with symbolic widths: the
  base case and the step ``P(l+1) => P(l)``, so the recursion holds for every depth.
* :mod:`.generic` checks the proof steps with symbolic widths ``n_0, n_1, ...``.
* :func:`verify_parts` gives the tables that ``bpcheck verify`` prints.

The steps are separate modules: :mod:`.network` (the symbols and forward pass),
:mod:`.recursion` (the claim, by the rules), :mod:`.direct` (the truth, by
differentiation), :mod:`.canonical` (deciding equality), :mod:`.check` (joining them).
"""

from .check import LayerCheck as LayerCheck
from .check import GridReport as GridReport
from .check import Mismatch as Mismatch
from .check import RecursionReport as RecursionReport
from .check import check_recursion as check_recursion
from .generic import GenericStep as GenericStep
from .generic import chain_step as chain_step
from .generic import one_layer_step as one_layer_step
from .generic import vec_kronecker_step as vec_kronecker_step
from .induction import induction_base as induction_base
from .induction import induction_step as induction_step
from .latex import recursion_latex as recursion_latex
from .network import SymbolicNetwork as SymbolicNetwork
from .network import build_network as build_network
from .parts import verify_parts as verify_parts
from .rules import RuleError as RuleError
from .rules import lecture_u_rule as lecture_u_rule
from .rules import lecture_v_rule as lecture_v_rule
from .wrong_rules import PLANTED as PLANTED

__all__ = [
    "PLANTED",
    "GenericStep",
    "GridReport",
    "LayerCheck",
    "Mismatch",
    "RecursionReport",
    "RuleError",
    "SymbolicNetwork",
    "build_network",
    "chain_step",
    "check_recursion",
    "induction_base",
    "induction_step",
    "lecture_u_rule",
    "lecture_v_rule",
    "one_layer_step",
    "recursion_latex",
    "vec_kronecker_step",
    "verify_parts",
]
