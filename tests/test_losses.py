"""The losses of pre-training (synthesis) and segmentation."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from urn_jax import cross_entropy, synthesis_loss


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
