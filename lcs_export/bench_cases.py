"""What ``lcs-export bench`` measures in a bundle: one case per (artifact, alpha) a host can run.

A level file is one case at its alpha; a multifunction artifact one case per function's
alpha; an alpha-input artifact one case per level alpha of the bundle (or, with no level
files, at both ends of the trained range). The switch-once pair (``alpha_weights`` +
``alpha_predict``) is one runnable thing, so it is one case per alpha naming both files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: How a host pays to move to a case, by artifact kind (the issue's three ways to switch).
SWITCH_HOW = {
    "level": "open file",
    "multifunction": "open file",
    "alpha_predict": "switch once",
    "alpha_weights": "switch once",
    "alpha_input": "alpha per call",
}


@dataclass
class Case:
    """One (artifact, alpha) to measure: ``entry`` is what the target's ``load`` receives."""

    entry: dict[str, Any]
    alpha: float
    paths: list[str]
    kind: str
    file_bytes: int
    gzip_bytes: int
    level: dict[str, Any] | None = None  # the manifest level at this alpha (cost facts), if any
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return " + ".join(self.paths)

    @property
    def switch_how(self) -> str:
        return SWITCH_HOW.get(self.kind, "open file")

    @property
    def reopens(self) -> bool:
        """Whether moving to this case means opening its artifact (else: feeding another alpha)."""
        return self.switch_how == "open file"


def _pair_partner(entry: dict[str, Any], by_path: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The other half of a switch-once pair, when the manifest names one that it lists."""
    key = "predict_path" if entry["kind"] == "alpha_weights" else "weights_path"
    partner = by_path.get(str(entry.get("details", {}).get(key, "")))
    return partner if partner is not None and partner is not entry else None


def _level_at(manifest: dict[str, Any], alpha: float) -> dict[str, Any] | None:
    return next((level for level in manifest["levels"] if abs(float(level["alpha"]) - alpha) < 1e-9), None)


def plan_cases(manifest: dict[str, Any]) -> list[Case]:
    """Every case of a bundle, in manifest order."""
    by_path = {entry["path"]: entry for entry in manifest["artifacts"]}
    level_alphas = sorted({float(level["alpha"]) for level in manifest["levels"]})
    alpha_range = [float(manifest["alpha_input"]["min"]), float(manifest["alpha_input"]["max"])]
    cases = []
    for entry in manifest["artifacts"]:
        kind = entry["kind"]
        partner = _pair_partner(entry, by_path) if kind in ("alpha_weights", "alpha_predict") else None
        if kind == "alpha_weights" and partner is not None:
            continue  # measured once, as the pair, under its alpha_predict entry
        group = [entry] if partner is None else [partner, entry]
        if kind in ("level", "multifunction"):
            alphas = [float(a) for a in entry["alphas"]]
        else:
            alphas = level_alphas or sorted(set(alpha_range))
        for alpha in alphas:
            cases.append(Case(
                entry=entry, alpha=alpha, paths=[item["path"] for item in group], kind=kind,
                file_bytes=sum(int(item["bytes"]) for item in group),
                gzip_bytes=sum(int(item["gzip_bytes"]) for item in group), level=_level_at(manifest, alpha),
            ))
    return cases


def baseline_case(cases: list[Case]) -> Case:
    """What ratios are taken against: the level file of the lowest alpha (alpha 0, the most
    accurate level), or the lowest-alpha case when the bundle has no level files."""
    levels = [case for case in cases if case.kind in ("level", "multifunction")]
    return min(levels or cases, key=lambda case: case.alpha)
