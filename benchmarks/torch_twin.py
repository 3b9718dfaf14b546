"""A PyTorch twin of urn_jax's networks and train steps, to time JAX against PyTorch.

    python benchmarks/torch_twin.py --kind baseline --size 64 --features 8,16,32,64 --batch 4

A throughput comparison means something only if both frameworks do the same work, so the
twin copies urn_jax layer for layer: the U-Net of ``urn_jax.model.unet``, the encoders with
their fixed-parameter batch norm (``urn_jax.model.encoder``), the mean fusion and its
variance regularizer (``urn_jax.model.fusion``), the residual synthesis decoders
(``urn_jax.model.decoder``), the URN and the baseline (``urn_jax.model.urn``), and steps
that do what ``urn_jax.training.steps``'s do: modality dropout on the mask, forward, loss,
backward, gradient norm, Adam.
``tests/test_torch_twin.py`` checks that every twin has exactly as many trainable parameters
as its JAX model and, with the JAX weights copied in, computes the same outputs.

Layout: PyTorch's native NCHW, so images are ``[B, M, H, W]`` (urn_jax: ``[B, H, W, M]``),
masks ``[B, M]`` as in urn_jax, labels ``[B, H, W]``, logits ``[B, classes, H, W]``.
``channels_last=True`` in the timing helpers keeps those shapes but stores activations NHWC,
which cuDNN's fastest (tensor-core) convolutions prefer.

Where the twin may differ from urn_jax, and why that does not change the work:

- Batch norm. urn_jax's encoders take batch statistics only from the samples where their
  modality is present. By default the twin uses the built-in ``nn.BatchNorm2d`` over the
  whole batch, which is what a PyTorch user writes and the fastest kernel PyTorch has;
  ``masked_bn=True`` restricts the statistics as urn_jax does (written out in tensor ops,
  so slower in eager mode). Either way every sample goes through every encoder: a missing
  modality is a zeroed input, not a skipped one, in both frameworks.
- Running variance. ``nn.BatchNorm2d`` tracks the unbiased batch variance, urn_jax the
  biased one (the masked batch norm here follows urn_jax). Only inference after training
  sees the difference.
- Initialization: PyTorch's defaults, not Flax's; timing does not depend on the values.
- The M encoders (and synthesis decoders) are by default a Python loop over modules, as
  PyTorch code is usually written; ``batched=True`` runs them as grouped convolutions
  instead, the counterpart of urn_jax's ``stacking='vmap'``.
- Precision: cuDNN computes float32 convolutions in TF32 by default, as XLA does on GPU;
  ``autocast=torch.bfloat16`` is the counterpart of urn_jax's ``dtype=jnp.bfloat16``.

On a CPU that other work shares, run the CLI with ``--threads`` below the core count:
PyTorch's OpenMP threads wait on one another, and on this project's 2-core machine with a
training run beside it a step took 150 times longer with 2 threads than with 1.

This file needs PyTorch (the ``bench`` extra); urn_jax never imports it. Importing it has
no side effects: the cuDNN autotuner is switched on by the timing helpers, not here.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

PAPER_FEATURES = (64, 128, 256, 512, 1024)
REPRESENTATION_CHANNELS = 16
NUM_CLASSES = 4
LEAKY_SLOPE = 0.2
# urn_jax.model.unet.BatchNorm uses Keras's momentum 0.99 (weight of the old running value) and
# epsilon 1e-3; PyTorch's momentum weighs the new batch instead.
BN_MOMENTUM = 1 - 0.99
BN_EPS = 1e-3
KINDS = ("baseline", "urn_pretrain", "urn_segment")


class CompileUnavailableWarning(UserWarning):
  """torch.compile failed on this platform; the timing helpers return None instead."""


class BatchNorm2d(nn.BatchNorm2d):
  """``nn.BatchNorm2d`` with urn_jax's momentum and epsilon, and an optional sample mask.

  Without a mask (and always in eval mode) this is the built-in kernel. With
  ``sample_mask`` ``[B, G]`` the channels are split into G equal consecutive groups (one
  per encoder when the encoders run as grouped convolutions, else G = 1), and a channel's
  statistics come only from the samples whose mask entry for its group is on: the semantics
  of ``urn_jax.model.unet.BatchNorm``, down to its biased running variance and to leaving the
  running averages alone for a group that no sample has.
  """

  def __init__(self, channels: int, affine: bool = True):
    super().__init__(channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=affine)

  def forward(self, x, sample_mask=None):
    if sample_mask is None or not self.training:
      return super().forward(x)
    channels = x.shape[1]
    weight = sample_mask.to(torch.float32).repeat_interleave(
        channels // sample_mask.shape[1], dim=1)[:, :, None, None]  # [B, C, 1, 1]
    count = weight.sum(0, keepdim=True) * (x.shape[2] * x.shape[3])  # [1, C, 1, 1]
    denominator = count.clamp(min=1)
    xf = x.to(torch.float32)
    mean = (xf * weight).sum((0, 2, 3), keepdim=True) / denominator
    var = ((xf - mean).square() * weight).sum((0, 2, 3), keepdim=True) / denominator
    with torch.no_grad():
      seen = count.flatten() > 0
      for running, batch_value in ((self.running_mean, mean), (self.running_var, var)):
        running.copy_(torch.where(seen, running.lerp(batch_value.flatten(), self.momentum),
                                  running))
    y = (xf - mean) * torch.rsqrt(var + self.eps)
    if self.affine:
      y = y * self.weight[:, None, None] + self.bias[:, None, None]
    return y.to(x.dtype)


class ConvBlock(nn.Module):
  """3x3 convolution without bias, batch norm, leaky ReLU: one level of the paper's U-Net.

  All widths are per copy: ``groups`` copies run side by side as a grouped convolution.
  """

  def __init__(self, in_channels: int, out_channels: int, groups: int = 1):
    super().__init__()
    self.conv = nn.Conv2d(in_channels * groups, out_channels * groups, 3, padding=1,
                          bias=False, groups=groups)
    self.norm = BatchNorm2d(out_channels * groups)

  def forward(self, x, sample_mask=None):
    return F.leaky_relu(self.norm(self.conv(x), sample_mask), LEAKY_SLOPE)


class UNet(nn.Module):
  """The U-Net of ``urn_jax.model.unet.UNet``: a ``ConvBlock`` and a 2x2 max pooling per level
  down, a 2x2 transposed convolution (with bias), concatenation ``[skip, up]`` and a
  ``ConvBlock`` per level up, then a 1x1 convolution (with bias) and no activation.

  ``groups`` copies with separate parameters run as grouped convolutions on inputs of
  ``groups * in_channels`` channels; their outputs are the consecutive channel groups.
  """

  def __init__(self, in_channels: int, features: Sequence[int], out_channels: int,
               groups: int = 1):
    super().__init__()
    self.features = tuple(features)
    self.groups = groups
    self.down = nn.ModuleList(
        ConvBlock(a, b, groups)
        for a, b in zip((in_channels,) + self.features[:-1], self.features))
    upper = tuple(reversed(self.features[:-1]))
    lower = tuple(reversed(self.features[1:]))
    self.up = nn.ModuleList(
        nn.ConvTranspose2d(a * groups, b * groups, 2, stride=2, groups=groups)
        for a, b in zip(lower, upper))
    self.up_blocks = nn.ModuleList(ConvBlock(2 * width, width, groups) for width in upper)
    self.head = nn.Conv2d(self.features[0] * groups, out_channels * groups, 1, groups=groups)

  def forward(self, x, sample_mask=None):
    """``x``: ``[B, groups * in_channels, H, W]``; ``sample_mask``: optional ``[B, groups]``,
    see ``BatchNorm2d``."""
    factor = 2 ** (len(self.features) - 1)
    if x.ndim != 4 or x.shape[2] % factor or x.shape[3] % factor:
      raise ValueError(f"UNet with {len(self.features)} levels needs input [B, C, H, W] with "
                       f"H and W divisible by {factor}; got shape {tuple(x.shape)}")
    skips = []
    for block in self.down[:-1]:
      x = block(x, sample_mask)
      skips.append(x)
      x = F.max_pool2d(x, 2)
    x = self.down[-1](x, sample_mask)
    for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
      x = block(self._concat(skip, up(x)), sample_mask)
    return self.head(x)

  def _concat(self, skip, up):
    """``[skip, up]`` along the channels of each copy, so that a grouped convolution gives
    every copy its own skip connection."""
    if self.groups == 1:
      return torch.cat([skip, up], 1)
    b, _, h, w = skip.shape
    per_copy = (b, self.groups, -1, h, w)
    return torch.cat([skip.reshape(per_copy), up.reshape(per_copy)], 2).reshape(b, -1, h, w)


class Encoder(nn.Module):
  """A modality encoder (``groups`` of them side by side): U-Net, then batch norm with
  fixed parameters, i.e. standardization with nothing to learn (paper 2.3.1)."""

  def __init__(self, features: Sequence[int], channels: int, groups: int = 1):
    super().__init__()
    self.unet = UNet(1, features, channels, groups)
    self.standardize = BatchNorm2d(channels * groups, affine=False)

  def forward(self, x, sample_mask=None):
    return self.standardize(self.unet(x, sample_mask), sample_mask)


class Encoders(nn.Module):
  """``images [B, M, H, W], mask [B, M] -> z_tilde [B, M, C, H, W]``, as
  ``urn_jax.model.encoder.Encoders``: missing modalities are zeroed first (``torch.where``, so a
  NaN in a missing slot cannot leak), then every encoder sees every sample."""

  def __init__(self, num_modalities: int, features: Sequence[int], channels: int,
               batched: bool = False, masked_bn: bool = False):
    super().__init__()
    self.num_modalities = num_modalities
    self.batched = batched
    self.masked_bn = masked_bn
    if batched:
      self.encoders = nn.ModuleList([Encoder(features, channels, num_modalities)])
    else:
      self.encoders = nn.ModuleList(Encoder(features, channels)
                                    for _ in range(num_modalities))

  def forward(self, images, mask):
    images = torch.where(mask[:, :, None, None], images, 0)
    if self.batched:
      z = self.encoders[0](images, mask if self.masked_bn else None)
      return z.unflatten(1, (self.num_modalities, -1))
    return torch.stack([
        encoder(images[:, i:i + 1], mask[:, i:i + 1] if self.masked_bn else None)
        for i, encoder in enumerate(self.encoders)], 1)


class ResidualBlock(nn.Module):
  """conv3x3-BN-leaky ReLU-conv3x3-BN, added to the input, leaky ReLU
  (``urn_jax.model.decoder.ResidualBlock``); ``groups`` copies as grouped convolutions."""

  def __init__(self, channels: int, groups: int = 1):
    super().__init__()
    width = channels * groups
    self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False, groups=groups)
    self.norm1 = BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False, groups=groups)
    self.norm2 = BatchNorm2d(width)

  def forward(self, x):
    y = F.leaky_relu(self.norm1(self.conv1(x)), LEAKY_SLOPE)
    return F.leaky_relu(x + self.norm2(self.conv2(y)), LEAKY_SLOPE)


class SynthesisDecoder(nn.Module):
  """Two residual blocks and a 1x1 convolution to one channel, no activation
  (``urn_jax.model.decoder``); ``groups`` decoders side by side, one output channel each."""

  def __init__(self, channels: int, groups: int = 1):
    super().__init__()
    self.blocks = nn.Sequential(ResidualBlock(channels, groups), ResidualBlock(channels, groups))
    self.head = nn.Conv2d(channels * groups, groups, 1, groups=groups)

  def forward(self, z):
    return self.head(self.blocks(z))


class SynthesisDecoders(nn.Module):
  """``z [B, C, H, W] -> [B, M, H, W]``: every modality synthesized from the representation."""

  def __init__(self, num_modalities: int, channels: int, batched: bool = False):
    super().__init__()
    self.num_modalities = num_modalities
    self.batched = batched
    if batched:
      self.decoders = nn.ModuleList([SynthesisDecoder(channels, num_modalities)])
    else:
      self.decoders = nn.ModuleList(SynthesisDecoder(channels) for _ in range(num_modalities))

  def forward(self, z):
    if self.batched:
      return self.decoders[0](z.repeat(1, self.num_modalities, 1, 1))
    return torch.cat([decoder(z) for decoder in self.decoders], 1)


def fuse(z, mask):
  """Mean over axis 1 of ``z`` ``[B, M, ...]`` where ``mask`` ``[B, M]`` is on; zeros for a
  sample with an empty mask (``urn_jax.model.fusion.fuse`` with the paper's f(x) = x)."""
  m = mask.reshape(mask.shape + (1,) * (z.ndim - 2))
  count = m.sum(1).clamp(min=1).to(z.dtype)
  return torch.where(m, z, 0).sum(1) / count


def fusion_variance(z, mask):
  """Voxel-wise population variance across the available encoders' outputs, averaged over
  everything else (``urn_jax.model.fusion.fusion_variance``)."""
  m = mask.reshape(mask.shape + (1,) * (z.ndim - 2))
  deviation = torch.where(m, z, 0) - fuse(z, mask)[:, None]
  return fuse(deviation.square(), mask).mean()


class URN(nn.Module):
  """Unified Representation Network with mean fusion (``urn_jax.model.urn.URN``, fusion='mean').

  ``forward(images [B, M, H, W], mask [B, M])`` returns ``z_tilde`` ``[B, M, C, H, W]``,
  ``z`` ``[B, C, H, W]``, and ``synthesis`` ``[B, M, H, W]`` and/or ``segmentation`` logits
  ``[B, classes, H, W]``. ``batched`` and ``masked_bn``: see the module docstring.
  """

  def __init__(self, num_modalities: int = 4, encoder_features: Sequence[int] = PAPER_FEATURES,
               channels: int = REPRESENTATION_CHANNELS, synthesis: bool = True,
               segmentation_features: Sequence[int] | None = None,
               num_classes: int = NUM_CLASSES, batched: bool = False, masked_bn: bool = False):
    super().__init__()
    if not synthesis and segmentation_features is None:
      raise ValueError("a URN needs a task: synthesis=True and/or segmentation_features")
    self.encoders = Encoders(num_modalities, encoder_features, channels, batched, masked_bn)
    self.decoders = SynthesisDecoders(num_modalities, channels, batched) if synthesis else None
    self.segmenter = (None if segmentation_features is None
                      else UNet(channels, segmentation_features, num_classes))

  def forward(self, images, mask):
    z_tilde = self.encoders(images, mask)
    z = fuse(z_tilde, mask)
    out = {"z_tilde": z_tilde, "z": z}
    if self.decoders is not None:
      out["synthesis"] = self.decoders(z)
    if self.segmenter is not None:
      out["segmentation"] = self.segmenter(z)
    return out


class Baseline(nn.Module):
  """The paper's baseline (``urn_jax.model.urn.Baseline``): one U-Net on the M modalities as
  channels, missing ones zeroed."""

  def __init__(self, num_modalities: int = 4, features: Sequence[int] = PAPER_FEATURES,
               num_classes: int = NUM_CLASSES):
    super().__init__()
    self.unet = UNet(num_modalities, features, num_classes)

  def forward(self, images, mask):
    return {"segmentation": self.unet(torch.where(mask[:, :, None, None], images, 0))}


def count_parameters(model: nn.Module) -> int:
  """Trainable parameters only: the fixed batch norm's buffers and running statistics are
  not parameters in either framework."""
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make(kind: str, features: Sequence[int], *, channels: int = REPRESENTATION_CHANNELS,
         num_modalities: int = 4, num_classes: int = NUM_CLASSES, batched: bool = False,
         masked_bn: bool = False) -> nn.Module:
  """The network benchmarked as ``kind``, built like urn_jax's benchmarks build theirs
  (``benchmarks/stacking.py``): the URN's encoders and segmentation head share ``features``.

  - ``'baseline'``: ``Baseline`` (trained with ``segment_step``);
  - ``'urn_pretrain'``: a URN with synthesis decoders only (``pretrain_step``);
  - ``'urn_segment'``: a URN with the segmentation head only, trained from scratch
    (``segment_step``).

  ``batched`` and ``masked_bn`` concern the URN's encoders and decoders; the baseline has
  neither.
  """
  features = tuple(features)
  if kind == "baseline":
    return Baseline(num_modalities, features, num_classes)
  if kind == "urn_pretrain":
    return URN(num_modalities, features, channels, synthesis=True, segmentation_features=None,
               num_classes=num_classes, batched=batched, masked_bn=masked_bn)
  if kind == "urn_segment":
    return URN(num_modalities, features, channels, synthesis=False,
               segmentation_features=features, num_classes=num_classes, batched=batched,
               masked_bn=masked_bn)
  raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy over all voxels, in float32 (``urn_jax.training.losses``)."""
  return F.cross_entropy(logits.to(torch.float32), labels)


def synthesis_loss(prediction, target, available):
  """L1 error of every modality the sample has, dropped ones included, averaged over voxels
  per (sample, modality) and then over the existing pairs (``urn_jax.training.losses``)."""
  present = available[:, :, None, None]
  error = torch.where(present, prediction.to(torch.float32) - torch.where(present, target, 0),
                      0).abs()
  return error.mean((2, 3)).sum() / available.sum().clamp(min=1)


def modality_dropout(available, theta: float, min_keep: int, generator=None):
  """The keep-mask distribution of ``urn_jax.training.modality_dropout``: per sample, k
  drawn from the truncated geometric distribution of the paper's equation (1) with
  ``n_max = n_available - min_keep``, then k of the available modalities dropped uniformly
  at random. Drawn by inverse CDF on the device, so a step never waits for the host."""
  batch, num_modalities = available.shape
  n_max = (available.sum(1) - min_keep).clamp(min=0)
  ks = torch.arange(num_modalities + 1, device=available.device)
  weights = torch.where(ks <= n_max[:, None], theta ** ks.to(torch.float32), 0)  # 0.0**0 = 1
  cdf = weights.cumsum(1) / weights.sum(1, keepdim=True)
  u = torch.rand(batch, 1, generator=generator, device=available.device)
  k = torch.minimum((cdf < u).sum(1), n_max)
  scores = torch.where(available,
                       torch.rand(batch, num_modalities, generator=generator,
                                  device=available.device), 2.0)
  rank = scores.argsort(1).argsort(1)
  return available & (rank >= k[:, None])


def pretrain_loss(model, batch, keep, variance_weight):
  """Synthesis of every available modality from the kept ones, plus ``variance_weight``
  times the fusion variance of the kept encoders (``urn_jax.training.steps.pretrain_step``)."""
  out = model(batch["image"], keep)
  recon = synthesis_loss(out["synthesis"], batch["image"], batch["available"])
  variance = fusion_variance(out["z_tilde"], keep)
  loss = recon + variance_weight * variance
  return loss, {"loss": loss.detach(), "reconstruction": recon.detach(),
                "variance": variance.detach(), "kept": keep.sum(1).to(torch.float32).mean()}


def segment_loss(model, batch, keep, variance_weight):
  """Cross-entropy, plus ``variance_weight`` times the fusion variance for a URN, which is
  computed (as a metric) even at weight 0 like ``urn_jax.training.steps.segment_step`` does."""
  out = model(batch["image"], keep)
  logits = out["segmentation"]
  ce = cross_entropy(logits, batch["label"])
  metrics = {"cross_entropy": ce.detach(), "kept": keep.sum(1).to(torch.float32).mean(),
             "accuracy": (logits.argmax(1) == batch["label"]).to(torch.float32).mean()}
  loss = ce
  if "z_tilde" in out:
    variance = fusion_variance(out["z_tilde"], keep)
    metrics["variance"] = variance.detach()
    loss = loss + variance_weight * variance
  metrics["loss"] = loss.detach()
  return loss, metrics


def make_optimizer(model: nn.Module, learning_rate: float = 1e-4):
  """Adam with default settings, as ``urn_jax.training.optimizer.make_optimizer``. On GPU the fused
  implementation, PyTorch's fastest, since XLA fuses optax's update into the step too."""
  device = next(model.parameters()).device
  return torch.optim.Adam(model.parameters(), learning_rate, fused=device.type == "cuda")


def _keep_mask(available, theta, min_keep, generator):
  if theta is None:  # no modality dropout: use everything the sample has
    return available
  return modality_dropout(available, theta, min_keep, generator)


def _update(model, optimizer, loss_fn, batch, keep, variance_weight, autocast):
  with torch.autocast(batch["image"].device.type, dtype=autocast, enabled=autocast is not None):
    loss, metrics = loss_fn(model, batch, keep, variance_weight)
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  metrics["grad_norm"] = torch.nn.utils.get_total_norm(
      [p.grad for p in model.parameters() if p.grad is not None])
  optimizer.step()
  return metrics


def pretrain_step(model, optimizer, batch, generator=None, *, theta=0.8, min_keep=2,
                  variance_weight=1e-4, autocast=None, loss_fn=pretrain_loss):
  """One synthesis pre-training step of a URN in training mode; returns the metrics as
  device tensors (reading them would synchronize). ``batch``: ``image`` ``[B, M, H, W]``,
  ``available`` bool ``[B, M]``. ``autocast``: e.g. ``torch.bfloat16``, or None for float32.
  ``loss_fn``: ``pretrain_loss`` or ``torch.compile(pretrain_loss)``."""
  keep = _keep_mask(batch["available"], theta, min_keep, generator)
  return _update(model, optimizer, loss_fn, batch, keep, variance_weight, autocast)


def segment_step(model, optimizer, batch, generator=None, *, theta=0.5, min_keep=1,
                 variance_weight=0.0, autocast=None, loss_fn=segment_loss):
  """One segmentation step (baseline with ``theta=None``, baseline + MD, or URN) in training
  mode; ``batch`` also holds ``label`` ``[B, H, W]``. See ``pretrain_step``."""
  keep = _keep_mask(batch["available"], theta, min_keep, generator)
  return _update(model, optimizer, loss_fn, batch, keep, variance_weight, autocast)


STEPS: dict[str, tuple[Callable, Callable]] = {
    "baseline": (segment_step, segment_loss),
    "urn_pretrain": (pretrain_step, pretrain_loss),
    "urn_segment": (segment_step, segment_loss),
}


@torch.inference_mode()
def infer(model, images, mask, autocast=None):
  """Inference with the given modalities, as ``urn_jax.inference.predict.infer``: ``images``
  ``[N, M, H, W]``, ``mask`` bool ``[N, M]`` or ``[M]`` for all N. Puts ``model`` in eval
  mode; returns ``label`` ``[N, H, W]`` and ``probabilities`` ``[N, classes, H, W]`` where
  the model segments, and ``synthesis`` ``[N, M, H, W]`` where it synthesizes."""
  model.eval()
  mask = mask.expand(images.shape[0], images.shape[1])
  with torch.autocast(images.device.type, dtype=autocast, enabled=autocast is not None):
    out = model(images, mask)
  result = {}
  if "segmentation" in out:
    result["probabilities"] = torch.softmax(out["segmentation"].to(torch.float32), 1)
    result["label"] = result["probabilities"].argmax(1)
  if "synthesis" in out:
    result["synthesis"] = out["synthesis"].to(torch.float32)
  return result


def random_batch(batch: int, size: int, device="cpu", num_modalities: int = 4,
                 num_classes: int = NUM_CLASSES, seed: int = 0, channels_last: bool = False):
  """A training batch of standard normal images, every modality available, random labels."""
  generator = torch.Generator().manual_seed(seed)
  image = torch.randn(batch, num_modalities, size, size, generator=generator)
  label = torch.randint(0, num_classes, (batch, size, size), generator=generator)
  if channels_last:
    image = image.contiguous(memory_format=torch.channels_last)
  return {"image": image.to(device), "label": label.to(device),
          "available": torch.ones(batch, num_modalities, dtype=torch.bool, device=device)}


def _prepare(kind, features, device, batched, masked_bn, channels_last, seed):
  device = torch.device(device)
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True  # XLA autotunes its convolutions as well
  torch.manual_seed(seed)
  model = make(kind, features, batched=batched, masked_bn=masked_bn).to(device)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  return device, model


def _timed(make_run, device, compile, warmup, repeats):
  """Median seconds of ``run = make_run()`` after ``warmup`` calls, device synchronized.
  Where ``compile`` and building ``run`` or its first call (which compiles) fails, warns
  why and returns None: torch.compile fails in many ways (no C++ compiler, an unsupported
  Python), and a benchmark should report that, not stop."""
  def call():
    run()
    if device.type == "cuda":
      torch.cuda.synchronize(device)

  try:
    run = make_run()
    call()
  except Exception as error:
    if not compile:
      raise
    warnings.warn(f"torch.compile is unavailable here: {type(error).__name__}: {error}",
                  CompileUnavailableWarning)
    return None
  for _ in range(warmup - 1):
    call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_torch(kind: str, features: Sequence[int], size: int, batch: int, device="cpu",
               compile: bool = False, repeats: int = 10, *, autocast=None,
               batched: bool = False, masked_bn: bool = False, channels_last: bool = False,
               warmup: int = 3, seed: int = 0) -> float | None:
  """Median seconds per training step of ``make(kind, features)`` on ``batch`` slices of
  ``size`` x ``size``, with modality dropout as in urn_jax, warm-up steps excluded.

  ``compile``: the forward pass and loss go through ``torch.compile`` (its backward is then
  compiled too); returns None, with a warning, where that fails on the platform.
  """
  device, model = _prepare(kind, features, device, batched, masked_bn, channels_last, seed)
  model.train()
  optimizer = make_optimizer(model)
  data = random_batch(batch, size, device, seed=seed, channels_last=channels_last)
  step, loss_fn = STEPS[kind]
  generator = torch.Generator(device).manual_seed(seed)

  def make_run():
    compiled = torch.compile(loss_fn) if compile else loss_fn
    return lambda: step(model, optimizer, data, generator, autocast=autocast, loss_fn=compiled)

  return _timed(make_run, device, compile, warmup, repeats)


def time_torch_inference(kind: str, features: Sequence[int], size: int, slices: int,
                         device="cpu", compile: bool = False, repeats: int = 10, *, mask=None,
                         autocast=None, batched: bool = False, channels_last: bool = False,
                         warmup: int = 3, seed: int = 0) -> float | None:
  """Median seconds to run ``infer`` on a volume of ``slices`` slices at once (as urn_jax's
  ``infer`` does): for ``'urn_segment'`` encoders, fusion and segmentation head. ``mask``:
  bool ``[M]``, all modalities by default; it does not change the work (every encoder runs).
  ``compile``: the model goes through ``torch.compile``; None where that fails."""
  device, model = _prepare(kind, features, device, batched, False, channels_last, seed)
  images = random_batch(slices, size, device, seed=seed, channels_last=channels_last)["image"]
  mask = (torch.ones(images.shape[1], dtype=torch.bool) if mask is None
          else torch.as_tensor(mask, dtype=torch.bool)).to(device)

  def make_run():
    target = torch.compile(model) if compile else model
    return lambda: infer(target, images, mask, autocast)

  return _timed(make_run, device, compile, warmup, repeats)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kind", choices=KINDS, default="baseline")
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--features", default="8,16,32,64")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
  parser.add_argument("--compile", action="store_true",
                      help="torch.compile forward and loss (training), the model (inference)")
  parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
  parser.add_argument("--batched", action="store_true",
                      help="URN encoders/decoders as grouped convolutions")
  parser.add_argument("--masked-bn", action="store_true",
                      help="encoder batch statistics from present modalities only")
  parser.add_argument("--channels-last", action="store_true")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--threads", type=int, default=0,
                      help="CPU threads (torch.set_num_threads); 0 keeps PyTorch's default. "
                      "On a shared CPU use fewer than its cores (see the module docstring)")
  parser.add_argument("--inference-slices", type=int, default=0,
                      help="also time inference on a volume of this many slices")
  args = parser.parse_args(argv)
  features = tuple(int(f) for f in args.features.split(","))
  autocast = torch.bfloat16 if args.bf16 else None
  device = torch.device(args.device)
  if args.threads:
    torch.set_num_threads(args.threads)
  with torch.device("meta"):  # counted, not allocated
    parameters = count_parameters(make(args.kind, features))
  result = {
      "framework": "torch", "torch": torch.__version__,
      "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                 else platform.processor() or platform.machine()),
      "threads": torch.get_num_threads(), "kind": args.kind, "size": args.size,
      "features": features, "batch": args.batch, "compile": args.compile, "bf16": args.bf16,
      "batched": args.batched, "masked_bn": args.masked_bn,
      "channels_last": args.channels_last,
      "parameters": parameters,
  }
  options = dict(autocast=autocast, batched=args.batched, channels_last=args.channels_last)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", CompileUnavailableWarning)
    result["train_step_s"] = time_torch(args.kind, features, args.size, args.batch, device,
                                        args.compile, args.repeats, masked_bn=args.masked_bn,
                                        **options)
    if args.inference_slices:
      result["inference_slices"] = args.inference_slices
      result["inference_s"] = time_torch_inference(args.kind, features, args.size,
                                                   args.inference_slices, device, args.compile,
                                                   args.repeats, **options)
  unavailable = {str(w.message) for w in caught if w.category is CompileUnavailableWarning}
  for w in caught:  # everything else goes to stderr as usual
    if w.category is not CompileUnavailableWarning:
      warnings.showwarning(w.message, w.category, w.filename, w.lineno)
  if unavailable:
    result["compile_error"] = sorted(unavailable)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
