"""lcs_export: from a subspace checkpoint to deployable, parity-checked artifacts."""
