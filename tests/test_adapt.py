"""Test-time adaptation of batch normalization (AdaBN): what ``urn_jax.inference.adapt`` must
do to a trained network's statistics, and what it must leave alone."""

import jax
import numpy as np
import pytest
from conftest import SIZE, TINY

import urn_jax as U
from urn_jax.inference.adapt import adaptation_slices, adapted_variables
from urn_jax.inference.predict import infer
from urn_jax.model.unet import MOMENTS

NUM_SLICES, BRAIN = 12, slice(2, 10)  # a volume of 12 slices, brain on 8 of them


def _volume(seed=0):
  rng = np.random.default_rng(seed)
  volume = np.zeros((NUM_SLICES, SIZE, SIZE, 4), np.float32)
  volume[BRAIN] = rng.normal(1.0, 2.0, size=volume[BRAIN].shape)
  return volume


def _trained_variables(model, seed=1):
  """Initial parameters and running averages that are not those of ``_volume``."""
  volume = _volume(seed)
  variables = jax.jit(model.init, static_argnames="train")(
      jax.random.key(0), volume[BRAIN], np.ones((8, 4), bool), train=True)
  assert MOMENTS not in variables, "nothing may be sown when a model is initialized"
  stats = jax.tree_util.tree_map(lambda v: v + 0.5, variables["batch_stats"])
  return {"params": variables["params"], "batch_stats": stats}


@pytest.fixture(scope="module")
def frozen_urn():
  model = U.URN(**TINY, synthesis=False, freeze_encoders=True)
  return model, _trained_variables(model)


@pytest.fixture(scope="module")
def baseline():
  model = U.Baseline(features=(4, 8))
  return model, _trained_variables(model)


def test_adaptation_slices_spread_over_the_brain_only():
  volume = _volume()
  chosen = adaptation_slices(volume, np.ones(4, bool), count=8)
  np.testing.assert_array_equal(chosen, np.arange(2, 10))
  assert set(adaptation_slices(volume, np.ones(4, bool), count=64)) == set(range(2, 10))
  only_t2 = np.zeros_like(volume)
  only_t2[5, ..., 3] = 1.0
  assert set(adaptation_slices(only_t2, [0, 0, 0, 1], count=5)) == {5}
  with pytest.raises(ValueError, match="no slice"):
    adaptation_slices(only_t2, [1, 0, 0, 0])
  with pytest.raises(ValueError, match=r"\[Z, X, Y, 4\]"):
    adaptation_slices(volume[..., :3], np.ones(4, bool))


def test_adapted_inference_is_the_network_normalized_by_the_patients_own_statistics(frozen_urn):
  """AdaBN's definition: in inference mode with the adapted averages, the brain slices give
  what every batch norm - the frozen encoders' included - gives on them in training mode."""
  model, variables = frozen_urn
  volume, mask = _volume(), np.array([1, 0, 1, 1], bool)
  adapted = adapted_variables(model, variables, volume, mask, count=8)
  got = infer(model, adapted, volume[BRAIN], mask)["probabilities"]
  everything_trains = model.clone(freeze_encoders=False)
  out, _ = jax.jit(lambda v, x, m: everything_trains.apply(
      v, x, m, train=True, mutable=["batch_stats"]))(
          variables, volume[BRAIN], np.broadcast_to(mask, (8, 4)))
  expected = jax.nn.softmax(out["segmentation"], axis=-1)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  unadapted = infer(model, variables, volume[BRAIN], mask)["probabilities"]
  assert np.abs(np.asarray(unadapted) - np.asarray(expected)).max() > 1e-2


def test_a_modality_left_out_keeps_its_running_averages(frozen_urn):
  model, variables = frozen_urn
  mask = np.array([1, 0, 1, 1], bool)
  adapted = adapted_variables(model, variables, _volume(), mask, count=8)
  encoders = lambda v: jax.tree_util.tree_leaves(v["batch_stats"]["encoders"])
  for before, after in zip(encoders(variables), encoders(adapted)):
    np.testing.assert_array_equal(before[1], after[1])  # T1 is not given
    assert not np.allclose(before[0], after[0])
  assert jax.tree_util.tree_structure(adapted["batch_stats"]) == jax.tree_util.tree_structure(
      variables["batch_stats"])
  assert adapted["params"] is variables["params"]


def test_a_scanners_gain_per_modality_changes_nothing_once_the_urn_is_adapted(frozen_urn):
  """Each encoder's first convolution turns its modality's gain into an affine change of
  every channel, which the adapted batch norm then removes: a different scanner gain per
  modality leaves the adapted prediction as it was (up to the norm's epsilon), while the
  network with its trained averages changes its answer."""
  model, variables = frozen_urn
  volume, mask = _volume(), np.ones(4, bool)
  gained = volume * np.array([3.0, 0.5, 2.0, 4.0], np.float32)

  def predicted(image, adapt):
    used = adapted_variables(model, variables, image, mask) if adapt else variables
    return np.asarray(infer(model, used, image[BRAIN], mask)["probabilities"])

  adapted = np.abs(predicted(gained, True) - predicted(volume, True)).max()
  trained = np.abs(predicted(gained, False) - predicted(volume, False)).max()
  assert adapted < 1e-3 and trained > 20 * adapted, (adapted, trained)


def test_the_baseline_adapts_its_batch_norms_too(baseline):
  model, variables = baseline
  volume, mask = _volume(), np.array([0, 1, 1, 0], bool)
  adapted = adapted_variables(model, variables, volume, mask, count=8)
  got = infer(model, adapted, volume[BRAIN], mask)["probabilities"]
  out, _ = model.apply(variables, volume[BRAIN], np.broadcast_to(mask, (8, 4)), train=True,
                       mutable=["batch_stats"])
  np.testing.assert_allclose(got, jax.nn.softmax(out["segmentation"], axis=-1), atol=1e-5)


def test_training_sows_nothing(frozen_urn):
  """Only a caller that asks for ``MOMENTS`` gets them: a training step's state is as it was."""
  model, variables = frozen_urn
  volume = _volume()
  _, state = model.clone(freeze_encoders=False).apply(
      variables, volume[BRAIN], np.ones((8, 4), bool), train=True, mutable=["batch_stats"])
  assert set(state) == {"batch_stats"}


def test_the_option_must_be_true_or_false(tmp_path):
  import ml_collections

  from configs.evaluate import get_config
  from urn_jax.errors import ConfigError, DataError
  from urn_jax.inference.segment import segment_cases
  from urn_jax.training.config_checks import check_evaluation_settings
  settings = get_config().evaluate
  check_evaluation_settings(settings)
  settings.adapt_bn = True
  check_evaluation_settings(settings)
  with pytest.raises(ConfigError, match="evaluate.adapt_bn .* must be True or False, got 'yes'"):
    check_evaluation_settings(ml_collections.ConfigDict({**settings.to_dict(), "adapt_bn": "yes"}))
  with pytest.raises(DataError, match="adapt_bn .* must be True or False, got 'yes'"):
    segment_cases(tmp_path / "no_model", [], tmp_path / "out", adapt="yes")


def test_evaluation_adapts_a_synthesis_as_it_adapts_a_segmentation():
  """``adapt_bn`` covers every prediction evaluation makes: a pre-training's syntheses too."""
  import types

  from urn_jax.evaluation.evaluate import Patient, _Scoring, _synthesis
  from urn_jax.inference.predict import LoadedModel, predict_slices
  model = U.URN(**dict(TINY, segmentation_features=None))
  variables = _trained_variables(model)
  loaded = LoadedModel(None, None, model, variables, 0, None)
  volume, mask = _volume(), np.array([1, 1, 0, 1], bool)
  patient = Patient(types.SimpleNamespace(available=[True] * 4), volume, None, None, {}, {})
  adapted = predict_slices(model, adapted_variables(model, variables, volume, mask), volume,
                           mask)["synthesis"]
  plain = predict_slices(model, variables, volume, mask)["synthesis"]
  np.testing.assert_allclose(_synthesis(loaded, patient, mask, _Scoring(8, adapt=True))[0],
                             adapted, atol=1e-6)
  np.testing.assert_allclose(_synthesis(loaded, patient, mask, _Scoring(8))[0], plain,
                             atol=1e-6)
  assert np.abs(adapted - plain).max() > 1e-2
