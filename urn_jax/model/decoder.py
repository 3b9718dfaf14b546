"""Task decoders on the unified representation (paper, section 2.3.3).

- ``SynthesisDecoders``: one shallow decoder per modality, "two residual blocks and a final
  1x1 convolution" as in Chartsias et al. (2018), with no activation at the end (the targets
  are z-scored intensities). Stacked over modalities like the encoders.
- The segmentation decoder is the baseline U-Net applied to the 16-channel representation;
  see ``urn_jax.model.urn.URN``.

The residual block is not spelled out in the paper; we use the standard one of He et al.
(2016) at the representation's width: conv3x3-BN-leaky ReLU-conv3x3-BN, added to the input,
then leaky ReLU. Its 3x3 convolutions are the U-Net's ``Conv3x3``: ``nn.Conv``'s parameters,
computed the way the backend runs fastest.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

import jax.numpy as jnp

from urn_jax.model.stacking import stack
from urn_jax.model.unet import LEAKY_SLOPE, BatchNorm, Conv3x3


class ResidualBlock(nn.Module):
  features: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    # Flax's names for nn.Conv(features, (3, 3), use_bias=False): checkpoints are unchanged.
    y = Conv3x3(self.features, self.dtype, name="Conv_0")(x)
    y = nn.leaky_relu(BatchNorm(dtype=self.dtype)(y, train), LEAKY_SLOPE)
    y = Conv3x3(self.features, self.dtype, name="Conv_1")(y)
    y = BatchNorm(dtype=self.dtype)(y, train)
    return nn.leaky_relu(x + y, LEAKY_SLOPE)


class _SynthesisDecoder(nn.Module):
  train: bool
  dtype: Any = None

  @nn.compact
  def __call__(self, carry, z):
    for _ in range(2):
      z = ResidualBlock(z.shape[-1], self.dtype)(z, self.train)
    return carry, nn.Conv(1, (1, 1), dtype=self.dtype)(z)[..., 0]


class SynthesisDecoders(nn.Module):
  """``z [B, H, W, C] -> [B, H, W, M]``: every modality synthesized from the representation."""

  num_modalities: int = 4
  stacking: str = "auto"
  dtype: Any = None

  @nn.compact
  def __call__(self, z, train: bool):
    stacked = stack(_SynthesisDecoder, self.stacking, self.num_modalities, broadcast=True)(
        train, self.dtype, name="stacked")
    _, synthesis = stacked(None, z)  # [M, B, H, W]
    return jnp.moveaxis(synthesis, 0, -1)
