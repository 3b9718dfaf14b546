"""Data: BraTS and HCP discovery and validation, pre-processing, splits, the slice loader,
and the built-in phantom."""
