"""Ensembles and test-time mirroring, scored patient by patient: what they gain and cost.

    python benchmarks/ensembles.py --models runs/baseline_md                  # validation
    python benchmarks/ensembles.py --models runs/s0/urn_md,runs/s1/urn_md,runs/s2/urn_md \
        --split test --out benchmarks/cpu/ensembles_urn_md
    python benchmarks/ensembles.py --report benchmarks/cpu/ensembles_urn_md

For each patient of the first model's split (``--split validation``, the default, to choose
a default such as ``urn_jax.inference.predict.DEFAULT_MIRROR``; ``test`` only to report what
was chosen) and each combination of ``--masks`` that the patient has, every model predicts
with each mirroring of ``--mirrors``. Scored are each model alone and, with more than one,
their ensemble: the members' probabilities averaged, as ``predict_volume`` does, so the
ensemble's scores need no pass of their own; its time is the sum of its members' (they run
one after another there too). Each prediction goes back onto the original grid as
``urn-segment`` writes it (background outside the given modalities' brain) and is scored per
region by Dice (``urn_jax.metrics``) and, with ``--lesion-wise`` (the default), the BraTS
2023 lesion-wise Dice (``urn_jax.lesion_metrics``).

Prints, per model (or ensemble) and mirroring: the mean of each score over the (patient,
combination) pairs, the median seconds per volume, and paired differences over the pairs
(mean, and how many pairs went up and down): a mirroring against no mirroring of the same
model; an ensemble against the mean of its members alone, at the same mirroring. ``--out``
writes every score and time (``write_results``), and ``--report FOLDER`` prints the table
again from them without predicting anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from urn_jax import lesion_metrics as L
from urn_jax.data.datasets import data_from_config
from urn_jax.evaluation.evaluate import Patient, parse_masks
from urn_jax.evaluation.tables import write_rows
from urn_jax.inference.predict import (given_brain, load_model, parse_mirror, predict_volume,
                                       to_original_classes)
from urn_jax.labels import REGIONS, region_mask
from urn_jax.metrics import dice
from urn_jax.modalities import mask_key

ENSEMBLE = "ensemble"


def _score(predicted, classes, spacing, lesion_wise: bool) -> dict:
  scores = {f"{r}/dice": dice(region_mask(predicted, r), region_mask(classes, r))
            for r in REGIONS}
  if lesion_wise:
    scores.update({f"{r}/lesion_dice": L.lesion_wise(region_mask(predicted, r),
                                                     region_mask(classes, r),
                                                     spacing)["lesion_dice"]
                   for r in REGIONS})
  return scores


def measure(workdirs, mirrors, masks, split="validation", chunk=32, lesion_wise=True):
  """``(scores, seconds)``: one dict per (patient, combination, model, mirroring) with its
  scores; ``{(model, mirroring): [seconds per volume]}`` of the single models."""
  models = [load_model(w) for w in workdirs]
  names = [str(w) for w in workdirs]
  cases = data_from_config(models[0].config, workdirs[0], use_hcp=False)["brats"][split]
  scores, seconds = [], {}
  for case_dir in cases:
    patient = Patient.read(Path(case_dir))
    meta = patient.meta
    for mask in patient.combinations(parse_masks(masks)):
      brain = given_brain(patient.nonzero, mask)
      for mirror_name, mirror in mirrors.items():
        probabilities = {}
        for name, model in zip(names, models):
          start = time.perf_counter()
          probabilities[name] = predict_volume(model, patient.image, mask, chunk,
                                               mirror)["probabilities"]
          seconds.setdefault(f"{name}|{mirror_name}", []).append(time.perf_counter() - start)
        if len(models) > 1:
          probabilities[ENSEMBLE] = np.mean(list(probabilities.values()), axis=0)
        for name, p in probabilities.items():
          predicted = to_original_classes(p, meta, brain)
          scores.append({"case_id": meta.case_id, "mask": mask_key(mask), "model": name,
                         "mirror": mirror_name,
                         **_score(predicted, patient.classes, patient.spacing,
                                  lesion_wise)})
    print(f"{meta.case_id}: scored", flush=True)
  return scores, seconds


def _pairs(scores, model, mirror):
  return {(s["case_id"], s["mask"]): s for s in scores
          if s["model"] == model and s["mirror"] == mirror}


def _difference(mine: dict, reference: dict, column: str) -> str:
  d = 100 * np.array([mine[k][column] - reference[k][column] for k in mine])
  return f"{d.mean():+.2f} ({np.sum(d > 0)} up, {np.sum(d < 0)} down)"


def report(scores, seconds, names, mirrors) -> list[str]:
  """The printed table (module docstring), one line per model and mirroring, then the
  paired differences."""
  columns = [c for c in scores[0] if "/" in c]
  models = list(names) + ([ENSEMBLE] if len(names) > 1 else [])
  lines = [f"{len({(s['case_id'], s['mask']) for s in scores})} (patient, combination) "
           f"pairs of {len({s['case_id'] for s in scores})} patients; mean %, seconds per "
           "volume (median)"]
  lines.append("model | mirror | " + " | ".join(columns) + " | s / volume")
  for model in models:
    for mirror in mirrors:
      mine = list(_pairs(scores, model, mirror).values())
      if model == ENSEMBLE:
        per_volume = np.median(np.sum([seconds[f"{n}|{mirror}"] for n in names], axis=0))
      else:
        per_volume = np.median(seconds[f"{model}|{mirror}"])
      lines.append(f"{model} | {mirror} | " + " | ".join(
          f"{100 * np.mean([s[c] for s in mine]):.2f}" for c in columns)
          + f" | {per_volume:.2f}")
  lines.append("paired differences, points (pairs up, down):")
  for model in models:
    none = _pairs(scores, model, "none") if "none" in mirrors else None
    for mirror in mirrors:
      mine = _pairs(scores, model, mirror)
      if none is not None and mirror != "none":
        lines.append(f"{model} {mirror} vs none | " + " | ".join(
            _difference(mine, none, c) for c in columns))
      if model == ENSEMBLE:
        members = [_pairs(scores, n, mirror) for n in names]
        mean = {k: {c: np.mean([m[k][c] for m in members]) for c in columns} for k in mine}
        lines.append(f"{model} {mirror} vs its members alone (mean) | " + " | ".join(
            _difference(mine, mean, c) for c in columns))
  return lines


def write_results(folder, workdirs, split, scores, seconds) -> None:
  """``<folder>/scores.csv`` (a row per patient, combination, model and mirroring; scores
  to 5 significant digits, a Dice to 0.001 points) and ``<folder>/run.json`` (the models,
  the split and every volume's seconds): small enough to commit, enough to recompute every
  number of the report."""
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  write_rows(folder / "scores.csv", [{k: f"{v:.5g}" if isinstance(v, float) else v
                                      for k, v in s.items()} for s in scores])
  (folder / "run.json").write_text(json.dumps(
      {"models": [str(w) for w in workdirs], "split": split,
       "seconds": {k: [round(t, 4) for t in v] for k, v in seconds.items()}}, indent=1))


def read_results(folder):
  """``(models, split, scores, seconds)`` as ``write_results`` wrote them."""
  folder = Path(folder)
  run = json.loads((folder / "run.json").read_text())
  with open(folder / "scores.csv") as stream:
    scores = [{k: v if k in ("case_id", "mask", "model", "mirror") else float(v)
               for k, v in row.items()} for row in csv.DictReader(stream)]
  return run["models"], run["split"], scores, run["seconds"]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--report", help="a folder --out wrote: print its table again")
  parser.add_argument("--models",
                      help="comma-separated segmentation runs; several are also scored as "
                      "one ensemble")
  parser.add_argument("--mirrors", default="none;lr;lr,ap",
                      help="semicolon-separated mirrorings to compare")
  parser.add_argument("--masks", default="all")
  parser.add_argument("--split", default="validation", choices=("validation", "test"))
  parser.add_argument("--chunk", type=int, default=32)
  parser.add_argument("--lesion-wise", default=True, action=argparse.BooleanOptionalAction,
                      help="also the BraTS 2023 lesion-wise Dice (default on)")
  parser.add_argument("--out", help="folder for scores.csv and run.json (every score and "
                      "time)")
  args = parser.parse_args(argv)
  if args.report:
    workdirs, split, scores, seconds = read_results(args.report)
    mirrors = list(dict.fromkeys(s["mirror"] for s in scores))
    print(f"{split} patients; models: {', '.join(workdirs)}")
    print("\n".join(report(scores, seconds, workdirs, mirrors)))
    return
  if not args.models:
    parser.error("--models is required (or --report FOLDER)")
  workdirs = [w for w in args.models.split(",") if w]
  mirrors = {m: parse_mirror(m) for m in args.mirrors.split(";")}
  scores, seconds = measure(workdirs, mirrors, args.masks, args.split, args.chunk,
                            args.lesion_wise)
  print(f"{args.split} patients of {workdirs[0]}'s split; models: {', '.join(workdirs)}")
  print("\n".join(report(scores, seconds, workdirs, mirrors)))
  if args.out:
    write_results(args.out, workdirs, args.split, scores, seconds)


if __name__ == "__main__":
  main()
