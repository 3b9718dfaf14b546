"""Evaluation of trained models on the held-out test patients, for all 15 combinations of
modalities: Table 1 (Dice per region), Table 2 (PSNR of synthesis), Figures 2-5, per-case
CSVs.

    python launch.py --config=configs/evaluate.py --workdir=runs/eval \
        --config.models=runs/baseline,runs/baseline_md,runs/urn_md,runs/urn_md_pretrained
    python launch.py --config=configs/evaluate.py --workdir=runs/eval_pretrain \
        --config.models=runs/pretrain

``models``: comma-separated training work directories (segmentation and/or pre-training);
each is named after its scenario (from its ``config.json``) unless ``names`` gives
comma-separated names; work directories joined by '+' (``runs/urn_md_s0+runs/urn_md_s1``)
are one ensemble, their probabilities averaged. Runs with the same name (several seeds) are
averaged, and the table cells show the mean and the spread over them. Every model must have
been trained with the same split (``<workdir>/split.json``); its test BraTS patients, which
neither trained nor chose any model, are evaluated. ``evaluate.masks`` picks combinations,
e.g. ``--config.evaluate.masks=1111,1000`` for all four modalities and FLAIR alone;
``evaluate.lesion_metrics`` adds the BraTS 2023 lesion-wise Dice and HD95 (default) or
panoptica's instance-wise metrics, with the normalized surface Dice at 1 mm.
"""

import ml_collections

from urn_jax.inference.predict import CHUNK, DEFAULT_ADAPT, DEFAULT_MIRROR


def get_config():
  config = ml_collections.ConfigDict()
  config.job = "evaluate"
  config.models = ""
  config.names = ""
  config.evaluate = ml_collections.ConfigDict()
  config.evaluate.chunk = CHUNK        # slices per call of the one compiled inference function
  config.evaluate.max_cases = 0        # 0: every test patient
  config.evaluate.masks = "all"        # or keys such as "1111,0010" (F, T1, T1c, T2)
  config.evaluate.figure_case = ""     # case of Figures 3-5; default: the largest tumour
  config.evaluate.figures = True
  # Lesion-wise metrics beside the volume-wise ones (urn_jax.lesion_metrics): "brats2023"
  # (BraTS 2023-2024, in Table 1's lesion-wise versions), "panoptica" (cases.csv only), or
  # "" for none.
  config.evaluate.lesion_metrics = "brats2023"
  config.evaluate.mirror = ",".join(DEFAULT_MIRROR)  # test-time mirroring, as urn-segment's
  config.evaluate.adapt_bn = DEFAULT_ADAPT  # test-time adaptation, as urn-segment's --adapt-bn
  return config
