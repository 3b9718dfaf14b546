"""Checkpoints: orbax managers for a training run, finding and restoring a run's state,
whether a checkpoint belongs to a config, and pre-trained encoders copied into a new run.

A work directory holds ``checkpoints/<step>/`` (the latest ``keep_checkpoints``: state,
data iterator position, loop progress) and ``best/<step>/`` (the best by validation loss).

Belonging: a checkpoint's progress records the ``signature`` of its config (job, variant,
model, slice size, pre-trained encoders); resuming with another one, or overwriting a
trained work directory's ``config.json`` with another (``keep_trained_config``), is a
``CheckpointMismatch`` naming the fields that differ. ``load_pretrained`` copies a
pre-training run's encoders into a segmentation run's fresh state.

Integrity: orbax writes a step into a temporary folder and renames it when complete, so a
killed save leaves nothing half-written; but a finished checkpoint can still be damaged
later (a copy cut short, a full disk, a file edited by hand), and restoring one makes
orbax / TensorStore fail deep in their threads with a long traceback and stray "Event loop
is closed" reports. So once a step is complete, its files are listed in
``<step>/urn_jax_files.json``: every file's size, and the SHA-256 of the small ones (the
metadata; hashing the arrays would cost seconds per save at the paper's size, and a
truncated array file changes its size). ``restore_state`` checks that list first and falls
back from a damaged ``best/`` to the newest intact checkpoint in ``checkpoints/``, with a
warning naming the damaged one; a run with no readable checkpoint is one ``DataError``.
Checkpoints written before this list existed are restored unchecked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from urn_jax.console import say
from urn_jax.data.augment import AugmentSettings
from urn_jax.errors import CheckpointMismatch, DataError, MissingInput
from urn_jax.files import temporary_path, write_text_atomically
from urn_jax.job_config import CONFIG_FILE, migrate, pretrained_encoders, read_config
from urn_jax.model.urn import PRETRAINED_MODULES

FILE_LIST = "urn_jax_files.json"
HASHED_BYTES = 1 << 20  # files up to this size are hashed, larger ones only sized


def _file_list(step_dir: Path) -> dict:
  ours = {FILE_LIST, temporary_path(FILE_LIST).name}  # the list, and one a killed process left
  # (write_text_atomically's temporary name)
  files = {}
  for path in sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name not in ours):
    size = path.stat().st_size
    entry = {"bytes": size}
    if size <= HASHED_BYTES:
      entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    files[path.relative_to(step_dir).as_posix()] = entry
  return files


def record_files(step_dir) -> None:
  """Lists a complete step's files in ``<step_dir>/urn_jax_files.json`` (atomically)."""
  step_dir = Path(step_dir)
  write_text_atomically(step_dir / FILE_LIST, json.dumps(_file_list(step_dir), indent=0))


def fingerprint(step_dir) -> str:
  """Names one saved checkpoint: the hash of its file list, which hashes orbax's metadata
  (with the save's timestamp) and every small file; of orbax's metadata alone where there is
  no list; "" where there is neither. A model retrained in the same folder, to the same
  step, has another: results kept for the old one are recognized as stale."""
  for name in (FILE_LIST, "_CHECKPOINT_METADATA"):
    path = Path(step_dir) / name
    if path.is_file():
      return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
  return ""


def damage(step_dir) -> str | None:
  """What is wrong with a checkpoint step folder, by its file list; None when every file is
  as written (or when the step has no file list: an older checkpoint, not checked)."""
  step_dir = Path(step_dir)
  listed = step_dir / FILE_LIST
  if not step_dir.is_dir():
    return f"{step_dir} is missing"
  if not listed.is_file():
    return None
  try:
    expected = json.loads(listed.read_text())
  except (OSError, ValueError) as e:
    return f"its file list {listed} is unreadable ({e})"
  for name, entry in expected.items():
    path = step_dir / name
    if not path.is_file():
      return f"{path} is missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
      return f"{path} is {size} bytes; {entry['bytes']} were written"
    if "sha256" in entry and hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
      return f"{path} has changed since it was written"
  return None


def _record_finished(manager) -> None:
  """File lists for the manager's complete steps that have none (process 0 only)."""
  if jax.process_index():
    return
  for step in manager.all_steps():
    step_dir = Path(manager.directory) / str(step)
    if step_dir.is_dir() and not (step_dir / FILE_LIST).exists():
      record_files(step_dir)


def _barriers_named(prefix: str):
  """Orbax's options for one of two managers saving side by side: across processes, each
  meets the others at barriers of its own (with one name, the two managers' saves would
  take each other's barriers and time out)."""
  return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)


class Checkpoints:
  """The latest checkpoints (with the data iterator and loop progress) and the best one."""

  def __init__(self, workdir: Path, config):
    self.latest = ocp.CheckpointManager(
        (workdir / "checkpoints").resolve(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.train.keep_checkpoints, create=True,
            multiprocessing_options=_barriers_named("checkpoints")))
    self.best = ocp.CheckpointManager(
        (workdir / "best").resolve(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             best_fn=lambda m: m["validation_loss"],
                                             best_mode="min",
                                             multiprocessing_options=_barriers_named("best")))
    self.workdir = workdir

  def save(self, step, state, iterator, progress):
    # orbax.save waits for the save in flight anyway; the steps it finished get their lists
    self.latest.wait_until_finished()
    _record_finished(self.latest)
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
        progress=ocp.args.JsonSave(progress)))

  def save_best(self, step, state, progress, validation_loss):
    self.best.wait_until_finished()
    _record_finished(self.best)
    self.best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)),
        metrics={"validation_loss": validation_loss})

  def restore(self, state, iterator, signature):
    """Restores the latest checkpoint into ``state`` and ``iterator``; returns
    ``(state, progress)``, or ``(state, None)`` when there is none."""
    step = self.latest.latest_step()
    if step is None:
      return state, None
    step_dir = Path(self.latest.directory) / str(step)
    problem = damage(step_dir)
    if problem:
      earlier = [s for s in self.latest.all_steps() if s < step]
      raise DataError(
          f"the checkpoint {step_dir} is damaged: {problem}. Move that folder away to "
          + (f"resume from step {max(earlier)}" if earlier else "start again")
          + ", or use a new --workdir")
    progress = self.latest.restore(step, args=ocp.args.Composite(
        progress=ocp.args.JsonRestore()))["progress"]
    check_signature(progress.get("signature"), signature, self.workdir / "checkpoints")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    try:
      restored = self.latest.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          data=grain.checkpoint.CheckpointRestore(iterator)))
    except (ValueError, KeyError) as e:
      raise CheckpointMismatch(
          f"the checkpoint at step {step} in {self.workdir / 'checkpoints'} does not fit the "
          f"configured model ({e}); use a new --workdir or the config it was written with"
      ) from None
    return restored["state"], progress

  def wait(self):
    """Waits for the saves in flight; then every complete step has its file list."""
    for manager in (self.latest, self.best):
      manager.wait_until_finished()
      _record_finished(manager)


def signature(config) -> dict:
  """What a checkpoint must agree with to be resumed. Frozen encoders change the optimizer
  state's tree, so whether the encoders are pre-trained (and frozen) is part of it."""
  return {"job": config.job, "variant": config.get("variant", ""),
          "model": config.model.to_dict(), "size": config.data.size,
          "pretrained_encoders": pretrained_encoders(config)}


def check_signature(stored, current, where):
  """Raises ``CheckpointMismatch`` when the ``stored`` signature (brought up to date by
  ``job_config.migrate``) is not ``current``; None (no signature) passes."""
  current = json.loads(json.dumps(current))
  if stored is None:
    return
  stored = migrate(json.loads(json.dumps(stored)))
  if stored != current:
    raise CheckpointMismatch(
        f"the checkpoints in {where} were written for a different configuration "
        f"{_differences(stored, current)}; use a new --workdir or the same config")


def _differences(stored: dict, current: dict, prefix: str = "") -> str:
  """``(differs in: <keys>; stored [...], configured [...])`` for the keys whose values
  differ, named with ``prefix``."""
  keys = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
  return (f"(differs in: {', '.join(prefix + k for k in keys)}; stored "
          f"{[stored.get(k) for k in keys]}, configured {[current.get(k) for k in keys]})")


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs an ERROR line for each damaged metadata file it meets while listing steps;
  the damage is reported here, once, in a sentence."""
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.FATAL)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)


def _candidates(workdir):
  """``(manager, step, step folder, problem)`` in the order to try them: ``best/``'s step,
  then ``checkpoints/`` from the newest. ``problem`` says why a step cannot be used (its
  file list shows damage, or orbax cannot list the folder's steps); else it is None."""
  for sub in ("best", "checkpoints"):
    directory = (Path(workdir) / sub).resolve()
    if not directory.is_dir():
      continue
    try:
      with _quiet_orbax():
        manager = ocp.CheckpointManager(directory)
        steps = [manager.best_step()] if sub == "best" else sorted(manager.all_steps(),
                                                                    reverse=True)
    except Exception as e:  # noqa: BLE001 - damaged step metadata: try the next folder
      steps = sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()),
                     reverse=True)[:1]
      for step in steps:
        yield None, step, directory / str(step), (
            damage(directory / str(step)) or f"orbax cannot read it: {_sentence(e)}")
      continue
    for step in (s for s in steps if s is not None):
      yield manager, step, directory / str(step), damage(directory / str(step))


def _sentence(error: Exception) -> str:
  return " ".join(str(error).split())[:300]


def _none_usable(workdir, damaged: list[str]):
  """The error for a work directory with no checkpoint that can be used."""
  if damaged:
    return DataError(f"no readable checkpoint in {workdir}: {'; '.join(damaged)}. Restore "
                     "the work directory from a copy, or train again")
  return MissingInput(f"no checkpoint in {workdir} (looked in best/ and checkpoints/)")


def find_checkpoint(workdir):
  """``(manager, step, directory)`` of a run's best checkpoint, else its newest, skipping
  those whose file list shows damage."""
  damaged = []
  for manager, step, step_dir, problem in _candidates(workdir):
    if problem is None:
      return manager, step, step_dir.parent
    damaged.append(f"{step_dir} is damaged ({problem})")
  raise _none_usable(workdir, damaged)


def read_state(manager, step) -> dict:
  """The training state saved at ``step`` by ``manager``, whatever devices and processes
  saved it, as arrays replicated on this run's devices: orbax, left to itself, would
  restore each array onto the devices that saved it, and a model trained on two hosts (or
  two GPUs) could not be read on one."""
  with _quiet_orbax():  # its warning that a state has no metadata file of its own
    saved = ocp.StandardCheckpointer().metadata(Path(manager.directory) / str(step) / "state")
  replicated = NamedSharding(Mesh(np.asarray(jax.devices()), ("devices",)), PartitionSpec())
  abstract = jax.tree_util.tree_map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
      saved.item_metadata)
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]


def restore_state(workdir) -> tuple[dict, int, Path]:
  """A run's saved training state (a dict of arrays), step and folder: the best checkpoint,
  else the newest intact one in ``checkpoints/``. A damaged checkpoint is skipped with a
  warning naming it; when none can be read, a ``DataError`` lists why for each."""
  damaged = []
  for manager, step, step_dir, problem in _candidates(workdir):
    if problem is None:
      try:
        with _quiet_orbax():
          restored = read_state(manager, step)
      except Exception as e:  # noqa: BLE001 - any reading error: try the next checkpoint
        problem = _sentence(e)
    if problem is None:
      if damaged:
        say(f"warning: using the checkpoint {step_dir}, since {'; '.join(damaged)}")
      return restored, step, step_dir.parent
    damaged.append(f"{step_dir} is damaged ({problem})")
  raise _none_usable(workdir, damaged)


def keep_trained_config(config, workdir: Path):
  """Refuses, before anything is written, a config whose model differs from the one already
  trained in ``workdir`` (its ``config.json`` next to checkpoints): overwriting that file
  would leave checkpoints that no longer load. ``CheckpointMismatch`` names the fields. So
  is one that augments differently: the run would go on with other data, unnoticed (a run
  of a CPU preset started before those presets augmented, resumed by the same command)."""
  checkpoints = Path(workdir) / "checkpoints"
  if ((Path(workdir) / CONFIG_FILE).is_file() and checkpoints.is_dir()
      and any(checkpoints.iterdir())):
    trained = read_config(workdir)
    check_signature(signature(trained), signature(config), workdir)
    _check_augmentation(trained, config, workdir)


def _check_augmentation(trained, config, workdir):
  """Raises ``CheckpointMismatch`` naming the augmentation settings in which ``config``
  differs from the ``trained`` one (a config without the block augments nothing)."""
  before, now = (AugmentSettings.from_config(c.get("augment", {})) for c in (trained, config))
  if before != now:
    hint = (" (it was trained without augmentation: add --config.augment.enabled=False)"
            if not before.active else "")
    raise CheckpointMismatch(
        f"the checkpoints in {workdir} were trained with other data augmentation "
        f"{_differences(dataclasses.asdict(before), dataclasses.asdict(now), 'augment.')}; "
        f"use the augmentation it was trained with{hint}, or a new --workdir")


def find_pretrained(pretrained_workdir):
  """Fails early, with what to do, when a pre-training run has no checkpoint."""
  try:
    return find_checkpoint(pretrained_workdir)
  except MissingInput:
    raise MissingInput(
        f"no pre-training checkpoint in {pretrained_workdir} (looked in best/ and "
        "checkpoints/); run configs/pretrain.py first or fix --config.pretrained_workdir"
    ) from None


def load_pretrained(state, pretrained_workdir):
  """Copies the encoders (and a learned f) of a pre-training run into ``state``."""
  find_pretrained(pretrained_workdir)
  stored, step, directory = restore_state(pretrained_workdir)
  params, batch_stats = dict(state.params), dict(state.batch_stats)
  for name in PRETRAINED_MODULES:
    if name not in params:
      continue
    if name not in stored["params"]:
      raise CheckpointMismatch(f"the pre-training checkpoint in {directory} has no {name!r}; "
                               "was it trained with the same fusion?")
    for target, collection in ((params, "params"), (batch_stats, "batch_stats")):
      if name not in target:
        continue
      mine = jax.tree_util.tree_map(jnp.shape, target[name])
      theirs = jax.tree_util.tree_map(jnp.shape, stored[collection][name])
      if mine != theirs:
        raise CheckpointMismatch(
            f"the pre-trained {name} in {directory} have other shapes than this config's "
            "(model.encoder_features, model.channels and model.fusion must match the "
            "pre-training config)")
      target[name] = jax.tree_util.tree_map(jnp.asarray, stored[collection][name])
  say(f"encoders restored from {directory} (step {step})")
  return state.replace(params=params, batch_stats=batch_stats)
