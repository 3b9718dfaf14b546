"""The report of an evaluation (``urn_jax.evaluation.evaluate``): every table, figure and CSV
the evaluated runs allow, written into one folder.

Every run counts; what each curve says is read first, once
(``urn_jax.evaluation.runs.count_runs``); then each writer makes its part:

- ``training.md`` and ``curves_<model>.png``: each run's training curve and whether it
  flattened (``urn_jax.evaluation.curves``);
- ``table1`` (Dice), ``table1_hd95``, the lesion-wise ``table1_lesion_dice`` and
  ``table1_lesion_hd95`` (when evaluated), ``table2`` (PSNR) and ``paper.md``, the paper's
  numbers beside ours (``urn_jax.evaluation.tables``);
- ``figure2.png`` to ``figure5.png`` (``urn_jax.evaluation.figures``);
- ``claims.md`` / ``claims.json``: the paper's claims as paired tests over patients and
  seeds, and ``verdicts.md``, their deciding rows in one table
  (``urn_jax.evaluation.claims_report``);
- ``cases.csv``, ``psnr_cases.csv``: one row per model, case and combination, every run's
  (those left out of the tables too); ``test_patients.csv``: each test patient's WT / TC /
  ET volume (cm^3); ``runs.json``: the runs, with all the claims' report reads of them
  but their rows (``urn_jax.evaluation.runs.run_records``), so that ``claims.md`` can be
  recomputed from the folder alone (``python -m urn_jax.evaluation.claims_report``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from urn_jax.evaluation.claims_report import claims_report
from urn_jax.evaluation.curves import training_report
from urn_jax.evaluation.figures import figure2, figure3, figure_synthesis
from urn_jax.evaluation.runs import aggregate, count_runs, first_runs, names, run_records
from urn_jax.evaluation.tables import (paper_comparison, psnr_table, segmentation_table,
                                       write_rows)
from urn_jax.files import write_text_atomically
from urn_jax.labels import TABLE_REGIONS
from urn_jax.scenarios import SYNTHESIS_FIGURES


def _segmentation_files(counted, out_dir: Path, figure_case, draw, cases, tumours):
  """Tables 1 (Dice, HD95), ``cases.csv``, the claims and Figures 2-3; returns ``(files,
  the mean Dice of each scenario)``."""
  shown, note = counted.shown, counted.notes("segment")
  files = segmentation_table(shown, out_dir, "dice", cases=cases, tumours=tumours,
                             runs_note=note)
  files += segmentation_table(shown, out_dir, "hd95", scale=1.0, cases=cases, runs_note=note)
  segmentation_rows = [row for r in shown if r["job"] == "segment" for row in r["rows"]]
  if segmentation_rows and all("WT/lesion_dice" in row for row in segmentation_rows):
    files += segmentation_table(shown, out_dir, "lesion_dice", cases=cases, runs_note=note)
    files += segmentation_table(shown, out_dir, "lesion_hd95", scale=1.0, cases=cases,
                                runs_note=note)
  files.append(write_rows(out_dir / "cases.csv", [row for r in counted.every
                                                  if r["job"] == "segment"
                                                  for row in r["rows"]]))
  means = {n: {region: aggregate(shown, n, lambda row, g=region: 100 * row[f"{g}/dice"])[
      "mean"][:2] for region in TABLE_REGIONS} for n in names(shown, "segment")}
  files += claims_report(counted, out_dir, cases, tumours)
  if draw:
    files.append(figure2(shown, out_dir / "figure2.png"))
    files.append(figure3(shown, figure_case, out_dir / "figure3.png"))
  return files, means


def _pretraining_files(counted, out_dir: Path, figure_case, draw, cases) -> list:
  """Table 2, ``psnr_cases.csv`` and the synthesis figures (4 and 5, by the pre-training's
  name; others are named after it)."""
  files = psnr_table(counted.shown, out_dir, cases, counted.notes("pretrain"))
  files.append(write_rows(out_dir / "psnr_cases.csv", [row for r in counted.every
                                                       if r["job"] == "pretrain"
                                                       for row in r["rows"]]))
  if draw:
    for run in first_runs(counted.shown, "pretrain"):
      number = SYNTHESIS_FIGURES.get(run["name"])
      stem = f"figure{number}" if number else "figure_synthesis_" + "".join(
          c if c.isalnum() else "_" for c in run["name"])
      files.append(figure_synthesis(run, figure_case, out_dir / f"{stem}.png"))
  return files


def write_report(runs, out_dir, figure_case, figures=True, cases=(), tumours=None,
                 diverged=()) -> dict:
  """Writes every table, figure and CSV the runs allow; returns the files and the mean rows
  of Table 1 (``dice_mean``). ``cases``: the test patients scored, named under each table's
  title; ``tumours``: their region volumes (cm^3; ``test_patients.csv``, and the patients
  without a region are named); ``diverged``: the runs that diverged (``name``, ``job``,
  ``seed``, ``workdir``, ``diverged``: why), named in the claims' report and runs.json."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  counted = dataclasses.replace(count_runs(runs), diverged=list(diverged))
  files, summary = training_report(counted.every, out_dir, figures), {}
  if tumours:
    files.append(write_rows(out_dir / "test_patients.csv", [
        {"case_id": c, **{f"{region} (cm3)": round(v, 3) for region, v in tumours[c].items()}}
        for c in cases if c in tumours]))
  if any(r["job"] == "segment" for r in runs):
    more, summary["dice_mean"] = _segmentation_files(counted, out_dir, figure_case, figures,
                                                     cases, tumours)
    files += more
  if any(r["job"] == "pretrain" for r in runs):
    files += _pretraining_files(counted, out_dir, figure_case, figures, cases)
  files += paper_comparison(counted.shown, out_dir)
  runs_file = out_dir / "runs.json"
  write_text_atomically(runs_file, json.dumps(run_records(runs + list(diverged)), indent=1))
  files.append(runs_file)
  summary["files"] = [str(f) for f in files if f]
  return summary
