"""The network a job's config describes (``config.model``): the one place a config becomes a
model, for training, evaluation, ``urn-segment`` and the probes alike."""

from __future__ import annotations

import jax.numpy as jnp

from urn_jax.errors import ConfigError
from urn_jax.job_config import pretrained_encoders
from urn_jax.modalities import MODALITIES
from urn_jax.model.urn import URN, Baseline

DTYPES = {name: jnp.dtype(name) for name in ("float32", "bfloat16")}
MODEL_KINDS = ("urn", "baseline")


def build_model(config):
  """The network of ``config.model``: a URN's heads are its synthesis decoders
  (``model.synthesis``) and a segmentation U-Net (``model.segmentation_features``, none
  when empty); its encoders are frozen when ``pretrained_encoders`` is ``'frozen'``."""
  m = config.model
  if m.dtype not in DTYPES:
    raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {m.dtype!r}")
  dtype = DTYPES[m.dtype]
  if m.kind == "baseline":
    return Baseline(len(MODALITIES), tuple(m.segmentation_features), dtype=dtype)
  if m.kind != "urn":
    raise ConfigError(f"model.kind must be one of {MODEL_KINDS}, got {m.kind!r}")
  return URN(len(MODALITIES), tuple(m.encoder_features), m.channels, m.fusion,
             synthesis=bool(m.synthesis),
             segmentation_features=tuple(m.segmentation_features) or None,
             stacking=m.stacking,
             freeze_encoders=pretrained_encoders(config) == "frozen", dtype=dtype)
