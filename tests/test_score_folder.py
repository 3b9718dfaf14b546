"""urn-evaluate (urn_jax.evaluation.score_folder): a folder of label maps scored against a
folder of ground truths, matched by case id, with every mismatch refused by name."""

import csv

import nibabel as nib
import numpy as np
import pytest

from urn_jax.evaluation import score_folder as S

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _label(edema_at=5, core=True):
  label = np.zeros((24, 24, 12), np.uint8)
  label[edema_at:edema_at + 10, 5:15, 2:8] = 2
  if core:
    label[edema_at + 3:edema_at + 7, 8:12, 3:7] = 4  # BraTS 2018 enhancing tumour
  return label


def _write(path, data, affine=AFFINE):
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(data, affine), str(path))
  return path


@pytest.fixture
def folders(tmp_path):
  """A BraTS folder of two cases (with a modality file beside each label) and urn-segment's
  output for them (with a probabilities file, which is not a prediction)."""
  labels, predictions = tmp_path / "brats", tmp_path / "predictions"
  for case, shift in (("Brats18_A", 5), ("Brats18_B", 8)):
    _write(labels / case / f"{case}_seg.nii.gz", _label(shift))
    _write(labels / case / f"{case}_flair.nii.gz", np.ones((24, 24, 12), np.float32))
  _write(predictions / "Brats18_A.nii.gz", _label(5))                # perfect
  _write(predictions / "Brats18_B.nii.gz", _label(8, core=False))   # misses ET
  _write(predictions / "Brats18_A_probabilities.nii.gz", np.zeros((24, 24, 12, 4), np.float32))
  return predictions, labels, tmp_path / "scores"


def _rows(path):
  with open(path) as stream:
    return list(csv.DictReader(stream))


def test_scores_every_case_and_summarizes(folders):
  predictions, labels, out = folders
  summary = S.evaluate_folders(predictions, labels, out, ("volume", "brats2023", "panoptica"))
  rows = {row["case_id"]: row for row in _rows(out / "cases.csv")}
  assert sorted(rows) == ["Brats18_A", "Brats18_B"]
  assert float(rows["Brats18_A"]["WT/dice"]) == 1.0
  assert float(rows["Brats18_A"]["ET/lesion_dice"]) == 1.0
  assert float(rows["Brats18_B"]["ET/dice"]) == 0.0
  assert float(rows["Brats18_B"]["ET/lesions_fn"]) == 1.0
  assert float(rows["Brats18_B"]["ET/hd95"]) == pytest.approx(np.sqrt(24**2 + 24**2 + 24**2))
  et_dice = next(e for e in summary if (e["region"], e["metric"]) == ("ET", "dice"))
  assert (et_dice["mean"], et_dice["median"], et_dice["cases"]) == (0.5, 0.5, 2)
  assert len(_rows(out / "summary.csv")) == len(summary)
  assert "ET mean (median, std)" in S.format_summary(summary)


def test_a_case_on_one_side_only_is_named(folders):
  predictions, labels, out = folders
  (predictions / "Brats18_B.nii.gz").rename(predictions / "Brats18_C.nii.gz")
  with pytest.raises(S.DataError, match=r"label but no prediction: Brats18_B.*"
                                        r"prediction\(s\) have no label: Brats18_C"):
    S.evaluate_folders(predictions, labels, out)
  assert not out.exists()


def test_label_values_of_the_other_convention_are_refused_by_file(folders):
  predictions, labels, out = folders
  with pytest.raises(S.DataError, match=r"Brats18_A_seg.nii.gz holds values \[4\]"):
    S.evaluate_folders(predictions, labels, out, labels_convention="brats2023")


def test_a_prediction_on_another_grid_is_refused(folders):
  predictions, labels, out = folders
  _write(predictions / "Brats18_A.nii.gz", _label(5), affine=np.eye(4))
  with pytest.raises(S.DataError, match="Brats18_A.nii.gz .* not on the grid"):
    S.evaluate_folders(predictions, labels, out)


def test_the_command_reports_errors_in_one_line(folders, capsys):
  predictions, labels, out = folders
  with pytest.raises(SystemExit) as exit:
    S.main(["--predictions", str(predictions), "--labels", str(labels), "--output", str(out),
            "--metrics", "volume,brats2025"])
  assert exit.value.code == 2
  assert "urn-evaluate: error: metrics must be among volume, brats2023, panoptica" in (
      capsys.readouterr().err)
  assert S.main(["--predictions", str(predictions), "--labels", str(labels),
                 "--output", str(out)]) == 0
  assert "WT" in capsys.readouterr().err
