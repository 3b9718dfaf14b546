"""Runs an urn_jax job: python launch.py --config=configs/<job>.py --workdir=<dir>.

Each config's docstring shows its command; override fields with --config.<field>=<value>.
"""

import os
import re
import sys

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


def _parse_flags(argv):
  """absl's flag parsing, but a mistaken flag or ``--config.<field>`` override (a misspelt
  field, a value of the wrong type) ends in one line that names it, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    text = " ".join(str(e).replace("\\n", "\n").split())
    # A config file's get_config that raised (an unknown variant, say): its message, not
    # the traceback ml_collections quotes.
    raised = re.search(r"Traceback \(most recent call last\):.*\s(\w+(?:Error|Exception): .*)$",
                       text)
    if raised:
      text = text[:raised.start()] + raised.group(1)
    if not isinstance(e, flags.Error):  # ml_collections: an override names no field
      name = re.search(r"\w+", text).group()
      flag = next((a.split("=")[0] for a in argv if a.startswith("--config.")
                   and a.split("=")[0].endswith(f".{name}")), None)
      if flag is None:  # not an override's doing (a bug in a config file, say)
        raise
      hint = re.search(r'Did you mean "(\w+)"', text)
      text = f"{flag}: the config has no field {name!r}" + (
          f"; did you mean {hint.group(1)!r}?" if hint else "")
    print(f"launch.py: error: {text}\n(--config.<field>=<value> overrides a field that the "
          "config file defines; its docstring shows them)", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if _MULTI_HOST.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()  # finds its peers from the cluster's environment
  urn_jax.jobs.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
