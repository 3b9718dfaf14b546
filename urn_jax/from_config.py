"""A job's ``ConfigDict`` read in one place: the network, the pre-processing, the data, the
step and its objective, the learning-rate schedule.

Training (``train.py``), its validation (``validation.py``), evaluation and ``urn-segment``
(``predict.py``) all build from here, so a field added to ``config.data`` or
``config.model`` changes them together: inference can never pre-process differently from
training. Configs that a work directory stores from older versions are brought up to date
by ``stored_config`` before anything reads them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections

from urn_jax.data.datasets import prepare_data
from urn_jax.data.loader import SliceSource
from urn_jax.data.preprocess import PreprocessConfig
from urn_jax.errors import ConfigError, DataError, MissingInput
from urn_jax.modalities import MODALITIES
from urn_jax.optimizer import learning_rate_schedule
from urn_jax.train_step import pretrain_objective, pretrain_step, segment_objective, segment_step
from urn_jax.urn import URN, Baseline

DTYPES = {name: jnp.dtype(name) for name in ("float32", "bfloat16")}
# Work directories written before ``pretrained_encoders`` existed said "frozen" with this
# variant name alone; read only to bring their stored configs up to date.
_FROZEN_BEFORE_THE_FIELD = "urn_md_pretrained"


def pretrained_encoders(config) -> str:
  """``''`` (encoders trained from scratch), ``'frozen'`` or ``'fine-tuned'`` (restored from
  ``pretrained_workdir``). Encoders are restored whenever ``pretrained_workdir`` is set:
  fine-tuned unless the field says frozen."""
  default = "frozen" if config.get("variant") == _FROZEN_BEFORE_THE_FIELD else ""
  encoders = config.get("pretrained_encoders", default)
  if not encoders and config.get("pretrained_workdir"):
    return "fine-tuned"
  return encoders


def synthesis(config) -> bool:
  """Whether the network has the synthesis decoders (``model.synthesis``; configs from
  before the field: pre-training ones)."""
  return bool(config.model.get("synthesis", config.job == "pretrain"))


def theta(config):
  """The modality dropout's decay, or None for none (``train.theta``; configs from before
  None was allowed said it with a negative number)."""
  value = config.train.theta
  return None if value is None or value < 0 else float(value)


def stored_config(config) -> ml_collections.ConfigDict:
  """A config as read from a work directory's ``config.json``, with the fields of this
  version that it predates filled in as it meant them."""
  config = ml_collections.ConfigDict(json.loads(config.to_json()))
  config.pretrained_encoders = pretrained_encoders(config)
  config.model.synthesis = synthesis(config)
  config.train.theta = theta(config)
  if "hold_fraction" not in config.train:  # before the held tail existed: none
    config.train.hold_fraction = 0.0
  return config


def build_model(config):
  """The network of ``config.model``: a URN's heads are its synthesis decoders
  (``model.synthesis``) and a segmentation U-Net (``model.segmentation_features``, none
  when empty); frozen encoders when ``pretrained_encoders`` is ``'frozen'``."""
  m = config.model
  if m.dtype not in DTYPES:
    raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {m.dtype!r}")
  dtype = DTYPES[m.dtype]
  if m.kind == "baseline":
    return Baseline(len(MODALITIES), tuple(m.segmentation_features), dtype=dtype)
  if m.kind != "urn":
    raise ConfigError(f"model.kind must be 'urn' or 'baseline', got {m.kind!r}")
  return URN(len(MODALITIES), tuple(m.encoder_features), m.channels, m.fusion,
             synthesis=synthesis(config),
             segmentation_features=tuple(m.segmentation_features) or None,
             stacking=m.stacking,
             freeze_encoders=pretrained_encoders(config) == "frozen", dtype=dtype)


def preprocess_settings(config) -> PreprocessConfig:
  """How a case is pre-processed for this model (``config.data``): the same for training,
  evaluation and ``urn-segment``."""
  d = config.data
  return PreprocessConfig(n4=d.n4, n4_shrink=d.n4_shrink, spacing=d.spacing, size=d.size)


def data_from_config(config, workdir, use_hcp=None):
  """``prepare_data`` with a job config's ``data`` settings (``use_hcp`` overrides):
  ``{dataset: {"train" | "validation" | "test": [case dirs]}}``. With several processes,
  process 0 writes the phantom, the pre-processing cache and the split first; the others
  wait for it, then find everything written and only read."""
  if jax.process_count() == 1:
    return _prepare(config, workdir, use_hcp)
  if jax.process_index() == 0:
    data = _prepare(config, workdir, use_hcp)
    multihost_utils.sync_global_devices("urn_jax: data prepared by process 0")
    return data
  multihost_utils.sync_global_devices("urn_jax: data prepared by process 0")
  return _prepare(config, workdir, use_hcp)


def _prepare(config, workdir, use_hcp):
  d = config.data
  return prepare_data(workdir, d.brats_dir, d.hcp_dir, d.cache_dir,
                      use_hcp=d.use_hcp if use_hcp is None else use_hcp,
                      preprocess=preprocess_settings(config), split_seed=d.split_seed,
                      train_fraction=d.train_fraction,
                      # Configs from before the test split have no test_fraction; their
                      # two-way split file is then refused with a message that says why.
                      test_fraction=d.get("test_fraction", 0.2), workers=d.workers,
                      phantom_brats=d.phantom_brats, phantom_hcp=d.phantom_hcp,
                      phantom_seed=d.phantom_seed)


def slice_sources(config, workdir) -> tuple[SliceSource, SliceSource]:
  """Slices of the training and validation patients; the test patients are not touched."""
  data = data_from_config(config, workdir)
  labels = config.job == "segment"
  part = lambda name: [c for dataset in data.values() for c in dataset[name]]
  return (SliceSource(part("train"), labels, config.data.skip_empty),
          SliceSource(part("validation"), labels, config.data.skip_empty))


def _objective_settings(config) -> dict:
  t = config.train
  if config.job == "pretrain":
    return dict(variance_weight=t.variance_weight, reconstruction=t.reconstruction)
  return dict(variance_weight=t.variance_weight, loss=t.loss)  # checked: config_checks


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
  decay_steps = num_steps - int(round(t.get("hold_fraction", 0.0) * num_steps))
  warmup = int(round(t.warmup_fraction * decay_steps))
  return learning_rate_schedule(t.schedule, t.learning_rate, decay_steps, warmup,
                                t.end_lr_fraction)


def read_config(workdir) -> ml_collections.ConfigDict:
  """The config a training run wrote into its work directory (``stored_config``); a clear
  error otherwise."""
  config_path = Path(workdir) / "config.json"
  if not config_path.is_file():
    raise MissingInput(f"{workdir} is not a training work directory: it has no "
                       "config.json (expected the --workdir of a pretrain or segment run)")
  try:
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  except ValueError as e:
    raise DataError(f"{config_path} is damaged ({e}); it records how the model was built: "
                    "restore it from a copy, or train again") from None
  if config.get("job") not in ("pretrain", "segment"):
    raise ConfigError(f"{workdir} holds a {config.get('job')!r} job, not a trained "
                      "model (expected the --workdir of a pretrain or segment run)")
  return stored_config(config)
