"""Training steps with batch norm's written-out gradient (``urn_jax.unet.standardize``)
against the same steps with autodiff's gradient of the same forward computation.

    python benchmarks/batch_norm.py --size 64 --features 8,16,32,64

Both variants are compiled in one process and timed alternately, step by step, so that a
noisy shared machine slows both alike; prints the median seconds per step of each and
their ratio, for the baseline, URN pre-training and URN segmentation steps.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

import urn_jax as U
from throughput import _batch, _models
from urn_jax import unet


def _autodiff_standardize(x, weight, scale, bias, epsilon):
  return unet._standardize_fwd(x, weight, scale, bias, epsilon)[0]


def _compiled(model, step, batch):
  state = U.create_train_state(model, jax.random.key(0), batch["image"].shape, 1e-4)
  compiled = step.lower(state, batch, jax.random.key(0)).compile()
  state, metrics = compiled(state, batch, jax.random.key(0))
  jax.block_until_ready(metrics)
  return compiled, state


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--features", default="8,16,32,64")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args(argv)
  features = tuple(int(f) for f in args.features.split(","))
  batch = _batch(args.batch, args.size)
  results = {}
  for kind, (model, step) in _models(features, None).items():
    variants = {"written_out": _compiled(model, step, batch)}
    written_out = unet.standardize
    unet.standardize = _autodiff_standardize
    try:
      variants["autodiff"] = _compiled(model, step, batch)
    finally:
      unet.standardize = written_out
    times = {name: [] for name in variants}
    for i in range(args.repeats):
      for name, (compiled, state) in variants.items():
        start = time.perf_counter()
        state, metrics = compiled(state, batch, jax.random.key(i + 1))  # state is donated
        jax.block_until_ready(metrics)
        variants[name] = compiled, state
        times[name].append(time.perf_counter() - start)
    result = {name: float(np.median(t)) for name, t in times.items()}
    result["autodiff_over_written_out"] = result["autodiff"] / result["written_out"]
    results[kind] = result
    print(f"{kind:13s} written-out {result['written_out'] * 1e3:7.1f} ms  autodiff "
          f"{result['autodiff'] * 1e3:7.1f} ms  -> x{result['autodiff_over_written_out']:.2f}",
          flush=True)
  print(json.dumps({"backend": jax.default_backend(), "jax": jax.__version__,
                    "size": args.size, "features": features, "batch": args.batch,
                    "steps": results}))


if __name__ == "__main__":
  main()
