"""The ``lcs-export`` command line.

One export command per registered target (``lcs-export onnx``, ``lcs-export coreml``, ...),
generated from ``targets.TARGETS``: adding a target adds its command. A target's own options
come from its class attribute ``cli_options`` (a list of ``TargetOption`` or dicts with the
same fields); ``KNOWN_TARGET_OPTIONS`` covers the built-in targets that do not declare them,
and ``--option KEY=VALUE`` passes anything else into the target's options dict.

Exit codes: 0 success, 1 a check failed (parity, sha256), 2 a user error.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from lcs_export.console import (
    CHECK_FAILED, artifacts_table, error_console, failure_lines, integrity_table, make_progress, output_console,
    parity_table, print_json,
)
from lcs_export.export import DEFAULT_SAMPLE_INPUTS, ExportRequest, export_bundle
from lcs_export.inspect_bundle import inspect_bundle, levels_table, render_inspection
from lcs_export.parity import Tolerances
from lcs_export.validate import ValidationResult, validate_bundle
from lcs_train.console import reported_user_errors as user_errors
from lcs_train.errors import LcsError


@dataclass(frozen=True)
class TargetOption:
    """A target-specific CLI option, stored under ``name`` in the target's options dict."""

    name: str
    type: type
    default: Any = None
    help: str = ""


KNOWN_TARGET_OPTIONS: dict[str, list[TargetOption]] = {
    "onnx": [TargetOption("opset", int, None, "ONNX opset to export with (default: the target's)")],
    "coreml": [
        TargetOption("minimum_target", str, None, "minimum deployment target, e.g. iOS17 or iOS18"),
        TargetOption("compute_precision", str, None, "float32 or float16"),
        TargetOption("multifunction", bool, False, "also write one multifunction .mlpackage holding every level"),
    ],
}


def target_options(target_class: type) -> list[TargetOption]:
    """The CLI options a target takes: its own ``cli_options``, else the known ones."""
    declared = getattr(target_class, "cli_options", None)
    if declared is None:
        return KNOWN_TARGET_OPTIONS.get(target_class.name, [])
    return [item if isinstance(item, TargetOption) else TargetOption(**item) for item in declared]


def parse_option_pairs(pairs: list[str]) -> dict[str, Any]:
    """``["opset=18", "note=x"]`` -> ``{"opset": 18, "note": "x"}`` (values read as JSON when they parse)."""
    options = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.strip():
            raise LcsError(f"--option {pair!r} is not KEY=VALUE", "write it as --option opset=18")
        try:
            options[key.strip()] = json.loads(text)
        except ValueError:
            options[key.strip()] = text
    return options


# Options every command that checks parity shares.
Data = Annotated[str | None, typer.Option(
    "--data", help="held-out data for parity: a dataset name (mnist, digits, cifar10) or a data directory "
                   "[default: the checkpoint's]")]
Samples = Annotated[int | None, typer.Option(
    "--samples", help="check parity on the first N held-out images [default: all]", min=1)]
MinAgreement = Annotated[float, typer.Option(
    "--min-agreement", help="float levels: minimum top-1 agreement with PyTorch (fraction)")]
MaxLogitDiff = Annotated[float, typer.Option(
    "--max-logit-diff", help="float levels: maximum |logit difference| from PyTorch")]
MinAgreementQuantized = Annotated[float, typer.Option(
    "--min-agreement-quantized", help="quantized levels: minimum top-1 agreement with PyTorch (fraction)")]
MaxAccuracyDrop = Annotated[float, typer.Option(
    "--max-accuracy-drop", help="quantized levels: maximum accuracy difference from PyTorch (fraction; 0.005 = 0.5 points)")]
JsonOutput = Annotated[bool, typer.Option("--json", help="also print the results as JSON on stdout (tables go to stderr)")]
Debug = Annotated[bool, typer.Option("--debug", help="show tracebacks for user errors")]

_DEFAULTS = Tolerances()


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _tolerance_parameters() -> list[inspect.Parameter]:
    return [
        _keyword("min_agreement", MinAgreement, _DEFAULTS.float_agreement),
        _keyword("max_logit_diff", MaxLogitDiff, _DEFAULTS.float_max_logit_diff),
        _keyword("min_agreement_quantized", MinAgreementQuantized, _DEFAULTS.quantized_agreement),
        _keyword("max_accuracy_drop", MaxAccuracyDrop, _DEFAULTS.quantized_accuracy_drop),
    ]


def _tolerances(values: dict[str, Any]) -> Tolerances:
    return Tolerances(values["min_agreement"], values["max_logit_diff"],
                      values["min_agreement_quantized"], values["max_accuracy_drop"])


def _export_parameters(options: list[TargetOption]) -> list[inspect.Parameter]:
    parameters = [
        inspect.Parameter("checkpoint", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[
            Path, typer.Argument(help="subspace checkpoint written by lcs-train (.safetensors)")]),
        _keyword("out", Annotated[Path, typer.Option("--out", "-o", help="bundle directory to write")], ...),
        _keyword("levels", Annotated[str | None, typer.Option(
            "--levels", help="comma-separated alphas to export as fixed levels, ascending, e.g. 0.0,0.5,0.9")], None),
        _keyword("dynamic_alpha", Annotated[bool, typer.Option(
            "--dynamic-alpha", help="also export the graph that takes alpha (float32 [1]) as an input")], False),
        _keyword("force", Annotated[bool, typer.Option(
            "--force", help="replace --out if it is an existing lcs bundle (never any other directory)")], False),
        _keyword("no_validate", Annotated[bool, typer.Option(
            "--no-validate", help="skip the parity check after export")], False),
        _keyword("data", Data, None),
        _keyword("samples", Samples, None),
        _keyword("sample_inputs", Annotated[int, typer.Option(
            "--sample-inputs", help="held-out images embedded in the manifest for apps to self-test", min=0)],
            DEFAULT_SAMPLE_INPUTS),
        *_tolerance_parameters(),
        _keyword("option", Annotated[list[str] | None, typer.Option(
            "--option", help="extra target option KEY=VALUE (repeatable)")], None),
    ]
    for option in options:
        flag = "--" + option.name.replace("_", "-")
        parameters.append(_keyword(f"target_{option.name}", Annotated[
            option.type if option.type is bool else option.type | None, typer.Option(flag, help=option.help)],
            option.default))
    return [*parameters, _keyword("json_output", JsonOutput, False), _keyword("debug", Debug, False)]


def _make_export_command(target_name: str, options: list[TargetOption]) -> Any:
    """A Typer command function for one target, with its own options in its signature."""

    def command(**values: Any) -> None:
        run_export(target_name, options, values)

    parameters = _export_parameters(options)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__name__ = target_name.replace("-", "_")
    command.__doc__ = (
        f"Export a subspace checkpoint as a {target_name} bundle: fixed levels (--levels) and/or the "
        "alpha-input graph (--dynamic-alpha), then check parity with PyTorch."
    )
    return command


def run_export(target_name: str, options: list[TargetOption], values: dict[str, Any]) -> None:
    """Body of every ``lcs-export <target>`` command."""
    console = output_console(values["json_output"])
    with user_errors(values["debug"]):
        target_values = parse_option_pairs(values["option"] or [])
        for option in options:
            value = values[f"target_{option.name}"]
            if value is not None and not (option.type is bool and value is False):
                target_values[option.name] = value
        request = ExportRequest(
            target=target_name, checkpoint=values["checkpoint"], output=values["out"], levels=values["levels"],
            dynamic_alpha=values["dynamic_alpha"], options=target_values, force=values["force"],
            validate=not values["no_validate"], data=values["data"], samples=values["samples"],
            sample_inputs=values["sample_inputs"], tolerances=_tolerances(values),
        )
        with make_progress(error_console) as progress:
            result = export_bundle(request, progress)
    manifest = result.manifest
    if manifest["levels"]:
        console.print(levels_table(manifest))
    console.print(artifacts_table(manifest))
    console.print(f"wrote {result.directory}/manifest.json", highlight=False)
    if values["json_output"]:
        print_json(manifest)
    if result.validation is not None:
        _finish_validation(result.validation, console)


def _finish_validation(result: ValidationResult, console: Any) -> None:
    """Print the parity (or integrity) outcome and exit 1 on any failure."""
    if not result.integrity_ok:
        console.print(integrity_table(result.integrity))
        for line in failure_lines(result.integrity):
            error_console.print(f"[bold red]error:[/bold red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(CHECK_FAILED)
    console.print(parity_table(result.reports))
    failed = sum(not r.passed for r in result.reports)
    if failed:
        error_console.print(
            f"[bold red]parity failed:[/bold red] {failed} of {len(result.reports)} checks "
            "(details in parity.json)", highlight=False)
        raise typer.Exit(CHECK_FAILED)
    console.print(f"[green]parity passed[/green]: {len(result.reports)} checks", highlight=False)


def validate_command(
    directory: Annotated[Path, typer.Argument(help="bundle directory written by lcs-export")],
    data: Data = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="source checkpoint, if it moved since export [default: the path in the manifest]")] = None,
    samples: Samples = None,
    min_agreement: MinAgreement = _DEFAULTS.float_agreement,
    max_logit_diff: MaxLogitDiff = _DEFAULTS.float_max_logit_diff,
    min_agreement_quantized: MinAgreementQuantized = _DEFAULTS.quantized_agreement,
    max_accuracy_drop: MaxAccuracyDrop = _DEFAULTS.quantized_accuracy_drop,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Check every sha256, then every artifact against PyTorch on held-out data; results go
    into the manifest and parity.json. Exit 1 when any check fails."""
    console = output_console(json_output)
    tolerances = Tolerances(min_agreement, max_logit_diff, min_agreement_quantized, max_accuracy_drop)
    with user_errors(debug):
        with make_progress(error_console) as progress:
            result = validate_bundle(directory, data=data, checkpoint=checkpoint, samples=samples,
                                     tolerances=tolerances, progress=progress)
    if json_output:
        print_json({
            "directory": str(directory), "passed": result.passed,
            "integrity": [{"path": i.path, "ok": i.ok, "problem": i.problem} for i in result.integrity],
            "validation": result.manifest.get("validation"), "reports": [r.to_dict() for r in result.reports],
        })
    _finish_validation(result, console)


def inspect_command(
    directory: Annotated[Path, typer.Argument(help="bundle directory written by lcs-export")],
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Show a bundle's manifest as tables and check every sha256 (exit 1 on a mismatch)."""
    console = output_console(json_output)
    with user_errors(debug):
        inspection = inspect_bundle(directory)
    render_inspection(inspection, console)
    if json_output:
        print_json(inspection.to_dict())
    if not inspection.ok:
        for line in failure_lines(inspection.integrity):
            error_console.print(f"[bold red]error:[/bold red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(CHECK_FAILED)


def app_command(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by lcs-export")],
    platform: Annotated[str, typer.Option("--platform", help="web (ONNX bundle), android (ONNX) or ios (Core ML)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory to write the app into")],
    serve: Annotated[bool, typer.Option("--serve", help="web: serve the app on 127.0.0.1 until Ctrl-C")] = False,
    port: Annotated[int, typer.Option("--port", help="port for --serve (0: any free port)", min=0, max=65535)] = 8000,
    force: Annotated[bool, typer.Option("--force", help="replace --out if lcs-export app wrote it")] = False,
    debug: Debug = False,
) -> None:
    """Lay out a sample app (web, android or ios) with the bundle wired in, after checking the
    bundle (schema, target, every sha256); --serve serves the web app locally."""
    from lcs_export.app import IntegrityFailure, build_app_directory, make_server

    console = output_console(False)
    with user_errors(debug):
        if serve and platform != "web":
            raise LcsError(f"--serve serves the web app, not {platform}", "drop --serve, or pass --platform web")
        # Bind first: a busy port is refused before anything is written.
        server = make_server(out, port) if serve else None
        try:
            result = build_app_directory(bundle, platform, out, force)
        except BaseException as error:
            if server is not None:
                server.server_close()
            if not isinstance(error, IntegrityFailure):
                raise
            for line in failure_lines(error.failures):
                error_console.print(f"[bold red]error:[/bold red] {error.bundle}/{line}", highlight=False, soft_wrap=True)
            error_console.print(f"[dim]Fix: copy the bundle again or re-export it; {out} was not written[/dim]",
                                highlight=False)
            raise typer.Exit(CHECK_FAILED) from None
    console.print(f"wrote the {platform} app with its bundle to {result.directory} "
                  f"({result.files} files; bundle in {result.bundle_place}/)", highlight=False)
    if server is None:
        for step in result.next_steps:
            console.print(f"  next: {step}", highlight=False, soft_wrap=True)
    else:
        host, bound_port = server.server_address[:2]
        console.print(f"serving {result.directory} at http://{host}:{bound_port}/ (Ctrl-C stops)", highlight=False)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def build_app() -> typer.Typer:
    """The Typer app, with one export command per target registered now."""
    import targets

    app = typer.Typer(
        name="lcs-export", no_args_is_help=True, add_completion=False,
        help="Export an LCS compressible subspace to deployable, parity-checked bundles.",
    )
    for name in sorted(targets.TARGETS):
        command = _make_export_command(name, target_options(targets.TARGETS[name]))
        app.command(name, help=command.__doc__)(command)
    app.command("validate")(validate_command)
    app.command("inspect")(inspect_command)
    app.command("app")(app_command)
    return app


def main() -> None:
    """Entry point of the ``lcs-export`` script."""
    build_app()()


if __name__ == "__main__":
    main()
