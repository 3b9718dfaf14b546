"""Data: from BraTS and HCP folders (or the built-in phantom) to batches of slices.

Owns: finding and checking cases and reading their NIfTI files (``cases``, the one reader),
pre-processing and its cache (``preprocess``), the grids and the maps back onto a file's
own (``grids``), the record of a pre-processed case (``meta``), the split by patient
(``splits``), the grain slice loader (``loader``) and its augmentation (``augment``), what
a job's ``config.data`` prepares (``datasets``), the phantom (``phantom``,
``phantom_cases``) and drawing a case (``render``).

May import the shared leaves (``urn_jax.errors``, ``files``, ``console``, ``modalities``,
``labels``) and nothing else of urn_jax: never the model, which knows nothing of files
either.
"""
