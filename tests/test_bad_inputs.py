"""A corpus of bad input, made from the test cases, fed to ``urn-segment`` and to training.

For every kind of damage: the exit status, a message that names the case or file and the
problem, no traceback, every good case still segmented or trained on, nothing half-written;
and a trained work directory whose files are byte-identical after a failed or mistaken
re-run on it.
"""

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import nibabel as nib
import numpy as np
import pytest
from conftest import LPS, SHAPE, _save, _state, _volume, load_config, tiny, write_brats_case

import urn_jax.jobs
import urn_jax.training.recipe
from urn_jax.training.checkpoints import FILE_LIST
from urn_jax.inference.segment import main as urn_segment
from urn_jax.training.loop import train_and_evaluate


def _flair(case_dir):
  return case_dir / f"{case_dir.name}_flair.nii.gz"


def _image(seed=0, shape=SHAPE):
  return _volume(seed, shape)[0].astype(np.int16)


# kind -> (how to damage a complete 2018-named case folder, outcome for urn-segment,
#          outcome for training, the message's pattern). Outcomes: "failed" (reported and
# skipped), "segmented" / "trained" (used; a warning when the pattern is not None).
def _shape(d): _save(np.ones((10, 10, 10), np.int16), _flair(d), LPS)
def _affine(d): _save(_image(), _flair(d), np.diag([-2.0, -1, 1, 1]))
def _four_d(d): _save(np.ones(SHAPE + (2,), np.int16), _flair(d), LPS)
def _nan(d):
  data = _volume(0)[0]
  data[3, 3, 3] = np.nan
  _save(data, _flair(d), LPS)
def _inf(d):
  data = _volume(0)[0]
  data[3, 3, 3] = np.inf
  _save(data, _flair(d), LPS)
def _zeros(d): _save(np.zeros(SHAPE, np.int16), _flair(d), LPS)
def _constant(d): _save(np.full(SHAPE, 100, np.int16), _flair(d), LPS)
def _truncated(d): _flair(d).write_bytes(_flair(d).read_bytes()[:200])
def _garbage(d): _flair(d).write_bytes(gzip.compress(b"this is not a nifti file" * 20))
def _empty(d): _flair(d).write_bytes(b"")
def _dangling(d):
  _flair(d).unlink()
  os.symlink(d / "gone.nii.gz", _flair(d))
def _slice(d):
  for path in d.glob("*.nii.gz"):
    _save(np.asarray(nib.load(path).dataobj)[:, :, 5:6], path, LPS)
def _tiny(d):
  for path in d.glob("*.nii.gz"):
    _save(np.asarray(nib.load(path).dataobj)[16:20, 16:20, 4:8], path, LPS)
def _two_flairs(d): shutil.copy(_flair(d), d / f"{d.name}_FLAIR.nii")
def _mixed_naming(d): _flair(d).rename(d / f"{d.name}-t2f.nii.gz")
def _label_values(d):
  seg = d / f"{d.name}_seg.nii.gz"
  _save(np.full(SHAPE, 3, np.uint8), seg, LPS)
def _label_shifted(d):
  seg = d / f"{d.name}_seg.nii.gz"
  affine = LPS.copy()
  affine[0, 3] += 30
  _save(np.asarray(nib.load(seg).dataobj), seg, affine)
def _label_shape(d):
  _save(np.zeros((10, 10, 10), np.uint8), d / f"{d.name}_seg.nii.gz", LPS)
def _no_label(d): (d / f"{d.name}_seg.nii.gz").unlink()
def _only_label(d):
  for path in d.glob("*.nii.gz"):
    if not path.name.endswith("_seg.nii.gz"):
      path.unlink()
def _uncompressed(d):
  for path in list(d.glob("*.nii.gz")):
    nib.save(nib.load(path), str(path).removesuffix(".gz"))
    path.unlink()
def _one_modality(d):
  for m in ("_t1", "_t1ce", "_t2"):
    (d / f"{d.name}{m}.nii.gz").unlink()
def _upper_case(d):  # Brats18_X_FLAIR.nii.gz, as some converters write them
  for path in list(d.glob("*.nii.gz")):
    path.rename(d / f"{d.name}{path.name[len(d.name):-len('.nii.gz')].upper()}.nii.gz")
def _readme(d): (d / "README.txt").write_text("notes, not an image")
def _unreadable(d):
  pass  # os.access is patched to refuse this case's flair file (the tests run as root)


CORPUS = {
    "shape": (_shape, "failed", "failed", r"has shape .* but .*_flair.nii.gz has \(10, 10, 10\)"),
    "affine": (_affine, "failed", "failed", "has a different affine from .*_flair.nii.gz"),
    "four_d": (_four_d, "failed", "failed", r"flair file .* expected a 3D volume"),
    "nan": (_nan, "failed", "failed", "flair file .* 1 NaN or infinite voxels"),
    "inf": (_inf, "failed", "failed", "flair file .* 1 NaN or infinite voxels"),
    "zeros": (_zeros, "segmented", "trained", "flair file .* is all zeros; treated as missing"),
    "constant": (_constant, "segmented", "trained",
                 r"flair file .* is constant \(100 everywhere\); treated as missing"),
    "truncated": (_truncated, "failed", "failed", "cannot read flair file .* truncated"),
    "garbage": (_garbage, "failed", "failed", "cannot read flair file .* not a NIfTI file"),
    "empty": (_empty, "failed", "failed", "cannot read flair file"),
    "dangling": (_dangling, "failed", "failed", "cannot open flair file .* does not exist"),
    "unreadable": (_unreadable, "failed", "failed", "cannot open flair file .* permission"),
    "slice": (_slice, "failed", "failed", r"\(40, 36, 1\) voxels.* not a slice"),
    "tiny": (_tiny, "failed", "failed", r"\(4, 4, 4\) voxels.* at least 8 voxels"),
    "two_flairs": (_two_flairs, "failed", "failed", "two files for one modality"),
    "mixed_naming": (_mixed_naming, "failed", "failed", "mix BraTS 2018-2021 and 2023"),
    "only_label": (_only_label, "failed", "failed", "a label but no image"),
    "label_values": (_label_values, "segmented", "failed", r"label file .* values \[3\]"),
    "label_shifted": (_label_shifted, "segmented", "failed", "label file .* different affine"),
    "label_shape": (_label_shape, "segmented", "failed", r"label file .* has shape \(10,"),
    "no_label": (_no_label, "segmented", "failed", "no label file"),
    "uncompressed": (_uncompressed, "segmented", "trained", None),
    "one_modality": (_one_modality, "segmented", "trained", None),
    "upper_case": (_upper_case, "segmented", "trained", None),
    "readme": (_readme, "segmented", "trained", None),
}


def write_corpus(root: Path, good=3) -> dict:
  """``root/<case>/`` for every kind, plus ``good`` intact cases, a case in a 2023-named
  folder and a case reached through a symbolic link; returns case id -> kind."""
  kinds = {}
  for i, (kind, (damage, *_)) in enumerate(CORPUS.items()):
    case_id = f"Brats18_{kind}"
    damage(write_brats_case(root, case_id, seed=i))
    kinds[case_id] = kind
  for i in range(good):
    write_brats_case(root, f"Brats18_good{i}", seed=100 + i)
    kinds[f"Brats18_good{i}"] = "good"
  write_brats_case(root, "BraTS-GLI-00001-000", scheme="2023", seed=7)
  kinds["BraTS-GLI-00001-000"] = "good"
  elsewhere = write_brats_case(root.parent / f"{root.name}_linked", "Brats18_linked", seed=8)
  os.symlink(elsewhere, root / "Brats18_linked")
  kinds["Brats18_linked"] = "good"
  return kinds


@pytest.fixture
def unreadable(monkeypatch):
  """As root every file is readable; the corpus's 'unreadable' file is made so here."""
  access = os.access
  monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
      "Brats18_unreadable_flair" not in str(path) and access(path, mode, **kw)))


@pytest.fixture(scope="module")
def model(tiny_runs):
  return {"root": tiny_runs["data"], "workdir": tiny_runs["urn_md"],
          "config": tiny_runs["configs"]["urn_md"]}


def _files(folder: Path) -> dict:
  """Every file below ``folder`` -> its SHA-256."""
  return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_urn_segment_on_the_corpus(model, tmp_path, capsys, unreadable):
  kinds = write_corpus(tmp_path / "in")
  out = tmp_path / "out"
  (out / ".Brats18_good0_probabilities.nii.gz.tmp.nii.gz").parent.mkdir()
  (out / ".Brats18_good0_probabilities.nii.gz.tmp.nii.gz").write_bytes(b"left by kill -9")
  status = urn_segment(["--model", str(model["workdir"]), "--input", str(tmp_path / "in"),
                        "--output", str(out), "--probabilities"])
  err = capsys.readouterr().err
  assert status == 1 and "Traceback" not in err
  failed = {c for c, k in kinds.items() if k != "good" and CORPUS[k][1] == "failed"}
  segmented = set(kinds) - failed
  assert sorted(p.name for p in out.iterdir()) == sorted(
      [f"{c}.nii.gz" for c in segmented] + [f"{c}_probabilities.nii.gz" for c in segmented])
  for case_id in segmented:  # complete, on the input's grid
    assert nib.load(out / f"{case_id}.nii.gz").shape == SHAPE
  lines = err.splitlines()
  for case_id, kind in kinds.items():
    pattern = None if kind == "good" else CORPUS[kind][3]
    mine = [l for l in lines if case_id in l]
    if case_id in failed:
      assert any(l.startswith("skipped: ") and re.search(pattern, l) for l in mine), (kind, mine)
    elif pattern and kind in ("zeros", "constant"):
      assert any(l.startswith("warning: ") and re.search(pattern, l) for l in mine), (kind, mine)
    else:
      assert not any(l.startswith(("skipped", "warning")) for l in mine), (kind, mine)
  assert (f"{len(segmented)} of {len(kinds)} case(s) segmented into {out}; "
          f"{len(failed)} failed") in err
  # Run again: the finished cases are kept, the failed ones fail again, nothing changes.
  before = _files(out)
  assert urn_segment(["--model", str(model["workdir"]), "--input", str(tmp_path / "in"),
                      "--output", str(out), "--probabilities"]) == 1
  err = capsys.readouterr().err
  assert f"0 of {len(kinds)} case(s) segmented into {out}; {len(segmented)} kept; " \
         f"{len(failed)} failed" in err
  assert _files(out) == before


@pytest.mark.slow
def test_training_on_the_corpus_skips_bad_cases_by_name_and_trains_on_the_rest(
    model, tmp_path, capsys, unreadable):
  kinds = write_corpus(tmp_path / "brats")
  config = tiny(load_config("segment", "urn_md"), tmp_path)
  config.data.hcp_dir = ""
  train_and_evaluate(config, tmp_path / "run")
  err = capsys.readouterr().err
  assert "Traceback" not in err
  lines = err.splitlines()
  failed = {c for c, k in kinds.items() if k != "good" and CORPUS[k][2] == "failed"}
  for case_id in failed:
    pattern = CORPUS[kinds[case_id]][3]
    assert any(case_id in l and re.search(pattern, l) for l in lines), (case_id, lines)
  for case_id in ("Brats18_zeros", "Brats18_constant"):
    assert any(l.startswith(f"warning: case {case_id}: flair file") for l in lines)
  split = json.loads((tmp_path / "run" / "split.json").read_text())
  used = set().union(*split["datasets"]["brats"].values())
  assert used == set(kinds) - failed  # every usable case, and only those
  assert (tmp_path / "run" / "best").is_dir()
  # Fixing a bad case (here: removing it) leaves the split usable.
  shutil.rmtree(tmp_path / "brats" / "Brats18_shape")
  shutil.rmtree(tmp_path / "brats" / "Brats18_good1")
  config.train.max_steps = 4
  train_and_evaluate(config, tmp_path / "run")
  assert re.search(r"note: 1 brats case\(s\) of .*split.json are missing or unusable now and "
                   r"left out; the others keep their parts \(first: Brats18_good1\)",
                   capsys.readouterr().err)


def test_one_usable_case_is_not_enough_and_says_why(tmp_path):
  write_brats_case(tmp_path / "brats", "Brats18_only")
  config = tiny(load_config("segment", "urn_md"), tmp_path)
  config.data.hcp_dir = ""
  with pytest.raises(SystemExit, match="no validation case.*at least one training and one "
                     "validation patient"):
    urn_jax.jobs.run(config, tmp_path / "run")


@pytest.mark.parametrize("field, value, message", [
    ("model.fusion", "bogus", "model.fusion must be one of"),
    ("model.kind", "bogus", "model.kind must be one of"),
    ("model.channels", 0, "model.channels must be a whole number >= 1"),
    ("train.theta", 2.0, r"train.theta must be the modality dropout's decay, in \[0, 1\)"),
    ("train.batch_size", 0, "train.batch_size must be a whole number >= 1, got 0"),
    ("train.min_keep", 5, "train.min_keep must be a number of modalities to keep, 1 to 4"),
    ("train.learning_rate", -1.0, "train.learning_rate must be a number >= 0"),
    ("data.size", 17, "data.size must be divisible by 2 for a U-Net of 2 levels"),
    ("data.spacing", 0.0, "data.spacing must be a voxel size in mm, > 0"),
    ("data.test_fraction", 1.0, r"data.test_fraction must be in \[0, 1\)"),
    ("pretrained_workdir", "", "pretrained_workdir must be the work directory of a "
     "pre-training run"),
])
def test_every_bad_config_value_is_refused_before_anything_is_done(tmp_path, field, value,
                                                                   message):
  config = tiny(load_config("segment", "urn_md_pretrained" if field == "pretrained_workdir"
                            else "urn_md"), tmp_path)
  config.data.brats_dir = str(tmp_path / "not read")
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(SystemExit, match="error: " + message):
    urn_jax.jobs.run(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()  # nothing written, nothing read


def test_several_bad_values_are_listed_together(tmp_path):
  config = tiny(load_config("segment", "urn_md"), tmp_path)
  config.model.fusion, config.train.theta, config.train.eval_every = "bogus", 2.0, 0
  with pytest.raises(SystemExit, match="3 config fields cannot be used") as error:
    urn_jax.jobs.run(config, tmp_path / "run")
  assert all(f in str(error.value) for f in ("model.fusion", "train.theta",
                                             "train.eval_every"))


@pytest.mark.parametrize("change, message", [
    ({"model.kind": "bogus"}, "model.kind must be one of"),
    ({"model.segmentation_features": (8, 16)}, "different configuration .*model"),
    ({"data.brats_dir": "/nowhere"}, "BraTS folder /nowhere does not exist"),
    ({"train.batch_size": 0}, "train.batch_size must be"),
    ({"variant": "urn_md_pretrained", "pretrained_workdir": "/nowhere"},
     "different configuration|no pre-training checkpoint"),
])
@pytest.mark.slow
def test_a_failed_rerun_leaves_a_trained_work_directory_byte_identical(model, tmp_path,
                                                                       change, message):
  workdir = tmp_path / "urn_md"
  shutil.copytree(model["workdir"], workdir)
  before = _files(workdir)
  config = ml_collections.ConfigDict(model["config"].to_dict())
  for field, value in change.items():
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
  with pytest.raises(SystemExit, match=message):
    urn_jax.jobs.run(config, workdir)
  assert _files(workdir) == before


@pytest.mark.slow
def test_a_finished_rerun_changes_nothing(model, tmp_path, capsys):
  workdir = tmp_path / "urn_md"
  shutil.copytree(model["workdir"], workdir)
  before = _files(workdir)
  train_and_evaluate(ml_collections.ConfigDict(model["config"].to_dict()), workdir)
  assert "nothing to do" in capsys.readouterr().err
  assert _files(workdir) == before


def _damage_arrays(step_dir: Path):
  arrays = max((p for p in (step_dir / "state").rglob("*") if p.is_file() and
                p.parent.name == "d"), key=lambda p: p.stat().st_size)
  arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])
  return arrays


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["array", "metadata", "file_list"])
def test_a_damaged_best_checkpoint_falls_back_to_an_intact_one(model, tmp_path, capsys,
                                                               damaged):
  workdir = tmp_path / "urn_md"
  shutil.copytree(model["workdir"], workdir)
  best = next((workdir / "best").iterdir())
  assert (best / FILE_LIST).is_file()
  if damaged == "array":
    _damage_arrays(best)
  elif damaged == "metadata":
    (best / "state" / "_METADATA").write_text('{"tree_metadata": ')
  else:
    (best / FILE_LIST).write_text("{")
  case = model["root"] / "brats" / "Brats18_1"
  arguments = ["--model", str(workdir), "--output", str(tmp_path / "out"),
               f"--t1={case / 'Brats18_1_t1.nii.gz'}"]
  if damaged == "array":  # in a process of its own: TensorStore's threads print late
    result = subprocess.run([sys.executable, "-m", "urn_jax.inference.segment", *arguments],
                            capture_output=True, text=True, timeout=300)
    status, err = result.returncode, result.stderr
  else:
    status, err = urn_segment(arguments), capsys.readouterr().err
  assert status == 0 and "Traceback" not in err and "Event loop" not in err
  assert re.search(rf"warning: using the checkpoint {workdir / 'checkpoints'}/\d+, since "
                   rf"{best} is damaged", err.replace(str(workdir.resolve()), str(workdir)))
  assert (tmp_path / "out" / "Brats18_1.nii.gz").exists()


@pytest.mark.slow
def test_a_model_with_no_intact_checkpoint_is_one_line(model, tmp_path, capsys):
  workdir = tmp_path / "urn_md"
  shutil.copytree(model["workdir"], workdir)
  for step_dir in [*(workdir / "best").iterdir(), *(workdir / "checkpoints").iterdir()]:
    _damage_arrays(step_dir)
  case = model["root"] / "brats" / "Brats18_1"
  with pytest.raises(SystemExit) as exit_info:
    urn_segment(["--model", str(workdir), "--output", str(tmp_path / "out"),
                 f"--t1={case / 'Brats18_1_t1.nii.gz'}"])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and "Traceback" not in err
  assert "no readable checkpoint in" in err and "is damaged" in err
  assert len(err.strip().splitlines()) == 1
  assert not list((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_resuming_from_a_damaged_checkpoint_says_what_to_do(model, tmp_path):
  workdir = tmp_path / "urn_md"
  shutil.copytree(model["workdir"], workdir)
  latest = max((workdir / "checkpoints").iterdir(), key=lambda p: int(p.name))
  _damage_arrays(latest)
  config = ml_collections.ConfigDict(model["config"].to_dict())
  config.train.max_steps = 4
  before = _files(workdir)
  with pytest.raises(SystemExit, match=f"the checkpoint .*{latest.name} is damaged.*Move "
                     "that folder away"):
    urn_jax.jobs.run(config, workdir)
  assert _files(workdir) == before


@pytest.mark.slow
def test_ctrl_c_in_training_saves_the_step_says_so_and_the_same_command_resumes(
    model, tmp_path, capsys, monkeypatch):
  workdir = tmp_path / "urn_md"
  shutil.copytree(model["workdir"], workdir)  # trained to step 2
  config = ml_collections.ConfigDict(model["config"].to_dict())
  config.train.max_steps = 8
  real = urn_jax.training.recipe.train_step

  def ctrl_c_during_the_third_step(config):
    step, calls = real(config), []

    def train_step(*args):
      calls.append(1)
      if len(calls) == 3:  # Ctrl-C while step 5 runs: it finishes, and is saved
        os.kill(os.getpid(), signal.SIGINT)
      return step(*args)
    return train_step
  # As in a terminal (a background job, as CI may run the tests in, ignores SIGINT).
  interactive = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with monkeypatch.context() as patch:
      patch.setattr(urn_jax.training.recipe, "train_step", ctrl_c_during_the_third_step)
      with pytest.raises(SystemExit) as exit_info:
        urn_jax.jobs.run(config, workdir)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
  finally:
    signal.signal(signal.SIGINT, interactive)
  err = capsys.readouterr().err
  assert exit_info.value.code == 130 and "Traceback" not in err
  assert (f"interrupted (Ctrl-C) at step 5 of 8; the checkpoint of step 5 is in "
          f"{workdir / 'checkpoints'}: run the same command to resume from it") in err
  urn_jax.jobs.run(config, workdir)
  assert "resuming from step 5" in capsys.readouterr().err
  straight = tmp_path / "straight"  # the same run, uninterrupted, ends the same
  shutil.copytree(model["workdir"], straight)
  urn_jax.jobs.run(config, straight)
  a, b = _state(workdir), _state(straight)
  assert int(a["step"]) == int(b["step"]) == 8
  jax.tree_util.tree_map(np.testing.assert_array_equal, a["params"], b["params"])
