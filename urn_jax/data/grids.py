"""Grids: the pre-processing grid and the original file's, and the maps between them.

Pre-processing (``urn_jax.data.preprocess``) turns a case's voxel axes to RAS, resamples
them to the working voxel size when it differs (``resampled_grid``, ``resample``) and cuts
an in-plane window around the brain (``window``). Everything a model predicts on that grid
is mapped back onto the original file's with ``to_original_grid`` (intensities,
probabilities, labels) or ``to_original_classes_grid`` (the classes of probabilities, made
fast): the window undone, the resampling inverted, the axes put back. ``CaseMeta`` keeps
the three grids' shapes and affines.
"""

from __future__ import annotations

import nibabel as nib
import nibabel.processing
import numpy as np

from urn_jax.data.meta import CaseMeta


def resampled_grid(shape, affine, spacing: float):
  """The grid ``(shape, affine)`` with ``spacing`` mm voxels, same orientation and origin;
  None when the voxels already have that size."""
  zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
  if np.allclose(zooms, spacing, atol=1e-3):
    return None
  resampled = affine.copy()
  resampled[:3, :3] = affine[:3, :3] / zooms * spacing
  return tuple(int(np.ceil(n * z / spacing)) for n, z in zip(shape, zooms)), resampled


def resample(data, affine, grid, order):
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


def window_slices(starts, size: int, shape):
  """Slices pairing a volume's in-plane region (``source``) with the part of a
  ``size x size`` window at ``starts`` it fills (``part``); the window may overhang."""
  source, part = [], []
  for start, n in zip(starts, shape[:2]):
    lo, hi = max(start, 0), min(start + size, n)
    source.append(slice(lo, hi))
    part.append(slice(lo - start, hi - start))
  return tuple(source), tuple(part)


def window(volume: np.ndarray, starts, size: int) -> np.ndarray:
  """``volume[starts[0]:+size, starts[1]:+size, ...]``, zero where it leaves the volume."""
  out = np.zeros((size, size) + volume.shape[2:], volume.dtype)
  source, part = window_slices(starts, size, volume.shape)
  out[part] = volume[source]
  return out


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
  source, part = window_slices(meta.window_start, meta.size, resampled_shape)
  out[source] = volume[part]
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
      back = [resample(c.astype(np.float32), affine, grid, order) for c in channels]
      back = back[0] if out.ndim == 3 else np.stack(back, axis=-1)
      out = back.astype(volume.dtype) if order == 0 else back
  return _undo_orientation(out, meta)


