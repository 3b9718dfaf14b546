"""Metrics: hand-computed values, the BraTS conventions for empty regions, and HD95 against
a brute-force reference on random shapes (which checks the bounding-box cropping)."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from urn_jax.metrics import (REGIONS, dice, hd95, psnr, region_mask, segmentation_metrics,
                             sensitivity, specificity, surface_distance_map)


def _line(*indices, size=10):
  """A 1x1xsize volume with the given voxels set (metrics do not care about ndim)."""
  mask = np.zeros((1, 1, size), bool)
  mask[0, 0, list(indices)] = True
  return mask


def test_dice_sensitivity_specificity_by_hand():
  pred = _line(0, 1, 2, 3)  # 10 voxels: TP = {2, 3}, FP = {0, 1}
  truth = _line(2, 3, 4)  #             FN = {4},    TN = {5..9} = 5
  assert dice(pred, truth) == pytest.approx(4 / 7)  # 2*2 / (4 + 3)
  assert sensitivity(pred, truth) == pytest.approx(2 / 3)  # 2 / (2 + 1)
  assert specificity(pred, truth) == pytest.approx(5 / 7)  # 5 / (5 + 2)
  # Within voxels 1..5: negatives {1, 5}, of which 5 is TN and 1 is FP -> 1/2.
  within = _line(1, 2, 3, 4, 5)
  assert specificity(pred, truth, within=within) == pytest.approx(1 / 2)
  assert dice(pred, pred) == 1.0


def test_empty_conventions():
  empty, some = _line(), _line(3)
  assert dice(empty, empty) == 1.0
  assert dice(some, empty) == dice(empty, some) == 0.0
  assert sensitivity(empty, empty) == 1.0  # nothing to find, nothing found
  assert sensitivity(some, empty) == 0.0  # BraTS: exactly one empty scores 0
  assert sensitivity(empty, some) == 0.0
  everything = np.ones((1, 1, 10), bool)
  assert specificity(empty, everything) == 1.0  # no negatives
  assert specificity(everything, empty) == 0.0  # 0 / 10
  assert specificity(some, empty, within=_line()) == 1.0


def test_validation():
  with pytest.raises(ValueError, match=r"\(1, 1, 10\).*\(1, 1, 9\)"):
    dice(_line(), _line(size=9))
  with pytest.raises(TypeError, match="boolean"):
    dice(np.zeros((2, 2), np.uint8), np.zeros((2, 2), bool))
  for spacing in [(1, 1), (1, 0, 1), (1, -1, 1), (1, np.nan, 1)]:
    with pytest.raises(ValueError, match="spacing"):
      hd95(_line(1), _line(2), spacing)
  with pytest.raises(ValueError, match="shapes"):
    segmentation_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1))


def test_hd95_single_voxels_anisotropic():
  pred, truth = np.zeros((5, 5, 7), bool), np.zeros((5, 5, 7), bool)
  pred[2, 2, 2] = truth[2, 2, 4] = True  # 2 voxels apart along z, 3 mm each
  assert hd95(pred, truth, (1, 1, 3)) == pytest.approx(6.0)
  truth[2, 2, 4], truth[3, 4, 2] = False, True  # sqrt((1*2)^2 + (2*0.5)^2) = sqrt(5)
  assert hd95(pred, truth, (2, 0.5, 3)) == pytest.approx(np.sqrt(5))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd95_shifted_cube(axis):
  spacing = [1.0, 1.5, 2.5]
  cube = np.zeros((12, 12, 12), bool)
  cube[3:8, 3:8, 3:8] = True
  shifted = np.roll(cube, 1, axis=axis)
  # The shifted copy of every surface voxel is a surface voxel of the other cube, so no
  # distance exceeds spacing[axis]; the leading face of one cube and the trailing face of
  # the other (2 x 25 of the 2 x 98 surface voxels, over 5%) lie outside the other cube,
  # exactly spacing[axis] from its nearest face. So the 95th percentile is spacing[axis].
  assert hd95(cube, shifted, spacing) == pytest.approx(spacing[axis])
  assert hd95(cube, cube, spacing) == 0.0


def test_hd95_empty_conventions():
  empty, some = np.zeros((240, 240, 155), bool), np.zeros((240, 240, 155), bool)
  some[100, 100, 70] = True
  assert hd95(empty, empty, (1, 1, 1)) == 0.0
  assert hd95(some, empty, (1, 1, 1)) == pytest.approx(373.13, abs=0.01)  # BraTS value
  assert hd95(empty, some, (1, 2, 1)) == pytest.approx(np.sqrt(240**2 + 480**2 + 155**2))


def _brute_force_hd95(pred, truth, spacing):
  """Surface voxels by explicit face-neighbour checks, all pairwise distances; the larger of
  the two directed 95th percentiles (BraTS 2023 legacy, MONAI, surface-distance)."""

  def surface(mask):
    padded = np.pad(mask, 1)  # beyond the array is outside
    inside = np.ones_like(mask)
    for axis in range(mask.ndim):
      for step in (-1, 1):
        inside &= np.roll(padded, step, axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(mask & ~inside) * spacing

  a, b = surface(pred), surface(truth)
  distances = cdist(a, b)
  return max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95))


def _blob(rng, shape, sigma=2.0, level=1.0):
  noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
  return noise > level * noise.std()


@pytest.mark.parametrize("seed", range(6))
def test_hd95_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  shape = tuple(rng.integers(14, 26, size=3))
  spacing = rng.uniform(0.5, 3.0, size=3)
  pred, truth = _blob(rng, shape), _blob(rng, shape)
  assert pred.any() and truth.any() and not np.array_equal(pred, truth)
  expected = _brute_force_hd95(pred, truth, spacing)
  assert hd95(pred, truth, spacing) == pytest.approx(expected, abs=1e-6)
  # The per-case distance map of the truth gives the same number.
  distance = surface_distance_map(truth, spacing)
  assert hd95(pred, truth, spacing, distance) == pytest.approx(expected, abs=1e-4)


def test_hd95_far_apart_at_the_border():
  """Masks in opposite corners, touching the array's faces: the cropping must change
  neither the surface (array faces count as outside) nor the distances."""
  spacing = np.array([0.9, 1.3, 2.1])
  pred, truth = np.zeros((30, 20, 16), bool), np.zeros((30, 20, 16), bool)
  pred[:4, :3, :5] = True
  pred[0, 5, 0] = True
  truth[-6:, -2:, -3:] = True
  truth[25:, 10:, 15] = True
  fast = hd95(pred, truth, spacing)
  assert fast == pytest.approx(_brute_force_hd95(pred, truth, spacing), abs=1e-6)
  assert hd95(pred, truth, spacing, surface_distance_map(truth, spacing)) == pytest.approx(
      fast, abs=1e-4)
  assert fast > 20  # really far apart


def test_region_masks_and_segmentation_metrics():
  classes = np.array([0, 1, 2, 3, 3, 2]).reshape(1, 1, 6)
  assert region_mask(classes, "ET").tolist() == [[[0, 0, 0, 1, 1, 0]]]
  assert region_mask(classes, "TC").tolist() == [[[0, 1, 0, 1, 1, 0]]]
  assert region_mask(classes, "WT").tolist() == [[[0, 1, 1, 1, 1, 1]]]
  pred = np.array([0, 1, 2, 2, 3, 0]).reshape(1, 1, 6)
  row = segmentation_metrics(pred, classes, (1, 1, 1))
  assert list(row) == [f"{r}/{m}" for r in REGIONS
                       for m in ("dice", "hd95", "sensitivity", "specificity")]
  assert all(type(v) is float for v in row.values())
  assert row["ET/dice"] == pytest.approx(2 / 3)  # pred {4}, truth {3, 4}: 2*1 / (1 + 2)
  assert row["TC/sensitivity"] == pytest.approx(2 / 3)  # pred {1, 4}, truth {1, 3, 4}
  assert row["WT/specificity"] == pytest.approx(1.0)  # the one negative (0) is predicted 0
  assert row["WT/dice"] == pytest.approx(8 / 9)  # pred {1..4}, truth {1..5}: 2*4 / (4 + 5)


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one():
  """A truth of 20 voxels in a row and a prediction of its first voxel only: from the
  prediction every distance is 0, from the truth 0..19 mm. The directed 95th percentiles
  are 0 and 18.05 mm, so HD95 is 18.05 (pooling the 21 distances would give 18.0)."""
  truth, pred = np.zeros((1, 1, 20), bool), np.zeros((1, 1, 20), bool)
  truth[0, 0, :] = True
  pred[0, 0, 0] = True
  assert hd95(pred, truth, (1, 1, 1)) == pytest.approx(np.percentile(np.arange(20.0), 95))
  assert hd95(pred, truth, (1, 1, 1)) == pytest.approx(18.05, abs=1e-9)
  assert np.percentile(np.r_[0.0, np.arange(20.0)], 95) == pytest.approx(18.0)  # pooled
  assert hd95(truth, pred, (1, 1, 1)) == hd95(pred, truth, (1, 1, 1))


@pytest.mark.parametrize("bad", [4, -1])
def test_segmentation_metrics_refuses_values_outside_the_classes(bad):
  """Raw BraTS labels (0/1/2/4) must not be scored as classes: 4 is no class, and the
  enhancing tumour would silently score as a perfect empty region."""
  truth = np.array([0, 1, 2, 3]).reshape(1, 1, 4)
  raw = np.array([0, 1, 2, bad]).reshape(1, 1, 4)
  with pytest.raises(ValueError, match=rf"pred_classes holds values \[{bad}\].*0\.\.3"):
    segmentation_metrics(raw, truth, (1, 1, 1))
  with pytest.raises(ValueError, match=rf"truth_classes holds values \[{bad}\]"):
    segmentation_metrics(truth, raw, (1, 1, 1))
  with pytest.raises(TypeError, match="integer class indices"):
    segmentation_metrics(truth.astype(float), truth, (1, 1, 1))


def test_psnr_by_hand():
  reference = np.array([0.0, 1.0, 3.0, 100.0])
  synthesized = np.array([1.0, 1.0, 1.0, -50.0])
  mask = np.array([True, True, True, False])
  # Inside the mask: range 3 - 0 = 3, MSE (1 + 0 + 4) / 3 = 5/3 -> 10 log10(9 / (5/3)).
  assert psnr(synthesized, reference, mask) == pytest.approx(10 * np.log10(27 / 5))
  assert psnr(reference, reference, mask) == float("inf")
  with pytest.raises(ValueError, match="empty"):
    psnr(synthesized, reference, np.zeros(4, bool))
  with pytest.raises(ValueError, match="shapes"):
    psnr(synthesized[:3], reference, mask)


def test_a_small_tumour_in_a_large_volume_scores_as_on_the_whole_volume():
  """``segmentation_metrics`` works in the tumour's bounding box; every number must be the
  one of the whole volume: specificity counts the true negatives outside the box too, and a
  region empty on one side only gets the diagonal of the volume, not of the box."""
  shape, spacing = (60, 50, 40), (1.0, 1.2, 2.0)
  truth, pred = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
  truth[20:26, 20:25, 10:14] = 2   # edema
  truth[22:24, 22:24, 11:13] = 3   # enhancing tumour inside it
  pred[21:27, 20:25, 10:14] = 2    # edema, shifted by one voxel: some false positives
  row = segmentation_metrics(pred, truth, spacing)  # no ET predicted at all
  for region in REGIONS:
    p, t = region_mask(pred, region), region_mask(truth, region)
    assert row[f"{region}/specificity"] == pytest.approx(specificity(p, t)), region
    assert row[f"{region}/dice"] == pytest.approx(dice(p, t)), region
    assert row[f"{region}/hd95"] == pytest.approx(hd95(p, t, spacing)), region
  diagonal = float(np.sqrt(np.sum((np.asarray(shape) * spacing) ** 2)))
  assert row["ET/hd95"] == pytest.approx(diagonal)  # ET empty in the prediction only
  assert row["TC/hd95"] == pytest.approx(diagonal)
  assert 0.99 < row["WT/specificity"] < 1.0  # 20 false positives among 119,880 negatives
  flipped = segmentation_metrics(truth, pred, spacing)  # ET empty in the truth only
  assert flipped["ET/hd95"] == pytest.approx(diagonal)
  assert flipped["ET/dice"] == 0.0 and flipped["ET/sensitivity"] == 0.0
