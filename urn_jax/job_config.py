"""A job's config as its work directory keeps it (``config.json``), read back and brought up
to date in one place.

Training writes the resolved config next to its checkpoints (``write_config``); evaluation,
``urn-segment``, the study and a resumed run read it back with ``read_config``. A config
written by an older version lacks fields added since; ``migrate`` fills each as that
version meant it, so every other module reads a config of this version and nothing else
(the same for the config ``signature`` a checkpoint stores, ``urn_jax.training.checkpoints``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import ml_collections

from urn_jax.errors import ConfigError, DataError, MissingInput
from urn_jax.files import write_text_atomically

CONFIG_FILE = "config.json"
TRAINING_JOBS = ("pretrain", "segment")
# Work directories written before ``pretrained_encoders`` existed said "frozen" with this
# variant name alone.
_FROZEN_BEFORE_THE_FIELD = "urn_md_pretrained"


def migrate(fields: dict) -> dict:
  """``fields`` (a config as a dict, or the part of one that a checkpoint's signature
  keeps) with the fields of this version that it predates filled in as it meant them:

  - ``pretrained_encoders``: "frozen" for the variant ``urn_md_pretrained``, else "";
  - ``model.synthesis``: the pre-trainings had synthesis decoders, segmentations none;
  - ``train.theta``: None for no modality dropout (once written as a negative number);
  - ``train.hold_fraction``: 0, no held tail;
  - ``data.test_fraction``: 0.2. A split file of those versions has no test part and is
    refused by ``urn_jax.data.splits`` with a message that says what to do.
  """
  fields = copy.deepcopy(fields)
  if "pretrained_encoders" not in fields:
    fields["pretrained_encoders"] = (
        "frozen" if fields.get("variant") == _FROZEN_BEFORE_THE_FIELD else "")
  if isinstance(fields.get("model"), dict):
    fields["model"].setdefault("synthesis", fields.get("job") == "pretrain")
  train = fields.get("train")
  if isinstance(train, dict):
    if train.get("theta") is not None and train["theta"] < 0:
      train["theta"] = None
    train.setdefault("hold_fraction", 0.0)
  if isinstance(fields.get("data"), dict):
    fields["data"].setdefault("test_fraction", 0.2)
  return fields


def pretrained_encoders(config) -> str:
  """``''`` (encoders trained from scratch), ``'frozen'`` or ``'fine-tuned'`` (restored from
  ``pretrained_workdir``). Encoders are restored whenever ``pretrained_workdir`` is set:
  fine-tuned unless ``pretrained_encoders`` says frozen."""
  encoders = config.get("pretrained_encoders", "")
  if not encoders and config.get("pretrained_workdir"):
    return "fine-tuned"
  return encoders


def _raw_fields(workdir) -> dict | None:
  path = Path(workdir) / CONFIG_FILE
  if not path.is_file():
    return None
  try:
    fields = json.loads(path.read_text())
  except ValueError as e:
    raise DataError(f"{path} is damaged ({e}); it records how the model was built: "
                    "restore it from a copy, or train again") from None
  return fields if isinstance(fields, dict) else {}


def stored_fields(workdir) -> dict | None:
  """The fields of ``workdir``'s ``config.json``, migrated (``migrate``); None when there is
  no such file, a ``DataError`` when it is damaged."""
  fields = _raw_fields(workdir)
  return None if fields is None else migrate(fields)


def stored_config(config) -> ml_collections.ConfigDict:
  """A config as a work directory stored it, brought up to this version (``migrate``)."""
  return ml_collections.ConfigDict(migrate(json.loads(config.to_json())))


def read_config(workdir, jobs=TRAINING_JOBS) -> ml_collections.ConfigDict:
  """The config a job wrote into ``workdir``, brought up to this version; a clear error
  when there is none, it is damaged, or its job is not one of ``jobs``."""
  fields = _raw_fields(workdir)
  if fields is None:
    raise MissingInput(f"{workdir} is not a training work directory: it has no "
                       f"{CONFIG_FILE} (expected the --workdir of a pretrain or segment run)")
  if fields.get("job") not in jobs:
    raise ConfigError(f"{workdir} holds a {fields.get('job')!r} job, not a trained model "
                      "(expected the --workdir of a pretrain or segment run)")
  return stored_config(ml_collections.ConfigDict(fields))


def write_config(config, workdir) -> Path:
  """Writes ``config`` into ``workdir``'s ``config.json`` (atomically)."""
  return write_text_atomically(Path(workdir) / CONFIG_FILE,
                               config.to_json_best_effort(indent=1))
