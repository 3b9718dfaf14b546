"""Lesion-wise metrics, as the BraTS challenges rank since 2023, and the normalized surface Dice.

A volume-wise Dice lets one large lesion hide a missed small one; lesion-wise metrics score
every lesion. Two definitions are in use, both here, per region (ET, TC, WT of
``urn_jax.labels``) and both on boolean masks with the voxel spacing in mm:

``brats2023`` (``lesion_wise``): the BraTS 2023-2024 evaluation (Saluja et al.; the
challenge's ``metrics.py``, ``get_LesionWiseScores`` and ``get_LesionWiseResults``), with the
glioma settings ``BRATS_2023_GLIOMA``:

- lesions: the truth is dilated (``dilation`` iterations of the 3x3x3 cross-and-edges
  element, ``scipy.ndimage.generate_binary_structure(3, 2)``); each 26-connected component
  of the dilated truth, intersected with the truth itself, is one lesion, so lesions closer
  than the dilation count as one;
- predicted lesions: the 26-connected components of the prediction; a component matches
  a lesion when it touches the lesion dilated by ``dilation``; the lesion's Dice and HD95
  compare the union of its whole matched components with the lesion (undilated);
- lesions of ``min_volume_mm3`` or less (voxels times the voxel volume) are left out, and so
  are the components that match only them; a component that matches no lesion is a false
  positive, whatever its size;
- a missed lesion or a false positive scores Dice 0 and HD95 ``penalty_hd95`` (374 mm in
  the 2023 code); the case's lesion-wise Dice is the sum of the lesions' Dice over (the
  lesions kept + the false positives), its HD95 likewise with the penalties;
- nothing to score (no lesion kept, no false positive, e.g. both empty): Dice 1, HD95 0.

Each lesion's HD95 is ``urn_jax.metrics.hd95`` (surface voxels, the larger of the two directed
95th percentiles); the challenge's code takes DeepMind's surface-distance instead, which
weighs surface elements by their area, so the two can differ by a fraction of a voxel on a
ragged surface. Everything else above is that code's.

``panoptica`` (``panoptic``): the BraTS evaluation package built on panoptica (Kofler et al.,
2023; its glioma configuration): instances are the 26-connected components of either mask,
without dilation or size threshold; predicted and true instances are matched one to one by
a maximum-weight bipartite matching on their Dice, any overlap allowed; the Dice and HD95
are averaged over the matched pairs only (``sq_dice``, ``sq_hd95``), with the detection
quality ``rq = tp / (tp + (fp + fn) / 2)`` and the panoptic quality ``pq_dice = sq_dice *
rq`` reporting what went unmatched. Nothing matched: ``sq_dice`` 0 and ``sq_hd95`` the
penalty; no instance on either side: Dice 1, HD95 0, ``rq`` 1 (panoptica itself gives NaN
there, which the package then leaves out of its means; we keep every case in the means,
as ``urn_jax.metrics`` does).

Against the official BraTS evaluation package (``BraTS-evaluation`` 0.0.10 on panoptica
2.1.7, glioma configuration; ``tests/test_official_metrics.py``): the Dice, the matched
instances' Dice and counts, and ``rq`` agree. Where they differ it is theirs that departs
from the physical definition: their volume-wise HD95 pools both directions into one
percentile and ignores the voxel spacing; their instance-wise HD95 takes the spacing in
reverse axis order (SimpleITK's arrays are z, y, x; the spacing x, y, z); empty regions
give NaN (both empty) or infinity; and BraTS 2018 label maps (ET = 4) lose their enhancing
tumour to the resection-cavity label, where ``urn_jax.labels`` refuses the value.

``nsd`` is the normalized surface Dice at a tolerance in mm (Nikolov et al., 2021): the
surface voxels of each mask within the tolerance of the other's surface, over all surface
voxels of both. Surfaces are ``urn_jax.metrics``'s (counted as voxels, as MONAI's
``compute_surface_dice`` without sub-voxels does; DeepMind's weighs them by area). Both
empty: 1; exactly one empty: 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage, optimize

from urn_jax.labels import REGIONS, region_mask
from urn_jax.metrics import _box, _masks, _spacing, _surface, dice, hd95, region_distance

LESION_METRICS = ("lesion_dice", "lesion_hd95", "lesions_tp", "lesions_fp", "lesions_fn")
PANOPTIC_METRICS = ("sq_dice", "sq_hd95", "rq", "pq_dice")
DEFINITIONS = ("brats2023", "panoptica")
_CONNECTIVITY = np.ones((3, 3, 3), bool)  # 26-connectivity
_DILATION = ndimage.generate_binary_structure(3, 2)


@dataclasses.dataclass(frozen=True)
class LesionWiseSettings:
  """The parameters of the BraTS 2023 lesion-wise metrics (module docstring)."""

  dilation: int = 3
  min_volume_mm3: float = 50.0
  penalty_hd95: float = 374.0


BRATS_2023_GLIOMA = LesionWiseSettings()


def _grown_box(box, margin: int, shape):
  """``box`` (slices) grown by ``margin`` voxels on every side, clipped to ``shape``."""
  return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n))
               for s, n in zip(box, shape))


def _cropped(margin: int, pred, truth, distance=None):
  """``pred``, ``truth`` and the truth's distance map (or None) cut to the bounding box of
  either mask, grown by ``margin`` voxels: every lesion, component and dilation of the
  metrics lies inside it, so they are exact there, and a whole 240 x 240 x 155 volume per
  region would cost a second."""
  box = _grown_box(_box(pred, truth), margin, pred.shape)
  return pred[box], truth[box], None if distance is None else distance[box]


def _components(mask):
  labels, count = ndimage.label(mask, _CONNECTIVITY)
  return labels, count


def _grown(mask, iterations):
  """``mask`` dilated ``iterations`` times by the 18-neighbourhood element, computed inside
  its bounding box grown by ``iterations`` voxels (exact, and fast on a whole volume)."""
  if iterations == 0:
    return mask
  box = _grown_box(_box(mask), iterations, mask.shape)
  out = np.zeros_like(mask)
  out[box] = ndimage.binary_dilation(mask[box], _DILATION, iterations=iterations)
  return out


def true_lesions(truth, dilation: int):
  """``(labels, count)``: the lesions of ``truth`` (module docstring), numbered 1..count."""
  grown, count = _components(_grown(truth, dilation))
  return np.where(truth, grown, 0), count


def lesion_wise(pred, truth, spacing, settings: LesionWiseSettings = BRATS_2023_GLIOMA,
                truth_distance=None) -> dict:
  """BraTS 2023 lesion-wise Dice and HD95 of two boolean masks, with the counts of true
  positive, false positive and false negative lesions (``LESION_METRICS``).

  ``truth_distance``: ``urn_jax.metrics.surface_distance_map(truth, spacing)``. A lesion
  that is the whole truth (one lesion, the usual glioma) then takes its HD95 from it, as
  the volume-wise HD95 does, instead of from two distance transforms of the box of its
  matched components, which an untrained model's specks stretch to the whole brain (a
  second and a half there). The numbers are the same."""
  pred, truth = _masks(pred, truth, names=("pred", "truth"))
  spacing = _spacing(spacing, pred.ndim)
  voxel_mm3 = float(np.prod(spacing))
  pred, truth, truth_distance = _cropped(settings.dilation + 1, pred, truth, truth_distance)
  lesions, count = true_lesions(truth, settings.dilation)
  components, _ = _components(pred)
  matched, dices, distances, found = set(), [], [], 0
  for lesion in range(1, count + 1):
    mask = lesions == lesion
    touching = np.unique(components[_grown(mask, settings.dilation)])
    touching = touching[touching != 0]
    matched.update(touching.tolist())
    if np.count_nonzero(mask) * voxel_mm3 <= settings.min_volume_mm3:
      continue
    if touching.size == 0:
      dices.append(0.0)
      distances.append(settings.penalty_hd95)
      continue
    found += 1
    hit = np.isin(components, touching)
    dices.append(dice(hit, mask))
    distances.append(hd95(hit, mask, spacing, truth_distance if count == 1 else None))
  false_positives = len(set(np.unique(components).tolist()) - matched - {0})
  scored = len(dices) + false_positives
  if scored == 0:
    lesion_dice, lesion_hd95 = 1.0, 0.0
  else:
    lesion_dice = sum(dices) / scored
    lesion_hd95 = (sum(distances) + false_positives * settings.penalty_hd95) / scored
  return {"lesion_dice": float(lesion_dice), "lesion_hd95": float(lesion_hd95),
          "lesions_tp": found, "lesions_fp": false_positives, "lesions_fn": len(dices) - found}


def panoptic(pred, truth, spacing, penalty_hd95: float = BRATS_2023_GLIOMA.penalty_hd95,
             truth_distance=None) -> dict:
  """Panoptica's instance-wise metrics of two boolean masks (``PANOPTIC_METRICS``, module
  docstring), with the instance counts ``instances_tp``, ``instances_fp``, ``instances_fn``.
  ``truth_distance``: as for ``lesion_wise``, used when the truth is one instance."""
  pred, truth = _masks(pred, truth, names=("pred", "truth"))
  spacing = _spacing(spacing, pred.ndim)
  pred, truth, truth_distance = _cropped(1, pred, truth, truth_distance)
  pred_labels, n_pred = _components(pred)
  true_labels, n_true = _components(truth)
  pairs = []
  if n_pred and n_true:
    overlap = np.zeros((n_true + 1, n_pred + 1), np.int64)
    np.add.at(overlap, (true_labels[pred & truth], pred_labels[pred & truth]), 1)
    sizes_true = np.bincount(true_labels.ravel(), minlength=n_true + 1)
    sizes_pred = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    scores = 2 * overlap[1:, 1:] / (sizes_true[1:, None] + sizes_pred[None, 1:])
    rows, cols = optimize.linear_sum_assignment(scores, maximize=True)
    pairs = [(r + 1, c + 1) for r, c in zip(rows, cols) if scores[r, c] > 0]
  tp = len(pairs)
  fp, fn = n_pred - tp, n_true - tp
  counts = {"instances_tp": tp, "instances_fp": fp, "instances_fn": fn}
  if n_pred + n_true == 0:
    return {"sq_dice": 1.0, "sq_hd95": 0.0, "rq": 1.0, "pq_dice": 1.0, **counts}
  if tp == 0:
    return {"sq_dice": 0.0, "sq_hd95": float(penalty_hd95), "rq": 0.0, "pq_dice": 0.0, **counts}
  dices, distances = [], []
  for t, p in pairs:
    true_mask, pred_mask = true_labels == t, pred_labels == p
    dices.append(dice(pred_mask, true_mask))
    distances.append(hd95(pred_mask, true_mask, spacing,
                          truth_distance if n_true == 1 else None))
  rq = tp / (tp + 0.5 * (fp + fn))
  sq_dice = float(np.mean(dices))
  return {"sq_dice": sq_dice, "sq_hd95": float(np.mean(distances)), "rq": float(rq),
          "pq_dice": sq_dice * rq, **counts}


def nsd(pred, truth, spacing, tolerance_mm: float = 1.0) -> float:
  """Normalized surface Dice at ``tolerance_mm`` (module docstring)."""
  pred, truth = _masks(pred, truth, names=("pred", "truth"))
  spacing = _spacing(spacing, pred.ndim)
  if not pred.any() and not truth.any():
    return 1.0
  if not pred.any() or not truth.any():
    return 0.0
  box = _box(pred, truth)
  pred_surface, truth_surface = _surface(pred[box]), _surface(truth[box])
  surfaces = np.count_nonzero(pred_surface) + np.count_nonzero(truth_surface)
  # Only surface voxels within the tolerance of the other mask's surface count, and every
  # such pair lies in the truth's bounding box grown by ``reach`` voxels: a voxel outside
  # it is more than ``reach`` voxels, so more than the tolerance, from every truth voxel
  # along some axis. The distance transforms run there, which is exact for every distance
  # up to the tolerance (a nearer surface voxel than that is inside too) and keeps them
  # tumour-sized where an untrained model's specks stretch ``box`` to the whole volume.
  reach = max(int(np.ceil(tolerance_mm / spacing.min())), 0)
  near = _grown_box(_box(truth[box]), reach, truth_surface.shape)
  pred_surface, truth_surface = pred_surface[near], truth_surface[near]
  close = np.count_nonzero(
      ndimage.distance_transform_edt(~truth_surface, sampling=spacing)[pred_surface]
      <= tolerance_mm)
  if pred_surface.any():
    close += np.count_nonzero(
        ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[truth_surface]
        <= tolerance_mm)
  return float(close / surfaces)


def lesion_metrics(pred_classes, truth_classes, spacing, definition: str = "brats2023",
                   settings: LesionWiseSettings = BRATS_2023_GLIOMA,
                   tolerance_mm: float = 1.0, truth_distances=None) -> dict:
  """Per region of ``urn_jax.labels.REGIONS``, on volumes of class indices: the lesion-wise
  metrics of ``definition`` and the NSD at ``tolerance_mm``, as a flat dict
  ``{"ET/lesion_dice": ..., "ET/nsd": ..., ...}`` (``urn_jax.metrics.segmentation_metrics``'s
  shape, so the two merge into one row). ``truth_distances``: the dict of the truth's
  distance maps that ``segmentation_metrics`` fills, for the HD95 of a lesion that is the
  whole region (``lesion_wise``)."""
  if definition not in DEFINITIONS:
    raise ValueError(f"definition must be one of {DEFINITIONS}, got {definition!r}")
  row = {}
  for region in REGIONS:
    pred = region_mask(pred_classes, region)
    truth = region_mask(truth_classes, region)
    distance = (None if truth_distances is None else
                region_distance(truth_distances, truth_classes, region, spacing))
    values = (lesion_wise(pred, truth, spacing, settings, distance)
              if definition == "brats2023"
              else panoptic(pred, truth, spacing, settings.penalty_hd95, distance))
    values["nsd"] = nsd(pred, truth, spacing, tolerance_mm)
    row.update({f"{region}/{name}": float(value) for name, value in values.items()})
  return row
