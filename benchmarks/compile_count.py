"""Counts how often each jitted function compiles while it sees all 15 modality combinations.

    python benchmarks/compile_count.py [--size 32] [--features 8,16,32] [--steps 2]

Runs the URN pre-training step, the URN segmentation step and batched inference over every
availability mask of the paper's Table 1 (``--steps`` calls each), then prints one JSON line
mapping each function to its number of compilations, read from JAX's own jit caches. Every
count must be 1: masks are arrays, so no combination of modalities may trigger a
recompilation. Exits with status 1 if one is not.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import urn_jax as U


def compile_counts(size: int = 32, features=(8, 16, 32), steps: int = 2, batch: int = 4):
  masks = U.availability_masks()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch, size, size, masks.shape[1])), jnp.float32)
  labels = jnp.asarray(rng.integers(0, U.NUM_CLASSES, size=(batch, size, size)), jnp.int32)
  common = dict(encoder_features=tuple(features), num_modalities=masks.shape[1])
  pretrain_model = U.URN(synthesis=True, segmentation_features=None, **common)
  segment_model = U.URN(synthesis=False, segmentation_features=tuple(features), **common)
  pretrain = U.create_train_state(pretrain_model, jax.random.key(0), images.shape, 3e-5)
  segment = U.create_train_state(segment_model, jax.random.key(1), images.shape, 1e-4)
  functions = {"pretrain_step": U.pretrain_step, "segment_step": U.segment_step,
               "infer": U.infer}
  before = {name: fn._cache_size() for name, fn in functions.items()}
  key = jax.random.key(2)
  for i, mask in enumerate(masks):
    batch_ = {"image": images, "label": labels,
              "available": jnp.broadcast_to(jnp.asarray(mask), (batch, masks.shape[1]))}
    for step in range(steps):
      step_key = jax.random.fold_in(key, i * steps + step)
      pretrain, _ = U.pretrain_step(pretrain, batch_, step_key, theta=0.8, min_keep=2,
                                    variance_weight=1e-4)
      segment, _ = U.segment_step(segment, batch_, step_key, theta=0.5, min_keep=1,
                                  variance_weight=1e-4)
      variables = {"params": segment.params, "batch_stats": segment.batch_stats}
      jax.block_until_ready(U.infer(segment_model, variables, images, jnp.asarray(mask)))
  return {name: fn._cache_size() - before[name] for name, fn in functions.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=32, help="slice height and width")
  parser.add_argument("--features", default="8,16,32", help="U-Net widths, comma-separated")
  parser.add_argument("--steps", type=int, default=2, help="calls per function and mask")
  args = parser.parse_args(argv)
  features = tuple(int(f) for f in args.features.split(","))
  counts = compile_counts(args.size, features, args.steps)
  print(json.dumps(counts))
  if any(count != 1 for count in counts.values()):
    print(f"error: each function must compile exactly once, got {counts}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
