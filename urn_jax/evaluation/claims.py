"""The paper's claims as paired tests over test patients and seeds.

Input: the per-case rows of an evaluation (``cases.csv``: one row per model, seed, test
patient and input combination, with ``WT/dice``, ``TC/dice``, ``ET/dice``, ...). Each claim
compares two things measured on the same patients, so every test is paired: for each
patient and seed, the difference of the two Dice scores (0-100), each first averaged over
the input combinations the claim is about. That gives a matrix of differences
[P patients, S seeds].

Statistics: ``urn_jax.evaluation.paired`` (``paired_test``, patients and seeds crossed
random effects) gives each comparison's interval and its verdict against a margin of 1
Dice point.

Multiple comparisons: each of the paper's claims is one family, and its k verdict rows
get Bonferroni-simultaneous intervals, each at level 1 - 0.05 / k (k = 1: 95 %); claims are
not adjusted against each other (the paper states them separately). A result row records
its ``level`` and ``k``.

The claims (``claims``), in the paper's words where it has them (section 3.2, Figure 2 and
the supplement); each statement below (a ``claim`` string) is one family:
1. the baseline collapses when modalities are missing (Baseline, WT, all four against the
   mean of the 14 incomplete combinations; k = 1); FLAIR above all (``FLAIR_PAIRS``): for
   every set S of the other three modalities and every X of T1, T1c, T2 not in S, the WT
   Dice with S + FLAIR minus that with S + X, same patient, seed and model, averaged over
   the 12 pairs (those the rows have, where an evaluation scored only some combinations),
   for Baseline + MD and for URN + MD (k = 2);
2. modality dropout largely recovers it (Baseline + MD against Baseline, WT, mean of the 14
   incomplete combinations; k = 1);
3. URN + MD has the highest WT Dice of all scenarios on at least 14 of the 15 combinations
   (``HIGHEST``): per combination, URN + MD against each of Baseline, Baseline + MD and
   Baseline + MD (wide) present in the rows (``RIVALS``); it is highest where its point
   estimate (mean over patients and seeds of the paired differences) is above every one of
   them, and each combination is tested against the best of them there (k = the number of
   combinations, 15). A count row gives on how many it is highest, "of 15", and the mean
   over the combinations of URN + MD minus the best other. The claim holds when the test
   holds on at least 14, does not hold when URN + MD is not highest on at least 2, and
   otherwise cannot tell at this size. Beside it, URN + MD against Baseline + MD, and
   against Baseline + MD (wide) when the rows have it, on the mean of the 15 (a family of
   their own, k = 1 or 2);
4. pre-training on pooled data helps ET and TC (the pre-trained URN + MD against URN + MD
   trained end to end, all 15 combinations; k = 2);
5. modality dropout makes the baseline and the URN better than the baseline also with all
   four (Baseline + MD and URN + MD against Baseline, all four, WT, TC, ET; k = 6).
Beyond the paper (``beyond_the_paper``), when the rows have the fine-tuned fifth scenario:
6. fine-tuning the pre-trained encoders beats freezing them; 7. pre-training then
fine-tuning beats training end to end (each WT, TC, ET; k = 3).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

import numpy as np
from urn_jax.evaluation.paired import ALPHA, MARGIN, paired_test

FULL = "1111"
FLAIR = 0  # position of FLAIR in a mask key such as "1010" (FLAIR, T1, T1c, T2)
WIDE = "Baseline + MD (wide)"  # a baseline as large as the URN, when the study has it
RIVALS = ("Baseline", "Baseline + MD", WIDE)  # claim 3: the scenarios URN + MD must beat
HIGHEST = 14  # claim 3: combinations (of 15) on which URN + MD must surely be highest


def _flair_pairs() -> tuple[tuple[str, str], ...]:
  """(S + FLAIR, S + X) for every set S of T1, T1c, T2 and every X of them not in S: 12
  pairs of mask keys that differ only in FLAIR standing where X stands, so that the
  difference is FLAIR's worth against each other modality with everything else equal."""
  pairs = []
  for rest in itertools.product("01", repeat=3):  # S, over T1, T1c, T2
    for x in range(3):
      if rest[x] == "0":
        with_x = rest[:x] + ("1",) + rest[x + 1:]
        pairs.append(("1" + "".join(rest), "0" + "".join(with_x)))
  return tuple(pairs)


FLAIR_PAIRS = _flair_pairs()


def _incomplete(key: str) -> bool:
  return key != FULL


def _everything(key: str) -> bool:
  return True


def _full(key: str) -> bool:
  return key == FULL


_SPANS = {_full: "all four", _incomplete: "the 14 incomplete", _everything: "the 15"}


@dataclasses.dataclass(frozen=True)
class Comparison:
  """``better`` minus ``worse`` (model names, or one model twice with two selections of
  combinations), Dice of ``region``; the claim is that the difference is positive.
  ``matched``: pairs of mask keys (better's, worse's) whose differences are averaged
  instead of the two selections' means. ``rivals``: a claim that ``better`` is highest on
  each combination, against each of these present in the rows (``worse`` only names
  them). ``k``: the number of verdict rows of the claim's family (Bonferroni)."""

  claim: str
  region: str
  better: str
  worse: str
  better_masks: Callable[[str], bool] = _everything
  worse_masks: Callable[[str], bool] = _everything
  matched: tuple[tuple[str, str], ...] = ()
  rivals: tuple[str, ...] = ()
  k: int = 1

  def describe(self) -> str:
    if self.matched:
      return f"{self.better}: S + FLAIR - S + X"
    if self.better == self.worse:
      return (f"{self.better}: {_SPANS.get(self.better_masks, 'some')} - "
              f"{_SPANS.get(self.worse_masks, 'others')}")
    return f"{self.better} - {self.worse}"

  def span(self) -> str:
    """The combinations each side is averaged over, in words (claims.md's column);
    "mean" where the selections are not the claims' own (and for ``matched`` pairs, which
    the report counts)."""
    better, worse = (_SPANS.get(self.better_masks), _SPANS.get(self.worse_masks))
    if self.matched or better is None or worse is None:
      return "mean"
    if better == worse:
      return better if self.better_masks is _full else f"mean of {better}"
    return f"{better} against the mean of {worse}"

  def testable_with(self, names) -> bool:
    """Whether models ``names`` have both sides (for ``rivals``, at least one rival)."""
    if self.rivals:
      return self.better in names and any(r in names for r in self.rivals)
    return {self.better, self.worse} <= set(names)


def _families(comparisons: list[Comparison]) -> list[Comparison]:
  """Each comparison with ``k``, the number of comparisons of its claim: a claim is one
  family. (A ``rivals`` comparison counts once; it is a family of its combinations.)"""
  sizes = {}
  for c in comparisons:
    sizes[c.claim] = sizes.get(c.claim, 0) + 1
  return [dataclasses.replace(c, k=sizes[c.claim]) for c in comparisons]


def claims(pretrained: str = "URN + MD pre-trained", wide: bool = False) -> list[Comparison]:
  """The comparisons behind the paper's five claims; ``pretrained``: the name of the
  pre-trained scenario in the rows ("URN + MD pre-trained", or "URN + MD w/ HCP"); ``wide``:
  whether the rows have the wide baseline (``WIDE``), which claim 3 then compares too."""
  baselines = ("Baseline + MD", WIDE) if wide else ("Baseline + MD",)
  return _families([
      Comparison("1. the baseline collapses without modalities", "WT", "Baseline",
                 "Baseline", _full, _incomplete),
      *(Comparison("1. ... FLAIR above all", "WT", model, model, matched=FLAIR_PAIRS)
        for model in ("Baseline + MD", "URN + MD")),
      Comparison("2. modality dropout recovers it", "WT", "Baseline + MD", "Baseline",
                 _incomplete, _incomplete),
      Comparison("3. URN + MD is highest on at least 14 of 15 combinations", "WT",
                 "URN + MD", "the best other", rivals=RIVALS),
      *(Comparison("3. ... URN + MD against each baseline, mean of the 15", "WT",
                   "URN + MD", baseline) for baseline in baselines),
      *(Comparison("4. pre-training helps ET and TC", region, pretrained, "URN + MD")
        for region in ("TC", "ET")),
      *(Comparison("5. modality dropout helps with all four", region, model, "Baseline",
                   _full, _full)
        for model in ("Baseline + MD", "URN + MD") for region in ("WT", "TC", "ET")),
  ])


def _dice(rows, model: str, region: str, masks: Callable[[str], bool] | None):
  """(patient, seed) -> mask key -> Dice points of ``model``'s rows (a list: rows that
  repeat a patient, seed and combination are averaged, not dropped)."""
  table = {}
  for row in rows:
    key = str(row["mask"]).zfill(4)
    if row["model"] == model and (masks is None or masks(key)):
      table.setdefault((row["case_id"], int(row["seed"])), {}).setdefault(key, []).append(
          100.0 * float(row[f"{region}/dice"]))
  return table


def _present(comparison: Comparison, better: dict, worse: dict) -> list[tuple[str, str]]:
  """The ``matched`` pairs of combinations whose both sides the rows have (all 12 where
  every combination was evaluated; fewer where an evaluation scored only some)."""
  better_keys = {key for entry in better.values() for key in entry}
  worse_keys = {key for entry in worse.values() for key in entry}
  return [(x, y) for x, y in comparison.matched if x in better_keys and y in worse_keys]


def matched_pairs(rows, comparison: Comparison) -> int:
  """How many of ``comparison``'s matched pairs of combinations the rows have."""
  return len(_present(comparison, _dice(rows, comparison.better, comparison.region, None),
                      _dice(rows, comparison.worse, comparison.region, None)))


def differences(rows, comparison: Comparison, masks: Callable[[str], bool] | None = None):
  """``(patients, seeds, matrix [patients, seeds])``: the paired differences (Dice points)
  of ``comparison`` for every patient and seed both sides have; ``masks`` narrows both
  sides to some combinations (one, for a per-combination test). A ``matched`` comparison
  averages, per patient and seed, the differences of its pairs of combinations that the
  rows have; a patient and seed missing any of those is not paired."""
  better = _dice(rows, comparison.better, comparison.region, masks)
  worse = _dice(rows, comparison.worse, comparison.region, masks)
  matched = _present(comparison, better, worse)
  values = {}
  for pair in set(better) & set(worse):
    b, w = better[pair], worse[pair]
    if comparison.matched:
      if matched and all(x in b and y in w for x, y in matched):
        values[pair] = float(np.mean([np.mean(b[x]) - np.mean(w[y]) for x, y in matched]))
      continue
    b = [v for key, vs in b.items() if comparison.better_masks(key) for v in vs]
    w = [v for key, vs in w.items() if comparison.worse_masks(key) for v in vs]
    if b and w:
      values[pair] = float(np.mean(b)) - float(np.mean(w))
  if not values:
    models = sorted({row["model"] for row in rows})
    raise ValueError(f"{comparison.claim}: no patient and seed has rows for both "
                     f"{comparison.better!r} and {comparison.worse!r} with the combinations "
                     f"the claim compares (models in the rows: {models})")
  patients = sorted({p for p, _ in values})
  seeds = sorted({s for _, s in values})
  matrix = np.full((len(patients), len(seeds)), np.nan)
  for (p, s), value in values.items():
    matrix[patients.index(p), seeds.index(s)] = value
  if np.isnan(matrix).any():
    raise ValueError(f"{comparison.claim}: not every patient has every seed for both "
                     f"{comparison.better!r} and {comparison.worse!r}")
  return patients, seeds, matrix


def _highest_verdict(per_combination: list[dict]) -> str:
  """Claim 3's verdict from its per-combination results: holds when the test holds on at
  least ``HIGHEST`` of them; does not hold when URN + MD's point estimate is not the
  highest on at least 2 of the 15 (then "on all combinations except one" is false as
  measured); otherwise cannot tell at this size. A "holds" combination has a positive
  mean, so the first two cannot both apply."""
  if sum(r["verdict"] == "holds" for r in per_combination) >= HIGHEST:
    return "holds"
  if sum(not r["highest"] for r in per_combination) >= 2:
    return "does not hold"
  return "cannot tell at this size"


def _highest(rows, comparison: Comparison, margin: float) -> list[dict]:
  """Claim 3: a count row ("highest"), then one row per combination: ``better`` against
  the rival with the highest mean Dice on that combination, each at the Bonferroni level
  over the combinations. The count row's ``mean`` is the mean over the combinations of
  ``better`` minus the best rival."""
  names = {row["model"] for row in rows}
  rivals = [r for r in comparison.rivals if r in names]
  if comparison.better not in names or not rivals:
    raise ValueError(f"{comparison.claim}: the rows lack {comparison.better!r} or all of "
                     f"{list(comparison.rivals)} (models in the rows: {sorted(names)})")
  keys = sorted({str(r["mask"]).zfill(4) for r in rows}, reverse=True)
  k = len(keys)
  family = []
  for key in keys:
    def only(mask, key=key):
      return mask == key
    matrices = {rival: differences(rows, dataclasses.replace(comparison, worse=rival),
                                   masks=only)[2] for rival in rivals}
    means = {rival: float(matrix.mean()) for rival, matrix in matrices.items()}
    best = min(means, key=means.get)  # the highest Dice of the rivals
    family.append({"claim": comparison.claim, "region": comparison.region,
                   "comparison": f"{comparison.better} - {best}", "combinations": key,
                   "k": k, "highest": all(v > 0 for v in means.values()),
                   "against": means,
                   **paired_test(matrices[best], margin, 1 - ALPHA / k)})
  count = {"claim": comparison.claim, "region": comparison.region,
           "comparison": f"{comparison.better} - the best of {', '.join(rivals)}",
           "combinations": "highest", "k": k,
           "highest_on": sum(r["highest"] for r in family),
           "holds_on": sum(r["verdict"] == "holds" for r in family), "of": len(family),
           "mean": float(np.mean([r["mean"] for r in family])),
           "verdict": _highest_verdict(family)}
  return [count] + family


def beyond_the_paper(pretrained: str = "URN + MD pre-trained") -> list[Comparison]:
  """Two questions the paper leaves open, asked of the fifth scenario (the pre-trained
  encoders fine-tuned with the rest instead of frozen, ``<pretrained>, fine-tuned``), over
  all 15 combinations: 6. does fine-tuning beat freezing, and 7. does pre-training, then
  fine-tuning, beat training end to end?"""
  finetuned = f"{pretrained}, fine-tuned"
  return _families([
      *(Comparison("6. (beyond the paper) fine-tuned beats frozen encoders", region,
                   finetuned, pretrained) for region in ("WT", "TC", "ET")),
      *(Comparison("7. (beyond the paper) pre-trained and fine-tuned beats end to end",
                   region, finetuned, "URN + MD") for region in ("WT", "TC", "ET")),
  ])


def claims_for(names) -> list[Comparison]:
  """``claims()`` with the pre-trained scenario the model ``names`` have: pooled with HCP
  ("URN + MD w/ HCP") when present, else "URN + MD pre-trained"; with the wide baseline
  when present; and ``beyond_the_paper`` when they have its fine-tuned scenario."""
  pretrained = "URN + MD w/ HCP" if "URN + MD w/ HCP" in names else "URN + MD pre-trained"
  extra = beyond_the_paper(pretrained) if f"{pretrained}, fine-tuned" in names else []
  return claims(pretrained, wide=WIDE in names) + extra


def evaluate_claims(rows, comparisons=None, margin: float = MARGIN) -> list[dict]:
  """One result per comparison (``combinations``: "mean", and ``over``, the combinations
  it averages in words; a ``matched`` one adds ``pairs``, how many of its pairs the rows
  have), at the Bonferroni level of its claim's family (``level`` = 1 - 0.05 / ``k``);
  claim 3's ``rivals`` comparison gives a count row ("highest") and one row per
  combination instead. ``comparisons`` defaults to ``claims_for`` the models in the rows."""
  if comparisons is None:
    comparisons = claims_for({row["model"] for row in rows})
  results = []
  for comparison in comparisons:
    if comparison.rivals:
      results += _highest(rows, comparison, margin)
      continue
    _, _, matrix = differences(rows, comparison)
    pairs = {"pairs": matched_pairs(rows, comparison)} if comparison.matched else {}
    results.append({"claim": comparison.claim, "region": comparison.region,
                    "comparison": comparison.describe(), "combinations": "mean",
                    "over": comparison.span(), **pairs,
                    "k": comparison.k,
                    **paired_test(matrix, margin, 1 - ALPHA / comparison.k)})
  return results
