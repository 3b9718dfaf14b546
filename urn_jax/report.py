"""Tables and figures of the paper from evaluation results (``urn_jax.evaluate``).

- ``table1.{md,csv}``: Dice (%) of ET, WT and TC per combination of modalities (rows in the
  paper's order, filled circle = available) and scenario, with a mean row; ``table1_hd95``
  the same for HD95 (mm). Runs with the same name (seeds) are averaged: a cell reads
  ``mean ± half the range over runs``, so with two seeds each seed's value is one of the
  two ends; the CSVs have the spread in its own column.
- ``table2.{md,csv}``: PSNR (dB) of each synthesized (missing) modality per combination and
  pre-training model; "-" where the modality was an input (the paper's layout).
- ``figure2.png``: Dice per combination for each scenario (WT, TC, ET);
  ``figure3.png``: segmentations of one case for several input combinations over T1c;
  ``figure4.png`` / ``figure5.png``: synthesis from several input combinations by the URN
  pre-trained on BraTS alone / on BraTS + HCP, reconstructed inputs framed in green.
- ``cases.csv`` and ``psnr_cases.csv``: one row per model, case and combination;
  ``test_patients.csv``: each test patient's WT / TC / ET volume (cm^3).
- ``paper.md``: the scenarios and models the paper has, next to its Tables 1 and 2
  (``urn_jax.paper_numbers``): means over the same combinations, and Spearman's rank
  correlation over them.
- ``training.md`` and ``curves_<model>.png``: each run's final and best validation loss and
  whether its curve flattened (``urn_jax.curves``), and its curves, a column per seed.
- ``claims.md`` / ``claims.json``: the paper's claims as paired tests over patients and
  seeds (``urn_jax.claims``), on the runs whose curves flattened.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from urn_jax import claims as claims_module  # noqa: E402
from urn_jax import paper_numbers  # noqa: E402
from urn_jax.curves import FLAT, curve_summary, plot_curves  # noqa: E402
from urn_jax.data.render import COLOURS, intensity_window  # noqa: E402
from urn_jax.modalities import (  # noqa: E402
    FIGURE_MASKS, MODALITIES, MODALITY_LABELS, availability_masks, mask_key, mask_name,
    mask_symbols)

REGIONS = ("ET", "WT", "TC")  # the paper's column order
SYMBOL_COLUMNS = ("F", "T1", "T1c", "T2")


def _names(runs, job):
  names = []
  for run in runs:
    if run["job"] == job and run["name"] not in names:
      names.append(run["name"])
  return names


def _aggregate(runs, name, value, select=lambda row: True):
  """``{mask: (mean, spread, [per-run means])}`` of ``value(row)`` over the cases of each
  run called ``name``, then over those runs; ``"mean"`` the same over the combinations."""
  per_run = []
  for run in (r for r in runs if r["name"] == name):
    by_mask = {}
    for row in run["rows"]:
      if select(row):
        by_mask.setdefault(row["mask"], []).append(value(row))
    per_run.append({k: float(np.mean(v)) for k, v in by_mask.items()})
  out = {}
  for key in [mask_key(m) for m in availability_masks()]:
    values = [r[key] for r in per_run if key in r and np.isfinite(r[key])]
    if values:
      out[key] = values
  complete = [r for r in per_run if r]
  if complete:
    out["mean"] = [float(np.mean([r[k] for k in r])) for r in complete]
  return {k: (float(np.mean(v)), (max(v) - min(v)) / 2, v) for k, v in out.items()}


def _cell(entry, runs: int, digits=1) -> str:
  if entry is None:
    return "-"
  mean, spread, _ = entry
  return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if runs > 1 else "")


def _write_table(path: Path, title: str, header, rows, csv_header, csv_rows, note=""):
  lines = [f"# {title}", ""] + ([note, ""] if note else [])
  lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  path.with_suffix(".md").write_text("\n".join(lines) + "\n")
  with path.with_suffix(".csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(csv_header)
    writer.writerows(csv_rows)
  return [path.with_suffix(".md"), path.with_suffix(".csv")]


def _row_keys(runs, skip_full=False):
  """The rows of Table 1 that were evaluated (all 15 unless ``evaluate.masks`` chose some),
  in the paper's order, and the mean."""
  evaluated = {row["mask"] for run in runs for row in run["rows"]}
  keys = [mask_key(m) for m in availability_masks()]
  return [k for k in (keys[1:] if skip_full else keys) if k in evaluated] + ["mean"]


def _symbols(key):
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
  extra = _empty_regions_note(cases, tumours)
  return note + ("." + extra if extra else "")


def _joined(note: str, sentence: str) -> str:
  """``note`` followed by ``sentence`` (which starts with a space), a full stop between."""
  if not sentence:
    return note
  return (note if not note or note.endswith(".") else note + ".") + sentence


def _empty_regions_note(cases, tumours) -> str:
  """A sentence naming the patients of ``cases`` with an empty region, if any: their Dice
  for it is 100 or 0 (BraTS), which moves a mean over the patients in steps of 100/n."""
  notes = []
  for region in REGIONS:
    empty = [c for c in cases if tumours and c in tumours and tumours[c][region] == 0]
    if empty:
      notes.append(f" Without {region} ({len(empty)} of {len(cases)}): {', '.join(empty)}; "
                   f"their {region} Dice is 100 where a model predicts no {region} voxel and "
                   f"0 where it predicts any, so each moves a mean over the patients by "
                   f"{100 / len(cases):.1f} points.")
  return "".join(notes)


def segmentation_table(runs, out_dir, metric="dice", scale=100.0, title=None, cases=(),
                       tumours=None, left_out=""):
  """Table 1 for ``metric`` (``dice`` in %, or ``hd95`` in mm with ``scale=1``);
  ``left_out``: a sentence naming runs left out of it."""
  names = _names(runs, "segment")
  counts = {n: sum(r["name"] == n for r in runs) for n in names}
  cells = {(n, region): _aggregate(runs, n, lambda row, r=region: scale * row[f"{r}/{metric}"])
           for n in names for region in REGIONS}
  header = list(SYMBOL_COLUMNS) + [f"{n}: {region}" for n in names for region in REGIONS]
  csv_header = ["mask", "combination"] + [f"{n}: {region}{suffix}" for n in names
                                          for region in REGIONS for suffix in ("", " spread")]
  rows, csv_rows = [], []
  for key in _row_keys(runs):
    entries = [cells[n, region].get(key) for n in names for region in REGIONS]
    runs_per_entry = [counts[n] for n in names for region in REGIONS]
    rows.append(_symbols(key) + [_cell(e, c) for e, c in zip(entries, runs_per_entry)])
    csv_rows.append([key, "mean" if key == "mean" else mask_name([c == "1" for c in key])]
                    + [v for e in entries for v in ((e[0], e[1]) if e else ("", ""))])
  unit = "%" if metric == "dice" else "mm"
  label = {"dice": "Dice", "hd95": "HD95"}.get(metric, metric)
  title = title or (f"Table 1: {label} ({unit}) per combination of modalities, "
                    "test patients, mean ± half the range over runs")
  stem = "table1" if metric == "dice" else f"table1_{metric}"
  return _write_table(Path(out_dir) / stem, title, header, rows, csv_header, csv_rows,
                      _joined(_cases_note(cases, tumours), left_out))


def psnr_table(runs, out_dir, cases=(), left_out=""):
  """Table 2: PSNR of the synthesized (not given) modalities; ``left_out``: a sentence
  naming runs left out of it."""
  names = _names(runs, "pretrain")
  counts = {n: sum(r["name"] == n for r in runs) for n in names}
  cells = {(n, j): _aggregate(runs, n, lambda row: row["psnr"],
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
    rows.append(_symbols(key) + [_cell(e, counts[n]) for e, n in
                                 zip(entries, [n for n in names for _ in MODALITIES])])
    csv_rows.append([key, "mean" if key == "mean" else mask_name([c == "1" for c in key])]
                    + [v for e in entries for v in ((e[0], e[1]) if e else ("", ""))])
  return _write_table(Path(out_dir) / "table2", "Table 2: PSNR (dB) of synthesized BraTS "
                      "modalities (\"-\": an input), test patients, mean ± half the range "
                      "over runs", header, rows, csv_header, csv_rows,
                      _joined(_cases_note(cases), left_out))


def _spearman(a, b) -> str:
  """Spearman's rank correlation of two rows of numbers; "-" where it is undefined (fewer
  than 3, or either constant)."""
  if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return "-"
  return f"{stats.spearmanr(a, b).statistic:+.2f}"


def paper_comparison(runs, out_dir) -> list:
  """``paper.md``: each of the paper's Table 1 scenarios and Table 2 models that ``runs``
  has (by name), next to the paper's numbers (``urn_jax.paper_numbers``): the mean over the
  combinations both have, and Spearman's rank correlation over those combinations, which
  asks whether the same combinations are hard here as in the paper, whatever the level."""
  lines = []
  names = _names(runs, "segment")
  for name in (n for n in paper_numbers.TABLE1_SCENARIOS if n in names):
    for region in REGIONS:
      paper = paper_numbers.TABLE1[name, region]
      ours = _aggregate(runs, name, lambda row, r=region: 100 * row[f"{r}/dice"])
      keys = [k for k in paper if k in ours]
      if keys:
        a, b = [paper[k] for k in keys], [ours[k][0] for k in keys]
        lines.append(f"| Table 1, Dice (%) | {name} | {region} | {len(keys)} | "
                     f"{np.mean(a):.1f} | {np.mean(b):.1f} | {_spearman(a, b)} |")
  names = _names(runs, "pretrain")
  for name in (n for n in paper_numbers.TABLE2_MODELS if n in names):
    for modality in MODALITIES:
      paper = paper_numbers.TABLE2[name, modality]
      ours = _aggregate(runs, name, lambda row: row["psnr"],
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
  path.write_text(
      "# Next to the paper's Tables 1 and 2\n\nMeans over the combinations that both the paper"
      " and these runs have (the paper's Table 1 lacks the baseline's T1-only row); "
      "Spearman's rho ranks the combinations by each and asks whether the same ones are "
      "hard here as in the paper. The paper scored BraTS 2018 at 1 mm with its full-size "
      "networks: levels compare only where the data and sizes do.\n\n"
      "| table | model | region or modality | combinations | paper | here | Spearman rho |\n"
      "|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")
  return [path]


def figure2(runs, out_png):
  """Dice per combination (x) for each scenario (lines; bars: range over runs)."""
  names = _names(runs, "segment")
  keys = [mask_key(m) for m in availability_masks()]
  fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
  for ax, region in zip(axes, ("WT", "TC", "ET")):
    for offset, name in zip(np.linspace(-0.15, 0.15, len(names)), names):
      cells = _aggregate(runs, name, lambda row, r=region: 100 * row[f"{r}/dice"])
      x = [i for i, k in enumerate(keys) if k in cells]
      means = [cells[keys[i]][0] for i in x]
      low = [cells[keys[i]][0] - min(cells[keys[i]][2]) for i in x]
      high = [max(cells[keys[i]][2]) - cells[keys[i]][0] for i in x]
      ax.errorbar(np.asarray(x) + offset, means, yerr=[low, high], marker="o", ms=4,
                  capsize=2, label=name, lw=1.2)
    ax.set_ylabel(f"Dice {region} (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  axes[0].legend(loc="lower left", fontsize=9, ncol=len(names))
  axes[-1].set_xticks(range(len(keys)))
  axes[-1].set_xticklabels([mask_name([c == "1" for c in k]) for k in keys], rotation=55,
                           ha="right", fontsize=8)
  axes[0].set_title("Dice per combination of input modalities (test patients; markers: "
                    "mean over runs, bars: range)")
  fig.tight_layout()
  fig.savefig(out_png, dpi=90)
  plt.close(fig)
  return out_png


def _overlay(ax, background, classes):
  low, high = intensity_window(background)
  ax.imshow(background.T, cmap="gray", vmin=low, vmax=high, origin="lower",
            interpolation="nearest")
  rgba = np.zeros(classes.shape + (4,))
  for value in (1, 2, 3):
    rgba[classes == value] = COLOURS[value] + (0.55,)
  ax.imshow(rgba.transpose(1, 0, 2), origin="lower", interpolation="nearest")


def _crop(images, margin=4):
  """The bounding box of the nonzero background, so the brain fills the panel."""
  nonzero = np.argwhere(images != 0)
  if nonzero.size == 0:
    return slice(None), slice(None)
  low = np.maximum(nonzero.min(0) - margin, 0)
  high = nonzero.max(0) + margin + 1
  return slice(low[0], high[0]), slice(low[1], high[1])


def _panels(rows, columns):
  """A black figure of image panels without ticks (the row labels use the y label)."""
  fig, axes = plt.subplots(rows, columns, squeeze=False, facecolor="black",
                           figsize=(2.2 * columns + 0.6, 2.2 * rows + 0.6))
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  return fig, axes


def figure3(runs, case_id, out_png):
  """Segmentations of ``case_id`` for several input combinations (columns) by each scenario
  (rows), over T1c; the first column is the ground truth."""
  shown = _first_runs(runs, "segment")
  if not shown or "t1c" not in shown[0]["figure"]:
    return None
  background = shown[0]["figure"]["t1c"]
  box = _crop(background)
  columns = ["truth"] + [k for k in FIGURE_MASKS if k in shown[0]["figure"]]
  fig, axes = _panels(len(shown), len(columns))
  for row, run in enumerate(shown):
    for col, key in enumerate(columns):
      ax = axes[row, col]
      if key in run["figure"]:
        _overlay(ax, background[box], run["figure"][key][box])
      if row == 0:
        ax.set_title("ground truth" if key == "truth" else
                     mask_name([c == "1" for c in key]), color="white", fontsize=9)
      if col == 0:
        ax.set_ylabel(run["name"], color="white", fontsize=9)
  fig.suptitle(f"{case_id}: red necrotic/non-enhancing core, green edema, blue enhancing "
               "tumour (columns: input modalities)", color="white", fontsize=10)
  fig.tight_layout()
  fig.savefig(out_png, dpi=90, facecolor="black")
  plt.close(fig)
  return out_png


def figure_synthesis(run, case_id, out_png):
  """Every modality (columns) synthesized from several input combinations (rows) by one
  pre-training run; the reconstructed inputs are framed in green, the top row is the real
  pre-processed image."""
  reference = run["figure"]["reference"]
  rows = ["reference"] + [k for k in FIGURE_MASKS if k in run["figure"]]
  box = _crop(np.abs(reference).sum(-1))
  windows = [intensity_window(reference[..., j]) for j in range(len(MODALITIES))]
  fig, axes = _panels(len(rows), len(MODALITIES))
  for r, key in enumerate(rows):
    for j, modality in enumerate(MODALITIES):
      ax = axes[r, j]
      image = run["figure"][key][..., j][box]
      low, high = windows[j]
      ax.imshow(image.T, cmap="gray", vmin=low, vmax=high, origin="lower",
                interpolation="nearest")
      given = key != "reference" and key[j] == "1"
      for spine in ax.spines.values():
        spine.set_color("lime" if given else "black")
        spine.set_linewidth(3 if given else 0)
      if r == 0:
        ax.set_title(MODALITY_LABELS[modality], color="white", fontsize=10)
      if j == 0:
        ax.set_ylabel("real" if key == "reference" else "from " +
                      mask_name([c == "1" for c in key]), color="white", fontsize=8)
  fig.suptitle(f"{run['name']}, {case_id}: synthesis (green frame: a reconstructed input)",
               color="white", fontsize=10)
  fig.tight_layout()
  fig.savefig(out_png, dpi=90, facecolor="black")
  plt.close(fig)
  return out_png


def _first_runs(runs, job):
  """One run per name (the first, i.e. the lowest seed in a study) that has figure data."""
  seen, out = set(), []
  for run in runs:
    if run["job"] == job and run["name"] not in seen and run["figure"]:
      seen.add(run["name"])
      out.append(run)
  return out


def _write_rows(path: Path, rows):
  keys = []
  for row in rows:
    keys += [k for k in row if k not in keys]
  with path.open("w", newline="") as f:
    writer = csv.DictWriter(f, keys)
    writer.writeheader()
    writer.writerows(rows)
  return path


def training_report(runs, out_dir, figures=True) -> list:
  """``training.md``: each run's steps, final and best validation loss and whether its curve
  flattened (``urn_jax.curves``), from its ``metrics.jsonl``; one PNG of curves per model
  name, a column per seed. Sets ``run["curve"]`` (None where the run has no metrics or no
  evaluation in them)."""
  lines = ["| model | seed | steps (epochs) | final val. loss | best val. loss (step) | "
           "improvement, last 20 % | flat |", "|---|---|---|---|---|---|---|"]
  for run in runs:
    metrics = Path(run["workdir"]) / "metrics.jsonl"
    run["curve"] = curve_summary(metrics) if metrics.is_file() else None
    c = run["curve"]
    if c is None:
      lines.append(f"| {run['name']} | {run['seed']} | no evaluation in metrics.jsonl | | | "
                   "| unknown |")
      continue
    improvement = c["improvement_last_20pct"]
    improvement = "n/a" if math.isnan(improvement) else f"{100 * improvement:.1f} %"
    epochs = f" ({c['epochs']:.1f})" if c.get("epochs") is not None else ""
    lines.append(f"| {run['name']} | {run['seed']} | {c['steps']}{epochs} | "
                 f"{c['final_validation_loss']:.4f} | {c['best_validation_loss']:.4f} "
                 f"({c['best_step']}) | {improvement} | "
                 f"{'yes' if c['flat'] else '**no**'} |")
  path = Path(out_dir) / "training.md"
  path.write_text(f"# Training curves\n\nFlat: the best validation loss improved by less "
                  f"than {100 * FLAT:.0f} % in the last 20 % of the steps. Runs that are not "
                  "flat are left out of the claims' tests (claims.md).\n\n"
                  + "\n".join(lines) + "\n")
  files = [path]
  if figures:
    for name in dict.fromkeys(r["name"] for r in runs):
      columns = {f"{name}, seed {r['seed']}": Path(r["workdir"]) for r in runs
                 if r["name"] == name and r["curve"] is not None}
      if columns:
        stem = "curves_" + "".join(c if c.isalnum() else "_" for c in name)
        plot_curves(columns, Path(out_dir) / f"{stem}.png")
        files.append(Path(out_dir) / f"{stem}.png")
  return files


def _on_unflat_pretraining(runs, used) -> list[str]:
  """The runs of ``used`` whose encoders were restored from a pre-training (their
  ``config.json``'s ``pretrained_workdir``) that is among ``runs`` and whose curve is not
  flat, each with its pre-training's name and last-fifth improvement."""
  pretrainings = {Path(r["workdir"]).resolve(): r for r in runs if r["job"] == "pretrain"}
  named = []
  for r in used:
    config = Path(r["workdir"]) / "config.json"
    source = json.loads(config.read_text()).get("pretrained_workdir") if config.is_file() else ""
    pre = pretrainings.get(Path(source).resolve()) if source else None
    curve = (pre or {}).get("curve") or {}
    if pre is not None and not curve.get("flat"):
      improvement = curve.get("improvement_last_20pct")
      named.append(f"{r['name']} (seed {r['seed']}: {pre['name']}" + (
          f", {100 * improvement:.1f} % better in its last fifth" if improvement is not None
          and not math.isnan(improvement) else ", no curve") + ")")
  return named


def claims_report(runs, out_dir, cases=(), tumours=None) -> list:
  """``claims.md`` and ``claims.json``: each of the paper's claims whose scenarios were
  evaluated, tested on the per-case rows (``urn_jax.claims``) of the runs whose curves are
  flat (a run without a curve is left out too). A claim whose two sides share no patient,
  seed and combination (other combinations evaluated, seeds left out) is listed as not
  testable rather than stopping the report. Runs whose encoders come from a pre-training
  that is not flat are tested, and named in the note."""
  used = [r for r in runs if r["job"] == "segment" and (r.get("curve") or {}).get("flat")]
  left_out = [f"{r['name']} (seed {r['seed']}{'' if r.get('curve') else ', no curve'})"
              for r in runs if r["job"] == "segment" and r not in used]
  rows = [row for r in used for row in r["rows"]]
  names = {row["model"] for row in rows}
  comparisons = [c for c in claims_module.claims_for(names) if {c.better, c.worse} <= names]
  empty = {region: {c for c in cases if tumours and c in tumours and tumours[c][region] == 0}
           for region in REGIONS}
  results, untestable = [], []
  for comparison in comparisons:
    try:
      results += claims_module.evaluate_claims(rows, [comparison])
      if empty.get(comparison.region):
        # The same test without the patients whose region is empty: their Dice is 100 or
        # 0, and one of them can make or undo a difference on its own.
        kept = [row for row in rows if row["case_id"] not in empty[comparison.region]]
        results += [{**r, "subset": f"patients with {comparison.region}"}
                    for r in claims_module.evaluate_claims(kept, [comparison])
                    if r["combinations"] == "mean"]
    except ValueError as e:  # no paired rows for this comparison
      untestable.append(f"{comparison.claim} ({comparison.region}): {e}")
  if not results and not untestable:
    return []
  lines = ["| claim | region | comparison | combinations | patients x seeds | mean difference "
           "(Dice points) | 95 % interval | Wilcoxon p | verdict |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    if r["combinations"] == "most":
      lines.append(f"| {r['claim']} | {r['region']} | {r['comparison']} | **most**: holds on "
                   f"{r['holds_on']} of {r['of']}, does not on {r['fails_on']} | | | | | "
                   f"**{r['verdict']}** |")
      continue
    combinations = (r["combinations"] if r["combinations"] == "mean"
                    else " ".join(_symbols(r["combinations"])))
    if "subset" in r:
      combinations += f", {r['subset']} only"
    p_value = f"{r['p_value']:.3g}" + (f" (Holm {r['p_holm']:.3g})" if "p_holm" in r else "")
    lines.append(f"| {r['claim']} | {r['region']} | {r['comparison']} | {combinations} | "
                 f"{r['patients']} x {r['seeds']} | {r['mean']:+.1f} | "
                 f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}] | {p_value} | "
                 f"{r['verdict']} |")
  note = ("Paired by patient and seed; one-sided Wilcoxon signed-rank test over patients (the "
          "mean over seeds per patient) and a bootstrap interval resampling patients and "
          "seeds (urn_jax/claims.py). Holds: interval above 0 and p < 0.05; does not hold: "
          "interval below 1 Dice point; else cannot tell at this size. A claim made "
          "combination by combination: each combination's verdict uses its p-value "
          "Holm-adjusted over the 15, and \"most\" holds when it holds on at least 8 of "
          "them, does not when it does not on at least 8.")
  if left_out:
    note += " Left out, their curves not flat: " + ", ".join(left_out) + "."
  resting = _on_unflat_pretraining(runs, used)
  if resting:
    note += (" Their own curves are flat, but their encoders come from a pre-training whose "
             "curve is not: " + ", ".join(resting) + "; their verdicts rest on it.")
  note += _empty_regions_note(cases, tumours)
  if any(empty.values()):
    note += (" Each test of such a region is repeated without those patients (\"only\" "
             "under combinations); the verdict of the claim is the one on every patient.")
  if untestable:
    note += "\n\nNot testable with these runs:\n" + "\n".join(f"- {u}" for u in untestable)
  path = Path(out_dir) / "claims.md"
  path.write_text("# The paper's claims, tested\n\n" + note + "\n\n" + "\n".join(lines) + "\n")
  json_path = Path(out_dir) / "claims.json"
  json_path.write_text(json.dumps(results, indent=1))
  return [path, json_path]


def write_report(runs, out_dir, figure_case, figures=True, cases=(), tumours=None) -> dict:
  """Writes every table, figure and CSV the runs allow; returns the files and mean rows.
  ``cases``: the test patients scored, named under each table's title; ``tumours``: their
  region volumes (cm^3; ``test_patients.csv``, and the patients without ET are named)."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  files, summary = [], {}
  segmentation = [r for r in runs if r["job"] == "segment"]
  pretraining = [r for r in runs if r["job"] == "pretrain"]
  files += training_report(runs, out_dir, figures)
  # A run whose curve has not flattened is not a result: where its scenario has flat runs,
  # the tables, the figures and the comparison with the paper leave it out. A scenario
  # with no flat run at all (a smoke test's few steps) stays, and the note says it is not
  # a result. training.md shows every run, cases.csv keeps its rows and claims.md names
  # it (claims_report filters on its own).
  unflat = [r for r in runs if (r.get("curve") or {}).get("flat") is False]
  has_flat = {r["name"] for r in runs if r not in unflat}
  dropped = [r for r in unflat if r["name"] in has_flat]

  def left_out(job):  # the sentences under a table of ``job``'s runs
    groups = (("Left out, their curves not flat (training.md)", dropped),
              ("Not flat, and shown only for want of a flat run of their scenario: not "
               "results (training.md)", [r for r in unflat if r not in dropped]))
    text = ""
    for sentence, group in groups:
      named = [f"{r['name']} (seed {r['seed']})" for r in group if r["job"] == job]
      if named:
        text += f" {sentence}: " + ", ".join(named) + "."
    return text

  every_run, runs = runs, [r for r in runs if r not in dropped]
  if tumours:
    files.append(_write_rows(out_dir / "test_patients.csv", [
        {"case_id": c, **{f"{region} (cm3)": round(v, 3) for region, v in tumours[c].items()}}
        for c in cases if c in tumours]))
  if segmentation:
    files += segmentation_table(runs, out_dir, "dice", cases=cases, tumours=tumours,
                                left_out=left_out("segment"))
    files += segmentation_table(runs, out_dir, "hd95", scale=1.0, cases=cases,
                                left_out=left_out("segment"))
    files.append(_write_rows(out_dir / "cases.csv", [row for r in segmentation
                                                     for row in r["rows"]]))
    summary["dice_mean"] = {n: {region: _aggregate(runs, n, lambda row, g=region:
                                                   100 * row[f"{g}/dice"])["mean"][:2]
                                for region in REGIONS} for n in _names(runs, "segment")}
    files += claims_report(every_run, out_dir, cases, tumours)
    if figures:
      files.append(figure2(runs, out_dir / "figure2.png"))
      files.append(figure3(runs, figure_case, out_dir / "figure3.png"))
  if pretraining:
    files += psnr_table(runs, out_dir, cases, left_out("pretrain"))
    files.append(_write_rows(out_dir / "psnr_cases.csv", [row for r in pretraining
                                                          for row in r["rows"]]))
    if figures:
      for run in _first_runs(runs, "pretrain"):
        number = {"URN": 4, "URN w/ HCP": 5}.get(run["name"])
        stem = f"figure{number}" if number else "figure_synthesis_" + "".join(
            c if c.isalnum() else "_" for c in run["name"])
        files.append(figure_synthesis(run, figure_case, out_dir / f"{stem}.png"))
  files += paper_comparison(runs, out_dir)
  runs_file = out_dir / "runs.json"
  runs_file.write_text(json.dumps([{k: r[k] for k in ("name", "job", "seed", "step",
                                                      "workdir")} for r in every_run], indent=1))
  files.append(runs_file)
  summary["files"] = [str(f) for f in files if f]
  return summary
