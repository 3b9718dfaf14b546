"""The claims as the paper states them: differences are paired by patient and seed, an
effect that is there is found, one that is not is not claimed, each claim's intervals are
simultaneous over its family, claim 3 is judged combination by combination, FLAIR on
matched combinations, and claims.md says which. The statistic itself:
tests/test_claims_statistics.py."""

import numpy as np
import pytest

from urn_jax.evaluation.claims import (FLAIR_PAIRS, WIDE, Comparison, claims, differences,
                                      evaluate_claims)
from urn_jax.evaluation.paired import NEEDS_SEEDS, paired_test
from urn_jax.modalities import availability_masks, mask_key

KEYS = [mask_key(m) for m in availability_masks()]


def _rows(effects, patients=12, seeds=3, noise=2.0, seed=0):
  """Rows as cases.csv holds them: ``effects``: model -> Dice (0-100) as a function of
  (mask key, patient)."""
  rng = np.random.default_rng(seed)
  level = rng.normal(0, 5, patients)  # patients differ: what pairing removes
  rows = []
  for model, effect in effects.items():
    for s in range(seeds):
      for p in range(patients):
        for key in KEYS:
          dice = 50 + level[p] + effect(key, p) + rng.normal(0, noise)
          rows.append({"model": model, "seed": s, "case_id": f"P{p:02d}", "mask": key,
                       **{f"{r}/dice": dice / 100 for r in ("WT", "TC", "ET")}})
  return rows


def _segment_runs(tmp_path, rows, names, seeds=(0,), falling=lambda name, seed: False):
  """Segmentation runs as the report reads them: a work directory per model and seed whose
  metrics.jsonl has a flat validation loss (0.1 throughout) or, where ``falling``, one
  still falling (1 / n at the n-th evaluation), and the rows of that model and seed."""
  import json
  runs = []
  for name in names:
    for seed in seeds:
      workdir = tmp_path / f"{name}-{seed}".replace(" ", "").replace("+", "")
      workdir.mkdir()
      losses = [1.0 / s for s in range(1, 11)] if falling(name, seed) else [0.1] * 10
      (workdir / "metrics.jsonl").write_text("".join(
          json.dumps({"step": 100 * s, "loss": l, "validation_loss": l}) + "\n"
          for s, l in zip(range(1, 11), losses)))
      runs.append({"name": name, "job": "segment", "seed": seed, "workdir": str(workdir),
                   "step": 1000,
                   "rows": [r for r in rows if r["model"] == name and r["seed"] == seed]})
  return runs


def test_differences_are_paired_by_patient_and_seed():
  rows = _rows({"A": lambda k, p: 10 + p, "B": lambda k, p: 0}, noise=0.0)
  both = lambda key: True
  patients, seeds, matrix = differences(rows, Comparison("c", "WT", "A", "B", both, both))
  assert patients == [f"P{p:02d}" for p in range(12)] and seeds == [0, 1, 2]
  np.testing.assert_allclose(matrix, np.repeat(10.0 + np.arange(12), 3).reshape(12, 3))


def test_a_real_effect_holds_and_none_does_not():
  assert paired_test(np.full((12, 3), 5.0) + np.random.default_rng(1).normal(0, 2, (12, 3))
                     )["verdict"] == "holds"
  assert paired_test(np.random.default_rng(2).normal(-3, 1, (12, 3)))["verdict"] == \
      "does not hold"
  noisy = paired_test(np.random.default_rng(3).normal(0.5, 20, (12, 3)))
  assert noisy["verdict"] == "cannot tell at this size"
  assert noisy["ci_low"] < 0 < noisy["ci_high"] and noisy["p_value"] > 0.05


def _claim(prefix, comparisons=None):
  return [c for c in comparisons or claims() if c.claim.startswith(prefix)]


def _claim_rows(results, prefix):
  return [r for r in results if r["claim"].startswith(prefix)]


def test_the_claims_on_rows_where_each_is_built_in():
  no_flair = lambda k: k[0] == "0"
  rows = _rows({
      "Baseline": lambda k, p: -30 * no_flair(k) - 10 * (k != "1111"),  # needs FLAIR
      "Baseline + MD": lambda k, p: -5.0 * no_flair(k),  # recovers; no gain with all four
      "URN + MD": lambda k, p: 8.0,  # no FLAIR effect
      "URN + MD pre-trained": lambda k, p: 8.0,  # pre-training changes nothing
  }, seeds=5, noise=0.5)
  results = evaluate_claims(rows)
  verdicts = {(r["claim"][:2], r["region"], r["comparison"], r["combinations"]): r["verdict"]
              for r in results}
  assert verdicts["1.", "WT", "Baseline: all four - the 14 incomplete", "mean"] == "holds"
  assert verdicts["1.", "WT", "Baseline + MD: S + FLAIR - S + X", "mean"] == "holds"
  assert verdicts["1.", "WT", "URN + MD: S + FLAIR - S + X", "mean"] == "does not hold"
  assert verdicts["2.", "WT", "Baseline + MD - Baseline", "mean"] == "holds"
  highest = next(r for r in results if r["combinations"] == "highest")
  assert (highest["highest_on"], highest["holds_on"], highest["of"]) == (15, 15, 15)
  assert highest["verdict"] == "holds"
  assert highest["comparison"] == "URN + MD - the best of Baseline, Baseline + MD"
  assert highest["mean"] == pytest.approx(8 + 5 * 7 / 15, abs=0.5)
  assert all(verdicts["3.", "WT", "URN + MD - Baseline + MD", key] == "holds"
             for key in ["mean"] + KEYS)
  assert verdicts["4.", "TC", "URN + MD pre-trained - URN + MD", "mean"] == "does not hold"
  assert verdicts["4.", "ET", "URN + MD pre-trained - URN + MD", "mean"] == "does not hold"
  for region in ("WT", "TC", "ET"):
    assert verdicts["5.", region, "Baseline + MD - Baseline", "mean"] == "does not hold"
    assert verdicts["5.", region, "URN + MD - Baseline", "mean"] == "holds"
  five = [r for r in results if r["claim"].startswith("5.")]
  assert len(five) == 6 and all(r["patients"] == 12 and r["seeds"] == 5 for r in five)
  assert five[0]["mean"] == pytest.approx(
      np.mean([r["WT/dice"] for r in rows if r["model"] == "Baseline + MD"
               and r["mask"] == "1111"]) * 100
      - np.mean([r["WT/dice"] for r in rows if r["model"] == "Baseline"
                 and r["mask"] == "1111"]) * 100)


def test_each_claim_is_one_family_with_simultaneous_intervals():
  """A claim's k verdict rows each get the level 1 - 0.05 / k (Bonferroni): 1 for claim 2,
  2 for FLAIR, 6 for claim 5, one per combination for claim 3 (15), 1 or 2 for claim 3's
  means (2 with the wide baseline); each interval is paired_test's at that level."""
  rows = _rows({"Baseline": lambda k, p: 0.0, "Baseline + MD": lambda k, p: 1.0,
                "URN + MD": lambda k, p: 3.0, WIDE: lambda k, p: 2.0,
                "URN + MD pre-trained": lambda k, p: 3.0}, seeds=3)
  comparisons = claims(wide=True)
  sizes = {"1. the": 1, "1. ...": 2, "2.": 1, "3. URN": 15, "3. ...": 2, "4.": 2, "5.": 6}
  results = evaluate_claims(rows, comparisons)
  for prefix, k in sizes.items():
    family = [r for r in results if r["claim"].startswith(prefix)
              and r["combinations"] != "highest"]
    assert len(family) == k and all(r["k"] == k for r in family), prefix
    assert all(r["level"] == pytest.approx(1 - 0.05 / k) for r in family), prefix
  mean_rows = [r for r in results if r["claim"].startswith("3. ...")]
  assert [r["comparison"] for r in mean_rows] == ["URN + MD - Baseline + MD",
                                                  f"URN + MD - {WIDE}"]
  for comparison, r in zip(_claim("5.", comparisons), _claim_rows(results, "5.")):
    expected = paired_test(differences(rows, comparison)[2], level=1 - 0.05 / 6)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(
        (expected["ci_low"], expected["ci_high"]))
  one = evaluate_claims(rows, _claim("2."))[0]
  assert one["level"] == 0.95 and one["k"] == 1
  without_wide = [r for r in evaluate_claims([r for r in rows if r["model"] != WIDE])
                  if r["claim"].startswith("3. ...")]
  assert len(without_wide) == 1 and without_wide[0]["level"] == 0.95


def test_flair_is_compared_on_matched_combinations():
  """A model whose Dice only counts the inputs has no FLAIR effect matched (S + FLAIR
  against S + X have as many), though the combinations with FLAIR average more inputs
  (16/7) than those without (12/7). With Dice 10 per FLAIR, 4 per T1, 2 per T1c, 0 per T2,
  each X is in 4 of the 12 pairs: the mean difference is 10 - (4 + 2 + 0) / 3 = 8."""
  assert len(FLAIR_PAIRS) == 12 and len(set(FLAIR_PAIRS)) == 12
  assert all(x[0] == "1" and y[0] == "0" and x[1:].count("1") + 1 == y[1:].count("1")
             and sum(a != b for a, b in zip(x[1:], y[1:])) == 1 for x, y in FLAIR_PAIRS)
  counting = lambda k, p: 10.0 * k.count("1")
  weighted = lambda k, p: float(np.dot([10, 4, 2, 0], [c == "1" for c in k]))
  rows = _rows({"Baseline + MD": counting, "URN + MD": weighted}, noise=0.5)
  flair = {r["comparison"]: r for r in evaluate_claims(rows, _claim("1. ..."))}
  assert flair["Baseline + MD: S + FLAIR - S + X"]["mean"] == pytest.approx(0.0, abs=0.2)
  assert flair["Baseline + MD: S + FLAIR - S + X"]["verdict"] == "does not hold"
  assert flair["URN + MD: S + FLAIR - S + X"]["mean"] == pytest.approx(8.0, abs=0.2)
  assert flair["URN + MD: S + FLAIR - S + X"]["verdict"] == "holds"
  assert flair["URN + MD: S + FLAIR - S + X"]["pairs"] == 12
  some = [r for r in rows if r["mask"] in ("1111", "1000", "0010", "1010", "0110")]
  assert evaluate_claims(some, _claim("1. ..."))[1]["pairs"] == 2  # the pairs evaluated


def _claim_3(effects, wide=None, noise=0.5, seed=0):
  """Claim 3's results on rows where URN + MD is ``effects[key]`` above Baseline + MD on
  combination ``key`` (0 elsewhere), and the wide baseline ``wide[key]`` above it."""
  models = {"Baseline": lambda k, p: -20.0, "Baseline + MD": lambda k, p: 0.0,
            "URN + MD": lambda k, p: effects.get(k, 0.0)}
  if wide is not None:
    models[WIDE] = lambda k, p: wide.get(k, -1.0)
  rows = _rows(models, seeds=5, noise=noise, seed=seed)
  results = evaluate_claims(rows, _claim("3.", claims(wide=wide is not None)))
  return {r["combinations"]: r for r in results if r["claim"].startswith("3. URN")}


def test_claim_3_holds_on_14_of_15_not_on_13():
  """URN + MD 8 points above the rest on 13 combinations and 0.8 above on 2: highest on
  all 15, but sure of it on 13: cannot tell, where 14 would hold."""
  small = ("1000", "0100")
  thirteen = _claim_3({k: 0.8 if k in small else 8.0 for k in KEYS})
  assert thirteen["highest"]["highest_on"] == 15 and thirteen["highest"]["holds_on"] == 13
  assert all(thirteen[k]["verdict"] != "holds" for k in small)
  assert thirteen["highest"]["verdict"] == "cannot tell at this size"
  fourteen = _claim_3({k: 0.8 if k == "1000" else 8.0 for k in KEYS})
  assert fourteen["highest"]["holds_on"] == 14 and fourteen["highest"]["verdict"] == "holds"
  assert fourteen["0100"]["level"] == pytest.approx(1 - 0.05 / 15)
  assert fourteen["0100"]["k"] == 15


def test_claim_3_does_not_hold_when_another_scenario_is_higher_on_two():
  """The wide baseline beats URN + MD on two combinations: claim 3 does not hold, and those
  two combinations are tested against the wide baseline, the best there."""
  beaten = ("1111", "0011")
  results = _claim_3({k: 8.0 for k in KEYS}, wide={k: 10.0 for k in beaten})
  assert results["highest"]["highest_on"] == 13
  assert results["highest"]["verdict"] == "does not hold"
  assert results["highest"]["comparison"] == (
      "URN + MD - the best of Baseline, Baseline + MD, Baseline + MD (wide)")
  for key in beaten:
    assert results[key]["comparison"] == f"URN + MD - {WIDE}" and not results[key]["highest"]
    assert results[key]["against"][WIDE] == pytest.approx(-2.0, abs=0.5)
  assert results["0111"]["comparison"] == "URN + MD - Baseline + MD"
  one = _claim_3({k: 8.0 for k in KEYS}, wide={"1111": 10.0})
  assert one["highest"]["highest_on"] == 14 and one["highest"]["verdict"] == "holds"


def test_the_margin_reaches_every_verdict():
  """URN + MD 3 points above Baseline + MD everywhere: sure of more than 1 point, not of
  more than 10; evaluate_claims's margin decides the mean rows and claim 3's combinations."""
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 3.0}, seeds=5,
               noise=0.5)
  for margin, verdict, holds_on in ((1.0, "holds", 15),
                                    (10.0, "positive but under 10 points", 0)):
    results = evaluate_claims(rows, _claim("3."), margin=margin)
    assert next(r for r in results if r["combinations"] == "mean")["verdict"] == verdict
    assert next(r for r in results if r["combinations"] == "highest")["holds_on"] == holds_on


def test_a_run_to_run_difference_is_not_a_real_one():
  """URN + MD's seeds differ by a training-run effect of sd 4 Dice points, its mean over
  patients is 2 points above Baseline + MD: averaging the seeds per patient (or counting
  them as patients) would call that certain; across seeds it is not."""
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 0.0}, seeds=3,
               noise=1.0)
  run = {0: 6.0, 1: -2.0, 2: 2.0}  # the seeds' effects: mean 2, sd 4
  for row in rows:
    if row["model"] == "URN + MD":
      row["WT/dice"] += run[row["seed"]] / 100
  result = evaluate_claims(rows, _claim("3. ..."))[0]
  assert result["mean"] == pytest.approx(2.0, abs=0.2)
  assert result["var_seed"] == pytest.approx(16.0, rel=0.1)
  assert result["verdict"] == "cannot tell at this size"
  assert result["ci_low"] < 0 and result["df"] < 3


def test_one_seed_is_no_verdict():
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=1)
  results = evaluate_claims(rows, _claim("3."))
  assert all(r["verdict"] in (NEEDS_SEEDS, "cannot tell at this size") for r in results)
  assert all(r["verdict"] == NEEDS_SEEDS for r in results if r["combinations"] != "highest")


def test_a_missing_seed_is_an_error_not_a_silent_unpairing():
  rows = [r for r in _rows({"Baseline": lambda k, p: 0, "Baseline + MD": lambda k, p: 0})
          if not (r["model"] == "Baseline" and r["seed"] == 2 and r["case_id"] == "P03")]
  with pytest.raises(ValueError, match="not every patient has every seed"):
    evaluate_claims(rows, _claim("2."))
  with pytest.raises(ValueError, match=r"no patient and seed has rows for both 'URN \+ MD'"):
    evaluate_claims(rows, _claim("3. ..."))  # a claim about models the rows do not have
  with pytest.raises(ValueError, match=r"the rows lack 'URN \+ MD'"):
    evaluate_claims(rows, _claim("3. URN"))


def test_the_report_tests_every_run_and_names_those_not_flat(tmp_path):
  """claims.md comes from every run; one whose curve has not flattened is named and tested
  all the same (no run is left out for its curve). Baseline + MD and URN + MD (seeds 0 and
  2) have flat curves; URN + MD seed 1's is still falling. Each verdict row names its test,
  size, interval with its level, p and verdict."""
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.curves import training_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=3)
  runs = _segment_runs(tmp_path, rows, ("Baseline + MD", "URN + MD"), seeds=(0, 1, 2),
                       falling=lambda name, seed: (name, seed) == ("URN + MD", 1))
  counted = count_runs(runs)
  training_report(counted.every, tmp_path, figures=True)
  assert (tmp_path / "training.md").read_text().count("| **no** |") == 1
  assert (tmp_path / "curves_URN___MD.png").stat().st_size > 10_000
  claims_report(counted, tmp_path)
  text = (tmp_path / "claims.md").read_text()
  assert ("Not flat (training.md), tested all the same (no run is left out for its curve): "
          "URN + MD (seed 1).") in text
  results = json.loads((tmp_path / "claims.json").read_text())
  mean_rows = [r for r in results if r["combinations"] == "mean"]
  assert {r["claim"][:2] for r in mean_rows} == {"1.", "3."}  # FLAIR, and claim 3's mean
  three = [r for r in mean_rows if r["claim"][:2] == "3."]
  assert len(three) == 1 and three[0]["seeds"] == 3 and three[0]["verdict"] == "holds"
  assert all(r["patients"] == 12 for r in mean_rows)
  line = next(l for l in text.splitlines() if l.startswith("| 3. ... URN + MD against"))
  r = three[0]
  assert line == (f"| {r['claim']} | WT | URN + MD - Baseline + MD | mean of the 15 | "
                  f"t, patients x seeds crossed, Satterthwaite df {r['df']:.1f} | 12 x 3 | "
                  f"{r['mean']:+.1f} | [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}] (95 %, k = 1)"
                  f" | {r['p_value']:.3g} | {np.sqrt(r['var_patient']):.1f} / "
                  f"{np.sqrt(r['var_seed']):.1f} / {np.sqrt(r['var_residual']):.1f} | holds |")
  count = next(r for r in results if r["combinations"] == "highest")
  assert count["highest_on"] == 15  # sure on fewer: 3 seeds leave few degrees of freedom
  assert (f"| **highest on 15 of 15**, holds on {count['holds_on']} | | | "
          f"{count['mean']:+.1f} (mean of the 15) | | | | **{count['verdict']}** |") in text
  assert "(99.67 %, k = 15) |" in text


def test_a_scenario_without_every_seed_is_named_and_paired_on_the_seeds_it_has(tmp_path):
  """A seed a whole scenario lacks (a run that diverged) is not dropped in silence: the
  note names the scenario and its seeds, and its comparisons pair the seeds both have."""
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=3)
  runs = _segment_runs(tmp_path, rows, ("Baseline + MD", "URN + MD"), seeds=(0, 1, 2))
  claims_report(count_runs(runs), tmp_path)
  assert "Not every scenario" not in (tmp_path / "claims.md").read_text()
  claims_report(count_runs([r for r in runs if (r["name"], r["seed"]) != ("Baseline + MD", 2)]),
                tmp_path)
  assert ("Not every scenario has every seed (0, 1, 2): Baseline + MD (seeds 0, 1); a "
          "comparison with them pairs the seeds both sides have") in (
              tmp_path / "claims.md").read_text()
  results = json.loads((tmp_path / "claims.json").read_text())
  seeds = {r["comparison"]: r["seeds"] for r in results if r["combinations"] == "mean"}
  assert seeds == {"Baseline + MD: S + FLAIR - S + X": 2, "URN + MD: S + FLAIR - S + X": 3,
                   "URN + MD - Baseline + MD": 2}


def test_a_claim_without_paired_rows_and_a_run_without_curve_do_not_stop_the_report(tmp_path):
  """Baseline + MD evaluated on seed 0 only, URN + MD on seed 1 only: claim 3 has no pair and
  is listed as not testable; a run whose metrics.jsonl holds no evaluation (and a line cut
  short by a killed process) is 'unknown', named, and the report goes on."""
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.curves import training_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=2)
  runs = (_segment_runs(tmp_path, rows, ["Baseline + MD"], seeds=(0,))
          + _segment_runs(tmp_path, rows, ["URN + MD"], seeds=(1,)))
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "lo')
  runs.append({"name": "URN + MD", "job": "segment", "seed": 2, "workdir": str(broken),
               "rows": []})
  counted = count_runs(runs)
  training_report(counted.every, tmp_path, figures=True)
  assert "| URN + MD | 2 | no evaluation in metrics.jsonl | | | | unknown |" in (
      tmp_path / "training.md").read_text()
  claims_report(counted, tmp_path)
  text = (tmp_path / "claims.md").read_text()
  assert "URN + MD (seed 2, no curve)" in text
  assert ("Not testable with these runs:\n- 3. URN + MD is highest on at least 14 of 15 "
          "combinations (WT)") in text


def test_the_report_names_runs_whose_pretraining_did_not_flatten(tmp_path):
  """A frozen-encoder URN with a flat curve of its own is tested, but claims.md says that
  its encoders come from a pre-training still falling, and which."""
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.curves import training_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"URN + MD": lambda k, p: 0.0, "URN + MD w/ HCP": lambda k, p: 8.0}, seeds=1)
  curves = {"pretrain": [1.0 / s for s in range(1, 11)], "URN + MD": [0.1] * 10,
            "URN + MD w/ HCP": [0.1] * 10}
  runs = []
  for name, losses in curves.items():
    workdir = tmp_path / name.replace(" ", "").replace("+", "").replace("/", "")
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": 100 * s, "loss": l, "validation_loss": l}) + "\n"
        for s, l in zip(range(1, 11), losses)))
    pretrained = str(tmp_path / "pretrain") if name == "URN + MD w/ HCP" else ""
    (workdir / "config.json").write_text(json.dumps({"pretrained_workdir": pretrained}))
    job = "pretrain" if name == "pretrain" else "segment"
    runs.append({"name": "URN w/ HCP" if job == "pretrain" else name, "job": job, "seed": 0,
                 "workdir": str(workdir),
                 "rows": [r for r in rows if r["model"] == name and r["seed"] == 0]})
  counted = count_runs(runs)
  training_report(counted.every, tmp_path, figures=False)
  claims_report(counted, tmp_path)
  text = (tmp_path / "claims.md").read_text()
  assert ("their encoders come from a pre-training whose curve is not: URN + MD w/ HCP "
          "(seed 0: URN w/ HCP, 20.0 % better in its last fifth)") in text
  assert "URN + MD (seed 0" not in text.split("curve is not:")[1].split(";")[0]
  assert "| 4. pre-training helps ET and TC | TC |" in text  # still tested


def test_patients_without_enhancing_tumour_are_named_where_et_is_read(tmp_path):
  """Table 1 and claims.md name the test patients with no ET: their ET Dice is 100 or 0,
  and one of 12 moves an ET mean by 8.3 points."""
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.curves import training_report
  from urn_jax.evaluation.runs import count_runs
  from urn_jax.evaluation.tables import segmentation_table
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=1)
  runs = _segment_runs(tmp_path, rows, ("Baseline + MD", "URN + MD"))
  cases = [f"P{p:02d}" for p in range(12)]
  tumours = {c: {"WT": 50.0, "TC": 20.0, "ET": 0.0 if c in ("P03", "P07") else 5.0}
             for c in cases}
  counted = count_runs(runs)
  training_report(counted.every, tmp_path, figures=False)
  segmentation_table(runs, tmp_path, cases=cases, tumours=tumours)
  claims_report(counted, tmp_path, cases, tumours)
  sentence = ("Without ET (2 of 12): P03, P07; their ET Dice is 100 where a model predicts "
              "no ET voxel and 0 where it predicts any, so each moves a mean over the "
              "patients by 8.3 points.")
  assert "P11. " + sentence in (tmp_path / "table1.md").read_text()
  assert sentence in (tmp_path / "claims.md").read_text()
  assert "Without WT" not in (tmp_path / "table1.md").read_text()
  segmentation_table(runs, tmp_path, cases=cases, tumours={c: {**tumours[c], "ET": 5.0}
                                                           for c in cases})
  assert "Without" not in (tmp_path / "table1.md").read_text()


def test_the_fine_tuned_scenario_is_tested_beyond_the_papers_claims():
  """With the fifth scenario in the rows, claims 6 (fine-tuned beats frozen) and 7
  (beats end to end) are tested too; here fine-tuning is built in to help by 5 points over
  frozen encoders that help nothing."""
  rows = _rows({"Baseline": lambda k, p: -10.0 * (k != "1111"),
                "Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0,
                "URN + MD w/ HCP": lambda k, p: 8.0,
                "URN + MD w/ HCP, fine-tuned": lambda k, p: 13.0})
  results = {(r["claim"][:2], r["region"]): r for r in evaluate_claims(rows)
             if r["combinations"] == "mean"}
  for region in ("WT", "TC", "ET"):
    assert results["6.", region]["verdict"] == results["7.", region]["verdict"] == "holds"
    assert results["6.", region]["mean"] == pytest.approx(5.0, abs=1.0)
  assert results["4.", "TC"]["verdict"] == "does not hold"
  without = evaluate_claims([r for r in rows if "fine-tuned" not in r["model"]])
  assert not [r for r in without if r["claim"][:2] in ("6.", "7.")]


def test_a_difference_made_by_one_patient_without_et_is_shown_without_that_patient(tmp_path):
  """A patient with no ET gets ET Dice 100 from a model that predicts none and 0 from one
  that predicts a voxel: here that patient alone makes URN + MD's ET look 8 points better
  than Baseline's (claim 5). claims.md repeats the ET test on the patients with ET, where
  the difference vanishes."""
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.curves import training_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline": lambda k, p: 0.0, "URN + MD": lambda k, p: 0.0}, seeds=2,
               noise=0.0)
  for row in rows:
    if row["case_id"] == "P03":
      row["ET/dice"] = 1.0 if row["model"] == "URN + MD" else 0.0
  runs = _segment_runs(tmp_path, rows, ("Baseline", "URN + MD"), seeds=(0, 1))
  cases = [f"P{p:02d}" for p in range(12)]
  tumours = {c: {"WT": 50.0, "TC": 20.0, "ET": 0.0 if c == "P03" else 5.0} for c in cases}
  counted = count_runs(runs)
  training_report(counted.every, tmp_path, figures=False)
  claims_report(counted, tmp_path, cases, tumours)
  results = json.loads((tmp_path / "claims.json").read_text())
  et = [r for r in results if r["region"] == "ET" and r["combinations"] == "mean"]
  everyone, with_et = (next(r for r in et if ("subset" in r) == only) for only in (False, True))
  assert everyone["patients"] == 12 and everyone["mean"] == pytest.approx(100 / 12)
  assert with_et["patients"] == 11 and with_et["subset"] == "patients with ET"
  assert with_et["mean"] == pytest.approx(0.0) and with_et["verdict"] == "does not hold"
  assert ("| all four, patients with ET only | t, patients x seeds crossed, Satterthwaite df "
          "10.0 | 11 x 2 |") in (tmp_path / "claims.md").read_text()
  assert not any("subset" in r for r in results if r["region"] != "ET")


@pytest.mark.slow  # over 10 s on 2 cores
def test_a_run_that_has_not_flattened_stays_in_the_tables_named(tmp_path):
  """No run is left out for its curve: two seeds of URN + MD, seed 1's loss still falling
  by half in its last fifth and its Dice built 30 points lower. Table 1 averages both seeds
  (the spread shows the difference) and names seed 1 as not flat, claims.md too, and
  cases.csv keeps both seeds' rows."""
  import csv
  from urn_jax.evaluation.claims_report import main as claims_report_main
  from urn_jax.evaluation.report import write_report
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0,
                "Baseline": lambda k, p: 0.0}, seeds=2, noise=0.0)
  for row in rows:
    row.update({f"{r}/hd95": 5.0 for r in ("WT", "TC", "ET")})
    if row["model"] == "URN + MD" and row["seed"] == 1:
      row.update({f"{r}/dice": row[f"{r}/dice"] - 0.3 for r in ("WT", "TC", "ET")})
  falling = lambda name, seed: (name, seed) in (("URN + MD", 1), ("Baseline", 0))
  runs = (_segment_runs(tmp_path, rows, ("Baseline + MD", "URN + MD"), seeds=(0, 1),
                        falling=falling)
          + _segment_runs(tmp_path, rows, ("Baseline",), falling=falling))
  cases = [f"P{p:02d}" for p in range(12)]
  tumours = {c: {"WT": 50.0, "TC": 20.0, "ET": 0.0 if c == "P05" else 5.0} for c in cases}
  for run in runs:  # as the study records them
    run.update(parameters=1000 + len(run["name"]), converged=run["name"] != "Baseline")
  write_report(runs, tmp_path / "out", figure_case=cases[0], figures=False, cases=cases,
               tumours=tumours)
  out = tmp_path / "out"
  # claims.md again from the folder's files alone, byte for byte; a changed Dice shows
  assert claims_report_main([str(out), "--out", str(tmp_path / "again")]) == 0
  assert (tmp_path / "again" / "claims.json").read_text() == (out / "claims.json").read_text()
  text = (out / "cases.csv").read_text()
  (out / "cases.csv").write_text(text.replace(",0.5", ",0.4", 1))
  assert ",0.5" in text and claims_report_main([str(out)]) == 1
  table = list(csv.DictReader(open(out / "table1.csv")))
  mean = next(r for r in table if r["mask"] == "mean")
  both = [np.mean([100 * r["WT/dice"] for r in rows if r["model"] == "URN + MD"
                   and r["seed"] == seed]) for seed in (0, 1)]
  assert float(mean["URN + MD: WT"]) == pytest.approx(np.mean(both), abs=0.01)
  assert float(mean["URN + MD: WT spread"]) == pytest.approx(15.0, abs=0.01)  # half of 30
  note = ("points. Not flat (training.md), in the table all the same (no run is left out "
          "for its curve): URN + MD (seed 1), Baseline (seed 0).")  # after the ET sentence
  assert note in (out / "table1.md").read_text()
  assert "URN + MD (seed 1)" in (out / "claims.md").read_text()
  kept = list(csv.DictReader(open(out / "cases.csv")))
  assert {(r["model"], r["seed"]) for r in kept} == {(n, str(s)) for n in
                                                      ("Baseline + MD", "URN + MD")
                                                      for s in (0, 1)} | {("Baseline", "0")}


def test_a_verdict_on_a_scenario_not_shown_converged_says_so(tmp_path):
  """The study records, per run, whether a run twice as long showed it converged: a verdict
  that rests on a scenario not shown converged is labelled, in claims.md and claims.json;
  evaluations that record nothing label nothing."""
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=2)
  runs = _segment_runs(tmp_path, rows, ("Baseline + MD", "URN + MD"), seeds=(0, 1))
  for folder in ("unchecked", "checked"):
    (tmp_path / folder).mkdir()
  claims_report(count_runs(runs), tmp_path / "unchecked")
  assert "not shown converged" not in (tmp_path / "unchecked" / "claims.md").read_text().lower()
  for run in runs:
    run["converged"] = run["name"] == "Baseline + MD" or (None if run["seed"] else False)
  claims_report(count_runs(runs), tmp_path / "checked")
  text = (tmp_path / "checked" / "claims.md").read_text()
  assert "Not shown converged (convergence.md" in text and ": URN + MD; a verdict" in text
  verdicts = [line for line in text.splitlines() if line.startswith("| 3.")]
  assert verdicts and all(line.endswith("(not shown converged: URN + MD) |")
                          for line in verdicts)
  flair = [line for line in text.splitlines() if line.startswith("| 1.")]
  assert [line.endswith("(not shown converged: URN + MD) |") for line in flair] == [
      "| URN + MD: S + FLAIR" in line for line in flair] and len(flair) == 2
  results = json.loads((tmp_path / "checked" / "claims.json").read_text())
  for r in results:
    assert r.get("not_shown_converged") == (["URN + MD"] if "URN + MD" in r["comparison"]
                                            else None), r["comparison"]


def test_a_run_that_diverged_is_named_and_its_seed_left_out(tmp_path):
  """A run whose loss diverged has no scores: the claims' report names it, its scenario's
  comparisons pair the seeds it has, and runs.json keeps it so that the report made again
  from the results folder says the same."""
  import dataclasses
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.runs import count_runs, counted_from_records, run_records
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=3)
  runs = _segment_runs(tmp_path, rows, ("Baseline + MD", "URN + MD"), seeds=(0, 1, 2))
  kept = [r for r in runs if (r["name"], r["seed"]) != ("URN + MD", 1)]
  stopped = [{"name": "URN + MD", "job": "segment", "seed": 1, "workdir": "seed1/urn_md",
              "diverged": "the loss became nan by step 300"}]
  counted = dataclasses.replace(count_runs(kept), diverged=stopped)
  claims_report(counted, tmp_path)
  text = (tmp_path / "claims.md").read_text()
  assert ("Diverged, so neither scored nor tested, their seed missing from their scenario "
          "(docs/STUDY_PLAN.md): URN + MD (seed 1).") in text
  assert "Not every scenario has every seed (0, 1, 2): URN + MD (seeds 0, 2)" in text
  results = json.loads((tmp_path / "claims.json").read_text())
  assert {r["seeds"] for r in results if r["comparison"] == "URN + MD - Baseline + MD"} == {2}
  again = counted_from_records(run_records(kept + stopped), [r for r in rows if (
      r["model"], r["seed"]) != ("URN + MD", 1)])
  assert again.diverged == stopped and len(again.tested) == 5
  (tmp_path / "again").mkdir()
  claims_report(again, tmp_path / "again")
  assert (tmp_path / "again" / "claims.md").read_text() == text


def test_recomputing_the_claims_names_what_a_folder_lacks(tmp_path, capsys):
  from urn_jax.evaluation.claims_report import main
  (tmp_path / "runs.json").write_text("[]")
  assert main([str(tmp_path)]) == 2
  assert f"missing {tmp_path / 'cases.csv'}" in capsys.readouterr().err


def test_verdicts_md_has_each_claims_deciding_row_and_no_row_per_combination(tmp_path):
  """verdicts.md: one row per claim, region and comparison that claims.md decides on a mean
  (claim 3: its count of the combinations where URN + MD is highest), each with claims.md's
  verdict; claim 3's 15 rows per combination only in claims.md."""
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline": lambda k, p: -20.0 if k != "1111" else 0.0,
                "Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=3)
  runs = _segment_runs(tmp_path, rows, ("Baseline", "Baseline + MD", "URN + MD"),
                       seeds=(0, 1, 2))
  claims_report(count_runs(runs), tmp_path)
  results = json.loads((tmp_path / "claims.json").read_text())
  lines = (tmp_path / "verdicts.md").read_text().splitlines()
  body = [l for l in lines if l.startswith("| ") and not l.startswith("| claim |")]
  deciding = [r for r in results if r["combinations"] in ("mean", "highest")]
  per_combination = [r for r in results if r["combinations"] not in ("mean", "highest")]
  assert len(per_combination) == 15 and len(body) == len(deciding) >= 6
  for line, r in zip(body, deciding):
    assert line.startswith(f"| {r['claim']} | {r['region']} | {r['comparison']} |")
    assert line.endswith(f"**{r['verdict']}** |")
  count = next(r for r in deciding if r["combinations"] == "highest")
  assert f"highest on {count['highest_on']}, holds on {count['holds_on']}" in "\n".join(body)
  assert "●" not in "\n".join(lines)
