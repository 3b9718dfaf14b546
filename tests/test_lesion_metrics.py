"""Lesion-wise metrics (urn_jax.lesion_metrics) on volumes whose answers are known by hand:
each test places cubes of tumour and states what the BraTS 2023 lesion-wise definition, the
panoptica one and the normalized surface Dice must give."""

import numpy as np
import pytest

from urn_jax import lesion_metrics as L
from urn_jax.metrics import _surface, hd95

SHAPE = (40, 40, 40)
ONE_MM = (1.0, 1.0, 1.0)


def cube(mask, corner, size):
  z, y, x = corner
  mask[z:z + size, y:y + size, x:x + size] = True
  return mask


def empty():
  return np.zeros(SHAPE, bool)


def test_both_empty_scores_perfectly():
  assert L.lesion_wise(empty(), empty(), ONE_MM) == {
      "lesion_dice": 1.0, "lesion_hd95": 0.0, "lesions_tp": 0, "lesions_fp": 0,
      "lesions_fn": 0}
  got = L.panoptic(empty(), empty(), ONE_MM)
  assert (got["sq_dice"], got["sq_hd95"], got["rq"]) == (1.0, 0.0, 1.0)
  assert L.nsd(empty(), empty(), ONE_MM) == 1.0


def test_a_found_a_missed_and_a_false_lesion_weigh_one_third_each():
  truth = cube(cube(empty(), (2, 2, 2), 5), (25, 25, 25), 5)  # two lesions of 125 voxels
  pred = cube(cube(empty(), (2, 2, 2), 5), (2, 30, 2), 4)     # the first, and a false one
  got = L.lesion_wise(pred, truth, ONE_MM)
  assert got["lesions_tp"] == 1 and got["lesions_fn"] == 1 and got["lesions_fp"] == 1
  assert got["lesion_dice"] == pytest.approx(1 / 3)
  assert got["lesion_hd95"] == pytest.approx(2 * 374 / 3)


def test_a_prediction_missing_one_of_three_lesions_by_hand():
  """Three lesions of 125 voxels, far apart; the prediction finds two exactly. BraTS 2023:
  Dice (1 + 1 + 0) / 3, HD95 (0 + 0 + 374) / 3. Panoptica: the two matched pairs are
  perfect (sq_dice 1, sq_hd95 0), rq = 2 / (2 + (0 + 1) / 2) = 0.8, pq_dice = 1 * 0.8."""
  truth = cube(cube(cube(empty(), (2, 2, 2), 5), (2, 30, 2), 5), (30, 16, 30), 5)
  pred = cube(cube(empty(), (2, 2, 2), 5), (2, 30, 2), 5)
  got = L.lesion_wise(pred, truth, ONE_MM)
  assert (got["lesions_tp"], got["lesions_fp"], got["lesions_fn"]) == (2, 0, 1)
  assert got["lesion_dice"] == pytest.approx(2 / 3)
  assert got["lesion_hd95"] == pytest.approx(374 / 3)
  got = L.panoptic(pred, truth, ONE_MM)
  assert (got["instances_tp"], got["instances_fp"], got["instances_fn"]) == (2, 0, 1)
  assert (got["sq_dice"], got["sq_hd95"]) == (1.0, 0.0)
  assert got["rq"] == pytest.approx(0.8) and got["pq_dice"] == pytest.approx(0.8)


def test_lesions_closer_than_the_dilation_are_one_lesion():
  truth = cube(cube(empty(), (5, 5, 5), 5), (5, 5, 14), 5)  # 4 voxels apart
  assert L.true_lesions(truth, dilation=3)[1] == 1
  assert L.true_lesions(truth, dilation=1)[1] == 2
  pred = cube(empty(), (5, 5, 5), 5)  # finds half of the merged lesion
  got = L.lesion_wise(pred, truth, ONE_MM)
  assert (got["lesions_tp"], got["lesions_fn"]) == (1, 0)
  assert got["lesion_dice"] == pytest.approx(2 * 125 / (125 + 250))


def test_small_lesions_are_left_out_and_what_touches_them_is_no_false_positive():
  truth = cube(empty(), (10, 10, 10), 3)  # 27 voxels: 27 mm^3 <= 50
  pred = cube(empty(), (10, 10, 14), 3)   # misses it, but within the dilation
  got = L.lesion_wise(pred, truth, ONE_MM)
  assert (got["lesion_dice"], got["lesion_hd95"], got["lesions_fp"]) == (1.0, 0.0, 0)
  # The same 27 voxels at 2 mm are 216 mm^3: a lesion. The prediction touches its
  # dilation, so it is found (a true positive) with Dice 0 and its real distance.
  got = L.lesion_wise(pred, truth, (2.0, 2.0, 2.0))
  assert (got["lesion_dice"], got["lesions_tp"], got["lesions_fn"]) == (0.0, 1, 0)
  assert got["lesion_hd95"] == hd95(pred, truth, (2.0, 2.0, 2.0)) < 374
  # Farther than the dilation, it is missed, and a false positive besides.
  far = cube(empty(), (10, 10, 20), 3)
  got = L.lesion_wise(far, truth, (2.0, 2.0, 2.0))
  assert (got["lesions_tp"], got["lesions_fn"], got["lesions_fp"]) == (0, 1, 1)
  assert (got["lesion_dice"], got["lesion_hd95"]) == (0.0, 374.0)


def test_a_component_is_scored_whole_against_the_lesion_it_touches():
  truth = cube(empty(), (10, 10, 10), 5)
  pred = cube(empty(), (10, 10, 10), 5)
  pred[12, 12, 15:30] = True  # a long tail of the same component, outside the dilation
  got = L.lesion_wise(pred, truth, ONE_MM)
  assert got["lesions_fp"] == 0
  assert got["lesion_dice"] == pytest.approx(2 * 125 / (125 + 140))


def test_panoptica_matches_one_to_one_and_reports_what_is_left_unmatched():
  truth = cube(cube(empty(), (5, 5, 5), 4), (5, 5, 12), 4)  # two instances, 64 voxels each
  pred = cube(empty(), (5, 5, 5), 4)
  pred[5:9, 5:9, 9:12] = True  # one component reaching both; bridges, overlaps 64 + 0
  pred = pred | cube(empty(), (30, 30, 30), 3)  # and a false instance
  got = L.panoptic(pred, truth, ONE_MM)
  assert (got["instances_tp"], got["instances_fp"], got["instances_fn"]) == (1, 1, 1)
  assert got["rq"] == pytest.approx(1 / 2)
  assert got["sq_dice"] == pytest.approx(2 * 64 / (64 + 112))
  assert got["pq_dice"] == pytest.approx(got["sq_dice"] / 2)
  nothing = L.panoptic(cube(empty(), (30, 30, 30), 3), truth, ONE_MM)
  assert (nothing["sq_dice"], nothing["sq_hd95"], nothing["rq"]) == (0.0, 374.0, 0.0)


def test_nsd_counts_the_surface_within_the_tolerance():
  truth = cube(empty(), (10, 10, 10), 8)
  shifted = cube(empty(), (10, 10, 11), 8)
  assert L.nsd(truth, truth, ONE_MM, tolerance_mm=0.0) == 1.0
  assert L.nsd(shifted, truth, ONE_MM, tolerance_mm=1.0) == 1.0
  assert 0.5 < L.nsd(shifted, truth, ONE_MM, tolerance_mm=0.5) < 1.0
  # At 0.5 mm spacing across the shift, the same voxels are half a millimetre apart.
  assert L.nsd(shifted, truth, (1.0, 1.0, 0.5), tolerance_mm=0.5) == 1.0
  assert L.nsd(empty(), truth, ONE_MM) == 0.0


def _brute_force_nsd(pred, truth, spacing, tolerance_mm):
  """The definition itself: every surface voxel's distance to every surface voxel of the
  other mask, on the whole array."""
  a, b = (np.argwhere(_surface(m)) for m in (pred, truth))
  distances = np.sqrt(((((a[:, None, :] - b[None, :, :]) * np.asarray(spacing))**2)).sum(-1))
  close = (distances.min(1) <= tolerance_mm).sum() + (distances.min(0) <= tolerance_mm).sum()
  return close / (len(a) + len(b))


@pytest.mark.parametrize("seed", range(4))
def test_nsd_is_its_definition_with_specks_far_from_the_tumour(seed):
  """Scattered specks (an untrained model's) stretch the masks' box to the whole volume;
  the metric must still count exactly the surface voxels within the tolerance, anisotropic
  voxels and tolerances of several voxels included."""
  rng = np.random.default_rng(seed)
  shape = (24, 20, 16)
  truth = np.zeros(shape, bool)
  truth[8:14, 6:12, 5:10] = True
  truth[9:11, 12:15, 6:8] = True
  for tolerance, spacing in ((0.75, (1.0, 1.0, 1.0)), (1.3, (0.5, 1.0, 2.0)),
                             (2.1, (1.0, 0.5, 0.5)), (3.3, (0.5, 0.5, 1.0))):
    pred = np.roll(truth, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 3)))
    pred ^= rng.random(shape) < 0.01
    assert L.nsd(pred, truth, spacing, tolerance) == pytest.approx(
        _brute_force_nsd(pred, truth, spacing, tolerance), abs=1e-12), (tolerance, spacing)


@pytest.mark.parametrize("spacing", [ONE_MM, (0.8, 1.3, 2.1)])
def test_the_truths_distance_maps_give_the_same_lesion_scores(spacing):
  """The truth's distance maps (kept per case by the evaluation) serve the HD95 of a lesion
  that is its whole region, bit for bit; a region of two lesions must not use them: a
  matched component reaching towards the other lesion is far from its own."""
  rng = np.random.default_rng(0)
  truth = np.zeros(SHAPE, np.uint8)
  truth[5:15, 5:15, 5:15] = 2  # WT and TC: one lesion each; ET: two
  truth[8:13, 8:13, 8:13] = 3
  truth[28:36, 28:36, 28:36] = 1
  truth[30:33, 30:33, 30:33] = 3
  pred = np.roll(truth, 1, axis=0)
  pred[10, 10, 10:34] = 3  # a bar from the first ET lesion towards the second
  pred[rng.random(SHAPE) < 0.02] = 3  # an untrained model's specks
  maps = {}
  for definition in L.DEFINITIONS:
    fast = L.lesion_metrics(pred, truth, spacing, definition, truth_distances=maps)
    assert fast == L.lesion_metrics(pred, truth, spacing, definition), definition
  assert set(maps) == {"ET", "TC", "WT"}


def test_lesion_metrics_scores_every_region_of_class_volumes():
  truth = np.zeros(SHAPE, np.uint8)
  truth[5:15, 5:15, 5:15] = 2
  truth[8:12, 8:12, 8:12] = 3  # 64 voxels of enhancing tumour inside the edema
  pred = truth.copy()
  pred[pred == 3] = 1  # core called necrotic: TC and WT right, ET missed
  row = L.lesion_metrics(pred, truth, ONE_MM)
  assert row["WT/lesion_dice"] == 1.0 and row["TC/lesion_dice"] == 1.0
  assert (row["ET/lesion_dice"], row["ET/lesions_fn"], row["ET/nsd"]) == (0.0, 1.0, 0.0)
  assert set(row) == {f"{r}/{m}" for r in ("ET", "TC", "WT")
                      for m in L.LESION_METRICS + ("nsd",)}
  with pytest.raises(ValueError, match="definition"):
    L.lesion_metrics(pred, truth, ONE_MM, definition="brats2025")
