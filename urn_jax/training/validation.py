"""Validation during training: the training objective, and for segmentation the Dice of
each region, on the validation patients' slices (the test patients are never touched)."""

from __future__ import annotations

import jax
import numpy as np

from urn_jax.data.loader import SliceSource
from urn_jax.labels import REGIONS
from urn_jax.metrics import dice_from_counts
from urn_jax.training import recipe
from urn_jax.training.steps import eval_step, keep_mask


def validate(config, model, state, source: SliceSource, to_device) -> dict:
  """Validation metrics on ``eval_slices`` evenly spaced slices: ``validation_loss``, the
  training objective with the modality dropout of training drawn from a fixed key (the
  same inputs at every evaluation), and for segmentation the Dice of WT, TC and ET with
  every modality the slices have, pooled over the slices (``validation_dice_WT``, ...)."""
  count = min(config.train.eval_slices, len(source))
  indices = np.linspace(0, len(source) - 1, count).astype(int)
  batch_size = config.train.batch_size
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  objective = recipe.objective(config)
  theta, losses, counts = recipe.theta(config), [], []
  for n, start in enumerate(range(0, count - batch_size + 1, batch_size)):
    records = [source[int(i)] for i in indices[start:start + batch_size]]
    batch = to_device({k: np.stack([r[k] for r in records]) for k in records[0]})
    keep = keep_mask(jax.random.key(10_000 + n), batch["available"], theta,
                     config.train.min_keep)
    loss, metrics = eval_step(model, variables, batch, keep, objective)
    losses.append(loss)
    if config.job == "segment":
      if theta is not None:  # the Dice is of every modality the slices have, not of `keep`
        metrics = eval_step(model, variables, batch, batch["available"].astype(bool),
                            objective)[1]
      counts.append(metrics["region_counts"])
  result = {"validation_loss": float(np.mean(jax.device_get(losses)))}
  if counts:
    pooled = np.sum(jax.device_get(counts), axis=0)  # [region, (both, predicted, true)]
    for region, (both, predicted, true) in zip(REGIONS, pooled.tolist()):
      result[f"validation_dice_{region}"] = dice_from_counts(both, predicted, true)
  return result
