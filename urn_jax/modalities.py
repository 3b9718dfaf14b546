"""The modalities of the paper and the 15 ways some of them can be missing.

The canonical order is the one of the paper's tables: FLAIR, T1, T1c, T2. Every array
in urn_jax with a modality axis (images ``[..., M]``, masks ``[B, M]``) uses it.
"""

from __future__ import annotations

import itertools

import numpy as np

MODALITIES: tuple[str, ...] = ("flair", "t1", "t1c", "t2")
"""Canonical modality order (paper, Tables 1 and 2: F, T1, T1c, T2)."""

MODALITY_LABELS: dict[str, str] = {"flair": "FLAIR", "t1": "T1", "t1c": "T1c", "t2": "T2"}

# Row order of the paper's Table 1 (and of Table 2, which omits the first row).
_PAPER_TABLE1_ROWS = (
    "1111", "1110", "1101", "1011", "0111",
    "0011", "0101", "0110", "1001", "1010", "1100",
    "1000", "0100", "0010", "0001",
)


# Input combinations drawn in Figures 3-5, as in the paper: all, one missing, pairs, single.
FIGURE_MASKS = ("1111", "0111", "0101", "0010", "1000")


def availability_masks(num_modalities: int = len(MODALITIES)) -> np.ndarray:
  """All ``2**M - 1`` non-empty availability masks, as a boolean ``[2**M - 1, M]`` array.

  For the paper's four modalities the rows come in the order of Table 1. The paper has no
  rule for other M; there the order is by number of available modalities (most first),
  then by the mask read as a binary number (largest first), which agrees with Table 1 on
  the full row and on the rows with one modality missing.
  """
  if num_modalities < 1:
    raise ValueError(f"num_modalities must be at least 1, got {num_modalities}")
  if num_modalities == 4:
    rows = [[c == "1" for c in row] for row in _PAPER_TABLE1_ROWS]
    return np.array(rows, dtype=bool)
  rows = [r for r in itertools.product((True, False), repeat=num_modalities) if any(r)]
  rows.sort(key=lambda r: -sum(r))  # stable: keeps the descending binary order within a count
  return np.array(rows, dtype=bool)


def mask_name(mask, modalities: tuple[str, ...] = MODALITIES) -> str:
  """``[True, False, True, False]`` -> ``'FLAIR+T1c'``: a readable name for a mask."""
  names = [MODALITY_LABELS.get(m, m) for m, on in zip(modalities, np.asarray(mask)) if on]
  return "+".join(names) if names else "none"


def mask_key(mask) -> str:
  """``[True, False, True, False]`` -> ``'1010'``: a mask as the paper's table rows spell it
  (and as results files key it)."""
  return "".join("1" if on else "0" for on in np.asarray(mask))


def mask_symbols(mask) -> str:
  """The paper's notation for a row of Table 1: filled circle available, empty missing."""
  return " ".join("\u25cf" if on else "\u25cb" for on in np.asarray(mask))
