"""The Unified Representation Network (paper, section 2.3, figure 1) and the baseline.

URN: encode each modality (``Encoders``), fuse the available ones into the unified
representation ``z`` (``fuse``), decode ``z`` for each task: synthesis of every modality
(pre-training) and/or segmentation (the baseline U-Net on ``z``).

Baseline (2.1): the same U-Net on the M modalities concatenated as channels, missing ones
zeroed. "Baseline + MD" is this network trained with modality dropout; nothing differs in
the architecture.

Every model here is called as ``model.apply(variables, images, mask, train=...)`` with
images ``[B, H, W, M]`` and a boolean mask ``[B, M]`` of the modalities to use, and returns
a dict of outputs. The mask is data, never a Python value, so a single compilation serves
all 15 combinations of modalities.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from urn_jax.labels import NUM_CLASSES
from urn_jax.model.decoder import SynthesisDecoders
from urn_jax.model.encoder import REPRESENTATION_CHANNELS, Encoders
from urn_jax.model.fusion import LearnedF, fuse, fuse_hemis
from urn_jax.model.unet import PAPER_FEATURES, UNet

FUSIONS = ("mean", "exp", "learned", "hemis")
# Top-level parameter collections that pre-training hands to the segmentation stage.
PRETRAINED_MODULES = ("encoders", "learned_f")


class URN(nn.Module):
  """Unified Representation Network.

  Attributes:
    num_modalities: M.
    encoder_features: U-Net widths of each modality encoder.
    channels: channels of the unified representation (16 in the paper).
    fusion: ``'mean'`` (the paper: f(x) = x), ``'exp'`` (f = exp, suggested in the paper),
      ``'learned'`` (a learned invertible f, ``LearnedF``) or ``'hemis'`` (mean and variance
      concatenated; for comparison).
    synthesis: build the per-modality synthesis decoders (pre-training).
    segmentation_features: U-Net widths of the segmentation decoder; ``None`` for no
      segmentation head.
    num_classes: segmentation classes.
    stacking: how the M encoders and decoders run (``urn_jax.model.stacking``).
    freeze_encoders: run the encoders (and a learned f) in inference mode and stop their
      gradient, for segmentation on top of pre-trained, frozen encoders. The optimizer
      freezes their parameters as well (``urn_jax.training.optimizer.make_optimizer``).
    dtype: computation dtype.
  """

  num_modalities: int = 4
  encoder_features: Sequence[int] = PAPER_FEATURES
  channels: int = REPRESENTATION_CHANNELS
  fusion: str = "mean"
  synthesis: bool = True
  segmentation_features: Sequence[int] | None = PAPER_FEATURES
  num_classes: int = NUM_CLASSES
  stacking: str = "auto"
  freeze_encoders: bool = False
  dtype: Any = None

  def setup(self):
    if self.fusion not in FUSIONS:
      raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
    if not self.synthesis and self.segmentation_features is None:
      raise ValueError("a URN needs a task: synthesis=True and/or segmentation_features")
    self.encoders = Encoders(self.num_modalities, self.encoder_features, self.channels,
                             self.stacking, self.dtype)
    if self.fusion == "learned":
      self.learned_f = LearnedF(self.channels)
    if self.synthesis:
      self.decoders = SynthesisDecoders(self.num_modalities, self.stacking, self.dtype)
    if self.segmentation_features is not None:
      self.segmenter = UNet(self.segmentation_features, self.num_classes, self.dtype)

  def _fuse(self, z_tilde, mask):
    if self.fusion == "mean":
      return fuse(z_tilde, mask)
    if self.fusion == "exp":
      return fuse(z_tilde, mask, f=jnp.exp)
    if self.fusion == "hemis":
      return fuse_hemis(z_tilde, mask)
    f, f_inv = self.learned_f()
    return fuse(z_tilde, mask, f=f, f_inv=f_inv)

  def __call__(self, images, mask, train: bool):
    """Returns ``z_tilde`` ``[B, M, H, W, C]`` (standardized encoder outputs), ``z``
    ``[B, H, W, C]`` (the unified representation), and ``synthesis`` ``[B, H, W, M]`` and/or
    ``segmentation`` logits ``[B, H, W, classes]``."""
    mask = jnp.asarray(mask).astype(bool)
    z_tilde = self.encoders(images, mask, train and not self.freeze_encoders)
    z = self._fuse(z_tilde, mask)
    if self.freeze_encoders:
      z_tilde, z = jax.lax.stop_gradient((z_tilde, z))
    out = {"z_tilde": z_tilde, "z": z}
    if self.synthesis:
      out["synthesis"] = self.decoders(z, train)
    if self.segmentation_features is not None:
      out["segmentation"] = self.segmenter(z, train)
    return out


class Baseline(nn.Module):
  """The paper's baseline: one U-Net on the M modalities as channels, missing ones zeroed."""

  num_modalities: int = 4
  features: Sequence[int] = PAPER_FEATURES
  num_classes: int = NUM_CLASSES
  dtype: Any = None

  @nn.compact
  def __call__(self, images, mask, train: bool):
    mask = jnp.asarray(mask).astype(bool)
    images = jnp.where(mask[:, None, None, :], images, 0)
    return {"segmentation": UNet(self.features, self.num_classes, self.dtype)(images, train)}
