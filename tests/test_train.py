"""The training loop: every config runs, checkpoints resume exactly, frozen stays frozen,
mismatches and divergence give clear errors, several devices agree with one."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from conftest import ROOT, _state, load_config, tiny, with_devices

import urn_jax.errors
import urn_jax.jobs
from urn_jax.data import augment
from urn_jax.errors import CheckpointMismatch, TrainingDiverged
from urn_jax.training.loop import train_and_evaluate
from urn_jax.training.metrics_log import curve_note, curve_summary

@pytest.fixture(scope="module")
def data(tiny_data):
  return tiny_data


@pytest.fixture(scope="module")
def pretrained(tiny_runs):
  return tiny_runs["pretrain"]


@pytest.mark.slow
def test_pretraining_runs_end_to_end(pretrained):
  lines = [json.loads(l) for l in (pretrained / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == [1, 2] and "validation_loss" in lines[-1]
  assert (pretrained / "config.json").exists() and (pretrained / "split.json").exists()
  assert list((pretrained / "tensorboard").iterdir())
  assert "decoders" in _state(pretrained)["params"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["baseline", "baseline_md", "urn_md"])
def test_every_segmentation_variant_runs_end_to_end(variant, data, tmp_path):
  last = train_and_evaluate(tiny(load_config("segment", variant), data), tmp_path)
  assert np.isfinite(last["loss"]) and np.isfinite(last["validation_loss"])
  params = _state(tmp_path)["params"]
  assert ("encoders" in params) == (variant == "urn_md")


@pytest.mark.slow
def test_pretrained_encoders_are_restored_and_stay_bit_identical(pretrained, data, tmp_path):
  config = tiny(load_config("segment", "urn_md_pretrained"), data, steps=3)
  config.pretrained_workdir = str(pretrained)
  train_and_evaluate(config, tmp_path)
  before, after = _state(pretrained, "best"), _state(tmp_path)
  for collection in ("params", "batch_stats"):
    jax.tree_util.tree_map(np.testing.assert_array_equal, before[collection]["encoders"],
                           after[collection]["encoders"])
  assert "segmenter" in after["params"]


@pytest.mark.slow
def test_finetuned_encoders_start_from_the_pretraining_and_then_train(pretrained, data,
                                                                      tmp_path):
  """The fifth variant (beyond the paper): encoders restored like urn_md_pretrained's, then
  trained. At a learning rate of 1e-5, 3 Adam steps move each weight by at most 3e-5: the
  encoders stay within that of the pre-trained ones (random ones would differ by ~0.1), and
  they do move."""
  config = tiny(load_config("segment", "urn_md_finetuned"), data, steps=3,
                learning_rate=1e-5)
  config.pretrained_workdir = str(pretrained)
  train_and_evaluate(config, tmp_path)
  before = _state(pretrained, "best")["params"]["encoders"]
  after = _state(tmp_path)["params"]["encoders"]
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=4e-5),
                         before, after)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before),
                                                      jax.tree_util.tree_leaves(after)))


@pytest.mark.slow
def test_frozen_encoders_cannot_resume_an_end_to_end_run(pretrained, data, tmp_path):
  """Freezing changes the optimizer state's tree: it is part of the checkpoint signature,
  so it is refused by name, not met as an orbax error. A signature stored before the field
  existed is read from its variant name, so old runs still resume."""
  from urn_jax.training.checkpoints import check_signature, signature
  train_and_evaluate(tiny(load_config("segment", "urn_md"), data), tmp_path)
  frozen = tiny(load_config("segment", "urn_md"), data, steps=4)
  frozen.pretrained_encoders, frozen.pretrained_workdir = "frozen", str(pretrained)
  with pytest.raises(CheckpointMismatch, match="pretrained_encoders"):
    train_and_evaluate(frozen, tmp_path)
  old = tiny(load_config("segment", "urn_md_pretrained"), data)
  stored = {k: v for k, v in signature(old).items() if k != "pretrained_encoders"}
  check_signature(stored, signature(old), tmp_path)  # no error
  with pytest.raises(CheckpointMismatch):
    check_signature({**stored, "variant": "urn_md"}, signature(old), tmp_path)


@pytest.mark.slow
def test_pretrained_variants_need_a_pretraining(data, tmp_path):
  for variant in ("urn_md_pretrained", "urn_md_finetuned"):
    config = tiny(load_config("segment", variant), data)
    with pytest.raises(urn_jax.errors.ConfigError, match="pretrained_workdir must be"):
      train_and_evaluate(config, tmp_path / variant)
  config = tiny(load_config("segment", "urn_md"), data)
  config.pretrained_encoders = "thawed"
  with pytest.raises(urn_jax.errors.ConfigError, match="pretrained_encoders must be one of"):
    train_and_evaluate(config, tmp_path / "thawed")


@pytest.mark.slow
def test_missing_pretrained_workdir_is_a_clear_error(data, tmp_path):
  config = tiny(load_config("segment", "urn_md_pretrained"), data)
  config.pretrained_workdir = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="no pre-training checkpoint in"):
    train_and_evaluate(config, tmp_path / "run")


@pytest.mark.slow
def test_encoders_pre_trained_on_other_slices_are_refused_by_name(pretrained, data, tmp_path):
  """Encoders pre-trained on 1 mm slices of 16 x 16 voxels, fed 2 mm slices of 32 x 32 by
  a segmentation config: refused before any data is read, each field named with both
  values."""
  config = tiny(load_config("segment", "urn_md_pretrained"), data)
  config.pretrained_workdir = str(pretrained)
  config.data.spacing, config.data.size = 2.0, 32
  with pytest.raises(urn_jax.errors.ConfigError) as error:
    train_and_evaluate(config, tmp_path / "run")
  message = str(error.value)
  assert f"the pre-training in {pretrained} does not fit this config" in message
  assert "data.spacing 1.0 there, 2.0 here" in message
  assert "data.size 16 there, 32 here" in message
  assert "data.n4 " not in message and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_a_clear_error(data, tmp_path):
  train_and_evaluate(tiny(load_config("segment", "urn_md"), data), tmp_path)
  trained = (tmp_path / "config.json").read_bytes()
  other = tiny(load_config("segment", "urn_md"), data, steps=4)
  other.model.encoder_features = (4, 16)
  with pytest.raises(CheckpointMismatch, match="different configuration.*model"):
    train_and_evaluate(other, tmp_path)
  # Trained with the default preset's augmentation: resumed without it is refused too.
  plain = tiny(load_config("segment", "urn_md"), data, steps=4)
  plain.augment.enabled = False
  with pytest.raises(CheckpointMismatch, match="other data augmentation.*augment.p_flip"):
    train_and_evaluate(plain, tmp_path)
  bogus = tiny(load_config("segment", "urn_md"), data, steps=4)
  bogus.model.kind = "bogus"
  with pytest.raises(urn_jax.errors.ConfigError, match="model.kind must be"):
    train_and_evaluate(bogus, tmp_path)
  assert (tmp_path / "config.json").read_bytes() == trained  # the trained model still loads


@pytest.mark.slow
def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(data, tmp_path):
  config = tiny(load_config("segment", "baseline_md"), data, steps=2)
  train_and_evaluate(config, tmp_path)
  diverging = tiny(load_config("segment", "baseline_md"), data, steps=40, learning_rate=1e38,
                   checkpoint_every=1)
  with pytest.raises(TrainingDiverged, match="the loss became .*last good checkpoint"):
    train_and_evaluate(diverging, tmp_path)
  state = _state(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state["params"]))


def _run_launch(workdir, data, extra=(), env=None, command_only=False):
  command = [sys.executable, str(ROOT / "launch.py"), "--config=configs/segment.py:baseline_md",
             f"--workdir={workdir}", f"--config.data.brats_dir={data / 'brats'}",
             f"--config.data.cache_dir={data / 'cache'}", "--config.data.n4=False",
             "--config.data.size=16", "--config.data.spacing=1.0",
             "--config.model.segmentation_features=(4,8)", "--config.train.max_steps=2",
             "--config.train.eval_every=2", "--config.train.log_every=1", *extra]
  env = dict(os.environ, JAX_THREEFRY_PARTITIONABLE="0", **(env or {}))
  if command_only:
    return command, env
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env,
                        timeout=600)


@pytest.mark.slow
def test_a_run_killed_at_any_moment_resumes_to_the_same_parameters(data, tmp_path):
  """With every augmentation on (each slice gets each transform with probability 0.5): the
  resumed run draws the transforms the uninterrupted one drew."""
  steps = ["--config.train.max_steps=10", "--config.train.checkpoint_every=2",
           "--config.train.eval_every=5",
           *(f"--config.augment.{p}=0.5" for p in augment.PROBABILITIES)]
  assert _run_launch(tmp_path / "straight", data, steps).returncode == 0
  command = _run_launch(tmp_path / "killed", data, steps, command_only=True)
  process = subprocess.Popen(command[0], cwd=ROOT, env=command[1], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (tmp_path / "killed" / "checkpoints" / "4").exists() and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)  # kill -9, wherever it is
  process.wait()
  result = _run_launch(tmp_path / "killed", data, steps)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming from step" in result.stderr
  a, b = _state(tmp_path / "straight"), _state(tmp_path / "killed")
  assert int(a["step"]) == int(b["step"]) == 10
  jax.tree_util.tree_map(np.testing.assert_array_equal, a["params"], b["params"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])


@pytest.mark.slow
def test_early_stopping_on_a_plateau_measured_in_epochs(data, tmp_path, capsys):
  """With a learning rate of 0 the validation loss never improves: the run stops once
  ``patience_epochs`` epochs have passed since the first evaluation, whatever eval_every."""
  config = tiny(load_config("pretrain"), data, steps=40, learning_rate=0.0,
                patience_epochs=0.15, eval_every=1, checkpoint_every=5)
  train_and_evaluate(config, tmp_path)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  steps_per_epoch = rows[0]["step"] / rows[0]["epoch"]
  expected = 1 + math.ceil(0.15 * steps_per_epoch)
  assert int(_state(tmp_path)["step"]) == rows[-1]["step"] == expected < 40
  err = capsys.readouterr().err
  assert "improved by less than 1% in 0.15 epochs" in err
  assert re.search(rf"validation loss: best \S+ at step \d+ of {expected}; it fell \S+ % in "
                   r"the last fifth of the steps", err)  # at the end, the curve's state
  assert err.rstrip().splitlines()[-1].startswith("done: step")


def _curve(tmp_path, losses, steps=10):
  """A metrics.jsonl with a validation loss at each of ``losses``' steps (a dict)."""
  rows = [{"step": s, "loss": 1.0, **({"validation_loss": losses[s]} if s in losses else {})}
          for s in range(1, steps + 1)]
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return curve_summary(path)


def test_every_training_ends_saying_whether_its_validation_loss_flattened(tmp_path):
  """The last fifth of 10 steps is steps 9-10: the best before it is compared with the best
  overall; under 5 % lower is flat, 5 % or more is a run that ended still learning."""
  flat = curve_note(_curve(tmp_path, {4: 1.0, 8: 0.5, 10: 0.48}))
  assert flat == ("validation loss: best 0.48 at step 10 of 10; it fell 4.0 % in the last "
                  "fifth of the steps (flat: under 5 %)")
  falling = curve_note(_curve(tmp_path, {4: 1.0, 8: 0.5, 10: 0.47}))
  assert "it fell 6.0 % in the last fifth" in falling and "still falling" in falling
  assert "--config.train.max_steps" in falling and "flat:" not in falling
  late = curve_note(_curve(tmp_path, {9: 1.0, 10: 0.9}))
  assert late.endswith("at step 10 of 10; too few validations to tell whether it has flattened")
  assert curve_note(_curve(tmp_path, {})) is None


def test_a_typo_in_an_override_is_an_error(data, tmp_path):
  result = _run_launch(tmp_path, data, ["--config.train.lerning_rate=0.1"])
  assert result.returncode != 0 and "lerning_rate" in result.stderr


@pytest.mark.parametrize("section,field,value,message", [
    ("model", "dtype", "float16", "model.dtype must be one of"),
    ("train", "loss", "focal", "train.loss must be one of"),
    ("train", "schedule", "step", "train.schedule must be one of"),
    ("train", "warmup_fraction", 2.0, r"train.warmup_fraction must be in \[0, 1\]")])
def test_a_bad_config_value_is_a_message_not_a_traceback(data, tmp_path, section, field,
                                                         value, message):
  config = tiny(load_config("segment", "urn_md"), data)
  config[section][field] = value
  with pytest.raises(SystemExit, match="error: " + message):
    urn_jax.jobs.run(config, tmp_path)


@pytest.mark.slow
def test_four_devices_match_one(data, tmp_path):
  losses = []
  for devices in (1, 4):
    result = _run_launch(tmp_path / str(devices), data,
                         env=with_devices(dict(os.environ), devices))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{devices} cpu device(s)" in result.stderr
    lines = (tmp_path / str(devices) / "metrics.jsonl").read_text().splitlines()
    losses.append([json.loads(l)["loss"] for l in lines])
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.parametrize("name,arg", [("pretrain", "small"), ("pretrain", "paper"),
                                      ("segment", "urn_md,small"),
                                      ("segment", "urn_md_pretrained,paper")])
def test_size_presets(name, arg):
  config = load_config(name, arg)
  assert config.data.size == (64 if "small" in arg else 240)
  with pytest.raises(ValueError, match="unknown config argument"):
    load_config(name, "huge")


@pytest.mark.slow
def test_mixed_precision_runs(data, tmp_path):
  config = tiny(load_config("segment", "urn_md"), data)
  config.model.dtype = "bfloat16"
  last = train_and_evaluate(config, tmp_path)
  assert np.isfinite(last["loss"])
  params = _state(tmp_path)["params"]
  assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("override, expected", [
    ("--config.train.lerning_rate=1",
     "--config.train.lerning_rate: the config has no field 'lerning_rate'; did you mean "
     "'learning_rate'?"),
    ("--config.train.theta=abc", "--config.train.theta=abc: could not convert"),
    ("--config=configs/segment.py:urn_mdd", "ValueError: unknown config argument 'urn_mdd'; "
     "variants: baseline, baseline_md, baseline_md_wide, urn_md, urn_md_pretrained, "
     "urn_md_finetuned"),
])
@pytest.mark.slow
def test_a_mistaken_override_is_one_line_naming_it(tmp_path, override, expected):
  result = subprocess.run([sys.executable, str(ROOT / "launch.py"),
                           "--config=configs/segment.py:small", f"--workdir={tmp_path / 'w'}",
                           override], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert expected in result.stderr and "Traceback" not in result.stderr
  assert not (tmp_path / "w").exists()  # nothing written


@pytest.mark.slow
def test_a_work_directory_from_before_the_explicit_fields_resumes_and_loads(
    pretrained, data, tmp_path, capsys):
  """``model.synthesis`` and ``train.theta = None`` are newer than some work directories:
  their stored configs and checkpoint signatures are read as they meant it, so a finished
  run is found finished (not refused), and the fields cannot be changed on a trained run."""
  from urn_jax.training.checkpoints import check_signature, signature
  from urn_jax.job_config import read_config, stored_config
  workdir = tmp_path / "old"
  shutil.copytree(pretrained, workdir)
  stored = json.loads((workdir / "config.json").read_text())
  del stored["model"]["synthesis"]
  (workdir / "config.json").write_text(json.dumps(stored))
  assert read_config(workdir).model.synthesis is True
  config = tiny(load_config("pretrain"), data)
  assert train_and_evaluate(config, workdir) == {}
  err = capsys.readouterr().err
  assert "nothing to do" in err and "validation loss: best" in err  # and its curve's state
  current = signature(config)
  old = json.loads(json.dumps(current))
  del old["model"]["synthesis"]
  check_signature(old, current, workdir)  # no error
  with pytest.raises(CheckpointMismatch, match="model"):
    check_signature(old, {**current, "model": {**current["model"], "synthesis": False}},
                    workdir)
  baseline = tiny(load_config("segment", "baseline"), data)
  assert baseline.train.theta is None
  old_baseline = ml_collections.ConfigDict(json.loads(baseline.to_json()))
  old_baseline.train.theta = -1.0  # how "no dropout" was written before None
  assert stored_config(old_baseline).train.theta is None


def test_resuming_checks_the_augmentation_a_run_was_trained_with(tmp_path):
  """A run of a CPU preset trained before those presets augmented resumes only with
  augmentation off, and is told so; the study's stages, trained with every probability 0,
  resume with their pinned ``enabled=False``."""
  from urn_jax.training.checkpoints import _check_augmentation
  before = load_config("segment")
  before.augment = ml_collections.ConfigDict(
      {k: (0.0 if k.startswith("p_") else v) for k, v in before.augment.items()
       if k != "enabled"})  # as config.json kept it then
  with pytest.raises(CheckpointMismatch, match="trained without augmentation: add "
                     "--config.augment.enabled=False"):
    _check_augmentation(before, load_config("segment"), tmp_path)
  now = load_config("segment")
  now.augment.enabled = False
  _check_augmentation(before, now, tmp_path)
  _check_augmentation(ml_collections.ConfigDict({"job": "segment"}), now, tmp_path)  # no block
  study = load_config("study")
  _check_augmentation(before, study.pretrain, tmp_path)
