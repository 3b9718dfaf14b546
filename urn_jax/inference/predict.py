"""Trained models applied to whole volumes: the code path of evaluation and of ``urn-segment``.

``load_model(workdir)`` rebuilds the network a training run describes (its ``config.json``)
and restores its best checkpoint (else its latest). ``infer`` is the one jitted forward pass
of inference (probabilities and labels, or synthesis, and the unified representation if
asked, for any mask); ``predict_slices`` runs any number of slices through it in chunks of
``CHUNK``, and ``predict_volume`` a pre-processed volume ``[Z, X, Y, M]``, so a single
compilation serves every case, every volume length and every one of the 15 combinations of
modalities (the mask is data); both can average over mirror images (``MIRROR_AXES``), and
``predict_volume`` over the members of an ensemble. ``to_original_classes`` maps the prediction
back onto the original file's grid, where every voxel that all the given modalities leave
at 0 is background (``given_brain``): the BraTS convention, and what keeps a slice the
model never saw a brain in, or the air around the head, from ever being labelled tumour.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from urn_jax.data.cases import read_volume
from urn_jax.data.datasets import preprocess_settings
from urn_jax.data.grids import to_original_classes_grid, to_original_grid
from urn_jax.data.meta import CaseMeta
from urn_jax.data.preprocess import PreprocessConfig
from urn_jax.errors import DataError, MissingInput
from urn_jax.inference.adapt import adapted_variables
from urn_jax.job_config import pretrained_encoders, read_config
from urn_jax.modalities import MODALITIES
from urn_jax.model.build import build_model
from urn_jax.scenarios import name_of
from urn_jax.training.checkpoints import restore_state

CHUNK = 32  # slices per inference call: one compilation serves every volume and mask
MIRROR_AXES = {"lr": 1, "ap": 2}
"""Test-time mirroring's axes in a batch of slices ``[N, X, Y, M]``: pre-processing turns
every case to RAS and cuts it along Z, so X runs left to right and Y posterior to anterior.
Left-right is the flip the anatomy allows (the brain is nearly symmetric; a tumour may lie
on either side); ``ap`` is the other axis nnU-Net also mirrors."""
DEFAULT_MIRROR: tuple[str, ...] = ()
"""``urn-segment``'s and evaluation's default test-time mirroring: none, by measurement
(``benchmarks/ensembles.py``; benchmarks/RESULTS.md, "Ensembles and test-time mirroring"):
on 14 validation patients x 15 combinations of a 60-case phantom, mirroring left-right
raised the ``small`` Baseline + MD's Dice by at most 0.19 point and URN + MD's by 0.09-0.63,
for twice the time; the rule asked for 0.5 point in both (earlier, on a smaller phantom, it
lowered Baseline + MD's TC and WT by 2.7 and 1.5 points). ``--mirror lr`` turns it on."""
DEFAULT_ADAPT = False
"""``urn-segment``'s and evaluation's default test-time adaptation of the batch norms to each
patient (``urn_jax.inference.adapt``): off, as in the paper, by measurement
(``benchmarks/shift.py``, recipe ``adabn``; benchmarks/RESULTS.md, "Results of plan 4"): on
24 tuning patients x 15 combinations it lowered Baseline + MD's whole-tumour Dice by 5.1
points at the training scanner, and did not raise the frozen-encoder URN's under other
scanners (-1.2). ``--adapt-bn`` turns it on."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A trained network and what is needed to feed it as in training."""

  workdir: Path
  config: ml_collections.ConfigDict
  model: object
  variables: dict
  step: int
  checkpoint: Path

  @property
  def job(self) -> str:
    return self.config.job

  @property
  def preprocess(self) -> PreprocessConfig:
    return preprocess_settings(self.config)

  @property
  def parameters(self) -> int:
    """The network's parameter count, frozen encoders included (batch statistics not)."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(
        self.variables["params"])))

  @property
  def name(self) -> str:
    """The scenario's name as in the paper's tables (``urn_jax.scenarios``)."""
    used_hcp = None
    if pretrained_encoders(self.config):
      try:
        used_hcp = bool(read_config(self.config.pretrained_workdir).data.use_hcp)
      except MissingInput:  # the pre-training was moved away: named without its data
        pass
    return name_of(self.config, used_hcp)


class Ensemble(list):
  """Trained models used as one: ``predict_volume`` averages their outputs (nnU-Net's
  ensembles of folds; here seeds or runs of a scenario). ``Ensemble.of`` checks that they
  can be: the same job, and the same pre-processing, so that every member sees the same
  slices. Answers what a ``LoadedModel`` answers, its members' values joined by '+'."""

  @classmethod
  def of(cls, members, names=None) -> "Ensemble":
    members, names = list(members), [str(n) for n in (names or [m.workdir for m in members])]
    for member, name in zip(members[1:], names[1:]):
      if member.job != members[0].job:
        raise DataError(f"{name} is a {member.job} run and {names[0]} a {members[0].job} "
                        "run; the members of an ensemble must do the same job")
      if member.preprocess != members[0].preprocess:
        raise DataError(f"{name} pre-processes cases unlike {names[0]} (data.spacing, size "
                        "or n4 differ); the members of an ensemble must see the same slices")
    return cls(members)

  job = property(lambda self: self[0].job)
  preprocess = property(lambda self: self[0].preprocess)
  config = property(lambda self: self[0].config)
  name = property(lambda self: f"{self[0].name} (ensemble of {len(self)})")
  workdir = property(lambda self: "+".join(str(m.workdir) for m in self))
  step = property(lambda self: "+".join(str(m.step) for m in self))
  checkpoint = property(lambda self: "+".join(str(m.checkpoint) for m in self))
  parameters = property(lambda self: sum(m.parameters for m in self))


def load_model(workdir) -> LoadedModel:
  """The model trained in ``workdir`` (a ``launch.py`` work directory)."""
  config = read_config(workdir)
  state, step, directory = restore_state(workdir)
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  return LoadedModel(Path(workdir), config, build_model(config), jax.device_put(variables),
                     step, directory)


@functools.partial(jax.jit, static_argnames=("model", "representation"))
def infer(model, variables, images, mask, representation: bool = False):
  """Inference with the given modalities: ``images [N, H, W, M]``, ``mask`` bool ``[N, M]``
  (or ``[M]`` for all N). Returns ``label`` (class index 0..3) and ``probabilities`` where
  the model segments, ``synthesis`` ``[N, H, W, M]`` where it synthesizes, and with
  ``representation`` a URN's unified representation ``z`` ``[N, H, W, C]``. One
  compilation serves every mask."""
  mask = jnp.broadcast_to(jnp.asarray(mask).astype(bool), images.shape[:1] + images.shape[-1:])
  out = model.apply(variables, images, mask, train=False)
  result = {}
  if "segmentation" in out:
    probabilities = jax.nn.softmax(out["segmentation"].astype(jnp.float32), axis=-1)
    result["probabilities"] = probabilities
    result["label"] = probabilities.argmax(-1)
  if "synthesis" in out:
    result["synthesis"] = out["synthesis"].astype(jnp.float32)
  if representation:
    result["z"] = out["z"].astype(jnp.float32)
  return result


def parse_mirror(text: str | None) -> tuple[str, ...]:
  """``'lr'``, ``'lr,ap'``, or ``''`` / ``'none'`` (no mirroring) -> the axis names, as the
  command line and the configs give them; None (not given) -> ``DEFAULT_MIRROR``."""
  if text is None:
    return DEFAULT_MIRROR
  return tuple(a.strip() for a in str(text).split(",") if a.strip() and a.strip() != "none")


def mirrored_views(mirror) -> list[tuple[int, ...]]:
  """The flips test-time mirroring averages over: every combination of the axes named in
  ``mirror`` (keys of ``MIRROR_AXES``), the unflipped view first (nnU-Net's scheme)."""
  unknown = [name for name in mirror if name not in MIRROR_AXES]
  if unknown:
    raise ValueError(f"mirror axes must be among {sorted(MIRROR_AXES)}, got {unknown}")
  axes = sorted({MIRROR_AXES[name] for name in mirror})
  return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def predict_slices(model, variables, images: np.ndarray, mask,
                   keys=("probabilities", "synthesis"), chunk: int = CHUNK,
                   mirror=()) -> dict:
  """``infer`` on ``images [N, H, W, M]`` with the modalities of ``mask [M]``: ``{key:
  numpy array [N, ...]}`` for each of ``keys`` the model gives ("probabilities",
  "synthesis", "z"; "label").

  With ``mirror`` (axes of ``MIRROR_AXES``), test-time mirroring: the slices also go
  through flipped along each combination of those axes, each output flipped back, and the
  probabilities and syntheses averaged over the views (the label is the average's argmax;
  ``z`` is the unflipped view's). The slices go through in chunks of ``chunk``, the last
  one zero-padded, all dispatched before the first result is fetched, so the device never
  waits for the host in between.
  """
  views = mirrored_views(mirror)
  if len(views) == 1:
    return _predict_chunks(model, variables, images, mask, keys, chunk)
  outputs = [{k: np.flip(v, axes) for k, v in _predict_chunks(
      model, variables, np.flip(np.asarray(images), axes), mask, keys, chunk).items()}
      for axes in views]
  averaged = dict(outputs[0])
  for key in ("probabilities", "synthesis"):
    if key in averaged:
      averaged[key] = np.mean([o[key] for o in outputs], axis=0)
  if "label" in averaged and "probabilities" in averaged:
    averaged["label"] = averaged["probabilities"].argmax(-1)
  return averaged


def _predict_chunks(model, variables, images, mask, keys, chunk) -> dict:
  images = np.asarray(images, np.float32)
  num_slices = images.shape[0]
  padded = -(-num_slices // chunk) * chunk
  if padded != num_slices:
    images = np.concatenate([images, np.zeros((padded - num_slices,) + images.shape[1:],
                                              np.float32)])
  mask = np.asarray(mask, bool)
  outputs = [infer(model, variables, images[s:s + chunk], mask, representation="z" in keys)
             for s in range(0, padded, chunk)]
  keys = [k for k in keys if k in outputs[0]]
  fetched = jax.device_get([{k: o[k] for k in keys} for o in outputs])
  return {k: np.concatenate([f[k] for f in fetched])[:num_slices] for k in keys}


def predict_volume(loaded, image: np.ndarray, mask, chunk: int = CHUNK, mirror=(),
                   adapt: bool = False) -> dict:
  """``image [Z, X, Y, M]`` (pre-processed) with the modalities of ``mask [M]`` ->
  ``probabilities [Z, X, Y, classes]`` for a segmentation model, ``synthesis [Z, X, Y, M]``
  for a pre-training one (numpy, float32); ``predict_slices``, with test-time ``mirror``.
  ``loaded``: a ``LoadedModel``, or a list of them, an ensemble: its members'
  probabilities (and syntheses) averaged, as nnU-Net ensembles folds. ``adapt``: each
  member's batch norms first take this volume's statistics (``urn_jax.inference.adapt``)."""
  members = loaded if isinstance(loaded, (list, tuple)) else [loaded]
  outputs = [predict_slices(m.model, adapted_variables(m.model, m.variables, image, mask)
                            if adapt else m.variables, image, mask, chunk=chunk, mirror=mirror)
             for m in members]
  if len(outputs) == 1:
    return outputs[0]
  return {key: np.mean([o[key] for o in outputs], axis=0) for key in outputs[0]}


def nonzero_voxels(paths: dict, case_id: str = "") -> dict:
  """``{modality: bool array}``: the voxels of each file (on its own grid) that are not 0.
  ``paths``: modality -> NIfTI path, e.g. ``Case.paths``; each is read and checked by
  ``urn_jax.data.cases.read_volume``, as in pre-processing."""
  return {m: read_volume(p, m, case_id)[1] != 0 for m, p in paths.items()}


def given_brain(nonzero: dict, mask) -> np.ndarray:
  """The voxels where at least one modality given by ``mask [M]`` is not 0: the brain as
  the inputs show it (skull-stripped images are 0 outside it)."""
  given = [m for m, on in zip(MODALITIES, np.asarray(mask, bool)) if on]
  if not given or any(m not in nonzero for m in given):
    raise ValueError(f"mask {np.asarray(mask).tolist()} gives {given}; images are known for "
                     f"{sorted(nonzero)}")
  return np.logical_or.reduce([nonzero[m] for m in given])


def to_original_classes(probabilities: np.ndarray, meta: CaseMeta, brain=None) -> np.ndarray:
  """Classes on the original file's grid from probabilities on the pre-processed one;
  background wherever ``brain`` (bool, on the original grid, ``given_brain``) is False.

  When pre-processing resampled the case, the probabilities are interpolated linearly
  before the argmax (nnU-Net's way: smoother and more faithful boundaries than resampling
  labels); otherwise the argmax is taken first and only the window and orientation undone.
  """
  if not meta.resampled:
    classes = to_original_grid(probabilities.argmax(-1).astype(np.uint8), meta, order=0)
  else:
    classes = to_original_classes_grid(probabilities, meta)
  if brain is not None:
    if brain.shape != classes.shape:
      raise ValueError(f"brain mask {brain.shape} is not on the original grid "
                       f"{classes.shape}")
    classes[~brain] = 0
  return classes
