"""Times the URN train steps with the encoders/decoders stacked by ``vmap`` and ``unroll``.

    python benchmarks/stacking.py [--size 32] [--features 8,16,32] [--batch 4] [--repeats 10]

Both strategies share one parameter tree (``urn_jax/model/stacking.py``); this measures which one
the current backend runs faster. Prints one JSON line: median seconds per step after a
warm-up call, device synchronized.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import urn_jax as U


def seconds_per_step(model, step, batch, repeats):
  state = U.create_train_state(model, jax.random.key(0), batch["image"].shape, 1e-4)
  state, _ = step(state, batch, jax.random.key(0))  # compile
  jax.block_until_ready(state)
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    state, metrics = step(state, batch, jax.random.key(i))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--features", default="8,16,32")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args(argv)
  features = tuple(int(f) for f in args.features.split(","))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(args.batch, args.size, args.size, 4)),
                                jnp.float32),
           "available": jnp.ones((args.batch, 4), bool),
           "label": jnp.zeros((args.batch, args.size, args.size), jnp.int32)}
  result = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
            "size": args.size, "features": features, "batch": args.batch}
  for stacking in ("vmap", "unroll"):
    pretrain = U.URN(encoder_features=features, segmentation_features=None, stacking=stacking)
    segment = U.URN(encoder_features=features, segmentation_features=features,
                    synthesis=False, stacking=stacking)
    result[f"pretrain_step_{stacking}_s"] = seconds_per_step(pretrain, U.pretrain_step, batch,
                                                             args.repeats)
    result[f"segment_step_{stacking}_s"] = seconds_per_step(segment, U.segment_step, batch,
                                                            args.repeats)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
