"""Does the shipped recipe converge? Each preset's scenarios trained exactly as the configs
say, their validation curves, and the Dice of the held-out test patients.

    python benchmarks/convergence.py --preset small --workdir runs/convergence_small
    python benchmarks/convergence.py --preset default --workdir runs/convergence_default
    python benchmarks/convergence.py --preset small --workdir runs/too_low \
        --scenarios baseline_md --set train.learning_rate=1e-5   # a recipe that fails

For each scenario (``pretrain`` first when one restores pre-trained encoders:
``urn_md_pretrained``, ``urn_md_finetuned``), the job
``configs/<job>.py:<variant>,<preset>`` trains in ``<workdir>/<scenario>`` (an interrupted
run resumes; a finished one is only read). Then, per model: steps and epochs, training wall
time, final and best validation loss, and the relative improvement of the best validation
loss during the last 20 % of the steps (below a few per cent: the curve has flattened). For
segmentation models also the test patients' Dice of WT, TC and ET with all four modalities
(mean over patients; ``urn_jax.evaluation.evaluate`` on the original grid), the resolution ceiling
(the same Dice for the truth itself after a round trip through the preset's grid: what no
model at that resolution can beat), and the number of voxels that ``urn-segment``'s label
maps of those patients call tumour where every modality is 0 (must be 0). Writes
``convergence.json``, ``convergence.md`` (the table) and ``curves.png`` (training and
validation loss, validation Dice) into ``<workdir>``.
"""

from __future__ import annotations

import argparse
import ast
import csv
import importlib.util
import json
import sys
import time
from pathlib import Path


import ml_collections  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from urn_jax.evaluation.curves import plot_curves  # noqa: E402
from urn_jax.labels import REGIONS  # noqa: E402
from urn_jax.training.metrics_log import curve_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("pretrain", "baseline", "baseline_md", "urn_md", "urn_md_pretrained",
             "urn_md_finetuned")


def job_config(scenario: str, preset: str) -> ml_collections.ConfigDict:
  """The shipped config of a scenario at a preset, as ``launch.py`` would load it."""
  name = "pretrain" if scenario == "pretrain" else "segment"
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  arg = ",".join(p for p in ("" if scenario == "pretrain" else scenario, preset) if p)
  return module.get_config(arg)


def apply_overrides(config, overrides):
  """``["train.learning_rate=1e-5", ...]`` -> set on ``config`` (values as Python literals)."""
  for override in overrides:
    field, _, text = override.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = field.split(".")
    target = config
    for parent in parents:
      target = target[parent]
    if leaf not in target:
      raise SystemExit(f"--set {override}: the config has no field {field!r}")
    target[leaf] = value


def test_dice(workdir: Path, out: Path) -> dict:
  """Mean Dice (%) over the test patients with all four modalities, per region."""
  from urn_jax.evaluation.evaluate import evaluate_models
  from urn_jax.inference.predict import CHUNK
  settings = ml_collections.ConfigDict(dict(chunk=CHUNK, max_cases=0, figure_case="",
                                            figures=False, masks="1111"))
  evaluate_models([workdir], out, settings)
  with (out / "cases.csv").open() as f:
    rows = list(csv.DictReader(f))
  result = {f"test_dice_{r}": 100 * float(np.mean([float(row[f"{r}/dice"]) for row in rows]))
            for r in REGIONS}
  result["test_patients"] = sorted(row["case_id"] for row in rows)
  return result


def tumour_outside_brain(workdir: Path, out: Path) -> int:
  """Tumour voxels in ``urn-segment``'s label maps of the test patients (all four
  modalities) where every input modality is 0. Counted from the files themselves, not with
  ``predict.given_brain``, so that a fault in that mask would show here."""
  from urn_jax.data.datasets import held_out_patients
  from urn_jax.data.meta import CaseMeta
  from urn_jax.inference.segment import cases_from_arguments, segment_cases
  from urn_jax.job_config import read_config
  folders = sorted({Path(CaseMeta.read(c).reference_path).parent
                    for c in held_out_patients(read_config(workdir), workdir)})
  cases = [case for folder in folders for case in cases_from_arguments(str(folder))[0]]
  outcomes = segment_cases(workdir, cases, out, overwrite=True, progress=False)
  problems = [o.message for o in outcomes if o.status != "segmented"]
  if problems:
    raise RuntimeError(f"urn-segment failed: {problems}")
  count = 0
  for case in cases:
    labels = np.asarray(nib.load(out / f"{case.case_id}.nii.gz").dataobj)
    empty = np.logical_and.reduce([np.asarray(nib.load(p).dataobj) == 0
                                   for p in case.paths.values()])
    count += int(np.count_nonzero(labels[empty]))
  return count


def resolution_ceiling(workdir: Path) -> dict:
  """Mean Dice (%) over the test patients of the truth itself after a round trip through
  the preset's grid: the label as pre-processing resamples it, one-hot, mapped back to the
  original grid exactly as a prediction is. No model at this resolution can score higher."""
  from urn_jax.data.datasets import held_out_patients
  from urn_jax.data.meta import CaseMeta
  from urn_jax.evaluation.evaluate import original_label
  from urn_jax.inference.predict import to_original_classes
  from urn_jax.job_config import read_config
  from urn_jax.metrics import segmentation_metrics
  rows = []
  for case in held_out_patients(read_config(workdir), workdir):
    meta = CaseMeta.read(case)
    one_hot = np.eye(4, dtype=np.float32)[np.load(case / "label.npy")]
    truth, spacing = original_label(meta)
    rows.append(segmentation_metrics(to_original_classes(one_hot, meta), truth, spacing))
  return {f"ceiling_dice_{r}": 100 * float(np.mean([row[f"{r}/dice"] for row in rows]))
          for r in REGIONS}


def markdown(results: dict) -> str:
  lines = ["| model | steps (epochs) | wall (s) | final val. loss | best val. loss (step) | "
           "improvement, last 20 % | test Dice WT / TC / ET | resolution ceiling | tumour "
           "voxels outside brain |", "|---|---|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    dice, ceiling = (" / ".join(f"{r[f'{kind}_dice_{g}']:.1f}" for g in REGIONS)
                     if f"{kind}_dice_WT" in r else "-" for kind in ("test", "ceiling"))
    epochs = f" ({r['epochs']:.1f})" if r.get("epochs") is not None else ""
    wall = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else "-"
    lines.append(f"| {name} | {r['steps']}{epochs} | {wall} | {r['final_validation_loss']:.4f} "
                 f"| {r['best_validation_loss']:.4f} ({r['best_step']}) | "
                 f"{100 * r['improvement_last_20pct']:.1f} % | {dice} | {ceiling} | "
                 f"{r.get('tumour_outside_brain', '-')} |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="small", choices=["small", "default", "paper"])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--scenarios", default="baseline,baseline_md,urn_md,urn_md_pretrained",
                      help=f"comma-separated, of {', '.join(SCENARIOS)}")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="override a config field of every scenario, e.g. "
                      "train.learning_rate=1e-5")
  args = parser.parse_args(argv)
  preset = "" if args.preset == "default" else args.preset
  scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
  unknown = [s for s in scenarios if s not in SCENARIOS]
  if unknown:
    parser.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
  from urn_jax.job_config import pretrained_encoders
  from urn_jax.training.loop import train_and_evaluate
  needs_pretraining = [s for s in scenarios
                       if s != "pretrain" and pretrained_encoders(job_config(s, preset))]
  if needs_pretraining and "pretrain" not in scenarios:
    scenarios.insert(0, "pretrain")
  scenarios.sort(key=SCENARIOS.index)

  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  timings_file = workdir / "timings.json"
  timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
  results, workdirs = {}, {}
  for scenario in scenarios:
    config = job_config(scenario, preset)
    config.seed = args.seed
    apply_overrides(config, args.set)
    if scenario in needs_pretraining:
      config.pretrained_workdir = str(workdir / "pretrain")
    run_dir = workdirs[scenario] = workdir / scenario
    print(f"== {scenario} ({run_dir})", file=sys.stderr)
    start = time.perf_counter()
    if train_and_evaluate(config, run_dir):  # empty when it had already finished
      timings[scenario] = time.perf_counter() - start
      timings_file.write_text(json.dumps(timings, indent=1))
    results[scenario] = curve_summary(run_dir / "metrics.jsonl")
    results[scenario]["train_seconds"] = timings.get(scenario)
    if scenario != "pretrain":
      results[scenario].update(test_dice(run_dir, workdir / "evaluation" / scenario))
      results[scenario].update(resolution_ceiling(run_dir))
      results[scenario]["tumour_outside_brain"] = tumour_outside_brain(
          run_dir, workdir / "predictions" / scenario)
  plot_curves(workdirs, workdir / "curves.png")
  (workdir / "convergence.json").write_text(json.dumps(
      {"preset": args.preset, "overrides": args.set, "seed": args.seed, "results": results},
      indent=1))
  table = markdown(results)
  (workdir / "convergence.md").write_text(table)
  print(table)
  return results


if __name__ == "__main__":
  main()
