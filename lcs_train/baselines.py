"""Training-mode baselines of the paper that are families, not one level.

``us`` is a universally-slimmable-style network (US-Nets, Yu and Huang 2019) for structured
compression: one weight set serves every width. Each step trains the sandwich of widths the
structured subspaces use (the widest, the narrowest and two random widths in between) and,
unlike them, with *in-place distillation*: the widest network learns from the labels, every
narrower one from the widest one's predictions (soft targets, no gradient into the teacher).

Its normalisation follows ``--norm`` as a subspace's does. With InstanceNorm (lcs's
structured default for networks built without BatchNorm; the paper compared against US-Nets
without BN recalibration) what separates it from an LCS+P structured subspace is the
distillation. With kept BatchNorm it is US-Nets' own recipe: after each epoch every width's
statistics are recalibrated into the per-level table (``Trainer.recalibrate``).

(``--fixed-alpha`` baselines are ordinary networks at one level: ``TrainConfig.fixed_alpha``.)
"""

from __future__ import annotations

from lcs_train.errors import LcsError

#: Baseline name -> what it is, for help text and errors.
BASELINES: dict[str, str] = {
    "us": "universally slimmable (structured only): sandwich of widths with in-place distillation, one weight set",
}


def check_baseline(baseline: str | None, method: str, fixed_alpha: float | None) -> None:
    """Refuse a baseline that does not exist or does not fit the other options."""
    if baseline is None:
        return
    if baseline not in BASELINES:
        raise LcsError(f"unknown baseline {baseline!r}", f"use one of: {', '.join(BASELINES)}")
    if method != "structured":
        raise LcsError(f"--baseline {baseline} applies to --method structured only (got {method})",
                       "add --method structured, or use --fixed-alpha for a baseline at one level")
    if fixed_alpha is not None:
        raise LcsError(f"--baseline {baseline} and --fixed-alpha are two different baselines", "give one of them")
