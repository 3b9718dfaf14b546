"""A training run's logs: ``metrics.jsonl`` and TensorBoard event files in ``tensorboard/``,
written by process 0 only (every process logs the same means). Each line of
``metrics.jsonl`` carries its ``wall_time`` (seconds since the epoch, as TensorBoard's
events do), so the time a run took can be read back even when a process was killed before
it could say.

Read back: ``read_metrics`` (its rows), ``curve_summary`` (whether the validation loss has
flattened: its best improved by less than ``FLAT``, 5 % relative, in the last 20 % of the
steps; the report's training curves, ``urn_jax.evaluation.curves``, use it) and
``curve_note``, the line every training ends with."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax

from urn_jax.labels import REGIONS


class MetricsLog:
  """``write(step, metrics)`` appends a line to ``metrics.jsonl`` and a scalar per metric to
  TensorBoard; on any process but 0 it does nothing."""

  def __init__(self, workdir: Path):
    self.active = jax.process_index() == 0
    if self.active:
      from tensorboardX import SummaryWriter  # a heavy import, only for training
      self.writer = SummaryWriter(str(Path(workdir) / "tensorboard"))
      self.file = (Path(workdir) / "metrics.jsonl").open("a")

  def write(self, step: int, metrics: dict):
    if not self.active:
      return
    for name, value in metrics.items():
      self.writer.add_scalar(name, value, step)
    self.file.write(json.dumps({"step": step, **metrics, "wall_time": time.time()}) + "\n")
    self.file.flush()

  def close(self):
    if self.active:
      self.writer.close()
      self.file.close()


FLAT = 0.05


def read_metrics(metrics_file: Path) -> list[dict]:
  """The rows of a run's ``metrics.jsonl``; a line cut short by a killed process (or any
  line that is not a JSON object with a step) is skipped."""
  rows = []
  for line in Path(metrics_file).read_text().splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and "step" in row:
      rows.append(row)
  return rows


def curve_summary(metrics_file: Path) -> dict | None:
  """Final and best validation loss, and how much the best improved in the last 20 % of
  the steps, from a run's ``metrics.jsonl``; None when it holds no evaluation yet. With no
  evaluation in the first 80 % of the steps the improvement is NaN, and the run not flat."""
  rows = read_metrics(metrics_file)
  evaluations = [r for r in rows if "validation_loss" in r]
  if not evaluations:
    return None
  steps = rows[-1]["step"]
  best = min(evaluations, key=lambda r: r["validation_loss"])
  early = [r["validation_loss"] for r in evaluations if r["step"] <= 0.8 * steps]
  best_early = min(early) if early else float("nan")
  summary = {"steps": steps, "epochs": rows[-1].get("epoch"),
             "final_validation_loss": evaluations[-1]["validation_loss"],
             "best_validation_loss": best["validation_loss"], "best_step": best["step"],
             "improvement_last_20pct": (best_early - best["validation_loss"]) / best_early,
             "final_training_loss": rows[-1]["loss"]}
  for region in REGIONS:
    if f"validation_dice_{region}" in best:
      summary[f"validation_dice_{region}"] = best[f"validation_dice_{region}"]
  summary["flat"] = bool(summary["improvement_last_20pct"] < FLAT)
  return summary


def curve_note(summary: dict | None) -> str | None:
  """One line on a run's validation curve (``curve_summary``): where its best validation
  loss was, and whether it had flattened by the end; None without a validation."""
  if summary is None:
    return None
  head = (f"validation loss: best {summary['best_validation_loss']:.4g} at step "
          f"{summary['best_step']} of {summary['steps']}")
  gain = summary["improvement_last_20pct"]
  if math.isnan(gain):  # no validation in the first 80 % of the steps
    return head + "; too few validations to tell whether it has flattened"
  head += f"; it fell {100 * gain:.1f} % in the last fifth of the steps"
  if summary["flat"]:
    return head + f" (flat: under {100 * FLAT:.0f} %)"
  return (head + f": still falling (flat is under {100 * FLAT:.0f} %); the run ended before "
          "it converged, and a longer one (--config.train.max_steps) may do better")
