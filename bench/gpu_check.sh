#!/usr/bin/env bash
# One short check of the CUDA paths that cannot run on CPU-only machines: for each of
# fp32, bf16 and fp16 autocast (fp16 with its loss scaler), channels-last weights and batches,
# four epochs of training on the embedded 8x8 digits; then fp16 stopped after one epoch and
# resumed (the loss scale travels in the checkpoint) must equal the straight fp16 run; then,
# when the machine has 2+ GPUs, torchrun with NCCL on 2 GPUs. Exits non-zero on any failure.
# Usage: bench/gpu_check.sh [PYTHON]   (not yet run on a GPU: written and dry-run on CPU only)
set -euo pipefail
PYTHON="${1:-python}"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

"$PYTHON" - "$OUT" <<'PY'
import sys
from pathlib import Path

import torch

from lcs_train.checkpoint import load_checkpoint
from lcs_train.train import EpochRecord, TrainConfig, Trainer

out = Path(sys.argv[1])
assert torch.cuda.is_available(), "no CUDA device"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)


def config(precision: str, epochs: int = 4) -> TrainConfig:
    return TrainConfig(model="cpreresnet11", method="unstructured", shape="line", dataset="digits",
                       epochs=epochs, batch_size=64, lr=0.05, warmup_epochs=1, augment_shift=1,
                       device="cuda", precision=precision, channels_last=True)


for precision in ("fp32", "bf16", "fp16"):
    trainer = Trainer(config(precision), out / f"{precision}.safetensors")
    convolutions = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    history = trainer.fit()
    losses = [round(record.loss, 4) for record in history]
    accuracy = history[-1].accuracy
    print(f"{precision}: losses {losses}, accuracy {accuracy}, {sum(r.seconds for r in history):.1f} s")
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters()), f"{precision}: non-finite weights"
    assert losses[-1] < losses[0], f"{precision}: loss did not fall"
    assert accuracy["0"] > 0.3, f"{precision}: accuracy at alpha 0 is {accuracy['0']}"
    checkpoint = load_checkpoint(out / f"{precision}.safetensors", with_train_state=True)
    assert all(t.dtype == torch.float32 for t in checkpoint.model_state.values() if t.is_floating_point())
    if precision == "fp16":
        assert "scaler.scale" in checkpoint.train_state, "fp16 checkpoint lacks the loss scale"

# fp16: stopped after epoch 1 and resumed == straight (the scaler state is restored).
first = Trainer(config("fp16"), out / "resumed.safetensors")


def stop(record: EpochRecord) -> None:
    raise KeyboardInterrupt


try:
    first.fit(on_epoch=stop)
except KeyboardInterrupt:
    pass
resumed = Trainer(config("fp16"), out / "resumed.safetensors", resume=True)
resumed.fit()
straight = load_checkpoint(out / "fp16.safetensors").model_state
again = load_checkpoint(out / "resumed.safetensors").model_state
worst = max(float((straight[k] - again[k]).abs().max()) for k in straight if straight[k].is_floating_point())
print(f"fp16 resume vs straight: max |difference| {worst:g}")
assert worst == 0.0, "fp16 resume is not exact"
print("single-GPU checks passed")
PY

if [ "$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    "$PYTHON" -m torch.distributed.run --nproc-per-node 2 -m lcs_train.cli --model cpreresnet11 \
        --dataset digits --epochs 1 --batch-size 128 --precision bf16 --channels-last \
        --out "$OUT/ddp.safetensors" --no-evaluate
    test -f "$OUT/ddp.safetensors"
    echo "2-GPU NCCL run passed"
else
    echo "one GPU: the NCCL run was skipped"
fi
echo "gpu_check: all passed"
