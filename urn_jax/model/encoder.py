"""Modality-specific encoders (paper, section 2.3.1).

One U-Net per modality maps that modality's slice to ``channels`` (16 in the paper) feature
maps of the same height and width, followed by a batch norm with fixed parameters that
standardizes each channel to zero mean and unit variance before fusion. The M encoders have
the same architecture, so their parameters are stacked on a leading modality axis and they
run inside one program (``urn_jax.model.stacking``: vectorized on GPU, unrolled on CPU).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from urn_jax.model.stacking import stack
from urn_jax.model.unet import PAPER_FEATURES, BatchNorm, UNet

REPRESENTATION_CHANNELS = 16  # "We use 16 channels in the unified representation" (2.3.1)


class _Encoder(nn.Module):
  features: Sequence[int]
  channels: int
  train: bool
  dtype: Any = None

  @nn.compact
  def __call__(self, carry, inputs):
    x, present = inputs
    z = UNet(self.features, self.channels, self.dtype)(x, self.train, present)
    # Fixed-parameter batch norm: standardization only, no learned scale or offset.
    return carry, BatchNorm(use_scale=False, use_bias=False, dtype=self.dtype)(
        z, self.train, present)


class Encoders(nn.Module):
  """M encoders, vectorized over the modality axis.

  ``__call__(images [B, H, W, M], mask [B, M]) -> z_tilde [B, M, H, W, channels]``.
  Encoder i's batch statistics come only from the samples where ``mask[:, i]`` is on, and
  its input is zero elsewhere (so NaN in a missing modality's slot cannot leak anywhere).
  """

  num_modalities: int = 4
  features: Sequence[int] = PAPER_FEATURES
  channels: int = REPRESENTATION_CHANNELS
  stacking: str = "auto"
  dtype: Any = None

  @nn.compact
  def __call__(self, images, mask, train: bool):
    if images.ndim != 4 or images.shape[-1] != self.num_modalities:
      raise ValueError(f"Encoders expect images [B, H, W, {self.num_modalities}], got "
                       f"{images.shape}")
    mask = mask.astype(bool)
    images = jnp.where(mask[:, None, None, :], images, 0)
    per_modality = jnp.moveaxis(images, -1, 0)[..., None]  # [M, B, H, W, 1]
    stacked = stack(_Encoder, self.stacking, self.num_modalities, broadcast=False)(
        self.features, self.channels, train, self.dtype, name="stacked")
    _, z = stacked(None, (per_modality, mask.T))  # [M, B, H, W, C]
    return jnp.moveaxis(z, 0, 1)
