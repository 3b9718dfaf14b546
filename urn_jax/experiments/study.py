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

Wall time: ``urn_jax.experiments.timings``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ml_collections

from urn_jax.console import is_main_process, say
from urn_jax.errors import ConfigError, DataError, Interrupted, TrainingDiverged
from urn_jax.experiments import archive as archive_module
from urn_jax.experiments.probes import ProbeSettings
from urn_jax.experiments.timings import record_time, sealed_times, time_records, write_timings
from urn_jax.job_config import pretrained_encoders, write_config
from urn_jax.scenarios import name_of
from urn_jax.training.config_checks import check_evaluation_settings, check_training_config
from urn_jax.training.loop import train_and_evaluate


def _saved_step(job_dir: Path) -> int:
  """The newest step saved in ``<job_dir>/checkpoints`` (0 when none)."""
  folder = Path(job_dir) / "checkpoints"
  steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
  return max(steps, default=0)


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


def shown_converged(jobs, longer, diverged=()) -> dict:
  """Work directory -> whether its stage was shown converged by ``longer``'s run of it
  (``urn_jax.evaluation.curves.longer_run_check``; one seed's check stands for every seed
  of the stage), and for a segmentation on pre-trained encoders, its pre-training too:
  True, False, or None where no longer run checks it; False where either run is among
  ``diverged`` (work directories)."""
  from urn_jax.evaluation.curves import convergence_checks
  checks = {stage: check["converged"] for stage, _, _, _, check in convergence_checks(
      [(name, seed, job.job, job_dir.parent / name, job_dir)
       for name, seed, job, job_dir in longer], diverged)}

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
  (nothing when the stage had already finished; ``interrupted`` or ``diverged`` where it
  stopped so)."""
  start, record = time.perf_counter(), {**record, "from_step": _saved_step(job_dir)}
  try:
    last = train_and_evaluate(job, job_dir)
  except (Interrupted, TrainingDiverged) as e:
    how = "interrupted" if isinstance(e, Interrupted) else "diverged"
    record_time(workdir, {**record, "to_step": _saved_step(job_dir), "seconds": round(
        time.perf_counter() - start, 1), how: True})
    raise
  if last:
    record_time(workdir, {**record, "to_step": _saved_step(job_dir), "seconds": round(
        time.perf_counter() - start, 1), "last": last})


def _train_and_seal(config, workdir: Path, archive: Path, entry, pretraining, longer: bool):
  """Trains one stage (its pre-training first, again, where that was sealed and its work
  directory lost) and seals it into the archive. A stage that diverges is sealed as such
  (``archive.seal_diverged``) and stops the study with an error naming it; a segmentation
  on the encoders of a pre-training that diverged is sealed as such without training."""
  name, seed, job, job_dir = entry
  stage = job_dir.name  # a longer run's is "<stage>_x<factor>"
  folder = archive_module.stage_dir(archive, seed, stage)
  pretraining_folder = None

  def parts():
    return [r for r in time_records(workdir / "timings.jsonl")
            if r.get("seed") == seed and (r["stage"] == stage or r.get("for") == stage)]
  if pretrained_encoders(job):
    _, _, pretraining_job, pretraining_dir = pretraining
    pretraining_folder = archive_module.stage_dir(archive, seed, "pretrain")
    failed = archive_module.diverged(pretraining_folder)
    if failed:
      archive_module.seal_diverged(stage, job, job_dir, folder, "its pre-training (pretrain, "
                                   f"seed {seed}) diverged: {failed}",
                                   pretraining_folder=pretraining_folder)
      say(f"warning: {stage}, seed {seed} not trained: its pre-training diverged; sealed as "
          f"diverged in {folder}")
      return
    _train(workdir, {"stage": "pretrain_again", "seed": seed, "for": stage},
           pretraining_job, pretraining_dir)
  try:
    _train(workdir, {"stage": stage, "seed": seed}, job, job_dir)
  except TrainingDiverged as e:
    archive_module.seal_diverged(stage, job, job_dir, folder, str(e), timings=parts(),
                                 pretraining_folder=pretraining_folder)
    raise TrainingDiverged(
        f"{stage}, seed {seed} diverged: {e}. It is sealed as diverged in {folder}: the same "
        "command goes on with the next stage, and the results leave this seed out of its "
        "scenario and name it (docs/STUDY_PLAN.md)") from e
  probes = (ProbeSettings(**config.probes.to_dict())
            if not longer and archive_module.probed(job) else None)
  archive_module.seal(stage, job, job_dir, folder, config.evaluate, probes, score=not longer,
                      figure=seed == config.seeds[0], timings=parts(),
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
  diverged = {str(folder): why for *_, folder in sealed + sealed_longer
              if (why := archive_module.diverged(folder))}
  runs, cases = [], None
  for *_, folder in sealed:
    if str(folder) in diverged:
      continue
    run, its_cases, figure_case, tumours = archive_module.sealed_run(folder)
    if cases is not None and its_cases != cases:
      raise DataError(f"{folder} was scored on other test patients than {sealed[0][3]}: the "
                      "archive mixes studies of different data or splits")
    cases = its_cases
    runs.append(run)
  if longer:
    converged = shown_converged(sealed, sealed_longer, diverged)
    for run in runs:
      run["converged"] = converged.get(run["workdir"])
  results = archive / "results"
  stopped = [{"name": name_of(job, True), "job": job.job, "seed": seed,
              "workdir": str(folder), "diverged": diverged[str(folder)]}
             for _, seed, job, folder in sealed if str(folder) in diverged]
  summary = write_report(runs, results, figure_case, config.evaluate.figures, cases=cases,
                         tumours=tumours, diverged=stopped)
  probes = {}
  for _, seed, job, folder in sealed:
    if archive_module.probed(job) and str(folder) not in diverged:
      probes.setdefault(seed, []).extend(
          json.loads((folder / archive_module.PROBES).read_text()))
  summary["files"] += [str(f) for f in write_probes(probes, results)]
  records = sealed_times((seed, folder) for _, seed, _, folder in sealed + sealed_longer)
  summary["files"].append(str(write_timings(archive, records)))
  if longer:
    pairs = [(name, seed, job.job, folder.parent / name, folder)
             for name, seed, job, folder in sealed_longer]
    retrained = [folder for *_, folder in sealed + sealed_longer
                 if not archive_module.encoders_as_sealed(folder)]
    summary["files"].append(str(convergence_report(pairs, results, diverged, retrained)))
  return summary
