"""Test-wide settings: float64 in JAX (exactness is claimed), warnings are errors (pyproject)."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True)
def _plans_follow_patched_settings(monkeypatch):
    """A repeat call replays the path its signature's first call took (``bpcheck._compiled``
    plans), whatever the module settings are then.  A test that patches a setting (a size
    threshold, a thread count) wants its next calls to take the path that setting chooses,
    so every ``monkeypatch.setattr`` forgets the plans, and so does the test's end, before
    the settings are restored (a plan made under patched settings never outlives them)."""
    from bpcheck import _compiled

    patch, patched = monkeypatch.setattr, []

    def setattr_and_forget_plans(*args, **kwargs):
        patch(*args, **kwargs)
        _compiled._PLANS.clear()
        patched.append(True)

    monkeypatch.setattr = setattr_and_forget_plans
    yield
    if patched:
        _compiled._PLANS.clear()
