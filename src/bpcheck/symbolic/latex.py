"""LaTeX for the recursion and the proof steps, as a reader writes it (not SymPy internals).

The generic-width steps carry their own LaTeX (:mod:`.generic`, built with
``sympy.latex`` on ``Indexed`` names such as ``B^{(l+1)}``); this module holds the
statements of the recursion and of the planted mistakes.
"""

from __future__ import annotations

from .network import check_activation

V_RECURSION = (r"V^{(l)} = \frac{\partial z^{(L+1)}}{\partial b^{(l)\prime}}"
               r" = V^{(l+1)} B^{(l+1)} D^{(l)}, \qquad V^{(L+1)} = I_K")
U_RECURSION = (r"U^{(l)} = \frac{\partial z^{(L+1)}}{\partial \beta^{(l)\prime}}"
               r" = V^{(l)} \left(I_{d_l} \otimes a^{(l-1)\prime}\right),"
               r" \qquad \beta^{(l)} = \operatorname{vec}\left(B^{(l)\prime}\right)")
D_RELU = (r"D^{(l)} = \frac{\partial a^{(l)}}{\partial z^{(l)\prime}}"
          r" = \operatorname{diag}\left(\mathbb{1}\left[z^{(l)} > 0\right]\right)")
D_SIGMA = (r"D^{(l)} = \frac{\partial a^{(l)}}{\partial z^{(l)\prime}}"
           r" = \operatorname{diag}\left(\sigma'\left(z^{(l)}\right)\right)")
FORWARD = (r"z^{(l)} = B^{(l)} a^{(l-1)} + b^{(l)}, \quad l = 1, \dots, L+1, \qquad"
           r" a^{(l)} = \sigma\left(z^{(l)}\right), \quad a^{(0)} = x")

PLANTED = {
    "swapped order": r"V^{(l)} \overset{?}{=} V^{(l+1)} D^{(l)} B^{(l+1)}",
    "D omitted": r"V^{(l)} \overset{?}{=} V^{(l+1)} B^{(l+1)}",
    "off by one": r"V^{(l)} \overset{?}{=} V^{(l+1)} B^{(l)} D^{(l)}",
    "a' kron I": r"U^{(l)} \overset{?}{=} V^{(l)} \left(a^{(l-1)\prime} \otimes I_{d_l}\right)",
    "column-stacked vec(B)": (r"U^{(l)} \overset{?}{=} \frac{\partial z^{(L+1)}}"
                              r"{\partial \operatorname{vec}\left(B^{(l)}\right)'}"),
}
"""LaTeX of the planted mistakes that are formulas (the others are misbehaving code)."""


def recursion_latex(activation: str = "relu") -> dict[str, str]:
    """Label -> LaTeX for the forward pass, ``D``, and the two recursions."""
    check_activation(activation)
    return {
        "forward pass": FORWARD,
        "activation derivative": D_RELU if activation == "relu" else D_SIGMA,
        "V recursion": V_RECURSION,
        "U recursion": U_RECURSION,
    }
