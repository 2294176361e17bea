"""The test suite's own machinery works as the fixtures rely on it."""

from __future__ import annotations

import os

import pytest


@pytest.mark.xdist_group("suite_setup")
def test_xdist_groups_keep_a_module_on_one_worker(request: pytest.FixtureRequest) -> None:
    """Grouped modules export their shared artifacts once, on the one worker that runs the
    group; if --dist loadgroup stops grouping (pytest 9.2 with pytest-xdist 3.8), each worker
    builds them again and the suite takes far longer without failing."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("not running as a pytest-xdist worker")
    if not request.config.getoption("loadgroup", False):
        pytest.skip("not run with --dist loadgroup")
    assert request.node.nodeid.endswith("@suite_setup"), (
        f"pytest-xdist did not tag {request.node.nodeid} with its group: --dist loadgroup is not grouping "
        "(pytest 9.2 with pytest-xdist 3.8 does this; pyproject.toml pins pytest below 9.2)")
