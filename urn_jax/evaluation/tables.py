"""The paper's tables from evaluated runs (``urn_jax.evaluation.runs``), and the per-case CSVs.

- ``table1.{md,csv}``: Dice (%) of ET, WT and TC per combination of modalities (rows in the
  paper's order, filled circle = available) and scenario, with a mean row; ``table1_hd95``
  the same for HD95 (mm), and ``table1_lesion_dice`` / ``table1_lesion_hd95`` for the BraTS
  2023 lesion-wise metrics when the evaluation computed them. Runs with the same name
  (seeds) are averaged: a cell reads ``mean ± half the range over runs``, so with two seeds
  each seed's value is one of the two ends; the CSVs have the spread in its own column.
- ``table2.{md,csv}``: PSNR (dB) of each synthesized (missing) modality per combination and
  pre-training model; "-" where the modality was an input (the paper's layout).
- ``paper.md``: the scenarios and models the paper has, next to its Tables 1 and 2
  (``urn_jax.evaluation.paper_numbers``): means over the same combinations, and Spearman's
  rank correlation over them.
- ``write_rows``: a CSV of dict rows (``cases.csv``, ``psnr_cases.csv``, ...).

Under each table's title: the test patients it scores, those without a region (their Dice
for it is 100 or 0), and the runs whose curves have not flattened (``Counted.notes``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from scipy import stats

from urn_jax import scenarios
from urn_jax.evaluation import paper_numbers
from urn_jax.evaluation.runs import aggregate
from urn_jax.evaluation.runs import names as run_names
from urn_jax.files import write_text_atomically
from urn_jax.labels import TABLE_REGIONS
from urn_jax.modalities import (MODALITIES, MODALITY_LABELS, availability_masks, mask_key,
                                mask_name, mask_symbols)

SYMBOL_COLUMNS = ("F", "T1", "T1c", "T2")


def _cell(entry, runs: int, digits=1) -> str:
  if entry is None:
    return "-"
  mean, spread, _ = entry
  return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if runs > 1 else "")


def _write_table(path: Path, title: str, header, rows, csv_header, csv_rows, note=""):
  lines = [f"# {title}", ""] + ([note, ""] if note else [])
  lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  write_text_atomically(path.with_suffix(".md"), "\n".join(lines) + "\n")
  return [path.with_suffix(".md"), _write_csv(path.with_suffix(".csv"), csv_header, csv_rows)]


def _write_csv(path: Path, header, rows) -> Path:
  """A CSV file of ``header`` and ``rows`` (sequences), written by way of a temporary."""
  stream = io.StringIO(newline="")
  writer = csv.writer(stream)
  writer.writerow(header)
  writer.writerows(rows)
  return write_text_atomically(path, stream.getvalue())


def _row_keys(runs, skip_full=False):
  """The rows of Table 1 that were evaluated (all 15 unless ``evaluate.masks`` chose some),
  in the paper's order, and the mean."""
  evaluated = {row["mask"] for run in runs for row in run["rows"]}
  keys = [mask_key(m) for m in availability_masks()]
  return [k for k in (keys[1:] if skip_full else keys) if k in evaluated] + ["mean"]


def symbols(key):
  if key == "mean":
    return ["**mean**", "", "", ""]
  return mask_symbols([c == "1" for c in key]).split()


def _cases_note(cases, tumours=None) -> str:
  """The line under a table's title that names the patients it scores; with ``tumours``
  (case -> region -> cm^3), also those without enhancing tumour."""
  if not cases:
    return ""
  note = f"Test patients ({len(cases)}), never used for training or selection: " + ", ".join(
      cases)
  extra = empty_regions_note(cases, tumours)
  return note + ("." + extra if extra else "")


def _joined(note: str, sentence: str) -> str:
  """``note`` followed by ``sentence`` (which starts with a space), a full stop between."""
  if not sentence:
    return note
  return (note if not note or note.endswith(".") else note + ".") + sentence


def parameters_note(runs, job: str) -> str:
  """A sentence giving each scenario's parameter count (its runs' ``parameters``; frozen
  encoders included), so that a comparison can be read against the networks' sizes; ""
  when no run of ``job`` records one."""
  counts = {}
  for run in runs:
    if run["job"] == job and run.get("parameters"):
      counts.setdefault(run["name"], set()).add(int(run["parameters"]))
  if not counts:
    return ""
  return " Parameters: " + "; ".join(
      f"{name} {' or '.join(f'{c:,}' for c in sorted(values))}"
      for name, values in counts.items()) + "."


def empty_regions_note(cases, tumours) -> str:
  """A sentence naming the patients of ``cases`` with an empty region, if any: their Dice
  for it is 100 or 0 (BraTS), which moves a mean over the patients in steps of 100/n."""
  notes = []
  for region in TABLE_REGIONS:
    empty = [c for c in cases if tumours and c in tumours and tumours[c][region] == 0]
    if empty:
      notes.append(f" Without {region} ({len(empty)} of {len(cases)}): {', '.join(empty)}; "
                   f"their {region} Dice is 100 where a model predicts no {region} voxel and "
                   f"0 where it predicts any, so each moves a mean over the patients by "
                   f"{100 / len(cases):.1f} points.")
  return "".join(notes)


def segmentation_table(runs, out_dir, metric="dice", scale=100.0, title=None, cases=(),
                       tumours=None, runs_note=""):
  """Table 1 for ``metric`` (``dice`` or ``lesion_dice`` in %, or ``hd95`` or
  ``lesion_hd95`` in mm with ``scale=1``);
  ``runs_note``: a sentence naming its runs whose curves have not flattened."""
  names = run_names(runs, "segment")
  counts = {n: sum(r["name"] == n for r in runs) for n in names}
  cells = {(n, region): aggregate(runs, n, lambda row, r=region: scale * row[f"{r}/{metric}"])
           for n in names for region in TABLE_REGIONS}
  header = list(SYMBOL_COLUMNS) + [f"{n}: {r}" for n in names for r in TABLE_REGIONS]
  csv_header = ["mask", "combination"] + [f"{n}: {r}{suffix}" for n in names
                                          for r in TABLE_REGIONS for suffix in ("", " spread")]
  rows, csv_rows = [], []
  for key in _row_keys(runs):
    entries = [cells[n, region].get(key) for n in names for region in TABLE_REGIONS]
    runs_per_entry = [counts[n] for n in names for region in TABLE_REGIONS]
    rows.append(symbols(key) + [_cell(e, c) for e, c in zip(entries, runs_per_entry)])
    csv_rows.append([key, "mean" if key == "mean" else mask_name([c == "1" for c in key])]
                    + [v for e in entries for v in ((e[0], e[1]) if e else ("", ""))])
  unit = "%" if metric.endswith("dice") else "mm"
  label = {"dice": "Dice", "hd95": "HD95", "lesion_dice": "lesion-wise Dice (BraTS 2023)",
           "lesion_hd95": "lesion-wise HD95 (BraTS 2023)"}.get(metric, metric)
  title = title or (f"Table 1: {label} ({unit}) per combination of modalities, "
                    "test patients, mean ± half the range over runs")
  stem = "table1" if metric == "dice" else f"table1_{metric}"
  return _write_table(Path(out_dir) / stem, title, header, rows, csv_header, csv_rows,
                      _joined(_joined(_cases_note(cases, tumours), runs_note),
                              parameters_note(runs, "segment")))


def psnr_table(runs, out_dir, cases=(), runs_note=""):
  """Table 2: PSNR of the synthesized (not given) modalities; ``runs_note``: a sentence
  naming its runs whose curves have not flattened."""
  names = run_names(runs, "pretrain")
  counts = {n: sum(r["name"] == n for r in runs) for n in names}
  cells = {(n, j): aggregate(runs, n, lambda row: row["psnr"],
                              lambda row, m=m: row["modality"] == m and not row["given"])
           for n in names for j, m in enumerate(MODALITIES)}
  header = list(SYMBOL_COLUMNS) + [f"{n}: {MODALITY_LABELS[m]}" for n in names
                                   for m in MODALITIES]
  csv_header = ["mask", "combination"] + [f"{n}: {m}{s}" for n in names for m in MODALITIES
                                          for s in ("", " spread")]
  rows, csv_rows = [], []
  for key in _row_keys(runs, skip_full=True):
    entries = [None if key != "mean" and key[j] == "1" else cells[n, j].get(key)
               for n in names for j in range(len(MODALITIES))]
    rows.append(symbols(key) + [_cell(e, counts[n]) for e, n in
                                 zip(entries, [n for n in names for _ in MODALITIES])])
    csv_rows.append([key, "mean" if key == "mean" else mask_name([c == "1" for c in key])]
                    + [v for e in entries for v in ((e[0], e[1]) if e else ("", ""))])
  return _write_table(Path(out_dir) / "table2", "Table 2: PSNR (dB) of synthesized BraTS "
                      "modalities (\"-\": an input), test patients, mean ± half the range "
                      "over runs", header, rows, csv_header, csv_rows,
                      _joined(_joined(_cases_note(cases), runs_note),
                              parameters_note(runs, "pretrain")))


def _spearman(a, b) -> str:
  """Spearman's rank correlation of two rows of numbers; "-" where it is undefined (fewer
  than 3, or either constant)."""
  if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return "-"
  return f"{stats.spearmanr(a, b).statistic:+.2f}"


def paper_comparison(runs, out_dir) -> list:
  """``paper.md``: each of the paper's Table 1 scenarios and Table 2 models that ``runs``
  has (by name), next to the paper's numbers (``paper_numbers``): the mean over the
  combinations both have, and Spearman's rank correlation over those combinations, which
  asks whether the same combinations are hard here as in the paper, whatever the level."""
  lines = []
  names = run_names(runs, "segment")
  for name in (n for n in scenarios.TABLE1_SCENARIOS if n in names):
    for region in TABLE_REGIONS:
      paper = paper_numbers.TABLE1[name, region]
      ours = aggregate(runs, name, lambda row, r=region: 100 * row[f"{r}/dice"])
      keys = [k for k in paper if k in ours]
      if keys:
        a, b = [paper[k] for k in keys], [ours[k][0] for k in keys]
        lines.append(f"| Table 1, Dice (%) | {name} | {region} | {len(keys)} | "
                     f"{np.mean(a):.1f} | {np.mean(b):.1f} | {_spearman(a, b)} |")
  names = run_names(runs, "pretrain")
  for name in (n for n in scenarios.TABLE2_MODELS if n in names):
    for modality in MODALITIES:
      paper = paper_numbers.TABLE2[name, modality]
      ours = aggregate(runs, name, lambda row: row["psnr"],
                        lambda row, m=modality: row["modality"] == m and not row["given"])
      keys = [k for k in paper if k in ours]
      if keys:
        a, b = [paper[k] for k in keys], [ours[k][0] for k in keys]
        lines.append(f"| Table 2, PSNR (dB) | {name} | {MODALITY_LABELS[modality]} | "
                     f"{len(keys)} | {np.mean(a):.1f} | {np.mean(b):.1f} | "
                     f"{_spearman(a, b)} |")
  if not lines:
    return []
  path = Path(out_dir) / "paper.md"
  write_text_atomically(
      path,
      "# Next to the paper's Tables 1 and 2\n\nMeans over the combinations that both the paper"
      " and these runs have (the paper's Table 1 lacks the baseline's T1-only row); "
      "Spearman's rho ranks the combinations by each and asks whether the same ones are "
      "hard here as in the paper. The paper scored BraTS 2018 at 1 mm with its full-size "
      "networks: levels compare only where the data and sizes do."
      + parameters_note(runs, "segment") + parameters_note(runs, "pretrain") + "\n\n"
      "| table | model | region or modality | combinations | paper | here | Spearman rho |\n"
      "|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")
  return [path]


def write_rows(path: Path, rows):
  """``rows`` (dicts) as a CSV file, with the columns in the order they first appear."""
  keys = []
  for row in rows:
    keys += [k for k in row if k not in keys]
  return _write_csv(path, keys, ([row.get(k, "") for k in keys] for row in rows))
