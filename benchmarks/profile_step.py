"""Where a training step's time goes, operation by operation, in urn_jax and in its PyTorch twin.

    taskset -c 0 python benchmarks/profile_step.py --torch            # URN pre-training, 1 core
    python benchmarks/profile_step.py --kind urn_segment --torch --out profile.json

JAX: the compiled step runs ``--steps`` times under ``jax.profiler``; each of XLA's thunks
in the trace is matched with its instruction in the optimized HLO and counted by kind
(convolution forward, input gradient or kernel gradient; matrix product; element-wise;
reduction; transpose or copy) and by the part of the model its metadata names (encoders,
fusion, decoders, segmentation head, loss, optimizer). PyTorch (``--torch``; needs the
``bench`` extra): ``torch.profiler`` over the twin's step (``benchmarks/torch_twin.py``),
its operators counted by the same kinds. Times are milliseconds per step.

Run it on one core (``taskset -c 0``; PyTorch then gets one thread): XLA:CPU runs some
thunks asynchronously on its thread pool, and with more than one thread a thunk's span in
the trace is not the time it computed. On one core the spans add up to the step's time.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import urn_jax as U

sys.path.insert(0, str(Path(__file__).parent))
from throughput import _batch, _models  # noqa: E402  (benchmarks/ is not a package)

KINDS = ("convolution forward", "convolution input gradient", "convolution kernel gradient",
         "matrix product", "element-wise", "reduction", "transpose or copy", "other")
PARTS = ("encoders", "fuse", "decoders", "segmenter", "unet", "loss", "optimizer")
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\(")


def _computations(hlo: str) -> dict[str, list[str]]:
  """The optimized HLO's computations: name -> lines of its body."""
  bodies, current = {}, None
  for line in hlo.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      current = bodies.setdefault(header.group(1), [])
    elif current is not None and line.strip() != "}":
      current.append(line)
  return bodies


def _instructions(hlo: str) -> dict[str, tuple[str, str]]:
  """Every instruction of the entry computation, by name: (kind, part, shape)."""
  bodies = _computations(hlo)
  entry = next(name for name in bodies if name.startswith("main"))
  found = {}
  for line in bodies[entry]:
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape, opcode = match.groups()
    meta = re.search(r'op_name="([^"]*)"', line)
    op_name = meta.group(1) if meta else ""
    calls = re.search(r"calls=%([\w.\-]+)", line)
    opcodes = {opcode}
    for inner in bodies.get(calls.group(1), []) if calls else ():
      inner_match = _INSTRUCTION.match(inner)
      if inner_match:
        opcodes.add(inner_match.group(3))
    found[name] = (_kind(opcodes, op_name, line), _part(op_name), shape.split("{")[0])
  return found


def _kind(opcodes: set, op_name: str, line: str) -> str:
  if "convolution" in opcodes:
    # XLA:CPU computes a kernel gradient as a convolution whose window is the whole image
    # (on transposed operands), and drops the op_name of that rewritten instruction.
    window = re.search(r"window=\{size=(\d+)x(\d+)", line)
    if window and int(window.group(1)) > 3:
      return "convolution kernel gradient"
    return ("convolution input gradient" if "transpose(" in op_name
            else "convolution forward")
  if "dot" in opcodes:
    return "matrix product"
  if opcodes & {"transpose", "copy"}:
    return "transpose or copy"
  if opcodes & {"reduce", "reduce-window"}:
    return "reduction"
  if opcodes & {"add", "multiply", "subtract", "select", "maximum", "divide", "exp", "sqrt",
                "rsqrt", "compare", "negate", "abs", "concatenate", "pad", "broadcast",
                "slice", "convert"}:
    return "element-wise"
  return "other"


def _part(op_name: str) -> str:
  if not op_name:
    return "(no metadata)"
  for part in PARTS:
    if f"/{part}" in op_name or f"{part}/" in op_name:
      return part
  if "synthesis_loss" in op_name or "cross_entropy" in op_name or "segmentation_loss" in op_name:
    return "loss"
  if "adam" in op_name or "apply_gradients" in op_name or "optax" in op_name:
    return "optimizer"
  return "rest of the step"


def profile_jax(kind: str, features, size: int, batch_size: int, steps: int) -> dict:
  model, step = _models(features, None)[kind]
  batch = _batch(batch_size, size)
  state = U.create_train_state(model, jax.random.key(0), batch["image"].shape, 1e-4)
  compiled = step.lower(state, batch, jax.random.key(0)).compile()
  instructions = _instructions(compiled.as_text())
  for i in range(3):
    state, metrics = compiled(state, batch, jax.random.key(i))
  jax.block_until_ready(metrics)
  wall = []
  with tempfile.TemporaryDirectory() as folder:
    jax.profiler.start_trace(folder, create_perfetto_trace=True)
    for i in range(steps):
      start = time.perf_counter()
      state, metrics = compiled(state, batch, jax.random.key(i))
      jax.block_until_ready(metrics)
      wall.append(time.perf_counter() - start)
    jax.profiler.stop_trace()
    trace = next(Path(folder).rglob("*.trace.json.gz"))
    events = json.load(gzip.open(trace))["traceEvents"]
  by_kind, by_part, by_both, by_thunk = (collections.Counter() for _ in range(4))
  for event in events:
    if event.get("ph") != "X" or event.get("name") not in instructions:
      continue
    ms = event["dur"] / 1e3 / steps
    op_kind, part, shape = instructions[event["name"]]
    by_thunk[f"{event['name']} {shape} ({part}: {op_kind})"] += ms
    by_kind[op_kind] += ms
    by_part[part] += ms
    by_both[f"{part}: {op_kind}"] += ms
  return {"step_ms": 1e3 * float(np.median(wall)), "thunks_ms": sum(by_kind.values()),
          "by_kind": dict(by_kind), "by_part": dict(by_part), "by_part_and_kind": dict(by_both),
          "largest_thunks": dict(by_thunk.most_common(15))}


def _torch_kind(op: str) -> str | None:
  """The kind of a PyTorch operator, as ``KINDS``; None for wrappers whose time is their
  children's (their self time is counted as 'other')."""
  if op in ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution"):
    return "convolution forward"
  if op == "aten::convolution_backward":
    return "convolution input and kernel gradients"
  if op.startswith("Optimizer.") or op.startswith("aten::_foreach") or op in (
      "aten::lerp_", "aten::addcdiv_", "aten::addcmul_", "aten::linalg_vector_norm"):
    return "optimizer"
  if "batch_norm" in op:
    return "batch norm"
  if op in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"):
    return "matrix product"
  if op in ("aten::copy_", "aten::_to_copy", "aten::contiguous", "aten::clone", "aten::cat"):
    return "transpose or copy"
  if op in ("aten::sum", "aten::mean", "aten::max_pool2d_with_indices", "aten::amax"):
    return "reduction"
  return "element-wise" if op.startswith("aten::") else "other"


def profile_torch(kind: str, features, size: int, batch_size: int, steps: int) -> dict:
  import torch
  import torch_twin as twin
  from torch.profiler import ProfilerActivity, profile
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  model = twin.make(kind, features)
  optimizer = twin.make_optimizer(model)
  batch = twin.random_batch(batch_size, size)
  step = twin.STEPS[kind][0]
  for _ in range(3):
    step(model, optimizer, batch)
  wall = []
  with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for _ in range(steps):
      start = time.perf_counter()
      step(model, optimizer, batch)
      wall.append(time.perf_counter() - start)
  by_kind, by_op = collections.Counter(), collections.Counter()
  for entry in prof.key_averages():
    ms = entry.self_cpu_time_total / 1e3 / steps
    by_kind[_torch_kind(entry.key)] += ms
    by_op[entry.key] += ms
  by_shape = collections.Counter()
  for entry in prof.key_averages(group_by_input_shape=True):
    shapes = [shape for shape in entry.input_shapes if shape][:2]
    by_shape[f"{entry.key} {shapes} x{entry.count // steps}"] += (
        entry.self_cpu_time_total / 1e3 / steps)
  return {"step_ms": 1e3 * float(np.median(wall)), "threads": torch.get_num_threads(),
          "by_kind": dict(by_kind), "top_operators": dict(by_op.most_common(15)),
          "top_operators_by_input_shape": dict(by_shape.most_common(15))}


def _table(title: str, rows: dict, total: float):
  print(f"\n{title}")
  for name, ms in sorted(rows.items(), key=lambda item: -item[1]):
    print(f"  {ms:8.2f} ms  {100 * ms / total:5.1f} %  {name}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kind", default="urn_pretrain", choices=("baseline", "urn_pretrain",
                                                                 "urn_segment"))
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--features", default="8,16,32,64")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--torch", action="store_true", help="profile the PyTorch twin too")
  parser.add_argument("--out", help="JSON file for the results")
  args = parser.parse_args(argv)
  features = tuple(int(f) for f in args.features.split(","))
  cores = len(os.sched_getaffinity(0))
  result = {"kind": args.kind, "size": args.size, "features": features, "batch": args.batch,
            "cores": cores, "jax": jax.__version__, "date": time.strftime("%Y-%m-%d")}
  result["jax_profile"] = ours = profile_jax(args.kind, features, args.size, args.batch,
                                             args.steps)
  print(f"{args.kind}, {args.size}x{args.size}, widths {features}, batch {args.batch}, "
        f"{cores} core(s)")
  print(f"JAX: step {ours['step_ms']:.1f} ms while traced; thunks add up to "
        f"{ours['thunks_ms']:.1f} ms")
  _table("JAX, by kind of operation", ours["by_kind"], ours["thunks_ms"])
  _table("JAX, by part of the model", ours["by_part"], ours["thunks_ms"])
  top = dict(sorted(ours["by_part_and_kind"].items(), key=lambda item: -item[1])[:12])
  _table("JAX, largest (part, kind) pairs", top, ours["thunks_ms"])
  _table("JAX, largest thunks", dict(list(ours["largest_thunks"].items())[:8]), ours["thunks_ms"])
  if args.torch:
    result["torch_profile"] = theirs = profile_torch(args.kind, features, args.size,
                                                     args.batch, args.steps)
    total = sum(theirs["by_kind"].values())
    print(f"\nPyTorch ({theirs['threads']} thread(s)): step {theirs['step_ms']:.1f} ms while "
          f"profiled; operators' self times add up to {total:.1f} ms")
    _table("PyTorch, by kind of operation", theirs["by_kind"], total)
    _table("PyTorch, largest operators", theirs["top_operators"], total)
    _table("PyTorch, largest operators by input shape (calls per step)",
           dict(list(theirs["top_operators_by_input_shape"].items())[:8]), total)
  if args.out:
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
