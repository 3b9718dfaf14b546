"""Checks a training job's whole config before anything is read, computed or written.

``check_training_config(config)`` raises one ``ConfigError`` that lists every field with a
value the job cannot use (its type, range or choices, or a combination of fields), each
by name, so a mistaken command costs a second, not the pre-processing of a
data set, and leaves the work directory as it was.
"""

from __future__ import annotations

import dataclasses
import numbers

from urn_jax.data import augment, scanners
from urn_jax.errors import ConfigError
from urn_jax.job_config import pretrained_encoders, read_config
from urn_jax.lesion_metrics import DEFINITIONS as LESION_DEFINITIONS
from urn_jax.model.build import DTYPES, MODEL_KINDS
from urn_jax.model.stacking import STACKINGS
from urn_jax.model.urn import FUSIONS
from urn_jax.training.losses import RECONSTRUCTIONS, SEGMENTATION_LOSSES
from urn_jax.training.optimizer import SCHEDULES

PRETRAINED_ENCODERS = ("", "frozen", "fine-tuned")


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_whole(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _widths(value) -> bool:
  return isinstance(value, (tuple, list)) and all(_is_whole(v) and v >= 1 for v in value)


class _Problems(list):
  """The problems found in ``config``, one sentence each; ``need`` adds one."""

  def __init__(self, config):
    super().__init__()
    self.config = config

  def need(self, ok: bool, field: str, expected: str):
    if not ok:
      section, name = field.split(".") if "." in field else ("", field)
      value = self.config[section][name] if section else self.config[name]
      self.append(f"{field} must be {expected}, got {value!r}")


def _data_problems(problems: _Problems):
  d, need = problems.config.data, problems.need
  need(_is_number(d.spacing) and d.spacing > 0, "data.spacing", "a voxel size in mm, > 0")
  need(_is_whole(d.size) and d.size >= 8, "data.size", "a whole number of voxels >= 8")
  need(_is_whole(d.n4_shrink) and d.n4_shrink >= 1, "data.n4_shrink", "a whole number >= 1")
  need(_is_number(d.train_fraction) and 0 < d.train_fraction <= 1, "data.train_fraction",
       "in (0, 1]")
  need(_is_number(d.test_fraction) and 0 <= d.test_fraction < 1, "data.test_fraction",
       "in [0, 1)")
  need(_is_whole(d.workers) and d.workers >= 1, "data.workers", "a whole number >= 1")
  need(_is_whole(d.loader_workers) and d.loader_workers >= 0, "data.loader_workers",
       "a whole number >= 0")
  for field in ("phantom_brats", "phantom_hcp"):
    need(_is_whole(d[field]) and d[field] >= 0, f"data.{field}", "a whole number >= 0")
  need(d.get("phantom_version", 2) in scanners.VERSIONS, "data.phantom_version",
       f"one of {scanners.VERSIONS}")
  need(d.get("phantom_site", "a") in scanners.SITES, "data.phantom_site",
       f"one of {tuple(scanners.SITES)}")


def _model_problems(problems: _Problems):
  config, need = problems.config, problems.need
  d, m = config.data, config.model
  need(m.kind in MODEL_KINDS, "model.kind", f"one of {MODEL_KINDS}")
  need(m.dtype in DTYPES, "model.dtype", f"one of {tuple(DTYPES)}")
  need(_widths(m.segmentation_features) and (
      len(m.segmentation_features) >= 1 or config.job == "pretrain"),
      "model.segmentation_features", "a tuple of U-Net widths >= 1, e.g. (8,16,32,64)")
  if m.kind == "urn":
    need(_widths(m.encoder_features) and len(m.encoder_features) >= 1,
         "model.encoder_features", "a tuple of U-Net widths >= 1, e.g. (8,16,32,64)")
    need(_is_whole(m.channels) and m.channels >= 1, "model.channels", "a whole number >= 1")
    need(m.fusion in FUSIONS, "model.fusion", f"one of {FUSIONS}")
    need(m.stacking in STACKINGS, "model.stacking", f"one of {STACKINGS}")
    if config.job == "pretrain":
      need(m.synthesis is True, "model.synthesis", "True for pre-training: its loss is the "
           "synthesis of every modality")
  elif config.job == "pretrain" and m.kind in MODEL_KINDS:
    need(False, "model.kind", "'urn' for pre-training: only a URN synthesizes "
         "modalities")
  unets = {"segmentation_features": m.segmentation_features}
  if m.kind == "urn":
    unets["encoder_features"] = m.encoder_features
  levels = {field: len(w) for field, w in unets.items() if _widths(w) and w}
  if levels and _is_whole(d.size) and d.size % 2 ** (max(levels.values()) - 1):
    deepest = max(levels.values())
    problems.append(f"data.size must be divisible by {2 ** (deepest - 1)} for a U-Net of "
                    f"{deepest} levels ({', '.join(f'model.{f}' for f in levels)}), "
                    f"got {d.size!r}")


def _train_problems(problems: _Problems):
  config, need = problems.config, problems.need
  t = config.train
  for field in ("batch_size", "max_steps", "eval_every", "eval_slices", "checkpoint_every",
                "keep_checkpoints", "log_every"):
    need(_is_whole(t[field]) and t[field] >= 1, f"train.{field}", "a whole number >= 1")
  need(_is_number(t.learning_rate) and t.learning_rate >= 0, "train.learning_rate",
       "a number >= 0")
  need(_is_number(t.num_epochs) and t.num_epochs > 0, "train.num_epochs", "a number > 0")
  need(t.schedule in SCHEDULES, "train.schedule", f"one of {SCHEDULES}")
  for field in ("warmup_fraction", "end_lr_fraction"):
    need(_is_number(t[field]) and 0 <= t[field] <= 1, f"train.{field}", "in [0, 1]")
  need(_is_number(t.hold_fraction) and 0 <= t.hold_fraction < 1, "train.hold_fraction",
       "in [0, 1): the last fraction of the steps held at the final learning rate")
  need(t.theta is None or (_is_number(t.theta) and 0 <= t.theta < 1), "train.theta",
       "the modality dropout's decay, in [0, 1) (the paper's 0.5; 0.8 for "
       "pre-training), or None for no dropout (the baseline variant)")
  need(_is_whole(t.min_keep) and 1 <= t.min_keep <= 4, "train.min_keep",
       "a number of modalities to keep, 1 to 4")
  if config.job == "pretrain" and _is_whole(t.min_keep):
    need(t.min_keep >= 2 or t.theta is None, "train.min_keep",
         "2 or more for pre-training: the variance term compares at least two "
         "encoders")
  need(_is_number(t.variance_weight) and t.variance_weight >= 0, "train.variance_weight",
       "a number >= 0")
  need(_is_number(t.patience_epochs) and t.patience_epochs >= 0, "train.patience_epochs",
       "a number of epochs >= 0 (0: never stop early)")
  need(_is_number(t.min_improvement) and 0 <= t.min_improvement < 1, "train.min_improvement",
       "a relative improvement, in [0, 1)")
  if config.job == "pretrain":
    need(t.reconstruction in RECONSTRUCTIONS, "train.reconstruction",
         f"one of {RECONSTRUCTIONS}")
  else:
    need(t.loss in SEGMENTATION_LOSSES, "train.loss", f"one of {SEGMENTATION_LOSSES}")


def _pretraining_problems(problems: _Problems):
  config, need = problems.config, problems.need
  encoders = pretrained_encoders(config)
  need(encoders in PRETRAINED_ENCODERS, "pretrained_encoders",
       f"one of {PRETRAINED_ENCODERS} ('': no pre-training)")
  if encoders:
    field = "pretrained_encoders" if config.get("pretrained_encoders") else "pretrained_workdir"
    need(config.job == "segment" and config.model.kind == "urn", field,
         "empty except for a URN segmentation (job 'segment', model.kind 'urn'): only its "
         "encoders can be restored from a pre-training")
    need(bool(config.get("pretrained_workdir")), "pretrained_workdir",
         "the work directory of a pre-training run (configs/pretrain.py), whose encoders "
         f"the {encoders} variant restores")


def _augment_problems(problems: _Problems):
  """``augment.*``: probabilities in [0, 1], each range a (low, high) pair in order and
  within ``augment.RANGES``'s bounds, no field the settings do not know (a typo would
  otherwise leave a transform silently off). A config without the block augments nothing."""
  config, need = problems.config, problems.need
  if "augment" not in config:
    return
  a = config.augment
  known = {f.name for f in dataclasses.fields(augment.AugmentSettings)} | {augment.SWITCH}
  for field in sorted(set(a.keys()) - known):
    problems.append(f"augment.{field} is not a setting of the augmentation; known: "
                    f"{', '.join(sorted(known))}")
  for field, meaning in ((augment.SWITCH, "False: no augmentation, whatever the probabilities"),
                         ("clean_targets", "True: pre-training's synthesis targets get no "
                                           "intensity transforms")):
    if field in a:
      need(isinstance(a[field], bool), f"augment.{field}", f"True or False ({meaning})")
  for field in augment.PROBABILITIES:
    if field in a:
      need(_is_number(a[field]) and 0 <= a[field] <= 1, f"augment.{field}",
           "a probability in [0, 1] (0: off)")
  for field, (lowest, highest, what) in augment.RANGES.items():
    if field in a:
      value = a[field]
      need(isinstance(value, (tuple, list)) and len(value) == 2
           and all(_is_number(v) for v in value) and lowest <= value[0] <= value[1] <= highest,
           f"augment.{field}", f"a range (low, high) with {lowest:g} <= low <= high <= "
           f"{highest:g} ({what})")
  for field, (lowest, highest, what) in augment.COUNTS.items():
    if field in a:
      need(_is_whole(a[field]) and lowest <= a[field] <= highest, f"augment.{field}",
           f"a whole number from {lowest} to {highest} ({what})")


def _problems(config) -> list[str]:
  problems = _Problems(config)
  for check in (_data_problems, _model_problems, _train_problems, _pretraining_problems,
                _augment_problems):
    check(problems)
  return problems


def check_training_config(config) -> None:
  """Raises ``ConfigError`` listing every unusable field of a pretrain / segment config."""
  problems = _problems(config)
  if len(problems) == 1:
    raise ConfigError(problems[0])
  if problems:
    raise ConfigError(f"{len(problems)} config fields cannot be used:\n  "
                      + "\n  ".join(problems))


# What pre-trained encoders must share with the segmentation that restores them: the slices
# they were trained on (their pre-processing) and their architecture.
PRETRAINING_FIELDS = ("data.spacing", "data.size", "data.n4", "data.n4_shrink",
                      "model.encoder_features", "model.channels", "model.fusion")


def _field(config, name: str):
  section, field = name.split(".")
  value = config[section][field]
  return list(value) if isinstance(value, (tuple, list)) else value


def check_pretraining_fits(config) -> None:
  """Raises ``ConfigError`` when the pre-training in ``pretrained_workdir`` differs from
  ``config`` in a field of ``PRETRAINING_FIELDS``: encoders pre-trained on 2 mm slices of
  96 x 96 voxels would otherwise be fed 3 mm slices of 64 x 64 without a word."""
  pretraining = read_config(config.pretrained_workdir)
  differ = [f"{name} {_field(pretraining, name)!r} there, {_field(config, name)!r} here"
            for name in PRETRAINING_FIELDS if _field(pretraining, name) != _field(config, name)]
  if differ:
    raise ConfigError(
        f"the pre-training in {config.pretrained_workdir} does not fit this config: "
        + "; ".join(differ) + ". Its encoders work on slices pre-processed as in their "
        "pre-training: use the same size preset for both (e.g. configs/pretrain.py:small "
        "with configs/segment.py:urn_md_pretrained,small), or set these fields as there")


def check_evaluation_settings(settings) -> None:
  """Raises ``ConfigError`` for unusable ``evaluate.*`` settings (``configs/evaluate.py``)."""
  problems = []
  if not _is_whole(settings.chunk) or settings.chunk < 1:
    problems.append(f"evaluate.chunk must be a whole number >= 1, got {settings.chunk!r}")
  if not _is_whole(settings.max_cases) or settings.max_cases < 0:
    problems.append("evaluate.max_cases must be a whole number >= 0 (0: every test "
                    f"patient), got {settings.max_cases!r}")
  if not isinstance(settings.get("adapt_bn", False), bool):
    problems.append("evaluate.adapt_bn (test-time adaptation) must be True or False, got "
                    f"{settings.adapt_bn!r}")
  definition = settings.get("lesion_metrics", "")
  if definition and definition not in LESION_DEFINITIONS:
    problems.append(f"evaluate.lesion_metrics must be one of {', '.join(LESION_DEFINITIONS)} "
                    f"or '' (none), got {definition!r}")
  if problems:
    raise ConfigError("; ".join(problems))
