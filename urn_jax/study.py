"""The paper's study end to end (``configs/study.py``): train every stage, evaluate, publish.

Each stage is an ordinary training job (``train_and_evaluate``) in its own work directory,
``<workdir>/seed<seed>/<stage>``, so any of them can be inspected, resumed or re-evaluated
on its own. After the evaluation, ``urn_jax.probes`` probes the URNs' representations.
Rerunning the study resumes every stage from its checkpoints; a finished stage costs only
the data check and a model initialization. Wall time per stage is appended to
``<workdir>/timings.jsonl``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import ml_collections

from urn_jax.config_checks import check_evaluation_settings, check_training_config
from urn_jax.errors import ConfigError
from urn_jax.from_config import pretrained_encoders
from urn_jax.train import train_and_evaluate

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


def run(config, workdir):
  """Trains every stage of ``plan`` (unless ``stages == 'evaluate'``), then evaluates
  (unless ``stages == 'train'``); returns the evaluation's summary."""
  if config.stages not in ("all", "train", "evaluate"):
    raise ConfigError(f"stages must be 'all', 'train' or 'evaluate', got {config.stages!r}")
  workdir = Path(workdir)
  jobs = plan(config, workdir)
  for _, _, job, _ in jobs:  # every stage's config, before the first one trains for hours
    check_training_config(job)
  check_evaluation_settings(config.evaluate)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
  if config.stages != "evaluate":
    for n, (name, seed, job, job_dir) in enumerate(jobs):
      print(f"== study stage {n + 1}/{len(jobs)}: {name}, seed {seed} ({job_dir})",
            file=sys.stderr)
      start = time.perf_counter()
      last = train_and_evaluate(job, job_dir)
      if last:  # empty when the stage had already finished
        with (workdir / "timings.jsonl").open("a") as f:
          f.write(json.dumps({"stage": name, "seed": seed, "seconds":
                              round(time.perf_counter() - start, 1), "last": last}) + "\n")
  if config.stages == "train":
    return {}
  from urn_jax.evaluate import evaluate_models  # matplotlib and friends: only here
  from urn_jax.probes import run_probes
  models = [(name, seed, job_dir) for name, seed, _, job_dir in jobs]
  summary = evaluate_models(models, workdir / "results", config.evaluate)
  # The representations that are their own: a frozen URN's is its pre-training's.
  run_probes([(name, seed, job_dir) for name, seed, job, job_dir in jobs
              if job.model.kind == "urn" and pretrained_encoders(job) != "frozen"],
             workdir / "results")
  summary["files"] += [str(workdir / "results" / f) for f in ("probes.md", "probes.json")]
  return summary
