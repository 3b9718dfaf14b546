"""URN synthesis pre-training on pooled BraTS + HCP data (paper 2.3-2.4).

    python launch.py --config=configs/pretrain.py --workdir=runs/pretrain
    python launch.py --config=configs/pretrain.py:small --workdir=runs/pretrain_small
    python launch.py --config=configs/pretrain.py:paper --workdir=runs/pretrain \
        --config.data.brats_dir=/data/BraTS2018 --config.data.hcp_dir=/data/HCP

Modality dropout theta 0.8 with at least two modalities kept (the variance term needs two),
variance weight 1e-4, batch 4. Learning rate and length by size (``default.RECIPES``): the
``paper`` preset keeps Adam at a constant 3e-5 until convergence (a plateau of the
validation loss: less than 1 % better in 5 epochs); the CPU sizes use a warmed-up, cosine-
decayed 1e-2 over a fixed number of steps.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # noqa: E402


def get_config(arg: str = ""):
  _, preset = default.parse_arg(arg, variants=())
  config = default.apply_preset(default.get_config(), preset)
  config.job = "pretrain"
  config.model.segmentation_features = ()  # no segmentation U-Net
  config.model.synthesis = True
  config.train.theta = 0.8
  config.train.min_keep = 2
  config.train.num_epochs = 1000.0
  return default.apply_recipe(config, "pretrain", preset)
