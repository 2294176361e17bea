"""The training loop: one run trains a whole compressible subspace.

Per step it samples alphas for the shape and method (``sampling``), sums their losses, adds
beta * cos^2 between the line's ends, and steps SGD under a warm-up + cosine schedule. The
compression warm-up anneals the sparsity target from dense over the first part of training;
activation quantization switches on after it. Every epoch ends with an atomic checkpoint, and
``resume`` continues from it to the same result as an uninterrupted run: each epoch's
randomness comes from a generator seeded by (seed, epoch), so no RNG state needs saving.

Under ``torchrun`` every process runs the same loop on its slice of each global batch and
gradients are summed across processes once per step (``distributed``); rank 0 alone writes
the checkpoint. Forward passes run under autocast when ``precision`` asks (``precision``).

``Trainer.fit`` is the epoch loop; the CLI's progress bar and the tests are callbacks around
it. After each epoch it measures held-out accuracy at both ends and the middle on a fixed
subset of the held-out split (``QUICK_EVAL_SAMPLES``): a progress signal, cheap next to an
epoch; ``lcs-train eval`` measures the whole split. A subspace with kept BatchNorms
(``--norm batch``, the default for networks built with BatchNorm) has its per-level
statistics recalibrated (``lcs_train.calibrate.recalibrate_batch_norm``) on a fixed subset of
the training images before that measurement, so every checkpoint holds current statistics.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lcs_train.channel_plan import derive_channel_plan
from lcs_train.baselines import check_baseline
from lcs_train.calibrate import recalibrate_batch_norm
from lcs_train.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from lcs_train.cpu_memory import release_freed_cpu_memory, retain_freed_cpu_memory
from lcs_train import distributed
from lcs_train.data import (
    DATASETS, DIRECTORY_DATASETS, FLIPPABLE_DATASETS, Dataset, load_dataset, random_flip, random_shift,
)
from lcs_train.distributed import Distributed
from lcs_train.errors import LcsError
from lcs_train.methods import METHODS, CompressionMethod, method_from_name
from lcs_train.init_weights import check_init_path, load_init, read_state_dict
from lcs_train.models import build_model, check_model_name
from lcs_train.precision import autocast, check_precision, grad_scaler, load_scaler_state, scaler_state
from lcs_train.sampling import sample_alphas
from lcs_train.shapes import Line, Point, shape_from_name
from lcs_train.subspace import (
    add_line_cosine_squared_gradient,
    at_alpha,
    check_alpha,
    mark_fixed_alpha,
    set_alpha,
    set_schedule,
)
from lcs_train.shapes import SHAPES
from lcs_train.transform import check_norm_choice, resolve_norm, to_subspace

#: Settings that must match for ``--resume`` (the rest, like epochs, may be extended).
RESUME_KEYS = (
    "model", "method", "shape", "dataset", "data_dir", "batch_size", "lr", "momentum",
    "weight_decay", "warmup_epochs", "compression_warmup", "beta", "seed", "fixed_alpha",
    "augment_shift", "max_alpha", "label_smoothing", "image_size", "precision", "init", "baseline",
)
#: What a checkpoint written before a setting existed trained with.
RESUME_DEFAULTS = {"image_size": None, "precision": "fp32"}
#: Settings a rank may differ in from the others (where it runs, not what it trains); the data
#: may sit in another directory on each machine, but its contents are compared.
LOCAL_KEYS = ("device", "threads", "workers", "data_dir")


@dataclass
class TrainConfig:
    """Every knob of a training run (the CLI exposes each one)."""

    model: str = "cpreresnet20"
    method: str = "unstructured"
    shape: str = "line"
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    compression_warmup: float = 0.8
    beta: float = 1.0
    seed: int = 0
    fixed_alpha: float | None = None
    #: a family baseline trained instead of a subspace (``lcs_train.baselines``), or None
    baseline: str | None = None
    augment_shift: int = 2
    label_smoothing: float = 0.0
    max_alpha: float | None = None
    device: str = "auto"
    threads: int | None = None
    #: ImageFolder only: side of the square the images are resized and centre-cropped to.
    image_size: int | None = None
    #: Worker processes decoding ImageFolder images (0: in this process).
    workers: int = 0
    precision: str = "fp32"
    channels_last: bool = False
    #: the data's class count, if the user states it (checked against the data)
    num_classes: int | None = None
    #: a pretrained state_dict (safetensors, or .pth read with weights_only=True)
    init: str | None = None
    #: normalisation: "auto" (BatchNorm kept, per-level statistics, where the network has
    #: it; else the method's norm), "batch", or the method's own "group" / "instance"
    norm: str = "auto"

    def compression_method(self) -> CompressionMethod:
        """The method config, with ``max_alpha`` (if given) as its trained range."""
        if self.max_alpha is None:
            return method_from_name(self.method)
        if not 0.0 < self.max_alpha <= 1.0:
            raise LcsError(f"--max-alpha {self.max_alpha:g} is outside (0, 1]", "give a value in (0, 1]")
        options = {
            "unstructured": {"max_sparsity": self.max_alpha},
            "structured": {"min_width": 1.0 - self.max_alpha},
        }.get(self.method)
        if options is None:
            raise LcsError(f"--max-alpha does not apply to {self.method!r}", "quantized alphas map to bit widths; drop --max-alpha")
        return method_from_name(self.method, **options)

    def subspace_shape(self) -> Point | Line:
        """A baseline (fixed-alpha or a family such as US-Nets) has one weight set."""
        return Point() if self.fixed_alpha is not None or self.baseline is not None else shape_from_name(self.shape)


#: Held-out images the per-epoch accuracy is measured on (a fixed, seeded subset).
QUICK_EVAL_SAMPLES = 300
#: Training images (a fixed, seeded subset, unaugmented) kept BatchNorms' per-level statistics
#: are re-estimated from after every epoch, in batches of ``RECALIBRATION_BATCH``: on
#: torchvision's ResNet18 at 32 px and 2 CPU cores, 11 levels x 1024 images take about 15 s.
RECALIBRATION_IMAGES = 1024
RECALIBRATION_BATCH = 128

#: Most CPU threads --threads accepts (more only thrashes; torch may crash on absurd counts).
MAX_THREADS = 1024
#: Seeds are combined with the epoch into a generator seed, which must stay in 64 bits.
MAX_SEED = 2**32 - 1


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_number(config: TrainConfig, name: str, low: float, high: float, *, low_open: bool = False,
                  high_open: bool = False, meaning: str = "") -> None:
    """Refuse a non-finite value, or one outside [low, high] (ends open where asked)."""
    value = getattr(config, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LcsError(f"{_option(name)} {value!r} is not a number", f"give a number{meaning}")
    low_ok = value > low if low_open else value >= low
    high_ok = value < high if high_open else value <= high
    if math.isfinite(value) and low_ok and high_ok:
        return
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if high == math.inf:
        interval = f"{'greater than' if low_open else 'of at least'} {low:g}"
    else:
        interval = f"in {interval}"
    raise LcsError(f"{_option(name)} {value:g} is not allowed", f"give a finite value {interval}{meaning}")


def validate_config(config: TrainConfig) -> None:
    """Refuse any setting that cannot train, before anything is loaded or written.

    Every option of ``lcs-train`` is checked here (names, ranges, finiteness), so that a bad
    one is one clear line naming the option, never a crash in the middle of a run.
    """
    check_model_name(config.model)
    for name, label, known in (
        ("method", "compression method", METHODS),
        ("shape", "subspace shape", SHAPES), ("dataset", "dataset", DATASETS),
    ):
        value = getattr(config, name)
        if value not in known:
            raise LcsError(f"unknown {label} {value!r}", f"use one of: {', '.join(sorted(known))}")
    if config.dataset in DIRECTORY_DATASETS and not config.data_dir:
        raise LcsError(f"{config.dataset} needs a data directory", "pass --data-dir DIR (nothing is downloaded)")
    if config.dataset not in DIRECTORY_DATASETS and config.data_dir is not None:
        raise LcsError(f"--data-dir applies only to --dataset {', '.join(DIRECTORY_DATASETS)} "
                       f"({config.dataset} ships with lcs)", "drop --data-dir")
    if config.image_size is not None:
        from lcs_train.image_folder import MAX_IMAGE_SIZE

        if config.dataset != "imagefolder":
            raise LcsError(f"--image-size applies only to --dataset imagefolder ({config.dataset} images have a fixed size)",
                           "drop --image-size")
        if isinstance(config.image_size, bool) or not isinstance(config.image_size, int) or not 1 <= config.image_size <= MAX_IMAGE_SIZE:
            raise LcsError(f"--image-size {config.image_size!r} is not allowed", f"give a whole number in [1, {MAX_IMAGE_SIZE}]")
    if isinstance(config.workers, bool) or not isinstance(config.workers, int) or config.workers < 0:
        raise LcsError(f"--workers {config.workers!r} is not allowed", "give a whole number of at least 0")
    for name in ("epochs", "batch_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LcsError(f"{_option(name)} {value!r} is not allowed", "give a whole number of at least 1")
    for name, value in (("warmup_epochs", config.warmup_epochs), ("augment_shift", config.augment_shift)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LcsError(f"{_option(name)} {value!r} is not allowed", "give a whole number of at least 0")
    _check_number(config, "lr", 0, math.inf, low_open=True, meaning=" (e.g. 0.1)")
    _check_number(config, "momentum", 0, 1, high_open=True, meaning=" (e.g. 0.9)")
    _check_number(config, "weight_decay", 0, math.inf, meaning=" (e.g. 5e-4)")
    _check_number(config, "compression_warmup", 0, 1, meaning=" (a fraction of the training steps)")
    _check_number(config, "beta", 0, math.inf, meaning=" (e.g. 1.0)")
    _check_number(config, "label_smoothing", 0, 1, high_open=True, meaning=" (e.g. 0.1)")
    _check_number(config, "max_alpha", 0, 1, low_open=True)
    _check_number(config, "fixed_alpha", 0, 1)
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed <= MAX_SEED:
        raise LcsError(f"--seed {config.seed!r} is not allowed", f"give a whole number in [0, {MAX_SEED}]")
    if config.threads is not None and (
        isinstance(config.threads, bool) or not isinstance(config.threads, int) or not 1 <= config.threads <= MAX_THREADS
    ):
        raise LcsError(f"--threads {config.threads!r} is not allowed",
                       f"give a whole number in [1, {MAX_THREADS}] (this machine has {os.cpu_count()} CPUs), or leave it out")
    if config.num_classes is not None and (
        isinstance(config.num_classes, bool) or not isinstance(config.num_classes, int) or config.num_classes < 2
    ):
        raise LcsError(f"--num-classes {config.num_classes!r} is not allowed", "give a whole number of at least 2, or leave it out (it is read from the data)")
    if config.init is not None:
        check_init_path(config.init)
    check_precision(config.precision, resolve_device(distributed.device_for(distributed.from_environment(), config.device)))
    method = config.compression_method()
    check_norm_choice(config.norm, method)
    if config.fixed_alpha is not None:
        check_alpha(config.fixed_alpha, method)
    check_baseline(config.baseline, config.method, config.fixed_alpha)


@dataclass
class EpochRecord:
    """One line of the training history."""

    epoch: int
    loss: float
    lr: float
    seconds: float
    accuracy: dict[str, float] = field(default_factory=dict)


def check_model_runs(model: nn.Module, method: CompressionMethod, name: str, input_shape: list[int]) -> None:
    """Refuse, before training, a network that cannot run on the data's images, or whose
    channels a structured method cannot narrow (the channel plan says which layer and why)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), at_alpha(model, 0.0):
            model(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError, IndexError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise LcsError(f"{name} cannot run on {'x'.join(map(str, input_shape))} images ({reason})",
                       "use another --model, or data with larger images") from None
    finally:
        model.train(was_training)
    if method.narrows_channels:
        derive_channel_plan(model, input_shape)


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU; 'cpu', 'cuda' and 'cuda:N' as asked, when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise LcsError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise LcsError(f"device {name!r} asked for but CUDA is not available", "use --device cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise LcsError(f"device {name!r} does not exist (this machine has {torch.cuda.device_count()} CUDA devices)",
                       f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up for ``warmup_epochs``, then cosine decay to zero."""
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))


def compression_ramp(config: TrainConfig, step: int, total_steps: int) -> float:
    """Fraction of the sampled compression applied at ``step`` (1 after the warm-up)."""
    warmup = config.compression_warmup * total_steps
    return 1.0 if warmup <= 0 else min(1.0, step / warmup)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` at its current alpha, in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def metadata_for(config: TrainConfig, dataset: Dataset, method: CompressionMethod, norm: str | None = None) -> dict[str, Any]:
    """What a checkpoint records so that evaluation and export need nothing else; ``norm`` is
    the normalisation the subspace trains with (default: the method's own)."""
    discrete = method.discrete_alphas()
    shape = config.subspace_shape()
    return {
        "model": {
            "name": config.model,
            "arguments": {"in_channels": dataset.input_shape[0], "num_classes": len(dataset.classes)},
        },
        "method": method.to_metadata(),
        "shape": shape.name,
        "norm": norm or method.norm,
        "alpha": {
            "min": 0.0,
            "max": method.max_alpha,
            "discrete": list(discrete) if discrete is not None else None,
            "fixed": config.fixed_alpha,
            "line_position": "t = clamp(alpha / max, 0, 1); w(t) = (1 - t) w0 + t w1" if shape.ends == 2 else None,
            "meaning": "alpha = 0 is the most accurate end; larger alpha is more compressed",
            "levels": {f"{a:g}": method.level(a) for a in (0.0, method.max_alpha)},
        },
        "input": dataset.preprocessing(),
        "classes": dataset.classes,
        # The absolute directory: eval and lcs-export reload the held-out split from any cwd.
        "data": {"dataset": dataset.name, "data_dir": dataset.data_dir or config.data_dir, "split_seed": 0,
                 "train_size": len(dataset.train_labels), "held_out_size": len(dataset.test_labels),
                 **({"image_size": dataset.image_size} if dataset.image_size is not None else {})},
        "activation_quantization": True,
        "training": asdict(config),
    }


class Trainer:
    """Holds a run's model, optimizer and data; ``fit`` runs the remaining epochs."""

    def __init__(self, config: TrainConfig, output: str | Path, resume: bool = False) -> None:
        self.config = config
        self.output = Path(output)
        validate_config(config)
        self.method = config.compression_method()
        self.shape = config.subspace_shape()
        #: this process's rank among torchrun's processes (one process: rank 0 of 1)
        self.layout: Distributed = distributed.from_environment()
        self.device = resolve_device(distributed.device_for(self.layout, config.device))
        if config.threads:
            torch.set_num_threads(config.threads)
        distributed.initialise(self.layout, self.device)
        shared = {k: v for k, v in asdict(config).items() if k not in LOCAL_KEYS}
        distributed.check_same_everywhere(self.layout, shared, "settings", self.device)
        self.dataset = load_dataset(config.dataset, config.data_dir, image_size=config.image_size, workers=config.workers)
        self._check_dataset_fits()
        distributed.check_same_everywhere(self.layout, self._data_fingerprint(), "data", self.device)
        torch.manual_seed(config.seed)
        plain = build_model(config.model, norm="batch" if config.norm == "batch" else self.method.norm,
                            in_channels=self.dataset.input_shape[0], num_classes=len(self.dataset.classes))
        #: the normalisation trained with: "batch" (kept BatchNorms) or the method's norm
        self.norm = resolve_norm(config.norm, plain, self.method, config.model)
        #: what --init adapted (a classifier of another class count, a 3-channel stem)
        self.init_notes: list[str] = []
        if config.init is not None and not resume:
            # A resumed run's weights come from its checkpoint; the init is only checked equal.
            self.init_notes = load_init(plain, read_state_dict(config.init), config.init, config.model)
        self.model = to_subspace(plain, self.method, self.shape, norm="batch" if self.norm == "batch" else "method")
        check_model_runs(self.model, self.method, config.model, self.dataset.input_shape)
        self.model.to(self.device)
        if config.channels_last:
            # Same values, NHWC strides: the layout tensor cores' convolution kernels prefer.
            self.model = self.model.to(memory_format=torch.channels_last)
        self.scaler = grad_scaler(config.precision, self.device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, nesterov=config.momentum > 0,
        )
        mark_fixed_alpha(self.model, config.fixed_alpha)
        self.history: list[EpochRecord] = []
        self.start_epoch = 0
        #: epochs held by the checkpoint at ``output`` (what an interruption keeps)
        self.saved_epoch = 0
        self.train_images = self.dataset.normalize(self.dataset.train_images)
        # Zero padding of normalised images must be the background value, not 0.
        self.background = float(self.dataset.normalize(torch.zeros(1, *self.dataset.input_shape)).flatten()[0])
        self.test_images, self.test_labels = self.dataset.held_out()
        subset = torch.randperm(len(self.test_labels), generator=torch.Generator().manual_seed(0))[:QUICK_EVAL_SAMPLES]
        self.quick_indices = subset.sort().values
        if resume:
            self._resume()
        distributed.broadcast_state(self.layout, self.model)

    def _data_fingerprint(self) -> dict[str, Any]:
        """What every rank's copy of the data must agree on (sizes, classes, statistics)."""
        return {"train": len(self.dataset.train_labels), "held_out": len(self.dataset.test_labels),
                "shape": self.dataset.input_shape, "classes": self.dataset.classes,
                "label_sum": int(self.dataset.train_labels.sum()),
                "mean": [round(m, 6) for m in self.dataset.mean], "std": [round(v, 6) for v in self.dataset.std]}

    def _check_dataset_fits(self) -> None:
        """Settings that depend on the data: the class count, the shift must leave part of an
        image, and both splits must hold images (an empty held-out split would report 0 %)."""
        classes = len(self.dataset.classes)
        if self.config.num_classes is not None and self.config.num_classes != classes:
            raise LcsError(
                f"--num-classes {self.config.num_classes} disagrees with {self.dataset.name}, which has {classes} classes",
                f"give --num-classes {classes}, or leave it out (it is read from the data)",
            )
        _, height, width = self.dataset.input_shape
        if self.config.augment_shift >= min(height, width):
            raise LcsError(
                f"--augment-shift {self.config.augment_shift} would shift {self.dataset.name}'s "
                f"{height}x{width} images out of the frame",
                f"give at most {min(height, width) - 1}",
            )
        for split, labels in (("training", self.dataset.train_labels), ("held-out", self.dataset.test_labels)):
            if len(labels) == 0:
                raise LcsError(f"the {split} split of {self.dataset.name} is empty", "check the data directory")
        world = self.layout.world
        last = len(self.dataset.train_labels) - (self.steps_per_epoch - 1) * self.config.batch_size
        if world > 1 and min(self.config.batch_size, last) < world:
            # Every process must hold part of every batch (an empty slice has no statistics).
            raise LcsError(
                f"--batch-size {self.config.batch_size} leaves a batch of {min(self.config.batch_size, last)} images "
                f"for {world} processes (the last of each epoch, from {len(self.dataset.train_labels)} training images)",
                f"choose a batch size of at least {world} whose last batch also has at least {world} images",
            )

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.dataset.train_labels) / self.config.batch_size)

    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.output, with_train_state=True)
        previous = {**RESUME_DEFAULTS, **checkpoint.metadata.get("training", {})}
        differing = [k for k in RESUME_KEYS if previous.get(k) != getattr(self.config, k)]
        if differing:
            detail = ", ".join(f"{k}: {previous.get(k)!r} there, {getattr(self.config, k)!r} now" for k in differing)
            raise LcsError(
                f"cannot resume {self.output}: it was trained with other settings ({detail})",
                "resume with the same options, or train into a new --out file",
            )
        if checkpoint.metadata["norm"] != self.norm:
            # "auto" resolves by the network, and a file written before --norm existed
            # replaced every BatchNorm: say which normalisation the file needs.
            raise LcsError(
                f"cannot resume {self.output}: it was trained with --norm {checkpoint.metadata['norm']}, "
                f"and --norm {self.config.norm} gives {self.norm} here",
                f"resume with --norm {checkpoint.metadata['norm']}",
            )
        load_model_state(self.model, checkpoint.model_state, str(self.output))
        parameters = list(self.model.parameters())
        scaler_tensors = {k: v for k, v in checkpoint.train_state.items() if k.startswith("scaler.")}
        load_scaler_state(self.scaler, scaler_tensors, str(self.output))
        for key, buffer in checkpoint.train_state.items():
            if key in ("scaler.scale", "scaler.growth_tracker"):
                continue
            # The metadata names the network; the training state must fit it too.
            index = key.split(".")[1] if key.startswith("momentum.") and key.count(".") == 1 else ""
            if not index.isdigit() or int(index) >= len(parameters):
                raise LcsError(f"cannot resume {self.output}: unexpected training state {key}",
                               "the file was edited; train into a new --out file")
            parameter = parameters[int(index)]
            if buffer.shape != parameter.shape or buffer.dtype != parameter.dtype:
                raise LcsError(f"cannot resume {self.output}: training state {key} does not fit the network",
                               "the file was edited; train into a new --out file")
            self.optimizer.state[parameter]["momentum_buffer"] = buffer.to(self.device).clone()
        self.history = [EpochRecord(**record) for record in checkpoint.metadata.get("history", [])]
        self.start_epoch = int(checkpoint.metadata.get("epoch", 0))
        self.saved_epoch = self.start_epoch

    def _train_state(self) -> dict[str, Tensor]:
        state = {}
        for index, parameter in enumerate(self.model.parameters()):
            buffer = self.optimizer.state.get(parameter, {}).get("momentum_buffer")
            if buffer is not None:
                state[f"momentum.{index}"] = buffer
        return {**state, **scaler_state(self.scaler)}

    def save(self, epoch: int) -> Path:
        """Write the checkpoint after ``epoch`` epochs."""
        metadata = metadata_for(self.config, self.dataset, self.method, self.norm)
        metadata["epoch"] = epoch
        metadata["complete"] = epoch >= self.config.epochs
        metadata["history"] = [asdict(record) for record in self.history]
        failure: BaseException | None = None
        if self.layout.is_main:  # one writer; every rank holds the same weights
            try:
                save_checkpoint(self.output, metadata, self.model.state_dict(), self._train_state())
            except BaseException as error:  # the other ranks must stop too, not wait for a next step
                failure = error
        if not distributed.agree(self.layout, failure is None, self.device):
            if failure is not None:
                raise failure
            raise LcsError(f"rank 0 could not save {self.output} (its message says why)",
                           "fix what rank 0 reported, then resume")
        self.saved_epoch = epoch
        return self.output

    def fit(
        self,
        on_step: Callable[[dict[str, float]], None] | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> list[EpochRecord]:
        """Train the remaining epochs (``start_epoch`` .. ``config.epochs``) and return the history.

        Each epoch is followed by an atomic save of the checkpoint at ``output`` (by rank 0
        when several processes train), so an
        interruption anywhere keeps the last finished epoch (``saved_epoch``), and a Trainer
        built with ``resume=True`` continues from it to the same weights as an uninterrupted
        run. ``on_step(facts)`` sees every step (``epoch``, ``step``, ``loss``, ``lr``,
        ``alpha``, ``ramp``); ``on_epoch(record)`` every epoch once it is saved.

        On Linux, glibc's malloc is first set to keep freed memory for reuse
        (``lcs_train.cpu_memory``, process-wide): the process keeps its peak memory while it
        trains, and the freed part is handed back to the kernel when ``fit`` returns.
        """
        retain_freed_cpu_memory()
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                record = self.train_epoch(epoch, on_step)
                self.history.append(record)
                self.save(epoch + 1)
                if on_epoch is not None:
                    on_epoch(record)
        finally:
            release_freed_cpu_memory()
        return self.history

    def step_alphas(self, generator: torch.Generator) -> list[float]:
        """Alphas to train at in one step."""
        if self.config.fixed_alpha is not None:
            return [self.config.fixed_alpha]
        return sample_alphas(self.method, self.shape, generator)

    def train_epoch(self, epoch: int, on_step: Callable[[dict[str, float]], None] | None = None) -> EpochRecord:
        """One pass over the training split; deterministic given (seed, epoch)."""
        config, model, layout = self.config, self.model, self.layout
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_images), generator=generator)
        total_steps = config.epochs * self.steps_per_epoch
        model.train()
        started, losses = time.perf_counter(), []
        for index in range(self.steps_per_epoch):
            step = epoch * self.steps_per_epoch + index
            batch = order[index * config.batch_size : (index + 1) * config.batch_size]
            # Every rank augments the whole global batch with the shared generator, then keeps
            # its slice: the batch, and the generator's next draws (alphas), match one process.
            images = random_shift(self.train_images[batch] - self.background, config.augment_shift, generator)
            if config.dataset in FLIPPABLE_DATASETS:
                images = random_flip(images, generator)
            mine = layout.shard(len(batch))
            images, labels = self._to_device(images[mine] + self.background, self.dataset.train_labels[batch][mine])
            # The slice's mean loss weighted by its share: summed over ranks, the global mean.
            share = len(labels) / len(batch)
            lr = learning_rate(config, step, self.steps_per_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            # A --fixed-alpha baseline anneals in too: at full compression from step 0, the
            # top-k of a zero-initialised layer (a residual block's last conv) keeps nothing,
            # so the layer never gets a gradient and stays dead for the whole run.
            ramp = compression_ramp(config, step, total_steps)
            warm = ramp >= 1.0
            set_schedule(model, ramp, quantize_activations=warm)
            self.optimizer.zero_grad(set_to_none=True)
            loss_value, alphas = 0.0, self.step_alphas(generator)
            teacher = None
            for alpha in alphas:
                set_alpha(model, alpha)
                with autocast(config.precision, self.device), distributed.statistics_across_ranks(layout):
                    logits = model(images)
                    # Soft targets (probabilities) where a teacher is set: in-place distillation.
                    targets = labels if teacher is None else teacher
                    smoothing = config.label_smoothing if teacher is None else 0.0
                    loss = F.cross_entropy(logits, targets, label_smoothing=smoothing) * share
                if config.baseline == "us" and alpha == 0.0:
                    # In-place distillation: the widest network (first in the sandwich)
                    # teaches the narrower ones of the same step.
                    teacher = logits.detach().float().softmax(dim=1)
                self._backward(loss)
                loss_value += float(loss.detach())
            distributed.sum_gradients(layout, list(model.parameters()))
            loss_value = distributed.sum_value(layout, loss_value, self.device)
            if not math.isfinite(loss_value):
                # Stepping on would fill the weights with NaN; the last checkpoint is still good.
                raise LcsError(
                    f"training diverged: the loss became {loss_value} in epoch {epoch + 1}, step {index + 1} "
                    "(nothing of this epoch was saved)",
                    f"lower --lr (now {config.lr:g}) or raise --warmup-epochs",
                )
            if self.shape.ends == 2 and config.beta > 0:
                # After the all-reduce: the regulariser is the same on every rank, added once
                # (scaled like the loss's gradients when an fp16 loss scaler is on).
                loss_scale = self.scaler.get_scale() if self.scaler is not None else 1.0
                add_line_cosine_squared_gradient(model, config.beta * loss_scale)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)  # skips the step when fp16 gradients overflowed
                self.scaler.update()
            else:
                self.optimizer.step()
            losses.append(loss_value / len(alphas))
            if on_step is not None:
                on_step({"epoch": epoch + 1, "step": index + 1, "loss": losses[-1], "lr": lr,
                         "alpha": alphas[-1], "ramp": ramp})
        set_schedule(model, 1.0, True)
        self.recalibrate()
        return EpochRecord(epoch + 1, sum(losses) / len(losses), lr, time.perf_counter() - started, self.quick_accuracy())

    def recalibrate(self) -> None:
        """Re-estimate the kept BatchNorms' per-level statistics from the fixed training
        subset (nothing to do without kept BatchNorms). Every rank computes the same tables
        from the same images; nothing is exchanged."""
        if self.norm == "batch":
            recalibrate_batch_norm(self.model, self.recalibration_images(), RECALIBRATION_BATCH)

    def recalibration_images(self) -> Tensor:
        """The fixed training subset recalibration reads: ``RECALIBRATION_IMAGES`` drawn with a
        seed of their own, unaugmented (drawn from the split as it is now, so a caller that
        cuts the split gets a subset of what is left)."""
        rows = torch.randperm(len(self.train_images), generator=torch.Generator().manual_seed(1))
        return self.train_images[rows[:RECALIBRATION_IMAGES].sort().values]

    def _to_device(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """A batch on the training device: through pinned memory (an asynchronous copy) on
        CUDA, in channels-last layout when asked."""
        if self.device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    def _backward(self, loss: Tensor) -> None:
        """Backward, through the fp16 loss scaler when there is one."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def report_alphas(self) -> list[float]:
        """Alphas evaluated after each epoch: both ends and the middle."""
        if self.config.fixed_alpha is not None:
            return [self.config.fixed_alpha]
        discrete = self.method.discrete_alphas()
        middle = discrete[len(discrete) // 2] if discrete else round(self.method.max_alpha / 2, 4)
        return [0.0, middle, self.method.max_alpha]

    def quick_accuracy(self) -> dict[str, float]:
        """Accuracy at the report alphas on the held-out subset (``QUICK_EVAL_SAMPLES`` images)."""
        images = self.test_images[self.quick_indices].to(self.device)
        labels = self.test_labels[self.quick_indices].to(self.device)
        result = {}
        for alpha in self.report_alphas():
            with at_alpha(self.model, alpha):
                result[f"{alpha:g}"] = accuracy(self.model, images, labels)
        return result
