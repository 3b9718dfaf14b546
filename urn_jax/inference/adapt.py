"""Test-time adaptation of batch normalization to each patient (AdaBN; Li et al., "Revisiting
batch normalization for practical domain adaptation", 2016).

A network trained at one site normalizes every layer with the running averages of that
site's batches. On a scanner it never saw, the features' statistics move, and a URN's
frozen encoders hand the moved features to a decoder that never saw them either. AdaBN
replaces every batch norm's running mean and variance with those of the new data before
predicting; here the new data is the patient being segmented, with the given modalities:

1. ``ADAPT_SLICES`` slices, spread evenly over the slices where a given modality is not 0,
   go through the network once in training mode, every batch norm using the statistics of
   those slices (a frozen encoder's too; a modality the mask leaves out keeps its running
   averages, as ``BatchNorm`` keeps them for samples without it);
2. the statistics each batch norm used (``urn_jax.model.unet.MOMENTS``) replace its running
   averages, and the patient is predicted as usual, in inference mode.

The paper does not adapt anything at test time; this is an option (``--adapt-bn`` of
``urn-segment``, ``adapt_bn`` of evaluation), off by default. A fixed number of slices
keeps one compilation per model for every patient and mask; a patient with fewer brain
slices has some counted twice. Nothing is learned: the parameters stay as trained.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from urn_jax.model.unet import MOMENTS

ADAPT_SLICES = 64
"""Slices whose statistics adapt the batch norms: as many as a validation batch."""


def adaptation_slices(image: np.ndarray, mask, count: int = ADAPT_SLICES) -> np.ndarray:
  """Indices of ``count`` slices of ``image [Z, X, Y, M]``, evenly spread over those where
  a modality given by ``mask [M]`` is not 0 (the brain; pre-processing leaves 0 outside it)."""
  given = np.asarray(mask, bool)
  if image.ndim != 4 or image.shape[-1] != given.size:
    raise ValueError(f"adaptation needs a pre-processed volume [Z, X, Y, {given.size}] and a "
                     f"mask of {given.size} modalities; got {image.shape} and {given.size}")
  brain = np.flatnonzero(np.any(np.asarray(image)[..., given] != 0, axis=(1, 2, 3)))
  if brain.size == 0:
    raise ValueError(f"no slice of the volume shows the given modalities "
                     f"(mask {given.astype(int).tolist()}): nothing to adapt to")
  return brain[np.round(np.linspace(0, brain.size - 1, count)).astype(int)]


def _in_training_mode(model):
  """``model`` with every batch norm in training mode when called with ``train=True``: a
  URN's frozen encoders are not, otherwise (``URN.freeze_encoders``)."""
  return model.clone(freeze_encoders=False) if hasattr(model, "freeze_encoders") else model


@functools.partial(jax.jit, static_argnames=("model",))
def _moments(model, variables, images, mask):
  mask = jax.numpy.broadcast_to(mask.astype(bool), images.shape[:1] + images.shape[-1:])
  _, state = _in_training_mode(model).apply(variables, images, mask, train=True,
                                            mutable=["batch_stats", MOMENTS])
  return jax.tree_util.tree_map(lambda sown: sown[0], state.get(MOMENTS, {}),
                                is_leaf=lambda x: isinstance(x, tuple))


def adapted_variables(model, variables: dict, image: np.ndarray, mask,
                      count: int = ADAPT_SLICES) -> dict:
  """``variables`` with every batch norm's running averages replaced by the statistics of
  ``count`` slices of the patient's pre-processed ``image [Z, X, Y, M]`` with the
  modalities of ``mask [M]`` (module docstring)."""
  slices = np.asarray(image, np.float32)[adaptation_slices(image, mask, count)]
  moments = _moments(model, variables, slices, np.asarray(mask, bool))
  expected = jax.tree_util.tree_structure(variables.get("batch_stats", {}))
  if jax.tree_util.tree_structure(moments) != expected:
    raise ValueError("the batch statistics sown in training mode do not match the model's "
                     "batch_stats; is every batch norm a urn_jax.model.unet.BatchNorm?")
  return {**variables, "batch_stats": moments}
