"""Test-wide settings: float64 in JAX (exactness is claimed), warnings are errors (pyproject)."""

import jax

jax.config.update("jax_enable_x64", True)
