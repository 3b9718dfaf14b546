"""Losses: cross-entropy for segmentation (2.1), reconstruction for synthesis (2.3.3).

The variance regularizer lives with the fusion: ``urn_jax.fusion.fusion_variance``.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

RECONSTRUCTIONS = ("l1", "l2")


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy over all voxels; ``labels`` are class indices 0..K-1."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


def synthesis_loss(prediction, target, available, kind: str = "l1"):
  """Reconstruction error of every modality that exists in the sample.

  ``prediction`` and ``target`` are ``[B, H, W, M]``, ``available`` ``[B, M]``. Modalities
  that were dropped from the input are still targets (that is what teaches synthesis);
  modalities the sample does not have at all (FLAIR and T1c of an HCP subject) are not, and
  whatever their slots hold is ignored. The error is averaged over voxels per
  (sample, modality), then over the existing pairs.

  The paper does not name the loss; it follows Chartsias et al. (2018), whose decoders it
  reuses and whose synthesis loss is the mean absolute error, so ``'l1'`` is the default.
  """
  if kind not in RECONSTRUCTIONS:
    raise ValueError(f"reconstruction loss must be one of {RECONSTRUCTIONS}, got {kind!r}")
  available = available.astype(bool)
  present = available[:, None, None, :]
  error = jnp.where(present, prediction.astype(jnp.float32) - jnp.where(present, target, 0), 0)
  error = jnp.abs(error) if kind == "l1" else jnp.square(error)
  per_pair = error.mean(axis=(1, 2))  # [B, M]
  return per_pair.sum() / jnp.maximum(available.sum(), 1)
