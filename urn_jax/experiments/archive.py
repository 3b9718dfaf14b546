"""Sealed stages: a study that outlives the machines it trains on.

A stage of the study (``urn_jax.experiments.study``) is *sealed* once it has trained: what
the results need of it goes to ``<archive>/seed<seed>/<stage>/`` -

- ``config.json``: the job's (``pretrained_workdir`` pointing at the archived pre-training);
- ``metrics.jsonl``: its training curve, every logged step;
- ``run.json``: its scores on every test patient and combination
  (``urn_jax.evaluation.evaluate.score_models``), and for the seed the figures draw (the
  study's first) ``figure.npz``, what they draw; not for the convergence check's longer
  runs, which are never scored on test patients;
- ``probes.json``: its probes' rows (``urn_jax.experiments.probes``), for the URNs whose
  representation is their own;
- ``timings.jsonl``: the wall time of its training parts and of its sealing;
- ``sealed.json``, written last: the step and a digest of the parameters it was sealed
  with. A stage that has it is done: the study never trains or scores it again.

A stage whose loss became NaN or infinite (or whose pre-training's did) is sealed as
*diverged* (``seal_diverged``): its config, its curve as far as it went and its timings,
and a ``sealed.json`` that says why, no scores. The results leave its seed out of its
scenario and name it, as docs/STUDY_PLAN.md says.

The tables, figures, claims, probes, convergence check and wall times (``report``) are made
from the archive alone: no checkpoint, and no trained model, is read. So a study spread over
machines that do not last (each losing its work directories) keeps its archive - a few MB
per seed - between them, and anyone holding the archive recomputes the results. By default
the archive is the work directory, each job's folder holding its sealed files beside its
checkpoints; the study's ``archive`` names another folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np

from urn_jax.console import is_main_process, say
from urn_jax.errors import ConfigError, DataError
from urn_jax.files import replaced_atomically, write_text_atomically
from urn_jax.job_config import CONFIG_FILE, pretrained_encoders, stored_config, stored_fields

SEALED = "sealed.json"
RUN, FIGURE, PROBES, TIMINGS = "run.json", "figure.npz", "probes.json", "timings.jsonl"
# The fields of a job that make its results: a sealed stage with others is another stage.
_SAME_JOB = ("job", "seed", "data", "model", "train", "augment", "pretrained_encoders")


def stage_dir(archive, seed: int, name: str) -> Path:
  return Path(archive) / f"seed{seed}" / name


def is_sealed(folder) -> bool:
  return (Path(folder) / SEALED).is_file()


def check_sealed_job(job, folder) -> None:
  """Refuses a sealed stage that another job made than ``job`` (another data set, model,
  recipe or seed): its results would be reported as ``job``'s."""
  stored, expected = stored_fields(folder) or {}, json.loads(stored_config(job).to_json())
  differ = [k for k in _SAME_JOB if stored.get(k) != expected.get(k)]
  if differ:
    raise ConfigError(
        f"{folder} was sealed by a job with other {', '.join(differ)} than this study's "
        f"(see its {CONFIG_FILE}): give another --config.archive, or move that folder away "
        "to train the stage again")


def parameters_digest(loaded) -> str:
  """A digest of a loaded model's parameters: equal exactly when every weight is."""
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(loaded.variables["params"]):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()[:16]


def encoders_differ(job, archive_pretraining) -> bool:
  """Whether the pre-training ``job`` restores its encoders from (its work directory) has
  other weights than the sealed pre-training ``archive_pretraining`` that the results
  name: a pre-training trained again, after its work directory was lost, on a machine
  whose arithmetic differs."""
  from urn_jax.inference.predict import load_model
  sealed = sealed_record(archive_pretraining)
  return parameters_digest(load_model(job.pretrained_workdir)) != sealed["parameters_digest"]


def seal(name: str, job, job_dir, folder, evaluate_settings, probe_settings=None,
         score: bool = True, figure: bool = True, timings=(), pretraining_folder=None):
  """Seals the trained stage ``name`` of ``job`` (trained in ``job_dir``) into ``folder``:
  the files of the module's docstring, ``sealed.json`` last. ``score``: scored on the test
  patients, with what the figures draw where ``figure``; ``probe_settings``: probed (None:
  not); ``timings``: its training parts' records; ``pretraining_folder``: the sealed
  pre-training its encoders come from."""
  from urn_jax.evaluation.evaluate import score_models  # matplotlib: only here
  from urn_jax.inference.predict import load_model
  if not is_main_process():
    return
  job_dir, folder = Path(job_dir), Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  loaded = load_model(job_dir)
  if folder.resolve() != job_dir.resolve():
    _write_config(folder, json.loads((job_dir / CONFIG_FILE).read_text()), pretraining_folder)
    _copy_metrics(job_dir, folder)
  record = {"stage": name, "seed": int(job.seed), "step": int(loaded.step),
            "parameters_digest": parameters_digest(loaded)}
  if pretraining_folder is not None:
    record["encoders_as_sealed"] = not encoders_differ(job, pretraining_folder)
    if not record["encoders_as_sealed"]:
      say(f"warning: {job.pretrained_workdir} was trained again and its weights differ "
          f"from those sealed in {pretraining_folder}; {name} rests on the new ones "
          f"({folder / SEALED} says so)")
  parts = [dict(t) for t in timings]
  if score:
    (run,), cases, figure_case, tumours = score_models([job_dir], evaluate_settings,
                                                       loaded={str(job_dir): loaded})
    drawn = run.pop("figure")
    run.update(workdir=str(folder), cases=cases, figure_case=figure_case, tumours=tumours)
    write_text_atomically(folder / RUN, json.dumps(run))
    if figure:
      with replaced_atomically(folder / FIGURE) as temporary:
        with open(temporary, "wb") as f:
          np.savez_compressed(f, **drawn)
  if probe_settings is not None:
    from urn_jax.experiments.probes import probe_data, probe_model
    rows = probe_model(loaded, probe_data(loaded.config, job_dir), probe_settings)
    write_text_atomically(folder / PROBES, json.dumps(rows, indent=1))
  parts.append({"stage": "seal", "models": 1, "seconds": round(time.perf_counter() - start, 1)})
  _write_last(folder, parts, record)


def seal_diverged(name: str, job, job_dir, folder, reason: str, timings=(),
                  pretraining_folder=None) -> None:
  """Seals the stage ``name`` of ``job`` as diverged into ``folder``: its config (its
  ``pretrained_workdir`` the sealed ``pretraining_folder``), the ``metrics.jsonl`` its
  training wrote in ``job_dir`` before it stopped (none where it never trained), its
  ``timings``, and ``sealed.json`` last, with ``reason``."""
  if not is_main_process():
    return
  job_dir, folder = Path(job_dir), Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  _write_config(folder, json.loads(stored_config(job).to_json()), pretraining_folder)
  if (job_dir / "metrics.jsonl").is_file() and folder.resolve() != job_dir.resolve():
    _copy_metrics(job_dir, folder)
  _write_last(folder, timings, {"stage": name, "seed": int(job.seed), "diverged": reason})


def _write_config(folder: Path, fields: dict, pretraining_folder) -> None:
  """A sealed stage's config: ``fields``, its ``pretrained_workdir`` the sealed
  ``pretraining_folder`` where it has one."""
  if pretraining_folder is not None:
    fields["pretrained_workdir"] = str(pretraining_folder)
  write_text_atomically(folder / CONFIG_FILE, json.dumps(fields, indent=1))


def _copy_metrics(job_dir: Path, folder: Path) -> None:
  with replaced_atomically(folder / "metrics.jsonl") as temporary:
    shutil.copyfile(job_dir / "metrics.jsonl", temporary)


def _write_last(folder: Path, timings, record: dict) -> None:
  """A sealed stage's last files: its ``timings`` and ``sealed.json`` (``record``), the
  mark that it is complete."""
  write_text_atomically(folder / TIMINGS, "".join(json.dumps(t) + "\n" for t in timings))
  write_text_atomically(folder / SEALED, json.dumps(record, indent=1))


def diverged(folder) -> str | None:
  """Why the stage sealed in ``folder`` diverged (``seal_diverged``); None where it did
  not, or is not sealed."""
  return sealed_record(folder).get("diverged")


def sealed_record(folder) -> dict:
  """The ``sealed.json`` of the stage sealed in ``folder``; empty where it is not sealed."""
  return json.loads((Path(folder) / SEALED).read_text()) if is_sealed(folder) else {}


def sealed_run(folder) -> tuple[dict, list, str, dict]:
  """A sealed stage's run (``urn_jax.evaluation.runs``: its ``run.json`` with the figure's
  arrays, its ``workdir`` the sealed folder), the test patients it was scored on, the one
  the figures draw and their region volumes (``score_models``). A run on encoders trained
  again that differ from those sealed says so (``encoders_retrained``)."""
  folder = Path(folder)
  if not (folder / RUN).is_file():
    raise DataError(f"{folder} has no {RUN}: it was sealed without its scores, or is damaged;"
                    " move it away to train and seal the stage again")
  run = json.loads((folder / RUN).read_text())
  run["figure"] = {}
  if (folder / FIGURE).is_file():
    with np.load(folder / FIGURE) as figure:
      run["figure"] = {k: figure[k] for k in figure.files}
  run["workdir"] = str(folder)
  if not encoders_as_sealed(folder):
    run["encoders_retrained"] = True
  return run, run.pop("cases"), run.pop("figure_case"), run.pop("tumours")


def encoders_as_sealed(folder) -> bool:
  """False where the stage sealed in ``folder`` trained on a pre-training that was trained
  again (its work directory lost) and whose weights differ from those sealed
  (``encoders_differ``); True otherwise."""
  return sealed_record(folder).get("encoders_as_sealed", True)


def unsealed(folders) -> list[str]:
  return [str(f) for f in folders if not is_sealed(f)]


def probed(job) -> bool:
  """Whether a stage's representation is probed: a URN's own (a frozen one's is its
  pre-training's)."""
  return job.model.kind == "urn" and pretrained_encoders(job) != "frozen"
