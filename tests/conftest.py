from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "soak", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("soak" if os.environ.get("CRDTSYNC_SOAK") else "ci")


# In CI (``CI=true``, as `.ci/run` is run) a skipped test is a failure: every real part the
# suite needs (Chromium, mosquitto, Node and npm, ruff, mypy) is installed by `.ci/run`, so a
# skip there means an install step is missing, and it must not pass unnoticed. On a
# developer's machine the same tests skip with the reason that says what to install.
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
        outcome = yield
        report = outcome.get_result()
        if report.skipped and not hasattr(report, "wasxfail"):
            report.outcome = "failed"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            report.longrepr = f"skipped in CI, where nothing may be missing: {reason}"
