"""Losses: cross-entropy for segmentation (2.1), reconstruction for synthesis (2.3.3).

``segmentation_loss`` is what the segmentation stage minimizes: the paper's cross-entropy
(``'ce'``), or, beyond the paper, cross-entropy plus a soft Dice loss (``'dice_ce'``,
nnU-Net's choice), which weighs the small enhancing tumour and core as much as the edema.
The variance regularizer lives with the fusion: ``urn_jax.model.fusion.fusion_variance``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from urn_jax.labels import REGIONS

RECONSTRUCTIONS = ("l1", "l2")
SEGMENTATION_LOSSES = ("ce", "dice_ce")


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy over all voxels; ``labels`` are class indices 0..K-1."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


def soft_dice_loss(logits, labels, smooth: float = 1e-5):
  """1 - the mean soft Dice of the BraTS regions (WT, TC, ET) present in the batch.

  A region's probability is the sum of its classes' softmax probabilities, so the loss
  scores exactly the regions the evaluation does. As nnU-Net's "batch Dice", the sums run
  over every voxel of the batch at once. A region absent from every slice of the batch
  is left out of the mean: its Dice would be about 0 for any prediction short of exact
  zeros (``smooth`` / the sum of small probabilities), a constant penalty that says
  nothing; the cross-entropy beside it already punishes false positives there. With no
  region present the loss is 0.
  """
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  losses, present = [], []
  for classes in REGIONS.values():
    p = probabilities[..., list(classes)].sum(-1)
    t = one_hot[..., list(classes)].sum(-1)
    losses.append(1.0 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth))
    present.append(t.sum() > 0)
  present = jnp.stack(present).astype(jnp.float32)
  return (jnp.stack(losses) * present).sum() / jnp.maximum(present.sum(), 1.0)


def segmentation_loss(logits, labels, kind: str = "ce"):
  """``'ce'``: cross-entropy (the paper); ``'dice_ce'``: cross-entropy + soft Dice, equally
  weighted (nnU-Net)."""
  if kind not in SEGMENTATION_LOSSES:
    raise ValueError(f"segmentation loss must be one of {SEGMENTATION_LOSSES}, got {kind!r}")
  loss = cross_entropy(logits, labels)
  if kind == "dice_ce":
    loss = loss + soft_dice_loss(logits, labels)
  return loss


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
