"""URN synthesis pre-training on pooled BraTS + HCP data (paper 2.3-2.4).

    python launch.py --config=configs/pretrain.py --workdir=runs/pretrain
    python launch.py --config=configs/pretrain.py:small --workdir=runs/pretrain_small
    python launch.py --config=configs/pretrain.py:paper --workdir=runs/pretrain \
        --config.data.brats_dir=/data/BraTS2018 --config.data.hcp_dir=/data/HCP

Modality dropout theta 0.8 with at least two modalities kept (the variance term needs two),
Adam lr 3e-5, variance weight 1e-4, batch 4; "until convergence": early stopping on the
validation loss (patience evaluations without improvement), capped at max_steps.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # noqa: E402


def get_config(arg: str = ""):
  _, preset = default.parse_arg(arg, variants=())
  config = default.apply_preset(default.get_config(), preset)
  config.job = "pretrain"
  config.model.segmentation_features = ()
  config.train.learning_rate = 3e-5
  config.train.theta = 0.8
  config.train.min_keep = 2
  config.train.num_epochs = 1000.0
  config.train.patience = 5
  return config
