"""The training recipe a job's config describes (``config.train``): the jitted step with its
hyper-parameters bound, the objective validation scores, and the learning-rate schedule."""

from __future__ import annotations

import functools

from urn_jax.training.optimizer import learning_rate_schedule
from urn_jax.training.steps import (pretrain_objective, pretrain_step, segment_objective,
                                    segment_step)


def theta(config):
  """Modality dropout's decay (``train.theta``), or None for none (the baseline)."""
  value = config.train.theta
  return None if value is None else float(value)


def _objective_settings(config) -> dict:
  t = config.train
  if config.job == "pretrain":
    return dict(variance_weight=t.variance_weight, reconstruction=t.reconstruction)
  return dict(variance_weight=t.variance_weight, loss=t.loss)


def train_step(config):
  """The jitted step of ``config.job`` with the config's hyper-parameters bound."""
  step = pretrain_step if config.job == "pretrain" else segment_step
  return functools.partial(step, theta=theta(config), min_keep=config.train.min_keep,
                           **_objective_settings(config))


@functools.lru_cache(maxsize=None)
def _objective_for(job: str, settings: tuple):
  """One ``functools.partial`` per job and settings, so ``eval_step`` compiles once."""
  objective = pretrain_objective if job == "pretrain" else segment_objective
  return functools.partial(objective, **dict(settings))


def objective(config):
  """The training objective of ``config.job`` with its settings: the one the step uses."""
  return _objective_for(config.job, tuple(sorted(_objective_settings(config).items())))


def schedule(config, num_steps: int):
  """The learning-rate schedule of ``config.train`` for a run of ``num_steps`` steps: the
  warm-up (``warmup_fraction``) and the decay take the first ``1 - hold_fraction`` of the
  steps, and the rest is held at the final rate (``end_lr_fraction`` of the peak), which
  shows whether the model still learns there. A run lengthened only by a held tail keeps
  its schedule up to where the tail begins, so it resumes from its old checkpoints."""
  t = config.train
  decay_steps = num_steps - int(round(t.hold_fraction * num_steps))
  warmup = int(round(t.warmup_fraction * decay_steps))
  return learning_rate_schedule(t.schedule, t.learning_rate, decay_steps, warmup,
                                t.end_lr_fraction)
