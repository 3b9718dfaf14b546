"""Segmentation under a change of scanner: train on the phantom's site A, score site A and B.

    python benchmarks/shift.py --workdir runs/shift --out benchmarks/cpu/shift   # train, score
    python benchmarks/shift.py --report benchmarks/cpu/shift                     # the tables again

Each recipe (``RECIPES``: with or without augmentation, on the phantom's version 2 or its
varied version 3, with or without clean synthesis targets in pre-training) trains, at the
``small`` size, the README's chain - pre-training, then URN + MD with the frozen
pre-trained encoders (``urn_md_pretrained``) - and Baseline + MD, each on site A (the
default phantom, seed 0) with launch.py, into ``<workdir>/<recipe>/``: a stopped benchmark
resumes where it stopped (launch.py resumes a run; a finished one is skipped). Site B
takes part in no choice: the runs see site A only, and their checkpoints are chosen on
site A's validation patients.

Scored (``--masks``, all 15 combinations by default):
- ``validation``: site A's validation patients of each run's split, which a choice between
  recipes may look at;
- ``tuneA``, ``tuneV`` and ``tuneC``: ``--patients`` new patients (phantom seed
  ``--tune-seed``) imaged at site A, with version 3's scanners (one per patient,
  ``urn_jax.data.scanners.varied``) and at site C (outside version 3's ranges): the tuning
  sets, on which a choice between recipes may look at more patients than the split's
  validation ones and at scanners the runs never saw (other than site B's);
- ``A`` and ``B``: ``--patients`` new patients (phantom seed ``--seed``, which no run trains
  or validates on) imaged at site A and at site B (``urn_jax.data.scanners.SITES``):
  the same anatomy and lesions, scanned twice, so that A against B is paired by patient.
  The test sets.
A recipe that changes only the pre-training (``clean``, ``strong-clean``) trains no Baseline
+ MD of its own and is compared with the recipe whose segmentation it shares; one that
changes only the inference (``adabn``: test-time adaptation of the batch norms) trains
nothing and scores the runs of the recipe it is compared with; one that starts from another
recipe's pre-training (``finetune``: the encoders fine-tuned, not frozen; ``augment-rerun``)
trains none of its own, and its URN chain is compared with its reference's, frozen or not.
Each prediction goes back onto the original grid (background outside the given modalities'
brain) and is scored by Dice per region (WT, TC, ET). Printed per recipe, model and set:
the mean over the 15 combinations and the score with all four modalities; then each
recipe against ``plain`` (the same model without augmentation or variety), paired by
patient and combination. ``--out`` writes scores.csv and run.json, adding to what an
earlier run wrote there (``write_results``: recipes and ``--sets`` can be scored as they
finish); ``--report`` prints the tables again from them, and curves.json keeps each run's
curve summary and training speed (``--curves-only`` writes just that).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from urn_jax.console import progress
from urn_jax.data.augment import AugmentSettings
from urn_jax.data.datasets import (DataSettings, cached_cases, data_from_config,
                                   preprocess_settings)
from urn_jax.evaluation.evaluate import Patient, parse_masks
from urn_jax.evaluation.tables import write_rows
from urn_jax.inference.predict import load_model
from urn_jax.labels import REGIONS, region_mask
from urn_jax.metrics import dice
from urn_jax.modalities import mask_key
from urn_jax.training.metrics_log import curve_summary, read_metrics


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How the runs of a recipe differ from the ``small`` defaults. ``pretrain_augment``:
  the pre-training's augmentation where it differs from the segmentation's (``augment``);
  ``models``: the runs it trains (one that only changes the pre-training leaves Baseline +
  MD as its ``reference`` recipe trained it, and is compared with that recipe);
  ``runs_of``: a recipe whose runs this one scores, training none of its own; ``adapt``:
  each prediction after test-time adaptation of the batch norms (``urn_jax.inference.adapt``);
  ``pretrain_of``: a recipe whose pre-training this one's URN segmentation starts from,
  training none of its own; ``pretrain_steps``: the pre-training's length where it is not
  the ``small`` recipe's (its schedule stretched to it). A recipe's URN segmentation
  (frozen or fine-tuned encoders) is compared with its reference's, whichever that one is
  (``role``)."""
  augment: AugmentSettings = AugmentSettings()
  phantom_version: int = 2
  pretrain_augment: AugmentSettings | None = None
  models: tuple[str, ...] = ("baseline_md", "urn_md_pretrained")
  reference: str = "plain"
  runs_of: str | None = None
  adapt: bool = False
  pretrain_of: str | None = None
  pretrain_steps: int | None = None

  def overrides(self, pretraining: bool = False) -> list[str]:
    settings = self.pretrain_augment if pretraining and self.pretrain_augment else self.augment
    flags = [f"--config.data.phantom_version={self.phantom_version}"]
    if pretraining and self.pretrain_steps:
      flags.append(f"--config.train.max_steps={self.pretrain_steps}")
    for field in dataclasses.fields(AugmentSettings):
      value = getattr(settings, field.name)
      flags.append(f"--config.augment.{field.name}=" +
                   (f"({','.join(str(v) for v in value)})" if isinstance(value, tuple)
                    else str(value)))
    return flags


# ``typical`` with every intensity transform more likely and wider: at least twice the
# probability (gamma 0.3 to 0.5), noise, bias, low resolution and gamma ranges about twice
# as wide, contrast down to 0.65. The one stronger candidate, fixed before any model with
# it was trained or scored.
STRONG = dataclasses.replace(
    AugmentSettings.typical(), p_bias=0.3, bias_strength=(0.0, 0.6), p_noise=0.3,
    noise_std=(0.0, 0.2), p_blur=0.4, blur_sigma=(0.5, 1.5), p_brightness=0.3,
    p_contrast=0.3, contrast_factor=(0.65, 1.35), p_lowres=0.5, lowres_factor=(1.0, 3.0),
    p_gamma=0.5, gamma=(0.5, 2.0))
RECIPES = {
    "plain": Recipe(),
    "augment": Recipe(augment=AugmentSettings.typical()),
    "strong": Recipe(augment=STRONG),
    "variety": Recipe(phantom_version=3),
    # The README's chain on version 3's scanners, augmented as `augment` (its URN chain).
    "variety+augment": Recipe(augment=AugmentSettings.typical(), phantom_version=3,
                              models=("urn_md_pretrained",), reference="augment-urn"),
    # `augment`'s URN chain trained once more, to be scored on `tuneC` as the reference.
    "augment-urn": Recipe(augment=AugmentSettings.typical(), models=("urn_md_pretrained",),
                          reference="augment"),
    # The pre-training restores clean synthesis targets from intensity-augmented inputs
    # (AugmentSettings.clean_targets); the segmentation augments as `augment` does.
    "clean": Recipe(augment=AugmentSettings.typical(), models=("urn_md_pretrained",),
                    pretrain_augment=dataclasses.replace(AugmentSettings.typical(),
                                                         clean_targets=True),
                    reference="augment"),
    "strong-clean": Recipe(augment=AugmentSettings.typical(), models=("urn_md_pretrained",),
                           pretrain_augment=dataclasses.replace(STRONG, clean_targets=True),
                           reference="augment"),
    # `augment`'s runs, each patient and combination predicted after test-time adaptation
    # of every batch norm to that patient (AdaBN).
    "adabn": Recipe(augment=AugmentSettings.typical(), runs_of="augment", adapt=True,
                    reference="augment"),
    # `augment`'s runs trained again on its pre-training as `<workdir>/augment` holds it now:
    # `finetune`'s frozen twin on the very same encoders (Baseline + MD added for plan 6).
    "augment-rerun": Recipe(augment=AugmentSettings.typical(), pretrain_of="augment",
                            reference="augment"),
    # `augment`'s pre-training, then URN + MD with its encoders fine-tuned, not frozen.
    "finetune": Recipe(augment=AugmentSettings.typical(), models=("urn_md_finetuned",),
                       pretrain_of="augment", reference="augment-rerun"),
    # `augment` with MONAI's histogram shift (a random monotone remap) on a third of the
    # slices, in pre-training and segmentation alike: the probability of gamma, the other.
    "histogram": Recipe(augment=dataclasses.replace(AugmentSettings.typical(), p_histogram=0.3),
                        reference="augment-rerun"),
    # `augment` with its pre-training 2.5 times as long (10000 steps, the study's length),
    # the warm-up and cosine decay stretched to that length.
    "longpre": Recipe(augment=AugmentSettings.typical(), models=("urn_md_pretrained",),
                      pretrain_steps=10_000, reference="augment-rerun"),
}
MODELS = ("baseline_md", "urn_md_pretrained", "urn_md_finetuned")
ROOT = Path(__file__).resolve().parent.parent
# The sets of new patients: name -> (phantom version, site, which seed: the test seed
# ``--seed`` or the tuning seed ``--tune-seed``).
NEW_SETS = {"tuneA": (2, "a", "tune"), "tuneV": (3, "a", "tune"), "tuneC": (2, "c", "tune"),
            "A": (2, "a", "test"), "B": (2, "b", "test")}
SETS = ("validation", *NEW_SETS)


def role(model: str) -> str:
  """What a run stands for in a comparison: ``"urn"`` for the README's chain, whether its
  pre-trained encoders are frozen or fine-tuned, else the model itself."""
  return "urn" if model.startswith("urn_md") else model


def _pretraining_of(name: str) -> str:
  """The recipe whose pre-training the runs of recipe ``name`` start from."""
  return RECIPES[name].pretrain_of or name


def _launch(config: str, workdir: Path, flags: list[str]) -> None:
  command = [sys.executable, str(ROOT / "launch.py"), f"--config={config}",
             f"--workdir={workdir}", *flags]
  print("$ " + " ".join(command), flush=True)
  subprocess.run(command, cwd=ROOT, check=True)


def train(workdir: Path, recipes) -> None:
  """Trains (or resumes, or skips when done) every run of ``recipes``."""
  for name in recipes:
    recipe, root = RECIPES[name], workdir / name
    if recipe.runs_of:
      continue
    flags = recipe.overrides()
    pretrained = workdir / _pretraining_of(name) / "pretrain"
    _launch(str(ROOT / "configs/pretrain.py") + ":small", pretrained,
            RECIPES[_pretraining_of(name)].overrides(pretraining=True))
    for model in recipe.models:
      urn = role(model) == "urn"
      _launch(str(ROOT / "configs/segment.py") + f":{model},small", root / model,
              flags + ([f"--config.pretrained_workdir={pretrained}"] if urn else []))


def _new_cases(model, version: int, site: str, patients: int, seed: int) -> list[Path]:
  """The cached cases of ``patients`` new patients (phantom ``seed`` and ``version``)
  imaged at ``site``, pre-processed as ``model`` needs."""
  settings = DataSettings(cache_dir=model.config.data.cache_dir, use_hcp=False,
                          preprocess=preprocess_settings(model.config), workers=2,
                          phantom_brats=patients, phantom_hcp=0, phantom_seed=seed,
                          phantom_version=version, phantom_site=site)
  return sorted(cached_cases(settings)["brats"].values())


def score(workdir: Path, recipes, sets, masks: str, patients: int, seeds: dict) -> list[dict]:
  """A row per recipe, model, set (of ``sets``), patient and combination: Dice (%) per
  region. ``seeds``: the phantom seed of the ``"test"`` and the ``"tune"`` sets."""
  rows = []
  for recipe in recipes:
    for name in RECIPES[recipe].models:
      run = workdir / (RECIPES[recipe].runs_of or recipe) / name
      model = load_model(run)
      chosen = {}
      for set_name in sets:
        if set_name == "validation":
          chosen[set_name] = data_from_config(model.config, run, use_hcp=False)["brats"][
              "validation"]
        else:
          version, site, seed = NEW_SETS[set_name]
          chosen[set_name] = _new_cases(model, version, site, patients, seeds[seed])
      for set_name, cases in chosen.items():
        for case_dir in progress(cases, desc=f"{recipe} {name} {set_name}", unit="patient"):
          patient = Patient.read(Path(case_dir))
          for mask in patient.combinations(parse_masks(masks)):
            predicted = patient.predicted(model, mask, 64, adapt=RECIPES[recipe].adapt)
            rows.append({"recipe": recipe, "model": name, "set": set_name,
                         "case_id": patient.meta.case_id, "mask": mask_key(mask),
                         **{r: 100 * dice(region_mask(predicted, r),
                                          region_mask(patient.classes, r)) for r in REGIONS}})
  return rows


def _mean(rows, region, **where) -> float:
  """The mean of ``region`` over the rows that match ``where``; NaN when none do."""
  values = [r[region] for r in rows if all(r[k] == v for k, v in where.items())]
  return float(np.mean(values)) if values else float("nan")


def _scored(rows, recipe, set_name, model=None) -> bool:
  return any(r["recipe"] == recipe and r["set"] == set_name and model in (None, r["model"])
             for r in rows)


def _header(sets) -> list[str]:
  return ["| recipe | model | " + " | ".join(f"{s} {r}" for s in sets for r in REGIONS) + " |",
          "|---|---|" + "---|" * (len(sets) * len(REGIONS))]


def _paired_cells(rows, recipe, reference, model, sets, all_four) -> list[str]:
  """Per set and region: the mean paired difference of ``recipe``'s ``model`` against
  ``reference``'s run of the same ``role`` (pairs up / down), then over the patients with
  all four modalities."""
  cells = []
  theirs_model = next((r["model"] for r in rows if r["recipe"] == reference
                       and role(r["model"]) == role(model)), None)
  for s in sets:
    if not (_scored(rows, recipe, s, model) and _scored(rows, reference, s, theirs_model)):
      cells += [""] * len(REGIONS)
      continue
    pick = lambda name, m: {(r["case_id"], r["mask"]): r for r in rows
                            if (r["recipe"], r["model"], r["set"]) == (name, m, s)}
    mine, theirs = pick(recipe, model), pick(reference, theirs_model)
    for region in REGIONS:
      d = np.array([mine[k][region] - theirs[k][region] for k in mine if k in theirs])
      four = np.array([mine[k][region] - theirs[k][region] for k in mine
                       if k in theirs and k[1] == all_four])
      cells.append(f"{d.mean():+.1f} ({np.sum(d > 0)} / {np.sum(d < 0)}), {four.mean():+.1f}")
  return cells


def report(rows) -> list[str]:
  """The tables (module docstring) as Markdown lines: a recipe is compared with its
  ``reference`` (``plain``, or the recipe whose Baseline + MD it shares)."""
  recipes = list(dict.fromkeys(r["recipe"] for r in rows))
  sets = [s for s in SETS if any(r["set"] == s for r in rows)]
  all_four = "1111"
  models = lambda recipe: [m for m in MODELS if any(
      (r["recipe"], r["model"]) == (recipe, m) for r in rows)]
  lines = ["Dice (%), mean over the combinations / with all four modalities", "",
           *_header(sets)]
  for recipe in recipes:
    for model in models(recipe):
      cells = [f"{_mean(rows, r, recipe=recipe, model=model, set=s):.1f} / "
               f"{_mean(rows, r, recipe=recipe, model=model, set=s, mask=all_four):.1f}"
               if _scored(rows, recipe, s, model) else "" for s in sets for r in REGIONS]
      lines.append(f"| {recipe} | {model} | " + " | ".join(cells) + " |")
  for reference in dict.fromkeys(RECIPES[r].reference for r in recipes):
    compared = [r for r in recipes if r != reference and RECIPES[r].reference == reference]
    if reference not in recipes or not compared:
      continue
    lines += ["", f"Against `{reference}`, the same model: mean paired difference in points "
              "over the (patient, combination) pairs (pairs up / down), then over the "
              "patients with all four modalities", "", *_header(sets)]
    for recipe in compared:
      for model in models(recipe):
        cells = _paired_cells(rows, recipe, reference, model, sets, all_four)
        lines.append(f"| {recipe} | {model} | " + " | ".join(cells) + " |")
  return lines


def write_results(folder, rows, run: dict) -> list[dict]:
  """Adds ``rows`` to ``<folder>/scores.csv`` (Dice to 0.001 points), replacing the rows of
  the (recipe, set) pairs they score and keeping the others', and records ``run`` (how they
  were made) under each of those recipes and sets in ``<folder>/run.json``: recipes and
  sets can be scored one at a time as they finish. Small enough to commit, enough to
  recompute every table. Returns every row the folder now holds."""
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  scored = {(r["recipe"], r["set"]) for r in rows}
  kept = [r for r in read_results(folder) if (r["recipe"], r["set"]) not in scored] if (
      folder / "scores.csv").exists() else []
  runs = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
  for recipe, set_name in sorted(scored):
    runs.setdefault(recipe, {})[set_name] = run
  order = list(RECIPES)
  every = sorted(kept + rows, key=lambda r: (order.index(r["recipe"]), MODELS.index(r["model"]),
                                            SETS.index(r["set"])))  # stable: patients keep order
  write_rows(folder / "scores.csv", [{k: f"{v:.3f}" if isinstance(v, float) else v
                                      for k, v in r.items()} for r in every])
  (folder / "run.json").write_text(json.dumps(runs, indent=1) + "\n")
  return every


def write_curves(folder, workdir: Path, recipes) -> None:
  """``<folder>/curves.json``: each run's ``curve_summary`` (best and final validation loss,
  the best's step, the gain of the last fifth, the median logged slices per second), added
  to what the folder holds for other recipes: the runs' convergence and speed, kept beside
  their scores."""
  path = Path(folder) / "curves.json"
  curves = json.loads(path.read_text()) if path.exists() else {}
  for recipe in (r for r in recipes if not RECIPES[r].runs_of):
    for name in ("pretrain",) + RECIPES[recipe].models:
      # a recipe's pre-training is the one its runs started from, its own or another's
      owner = _pretraining_of(recipe) if name == "pretrain" else recipe
      metrics = workdir / owner / name / "metrics.jsonl"
      summary = curve_summary(metrics)
      rates = [row["slices_per_second"] for row in read_metrics(metrics)
               if "slices_per_second" in row]
      curves[f"{recipe}/{name}"] = {**summary, "slices_per_second": float(np.median(rates))}
  Path(folder).mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(curves, indent=1, sort_keys=True) + "\n")


def read_results(folder) -> list[dict]:
  with open(Path(folder) / "scores.csv") as stream:
    return [{k: float(v) if k in REGIONS else v for k, v in row.items()}
            for row in csv.DictReader(stream)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", help="folder of the runs, one subfolder per recipe")
  parser.add_argument("--recipes", default=",".join(RECIPES),
                      help=f"comma-separated, of {', '.join(RECIPES)}")
  parser.add_argument("--no-train", dest="train", action="store_false",
                      help="score the runs as they are, training none")
  parser.add_argument("--masks", default="all", help="combinations scored (default all 15)")
  parser.add_argument("--patients", type=int, default=24,
                      help="new patients scored at each site (default 24)")
  parser.add_argument("--seed", type=int, default=100,
                      help="the phantom seed of the test patients, sets A and B (default 100)")
  parser.add_argument("--tune-seed", type=int, default=200,
                      help="the phantom seed of the tuning sets tuneA, tuneV, tuneC "
                           "(default 200)")
  parser.add_argument("--sets", default=",".join(SETS),
                      help=f"comma-separated, of {', '.join(SETS)} (default all)")
  parser.add_argument("--out", help="folder for scores.csv and run.json")
  parser.add_argument("--report", help="a folder --out wrote: print its tables again")
  parser.add_argument("--curves-only", action="store_true",
                      help="only write the runs' curve summaries into --out (curves.json)")
  args = parser.parse_args(argv)
  if args.report:
    print("\n".join(report(read_results(args.report))))
    return
  if not args.workdir:
    parser.error("--workdir is required (or --report FOLDER)")
  recipes = [r for r in args.recipes.split(",") if r]
  unknown = [r for r in recipes if r not in RECIPES]
  if unknown:
    parser.error(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
  sets = [s for s in args.sets.split(",") if s]
  if not sets or any(s not in SETS for s in sets):
    parser.error(f"--sets must name some of {', '.join(SETS)}, got {args.sets!r}")
  if args.train and not args.curves_only:
    train(Path(args.workdir), recipes)
  if args.out:
    write_curves(args.out, Path(args.workdir), recipes)
  if args.curves_only:
    return
  seeds = {"test": args.seed, "tune": args.tune_seed}
  rows = score(Path(args.workdir), recipes, sets, args.masks, args.patients, seeds)
  if args.out:
    rows = write_results(args.out, rows, {"workdir": args.workdir, "masks": args.masks,
                                          "patients": args.patients, "seeds": seeds})
  print("\n".join(report(rows)))


if __name__ == "__main__":
  main()
