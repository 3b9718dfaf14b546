"""Pre-processing (paper 3.1), run once per data set and cached on disk.

Per case: read and check the files (``cases.load_case``); reorient the voxel axes to RAS;
resample to ``spacing`` mm when the grid is different (HCP's 0.7 mm -> BraTS's 1 mm),
keeping the physical geometry; N4 bias field correction (SimpleITK) inside the brain mask;
z-score of each modality within the brain mask, zero outside; and a window of ``size x size``
voxels in-plane centred on the brain (crop or zero-pad), all axial slices kept.

The result is stored per case as ``image.npy`` float32 ``[Z, X, Y, M]`` (axial slices first,
memory-mappable), ``label.npy`` uint8 ``[Z, X, Y]`` (classes 0..3) and ``meta.json``, which
holds everything needed to map a prediction back onto the original file's grid
(``to_original_grid``). The cache lives in ``<cache_dir>/<settings hash>/``: a rerun reuses
it, an interrupted run resumes (each case is written atomically), a changed setting or a
changed input file rebuilds. Bad cases are reported and skipped; the others are processed.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import traceback
from pathlib import Path

import nibabel as nib
import nibabel.processing
import numpy as np
from tqdm.auto import tqdm

from urn_jax.data.cases import Case, load_case
from urn_jax.data.meta import CaseMeta
from urn_jax.errors import DataError
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


def _resampled_grid(shape, affine, spacing: float):
  """The grid ``(shape, affine)`` with ``spacing`` mm voxels, same orientation and origin;
  None when the voxels already have that size."""
  zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
  if np.allclose(zooms, spacing, atol=1e-3):
    return None
  resampled = affine.copy()
  resampled[:3, :3] = affine[:3, :3] / zooms * spacing
  return tuple(int(np.ceil(n * z / spacing)) for n, z in zip(shape, zooms)), resampled


def _resample(data, affine, grid, order):
  image = nib.Nifti1Image(data, affine)
  return np.asarray(nibabel.processing.resample_from_to(image, grid, order=order).dataobj)


def _linear_axis_aligned(volume: np.ndarray, transform: np.ndarray, shape) -> np.ndarray:
  """Trilinear resampling onto ``shape`` when ``transform`` (output voxel -> input voxel)
  only scales and shifts each axis, as between our resampled and canonical grids: three
  1D interpolations, each a matrix product with two nonzeros per row, several times faster
  than a general 3D ``map_coordinates`` (where evaluating 15 combinations per case would
  otherwise spend most of its time). Outside the input (by more than rounding) the value is
  0, as with nibabel's ``resample_from_to``. A trailing channel axis is done one channel at
  a time, which keeps every product contiguous (4x faster than carrying the axis along)."""
  if volume.ndim == 4:
    return np.stack([_linear_axis_aligned(volume[..., c], transform, shape)
                     for c in range(volume.shape[-1])], axis=-1)
  return _apply_axis_matrices(volume, [_axis_matrix(transform, axis, volume.shape[axis], n)
                                       for axis, n in enumerate(shape)])


def _apply_axis_matrices(volume: np.ndarray, matrices) -> np.ndarray:
  """``volume`` with ``matrices[a]`` applied along axis ``a``, float32 and contiguous."""
  for axis, matrix in enumerate(matrices):
    volume = np.moveaxis(np.tensordot(matrix, volume, axes=([1], [axis])), 0, axis)
  return np.ascontiguousarray(volume, np.float32)


def _axis_matrix(transform, axis: int, n_in: int, n_out: int) -> np.ndarray:
  """The linear interpolation along one axis as an ``[n_out, n_in]`` matrix (two nonzeros
  per row; a zero row where the output lies outside the input)."""
  x = transform[axis, axis] * np.arange(n_out) + transform[axis, 3]
  inside = (x > -1e-3) & (x < n_in - 1 + 1e-3)
  x = np.clip(x, 0, n_in - 1)
  low = np.minimum(np.floor(x).astype(int), max(n_in - 2, 0))
  weight = x - low
  matrix = np.zeros((n_out, n_in), np.float32)
  rows = np.flatnonzero(inside)
  matrix[rows, low[rows]] += 1 - weight[rows]
  matrix[rows, np.minimum(low[rows] + 1, n_in - 1)] += weight[rows]
  return matrix


def _argmax_linear_axis_aligned(probabilities: np.ndarray, transform, shape) -> np.ndarray:
  """``_linear_axis_aligned(probabilities, ...).argmax(-1)`` as uint8, computed only where it
  can differ from class 0. An interpolated value is a weighted mean (weights >= 0) of input
  voxels, so where every input voxel it draws on has class 0 as its argmax (each p_0 >= p_c),
  the mean's argmax is class 0 too (ties go to the lowest class, as in argmax). Only the
  output voxels that draw on the box around the input's other classes are interpolated: the
  tumour's box rather than the whole volume, with the very same products."""
  foreground = probabilities.argmax(-1) != 0
  out = np.zeros(shape, np.uint8)
  if not foreground.any():
    return out
  crop_in, crop_out, matrices = [], [], []
  for axis, n_out in enumerate(shape):
    matrix = _axis_matrix(transform, axis, probabilities.shape[axis], n_out)
    other_axes = tuple(a for a in range(3) if a != axis)
    columns = np.flatnonzero(foreground.any(axis=other_axes))
    rows = np.flatnonzero(matrix[:, columns[0]:columns[-1] + 1].any(axis=1))
    if not rows.size:
      return out
    used = np.flatnonzero(matrix[rows].any(axis=0))
    crop_in.append(slice(used[0], used[-1] + 1))
    crop_out.append(slice(rows[0], rows[-1] + 1))
    matrices.append(matrix[crop_out[-1], crop_in[-1]])
  classes = [_apply_axis_matrices(probabilities[tuple(crop_in) + (c,)].astype(np.float32),
                                  matrices) for c in range(probabilities.shape[-1])]
  out[tuple(crop_out)] = np.stack(classes, axis=-1).argmax(-1)
  return out


def _window_slices(starts, size: int, shape):
  """Slices pairing a volume's in-plane region (``source``) with the part of a
  ``size x size`` window at ``starts`` it fills (``window``); the window may overhang."""
  source, window = [], []
  for start, n in zip(starts, shape[:2]):
    lo, hi = max(start, 0), min(start + size, n)
    source.append(slice(lo, hi))
    window.append(slice(lo - start, hi - start))
  return tuple(source), tuple(window)


def _window(volume: np.ndarray, starts, size: int) -> np.ndarray:
  """``volume[starts[0]:+size, starts[1]:+size, ...]``, zero where it leaves the volume."""
  out = np.zeros((size, size) + volume.shape[2:], volume.dtype)
  source, window = _window_slices(starts, size, volume.shape)
  out[window] = volume[source]
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
  grid = _resampled_grid(canonical_shape, canonical_affine, config.spacing)
  if grid is not None:
    images = {m: _resample(v, canonical_affine, grid, order=1) for m, v in images.items()}
    if label is not None:
      label = _resample(label, canonical_affine, grid, order=0).astype(np.uint8)
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
  volume = _window(volume, starts, config.size).transpose(2, 0, 1, 3)
  brain = _window(mask, starts, config.size).transpose(2, 0, 1)
  if label is not None:
    label = _window(label, starts, config.size).transpose(2, 0, 1)
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


def to_original_classes_grid(probabilities: np.ndarray, meta: CaseMeta) -> np.ndarray:
  """``to_original_grid(probabilities, meta, order=1).argmax(-1)`` as uint8 (the classes a
  resampled case's probabilities give on its original grid), the same voxel for voxel but
  interpolating only around the predicted tumour where the grids are axis-aligned (always,
  between our resampled and canonical grids): several times faster on a brain volume."""
  if not meta.resampled:
    return to_original_grid(probabilities, meta, order=1).argmax(-1).astype(np.uint8)
  out = _undo_window(probabilities, meta)
  transform = np.linalg.inv(meta.affine("resampled")) @ meta.affine("canonical")
  if not np.allclose(transform[:3, :3], np.diag(np.diag(transform[:3, :3]))):
    return to_original_grid(probabilities, meta, order=1).argmax(-1).astype(np.uint8)
  classes = _argmax_linear_axis_aligned(out, transform, tuple(meta.canonical_shape))
  return _undo_orientation(classes, meta)


def _undo_window(volume: np.ndarray, meta: CaseMeta) -> np.ndarray:
  """``[Z, X, Y, ...]`` on the pre-processed grid -> ``[X, Y, Z, ...]`` on the resampled
  one, 0 outside the window."""
  volume = np.moveaxis(np.asarray(volume), 0, 2)  # [X, Y, Z, ...]
  resampled_shape = tuple(meta.resampled_shape)
  out = np.zeros(resampled_shape[:2] + volume.shape[2:], volume.dtype)
  source, window = _window_slices(meta.window_start, meta.size, resampled_shape)
  out[source] = volume[window]
  return out


def _undo_orientation(volume: np.ndarray, meta: CaseMeta) -> np.ndarray:
  ras = nib.orientations.axcodes2ornt("RAS")
  return nib.orientations.apply_orientation(
      volume, nib.orientations.ornt_transform(ras, np.asarray(meta.orientation)))


def to_original_grid(volume: np.ndarray, meta: CaseMeta, order: int = 0) -> np.ndarray:
  """Maps a ``[Z, X, Y]`` (or ``[Z, X, Y, C]``) array on the pre-processed grid back onto
  the original file's grid: undoes the window, the resampling (``order`` 0 for labels, 1
  for intensities or probabilities) and the reorientation. Outside the window it is 0."""
  volume = np.asarray(volume)
  out = _undo_window(volume, meta)
  if meta.resampled:
    grid = (tuple(meta.canonical_shape), meta.affine("canonical"))
    affine = meta.affine("resampled")
    transform = np.linalg.inv(affine) @ grid[1]  # canonical voxel -> resampled voxel
    if order == 1 and np.allclose(transform[:3, :3], np.diag(np.diag(transform[:3, :3]))):
      out = _linear_axis_aligned(out.astype(np.float32), transform, grid[0])
    else:
      channels = [out] if out.ndim == 3 else [out[..., c] for c in range(out.shape[-1])]
      back = [_resample(c.astype(np.float32), affine, grid, order) for c in channels]
      back = back[0] if out.ndim == 3 else np.stack(back, axis=-1)
      out = back.astype(volume.dtype) if order == 0 else back
  return _undo_orientation(out, meta)


def _sources(case: Case) -> dict:
  paths = list(case.paths.values()) + ([case.label_path] if case.label_path else [])
  return {p: [os.path.getsize(p), os.path.getmtime(p)] for p in paths}


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
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "image.npy", volume)
    if label is not None:
      np.save(tmp / "label.npy", label)
    (tmp / "meta.json").write_text(meta.to_json())
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
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
  (root / "settings.json").write_text(json.dumps(dataclasses.asdict(config), default=list))
  outputs = [root / case.dataset / case.case_id for case in cases]
  todo = [i for i, case in enumerate(cases) if not _is_current(outputs[i], case)]
  problems = {}
  bar = tqdm(total=len(todo), desc="pre-processing", unit="case", disable=not progress or
             not todo, file=sys.stderr)
  if workers > 1 and len(todo) > 1:
    # "spawn": forking a process that has started JAX's threads can deadlock.
    with concurrent.futures.ProcessPoolExecutor(
        min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
      futures = {pool.submit(_process, cases[i], config, outputs[i]): i for i in todo}
      for future in concurrent.futures.as_completed(futures):
        error = future.result()
        if error:
          problems[futures[future]] = error
        bar.update()
  else:
    for i in todo:
      error = _process(cases[i], config, outputs[i])
      if error:
        problems[i] = error
      bar.update()
  bar.close()
  done = [out for i, out in enumerate(outputs) if i not in problems]
  for i, out in enumerate(outputs):
    if i not in problems:
      for why in json.loads((out / "meta.json").read_text()).get("ignored", {}).values():
        print(f"warning: case {cases[i].case_id}: {why}", file=sys.stderr)
  return done, [problems[i] for i in sorted(problems)]


def report(problems, stream=None):
  """Prints the summary of skipped cases (to stderr by default)."""
  stream = stream or sys.stderr
  if problems:
    print(f"{len(problems)} case(s) skipped:", file=stream)
    for problem in problems:
      print(f"  - {problem}", file=stream)
