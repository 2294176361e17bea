"""The ONNX target: one self-contained .onnx file per level, plus the alpha-input graphs.

- ``target``: the ``onnx`` target and its options (``OnnxOptions``);
- ``files``: export with the dynamo exporter, strip, check, save inline;
- ``levels``: level files (quantized weights as DequantizeLinear over UINT8 / UINT4);
- ``compact``: pruned weights as a bit mask plus the nonzero values, rebuilt at load;
- ``bitpack``: 5- to 7-bit codes packed back to back, unpacked to UINT8 at load;
- ``alpha``: the single alpha-input graph and the switch-once pair;
- ``offsets``: the switch-once constant table, checked and patched (NumPy only);
- ``runner``: the ONNX Runtime runners.

Files are exported with ``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension and
saved with every weight inline (no ``.onnx.data`` side file: a browser session is handed one
file). Quantized levels store their weights as integers: each float weight initializer is
replaced by ``DequantizeLinear`` over a UINT8 initializer, or a UINT4 one (packed two per
byte, opset 21) at 4 bits and below, with the per-tensor scale and zero point. Unless
``dense_weights`` is set, a float weight with enough zeros (an unstructured level's) is stored
as a bit mask plus its nonzero values (``details["weight_storage"] == "float32_bitmask"``), and
5- to 7-bit codes, for which ONNX has no type, are packed back to back (``"uint6_packed"`` and
so on); in both cases a subgraph over initializers only rebuilds the plain tensor, which ONNX
Runtime's constant folding does once at session creation (the optimised graph holds none of
its nodes), so calls cost what a dense file's do, on the same numbers (a pruned ``-0.0`` comes
back as ``+0.0``).

Alpha-input artifacts (alpha is float32 [1], clamped to the trained range in the graph; a
NaN alpha runs as alpha 0, the most accurate end, see ``lcs_train.alpha_graph.clamp_alpha``):

- ``alpha_input.onnx`` (kind ``alpha_input``, details ``mode: single_graph``): inputs
  ``input`` and ``alpha``, output ``logits``; recomputes the compressed weights every call.
- ``alpha_weights.onnx`` (kind ``alpha_weights``) + ``alpha_predict.onnx`` (kind
  ``alpha_predict``; it takes no alpha): the switch-once pair. The weights graph maps
  ``alpha`` to every alpha-dependent constant (outputs named ``details["constants"]``); the
  predict graph maps ``input`` to ``logits`` with those constants as initializers of the same
  names, whose raw bytes sit at ``details["constant_offsets"][i]["offset"]`` in the file. Per
  level switch a host runs::

      values = weights_session.run(None, {"alpha": np.array([a], np.float32)})
      data = bytearray(predict_file_bytes)
      for entry, value in zip(details["constant_offsets"], values):   # same order as outputs
          data[entry["offset"]:entry["offset"] + entry["bytes"]] = value.astype("<f4").tobytes()
      predict = ort.InferenceSession(bytes(data), options)

  then ``predict.run(None, {"input": images})`` per call. Every runtime that opens a model
  from bytes can do this (onnxruntime-web, ORT mobile), the runtime sees ordinary constant
  initializers and applies every optimisation (layout transforms, pre-packing), so
  steady-state calls cost what a static level costs; a switch costs one weights-graph run,
  a byte copy and one session creation.

  ``SessionOptions.add_initializer(name, OrtValue)`` is NOT a way to swap these constants
  unless graph optimisation is off entirely (``ORT_DISABLE_ALL``): from ``ORT_ENABLE_BASIC``
  up, constant folding computes nodes from the file's own (alpha-0) initializer values at
  session creation (the norm layers' scale and shift, for one), so the overrides are
  silently ignored there and the logits are wrong (measured on onnxruntime 1.32 at BASIC,
  EXTENDED and ALL; ``tests/test_targets_onnx_ptl.py`` shows it). Byte patching is the
  portable path; ``SwitchOnceRunner(mode="add_initializer")`` exists for the benchmark
  and uses ``ORT_DISABLE_ALL``, which gives up every optimisation.

  ``SessionOptions.add_external_initializers`` is correct with every optimisation: it puts
  the values in place before the graph is optimised (it replaces initializers stored as
  external data, so the predict graph is first rewritten once with those constants as
  data-less external placeholders). It skips the per-switch copies of the whole file, about
  half of a ResNet18-sized switch, and is what ``SwitchOnceRunner`` does by default
  (``mode="external"``); the C API has it as ``AddExternalInitializers`` (since ORT 1.12).

Every ``details["opset"]`` is the opset read back from the written file (the exporter may
write a newer one than asked; UINT4 weights need 21), so a bundle can list several.
Runners open a model from bytes read through Python, never from a path: a model from a
bundle cannot name external data files, so it cannot make ONNX Runtime read outside it.
"""

from __future__ import annotations

# NumPy-only helpers, importable without onnx or onnxruntime (the manifest validator, the apps' tests).
from targets.onnx.offsets import check_constant_offsets, patch_constants

__all__ = ["check_constant_offsets", "patch_constants"]
