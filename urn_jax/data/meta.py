"""The record of a pre-processed case, ``meta.json`` beside its ``image.npy``: what the case
holds and how its grid relates to the original file's.

Written by ``preprocess.py``, read by the loader (which slices to feed), evaluation (where
the label file is, how to draw the case) and prediction (how to map the output back onto
the original grid: ``to_original_grid``). Its fields are those of the cache's format
version (``preprocess.FORMAT_VERSION``); a file that lacks one is refused by name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from urn_jax.errors import DataError


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclasses.dataclass(frozen=True)
class CaseMeta:
  """A pre-processed case. Shapes and affines are of the original file (``original_*``),
  of its voxel axes turned to RAS (``canonical_*``, by ``orientation``, nibabel's
  orientation array) and of the pre-processing grid (``resampled_*``; the canonical one
  when no resampling was needed); the model's slices are a ``size`` x ``size`` window of
  the latter from ``window_start``, ``num_slices`` of them along the third axis."""

  case_id: str
  dataset: str  # "brats" or "hcp"
  available: tuple  # [M] bool: the modalities the image holds (MODALITIES' order)
  ignored: dict  # modality -> why its file was not used
  label_convention: str
  has_label: bool
  reference_path: str  # the file whose grid the outputs are written on
  original_shape: tuple
  original_affine: tuple
  orientation: tuple
  canonical_shape: tuple
  canonical_affine: tuple
  resampled_shape: tuple
  resampled_affine: tuple
  window_start: tuple
  size: int
  num_slices: int
  brain_slices: tuple  # slices with any brain voxel
  tumour_slices: tuple  # slices with any tumour label (empty without a label)
  sources: dict = dataclasses.field(default_factory=dict)  # path -> [bytes, mtime]

  @property
  def resampled(self) -> bool:
    """Whether pre-processing resampled the case (else only reoriented and windowed)."""
    return tuple(self.resampled_shape) != tuple(self.canonical_shape)

  @classmethod
  def from_dict(cls, fields: dict) -> "CaseMeta":
    names = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(n for n in names - set(fields) if n != "sources")
    if missing:
      raise KeyError(", ".join(missing))
    return cls(**{k: v if isinstance(v, dict) else _tuples(v) for k, v in fields.items()
                  if k in names})

  @classmethod
  def read(cls, case_dir) -> "CaseMeta":
    """The record in ``<case_dir>/meta.json``; a ``DataError`` naming the file otherwise."""
    path = Path(case_dir) / "meta.json"
    try:
      return cls.from_dict(json.loads(path.read_text()))
    except OSError as e:
      raise DataError(f"{path} cannot be read ({e.strerror}); delete {case_dir} to "
                      "pre-process the case again") from None
    except (ValueError, KeyError, TypeError) as e:
      raise DataError(f"{path} is not a pre-processed case's record ({e}); delete "
                      f"{case_dir} to pre-process the case again") from None

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  def with_sources(self, sources: dict) -> "CaseMeta":
    return dataclasses.replace(self, sources=sources)

  def affine(self, grid: str) -> np.ndarray:
    """The 4 x 4 affine of ``grid``: "original", "canonical" or "resampled"."""
    return np.asarray(getattr(self, f"{grid}_affine"), float)
