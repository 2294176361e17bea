"""Notices the converters' own dependencies log at import that say nothing to an lcs user.

torchao (which executorch requires, and which coremltools imports whenever it is installed)
registers an Enum as a pytree constant, and torch logs a deprecation notice about that
through its ``torch.utils._pytree`` logger, once per process: a "W1130 ... KernelPreference
is an Enum subclass ..." line in the middle of ``lcs-export coreml``'s or ``executorch``'s
output. A logger filter drops that one notice wherever the import happens (coremltools is
imported from several places, lazily); every other message of that logger still shows.
"""

from __future__ import annotations

import logging

#: The words of torch's notice (torch/utils/_pytree.py, ``_private_register_pytree_node``).
ENUM_CONSTANT_NOTICE = "is an Enum subclass and is now natively supported by torch.compile"
PYTREE_LOGGER = "torch.utils._pytree"


class DropEnumConstantNotice(logging.Filter):
    """Drops torch's "Enum registered as a pytree constant" deprecation notice, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return ENUM_CONSTANT_NOTICE not in record.getMessage()


def drop_enum_constant_notice() -> None:
    """Install the filter on torch's pytree logger (once per process)."""
    logger = logging.getLogger(PYTREE_LOGGER)
    if not any(isinstance(existing, DropEnumConstantNotice) for existing in logger.filters):
        logger.addFilter(DropEnumConstantNotice())
