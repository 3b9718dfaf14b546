"""The losses of pre-training (synthesis) and segmentation."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from urn_jax import cross_entropy, synthesis_loss
from urn_jax.training.losses import segmentation_loss, soft_dice_loss


def test_synthesis_loss_targets_every_available_modality_and_ignores_missing_ones():
  rng = np.random.default_rng(0)
  prediction = rng.normal(size=(2, 4, 4, 4)).astype(np.float32)
  target = rng.normal(size=(2, 4, 4, 4)).astype(np.float32)
  available = np.array([[1, 1, 1, 1], [0, 1, 0, 1]], bool)  # BraTS, then HCP
  target[1, ..., 0] = np.nan  # whatever the missing slots hold
  pairs = [np.abs(prediction[b, ..., m] - target[b, ..., m]).mean()
           for b in range(2) for m in range(4) if available[b, m]]
  assert float(synthesis_loss(prediction, target, available)) == pytest.approx(np.mean(pairs))
  pairs = [np.square(prediction[b, ..., m] - target[b, ..., m]).mean()
           for b in range(2) for m in range(4) if available[b, m]]
  assert float(synthesis_loss(prediction, target, available, "l2")) == pytest.approx(
      np.mean(pairs), rel=1e-6)
  with pytest.raises(ValueError, match="reconstruction loss"):
    synthesis_loss(prediction, target, available, "huber")


def test_cross_entropy_is_the_mean_over_voxels():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 3, 4)), jnp.float32)
  labels = jnp.asarray(np.random.default_rng(2).integers(0, 4, size=(2, 3, 3)))
  expected = optax.softmax_cross_entropy(logits, jnp.eye(4)[labels]).mean()
  assert float(cross_entropy(logits, labels)) == pytest.approx(float(expected), rel=1e-6)


def _logits(classes, confidence=30.0):
  """Logits that put (almost) all probability on ``classes``."""
  return jnp.asarray(confidence * np.eye(4)[classes], jnp.float32)


def test_soft_dice_scores_the_brats_regions_present_in_the_batch():
  labels = np.array([[[0, 1, 2, 3]]])  # one voxel of each class
  assert float(soft_dice_loss(_logits(labels), labels)) == pytest.approx(0.0, abs=1e-6)
  # Calling the core (1) edema (2): WT still perfect, TC loses one of its two voxels
  # (Dice 2/3), ET is untouched -> loss (0 + 1/3 + 0) / 3.
  predicted = np.array([[[0, 2, 2, 3]]])
  assert float(soft_dice_loss(_logits(predicted), labels)) == pytest.approx(1 / 9, abs=1e-5)
  # No enhancing tumour anywhere in the batch: ET leaves the mean; WT and TC are perfect.
  labels = np.array([[[0, 1, 2, 0]]])
  assert float(soft_dice_loss(_logits(labels), labels)) == pytest.approx(0.0, abs=1e-6)
  # No tumour at all: nothing to score.
  empty = np.zeros((1, 2, 2), int)
  assert float(soft_dice_loss(_logits(np.full((1, 2, 2), 3)), empty)) == 0.0


def test_segmentation_loss_kinds():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(2, 5, 5, 4)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, size=(2, 5, 5)))
  ce = float(cross_entropy(logits, labels))
  assert float(segmentation_loss(logits, labels, "ce")) == pytest.approx(ce)
  assert float(segmentation_loss(logits, labels, "dice_ce")) == pytest.approx(
      ce + float(soft_dice_loss(logits, labels)), rel=1e-6)
  with pytest.raises(ValueError, match="segmentation loss"):
    segmentation_loss(logits, labels, "focal")


def test_soft_dice_averages_over_the_regions_present_not_over_three():
  """Only the whole tumour is present (edema alone): the loss is WT's 1 - Dice, not a third
  of it. Here half the edema is called background: WT Dice 2/3."""
  labels = np.array([[[0, 2, 2, 0]]])
  predicted = np.array([[[0, 2, 0, 0]]])
  assert float(soft_dice_loss(_logits(predicted), labels)) == pytest.approx(1 / 3, abs=1e-5)
  # Edema and core present, no enhancing tumour: the mean of WT's and TC's losses.
  labels = np.array([[[1, 2, 2, 0]]])
  predicted = np.array([[[1, 2, 0, 0]]])  # WT 2 of 3 found (Dice 0.8), TC perfect
  assert float(soft_dice_loss(_logits(predicted), labels)) == pytest.approx(0.1, abs=1e-5)
