"""Finding and checking cases in BraTS and HCP folders.

A ``Case`` is an id, a path per modality that exists, an optional label path, and the
naming convention of its labels. A missing modality file is not an error: it becomes a 0
in the case's availability mask. Anything wrong with a file that exists is a ``DataError``
that names the case and the file and says what was expected.

BraTS naming, in nested (``HGG/``, ``LGG/``) or flat folders:
- 2018: ``Brats18_2013_2_1/Brats18_2013_2_1_{flair,t1,t1ce,t2,seg}.nii.gz``
- 2019-2021: ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz``
- 2023+: ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz``, where
  label 3 (not 4) is the enhancing tumour.
HCP: ``<subject>/T1w/T1w_acpc_dc_restore_brain.nii.gz`` and ``T2w_acpc_dc_restore_brain``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from urn_jax.errors import DataError
from urn_jax.labels import labels_to_classes
from urn_jax.modalities import MODALITIES

_SUFFIXES = {  # file suffix -> (modality or "label", label convention)
    "flair": ("flair", "brats2018"), "t1": ("t1", "brats2018"),
    "t1ce": ("t1c", "brats2018"), "t2": ("t2", "brats2018"),
    "t2f": ("flair", "brats2023"), "t1n": ("t1", "brats2023"),
    "t1c": ("t1c", "brats2023"), "t2w": ("t2", "brats2023"),
    "seg": ("label", None),
}
_BRATS_FILE = re.compile(
    r"^(?P<case>.+?)[_-](?P<suffix>" + "|".join(sorted(_SUFFIXES, key=len, reverse=True))
    + r")\.nii(\.gz)?$", re.IGNORECASE)
HCP_FILES = {"t1": "T1w/T1w_acpc_dc_restore_brain.nii.gz",
             "t2": "T1w/T2w_acpc_dc_restore_brain.nii.gz"}


@dataclasses.dataclass(frozen=True)
class Case:
  case_id: str
  dataset: str                       # "brats" or "hcp"
  paths: dict                        # modality -> path, only for the files that exist
  label_path: str | None = None
  label_convention: str = "brats2018"

  @property
  def available(self) -> np.ndarray:
    """bool [M]: which of the canonical modalities this case has."""
    return np.array([m in self.paths for m in MODALITIES])

  @property
  def reference_path(self) -> str:
    """The first available modality: its grid, affine and header define the case's."""
    return self.paths[next(m for m in MODALITIES if m in self.paths)]


def nifti_files(folder: Path, problems: list[str]) -> list[Path]:
  """Every NIfTI file below ``folder``, sorted. Symbolic links to folders are followed (a
  folder of linked cases is common), each real folder once, so a link loop ends; a folder
  that cannot be read is added to ``problems``, by name."""
  def unreadable(error: OSError):
    problems.append(f"cannot read folder {error.filename}: {error.strerror or error}")
  found, seen = [], set()
  for root, folders, files in os.walk(folder, onerror=unreadable, followlinks=True):
    real = os.path.realpath(root)
    if real in seen:
      folders[:] = []
      continue
    seen.add(real)
    found += [Path(root) / name for name in fnmatch.filter(files, "*.nii*")]
  return sorted(found)


def discover_brats(folder) -> tuple[list[Case], list[str]]:
  """All BraTS cases below ``folder``; returns ``(cases, problems)``.

  A folder that looks like a case but cannot be one (no image, two files for the same
  modality, mixed naming conventions) is a problem, reported and left out. A folder with no
  case at all is a ``DataError``.
  """
  folder = Path(folder)
  if not folder.is_dir():
    raise DataError(f"BraTS folder {folder} does not exist or is not a directory")
  groups: dict[Path, list[tuple[str, Path]]] = {}
  cases, problems = [], []
  for path in nifti_files(folder, problems):
    match = _BRATS_FILE.match(path.name)
    if match:
      groups.setdefault(path.parent, []).append((match.group("suffix").lower(), path))
  for case_dir, files in sorted(groups.items()):
    case_id = case_dir.name
    paths, label_path, conventions, duplicate = {}, None, set(), None
    for suffix, path in files:
      role, convention = _SUFFIXES[suffix]
      if convention:
        conventions.add(convention)
      if role == "label":
        label_path = str(path)
      elif role in paths:
        duplicate = (paths[role], path)
      else:
        paths[role] = str(path)
    if duplicate:
      problems.append(f"case {case_id}: two files for one modality: {duplicate[0]} and "
                      f"{duplicate[1]}")
    elif len(conventions) > 1:
      problems.append(f"case {case_id}: file names mix BraTS 2018-2021 and 2023+ naming "
                      f"in {case_dir}")
    elif not paths:
      problems.append(f"case {case_id}: a label but no image in {case_dir}; expected "
                      "files such as {case}_flair.nii.gz or {case}-t2f.nii.gz")
    elif any(c.case_id == case_id for c in cases):
      problems.append(f"case {case_id}: found twice, again in {case_dir}; case ids must be "
                      "unique")
    else:
      cases.append(Case(case_id, "brats", paths, label_path,
                        conventions.pop() if conventions else "brats2018"))
  if not cases and not problems:
    raise DataError(
        f"no BraTS case found in {folder}: expected NIfTI files named like "
        "Brats18_XXX_flair.nii.gz, BraTS2021_00000_t1ce.nii.gz or BraTS-GLI-00000-000-t2f"
        ".nii.gz, in one folder per case")
  return cases, problems


def discover_hcp(folder) -> tuple[list[Case], list[str]]:
  """All HCP subjects below ``folder`` (``<subject>/T1w/T1w_acpc_dc_restore_brain.nii.gz``
  and/or ``T2w_...``); returns ``(cases, problems)`` like ``discover_brats``."""
  folder = Path(folder)
  if not folder.is_dir():
    raise DataError(f"HCP folder {folder} does not exist or is not a directory")
  cases = []
  for subject in sorted(p for p in folder.iterdir() if p.is_dir()):
    paths = {m: str(subject / rel) for m, rel in HCP_FILES.items() if (subject / rel).exists()}
    if paths:
      cases.append(Case(subject.name, "hcp", paths))
  if not cases:
    raise DataError(
        f"no HCP subject found in {folder}: expected <subject>/{HCP_FILES['t1']} and/or "
        f"<subject>/{HCP_FILES['t2']}")
  return cases, []


def file_role(path) -> str | None:
  """'flair', 't1', 't1c', 't2' or 'label' for a BraTS or HCP file name (or a bare BraTS
  suffix such as ``t1ce.nii.gz``); None for any other file."""
  name = Path(path).name
  for modality, relative in HCP_FILES.items():
    if name == Path(relative).name:
      return modality
  match = _BRATS_FILE.match(name)
  suffix = match.group("suffix") if match else re.sub(r"\.nii(\.gz)?$", "", name)
  role = _SUFFIXES.get(suffix.lower())
  return role[0] if role else None


def case_id_of_file(path) -> str:
  """``Brats18_X_t1ce.nii.gz`` -> ``Brats18_X``: the case a BraTS-named file belongs to;
  any other file: its name without the NIfTI extension."""
  name = Path(path).name
  match = _BRATS_FILE.match(name)
  return match.group("case") if match else re.sub(r"\.nii(\.gz)?$", "", name)


def read_volume(path, what: str, case_id: str = "") -> tuple[nib.Nifti1Image, np.ndarray]:
  """Reads the NIfTI file at ``path`` (``what`` it holds: a modality, "label") as a 3D
  volume: ``(image, data)``. The one reader of urn_jax's input files, so every one of them
  meets the same checks: a missing, unreadable or damaged file, or one that is not a
  volume, is a ``DataError`` naming the case and the file; a 4D file with a single volume
  (``X x Y x Z x 1``, as some converters write) is read as that volume."""
  where = f"case {case_id}: " if case_id else ""
  # Access first: nibabel reports an unreadable file as one it cannot make sense of.
  if not os.path.isfile(path):
    raise DataError(f"{where}cannot open {what} file {path}: it does not exist or is not a "
                    "file (a link to a file that is gone?)")
  if not os.access(path, os.R_OK):
    raise DataError(f"{where}cannot open {what} file {path}: permission denied (the file is "
                    "not readable by this user)")
  try:
    image = nib.load(path)
    data = np.asanyarray(image.dataobj)
  except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as e:
    raise DataError(f"{where}cannot read {what} file {path} ({e}); it may be truncated or "
                    "not a NIfTI file") from None
  if data.ndim == 4 and data.shape[-1] == 1:
    data = data[..., 0]
  if data.ndim != 3:
    raise DataError(f"{where}{what} file {path} has shape {data.shape}; expected a 3D "
                    "volume")
  return image, data


# A modality whose non-zero voxels vary by less than this fraction of their mean level is
# "constant": no image (a failed conversion, a placeholder), whatever its value.
CONSTANT_VARIATION = 0.01


def _blank(data: np.ndarray) -> str | None:
  """Why a volume carries no image (all zeros, or the same value wherever it is not 0),
  or None. Real MR images vary by tens of percent inside the brain."""
  values = data[data != 0]
  if not values.size:
    return "is all zeros"
  level = float(np.abs(values).mean())
  if float(values.std()) <= CONSTANT_VARIATION * level:
    return (f"is constant ({float(np.median(values)):.4g}"
            + (" everywhere)" if values.size == data.size else " wherever it is not 0)"))
  return None


def load_case(case: Case):
  """Reads and checks a case: ``(images {modality: float32 [X, Y, Z]}, label or None,
  reference NIfTI image, ignored {modality: why})``. Labels are returned as classes 0..3.

  A modality file that holds no image (all zeros, or constant: ``_blank``) is left out of
  ``images`` and named in ``ignored``: the case is then treated as not having it, as when
  the file is absent, rather than fed to a model as if it were an image; a case with no
  image left is a ``DataError``."""
  images, reference, ignored = {}, None, {}
  for modality in (m for m in MODALITIES if m in case.paths):
    path = case.paths[modality]
    image, data = read_volume(path, modality, case.case_id)
    if reference is None:
      reference = image
    elif data.shape != reference.shape[:3]:
      raise DataError(f"case {case.case_id}: {modality} file {path} has shape {data.shape}"
                      f" but {case.reference_path} has {reference.shape[:3]}; the "
                      "modalities of a case must be co-registered on one grid")
    elif not np.allclose(image.affine, reference.affine, atol=1e-3):
      raise DataError(f"case {case.case_id}: {modality} file {path} has a different affine "
                      f"from {case.reference_path}; the modalities must share one grid")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
      raise DataError(f"case {case.case_id}: {modality} file {path} contains "
                      f"{int((~np.isfinite(data)).sum())} NaN or infinite voxels")
    blank = _blank(data)
    if blank:
      ignored[modality] = f"{modality} file {path} {blank}; treated as missing"
    else:
      images[modality] = data
  if not images:
    raise DataError(f"case {case.case_id}: no usable image: "
                    + "; ".join(v.replace("; treated as missing", "") for v in ignored.values()))
  label = None
  if case.label_path:
    image, data = read_volume(case.label_path, "label", case.case_id)
    if data.shape != reference.shape[:3]:
      raise DataError(f"case {case.case_id}: label file {case.label_path} has shape "
                      f"{data.shape} but the images have {reference.shape[:3]}")
    if not np.allclose(image.affine, reference.affine, atol=1e-3):
      raise DataError(f"case {case.case_id}: label file {case.label_path} has a different "
                      f"affine from {case.reference_path}; the label must lie on its "
                      "images' grid (the same voxels at the same positions)")
    label = labels_to_classes(np.asarray(data), case.label_convention,
                              f"case {case.case_id}: label file {case.label_path}")
  return images, label, reference, ignored
