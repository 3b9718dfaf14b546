"""What a job tells its user on the terminal: lines on stderr and progress bars.

With several processes (hosts) every one of them runs the same job, and only process 0
speaks, as flax's examples do (``just_logging=jax.process_index() > 0``): the others would
print the same lines again. Errors are raised on every process, never silenced here.
"""

from __future__ import annotations

import sys

import jax
from tqdm.auto import tqdm


def is_main_process() -> bool:
  """Whether this is process 0, the one that prints and writes files."""
  return jax.process_index() == 0


def say(message: str) -> None:
  """Prints ``message`` on stderr, from process 0 only, without breaking a progress bar."""
  if is_main_process():
    tqdm.write(message, file=sys.stderr)


def progress(iterable=None, **kwargs):
  """A tqdm progress bar on stderr, drawn by process 0 only (``disable=True`` hides it
  there too)."""
  kwargs["disable"] = kwargs.get("disable", False) or not is_main_process()
  kwargs.setdefault("dynamic_ncols", True)
  return tqdm(iterable, file=sys.stderr, **kwargs)
