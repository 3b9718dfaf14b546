"""Training: ``train_and_evaluate(config, workdir)``, the loop of pre-training and segmentation.

One loop serves both stages and every scenario of the paper; the config says which
(``configs/pretrain.py``, ``configs/segment.py``):

- data (``urn_jax.data.datasets``): the phantom when no folder is given, a seeded split
  kept in the work directory, a grain loader of axial slices;
- the model (``urn_jax.model.build``) and its recipe (``urn_jax.training.recipe``): the
  step, its objective and the learning-rate schedule;
- devices: a ``Mesh`` with one ``data`` axis over every device of every host; batches are
  sharded on it, parameters replicated; the batch size is global; only process 0 writes;
- checkpoints (``urn_jax.training.checkpoints``): the latest ``keep_checkpoints`` with the
  data iterator's position and the loop's progress, and the best by validation loss. Started
  again with the same command, a run resumes from its last checkpoint and ends with the
  same parameters as an uninterrupted run (every step's key is derived from the step
  number); Ctrl-C or SIGTERM finishes the step in progress, saves it and ends with a line
  saying so (``urn_jax.training.stopping``);
- validation (``urn_jax.training.validation``) every ``eval_every`` steps;
- stops: after ``num_epochs`` epochs or ``max_steps``; earlier on a plateau, when the
  validation loss has not improved by ``min_improvement`` (relative) for ``patience_epochs``
  epochs; a NaN or infinite loss stops the run with ``TrainingDiverged`` and keeps the last
  good checkpoint;
- checks first: the whole config (``urn_jax.training.config_checks``), then that it
  describes the model already trained in ``workdir`` if there is one, and that encoders
  it restores were pre-trained on slices pre-processed as its own, then the data and
  checkpoints;
  only when all is well are files written, so a mistaken command leaves a trained work
  directory as it was;
- logs (process 0): a progress bar, TensorBoard event files in ``tensorboard/``,
  ``metrics.jsonl``, and the resolved config in ``config.json``; at the end, a line on the
  validation curve (``metrics_log.curve_note``: flat, or still falling) before the last
  one, which says where everything is.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from urn_jax.console import progress, say
from urn_jax.data.augment import AugmentSettings
from urn_jax.data.datasets import slice_sources
from urn_jax.data.loader import SliceSource, make_loader
from urn_jax.errors import ConfigError, Interrupted, TrainingDiverged
from urn_jax.hosts import PeerLost, lost_peer
from urn_jax.job_config import pretrained_encoders, write_config
from urn_jax.modalities import MODALITIES
from urn_jax.model.build import build_model
from urn_jax.training import recipe
from urn_jax.training.checkpoints import (Checkpoints, find_pretrained, keep_trained_config,
                                          load_pretrained, signature)
from urn_jax.training.config_checks import check_pretraining_fits, check_training_config
from urn_jax.training.metrics_log import MetricsLog, curve_note, curve_summary
from urn_jax.training.steps import TrainState, create_train_state
from urn_jax.training.stopping import StopRequest
from urn_jax.training.validation import validate


@dataclasses.dataclass
class _Run:
  """A training run, checked, with its data, state and checkpoints in place."""

  config: object
  workdir: Path
  model: object
  state: TrainState
  iterator: object
  validation_source: SliceSource
  num_steps: int
  steps_per_epoch: int
  schedule: object
  step_key: object  # step n's modality dropout draws from fold_in(step_key, n)
  to_device: object
  everywhere: object
  checkpoints: Checkpoints
  progress: dict


def _check(config, workdir: Path):
  """Everything that can be checked before a file is read or written: the config, that it
  fits the model already trained in ``workdir``, and its pre-training; returns the model."""
  check_training_config(config)
  if config.train.batch_size % jax.device_count():
    raise ConfigError(f"train.batch_size {config.train.batch_size} is not divisible by the "
                      f"{jax.device_count()} devices")
  model = build_model(config)
  keep_trained_config(config, workdir)
  if pretrained_encoders(config):  # fail before the data is prepared
    find_pretrained(config.pretrained_workdir)
    check_pretraining_fits(config)
  return model


def _set_up(config, workdir: Path) -> _Run:
  """Checks, data, the model's state (restored from the latest checkpoint if any)."""
  t = config.train
  model = _check(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  train_source, validation_source = slice_sources(config, workdir)
  steps_per_epoch = max(len(train_source) // t.batch_size, 1)
  num_steps = min(t.max_steps, int(math.ceil(t.num_epochs * steps_per_epoch)))
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  say(f"{jax.device_count()} {jax.devices()[0].platform} device(s) on {jax.process_count()} "
      f"host(s); global batch {t.batch_size}; {num_steps} steps ({len(train_source)} "
      "training slices)")
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  # A process's rows of a global batch (training), and a global batch every process
  # holds whole (validation), as global arrays sharded over every device.
  to_device = lambda batch: {k: jax.make_array_from_process_local_data(batch_sharding, v)
                             for k, v in batch.items()}
  everywhere = lambda batch: {
      k: jax.make_array_from_callback(v.shape, batch_sharding, lambda index, v=v: v[index])
      for k, v in batch.items()}
  iterator = iter(make_loader(train_source, t.batch_size, config.seed,
                              worker_count=config.data.loader_workers,
                              shard_index=jax.process_index(),
                              shard_count=jax.process_count(),
                              augment=AugmentSettings.from_config(config.get("augment", {}))))
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  size = config.data.size
  schedule = recipe.schedule(config, num_steps)
  state = create_train_state(model, init_key, (t.batch_size, size, size, len(MODALITIES)),
                             schedule)
  if pretrained_encoders(config):
    state = load_pretrained(state, config.pretrained_workdir)
  state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
  checkpoints = Checkpoints(workdir, config)
  state, progress_ = checkpoints.restore(state, iterator, signature(config))
  if progress_ is None:
    progress_ = {"signature": signature(config), "best": None, "plateau_loss": None,
                 "plateau_step": 0, "stopped_early": False}
  progress_.setdefault("plateau_loss", progress_["best"])  # checkpoints of older versions
  progress_.setdefault("plateau_step", int(state.step))
  return _Run(config, workdir, model, state, iterator, validation_source, num_steps,
              steps_per_epoch, schedule, step_key, to_device, everywhere, checkpoints,
              progress_)


def _mean_metrics(history):
  return {k: float(np.mean([float(h[k]) for h in history])) for k in history[0]}


def _validate(run: _Run, step: int, metrics: dict) -> bool:
  """Validation at ``step`` into ``metrics``; saves the best checkpoint; returns whether
  the validation loss is on a plateau: no better by ``min_improvement`` (relative) for
  ``patience_epochs`` epochs."""
  t, progress_ = run.config.train, run.progress
  metrics.update(validate(run.config, run.model, run.state, run.validation_source,
                          run.everywhere))
  loss = metrics["validation_loss"]
  if progress_["best"] is None or loss < progress_["best"]:
    progress_["best"] = loss
    run.checkpoints.save_best(step, run.state, progress_, loss)
  if progress_["plateau_loss"] is None or (
      loss < progress_["plateau_loss"] * (1 - t.min_improvement)):
    progress_["plateau_loss"], progress_["plateau_step"] = loss, step
  patience_steps = t.patience_epochs * run.steps_per_epoch
  progress_["stopped_early"] = (bool(t.patience_epochs)
                                and step - progress_["plateau_step"] >= patience_steps)
  return progress_["stopped_early"]


def _loop(run: _Run, request: StopRequest, step: int):
  """Trains from ``step`` until the last step, a plateau or a stop request; returns
  ``(step reached, last logged metrics, stopped early)``."""
  t = run.config.train
  train_step = recipe.train_step(run.config)
  log = MetricsLog(run.workdir)
  bar = progress(total=run.num_steps, initial=step, desc=run.config.job, unit="step")
  history, last, stop, tick = [], {}, False, time.perf_counter()
  peer_lost = False
  try:
    while step < run.num_steps and not stop and not request.agreed(step, t.log_every):
      batch = run.to_device(next(run.iterator))
      run.state, metrics = train_step(run.state, batch, jax.random.fold_in(run.step_key, step))
      step += 1
      history.append(metrics)
      evaluate_now = step % t.eval_every == 0 or step == run.num_steps
      save_now = step % t.checkpoint_every == 0 or step == run.num_steps or evaluate_now
      if step % t.log_every and not save_now:
        continue
      last = _mean_metrics(jax.device_get(history))
      if not all(math.isfinite(v) for v in last.values()):
        kept = run.checkpoints.latest.latest_step()
        raise TrainingDiverged(
            f"the loss became {last['loss']} by step {step}; stopped without saving. The "
            f"last good checkpoint ({'step ' + str(kept) if kept is not None else 'none'}) is "
            f"in {run.workdir / 'checkpoints'}; try a lower train.learning_rate")
      last["slices_per_second"] = len(history) * t.batch_size / (time.perf_counter() - tick)
      last["learning_rate"] = float(run.schedule(step - 1))
      last["epoch"] = step / run.steps_per_epoch
      history, tick = [], time.perf_counter()
      if evaluate_now:
        stop = _validate(run, step, last)
      log.write(step, last)
      bar.set_postfix({k: f"{v:.4g}" for k, v in last.items()
                       if k in ("loss", "validation_loss", "validation_dice_WT",
                                "slices_per_second")})
      bar.update(step - bar.n)
      if save_now or stop:
        run.checkpoints.save(step, run.state, run.iterator, run.progress)
    if (request.agreed() and step < run.num_steps
        and run.checkpoints.latest.latest_step() != step):
      run.checkpoints.save(step, run.state, run.iterator, run.progress)  # nothing is lost
  except KeyboardInterrupt:
    request.requested = True  # a second Ctrl-C: stop at once, with the last checkpoint
  except Exception as e:  # noqa: BLE001 - re-raised, unless another process has died
    if not lost_peer(e):
      raise
    peer_lost = True
    kept = run.checkpoints.latest.latest_step()
    raise PeerLost(
        f"process {jax.process_index()} of {jax.process_count()}: another process of this "
        f"run has died (step {step}: {str(e).splitlines()[0][:200]}). "
        + (f"The checkpoint of step {kept} is in {run.workdir / 'checkpoints'}: start "
           "every process again with the same command to resume from it" if kept is not None
           else "No checkpoint was written yet: start every process again")) from None
  finally:
    bar.close()
    log.close()
    if not peer_lost:  # waiting would wait for the dead process at orbax's barrier
      run.checkpoints.wait()
  return step, last, stop


def _say_curve(workdir: Path):
  """The line on the validation curve (``metrics_log.curve_note``), from process 0."""
  metrics = workdir / "metrics.jsonl"
  if jax.process_index() == 0 and metrics.is_file():
    note = curve_note(curve_summary(metrics))
    if note:
      say(note)


def train_and_evaluate(config, workdir):
  """Trains as ``config`` says, in ``workdir``; returns the last logged metrics."""
  workdir = Path(workdir)
  run = _set_up(config, workdir)
  step = int(run.state.step)
  if step:
    say(f"resuming from step {step} in {workdir / 'checkpoints'}")
  if step >= run.num_steps or run.progress["stopped_early"]:
    say(f"nothing to do: {workdir} finished training at step {step}")
    _say_curve(workdir)
    return {}
  # Written only now, when everything it describes has been checked and loaded: a mistaken
  # command leaves a trained work directory's files as they were.
  if jax.process_index() == 0:
    write_config(config, workdir)
  with StopRequest() as request:
    step, last, stop = _loop(run, request, step)
  if request.requested:
    kept = run.checkpoints.latest.latest_step()
    everywhere = " on every process" if jax.process_count() > 1 else ""
    say(f"interrupted ({request.signal_name}) at step {step} of {run.num_steps}; "
        + (f"the checkpoint of step {kept} is in {workdir / 'checkpoints'}: run the same "
           f"command{everywhere} to resume from it" if kept is not None else "no checkpoint "
           f"was written yet: run the same command{everywhere} to start again"))
    raise Interrupted
  if stop:
    say(f"stopped early at step {step} (epoch {step / run.steps_per_epoch:.1f}): the "
        f"validation loss improved by less than {config.train.min_improvement:.0%} in "
        f"{config.train.patience_epochs} epochs")
  _say_curve(workdir)
  say(f"done: step {step}; checkpoints in {workdir / 'checkpoints'}, best in "
      f"{workdir / 'best'}, logs in {workdir / 'metrics.jsonl'} and "
      f"{workdir / 'tensorboard'}")
  return last
