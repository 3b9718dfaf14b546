"""The learning-rate schedules, and which recipe each preset ships: the paper's values for
``paper``, a warmed-up, decayed schedule for the CPU sizes."""

import numpy as np
import pytest
from conftest import load_config

from urn_jax.training.optimizer import learning_rate_schedule


def test_warmup_cosine_rises_to_the_peak_then_decays_to_the_end_fraction():
  schedule = learning_rate_schedule("warmup_cosine", 1e-3, total_steps=1000, warmup_steps=50,
                                    end_fraction=0.01)
  rates = np.array([float(schedule(s)) for s in range(1001)])
  assert rates[0] == 0.0 and rates[50] == pytest.approx(1e-3)
  assert np.all(np.diff(rates[:51]) > 0) and np.all(np.diff(rates[50:]) <= 1e-12)
  assert rates[525] == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-3)  # half-way down the cosine
  assert rates[1000] == pytest.approx(1e-5)


def test_poly_is_nnunets_decay_after_the_warm_up():
  schedule = learning_rate_schedule("poly", 1e-2, total_steps=110, warmup_steps=10)
  assert float(schedule(10)) == pytest.approx(1e-2)
  assert float(schedule(60)) == pytest.approx(1e-2 * 0.5**0.9, rel=1e-5)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-9)


def test_constant_is_constant_and_unknown_kinds_are_refused():
  schedule = learning_rate_schedule("constant", 3e-5, total_steps=10, warmup_steps=5)
  assert [float(schedule(s)) for s in (0, 5, 10, 10**6)] == [pytest.approx(3e-5)] * 4
  with pytest.raises(ValueError, match="schedule must be one of"):
    learning_rate_schedule("step", 1e-3, 10)


def test_the_paper_preset_keeps_the_papers_recipe():
  segment, pretrain = load_config("segment", "urn_md,paper"), load_config("pretrain", "paper")
  assert (segment.train.learning_rate, segment.train.schedule) == (1e-4, "constant")
  assert segment.train.num_epochs == 50 and segment.train.loss == "ce"
  assert (pretrain.train.learning_rate, pretrain.train.schedule) == (3e-5, "constant")
  assert pretrain.train.patience_epochs > 0  # "until convergence": a plateau in epochs
  assert segment.train.batch_size == pretrain.train.batch_size == 4
  assert (segment.train.theta, pretrain.train.theta) == (0.5, 0.8)


@pytest.mark.parametrize("arg", ["small", ""])
def test_the_cpu_presets_warm_up_and_decay(arg):
  for config in (load_config("segment", f"urn_md,{arg}" if arg else "urn_md"),
                 load_config("pretrain", arg) if arg else load_config("pretrain")):
    assert config.train.schedule != "constant"
    assert config.train.warmup_fraction > 0 and config.train.learning_rate > 1e-4


def test_a_held_tail_keeps_the_schedule_before_it_and_the_final_rate_after():
  """The study's pre-training: 8000 steps of warm-up and cosine, then 2000 held at the final
  rate. Up to step 8000 it is the 8000-step schedule exactly, so a finished 8000-step run
  resumes into the tail from its checkpoint."""
  from urn_jax.training import recipe
  config = load_config("pretrain", "small")
  config.train.max_steps = 8000
  plain = recipe.schedule(config, 8000)
  config.train.hold_fraction = 0.2
  held = recipe.schedule(config, 10_000)
  steps = np.arange(0, 8001, 50)
  np.testing.assert_array_equal([float(held(s)) for s in steps],
                                [float(plain(s)) for s in steps])
  final = config.train.end_lr_fraction * config.train.learning_rate
  assert [float(held(s)) for s in (8000, 9000, 10_000)] == [pytest.approx(final)] * 3
  config.train.hold_fraction = 1.0
  from urn_jax.training.config_checks import check_training_config
  from urn_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="train.hold_fraction must be in"):
    check_training_config(config)


def test_the_study_holds_the_final_rate_after_the_same_decay_for_every_scenario():
  """Every segmentation of the study decays over the shipped `small` recipe's 6000 steps
  and then holds for the same 1500, so no scenario trains longer than another; the
  pre-training decays over 8000 and holds 2000."""
  study = load_config("study")
  shipped = load_config("segment", "urn_md,small").train.max_steps
  decays = {v: round(study.segment[v].train.max_steps * (1 - study.segment[v].train.hold_fraction))
            for v in study.segment}
  assert set(decays.values()) == {shipped} and len(decays) == 6
  assert {study.segment[v].train.max_steps for v in study.segment} == {7500}
  pretrain = study.pretrain.train
  assert (pretrain.max_steps, round(pretrain.max_steps * (1 - pretrain.hold_fraction))) == (
      10_000, 8000)
