"""The tables and value formats of ``lcs-export`` (artifacts, parity, integrity). Exit codes,
error lines, progress bars and where output goes are shared with ``lcs-train``:
``lcs_train.console``."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from lcs_export.bundle import IntegrityResult
from lcs_export.manifest import ALPHA_INPUT_KINDS
from lcs_export.parity import ParityReport


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def count_text(count: float) -> str:
    """2513920 -> '2.51M'; short enough for an 80-column table."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= threshold:
            return f"{count / threshold:.3g}{suffix}"
    return f"{count:g}"


def compression_text(compression: dict[str, Any]) -> str:
    """{'sparsity': 0.5} -> 'sparsity 50.0%'; {'bits': 4} -> '4 bits'."""
    parts = []
    for unit, value in compression.items():
        if unit == "bits":
            parts.append(f"{value} bits")
        elif isinstance(value, float):
            parts.append(f"{unit} {value:.0%}")
        else:
            parts.append(f"{unit} {value}")
    return ", ".join(parts) or "-"


def parity_table(reports: list[ParityReport] | list[dict[str, Any]], title: str = "Parity with PyTorch") -> Table:
    """One row per (artifact, alpha); failing rows red."""
    table = Table(title=title, caption="failure reasons: parity.json / --json")
    for column in ("artifact", "alpha", "n", "agreement", "acc torch", "acc artifact", "max |diff|", "regime", "result"):
        table.add_column(column, justify="left" if column in ("artifact", "regime", "result") else "right",
                         no_wrap=column == "artifact")
    for item in reports:
        report = item.to_dict() if isinstance(item, ParityReport) else item
        alpha = f"{report['alpha']:g}"
        if abs(report["alpha"] - report["reference_alpha"]) > 1e-9:
            alpha += f" (-> {report['reference_alpha']:g})"
        diff = report["max_abs_logit_diff"]
        result = "pass" if report["passed"] else "FAIL"
        if report.get("reference_float32_error") is not None:
            # The threshold was raised to what PyTorch's own float32 can resolve: say so.
            result += f" (torch fp32 error {report['reference_float32_error']:.1e})"
        table.add_row(
            report["artifact"], alpha, str(report["samples"]), f"{report['agreement']:.2%}",
            f"{report['accuracy_reference']:.2%}", f"{report['accuracy_artifact']:.2%}",
            "inf" if diff is None else f"{diff:.2e}", report["regime"],
            result,
            style=None if report["passed"] else "red",
        )
    return table


def integrity_table(results: list[IntegrityResult]) -> Table:
    """sha256 check of every listed file; mismatches red."""
    table = Table(title="Integrity (sha256)")
    table.add_column("file")
    table.add_column("expected")
    table.add_column("found")
    table.add_column("result")
    for item in results:
        table.add_row(
            item.path, item.expected_sha256[:16], (item.actual_sha256 or "-")[:16], item.problem,
            style=None if item.ok else "red",
        )
    return table


def artifacts_table(manifest: dict[str, Any]) -> Table:
    """What a bundle holds: one row per artifact."""
    table = Table(title=f"Bundle artifacts ({manifest['target']['name']})")
    for column in ("file", "kind", "alphas", "size", "gzip", "sha256"):
        table.add_column(column, justify="right" if column in ("size", "gzip") else "left")
    for entry in manifest["artifacts"]:
        alphas = ", ".join(f"{a:g}" for a in entry["alphas"])
        if entry["kind"] in ALPHA_INPUT_KINDS:
            alphas = f"any in [{manifest['alpha_input']['min']:g}, {manifest['alpha_input']['max']:g}]"
        table.add_row(entry["path"], entry["kind"], alphas, human_bytes(entry["bytes"]),
                      human_bytes(entry["gzip_bytes"]), entry["sha256"][:16])
    return table


def integrity_summary(integrity: list[IntegrityResult]) -> str:
    """Every integrity failure in one sentence naming the files (the table has the digests)."""
    failures = [item for item in integrity if not item.ok]
    listed = "; ".join(f"{item.path}: {item.problem}" for item in failures[:5])
    more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
    return f"{len(failures)} of {len(integrity)} files do not match the manifest: {listed}{more}"
