"""Settings shared by every urn_jax job; the job configs import and override them.

Not a job by itself. Size presets (``apply_preset``): ``paper`` is the paper's size for a GPU
(240 x 240 slices at 1 mm, U-Net widths 64-1024); ``small`` trains converged segmentation
models on a 2-core CPU in 2-12 minutes per job (3 mm slices of 64 x 64, widths 8-64; its
pre-training stops at a fixed length while still improving, ``RECIPES``); the default (no
preset; 2 mm slices of 96 x 96, widths 8-64) in 2.5-18 minutes (the README's main command,
pre-training, about 20 minutes with the phantom in a fresh clone; benchmarks/RESULTS.md has
the measurements).

Each preset has its own training recipe per job (``RECIPES``, applied by ``apply_recipe``):
the paper's values for ``paper``, and for the CPU sizes a recipe chosen on the validation
patients so that the model converges within the preset's budget (the reasons are next to
the values; the runs that chose them are in benchmarks/RESULTS.md), and its augmentation
(``AUGMENT``): none for ``paper``, nnU-Net's probabilities for the CPU sizes.
"""

import ml_collections

from urn_jax.data.augment import PROBABILITIES, AugmentSettings
from urn_jax.model.unet import PAPER_FEATURES  # the widths of the paper's U-Nets


def get_config():
  config = ml_collections.ConfigDict()
  config.job = ""
  config.seed = 0
  # segment: a pre-training work directory; when set, its encoders are restored, fine-tuned
  # unless pretrained_encoders is "frozen"
  config.pretrained_workdir = ""
  # segment: "frozen" or "fine-tuned" encoders (both need pretrained_workdir); "": trained
  # from scratch with the rest of the network (or fine-tuned if pretrained_workdir is set)
  config.pretrained_encoders = ""

  config.data = ml_collections.ConfigDict()
  config.data.brats_dir = ""      # empty (with hcp_dir empty): the built-in phantom
  config.data.hcp_dir = ""
  config.data.use_hcp = True      # pool HCP (pre-training); the phantom writes both anyway
  config.data.cache_dir = ""      # default: $URN_JAX_CACHE or ~/.cache/urn_jax
  config.data.workers = 2         # pre-processing processes
  config.data.loader_workers = 0  # grain worker processes (0: in the training process)
  config.data.split_seed = 0
  config.data.train_fraction = 0.7  # of the patients left after the test ones: the paper's 70/30
  config.data.test_fraction = 0.2   # BraTS patients held out, scored by evaluation only
  config.data.skip_empty = True
  config.data.phantom_brats = 20   # 11 training, 5 validation, 4 test patients
  config.data.phantom_hcp = 8
  config.data.phantom_seed = 0
  config.data.phantom_version = 2  # 3: each case scanned with its own contrasts, noise, bias
  config.data.phantom_site = "a"   # "b", "c": other scanners (urn_jax.data.scanners.SITES)
  config.data.n4 = True
  config.data.n4_shrink = 4
  config.data.spacing = 2.0       # mm; the paper's is 1.0 (preset "paper")
  config.data.size = 96           # in-plane voxels of a slice

  config.model = ml_collections.ConfigDict()
  config.model.kind = "urn"       # "urn" or "baseline"
  config.model.encoder_features = (8, 16, 32, 64)
  config.model.segmentation_features = (8, 16, 32, 64)
  config.model.channels = 16
  config.model.fusion = "mean"    # "mean" (paper), "exp", "learned", "hemis"
  config.model.stacking = "auto"
  config.model.dtype = "float32"  # "bfloat16": mixed precision (f32 parameters)
  config.model.synthesis = False  # a URN's synthesis decoders (pre-training)

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 4     # global, over all devices
  config.train.learning_rate = 1e-4  # the peak of the schedule
  config.train.schedule = "constant"  # "constant" (paper), "warmup_cosine", "poly"
  config.train.warmup_fraction = 0.0  # of the run's steps
  config.train.end_lr_fraction = 0.0  # the final learning rate, a fraction of the peak
  config.train.hold_fraction = 0.0  # the last fraction of the steps held at the final rate
  config.train.loss = "ce"            # segmentation: "ce" (paper) or "dice_ce"
  config.train.theta = 0.5        # modality dropout's decay; None: none (the baseline)
  config.train.min_keep = 1
  config.train.variance_weight = 1e-4
  config.train.reconstruction = "l1"
  config.train.num_epochs = 50.0  # epochs of training slices; max_steps caps it
  config.train.max_steps = 600
  config.train.patience_epochs = 0.0  # stop after this many epochs of plateau; 0: never
  config.train.min_improvement = 0.01  # what counts as better: relative, of the validation loss
  config.train.eval_every = 100
  config.train.eval_slices = 64   # validation slices per evaluation (fixed, evenly spaced)
  config.train.checkpoint_every = 100
  config.train.keep_checkpoints = 3
  config.train.log_every = 10

  # Data augmentation of the training slices (urn_jax.data.augment; validation and evaluation
  # never augment). Each p_<name> is the probability that a slice gets it, the ranges its
  # magnitudes. Here every transform is off, the paper's setup (it names no augmentation),
  # which the paper preset keeps; the CPU presets' recipes turn nnU-Net's probabilities on
  # (AUGMENT below). enabled=False turns everything off whatever the probabilities.
  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = True
  config.augment.p_flip = 0.0        # left-right mirror (nnU-Net, MONAI: 0.5)
  config.augment.p_rotate = 0.0      # in-plane rotation (nnU-Net: 0.2)
  config.augment.rotate_degrees = (-30.0, 30.0)  # nnU-Net 3D's per-axis range
  config.augment.p_scale = 0.0       # isotropic zoom (nnU-Net: 0.2)
  config.augment.scale = (0.7, 1.4)  # > 1 magnifies; nnU-Net's range
  config.augment.p_elastic = 0.0     # elastic deformation (nnU-Net v1: 0.2; v2: off)
  config.augment.elastic_alpha = (0.0, 200.0)  # displacement scale; nnU-Net v1 2D's
  config.augment.elastic_sigma = (9.0, 13.0)   # its smoothness in voxels; nnU-Net v1 2D's
  config.augment.p_bias = 0.0        # smooth multiplicative bias field (MONAI: 0.1)
  config.augment.bias_strength = (0.0, 0.3)  # the log-field's peak: 0.3 is x0.74 to x1.35
  config.augment.bias_degree = 3     # its Legendre polynomial's degree (MONAI's), 1 to 6
  config.augment.p_noise = 0.0       # additive Gaussian noise (nnU-Net: 0.1)
  config.augment.noise_std = (0.0, 0.1)  # in standard deviations of the z-scored image
  config.augment.p_blur = 0.0        # Gaussian blur (nnU-Net: 0.2)
  config.augment.blur_sigma = (0.5, 1.0)  # voxels; nnU-Net's
  config.augment.p_brightness = 0.0  # additive shift (nnU-Net v1: 0.15, off by default)
  config.augment.brightness_shift = (-0.1, 0.1)  # standard deviations (MONAI's BraTS tutorial)
  config.augment.p_contrast = 0.0    # scaled about the foreground mean (nnU-Net: 0.15)
  config.augment.contrast_factor = (0.75, 1.25)  # nnU-Net's
  config.augment.p_lowres = 0.0      # downsampled and upsampled back (nnU-Net: 0.25)
  config.augment.lowres_factor = (1.0, 2.0)  # downsampling factor; nnU-Net's zoom 1 to 0.5
  config.augment.p_gamma = 0.0       # gamma on the foreground in [0, 1] (nnU-Net: 0.3)
  config.augment.gamma = (0.7, 1.5)  # nnU-Net's
  config.augment.p_histogram = 0.0   # random monotone intensity remap (MONAI: 0.1)
  config.augment.histogram_points = 10  # its control points, 3 to 64 (MONAI's 10)
  # Pre-training only: synthesis targets without the intensity transforms (restoration)
  config.augment.clean_targets = False
  return config


def apply_preset(config, preset: str):
  """Overrides ``config`` in place for a size preset (``''``, ``'small'`` or ``'paper'``)."""
  if preset == "small":
    config.data.spacing, config.data.size = 3.0, 64
    config.model.encoder_features = config.model.segmentation_features = (8, 16, 32, 64)
    config.train.eval_every, config.train.checkpoint_every = 100, 100
  elif preset == "paper":
    config.data.spacing, config.data.size = 1.0, 240
    config.data.loader_workers = 4
    config.model.encoder_features = config.model.segmentation_features = PAPER_FEATURES
    config.train.max_steps, config.train.eval_every = 1_000_000, 1000  # 50 epochs fit
    config.train.checkpoint_every, config.train.log_every = 1000, 50
    config.train.eval_slices = 512
  elif preset:
    raise ValueError(f"unknown size preset {preset!r}; known: small, paper")
  return config


# The training recipe of each job at each size: (job, preset) -> config.train fields.
# The runs that chose the CPU recipes, on the validation patients only, are in
# benchmarks/RESULTS.md ("Choosing the CPU recipes"); "Convergence of the shipped recipes"
# there shows each scenario's curves and test Dice with exactly these values.
_CPU = dict(schedule="warmup_cosine", warmup_fraction=0.05, end_lr_fraction=0.01)
RECIPES = {
    # The paper (2.4): Adam at a constant 1e-4 for 50 epochs of segmentation; pre-training
    # at a constant 3e-5 "until convergence", read as: until the validation loss has not
    # improved by 1 % for 5 epochs.
    ("segment", "paper"): dict(learning_rate=1e-4, schedule="constant", num_epochs=50.0),
    ("pretrain", "paper"): dict(learning_rate=3e-5, schedule="constant", patience_epochs=5.0),
    # CPU sizes: thousands of steps instead of ~350k. The paper's 1e-4 leaves the small
    # tumour regions unlearnt in 3000 steps (TC 16, ET 27 validation Dice for Baseline + MD)
    # and 1e-3 gets half-way; a peak of 1e-2 was best for every scenario tried (3e-2 no
    # better), warmed up over 5 % of the run (Adam's first steps are noisy) and decayed by a
    # half cosine to 1 % of the peak, so the last epochs settle instead of rattling at the
    # peak. The length is where the validation curves flatten: URN + MD at 3000 steps was
    # still 9 % better in its last fifth, at 6000 steps 5 % (validation Dice WT 96, TC 93,
    # ET 92). Pre-training improves for longer than the budget allows (4000 steps: 12 %
    # in the last fifth): it stops at a fixed length, not on a plateau, since a cosine
    # schedule cut short by early stopping would never anneal. 10000 steps flatten it
    # (1.9 %), and the frozen-encoder segmentation on those encoders was no better on the
    # tuning patients (tumour core 1.7 points lower; benchmarks/RESULTS.md, "Plan 7").
    ("segment", "small"): dict(learning_rate=1e-2, max_steps=6000, **_CPU),
    ("pretrain", "small"): dict(learning_rate=1e-2, max_steps=4000, **_CPU),
    ("segment", ""): dict(learning_rate=1e-2, max_steps=4000, **_CPU),
    ("pretrain", ""): dict(learning_rate=1e-2, max_steps=3000, **_CPU),
}


# The augmentation of each size, over get_config's (all off). The CPU sizes: every
# transform at AugmentSettings.typical()'s probability (about nnU-Net's), for pre-training
# and segmentation alike. Chosen at the small size on tuning patients, never on test ones:
# against none, within a point at the training scanner and better on scanners the runs
# never saw, for both Baseline + MD and the frozen-encoder URN; a stronger variant lost
# 1-8 points at the training scanner (benchmarks/RESULTS.md, "Plan 2"); clean synthesis
# targets in pre-training (augment.clean_targets) did not beat it ("Plan 3"). The paper
# names none; its preset keeps none.
_TYPICAL = {p: getattr(AugmentSettings.typical(), p) for p in PROBABILITIES}
AUGMENT = {"": _TYPICAL, "small": _TYPICAL, "paper": {}}


def apply_recipe(config, job: str, preset: str):
  """Sets ``config.train`` to the recipe of ``job`` at size ``preset`` (``RECIPES``), and
  ``config.augment``'s probabilities to that size's (``AUGMENT``)."""
  for field, value in RECIPES[job, preset].items():
    setattr(config.train, field, value)
  config.augment.update(AUGMENT[preset])
  return config


def parse_arg(arg: str, variants):
  """``'urn_md,small'`` -> ``('urn_md', 'small')``: a variant and/or a size preset."""
  variant, preset = "", ""
  for part in filter(None, (p.strip() for p in (arg or "").split(","))):
    if part in variants:
      variant = part
    elif part in ("small", "paper"):
      preset = part
    else:
      raise ValueError(f"unknown config argument {part!r}; variants: {', '.join(variants)}; "
                       "sizes: small, paper")
  return variant, preset
