"""A training run's logs: ``metrics.jsonl`` (read back by ``urn_jax.evaluation.curves``) and
TensorBoard event files in ``tensorboard/``, written by process 0 only (every process logs the same
means). Each line of ``metrics.jsonl`` carries its ``wall_time`` (seconds since the epoch,
as TensorBoard's events do), so the time a run took can be read back even when a process
was killed before it could say."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax


class MetricsLog:
  """``write(step, metrics)`` appends a line to ``metrics.jsonl`` and a scalar per metric to
  TensorBoard; on any process but 0 it does nothing."""

  def __init__(self, workdir: Path):
    self.active = jax.process_index() == 0
    if self.active:
      from tensorboardX import SummaryWriter  # a heavy import, only for training
      self.writer = SummaryWriter(str(Path(workdir) / "tensorboard"))
      self.file = (Path(workdir) / "metrics.jsonl").open("a")

  def write(self, step: int, metrics: dict):
    if not self.active:
      return
    for name, value in metrics.items():
      self.writer.add_scalar(name, value, step)
    self.file.write(json.dumps({"step": step, **metrics, "wall_time": time.time()}) + "\n")
    self.file.flush()

  def close(self):
    if self.active:
      self.writer.close()
      self.file.close()
