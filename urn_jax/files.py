"""Writing a file so that no reader, and no crash, ever leaves half of it."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomically(path, text: str) -> Path:
  """Writes ``text`` under a hidden temporary name beside ``path`` (``.<name>.tmp``), then
  renames it over ``path``: a crash leaves the old file or the new one, never half of one."""
  path = Path(path)
  temporary = path.with_name(f".{path.name}.tmp")
  temporary.write_text(text)
  os.replace(temporary, path)
  return path
