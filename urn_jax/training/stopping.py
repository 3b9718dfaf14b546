"""Stopping a training run cleanly on Ctrl-C (SIGINT) or SIGTERM (a cluster's preemption),
on one process or on all of a multi-process run together."""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from urn_jax.console import say


class StopRequest:
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
    say(f"\n{self.signal_name}: stopping after this step, with a checkpoint (Ctrl-C again "
        "stops at once)")

  def agreed(self, step: int | None = None, every: int = 1) -> bool:
    """Whether this process, or any other of the run, has been asked to stop. With several
    processes this is a collective, asked by every process at the same steps: at multiples
    of ``every`` only (``step`` None: now), where the training loop waits for its devices
    anyway, so the steps between stay asynchronous. A signal to one host then stops them
    all after the same step, each with its share of the same checkpoint."""
    if jax.process_count() == 1:
      return self.requested
    if step is not None and step % every:
      return False
    anyone = bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))
    if anyone and not self.requested:
      self.requested, self.signal_name = True, "another process's stop request"
    return anyone

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)
    self.previous = {}
