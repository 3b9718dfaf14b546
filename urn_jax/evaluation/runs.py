"""The runs an evaluation reports on, and which of them count as results.

A run is one evaluated model (``urn_jax.evaluation.evaluate``): a dict with its ``name``
(``urn_jax.scenarios``), ``job``, ``seed``, ``workdir`` and ``rows`` (one per case and
combination of modalities; ``figure``: what the figures draw). Runs that share a name are
seeds of one scenario; their results are averaged (``aggregate``).

Which runs count is decided here, once, from each run's training curve
(``urn_jax.evaluation.curves``): a run whose validation loss has not flattened is not a
result. Where its scenario has flat runs, the tables, figures and the comparison with the
paper leave it out; a scenario with no flat run at all (a smoke test's few steps) stays,
marked as not a result. The claims are tested on flat segmentation runs only, and those
whose encoders come from a pre-training that has not flattened are named. The report's
writers receive what to show and the sentences that say what was left out (``Counted``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from urn_jax.evaluation.curves import curve_summary
from urn_jax.job_config import stored_fields
from urn_jax.modalities import availability_masks, mask_key


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
  """The runs of an evaluation, sorted by whether they count (``count_runs``)."""

  every: list  # each with its "curve" (``curve_summary``, None without one)
  shown: list  # in the tables, figures and comparison with the paper
  dropped: list  # not flat, left out: their scenario has flat runs
  not_results: list  # not flat, shown for want of a flat run of their scenario
  tested: list  # the segmentation runs the claims are tested on: flat ones
  untested: list  # the other segmentation runs, named in the claims' report
  resting: list  # tested runs whose encoders come from a pre-training not flat, named

  def left_out(self, job: str) -> str:
    """The sentences under a table of ``job``'s runs that name the runs it leaves out or
    shows without their being results (with a leading space; "" when none)."""
    text = ""
    for sentence, group in (
        ("Left out, their curves not flat (training.md)", self.dropped),
        ("Not flat, and shown only for want of a flat run of their scenario: not results "
         "(training.md)", self.not_results)):
      named = [_seed(r) for r in group if r["job"] == job]
      if named:
        text += f" {sentence}: " + ", ".join(named) + "."
    return text


def _resting_on_unflat_pretraining(runs, tested) -> list[str]:
  """The runs of ``tested`` whose encoders were restored from a pre-training (their
  ``config.json``'s ``pretrained_workdir``) that is among ``runs`` and whose curve is not
  flat, each with its pre-training's name and last-fifth improvement."""
  pretrainings = {Path(r["workdir"]).resolve(): r for r in runs if r["job"] == "pretrain"}
  named = []
  for run in tested:
    source = (stored_fields(run["workdir"]) or {}).get("pretrained_workdir")
    pre = pretrainings.get(Path(source).resolve()) if source else None
    curve = (pre or {}).get("curve") or {}
    if pre is not None and not curve.get("flat"):
      improvement = curve.get("improvement_last_20pct")
      named.append(_seed(run, f": {pre['name']}" + (
          f", {100 * improvement:.1f} % better in its last fifth" if improvement is not None
          and not math.isnan(improvement) else ", no curve")))
  return named


def count_runs(runs) -> Counted:
  """Reads each run's curve (its ``metrics.jsonl``) into ``run["curve"]`` and decides which
  runs count (the module's docstring says how)."""
  for run in runs:
    metrics = Path(run["workdir"]) / "metrics.jsonl"
    run["curve"] = curve_summary(metrics) if metrics.is_file() else None
  unflat = [r for r in runs if (r.get("curve") or {}).get("flat") is False]
  has_flat = {r["name"] for r in runs if r not in unflat}
  dropped = [r for r in unflat if r["name"] in has_flat]
  tested = [r for r in runs if r["job"] == "segment" and (r.get("curve") or {}).get("flat")]
  untested = [r for r in runs if r["job"] == "segment" and r not in tested]
  return Counted(every=list(runs), shown=[r for r in runs if r not in dropped],
                 dropped=dropped, not_results=[r for r in unflat if r not in dropped],
                 tested=tested, untested=untested,
                 resting=_resting_on_unflat_pretraining(runs, tested))
