"""The paper's whole study in one command: pre-train, the four scenarios, evaluate, publish.

    python launch.py --config=configs/study.py --workdir=runs/study              # 2-core CPU
    python launch.py --config=configs/study.py:paper --workdir=runs/study_paper  # one GPU
    python launch.py --config=configs/study.py:tiny --workdir=/tmp/study_tiny    # smoke test

For each seed in ``seeds``: URN synthesis pre-training on pooled BraTS + HCP (``pretrain``),
the same on BraTS alone (``pretrain_brats``, Table 2's first column group; off with
``--config.pretrain_brats_only=False``); the four segmentation scenarios of Table 1
(``segment.baseline``, ``.baseline_md``, ``.urn_md``, ``.urn_md_pretrained``, the last on
the frozen encoders of that seed's pooled pre-training) and two beyond the paper:
``.urn_md_finetuned`` (the same encoders, trained on) and ``.baseline_md_wide`` (Baseline +
MD with about the URN's parameter count). Then the convergence check (``longer``): seed 0
of the pooled pre-training and of every segmentation trained twice as long, compared in
``convergence.md``. Every model, once trained, is evaluated on the same held-out test
patients for all 15 combinations of modalities and sealed (``archive``, below); then Tables
1 and 2 (mean and spread over the seeds), Figures 2-5, per-case CSVs, every run's curves
(``training.md``), and the paper's claims as paired tests over patients and seeds
(``claims.md``) go to ``<archive>/results``. docs/STUDY_PLAN.md states, before any result,
what is tested and how. Work directories are ``<workdir>/seed<seed>/<stage>``; the same
command resumes an interrupted study. A sealed stage (``urn_jax/experiments/archive.py``:
its scores, curve, probes and config, no checkpoint, in ``<archive>/seed<seed>/<stage>``)
never trains again, and the results are made from the archive alone: give an ``archive``
that outlives the machine (``--config.archive=docs/study``, committed) and a study that
spans machines goes on where the last one stopped. The seed changes initialization,
modality dropout and data order; the data (phantom or folders) and the patient split are
the same for every seed and stage.

``data`` is shared by every stage (only ``use_hcp`` is set per stage) and is where folders go:
``--config.data.brats_dir=/data/BraTS2018 --config.data.hcp_dir=/data/HCP``. Each stage's
``model`` and ``train`` can be overridden, e.g. ``--config.pretrain.train.max_steps=500``.

Sizes. The default is the ``small`` preset of every job, with its training recipe
(``configs/default.py``, ``RECIPES``), except that pre-training decays over 8000 steps
instead of 4000 and then holds its final learning rate for 2000 more, and each segmentation
holds it for 1500 steps after its 6000 (the last fifth of every run shows whether the model
still learns at its final rate): 3 mm slices of 64 x 64 (the paper: 1 mm, 240 x 240),
U-Net widths 8-64 (the paper: 64-1024), seeds 0 to 4, validation on every validation slice
every 250 steps, and a phantom (seed 1) of 60 BraTS-like cases (34 training, 14 validation,
12 test: the claims' tests need at least 12 test patients) and 24 HCP-like subjects (as many
as a third of the pooled pre-training's subjects, so that pooling is a real test). ``paper``
is the paper's size and recipe for a GPU; ``tiny`` runs every stage for a few steps, for the
test.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # noqa: E402
import evaluate  # noqa: E402
import pretrain  # noqa: E402
import segment  # noqa: E402

import ml_collections  # noqa: E402


def _stage(config):
  """A job config for the study: its ``data`` comes from the study's at run time, and it
  augments nothing, the paper's setup (docs/STUDY_PLAN.md), at every size."""
  del config["data"]
  config.augment.enabled = False
  return config


def get_config(arg: str = ""):
  preset = arg.strip()
  if preset not in ("", "tiny", "paper"):
    raise ValueError(f"unknown study size {preset!r}; known: tiny, paper (or none)")
  job_preset = "paper" if preset == "paper" else "small"
  config = ml_collections.ConfigDict()
  config.job = "study"
  config.seeds = (0, 1, 2, 3, 4)
  config.pretrain_brats_only = True
  config.stages = "all"  # "all", "train" (no results) or "evaluate" (results from the archive)
  # Where each trained stage is sealed (urn_jax/experiments/archive.py) and the results go
  # (<archive>/results): "" is the work directory. A folder that outlives the machine (a
  # repository's docs/study) lets a study that spans machines go on where it stopped.
  config.archive = ""
  config.data = default.apply_preset(default.get_config(), job_preset).data
  config.data.phantom_brats, config.data.phantom_hcp = 60, 24
  # Patients no earlier decision has seen: the phantom of seed 0 served to choose recipes
  # and options (benchmarks/RESULTS.md), some of them by its test patients.
  config.data.phantom_seed = 1
  # The plan's phantom, whatever the defaults become: version 2, one scanner (site A).
  config.data.phantom_version, config.data.phantom_site = 2, "a"
  config.pretrain = _stage(pretrain.get_config(job_preset))
  config.segment = ml_collections.ConfigDict(
      {v: _stage(segment.get_config(f"{v},{job_preset}")) for v in segment.VARIANTS})
  config.evaluate = evaluate.get_config().evaluate
  # The convergence check (urn_jax.experiments.study.longer_plan): these stages of seed
  # `seed` trained `factor` times as long, compared in results/convergence.md.
  config.longer = ml_collections.ConfigDict(dict(
      seed=0, factor=2.0, stages=("pretrain",) + segment.VARIANTS))
  # The probes of the representation (urn_jax/experiments/probes.py): batch-norm statistics
  # re-estimated in `passes` passes, each probe fitted in `steps` Adam steps.
  config.probes = ml_collections.ConfigDict(dict(passes=400, steps=600))
  if preset == "":
    # The shipped `small` pre-training (4000 steps) was still 7 % (pooled) and 11 %
    # (BraTS-only) better in its last fifth on this phantom (seed 0): not flat. The study
    # decays over twice as many steps (8000, one cosine from the start), and then holds
    # the final rate for 2000 more, the last fifth of the run: at 8000 steps the gain of
    # the cosine's end was still within the last fifth (8.5 % and 6.4 %), so the tail is
    # what shows whether the model still learns at its final rate.
    config.pretrain.train.max_steps = 10_000
    config.pretrain.train.hold_fraction = 0.2
    # The segmentations likewise hold their final rate for 1500 steps after the shipped
    # 6000 (the same decay): at 6000 the fine-tuned URN's best validation loss still came
    # 5.5 % lower in the last fifth (seed 0), its curve settling only as the cosine ended.
    # Every scenario gets the same tail, so none trains longer than another.
    for variant in segment.VARIANTS:
      config.segment[variant].train.max_steps = 7500
      config.segment[variant].train.hold_fraction = 0.2
  stages = [config.pretrain] + [config.segment[v] for v in segment.VARIANTS]
  if preset != "tiny":
    # Validation on every validation slice (not 64 of them), every 250 steps: the best
    # checkpoint and the convergence check rest on all validation patients' slices.
    for stage in stages:
      stage.train.eval_slices, stage.train.eval_every = 1_000_000, 250
  if preset == "tiny":
    config.data.phantom_brats, config.data.phantom_hcp = 4, 2
    config.data.n4, config.data.spacing, config.data.size = False, 6.0, 32
    config.evaluate.chunk = 8
    # The combinations the figures draw: the tables and figures are all written, and a
    # two-step model's specks all over the volume make each combination slow to score.
    config.evaluate.masks = "1111,0111,0101,0010,1000"
    config.probes.passes, config.probes.steps = 20, 50
    for stage in stages:
      stage.model.channels = 4
      if stage.model.encoder_features:
        stage.model.encoder_features = (4, 8)
      if stage.model.segmentation_features:
        stage.model.segmentation_features = (4, 8)
      stage.train.max_steps = stage.train.eval_every = stage.train.checkpoint_every = 2
      stage.train.eval_slices = 8
    config.segment.baseline_md_wide.model.segmentation_features = segment.wide((4, 8))
    config.longer.stages = ("urn_md_pretrained",)  # one, on the ordinary pre-training
  return config
