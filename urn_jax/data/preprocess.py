"""Pre-processing (paper 3.1), run once per data set and cached on disk.

Per case: read and check the files (``cases.load_case``); reorient the voxel axes to RAS;
resample to ``spacing`` mm when the grid is different (HCP's 0.7 mm -> BraTS's 1 mm),
keeping the physical geometry; N4 bias field correction (SimpleITK) inside the brain mask;
z-score of each modality within the brain mask, zero outside; and a window of ``size x size``
voxels in-plane centred on the brain (crop or zero-pad), all axial slices kept.

The result is stored per case as ``image.npy`` float32 ``[Z, X, Y, M]`` (axial slices first,
memory-mappable), ``label.npy`` uint8 ``[Z, X, Y]`` (classes 0..3) and ``meta.json``, which
holds everything needed to map a prediction back onto the original file's grid
(``urn_jax.data.grids.to_original_grid``). The cache lives in
``<cache_dir>/<settings hash>/<dataset>/<folder hash>/<case id>/``: a rerun reuses it, an
interrupted run resumes (each case is written atomically), a changed setting or a changed
input file rebuilds. The folder hash (of the folder holding the case's files) keeps apart
cases of the same name from different folders - two phantoms, two copies of a data set -
so that one job never rewrites the cached case another is reading. Bad cases are reported
and skipped; the others are processed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np

from urn_jax.console import progress as progress_bar
from urn_jax.console import is_main_process, say
from urn_jax.data.cases import Case, load_case
from urn_jax.data.grids import resample, resampled_grid, window
from urn_jax.data.meta import CaseMeta
from urn_jax.data.workers import in_processes
from urn_jax.errors import DataError
from urn_jax.files import replaced_atomically, write_text_atomically
from urn_jax.modalities import MODALITIES

FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Pre-processing settings; every field is part of the cache key.

  ``n4_iterations`` and ``n4_shrink`` trade N4's accuracy for time: SimpleITK's default is
  four levels of 50 iterations; shrinking 4x per axis before fitting is the usual practice
  for 1 mm brain images (the field is smooth).
  """

  n4: bool = True
  n4_shrink: int = 4
  n4_iterations: tuple = (50, 50, 50, 50)
  spacing: float = 1.0
  size: int = 240

  def key(self) -> str:
    settings = dict(dataclasses.asdict(self), n4_iterations=list(self.n4_iterations),
                    version=FORMAT_VERSION)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def n4_correct(data: np.ndarray, mask: np.ndarray, spacing, shrink: int = 4,
               iterations=(50, 50, 50, 50)) -> np.ndarray:
  """N4 bias field correction (Tustison et al., 2010) with SimpleITK, fitted on a
  ``shrink``-times smaller image inside ``mask`` and applied at full resolution."""
  import SimpleITK as sitk  # imported here: only pre-processing needs it

  image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0), np.float32))
  image.SetSpacing([float(s) for s in spacing])
  mask_image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0), np.uint8))
  mask_image.CopyInformation(image)
  corrector = sitk.N4BiasFieldCorrectionImageFilter()
  corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
  factor = [shrink] * 3
  corrector.Execute(sitk.Shrink(image, factor), sitk.Shrink(mask_image, factor))
  log_bias = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(image)).transpose(2, 1, 0)
  return (data / np.exp(log_bias)).astype(np.float32)


def zscore(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Zero mean and unit variance within ``mask``; 0 outside (paper 3.1)."""
  values = data[mask]
  std = values.std()
  out = np.zeros_like(data, np.float32)
  out[mask] = (values - values.mean()) / (std if std > 0 else 1.0)
  return out


# Fewest voxels along any axis of the working grid: a 3D brain volume, not a slice or a
# thumbnail (and N4 needs at least two voxels per axis after shrinking).
MIN_AXIS_VOXELS = 8


def _check_extent(case: Case, original_shape, shape, config: PreprocessConfig):
  """Refuses, with a sentence naming the file, a volume too small to pre-process."""
  minimum = max(MIN_AXIS_VOXELS, 2 * config.n4_shrink if config.n4 else 0)
  if min(shape) < minimum:
    raise DataError(
        f"case {case.case_id}: {case.reference_path} is {tuple(original_shape)} voxels, "
        f"{tuple(shape)} on the {config.spacing:g} mm grid of pre-processing; at least "
        f"{minimum} voxels along every axis are needed (a 3D brain volume, not a slice)")


def preprocess_case(case: Case, config: PreprocessConfig):
  """-> ``(image [Z, X, Y, M] float32, label [Z, X, Y] uint8 or None, CaseMeta)``.

  ``meta.available`` says which modalities the image holds: those of the case's files
  that carry an image (``meta.ignored`` names the others and why, ``load_case``)."""
  images, label, reference, ignored = load_case(case)
  # Voxel axes in RAS order first (BraTS files are LPS, HCP's LAS): every data set's slices
  # then look the same way. A flip or transposition is undone exactly by to_original_grid.
  orientation = nib.orientations.io_orientation(reference.affine)
  images = {m: nib.orientations.apply_orientation(v, orientation) for m, v in images.items()}
  if label is not None:
    label = nib.orientations.apply_orientation(label, orientation)
  canonical_shape = next(iter(images.values())).shape
  canonical_affine = reference.affine @ nib.orientations.inv_ornt_aff(
      orientation, reference.shape[:3])
  grid = resampled_grid(canonical_shape, canonical_affine, config.spacing)
  if grid is not None:
    images = {m: resample(v, canonical_affine, grid, order=1) for m, v in images.items()}
    if label is not None:
      label = resample(label, canonical_affine, grid, order=0).astype(np.uint8)
  shape = next(iter(images.values())).shape
  _check_extent(case, canonical_shape, shape, config)
  mask = np.zeros(shape, bool)
  for data in images.values():
    mask |= data > 0
  spacing = np.sqrt((canonical_affine[:3, :3] ** 2).sum(axis=0)) if grid is None else (
      [config.spacing] * 3)
  volume = np.zeros(shape + (len(MODALITIES),), np.float32)
  for i, modality in enumerate(MODALITIES):
    if modality in images:
      data = images[modality]
      if config.n4:
        data = n4_correct(data, mask, spacing, config.n4_shrink, config.n4_iterations)
      volume[..., i] = zscore(data, mask)
  in_plane = np.argwhere(mask.any(axis=2))
  centre = (in_plane.min(axis=0) + in_plane.max(axis=0)) // 2
  starts = [int(c) - config.size // 2 for c in centre]
  volume = window(volume, starts, config.size).transpose(2, 0, 1, 3)
  brain = window(mask, starts, config.size).transpose(2, 0, 1)
  if label is not None:
    label = window(label, starts, config.size).transpose(2, 0, 1)
  meta = CaseMeta.from_dict(dict(
      case_id=case.case_id, dataset=case.dataset,
      available=[m in images for m in MODALITIES], ignored=ignored,
      label_convention=case.label_convention,
      has_label=label is not None, reference_path=case.reference_path,
      original_shape=list(reference.shape[:3]), original_affine=reference.affine.tolist(),
      orientation=orientation.tolist(),
      canonical_shape=list(canonical_shape), canonical_affine=canonical_affine.tolist(),
      resampled_shape=list(grid[0]) if grid else list(canonical_shape),
      resampled_affine=(grid[1] if grid else canonical_affine).tolist(),
      window_start=[int(s) for s in starts], size=config.size,
      num_slices=int(volume.shape[0]),
      brain_slices=np.flatnonzero(brain.any(axis=(1, 2))).tolist(),
      tumour_slices=([] if label is None else np.flatnonzero(label.any(axis=(1, 2))).tolist()),
  ))
  return volume, label, meta


def _sources(case: Case) -> dict:
  paths = list(case.paths.values()) + ([case.label_path] if case.label_path else [])
  return {p: [os.path.getsize(p), os.path.getmtime(p)] for p in paths}


def cached_case_dir(root: Path, case: Case) -> Path:
  """Where ``case`` is cached under a settings folder ``root``: named by its id, below a
  hash of the folder its files are in (module docstring)."""
  folder = str(Path(case.reference_path).resolve().parent)
  return root / case.dataset / hashlib.sha256(folder.encode()).hexdigest()[:12] / case.case_id


def _is_current(out: Path, case: Case) -> bool:
  try:
    meta = CaseMeta.read(out)
  except DataError:
    return False
  return json.loads(json.dumps(meta.sources)) == json.loads(json.dumps(_sources(case)))


def _process(case: Case, config: PreprocessConfig, out: Path):
  """Worker: pre-processes one case into ``out`` atomically; returns an error or None."""
  try:
    volume, label, meta = preprocess_case(case, config)
    meta = meta.with_sources(_sources(case))
    out.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(out, unique=True) as folder:
      folder.mkdir()
      np.save(folder / "image.npy", volume)
      if label is not None:
        np.save(folder / "label.npy", label)
      (folder / "meta.json").write_text(meta.to_json())
    return None
  except DataError as e:
    return str(e)
  except Exception as e:  # noqa: BLE001 - one bad case must not lose the others' work
    detail = traceback.format_exception_only(type(e), e)[-1].strip()
    return f"case {case.case_id}: unexpected error while pre-processing: {detail}"


def preprocess_dataset(cases, cache_dir, config: PreprocessConfig = PreprocessConfig(),
                       workers: int = 1, progress: bool = True):
  """Pre-processes ``cases`` into the cache; returns ``(case_dirs, problems)``.

  ``case_dirs`` are the cached cases (input order), ``problems`` one message per case that
  was skipped. Cases already cached with the same settings and unchanged input files are
  reused. ``workers > 1`` runs cases in parallel processes.
  """
  root = Path(cache_dir) / config.key()
  root.mkdir(parents=True, exist_ok=True)
  if is_main_process():  # the others find the cache written (urn_jax.data.datasets)
    write_text_atomically(root / "settings.json",
                          json.dumps(dataclasses.asdict(config), default=list))
  outputs = [cached_case_dir(root, case) for case in cases]
  todo = [i for i, case in enumerate(cases) if not _is_current(outputs[i], case)]
  bar = progress_bar(total=len(todo), desc="pre-processing", unit="case",
                     disable=not progress or not todo)
  jobs = [(cases[i], config, outputs[i]) for i in todo]
  problems = {todo[n]: error for n, error in in_processes(_process, jobs, workers, bar)
              if error}
  bar.close()
  done = [out for i, out in enumerate(outputs) if i not in problems]
  for i, out in enumerate(outputs):
    if i not in problems:
      for why in json.loads((out / "meta.json").read_text()).get("ignored", {}).values():
        say(f"warning: case {cases[i].case_id}: {why}")
  return done, [problems[i] for i in sorted(problems)]


def report(problems) -> None:
  """Says which cases were skipped, and why."""
  if problems:
    say(f"{len(problems)} case(s) skipped:\n" + "\n".join(f"  - {p}" for p in problems))
