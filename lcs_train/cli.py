"""``lcs-train``: train a compressible subspace, and evaluate one across alpha.

``lcs-train`` with no arguments trains the default (cPreResNet20, unstructured, line, on the
embedded MNIST subset, the ``quick`` recipe) into ``runs/default/subspace.safetensors`` and
evaluates it. ``lcs-train eval CKPT`` prints accuracy and cost per alpha.
"""

from __future__ import annotations

import os
import signal
import threading


def _interrupted_while_starting(number: int, frame: object) -> None:
    # Nothing has run yet; without this, a Ctrl-C during the imports below (torch takes
    # seconds) prints a traceback from inside torch instead of the usual one line.
    os.write(2, b"interrupted; nothing was written\n")
    os._exit(130)


_STARTING_IN_MAIN_THREAD = threading.current_thread() is threading.main_thread()
_previous_handler = signal.signal(signal.SIGINT, _interrupted_while_starting) if _STARTING_IN_MAIN_THREAD else None

from pathlib import Path  # noqa: E402 (imported under the start-up handler above)
from typing import Optional  # noqa: E402

import torch  # noqa: E402
import typer  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table  # noqa: E402

from lcs_train import distributed  # noqa: E402
from lcs_train.data import DIRECTORY_DATASETS  # noqa: E402
from lcs_train.compare import (  # noqa: E402
    ComparedCheckpoint, compare_checkpoints, comparison_report, measured_x, render_plot, write_comparison, x_unit,
)
from lcs_train.console import console, exit_quietly, reported_user_errors, run_app  # noqa: E402
from lcs_train.errors import LcsError  # noqa: E402
from lcs_train.evaluate import (  # noqa: E402
    LevelResult, evaluate_subspace, parse_alphas, plot_accuracy, prepare_evaluation, write_report,
)
from lcs_train.files import check_writable_output, exclusive_output  # noqa: E402
from lcs_train.methods import METHODS  # noqa: E402
from lcs_train.models import MODELS  # noqa: E402
from lcs_train.recipes import recipe_defaults  # noqa: E402
from lcs_train.train import EpochRecord, TrainConfig, Trainer, validate_config  # noqa: E402

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    rich_markup_mode="rich",
    help="Train LCS compressible subspaces (one run, a whole family of compressed networks) "
    "and evaluate them across alpha. Run without a command to train.",
)

DEFAULT_OUT = Path("runs/default/subspace.safetensors")


def _level_table(title: str, rows: list[LevelResult]) -> Table:
    table = Table(title=title)
    for column in ("alpha", "compression (measured)", "non-zero / params", "MFLOPs dense / non-zero", "top-1 %"):
        table.add_column(column, justify="right")
    for row in rows:
        measured = {unit: row.measured.get(unit, value) for unit, value in row.compression.items()}
        table.add_row(
            f"{row.alpha:g}", _units_text(measured),
            f"{row.nonzeros:,} / {row.parameters:,}",
            f"{row.flops / 1e6:.2f} / {row.nonzero_flops / 1e6:.2f}", f"{100 * row.accuracy:.2f}",
        )
    return table


def _units_text(values: dict[str, object]) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def report_paths(checkpoint: Path, out: Optional[Path]) -> tuple[Path, Path]:
    """Where an evaluation writes its JSON report and its plot."""
    report = out or checkpoint.with_suffix(".eval.json")
    return report, report.with_suffix(".png")


def run_evaluation(checkpoint: Path, alphas: Optional[list[float]], baselines: list[Path], out: Optional[Path], data_dir: Optional[str]) -> None:
    """Evaluate, print the table, then write JSON and the PNG plot next to ``out``.

    The report's place is checked for writability before the evaluation starts, and the
    results are printed before anything is written, so a file-system error loses nothing.
    """
    report, plot = report_paths(checkpoint, out)
    subject = prepare_evaluation(checkpoint, alphas)
    others = {path.stem: prepare_evaluation(path, None) for path in baselines}
    dataset = subject[1].metadata["data"]["dataset"]
    if data_dir is not None and dataset not in DIRECTORY_DATASETS:
        raise LcsError(f"--data-dir applies only to {', '.join(DIRECTORY_DATASETS)} checkpoints ({checkpoint} was trained on {dataset}, "
                       "which ships with lcs)", "drop --data-dir")
    for path in (report, plot):
        check_writable_output(path, "--out")
    torch.manual_seed(0)
    results = evaluate_subspace(*subject, data_dir)
    loaded = subject[1]
    baseline_rows = {name: evaluate_subspace(*prepared, data_dir) for name, prepared in others.items()}
    console.print(_level_table(f"{checkpoint}: {loaded.metadata['method']['name']} {loaded.metadata['shape']}", results))
    for name, rows in baseline_rows.items():
        console.print(_level_table(f"baseline {name}", rows))
    write_report(results, baseline_rows, report, str(checkpoint))
    plot_accuracy(results, baseline_rows, plot, f"{loaded.metadata['model']['name']} {loaded.metadata['method']['name']} {loaded.metadata['shape']}")
    console.print(f"wrote [bold]{report}[/bold] and [bold]{plot}[/bold]")


def _evaluation_outcome(report: Path, plot: Path, before: dict[Path, float | None]) -> str:
    """What a Ctrl-C during an evaluation left: which report files were (re)written."""
    written = [str(p) for p in (report, plot) if p.exists() and p.stat().st_mtime != before.get(p)]
    return f"wrote only {', '.join(written)}" if written else "no report was written"


def _mtimes(*paths: Path) -> dict[Path, float | None]:
    return {p: (p.stat().st_mtime if p.exists() else None) for p in paths}


def train_with_progress(trainer: Trainer) -> None:
    """``trainer.fit`` with a rich progress bar and one line per saved epoch.

    A Ctrl-C anywhere in it reaches ``reported_user_errors``, which says what was kept.
    """
    config = trainer.config
    columns = (
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.4f}  alpha {task.fields[alpha]:.3f}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(
            "train", total=config.epochs * trainer.steps_per_epoch, completed=trainer.start_epoch * trainer.steps_per_epoch,
            epoch=trainer.start_epoch + 1, epochs=config.epochs, loss=float("nan"), lr=0.0, alpha=0.0,
        )

        def on_step(facts: dict[str, float]) -> None:
            progress.update(task, advance=1, epoch=int(facts["epoch"]), loss=facts["loss"], lr=facts["lr"], alpha=facts["alpha"])

        def on_epoch(record: EpochRecord) -> None:
            accuracies = "  ".join(f"a={k}: {100 * v:.1f}%" for k, v in record.accuracy.items())
            progress.console.print(f"epoch {record.epoch}: loss {record.loss:.4f}  {accuracies}  ({record.seconds:.1f} s)")

        trainer.fit(on_step, on_epoch)


@app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    model: str = typer.Option("cpreresnet20", help=f"Architecture: {', '.join(MODELS)}, or torchvision:NAME (any torchvision classification model, untrained unless --init; e.g. torchvision:resnet18)."),
    num_classes: Optional[int] = typer.Option(None, help="Number of classes; read from the data, so this only checks that they agree."),
    init: Optional[str] = typer.Option(None, help="Start from this pretrained state_dict (.safetensors, or .pth read with weights_only=True); both ends of a line start from it. Nothing is downloaded."),
    method: str = typer.Option("unstructured", help=f"Compression: {', '.join(METHODS)}."),
    norm: str = typer.Option("auto", help="Normalisation: auto (keep BatchNorm, with running statistics recalibrated per level, "
                             "in networks built with it, e.g. torchvision's; the method's norm otherwise), batch (BatchNorm "
                             "for any network, built-in ones too), or the paper's norms: group (unstructured, quantized) "
                             "or instance (structured), which replace BatchNorm."),
    shape: str = typer.Option("line", help="Subspace shape: line (LCS+L) or point (LCS+P)."),
    dataset: str = typer.Option("mnist", help="mnist (embedded 5k subset), digits (embedded 8x8), or from --data-dir: cifar10, cifar100 (binary distributions) or imagefolder (DIR/train/CLASS/*, DIR/val/CLASS/*)."),
    data_dir: Optional[str] = typer.Option(None, help="Directory holding CIFAR-10's or CIFAR-100's binary files, or an ImageFolder tree (nothing is downloaded)."),
    image_size: Optional[int] = typer.Option(None, help="imagefolder: resize the shorter side to this and centre-crop a square (default: 224)."),
    workers: int = typer.Option(0, help="Worker processes decoding ImageFolder images once before training (0: decode in this process)."),
    precision: str = typer.Option("fp32", help="fp32, bf16 (autocast; CPU or CUDA) or fp16 (autocast with loss scaling; CUDA only). Weights and checkpoints stay float32."),
    channels_last: bool = typer.Option(False, help="Keep weights and batches in channels-last (NHWC) memory layout (faster convolutions on recent GPUs)."),
    recipe: str = typer.Option("quick", help="Defaults for unset options: quick (minutes, embedded data), finetune (from --init: 10 epochs, lr 0.01, weight decay 5e-5) or paper (the paper's 200-epoch recipe)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: the recipe's)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the recipe's)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate of SGD, greater than 0 (default: the recipe's; quantized: a quarter of it)."),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum (Nesterov), in [0, 1) (default: 0.9)."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay, at least 0 (default: 5e-4)."),
    warmup_epochs: Optional[int] = typer.Option(None, help="Linear learning-rate warm-up epochs before the cosine decay, at least 0 (default: the recipe's)."),
    compression_warmup: Optional[float] = typer.Option(None, help="Fraction of steps, in [0, 1], over which compression is annealed from dense; activation quantization starts after it (default: 0.8)."),
    beta: Optional[float] = typer.Option(None, help="Weight of the cos^2 regulariser between the line's ends, at least 0 (default: 1.0)."),
    augment_shift: Optional[int] = typer.Option(None, help="Random translation of training images, in pixels (default: the recipe's)."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing of the cross-entropy, in [0, 1)."),
    max_alpha: Optional[float] = typer.Option(None, help="Top of the trained alpha range, in (0, 1] (default: 0.95 for unstructured, 0.75 for structured)."),
    fixed_alpha: Optional[float] = typer.Option(None, help="Train an ordinary network at this one alpha instead: a baseline for eval, usable only at that alpha."),
    baseline: Optional[str] = typer.Option(None, help="Train a family baseline instead of a subspace, for compare: "
                                           "us (universally slimmable, --method structured: sandwich of widths with in-place "
                                           "distillation, one weight set, InstanceNorm)."),
    seed: int = typer.Option(0, help="Random seed, in [0, 2^32 - 1]; runs are reproducible."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch, at least 1 (default: torch's choice)."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Checkpoint file (safetensors), saved after every epoch."),
    resume: bool = typer.Option(False, help="Continue the run in --out after an interruption (same settings required)."),
    evaluate: bool = typer.Option(True, help="Evaluate across alpha after training."),
    debug: bool = typer.Option(False, help="Show tracebacks for errors."),
) -> None:
    """Train a compressible subspace (the default command)."""
    if ctx.invoked_subcommand is not None:
        return
    state: dict[str, object] = {}
    with reported_user_errors(debug, on_interrupt=lambda: _training_outcome(out, state)):
        settings = recipe_defaults(recipe, method, has_init=init is not None)
        given = {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
            "weight_decay": weight_decay, "warmup_epochs": warmup_epochs,
            "compression_warmup": compression_warmup, "beta": beta, "augment_shift": augment_shift,
        }
        settings.update({k: v for k, v in given.items() if v is not None})
        config = TrainConfig(
            model=model, method=method, shape=shape, dataset=dataset, data_dir=data_dir,
            label_smoothing=label_smoothing, max_alpha=max_alpha, fixed_alpha=fixed_alpha, baseline=baseline,
            seed=seed, device=device, threads=threads, image_size=image_size, workers=workers,
            precision=precision, channels_last=channels_last, num_classes=num_classes, init=init, norm=norm, **settings,
        )
        # Every option is checked before anything is loaded, created or written.
        validate_config(config)
        if out.is_dir():
            raise LcsError(f"--out {out} is a directory", f"give a file path, e.g. {out / 'subspace.safetensors'}")
        if out.exists() and not resume:
            raise LcsError(f"{out} already exists", "pass --resume to continue it, or choose another --out")
        if resume and not out.exists():
            raise LcsError(f"cannot resume: {out} does not exist", "drop --resume to start a new run, or give the --out of the interrupted run")
        layout = distributed.from_environment()
        if not layout.is_main:
            # Under torchrun, rank 0 alone writes and reports; the others only train.
            trainer = Trainer(config, out, resume=resume)
            try:
                trainer.fit()
            finally:
                distributed.finish(layout)
            return
        # An unwritable --out fails now, not after the first epoch.
        check_writable_output(out)
        with exclusive_output(out):
            if out.exists() and not resume:
                # Written by another run between the check above and taking the lock.
                raise LcsError(f"{out} already exists", "pass --resume to continue it, or choose another --out")
            trainer = Trainer(config, out, resume=resume)
            state["trainer"] = trainer
            processes = f", {layout.world} processes" if layout.active else ""
            for note in trainer.init_notes:
                console.print(f"--init: {note}")
            console.print(
                f"training {config.model} {config.method} {trainer.shape.name} on {config.dataset} "
                f"({len(trainer.dataset.train_labels)} train / {len(trainer.dataset.test_labels)} held out), "
                f"{config.epochs} epochs of {trainer.steps_per_epoch} steps, device {trainer.device}{processes}, "
                f"{config.precision}; accuracy after each epoch on {len(trainer.quick_indices)} held-out images"
            )
            try:
                if trainer.start_epoch >= config.epochs:
                    console.print(f"{out} already finished its {config.epochs} epochs; nothing to resume")
                else:
                    train_with_progress(trainer)
            finally:
                distributed.finish(layout)
        seconds = sum(record.seconds for record in trainer.history)
        console.print(f"saved [bold]{out}[/bold] ({seconds:.0f} s of training)")
        state["trained"] = True
        if evaluate:
            report, plot = report_paths(out, None)
            state["report"] = (report, plot, _mtimes(report, plot))
            run_evaluation(out, None, [], None, data_dir)


def _training_outcome(out: Path, state: dict[str, object]) -> str:
    """What a Ctrl-C during ``lcs-train`` leaves behind, for its one line."""
    trainer = state.get("trainer")
    if state.get("trained"):
        report = state.get("report")
        evaluation = _evaluation_outcome(*report) if isinstance(report, tuple) else "no report was written"
        return f"training finished and {out} is saved; evaluation stopped, {evaluation} (run lcs-train eval {out})"
    if isinstance(trainer, Trainer) and trainer.saved_epoch > 0:
        # An interrupted save keeps the previous file whole: this is the epoch it holds.
        return (f"the checkpoint of epoch {trainer.saved_epoch} is intact at {out}; "
                "continue with the same command plus --resume")
    if out.exists():
        return f"{out} is untouched"
    return "nothing was written"


@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., help="Subspace checkpoint written by lcs-train."),
    alphas: Optional[str] = typer.Option(None, help="Comma-separated alphas, e.g. 0,0.25,0.5,0.75,0.9 (default: the method's grid)."),
    baseline: list[Path] = typer.Option([], help="A --fixed-alpha checkpoint to plot beside the subspace (repeatable)."),
    out: Optional[Path] = typer.Option(None, help="JSON report path (default: CKPT.eval.json); the plot goes beside it as .png."),
    data_dir: Optional[str] = typer.Option(None, help="Data directory, if the checkpoint's dataset needs one and it moved."),
    debug: bool = typer.Option(False, help="Show tracebacks for errors."),
) -> None:
    """Evaluate a subspace across alpha: accuracy, real compression, non-zeros, FLOPs."""
    report, plot = report_paths(checkpoint, out)
    before = _mtimes(report, plot)
    with reported_user_errors(debug, on_interrupt=lambda: _evaluation_outcome(report, plot, before)):
        run_evaluation(checkpoint, parse_alphas(alphas) if alphas is not None else None, baseline, out, data_dir)


def _comparison_table(compared: list[ComparedCheckpoint], unit: str) -> Table:
    table = Table(title=f"accuracy against measured {unit}, same held-out data")
    for column in ("checkpoint", "role", "alpha", f"{unit} (measured)", "top-1 %", "non-zero / params", "MFLOPs non-zero"):
        # Folded, never cut to "…": the names and roles are what the table is read by.
        table.add_column(column, justify="left" if column in ("checkpoint", "role") else "right", overflow="fold")
    for entry in compared:
        for level in entry.levels:
            table.add_row(entry.label, entry.role, f"{level.alpha:g}", f"{measured_x(level, unit):.3f}" if unit != "bits" else str(measured_x(level, unit)),
                          f"{100 * level.accuracy:.2f}", f"{level.nonzeros:,} / {level.parameters:,}", f"{level.nonzero_flops / 1e6:.2f}")
    return table


@app.command("compare")
def compare_command(
    checkpoints: Optional[list[Path]] = typer.Argument(None, help="The subspace checkpoint, then one or more baselines "
                                                       "(--fixed-alpha checkpoints, or a family such as --baseline us)."),
    alphas: Optional[str] = typer.Option(None, help="Alphas for the subspace and family baselines, e.g. 0,0.5,0.75,0.9 "
                                         "(default: the method's grid); a fixed-alpha baseline is evaluated at its own alpha."),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o", help="Directory for compare.json and compare.png."),
    data_dir: Optional[str] = typer.Option(None, help="Data directory, if the checkpoints' dataset needs one and it moved."),
    debug: bool = typer.Option(False, help="Show tracebacks for errors."),
) -> None:
    """Compare a subspace with its baselines on the same held-out data: accuracy against
    measured compression (sparsity, width or bits) as a table, compare.json and compare.png."""
    paths = list(checkpoints or [])
    before = _mtimes(out / "compare.json", out / "compare.png")
    with reported_user_errors(debug, on_interrupt=lambda: _evaluation_outcome(out / "compare.json", out / "compare.png", before)):
        compared = compare_checkpoints(paths, parse_alphas(alphas) if alphas is not None else None, out, data_dir)
        unit = x_unit(compared[0].method)[0]
        console.print(_comparison_table(compared, unit))
        report = comparison_report(compared)
        plot = render_plot(compared, f"{paths[0].name} against {len(paths) - 1} baseline(s)")
        report_path, plot_path = write_comparison(report, plot, out)
        console.print(f"wrote [bold]{report_path}[/bold] and [bold]{plot_path}[/bold]")


def main() -> None:
    """Console entry point: one line for every error a user can cause, exit codes 0 / 1 / 2 / 130."""
    exit_quietly(run_app(app, prog_name="lcs-train"))


# The start-up handler stays until here, the end of the module, so that only a few bytecodes
# separate it from run_app's own handling of Ctrl-C.
if _STARTING_IN_MAIN_THREAD:
    signal.signal(signal.SIGINT, _previous_handler if _previous_handler is not None else signal.default_int_handler)

if __name__ == "__main__":
    main()
