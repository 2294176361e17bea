"""The executorch target: every .pte checked through executorch.runtime on real held-out digits.

One unstructured bundle (a multi-method levels.pte and the alpha-input program) and one
quantized bundle (one .pte per level) are exported once each; the export itself runs the
shared parity harness, whose reports the tests read.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lcs_train.errors import LcsError

pytestmark = pytest.mark.xdist_group("executorch")

ROOT = Path(__file__).resolve().parents[1]
needs_executorch = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="the executorch extra is not installed (pip install '.[executorch]'; make test installs it)")
SAMPLES = 20  # above 15: more than lowering alone would have planned memory for


def _export(checkpoint: Path, output: Path, levels: str, **request: object):
    from lcs_export.export import ExportRequest, export_bundle

    result = export_bundle(ExportRequest(target="executorch", checkpoint=checkpoint, output=output, levels=levels,
                                         samples=SAMPLES, **request))
    return result


@pytest.fixture(scope="module")
def unstructured(subspace_checkpoint, tmp_path_factory):
    """levels 0 and 0.9 as methods of one levels.pte, and alpha_input.pte."""
    return _export(subspace_checkpoint("unstructured", "line"), tmp_path_factory.mktemp("et-u") / "bundle",
                   "0.0,0.9", dynamic_alpha=True, options={"multimethod": True})


@pytest.fixture(scope="module")
def quantized(subspace_checkpoint, tmp_path_factory):
    """level 1 (3 bits) as its own .pte (one level: each costs seconds of lowering)."""
    return _export(subspace_checkpoint("quantized", "line"), tmp_path_factory.mktemp("et-q") / "bundle", "1.0")


def _reports(result, kind: str) -> list:
    return [r for r in result.validation.reports if r.kind == kind]


@needs_executorch
def test_a_quantized_level_is_its_own_xnnpack_pte_and_passes_parity(quantized):
    assert quantized.installed and quantized.validation.passed
    manifest = quantized.manifest
    levels = [a for a in manifest["artifacts"] if a["kind"] == "level"]
    assert [a["path"] for a in levels] == ["level_alpha_1.0000.pte"]
    for artifact in levels:
        assert artifact["details"]["backend"] == "XnnpackBackend"
        assert artifact["details"]["delegated_calls"]["forward"] > 0
    reports = _reports(quantized, "level")
    assert [r.alpha for r in reports] == [1.0]
    assert all(r.passed and r.samples == SAMPLES and r.regime == "quantized" for r in reports)
    assert manifest["validation"]["runtime"].startswith("executorch 1.5")


@needs_executorch
def test_weight_codes_keep_a_quantized_level_small_but_off_xnnpack(subspace_checkpoint, quantized, tmp_path):
    """By default a quantized level's weights are float32 constants, whose convolutions
    XNNPACK takes; --weight-codes keeps the integer codes, dequantized in the graph, which
    XNNPACK does not take, and the level runs on the portable kernels alone, in a smaller
    file, with parity either way."""
    coded = _export(subspace_checkpoint("quantized", "line"), tmp_path / "bundle", "1.0",
                    options={"weight_codes": True})
    assert coded.validation.passed
    [report] = _reports(coded, "level")
    assert report.passed and report.regime == "quantized" and report.samples == SAMPLES
    floats = quantized.manifest["artifacts"][0]
    codes = coded.manifest["artifacts"][0]
    assert "aten::convolution.out" not in floats["details"]["portable_ops"]["forward"]
    assert "aten::convolution.out" in codes["details"]["portable_ops"]["forward"]
    assert floats["details"]["backend"] == "XnnpackBackend" and floats["details"]["delegated_calls"]["forward"] > 0
    assert codes["details"]["backend"] == "portable kernels only" and codes["details"]["delegated_calls"]["forward"] == 0
    assert codes["bytes"] < floats["bytes"]


@needs_executorch
def test_multimethod_program_serves_every_level_with_float_parity(unstructured):
    assert unstructured.installed and unstructured.validation.passed
    (program,) = [a for a in unstructured.manifest["artifacts"] if a["kind"] == "multifunction"]
    assert program["path"] == "levels.pte"
    assert program["details"]["methods"] == {"0.0": "level_0", "0.9": "level_0p9"}
    assert [level["path"] for level in unstructured.manifest["levels"]] == ["levels.pte", "levels.pte"]
    reports = _reports(unstructured, "multifunction")
    assert sorted(r.alpha for r in reports) == [0.0, 0.9]
    assert all(r.passed and r.max_abs_logit_diff < 1e-4 and r.agreement == 1.0 for r in reports)


@needs_executorch
def test_alpha_input_program_runs_its_top_k_as_topk_on_portable_kernels(unstructured):
    (artifact,) = [a for a in unstructured.manifest["artifacts"] if a["kind"] == "alpha_input"]
    ops = artifact["details"]["portable_ops"]["forward"]
    assert "aten::topk.values" in ops and not any("sort" in op for op in ops)
    reports = _reports(unstructured, "alpha_input")
    # Levels, in-between alphas and one above the range (clamped), all against PyTorch.
    assert len(reports) >= 5 and any(r.alpha > 0.95 for r in reports)
    assert all(r.passed and r.max_abs_logit_diff < 1e-4 for r in reports)


@needs_executorch
def test_a_batch_of_32_runs_where_lowering_had_planned_15(unstructured):
    from lcs_export.validate import load_held_out
    from lcs_train.restore import load_subspace
    from lcs_train.subspace import at_alpha
    from targets import get_target

    manifest = unstructured.manifest
    (entry,) = [a for a in manifest["artifacts"] if a["kind"] == "multifunction"]
    runner = get_target("executorch").load(unstructured.directory, entry)
    images = load_held_out(manifest["source"]["data"], manifest["input"]["shape"], samples=32).images
    model, _ = load_subspace(Path(manifest["source"]["checkpoint"]["path"]))
    with torch.no_grad(), at_alpha(model, 0.9):
        expected = model(torch.from_numpy(images)).numpy()
    got = runner._method("level_0p9").execute([torch.from_numpy(images)])[0].numpy()
    assert got.shape == (32, 10) and np.abs(got - expected).max() < 1e-4


@pytest.fixture(scope="module")
def sort_program(tmp_path_factory) -> Path:
    """A .pte whose method still holds aten.sort (exported without the topk rewrite)."""
    from targets.executorch.lower import lower

    class Sorting(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sort(x.flatten(1)).values

    program = torch.export.export(Sorting(), (torch.randn(2, 4),)).run_decompositions({})
    lowered = lower({"forward": program}, delegate=False)
    path = tmp_path_factory.mktemp("et-sort") / "sorting.pte"
    path.write_bytes(lowered.data)
    return path


@needs_executorch
def test_a_method_needing_sort_is_refused_naming_the_method_and_the_kernel(sort_program):
    from targets.executorch.lower import LoweredProgram
    from targets.executorch.runner import ExecuTorchRunner
    from targets.executorch.target import _checked

    with pytest.raises(LcsError, match=r"method 'forward' needs aten::sort\.values.*portable kernels lack"):
        _checked(LoweredProgram(b"", {"forward": ["aten::sort.values"]}), "alpha_input", "drop --dynamic-alpha")
    runner = ExecuTorchRunner(sort_program, alphas=[0.0])
    with pytest.raises(LcsError, match=r"needs the kernel\(s\) aten::sort\.values"):
        runner.run(np.zeros((1, 4), np.float32), 0.0)


@needs_executorch
def test_a_pte_for_a_backend_this_host_lacks_says_which(quantized, tmp_path):
    from targets.executorch.runner import ExecuTorchRunner

    data = (quantized.directory / "level_alpha_1.0000.pte").read_bytes()
    assert data.count(b"XnnpackBackend") == quantized.manifest["artifacts"][0]["details"]["delegated_calls"]["forward"]
    foreign = tmp_path / "foreign.pte"
    # Same length: every delegate call now names a backend id this runtime has no implementation of.
    foreign.write_bytes(data.replace(b"XnnpackBackend", b"VulkanBackend\0"))
    runner = ExecuTorchRunner(foreign, alphas=[1.0])
    with pytest.raises(LcsError, match=r"backend VulkanBackend, which this host's runtime lacks \(it has: .*Xnnpack"):
        runner.run(np.zeros((1, 1, 8, 8), np.float32), 1.0)
    truncated = tmp_path / "truncated.pte"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(LcsError, match=r"truncated.pte is not an ExecuTorch program this runtime can read"):
        ExecuTorchRunner(truncated, alphas=[1.0])


@needs_executorch
def test_without_executorch_export_and_validate_say_which_extra_to_install(subspace_checkpoint, quantized, tmp_path):
    """executorch made unimportable in a child process (its sys.modules entry None), as on a
    machine without the extra, given a real executorch bundle and a real checkpoint."""
    bundle = tmp_path / "bundle"
    shutil.copytree(quantized.directory, bundle)
    script = "import sys; sys.modules['executorch'] = None\nfrom lcs_export.cli import main\nmain(sys.argv[1:])\n"
    checkpoint = subspace_checkpoint("unstructured", "line")
    for arguments in (["executorch", str(checkpoint), "--levels", "0", "-o", str(tmp_path / "out")],
                      ["validate", str(bundle)]):
        done = subprocess.run([sys.executable, "-c", script, *arguments], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 2, done.stderr
        assert "install the executorch extra: pip install '.[executorch]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
