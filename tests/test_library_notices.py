"""torch's "Enum registered as a pytree constant" notice, logged when coremltools or executorch
imports torchao, is dropped once ``targets`` is imported; the pytree logger's other messages
are not."""

from __future__ import annotations

import enum
import logging

import pytest
import torch.utils._pytree as pytree

import targets  # noqa: F401 (installs the filter)
from targets.library_notices import ENUM_CONSTANT_NOTICE, PYTREE_LOGGER, DropEnumConstantNotice


def _register_an_enum() -> None:
    class Preference(str, enum.Enum):  # as torchao's; a new class each call (one registration each)
        FAST = "fast"

    pytree.register_constant(Preference)


def test_the_notice_torch_logs_is_the_one_dropped(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(PYTREE_LOGGER)
    filters = [f for f in logger.filters if isinstance(f, DropEnumConstantNotice)]
    assert len(filters) == 1
    # Without the filter, this torch logs the notice in the words the filter looks for (a torch
    # that rewords it fails here, not silently in a user's output).
    logger.removeFilter(filters[0])
    try:
        with caplog.at_level(logging.WARNING, logger=PYTREE_LOGGER):
            _register_an_enum()
        assert any(ENUM_CONSTANT_NOTICE in record.getMessage() for record in caplog.records), caplog.text
    finally:
        logger.addFilter(filters[0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=PYTREE_LOGGER):
        _register_an_enum()
        logger.warning("another pytree message")
    assert [record.getMessage() for record in caplog.records] == ["another pytree message"]
