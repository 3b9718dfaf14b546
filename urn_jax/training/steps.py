"""Pure, jitted train and validation steps for the URN and the baseline, and their objectives.

Every step is ``step(state, batch, key) -> (state, metrics)``. A batch is a dict of arrays:

- ``image``: float ``[B, H, W, M]``, z-scored slices in the canonical modality order;
- ``available``: bool ``[B, M]``, which modalities the sample has (HCP: T1 and T2 only);
- ``label``: int ``[B, H, W]``, classes 0..3 (BraTS labels 0, 1, 2, 4), for segmentation.

Modality dropout happens inside the step, from ``key``, so the mask that reaches the model
is always an array and each step compiles once for every combination of modalities. The
hyper-parameters are static keyword arguments (one compilation per setting).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from urn_jax.labels import REGIONS
from urn_jax.model.fusion import fusion_variance
from urn_jax.model.urn import PRETRAINED_MODULES
from urn_jax.training.losses import cross_entropy, segmentation_loss, synthesis_loss
from urn_jax.training.modality_dropout import modality_dropout
from urn_jax.training.optimizer import make_optimizer


class TrainState(train_state.TrainState):
  """Flax's TrainState plus the batch-norm statistics."""

  batch_stats: Any = None


def create_train_state(model, key, image_shape, learning_rate) -> TrainState:
  """Initializes ``model`` for images of ``image_shape`` ``[B, H, W, M]``, with Adam at
  ``learning_rate`` (a number or an optax schedule, ``urn_jax.training.optimizer``). A URN with
  ``freeze_encoders=True`` gets an optimizer that leaves its encoders (and learned f) alone."""
  images = jnp.zeros(image_shape, jnp.float32)
  mask = jnp.ones((image_shape[0], image_shape[-1]), bool)
  variables = jax.jit(functools.partial(model.init, train=False))(key, images, mask)
  frozen = PRETRAINED_MODULES if getattr(model, "freeze_encoders", False) else ()
  state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                            batch_stats=variables.get("batch_stats", {}),
                            tx=make_optimizer(learning_rate, frozen))
  # A strongly typed step counter: the Python 0 of TrainState.create is weakly typed, which
  # would make the second call of a step compile again.
  return state.replace(step=jnp.zeros((), jnp.int32))


def keep_mask(key, available, theta, min_keep):
  """The modalities the network sees: ``available`` after modality dropout (none when
  ``theta`` is None)."""
  available = available.astype(bool)
  if theta is None:  # no modality dropout: use everything the sample has
    return available
  return modality_dropout(key, available, theta, min_keep)


def pretrain_objective(out, batch, keep, *, variance_weight=1e-4, reconstruction="l1"):
  """Synthesis pre-training's loss (paper 2.3): reconstruct every modality the sample has,
  dropped ones included, from the kept ones, plus ``variance_weight`` times the voxel-wise
  variance of the kept encoders' outputs. The targets are ``batch["target"]`` where the
  augmentation kept clean ones (``AugmentSettings.clean_targets``), else the inputs.
  Returns ``(loss, metrics)``."""
  recon = synthesis_loss(out["synthesis"], batch.get("target", batch["image"]),
                         batch["available"], reconstruction)
  variance = fusion_variance(out["z_tilde"], keep)
  loss = recon + variance_weight * variance
  return loss, {"loss": loss, "reconstruction": recon, "variance": variance,
                "kept": keep.sum(axis=1).mean()}


def segment_objective(out, batch, keep, *, variance_weight=0.0, loss="ce"):
  """Segmentation's loss (paper 2.1): ``segmentation_loss`` of kind ``loss`` (the paper's
  cross-entropy, or Dice + cross-entropy), plus ``variance_weight`` times the fusion
  variance for a URN. Returns ``(loss, metrics)``."""
  logits = out["segmentation"]
  total = segmentation_loss(logits, batch["label"], loss)
  metrics = {"cross_entropy": cross_entropy(logits, batch["label"]),
             "kept": keep.sum(axis=1).mean(),
             "accuracy": (logits.argmax(-1) == batch["label"]).mean()}
  if "z_tilde" in out:
    metrics["variance"] = fusion_variance(out["z_tilde"], keep)
    total = total + variance_weight * metrics["variance"]
  metrics["loss"] = total
  return total, metrics


def _forward(state, params, batch, keep):
  variables = {"params": params, "batch_stats": state.batch_stats}
  out, updates = state.apply_fn(variables, batch["image"], keep, train=True,
                                mutable=["batch_stats"])
  return out, updates["batch_stats"]


def _update(state, batch, keep, objective):
  def loss_fn(params):
    out, batch_stats = _forward(state, params, batch, keep)
    loss, metrics = objective(out, batch, keep)
    return loss, (batch_stats, metrics)

  (_, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics["grad_norm"] = optax.tree.norm(grads)
  return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics


@functools.partial(jax.jit, donate_argnames="state",
                   static_argnames=("theta", "min_keep", "variance_weight", "reconstruction"))
def pretrain_step(state, batch, key, *, theta=0.8, min_keep=2, variance_weight=1e-4,
                  reconstruction="l1"):
  """One step of synthesis pre-training of a URN (paper 2.3, 2.4; ``pretrain_objective``)
  with modality dropout drawn from ``key``."""
  keep = keep_mask(key, batch["available"], theta, min_keep)
  return _update(state, batch, keep, functools.partial(
      pretrain_objective, variance_weight=variance_weight, reconstruction=reconstruction))


@functools.partial(jax.jit, donate_argnames="state",
                   static_argnames=("theta", "min_keep", "variance_weight", "loss"))
def segment_step(state, batch, key, *, theta=0.5, min_keep=1, variance_weight=0.0, loss="ce"):
  """One step of segmentation (paper 2.1; ``segment_objective``), for the baseline
  (``theta=None``: no modality dropout), Baseline + MD, and the URN. For a URN trained from
  scratch, set ``variance_weight=1e-4`` (encoders and head learn together with the
  regularizer); with frozen pre-trained encoders the variance is reported but has no
  gradient."""
  keep = keep_mask(key, batch["available"], theta, min_keep)
  return _update(state, batch, keep, functools.partial(
      segment_objective, variance_weight=variance_weight, loss=loss))


@functools.partial(jax.jit, static_argnames=("model", "objective"))
def eval_step(model, variables, batch, keep, objective):
  """The training objective on a batch in inference mode (batch-norm running statistics),
  with the modalities ``keep``: ``(loss, metrics)``. ``objective`` is ``pretrain_objective``
  or ``segment_objective`` with its settings bound (``functools.partial`` of hashable
  values, made once per run, so this compiles once). For segmentation, ``metrics`` also has
  ``region_counts`` ``[3, 3]``: per region (``urn_jax.labels.REGIONS``, in its order) the
  voxels predicted and true, the predicted, and the true ones, to pool a Dice over many
  batches."""
  out = model.apply(variables, batch["image"], keep, train=False)
  loss, metrics = objective(out, batch, keep)
  if "segmentation" in out:
    predicted = out["segmentation"].argmax(-1)
    counts = []
    for classes in REGIONS.values():
      p, t = jnp.isin(predicted, jnp.asarray(classes)), jnp.isin(batch["label"],
                                                                  jnp.asarray(classes))
      counts.append(jnp.stack([(p & t).sum(), p.sum(), t.sum()]))
    metrics["region_counts"] = jnp.stack(counts)
  return loss, metrics
