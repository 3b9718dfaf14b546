"""Trained models applied to whole volumes: the code path of evaluation and of ``urn-segment``.

``load_model(workdir)`` rebuilds the network a training run describes (its ``config.json``)
and restores its best checkpoint (else its latest). ``infer`` is the one jitted forward pass
of inference (probabilities and labels, or synthesis, for any mask); ``predict_volume`` runs
a pre-processed volume ``[Z, X, Y, M]`` through it in chunks of ``CHUNK`` slices, so a
single compilation serves every case, every volume length and every one of the 15
combinations of modalities (the mask is data). ``to_original_classes`` maps the prediction
back onto the original file's grid, where every voxel that all the given modalities leave
at 0 is background (``given_brain``): the BraTS convention, and what keeps a slice the
model never saw a brain in, or the air around the head, from ever being labelled tumour.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import nibabel as nib
import numpy as np

from urn_jax.checkpoints import restore_state
from urn_jax.data.meta import CaseMeta
from urn_jax.data.preprocess import (PreprocessConfig, to_original_classes_grid,
                                     to_original_grid)
from urn_jax.from_config import (build_model, preprocess_settings, pretrained_encoders,
                                 read_config)
from urn_jax.modalities import MODALITIES

CHUNK = 32  # slices per inference call: one compilation serves every volume and mask

SCENARIO_NAMES = {"baseline": "Baseline", "baseline_md": "Baseline + MD",
                  "urn_md": "URN + MD", "urn_md_pretrained": "URN + MD pre-trained",
                  "urn_md_finetuned": "URN + MD pre-trained, fine-tuned"}


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
  def name(self) -> str:
    """The scenario's name as in the paper's tables: "Baseline + MD", "URN w/ HCP", ..."""
    if self.job == "pretrain":
      return "URN w/ HCP" if self.config.data.use_hcp else "URN"
    name = SCENARIO_NAMES.get(self.config.get("variant", ""), self.config.get("variant", ""))
    encoders = pretrained_encoders(self.config)
    if encoders:
      pretrained = Path(self.config.pretrained_workdir) / "config.json"
      if pretrained.exists() and json.loads(pretrained.read_text())["data"]["use_hcp"]:
        name = "URN + MD w/ HCP" + (", fine-tuned" if encoders == "fine-tuned" else "")
    return name


def load_model(workdir) -> LoadedModel:
  """The model trained in ``workdir`` (a ``launch.py`` work directory)."""
  config = read_config(workdir)
  state, step, directory = restore_state(workdir)
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  return LoadedModel(Path(workdir), config, build_model(config), jax.device_put(variables),
                     step, directory)


@functools.partial(jax.jit, static_argnames="model")
def infer(model, variables, images, mask):
  """Inference with the given modalities: ``images [N, H, W, M]``, ``mask`` bool ``[N, M]``
  (or ``[M]`` for all N). Returns ``label`` (class index 0..3) and ``probabilities`` where
  the model segments, and ``synthesis`` ``[N, H, W, M]`` where it synthesizes. One
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
  return result


def predict_volume(loaded: LoadedModel, image: np.ndarray, mask, chunk: int = CHUNK) -> dict:
  """``image [Z, X, Y, M]`` (pre-processed) with the modalities of ``mask [M]`` ->
  ``probabilities [Z, X, Y, classes]`` for a segmentation model, ``synthesis [Z, X, Y, M]``
  for a pre-training one (numpy, float32).

  The slices go through in chunks of ``chunk``, the last one zero-padded, all dispatched
  before the first result is fetched, so the device never waits for the host in between.
  """
  image = np.asarray(image, np.float32)
  num_slices = image.shape[0]
  padded = -(-num_slices // chunk) * chunk
  if padded != num_slices:
    image = np.concatenate([image, np.zeros((padded - num_slices,) + image.shape[1:],
                                            np.float32)])
  mask = np.asarray(mask, bool)
  outputs = [infer(loaded.model, loaded.variables, image[s:s + chunk], mask)
             for s in range(0, padded, chunk)]
  keys = [k for k in ("probabilities", "synthesis") if k in outputs[0]]
  fetched = jax.device_get([{k: o[k] for k in keys} for o in outputs])
  return {k: np.concatenate([f[k] for f in fetched])[:num_slices] for k in keys}


def nonzero_voxels(paths: dict) -> dict:
  """``{modality: bool array}``: the voxels of each file (on its own grid) that are not 0.
  ``paths``: modality -> NIfTI path, e.g. ``Case.paths``."""
  return {m: np.asanyarray(nib.load(p).dataobj) != 0 for m, p in paths.items()}


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
