"""The Core ML target: ML program packages (.mlpackage) for iOS / macOS.

- ``target``: the ``coreml`` target (export of levels, multifunction and alpha-input packages; load);
- ``options``: its options (``CoreMLOptions``), parsed once with a fix for every bad value;
- ``convert``: torch module -> unsaved ML program with a flexible batch;
- ``weights``: the real compression of a level stored in the package (sparse, 8/4-bit);
- ``runner``: runs a package with Core ML on macOS, ``mil_interpreter`` elsewhere;
- ``mil_interpreter``: a NumPy reference interpreter of saved ML programs;
- ``private_api``: every non-public coremltools symbol the package uses, in one list.

Importing this package imports no coremltools; ``targets.coreml.target`` registers the target.
"""
