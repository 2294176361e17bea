"""``--init``: start a subspace from a pretrained torchvision-style ``state_dict``.

The weights are loaded into the *plain* network before ``to_subspace`` swaps its layers, so
both ends of a line (and every level of a point) start from them. Read from safetensors, or
from a ``.pth`` / ``.pt`` file with ``torch.load(weights_only=True)`` (no pickle code runs).
Nothing is downloaded. Two differences are adapted, and said so; any other is refused naming
the first mismatching key:

- the classifier (the last ``nn.Linear``) with another number of classes than the data, the
  usual case when fine-tuning from ImageNet weights, keeps its fresh initialisation;
- a three-channel stem (the first ``nn.Conv2d``) for one-channel data is summed over its input
  channels: the response it had to a grey image repeated in R, G and B.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from lcs_train.errors import LcsError

SUFFIXES = (".safetensors", ".pth", ".pt")


def check_init_path(path: str) -> Path:
    """Refuse an ``--init`` that is missing, not a file, or of an unknown kind (before any work)."""
    file = Path(path)
    if not file.exists():
        raise LcsError(f"--init {path} does not exist", "give the path of a saved state_dict (.safetensors or .pth)")
    if not file.is_file():
        raise LcsError(f"--init {path} is not a regular file", "give the path of a saved state_dict (.safetensors or .pth)")
    if file.suffix not in SUFFIXES:
        raise LcsError(f"--init {path} is neither .safetensors nor .pth / .pt",
                       "save the weights with safetensors.torch.save_file(model.state_dict(), 'init.safetensors')")
    return file


def read_state_dict(path: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file, or of a ``.pth`` read with ``weights_only=True``."""
    file = check_init_path(path)
    fix = "save model.state_dict() with safetensors.torch.save_file or torch.save"
    try:
        if file.suffix == ".safetensors":
            state = load_file(str(file))
        else:
            with warnings.catch_warnings():
                # "Detected pickle protocol 4": a note about the file, not an error of the user's.
                warnings.simplefilter("ignore")
                state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        if "WeightsUnpickler error:" in str(error):
            # torch's restricted unpickler refused an object. Its own message opens by advising
            # weights_only=False, which would run whatever code the file holds: pass on only
            # what it objected to.
            raise LcsError(f"--init {path} is not a file of tensors alone: torch.load(weights_only=True), which "
                           "unpickles only tensors and plain containers (anything else could run code), stopped at "
                           f"{_unpickler_objection(str(error))!r}",
                           "save only the tensors: safetensors.torch.save_file(model.state_dict(), PATH) where the "
                           "model was built, and pass that file") from None
        # A damaged file fails in the safetensors, zip or unpickler layers, each with its own
        # exception type; to the user they all mean the same.
        raise LcsError(f"--init {path} could not be read as a state_dict ({_first_line(error)})", fix) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise LcsError(f"--init {path} is not a state_dict (a mapping of names to tensors)", fix)
    return state


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _unpickler_objection(message: str) -> str:
    """What torch's weights-only unpickler refused, from its error message: the first sentence
    of its detail, without the advice that follows (to allow-list the global)."""
    detail = message.partition("WeightsUnpickler error:")[2]
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return (lines[0].split(". ")[0] if lines else "no detail given")[:200]


def _last_linear(model: nn.Module) -> str | None:
    names = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    return names[-1] if names else None


def _first_conv(model: nn.Module) -> str | None:
    return next((name for name, module in model.named_modules() if type(module) is nn.Conv2d), None)


def load_init(model: nn.Module, state: dict[str, Tensor], source: str, model_name: str) -> list[str]:
    """Load ``state`` into the plain network ``model`` (see the module notes for what is
    adapted). Returns one line per adaptation; refuses any other mismatch naming its key."""
    expected = model.state_dict()
    classifier, stem = _last_linear(model), _first_conv(model)
    adapted = dict(state)
    notes: list[str] = []
    for key, target in expected.items():
        if key not in state:
            raise _mismatch(source, model_name, key, "is missing from the file")
        value = state[key]
        owner = key.rpartition(".")[0]
        if value.shape != target.shape:
            if owner == classifier and value.shape[1:] == target.shape[1:]:
                adapted[key] = target
                if key.endswith("weight"):
                    notes.append(f"{owner}: {value.shape[0]} classes in --init, {target.shape[0]} in the data; "
                                 "the classifier starts freshly initialised")
                continue
            if owner == stem and key.endswith("weight") and value.dim() == 4 and target.shape[1] == 1 \
                    and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
                adapted[key] = value.sum(dim=1, keepdim=True)
                notes.append(f"{owner}: {value.shape[1]}-channel stem summed over its input channels for 1-channel data")
                continue
            raise _mismatch(source, model_name, key, f"has shape {list(value.shape)} in the file but {list(target.shape)} in the model")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise LcsError(f"--init {source} holds non-finite values (NaN or inf) in {key}", "use intact pretrained weights")
        adapted[key] = value.to(target.dtype)
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise _mismatch(source, model_name, unexpected[0], "is in the file but not in the model")
    model.load_state_dict(adapted)
    return notes


def _mismatch(source: str, model_name: str, key: str, problem: str) -> LcsError:
    return LcsError(
        f"--init {source} does not fit {model_name}: the first mismatching key, {key!r}, {problem}",
        f"give a state_dict saved from {model_name} (the same architecture), or another --model",
    )
