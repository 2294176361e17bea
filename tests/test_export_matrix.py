"""Every model family lcs names, as a user runs it: ``lcs-train`` on an ImageFolder (one epoch,
the CLI's defaults, so torchvision models keep their BatchNorms with statistics per level),
then ``lcs-export`` to ONNX, TorchScript Lite and Core ML (levels, Core ML's multifunction
program, and for some the alpha-input graphs), each bundle validated against PyTorch.

Opt-in (``LCS_EXPORT_MATRIX=1``): about 30 minutes on 2 cores, far beyond make test's budget;
make test covers the same code on smaller networks (tests/test_torchvision_models.py,
tests/test_batch_norm.py). The images are the 8x8 digits drawn at 64 px in RGB, so that
structured levels' InstanceNorms and BatchNorms see more than one value per channel.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle_helpers import run_cli as run_export
from helpers import digits_rgb
from train_helpers import run_cli as run_train

#: No xdist group: the cases are independent, so the two workers share them.
pytestmark = pytest.mark.skipif(os.environ.get("LCS_EXPORT_MATRIX") != "1",
                                reason="every model trained and exported to three targets takes about 30 min on "
                                       "2 cores: run with LCS_EXPORT_MATRIX=1")

SIZE = 64
#: A log line in glog's format (torch's, executorch's), a Python warning, a traceback.
LIBRARY_NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d|Warning:|Traceback")
#: The level alphas exported per method (quantized levels are whole bit widths: 0.6 is 5 bits).
LEVELS = {"unstructured": "0.0,0.5", "structured": "0.0,0.5", "quantized": "0.0,0.6"}
#: EfficientNet-B0 from scratch at the quick recipe's lr 0.1 and batch 16 diverged in its one
#: epoch (loss 6 to 13, logits in the thousands), and a network that far gone is refused by
#: parity for float noise (README, "Models"); at 0.01 it trains and passes.
LEARNING_RATES = {"torchvision:efficientnet_b0": "0.01"}
#: (model, method, with the alpha-input graphs): every torchvision family the README names for
#: each method, depthwise convs, hard-swish and squeeze-excitation included, and the paper's
#: CIFAR networks. Alpha-input graphs of the larger networks take many minutes each; they are
#: exported for one network per method.
CASES = [
    ("torchvision:resnet18", "unstructured", True),
    ("torchvision:resnet18", "quantized", True),
    ("torchvision:resnet18", "structured", False),
    ("torchvision:resnet50", "structured", False),
    ("torchvision:mobilenet_v2", "unstructured", False),
    ("torchvision:mobilenet_v2", "quantized", False),
    ("torchvision:mobilenet_v2", "structured", False),
    ("torchvision:mobilenet_v3_small", "unstructured", True),
    ("torchvision:mobilenet_v3_small", "quantized", False),
    ("torchvision:mobilenet_v3_small", "structured", True),
    ("torchvision:mobilenet_v3_large", "unstructured", False),
    ("torchvision:efficientnet_b0", "unstructured", False),
    ("torchvision:efficientnet_b0", "quantized", False),
    ("torchvision:efficientnet_b0", "structured", False),
    ("cresnet18", "unstructured", False),
    ("cresnet18", "structured", False),
    ("cvgg19", "quantized", False),
    ("cvgg19", "structured", False),
]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320 training and 80 held-out digits as 64 px RGB PNGs in class folders."""
    root = tmp_path_factory.mktemp("digits-folder")
    images, labels = digits_rgb(400, SIZE)
    for index, (image, label) in enumerate(zip(images, labels)):
        split = "train" if index < 320 else "val"
        directory = root / split / f"digit{int(label)}"
        directory.mkdir(parents=True, exist_ok=True)
        pixels = image.permute(1, 2, 0).numpy()
        pixels = 255 * (pixels - pixels.min()) / (pixels.max() - pixels.min() + 1e-9)
        Image.fromarray(pixels.astype(np.uint8)).save(directory / f"{index}.png")
    return root


@pytest.mark.parametrize("model, method, alpha_input", CASES,
                         ids=[f"{m.split(':')[-1]}-{method}" for m, method, _ in CASES])
def test_trains_and_exports_to_every_target_with_parity(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, method: str,
    alpha_input: bool,
) -> None:
    checkpoint = tmp_path / "subspace.safetensors"
    trained = run_train(capsys, "--model", model, "--method", method, "--dataset", "imagefolder",
                        "--data-dir", str(image_folder), "--image-size", str(SIZE), "--epochs", "1",
                        "--batch-size", "16", "--no-evaluate", "--out", str(checkpoint),
                        *(["--lr", LEARNING_RATES[model]] if model in LEARNING_RATES else []))
    assert trained.code == 0, trained.stderr[-2000:]
    for target, extra in (("onnx", []), ("torchscript-lite", []), ("coreml", ["--multifunction"])):
        output = tmp_path / target
        result = run_export(target, checkpoint, "--levels", LEVELS[method], "--samples", "40", "-o", output, "--json",
                            *extra, *(["--dynamic-alpha"] if alpha_input else []))
        assert result.code == 0, (target, result.stderr[-3000:])
        # stderr holds the tables (--json): no library's log line or warning among them.
        assert not [line for line in result.error_lines if LIBRARY_NOISE.search(line)], (target, result.stderr)
        manifest = json.loads(result.stdout)
        assert manifest["validation"]["status"] == "passed", target
        kinds = {artifact["kind"] for artifact in manifest["artifacts"]}
        assert "level" in kinds, target
        assert ("multifunction" in kinds) == (target == "coreml"), target
        assert ("alpha_input" in kinds) == alpha_input, target
        reports = json.loads((output / "parity.json").read_text())["reports"]
        assert reports and all(report["passed"] for report in reports), target
