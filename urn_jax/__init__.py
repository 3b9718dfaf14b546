"""urn_jax: segmentation with missing MRI modalities, by modality dropout and the Unified
Representation Network (Lau, Adler and Sjolund, 2019, arXiv:1908.06683), in JAX and Flax.

The package's layers, each a folder whose ``__init__`` says what it owns, lowest first:

- shared leaves: ``errors``, ``files``, ``console``, ``modalities``, ``labels``,
  ``metrics``, ``job_config``, ``scenarios``, ``hosts`` (several processes as one run);
- ``model`` (the networks and the fusion) and ``data`` (cases, pre-processing, splits,
  loader, phantom), which never import each other;
- ``training`` (modality dropout, losses, optimizer, steps, the loop, checkpoints);
- ``inference`` (trained models on whole volumes, ``urn-segment``);
- ``evaluation`` (the 15 combinations, the paper's tables, figures and claims);
- ``experiments`` (the study, the probes, the demo); ``jobs`` runs any of them.

The names below are the library's public face (``from urn_jax import fuse``).
"""

from urn_jax.labels import NUM_CLASSES
from urn_jax.modalities import MODALITIES, availability_masks, mask_key, mask_name, mask_symbols
from urn_jax.model.decoder import SynthesisDecoders
from urn_jax.model.encoder import REPRESENTATION_CHANNELS, Encoders
from urn_jax.model.fusion import LearnedF, fuse, fuse_hemis, fusion_variance
from urn_jax.model.unet import PAPER_FEATURES, BatchNorm, UNet
from urn_jax.model.urn import URN, Baseline
from urn_jax.training.losses import (cross_entropy, segmentation_loss, soft_dice_loss,
                                     synthesis_loss)
from urn_jax.training.modality_dropout import modality_dropout, truncated_geometric_pmf
from urn_jax.training.optimizer import learning_rate_schedule, make_optimizer
from urn_jax.training.steps import TrainState, create_train_state, pretrain_step, segment_step

__version__ = "0.1.0"
__all__ = ["NUM_CLASSES", "MODALITIES", "availability_masks", "mask_key", "mask_name",
           "mask_symbols", "SynthesisDecoders", "REPRESENTATION_CHANNELS", "Encoders",
           "LearnedF", "fuse", "fuse_hemis", "fusion_variance", "PAPER_FEATURES",
           "BatchNorm", "UNet", "URN", "Baseline", "cross_entropy", "segmentation_loss",
           "soft_dice_loss", "synthesis_loss", "modality_dropout", "truncated_geometric_pmf",
           "learning_rate_schedule", "make_optimizer", "TrainState", "create_train_state",
           "pretrain_step", "segment_step", "infer", "load_model", "predict_volume"]

_LAZY = {"infer": "urn_jax.inference.predict", "load_model": "urn_jax.inference.predict",
         "predict_volume": "urn_jax.inference.predict"}


def __getattr__(name):
  """``infer``, ``load_model`` and ``predict_volume`` live with the code that predicts
  (``urn_jax.inference.predict``, which needs orbax and nibabel): imported on first use,
  so ``import urn_jax`` stays light."""
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'urn_jax' has no attribute {name!r}")
