"""The paper's study end to end (``configs/study.py``): train every stage, evaluate, publish.

Each stage is an ordinary training job (``train_and_evaluate``) in its own work directory,
``<workdir>/seed<seed>/<stage>``, so any of them can be inspected, resumed or re-evaluated
on its own. After every seed's stages, the convergence check's longer runs
(``longer_plan``) train, and ``results/convergence.md`` compares them with the ordinary ones. After the evaluation, ``urn_jax.experiments.probes`` probes the URNs' representations.
Rerunning the study resumes every stage from its checkpoints; a finished stage costs only
the data check and a model initialization. Wall time is appended to
``<workdir>/timings.jsonl``, a line per piece of work: each training run (with the step it
started from and the step it reached, so a stage resumed after an interruption has one line
per part, the interrupted part marked ``"interrupted": true`` when it stopped by Ctrl-C or
SIGTERM; a process killed outright writes nothing), the evaluation and the probes; at the
end, ``results/timings.md`` adds them up per stage and seed and names any steps whose time
was not recorded. Each training's ``metrics.jsonl`` has the wall time of every line too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ml_collections

from urn_jax.console import is_main_process, say
from urn_jax.errors import ConfigError, Interrupted
from urn_jax.job_config import pretrained_encoders, write_config
from urn_jax.training.config_checks import check_evaluation_settings, check_training_config
from urn_jax.training.loop import train_and_evaluate


def _saved_step(job_dir: Path) -> int:
  """The newest step saved in ``<job_dir>/checkpoints`` (0 when none)."""
  folder = Path(job_dir) / "checkpoints"
  steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
  return max(steps, default=0)


def _record_time(workdir: Path, record: dict) -> None:
  if not is_main_process():
    return
  with (workdir / "timings.jsonl").open("a") as f:
    f.write(json.dumps(record) + "\n")


def _minutes(seconds: float) -> str:
  return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.2f} h"


def write_timings(workdir) -> Path | None:
  """``<workdir>/results/timings.md`` from ``timings.jsonl``: each stage's wall time per
  seed (the sum of its parts), the evaluations and the probes, and the total. Where a
  stage's parts leave steps uncovered (a process killed outright writes no line), those
  steps are named: their time is not in the total."""
  workdir = Path(workdir)
  source = workdir / "timings.jsonl"
  if not source.is_file():
    return None
  groups = {}
  for line in source.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      groups.setdefault((record["stage"], record.get("seed")), []).append(record)
  rows, total, missing = [], 0.0, []
  for (stage, seed), parts in groups.items():
    seconds = sum(p["seconds"] for p in parts)
    total += seconds
    note, steps = "", ""
    if all("from_step" in p for p in parts):
      reached, gaps = 0, []
      for p in sorted(parts, key=lambda p: p["from_step"]):
        if p["from_step"] > reached:
          gaps.append(f"{reached}-{p['from_step']}")
        reached = max(reached, p["to_step"])
      steps = f"0-{reached}"
      if gaps:
        note = f"time of steps {', '.join(gaps)} not recorded (a process killed outright)"
        missing.append(f"{stage}, seed {seed}: steps {', '.join(gaps)}")
    elif seed is not None:
      older = sum("from_step" not in p for p in parts)
      note = f"{older} part(s) recorded without their steps (an older version)"
      steps = (f"to {max(p['to_step'] for p in parts if 'to_step' in p)}"
               if older < len(parts) else "")
    if any("source" in p for p in parts):  # a line added by hand, saying how it was made
      note = "; ".join(filter(None, [note, f"{sum('source' in p for p in parts)} part(s) "
                                           "reconstructed: see `source` in timings.jsonl"]))
    rows.append(f"| {stage} | {'' if seed is None else seed} | {len(parts)} | {steps} | "
                f"{seconds:.0f} | {_minutes(seconds)} | {note} |")
  text = ("# Wall time of the study\n\nFrom `timings.jsonl`: a line per piece of work (a "
          "training part, an evaluation, the probes), summed per stage and seed.\n\n"
          "| stage | seed | parts | steps | seconds | | note |\n|---|---|---|---|---|---|---|\n"
          + "\n".join(rows) + f"\n\n**Total: {total:.0f} s ({_minutes(total)})**"
          + (", not counting the uncovered steps of " + "; ".join(missing) if missing else "")
          + ".\n")
  out = workdir / "results" / "timings.md"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  return out


def plan(config, workdir) -> list[tuple[str, int, ml_collections.ConfigDict, Path]]:
  """``[(stage, seed, job config, work directory)]`` in the order they must run."""
  workdir = Path(workdir)
  jobs = []
  for seed in config.seeds:
    root = workdir / f"seed{seed}"
    stages = {"pretrain": (config.pretrain, True)}
    if config.pretrain_brats_only:
      stages["pretrain_brats"] = (config.pretrain, False)
    stages.update({v: (config.segment[v], False) for v in config.segment})
    for name, (stage, use_hcp) in stages.items():
      job = ml_collections.ConfigDict(stage.to_dict())
      job.data = ml_collections.ConfigDict(config.data.to_dict())
      job.data.use_hcp = use_hcp
      job.seed = int(seed)
      if pretrained_encoders(job):  # frozen or fine-tuned: the pooled pre-training's
        job.pretrained_workdir = str(root / "pretrain")
      jobs.append((name, int(seed), job, root / name))
  return jobs


def longer_plan(config, jobs) -> list[tuple[str, int, ml_collections.ConfigDict, Path]]:
  """The convergence check's runs (``config.longer``): the stages of ``plan``'s ``jobs``
  named in ``stages``, for seed ``seed``, trained ``factor`` times as many steps with the same schedule stretched (its
  warm-up, decay and held tail alike), in ``<workdir>/seed<seed>/<stage>_x<factor>``. A
  segmentation on pre-trained encoders keeps the ordinary pre-training, so that each
  longer run tells about its own stage's length only. They are compared with the ordinary
  runs (``urn_jax.evaluation.curves.longer_run_check``), never evaluated on test patients."""
  longer = config.get("longer")
  if not longer or not longer.stages:
    return []
  jobs = {(name, seed): (job, job_dir) for name, seed, job, job_dir in jobs}
  runs = []
  for name in longer.stages:
    if (name, longer.seed) not in jobs:
      raise ConfigError(f"longer.stages names {name!r} with seed {longer.seed}, which the "
                        f"study does not train (stages: {sorted({n for n, _ in jobs})})")
    job, job_dir = jobs[name, longer.seed]
    job = ml_collections.ConfigDict(job.to_dict())
    job.train.max_steps = int(job.train.max_steps * longer.factor)
    runs.append((name, int(longer.seed), job,
                 job_dir.parent / f"{name}_x{longer.factor:g}"))
  return runs


def shown_converged(jobs, longer) -> dict:
  """Work directory -> whether its stage was shown converged by ``longer``'s run of it
  (``urn_jax.evaluation.curves.longer_run_check``; one seed's check stands for every seed
  of the stage), and for a segmentation on pre-trained encoders, its pre-training too:
  True, False, or None where no longer run checks it."""
  from urn_jax.evaluation.curves import convergence_checks
  checks = {stage: check["converged"] for stage, _, _, _, check in convergence_checks(
      [(name, seed, job.job, job_dir.parent / name, job_dir)
       for name, seed, job, job_dir in longer])}

  def shown(name, job):
    own = checks.get(name)
    if not pretrained_encoders(job) or own is False:
      return own
    pretraining = checks.get("pretrain")
    return pretraining if pretraining is not True else own
  return {str(job_dir): shown(name, job) for name, _, job, job_dir in jobs}


def run(config, workdir):
  """Trains every stage of ``plan`` (unless ``stages == 'evaluate'``), then evaluates
  (unless ``stages == 'train'``); returns the evaluation's summary."""
  if config.stages not in ("all", "train", "evaluate"):
    raise ConfigError(f"stages must be 'all', 'train' or 'evaluate', got {config.stages!r}")
  workdir = Path(workdir)
  jobs = plan(config, workdir)
  longer = longer_plan(config, jobs)
  for _, _, job, _ in jobs + longer:  # every config, before the first one trains for hours
    check_training_config(job)
  check_evaluation_settings(config.evaluate)
  if is_main_process():
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(config, workdir)
  if config.stages != "evaluate":
    for n, (name, seed, job, job_dir) in enumerate(jobs + longer):
      name = job_dir.name  # a longer run's stage is "<stage>_x<factor>"
      say(f"== study stage {n + 1}/{len(jobs) + len(longer)}: {name}, seed {seed} ({job_dir})")
      start, from_step = time.perf_counter(), _saved_step(job_dir)
      record = {"stage": name, "seed": seed, "from_step": from_step}
      try:
        last = train_and_evaluate(job, job_dir)
      except Interrupted:
        _record_time(workdir, {**record, "to_step": _saved_step(job_dir), "seconds": round(
            time.perf_counter() - start, 1), "interrupted": True})
        raise
      if last:  # empty when the stage had already finished
        _record_time(workdir, {**record, "to_step": _saved_step(job_dir), "seconds": round(
            time.perf_counter() - start, 1), "last": last})
  if config.stages == "train":
    return {}
  from urn_jax.evaluation.evaluate import evaluate_models  # matplotlib: only here
  from urn_jax.experiments.probes import ProbeSettings, run_probes
  models = [(name, seed, job_dir) for name, seed, _, job_dir in jobs]
  start = time.perf_counter()
  summary = evaluate_models(models, workdir / "results", config.evaluate,
                            converged=shown_converged(jobs, longer) if longer else None)
  _record_time(workdir, {"stage": "evaluate", "models": len(models),
                         "seconds": round(time.perf_counter() - start, 1)})
  # The representations that are their own: a frozen URN's is its pre-training's.
  probed = [(name, seed, job_dir) for name, seed, job, job_dir in jobs
            if job.model.kind == "urn" and pretrained_encoders(job) != "frozen"]
  start = time.perf_counter()
  run_probes(probed, workdir / "results", ProbeSettings(**config.probes.to_dict()))
  _record_time(workdir, {"stage": "probes", "models": len(probed),
                         "seconds": round(time.perf_counter() - start, 1)})
  if is_main_process():
    summary["files"].append(str(write_timings(workdir)))
    if longer:
      from urn_jax.evaluation.curves import convergence_report
      summary["files"].append(str(convergence_report(
          [(name, seed, job.job, job_dir.parent / name, job_dir)
           for name, seed, job, job_dir in longer], workdir / "results")))
  summary["files"] += [str(workdir / "results" / f) for f in ("probes.md", "probes.json")]
  return summary
