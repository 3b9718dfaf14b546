"""Per-layer forward + backward time of Flax's layers against urn_jax's rewritten ones
(``urn_jax/unet.py``), and PyTorch's, at the sizes of the CPU throughput benchmark.

    python benchmarks/cpu_layers.py                   # all threads
    python benchmarks/cpu_layers.py --torch           # and PyTorch's layer (needs '.[bench]')

Each measurement is the median of ``--repeats`` calls of a jitted function returning the
gradients of ``sum(layer(x) * g)`` with respect to the input and the kernel, after a warm-up
call: the work one layer does in a training step. This is how the U-Net's max pool, 3x3
convolution with few input channels and 2x2 transposed convolution were chosen; see
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

from throughput import median_seconds
from urn_jax import unet

BATCH = 4
# (name, input [H, W, C], output channels)
CONVS = [("conv 3x3", (64, 64, 1), 8), ("conv 3x3", (64, 64, 4), 8),
         ("conv 3x3", (64, 64, 16), 8), ("conv 3x3", (32, 32, 8), 16)]
POOLS = [("max pool 2x2", (64, 64, 8), None), ("max pool 2x2", (32, 32, 16), None),
         ("max pool 2x2", (16, 16, 32), None)]
UPS = [("up-conv 2x2/2", (8, 8, 64), 32), ("up-conv 2x2/2", (16, 16, 32), 16),
       ("up-conv 2x2/2", (32, 32, 16), 8)]


def _median_ms(fn, args, repeats):
  fn(*args)  # compile, warm up
  return 1e3 * median_seconds(lambda: fn(*args), repeats)


def _fwd_bwd(apply):
  """jitted (x, kernel, g) -> gradients of sum(apply(x, kernel) * g)."""
  return jax.jit(jax.grad(lambda x, k, g: jnp.sum(apply(x, k) * g), (0, 1)))


def _layers(kind, c, f):
  """(flax apply, ours apply, kernel shape) for one layer kind."""
  if kind == "conv 3x3":
    flax_conv = nn.Conv(f, (3, 3), use_bias=False)
    return (lambda x, k: flax_conv.apply({"params": {"kernel": k}}, x),
            lambda x, k: unet.conv3x3(x, k, patches=c <= unet.PATCH_CHANNELS),
            (3, 3, c, f))
  if kind == "max pool 2x2":
    return (lambda x, k: nn.max_pool(x, (2, 2), strides=(2, 2)) * k,
            lambda x, k: unet.max_pool_2x2(x) * k, ())
  flax_up, ours_up = nn.ConvTranspose(f, (2, 2), strides=(2, 2)), unet.UpConv(f)
  bias = jnp.zeros((f,))
  return (lambda x, k: flax_up.apply({"params": {"kernel": k, "bias": bias}}, x),
          lambda x, k: ours_up.apply({"params": {"kernel": k, "bias": bias}}, x),
          (2, 2, c, f))


def _torch_ms(kind, shape, f, repeats):
  import torch
  h, w, c = shape
  x = torch.randn(BATCH, c, h, w, requires_grad=True)
  if kind == "conv 3x3":
    layer = torch.nn.Conv2d(c, f, 3, padding=1, bias=False)
  elif kind == "max pool 2x2":
    layer = torch.nn.MaxPool2d(2)
  else:
    layer = torch.nn.ConvTranspose2d(c, f, 2, stride=2)
  y = layer(x)
  g = torch.randn_like(y)

  def call():
    x.grad = None
    layer.zero_grad()
    (layer(x) * g).sum().backward()

  return _median_ms(call, (), repeats)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--torch", action="store_true", help="time PyTorch's layer too")
  parser.add_argument("--out", help="JSON file for the results")
  args = parser.parse_args(argv)
  rows = []
  for kind, shape, f in CONVS + POOLS + UPS:
    flax_apply, ours_apply, kernel_shape = _layers(kind, shape[-1], f)
    x = jax.random.normal(jax.random.key(0), (BATCH,) + shape)
    k = jax.random.normal(jax.random.key(1), kernel_shape) * 0.1
    g = jax.random.normal(jax.random.key(2), jax.eval_shape(ours_apply, x, k).shape)
    row = {"layer": kind, "input": [BATCH, *shape], "out_channels": f,
           "flax_ms": _median_ms(_fwd_bwd(flax_apply), (x, k, g), args.repeats),
           "urn_jax_ms": _median_ms(_fwd_bwd(ours_apply), (x, k, g), args.repeats)}
    if args.torch:
      row["torch_ms"] = _torch_ms(kind, shape, f, args.repeats)
    rows.append(row)
    extra = f"  torch {row['torch_ms']:6.2f}" if args.torch else ""
    print(f"{kind:14s} {str(shape):15s} -> {f or shape[-1]:3d}  flax {row['flax_ms']:6.2f} ms  "
          f"urn_jax {row['urn_jax_ms']:6.2f} ms  (x{row['flax_ms'] / row['urn_jax_ms']:.2f})"
          + extra, flush=True)
  if args.out:
    with open(args.out, "w") as stream:
      json.dump({"backend": jax.default_backend(), "jax": jax.__version__, "rows": rows},
                stream, indent=1)


if __name__ == "__main__":
  main()
