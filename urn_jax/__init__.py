"""urn_jax: segmentation with missing MRI modalities, by modality dropout and the Unified
Representation Network (Lau, Adler and Sjolund, 2019, arXiv:1908.06683), in JAX and Flax."""

from urn_jax.decoder import SynthesisDecoders
from urn_jax.encoder import REPRESENTATION_CHANNELS, Encoders
from urn_jax.fusion import LearnedF, fuse, fuse_hemis, fusion_variance
from urn_jax.losses import cross_entropy, segmentation_loss, soft_dice_loss, synthesis_loss
from urn_jax.modalities import MODALITIES, availability_masks, mask_key, mask_name, mask_symbols
from urn_jax.modality_dropout import modality_dropout, truncated_geometric_pmf
from urn_jax.optimizer import learning_rate_schedule, make_optimizer
from urn_jax.train_step import TrainState, create_train_state, pretrain_step, segment_step
from urn_jax.unet import PAPER_FEATURES, BatchNorm, UNet
from urn_jax.urn import NUM_CLASSES, URN, Baseline

__version__ = "0.1.0"


def __getattr__(name):
  """``urn_jax.infer`` lives with the code that predicts (``urn_jax.predict``, which needs
  orbax and nibabel): imported on first use, so ``import urn_jax`` stays light."""
  if name == "infer":
    from urn_jax.predict import infer
    return infer
  raise AttributeError(f"module 'urn_jax' has no attribute {name!r}")
