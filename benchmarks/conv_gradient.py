"""The 3x3 convolution's gradient written out by hand, against autodiff's, on CPU: per layer
and inside the URN pre-training step, next to the PyTorch twin.

    python benchmarks/conv_gradient.py                 # per layer, then the whole step
    taskset -c 0 python benchmarks/conv_gradient.py    # the same on one core

``benchmarks/profile_step.py`` finds a third of the pre-training step on CPU in XLA's
kernel gradients of the 3x3 convolutions (XLA:CPU computes each as a convolution whose
window is the whole image, on transposed copies of its operands). Each way below keeps
XLA's convolution forward and writes the backward pass out (``jax.custom_vjp``): the input
gradient as the convolution of the output gradient with the flipped, transposed kernel,
and the kernel gradient

- ``autodiff_kernel``: as autodiff computes it (only the input gradient is hand-written);
- ``patches``: one matrix product of the 3x3 patches of the input ``[B, H, W, 9C]`` with the
  output gradient;
- ``taps``: nine matrix products, one per kernel tap, of a shifted view of the input with
  the output gradient.

``xla`` is autodiff's gradient, what urn_jax ships. Per layer: forward and backward of one
convolution, jitted, median of ``--repeats`` calls made in turns with PyTorch's
``Conv2d``. In the step: every 3x3 convolution of more than ``unet.PATCH_CHANNELS`` input
channels (the U-Nets' and the synthesis decoders') computed each way, each step compiled
once, the variants and the twin's step called in turns. Milliseconds; prints a table.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import urn_jax as U
from urn_jax.model import unet

sys.path.insert(0, str(Path(__file__).parent))
from cpu_layers import _interleaved_ms  # noqa: E402  (benchmarks/ is not a package)
from throughput import _batch  # noqa: E402

LAYERS = [(64, 16, 16), (64, 16, 8), (32, 32, 16), (16, 64, 32)]  # (size, in, out channels)


def _xla(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _kernel_gradient(way, x, kernel, g):
  _, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps = [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]
  if way == "patches":
    return jnp.einsum("bhwk,bhwf->kf", jnp.concatenate(taps, -1), g).reshape(kernel.shape)
  if way == "taps":
    return jnp.stack([jnp.einsum("bhwc,bhwf->cf", tap, g) for tap in taps]).reshape(kernel.shape)
  return jax.vjp(lambda k: _xla(x, k), kernel)[1](g)[0]


def hand_written(way):
  """XLA's convolution with a hand-written gradient whose kernel part is ``way``."""

  @jax.custom_vjp
  def conv(x, kernel):
    return _xla(x, kernel)

  def backward(saved, g):
    x, kernel = saved
    dx = _xla(g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
    return dx, _kernel_gradient(way, x, kernel, g)

  conv.defvjp(lambda x, kernel: (_xla(x, kernel), (x, kernel)), backward)
  return conv


WAYS = {"xla": _xla, **{way: hand_written(way) for way in ("autodiff_kernel", "patches", "taps")}}


def per_layer(repeats: int, torch):
  for size, c, f in LAYERS:
    x = jax.random.normal(jax.random.key(0), (4, size, size, c))
    kernel = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, c, f))
    g = jax.random.normal(jax.random.key(2), (4, size, size, f))
    calls = {}
    for name, conv in WAYS.items():
      grad = jax.jit(jax.grad(lambda x, k, g, conv=conv: jnp.sum(conv(x, k) * g), (0, 1)))
      calls[name] = functools.partial(grad, x, kernel, g)
    want = calls["xla"]()
    for name, call in calls.items():  # every way computes the same gradients
      for a, b in zip(call(), want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3, err_msg=name)
    xt = torch.randn(4, c, size, size, requires_grad=True)
    layer = torch.nn.Conv2d(c, f, 3, padding=1, bias=False)
    gt = torch.randn(4, f, size, size)

    def torch_call():
      xt.grad = None
      layer.zero_grad()
      (layer(xt) * gt).sum().backward()

    calls["torch"] = torch_call
    ms = _interleaved_ms(calls, repeats)
    print(f"conv 3x3 {size}x{size}x{c} -> {f}: " + "  ".join(f"{k} {v:.2f}" for k, v in ms.items()),
          flush=True)


def in_step(repeats: int, torch, features=(8, 16, 32, 64), size=64):
  import torch_twin as twin
  batch = _batch(4, size)
  calls, original = {}, unet.conv3x3
  for name, conv in WAYS.items():
    unet.conv3x3 = lambda x, kernel, patches, conv=conv: (original(x, kernel, True) if patches
                                                            else conv(x, kernel))
    try:
      model = U.URN(encoder_features=features, segmentation_features=None)
      state = U.create_train_state(model, jax.random.key(0), batch["image"].shape, 1e-4)
      compiled = U.pretrain_step.lower(state, batch, jax.random.key(0)).compile()
    finally:
      unet.conv3x3 = original
    held = {"state": state}

    def call(compiled=compiled, held=held):
      held["state"], metrics = compiled(held["state"], batch, jax.random.key(1))
      return metrics

    calls[name] = call
  model = twin.make("urn_pretrain", features)
  optimizer = twin.make_optimizer(model)
  torch_batch = twin.random_batch(4, size)
  calls["torch"] = lambda: twin.pretrain_step(model, optimizer, torch_batch)
  ms = _interleaved_ms(calls, repeats)
  print("URN pre-training step: " + "  ".join(
      f"{k} {v:.1f} (x{ms['torch'] / v:.2f})" for k, v in ms.items()), flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--skip-layers", action="store_true")
  args = parser.parse_args(argv)
  import torch
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  print(f"{len(os.sched_getaffinity(0))} core(s); milliseconds, forward and backward; "
        "(xN: PyTorch's time / this one)")
  if not args.skip_layers:
    per_layer(args.repeats, torch)
  in_step(args.repeats, torch)


if __name__ == "__main__":
  main()
