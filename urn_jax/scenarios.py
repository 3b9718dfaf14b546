"""The paper's scenarios and models by the names its tables give them.

Table 1 compares four segmentation scenarios (paper 3.2): the Baseline, the Baseline trained
with modality dropout ("Baseline + MD"), the URN trained with it end to end ("URN + MD"),
and the URN whose encoders were pre-trained by synthesis on BraTS and HCP, then frozen
("URN + MD w/ HCP"). Table 2 compares two pre-trainings: on BraTS alone ("URN") and on
BraTS + HCP ("URN w/ HCP"). Three names go beyond the paper: frozen encoders pre-trained on
BraTS alone ("URN + MD pre-trained"), pre-trained encoders fine-tuned rather than frozen
(", fine-tuned" appended), and Baseline + MD with about the URN's parameter count
("Baseline + MD (wide)"). Results files, tables, figures and claims use these names and
nothing else: ``name_of`` gives a trained run its name, the others compare against these
constants.
"""

from __future__ import annotations

from urn_jax.job_config import pretrained_encoders

BASELINE = "Baseline"
BASELINE_MD = "Baseline + MD"
BASELINE_MD_WIDE = "Baseline + MD (wide)"
URN_MD = "URN + MD"
URN_MD_HCP = "URN + MD w/ HCP"
URN_MD_PRETRAINED = "URN + MD pre-trained"
PRETRAINING = "URN"
PRETRAINING_HCP = "URN w/ HCP"
FINE_TUNED = ", fine-tuned"

VARIANT_NAMES = {"baseline": BASELINE, "baseline_md": BASELINE_MD,
                 "baseline_md_wide": BASELINE_MD_WIDE, "urn_md": URN_MD,
                 "urn_md_pretrained": URN_MD_PRETRAINED,
                 "urn_md_finetuned": URN_MD_PRETRAINED + FINE_TUNED}
"""``configs/segment.py``'s variants (their encoders pre-trained on BraTS alone, where
they have pre-trained ones)."""

TABLE1_SCENARIOS = (BASELINE, BASELINE_MD, URN_MD, URN_MD_HCP)
TABLE2_MODELS = (PRETRAINING, PRETRAINING_HCP)
SYNTHESIS_FIGURES = {PRETRAINING: 4, PRETRAINING_HCP: 5}
"""The paper's figure that shows each pre-training's synthesis."""


def fine_tuned(name: str) -> str:
  """The name of ``name``'s scenario with its pre-trained encoders fine-tuned."""
  return name + FINE_TUNED


def name_of(config, pretraining_used_hcp: bool | None = None) -> str:
  """The name of the run ``config`` describes. A pre-training is named by its data; a
  segmentation by its variant, and one on pre-trained encoders by the pre-training's data
  too, when ``pretraining_used_hcp`` says it (its ``data.use_hcp``)."""
  if config.job == "pretrain":
    return PRETRAINING_HCP if config.data.use_hcp else PRETRAINING
  variant = config.get("variant", "")
  name = VARIANT_NAMES.get(variant, variant)
  encoders = pretrained_encoders(config)
  if encoders and pretraining_used_hcp:
    name = URN_MD_HCP + (FINE_TUNED if encoders == "fine-tuned" else "")
  return name
