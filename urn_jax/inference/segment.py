"""Segment patients' NIfTI files with whatever modalities they have: ``urn-segment``.

    urn-segment --model runs/urn_md --input /data/patients --output /data/predictions
    urn-segment --model runs/urn_md --t1c p1_t1ce.nii.gz --flair p1_flair.nii.gz --output out/
    python launch.py --config=configs/infer.py --workdir=/data/predictions \
        --config.model=runs/urn_md --config.input=/data/patients

``--input`` is a case folder or a folder of case folders, with BraTS file names
(``*_flair``, ``*_t1``, ``*_t1ce``, ``*_t2``, or 2023's ``-t2f``, ``-t1n``, ``-t1c``,
``-t2w``); a label file next to them is ignored. Or give the files of one case with
``--flair/--t1/--t1c/--t2``. Each case is pre-processed exactly as the model's training data
was (its ``config.json``), run through one compiled function with its availability mask,
and written as ``<output>/<case id>.nii.gz``: BraTS labels 0, 1, 2, 4 (``--labels
brats2023``: 0, 1, 2, 3) on the input's grid, with its affine and header, so a folder of
outputs is a BraTS submission. A voxel where every given modality is 0 is background, as in
BraTS: nothing outside the (skull-stripped) brain is ever labelled. Optional:
``<case>_probabilities.nii.gz`` (4D, the classes' probabilities on the input grid) and
``<case>_<modality>_synthesized.nii.gz`` for each missing modality (z-scored intensities,
from the pre-training run whose encoders the model uses, or ``--synthesis-model``). A case
that fails is reported and skipped; the others are written; an existing output is kept
unless ``--overwrite``.

``--model`` repeated makes an ensemble (nnU-Net's way with folds: several seeds or runs of a
scenario): each member predicts, and their class probabilities are averaged before the
argmax; the members must pre-process cases alike. ``--mirror lr`` (``lr,ap`` for both axes)
averages each model's probabilities over the case and its mirror images (test-time
augmentation; ``urn_jax.inference.predict.MIRROR_AXES``); ``--no-mirror`` turns it off.
``--adapt-bn`` first gives every batch norm the statistics of the case being segmented
(test-time adaptation, AdaBN: ``urn_jax.inference.adapt``; the synthesis model's too),
meant for scans from a scanner the model was not trained on; off by default, as a
measurement chose (``urn_jax.inference.predict.DEFAULT_ADAPT``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np

from urn_jax.console import progress as progress_bar
from urn_jax.console import say
from urn_jax.data.cases import Case, case_id_of_file, discover_brats
from urn_jax.data.grids import to_original_grid
from urn_jax.data.preprocess import preprocess_case
from urn_jax.errors import DataError, UserError
from urn_jax.files import Staging, staged, temporary_path
from urn_jax.inference.predict import (CHUNK, DEFAULT_ADAPT, DEFAULT_MIRROR, MIRROR_AXES,
                                       Ensemble, given_brain, load_model, mirrored_views,
                                       nonzero_voxels, parse_mirror, predict_volume,
                                       to_original_classes)
from urn_jax.labels import LABEL_VALUES, classes_to_labels
from urn_jax.modalities import MODALITIES, MODALITY_LABELS

# How the inputs are named where the cases come from: urn-segment's flags, or the fields of
# the infer job's config (configs/infer.py).
FLAGS = {"input": "--input", "files": "--flair/--t1/--t1c/--t2", "case_id": "--case-id"}
CONFIG_FIELDS = {"input": "--config.input",
                 "files": "--config.flair/--config.t1/--config.t1c/--config.t2",
                 "case_id": "--config.case_id"}


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What became of one case: ``segmented`` (its files written now), ``kept`` (an earlier
  output left alone), ``failed`` or ``interrupted`` (Ctrl-C: nothing of it written);
  ``message`` says why for all but the first."""

  case_id: str
  status: str
  message: str = ""
  files: tuple = ()


def cases_from_arguments(input_path="", files=None, case_id="",
                         names=FLAGS) -> tuple[list[Case], list[str]]:
  """The cases to segment: explicit ``files`` (modality -> path) of one case, else every
  BraTS-named case under ``input_path``. Returns ``(cases, problems)``: one problem per case
  folder that cannot be used. ``names``: how the messages name the inputs (``FLAGS``, or
  ``CONFIG_FIELDS`` for the infer job)."""
  files = {m: p for m, p in (files or {}).items() if p}
  if files:
    missing = [p for p in files.values() if not Path(p).is_file()]
    if missing:
      raise DataError(f"input file {missing[0]} does not exist")
    if not case_id:
      guessed = {case_id_of_file(p) for p in files.values()}
      case_id = guessed.pop() if len(guessed) == 1 else "case"
    return [Case(case_id, "brats", dict(files))], []
  if not input_path:
    raise DataError(f"nothing to segment: give {names['input']} CASE_DIR_OR_FOLDER, or the "
                    f"files of a case with {names['files']} (and {names['case_id']} to name "
                    "it)")
  cases, problems = discover_brats(input_path)
  return [dataclasses.replace(c, label_path=None) for c in cases], problems


def _case_outputs(out_dir: Path, case_id: str) -> list[Path]:
  """Every file ``segment_case`` may write for ``case_id``, the label map first."""
  return [out_dir / f"{case_id}.nii.gz", out_dir / f"{case_id}_probabilities.nii.gz",
          *(out_dir / f"{case_id}_{m}_synthesized.nii.gz" for m in MODALITIES)]


def _write(data, reference: nib.Nifti1Image, path: Path, dtype):
  """Writes ``data`` to ``path`` on ``reference``'s grid (its affine, a copy of its
  header)."""
  image = nib.Nifti1Image(np.asarray(data, dtype), reference.affine, reference.header.copy())
  image.set_data_dtype(dtype)
  image.header.set_slope_inter(1.0, 0.0)  # the values as written, no rescaling
  nib.save(image, path)


def segment_case(case: Case, model, out_dir: Path, *, synthesis_model=None,
                 probabilities=False, labels="brats2018", chunk=CHUNK,
                 mirror=DEFAULT_MIRROR, adapt=DEFAULT_ADAPT) -> list[Path]:
  """Segments one case into ``out_dir`` with ``model`` (a ``LoadedModel``, or a list of
  them: an ensemble), test-time ``mirror`` and ``adapt`` (``predict_volume``); returns the
  files written.

  All or nothing (``urn_jax.files.staged``): every output is written under a temporary name
  and renamed only when the case is complete, the label map last, so an existing label map
  means a finished case; a failure or Ctrl-C removes the temporaries."""
  with staged() as staging:
    _segment_case(case, model, out_dir, staging, synthesis_model=synthesis_model,
                  probabilities=probabilities, labels=labels, chunk=chunk, mirror=mirror,
                  adapt=adapt)
  return staging.last + staging.files


def _segment_case(case, model, out_dir, staging: Staging, *, synthesis_model, probabilities,
                  labels, chunk, mirror, adapt):
  members = model if isinstance(model, (list, tuple)) else [model]
  model = members[0]  # every member pre-processes as the first (``_load_models``)
  volume, _, meta = preprocess_case(case, model.preprocess)
  for why in meta.ignored.values():
    say(f"warning: case {case.case_id}: {why}")
  reference = nib.load(case.reference_path)  # its header: the outputs' grid
  mask = np.asarray(meta.available, bool)
  out = predict_volume(members, volume, mask, chunk, mirror, adapt)
  label_path, probabilities_path, *synthesized_paths = _case_outputs(out_dir, case.case_id)
  brain = given_brain(nonzero_voxels({m: p for m, p in case.paths.items()
                                      if m not in meta.ignored}, case.case_id), mask)
  classes = to_original_classes(out["probabilities"], meta, brain)
  _write(classes_to_labels(classes, labels), reference, staging.path(label_path, last=True),
         np.uint8)
  if probabilities:
    order = 1 if meta.resampled else 0
    probabilities = to_original_grid(out["probabilities"], meta, order)
    # Outside the brain, and outside the slices' window, which the model never saw:
    # background, with certainty, as in the label map.
    probabilities[~brain] = np.eye(probabilities.shape[-1], dtype=probabilities.dtype)[0]
    probabilities[..., 0] += 1 - probabilities.sum(-1)
    _write(probabilities, reference, staging.path(probabilities_path), np.float32)
  if synthesis_model is not None and not mask.all():
    if synthesis_model.preprocess != model.preprocess:
      volume, _, meta = preprocess_case(case, synthesis_model.preprocess)
    synthesized = predict_volume(synthesis_model, volume, mask, chunk, adapt=adapt)["synthesis"]
    for j, path in enumerate(synthesized_paths):
      if not mask[j]:
        _write(to_original_grid(synthesized[..., j], meta, order=1), reference,
               staging.path(path), np.float32)


def _synthesis_model(model, synthesis_model_dir):
  directory = synthesis_model_dir or model.config.get("pretrained_workdir", "")
  if not directory:
    raise DataError(f"--synthesis needs a pre-training run: {model.workdir} was not trained "
                    "on pre-trained encoders; give --synthesis-model PRETRAIN_WORKDIR")
  synthesis = load_model(directory)
  if synthesis.job != "pretrain":
    raise DataError(f"--synthesis-model {directory} is a {synthesis.job} run; expected a "
                    "pre-training run (configs/pretrain.py)")
  return synthesis


def _output_folder(out_dir) -> Path:
  """``out_dir``, created if need be; a path that is (or lies below) a file, or that cannot
  be created, is a ``DataError`` naming it, before any work is done."""
  out_dir = Path(out_dir)
  blocking = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()),
                  None)
  if blocking is not None:
    raise DataError(f"output {out_dir}: {blocking} is a file, not a folder; give a folder "
                    "for the label maps")
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise DataError(f"output {out_dir}: cannot create the folder ({e.strerror or e})") from e
  return out_dir


def _load_models(model_dirs, synthesis: bool, synthesis_model_dir: str):
  """The segmentation runs of ``model_dirs`` (one, or an ensemble, whose members must
  pre-process a case alike) and the synthesis model (the first member's pre-training)."""
  models = []
  for model_dir in model_dirs:
    model = load_model(model_dir)
    if model.job != "segment":
      raise DataError(f"{model_dir} is a {model.job} run; urn-segment needs a segmentation "
                      "run (configs/segment.py)")
    models.append(model)
  if not models:
    raise DataError("no model given: --model RUN (repeat it for an ensemble)")
  models = Ensemble.of(models, model_dirs)
  return models, _synthesis_model(models[0], synthesis_model_dir) if synthesis else None


def _model_dirs(model) -> list[str]:
  """``model``: one work directory, several as a list, or several comma-separated."""
  if isinstance(model, (list, tuple)):
    return [str(m) for m in model]
  return [m.strip() for m in str(model).split(",") if m.strip()]


def segment_cases(model_dir, cases, out_dir, *, synthesis=False, synthesis_model_dir="",
                  probabilities=False, overwrite=False, labels="brats2018", chunk=CHUNK,
                  progress=True, mirror=DEFAULT_MIRROR, adapt=DEFAULT_ADAPT) -> list[Outcome]:
  """Segments ``cases`` with the model trained in ``model_dir`` (several work directories,
  as a list or comma-separated: an ensemble, their probabilities averaged), test-time
  ``mirror`` and ``adapt``; returns one ``Outcome`` per case it came to (after Ctrl-C, the
  cases not started have none)."""
  if labels not in LABEL_VALUES:
    raise DataError(f"labels must be one of {sorted(LABEL_VALUES)}, got {labels!r}")
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
    raise DataError(f"chunk (slices per inference call) must be a whole number >= 1, got "
                    f"{chunk!r}")
  try:
    mirrored_views(mirror)
  except ValueError as e:
    raise DataError(f"mirror: {e}") from None
  if not isinstance(adapt, bool):
    raise DataError(f"adapt_bn (test-time adaptation) must be True or False, got {adapt!r}")
  out_dir = _output_folder(out_dir)
  model, synthesis_model = _load_models(_model_dirs(model_dir), synthesis, synthesis_model_dir)
  outcomes = []
  for n, case in enumerate(progress_bar(cases, desc="segmenting", unit="case",
                                        disable=not progress)):
    outputs = _case_outputs(out_dir, case.case_id)
    for stale in outputs:  # left by a run killed outright
      temporary_path(stale).unlink(missing_ok=True)
    if outputs[0].exists() and not overwrite:
      outcomes.append(Outcome(case.case_id, "kept", f"case {case.case_id}: {outputs[0]} "
                              "exists; kept (use --overwrite)"))
      continue
    try:
      files = segment_case(case, model, out_dir, synthesis_model=synthesis_model,
                           probabilities=probabilities, labels=labels, chunk=chunk,
                           mirror=mirror, adapt=adapt)
      outcomes.append(Outcome(case.case_id, "segmented", files=tuple(files)))
    except KeyboardInterrupt:
      outcomes.append(Outcome(
          case.case_id, "interrupted", f"case {case.case_id}: nothing written, and "
          f"{len(cases) - n - 1} later case(s) not started; interrupted (Ctrl-C); run the "
          "same command again to finish"))
      break
    except DataError as e:
      outcomes.append(Outcome(case.case_id, "failed", str(e)))
    except Exception as e:  # noqa: BLE001 - one bad case must not cost the others
      detail = traceback.format_exception_only(type(e), e)[-1].strip()
      outcomes.append(Outcome(case.case_id, "failed", f"case {case.case_id}: {detail}"))
  return outcomes


def _finish(cases, outcomes: list[Outcome], discovery: list[str], out_dir) -> int:
  """Reports what happened to every case: one line per case that was not segmented now
  (``discovery``'s case folders that could not be read or used, then the outcomes'), and a
  summary that counts the cases segmented, kept, failed, interrupted and not started. The
  exit status is 1 when a case failed, 130 after Ctrl-C."""
  for problem in discovery + [o.message for o in outcomes if o.status != "segmented"]:
    print(f"skipped: {problem}", file=sys.stderr)
  counts = {status: sum(o.status == status for o in outcomes)
            for status in ("segmented", "kept", "failed", "interrupted")}
  counts["failed"] += len(discovery)  # a discovery problem is a case folder that failed
  total = len(cases) + len(discovery)
  counts["not started"] = total - sum(counts.values())
  summary = f"{counts.pop('segmented')} of {total} case(s) segmented into {out_dir}"
  summary += "".join(f"; {count} {what}" for what, count in counts.items() if count)
  print(summary, file=sys.stderr)
  if counts["interrupted"]:
    return 130  # the shell's status for Ctrl-C
  return int(counts["failed"] > 0)


def run(config, workdir):
  """The ``infer`` job (``configs/infer.py``): the output folder is ``workdir``."""
  files = {m: config.get(m, "") for m in MODALITIES}
  cases, problems = cases_from_arguments(config.input, files, config.case_id, CONFIG_FIELDS)
  outcomes = segment_cases(
      config.model, cases, workdir, synthesis=config.synthesis,
      synthesis_model_dir=config.synthesis_model, probabilities=config.probabilities,
      overwrite=config.overwrite, labels=config.labels, chunk=config.chunk,
      mirror=parse_mirror(config.get("mirror")),
      adapt=config.get("adapt_bn", DEFAULT_ADAPT))
  status = _finish(cases, outcomes, problems, workdir)
  if status:
    raise SystemExit(status)


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
  return value


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="urn-segment", description="Segments brain tumours from whatever MRI modalities "
      "a patient has, with a model trained by urn_jax; writes NIfTI label maps (BraTS "
      "labels 0, 1, 2, 4) on the input's grid.")
  parser.add_argument("--model", required=True, action="append",
                      help="work directory of a segmentation run (configs/segment.py); "
                      "repeat it for an ensemble, whose probabilities are averaged")
  parser.add_argument("--input", default="", help="a case folder or a folder of case folders")
  parser.add_argument("--output", required=True, help="folder for <case id>.nii.gz")
  for modality in MODALITIES:
    parser.add_argument(f"--{modality}", default="",
                        help=f"{MODALITY_LABELS[modality]} file of one case")
  parser.add_argument("--case-id", default="", help="output name for --flair/--t1/--t1c/--t2")
  parser.add_argument("--synthesis", action="store_true",
                      help="also write the missing modalities, synthesized")
  parser.add_argument("--synthesis-model", default="",
                      help="pre-training run for --synthesis (default: the model's own)")
  parser.add_argument("--probabilities", action="store_true",
                      help="also write the class probabilities (4D NIfTI)")
  parser.add_argument("--labels", default="brats2018", choices=sorted(LABEL_VALUES),
                      help="label values: brats2018 0,1,2,4 (default); brats2023 0,1,2,3")
  parser.add_argument("--chunk", type=_positive_int, default=CHUNK,
                      help="slices per inference call (>= 1)")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  parser.add_argument("--mirror", default=",".join(DEFAULT_MIRROR),
                      help="test-time mirroring: average over flips of these axes, "
                      f"comma-separated among {', '.join(MIRROR_AXES)} (lr: left-right, "
                      f"ap: front-back; default {','.join(DEFAULT_MIRROR) or 'none'})")
  parser.add_argument("--no-mirror", dest="mirror", action="store_const", const="",
                      help="no test-time mirroring")
  parser.add_argument("--adapt-bn", action=argparse.BooleanOptionalAction,
                      default=DEFAULT_ADAPT,
                      help="test-time adaptation: every batch norm takes the statistics of "
                      "the case being segmented (AdaBN), for a scanner the model was not "
                      "trained on")
  args = parser.parse_args(argv)
  try:
    cases, problems = cases_from_arguments(
        args.input, {m: getattr(args, m) for m in MODALITIES}, args.case_id)
    outcomes = segment_cases(
        args.model, cases, args.output, synthesis=args.synthesis,
        synthesis_model_dir=args.synthesis_model, probabilities=args.probabilities,
        overwrite=args.overwrite, labels=args.labels, chunk=args.chunk,
        mirror=parse_mirror(args.mirror), adapt=args.adapt_bn)
  except UserError as e:
    parser.exit(2, f"urn-segment: error: {e}\n")
  except KeyboardInterrupt:
    parser.exit(130, "urn-segment: interrupted (Ctrl-C) before any case was segmented\n")
  return _finish(cases, outcomes, problems, args.output)


if __name__ == "__main__":
  sys.exit(main())
