"""Segmentation, in the paper's four scenarios (paper 2.1-2.4, Table 1).

    python launch.py --config=configs/segment.py:baseline --workdir=runs/baseline
    python launch.py --config=configs/segment.py:baseline_md --workdir=runs/baseline_md
    python launch.py --config=configs/segment.py:urn_md --workdir=runs/urn_md
    python launch.py --config=configs/segment.py:urn_md_pretrained --workdir=runs/urn_md_pre \
        --config.pretrained_workdir=runs/pretrain
    python launch.py --config=configs/segment.py:urn_md_finetuned --workdir=runs/urn_md_ft \
        --config.pretrained_workdir=runs/pretrain      # beyond the paper
    python launch.py --config=configs/segment.py:urn_md,small --workdir=runs/urn_md_small

Cross-entropy (``--config.train.loss=dice_ce`` adds a soft Dice loss, beyond the paper),
batch 4; modality dropout theta 0.5 with at least one modality kept, except for
``baseline``. Learning rate and length by size (``default.RECIPES``): the ``paper`` preset
keeps Adam at a constant 1e-4 for 50 epochs; the CPU sizes use a warmed-up, cosine-decayed
1e-2 over a fixed number of steps. ``urn_md`` trains encoders and
head together with the variance term; ``urn_md_pretrained`` restores the encoders from
``pretrained_workdir`` and freezes them; ``urn_md_finetuned``, a fifth variant beyond the
paper, restores them the same way and trains them with the rest (and the variance term), to
tell what the frozen encoders cost or bring. ``baseline_md_wide``, also beyond the paper, is
Baseline + MD with every U-Net width ``WIDE`` times as large: about the URN segmentation
network's parameter count (301,018 against 299,772 at widths 8-64; 77.6 M against 76.6 M at
the paper's), so that a URN's lead over the baseline is not its size alone. The phantom is
shared with pre-training when ``data.cache_dir`` is; the split (``<workdir>/split.json``) is
drawn again from ``data.split_seed`` and the case ids, so the same data and seed give the
same patients.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # noqa: E402

from ml_collections import config_dict  # noqa: E402

VARIANTS = ("baseline", "baseline_md", "baseline_md_wide", "urn_md", "urn_md_pretrained",
            "urn_md_finetuned")
WIDE = 2.25  # baseline_md_wide's widths over the baseline's: parameters x ~5.0


def get_config(arg: str = "urn_md"):
  variant, preset = default.parse_arg(arg, VARIANTS)
  variant = variant or "urn_md"
  config = default.apply_preset(default.get_config(), preset)
  config.job = "segment"
  config.variant = variant
  config.data.use_hcp = False  # HCP has no labels
  default.apply_recipe(config, "segment", preset)
  if variant.startswith("baseline"):
    config.model.kind = "baseline"
    config.model.encoder_features = ()
  if variant == "baseline_md_wide":
    config.model.segmentation_features = wide(config.model.segmentation_features)
  if variant == "baseline":
    config.train.theta = config_dict.placeholder(float)  # None: no modality dropout
  if variant == "urn_md_pretrained":
    config.pretrained_encoders = "frozen"
    config.train.variance_weight = 0.0  # frozen encoders: the term has no gradient
  if variant == "urn_md_finetuned":
    config.pretrained_encoders = "fine-tuned"
  return config


def wide(features) -> tuple[int, ...]:
  """``baseline_md_wide``'s U-Net widths for a baseline of ``features``."""
  return tuple(int(round(WIDE * f)) for f in features)
