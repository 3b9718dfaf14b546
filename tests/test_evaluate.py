"""Evaluation over the 15 combinations (tables, figures, per-case CSVs) and ``urn-segment``:
predictions land on the input's grid, with its header, in BraTS labels, for every subset of
input files; bad input is reported, not fatal."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, SHAPE, _save, write_brats_case

import urn_jax.evaluation.evaluate
from urn_jax.evaluation.evaluate import evaluate_models
import urn_jax.inference.segment
from urn_jax.evaluation.score_folder import main as urn_evaluate
from urn_jax.inference.segment import main as urn_segment
from urn_jax.modalities import MODALITIES, availability_masks, mask_symbols
from urn_jax.inference.predict import infer, load_model

pytestmark = pytest.mark.slow  # every test here trains a model or starts a process

NAMES = {"flair": "_flair", "t1": "_t1", "t1c": "_t1ce", "t2": "_t2"}


@pytest.fixture(scope="module")
def runs(tiny_runs):
  return tiny_runs


def _settings(**overrides):
  settings = ml_collections.ConfigDict(dict(chunk=8, max_cases=0, figure_case="",
                                            figures=True, masks="all",
                                            lesion_metrics="brats2023"))
  settings.update(overrides)
  return settings


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
  out = tmp_path_factory.mktemp("report")
  infer.clear_cache()  # what earlier tests compiled must not hide this evaluation's own
  compiled = infer._cache_size()
  models = [runs["baseline_md"], runs["urn_md"], runs["urn_md_pretrained"], runs["pretrain"]]
  summary = evaluate_models(models, out, _settings())
  return {"out": out, "summary": summary, "compilations": infer._cache_size() - compiled}


def test_evaluation_writes_every_table_figure_and_csv(report):
  out = report["out"]
  for name in ("table1.md", "table1.csv", "table1_hd95.md", "table1_hd95.csv", "table2.md",
               "table2.csv", "figure2.png", "figure3.png", "figure5.png", "cases.csv",
               "psnr_cases.csv", "runs.json", "table1_lesion_dice.md",
               "table1_lesion_hd95.csv"):
    assert (out / name).stat().st_size > 0, name
  assert sorted(report["summary"]["dice_mean"]) == ["Baseline + MD", "URN + MD",
                                                    "URN + MD w/ HCP"]


def test_one_compilation_per_model_serves_all_15_combinations(report):
  assert report["compilations"] == 4  # four models, each one compiled function


def _table(path):
  """A markdown table's title, the line that names its patients, header and rows."""
  lines = path.read_text().splitlines()
  cells = [[c.strip() for c in l.strip("|").split("|")] for l in lines if l.startswith("|")]
  return lines[0], lines[2], cells[0], cells[2:]


def test_table1_has_the_papers_layout_and_names_the_test_patients(report, runs):
  title, note, header, rows = _table(report["out"] / "table1.md")
  test = json.loads((runs["urn_md"] / "split.json").read_text())["datasets"]["brats"]["test"]
  assert "test patients" in title
  patients = (f"Test patients ({len(test)}), never used for training or selection: "
              + ", ".join(test))
  # The fixture's few steps may leave its runs unflat: then shown all the same, each
  # segmentation run named (and no pre-training: not in this table).
  scenarios = list(dict.fromkeys(h.split(":")[0] for h in header[4:]))
  unflat = [f"{n} (seed 0)" for n in scenarios]
  # Each scenario's parameter count, as its network has it (frozen encoders included).
  parameters = " Parameters: " + "; ".join(
      f"{n} {load_model(runs[v]).parameters:,}"
      for n, v in zip(scenarios, ("baseline_md", "urn_md", "urn_md_pretrained"))) + "."
  assert note in (patients + "." + parameters,
                  patients + ". Not flat (training.md), in the table all the same (no run is "
                  "left out for its curve): " + ", ".join(unflat) + "." + parameters)
  assert (load_model(runs["urn_md"]).parameters == load_model(runs["urn_md_pretrained"]).parameters
          > load_model(runs["baseline_md"]).parameters)
  assert header[:4] == ["F", "T1", "T1c", "T2"]
  assert header[4:7] == ["Baseline + MD: ET", "Baseline + MD: WT", "Baseline + MD: TC"]
  assert len(header) == 4 + 3 * 3
  assert len(rows) == 16
  for row, mask in zip(rows, availability_masks()):
    assert " ".join(row[:4]) == mask_symbols(mask)
    assert all(0 <= float(v) <= 100 for v in row[4:])
  assert rows[-1][0] == "**mean**"
  with (report["out"] / "table1.csv").open() as f:
    table = list(csv.DictReader(f))
  assert [r["mask"] for r in table[:15]] == ["".join("1" if m else "0" for m in mask)
                                              for mask in availability_masks()]


def test_the_test_patients_tumour_volumes_are_written(report, runs):
  """test_patients.csv: each region's volume in the original label file, the volumes that
  say what a Dice means (an empty ET scores 100 or 0)."""
  with (report["out"] / "test_patients.csv").open() as f:
    table = {r["case_id"]: r for r in csv.DictReader(f)}
  test = json.loads((runs["urn_md"] / "split.json").read_text())["datasets"]["brats"]["test"]
  assert sorted(table) == sorted(test)
  for case_id, row in table.items():
    image = nib.load(runs["data"] / "brats" / case_id / f"{case_id}_seg.nii.gz")
    labels = np.asanyarray(image.dataobj)
    ml = np.prod(image.header.get_zooms()[:3]) / 1000
    for region, values in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
      assert float(row[f"{region} (cm3)"]) == pytest.approx(
          np.isin(labels, values).sum() * ml, abs=1e-3), (case_id, region)
    assert float(row["WT (cm3)"]) > 0


def test_table2_marks_inputs_and_scores_only_synthesized_modalities(report):
  _, _, _, rows = _table(report["out"] / "table2.md")
  assert len(rows) == 15  # 14 combinations that miss something, and the mean
  for row, mask in zip(rows, availability_masks()[1:]):
    for given, cell in zip(mask, row[4:8]):
      assert (cell == "-") == bool(given)


def test_per_case_csv_has_one_row_per_model_case_and_combination(report, runs):
  with (report["out"] / "cases.csv").open() as f:
    rows = list(csv.DictReader(f))
  split = json.loads((runs["urn_md"] / "split.json").read_text())
  cases = len(split["datasets"]["brats"]["test"])
  assert {r["case_id"] for r in rows} == set(split["datasets"]["brats"]["test"])
  assert len(rows) == 3 * cases * 15
  assert {"ET/dice", "WT/hd95", "TC/sensitivity", "ET/specificity"} <= set(rows[0])


def test_an_interrupted_evaluation_resumes_from_the_per_case_results(report, runs,
                                                                      monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("recomputed a case that was already evaluated")
  monkeypatch.setattr(urn_jax.evaluation.evaluate, "predict_volume", fail)
  models = [runs["baseline_md"], runs["urn_md"], runs["urn_md_pretrained"], runs["pretrain"]]
  evaluate_models(models, report["out"], _settings())


def test_a_model_retrained_in_its_folder_is_evaluated_again(runs, tmp_path, monkeypatch):
  """Kept results belong to one checkpoint: retrained in the same folder to the same step
  (here: saved again, with a new orbax timestamp), the model is scored again, not read
  from the old model's results."""
  from urn_jax.training.checkpoints import record_files
  workdir = tmp_path / "urn_md"
  shutil.copytree(runs["urn_md"], workdir)
  evaluate_models([workdir], tmp_path / "out", _settings(figures=False))
  calls = []
  real = urn_jax.evaluation.evaluate.predict_volume
  monkeypatch.setattr(urn_jax.evaluation.evaluate, "predict_volume",
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  evaluate_models([workdir], tmp_path / "out", _settings(figures=False))
  assert not calls  # the same checkpoint: every result reused
  (step_dir,) = [p for p in (workdir / "best").iterdir() if p.name.isdigit()]
  metadata = step_dir / "_CHECKPOINT_METADATA"
  metadata.write_text(metadata.read_text().replace('"commit_timestamp_nsecs": ',
                                                   '"commit_timestamp_nsecs": 1'))
  record_files(step_dir)
  evaluate_models([workdir], tmp_path / "out", _settings(figures=False))
  assert len(calls) == 15 * len(json.loads((workdir / "split.json").read_text())[
      "datasets"]["brats"]["test"])


def test_a_model_given_loaded_is_scored_as_given_and_not_loaded_again(runs, monkeypatch):
  from urn_jax.evaluation.evaluate import score_models
  loaded = load_model(runs["urn_md"])
  monkeypatch.setattr(urn_jax.evaluation.evaluate, "load_model",
                      lambda workdir: pytest.fail(f"{workdir} was loaded again"))
  (run,), cases, _, _ = score_models([runs["urn_md"]], _settings(figures=False, masks="1111"),
                                     loaded={str(runs["urn_md"]): loaded})
  assert run["step"] == loaded.step and len(run["rows"]) == len(cases)


def test_evaluation_mirrors_and_adapts_as_asked_and_keeps_those_results_apart(
    runs, tmp_path, monkeypatch):
  calls = []
  real = urn_jax.evaluation.evaluate.predict_volume
  monkeypatch.setattr(urn_jax.evaluation.evaluate, "predict_volume",
                      lambda loaded, image, mask, chunk, mirror=(), adapt=False: calls.append(
                          (mirror, adapt)) or real(loaded, image, mask, chunk, mirror, adapt))
  for mirror, adapt in (("", False), ("lr", False), ("", True), ("", False)):
    evaluate_models([runs["urn_md"]], tmp_path, _settings(figures=False, masks="1111",
                                                          mirror=mirror, adapt_bn=adapt))
  patients = len(json.loads((runs["urn_md"] / "split.json").read_text())[
      "datasets"]["brats"]["test"])
  # the fourth run reused the first's results
  assert calls == [((), False)] * patients + [(("lr",), False)] * patients + [
      ((), True)] * patients
  assert len(list((tmp_path / "per_case").iterdir())) == 3


def test_a_perfect_prediction_scores_perfectly_on_the_original_grid(runs, tmp_path,
                                                                     monkeypatch):
  """The mapping back to the original file (window, LPS orientation) is exact: a model
  that outputs the pre-processed label scores Dice 1 and HD95 0 on the original label."""
  def oracle(loaded, image, mask, chunk, mirror=(), adapt=False):
    case = next(d for d in (runs["data"] / "cache" / "preprocessed").glob("*/brats/*/*")
                if np.array_equal(np.load(d / "image.npy"), image))
    label = np.load(case / "label.npy")
    return {"probabilities": np.eye(4, dtype=np.float32)[label]}
  monkeypatch.setattr(urn_jax.evaluation.evaluate, "predict_volume", oracle)
  evaluate_models([runs["urn_md"]], tmp_path, _settings(figures=False))
  with (tmp_path / "cases.csv").open() as f:
    rows = list(csv.DictReader(f))
  for region in ("ET", "WT", "TC"):
    for metric, perfect in (("dice", 1.0), ("hd95", 0.0), ("lesion_dice", 1.0),
                            ("lesion_hd95", 0.0), ("lesions_fp", 0.0), ("lesions_fn", 0.0),
                            ("nsd", 1.0)):
      assert all(float(r[f"{region}/{metric}"]) == perfect for r in rows), metric


def _tumour_everywhere(loaded, image, mask, chunk, mirror=(), adapt=False):
  """A model that calls every voxel of every slice enhancing tumour, even in the air."""
  return {"probabilities": np.broadcast_to(np.eye(4, dtype=np.float32)[3],
                                           image.shape[:3] + (4,)).copy()}


def test_evaluation_scores_nothing_outside_the_given_modalities_brain(runs, tmp_path,
                                                                      monkeypatch):
  """Voxels where every given modality is 0 are background (BraTS): a model that says
  "tumour" everywhere scores exactly as if it had said so only inside the brain."""
  monkeypatch.setattr(urn_jax.evaluation.evaluate, "predict_volume", _tumour_everywhere)
  evaluate_models([runs["urn_md"]], tmp_path, _settings(
      figures=False, masks="0010,1001"))
  with (tmp_path / "cases.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert {r["mask"] for r in rows} == {"0010", "1001"}
  _, _, _, table = _table(tmp_path / "table1.md")
  assert [" ".join(r[:4]).strip() for r in table] == ["● ○ ○ ●", "○ ○ ● ○", "**mean**"]
  for row in rows:
    files = _case_files(runs["data"] / "brats" / row["case_id"])
    given = [m for m, on in zip(MODALITIES, row["mask"]) if on == "1"]
    brain = np.logical_or.reduce([np.asarray(nib.load(files[m]).dataobj) != 0 for m in given])
    truth = np.asarray(nib.load(files["flair"].with_name(f"{row['case_id']}_seg.nii.gz"))
                       .dataobj) > 0
    assert float(row["WT/dice"]) == pytest.approx(2 * truth.sum() / (brain.sum() + truth.sum()))


def test_urn_segment_labels_nothing_where_every_given_modality_is_0(runs, tmp_path,
                                                                    monkeypatch):
  monkeypatch.setattr(urn_jax.inference.segment, "predict_volume", _tumour_everywhere)
  files = _case_files(runs["data"] / "brats" / "Brats18_4")
  assert urn_segment(["--model", str(runs["urn_md"]), "--output", str(tmp_path),
                      f"--t1c={files['t1c']}", f"--t2={files['t2']}", "--probabilities"]) == 0
  labels = np.asarray(nib.load(tmp_path / "Brats18_4.nii.gz").dataobj)
  brain = (np.asarray(nib.load(files["t1c"]).dataobj) != 0) | (
      np.asarray(nib.load(files["t2"]).dataobj) != 0)
  assert 0 < brain.sum() < brain.size
  np.testing.assert_array_equal(labels, np.where(brain, 4, 0))
  probabilities = np.asarray(nib.load(tmp_path / "Brats18_4_probabilities.nii.gz").dataobj)
  np.testing.assert_array_equal(probabilities[~brain], [[1, 0, 0, 0]] * (~brain).sum())
  np.testing.assert_allclose(probabilities[brain], [[0, 0, 0, 1]] * brain.sum(), atol=1e-6)


def test_models_with_different_splits_are_not_compared(runs, tmp_path):
  other = tmp_path / "other"
  other.mkdir()
  for name in ("config.json", "checkpoints", "best"):
    (other / name).symlink_to(runs["urn_md"] / name)
  split = json.loads((runs["urn_md"] / "split.json").read_text())
  brats = split["datasets"]["brats"]
  brats["train"], brats["test"] = brats["test"], brats["train"]
  (other / "split.json").write_text(json.dumps(split))
  with pytest.raises(ValueError, match="has other test patients than"):
    evaluate_models([runs["urn_md"], other], tmp_path / "out", _settings())


def test_a_run_from_before_the_test_split_is_refused_with_a_message(runs, tmp_path):
  old = tmp_path / "old"
  old.mkdir()
  for name in ("checkpoints", "best"):
    (old / name).symlink_to(runs["urn_md"] / name)
  config = json.loads((runs["urn_md"] / "config.json").read_text())
  del config["data"]["test_fraction"]
  (old / "config.json").write_text(json.dumps(config))
  split = json.loads((runs["urn_md"] / "split.json").read_text())
  brats = split["datasets"]["brats"]
  brats["validation"] += brats.pop("test")
  (old / "split.json").write_text(json.dumps(split))
  with pytest.raises(ValueError, match="only training and validation patients"):
    evaluate_models([old], tmp_path / "out", _settings())


# urn-segment


def _case_files(case_dir):
  return {m: case_dir / f"{case_dir.name}{suffix}.nii.gz" for m, suffix in NAMES.items()}


@pytest.mark.parametrize("mask", [pytest.param(m, id="".join("1" if x else "0" for x in m))
                                  for m in availability_masks()])
def test_urn_segment_round_trip_keeps_the_input_geometry_for_every_subset(runs, tmp_path,
                                                                         mask):
  case = runs["data"] / "brats" / "Brats18_0"
  files = _case_files(case)
  arguments = [f"--{m}={files[m]}" for m, on in zip(MODALITIES, mask) if on]
  status = urn_segment(["--model", str(runs["urn_md"]), "--output", str(tmp_path),
                        *arguments])
  assert status == 0
  written = nib.load(tmp_path / "Brats18_0.nii.gz")
  reference = nib.load(files[next(m for m, on in zip(MODALITIES, mask) if on)])
  labels = np.asarray(written.dataobj)
  assert labels.shape == reference.shape and labels.dtype == np.uint8
  np.testing.assert_array_equal(written.affine, reference.affine)
  for field in ("pixdim", "qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "xyzt_units"):
    np.testing.assert_array_equal(written.header[field], reference.header[field])
  assert set(np.unique(labels)) <= {0, 1, 2, 4}


def test_urn_segment_reads_a_4d_file_of_one_volume_as_that_volume(runs, tmp_path):
  """Some converters write a 3D image as X x Y x Z x 1. Pre-processing and the brain mask
  read it through the same checks, so the case is segmented like its 3D twin, and the label
  map is 3D on its grid."""
  files = _case_files(runs["data"] / "brats" / "Brats18_2")
  image = nib.load(files["flair"])
  four_d = tmp_path / "in" / "Brats18_2_flair.nii.gz"
  _save(np.asarray(image.dataobj)[..., None], four_d, image.affine)
  outputs = {}
  for name, flair in (("3d", files["flair"]), ("4d", four_d)):
    status = urn_segment(["--model", str(runs["urn_md"]), "--output", str(tmp_path / name),
                          f"--flair={flair}", f"--t2={files['t2']}"])
    assert status == 0, name
    outputs[name] = nib.load(tmp_path / name / "Brats18_2.nii.gz")
  assert outputs["4d"].shape == SHAPE
  np.testing.assert_array_equal(outputs["4d"].dataobj, outputs["3d"].dataobj)


def test_urn_segment_on_a_folder_names_outputs_by_case_and_writes_options(runs, tmp_path,
                                                                          capsys):
  """... and urn-evaluate scores that folder against the cases' labels as it is."""
  status = urn_segment(["--model", str(runs["urn_md_pretrained"]), "--input",
                        str(runs["data"] / "brats"), "--output", str(tmp_path),
                        "--probabilities", "--synthesis"])
  assert status == 0
  assert sorted(p.name for p in tmp_path.glob("*.nii.gz") if "_" not in p.name[8:]) == [
      f"Brats18_{i}.nii.gz" for i in range(5)]
  probabilities = nib.load(tmp_path / "Brats18_0_probabilities.nii.gz")
  assert probabilities.shape == SHAPE + (4,)
  np.testing.assert_allclose(np.asarray(probabilities.dataobj).sum(-1), 1, atol=1e-4)
  assert not list(tmp_path.glob("*_synthesized.nii.gz"))  # nothing is missing
  capsys.readouterr()
  scores = tmp_path / "scores"
  assert urn_evaluate(["--predictions", str(tmp_path), "--labels", str(runs["data"] / "brats"),
                       "--output", str(scores)]) == 0
  assert re.search(r"^lesion_dice +[0-9.]+ \(", capsys.readouterr().err, re.M)
  with open(scores / "cases.csv") as stream:
    assert [row["case_id"] for row in csv.DictReader(stream)] == [
        f"Brats18_{i}" for i in range(5)]


def test_urn_segment_synthesizes_the_missing_modalities(runs, tmp_path):
  files = _case_files(runs["data"] / "brats" / "Brats18_1")
  status = urn_segment(["--model", str(runs["urn_md_pretrained"]), "--output", str(tmp_path),
                        f"--t1c={files['t1c']}", "--synthesis"])
  assert status == 0
  for modality in ("flair", "t1", "t2"):
    image = nib.load(tmp_path / f"Brats18_1_{modality}_synthesized.nii.gz")
    assert image.shape == SHAPE and np.isfinite(np.asarray(image.dataobj)).all()


def test_urn_segment_reports_bad_cases_and_writes_the_others(runs, tmp_path, capsys):
  folder = tmp_path / "in"
  write_brats_case(folder, "Brats18_good", seed=1)
  bad_shape = write_brats_case(folder, "Brats18_shape", seed=2)
  _save(np.ones((8, 8, 8), np.int16), bad_shape / "Brats18_shape_t2.nii.gz")
  broken = write_brats_case(folder, "Brats18_broken", seed=3)
  (broken / "Brats18_broken_t1.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
  status = urn_segment(["--model", str(runs["urn_md"]), "--input", str(folder), "--output",
                        str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert status == 1
  assert (tmp_path / "out" / "Brats18_good.nii.gz").exists()
  assert not (tmp_path / "out" / "Brats18_shape.nii.gz").exists()
  assert "Brats18_shape_t2.nii.gz has shape (8, 8, 8)" in err
  assert "cannot read t1 file" in err and "Brats18_broken_t1.nii.gz" in err
  assert f"1 of 3 case(s) segmented into {tmp_path / 'out'}; 2 failed" in err


def test_urn_segment_keeps_existing_outputs_unless_asked(runs, tmp_path, capsys):
  files = _case_files(runs["data"] / "brats" / "Brats18_2")
  target = tmp_path / "Brats18_2.nii.gz"
  target.write_bytes(b"precious")
  arguments = ["--model", str(runs["urn_md"]), "--output", str(tmp_path),
               f"--flair={files['flair']}"]
  assert urn_segment(arguments) == 0
  err = capsys.readouterr().err
  assert target.read_bytes() == b"precious" and "--overwrite" in err
  assert f"0 of 1 case(s) segmented into {tmp_path}; 1 kept" in err
  assert urn_segment(arguments + ["--overwrite"]) == 0
  assert nib.load(target).shape == SHAPE
  assert f"1 of 1 case(s) segmented into {tmp_path}\n" in capsys.readouterr().err


def test_urn_segment_interrupted_leaves_no_partial_case_and_finishes_on_rerun(
    runs, tmp_path, capsys, monkeypatch):
  files = _case_files(runs["data"] / "brats" / "Brats18_2")
  arguments = ["--model", str(runs["urn_md"]), "--output", str(tmp_path),
               f"--flair={files['flair']}", f"--t2={files['t2']}", "--probabilities"]
  stale = tmp_path / ".Brats18_2_t1_synthesized.nii.gz.tmp.nii.gz"  # from a kill -9
  stale.write_bytes(b"half")

  def ctrl_c(*args, **kwargs):  # while the probabilities are mapped back
    raise KeyboardInterrupt
  with monkeypatch.context() as patch:
    patch.setattr(urn_jax.inference.segment, "to_original_grid", ctrl_c)
    assert urn_segment(arguments) == 130
  err = capsys.readouterr().err
  assert "Traceback" not in err and "case Brats18_2: nothing written" in err
  assert "interrupted (Ctrl-C)" in err
  assert f"0 of 1 case(s) segmented into {tmp_path}; 1 interrupted\n" in err
  assert sorted(p.name for p in tmp_path.iterdir()) == []  # no label map, no temporaries
  assert urn_segment(arguments) == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "Brats18_2.nii.gz", "Brats18_2_probabilities.nii.gz"]


@pytest.mark.parametrize("below", ["", "sub"])
def test_urn_segment_refuses_an_output_that_is_a_file(runs, tmp_path, capsys, below):
  precious = tmp_path / "results.nii.gz"
  precious.write_bytes(b"precious")
  output = precious / below if below else precious
  files = _case_files(runs["data"] / "brats" / "Brats18_2")
  with pytest.raises(SystemExit) as exit_info:
    urn_segment(["--model", str(runs["urn_md"]), "--output", str(output),
                 f"--flair={files['flair']}"])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and "Traceback" not in err
  assert f"{precious} is a file, not a folder" in err
  assert precious.read_bytes() == b"precious"


@pytest.mark.parametrize("chunk", ["0", "-1", "two"])
def test_urn_segment_refuses_a_chunk_below_one(runs, tmp_path, capsys, chunk):
  with pytest.raises(SystemExit) as exit_info:
    urn_segment(["--model", str(runs["urn_md"]), "--input", str(runs["data"] / "brats"),
                 "--output", str(tmp_path), f"--chunk={chunk}"])
  assert exit_info.value.code == 2
  assert "--chunk: expected a whole number >= 1" in capsys.readouterr().err
  with pytest.raises(urn_jax.inference.segment.DataError, match="chunk"):
    urn_jax.inference.segment.segment_cases(runs["urn_md"], [], tmp_path, chunk=0)


def test_urn_segment_errors_for_a_missing_model_or_no_input(runs, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    urn_segment(["--model", str(tmp_path / "nope"), "--input", str(runs["data"] / "brats"),
                 "--output", str(tmp_path)])
  assert exit_info.value.code == 2
  assert f"{tmp_path / 'nope'} is not a training work directory" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    urn_segment(["--model", str(runs["pretrain"]), "--input", str(runs["data"] / "brats"),
                 "--output", str(tmp_path)])
  assert "needs a segmentation run" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    urn_segment(["--model", str(runs["urn_md"]), "--output", str(tmp_path)])
  assert "nothing to segment" in capsys.readouterr().err


def test_urn_segment_names_a_damaged_config_json(runs, tmp_path, capsys):
  model = tmp_path / "model"
  shutil.copytree(runs["urn_md"], model)
  (model / "config.json").write_text('{"job": "segment", "model": {')  # cut short
  with pytest.raises(SystemExit) as exit_info:
    urn_segment(["--model", str(model), "--input", str(runs["data"] / "brats"),
                 "--output", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and "Traceback" not in err
  assert f"{model / 'config.json'} is damaged" in err


def test_the_console_script_and_the_launch_config_share_one_path(runs, tmp_path):
  script = Path(sys.executable).with_name("urn-segment")
  assert script.exists(), "pip install -e . installs the urn-segment console script"
  assert "--synthesis" in subprocess.run([script, "--help"], capture_output=True,
                                         text=True).stdout
  files = _case_files(runs["data"] / "brats" / "Brats18_3")
  result = subprocess.run(
      [sys.executable, str(ROOT / "launch.py"), "--config=configs/infer.py",
       f"--workdir={tmp_path}", f"--config.model={runs['urn_md']}",
       f"--config.t1={files['t1']}", f"--config.t2={files['t2']}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  direct = tmp_path / "direct"
  urn_segment(["--model", str(runs["urn_md"]), "--output", str(direct),
               f"--t1={files['t1']}", f"--t2={files['t2']}"])
  np.testing.assert_array_equal(nib.load(tmp_path / "Brats18_3.nii.gz").dataobj,
                                nib.load(direct / "Brats18_3.nii.gz").dataobj)


def test_a_report_file_cut_short_leaves_the_old_one_whole(tmp_path):
  """The report's files are read back (claims_report recomputes claims.md from cases.csv and
  runs.json): one that fails while being written must leave the previous version whole and
  no temporary behind, not half a table."""
  from urn_jax.evaluation.tables import write_rows

  class Unwritable:
    def __str__(self):
      raise RuntimeError("cannot be written")

  path = tmp_path / "cases.csv"
  path.write_text("case,dice\nold,1.0\n")
  with pytest.raises(RuntimeError, match="cannot be written"):
    write_rows(path, [{"case": "new", "dice": 0.5}, {"case": "new", "dice": Unwritable()}])
  assert path.read_text() == "case,dice\nold,1.0\n"
  assert [p.name for p in tmp_path.iterdir()] == ["cases.csv"]
  write_rows(path, [{"case": "new", "dice": 0.5}])
  assert path.read_bytes() == b"case,dice\r\nnew,0.5\r\n"
