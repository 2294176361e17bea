"""Parsing ``--levels`` and checking every level against what the checkpoint was trained for."""

from __future__ import annotations

from lcs_train.errors import LcsError
from lcs_train.methods.base import CompressionMethod

#: Two alphas closer than this are the same level (float text like "0.2" vs 1/5).
ALPHA_TOLERANCE = 1e-6


def _format_alphas(alphas: list[float] | tuple[float, ...]) -> str:
    return ", ".join(f"{a:g}" for a in alphas)


def parse_alpha_list(text: str, option: str = "--levels") -> list[float]:
    """``"0.0,0.5,0.9"`` -> ``[0.0, 0.5, 0.9]``; anything that is not a number is an error."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise LcsError(
            f"{option} {text!r} has an empty entry",
            f"give comma-separated alphas, e.g. {option} 0.0,0.5,0.9",
        )
    alphas = []
    for part in parts:
        try:
            # + 0.0 turns -0.0 into 0.0: "-0" is alpha 0, and must not name files "-0.0000".
            alphas.append(float(part) + 0.0)
        except ValueError:
            raise LcsError(
                f"{option}: {part!r} is not a number", f"give comma-separated alphas, e.g. {option} 0.0,0.5,0.9"
            ) from None
    return alphas


def check_levels(alphas: list[float], method: CompressionMethod, option: str = "--levels") -> list[float]:
    """Validate levels against [0, 1], the trained range, order, duplicates and discreteness.

    Returns the levels, with quantized ones snapped to the exact discrete alpha so that the
    manifest records the value the method's bit mapping was trained on.
    """
    maximum = method.max_alpha
    for alpha in alphas:
        if not 0.0 <= alpha <= 1.0:
            raise LcsError(f"{option}: alpha {alpha:g} is outside [0, 1]", "give alphas between 0 and 1")
        if alpha > maximum + ALPHA_TOLERANCE:
            raise LcsError(
                f"{option}: alpha {alpha:g} is outside the trained range [0, {maximum:g}] "
                f"of this {method.name} subspace",
                f"give alphas of at most {maximum:g}",
            )
    for previous, current in zip(alphas, alphas[1:]):
        if abs(current - previous) <= ALPHA_TOLERANCE:
            raise LcsError(f"{option}: alpha {current:g} is given twice", "list each level once")
        if current < previous:
            raise LcsError(
                f"{option}: {previous:g} comes before {current:g}; levels must be sorted ascending",
                f"write them as {option} {_format_alphas(sorted(set(alphas))).replace(', ', ',')}",
            )
    discrete = method.discrete_alphas()
    if discrete is None:
        return list(alphas)
    return [_snap_to_discrete(alpha, discrete, method, option) for alpha in alphas]


def _snap_to_discrete(
    alpha: float, discrete: tuple[float, ...], method: CompressionMethod, option: str
) -> float:
    for allowed in discrete:
        if abs(alpha - allowed) <= 1e-4:
            return allowed
    described = ", ".join(f"{a:.4g} ({method.level(a)['bits']} bits)" for a in discrete)
    raise LcsError(
        f"{option}: alpha {alpha:g} is not a level of this {method.name} subspace "
        "(its levels are whole bit widths)",
        f"use one of: {described}",
    )


def parse_levels(text: str, method: CompressionMethod) -> list[float]:
    """Parse and validate ``--levels`` text for a checkpoint trained with ``method``."""
    return check_levels(parse_alpha_list(text), method)
