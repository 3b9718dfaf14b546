"""The paper's study end to end (``configs/study.py``): train every stage, seal it, publish.

Each stage is an ordinary training job (``train_and_evaluate``) in its own work directory,
``<workdir>/seed<seed>/<stage>``, so any of them can be inspected, resumed or re-evaluated
on its own. Once trained, a stage is sealed (``urn_jax.experiments.archive``): scored on
the test patients, probed where it is a URN with its own representation, and its small
files kept in ``<archive>/seed<seed>/<stage>``; a sealed stage is never trained again. A
segmentation on pre-trained encoders trains right after its pre-training (which is trained
again, first, if its work directory was lost). After every seed's stages, the convergence
check's longer runs (``longer_plan``) train and are sealed unscored. Then the results -
tables, figures, claims, probes, ``convergence.md``, ``timings.md`` - are made from the
archive alone, into ``<archive>/results``. Rerunning the study resumes every stage from
its checkpoints, or skips it where it is sealed.

Wall time: each training part is appended to ``<workdir>/timings.jsonl`` (with the step it
started from and the step it reached, so a stage resumed after an interruption has one line
per part, the interrupted part marked ``"interrupted": true`` when it stopped by Ctrl-C or
SIGTERM; a process killed outright writes nothing), and sealed with its stage, beside the
sealing's own time; ``results/timings.md`` adds them up per stage and seed. Steps that no
line covers are timed from the wall time of the stage's ``metrics.jsonl`` lines
(``curve_parts``), and named where even those are missing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ml_collections

from urn_jax.console import is_main_process, say
from urn_jax.errors import ConfigError, DataError, Interrupted
from urn_jax.experiments import archive as archive_module
from urn_jax.experiments.probes import ProbeSettings
from urn_jax.files import write_text_atomically
from urn_jax.job_config import pretrained_encoders, write_config
from urn_jax.training.config_checks import check_evaluation_settings, check_training_config
from urn_jax.training.loop import train_and_evaluate
from urn_jax.training.metrics_log import read_metrics


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


def _time_records(source: Path) -> list[dict]:
  if not source.is_file():
    return []
  return [json.loads(line) for line in source.read_text().splitlines() if line.strip()]


def _gaps(parts) -> tuple[int, list[tuple[int, int]]]:
  """The step a stage's ``parts`` reached, and the steps ``[(from, to)]`` none of them
  covers."""
  reached, gaps = 0, []
  for p in sorted(parts, key=lambda p: p["from_step"]):
    if p["from_step"] > reached:
      gaps.append((reached, p["from_step"]))
    reached = max(reached, p["to_step"])
  return reached, gaps


CURVE_SOURCE = "metrics.jsonl wall_time, from each killed process's first line to its last"


def curve_parts(parts, metrics_file, stage: str, seed: int) -> list[dict]:
  """Parts for the steps that none of the stage's training ``parts`` covers (a process
  killed outright writes no line), timed from ``metrics_file``: its lines in the order they
  were written, a new process starting wherever the step does not rise (each resumes from a
  checkpoint at or before the step its predecessor last logged); a process whose first line
  falls in a gap ran in it, from its first line's ``wall_time`` to its last's. Its start-up
  before its first line is not in it: a lower bound, marked by ``source``. A gap without
  such a line stays a gap."""
  own = [p for p in parts if p["stage"] == stage]
  if not all("from_step" in p for p in own):
    return []  # older lines without their steps: which steps they covered is unknown
  gaps = _gaps(own)[1]
  if not gaps or not Path(metrics_file).is_file():
    return []
  processes = []
  for row in read_metrics(metrics_file):  # a line a killed process cut short is skipped
    if "wall_time" not in row:
      continue
    if processes and row["step"] > processes[-1][-1]["step"]:
      processes[-1].append(row)
    else:
      processes.append([row])
  found = []
  for start, end in gaps:
    ran = [p for p in processes if start < p[0]["step"] <= end]
    if ran:
      seconds = sum(p[-1]["wall_time"] - p[0]["wall_time"] for p in ran)
      found.append({"stage": stage, "seed": seed, "from_step": start, "to_step": end,
                    "seconds": round(seconds, 1), "source": CURVE_SOURCE})
  return found


def sealed_times(stages) -> list[dict]:
  """The timing lines sealed with each of ``stages`` (``[(seed, folder)]``), and the parts
  ``curve_parts`` finds in their curves for the steps those lines leave uncovered."""
  records = []
  for seed, folder in stages:
    parts = _time_records(Path(folder) / archive_module.TIMINGS)
    records += parts + curve_parts(parts, Path(folder) / "metrics.jsonl", Path(folder).name,
                                   seed)
  return records


def write_timings(workdir, records=None) -> Path | None:
  """``<workdir>/results/timings.md`` from ``records`` (by default ``<workdir>``'s
  ``timings.jsonl``; None when there is none): each stage's wall time per seed (the sum of
  its parts, with those ``curve_parts`` made), the sealings, and the total. Where a stage's
  parts leave steps uncovered (a process killed outright writes no line, and none of its
  curve's lines was found), those steps are named: their time is not in the total."""
  workdir = Path(workdir)
  if records is None:
    source = workdir / "timings.jsonl"
    if not source.is_file():
      return None
    records = _time_records(source)
  groups = {}
  for record in records:
    groups.setdefault((record["stage"], record.get("seed")), []).append(record)
  rows, total, missing = [], 0.0, []
  for (stage, seed), parts in groups.items():
    seconds = sum(p["seconds"] for p in parts)
    total += seconds
    note, steps = "", ""
    if all("from_step" in p for p in parts):
      reached, gaps = _gaps(parts)
      steps = f"0-{reached}"
      if gaps:
        gaps = ", ".join(f"{a}-{b}" for a, b in gaps)
        note = f"time of steps {gaps} not recorded (a process killed outright)"
        missing.append(f"{stage}, seed {seed}: steps {gaps}")
    elif seed is not None:
      older = sum("from_step" not in p for p in parts)
      note = f"{older} part(s) recorded without their steps (an older version)"
      steps = (f"to {max(p['to_step'] for p in parts if 'to_step' in p)}"
               if older < len(parts) else "")
    curve = sum(p.get("source") == CURVE_SOURCE for p in parts)
    by_hand = sum("source" in p for p in parts) - curve  # a line saying how it was made
    note = "; ".join(filter(None, [
        note, curve and f"{curve} part(s) timed from metrics.jsonl (killed processes, "
                        "without their start-up)",
        by_hand and f"{by_hand} part(s) reconstructed: see `source` in timings.jsonl"]))
    rows.append(f"| {stage} | {'' if seed is None else seed} | {len(parts)} | {steps} | "
                f"{seconds:.0f} | {_minutes(seconds)} | {note} |")
  text = ("# Wall time of the study\n\nFrom `timings.jsonl`: a line per piece of work (a "
          "training part; a sealing: scores and probes), summed per stage and seed; a "
          "process killed outright is timed from its curve's lines (`metrics.jsonl`).\n\n"
          "| stage | seed | parts | steps | seconds | | note |\n|---|---|---|---|---|---|---|\n"
          + "\n".join(rows) + f"\n\n**Total: {total:.0f} s ({_minutes(total)})**"
          + (", not counting the uncovered steps of " + "; ".join(missing) if missing else "")
          + ".\n")
  out = workdir / "results" / "timings.md"
  out.parent.mkdir(parents=True, exist_ok=True)
  return write_text_atomically(out, text)


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
  named in ``stages``, for seed ``seed``, trained ``factor`` times as many steps with the
  same schedule stretched (its warm-up, decay and held tail alike), in
  ``<workdir>/seed<seed>/<stage>_x<factor>``. A segmentation on pre-trained encoders keeps
  the ordinary pre-training, so that each longer run tells about its own stage's length
  only. They are compared with the ordinary runs
  (``urn_jax.evaluation.curves.longer_run_check``), never evaluated on test patients."""
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


def training_order(jobs) -> list:
  """``plan``'s jobs in the order they train: seed by seed, first the segmentations that
  need no pre-training (each under an hour on 2 cores), then the pooled pre-training with
  the segmentations on its encoders right after it (so that its work directory is still
  there when they need it), and the BraTS-only pre-training last. A study that spans
  machines loses, with a machine, the stage in progress, and a segmentation on pre-trained
  encoders whose pre-training's work directory went too trains that pre-training again
  (``_train_and_seal``): short stages first and that chain in one piece keep the loss
  small. The order changes no stage's result."""
  seeds = {seed: n for n, seed in enumerate(dict.fromkeys(seed for _, seed, _, _ in jobs))}

  def group(name, job):
    if name == "pretrain":
      return 1
    if pretrained_encoders(job):
      return 2
    return 3 if name == "pretrain_brats" else 0
  return sorted(jobs, key=lambda j: (seeds[j[1]], group(j[0], j[2])))


def _train(workdir: Path, record: dict, job, job_dir: Path) -> None:
  """``train_and_evaluate``, its wall time appended to ``timings.jsonl`` under ``record``
  (nothing when the stage had already finished)."""
  start, record = time.perf_counter(), {**record, "from_step": _saved_step(job_dir)}
  try:
    last = train_and_evaluate(job, job_dir)
  except Interrupted:
    _record_time(workdir, {**record, "to_step": _saved_step(job_dir), "seconds": round(
        time.perf_counter() - start, 1), "interrupted": True})
    raise
  if last:
    _record_time(workdir, {**record, "to_step": _saved_step(job_dir), "seconds": round(
        time.perf_counter() - start, 1), "last": last})


def _train_and_seal(config, workdir: Path, archive: Path, entry, pretraining, longer: bool):
  """Trains one stage (its pre-training first, again, where that was sealed and its work
  directory lost) and seals it into the archive."""
  name, seed, job, job_dir = entry
  stage = job_dir.name  # a longer run's is "<stage>_x<factor>"
  pretraining_folder = None
  if pretrained_encoders(job):
    _, _, pretraining_job, pretraining_dir = pretraining
    _train(workdir, {"stage": "pretrain_again", "seed": seed, "for": stage},
           pretraining_job, pretraining_dir)
    pretraining_folder = archive_module.stage_dir(archive, seed, "pretrain")
  _train(workdir, {"stage": stage, "seed": seed}, job, job_dir)
  parts = [r for r in _time_records(workdir / "timings.jsonl")
           if r.get("seed") == seed and (r["stage"] == stage or r.get("for") == stage)]
  probes = (ProbeSettings(**config.probes.to_dict())
            if not longer and archive_module.probed(job) else None)
  archive_module.seal(stage, job, job_dir, archive_module.stage_dir(archive, seed, stage),
                      config.evaluate, probes, score=not longer,
                      figure=seed == config.seeds[0], timings=parts,
                      pretraining_folder=pretraining_folder)


def run(config, workdir):
  """Trains and seals every stage of ``plan`` (unless ``stages == 'evaluate'``), then
  writes the results from the archive (unless ``stages == 'train'``); returns the
  report's summary."""
  if config.stages not in ("all", "train", "evaluate"):
    raise ConfigError(f"stages must be 'all', 'train' or 'evaluate', got {config.stages!r}")
  workdir = Path(workdir)
  archive = Path(config.get("archive") or workdir)
  jobs = plan(config, workdir)
  longer = longer_plan(config, jobs)
  for _, _, job, _ in jobs + longer:  # every config, before the first one trains for hours
    check_training_config(job)
  check_evaluation_settings(config.evaluate)
  if is_main_process():
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(config, workdir)
  if config.stages != "evaluate":
    pretrainings = {j[1]: j for j in jobs if j[0] == "pretrain"}
    order = training_order(jobs) + longer
    for n, entry in enumerate(order):
      name, seed, job, job_dir = entry
      folder = archive_module.stage_dir(archive, seed, job_dir.name)
      where = f"{job_dir.name}, seed {seed}"
      if archive_module.is_sealed(folder):
        archive_module.check_sealed_job(job, folder)
        say(f"== study stage {n + 1}/{len(order)}: {where}: sealed in {folder}")
        continue
      say(f"== study stage {n + 1}/{len(order)}: {where} ({job_dir})")
      _train_and_seal(config, workdir, archive, entry, pretrainings.get(seed),
                      longer=n >= len(jobs))
  if config.stages == "train" or not is_main_process():
    return {}
  return report(config, jobs, longer, archive)


def report(config, jobs, longer, archive) -> dict:
  """The study's results from the sealed stages alone, into ``<archive>/results``: the
  evaluation's report (``urn_jax.evaluation.report``), the probes, ``convergence.md`` and
  ``timings.md``."""
  from urn_jax.evaluation.curves import convergence_report
  from urn_jax.evaluation.report import write_report  # matplotlib: only here
  from urn_jax.experiments.probes import write_probes
  archive = Path(archive)
  sealed = [(name, seed, job, archive_module.stage_dir(archive, seed, name))
            for name, seed, job, _ in jobs]
  sealed_longer = [(name, seed, job, archive_module.stage_dir(archive, seed, job_dir.name))
                   for name, seed, job, job_dir in longer]
  missing = archive_module.unsealed(folder for *_, folder in sealed + sealed_longer)
  if missing:
    raise DataError(f"{len(missing)} stage(s) of the study are not sealed in {archive} (first "
                    f"{missing[0]}): train them (--config.stages=all) before the results")
  runs, cases = [], None
  for *_, folder in sealed:
    run, its_cases, figure_case, tumours = archive_module.sealed_run(folder)
    if cases is not None and its_cases != cases:
      raise DataError(f"{folder} was scored on other test patients than {sealed[0][3]}: the "
                      "archive mixes studies of different data or splits")
    cases = its_cases
    runs.append(run)
  if longer:
    converged = shown_converged(sealed, sealed_longer)
    for run in runs:
      run["converged"] = converged.get(run["workdir"])
  results = archive / "results"
  summary = write_report(runs, results, figure_case, config.evaluate.figures, cases=cases,
                         tumours=tumours)
  probes = {}
  for _, seed, job, folder in sealed:
    if archive_module.probed(job):
      probes.setdefault(seed, []).extend(
          json.loads((folder / archive_module.PROBES).read_text()))
  summary["files"] += [str(f) for f in write_probes(probes, results)]
  records = sealed_times((seed, folder) for _, seed, _, folder in sealed + sealed_longer)
  summary["files"].append(str(write_timings(archive, records)))
  if longer:
    summary["files"].append(str(convergence_report(
        [(name, seed, job.job, folder.parent / name, folder)
         for name, seed, job, folder in sealed_longer], results)))
  return summary
