"""Runs an urn_jax job: python launch.py --config=configs/<job>.py --workdir=<dir>.

Each config's docstring shows its command; override fields with --config.<field>=<value>.
"""

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

import urn_jax.jobs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Job configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MULTI_HOST = flags.DEFINE_bool(
    "multi_host", False, "Call jax.distributed.initialize() (several hosts: SLURM, Open MPI, "
    "Cloud TPU, or JAX_COORDINATOR_ADDRESS set, which implies it).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if _MULTI_HOST.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()  # finds its peers from the cluster's environment
  urn_jax.jobs.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
