"""Evaluation of trained models for all 15 combinations of modalities (paper 3.2).

For every model (a training work directory) and every test BraTS patient of its split (held
out from training, checkpoint selection and tuning: ``urn_jax.data.splits``), each of the 15
availability masks is run through one compiled inference function
(``urn_jax.inference.predict.predict_volume``), and:

- a segmentation model's prediction is mapped back onto the original file's grid
  (``urn_jax.inference.predict.to_original_classes``), background wherever every given
  modality is 0, and scored against the original label file, on the whole 3D volume, with
  the voxel spacing of that file: Dice, HD95 (mm), sensitivity and specificity for ET, WT and TC
  (``urn_jax.metrics``). That is exactly what ``urn-segment`` would write for the case, so
  the numbers describe what a user gets;
- a pre-training model's synthesis of every modality the case has is scored by PSNR
  against the pre-processed (z-scored) image within the brain (``metrics.psnr``), on the
  pre-processed grid, where the network works: intensities on the original grid would
  only add N4 and z-scoring to undo.

A mask that needs a modality the case lacks is skipped for that case. Per-case results are
kept in ``<out>/per_case/`` (one JSON per model and case, keyed by the checkpoint), so an
interrupted evaluation resumes; the tables and figures (``urn_jax.evaluation.report``) are
then made from them. With several processes, process 0 alone writes them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from urn_jax.console import is_main_process, progress, say
from urn_jax.data.cases import file_role, read_volume
from urn_jax.data.datasets import held_out_patients
from urn_jax.data.meta import CaseMeta
from urn_jax.errors import DataError
from urn_jax.files import replaced_atomically, write_text_atomically
from urn_jax.inference.predict import (DEFAULT_ADAPT, Ensemble, given_brain, load_model,
                                       nonzero_voxels, parse_mirror, predict_volume,
                                       to_original_classes)
from urn_jax.job_config import read_config
from urn_jax.labels import REGIONS, labels_to_classes, region_mask
from urn_jax.lesion_metrics import lesion_metrics
from urn_jax.metrics import psnr, segmentation_metrics
from urn_jax.modalities import (FIGURE_MASKS, MODALITIES, availability_masks, mask_key,
                                mask_name)
from urn_jax.training.checkpoints import fingerprint
from urn_jax.training.config_checks import check_evaluation_settings


def original_label(meta: CaseMeta):
  """The original label file of a case as classes 0..3, and its voxel spacing in mm."""
  paths = [p for p in meta.sources if file_role(p) == "label"]
  if not paths:
    raise DataError(f"case {meta.case_id} has no label file; it cannot be evaluated")
  image, data = read_volume(paths[0], "label", meta.case_id)
  classes = labels_to_classes(data, meta.label_convention,
                              f"case {meta.case_id}: label file {paths[0]}")
  return classes, tuple(float(z) for z in image.header.get_zooms()[:3])


@dataclasses.dataclass
class Patient:
  """A test patient as evaluation reads it, once for every model: the pre-processed image,
  the original label and voxel spacing, each modality's nonzero voxels (for the brain
  of each combination) and, filled as they are first needed, the label's distance maps
  for HD95."""

  meta: CaseMeta
  image: np.ndarray
  classes: np.ndarray
  spacing: tuple
  nonzero: dict
  distances: dict

  @classmethod
  def read(cls, case_dir: Path) -> "Patient":
    meta = CaseMeta.read(case_dir)
    classes, spacing = original_label(meta)
    nonzero = nonzero_voxels({file_role(p): p for p in meta.sources
                              if file_role(p) in MODALITIES}, meta.case_id)
    return cls(meta, np.load(case_dir / "image.npy", mmap_mode="r"), classes, spacing,
               nonzero, {})

  def combinations(self, masks):
    """The availability masks of ``masks`` whose modalities this patient has."""
    available = np.asarray(self.meta.available, bool)
    return [m for m in masks if not np.any(m & ~available)]

  def predicted(self, loaded, mask, chunk: int, mirror=(), adapt: bool = False) -> np.ndarray:
    """``loaded``'s segmentation of this patient from the modalities of ``mask``, on the
    original grid, background wherever every given modality is 0 (as ``urn-segment``
    writes it); ``adapt``: with test-time adaptation (``urn_jax.inference.adapt``)."""
    out = predict_volume(loaded, self.image, mask, chunk, mirror, adapt)
    return to_original_classes(out["probabilities"], self.meta,
                               given_brain(self.nonzero, mask))


def _figure_slice(meta: CaseMeta, truth: np.ndarray) -> tuple[int, int]:
  """The axial slice with the most tumour: its index on the original grid (after turning
  it to RAS, as drawn) and on the pre-processed grid."""
  ras = nib.orientations.apply_orientation(truth, np.asarray(meta.orientation))
  original = int((ras > 0).sum(axis=(0, 1)).argmax())
  tumour = meta.tumour_slices or meta.brain_slices
  # The pre-processed grid is RAS too, resampled along z: the same height in mm.
  zooms_canonical = np.sqrt((meta.affine("canonical")[:3, :3] ** 2).sum(0))
  zooms_resampled = np.sqrt((meta.affine("resampled")[:3, :3] ** 2).sum(0))
  model = int(round(original * zooms_canonical[2] / zooms_resampled[2]))
  return original, int(np.clip(model, min(tumour), max(tumour)))


def _ras_slice(meta: CaseMeta, volume: np.ndarray, z: int) -> np.ndarray:
  """Axial slice ``z`` of an original-grid ``volume`` turned to RAS, as the figures draw."""
  return nib.orientations.apply_orientation(volume, np.asarray(meta.orientation))[:, :, z]


@dataclasses.dataclass(frozen=True)
class _Scoring:
  """How each case is predicted and scored: ``chunk`` slices per call, test-time ``mirror``
  (``urn_jax.inference.predict.MIRROR_AXES``) and ``adapt`` (``urn_jax.inference.adapt``),
  ``lesions`` (a definition of ``urn_jax.lesion_metrics``, or "" for none)."""

  chunk: int
  mirror: tuple = ()
  lesions: str = ""
  adapt: bool = False

  @classmethod
  def of(cls, settings) -> "_Scoring":
    return cls(settings.chunk, parse_mirror(settings.get("mirror")),
               settings.get("lesion_metrics", ""), settings.get("adapt_bn", DEFAULT_ADAPT))

  def key(self) -> str:
    """What results written with other settings must not be mistaken for; settings at
    their earlier defaults add nothing, so those results keep their key."""
    return "".join([f":lesions={self.lesions}" if self.lesions else "",
                    f":mirror={','.join(self.mirror)}" if self.mirror else "",
                    ":adapt_bn" if self.adapt else ""])


def _segmentation(loaded, patient: Patient, mask, scoring: _Scoring):
  """The prediction of ``loaded`` for ``patient`` with the modalities of ``mask``, on the
  original grid, and its metrics: volume-wise, and lesion-wise as ``scoring`` says."""
  predicted = patient.predicted(loaded, mask, scoring.chunk, scoring.mirror, scoring.adapt)
  metrics = segmentation_metrics(predicted, patient.classes, patient.spacing,
                                 patient.distances)
  if scoring.lesions:
    metrics.update(lesion_metrics(predicted, patient.classes, patient.spacing,
                                  scoring.lesions, truth_distances=patient.distances))
  return predicted, metrics


def _synthesis(loaded, patient: Patient, mask, scoring: _Scoring):
  """The synthesis of ``loaded`` for ``patient`` with the modalities of ``mask`` (predicted
  as ``scoring`` says), and the PSNR of every modality the patient has, given or not."""
  available = np.asarray(patient.meta.available, bool)
  brain = (np.asarray(patient.image)[..., available] != 0).any(-1)
  synthesis = predict_volume(loaded, patient.image, mask, scoring.chunk,
                             adapt=scoring.adapt)["synthesis"]
  rows = [{"modality": modality, "given": bool(mask[j]),
           "psnr": psnr(synthesis[..., j], patient.image[..., j], brain)}
          for j, modality in enumerate(MODALITIES) if available[j]]
  return synthesis, rows


def _evaluate_case(loaded, patient: Patient, masks, scoring: _Scoring, figure: bool):
  """Rows of metrics for one model and one patient, a row per combination of modalities
  the patient has (and, for a pre-training, per modality); with ``figure``, also the
  slices Figures 3-5 draw."""
  meta = patient.meta
  segmentation = loaded.job == "segment"
  z_original, z_model = _figure_slice(meta, patient.classes)
  rows, drawn = [], {}
  for mask in patient.combinations(masks):
    key = mask_key(mask)
    base = {"case_id": meta.case_id, "mask": key, "combination": mask_name(mask)}
    if segmentation:
      predicted, metrics = _segmentation(loaded, patient, mask, scoring)
      rows.append({**base, **metrics})
      if figure and key in FIGURE_MASKS:
        drawn[key] = _ras_slice(meta, predicted, z_original)
    else:
      synthesis, psnr_rows = _synthesis(loaded, patient, mask, scoring)
      rows += [{**base, **row} for row in psnr_rows]
      if figure and key in FIGURE_MASKS:
        drawn[key] = synthesis[z_model]
  if figure:
    drawn.update(_figure_backgrounds(patient, segmentation, z_original, z_model))
  return rows, drawn


def _figure_backgrounds(patient: Patient, segmentation: bool, z_original, z_model) -> dict:
  """What Figure 3 draws the segmentations over (the truth and T1c, original grid) or
  Figures 4-5 draw first (the real pre-processed slice)."""
  if not segmentation:
    return {"reference": np.asarray(patient.image[z_model])}
  drawn = {"truth": _ras_slice(patient.meta, patient.classes, z_original)}
  t1c = [p for p in patient.meta.sources if file_role(p) == "t1c"]
  if t1c:
    volume = read_volume(t1c[0], "t1c", patient.meta.case_id)[1]
    drawn["t1c"] = np.asarray(_ras_slice(patient.meta, volume, z_original), np.float32)
  return drawn


def parse_masks(text: str) -> np.ndarray:
  """``'all'`` -> the 15 combinations; ``'1111,1000'`` -> those rows (keys as in Table 1's
  CSV: FLAIR, T1, T1c, T2, 1 = given), in Table 1's order."""
  masks = availability_masks()
  if text.strip() in ("", "all"):
    return masks
  keys = [k.strip() for k in text.split(",") if k.strip()]
  known = [mask_key(m) for m in masks]
  bad = [k for k in keys if k not in known]
  if bad:
    raise DataError(f"evaluate.masks: {bad[0]!r} is not a combination; give 'all' or keys of "
                    "four 0/1 digits for FLAIR, T1, T1c, T2 with at least one 1, e.g. "
                    "'1111,1000'")
  return masks[[i for i, k in enumerate(known) if k in keys]]


def _cache_key(loaded, masks, scoring: _Scoring) -> str:
  """Per-case results are reused only for the same checkpoint, combinations and scoring."""
  keys = ",".join(mask_key(m) for m in masks) + scoring.key()
  return hashlib.sha256(f"{loaded.checkpoint}:{loaded.step}:{keys}".encode()).hexdigest()[:12]


def _checked_cache(cache: Path, model) -> Path:
  """``cache``, emptied first if its results were made by another checkpoint than
  ``model``'s: same folder and step, but retrained (``checkpoints.fingerprint``). A folder
  from before the fingerprint was kept is trusted, and gets it."""
  marker = cache / "checkpoint.json"
  current = "+".join(fingerprint(Path(m.checkpoint) / str(m.step))
                     for m in (model if isinstance(model, Ensemble) else [model]))
  if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") != current:
    say(f"{model.workdir} was retrained since {cache} was written: evaluating it again")
    shutil.rmtree(cache)
  if not marker.is_file():
    cache.mkdir(parents=True, exist_ok=True)
    write_text_atomically(marker, json.dumps({"checkpoint": str(model.checkpoint),
                                              "step": model.step, "fingerprint": current}))
  return cache


@dataclasses.dataclass
class _Model:
  """A model to evaluate: its run's record (the rows the report reads), the model, its
  test patients by id and the folder its per-case results are kept in."""

  run: dict
  loaded: object
  cases: dict
  cache: Path | None = None


def _models(entries, names, settings, loaded=None) -> tuple[list[_Model], list[str], str]:
  """Every model loaded (or taken from ``loaded``, work directory -> loaded model), with
  its test patients; the patients scored (the first model's, which every other model must
  have too) and the one the figures draw. An entry that joins work directories with '+' is
  one ensemble (``urn_jax.inference.predict.Ensemble``), named and seeded after its first
  member."""
  models, reference_ids, figure_case = [], None, None
  for n, entry in enumerate(entries):
    configs = [read_config(workdir) for workdir in entry.split("+")]
    for workdir, config in zip(entry.split("+"), configs):
      cases = held_out_patients(config, workdir)
      ids = sorted(c.name for c in cases)
      if reference_ids is None:
        reference_ids = ids[:settings.max_cases] if settings.max_cases else ids
        figure_case = settings.figure_case or _largest_tumour(cases, reference_ids)
      elif not set(reference_ids) <= set(ids):
        raise DataError(f"{workdir} has other test patients than {entries[0].split('+')[0]} "
                        f"({len(set(reference_ids) - set(ids))} differ); compare only runs "
                        "with the same split (the same data and split_seed)")
    models.append(_Model({"workdir": entry, "name": names[n] if names else "",
                          "job": configs[0].job, "seed": int(configs[0].seed), "rows": [],
                          "figure": {}}, None, {c.name: c for c in cases}))
  get = lambda workdir: (loaded or {}).get(workdir) or load_model(workdir)
  for model in models:
    members = model.run["workdir"].split("+")
    model.loaded = (get(members[0]) if len(members) == 1 else
                    Ensemble.of([get(m) for m in members], members))
    model.run["name"] = model.run["name"] or model.loaded.name
    model.run["step"] = model.loaded.step
    model.run["parameters"] = model.loaded.parameters
  return models, reference_ids, figure_case


def _case_results(model: _Model, case_id: str, patient, masks, scoring: _Scoring,
                  figure: bool):
  """``(rows, drawn)`` of ``model`` on one test patient: kept ones if its cache has them,
  else computed (``patient()`` reads the patient, once for every model) and kept."""
  stored = model.cache / f"{case_id}.json" if model.cache else None
  drawing = stored.with_suffix(".npz") if stored else None
  if stored and stored.exists() and (not figure or drawing.exists()):
    return json.loads(stored.read_text()), dict(np.load(drawing)) if figure else {}
  rows, drawn = _evaluate_case(model.loaded, patient(), masks, scoring, figure)
  if stored:
    if figure:
      with replaced_atomically(drawing) as temporary:
        np.savez_compressed(temporary, **drawn)
    write_text_atomically(stored, json.dumps(rows))  # last: the case is done when it exists
  return rows, drawn


def score_models(models, settings, names=None, cache_root=None,
                 loaded=None) -> tuple[list, list, str, dict]:
  """Scores ``models`` (work directories, or ``(stage, seed, workdir)`` tuples) on their
  test patients: ``(runs, the patients' ids, the case the figures draw, each patient's
  region volumes)``, a run being ``urn_jax.evaluation.runs``'s dict (its ``rows`` and
  ``figure`` filled). With ``cache_root``, each model's per-case results are kept in a
  folder of it, keyed by its checkpoint, and reused. ``loaded``: models already loaded
  (``load_model``), by work directory as given, used instead of loading them again."""
  workdirs = [str(m[-1] if isinstance(m, (tuple, list)) else m) for m in models]
  if not workdirs:
    raise DataError("no model to evaluate: give --config.models=<workdir>[,<workdir>...]")
  if names and len(names) != len(workdirs):
    raise DataError(f"{len(names)} names for {len(workdirs)} models; give one per model")
  check_evaluation_settings(settings)
  masks = parse_masks(settings.get("masks", "all"))
  scoring = _Scoring.of(settings)
  models, reference_ids, figure_case = _models(workdirs, names, settings, loaded)
  if cache_root is not None and is_main_process():  # made only now, every model found
    for n, model in enumerate(models):
      model.cache = _checked_cache(
          Path(cache_root) / f"{n:02d}-{_cache_key(model.loaded, masks, scoring)}",
          model.loaded)
  # Case by case, every model: each patient's label, and its distance maps for HD95, are
  # read once and dropped before the next patient.
  bar = progress(total=len(models) * len(reference_ids), desc="evaluating", unit="case")
  for case_id in reference_ids:
    patient = functools.cache(lambda case_id=case_id: Patient.read(models[0].cases[case_id]))
    for model in models:
      bar.set_postfix_str(f"{case_id}: {model.run['name']} seed {model.run['seed']}")
      rows, drawn = _case_results(model, case_id, patient, masks, scoring,
                                  case_id == figure_case)
      model.run["rows"] += [{"model": model.run["name"], "seed": model.run["seed"], **r}
                            for r in rows]
      if case_id == figure_case:
        model.run["figure"] = drawn
      bar.update()
  bar.close()
  tumours = {case_id: tumour_volumes(models[0].cases[case_id]) for case_id in reference_ids}
  return [m.run for m in models], reference_ids, figure_case, tumours


def evaluate_models(models, out_dir, settings, names=None, converged=None) -> dict:
  """Evaluates ``models`` (``score_models``) and writes the tables and figures into
  ``out_dir``; returns ``{"files": [...]}`` and the mean rows of the tables. ``converged``:
  work directory -> whether a longer run showed that run converged (True, False or None:
  not checked), for the claims' verdicts (``urn_jax.evaluation.claims_report``); None when
  nothing was checked."""
  from urn_jax.evaluation import report  # matplotlib: only when writing the report
  out_dir = Path(out_dir)
  runs, reference_ids, figure_case, tumours = score_models(
      models, settings, names, cache_root=out_dir / "per_case")
  if converged is not None:
    for run in runs:
      run["converged"] = converged.get(run["workdir"])
  if not is_main_process():
    return {"files": []}
  return report.write_report(runs, out_dir, figure_case, settings.figures,
                             cases=reference_ids, tumours=tumours)


def tumour_volumes(case_dir: Path) -> dict:
  """The volume (cm^3) of each region in a case's original label file: what its scores mean
  (an empty ET scores Dice 100 or 0, nothing between)."""
  truth, spacing = original_label(CaseMeta.read(case_dir))
  voxel = float(np.prod(spacing)) / 1000.0
  return {region: float(region_mask(truth, region).sum()) * voxel for region in REGIONS}


def _largest_tumour(cases, ids) -> str:
  """The case with the most tumour voxels: the clearest one to draw."""
  by_id = {c.name: c for c in cases}
  sizes = {i: int((np.load(by_id[i] / "label.npy", mmap_mode="r") > 0).sum())
           for i in ids if (by_id[i] / "label.npy").exists()}
  if not sizes:
    raise DataError("no validation case has a label; segmentation cannot be evaluated")
  return max(sizes, key=sizes.get)


def run(config, workdir):
  """The ``evaluate`` job (``configs/evaluate.py``)."""
  models = [m.strip() for m in config.models.split(",") if m.strip()]
  names = [n.strip() for n in config.names.split(",")] if config.names else None
  summary = evaluate_models(models, Path(workdir), config.evaluate, names)
  say("\n".join(f"wrote {f}" for f in summary["files"]))
  return summary
