"""The jobs ``launch.py`` can run, chosen by ``config.job``."""

from __future__ import annotations

import importlib
import sys

JOBS = {  # job -> "module:function(config, workdir)"
    "demo": "urn_jax.demo:run",
    "pretrain": "urn_jax.train:train_and_evaluate",
    "segment": "urn_jax.train:train_and_evaluate",
    "study": "urn_jax.study:run",
    "evaluate": "urn_jax.evaluate:run",
    "infer": "urn_jax.inference:run",
}


class ConfigError(ValueError):
  """A config field has a value the job cannot use; the message names the field."""


def run(config, workdir: str):
  if config.job not in JOBS:
    raise SystemExit(f"error: unknown job {config.job!r} in the config; known jobs: "
                     f"{', '.join(sorted(JOBS))}")
  module, function = JOBS[config.job].split(":")
  from urn_jax.data.cases import DataError
  from urn_jax.checkpoints import CheckpointMismatch
  from urn_jax.train import Interrupted, TrainingDiverged
  try:
    return getattr(importlib.import_module(module), function)(config, workdir)
  except (ConfigError, DataError, CheckpointMismatch, TrainingDiverged, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None  # the user's problem: a message, no traceback
  except KeyboardInterrupt as e:
    if not isinstance(e, Interrupted):  # training has said where it stopped
      print(f"{config.job}: interrupted (Ctrl-C)", file=sys.stderr)
    raise SystemExit(130) from None
