"""ImageFolder trees and CIFAR-100 binary files, written here as tiny fixtures: what is read,
what is trained and recorded, and every bad input refused by name (exit 2, nothing written)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import assert_one_line_error, rewrite_checkpoint, run_cli

from lcs_export.validate import load_held_out
from lcs_train.checkpoint import load_checkpoint
from lcs_train.data import CIFAR100_RECORD, load_cifar100
from lcs_train.errors import LcsError
from lcs_train.image_folder import load_image_folder

#: (class, colour): each class's images are one flat colour, so labels can be read off pixels.
COLOURS = {"cat": (255, 0, 0), "dog": (0, 0, 255)}


def write_image_folder(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """train/ and val/ with one folder per class: flat-coloured PNGs of varying, non-square
    sizes, the second of each folder a palette PNG, so resizing and RGB conversion are exercised."""
    counts = per_class or {"train": 6, "val": 2}
    for split, count in counts.items():
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                size = (12 + index, 10 + 2 * index)  # width, height: not square, not 8
                image = Image.new("RGB", size, colour)
                if index == 1:
                    image = image.convert("P")  # palette PNG: read back as RGB
                image.save(folder / f"{index}.png")
    return root


def test_image_folder_is_read_resized_and_labelled(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "tree")
    dataset = load_image_folder(root, image_size=8, workers=0)
    assert dataset.classes == ["cat", "dog"] and dataset.image_size == 8
    assert dataset.train_images.shape == (12, 3, 8, 8) and dataset.test_images.shape == (4, 3, 8, 8)
    for images, labels in ((dataset.train_images, dataset.train_labels), (dataset.test_images, dataset.test_labels)):
        for image, label in zip(images, labels):
            expected = torch.tensor(COLOURS[dataset.classes[int(label)]], dtype=torch.float32)
            assert torch.equal(image.mean(dim=(1, 2)), expected)
    # Two decoding worker processes give the same tensors.
    parallel = load_image_folder(root, image_size=8, workers=2)
    assert torch.equal(parallel.train_images, dataset.train_images)
    assert torch.equal(parallel.test_labels, dataset.test_labels)


def test_image_folder_trains_and_its_checkpoint_reloads_its_held_out_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    root = write_image_folder(tmp_path / "tree")
    out = tmp_path / "runs" / "folder.safetensors"
    result = run_cli(capsys, "--dataset", "imagefolder", "--data-dir", str(root), "--image-size", "8",
                     "--model", "cpreresnet11", "--epochs", "1", "--batch-size", "4", "--augment-shift", "1",
                     "--threads", "1", "--out", str(out))
    assert result.code == 0, result.stderr
    metadata = load_checkpoint(out).metadata
    assert metadata["data"]["image_size"] == 8 and metadata["classes"] == ["cat", "dog"]
    assert metadata["data"]["data_dir"] == str(root.resolve())
    assert metadata["input"]["shape"] == [1, 3, 8, 8]
    assert metadata["input"]["resize"] == {"shorter_side": 8, "center_crop": 8, "interpolation": "bilinear", "color": "RGB"}
    assert out.with_suffix(".eval.json").is_file()
    # What lcs-export's parity check reads for this checkpoint: the val/ split, normalised.
    held_out = load_held_out(metadata["data"], metadata["input"]["shape"])
    assert held_out.images.shape == (4, 3, 8, 8) and sorted(held_out.labels.tolist()) == [0, 0, 1, 1]
    mean = np.array(metadata["input"]["mean"]).reshape(1, 3, 1, 1)
    std = np.array(metadata["input"]["std"]).reshape(1, 3, 1, 1)
    raw = held_out.images * std + mean  # back to pixels in [0, 1]
    for image, label in zip(raw, held_out.labels):
        colour = np.array(COLOURS[metadata["classes"][label]]) / 255
        np.testing.assert_allclose(image.mean(axis=(1, 2)), colour, atol=1e-5)
    # The recorded size must be there and agree with the input shape.
    for edit, message in (
        (lambda m: m["data"].pop("image_size") and None, "data.image_size is missing"),
        (lambda m: m["data"].update(image_size=16), "input.shape is [1, 3, 8, 8] but imagefolder images are [1, 3, 16, 16]"),
    ):
        edited = rewrite_checkpoint(out, tmp_path / "edited.safetensors", edit_metadata=edit)
        with pytest.raises(LcsError, match=re.escape(message)):
            load_checkpoint(edited)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: [p.unlink() for p in (root / "train" / "dog").iterdir()], "class folder {root}/train/dog holds no images"),
        (lambda root: [p.unlink() for p in (root / "val" / "cat").iterdir()], "class folder {root}/val/cat holds no images"),
        (lambda root: (root / "train" / "cat" / "3.png").write_bytes(b"not a png"), "cannot read image {root}/train/cat/3.png"),
        (lambda root: (root / "val" / "bird").mkdir() or Image.new("RGB", (4, 4)).save(root / "val" / "bird" / "0.png"),
         "{root}/val has class folders that train/ lacks: bird"),
        (lambda root: [p.rename(root / f"moved-{p.name}") for p in [root / "val"]], "{root} has no val/ folder"),
    ],
)
def test_bad_image_folders_are_refused_naming_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, message: str,
) -> None:
    root = write_image_folder(tmp_path / "tree", {"train": 4, "val": 1})
    damage(root)
    expected = message.format(root=root)
    with pytest.raises(LcsError, match=re.escape(expected)):
        load_image_folder(root, image_size=8)
    out = tmp_path / "runs" / "x.safetensors"
    result = run_cli(capsys, "--dataset", "imagefolder", "--data-dir", str(root), "--image-size", "8", "--out", str(out))
    assert_one_line_error(result, 2, expected)
    assert not (tmp_path / "runs").exists()


def write_cifar100(root: Path, fine_labels: list[int], test: bytes | None = None) -> Path:
    """cifar-100-binary/train.bin and test.bin: records of coarse label, fine label, pixels."""
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    records = b"".join(bytes([label % 20, label]) + bytes([label]) * 1024 + bytes(range(256)) * 8 for label in fine_labels)
    (folder / "train.bin").write_bytes(records)
    (folder / "test.bin").write_bytes(records if test is None else test)
    return root


def test_cifar100_binary_layout_is_read_with_fine_labels(tmp_path: Path) -> None:
    dataset = load_cifar100(write_cifar100(tmp_path, [0, 57, 99]))
    assert dataset.name == "cifar100" and len(dataset.classes) == 100
    assert dataset.train_labels.tolist() == [0, 57, 99] and dataset.classes[57] == "pear"
    assert dataset.train_images.shape == (3, 3, 32, 32)
    # The red plane holds the label's value, the others the 0..255 ramp.
    assert float(dataset.train_images[1, 0].mean()) == 57.0 and float(dataset.train_images[1, 1, 0, 1]) == 1.0


@pytest.mark.parametrize(
    ("test", "message"),
    [
        (b"", "test.bin is empty"),
        (b"\x00" * (CIFAR100_RECORD + 5), "is not a multiple of 3074"),
        (bytes([0, 100]) + b"\x00" * 3072, "test.bin is not a CIFAR-100 binary batch: record 0 has label 100"),
    ],
)
def test_bad_cifar100_files_are_refused_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], test: bytes, message: str,
) -> None:
    root = write_cifar100(tmp_path / "data", [1, 2], test)
    with pytest.raises(LcsError, match=re.escape(message)):
        load_cifar100(root)
    result = run_cli(capsys, "--dataset", "cifar100", "--data-dir", str(root), "--out", str(tmp_path / "runs" / "x.safetensors"))
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "runs").exists()


def test_pickled_cifar100_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"\x80\x04not to be unpickled")
    result = run_cli(capsys, "--dataset", "cifar100", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.safetensors"))
    assert_one_line_error(result, 2, "pickled python version of CIFAR-100, which lcs will not unpickle")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dataset", "cifar100"], "cifar100 needs a data directory"),
        (["--dataset", "digits", "--image-size", "16"], "--image-size applies only to --dataset imagefolder"),
        (["--dataset", "imagefolder", "--data-dir", "/tmp", "--image-size", "0"], "--image-size 0 is not allowed"),
        (["--workers", "-1"], "--workers -1 is not allowed"),
        (["--precision", "fp8"], "unknown --precision 'fp8'"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
    ],
)
def test_bad_data_and_precision_options_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str,
) -> None:
    result = run_cli(capsys, *options, "--out", str(tmp_path / "runs" / "x.safetensors"))
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "runs").exists()
