"""Evaluation metrics on whole 3D volumes: Dice, HD95, sensitivity, specificity and PSNR.

Pure numpy/scipy, so evaluation needs no accelerator and the numbers do not depend on the
JAX backend. Training's validation pools its Dice with ``dice_from_counts`` too.
Segmentations are volumes of class indices 0..3 (``urn_jax.labels``):

  class 0 = background                          (BraTS label 0)
  class 1 = necrotic / non-enhancing core       (BraTS label 1)
  class 2 = peritumoural edema                  (BraTS label 2)
  class 3 = enhancing tumour                    (BraTS label 4; label 3 from BraTS 2023 on)

and are scored on the three nested regions of the BraTS challenge (``labels.REGIONS``):

  ET, enhancing tumour = BraTS labels {4}       = classes {3}
  TC, tumour core      = BraTS labels {1, 4}    = classes {1, 3}
  WT, whole tumour     = BraTS labels {1, 2, 4} = classes {1, 2, 3}

The conventions, in one place (each function's docstring repeats its own), follow the
BraTS evaluation (Menze et al., 2015, and the BraTS 2023 "legacy" metrics of the challenge's
evaluation code), so that a case without enhancing tumour neither breaks the means (no NaN)
nor is silently dropped:

  both prediction and truth empty:  Dice 1, sensitivity 1, HD95 0
  exactly one of them empty:        Dice 0, sensitivity 0, HD95 = the volume's diagonal
                                    (373.13 mm for 240 x 240 x 155 at 1 mm)
  HD95 otherwise:                   max of the two directed 95th percentiles of the
                                    distances between surface voxels
  specificity:                      over the whole volume; 1 when there are no negatives

``segmentation_metrics`` takes class volumes and refuses any value outside 0..3 (a raw
BraTS label map, 0/1/2/4, would otherwise score its enhancing tumour as absent). Lesion by
lesion (BraTS since 2023, panoptica) and the normalized surface Dice, each with its
conventions and source: ``urn_jax.lesion_metrics``, built on the functions here.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, spatial

from urn_jax.labels import REGIONS, region_mask

SEGMENTATION_METRICS = ("dice", "hd95", "sensitivity", "specificity")


def _masks(*masks, names):
  """The masks as numpy bool arrays of one shape.

  Bool is required rather than cast to: a volume of class indices passed by mistake would
  otherwise be scored silently as the whole tumour.
  """
  arrays = [np.asarray(m) for m in masks]
  for array, name in zip(arrays, names):
    if array.dtype != bool:
      raise TypeError(f"{name} must be a boolean mask, got dtype {array.dtype}")
  _same_shape(arrays, names)
  return arrays


def _same_shape(arrays, names):
  if any(a.shape != arrays[0].shape for a in arrays):
    shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays))
    raise ValueError(f"shapes must match: {shapes}")


def _spacing(spacing, ndim: int) -> np.ndarray:
  spacing = np.asarray(spacing, np.float64)
  if spacing.shape != (ndim,) or not np.all(np.isfinite(spacing) & (spacing > 0)):
    raise ValueError(f"spacing must have one positive entry per axis ({ndim}), "
                     f"got {spacing.tolist()}")
  return spacing


def dice_from_counts(both, predicted, true) -> float:
  """2|A∩B| / (|A| + |B|) from the counts of voxels in both, predicted and true; 1.0 when
  both are empty (nothing to find, nothing found, as in BraTS), 0.0 when exactly one is."""
  total = predicted + true
  return float(2.0 * both / total) if total else 1.0


def dice(pred, truth) -> float:
  """``dice_from_counts`` of two boolean masks."""
  pred, truth = _masks(pred, truth, names=("pred", "truth"))
  return dice_from_counts(np.count_nonzero(pred & truth), np.count_nonzero(pred),
                          np.count_nonzero(truth))


def sensitivity(pred, truth) -> float:
  """TP / (TP + FN). When the truth is empty: 1.0 if the prediction is empty too (nothing
  to find, nothing found), 0.0 if it is not (BraTS: exactly one empty scores 0)."""
  pred, truth = _masks(pred, truth, names=("pred", "truth"))
  positives = np.count_nonzero(truth)
  if positives == 0:
    return 0.0 if pred.any() else 1.0
  return np.count_nonzero(pred & truth) / positives


def specificity(pred, truth, within=None) -> float:
  """TN / (TN + FP); 1.0 when there are no negatives.

  By default over the whole volume, as the BraTS evaluation computes it; there the
  background outside the head dominates and specificity is close to 1 for any sensible
  prediction. ``within`` (e.g. the brain mask) restricts the count to its voxels, which
  makes the number more telling.
  """
  if within is None:
    pred, truth = _masks(pred, truth, names=("pred", "truth"))
    negatives = ~truth
  else:
    pred, truth, within = _masks(pred, truth, within, names=("pred", "truth", "within"))
    negatives = ~truth & within
  count = np.count_nonzero(negatives)
  if count == 0:
    return 1.0
  return np.count_nonzero(negatives & ~pred) / count


def _surface(mask) -> np.ndarray:
  """Voxels of ``mask`` with at least one face (6-connected) neighbour outside it.

  ``border_value=0`` counts everything beyond the array as outside, so mask voxels on the
  array's faces are surface voxels: the object ends there. This is medpy's definition
  (``binary_erosion`` with its default border value and ``generate_binary_structure(ndim,
  1)``).
  """
  cross = ndimage.generate_binary_structure(mask.ndim, 1)
  return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def hd95(pred, truth, spacing, truth_distance=None) -> float:
  """The 95 % Hausdorff distance, in the units of ``spacing`` (mm).

  Surface voxels are as in ``_surface``. For every surface voxel of ``pred`` the distance
  to the nearest surface voxel of ``truth`` is taken, and vice versa, in physical units
  (``distance_transform_edt`` with ``sampling=spacing``, so anisotropic voxels are
  handled). ``truth_distance``: ``surface_distance_map(truth, spacing)``, when many
  predictions are scored against one truth. HD95 is the larger of the two directed 95th
  percentiles (numpy's default linear interpolation): the BraTS 2023 "legacy" definition,
  which DeepMind's surface-distance and MONAI's ``compute_hausdorff_distance(...,
  percentile=95)`` also take. medpy's ``hd95`` pools both directions into one percentile
  instead, which is never larger; we do not compute it. What the tests check: equality
  with a brute-force computation of this definition (all pairwise distances between
  surface voxels found by explicit neighbour tests), on random shapes and spacings; not
  equality with those libraries, whose surfaces differ in detail (surface-distance weighs
  surface elements by area).

  Empty masks: both empty -> 0.0 (perfect agreement); exactly one empty -> the diagonal
  of the volume's physical extent, sqrt(sum((shape * spacing)**2)), the largest distance
  possible in the volume, following the BraTS 2021+ evaluation (373.13 mm for
  240x240x155 at 1 mm). NaN would be more honest but would break every mean.
  """
  pred, truth = _masks(pred, truth, names=("pred", "truth"))
  spacing = _spacing(spacing, pred.ndim)
  pred_empty, truth_empty = not pred.any(), not truth.any()
  if pred_empty and truth_empty:
    return 0.0
  if pred_empty or truth_empty:
    return float(np.sqrt(np.sum((np.asarray(pred.shape) * spacing)**2)))
  # Work on the bounding box of pred | truth grown by one voxel (clipped to the array):
  # 240x240x155 volumes make a full-size distance transform cost seconds, a tumour-sized
  # box a few ms. It is exact: every surface voxel of either mask lies inside the box, so
  # each nearest surface voxel, searched for by the distance transform, is inside it too;
  # and the erosion sees the same neighbours, since the extra layer holds only voxels
  # outside both masks, and where the box meets the array's faces ``border_value=0``
  # treats the outside exactly as on the whole array.
  box = _box(pred, truth)
  pred_surface, truth_surface = _surface(pred[box]), _surface(truth[box])
  if truth_distance is None:
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=spacing)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[truth_surface]
  else:
    # The truth's distance map, made once per case (``surface_distance_map``), answers one
    # direction by lookup; the other goes through a k-d tree of the predicted surface,
    # queried only at the truth's few surface voxels. Both exact, and neither grows with
    # the box, which an untrained or collapsed model's scattered specks stretch to the
    # whole volume (4 s per region there with the distance transforms).
    to_truth = truth_distance[box][pred_surface]
    pred_points = np.argwhere(pred_surface) * spacing
    to_pred = spatial.cKDTree(pred_points).query(np.argwhere(truth_surface) * spacing)[0]
  return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def surface_distance_map(mask, spacing) -> np.ndarray:
  """Distance (in the units of ``spacing``) from every voxel to the nearest surface voxel
  of ``mask``, float64 (``distance_transform_edt``'s own numbers); ``hd95(...,
  truth_distance=)`` takes it to score many predictions against one truth quickly. All
  infinite when the mask is empty."""
  mask = _masks(mask, names=("mask",))[0]
  if not mask.any():
    return np.full(mask.shape, np.inf)
  spacing = _spacing(spacing, mask.ndim)
  return ndimage.distance_transform_edt(~_surface(mask), sampling=spacing)


def region_distance(truth_distances: dict, truth_classes, region: str, spacing):
  """The ``surface_distance_map`` of ``region`` in ``truth_classes``, made the first time
  it is asked for and kept in ``truth_distances`` (a dict per truth volume)."""
  if region not in truth_distances:
    truth_distances[region] = surface_distance_map(region_mask(truth_classes, region),
                                                   spacing)
  return truth_distances[region]


def segmentation_metrics(pred_classes, truth_classes, spacing, truth_distances=None) -> dict:
  """Every metric of ``SEGMENTATION_METRICS`` for every region, on whole volumes of class
  indices, as a flat dict {"ET/dice": ..., "ET/hd95": ..., ..., "WT/specificity": ...} of
  Python floats: one CSV row or JSON record per case and input combination, without
  nesting to undo. ``truth_distances``: a dict kept per truth volume, filled here with
  each region's ``surface_distance_map`` the first time, which makes HD95 fast for every
  later prediction of the same case (``urn_jax.lesion_metrics.lesion_metrics`` takes the
  same dict). Looked up there, the distances to the truth are rounded to float32, as this
  function has always kept its maps: every HD95 it gave before, it gives again."""
  pred_classes, truth_classes = np.asarray(pred_classes), np.asarray(truth_classes)
  _same_shape([pred_classes, truth_classes], ("pred_classes", "truth_classes"))
  for array, name in ((pred_classes, "pred_classes"), (truth_classes, "truth_classes")):
    _check_classes(array, name)
  # Everything is computed in the bounding box of either tumour grown by one voxel (exact,
  # as in ``hd95``); the voxels outside it are true negatives of every region, added back
  # for the specificity. A whole volume per region and metric costs seconds per case.
  box = _box(pred_classes > 0, truth_classes > 0)
  outside = pred_classes.size - pred_classes[box].size
  row = {}
  for region in REGIONS:
    pred, truth = region_mask(pred_classes[box], region), region_mask(truth_classes[box], region)
    distance = None
    if truth_distances is not None:
      distance = region_distance(truth_distances, truth_classes, region, spacing)
      distance = distance[box].astype(np.float32)
    negatives = np.count_nonzero(~truth) + outside
    false_positives = np.count_nonzero(pred & ~truth)
    values = {"dice": dice(pred, truth), "sensitivity": sensitivity(pred, truth),
              "specificity": (negatives - false_positives) / negatives if negatives else 1.0}
    if pred.any() and truth.any():
      values["hd95"] = hd95(pred, truth, spacing, distance)
    else:  # the conventions for empty masks need the whole volume's extent
      values["hd95"] = hd95(region_mask(pred_classes, region),
                            region_mask(truth_classes, region), spacing)
    for name in SEGMENTATION_METRICS:
      row[f"{region}/{name}"] = float(values[name])
  return row


def _check_classes(classes, name):
  """Class indices 0..3 only: a BraTS label map (0, 1, 2, 4) passed by mistake would score
  its enhancing tumour (4) as no region at all."""
  if not (np.issubdtype(classes.dtype, np.integer) or classes.dtype == bool):
    raise TypeError(f"{name} must hold integer class indices 0..3, got dtype {classes.dtype}")
  if classes.size and (classes.min() < 0 or classes.max() > 3):
    bad = np.unique(classes[(classes < 0) | (classes > 3)])
    raise ValueError(
        f"{name} holds values {bad.tolist()} outside the classes 0..3 (0 background, 1 core, "
        "2 edema, 3 enhancing); convert BraTS labels (0, 1, 2, 4) with "
        "urn_jax.labels.labels_to_classes first")


def _box(*masks):
  """The bounding box of the union of ``masks`` grown by one voxel, clipped to the array;
  a one-voxel box when all are empty."""
  union = np.logical_or.reduce(masks)
  box = []
  for axis in range(union.ndim):
    present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
    if present.size == 0:
      return tuple(slice(0, 1) for _ in range(union.ndim))
    box.append(slice(max(present[0] - 1, 0), min(present[-1] + 2, union.shape[axis])))
  return tuple(box)


def psnr(synthesized, reference, mask, data_range: float | None = None) -> float:
  """Peak signal-to-noise ratio, in dB, of ``synthesized`` against ``reference`` within
  ``mask`` (the brain): 10 log10(range**2 / MSE), with the MSE over the mask's voxels.

  The images are the pre-processed, z-scored intensities the network works with; they
  have no fixed peak value, so the data range is max - min of the reference inside the
  mask, unless ``data_range`` gives it (to compare parts of one image, e.g. its tumour
  and its healthy voxels, against the range of the whole). It is taken from the reference,
  not from both images, because the synthesized image can overshoot: a prediction with
  spurious extremes would otherwise widen the range and be rewarded with a higher PSNR.
  Returns inf when the MSE is 0; an empty mask raises ValueError, as there is nothing to
  compare.
  """
  synthesized, reference = np.asarray(synthesized), np.asarray(reference)
  mask = np.asarray(mask)
  if mask.dtype != bool:
    raise TypeError(f"mask must be a boolean mask, got dtype {mask.dtype}")
  _same_shape([synthesized, reference, mask], ("synthesized", "reference", "mask"))
  if not mask.any():
    raise ValueError("the mask is empty: PSNR is undefined")
  reference = reference[mask].astype(np.float64)
  mse = np.mean((synthesized[mask].astype(np.float64) - reference)**2)
  if mse == 0:
    return float("inf")
  if data_range is None:
    data_range = reference.max() - reference.min()
  return float(10 * np.log10(data_range**2 / mse))
