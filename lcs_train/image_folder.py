"""ImageFolder trees (``DIR/train/CLASS/*.png``, ``DIR/val/CLASS/*.png``) decoded into memory.

torchvision's ``ImageFolder`` conventions find the classes and the files; transforms.v2
resizes the shorter side to ``image_size`` and centre-crops a square, so every image has the
shape recorded in the checkpoint. Images are decoded once, by ``workers`` worker processes,
into a uint8 tensor; training then augments in memory like every other dataset (so each
step's batch stays a function of (seed, epoch, step), which exact resume and multi-process
training rely on). The price: the whole tree must fit in memory at ``image_size``
(4 bytes per pixel value once converted), which suits CIFAR- to Imagenette-sized data, not
ImageNet.

A class folder without images, or a file PIL cannot decode, is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.transforms import v2

from lcs_train.data import Dataset
from lcs_train.errors import LcsError

#: Side of the square images when ``--image-size`` is not given (ImageNet's usual crop).
DEFAULT_IMAGE_SIZE = 224
#: Largest accepted ``--image-size`` (the checkpoint's input shape allows up to 4096).
MAX_IMAGE_SIZE = 4096
SPLITS = ("train", "val")


class _DecodedImages(TorchDataset):
    """(path, label) pairs -> (uint8 CHW image, label, error text); an undecodable file
    yields its error instead of raising, so the parent process can name it (an exception
    raised in a DataLoader worker reaches the parent as a traceback, not as the file)."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int) -> None:
        self.samples = samples
        self.image_size = image_size
        self.transform = v2.Compose([
            v2.Resize(image_size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(image_size),
        ])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int, str]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as error:
            empty = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
            return empty, label, f"{path}: {error}"
        pixels = v2.functional.pil_to_tensor(rgb)
        return self.transform(pixels), label, ""


def _collate(batch: list[tuple[Tensor, int, str]]) -> tuple[Tensor, Tensor, list[str]]:
    images, labels, errors = zip(*batch)
    return torch.stack(images), torch.tensor(labels), list(errors)


def _split_samples(root: Path, split: str, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """The split's (path, label) pairs; every class folder must hold at least one image."""
    directory = root / split
    if not directory.is_dir():
        raise LcsError(f"{root} has no {split}/ folder (an ImageFolder tree needs train/ and val/)",
                       f"put one folder per class under {directory}")
    present, _ = find_classes(str(directory))
    unknown = sorted(set(present) - set(class_to_idx))
    if unknown:
        raise LcsError(f"{directory} has class folders that train/ lacks: {', '.join(unknown[:5])}",
                       "use the same class folders in train/ and val/")
    samples = make_dataset(str(directory), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    counts = torch.bincount(torch.tensor([label for _, label in samples], dtype=torch.long),
                            minlength=len(class_to_idx))
    for name, index in class_to_idx.items():
        if counts[index] == 0:
            raise LcsError(
                f"class folder {directory / name} holds no images (looked for {', '.join(IMG_EXTENSIONS[:4])}, ...)",
                "add images to it or remove the folder from train/ and val/",
            )
    return samples


def _decode(samples: list[tuple[str, int]], image_size: int, workers: int) -> tuple[Tensor, Tensor]:
    """All images of a split as one uint8 tensor, decoded by ``workers`` processes."""
    loader = DataLoader(_DecodedImages(samples, image_size), batch_size=64, shuffle=False,
                        num_workers=workers, collate_fn=_collate)
    images, labels = [], []
    for batch_images, batch_labels, errors in loader:
        failed = next((error for error in errors if error), None)
        if failed is not None:
            raise LcsError(f"cannot read image {failed}", "remove or replace that file")
        images.append(batch_images)
        labels.append(batch_labels)
    return torch.cat(images), torch.cat(labels)


def load_image_folder(data_dir: str | Path, image_size: int, workers: int = 0) -> Dataset:
    """An ImageFolder tree's train/ and val/ splits, resized and centre-cropped to
    ``image_size``; classes are train/'s sub-folders in sorted order (torchvision's rule)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise LcsError(f"data directory {root} does not exist", "pass --data-dir pointing at an ImageFolder tree")
    if not (root / "train").is_dir():
        raise LcsError(f"{root} has no train/ folder (an ImageFolder tree needs train/ and val/)",
                       f"put one folder per class under {root / 'train'}")
    try:
        classes, class_to_idx = find_classes(str(root / "train"))
    except FileNotFoundError:
        raise LcsError(f"{root / 'train'} holds no class folders", "put one folder of images per class there") from None
    if len(classes) < 2:
        raise LcsError(f"{root / 'train'} holds {len(classes)} class folder; a classifier needs at least 2",
                       "add a folder of images per class")
    decoded = [_decode(_split_samples(root, split, class_to_idx), image_size, workers) for split in SPLITS]
    (train_images, train_labels), (val_images, val_labels) = decoded
    return Dataset(
        "imagefolder", train_images.float(), train_labels, val_images.float(), val_labels,
        list(classes), data_dir=str(root.resolve()), image_size=image_size,
    )
