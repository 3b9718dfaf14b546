"""The 70/30 split by patient (paper 3.1), fixed once per work directory.

The split is drawn from a seed, written to ``<workdir>/split.json`` and read back whenever
it exists, so every scenario and every rerun sees the same patients. Each data set (BraTS,
HCP) is split on its own, so both halves of a pooled run keep the 70/30 proportion.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from urn_jax.data.cases import DataError

SPLIT_FILE = "split.json"


def make_split(case_ids, seed: int, train_fraction: float = 0.7) -> dict:
  """Deterministic: the same ids (in any order) and seed give the same split."""
  ids = sorted(set(case_ids))
  if len(ids) != len(list(case_ids)):
    raise DataError("case ids must be unique to split by patient")
  order = np.random.default_rng(seed).permutation(len(ids))
  n_train = int(round(train_fraction * len(ids)))
  if len(ids) >= 2:  # both halves non-empty whenever possible
    n_train = min(max(n_train, 1), len(ids) - 1)
  return {"train": sorted(ids[i] for i in order[:n_train]),
          "validation": sorted(ids[i] for i in order[n_train:])}


def load_or_create_split(workdir, datasets: dict, seed: int, train_fraction: float = 0.7):
  """``datasets``: name -> case ids. Returns name -> {"train": [...], "validation": [...]}.

  An existing ``<workdir>/split.json`` is read back and
  checked against the data: a case in the file that the data no longer has is an error
  (the split would silently change); a case the file does not know is left out, with a
  note on stderr.
  """
  path = Path(workdir) / SPLIT_FILE
  if path.exists():
    stored = json.loads(path.read_text())
    split = stored["datasets"]
    for name, ids in datasets.items():
      if name not in split:
        raise DataError(f"split file {path} has no {name!r} split; delete it to re-split")
      known = set(split[name]["train"]) | set(split[name]["validation"])
      missing = sorted(known - set(ids))
      if missing:
        raise DataError(
            f"split file {path} names {len(missing)} {name} case(s) the data does not have "
            f"(first: {missing[0]}); point to the same data, or delete the file to re-split")
      new = sorted(set(ids) - known)
      if new:
        print(f"note: {len(new)} {name} case(s) not in {path} are not used (first: "
              f"{new[0]})", file=sys.stderr)
    return {name: split[name] for name in datasets}
  split = {name: make_split(ids, seed, train_fraction) for name, ids in datasets.items()}
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps({"seed": seed, "train_fraction": train_fraction,
                             "datasets": split}, indent=1))
  tmp.replace(path)
  return split
