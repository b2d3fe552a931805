"""Shared fixtures: every kernel test runs on both twins through ``impl``.

With ``DISTSYNC_NO_EXTENSIONS=1`` only the pure-Python twin is collected
(the compiled one is not built in that configuration); otherwise both are.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from distsync._core import NO_EXTENSIONS

IMPLS = ("py",) if NO_EXTENSIONS else ("c", "py")

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    """``"c"`` or ``"py"``: which twin of a kernel the test exercises."""
    return str(request.param)
