"""Training curves: is a run's validation loss flat, what do its curves look like, and
``training.md``, the report's page on them.

A run is *flat* when the best validation loss improved by less than ``FLAT`` (5 %,
relative) during the last 20 % of its steps (``curve_summary``, defined beside the writer
of ``metrics.jsonl`` in ``urn_jax.training.metrics_log``, which says it at the end of
every training). ``benchmarks/convergence.py`` uses the criterion, and the report names
the runs that are not (``urn_jax.evaluation.runs``). A flat tail can also be a learning
rate too low to move anything: convergence itself is shown by a run twice as long
(``longer_run_check``, ``convergence_report``).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from urn_jax.files import write_text_atomically  # noqa: E402
from urn_jax.labels import REGIONS  # noqa: E402
from urn_jax.training.metrics_log import FLAT, curve_summary, read_metrics  # noqa: E402

LONGER_DICE_POINTS = 1.0
"""A segmentation has converged when its validation Dice (best checkpoint, each region) is
within this many points of the same run trained twice as long."""


def longer_run_check(ordinary: dict | None, longer: dict | None, job: str) -> dict:
  """Whether a run has converged, shown by a longer one (``curve_summary`` of each): a
  flat tail can be a learning rate too low to move anything, a run twice as long cannot
  hide that. Segmentation: every region's validation Dice of the best checkpoint within
  ``LONGER_DICE_POINTS`` of the longer run's; pre-training: its best validation loss within
  ``FLAT`` (relative) of the longer run's. Within, both ways, as docs/STUDY_PLAN.md says:
  a longer run that ends worse by more than that shows the result depends on how long it
  trains, just as one that ends better does. ``gaps``: longer minus ordinary (Dice points;
  for the loss, ordinary minus longer, relative: positive when the longer run is better).
  ``converged`` is None while either is missing."""
  if ordinary is None or longer is None:
    return {"converged": None, "gaps": {}}
  if job == "segment":
    gaps = {region: 100 * (longer[f"validation_dice_{region}"]
                           - ordinary[f"validation_dice_{region}"]) for region in REGIONS}
    return {"converged": all(abs(g) <= LONGER_DICE_POINTS for g in gaps.values()),
            "gaps": gaps}
  gap = ((ordinary["best_validation_loss"] - longer["best_validation_loss"])
         / ordinary["best_validation_loss"])
  return {"converged": abs(gap) <= FLAT, "gaps": {"loss": gap}}


def convergence_checks(pairs, diverged=()) -> list[tuple]:
  """``(stage, seed, job, curves, check)`` for each ``(stage, seed, job, ordinary workdir,
  longer workdir)``: the two runs' ``curve_summary`` (None where not trained) and
  ``longer_run_check`` of them; where either work directory is among ``diverged``, the
  check is ``converged`` False with ``diverged`` naming the run ("ordinary", "longer")."""
  checks, diverged = [], {str(d) for d in diverged}
  for stage, seed, job, ordinary_dir, longer_dir in pairs:
    curves = [curve_summary(Path(d) / "metrics.jsonl") if (Path(d) / "metrics.jsonl").is_file()
              else None for d in (ordinary_dir, longer_dir)]
    failed = _runs_among(diverged, ordinary_dir, longer_dir)
    check = ({"converged": False, "gaps": {}, "diverged": " and ".join(failed)} if failed
             else longer_run_check(*curves, job))
    checks.append((stage, seed, job, curves, check))
  return checks


def _runs_among(workdirs: set, ordinary_dir, longer_dir) -> list[str]:
  """Which of a pair's runs ("ordinary", "longer") have their work directory in
  ``workdirs``."""
  return [run for run, d in (("ordinary", ordinary_dir), ("longer", longer_dir))
          if str(d) in workdirs]


def _retrained(retrained: set, ordinary_dir, longer_dir) -> str:
  which = _runs_among(retrained, ordinary_dir, longer_dir)
  return (f" (the {' and '.join(which)} run on a pre-training trained again, its weights "
          "not those sealed)" if which else "")


def convergence_report(pairs, out_dir, diverged=(), retrained=()) -> Path:
  """``convergence.md``: for each ``(stage, seed, job, ordinary workdir, longer workdir)``,
  ``longer_run_check`` of the two runs' curves (``convergence_checks``: not converged
  where either run is among ``diverged``); a pair with a run among ``retrained`` (trained
  on encoders whose pre-training was trained again, other weights than those sealed) says
  so beside its verdict."""
  retrained = {str(d) for d in retrained}
  lines = ["| stage | seed | steps, ordinary / longer | best (ordinary) | best (longer) | "
           "longer minus ordinary | improvement, last 20 %, ordinary / longer | converged |",
           "|---|---|---|---|---|---|---|---|"]
  for (*_, ordinary_dir, longer_dir), (stage, seed, job, curves, check) in zip(
      pairs, convergence_checks(pairs, diverged)):
    if check.get("diverged"):
      lines.append(f"| {stage} | {seed} | the {check['diverged']} run diverged | | | | | "
                   "**no** |")
      continue
    if check["converged"] is None:
      lines.append(f"| {stage} | {seed} | not trained yet | | | | | unknown |")
      continue
    tails = " / ".join("n/a" if math.isnan(c["improvement_last_20pct"])
                       else f"{100 * c['improvement_last_20pct']:.1f} %" for c in curves)

    def best(c):
      if job == "segment":
        return ", ".join(f"{r} {100 * c[f'validation_dice_{r}']:.1f}" for r in REGIONS)
      return f"loss {c['best_validation_loss']:.4f}"
    gaps = (", ".join(f"{r} {g:+.1f}" for r, g in check["gaps"].items()) if job == "segment"
            else f"{-100 * check['gaps']['loss']:+.1f} % loss")
    lines.append(f"| {stage} | {seed} | {curves[0]['steps']} / {curves[1]['steps']} | "
                 f"{best(curves[0])} | {best(curves[1])} | {gaps} | {tails} | "
                 f"{'yes' if check['converged'] else '**no**'}"
                 f"{_retrained(retrained, ordinary_dir, longer_dir)} |")
  path = Path(out_dir) / "convergence.md"
  path.parent.mkdir(parents=True, exist_ok=True)
  write_text_atomically(
      path,
      "# Convergence, shown by runs twice as long\n\nEach stage's run of one seed against "
      "the same run with its schedule stretched over twice the steps. Converged: each "
      f"region's validation Dice of the best checkpoint within {LONGER_DICE_POINTS:g} point "
      f"of the longer run's (segmentation), the best validation loss within {100 * FLAT:.0f} "
      "% (pre-training), the longer run better or worse. Validation Dice is pooled over "
      "every validation slice. The improvement in the last 20 % of the steps is "
      "training.md's, for both runs (the longer ones are not in training.md: they are not "
      "scored on test patients).\n\n"
      + "\n".join(lines) + "\n")
  return path


def plot_curves(workdirs: dict, out_png: Path):
  """Per model (columns): training and validation loss (top), validation Dice (bottom)."""
  fig, axes = plt.subplots(2, len(workdirs), figsize=(3.4 * len(workdirs), 5.6),
                           squeeze=False, sharex="col")
  dice_labelled = False
  for column, (name, workdir) in enumerate(workdirs.items()):
    rows = read_metrics(workdir / "metrics.jsonl")
    evaluations = [r for r in rows if "validation_loss" in r]
    top, bottom = axes[0, column], axes[1, column]
    top.semilogy([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.7, alpha=0.6,
                 label="training")
    top.semilogy([r["step"] for r in evaluations], [r["validation_loss"] for r in evaluations],
                 "o-", ms=2, lw=1.2, label="validation")
    top.set_title(name, fontsize=10)
    top.grid(alpha=0.3, which="both")
    top.legend(fontsize=7)
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    if not evaluations or "validation_dice_WT" not in evaluations[-1]:
      bottom.axis("off")
      continue
    for region in REGIONS:
      bottom.plot([r["step"] for r in evaluations],
                  [100 * r[f"validation_dice_{region}"] for r in evaluations], lw=1,
                  label=region)
    bottom.set_ylim(0, 100)
    bottom.legend(fontsize=7, loc="lower right")
    if not dice_labelled:  # the first column may be the pre-training, which has no Dice
      bottom.set_ylabel("validation Dice (%)")
      dice_labelled = True
  axes[0, 0].set_ylabel("loss")
  fig.tight_layout()
  fig.savefig(out_png, dpi=90)
  plt.close(fig)


def training_report(runs, out_dir, figures=True) -> list:
  """``training.md``: each run's steps, final and best validation loss and whether its curve
  flattened, from its ``run["curve"]`` (``curve_summary``, set by
  ``urn_jax.evaluation.runs.count_runs``; None where the run has no metrics or no
  evaluation in them); one PNG of curves per model name, a column per seed."""
  lines = ["| model | seed | steps (epochs) | final val. loss | best val. loss (step) | "
           "improvement, last 20 % | flat |", "|---|---|---|---|---|---|---|"]
  for run in runs:
    c = run["curve"]
    if c is None:
      lines.append(f"| {run['name']} | {run['seed']} | no evaluation in metrics.jsonl | | | "
                   "| unknown |")
      continue
    improvement = c["improvement_last_20pct"]
    improvement = "n/a" if math.isnan(improvement) else f"{100 * improvement:.1f} %"
    epochs = f" ({c['epochs']:.1f})" if c.get("epochs") is not None else ""
    lines.append(f"| {run['name']} | {run['seed']} | {c['steps']}{epochs} | "
                 f"{c['final_validation_loss']:.4f} | {c['best_validation_loss']:.4f} "
                 f"({c['best_step']}) | {improvement} | "
                 f"{'yes' if c['flat'] else '**no**'} |")
  path = Path(out_dir) / "training.md"
  write_text_atomically(
      path, f"# Training curves\n\nFlat: the best validation loss improved by less "
      f"than {100 * FLAT:.0f} % in the last 20 % of the steps. Runs that are not "
      "flat are named under the tables and in claims.md, and counted all the same; "
      "convergence.md, where the study writes it, shows convergence by runs "
      "twice as long.\n\n"
      + "\n".join(lines) + "\n")
  files = [path]
  if figures:
    for name in dict.fromkeys(r["name"] for r in runs):
      columns = {f"{name}, seed {r['seed']}": Path(r["workdir"]) for r in runs
                 if r["name"] == name and r["curve"] is not None}
      if columns:
        stem = "curves_" + "".join(c if c.isalnum() else "_" for c in name)
        plot_curves(columns, Path(out_dir) / f"{stem}.png")
        files.append(Path(out_dir) / f"{stem}.png")
  return files
