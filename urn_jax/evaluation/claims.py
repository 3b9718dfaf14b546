"""The paper's five claims as paired tests over test patients and seeds.

Input: the per-case rows of an evaluation (``cases.csv``: one row per model, seed, test
patient and input combination, with ``WT/dice``, ``TC/dice``, ``ET/dice``, ...). Each claim
compares two things measured on the same patients, so every test is paired: for each
patient and seed, the difference of the two Dice scores (0-100), each first averaged over
the input combinations the claim is about.

Statistics (``paired_test``):
- the unit of inference is the patient: the differences of a patient's seeds are averaged,
  and a Wilcoxon signed-rank test (scipy) over patients gives the p-value (one-sided, in
  the claimed direction);
- a 95 % bootstrap interval of the mean difference resamples patients and, independently,
  seeds (a training run is a random draw too), 10,000 times from a fixed seed;
- the verdict: **holds** when the interval lies above 0 and p < 0.05; **does not hold**
  when the interval lies below ``margin`` (1 Dice point: the effect is absent, negligible or
  reversed); otherwise **cannot tell at this size**;
- a claim about combinations one by one (claim 3) is 15 tests: their p-values are
  Holm-adjusted over the 15 (family-wise 5 %; ``holm``), so that a few "holds" are not what
  chance alone gives, and the claim's own words, "on most combinations", get a verdict of
  their own (``combinations == "most"``): holds when it holds on at least 8 of the 15, does
  not hold when it does not hold on at least 8, otherwise cannot tell.

The claims (``CLAIMS``), in the paper's words where it has them (sections 3.2-3.3):
1. the baseline collapses when modalities are missing (WT, all four against the mean of the
   14 incomplete combinations), FLAIR above all (incomplete combinations with FLAIR against
   those without);
2. modality dropout largely recovers it (Baseline + MD against Baseline, mean of the 14
   incomplete combinations);
3. URN + MD beats Baseline + MD on most combinations (all 15, per region, and per
   combination);
4. pre-training on pooled data helps ET and TC (the pre-trained URN + MD against URN + MD
   trained end to end, all 15 combinations);
5. modality dropout also helps with all modalities present (Baseline + MD against Baseline,
   all four).
Beyond the paper (``beyond_the_paper``), when the rows have the fine-tuned fifth scenario:
6. fine-tuning the pre-trained encoders beats freezing them; 7. pre-training then
fine-tuning beats training end to end.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy import stats

FULL = "1111"
FLAIR = 0  # position of FLAIR in a mask key such as "1010"


@dataclasses.dataclass(frozen=True)
class Comparison:
  """``better`` minus ``worse`` (model names, or one model twice with two selections of
  combinations), Dice of ``region``; the claim is that the difference is positive."""

  claim: str
  region: str
  better: str
  worse: str
  better_masks: Callable[[str], bool]
  worse_masks: Callable[[str], bool]
  per_combination: bool = False


def _incomplete(key: str) -> bool:
  return key != FULL


def _everything(key: str) -> bool:
  return True


def _full(key: str) -> bool:
  return key == FULL


def _with_flair(key: str) -> bool:
  return key != FULL and key[FLAIR] == "1"


def _without_flair(key: str) -> bool:
  return key[FLAIR] == "0"


def claims(pretrained: str = "URN + MD pre-trained") -> list[Comparison]:
  """The comparisons behind the paper's five claims; ``pretrained``: the name of the
  pre-trained scenario in the rows ("URN + MD pre-trained", or "URN + MD w/ HCP")."""
  return [
      Comparison("1. the baseline collapses without modalities", "WT", "Baseline",
                 "Baseline", _full, _incomplete),
      Comparison("1. ... FLAIR above all", "WT", "Baseline", "Baseline", _with_flair,
                 _without_flair),
      Comparison("2. modality dropout recovers it", "WT", "Baseline + MD", "Baseline",
                 _incomplete, _incomplete),
      *(Comparison("3. URN + MD beats Baseline + MD", region, "URN + MD", "Baseline + MD",
                   _everything, _everything, per_combination=True)
        for region in ("WT", "TC", "ET")),
      *(Comparison("4. pre-training helps ET and TC", region, pretrained, "URN + MD",
                   _everything, _everything) for region in ("TC", "ET")),
      *(Comparison("5. modality dropout helps with all four", region, "Baseline + MD",
                   "Baseline", _full, _full) for region in ("WT", "TC", "ET")),
  ]


def differences(rows, comparison: Comparison, masks: Callable[[str], bool] | None = None):
  """``(patients, seeds, matrix [patients, seeds])``: the paired differences (Dice points)
  of ``comparison`` for every patient and seed both sides have; ``masks`` narrows both
  sides to some combinations (one, for a per-combination test)."""
  def mean_by(model, select):
    values = {}
    for row in rows:
      key = str(row["mask"]).zfill(4)
      if row["model"] == model and select(key) and (masks is None or masks(key)):
        values.setdefault((row["case_id"], int(row["seed"])), []).append(
            100.0 * float(row[f"{comparison.region}/dice"]))
    return {k: float(np.mean(v)) for k, v in values.items()}
  better = mean_by(comparison.better, comparison.better_masks)
  worse = mean_by(comparison.worse, comparison.worse_masks)
  pairs = sorted(set(better) & set(worse))
  if not pairs:
    models = sorted({row["model"] for row in rows})
    raise ValueError(f"{comparison.claim}: no patient and seed has rows for both "
                     f"{comparison.better!r} and {comparison.worse!r} with the combinations "
                     f"the claim compares (models in the rows: {models})")
  patients = sorted({p for p, _ in pairs})
  seeds = sorted({s for _, s in pairs})
  matrix = np.full((len(patients), len(seeds)), np.nan)
  for p, s in pairs:
    matrix[patients.index(p), seeds.index(s)] = better[p, s] - worse[p, s]
  if np.isnan(matrix).any():
    raise ValueError(f"{comparison.claim}: not every patient has every seed for both "
                     f"{comparison.better!r} and {comparison.worse!r}")
  return patients, seeds, matrix


def paired_test(matrix, margin: float = 1.0, resamples: int = 10_000, seed: int = 0) -> dict:
  """Tests that the mean of ``matrix [patients, seeds]`` (paired differences) is positive;
  see the module's docstring. Returns the numbers that decide, and the verdict."""
  matrix = np.asarray(matrix, np.float64)
  patients, seeds = matrix.shape
  per_patient = matrix.mean(axis=1)
  rng = np.random.default_rng(seed)
  rows = rng.integers(0, patients, (resamples, patients))
  columns = rng.integers(0, seeds, (resamples, seeds))
  # Every resample at once: [resamples, patients * seeds], each row summed as the one
  # matrix[np.ix_(r, c)].mean() would sum it (the same numbers, 100x faster).
  means = matrix[rows[:, :, None], columns[:, None, :]].reshape(resamples, -1).mean(axis=1)
  low, high = np.percentile(means, [2.5, 97.5])
  if np.allclose(per_patient, 0):
    p_value = 1.0
  else:
    p_value = float(stats.wilcoxon(per_patient, alternative="greater").pvalue)
  result = {"patients": patients, "seeds": seeds, "mean": float(matrix.mean()),
            "ci_low": float(low), "ci_high": float(high), "p_value": p_value}
  return {**result, "verdict": _verdict(result, p_value, margin)}


def holm(p_values) -> np.ndarray:
  """Holm's step-down adjustment of ``p_values`` (one family): the i-th smallest is
  multiplied by (m - i), i from 0, made monotone and capped at 1. scipy has only the
  false-discovery-rate versions (``stats.false_discovery_control``)."""
  p = np.asarray(p_values, np.float64)
  order = np.argsort(p)
  scaled = np.minimum(1.0, p[order] * (len(p) - np.arange(len(p))))
  adjusted = np.empty_like(p)
  adjusted[order] = np.maximum.accumulate(scaled)
  return adjusted


def _verdict(result: dict, p_value: float, margin: float) -> str:
  if result["ci_low"] > 0 and p_value < 0.05:
    return "holds"
  if result["ci_high"] < margin:
    return "does not hold"
  return "cannot tell at this size"


def _on_most(results: list[dict]) -> dict:
  """The verdict on "most combinations" from the per-combination results."""
  holds = sum(r["verdict"] == "holds" for r in results)
  fails = sum(r["verdict"] == "does not hold" for r in results)
  most = len(results) // 2 + 1
  verdict = ("holds" if holds >= most else "does not hold" if fails >= most
             else "cannot tell at this size")
  return {"holds_on": holds, "fails_on": fails, "of": len(results), "verdict": verdict}


def beyond_the_paper(pretrained: str = "URN + MD pre-trained") -> list[Comparison]:
  """Two questions the paper leaves open, asked of the fifth scenario (the pre-trained
  encoders fine-tuned with the rest instead of frozen, ``<pretrained>, fine-tuned``), over
  all 15 combinations: 6. does fine-tuning beat freezing, and 7. does pre-training, then
  fine-tuning, beat training end to end?"""
  finetuned = f"{pretrained}, fine-tuned"
  return [
      *(Comparison("6. (beyond the paper) fine-tuned beats frozen encoders", region,
                   finetuned, pretrained, _everything, _everything)
        for region in ("WT", "TC", "ET")),
      *(Comparison("7. (beyond the paper) pre-trained and fine-tuned beats end to end",
                   region, finetuned, "URN + MD", _everything, _everything)
        for region in ("WT", "TC", "ET")),
  ]


def claims_for(names) -> list[Comparison]:
  """``claims()`` with the pre-trained scenario the model ``names`` have: pooled with HCP
  ("URN + MD w/ HCP") when present, else "URN + MD pre-trained"; and ``beyond_the_paper``
  when they have its fine-tuned scenario."""
  pretrained = "URN + MD w/ HCP" if "URN + MD w/ HCP" in names else "URN + MD pre-trained"
  extra = beyond_the_paper(pretrained) if f"{pretrained}, fine-tuned" in names else []
  return claims(pretrained) + extra


def evaluate_claims(rows, comparisons=None, margin: float = 1.0) -> list[dict]:
  """One result per comparison; a per-combination one adds a "most" result (how many of
  the combinations hold, how many do not) and one per combination, with its Holm-adjusted
  p-value (``p_holm``), on which that combination's verdict rests. ``comparisons``
  defaults to ``claims()``, with the pre-trained scenario pooled with HCP ("URN + MD w/
  HCP") when the rows have it."""
  if comparisons is None:
    comparisons = claims_for({row["model"] for row in rows})
  results = []
  for comparison in comparisons:
    _, _, matrix = differences(rows, comparison)
    results.append({"claim": comparison.claim, "region": comparison.region,
                    "comparison": f"{comparison.better} - {comparison.worse}",
                    "combinations": "mean", **paired_test(matrix, margin)})
    if comparison.per_combination:
      keys = sorted({str(r["mask"]).zfill(4) for r in rows}, reverse=True)
      family = []
      for key in keys:
        _, _, matrix = differences(rows, comparison, masks=lambda k, key=key: k == key)
        family.append({"claim": comparison.claim, "region": comparison.region,
                       "comparison": f"{comparison.better} - {comparison.worse}",
                       "combinations": key, **paired_test(matrix, margin)})
      for result, adjusted in zip(family, holm([r["p_value"] for r in family])):
        result["p_holm"] = float(adjusted)
        result["verdict"] = _verdict(result, adjusted, margin)
      results.append({"claim": comparison.claim, "region": comparison.region,
                      "comparison": f"{comparison.better} - {comparison.worse}",
                      "combinations": "most", **_on_most(family)})
      results += family
  return results
