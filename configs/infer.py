"""Segmentation of new patients with a trained model; the same code as ``urn-segment``.

    python launch.py --config=configs/infer.py --workdir=/data/predictions \
        --config.model=runs/urn_md --config.input=/data/patients
    python launch.py --config=configs/infer.py --workdir=out --config.model=runs/urn_md \
        --config.t1c=p1_t1ce.nii.gz --config.flair=p1_flair.nii.gz --config.case_id=p1

The work directory is the output folder: ``<case id>.nii.gz`` per case (BraTS labels on the
input's grid). See ``urn_jax/inference/segment.py`` for the inputs it accepts and its options.
"""

import ml_collections

from urn_jax.inference.predict import CHUNK, DEFAULT_ADAPT, DEFAULT_MIRROR


def get_config():
  config = ml_collections.ConfigDict()
  config.job = "infer"
  config.model = ""            # work directory of a segmentation run; several, comma-separated:
                               # an ensemble, its probabilities averaged
  config.mirror = ",".join(DEFAULT_MIRROR)  # test-time mirroring: "lr", "lr,ap", or "" (none)
  config.adapt_bn = DEFAULT_ADAPT  # test-time adaptation of the batch norms to each case
  config.input = ""            # a case folder or a folder of case folders
  config.flair = config.t1 = config.t1c = config.t2 = ""  # or one case's files
  config.case_id = ""
  config.synthesis = False     # also write the missing modalities, synthesized
  config.synthesis_model = ""  # pre-training run for synthesis (default: the model's own)
  config.probabilities = False
  config.labels = "brats2018"  # or "brats2023" (enhancing tumour = 3)
  config.chunk = CHUNK  # slices per call of the one compiled inference function
  config.overwrite = False
  return config
