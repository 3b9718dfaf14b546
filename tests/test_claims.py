"""The claims' paired statistics: differences are paired by patient and seed, an effect
that is there is found, one that is not is not claimed, and the verdict says which."""

import numpy as np
import pytest

from urn_jax.evaluation.claims import (Comparison, claims, differences, evaluate_claims, holm,
                             paired_test)
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


def test_the_five_claims_on_rows_where_each_is_built_in():
  no_flair = lambda k, p: -30 * (k[0] == "0")  # the baseline needs FLAIR
  rows = _rows({
      "Baseline": lambda k, p: no_flair(k, p) - 10 * (k != "1111"),
      "Baseline + MD": lambda k, p: 0.0,  # recovers, and no gain with all four
      "URN + MD": lambda k, p: 8.0,
      "URN + MD pre-trained": lambda k, p: 8.0,  # pre-training changes nothing
  })
  results = {(r["claim"][:2], r["region"], r["combinations"]): r
             for r in evaluate_claims(rows)}
  verdict = lambda claim, region, combination="mean": \
      results[claim, region, combination]["verdict"]
  assert verdict("1.", "WT") == "holds"
  assert [r["verdict"] for r in evaluate_claims(rows, claims()[1:2])] == ["holds"]
  assert verdict("2.", "WT") == "holds"
  assert all(verdict("3.", region, key) == "holds" for region in ("WT", "TC", "ET")
             for key in ["mean", "most"] + KEYS)
  assert verdict("4.", "TC") == verdict("4.", "ET") == "does not hold"  # built in: no gain
  assert all(verdict("5.", region) == "does not hold" for region in ("WT", "TC", "ET"))
  assert all(results["5.", r, "mean"]["patients"] == 12 for r in ("WT", "TC", "ET"))
  assert results["5.", "WT", "mean"]["mean"] == pytest.approx(
      np.mean([r["WT/dice"] for r in rows if r["model"] == "Baseline + MD"
               and r["mask"] == "1111"]) * 100
      - np.mean([r["WT/dice"] for r in rows if r["model"] == "Baseline"
                 and r["mask"] == "1111"]) * 100)


def test_holm_adjusts_one_family_step_down():
  np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])


def _claim_3_wt(rows):
  results = evaluate_claims(rows, [c for c in claims()
                                   if c.claim.startswith("3.") and c.region == "WT"])
  return {r["combinations"]: r for r in results}


def test_one_combination_of_fifteen_passing_alone_is_not_a_verdict():
  """Claim 3 is tested on 15 combinations: an effect that one test alone would call real
  (p 0.013, interval above 0) is not, once adjusted for the 14 others."""
  rows = _rows({"Baseline + MD": lambda k, p: 0.0,
                "URN + MD": lambda k, p: 1.0 * (k == "1010")
                + 8.0 * (k in ("1111", "0111", "0011"))}, seed=3)
  results = _claim_3_wt(rows)
  alone = results["1010"]
  assert alone["p_value"] < 0.05 and alone["ci_low"] > 0  # one test alone: "holds"
  assert alone["p_holm"] > 0.05 and alone["verdict"] == "cannot tell at this size"
  assert all(results[k]["verdict"] == "holds" for k in ("1111", "0111", "0011"))
  assert results["most"]["holds_on"] == 3


def test_most_combinations_is_judged_on_the_count():
  """Better on 3 combinations of 15 and the same (within 1 Dice point, surely) on the
  other 12: "beats Baseline + MD on most combinations" does not hold, although the mean
  over the 15 is better."""
  rows = _rows({"Baseline + MD": lambda k, p: 0.0,
                "URN + MD": lambda k, p: 8.0 * (k in ("1111", "0111", "0011"))}, noise=0.5)
  results = _claim_3_wt(rows)
  assert results["mean"]["verdict"] == "holds"
  assert (results["most"]["holds_on"], results["most"]["fails_on"]) == (3, 12)
  assert results["most"]["verdict"] == "does not hold"


def test_a_missing_seed_is_an_error_not_a_silent_unpairing():
  rows = [r for r in _rows({"Baseline": lambda k, p: 0, "Baseline + MD": lambda k, p: 0})
          if not (r["model"] == "Baseline" and r["seed"] == 2 and r["case_id"] == "P03")]
  with pytest.raises(ValueError, match="not every patient has every seed"):
    evaluate_claims(rows, claims()[2:3])
  with pytest.raises(ValueError, match=r"no patient and seed has rows for both 'URN \+ MD'"):
    evaluate_claims(rows, claims()[3:4])  # a claim about models the rows do not have


def test_the_report_tests_the_claims_on_flat_runs_only(tmp_path):
  """claims.md comes from the runs whose curves flattened; the others are named as left out.
  Baseline + MD and URN + MD (seed 0) have flat curves; URN + MD seed 1's is still falling."""
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.curves import training_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=2)
  runs = _segment_runs(tmp_path, rows, ("Baseline + MD", "URN + MD"), seeds=(0, 1),
                       falling=lambda name, seed: (name, seed) == ("URN + MD", 1))
  counted = count_runs(runs)
  training_report(counted.every, tmp_path, figures=True)
  assert (tmp_path / "training.md").read_text().count("| **no** |") == 1
  assert (tmp_path / "curves_URN___MD.png").stat().st_size > 10_000
  claims_report(counted, tmp_path)
  text = (tmp_path / "claims.md").read_text()
  assert "Left out, their curves not flat: URN + MD (seed 1)." in text
  results = json.loads((tmp_path / "claims.json").read_text())
  mean_rows = [r for r in results if r["combinations"] == "mean"]
  assert {r["claim"][:2] for r in mean_rows} == {"3."}  # the only claim these models test
  assert all(r["patients"] == 12 and r["seeds"] == 1 and r["verdict"] == "holds"
             for r in mean_rows)


def test_a_claim_without_paired_rows_and_a_run_without_curve_do_not_stop_the_report(tmp_path):
  """Baseline + MD flat only on seed 0, URN + MD only on seed 1: claim 3 has no pair and is
  listed as not testable; a run whose metrics.jsonl holds no evaluation (and a line cut
  short by a killed process) is 'unknown', left out, and the report goes on."""
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.curves import training_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 8.0}, seeds=2)
  flat_seed = {"Baseline + MD": 0, "URN + MD": 1}
  runs = _segment_runs(tmp_path, rows, flat_seed, seeds=(0, 1),
                       falling=lambda name, seed: seed != flat_seed[name])
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
  assert "Not testable with these runs:\n- 3. URN + MD beats Baseline + MD (WT)" in text


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
  that predicts a voxel: here that patient alone makes URN + MD's ET look 8 points better.
  claims.md repeats the ET test on the patients with ET, where the difference vanishes."""
  import json
  from urn_jax.evaluation.claims_report import claims_report
  from urn_jax.evaluation.curves import training_report
  from urn_jax.evaluation.runs import count_runs
  rows = _rows({"Baseline + MD": lambda k, p: 0.0, "URN + MD": lambda k, p: 0.0}, seeds=1,
               noise=0.0)
  for row in rows:
    if row["case_id"] == "P03":
      row["ET/dice"] = 1.0 if row["model"] == "URN + MD" else 0.0
  runs = _segment_runs(tmp_path, rows, ("Baseline + MD", "URN + MD"))
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
  assert "| mean, patients with ET only | 11 x 1 |" in (tmp_path / "claims.md").read_text()
  assert not any("subset" in r for r in results if r["region"] != "ET")


@pytest.mark.slow  # over 10 s on 2 cores
def test_a_run_that_has_not_flattened_is_left_out_of_the_tables(tmp_path):
  """A model whose validation loss has not flattened is not reported as a result.
  Two seeds of URN + MD: seed 1's loss still falls by half in its last fifth and its Dice is
  built 30 points lower; Table 1 is seed 0's alone and names seed 1, claims.md too, and
  cases.csv keeps both seeds' rows."""
  import csv
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
  write_report(runs, tmp_path / "out", figure_case=cases[0], figures=False, cases=cases)
  out = tmp_path / "out"
  table = list(csv.DictReader(open(out / "table1.csv")))
  mean = next(r for r in table if r["mask"] == "mean")
  seed0 = np.mean([100 * r["WT/dice"] for r in rows if r["model"] == "URN + MD"
                   and r["seed"] == 0])
  assert float(mean["URN + MD: WT"]) == pytest.approx(seed0, abs=0.01)
  assert float(mean["URN + MD: WT spread"]) == 0.0  # one run left
  note = ("P11. Left out, their curves not flat (training.md): URN + MD (seed 1). Not flat, "
          "and shown only for want of a flat run of their scenario: not results "
          "(training.md): Baseline (seed 0).")
  assert note in (out / "table1.md").read_text()
  assert "Baseline: WT" in mean  # a scenario without any flat run stays, marked
  assert "URN + MD (seed 1)" in (out / "claims.md").read_text()
  kept = list(csv.DictReader(open(out / "cases.csv")))
  assert {(r["model"], r["seed"]) for r in kept} == {(n, str(s)) for n in
                                                      ("Baseline + MD", "URN + MD")
                                                      for s in (0, 1)} | {("Baseline", "0")}
