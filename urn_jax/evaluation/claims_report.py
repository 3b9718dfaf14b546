"""``claims.md`` and ``claims.json``: the paper's claims tested (``urn_jax.evaluation.claims``)
on every segmentation run (``urn_jax.evaluation.runs``), with a note naming the runs whose
curves have not flattened; ``verdicts.md``: each claim's deciding rows in one short table
(claim 3's rows per combination only in claims.md).

    python -m urn_jax.evaluation.claims_report runs/study/results

recomputes them from an evaluation's folder alone (its ``runs.json``, ``cases.csv`` and,
where the evaluation knew the patients' tumours, ``test_patients.csv``: no model,
checkpoint or data set) and says whether they are the ``claims.md`` and ``verdicts.md``
the folder holds, byte for byte; ``--out DIR`` keeps what it wrote.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import math
import sys
import tempfile
from pathlib import Path

from urn_jax.evaluation.claims import claims_for, evaluate_claims
from urn_jax.evaluation.runs import Counted, counted_from_records
from urn_jax.evaluation.tables import empty_regions_note, parameters_note, symbols
from urn_jax.files import write_text_atomically
from urn_jax.labels import REGIONS


# What claims.md says of its test and verdicts, above the table.
METHOD = ("Paired by patient and seed: the difference of the two Dice scores per patient and "
          "seed, a matrix patients x seeds. Test (urn_jax/evaluation/paired.py): patients "
          "and seeds are crossed random effects (two-way ANOVA without replication); the "
          "variance components (patients, seeds, residual) by the method of moments, each at "
          "least 0, give the variance of the mean difference, with Satterthwaite degrees of "
          "freedom; a t interval of the mean and a one-sided t p-value beside it "
          "(unadjusted; it decides nothing). Each statement in the claim column is one "
          "family: its k intervals are Bonferroni-simultaneous, each at level 1 - 0.05 / k. "
          "Verdict, from the interval alone against 1 Dice point: holds when it lies above "
          "+1; positive but under 1 point when it lies between 0 and +1; does not hold when "
          "it lies below +1 and reaches 0; otherwise cannot tell at this size; with fewer "
          "than 2 patients or 2 seeds, cannot tell (run-to-run variation cannot be "
          "measured). Claim 3 is tested combination by combination against the best of the "
          "other scenarios there: it holds when that holds on at least 14 of the 15, does "
          "not hold when URN + MD's mean is not the highest on at least 2, and otherwise "
          "cannot tell. Means and intervals are shown to 0.1 point; the verdicts use the "
          "unrounded bounds (claims.json).")

# Beside the FLAIR rows: what they can and cannot say.
FLAIR_NOTE = (" On the built-in phantom the FLAIR rows measure its contrast model, which "
              "makes edema brightest on FLAIR by construction (docs/phantom.md), and are no "
              "evidence about BraTS.")


def _runs_note(counted: Counted, unshown) -> str:
  """The sentences naming the runs a verdict may rest on with less than it should: not
  shown converged, not flat, or on a pre-training that is not flat; and those that
  diverged, which it does not rest on."""
  unflat = [f"{r['name']} (seed {r['seed']}{'' if r.get('curve') else ', no curve'})"
            for r in counted.unflat if r["job"] == "segment"]
  note = ""
  if counted.diverged:
    note += (" Diverged, so neither scored nor tested, their seed missing from their "
             "scenario (docs/STUDY_PLAN.md): " + ", ".join(
                 f"{r['name']} (seed {r['seed']})" for r in counted.diverged) + ".")
  if unshown:
    note += (" Not shown converged (convergence.md: no run twice as long, or one whose "
             "validation Dice differs by more than 1 point in a region; for frozen or "
             "fine-tuned encoders, the pre-training's check too): "
             + ", ".join(sorted(unshown)) + "; a verdict on them says so, and is not a "
             "verdict on the paper's claim.")
  if unflat:
    note += (" Not flat (training.md), tested all the same (no run is left out for its "
             "curve): " + ", ".join(unflat) + ".")
  seeds = {}
  for r in counted.tested:
    seeds.setdefault(r["name"], set()).add(r["seed"])
  every = sorted(set().union(*seeds.values()))
  short = [f"{name} (seeds {', '.join(map(str, sorted(s)))})" for name, s in seeds.items()
           if len(s) < len(every)]
  if short:
    note += (f" Not every scenario has every seed ({', '.join(map(str, every))}): "
             + ", ".join(short) + "; a comparison with them pairs the seeds both sides "
             "have (patients x seeds in its row).")
  retrained = [f"{r['name']} (seed {r['seed']})" for r in counted.tested
               if r.get("encoders_retrained")]
  if retrained:
    note += (" Trained on encoders whose pre-training was trained again (its work directory "
             "lost) with weights that differ from those sealed (their sealed.json): "
             + ", ".join(retrained) + "; their verdicts rest on those encoders.")
  if counted.resting:
    note += (" Their own curves are flat, but their encoders come from a pre-training whose "
             "curve is not: " + ", ".join(counted.resting) + "; their verdicts rest on it.")
  return note


def claims_report(counted: Counted, out_dir, cases=(), tumours=None) -> list:
  """``claims.md`` and ``claims.json``: each of the paper's claims whose scenarios were
  evaluated, tested on the per-case rows (``urn_jax.evaluation.claims``) of every
  segmentation run ``counted`` holds (none is left out for its curve), naming those not
  flat and those not shown converged. A claim whose two sides share no patient, seed and
  combination (other combinations evaluated, seeds left out) is listed as not testable
  rather than stopping the report. Runs whose encoders come from a pre-training that is
  not flat are tested, and named in the note."""
  rows = [row for r in counted.tested for row in r["rows"]]
  names = {row["model"] for row in rows}
  comparisons = [c for c in claims_for(names) if c.testable_with(names)]
  empty = {region: {c for c in cases if tumours and c in tumours and tumours[c][region] == 0}
           for region in REGIONS}
  results, untestable = [], []
  unshown = _not_shown_converged(counted.tested)
  for comparison in comparisons:
    sides = [n for n in dict.fromkeys((comparison.better, comparison.worse,
                                       *comparison.rivals)) if n in unshown]
    label = {"not_shown_converged": sides} if sides else {}
    try:
      results += [{**r, **label} for r in evaluate_claims(rows, [comparison])]
      if empty.get(comparison.region):
        # The same test without the patients whose region is empty: their Dice is 100 or
        # 0, and one of them can make or undo a difference on its own.
        kept = [row for row in rows if row["case_id"] not in empty[comparison.region]]
        results += [{**r, **label, "subset": f"patients with {comparison.region}"}
                    for r in evaluate_claims(kept, [comparison])
                    if r["combinations"] == "mean"]
    except ValueError as e:  # no paired rows for this comparison
      untestable.append(f"{comparison.claim} ({comparison.region}): {e}")
  if not results and not untestable:
    return []
  lines = ["| claim | region | comparison | combinations | test | patients x seeds | mean "
           "difference (Dice points) | interval (level) | p, one-sided | sd: patients / "
           "seeds / rest | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    if r["combinations"] == "highest":
      lines.append(f"| {r['claim']} | {r['region']} | {r['comparison']} | **highest on "
                   f"{r['highest_on']} of {r['of']}**, holds on {r['holds_on']} | | | "
                   f"{r['mean']:+.1f} (mean of the {r['of']}) | | | | "
                   f"**{r['verdict']}**{_unshown_label(r)} |")
      continue
    lines.append(_row(r))
  note = METHOD + _runs_note(counted, unshown)
  if any("pairs" in r for r in results):
    note += FLAIR_NOTE
  note += empty_regions_note(cases, tumours) + parameters_note(counted.tested, "segment")
  if any(empty.values()):
    note += (" Each test of such a region is repeated without those patients (\"only\" "
             "under combinations); the verdict of the claim is the one on every patient.")
  if untestable:
    note += "\n\nNot testable with these runs:\n" + "\n".join(f"- {u}" for u in untestable)
  path = Path(out_dir) / "claims.md"
  write_text_atomically(
      path, "# The paper's claims, tested\n\n" + note + "\n\n" + "\n".join(lines) + "\n")
  verdicts = Path(out_dir) / "verdicts.md"
  write_text_atomically(verdicts, VERDICTS + "\n".join(
      [_verdict_row(r) for r in results if r["combinations"] in ("mean", "highest")]) + "\n")
  json_path = Path(out_dir) / "claims.json"
  # NaN (no interval without 2 patients and 2 seeds) is not JSON: written as null.
  write_text_atomically(json_path, json.dumps(
      [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
       for r in results], indent=1))
  return [path, verdicts, json_path]


def _not_shown_converged(runs) -> set:
  """The scenarios with a run that a longer run did not show converged (its ``converged``
  not True), when the runs say (the study's evaluation records it); empty otherwise."""
  return {r["name"] for r in runs if "converged" in r and r["converged"] is not True}


def _unshown_label(r: dict) -> str:
  sides = r.get("not_shown_converged")
  return f" (not shown converged: {', '.join(sides)})" if sides else ""


def _row(r: dict) -> str:
  """One verdict row of claims.md: its test, size, interval with its level, p and verdict."""
  combinations = (r.get("over", "mean") if r["combinations"] == "mean"
                  else " ".join(symbols(r["combinations"])))
  if "pairs" in r:
    combinations += f" of {r['pairs']} matched pairs"
  if "subset" in r:
    combinations += f", {r['subset']} only"
  level = f"{100 * r['level']:.4g} %"
  if math.isnan(r["ci_low"]):
    return (f"| {r['claim']} | {r['region']} | {r['comparison']} | {combinations} | "
            f"{r['test']}: none | {r['patients']} x {r['seeds']} | {r['mean']:+.1f} | "
            f"none ({level}) | | | {r['verdict']}{_unshown_label(r)} |")
  sds = " / ".join(f"{math.sqrt(r[f'var_{c}']):.1f}" for c in ("patient", "seed", "residual"))
  return (f"| {r['claim']} | {r['region']} | {r['comparison']} | {combinations} | "
          f"{r['test']} {r['df']:.1f} | {r['patients']} x {r['seeds']} | {r['mean']:+.1f} | "
          f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}] ({level}, k = {r['k']}) | "
          f"{r['p_value']:.3g} | {sds} | {r['verdict']}{_unshown_label(r)} |")


# verdicts.md above its rows.
VERDICTS = ("# The paper's claims: the verdicts in one table\n\n"
            "Each claim's deciding rows from claims.md, which has their tests, the runs they "
            "rest on and claim 3 combination by combination: the mean paired difference in "
            "Dice points (patients x seeds) with its interval at its family's level, and the "
            "verdict.\n\n| claim | region | comparison | over | mean difference [interval] "
            "| patients x seeds | verdict |\n|---|---|---|---|---|---|---|\n")


def _verdict_row(r: dict) -> str:
  """One row of verdicts.md: a mean over combinations with its interval, or claim 3's count
  of the combinations where URN + MD is highest."""
  if r["combinations"] == "highest":
    return (f"| {r['claim']} | {r['region']} | {r['comparison']} | the {r['of']} "
            f"combinations, each | highest on {r['highest_on']}, holds on {r['holds_on']} "
            f"| | **{r['verdict']}**{_unshown_label(r)} |")
  over = r.get("over", "mean") + (f", {r['subset']} only" if "subset" in r else "")
  interval = ("" if math.isnan(r["ci_low"])
              else f" [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]")
  return (f"| {r['claim']} | {r['region']} | {r['comparison']} | {over} | "
          f"{r['mean']:+.1f}{interval} | {r['patients']} x {r['seeds']} | "
          f"**{r['verdict']}**{_unshown_label(r)} |")


def recompute(folder, out_dir) -> list:
  """``claims_report`` from the files an evaluation wrote into ``folder`` (module
  docstring), into ``out_dir``."""
  folder = Path(folder)
  need = [folder / n for n in ("runs.json", "cases.csv")]
  missing = [str(p) for p in need if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"{folder} is not an evaluation's folder: missing "
                            f"{', '.join(missing)} (written by launch.py's evaluate job)")
  with need[1].open(newline="") as stream:
    counted = counted_from_records(json.loads(need[0].read_text()), csv.DictReader(stream))
  patients = folder / "test_patients.csv"
  if not patients.is_file():  # cases are only named with their tumours
    return claims_report(counted, out_dir)
  with patients.open(newline="") as stream:
    rows = list(csv.DictReader(stream))
  tumours = {p["case_id"]: {region: float(p[f"{region} (cm3)"]) for region in REGIONS}
             for p in rows}
  return claims_report(counted, out_dir, [p["case_id"] for p in rows], tumours)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Recompute claims.md and verdicts.md from "
                                   "an evaluation's folder and compare them with those there.")
  parser.add_argument("folder", help="an evaluation's output folder (e.g. runs/study/results)")
  parser.add_argument("--out", help="write the recomputed claims.md, verdicts.md and "
                      "claims.json here (default: a temporary folder, removed)")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as scratch:
    out = Path(args.out or scratch)
    out.mkdir(parents=True, exist_ok=True)
    try:
      written = recompute(args.folder, out)
    except (FileNotFoundError, KeyError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    if not written:
      print(f"error: no claim is testable with the runs of {args.folder}", file=sys.stderr)
      return 2
    differ = 0
    for name in ("claims.md", "verdicts.md"):
      old, new = (Path(args.folder) / name), out / name
      if old.is_file() and old.read_bytes() == new.read_bytes():
        print(f"{name}: identical to {old}")
        continue
      differ = 1
      print("".join(difflib.unified_diff(
          old.read_text().splitlines(True) if old.is_file() else [],
          new.read_text().splitlines(True), str(old), "recomputed")))
    return differ


if __name__ == "__main__":
  sys.exit(main())
