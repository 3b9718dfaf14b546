"""The U-Net of the paper (section 2.1), the building block of every network here.

A 2D fully convolutional U-Net as in Ronneberger et al. (2015), with the paper's three
changes: batch normalization, leaky ReLU activations, and one 3x3 convolution (instead of
two) at each resolution level. Down: conv-BN-leaky ReLU then 2x2 max pooling; up: 2x2
transposed convolution, concatenation with the skip connection, conv-BN-leaky ReLU; last, a
1x1 convolution to the output channels, with no activation.

Choices the paper leaves open, and what we took:
- widths: the original U-Net's 64, 128, 256, 512, 1024 (``PAPER_FEATURES``); the input's
  height and width must then be divisible by 16, which BraTS's 240 x 240 is;
- leaky ReLU slope 0.2, TensorFlow's default (the authors used TensorFlow);
- batch norm momentum 0.99 and epsilon 1e-3, TensorFlow/Keras defaults.

Three layers are written out rather than taken from Flax, because XLA's CPU backend runs
Flax's versions up to 1.7x slower than PyTorch runs its own (per-layer timings, from
``benchmarks/cpu_layers.py``, in ``benchmarks/RESULTS.md``); each computes exactly what
Flax's layer computes, with the same parameter names, shapes and initial values, so
checkpoints are interchangeable:

- ``max_pool_2x2``: a reshape and a max. ``nn.max_pool``'s gradient is XLA's
  ``select_and_scatter``, which makes that layer 1.9-2.8x slower on CPU. (At a tie the
  gradient is shared between the tied entries instead of going to the first; both are
  gradients of the max.)
- ``UpConv``: the 2x2, stride 2 transposed convolution, which never overlaps itself, as
  one matrix product and a reshape (2.2-3.6x faster forward and backward on CPU);
- ``Conv3x3``: on CPU, with at most ``PATCH_CHANNELS`` input channels (the first layer of
  every encoder and of the baseline), one matrix product on the 3x3 patches (im2col), which
  XLA:CPU runs 1.2-1.3x faster than its convolution for so few channels. Elsewhere, and on
  every other backend, XLA's convolution.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

PAPER_FEATURES = (64, 128, 256, 512, 1024)
LEAKY_SLOPE = 0.2
PATCH_CHANNELS = 4


def max_pool_2x2(x):
  """2x2 max pooling, stride 2, of ``[B, H, W, C]`` (H and W even)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv3x3(x, kernel, patches: bool):
  """``nn.Conv``'s 3x3 'SAME' convolution (a cross-correlation) of ``x [B, H, W, C]`` with
  ``kernel [3, 3, C, F]``; with ``patches``, as one matrix product on the 3x3 patches."""
  if not patches:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  _, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  columns = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)],
                            axis=-1)  # [B, H, W, 9C], patch entries in the kernel's order
  return columns @ kernel.reshape(9 * c, -1)


class Conv3x3(nn.Module):
  """``nn.Conv(features, (3, 3), use_bias=False)``, computed as ``conv3x3`` finds fastest."""

  features: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
    patches = jax.default_backend() == "cpu" and x.shape[-1] <= PATCH_CHANNELS
    return conv3x3(x, kernel, patches)


class UpConv(nn.Module):
  """``nn.ConvTranspose(features, (2, 2), strides=(2, 2))``: each input pixel becomes a 2x2
  block of the output, ``kernel [2, 2, C, F]`` read flipped as Flax (and
  ``lax.conv_transpose``) does."""

  features: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, c, self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jnp.einsum("bhwc,ijcf->bhiwjf", x, kernel[::-1, ::-1])
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias


MOMENTS = "moments"  # the collection where BatchNorm sows its batch statistics


class BatchNorm(nn.Module):
  """Batch normalization whose training statistics come only from the samples in ``sample_mask``.

  A modality encoder sees zeros where its modality is missing or dropped; letting those
  samples into its batch statistics would shift them with the dropout rate and the data mix
  (HCP has no FLAIR). With ``sample_mask`` only the samples where the modality is present
  count. A batch where it is present in no sample leaves the running averages untouched and
  stays finite. With ``use_scale=False, use_bias=False`` this is the paper's "batch
  normalization with fixed parameters" (2.3.1): pure standardization, nothing to learn.
  In training mode, when the collection ``MOMENTS`` is mutable, the batch's mean and
  variance (the running ones where no sample counted) are also sown there, under the names
  of the running averages: ``urn_jax.inference.adapt`` reads them.
  """

  use_scale: bool = True
  use_bias: bool = True
  momentum: float = 0.99
  epsilon: float = 1e-3
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool, sample_mask=None):
    channels = x.shape[-1]
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
    if train:
      xf = x.astype(jnp.float32)
      axes = tuple(range(x.ndim - 1))
      if sample_mask is None:
        weight = jnp.ones((x.shape[0],) + (1,) * (x.ndim - 1), jnp.float32)
      else:
        weight = sample_mask.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
      count = weight.sum() * (xf.size // (x.shape[0] * channels))
      denominator = jnp.maximum(count, 1.0)
      mean = (xf * weight).sum(axes) / denominator
      var = (jnp.square(xf - mean) * weight).sum(axes) / denominator
      if not self.is_initializing():
        seen = count > 0
        if self.is_mutable_collection(MOMENTS):  # test-time adaptation asks for them
          self.sow(MOMENTS, "mean", jnp.where(seen, mean, running_mean.value))
          self.sow(MOMENTS, "var", jnp.where(seen, var, running_var.value))
        m = self.momentum
        running_mean.value = jnp.where(seen, m * running_mean.value + (1 - m) * mean,
                                       running_mean.value)
        running_var.value = jnp.where(seen, m * running_var.value + (1 - m) * var,
                                      running_var.value)
    else:
      mean, var = running_mean.value, running_var.value
    y = (x.astype(jnp.float32) - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
    if self.use_scale:
      y = y * self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    return y.astype(self.dtype or x.dtype)


class ConvBlock(nn.Module):
  """One 3x3 convolution, batch norm, leaky ReLU: a resolution level of the paper's U-Net."""

  features: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool, sample_mask=None):
    x = Conv3x3(self.features, self.dtype, name="Conv_0")(x)  # Flax's name: same checkpoints
    x = BatchNorm(dtype=self.dtype)(x, train, sample_mask)
    return nn.leaky_relu(x, LEAKY_SLOPE)


class UNet(nn.Module):
  """2D U-Net with one 3x3 convolution per level (paper, section 2.1).

  Attributes:
    features: channels per level, top to bottom; ``len(features) - 1`` poolings.
    out_channels: channels of the final 1x1 convolution (no activation).
    dtype: computation dtype (``jnp.bfloat16`` for mixed precision); parameters stay f32.
  """

  features: Sequence[int] = PAPER_FEATURES
  out_channels: int = 4
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool, sample_mask=None):
    """``x``: ``[B, H, W, C]``; ``sample_mask``: optional ``[B]``, see ``BatchNorm``."""
    factor = 2 ** (len(self.features) - 1)
    if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(
          f"UNet with {len(self.features)} levels needs input [B, H, W, C] with H and W "
          f"divisible by {factor}; got shape {x.shape}. Pad or crop the slices, or use "
          "fewer levels.")
    skips = []
    for width in self.features[:-1]:
      x = ConvBlock(width, self.dtype)(x, train, sample_mask)
      skips.append(x)
      x = max_pool_2x2(x)
    x = ConvBlock(self.features[-1], self.dtype)(x, train, sample_mask)
    for level, (width, skip) in enumerate(zip(reversed(self.features[:-1]), reversed(skips))):
      x = UpConv(width, self.dtype, name=f"ConvTranspose_{level}")(x)
      x = jnp.concatenate([skip, x], axis=-1)
      x = ConvBlock(width, self.dtype)(x, train, sample_mask)
    return nn.Conv(self.out_channels, (1, 1), dtype=self.dtype)(x)
