"""The claims' test statistic (``paired_test``) and verdicts, by hand and by simulation:
patients and seeds are crossed random effects, so run-to-run variation widens the interval;
the interval has the level asked for; the p-value is one-sided; the verdicts cannot
overlap and rest on the margin."""

import numpy as np
import pytest
from scipy import stats

from urn_jax.evaluation.claims import _highest_verdict
from urn_jax.evaluation.paired import NEEDS_SEEDS, paired_test, verdict


def test_a_3x2_matrix_by_hand():
  """x = [[1, 5], [2, 8], [6, 8]] (3 patients, 2 seeds). Row means 3, 5, 7; column means
  3, 7; m = 5. MS_p = 2 * var(3, 5, 7) = 2 * 4 = 8; MS_s = 3 * var(3, 7) = 3 * 8 = 24.
  Residuals x - row - column + m: [[0, 0], [-1, 1], [1, -1]], sum of squares 4 over
  (3 - 1)(2 - 1) = 2: MS_e = 2. V = (8 + 24 - 2) / 6 = 5 (not below MS_e / 6).
  df = 30^2 / (8^2 / 2 + 24^2 / 1 + 2^2 / 2) = 900 / 610. Components: patient
  (8 - 2) / 2 = 3, seed (24 - 2) / 3 = 22 / 3, residual 2 (3 / 3 + 22 / 3 / 2 + 2 / 6 = 5)."""
  r = paired_test([[1, 5], [2, 8], [6, 8]])
  df, se = 900 / 610, np.sqrt(5.0)
  assert (r["patients"], r["seeds"], r["mean"]) == (3, 2, 5.0)
  assert r["df"] == pytest.approx(df) and r["se"] == pytest.approx(se)
  assert (r["var_patient"], r["var_seed"], r["var_residual"]) == pytest.approx((3, 22 / 3, 2))
  half = stats.t.ppf(0.975, df) * se
  assert (r["ci_low"], r["ci_high"]) == pytest.approx((5 - half, 5 + half))
  assert r["level"] == 0.95
  assert r["p_value"] == pytest.approx(stats.t.sf(5 / se, df))  # one-sided
  assert r["verdict"] == "cannot tell at this size"  # 1.5 df: wide as it should be


def test_components_estimated_below_zero_count_as_zero_by_hand():
  """x = [[1, 3], [2, 6], [6, 4]]: row means 2, 4, 5, column means 3, 13/3, m = 11/3.
  MS_p = 2 * (25 + 1 + 16) / 9 / 2 = 14/3; MS_s = 3 * (4/3)^2 / 2 = 8/3; residuals
  [[-1, 1], [-4, 4], [5, -5]] / 3, sum of squares 84/9 over 2: MS_e = 14/3. Both components
  estimate 0 or less ((14/3 - 14/3) / 2 = 0, (8/3 - 14/3) / 3 = -2/3): V = MS_e / 6 = 7/9
  with MS_e's own df, (3 - 1)(2 - 1) = 2."""
  r = paired_test([[1, 3], [2, 6], [6, 4]])
  assert r["df"] == pytest.approx(2.0) and r["se"] == pytest.approx(np.sqrt(7 / 9))
  assert (r["var_patient"], r["var_seed"], r["var_residual"]) == pytest.approx((0, 0, 14 / 3))
  half = stats.t.ppf(0.975, 2) * np.sqrt(7 / 9)
  assert (r["ci_low"], r["ci_high"]) == pytest.approx((11 / 3 - half, 11 / 3 + half))


def test_only_the_patients_component_positive_by_hand():
  """x = [[0, 1], [10, 10], [20, 19]]: row means 0.5, 10, 19.5, column means 10, 10, m = 10.
  MS_s = 0; MS_p = 2 * var(0.5, 10, 19.5) = 2 * 90.25 = 180.5; residuals [[-0.5, 0.5],
  [0, 0], [0.5, -0.5]], sum of squares 1 over 2: MS_e = 0.5. The seeds' component is
  negative, so V = MS_p / 6 with MS_p's df, 3 - 1 = 2 (not the Satterthwaite of all three,
  whose negative seed term would shrink V)."""
  r = paired_test([[0, 1], [10, 10], [20, 19]])
  assert r["var_seed"] == 0 and r["var_patient"] == pytest.approx((180.5 - 0.5) / 2)
  assert r["se"] == pytest.approx(np.sqrt(180.5 / 6)) and r["df"] == pytest.approx(2.0)


def test_the_level_sets_the_quantile():
  x = [[1, 5], [2, 8], [6, 8]]
  r = paired_test(x, level=1 - 0.05 / 6)
  assert r["level"] == pytest.approx(1 - 0.05 / 6)
  assert r["ci_high"] - r["mean"] == pytest.approx(
      stats.t.ppf(1 - 0.025 / 6, 900 / 610) * np.sqrt(5.0))


def test_the_p_value_is_one_sided():
  """A clearly negative mean has p near 1 (mean <= 0 is not rejected); a two-sided test
  would call it significant."""
  rng = np.random.default_rng(0)
  negative = paired_test(rng.normal(-5, 1, (12, 5)))
  assert negative["p_value"] > 0.99
  positive = paired_test(rng.normal(5, 1, (12, 5)))
  assert positive["p_value"] < 0.01


def test_fewer_than_two_seeds_or_patients_is_never_a_verdict():
  for matrix in (np.full((12, 1), 30.0), np.full((1, 5), 30.0), [[30.0]]):
    r = paired_test(matrix)
    assert r["verdict"] == NEEDS_SEEDS == "cannot tell (needs >= 2 patients and 2 seeds)"
    assert np.isnan(r["ci_low"]) and np.isnan(r["ci_high"]) and r["mean"] == 30.0


def test_a_matrix_without_variation():
  assert paired_test(np.full((3, 2), 4.0))["ci_low"] == 4.0
  assert paired_test(np.full((3, 2), 4.0))["verdict"] == "holds"
  assert paired_test(np.zeros((3, 2)))["verdict"] == "does not hold"
  assert paired_test(np.zeros((3, 2)))["p_value"] == 1.0


def test_the_verdicts_cannot_overlap():
  """Every interval gets exactly the verdict its definition gives, an interval inside
  (0, 1) is "positive but under 1 point" and never "holds"."""
  assert verdict(1.2, 5.0) == "holds"
  assert verdict(0.2, 0.8) == "positive but under 1 point"
  assert verdict(-0.5, 0.8) == "does not hold"
  assert verdict(-3.0, -1.0) == "does not hold"
  assert verdict(0.0, 0.5) == "does not hold"  # reaches 0
  assert verdict(0.5, 1.5) == "cannot tell at this size"
  assert verdict(-1.0, 3.0) == "cannot tell at this size"
  assert verdict(float("nan"), float("nan")) == "cannot tell at this size"
  grid = np.linspace(-3, 3, 25)
  for low in grid:
    for high in grid[grid >= low]:
      v = verdict(low, high)
      assert (v == "holds") == (low > 1)
      assert (v == "positive but under 1 point") == (0 < low and high < 1)
      assert (v == "does not hold") == (high < 1 and low <= 0)


def test_the_margin_decides():
  """The same interval against another margin; and paired_test passes its margin on."""
  assert verdict(0.5, 3.0, margin=0.25) == "holds"
  assert verdict(0.5, 3.0, margin=4.0) == "positive but under 4 points"
  assert verdict(-0.5, 3.0, margin=4.0) == "does not hold"
  x = np.array([[3.0, 3.2], [2.8, 3.1], [3.0, 2.9]])  # interval about [2, 4]
  assert paired_test(x)["verdict"] == "holds"
  assert paired_test(x, margin=5.0)["verdict"] == "positive but under 5 points"


def test_claim_3_needs_14_of_15():
  """Holds on 14 of 15: holds; on 13 (the other 2 highest but uncertain): cannot tell; not
  highest on 2: does not hold."""
  def results(holds, uncertain, lower):
    return ([{"verdict": "holds", "highest": True}] * holds
            + [{"verdict": "cannot tell at this size", "highest": True}] * uncertain
            + [{"verdict": "does not hold", "highest": False}] * lower)
  assert _highest_verdict(results(15, 0, 0)) == "holds"
  assert _highest_verdict(results(14, 0, 1)) == "holds"
  assert _highest_verdict(results(14, 1, 0)) == "holds"
  assert _highest_verdict(results(13, 2, 0)) == "cannot tell at this size"
  assert _highest_verdict(results(13, 1, 1)) == "cannot tell at this size"
  assert _highest_verdict(results(13, 0, 2)) == "does not hold"
  assert _highest_verdict(results(0, 15, 0)) == "cannot tell at this size"


def _simulate(effect, replicates=2000, seed=0):
  """The study's design: 12 patients, 5 seeds; patient sd 1, seed sd 3, residual sd 1
  (Dice points) around a true mean difference ``effect``."""
  rng = np.random.default_rng(seed)
  patients, seeds = 12, 5
  x = (effect + rng.normal(0, 1, (replicates, patients, 1))
       + rng.normal(0, 3, (replicates, 1, seeds))
       + rng.normal(0, 1, (replicates, patients, seeds)))
  return [paired_test(m) for m in x]


def test_the_design_by_simulation():
  """With the study's design, the interval covers the true difference as often as its
  level says (seed variation in the interval), and "holds" comes by chance rarely, also
  at a true difference of exactly the margin. 2000 replicates each, from a fixed seed."""
  none = _simulate(0.0, seed=1)
  assert np.mean([r["verdict"] == "holds" for r in none]) <= 0.05
  at_margin = _simulate(1.0, seed=2)
  assert np.mean([r["verdict"] == "holds" for r in at_margin]) <= 0.05
  two = _simulate(2.0, seed=3)
  covered = np.mean([r["ci_low"] < 2.0 < r["ci_high"] for r in two])
  assert 0.93 <= covered <= 0.98
  assert np.median([r["df"] for r in two]) < 10  # 5 seeds, not 60 values, carry the error


def test_every_mutation_the_benchmark_tries_is_still_in_the_code():
  """benchmarks/claims_mutations.py tries its mistakes on the code's text: a change that
  moves one of those lines would leave the mutation untried (the benchmark says "not
  applied"); here it fails first, so the list is kept up to date with the code."""
  import importlib.util

  from conftest import ROOT
  spec = importlib.util.spec_from_file_location(
      "claims_mutations", ROOT / "benchmarks" / "claims_mutations.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert len(module.MUTATIONS) >= 25
  for what, file, old, new in module.MUTATIONS:
    assert (ROOT / file).read_text().count(old) == 1, (what, file)
    assert old != new, what
