"""Training: ``train_and_evaluate(config, workdir)``, the loop of pre-training and segmentation.

One loop serves both stages and every scenario of the paper; the config says which
(``configs/pretrain.py``, ``configs/segment.py``), read by ``urn_jax.from_config``:

- data: the phantom when no folder is given, a seeded split kept in the work directory, a
  grain loader of axial slices;
- devices: a ``Mesh`` with one ``data`` axis over every device of every host; batches are
  sharded on it, parameters replicated; the batch size is global; only process 0 writes;
- checkpoints (``urn_jax.checkpoints``): the latest ``keep_checkpoints`` with the data
  iterator's position and the loop's progress, and the best by validation loss. Started
  again with the same command, a run resumes from its last checkpoint and ends with the
  same parameters as an uninterrupted run (every step's key is derived from the step
  number); Ctrl-C or SIGTERM finishes the step in progress, saves it and ends with a line
  saying so (``urn_jax.stopping``);
- validation (``urn_jax.validation``) every ``eval_every`` steps;
- stops: after ``num_epochs`` epochs or ``max_steps``; earlier on a plateau, when the
  validation loss has not improved by ``min_improvement`` (relative) for ``patience_epochs``
  epochs; a NaN or infinite loss stops the run with ``TrainingDiverged`` and keeps the last
  good checkpoint;
- checks first: the whole config (``urn_jax.config_checks``), then that it describes the
  model already trained in ``workdir`` if there is one, then the data and checkpoints;
  only when all is well are files written, so a mistaken command leaves a trained work
  directory as it was;
- logs: a progress bar, TensorBoard event files in ``tensorboard/``, ``metrics.jsonl``, and
  the resolved config in ``config.json``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from urn_jax import from_config
from urn_jax.checkpoints import (Checkpoints, find_pretrained, keep_trained_config,
                                 load_pretrained, signature)
from urn_jax.config_checks import check_training_config
from urn_jax.data.loader import make_loader
from urn_jax.errors import ConfigError, Interrupted, TrainingDiverged
from urn_jax.files import write_text_atomically
from urn_jax.metrics_log import MetricsLog
from urn_jax.modalities import MODALITIES
from urn_jax.stopping import StopRequest
from urn_jax.train_step import create_train_state
from urn_jax.validation import validate


def _mean_metrics(history):
  return {k: float(np.mean([float(h[k]) for h in history])) for k in history[0]}


def train_and_evaluate(config, workdir):
  """Trains as ``config`` says, in ``workdir``; returns the last logged metrics."""
  workdir = Path(workdir)
  t = config.train
  check_training_config(config)
  if t.batch_size % jax.device_count():
    raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by the "
                     f"{jax.device_count()} devices")
  model = from_config.build_model(config)
  keep_trained_config(config, workdir)
  pretrained = bool(from_config.pretrained_encoders(config))
  if pretrained:
    find_pretrained(config.pretrained_workdir)  # fail before the data is prepared
  workdir.mkdir(parents=True, exist_ok=True)
  train_source, validation_source = from_config.slice_sources(config, workdir)
  steps_per_epoch = max(len(train_source) // t.batch_size, 1)
  num_steps = min(t.max_steps, int(math.ceil(t.num_epochs * steps_per_epoch)))

  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  print(f"{jax.device_count()} {jax.devices()[0].platform} device(s) on "
        f"{jax.process_count()} host(s); global batch {t.batch_size}; {num_steps} steps "
        f"({len(train_source)} training slices)", file=sys.stderr)
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  to_device = lambda batch: {k: jax.make_array_from_process_local_data(batch_sharding, v)
                             for k, v in batch.items()}
  iterator = iter(make_loader(train_source, t.batch_size // jax.process_count(), config.seed,
                              worker_count=config.data.loader_workers,
                              shard_index=jax.process_index(),
                              shard_count=jax.process_count()))
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  size = config.data.size
  schedule = from_config.schedule(config, num_steps)
  state = create_train_state(model, init_key, (t.batch_size, size, size, len(MODALITIES)),
                             schedule)
  if pretrained:
    state = load_pretrained(state, config.pretrained_workdir)
  state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))

  checkpoints = Checkpoints(workdir, config)
  state, progress = checkpoints.restore(state, iterator, signature(config))
  if progress is None:
    progress = {"signature": signature(config), "best": None, "plateau_loss": None,
                "plateau_step": 0, "stopped_early": False}
  progress.setdefault("plateau_loss", progress["best"])  # checkpoints of older versions
  progress.setdefault("plateau_step", int(state.step))
  patience_steps = t.patience_epochs * steps_per_epoch
  step = int(state.step)
  if step:
    print(f"resuming from step {step} in {workdir / 'checkpoints'}", file=sys.stderr)
  if step >= num_steps or progress["stopped_early"]:
    print(f"nothing to do: {workdir} finished training at step {step}", file=sys.stderr)
    return {}
  train_step = from_config.train_step(config)
  # Written only now, when everything it describes has been checked and loaded: a mistaken
  # command leaves a trained work directory's files as they were.
  if jax.process_index() == 0:
    write_text_atomically(workdir / "config.json", config.to_json_best_effort(indent=1))

  log = MetricsLog(workdir)
  bar = tqdm(total=num_steps, initial=step, desc=config.job, unit="step", file=sys.stderr,
             dynamic_ncols=True)
  history, last, tick = [], {}, time.perf_counter()
  stop, request = False, StopRequest().__enter__()  # left in the finally clause below
  try:
    while step < num_steps and not stop and not request.requested:
      batch = to_device(next(iterator))
      state, metrics = train_step(state, batch, jax.random.fold_in(step_key, step))
      step += 1
      history.append(metrics)
      evaluate_now = step % t.eval_every == 0 or step == num_steps
      save_now = step % t.checkpoint_every == 0 or step == num_steps or evaluate_now
      if step % t.log_every and not save_now:
        continue
      last = _mean_metrics(jax.device_get(history))
      if not all(math.isfinite(v) for v in last.values()):
        kept = checkpoints.latest.latest_step()
        raise TrainingDiverged(
            f"the loss became {last['loss']} by step {step}; stopped without saving. The "
            f"last good checkpoint ({'step ' + str(kept) if kept is not None else 'none'}) is "
            f"in {workdir / 'checkpoints'}; try a lower train.learning_rate")
      elapsed = time.perf_counter() - tick
      last["slices_per_second"] = len(history) * t.batch_size / elapsed
      last["learning_rate"] = float(schedule(step - 1))
      last["epoch"] = step / steps_per_epoch
      history, tick = [], time.perf_counter()
      if evaluate_now:
        last.update(validate(config, model, state, validation_source, to_device))
        loss = last["validation_loss"]
        if progress["best"] is None or loss < progress["best"]:
          progress["best"] = loss
          checkpoints.save_best(step, state, progress, loss)
        # A plateau: no improvement by min_improvement (relative) for patience_epochs.
        if progress["plateau_loss"] is None or (
            loss < progress["plateau_loss"] * (1 - t.min_improvement)):
          progress["plateau_loss"], progress["plateau_step"] = loss, step
        stop = bool(t.patience_epochs) and step - progress["plateau_step"] >= patience_steps
        progress["stopped_early"] = stop
      log.write(step, last)
      bar.set_postfix({k: f"{v:.4g}" for k, v in last.items()
                       if k in ("loss", "validation_loss", "validation_dice_WT",
                                "slices_per_second")})
      bar.update(step - bar.n)
      if save_now or stop:
        checkpoints.save(step, state, iterator, progress)
    if request.requested and step < num_steps and checkpoints.latest.latest_step() != step:
      checkpoints.save(step, state, iterator, progress)  # nothing done is lost
  except KeyboardInterrupt:
    request.requested = True  # a second Ctrl-C: stop at once, with the last checkpoint
  finally:
    request.__exit__()
    bar.close()
    log.close()
    checkpoints.wait()
  if request.requested:
    kept = checkpoints.latest.latest_step()
    print(f"interrupted ({request.signal_name}) at step {step} of {num_steps}; "
          + (f"the checkpoint of step {kept} is in {workdir / 'checkpoints'}: run the same "
             "command to resume from it" if kept is not None else "no checkpoint was written "
             "yet: run the same command to start again"), file=sys.stderr)
    raise Interrupted
  if stop:
    print(f"stopped early at step {step} (epoch {step / steps_per_epoch:.1f}): the "
          f"validation loss improved by less than {t.min_improvement:.0%} in "
          f"{t.patience_epochs} epochs", file=sys.stderr)
  print(f"done: step {step}; checkpoints in {workdir / 'checkpoints'}, best in "
        f"{workdir / 'best'}, logs in {workdir / 'metrics.jsonl'} and "
        f"{workdir / 'tensorboard'}", file=sys.stderr)
  return last
