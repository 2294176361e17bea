"""``lcs-export bench`` output: a rich table per bundle, the JSON report and the PNG plot."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.table import Table

from lcs_export.bench import BundleBench
from lcs_export.console import count_text, human_bytes
from lcs_train.console import deferred_interrupts
from lcs_train.files import atomic_write_bytes, write_json_atomic

#: What the JSON's fields mean (units and definitions), written into the report.
FIELDS = {
    "latency_b{1,8}_{median,p90}_ms": "milliseconds per call at batch 1 / 8, after a warm-up, from interleaved bursts",
    "throughput_b{1,8}_per_s": "images per second at batch 1 / 8 (batch / median latency)",
    "peak_memory_bytes": "peak resident memory added by loading the artifact and running it at batch 8, in a "
                         "fresh child process that had only imported the runtimes (ru_maxrss after minus before)",
    "file_bytes, gzip_bytes": "the artifact's files as listed in the manifest (sha256-checked), plain and gzipped",
    "switch_ms": "extra time of the first call after moving here: open file = load + first call, switch once / "
                 "alpha per call = first call at this alpha after another alpha; minus the steady batch-1 median",
    "per_call_over_level_ms": "alpha graphs: batch-1 median minus the level file's at the same alpha",
    "nonzeros, flops, nonzero_flops": "from the manifest's level at this alpha (lcs_train/cost.py)",
    "ratios": "each figure over the same figure of the bundle's level-0 artifact (the baseline)",
}


def _with_ratio(text: str, ratio: float | None) -> str:
    return text if ratio is None else f"{text} [dim]({ratio:.2f}x)[/dim]"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _short(row: dict[str, Any]) -> str:
    """The switch-once pair by its predict file: the table has no room for both names."""
    paths = row["artifacts"]
    return paths[-1] + " (+ weights)" if len(paths) > 1 else paths[0]


def bench_table(result: BundleBench) -> Table:
    """One row per case: absolute figures, each with its ratio to the baseline beside it."""
    table = Table(title=f"bench: {result.directory} ({result.runtime}); ratios to {result.rows[0]['baseline']}")
    columns = ("artifact", "alpha", "b1 ms", "b1 p90", "b8 ms", "b8 p90", "img/s b8", "peak mem", "file", "gzip",
               "switch ms", "nonzeros", "nz FLOPs")
    names = [_short(row) for row in result.rows]
    table.add_column(columns[0], min_width=max(map(len, names), default=8))  # names whole: others wrap first
    for column in columns[1:]:
        table.add_column(column, justify="right")
    for row in result.rows:
        r = row["ratios"]
        memory = row["peak_memory_bytes"]
        table.add_row(
            _short(row), f"{row['alpha']:g}",
            _with_ratio(_ms(row["latency_b1_median_ms"]), r["latency_b1"]), _ms(row["latency_b1_p90_ms"]),
            _with_ratio(_ms(row["latency_b8_median_ms"]), r["latency_b8"]), _ms(row["latency_b8_p90_ms"]),
            _with_ratio(f"{row['throughput_b8_per_s']:.0f}", r["throughput_b8"]),
            _with_ratio("-" if memory is None else human_bytes(memory), r["peak_memory"]),
            _with_ratio(human_bytes(row["file_bytes"]), r["file_bytes"]),
            _with_ratio(human_bytes(row["gzip_bytes"]), r["gzip_bytes"]),
            f"{_ms(row['switch_ms'])} ({row['switch_how']})",
            _with_ratio("-" if row["nonzeros"] is None else count_text(row["nonzeros"]), r["nonzeros"]),
            _with_ratio("-" if row["nonzero_flops"] is None else count_text(row["nonzero_flops"]), r["nonzero_flops"]),
        )
    return table


def report_dict(results: list[BundleBench], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: settings, field meanings and every bundle's rows."""
    return {"settings": settings, "fields": FIELDS, "bundles": [result.to_dict() for result in results]}


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON report atomically."""
    write_json_atomic(path, report)


def _series(results: list[BundleBench]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by (runtime, artifact kind, files): one line on the plot each."""
    series: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        for row in result.rows:
            name = {"open file": "level files", "switch once": "switch-once pair"}.get(row["switch_how"], row["kind"])
            series.setdefault(f"{result.target}: {name}", []).append(row)
    return series


def plot_report(results: list[BundleBench], path: Path) -> None:
    """Batch-1 latency, and file and gzip size, against alpha, one line per runtime and kind of
    artifact, each point labelled with its ratio to its bundle's level-0 artifact."""
    with deferred_interrupts():  # as lcs_train.evaluate: a Ctrl-C inside matplotlib's imports
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    figure, (latency_axis, size_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in _series(results).items():
        rows = sorted(rows, key=lambda row: row["alpha"])
        alphas = [row["alpha"] for row in rows]
        for axis, key, ratio, scale, style, label in (
                (latency_axis, "latency_b1_median_ms", "latency_b1", 1.0, "o-", name),
                (size_axis, "file_bytes", "file_bytes", 1e-6, "o-", f"{name}, file"),
                (size_axis, "gzip_bytes", "gzip_bytes", 1e-6, "s--", f"{name}, gzip")):
            values = [row[key] * scale for row in rows]
            axis.plot(alphas, values, style, label=label)
            for alpha, value, row in zip(alphas, values, rows):
                if row["ratios"][ratio] is not None:
                    axis.annotate(f"{row['ratios'][ratio]:.2f}x", (alpha, value), textcoords="offset points",
                                  xytext=(3, 4), fontsize=7)
    latency_axis.set_ylabel("batch-1 latency, median (ms)")
    size_axis.set_ylabel("size (MB): file, and gzipped (dashed)")
    for axis in (latency_axis, size_axis):
        axis.set_xlabel("alpha (0 = most accurate)")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    size_axis.legend(fontsize=7)
    figure.suptitle("lcs-export bench (labels: ratio to the level-0 artifact of the same runtime)", fontsize=9)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, image.getvalue())
