"""Training keeps freed CPU memory for reuse: glibc's malloc, read back through mallinfo2.

Each case runs in a fresh Python process, since the settings are process-wide and this
process's heap has a history of its own.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the settings are glibc's; elsewhere retain_freed_cpu_memory changes nothing")

#: Allocates and frees a 20 MiB tensor: whether glibc gave it a mapping of its own (``hblkhd``),
#: and how much resident memory the free gave back to the kernel, and then
#: ``release_freed_cpu_memory``.
PROBE = """
import ctypes, json, resource, sys
sys.path.insert(0, "tests")
import torch

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
applied = None
if sys.argv[1] == "direct":
    from lcs_train.cpu_memory import retain_freed_cpu_memory
    applied = [retain_freed_cpu_memory(), retain_freed_cpu_memory()]
elif sys.argv[1] == "fit":
    from helpers import tiny_config
    from lcs_train.train import Trainer
    trainer = Trainer(tiny_config("unstructured", "point", epochs=1), sys.argv[2])
    trainer.start_epoch = trainer.config.epochs  # nothing left to train: fit only sets up
    trainer.fit()


def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()

before = libc.mallinfo2()
tensor = torch.ones(20 * 2**20 // 4)
during, resident_during = libc.mallinfo2(), resident()
del tensor
returned = resident_during - resident()
from lcs_train.cpu_memory import release_freed_cpu_memory
release_freed_cpu_memory()
print(json.dumps({"applied": applied, "mapped": during.hblkhd - before.hblkhd, "returned": returned,
                  "returned_after_release": resident_during - resident()}))
"""


def _probe(mode: str, tmp_path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, mode, str(tmp_path / "subspace.safetensors")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_by_default_a_large_tensor_is_its_own_mapping_returned_when_freed(tmp_path: Path) -> None:
    facts = _probe("default", tmp_path)
    assert facts["mapped"] >= 20 * MIB and facts["returned"] >= 18 * MIB


@pytest.mark.parametrize("mode", ["direct", "fit"])
def test_with_the_settings_it_comes_from_the_heap_and_stays(tmp_path: Path, mode: str) -> None:
    """``retain_freed_cpu_memory`` (idempotent, True on glibc), and ``Trainer.fit``, which
    calls it before training; the settings stay after fit has handed its memory back."""
    facts = _probe(mode, tmp_path)
    assert facts["mapped"] == 0 and facts["returned"] < 2 * MIB
    # release_freed_cpu_memory (which fit also calls when it returns) hands it back.
    assert facts["returned_after_release"] >= 18 * MIB
    if mode == "direct":
        assert facts["applied"] == [True, True]
