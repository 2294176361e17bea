"""The ``lcs-export bench`` and ``lcs-export serve-demo`` commands (registered by ``lcs_export.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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


def serve_demo_command(
    bundle: Annotated[Path, typer.Argument(help="bundle directory with level files (lcs-export ... --levels)")],
    budget_ms: Annotated[float | None, typer.Option(
        "--budget-ms", help="latency budget per call in ms (above 0); the policy moves to cheaper levels over it",
        show_default="no budget")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", help="stop after this many seconds", show_default="until Ctrl-C")] = None,
    trace: Annotated[Path | None, typer.Option(
        "--trace", help="write the trace (time, level, latency, signals, reason) as JSON to this file")] = None,
    load_cpu: Annotated[int, typer.Option(
        "--load-cpu", help="start this many busy processes (as python -m lcs_export.cpu_load) to load the CPUs",
        min=0)] = 0,
    load_after: Annotated[float, typer.Option(
        "--load-after", help="seconds to wait before starting --load-cpu", min=0)] = 0.0,
    load_thresholds: Annotated[str, typer.Option(
        "--load-thresholds", help="1-minute load average per CPU from which the host counts as thermal fair, "
                                  "serious, critical")] = "1,1.5,3",
    batch: Annotated[int, typer.Option("--batch", help="images per call", min=1)] = 1,
    debug: Debug = False,
) -> None:
    """Run BUNDLE with the adaptive runtime: the shared level policy picks the level from this
    host's load average, battery (psutil, where present) and recent latency against --budget-ms;
    shows level, latency and throughput live. Every sha256 is checked first (exit 1)."""
    from lcs_export.host_signals import LoadThresholds
    from lcs_export.runtime import AdaptiveRuntime, IntegrityError, check_budget
    from lcs_train.errors import LcsError

    console = output_console(False)
    with _command_errors(debug):
        check_budget(budget_ms)
        if duration is not None and not duration > 0:
            raise LcsError(f"--duration {duration:g} is not above 0", "give a number of seconds, e.g. --duration 30")
        thresholds = LoadThresholds.parse(load_thresholds)
        if trace is not None:
            check_writable_output(trace, "--trace")
        settings = {"budget_ms": budget_ms, "duration_s": duration, "batch": batch, "load_cpu": load_cpu,
                    "load_after_s": load_after, "load_thresholds": vars(thresholds)}
        try:
            with AdaptiveRuntime(bundle, budget_ms=budget_ms, thresholds=thresholds) as runtime:
                _serve_with_load(runtime, console, duration, batch, load_cpu, load_after, trace, settings)
        except IntegrityError as error:
            print_error(f"{error}. Nothing was run; fix: copy the bundle again or re-export it",
                        "integrity check failed")
            raise typer.Exit(CHECK_FAILED) from None


def _serve_with_load(runtime: Any, console: Any, duration: float | None, batch: int, load_cpu: int,
                     load_after: float, trace_path: Path | None, settings: dict[str, Any]) -> None:
    """serve-demo's run: the busy processes (if any) on a timer, the live display, the trace
    written at the end, also after Ctrl-C (then exit 130 saying so)."""
    import threading
    import time

    from lcs_export.cpu_load import start_load, stop_load
    from lcs_export.serve_demo import Trace, serve, trace_report
    from lcs_train.console import interrupted
    from lcs_train.files import write_json_atomic

    load: list[Any] = []
    seconds = (duration - load_after) if duration is not None else 24 * 3600.0
    timer = threading.Timer(load_after, lambda: load.extend(start_load(load_cpu, max(seconds, 0.1))))
    note = f"; {load_cpu} busy processes from {load_after:g} s" if load_cpu else ""
    trace = Trace(time.monotonic())
    stopped = False
    try:
        if load_cpu:
            timer.start()
        serve(runtime, trace, console, duration, batch, note)
    except KeyboardInterrupt:
        stopped = True
    finally:
        timer.cancel()
        stop_load(load)
    if trace_path is not None:
        trace_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trace_path, trace_report(runtime, trace, settings))
    if stopped:
        interrupted(f"the trace so far is in {trace_path}" if trace_path is not None else "")
    if trace_path is not None:
        console.print(f"wrote {trace_path}", highlight=False)
