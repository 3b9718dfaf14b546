"""Training: ``train_and_evaluate(config, workdir)`` for pre-training and segmentation.

One loop serves both stages and every scenario of the paper; the config says which
(``configs/pretrain.py``, ``configs/segment.py``). What it does:

- data: ``prepare_data`` (the phantom when no folder is given), a seeded split kept in the
  work directory, a grain loader of axial slices;
- devices: a ``Mesh`` with one ``data`` axis over every device of every host; batches are
  sharded on it, parameters replicated; the batch size is global;
- checkpoints (orbax, ``urn_jax.checkpoints``): the latest ``keep_checkpoints`` in
  ``checkpoints/`` with the data iterator's position and the loop's progress, and the best
  by validation loss in ``best/``, each with a list of its files to detect later damage.
  Started again with the same command, a run resumes from its last checkpoint and ends
  with the same parameters as an uninterrupted run (every step's random key is derived
  from the step number); Ctrl-C or SIGTERM finishes the step in progress, saves it and
  ends with a line saying so (``_StopRequest``);
- optimizer: Adam with the learning-rate schedule of ``config.train`` (``schedule``,
  ``learning_rate``, ``warmup_fraction``, ``end_lr_fraction``; ``urn_jax.optimizer``) laid
  over the run's number of steps;
- validation: the training objective on the validation patients' slices, and for
  segmentation the Dice of WT, TC and ET with all modalities, every ``eval_every`` steps;
  the test patients of the split are never touched;
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

import functools
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from urn_jax.checkpoints import (CheckpointMismatch, Checkpoints, check_signature,
                                 find_checkpoint, restore_state, signature)
from urn_jax.config_checks import DTYPES as DTYPE_NAMES
from urn_jax.config_checks import check_training_config, pretrained_encoders
from urn_jax.data.datasets import prepare_data
from urn_jax.data.loader import SliceSource, make_loader
from urn_jax.files import write_text_atomically
from urn_jax.data.preprocess import PreprocessConfig
from urn_jax.jobs import ConfigError
from urn_jax.modalities import MODALITIES
from urn_jax.optimizer import learning_rate_schedule
from urn_jax.train_step import (create_train_state, eval_step, keep_mask, pretrain_objective,
                                pretrain_step, segment_objective, segment_step)
from urn_jax.urn import PRETRAINED_MODULES, URN, Baseline

DTYPES = {name: jnp.dtype(name) for name in DTYPE_NAMES}


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
  """Training stopped on Ctrl-C or SIGTERM, and has said where it can resume from."""


def build_model(config):
  """The network a config describes (``config.model``, ``config.job``, ``config.variant``)."""
  m = config.model
  if m.dtype not in DTYPES:
    raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {m.dtype!r}")
  dtype = DTYPES[m.dtype]
  if m.kind == "baseline":
    return Baseline(len(MODALITIES), tuple(m.segmentation_features), dtype=dtype)
  if m.kind != "urn":
    raise ConfigError(f"model.kind must be 'urn' or 'baseline', got {m.kind!r}")
  segment = config.job == "segment"
  return URN(len(MODALITIES), tuple(m.encoder_features), m.channels, m.fusion,
             synthesis=not segment,
             segmentation_features=tuple(m.segmentation_features) if segment else None,
             stacking=m.stacking,
             freeze_encoders=pretrained_encoders(config) == "frozen", dtype=dtype)


def _theta(config):
  return None if config.train.theta < 0 else float(config.train.theta)


def _objective_settings(config) -> dict:
  t = config.train
  if config.job == "pretrain":
    return dict(variance_weight=t.variance_weight, reconstruction=t.reconstruction)
  return dict(variance_weight=t.variance_weight, loss=t.loss)  # checked: config_checks


def _train_step(config):
  step = pretrain_step if config.job == "pretrain" else segment_step
  return functools.partial(step, theta=_theta(config), min_keep=config.train.min_keep,
                           **_objective_settings(config))


def schedule_from_config(config, num_steps: int):
  """The learning-rate schedule of ``config.train`` for a run of ``num_steps`` steps."""
  t = config.train
  warmup = int(round(t.warmup_fraction * num_steps))
  return learning_rate_schedule(t.schedule, t.learning_rate, num_steps, warmup,
                                t.end_lr_fraction)


def evaluate(config, model, state, source: SliceSource, to_device) -> dict:
  """Validation metrics on ``eval_slices`` evenly spaced slices: ``validation_loss``, the
  training objective with the modality dropout of training drawn from a fixed key (the
  same inputs at every evaluation), and for segmentation the Dice of WT, TC and ET with
  every modality the slices have, pooled over the slices (``validation_dice_WT``, ...)."""
  count = min(config.train.eval_slices, len(source))
  indices = np.linspace(0, len(source) - 1, count).astype(int)
  batch_size = config.train.batch_size
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  objective = _objective(config)
  theta, losses, counts = _theta(config), [], []
  for n, start in enumerate(range(0, count - batch_size + 1, batch_size)):
    records = [source[int(i)] for i in indices[start:start + batch_size]]
    batch = to_device({k: np.stack([r[k] for r in records]) for k in records[0]})
    keep = keep_mask(jax.random.key(10_000 + n), batch["available"], theta,
                     config.train.min_keep)
    loss, metrics = eval_step(model, variables, batch, keep, objective)
    losses.append(loss)
    if config.job == "segment":
      if theta is not None:  # the Dice is of every modality the slices have, not of `keep`
        metrics = eval_step(model, variables, batch, batch["available"].astype(bool),
                            objective)[1]
      counts.append(metrics["region_counts"])
  result = {"validation_loss": float(np.mean(jax.device_get(losses)))}
  if counts:
    both, predicted, true = np.sum(jax.device_get(counts), axis=0).T.astype(np.float64)
    for region, i, p, t in zip(("WT", "TC", "ET"), both, predicted, true):
      result[f"validation_dice_{region}"] = float(2 * i / (p + t)) if p + t else 1.0
  return result


@functools.lru_cache(maxsize=None)
def _objective_for(job: str, settings: tuple):
  """One ``functools.partial`` per job and settings, so ``eval_step`` compiles once."""
  objective = pretrain_objective if job == "pretrain" else segment_objective
  return functools.partial(objective, **dict(settings))


def _objective(config):
  return _objective_for(config.job, tuple(sorted(_objective_settings(config).items())))


def find_pretrained(pretrained_workdir):
  """Fails early, with what to do, when a pre-training run has no checkpoint."""
  try:
    return find_checkpoint(pretrained_workdir)
  except FileNotFoundError:
    raise FileNotFoundError(
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
  print(f"encoders restored from {directory} (step {step})", file=sys.stderr)
  return state.replace(params=params, batch_stats=batch_stats)


def data_from_config(config, workdir, use_hcp=None):
  """``prepare_data`` with a job config's ``data`` settings (``use_hcp`` overrides):
  ``{dataset: {"train" | "validation" | "test": [case dirs]}}``."""
  d = config.data
  preprocess = PreprocessConfig(n4=d.n4, n4_shrink=d.n4_shrink, spacing=d.spacing, size=d.size)
  return prepare_data(workdir, d.brats_dir, d.hcp_dir, d.cache_dir,
                      use_hcp=d.use_hcp if use_hcp is None else use_hcp,
                      preprocess=preprocess, split_seed=d.split_seed,
                      train_fraction=d.train_fraction,
                      # Configs from before the test split have no test_fraction; their
                      # two-way split file is then refused with a message that says why.
                      test_fraction=d.get("test_fraction", 0.2), workers=d.workers,
                      phantom_brats=d.phantom_brats, phantom_hcp=d.phantom_hcp,
                      phantom_seed=d.phantom_seed)


def _data(config, workdir):
  """Slices of the training and validation patients; the test patients are not touched."""
  data = data_from_config(config, workdir)
  labels = config.job == "segment"
  part = lambda name: [c for dataset in data.values() for c in dataset[name]]
  skip_empty = config.data.skip_empty
  return (SliceSource(part("train"), labels, skip_empty),
          SliceSource(part("validation"), labels, skip_empty))


def _mean_metrics(history):
  return {k: float(np.mean([float(h[k]) for h in history])) for k in history[0]}


def _keep_trained_config(config, workdir: Path):
  """Refuses, before anything is written, a config whose model differs from the one already
  trained in ``workdir`` (its ``config.json`` next to checkpoints): overwriting that file
  would leave checkpoints that no longer load. ``CheckpointMismatch`` names the fields."""
  stored = workdir / "config.json"
  checkpoints = workdir / "checkpoints"
  if stored.is_file() and checkpoints.is_dir() and any(checkpoints.iterdir()):
    try:
      trained = ml_collections.ConfigDict(json.loads(stored.read_text()))
    except ValueError as e:
      raise ConfigError(f"{stored} is not readable JSON ({e}); restore it or use a new "
                        "--workdir") from None
    check_signature(signature(trained), signature(config), workdir)


class _StopRequest:
  """Ctrl-C (SIGINT) or SIGTERM (a cluster's preemption) during training: the step in
  progress finishes, a checkpoint of it is saved and the loop ends, instead of a
  KeyboardInterrupt landing inside an asynchronous orbax save. A second Ctrl-C stops at
  once (from the last checkpoint saved)."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.requested, self.signal_name, self.previous = False, "Ctrl-C", {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
      # A signal the process was told to ignore (a background job's SIGINT) stays ignored.
      self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS
                       if signal.getsignal(s) is not signal.SIG_IGN}
    return self

  def _handle(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True
    self.signal_name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    print(f"\n{self.signal_name}: stopping after this step, with a checkpoint (Ctrl-C again "
          "stops at once)", file=sys.stderr)

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)
    self.previous = {}


def train_and_evaluate(config, workdir):
  """Trains as ``config`` says, in ``workdir``; returns the last logged metrics."""
  workdir = Path(workdir)
  t = config.train
  check_training_config(config)
  if t.batch_size % jax.device_count():
    raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by the "
                     f"{jax.device_count()} devices")
  model = build_model(config)
  _keep_trained_config(config, workdir)
  pretrained = bool(pretrained_encoders(config))
  if pretrained:
    find_pretrained(config.pretrained_workdir)  # fail before the data is prepared
  workdir.mkdir(parents=True, exist_ok=True)
  train_source, validation_source = _data(config, workdir)
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
  schedule = schedule_from_config(config, num_steps)
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
  train_step = _train_step(config)
  # Written only now, when everything it describes has been checked and loaded: a mistaken
  # command leaves a trained work directory's files as they were.
  if jax.process_index() == 0:
    write_text_atomically(workdir / "config.json", config.to_json_best_effort(indent=1))

  from tensorboardX import SummaryWriter  # a heavy import, only for training
  writer = SummaryWriter(str(workdir / "tensorboard"))
  log = (workdir / "metrics.jsonl").open("a")
  bar = tqdm(total=num_steps, initial=step, desc=config.job, unit="step", file=sys.stderr,
             dynamic_ncols=True)
  history, last, tick = [], {}, time.perf_counter()
  stop, request = False, _StopRequest().__enter__()  # left in the finally clause below
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
        last.update(evaluate(config, model, state, validation_source, to_device))
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
      for name, value in last.items():
        writer.add_scalar(name, value, step)
      log.write(json.dumps({"step": step, **last}) + "\n")
      log.flush()
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
    writer.close()
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
