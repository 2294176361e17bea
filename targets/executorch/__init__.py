"""The ExecuTorch target: ``.pte`` programs for the ExecuTorch runtime, XNNPACK-delegated.

- ``target``: the ``executorch`` target (levels, the multi-method program, the alpha-input
  program; load);
- ``lower``: torch module -> ``torch.export`` program -> edge dialect lowered to XNNPACK ->
  ``.pte`` bytes, and which ops stayed on ExecuTorch's portable kernels;
- ``runner``: runs a ``.pte`` method through ``executorch.runtime``, with the runtime's own
  words when a kernel or a backend is missing.

Importing this package imports no executorch (it costs seconds); ``targets.executorch.target``
registers the target when the ``executorch`` package is installed (the ``executorch`` extra).
"""
