"""Test-time mirroring and ensembles, scored on the VALIDATION patients of a split: the
measurement behind ``urn_jax.inference.predict.DEFAULT_MIRROR``.

    python benchmarks/mirroring.py --models runs/baseline_md
    python benchmarks/mirroring.py --models runs/urn_md_s0,runs/urn_md_s1 --masks 1111,1000

For each validation patient of the first model's split (never a test patient: this chooses
a default) and each combination of ``--masks``, the models (one, or several as an
ensemble) predict with each mirroring of ``--mirrors``; the prediction goes back onto the
original grid as ``urn-segment`` writes it and is scored by Dice per region. Prints the mean
Dice per mirroring and its paired difference from no mirroring over the (patient,
combination) pairs, and the seconds per volume; ``--out`` writes every score as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from urn_jax.data.cases import file_role
from urn_jax.data.datasets import data_from_config
from urn_jax.data.meta import CaseMeta
from urn_jax.evaluation.evaluate import original_label, parse_masks
from urn_jax.inference.predict import (given_brain, load_model, nonzero_voxels, parse_mirror,
                                       predict_volume, to_original_classes)
from urn_jax.labels import REGIONS, region_mask
from urn_jax.metrics import dice
from urn_jax.modalities import MODALITIES, mask_key


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", required=True, help="comma-separated segmentation runs")
  parser.add_argument("--mirrors", default="none;lr;lr,ap",
                      help="semicolon-separated mirrorings to compare")
  parser.add_argument("--masks", default="all")
  parser.add_argument("--chunk", type=int, default=32)
  parser.add_argument("--out", help="JSON file for every score")
  args = parser.parse_args(argv)
  workdirs = [w for w in args.models.split(",") if w]
  models = [load_model(w) for w in workdirs]
  mirrors = {m: parse_mirror(m) for m in args.mirrors.split(";")}
  cases = data_from_config(models[0].config, workdirs[0], use_hcp=False)["brats"]["validation"]
  scores, seconds = [], {m: [] for m in mirrors}
  for case_dir in cases:
    meta = CaseMeta.read(case_dir)
    classes, _ = original_label(meta)
    image = np.load(Path(case_dir) / "image.npy")
    nonzero = nonzero_voxels({file_role(p): p for p in meta.sources
                              if file_role(p) in MODALITIES}, meta.case_id)
    for mask in parse_masks(args.masks):
      if np.any(mask & ~np.asarray(meta.available, bool)):
        continue
      for name, mirror in mirrors.items():
        start = time.perf_counter()
        probabilities = predict_volume(models, image, mask, args.chunk, mirror)["probabilities"]
        seconds[name].append(time.perf_counter() - start)
        predicted = to_original_classes(probabilities, meta, given_brain(nonzero, mask))
        scores.append({"case_id": meta.case_id, "mask": mask_key(mask), "mirror": name,
                       **{r: dice(region_mask(predicted, r), region_mask(classes, r))
                          for r in REGIONS}})
    print(f"{meta.case_id}: scored", flush=True)
  print(f"{len(cases)} validation patients of {workdirs[0]}'s split; models: "
        f"{', '.join(workdirs)}")
  baseline = {(s["case_id"], s["mask"]): s for s in scores if s["mirror"] == "none"}
  for name in mirrors:
    mine = [s for s in scores if s["mirror"] == name]
    means = "  ".join(f"{r} {100 * np.mean([s[r] for s in mine]):.2f}" for r in REGIONS)
    line = f"{name:8s} Dice {means}  ({np.median(seconds[name]):.2f} s/volume)"
    if baseline and name != "none":
      diffs = {r: 100 * np.array([s[r] - baseline[s["case_id"], s["mask"]][r] for s in mine])
               for r in REGIONS}
      line += "  vs none: " + "  ".join(
          f"{r} {d.mean():+.2f} (better {np.sum(d > 0)}, worse {np.sum(d < 0)})"
          for r, d in diffs.items())
    print(line)
  if args.out:
    Path(args.out).write_text(json.dumps({"models": workdirs, "scores": scores,
                                          "seconds": seconds}, indent=1))


if __name__ == "__main__":
  main()
