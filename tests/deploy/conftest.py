"""The real-stack suite (marker ``deploy``) runs only when selected: ``make test-deploy``
(``pytest -m deploy``). Any other run, ``make test`` included, skips it: it builds
multi-GB images and starts containers."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "deploy" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="real deployment suite: run with `make test-deploy`")
    for item in items:
        if item.get_closest_marker("deploy") is not None:
            item.add_marker(skip)
