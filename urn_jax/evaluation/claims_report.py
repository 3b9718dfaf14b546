"""``claims.md`` and ``claims.json``: the paper's claims tested (``urn_jax.evaluation.claims``)
on the runs that count (``urn_jax.evaluation.runs``), with a note on what was left out."""

from __future__ import annotations

import json
from pathlib import Path

from urn_jax.evaluation.claims import claims_for, evaluate_claims
from urn_jax.evaluation.runs import Counted
from urn_jax.evaluation.tables import empty_regions_note, symbols
from urn_jax.labels import REGIONS


def claims_report(counted: Counted, out_dir, cases=(), tumours=None) -> list:
  """``claims.md`` and ``claims.json``: each of the paper's claims whose scenarios were
  evaluated, tested on the per-case rows (``urn_jax.evaluation.claims``) of the runs
  ``counted`` tests (flat curves; a run without a curve is left out too) and naming the
  others. A claim whose two sides share no patient, seed and combination (other
  combinations evaluated, seeds left out) is listed as not testable rather than stopping
  the report. Runs whose encoders come from a pre-training that is not flat are tested,
  and named in the note."""
  left_out = [f"{r['name']} (seed {r['seed']}{'' if r.get('curve') else ', no curve'})"
              for r in counted.untested]
  rows = [row for r in counted.tested for row in r["rows"]]
  names = {row["model"] for row in rows}
  comparisons = [c for c in claims_for(names) if {c.better, c.worse} <= names]
  empty = {region: {c for c in cases if tumours and c in tumours and tumours[c][region] == 0}
           for region in REGIONS}
  results, untestable = [], []
  for comparison in comparisons:
    try:
      results += evaluate_claims(rows, [comparison])
      if empty.get(comparison.region):
        # The same test without the patients whose region is empty: their Dice is 100 or
        # 0, and one of them can make or undo a difference on its own.
        kept = [row for row in rows if row["case_id"] not in empty[comparison.region]]
        results += [{**r, "subset": f"patients with {comparison.region}"}
                    for r in evaluate_claims(kept, [comparison])
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
                    else " ".join(symbols(r["combinations"])))
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
  if counted.resting:
    note += (" Their own curves are flat, but their encoders come from a pre-training whose "
             "curve is not: " + ", ".join(counted.resting) + "; their verdicts rest on it.")
  note += empty_regions_note(cases, tumours)
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
