"""Per-layer forward + backward time of Flax's layers against urn_jax's rewritten ones
(``urn_jax/model/unet.py``), and PyTorch's, at the sizes of the CPU throughput benchmark.

    python benchmarks/cpu_layers.py                   # all threads
    python benchmarks/cpu_layers.py --torch           # and PyTorch's layer (needs '.[bench]')

Each measurement is the median of ``--repeats`` calls of a jitted function returning the
gradients of ``sum(layer(x) * g)`` with respect to the input and the kernel, after a warm-up
call: the work one layer does in a training step. A layer's variants are called in turns,
so that a shared machine's slow spells slow them all alike. For the 3x3 convolution both
of ``unet.conv3x3``'s ways are timed; urn_jax's column is the one the U-Net picks. This is
how the U-Net's max pool, 3x3 convolution with few input channels (and
``unet.PATCH_CHANNELS``) and 2x2 transposed convolution were chosen; see
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from urn_jax.model import unet

BATCH = 4
# (name, input [H, W, C], output channels)
CONVS = [("conv 3x3", (64, 64, 1), 8), ("conv 3x3", (64, 64, 4), 8),
         ("conv 3x3", (64, 64, 16), 8), ("conv 3x3", (32, 32, 8), 16)]
POOLS = [("max pool 2x2", (64, 64, 8), None), ("max pool 2x2", (32, 32, 16), None),
         ("max pool 2x2", (16, 16, 32), None)]
UPS = [("up-conv 2x2/2", (8, 8, 64), 32), ("up-conv 2x2/2", (16, 16, 32), 16),
       ("up-conv 2x2/2", (32, 32, 16), 8)]


def _interleaved_ms(calls: dict, repeats: int) -> dict:
  """Median milliseconds of each zero-argument call, after a warm-up (compilation) call,
  timed in turns: call after call, so that a shared machine's slow spells hit all alike."""
  for call in calls.values():
    jax.block_until_ready(call())
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      jax.block_until_ready(call())
      times[name].append(time.perf_counter() - start)
  return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def _fwd_bwd(apply):
  """jitted (x, kernel, g) -> gradients of sum(apply(x, kernel) * g)."""
  return jax.jit(jax.grad(lambda x, k, g: jnp.sum(apply(x, k) * g), (0, 1)))


def _layers(kind, c, f):
  """({name: apply(x, kernel)}, the name of the one urn_jax's U-Net uses, kernel shape)
  for one layer kind; the 3x3 convolution both of ``unet.conv3x3``'s ways."""
  if kind == "conv 3x3":
    flax_conv = nn.Conv(f, (3, 3), use_bias=False)
    return ({"flax": lambda x, k: flax_conv.apply({"params": {"kernel": k}}, x),
             "xla_conv": lambda x, k: unet.conv3x3(x, k, patches=False),
             "patches": lambda x, k: unet.conv3x3(x, k, patches=True)},
            "patches" if c <= unet.PATCH_CHANNELS else "xla_conv", (3, 3, c, f))
  if kind == "max pool 2x2":
    return ({"flax": lambda x, k: nn.max_pool(x, (2, 2), strides=(2, 2)) * k,
             "urn_jax": lambda x, k: unet.max_pool_2x2(x) * k}, "urn_jax", ())
  flax_up, ours_up = nn.ConvTranspose(f, (2, 2), strides=(2, 2)), unet.UpConv(f)
  bias = jnp.zeros((f,))
  return ({"flax": lambda x, k: flax_up.apply({"params": {"kernel": k, "bias": bias}}, x),
           "urn_jax": lambda x, k: ours_up.apply({"params": {"kernel": k, "bias": bias}}, x)},
          "urn_jax", (2, 2, c, f))


def _torch_call(kind, shape, f):
  """A zero-argument call of PyTorch's layer, forward and backward."""
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

  return call


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--torch", action="store_true", help="time PyTorch's layer too")
  parser.add_argument("--out", help="JSON file for the results")
  args = parser.parse_args(argv)
  rows = []
  for kind, shape, f in CONVS + POOLS + UPS:
    applies, used, kernel_shape = _layers(kind, shape[-1], f)
    x = jax.random.normal(jax.random.key(0), (BATCH,) + shape)
    k = jax.random.normal(jax.random.key(1), kernel_shape) * 0.1
    g = jax.random.normal(jax.random.key(2), jax.eval_shape(applies[used], x, k).shape)
    calls = {name: functools.partial(_fwd_bwd(apply), x, k, g) for name, apply in applies.items()}
    if args.torch:
      calls["torch"] = _torch_call(kind, shape, f)
    ms = _interleaved_ms(calls, args.repeats)
    ms["urn_jax"] = ms[used]
    rows.append({"layer": kind, "input": [BATCH, *shape], "out_channels": f,
                 **{f"{name}_ms": value for name, value in ms.items()}})
    ways = (f"  [XLA conv {ms['xla_conv']:6.2f}, patches {ms['patches']:6.2f}]"
            if kind == "conv 3x3" else "")
    torch = f"  torch {ms['torch']:6.2f}" if args.torch else ""
    print(f"{kind:14s} {str(shape):15s} -> {f or shape[-1]:3d}  flax {ms['flax']:6.2f} ms  "
          f"urn_jax {ms['urn_jax']:6.2f} ms  (x{ms['flax'] / ms['urn_jax']:.2f})" + ways + torch,
          flush=True)
  if args.out:
    with open(args.out, "w") as stream:
      json.dump({"backend": jax.default_backend(), "jax": jax.__version__, "rows": rows},
                stream, indent=1)


if __name__ == "__main__":
  main()
