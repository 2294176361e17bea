"""The ``lcs-export bench`` and ``lcs-export serve-demo`` commands (registered by ``lcs_export.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lcs_export.cli import Debug, _command_errors
from lcs_export.console import integrity_summary, integrity_table
from lcs_train.console import CHECK_FAILED, make_progress, output_console, print_error
from lcs_train.files import check_writable_output


def bench_command(
    bundles: Annotated[list[Path], typer.Argument(help="bundle directories written by lcs-export (one or more)")],
    json_path: Annotated[Path | None, typer.Option("--json", help="write the full report as JSON to this file")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="write a PNG of batch-1 latency and file size against alpha, per runtime")] = None,
    rounds: Annotated[int, typer.Option("--rounds", help="interleaved timing rounds per batch size")] = 10,
    burst: Annotated[int, typer.Option("--burst", help="calls per artifact per round")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed calls per artifact before timing")] = 3,
    repeats: Annotated[int, typer.Option("--repeats", help="opens / alpha switches timed per artifact")] = 5,
    memory: Annotated[bool, typer.Option(
        "--memory/--no-memory", help="measure peak memory (one child process per artifact and alpha)")] = True,
    debug: Debug = False,
) -> None:
    """Measure every artifact of BUNDLES: latency at batch 1 and 8 (median, p90), throughput, peak
    memory, file and gzip bytes, switch cost, non-zeros and FLOPs, with ratios to the level-0
    artifact. Every sha256 is checked first (exit 1 on a mismatch, before any timing)."""
    from lcs_export.bench import BenchSettings, bench_bundles
    from lcs_export.bench_report import bench_table, plot_report, report_dict, write_report

    console = output_console(False)
    if not console.is_terminal:
        console.width = max(console.width, 200)  # thirteen columns with ratios: wider than output_console's 120
    with _command_errors(debug):
        for path, option in ((json_path, "--json"), (plot, "--plot")):
            if path is not None:
                check_writable_output(path, option)
        settings = BenchSettings(rounds, burst, warmup, repeats, memory)
        with make_progress() as progress:
            results = bench_bundles(bundles, settings, progress)
        failed = [result for result in results if not result.integrity_ok]
        for result in failed:
            console.print(integrity_table(result.integrity))
        if failed:
            summary = "; ".join(f"{r.directory}: {integrity_summary(r.integrity)}" for r in failed)
            print_error(f"{summary}. Nothing was timed; fix: copy the bundle again or re-export it",
                        "integrity check failed")
            raise typer.Exit(CHECK_FAILED)
        for result in results:
            console.print(bench_table(result))
        report = report_dict(results, vars(settings))
        for path, write in ((json_path, lambda p: write_report(p, report)), (plot, lambda p: plot_report(results, p))):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write(path)
                console.print(f"wrote {path}", highlight=False)
