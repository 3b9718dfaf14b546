"""The paired test behind every claim (``urn_jax.evaluation.claims``): is the mean of a
matrix of paired differences [patients, seeds] above a margin, with patients and seeds as
crossed random effects?

A patient is a draw from the patients a claim is about, a training run (seed) a draw from
the runs the recipe can give, and a difference can depend on either. The matrix is a
two-way random-effects ANOVA without replication:
- m = the grand mean; MS_p = S * var(row means, ddof=1); MS_s = P * var(column means,
  ddof=1); MS_e = the sum of the squared residuals (x - row mean - column mean + m) over
  (P - 1)(S - 1);
- the variance components by the method of moments, each truncated at 0 (the usual rule
  at the boundary): var_patient = max(0, (MS_p - MS_e) / S), var_seed = max(0, (MS_s -
  MS_e) / P), var_residual = MS_e; Var(m) is estimated as V = var_patient / P + var_seed /
  S + var_residual / (P S), which is (MS_p + MS_s - MS_e) / (P S) when both components are
  positive, MS_p / (P S) when only the patients' is, MS_s / (P S) when only the seeds' is,
  and MS_e / (P S) when neither is;
- degrees of freedom by Satterthwaite for that combination of mean squares (sum c_i MS_i,
  each MS_i with its own degrees of freedom d_i: P - 1, S - 1, (P - 1)(S - 1)):
  df = (sum c_i MS_i)^2 / sum (c_i MS_i)^2 / d_i; with both components positive,
  df = (MS_p + MS_s - MS_e)^2 / (MS_p^2 / (P-1) + MS_s^2 / (S-1) + MS_e^2 / ((P-1)(S-1)));
- the interval: m +- t(df, 1 - (1 - level) / 2) sqrt(V); the p-value, reported beside it
  and deciding nothing: one-sided t test of mean <= 0 against mean > 0;
- a matrix without any variation (every mean square 0) has V = 0: the interval [m, m],
  p = 0 when m > 0, else 1;
- with fewer than 2 patients or 2 seeds no interval can include both sources of variation:
  the interval is NaN and the verdict "cannot tell (needs >= 2 patients and 2 seeds)".
The three variance components are reported with the result.

The verdict (``verdict``) rests on the interval alone, against a margin of 1 Dice point,
in four categories that cannot overlap: **holds** when the interval lies above the margin;
**positive but under 1 point** when it lies above 0 and below the margin; **does not
hold** when it lies below the margin and reaches 0 or below; otherwise **cannot tell at
this size**.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

ALPHA = 0.05  # family-wise error rate of each claim's intervals
MARGIN = 1.0  # Dice points: a difference below it is not the one a claim means
NEEDS_SEEDS = "cannot tell (needs >= 2 patients and 2 seeds)"
TEST = "t, patients x seeds crossed, Satterthwaite df"


def paired_test(matrix, margin: float = MARGIN, level: float = 1 - ALPHA) -> dict:
  """Tests that the mean of ``matrix [patients, seeds]`` (paired differences) is positive,
  patients and seeds crossed random effects (the module's docstring has the formulas): a
  variance component estimated below 0 counts as 0, and the degrees of freedom are
  Satterthwaite's for the mean squares that V then rests on. A matrix without any
  variation (V = 0) has the interval [m, m] and p 0 when m > 0, else 1.

  Returns patients, seeds, mean, ci_low, ci_high, level, df, se, p_value (one-sided,
  mean > 0; reported, not used for the verdict), the variance components var_patient,
  var_seed, var_residual, and the verdict."""
  x = np.asarray(matrix, np.float64)
  patients, seeds = x.shape
  m = float(x.mean())
  result = {"patients": patients, "seeds": seeds, "mean": m, "level": float(level),
            "test": TEST}
  if patients < 2 or seeds < 2:
    nan = float("nan")
    return {**result, "ci_low": nan, "ci_high": nan, "df": nan, "se": nan, "p_value": nan,
            "var_patient": nan, "var_seed": nan, "var_residual": nan,
            "verdict": NEEDS_SEEDS}
  row, column = x.mean(axis=1), x.mean(axis=0)
  ms_p = seeds * float(row.var(ddof=1))
  ms_s = patients * float(column.var(ddof=1))
  df_e = (patients - 1) * (seeds - 1)
  ms_e = float(((x - row[:, None] - column[None, :] + m) ** 2).sum()) / df_e
  var_patient, var_seed = max(0.0, (ms_p - ms_e) / seeds), max(0.0, (ms_s - ms_e) / patients)
  # V * P * S as (coefficient, mean square, its degrees of freedom) terms.
  terms = [(1.0, ms_p, patients - 1)] if var_patient > 0 else []
  terms += [(1.0, ms_s, seeds - 1)] if var_seed > 0 else []
  terms += [(1.0 - len(terms), ms_e, df_e)]
  numerator = sum(c * ms for c, ms, _ in terms)
  spread = sum((c * ms) ** 2 / d for c, ms, d in terms)
  df = numerator ** 2 / spread if spread > 0 else float(df_e)
  se = float(np.sqrt(max(numerator, 0.0) / (patients * seeds)))
  if se > 0:
    half = float(stats.t.ppf(1 - (1 - level) / 2, df)) * se
    p_value = float(stats.t.sf(m / se, df))
  else:  # every mean square 0: the matrix is one number repeated
    half, p_value = 0.0, 0.0 if m > 0 else 1.0
  result.update({"ci_low": m - half, "ci_high": m + half, "df": float(df), "se": se,
                 "p_value": p_value, "var_patient": var_patient, "var_seed": var_seed,
                 "var_residual": ms_e})
  return {**result, "verdict": verdict(result["ci_low"], result["ci_high"], margin)}


def verdict(ci_low: float, ci_high: float, margin: float = MARGIN) -> str:
  """The verdict of one interval against ``margin``; the four cases exclude each other
  (a NaN interval is none of the first three)."""
  if ci_low > margin:
    return "holds"
  if ci_low > 0 and ci_high < margin:
    return f"positive but under {margin:g} point{'' if margin == 1 else 's'}"
  if ci_high < margin and ci_low <= 0:
    return "does not hold"
  return "cannot tell at this size"
