"""The jobs ``launch.py`` can run, chosen by ``config.job``."""

from __future__ import annotations

import importlib

JOBS = {"demo": "urn_jax.demo"}


def run(config, workdir: str):
  if config.job not in JOBS:
    raise SystemExit(f"error: unknown job {config.job!r} in the config; known jobs: "
                     f"{', '.join(sorted(JOBS))}")
  return importlib.import_module(JOBS[config.job]).run(config, workdir)
