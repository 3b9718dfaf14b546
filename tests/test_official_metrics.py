"""urn_jax's metrics against the official BraTS evaluation package (``BraTS-evaluation``
0.0.10, built on panoptica; its glioma configuration ``gli``), on synthetic cases: equal
where the definitions agree, and each known difference asserted with its cause, so that an
upstream change shows up here. Skipped where the package is not installed (the ``test``
extra installs it)."""

import os
import warnings
from importlib.resources import files

import nibabel as nib
import numpy as np
import pytest

from urn_jax import lesion_metrics as L
from urn_jax import metrics as M
from urn_jax.errors import DataError
from urn_jax.labels import labels_to_classes, region_mask

pytest.importorskip("brats_evaluation", reason="the official BraTS evaluation package "
                    "(pip install BraTS-evaluation) is not installed")
panoptica = pytest.importorskip("panoptica")

SHAPE = (48, 48, 40)
GROUPS = {"ET": "et", "TC": "tc", "WT": "wt"}  # urn_jax's regions, the gli config's groups


def _ball(center, radius):
  z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
  return ((z - center[0])**2 + (y - center[1])**2 + (x - center[2])**2) <= radius**2


def _case(shift=(0, 0, 0), extra=True, missed=True):
  """A BraTS 2023 label map (1 NETC, 2 SNFH, 3 ET): a tumour, optionally a small second
  enhancing lesion (``missed``) or a false one (``extra``) - the latter for predictions."""
  label = np.zeros(SHAPE, np.uint8)
  c = np.array([20, 20, 20]) + shift
  label[_ball(c, 9)] = 2
  label[_ball(c, 5)] = 1
  label[_ball(c + (2, 0, 0), 3)] = 3
  if missed:
    label[_ball((40, 38, 30), 3)] = 3
  if extra:
    label[_ball((6, 40, 6), 2)] = 3
  return label


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  """``official(pred, truth, zooms) -> {group: results}``: the package's evaluator on the two
  label maps written as NIfTI files with voxel sizes ``zooms``."""
  config = str(files("brats_evaluation").joinpath("configs", "config_gli.yaml"))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    evaluator = panoptica.Panoptica_Evaluator.load_from_config(config)
  folder = tmp_path_factory.mktemp("official")

  def evaluate(pred, truth, zooms=(1.0, 1.0, 1.0)):
    paths = {}
    for name, label in (("pred", pred), ("truth", truth)):
      paths[name] = os.path.join(folder, f"{name}.nii.gz")
      nib.save(nib.Nifti1Image(label.astype(np.uint8), np.diag([*zooms, 1.0])), paths[name])
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      results = evaluator.evaluate(paths["pred"], paths["truth"])
    return {group: result.to_dict(True) for group, result in results.items()}

  return evaluate


def _ours(pred, truth, region, zooms=(1.0, 1.0, 1.0)):
  p = region_mask(labels_to_classes(pred, "brats2023"), region)
  t = region_mask(labels_to_classes(truth, "brats2023"), region)
  return {"dice": M.dice(p, t), "hd95": M.hd95(p, t, zooms), **L.panoptic(p, t, zooms)}


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 2, 1)])
def test_dice_and_the_matched_instances_agree(official, shift):
  truth, pred = _case(extra=False), _case(shift, missed=False)
  theirs = official(pred, truth)
  for region, group in GROUPS.items():
    ours, result = _ours(pred, truth, region), theirs[group]
    assert ours["dice"] == pytest.approx(result["global_bin_dsc"], abs=1e-6), region
    assert ours["sq_dice"] == pytest.approx(result["sq_dsc"], abs=1e-6), region
    assert ours["rq"] == pytest.approx(result["rq"], abs=1e-9), region
    assert (ours["instances_tp"], ours["instances_fp"], ours["instances_fn"]) == (
        result["tp"], result["fp"], result["fn"]), region


def test_their_instances_are_not_dilated_ours_brats_2023_lesions_are(official):
  """Two enhancing lesions 4 voxels apart; one prediction finds the first, another lies 2
  voxels beside it without touching it. The package (panoptica, no dilation) sees two
  instances. BraTS 2023's glioma definition dilates the truth by 3 voxels, which joins them
  into one lesion, and matches what touches that dilation: half found by the first
  prediction, found with Dice 0 by the second. Without the dilation (and its size
  threshold) urn_jax's lesion-wise counts are theirs."""
  truth = np.zeros(SHAPE, np.uint8)
  truth[10:16, 10:16, 10:16] = truth[10:16, 10:16, 20:26] = 3  # 216 voxels each
  overlapping, beside = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
  overlapping[10:16, 10:16, 10:16] = 3
  beside[18:22, 10:16, 10:16] = 3
  t = region_mask(labels_to_classes(truth, "brats2023"), "ET")
  for pred, counts, lesion_dice, theirs_counts in (
      (overlapping, (1, 0, 0), 2 * 216 / (216 + 432), (1, 0, 1)),
      (beside, (1, 0, 0), 0.0, (0, 1, 2))):
    theirs = official(pred, truth)["et"]
    assert (theirs["tp"], theirs["fp"], theirs["fn"]) == theirs_counts
    p = region_mask(labels_to_classes(pred, "brats2023"), "ET")
    ours = L.lesion_wise(p, t, (1.0, 1.0, 1.0))
    assert (ours["lesions_tp"], ours["lesions_fp"], ours["lesions_fn"]) == counts
    assert ours["lesion_dice"] == pytest.approx(lesion_dice)
    undilated = L.lesion_wise(p, t, (1.0, 1.0, 1.0), L.LesionWiseSettings(0, 0.0))
    assert (undilated["lesions_tp"], undilated["lesions_fp"], undilated["lesions_fn"]) == (
        theirs_counts)
    assert _ours(pred, truth, "ET")["rq"] == pytest.approx(theirs["rq"], abs=1e-9)


def test_their_global_hd95_pools_both_directions_and_ignores_the_spacing(official):
  truth, pred = _case(extra=False), _case((1, 0, 1), missed=False)
  at_1mm, at_2mm = official(pred, truth), official(pred, truth, (2.0, 1.0, 1.0))
  for region, group in GROUPS.items():
    ours = _ours(pred, truth, region)["hd95"]
    # One 95th percentile of both directions pooled (medpy's) is never above the larger of
    # the two directed ones (urn_jax, BraTS 2023's legacy HD95); here it is below.
    assert at_1mm[group]["global_bin_hd95"] <= ours + 1e-9, region
    # Voxels twice as long along the first axis change nothing in theirs.
    assert at_2mm[group]["global_bin_hd95"] == pytest.approx(at_1mm[group]["global_bin_hd95"])
    assert _ours(pred, truth, region, (2.0, 1.0, 1.0))["hd95"] > ours, region
  assert at_1mm["et"]["global_bin_hd95"] < _ours(pred, truth, "ET")["hd95"]


def test_their_lesion_wise_hd95_reads_the_spacing_in_reverse_axis_order(official):
  """The package reads the files with SimpleITK, whose arrays are (z, y, x), but takes the
  spacing as (x, y, z): a one-voxel shift along nibabel's first axis of 2 mm voxels
  measures 1 mm there, 2 mm here."""
  truth = _case(extra=False, missed=False)
  pred = _case((1, 0, 0), extra=False, missed=False)
  theirs = official(pred, truth, (2.0, 1.0, 1.0))["wt"]["sq_hd95"]
  assert _ours(pred, truth, "WT", (2.0, 1.0, 1.0))["sq_hd95"] == pytest.approx(2.0)
  assert theirs == pytest.approx(1.0)
  assert _ours(pred, truth, "WT", (1.0, 1.0, 2.0))["sq_hd95"] == pytest.approx(theirs)


def test_empty_regions_nan_and_infinity_there_conventions_here(official):
  empty = np.zeros(SHAPE, np.uint8)
  both_empty = official(empty, empty)["et"]
  assert np.isnan(both_empty["global_bin_dsc"]) and np.isnan(both_empty["global_bin_hd95"])
  ours = _ours(empty, empty, "ET")
  assert (ours["dice"], ours["hd95"]) == (1.0, 0.0)  # BraTS's convention: nothing to find
  truth = _case(extra=False)
  nothing_found = official(empty, truth)["et"]
  assert nothing_found["global_bin_dsc"] == 0.0 and np.isinf(nothing_found["global_bin_hd95"])
  ours = _ours(empty, truth, "ET")
  diagonal = float(np.sqrt(np.sum(np.square(SHAPE))))
  assert ours["dice"] == 0.0 and ours["hd95"] == pytest.approx(diagonal)


def test_brats_2018_labels_are_scored_as_resection_cavity_there_and_refused_here(official):
  truth = _case(extra=False)
  old = np.where(truth == 3, 4, truth).astype(np.uint8)  # BraTS 2018: ET = 4
  theirs = official(old, old)
  assert theirs["et"]["tp"] == 0 and theirs["rc"]["tp"] > 0  # ET silently gone
  with pytest.raises(DataError, match=r"values \[4\]"):
    labels_to_classes(old, "brats2023")
