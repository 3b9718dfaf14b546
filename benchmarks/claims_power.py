"""The claims' test on the study's design, by simulation: how often it says "holds" with no
effect, how often its interval covers a true effect, and how often one of claim 3's
combinations (a Bonferroni level over 15) holds at a given true lead. docs/STUDY_PLAN.md
quotes these numbers.

    python benchmarks/claims_power.py

The design: 12 patients x 5 seeds, patient, seed and residual spreads of 1, 3 and 1 Dice
points (``--patient-sd`` etc.), 2000 simulated studies per line from fixed seeds (those of
tests/test_claims_statistics.py for the first three lines).
"""

from __future__ import annotations

import argparse

import numpy as np

from urn_jax.evaluation.paired import ALPHA, paired_test


def simulate(effect, replicates, seed, patients, seeds, sds, level=1 - ALPHA):
  """``paired_test`` of ``replicates`` simulated matrices around a true mean ``effect``."""
  rng = np.random.default_rng(seed)
  x = (effect + rng.normal(0, sds[0], (replicates, patients, 1))
       + rng.normal(0, sds[1], (replicates, 1, seeds))
       + rng.normal(0, sds[2], (replicates, patients, seeds)))
  return [paired_test(m, level=level) for m in x]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--patients", type=int, default=12)
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--patient-sd", type=float, default=1.0)
  parser.add_argument("--seed-sd", type=float, default=3.0)
  parser.add_argument("--residual-sd", type=float, default=1.0)
  parser.add_argument("--replicates", type=int, default=2000)
  args = parser.parse_args(argv)
  design = (args.patients, args.seeds, (args.patient_sd, args.seed_sd, args.residual_sd))
  print(f"{args.patients} patients x {args.seeds} seeds, sd {design[2]}, "
        f"{args.replicates} simulated studies per line")
  for effect, seed in ((0.0, 1), (1.0, 2), (2.0, 3)):
    results = simulate(effect, args.replicates, seed, *design)
    holds = np.mean([r["verdict"] == "holds" for r in results])
    covered = np.mean([r["ci_low"] < effect < r["ci_high"] for r in results])
    df = np.median([r["df"] for r in results])
    print(f"true effect {effect:+.0f}: holds {100 * holds:.2f} %, 95 % interval covers it "
          f"{100 * covered:.1f} %, median df {df:.1f}")
  rng_seed = 5
  for lead in (4.0, 8.0, 12.0):
    results = simulate(lead, args.replicates, rng_seed, *design, level=1 - ALPHA / 15)
    holds = np.mean([r["verdict"] == "holds" for r in results])
    print(f"claim 3, one combination of 15, true lead {lead:+.0f}: holds {100 * holds:.1f} %")


if __name__ == "__main__":
  main()
