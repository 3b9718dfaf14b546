"""Training and inference throughput of urn_jax, side by side with the PyTorch twin, against
the device's roofline.

    python benchmarks/throughput.py                                  # the paper's size (GPU)
    python benchmarks/throughput.py --size 64 --features 8,16,32,64  # a 2-core CPU
    python benchmarks/throughput.py --batches 4,16,32 --dtype bfloat16 --torch compile

For the baseline U-Net, URN pre-training and URN segmentation: training slices per second
(median over ``--repeats`` steps after a compiled warm-up, device synchronized), compile
time, the step's FLOPs (XLA's cost analysis of the HLO before optimization, which counts
every convolution) and bytes (of the optimized program), the memory XLA plans for it, and
the fraction of the roofline bound achieved, with the device's matrix rate and copy
bandwidth measured here rather than taken from a datasheet. Then whole-volume URN
inference: a volume of ``--slices`` slices through four encoders, fusion and the
segmentation head, for each of the 15 combinations with one compiled function. With
``--torch`` (``eager``, ``compile``, ``both``; needs ``pip install -e '.[bench]'``) the
PyTorch twin (``benchmarks/torch_twin.py``) is timed in the same process on the same device
and each JAX / PyTorch ratio printed. Prints a table; writes JSON (``--out``) with the
device, the versions and every number.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import urn_jax as U

sys.path.insert(0, str(Path(__file__).parent))


def median_seconds(fn, repeats):
  """Median wall time of ``repeats`` calls of ``fn``, each waited for (``fn``'s result is
  blocked on: JAX dispatches asynchronously)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def device_roofline(repeats=10) -> dict:
  """The device's measured matrix rate (FLOP/s, in the benchmark's dtype) and copy
  bandwidth (bytes/s): the two roofs the steps are compared with."""
  gpu = jax.default_backend() != "cpu"
  result = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    n = 8192 if gpu else 1024
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    seconds = median_seconds(lambda: matmul(a), repeats)
    result[f"matmul_flops_per_s_{jnp.dtype(dtype).name}"] = 2 * n ** 3 / seconds
  x = jnp.ones(((256 if gpu else 16) * 2 ** 20,), jnp.float32)
  copy = jax.jit(lambda v: v + 1)
  jax.block_until_ready(copy(x))
  result["copy_bytes_per_s"] = 2 * x.nbytes / median_seconds(lambda: copy(x), repeats)
  return result


def _models(features, dtype):
  return {
      "baseline": (U.Baseline(4, features, dtype=dtype), U.segment_step),
      "urn_pretrain": (U.URN(encoder_features=features, segmentation_features=None,
                             dtype=dtype), U.pretrain_step),
      "urn_segment": (U.URN(encoder_features=features, segmentation_features=features,
                            synthesis=False, dtype=dtype), U.segment_step),
  }


def _batch(batch, size, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.normal(size=(batch, size, size, 4)), jnp.float32),
          "available": jnp.ones((batch, 4), bool),
          "label": jnp.asarray(rng.integers(0, 4, (batch, size, size)), jnp.int32)}


def time_training(model, step, batch, repeats) -> dict:
  """A training step compiled once (timed), then run ``repeats`` times (median)."""
  state = U.create_train_state(model, jax.random.key(0), batch["image"].shape, 1e-4)
  start = time.perf_counter()
  lowered = step.lower(state, batch, jax.random.key(0))
  compiled = lowered.compile()
  compile_seconds = time.perf_counter() - start
  cost = _cost(compiled)
  # FLOPs from the HLO before XLA's GPU passes: after them the convolutions are cuDNN custom
  # calls, which the compiled cost analysis does not count (on an H200 it reported 0.003
  # TFLOP for a baseline step of 0.55).
  flops = _cost(lowered).get("flops", np.nan)
  memory = compiled.memory_analysis()
  state, metrics = compiled(state, batch, jax.random.key(0))  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, jax.random.key(i + 1))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  planned = None
  if memory is not None:
    planned = int(memory.temp_size_in_bytes + memory.argument_size_in_bytes
                  + memory.output_size_in_bytes - memory.alias_size_in_bytes)
  return {"step_s": seconds, "slices_per_s": batch["image"].shape[0] / seconds,
          "compile_s": compile_seconds, "flops": float(flops),
          "bytes": float(cost.get("bytes accessed", np.nan)), "planned_bytes": planned}


def _cost(stage) -> dict:
  """XLA's cost analysis of a lowered or compiled function, as one dict."""
  cost = stage.cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost) or {}


def time_inference(features, size, slices, dtype, repeats) -> dict:
  """A whole volume through the URN's encoders, fusion and segmentation head, for every
  combination of modalities; ``compilations`` must be 1."""
  model = U.URN(encoder_features=features, segmentation_features=features, synthesis=False,
                dtype=dtype)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(slices, size, size, 4)),
                       jnp.float32)
  variables = jax.jit(model.init, static_argnames="train")(jax.random.key(0), images[:1],
                                                           jnp.ones((1, 4), bool), train=False)
  before = U.infer._cache_size()
  start = time.perf_counter()
  jax.block_until_ready(U.infer(model, variables, images, jnp.ones(4, bool)))
  compile_seconds = time.perf_counter() - start
  per_mask = []
  for mask in U.availability_masks():
    mask = jnp.asarray(mask)
    jax.block_until_ready(U.infer(model, variables, images, mask))
    per_mask.append(median_seconds(lambda: U.infer(model, variables, images, mask)["label"],
                                    repeats))
  return {"volume_s": float(np.median(per_mask)), "volume_s_max": float(max(per_mask)),
          "first_call_s": compile_seconds,
          "compilations": U.infer._cache_size() - before}


def _torch(kind, args, features, batch, mode):
  """The twin's measurement in the shape of ours; ``{"error": ...}`` where it cannot run."""
  import torch
  import torch_twin
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  autocast = torch.bfloat16 if args.dtype == "bfloat16" else None
  compile = mode == "compile"
  try:
    if kind == "inference":
      seconds = torch_twin.time_torch_inference("urn_segment", features, args.size,
                                                args.slices, device, compile, args.repeats,
                                                autocast=autocast)
      return {"volume_s": seconds} if seconds else {"error": "torch.compile unavailable"}
    seconds = torch_twin.time_torch(kind, features, args.size, batch, device, compile,
                                    args.repeats, autocast=autocast)
    return ({"step_s": seconds, "slices_per_s": batch / seconds} if seconds
            else {"error": "torch.compile unavailable"})
  except Exception as e:  # noqa: BLE001 - a twin that cannot run is reported, not fatal
    return {"error": f"{type(e).__name__}: {e}"}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=240)
  parser.add_argument("--features", default=",".join(map(str, U.PAPER_FEATURES)))
  parser.add_argument("--batches", default="4", help="comma-separated batch sizes")
  parser.add_argument("--slices", type=int, default=155, help="slices of an inference volume")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--kinds", default="baseline,urn_pretrain,urn_segment")
  parser.add_argument("--torch", default="none", choices=("none", "eager", "compile", "both"))
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--skip-inference", action="store_true")
  parser.add_argument("--skip-training", action="store_true",
                      help="whole-volume inference only")
  parser.add_argument("--out", default="", help="JSON file for the results")
  args = parser.parse_args(argv)
  features = tuple(int(f) for f in args.features.split(","))
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  modes = {"none": (), "eager": ("eager",), "compile": ("compile",),
           "both": ("eager", "compile")}[args.torch]
  roof = device_roofline()
  peak = roof[f"matmul_flops_per_s_{args.dtype}"]
  result = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {"jax": jax.__version__, "flax": _version("flax"),
                         "optax": _version("optax"), "torch": _version("torch")},
            "size": args.size, "features": features, "dtype": args.dtype,
            "roofline": roof, "training": [], "inference": None,
            "date": time.strftime("%Y-%m-%d")}
  print(f"roofline measured: matmul {peak / 1e12:.2f} TFLOP/s ({args.dtype}), copy "
        f"{roof['copy_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)
  rows = []
  models = _models(features, dtype)
  for batch_size in () if args.skip_training else (int(b) for b in args.batches.split(",")):
    batch = _batch(batch_size, args.size)
    for kind in args.kinds.split(","):
      model, step = models[kind]
      entry = {"kind": kind, "batch": batch_size, **time_training(model, step, batch,
                                                                  args.repeats)}
      bound = max(entry["flops"] / peak, entry["bytes"] / roof["copy_bytes_per_s"])
      entry["roofline_fraction"] = bound / entry["step_s"]
      for mode in modes:
        entry[f"torch_{mode}"] = _torch(kind, args, features, batch_size, mode)
      result["training"].append(entry)
      rows.append(_row(f"{kind} b{batch_size}", entry["slices_per_s"], "slices/s", entry,
                       modes, higher_is_better=True))
      _progress(rows[-1], result, args.out)
  if not args.skip_inference:
    entry = time_inference(features, args.size, args.slices, dtype, args.repeats)
    for mode in modes:
      entry[f"torch_{mode}"] = _torch("inference", args, features, None, mode)
    result["inference"] = entry
    rows.append(_row(f"inference {args.slices} slices", entry["volume_s"], "s/volume", entry,
                     modes, higher_is_better=False))
    _progress(rows[-1], result, args.out)
  print(f"{result['device']} ({result['backend']}), {args.size}x{args.size}, widths "
        f"{features}, {args.dtype}; matmul {peak / 1e12:.2f} TFLOP/s, copy "
        f"{roof['copy_bytes_per_s'] / 1e9:.1f} GB/s")
  for row in rows:
    print(row)
  return result


def _progress(row, result, out):
  """Each measurement printed and saved as soon as it is made, so that a run stopped at a
  time limit (a lent GPU's, say) keeps what it measured."""
  print(row, flush=True)
  if out:
    Path(out).write_text(json.dumps(result, indent=1))


def _row(name, value, unit, entry, modes, higher_is_better):
  text = f"{name:28s} jax {value:10.4g} {unit}"
  if "roofline_fraction" in entry:
    text += (f"  compile {entry['compile_s']:.1f} s  "
             f"roofline {100 * entry['roofline_fraction']:.0f}%")
  else:
    text += f"  compilations {entry['compilations']}"
  for mode in modes:
    twin = entry[f"torch_{mode}"]
    if "error" in twin:
      text += f"  torch {mode}: {twin['error'][:60]}"
      continue
    theirs = twin["slices_per_s"] if higher_is_better else twin["volume_s"]
    ratio = value / theirs if higher_is_better else theirs / value
    text += f"  torch {mode} {theirs:.4g} -> jax/torch speed x{ratio:.2f}"
  return text


def _version(name):
  try:
    from importlib.metadata import version
    return version(name)
  except Exception:  # noqa: BLE001 - not installed
    return None


if __name__ == "__main__":
  main()
