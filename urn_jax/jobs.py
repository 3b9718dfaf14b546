"""The jobs ``launch.py`` can run, chosen by ``config.job``, and how they end for a user."""

from __future__ import annotations

import importlib

from urn_jax.console import say
from urn_jax.errors import Interrupted, UserError

JOBS = {  # job -> "module:function(config, workdir)"
    "demo": "urn_jax.experiments.demo:run",
    "pretrain": "urn_jax.training.loop:train_and_evaluate",
    "segment": "urn_jax.training.loop:train_and_evaluate",
    "study": "urn_jax.experiments.study:run",
    "evaluate": "urn_jax.evaluation.evaluate:run",
    "infer": "urn_jax.inference.segment:run",
}


def run(config, workdir: str):
  """Runs ``config.job``; a ``UserError`` ends in one line naming what to fix, anything
  else (a bug) with its traceback."""
  if config.job not in JOBS:
    raise SystemExit(f"error: unknown job {config.job!r} in the config; known jobs: "
                     f"{', '.join(sorted(JOBS))}")
  module, function = JOBS[config.job].split(":")
  try:
    return getattr(importlib.import_module(module), function)(config, workdir)
  except UserError as e:
    raise SystemExit(f"error: {e}") from None  # the user's problem: a message, no traceback
  except KeyboardInterrupt as e:
    if not isinstance(e, Interrupted):  # training has said where it stopped
      say(f"{config.job}: interrupted (Ctrl-C)")
    raise SystemExit(130) from None
