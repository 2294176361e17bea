"""``lcs-export inspect``: a bundle's manifest as readable tables, with every sha256 checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lcs_export.atomic import BundleLock
from lcs_export.bundle import IntegrityResult, check_integrity
from lcs_export.console import artifacts_table, compression_text, count_text, human_bytes, integrity_table
from lcs_export.manifest import read_manifest


@dataclass
class Inspection:
    """A bundle's manifest and the integrity of its files."""

    directory: Path
    manifest: dict[str, Any]
    integrity: list[IntegrityResult]

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.integrity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory), "ok": self.ok, "manifest": self.manifest,
            "integrity": [{"path": i.path, "expected_sha256": i.expected_sha256, "actual_sha256": i.actual_sha256,
                           "ok": i.ok} for i in self.integrity],
        }


def inspect_bundle(directory: Path) -> Inspection:
    """Read (schema-checked) and verify a bundle; runs nothing, writes nothing.

    Holds the bundle's lock shared, so an export replacing the bundle meanwhile waits (or is
    refused) rather than swapping files under the check.
    """
    directory = Path(directory)
    with BundleLock(directory, exclusive=False):
        manifest = read_manifest(directory)
        return Inspection(directory, manifest, check_integrity(directory, manifest))


def overview_table(manifest: dict[str, Any]) -> Table:
    """Where the bundle came from and how to feed it."""
    source, spec, alpha = manifest["source"], manifest["input"], manifest["alpha_input"]
    validation = manifest["validation"]
    table = Table(title="lcs bundle", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("format", f"{manifest['format']} v{manifest['manifest_version']}, created {manifest['created_at']}"),
        ("target", f"{manifest['target']['name']} ({manifest['target']['runtime']})"),
        ("options", ", ".join(f"{k}={v}" for k, v in manifest["target"]["options"].items()) or "-"),
        ("checkpoint", f"{source['checkpoint']['path']} (sha256 {source['checkpoint']['sha256'][:16]})"),
        ("subspace", f"{source['model']['name']}, {source['method']['name']}, {source['shape']}, "
                     f"alpha in [{source['alpha']['min']:g}, {source['alpha']['max']:g}]"),
        ("input", f"{spec['name']} {spec['dtype']} {spec['shape']} {spec['layout']}; "
                  f"{spec.get('formula', 'x * pixel_scale, - mean, / std')}"),
        ("alpha input", f"{alpha['name']} {alpha['dtype']} {alpha['shape']}, clamped to [{alpha['min']:g}, {alpha['max']:g}]"),
        ("classes", ", ".join(source["classes"])),
        ("samples", f"{len(manifest['samples']['labels'])} held-out images with PyTorch logits"),
        ("validation", validation["status"] + (f" ({validation.get('failed', 0)} of {validation.get('checks', 0)} "
                                               f"checks failed, {validation.get('checked_at', '')})"
                                               if validation["status"] != "not_run" else "")),
    ]
    for field, value in rows:
        table.add_row(field, value, style="red" if field == "validation" and validation["status"] == "failed" else None)
    return table


def levels_table(manifest: dict[str, Any]) -> Table:
    """One row per level: compression, cost, file and parity outcome."""
    table = Table(title="Levels")
    for column in ("alpha", "compression", "params", "nonzeros", "FLOPs", "file", "size", "gzip", "parity"):
        table.add_column(column, justify="right" if column not in ("compression", "file", "parity") else "left")
    for level in manifest["levels"]:
        parity = level["parity"]
        outcome = "not run" if not parity else ("pass" if all(r["passed"] for r in parity) else "FAIL")
        table.add_row(
            f"{level['alpha']:g}", compression_text(level["compression"]), count_text(level["parameters"]),
            count_text(level["nonzeros"]), count_text(level["flops"]), level["path"], human_bytes(level["bytes"]),
            human_bytes(level["gzip_bytes"]), outcome, style="red" if outcome == "FAIL" else None,
        )
    return table


def render_inspection(inspection: Inspection, console: Console) -> None:
    """Print the overview, levels, artifacts and integrity tables."""
    console.print(overview_table(inspection.manifest))
    if inspection.manifest["levels"]:
        console.print(levels_table(inspection.manifest))
    console.print(artifacts_table(inspection.manifest))
    for entry in inspection.manifest["artifacts"]:
        if entry["usage"] and entry["kind"] != "level":
            console.print(f"[bold]{entry['path']}[/bold]: {entry['usage']}", highlight=False)
    console.print(integrity_table(inspection.integrity))
