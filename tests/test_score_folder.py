"""urn-evaluate (urn_jax.evaluation.score_folder): a folder of label maps scored against a
folder of ground truths, matched by case id; a case that cannot be scored is named with its
reason and the others are scored."""

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
  scores = S.evaluate_folders(predictions, labels, out, ("volume", "brats2023", "panoptica"))
  summary = scores.summary
  assert scores.skipped == {}
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


def test_a_case_on_one_side_only_is_named_and_the_rest_scored(folders):
  predictions, labels, out = folders
  (predictions / "Brats18_B.nii.gz").rename(predictions / "Brats18_C.nii.gz")
  scores = S.evaluate_folders(predictions, labels, out)
  assert list(scores.skipped) == ["Brats18_B", "Brats18_C"]
  assert scores.skipped["Brats18_B"].endswith("Brats18_B_seg.nii.gz has no prediction")
  assert scores.skipped["Brats18_C"].endswith("Brats18_C.nii.gz has no label")
  assert [row["case_id"] for row in _rows(out / "cases.csv")] == ["Brats18_A"]
  assert {e["cases"] for e in scores.summary} == {1}
  assert [row["case_id"] for row in _rows(out / "skipped.csv")] == ["Brats18_B", "Brats18_C"]


def test_label_values_of_the_other_convention_are_named_by_file(folders):
  predictions, labels, out = folders
  with pytest.raises(S.DataError, match=r"no case could be scored: Brats18_A: label file "
                                        r".*Brats18_A_seg.nii.gz holds values \[4\]"):
    S.evaluate_folders(predictions, labels, out, labels_convention="brats2023")
  assert not out.exists()


def test_a_missing_case_another_grid_and_an_unknown_label_are_each_named(folders):
  """Three problems in one folder: each case named with its own reason, the fourth scored,
  and the command's exit status says that not every case was scored."""
  predictions, labels, out = folders
  for case, shift in (("Brats18_C", 6), ("Brats18_D", 7)):
    _write(labels / case / f"{case}_seg.nii.gz", _label(shift))
  _write(predictions / "Brats18_A.nii.gz", _label(5), affine=np.eye(4))  # another grid
  seven = _label(7)
  seven[0, 0, 0] = 7
  _write(predictions / "Brats18_D.nii.gz", seven)                       # label 7
  # Brats18_C has no prediction; Brats18_B is the one left to score.
  scores = S.evaluate_folders(predictions, labels, out)
  assert list(scores.skipped) == ["Brats18_A", "Brats18_C", "Brats18_D"]
  assert "Brats18_A.nii.gz (shape (24, 24, 12)) is not on the grid" in scores.skipped["Brats18_A"]
  assert "has no prediction" in scores.skipped["Brats18_C"]
  assert "Brats18_D.nii.gz holds values [7]" in scores.skipped["Brats18_D"]
  assert [row["case_id"] for row in _rows(out / "cases.csv")] == ["Brats18_B"]


def test_the_command_reports_errors_in_one_line_and_skipped_cases_by_name(folders, capsys):
  predictions, labels, out = folders
  with pytest.raises(SystemExit) as exit:
    S.main(["--predictions", str(predictions), "--labels", str(labels), "--output", str(out),
            "--metrics", "volume,brats2025"])
  assert exit.value.code == 2
  assert "urn-evaluate: error: metrics must be among volume, brats2023, panoptica" in (
      capsys.readouterr().err)
  command = ["--predictions", str(predictions), "--labels", str(labels), "--output", str(out)]
  assert S.main(command) == 0
  assert "WT" in capsys.readouterr().err
  assert not (out / "skipped.csv").exists()
  (predictions / "Brats18_B.nii.gz").unlink()
  assert S.main(command) == 1
  err = capsys.readouterr().err
  assert "1 case(s) skipped, not in the summary of the 1 scored" in err
  assert "skipped: Brats18_B: label " in err
  assert (out / "skipped.csv").exists()
  (predictions / "Brats18_A.nii.gz").unlink()
  with pytest.raises(SystemExit) as exit:
    S.main(command)
  assert exit.value.code == 2
  assert "no case could be scored: Brats18_A: label" in capsys.readouterr().err
