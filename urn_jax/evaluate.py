"""Evaluation of trained models for all 15 combinations of modalities (paper 3.2).

For every model (a training work directory) and every test BraTS patient of its split (held
out from training, checkpoint selection and tuning: ``urn_jax.data.splits``), each of the 15
availability masks is run through one compiled inference function
(``predict.predict_volume``), and:

- a segmentation model's prediction is mapped back onto the original file's grid
  (``predict.to_original_classes``), background wherever every given modality is 0, and
  scored against the original label file, on the whole 3D volume, with the voxel spacing of
  that file: Dice, HD95 (mm), sensitivity and specificity for ET, WT and TC
  (``urn_jax.metrics``). That is exactly what ``urn-segment`` would write for the case, so
  the numbers describe what a user gets;
- a pre-training model's synthesis of every modality the case has is scored by PSNR
  against the pre-processed (z-scored) image within the brain (``metrics.psnr``), on the
  pre-processed grid, where the network works: intensities on the original grid would
  only add N4 and z-scoring to undo.

A mask that needs a modality the case lacks is skipped for that case. Per-case results are
kept in ``<out>/per_case/`` (one JSON per model and case, keyed by the checkpoint), so an
interrupted evaluation resumes; the tables and figures (``urn_jax.report``) are then made
from them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from urn_jax.checkpoints import fingerprint
from urn_jax.config_checks import check_evaluation_settings
from urn_jax.data.cases import file_role, labels_to_classes
from urn_jax.data.meta import CaseMeta
from urn_jax.errors import DataError
from urn_jax.files import write_text_atomically
from urn_jax.from_config import data_from_config, read_config
from urn_jax.metrics import REGIONS, psnr, region_mask, segmentation_metrics
from urn_jax.modalities import (FIGURE_MASKS, MODALITIES, availability_masks, mask_key,
                                mask_name)
from urn_jax.predict import (given_brain, load_model, nonzero_voxels, predict_volume,
                             to_original_classes)


def _test_cases(config, workdir) -> list[Path]:
  data = data_from_config(config, workdir, use_hcp=False)
  cases = data["brats"]["test"]
  if not cases:
    raise DataError(f"the split of {workdir} has no test patient (data.test_fraction "
                    f"{config.data.get('test_fraction')}, or too few BraTS cases); evaluation "
                    "scores only patients held out from training and validation")
  return cases


def _truth(meta: CaseMeta):
  """The original label file of a case as classes 0..3, and its voxel spacing in mm."""
  paths = [p for p in meta.sources if file_role(p) == "label"]
  if not paths:
    raise DataError(f"case {meta.case_id} has no label file; it cannot be evaluated")
  image = nib.load(paths[0])
  classes = labels_to_classes(np.asanyarray(image.dataobj), meta.label_convention,
                              f"case {meta.case_id}: label file {paths[0]}")
  return classes, tuple(float(z) for z in image.header.get_zooms()[:3])


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


def _evaluate_case(loaded, case_dir: Path, masks, chunk, truth_cache: dict, figure: bool):
  """Rows of metrics for one model and one case; with ``figure``, also the slices drawn.
  ``truth_cache``: kept by the caller for the case, shared by its models."""
  meta = CaseMeta.read(case_dir)
  image = np.load(case_dir / "image.npy", mmap_mode="r")
  available = np.asarray(meta.available, bool)
  segmentation = loaded.job == "segment"
  if not truth_cache:
    truth_cache["classes"], truth_cache["spacing"] = _truth(meta)
    truth_cache["distances"] = {}
    truth_cache["nonzero"] = nonzero_voxels(
        {file_role(p): p for p in meta.sources if file_role(p) in MODALITIES})
  truth, spacing = truth_cache["classes"], truth_cache["spacing"]
  brain = (np.asarray(image)[..., available] != 0).any(-1)
  rows, drawn = [], {}
  z_original, z_model = _figure_slice(meta, truth)
  for mask in masks:
    if np.any(mask & ~available):
      continue
    key = mask_key(mask)
    out = predict_volume(loaded, image, mask, chunk)
    base = {"case_id": meta.case_id, "mask": key, "combination": mask_name(mask)}
    if segmentation:
      predicted = to_original_classes(out["probabilities"], meta,
                                      given_brain(truth_cache["nonzero"], mask))
      rows.append({**base, **segmentation_metrics(predicted, truth, spacing,
                                                   truth_cache["distances"])})
      if figure and key in FIGURE_MASKS:
        ras = nib.orientations.apply_orientation(predicted, np.asarray(meta.orientation))
        drawn[key] = ras[:, :, z_original]
    else:
      for j, modality in enumerate(MODALITIES):
        if available[j]:
          rows.append({**base, "modality": modality, "given": bool(mask[j]),
                       "psnr": psnr(out["synthesis"][..., j], image[..., j], brain)})
      if figure and key in FIGURE_MASKS:
        drawn[key] = out["synthesis"][z_model]
  if figure:
    if segmentation:
      ras = nib.orientations.apply_orientation(truth, np.asarray(meta.orientation))
      drawn["truth"] = ras[:, :, z_original]
      t1c = [p for p in meta.sources if file_role(p) == "t1c"]
      if t1c:
        volume = np.asanyarray(nib.load(t1c[0]).dataobj)
        ras_image = nib.orientations.apply_orientation(volume, np.asarray(meta.orientation))
        drawn["t1c"] = np.asarray(ras_image[:, :, z_original], np.float32)
    else:
      drawn["reference"] = np.asarray(image[z_model])
  return rows, drawn


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


def _cache_key(loaded, masks) -> str:
  """Per-case results are reused only for the same checkpoint and combinations."""
  keys = ",".join(mask_key(m) for m in masks)
  return hashlib.sha256(f"{loaded.checkpoint}:{loaded.step}:{keys}".encode()).hexdigest()[:12]


def _checked_cache(cache: Path, model) -> Path:
  """``cache``, emptied first if its results were made by another checkpoint than
  ``model``'s: same folder and step, but retrained (``checkpoints.fingerprint``). A folder
  from before the fingerprint was kept is trusted, and gets it."""
  marker = cache / "checkpoint.json"
  current = fingerprint(Path(model.checkpoint) / str(model.step))
  if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") != current:
    print(f"{model.workdir} was retrained since {cache} was written: evaluating it again",
          file=sys.stderr)
    shutil.rmtree(cache)
  if not marker.is_file():
    cache.mkdir(parents=True, exist_ok=True)
    write_text_atomically(marker, json.dumps({"checkpoint": str(model.checkpoint),
                                              "step": model.step, "fingerprint": current}))
  return cache


def evaluate_models(models, out_dir, settings, names=None) -> dict:
  """Evaluates ``models`` (work directories, or ``(stage, seed, workdir)`` tuples) and
  writes the tables and figures into ``out_dir``; returns ``{"files": [...]}`` and the
  mean rows of the tables."""
  from urn_jax import report  # matplotlib: only when writing the report
  workdirs = [Path(m[-1] if isinstance(m, (tuple, list)) else m) for m in models]
  if not workdirs:
    raise DataError("no model to evaluate: give --config.models=<workdir>[,<workdir>...]")
  if names and len(names) != len(workdirs):
    raise DataError(f"{len(names)} names for {len(workdirs)} models; give one per model")
  check_evaluation_settings(settings)
  masks = parse_masks(settings.get("masks", "all"))
  runs, reference_ids, figure_case = [], None, None
  for workdir in workdirs:
    config = read_config(workdir)
    cases = _test_cases(config, workdir)
    ids = sorted(c.name for c in cases)
    if reference_ids is None:
      reference_ids = ids
      if settings.max_cases:
        reference_ids = ids[:settings.max_cases]
      figure_case = settings.figure_case or _largest_tumour(cases, reference_ids)
    elif not set(reference_ids) <= set(ids):
      raise DataError(f"{workdir} has other test patients than {workdirs[0]} "
                       f"({len(set(reference_ids) - set(ids))} differ); compare only runs "
                       "with the same split (the same data and split_seed)")
    runs.append((workdir, config, {c.name: c for c in cases}))

  # Case by case, every model: each case's truth, and its distance maps for HD95, are
  # made once and dropped before the next case.
  loaded = [load_model(workdir) for workdir, _, _ in runs]
  out_dir = Path(out_dir)  # made only now, when every model has been found and loaded
  out_dir.mkdir(parents=True, exist_ok=True)
  results = [{"workdir": str(workdir), "name": names[n] if names else model.name,
              "job": model.job, "seed": int(config.seed), "step": model.step, "rows": [],
              "figure": {}} for n, ((workdir, config, _), model) in enumerate(zip(runs, loaded))]
  caches = [_checked_cache(out_dir / "per_case" / f"{n:02d}-{_cache_key(model, masks)}", model)
            for n, model in enumerate(loaded)]
  bar = tqdm(total=len(runs) * len(reference_ids), desc="evaluating", unit="case",
             file=sys.stderr, dynamic_ncols=True)
  for case_id in reference_ids:
    truth = {}
    figure = case_id == figure_case
    for (_, _, cases), model, run, cache in zip(runs, loaded, results, caches):
      bar.set_postfix_str(f"{case_id}: {run['name']} seed {run['seed']}")
      stored = cache / f"{case_id}.json"
      if stored.exists() and (not figure or stored.with_suffix(".npz").exists()):
        rows = json.loads(stored.read_text())
        drawn = dict(np.load(stored.with_suffix(".npz"))) if figure else {}
      else:
        rows, drawn = _evaluate_case(model, cases[case_id], masks, settings.chunk, truth,
                                     figure)
        cache.mkdir(parents=True, exist_ok=True)
        if figure:
          np.savez_compressed(stored.with_suffix(".npz"), **drawn)
        # Written last: a case is done only when its JSON exists.
        write_text_atomically(stored, json.dumps(rows))
      run["rows"] += [{"model": run["name"], "seed": run["seed"], **r} for r in rows]
      if figure:
        run["figure"] = drawn
      bar.update()
  bar.close()
  tumours = {case_id: tumour_volumes(runs[0][2][case_id]) for case_id in reference_ids}
  return report.write_report(results, out_dir, figure_case, settings.figures,
                             cases=reference_ids, tumours=tumours)


def tumour_volumes(case_dir: Path) -> dict:
  """The volume (cm^3) of each region in a case's original label file: what its scores mean
  (an empty ET scores Dice 100 or 0, nothing between)."""
  truth, spacing = _truth(CaseMeta.read(case_dir))
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
  print("\n".join(f"wrote {f}" for f in summary["files"]), file=sys.stderr)
  return summary

