"""The runs an evaluation reports on, and which of them count as results.

A run is one evaluated model (``urn_jax.evaluation.evaluate``): a dict with its ``name``
(``urn_jax.scenarios``), ``job``, ``seed``, ``workdir`` and ``rows`` (one per case and
combination of modalities; ``figure``: what the figures draw). Runs that share a name are
seeds of one scenario; their results are averaged (``aggregate``).

Every run counts: no run is left out of the tables, figures or claims for its training
curve, since leaving runs out after their results are known is a choice made while
looking (docs/STUDY_PLAN.md). Each run's curve is read here, once
(``urn_jax.evaluation.curves``), and the runs whose validation loss has not flattened, or
that have no curve, are named under every table and in the claims' report, as are the
tested runs whose encoders come from a pre-training that has not flattened. Whether a
scenario has converged is shown by runs twice as long (``curves.convergence_report``), not
here. The report's writers receive the runs and those sentences (``Counted``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from urn_jax.job_config import stored_fields
from urn_jax.modalities import availability_masks, mask_key
from urn_jax.training.metrics_log import curve_summary


def names(runs, job) -> list[str]:
  """The names of ``job``'s runs (``"segment"`` or ``"pretrain"``), in their order."""
  found = []
  for run in runs:
    if run["job"] == job and run["name"] not in found:
      found.append(run["name"])
  return found


def aggregate(runs, name, value, select=lambda row: True) -> dict:
  """``{mask: (mean, spread, [per-run means])}`` of ``value(row)`` over the cases of each
  run called ``name``, then over those runs; ``"mean"`` the same over the combinations. The
  spread is half the range over runs."""
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


def first_runs(runs, job) -> list:
  """One run per name (the first, i.e. the lowest seed in a study) that has figure data."""
  seen, out = set(), []
  for run in runs:
    if run["job"] == job and run["name"] not in seen and run["figure"]:
      seen.add(run["name"])
      out.append(run)
  return out


def _seed(run, extra="") -> str:
  return f"{run['name']} (seed {run['seed']}{extra})"


@dataclasses.dataclass(frozen=True)
class Counted:
  """The runs of an evaluation with what their curves say (``count_runs``)."""

  every: list  # each with its "curve" (``curve_summary``, None without one)
  unflat: list  # not flat, or without a curve: named, and counted all the same
  tested: list  # the segmentation runs the claims are tested on: all of them
  # Runs that diverged (their loss NaN or infinite, or their pre-training's): not scored, so
  # in no table or test, and named in the claims' report; each a run without rows.
  diverged: list = dataclasses.field(default_factory=list)

  @property
  def resting(self) -> list[str]:
    """The tested runs whose encoders come from a pre-training that is not flat, each
    named by its ``run["resting"]`` sentence (``count_runs``)."""
    return [r["resting"] for r in self.tested if "resting" in r]

  @property
  def shown(self) -> list:
    """The runs in the tables, figures and comparison with the paper: every one."""
    return self.every

  def notes(self, job: str) -> str:
    """The sentence under a table of ``job``'s runs that names its runs whose curves have
    not flattened (with a leading space; "" when none)."""
    named = [_seed(r) for r in self.unflat if r["job"] == job]
    if not named:
      return ""
    return (" Not flat (training.md), in the table all the same (no run is left out for "
            "its curve): " + ", ".join(named) + ".")


def _name_resting_on_unflat_pretraining(runs):
  """Gives each segmentation run of ``runs`` whose encoders were restored from a
  pre-training (its ``config.json``'s ``pretrained_workdir``) that is among ``runs`` and
  whose curve is not flat ``run["resting"]``: its name with its pre-training's name and
  last-fifth improvement."""
  pretrainings = {Path(r["workdir"]).resolve(): r for r in runs if r["job"] == "pretrain"}
  for run in (r for r in runs if r["job"] == "segment"):
    source = (stored_fields(run["workdir"]) or {}).get("pretrained_workdir")
    pre = pretrainings.get(Path(source).resolve()) if source else None
    curve = (pre or {}).get("curve") or {}
    if pre is not None and not curve.get("flat"):
      improvement = curve.get("improvement_last_20pct")
      run["resting"] = _seed(run, f": {pre['name']}" + (
          f", {100 * improvement:.1f} % better in its last fifth" if improvement is not None
          and not math.isnan(improvement) else ", no curve"))


def count_runs(runs) -> Counted:
  """Reads each run's curve (its ``metrics.jsonl``) into ``run["curve"]`` and decides which
  runs count (the module's docstring says how); a tested run whose pre-training is not
  flat gets the sentence naming it as ``run["resting"]``."""
  for run in runs:
    metrics = Path(run["workdir"]) / "metrics.jsonl"
    run["curve"] = curve_summary(metrics) if metrics.is_file() else None
  _name_resting_on_unflat_pretraining(runs)
  return _counted(runs)


def _counted(runs) -> Counted:
  unflat = [r for r in runs if not (r.get("curve") or {}).get("flat")]
  tested = [r for r in runs if r["job"] == "segment"]
  return Counted(every=list(runs), unflat=unflat, tested=tested)


# What runs.json keeps of each run (beside its name, job, seed, step and workdir): all that
# the claims' report reads of a run but its rows, which cases.csv keeps.
RECORDED = ("name", "job", "seed", "step", "workdir", "curve", "converged", "parameters",
            "resting", "diverged", "encoders_retrained")


def run_records(runs) -> list[dict]:
  """``runs.json``: each run's ``RECORDED`` fields that it has."""
  return [{k: r[k] for k in RECORDED if k in r} for r in runs]


def counted_from_records(records, case_rows) -> Counted:
  """``count_runs``'s answer rebuilt from ``runs.json`` (``run_records``) and the rows of
  ``cases.csv`` as ``csv`` reads them (strings): each segmentation run gets the rows of its
  name and seed, with the seed an integer, each metric (a column with a ``/``) a float and
  an empty cell (a metric that row has not) left out. Written values are Python's
  shortest round-tripping ``repr``, so the numbers are the ones the evaluation held."""
  runs = [dict(r, rows=[]) for r in records if "diverged" not in r]
  by_run = {(r["name"], int(r["seed"])): r for r in runs if r["job"] == "segment"}
  for row in case_rows:
    row = {k: (float(v) if "/" in k else int(v) if k == "seed" else v)
           for k, v in row.items() if v != ""}
    by_run[row["model"], row["seed"]]["rows"].append(row)
  return dataclasses.replace(_counted(runs),
                             diverged=[r for r in records if "diverged" in r])
