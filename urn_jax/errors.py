"""What a user can get wrong: the ``UserError`` family, and how a stopped job ends.

``launch.py`` (``urn_jax.jobs``) and ``urn-segment`` turn exactly these into a one-line
message (and a non-zero exit); every other exception is a bug and keeps its traceback. Each
message names the field, file or folder at fault and says what was expected.
"""

from __future__ import annotations


class UserError(Exception):
  """A problem the user can fix: a config value, an input file, a work directory."""


class ConfigError(UserError, ValueError):
  """A config field has a value the job cannot use; the message names the field."""


class DataError(UserError, ValueError):
  """A problem with the input data; the message names the case and the file."""


class MissingInput(UserError, FileNotFoundError):
  """A file or folder the command names (or needs, e.g. a checkpoint) does not exist."""


class CheckpointMismatch(UserError, ValueError):
  """A checkpoint does not belong to the configured model."""


class TrainingDiverged(UserError, RuntimeError):
  """The loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
  """Training stopped on Ctrl-C or SIGTERM, and has said where it can resume from."""
