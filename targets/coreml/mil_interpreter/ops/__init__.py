"""NumPy implementations of MIL ops; importing this package registers all of them."""

from . import (  # noqa: F401
    activation,
    constexpr,
    control_flow,
    elementwise,
    indexing,
    nn,
    normalization,
    reduction,
    tensor,
)
