"""The ``lcs-export`` command line.

One export command per registered target (``lcs-export onnx``, ``lcs-export coreml``, ...),
generated from ``targets.TARGETS``: adding a target adds its command. A target's own flags
come from its ``Options`` dataclass (the fields whose metadata says ``flag``; see
``targets.base.option``); ``--option KEY=VALUE`` gives any option, declared or not.

Exit codes: 0 success, 1 a check failed (parity, sha256), 2 a user error (one line on
stderr naming the input and the fix, also for a bad option and for a file-system error such
as a read-only output), 130 interrupted (Ctrl-C; one line saying what was left at the output).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

import targets
from lcs_export.atomic import InterruptedAfterCommit
from lcs_export.console import artifacts_table, integrity_summary, integrity_table, parity_table
from lcs_export.export import DEFAULT_SAMPLE_INPUTS, ExportRequest, export_bundle
from lcs_export.inspect_bundle import inspect_bundle, levels_table, render_inspection
from lcs_export.parity import Tolerances
from lcs_export.validate import ValidationResult, validate_bundle
from lcs_train.console import (
    CHECK_FAILED, exit_quietly, fail, interrupted, make_progress, output_console, print_error, print_json, run_app,
)
from lcs_train.console import reported_user_errors as user_errors
from lcs_train.errors import LcsError
from targets.base import OptionSpec, Target, option_specs


def target_flags(target_class: type[Target]) -> list[OptionSpec]:
    """The options of a target that get a flag of their own (``--opset``, ``--multifunction``)."""
    return [spec for spec in option_specs(target_class.Options) if spec.flag]


def parse_option_pairs(pairs: list[str], declared: list[OptionSpec] | None = None) -> dict[str, Any]:
    """``["opset=18", "note=x"]`` -> ``{"opset": 18, "note": "x"}`` (values read as JSON when they parse).

    A key the target declares as an option must hold a value of the declared type
    (``--option opset=abc`` is refused like ``--opset abc``).
    """
    types = {option.name: option.type for option in declared or []}
    options = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        key = key.strip()
        if not separator or not key:
            raise LcsError(f"--option {pair!r} is not KEY=VALUE", "write it as --option opset=18")
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except ValueError:
            value = text
        if key in types:
            value = _typed(value, types[key], f"--option {key}={text}")
        options[key] = value
    return options


def _refuse_constant(text: str) -> Any:
    raise ValueError(text)


def _typed(value: Any, kind: type, given: str) -> Any:
    """``value`` as ``kind`` (bool, int, float or str); a user error when it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise LcsError(f"{given} is not true or false", "write true or false")
    if kind in (int, float):
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int:
            number_ok = number_ok and float(value).is_integer()
        if not number_ok or not math.isfinite(value):
            raise LcsError(f"{given} is not {'a whole number' if kind is int else 'a finite number'}",
                           "give a number")
        return kind(value)
    return str(value)


# Options every command that checks parity shares.
# Defaults that are not values are given as show_default text: "[default: ...]" inside a help
# string is read as rich markup by Typer and vanishes (it left "images ." behind).
Data = Annotated[str | None, typer.Option(
    "--data", help="held-out data for parity: a dataset name (mnist, digits, cifar10) or a data directory",
    show_default="the checkpoint's")]
Samples = Annotated[int | None, typer.Option(
    "--samples", help="check parity on the first N held-out images", min=1, show_default="all")]
MinAgreement = Annotated[float, typer.Option(
    "--min-agreement", help="float levels: minimum top-1 agreement with PyTorch (fraction)")]
MaxLogitDiff = Annotated[float, typer.Option(
    "--max-logit-diff", help="float levels: maximum |logit difference| from PyTorch (raised by --float-error-factor where PyTorch's own float32 error is larger)")]
FloatErrorFactor = Annotated[float, typer.Option(
    "--float-error-factor", help="float levels: where a difference is over --max-logit-diff, allow this many times PyTorch's own float32 error (against float64) on the images that differ most; 0 keeps --max-logit-diff fixed")]
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
        _keyword("float_error_factor", FloatErrorFactor, _DEFAULTS.float_error_factor),
        _keyword("min_agreement_quantized", MinAgreementQuantized, _DEFAULTS.quantized_agreement),
        _keyword("max_accuracy_drop", MaxAccuracyDrop, _DEFAULTS.quantized_accuracy_drop),
    ]


#: The numeric tolerance options: (flag, lowest, highest). Every one must be finite.
_TOLERANCE_RANGES = {
    "min_agreement": ("--min-agreement", 0.0, 1.0),
    "max_logit_diff": ("--max-logit-diff", 0.0, math.inf),
    "float_error_factor": ("--float-error-factor", 0.0, math.inf),
    "min_agreement_quantized": ("--min-agreement-quantized", 0.0, 1.0),
    "max_accuracy_drop": ("--max-accuracy-drop", 0.0, 1.0),
}


def _tolerances(values: dict[str, Any]) -> Tolerances:
    """The tolerance options, each refused unless finite and in its range (NaN compares false
    with everything, so a NaN threshold would pass or fail every check silently)."""
    for name, (flag, low, high) in _TOLERANCE_RANGES.items():
        value = values[name]
        if not math.isfinite(value) or not low <= value <= high:
            bound = f"between {low:g} and {high:g}" if math.isfinite(high) else f"a finite number >= {low:g}"
            raise LcsError(f"{flag} {value:g} is out of range", f"give {flag} {bound}")
    return Tolerances(values["min_agreement"], values["max_logit_diff"],
                      values["min_agreement_quantized"], values["max_accuracy_drop"], values["float_error_factor"])


def _export_parameters(options: list[OptionSpec]) -> list[inspect.Parameter]:
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
            False if option.type is bool else None))
    return [*parameters, _keyword("json_output", JsonOutput, False), _keyword("debug", Debug, False)]


def _make_export_command(target_name: str, options: list[OptionSpec]) -> Any:
    """A Typer command function for one target, with its own options in its signature."""

    def command(**values: Any) -> None:
        run_export(target_name, options, values)

    parameters = _export_parameters(options)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__name__ = target_name.replace("-", "_")
    command.__doc__ = (
        f"Export a subspace checkpoint as {bundle_noun(target_name)}: fixed levels (--levels) and/or the "
        "alpha-input graph (--dynamic-alpha), then check parity with PyTorch."
    )
    return command


#: How help texts name the built-in targets.
DISPLAY_NAMES = {"onnx": "ONNX", "coreml": "Core ML", "torchscript-lite": "TorchScript Lite", "executorch": "ExecuTorch"}


def bundle_noun(target_name: str) -> str:
    """'an ONNX bundle', 'a Core ML bundle': the target's display name with its article."""
    name = DISPLAY_NAMES.get(target_name, target_name)
    # Spoken letter names: "an ONNX", "an MLX", but "a TorchScript", "a Core ML".
    vowel_sound = name[0].lower() in "aeio" or (name.isupper() and name[0] in "FHLMNRSX")
    return f"{'an' if vowel_sound else 'a'} {name} bundle"


@contextmanager
def _command_errors(debug: bool, output: Path | None = None) -> Iterator[None]:
    """What every lcs-export command reports the same way, inside ``reported_user_errors``:

    - a file-system error (read-only, no space, permission) is the user's to fix: one line,
      exit 2, never a traceback;
    - Ctrl-C: one line saying what is at the output (``output``), exit 130.
    """
    with user_errors(debug):
        try:
            yield
        except InterruptedAfterCommit:
            interrupted(f"the new bundle at {output} is complete")
        except KeyboardInterrupt:
            interrupted(f"nothing written at {output}" if output is not None else "")
        except OSError as error:
            if debug:
                raise
            place = f" ({error.filename})" if error.filename else ""
            raise LcsError(f"file-system error: {error.strerror or type(error).__name__}{place}",
                           "check that the path exists, is writable and its disk has space") from None


def run_export(target_name: str, options: list[OptionSpec], values: dict[str, Any]) -> None:
    """Body of every ``lcs-export <target>`` command."""
    console = output_console(values["json_output"])
    with _command_errors(values["debug"], values["out"]):
        target_values = parse_option_pairs(values["option"] or [], options)
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
        with make_progress() as progress:
            result = export_bundle(request, progress)
    manifest = result.manifest
    if result.installed:
        if manifest["levels"]:
            console.print(levels_table(manifest))
        console.print(artifacts_table(manifest))
        console.print(f"wrote {result.directory}/manifest.json", highlight=False)
        if values["json_output"]:
            print_json(manifest)
    if result.validation is not None:
        _finish_validation(result.validation, console, None if result.installed else result.directory)


def _finish_validation(result: ValidationResult, console: Any, discarded: Path | None = None) -> None:
    """Print the parity (or integrity) outcome, then exactly one error line and exit 1 on any
    failure. ``discarded``: the output an export left as it was, because this failed."""
    note, details = "", "details in parity.json"
    if discarded is not None:
        note = f"; nothing written at {discarded} (run with --no-validate to keep the bundle, then validate it)"
        details = "details above"
    if not result.integrity_ok:
        console.print(integrity_table(result.integrity))
        print_error(integrity_summary(result.integrity) + note, "integrity check failed")
        raise typer.Exit(CHECK_FAILED)
    console.print(parity_table(result.reports))
    failed = sum(not r.passed for r in result.reports)
    unrecorded = ""
    if result.record_error is not None:
        unrecorded = (f"; results not recorded in the bundle ({result.record_error}), "
                      f"written to {result.results_path} instead")
    if failed:
        print_error(f"{failed} of {len(result.reports)} checks ({details}){note}{unrecorded}", "parity failed")
        raise typer.Exit(CHECK_FAILED)
    if result.record_error is not None:
        fail(LcsError(f"parity passed ({len(result.reports)} checks) but the results could not be recorded in the "
                      f"bundle: {result.record_error}; they were written to {result.results_path}",
                      "validate a writable copy to record them in it"))
    console.print(f"[green]parity passed[/green]: {len(result.reports)} checks", highlight=False)


def validate_command(
    directory: Annotated[Path, typer.Argument(help="bundle directory written by lcs-export")],
    data: Data = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="source checkpoint, if it moved since export",
        show_default="the path in the manifest")] = None,
    samples: Samples = None,
    min_agreement: MinAgreement = _DEFAULTS.float_agreement,
    max_logit_diff: MaxLogitDiff = _DEFAULTS.float_max_logit_diff,
    float_error_factor: FloatErrorFactor = _DEFAULTS.float_error_factor,
    min_agreement_quantized: MinAgreementQuantized = _DEFAULTS.quantized_agreement,
    max_accuracy_drop: MaxAccuracyDrop = _DEFAULTS.quantized_accuracy_drop,
    json_output: JsonOutput = False,
    debug: Debug = False,
) -> None:
    """Check every sha256, then every artifact against PyTorch on held-out data; results go
    into the manifest and parity.json. Exit 1 when any check fails."""
    console = output_console(json_output)
    with _command_errors(debug):
        tolerances = _tolerances({"min_agreement": min_agreement, "max_logit_diff": max_logit_diff,
                                  "float_error_factor": float_error_factor,
                                  "min_agreement_quantized": min_agreement_quantized,
                                  "max_accuracy_drop": max_accuracy_drop})
        with make_progress() as progress:
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
    with _command_errors(debug):
        inspection = inspect_bundle(directory)
    render_inspection(inspection, console)
    if json_output:
        print_json(inspection.to_dict())
    if not inspection.ok:
        print_error(integrity_summary(inspection.integrity), "integrity check failed")
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
            print_error(f"{error.bundle}: {integrity_summary(error.failures)}. Fix: copy the bundle again or "
                        f"re-export it; {out} was not written", "integrity check failed")
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


def _make_unavailable_command(target_name: str) -> Any:
    """The command of a target whose runtime is missing: whatever it is given, one line
    saying which extra to install, exit 2."""

    def command(context: typer.Context) -> None:
        with _command_errors("--debug" in context.args):
            raise LcsError(*targets.UNAVAILABLE[target_name])

    command.__name__ = target_name.replace("-", "_")
    return command


def build_app() -> typer.Typer:
    """The Typer app, with one export command per target registered now."""
    app = typer.Typer(
        name="lcs-export", no_args_is_help=True, add_completion=False,
        help="Export an LCS compressible subspace to deployable, parity-checked bundles.",
    )
    for name in sorted(targets.TARGETS):
        command = _make_export_command(name, target_flags(targets.TARGETS[name]))
        app.command(name, help=command.__doc__)(command)
    for name in sorted(set(targets.UNAVAILABLE) - set(targets.TARGETS)):
        # Its runtime is not installed: the command exists and says how to install it.
        app.command(name, help=f"(not installed) {targets.UNAVAILABLE[name][1]}",
                    context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
            _make_unavailable_command(name))
    app.command("validate")(validate_command)
    app.command("inspect")(inspect_command)
    app.command("app")(app_command)
    from lcs_export.bench_cli import bench_command, serve_demo_command  # imports this module: registered last

    app.command("bench")(bench_command)
    app.command("serve-demo")(serve_demo_command)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lcs-export`` script: one line for every error a user can cause
    (Typer's framed usage panels included), exit codes 0 / 1 / 2 / 130, as ``lcs-train``."""
    exit_quietly(run_app(build_app(), argv, prog_name="lcs-export"))


if __name__ == "__main__":
    main()
