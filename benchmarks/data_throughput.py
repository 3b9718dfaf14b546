"""Pre-processing seconds per case and loader slices per second (1 and 2 workers).

    python benchmarks/data_throughput.py [--brats 4] [--hcp 2] [--batch 4] [--batches 200]

Writes a phantom (BraTS-size 240 x 240 x 155 cases and 0.7 mm HCP subjects) into a
temporary folder, times pre-processing with and without N4, then times the grain loader
over the cached slices. Prints one JSON line; copy the numbers into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from urn_jax.data.cases import discover_brats, discover_hcp
from urn_jax.data.loader import SliceSource, make_loader
from urn_jax.data.phantom import write_phantom
from urn_jax.data.preprocess import PreprocessConfig, preprocess_dataset


def _loader_rate(source, batch, batches, workers):
  iterator = iter(make_loader(source, batch, seed=0, worker_count=workers))
  next(iterator)  # start-up (worker processes) excluded
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batch * batches / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--brats", type=int, default=4)
  parser.add_argument("--hcp", type=int, default=2)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--batches", type=int, default=200)
  args = parser.parse_args(argv)
  result = {"machine": platform.processor() or platform.machine(), "cpus": __import__(
      "os").cpu_count()}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    start = time.perf_counter()
    folders = write_phantom(tmp / "phantom", args.brats, args.hcp, seed=0, progress=False)
    result["phantom_seconds_per_case"] = (time.perf_counter() - start) / (args.brats + args.hcp)
    brats, _ = discover_brats(folders["brats"])
    hcp, _ = discover_hcp(folders["hcp"])
    for name, config in [("n4", PreprocessConfig()), ("no_n4", PreprocessConfig(n4=False))]:
      dirs = []  # the loader reads the last setting's cache
      for dataset, cases in [("brats", brats), ("hcp", hcp)]:
        start = time.perf_counter()
        done, problems = preprocess_dataset(cases, tmp / "cache", config, progress=False)
        assert not problems, problems
        dirs += done
        result[f"preprocess_{dataset}_{name}_seconds_per_case"] = (
            (time.perf_counter() - start) / len(cases))
    source = SliceSource(dirs)
    for workers in (0, 1, 2):
      result[f"loader_slices_per_second_{workers}_workers"] = _loader_rate(
          source, args.batch, args.batches, workers)
  print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
  main()
