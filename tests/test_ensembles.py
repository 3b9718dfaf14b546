"""Ensembles and test-time mirroring (``urn_jax.inference.predict``, ``urn-segment``,
evaluation):
members' probabilities are averaged before the argmax, mirrored views are flipped back
before they are averaged, and members that would see different slices are refused."""

import json
import shutil

import ml_collections
import nibabel as nib
import numpy as np
import pytest

import urn_jax.evaluation.evaluate as evaluate
from urn_jax.inference import predict
from urn_jax.inference.segment import main as urn_segment

pytestmark = pytest.mark.slow  # the runs are trained once per session (conftest.tiny_runs)


@pytest.fixture(scope="module")
def runs(tiny_runs):
  return tiny_runs


def test_mirroring_averages_the_views_flipped_back(runs):
  loaded = predict.load_model(runs["urn_md"])
  images = np.random.default_rng(0).normal(size=(3, 32, 32, 4)).astype(np.float32)
  mask = np.array([1, 0, 1, 1], bool)

  def probabilities(x):
    return predict.predict_slices(loaded.model, loaded.variables, x, mask)["probabilities"]

  plain = probabilities(images)
  left_right = np.flip(probabilities(np.flip(images, 1)), 1)
  front_back = np.flip(probabilities(np.flip(images, 2)), 2)
  both = np.flip(probabilities(np.flip(images, (1, 2))), (1, 2))
  got = predict.predict_slices(loaded.model, loaded.variables, images, mask,
                               keys=("probabilities", "label"), mirror=("lr",))
  np.testing.assert_allclose(got["probabilities"], (plain + left_right) / 2, atol=1e-6)
  np.testing.assert_array_equal(got["label"], got["probabilities"].argmax(-1))
  assert not np.allclose(plain, left_right, atol=1e-3)  # the model is not symmetric
  got = predict.predict_slices(loaded.model, loaded.variables, images, mask,
                               mirror=("lr", "ap"))["probabilities"]
  np.testing.assert_allclose(got, (plain + left_right + front_back + both) / 4, atol=1e-6)
  assert predict.mirrored_views(("ap", "lr")) == [(), (1,), (2,), (1, 2)]
  with pytest.raises(ValueError, match="mirror axes must be among"):
    predict.mirrored_views(("is",))


def test_an_ensemble_averages_its_members_probabilities(runs, tmp_path):
  case = runs["data"] / "brats" / "Brats18_0"
  written = {}
  for name, models in (("a", ["baseline_md"]), ("b", ["urn_md"]),
                       ("both", ["baseline_md", "urn_md"])):
    arguments = [a for m in models for a in ("--model", str(runs[m]))]
    assert urn_segment(arguments + ["--input", str(case), "--output", str(tmp_path / name),
                                    "--probabilities", "--no-mirror"]) == 0
    written[name] = np.asarray(nib.load(tmp_path / name / "Brats18_0_probabilities.nii.gz")
                               .dataobj)
  np.testing.assert_allclose(written["both"], (written["a"] + written["b"]) / 2, atol=1e-5)
  label = np.asarray(nib.load(tmp_path / "both" / "Brats18_0.nii.gz").dataobj)
  expected = np.asarray([0, 1, 2, 4])[written["both"].argmax(-1)]
  assert np.mean(label == expected) > 0.999  # ties aside, the argmax of the average


def test_members_that_pre_process_differently_are_refused(runs, tmp_path, capsys):
  other = tmp_path / "other"
  shutil.copytree(runs["urn_md"], other)
  config = json.loads((other / "config.json").read_text())
  config["data"]["spacing"] = 2 * config["data"]["spacing"]
  (other / "config.json").write_text(json.dumps(config))
  with pytest.raises(SystemExit) as exit_info:
    urn_segment(["--model", str(runs["urn_md"]), "--model", str(other), "--input",
                 str(runs["data"] / "brats"), "--output", str(tmp_path / "out")])
  assert exit_info.value.code == 2
  assert f"{other} pre-processes cases unlike {runs['urn_md']}" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    urn_segment(["--model", str(runs["urn_md"]), "--mirror", "up", "--input",
                 str(runs["data"] / "brats"), "--output", str(tmp_path / "out")])
  assert "mirror axes must be among ['ap', 'lr']" in capsys.readouterr().err


def test_evaluation_scores_an_ensemble_as_one_model(runs, tmp_path, monkeypatch):
  seen = []
  real = evaluate.predict_volume
  monkeypatch.setattr(evaluate, "predict_volume", lambda loaded, *a, **k: seen.append(
      loaded) or real(loaded, *a, **k))
  settings = dict(chunk=8, max_cases=0, figure_case="", figures=False, masks="1111")
  entry = f"{runs['baseline_md']}+{runs['urn_md']}"
  evaluate.evaluate_models([entry], tmp_path, ml_collections.ConfigDict(settings))
  assert seen and all(isinstance(m, predict.Ensemble) and len(m) == 2 for m in seen)
  rows = (tmp_path / "cases.csv").read_text().splitlines()
  assert len(rows) == 1 + len(seen) and "(ensemble of 2)" in rows[1]
  with pytest.raises(evaluate.DataError, match="must do the same job"):
    evaluate.evaluate_models([f"{runs['urn_md']}+{runs['pretrain']}"], tmp_path / "x",
                             ml_collections.ConfigDict(settings))


def test_urn_segment_adapts_the_batch_norms_to_the_case_when_asked(runs, tmp_path,
                                                                   monkeypatch):
  """``--adapt-bn`` reaches the prediction, and changes what a frozen-encoder URN writes."""
  import urn_jax.inference.segment as segment
  seen = []
  real = segment.predict_volume
  monkeypatch.setattr(segment, "predict_volume",
                      lambda *args: seen.append(args[-1]) or real(*args))
  written = {}
  for flag in ("--adapt-bn", "--no-adapt-bn"):
    assert urn_segment(["--model", str(runs["urn_md_pretrained"]), "--input",
                        str(runs["data"] / "brats" / "Brats18_0"), "--output",
                        str(tmp_path / flag), "--probabilities", flag]) == 0
    written[flag] = np.asarray(nib.load(tmp_path / flag / "Brats18_0_probabilities.nii.gz")
                               .dataobj)
  assert seen == [True, False]
  assert np.isfinite(written["--adapt-bn"]).all()
  assert np.abs(written["--adapt-bn"] - written["--no-adapt-bn"]).max() > 1e-3
