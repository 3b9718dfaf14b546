"""Settings shared by every urn_jax job; the job configs import and override them.

Not a job by itself. Size presets (``apply_preset``): ``paper`` is the paper's size for a GPU
(240 x 240 slices at 1 mm, U-Net widths 64-1024); ``small`` finishes a meaningful run on a
2-core CPU in minutes (3 mm slices of 64 x 64, widths 8-64); the default (no preset; 2 mm
slices of 96 x 96, widths 8-64) keeps the README's main command under 15 minutes on a
laptop-class CPU.
"""

import ml_collections

PAPER_FEATURES = (64, 128, 256, 512, 1024)


def get_config():
  config = ml_collections.ConfigDict()
  config.job = ""
  config.seed = 0
  config.pretrained_workdir = ""  # segment: pre-training work directory to take encoders from

  config.data = ml_collections.ConfigDict()
  config.data.brats_dir = ""      # empty (with hcp_dir empty): the built-in phantom
  config.data.hcp_dir = ""
  config.data.use_hcp = True      # pool HCP (pre-training); the phantom writes both anyway
  config.data.cache_dir = ""      # default: $URN_JAX_CACHE or ~/.cache/urn_jax
  config.data.workers = 2         # pre-processing processes
  config.data.loader_workers = 0  # grain worker processes (0: in the training process)
  config.data.split_seed = 0
  config.data.train_fraction = 0.7
  config.data.skip_empty = True
  config.data.phantom_brats = 10
  config.data.phantom_hcp = 6
  config.data.phantom_seed = 0
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

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 4     # global, over all devices
  config.train.learning_rate = 1e-4
  config.train.theta = 0.5        # modality dropout; a negative value: none (baseline)
  config.train.min_keep = 1
  config.train.variance_weight = 1e-4
  config.train.reconstruction = "l1"
  config.train.num_epochs = 50.0  # epochs of training slices; max_steps caps it
  config.train.max_steps = 600
  config.train.patience = 0       # evaluations without improvement before stopping; 0: never
  config.train.eval_every = 100
  config.train.eval_slices = 64   # validation slices per evaluation (fixed, evenly spaced)
  config.train.checkpoint_every = 100
  config.train.keep_checkpoints = 3
  config.train.log_every = 10
  return config


def apply_preset(config, preset: str):
  """Overrides ``config`` in place for a size preset (``''``, ``'small'`` or ``'paper'``)."""
  if preset == "small":
    config.data.spacing, config.data.size = 3.0, 64
    config.data.phantom_brats, config.data.phantom_hcp = 8, 4
    config.model.encoder_features = config.model.segmentation_features = (8, 16, 32, 64)
    config.train.max_steps, config.train.eval_every = 300, 100
    config.train.checkpoint_every = 100
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
