"""The classes a network predicts, the label values BraTS files hold, and the three regions
every score is about.

Classes 0..3 are BraTS's labels in their order: 0 background, 1 necrotic / non-enhancing
core, 2 edema, 3 enhancing tumour. The files hold them as 0, 1, 2, 4 up to BraTS 2021
(``brats2018``) and as 0, 1, 2, 3 from BraTS 2023 on (``brats2023``: 1 NETC, 2 SNFH, 3 ET).
The regions the challenge scores are unions of classes: ET = {3}, TC = {1, 3} and
WT = {1, 2, 3} (Menze et al., 2015; Bakas et al., 2018).
"""

from __future__ import annotations

import numpy as np

from urn_jax.errors import DataError

NUM_CLASSES = 4
CLASS_NAMES = ("background", "necrotic / non-enhancing core", "edema", "enhancing tumour")

# BraTS label values per convention, in the order of the classes 0..3.
LABEL_VALUES = {"brats2018": (0, 1, 2, 4), "brats2023": (0, 1, 2, 3)}

REGIONS: dict[str, tuple[int, ...]] = {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}
"""Each region's classes, in the order of BraTS's evaluation (and of every results file)."""

TABLE_REGIONS = ("ET", "WT", "TC")
"""The regions in the order of the columns of the paper's Table 1."""


def region_mask(classes, region: str) -> np.ndarray:
  """The voxels of ``classes`` (indices 0..3) that belong to ``region`` (ET, TC or WT)."""
  return np.isin(np.asarray(classes), REGIONS[region])


def labels_to_classes(label, convention: str = "brats2018", where: str = "label"):
  """BraTS label values of ``convention`` -> classes 0..3 (uint8). Any other value, or a
  value that is not a whole number, is a ``DataError`` naming ``where``."""
  values = LABEL_VALUES[convention]
  if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
    raise DataError(f"{where} holds non-integer values; expected {values}")
  label = label.astype(np.int64)
  found = np.unique(label)
  unexpected = sorted(set(found.tolist()) - set(values))
  if unexpected:
    raise DataError(f"{where} holds values {unexpected}; expected only {values} "
                    f"({convention} convention)")
  lookup = np.zeros(max(values) + 1, np.uint8)
  lookup[list(values)] = np.arange(len(values))
  return lookup[label]


def classes_to_labels(classes, convention: str = "brats2018"):
  """Classes 0..3 -> BraTS label values of ``convention``."""
  return np.asarray(LABEL_VALUES[convention], np.uint8)[np.asarray(classes)]
