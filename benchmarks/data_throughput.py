"""Pre-processing seconds per case and loader slices per second (0, 1 and 2 workers).

    python benchmarks/data_throughput.py [--brats 4] [--hcp 2] [--batch 4] [--batches 200]
        [--augment all|spatial|intensity|max] [--repeats 1] [--spacing 1.0 --size 240]

Writes a phantom (BraTS-size 240 x 240 x 155 cases and 0.7 mm HCP subjects) into a
temporary folder, times pre-processing with and without N4, then times the grain loader
over the cached slices (240 x 240 at 1 mm, the paper's size; ``--spacing 3 --size 64`` for
the ``small`` preset's, which skips the N4 timings). With ``--augment``, each
loader is timed with and without data augmentation, one after the other, ``--repeats``
times, keeping the best of each (a busy machine slows some runs; the fastest is the
least disturbed): ``all`` is every transform at nnU-Net's probability
(``AugmentSettings.typical()``), ``spatial`` / ``intensity`` the half of it, ``max`` every
transform on every slice (the worst case). Prints one JSON line; copy the numbers into
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from urn_jax.data.augment import PROBABILITIES, AugmentSettings
from urn_jax.data.cases import discover_brats, discover_hcp
from urn_jax.data.loader import SliceSource, make_loader
from urn_jax.data.phantom import write_phantom
from urn_jax.data.preprocess import PreprocessConfig, preprocess_dataset


AUGMENTATIONS = {
    "all": AugmentSettings.typical(),
    "spatial": AugmentSettings.typical().only("spatial"),
    "intensity": AugmentSettings.typical().only("intensity"),
    "max": AugmentSettings(**{p: 1.0 for p in PROBABILITIES}),
}


def _loader_rate(source, batch, batches, workers, augment=None):
  iterator = iter(make_loader(source, batch, seed=0, worker_count=workers, augment=augment))
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
  parser.add_argument("--augment", choices=sorted(AUGMENTATIONS),
                      help="also time the loaders with this data augmentation")
  parser.add_argument("--spacing", type=float, default=1.0, help="the loader's slices, mm")
  parser.add_argument("--size", type=int, default=240, help="the loader's slices, voxels")
  parser.add_argument("--repeats", type=int, default=1,
                      help="timings of each loader; the best is kept")
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
    paper = (args.spacing, args.size) == (1.0, 240)
    configs = [("n4", PreprocessConfig())] if paper else []
    configs.append(("no_n4", PreprocessConfig(n4=False, spacing=args.spacing, size=args.size)))
    for name, config in configs:
      dirs = []  # the loader reads the last setting's cache
      for dataset, cases in [("brats", brats), ("hcp", hcp)]:
        start = time.perf_counter()
        done, problems = preprocess_dataset(cases, tmp / "cache", config, progress=False)
        assert not problems, problems
        dirs += done
        result[f"preprocess_{dataset}_{name}_seconds_per_case"] = (
            (time.perf_counter() - start) / len(cases))
    source = SliceSource(dirs)
    result["slice"] = f"{args.size} x {args.size} at {args.spacing:g} mm"
    settings = AUGMENTATIONS.get(args.augment)
    for workers in (0, 1, 2):
      key = f"loader_slices_per_second_{workers}_workers"
      for _ in range(args.repeats):  # alternating, so that both see the same load
        rate = _loader_rate(source, args.batch, args.batches, workers)
        result[key] = max(result.get(key, 0.0), rate)
        if settings is not None:
          rate = _loader_rate(source, args.batch, args.batches, workers, settings)
          result[f"{key}_augment_{args.augment}"] = max(
              result.get(f"{key}_augment_{args.augment}", 0.0), rate)
  print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
  main()
