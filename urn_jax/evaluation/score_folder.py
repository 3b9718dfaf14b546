"""Score any folder of label maps against a folder of ground truths: ``urn-evaluate``.

    urn-evaluate --predictions runs/predictions --labels /data/BraTS2021 --output scores/
    urn-evaluate --predictions other_tool/ --labels truths/ --labels-convention brats2023 \
        --metrics volume,brats2023,panoptica --nsd-tolerance 1.0

Predictions are NIfTI files named by case id (``<case>.nii.gz``, as ``urn-segment`` writes,
or ``<case>_seg.nii.gz``); ``urn-segment``'s ``*_probabilities`` and ``*_synthesized`` files
are skipped. Ground truths are the ``*_seg`` / ``*-seg`` files of a BraTS folder (modality
files are skipped), or ``<case>.nii.gz`` files. They are matched by case id. Each pair must
hold only the label values of its convention (``--labels-convention``,
``--predictions-convention``: brats2018 0, 1, 2, 4; brats2023 0, 1, 2, 3) and lie on the same
grid (shape and affine). A case that cannot be scored - on one side only, a value outside
the convention, another grid, a file that cannot be read - is named with its reason, printed
and written to ``<output>/skipped.csv``, and the others are scored; the command then exits
with status 1, so that a script cannot take scores over part of the cases for scores over
all of them. Nothing is dropped silently, and nothing is rescored (a missing prediction is
not an empty one).

Metrics per region (ET, TC, WT), in mm from the ground truth's header:
``volume``, the volume-wise Dice, HD95, sensitivity and specificity of
``urn_jax.metrics``; ``brats2023``, the BraTS 2023 lesion-wise Dice and HD95 with lesion
counts; ``panoptica``, the instance-wise metrics of the panoptica-based BraTS package; and
with either lesion-wise definition the normalized surface Dice at ``--nsd-tolerance`` mm
(``urn_jax.lesion_metrics`` states each definition and its source). Writes
``<output>/cases.csv`` (one row per scored case) and ``<output>/summary.csv`` (mean, median
and standard deviation over the scored cases, per region and metric), and prints the summary.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import re
import sys
from pathlib import Path

import numpy as np

from urn_jax.console import progress, say
from urn_jax.data.cases import case_id_of_file, file_role, nifti_files, read_volume
from urn_jax.errors import DataError, UserError
from urn_jax.files import write_text_atomically
from urn_jax.labels import LABEL_VALUES, REGIONS, labels_to_classes
from urn_jax.lesion_metrics import DEFINITIONS, lesion_metrics
from urn_jax.metrics import segmentation_metrics

METRIC_GROUPS = ("volume",) + DEFINITIONS
DEFAULT_METRICS = ("volume", "brats2023")
_SKIPPED = re.compile(r"_(probabilities|[a-z0-9]+_synthesized)\.nii(\.gz)?$", re.IGNORECASE)


def _nifti_files(folder: Path, what: str) -> list[Path]:
  """``urn_jax.data.cases.nifti_files``, where a folder that cannot be read is an error:
  scores over part of the cases would pass for scores over all of them."""
  if not folder.is_dir():
    raise DataError(f"{what} folder {folder} does not exist or is not a directory")
  problems: list[str] = []
  files = nifti_files(folder, problems)
  if problems:
    raise DataError(f"{what}: " + "; ".join(problems))
  return [f for f in files if re.search(r"\.nii(\.gz)?$", f.name)]


def _by_case(paths, what: str) -> dict[str, Path]:
  found: dict[str, Path] = {}
  for path in paths:
    case_id = case_id_of_file(path)
    if case_id in found:
      raise DataError(f"two {what} files for case {case_id}: {found[case_id]} and {path}")
    found[case_id] = path
  return found


def prediction_files(folder) -> dict[str, Path]:
  """``{case id: file}`` of the label maps in ``folder`` (module docstring)."""
  files = [p for p in _nifti_files(Path(folder), "predictions") if not _SKIPPED.search(p.name)]
  return _by_case(files, "prediction")


def label_files(folder) -> dict[str, Path]:
  """``{case id: file}`` of the ground truths in ``folder``: BraTS ``*_seg`` files, or files
  without a BraTS modality suffix."""
  files = [p for p in _nifti_files(Path(folder), "labels") if file_role(p) in ("label", None)]
  return _by_case(files, "label")


def matched_cases(predictions: dict, labels: dict) -> tuple[list[str], dict[str, str]]:
  """The case ids on both sides, and ``{case id: why it cannot be scored}`` for every case
  found on one side only."""
  if not labels:
    raise DataError("no label file found (expected <case>_seg.nii.gz or <case>.nii.gz)")
  unmatched = {case_id: f"label {labels[case_id]} has no prediction"
               for case_id in set(labels) - set(predictions)}
  unmatched.update({case_id: f"prediction {predictions[case_id]} has no label"
                    for case_id in set(predictions) - set(labels)})
  return sorted(set(labels) & set(predictions)), dict(sorted(unmatched.items()))


def _classes(path: Path, convention: str, what: str, case_id: str):
  image, data = read_volume(str(path), what, case_id)
  return image, labels_to_classes(np.asarray(data), convention,
                                  where=f"case {case_id}: {what} file {path}")


def score_case(case_id: str, prediction: Path, label: Path, metrics=DEFAULT_METRICS,
               labels_convention: str = "brats2018", predictions_convention: str = "brats2018",
               nsd_tolerance: float = 1.0) -> dict:
  """One row: the case id, then ``region/metric`` values of the chosen metric groups."""
  truth_image, truth = _classes(label, labels_convention, "label", case_id)
  pred_image, pred = _classes(prediction, predictions_convention, "prediction", case_id)
  if pred.shape != truth.shape or not np.allclose(pred_image.affine, truth_image.affine,
                                                  atol=1e-3):
    raise DataError(
        f"case {case_id}: prediction {prediction} (shape {pred.shape}) is not on the grid of "
        f"label {label} (shape {truth.shape}; affines must agree too)")
  spacing = tuple(float(z) for z in truth_image.header.get_zooms()[:3])
  row = {"case_id": case_id}
  if "volume" in metrics:
    row.update(segmentation_metrics(pred, truth, spacing))
  for definition in DEFINITIONS:
    if definition in metrics:
      row.update(lesion_metrics(pred, truth, spacing, definition, tolerance_mm=nsd_tolerance))
  return row


def summarize(rows: list[dict]) -> list[dict]:
  """Mean, median and standard deviation over the cases of every ``region/metric`` column."""
  columns = [c for c in rows[0] if c != "case_id"]
  summary = []
  for column in columns:
    values = np.array([row[column] for row in rows], np.float64)
    region, metric = column.split("/", 1)
    summary.append({"region": region, "metric": metric, "mean": float(values.mean()),
                    "median": float(np.median(values)), "std": float(values.std()),
                    "cases": len(values)})
  return summary


def _csv(rows: list[dict]) -> str:
  stream = io.StringIO()
  writer = csv.DictWriter(stream, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return stream.getvalue()


@dataclasses.dataclass(frozen=True)
class FolderScores:
  """What ``evaluate_folders`` found: the summary over the scored cases, and every case it
  could not score with the reason."""
  summary: list[dict]
  skipped: dict[str, str]


def evaluate_folders(predictions, labels, output, metrics=DEFAULT_METRICS,
                     labels_convention="brats2018", predictions_convention=None,
                     nsd_tolerance=1.0) -> FolderScores:
  """Scores every case that can be scored (module docstring), writes the CSV files.

  A ``DataError`` only where no case at all can be scored, naming why for each."""
  unknown = set(metrics) - set(METRIC_GROUPS)
  if unknown or not metrics:
    raise UserError(f"metrics must be among {', '.join(METRIC_GROUPS)}; got "
                    f"{', '.join(metrics) or 'none'}")
  for convention in (labels_convention, predictions_convention):
    if convention is not None and convention not in LABEL_VALUES:
      raise UserError(f"unknown label convention {convention!r}; expected one of "
                      f"{', '.join(LABEL_VALUES)}")
  predicted, truths = prediction_files(predictions), label_files(labels)
  cases, skipped = matched_cases(predicted, truths)
  rows = []
  for case_id in progress(cases, desc="scoring", unit="case"):
    try:
      rows.append(score_case(case_id, predicted[case_id], truths[case_id], metrics,
                             labels_convention, predictions_convention or labels_convention,
                             nsd_tolerance))
    except DataError as e:
      skipped[case_id] = str(e).removeprefix(f"case {case_id}: ")
  skipped = dict(sorted(skipped.items()))
  if not rows:
    raise DataError("no case could be scored: " + "; ".join(
        f"{case_id}: {why}" for case_id, why in skipped.items()))
  summary = summarize(rows)
  output = Path(output)
  try:
    output.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create the output folder {output}: {e.strerror or e}") from None
  write_text_atomically(output / "cases.csv", _csv(rows))
  write_text_atomically(output / "summary.csv", _csv(summary))
  skipped_csv = output / "skipped.csv"
  if skipped:
    write_text_atomically(skipped_csv, _csv([{"case_id": c, "problem": why}
                                             for c, why in skipped.items()]))
  elif skipped_csv.exists():
    skipped_csv.unlink()  # an earlier run's, in the same folder
  return FolderScores(summary, skipped)


def format_summary(summary: list[dict]) -> str:
  """The summary as a text table, one line per metric, regions side by side."""
  metrics = list(dict.fromkeys(entry["metric"] for entry in summary))
  cell = {(e["region"], e["metric"]): e for e in summary}
  lines = [f"{'metric':14s}" + "".join(f"{r + ' mean (median, std)':>28s}" for r in REGIONS)]
  for metric in metrics:
    parts = [f"{e['mean']:9.4g} ({e['median']:.4g}, {e['std']:.3g})"
             for e in (cell[(r, metric)] for r in REGIONS)]
    lines.append(f"{metric:14s}" + "".join(f"{p:>28s}" for p in parts))
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="urn-evaluate", description="Scores a folder of label maps (urn_jax's or another "
      "tool's) against a folder of ground truths, case by case, as BraTS does.")
  parser.add_argument("--predictions", required=True, help="folder of <case>.nii.gz label maps")
  parser.add_argument("--labels", required=True,
                      help="folder of ground truths: a BraTS folder (*_seg files) or <case>.nii.gz")
  parser.add_argument("--output", required=True, help="folder for cases.csv and summary.csv")
  parser.add_argument("--labels-convention", default="brats2018", choices=sorted(LABEL_VALUES),
                      help="label values of the ground truths: brats2018 0,1,2,4 (default); "
                      "brats2023 0,1,2,3")
  parser.add_argument("--predictions-convention", default=None, choices=sorted(LABEL_VALUES),
                      help="label values of the predictions (default: as the ground truths)")
  parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                      help=f"comma-separated, among {', '.join(METRIC_GROUPS)} "
                      f"(default {','.join(DEFAULT_METRICS)})")
  parser.add_argument("--nsd-tolerance", type=float, default=1.0,
                      help="tolerance of the normalized surface Dice, mm (default 1)")
  args = parser.parse_args(argv)
  try:
    scores = evaluate_folders(args.predictions, args.labels, args.output,
                              tuple(m for m in args.metrics.split(",") if m),
                              args.labels_convention, args.predictions_convention,
                              args.nsd_tolerance)
  except UserError as e:
    parser.exit(2, f"urn-evaluate: error: {e}\n")
  except KeyboardInterrupt:
    parser.exit(130, "urn-evaluate: interrupted (Ctrl-C); nothing written\n")
  say(format_summary(scores.summary))
  output = Path(args.output)
  say(f"per case: {output / 'cases.csv'}; summary: {output / 'summary.csv'}")
  if scores.skipped:
    scored = scores.summary[0]["cases"]
    say(f"{len(scores.skipped)} case(s) skipped, not in the summary of the {scored} scored "
        f"(also in {output / 'skipped.csv'}):")
    for case_id, why in scores.skipped.items():
      say(f"  skipped: {case_id}: {why}")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
