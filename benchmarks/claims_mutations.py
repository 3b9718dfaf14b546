"""Can the tests see the statistics? One-line mutations of the claims' analysis, each tried
against the tests in a clean copy of a commit: a mutation that no test fails "survives".

    python benchmarks/claims_mutations.py                 # the committed HEAD
    python benchmarks/claims_mutations.py --out benchmarks/cpu/claims_mutations.md

Each mutation is one plausible mistake in the paired test (``urn_jax/evaluation/paired.py``),
the claims as the paper states them (``urn_jax/evaluation/claims.py``) or the convergence
rule (``urn_jax/evaluation/curves.py``, ``urn_jax/experiments/study.py``): the first five
are the ones a review of the first study run found surviving its tests. The tests run
are ``TESTS`` without the tiny study (``slow``: a study of every stage, minutes); a
mutation's text that is no longer in the file is reported as "not applied", so the list
cannot go stale in silence. About 20 s a mutation on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ("tests/test_claims.py", "tests/test_claims_statistics.py", "tests/test_study.py")
# Fails on every mutated copy by design (a mutation's text is gone from the code), so it
# would "kill" every mutation; the benchmark's own "not applied" does its job here.
UNMUTATED_ONLY = ("tests/test_claims_statistics.py::"
                  "test_every_mutation_the_benchmark_tries_is_still_in_the_code")
PAIRED, CLAIMS = "urn_jax/evaluation/paired.py", "urn_jax/evaluation/claims.py"
CURVES, STUDY = "urn_jax/evaluation/curves.py", "urn_jax/experiments/study.py"

# (what the mistake is, file, text, the text that replaces it)
MUTATIONS = (
    ("the p-value two-sided", PAIRED, "p_value = float(stats.t.sf(m / se, df))",
     "p_value = float(2 * stats.t.sf(abs(m / se), df))"),
    ("seeds counted as patients: every cell independent", PAIRED,
     "se = float(np.sqrt(max(numerator, 0.0) / (patients * seeds)))",
     "se, df = float(x.std(ddof=1) / np.sqrt(x.size)), x.size - 1.0"),
    ("the seeds' variance left out", PAIRED,
     "max(0.0, (ms_s - ms_e) / patients)", "0.0"),
    ("a 90 % interval for the 95 % one", PAIRED,
     "stats.t.ppf(1 - (1 - level) / 2, df)", "stats.t.ppf(1 - (1 - level), df)"),
    ("claim 3 holds on 13 of 15", CLAIMS, "HIGHEST = 14", "HIGHEST = 13"),
    ("an interval inside (0, +1) holds", PAIRED, "if ci_low > margin:", "if ci_low > 0:"),
    ("no margin", PAIRED, "MARGIN = 1.0", "MARGIN = 0.0"),
    ("an interval that reaches 0 does not hold, even where it reaches above the margin",
     PAIRED, "if ci_high < margin and ci_low <= 0:", "if ci_low <= 0:"),
    ("the residual's degrees of freedom, not Satterthwaite's", PAIRED,
     "df = numerator ** 2 / spread if spread > 0 else float(df_e)", "df = float(df_e)"),
    ("the residual mean square added in full beside the components", PAIRED,
     "terms += [(1.0 - len(terms), ms_e, df_e)]", "terms += [(1.0, ms_e, df_e)]"),
    ("a negative variance component not truncated at 0", PAIRED,
     "max(0.0, (ms_p - ms_e) / seeds)", "(ms_p - ms_e) / seeds"),
    ("the row means' variance with ddof 0", PAIRED,
     "ms_p = seeds * float(row.var(ddof=1))", "ms_p = seeds * float(row.var(ddof=0))"),
    ("each comparison a family of its own (no Bonferroni within a claim)", CLAIMS,
     "sizes[c.claim] = sizes.get(c.claim, 0) + 1", "sizes[c.claim] = 1"),
    ("the family's level ignored", CLAIMS,
     "**paired_test(matrix, margin, 1 - ALPHA / comparison.k)})",
     "**paired_test(matrix, margin, 1 - ALPHA)})"),
    ("claim 3's combinations not a family", CLAIMS,
     "**paired_test(matrices[best], margin, 1 - ALPHA / k)})",
     "**paired_test(matrices[best], margin, 1 - ALPHA)})"),
    ("claim 3 against the first rival, not the best", CLAIMS,
     "best = min(means, key=means.get)", "best = rivals[0]"),
    ("claim 3: highest when ahead of any rival", CLAIMS,
     "all(v > 0 for v in means.values())", "any(v > 0 for v in means.values())"),
    ("claim 3 does not hold when behind on one combination", CLAIMS,
     "if sum(not r[\"highest\"] for r in per_combination) >= 2:",
     "if sum(not r[\"highest\"] for r in per_combination) >= 1:"),
    ("FLAIR against no modality instead of another (the count of inputs decides)", CLAIMS,
     "pairs.append((\"1\" + \"\".join(rest), \"0\" + \"\".join(with_x)))",
     "pairs.append((\"1\" + \"\".join(rest), \"0\" + \"\".join(rest)))"),
    ("claim 1 against all 15, the complete one too", CLAIMS,
     "\"Baseline\", _full, _incomplete),", "\"Baseline\", _full, _everything),"),
    ("claim 5 for Baseline + MD only", CLAIMS,
     "for model in (\"Baseline + MD\", \"URN + MD\") for region in",
     "for model in (\"Baseline + MD\",) for region in"),
    ("convergence: a longer run only counts when better (Dice)", CURVES,
     "all(abs(g) <= LONGER_DICE_POINTS for g in gaps.values())",
     "all(g <= LONGER_DICE_POINTS for g in gaps.values())"),
    ("convergence: a longer run only counts when better (pre-training loss)", CURVES,
     "\"converged\": abs(gap) <= FLAT,", "\"converged\": gap <= FLAT,"),
    ("convergence: a frozen-encoder scenario's pre-training not checked", STUDY,
     "return pretraining if pretraining is not True else own", "return own"),
    ("convergence: a scenario shown unconverged counts as unknown when its pre-training is",
     STUDY, "if not pretrained_encoders(job) or own is False:",
     "if not pretrained_encoders(job):"),
)


def clean_copy(commit: str, into: Path) -> None:
  """``commit``'s tracked files in ``into`` (``git archive``): the tests run there, on
  that commit's code, whatever the working tree holds."""
  archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                           capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def run_tests(copy: Path) -> tuple[bool, str]:
  """(whether every test passed, the first failing test's name)."""
  done = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow",
       "--deselect", UNMUTATED_ONLY, *TESTS], cwd=copy, capture_output=True, text=True)
  failed = re.search(r"^FAILED (\S+)", done.stdout, re.MULTILINE)
  return done.returncode == 0, failed.group(1) if failed else ""


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--commit", default="HEAD")
  parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
  args = parser.parse_args(argv)
  commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.commit],
                          check=True, capture_output=True, text=True).stdout.strip()
  rows, survived = [], 0
  with tempfile.TemporaryDirectory() as tmp:
    copy = Path(tmp)
    clean_copy(commit, copy)
    where = subprocess.run([sys.executable, "-c", "import urn_jax; print(urn_jax.__file__)"],
                           cwd=copy, capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(copy.resolve())) and not where.startswith(str(copy)):
      raise SystemExit(f"urn_jax imports from {where}, not from the copy in {copy}")
    passed, failed = run_tests(copy)
    if not passed:
      raise SystemExit(f"the tests fail on {commit} unmutated ({failed}): nothing to measure")
    for n, (what, file, old, new) in enumerate(MUTATIONS, 1):
      path = copy / file
      original = path.read_text()
      if original.count(old) != 1:
        result, by = "not applied", f"its text is in {file} {original.count(old)} times"
      else:
        path.write_text(original.replace(old, new))
        passed, by = run_tests(copy)
        path.write_text(original)
        result = "**survives**" if passed else "killed"
        survived += passed
      rows.append(f"| {n} | {what} | `{file}` | {result} | {by} |")
      print(rows[-1], flush=True)
  text = (f"# Mutations of the claims' analysis, tried against the tests\n\n"
          f"`python benchmarks/claims_mutations.py` on commit {commit}: each mutation "
          f"applied alone to a clean copy, then `pytest -m 'not slow' {' '.join(TESTS)}` "
          f"without `{UNMUTATED_ONLY.split('::')[1]}` (it checks that each mutation's text is "
          "in the unmutated code, so it fails on every mutant).\n\n"
          "| | mutation | file | result | first failing test |\n|---|---|---|---|---|\n"
          + "\n".join(rows) + f"\n\n{len(rows) - survived} of {len(rows)} killed"
          + (f"; {survived} survive" if survived else "") + ".\n")
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
  print(text.rsplit("\n\n", 1)[-1], end="")
  return 1 if survived else 0


if __name__ == "__main__":
  shutil.which("git") or sys.exit("git is needed: the mutations run on a commit's files")
  sys.exit(main())
