"""Writing files and folders so that no reader, and no crash, ever meets half of one.

Everything urn_jax writes for later use (configs, split files, checkpoint file lists,
per-case results, the phantom's NIfTI files, pre-processed cases, ``urn-segment``'s outputs)
is written under a hidden temporary name beside its final path (``temporary_path``) and
renamed over it when complete: a crash leaves the old version or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def temporary_path(path, unique: bool = False) -> Path:
  """The hidden name beside ``path`` that a write goes to before it is renamed:
  ``.<name>.tmp`` and the name's suffix again (so that ``.nii.gz`` still ends it and
  nibabel compresses). ``unique`` adds the process id, for files that several processes
  may be writing at once (pre-processing shared by concurrent runs); without it, a
  temporary left by a killed run has a name the next run can find and remove."""
  path = Path(path)
  tag = f".tmp-{os.getpid()}" if unique else ".tmp"
  suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
  return path.with_name(f".{path.name}{tag}{suffix}")


def _remove(path: Path) -> None:
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path, ignore_errors=True)
  else:
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def replaced_atomically(path, unique: bool = False):
  """Yields the temporary path of ``path`` (``temporary_path``) to write a file or fill a
  folder at; when the block ends without an exception it is renamed over ``path`` (a
  folder already there is removed first), otherwise it is removed."""
  path = Path(path)
  temporary = temporary_path(path, unique)
  _remove(temporary)
  try:
    yield temporary
  except BaseException:
    _remove(temporary)
    raise
  if temporary.is_dir() and path.is_dir():
    shutil.rmtree(path)
  os.replace(temporary, path)


def write_text_atomically(path, text: str) -> Path:
  """Writes ``text`` to ``path`` by way of its temporary name (``replaced_atomically``)."""
  with replaced_atomically(path) as temporary:
    temporary.write_text(text)
  return Path(path)


class Staging:
  """Files that appear together or not at all (``staged``): each is written at the
  temporary path ``path(final)`` returns and renamed when all are written."""

  def __init__(self):
    self.files, self.last = [], []

  def path(self, final, last: bool = False) -> Path:
    """Where to write ``final`` now; ``last``: renamed after the others, so that its
    presence says the whole group is there."""
    (self.last if last else self.files).append(Path(final))
    return temporary_path(final)


@contextlib.contextmanager
def staged():
  """Yields a ``Staging``. When the block ends, every staged file is renamed to its final
  path (those staged with ``last`` at the end); on an exception (Ctrl-C included) the
  temporaries are removed and nothing final is touched."""
  staging = Staging()
  try:
    yield staging
  except BaseException:
    for final in staging.files + staging.last:
      temporary_path(final).unlink(missing_ok=True)
    raise
  for final in staging.files + staging.last:
    os.replace(temporary_path(final), final)
