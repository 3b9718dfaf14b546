"""The model learns: the shipped CPU recipe, shrunk to run in about a minute, must segment
the phantom's validation patients. A change to the recipe or the model that stops learning
(a learning rate 100x too low, say) fails here."""

import json

import pytest
from conftest import load_config

from urn_jax.training.loop import train_and_evaluate

pytestmark = pytest.mark.slow  # every test here trains a model or starts a process

# Reached in the recipe's 400 steps, with margin (measured when this test was written: see
# benchmarks/RESULTS.md, "The learning test").
MIN_VALIDATION_DICE = {"WT": 0.7, "TC": 0.4, "ET": 0.4}
MAX_VALIDATION_LOSS = 0.05  # a uniform guess is ln 4 = 1.39


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
  """Baseline + MD trained with the ``small`` preset's recipe (schedule, peak learning
  rate, warm-up, decay) for 400 steps, on 8 phantom patients (4 training, 2 validation,
  2 test) at 4 mm, widths 8-32."""
  root = tmp_path_factory.mktemp("learning")
  config = load_config("segment", "baseline_md,small")
  config.data.cache_dir = str(root / "cache")
  config.data.phantom_brats, config.data.phantom_hcp = 8, 0
  config.data.n4, config.data.spacing, config.data.size = False, 4.0, 48
  config.model.segmentation_features = (8, 16, 32)
  config.train.max_steps, config.train.eval_every = 400, 100
  config.train.checkpoint_every, config.train.log_every = 400, 50
  config.train.eval_slices = 10_000  # every slice of the validation patient
  last = train_and_evaluate(config, root / "run")
  return root / "run", last


def test_the_shipped_recipe_learns_to_segment_the_phantom(learned):
  workdir, last = learned
  for region, threshold in MIN_VALIDATION_DICE.items():
    assert last[f"validation_dice_{region}"] >= threshold, (region, last)
  assert last["validation_loss"] <= MAX_VALIDATION_LOSS, last
  split = json.loads((workdir / "split.json").read_text())["datasets"]["brats"]
  assert [len(split[p]) for p in ("train", "validation", "test")] == [4, 2, 2]
