"""The split by patient into training, validation and test, fixed once per work directory.

The paper splits BraTS's labelled cases 70/30 into training and validation ("hyperparameter
tuning", 3.1) and reports on BraTS's own validation set, scored by the challenge's online
system: patients that chose nothing. We have no such outside set, so a ``test_fraction`` of
the BraTS patients is held out first, and the paper's 70/30 is drawn from the rest. The
validation patients choose the checkpoint (``best/``), stop training early and tune every
recipe; the test patients are only scored (``urn_jax.evaluation.evaluate``). HCP subjects have no
labels and are never scored, so HCP is split 70/30 with no test part.

The split is drawn from a seed, written to ``<workdir>/split.json`` and read back whenever
it exists, so every scenario and every rerun sees the same patients. The file also records
where the patients came from (``source``: the phantom's version, seed and site, or ``None``
for folders of real data), and a rerun whose data come from elsewhere is refused: the
phantom's case ids are the same for every seed, so only the record tells its patients apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from urn_jax.console import say
from urn_jax.errors import DataError
from urn_jax.files import write_text_atomically

SPLIT_FILE = "split.json"
PARTS = ("train", "validation", "test")
# Data sets whose patients are scored, and so need a test part of their own.
SCORED_DATASETS = ("brats",)


def _check_fraction(name: str, value: float, upper: float = 1.0):
  if not 0.0 <= value < upper:
    raise DataError(f"{name} must be in [0, {upper}), got {value}")


def make_split(case_ids, seed: int, train_fraction: float = 0.7,
               test_fraction: float = 0.0) -> dict:
  """``{"train": [...], "validation": [...], "test": [...]}``, sorted ids, disjoint.

  ``round(test_fraction * n)`` patients are held out for testing (at least one when the
  fraction is positive and there are 3 or more patients), then ``train_fraction`` of the
  rest train and the others validate; validation and training are each non-empty whenever
  possible. Deterministic: the same ids (in any order) and seed give the same split.
  """
  _check_fraction("train_fraction", train_fraction, upper=1.0 + 1e-9)
  _check_fraction("test_fraction", test_fraction)
  ids = sorted(set(case_ids))
  if len(ids) != len(list(case_ids)):
    raise DataError("case ids must be unique to split by patient")
  order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
  n_test = int(round(test_fraction * len(ids)))
  if test_fraction > 0 and len(ids) >= 3:
    n_test = min(max(n_test, 1), len(ids) - 2)
  rest = order[n_test:]
  n_train = int(round(train_fraction * len(rest)))
  if len(rest) >= 2:
    n_train = min(max(n_train, 1), len(rest) - 1)
  return {"train": sorted(rest[:n_train]), "validation": sorted(rest[n_train:]),
          "test": sorted(order[:n_test])}


def _check_source(path: Path, recorded, source) -> None:
  """``source`` (this run's) against the one ``path`` recorded; ``recorded`` is ``...``
  when the file predates the record."""
  if recorded is ...:
    if source is not None:
      say(f"note: {path} does not record which phantom its patients came from (written by "
          "an older urn_jax); it is used as it is")
    return
  if recorded != source:
    def described(s):
      return ("folders of real data" if s is None else
              f"the phantom version {s.get('version')}, seed {s.get('seed')}"
              + (f", site {s['site']}" if "site" in s else ""))
    raise DataError(f"split file {path} was written for {described(recorded)}, but this run's "
                    f"data are {described(source)}: its patients are other patients. Train "
                    "in a new --workdir (or give the data it was made for)")


def phantom_source(version: int, seed: int, site: str = "a") -> dict:
  """The ``source`` record of the built-in phantom's patients (the site only when it is not
  the default "a", so that files written before there were sites still match)."""
  return {"version": int(version), "seed": int(seed), **({"site": site} if site != "a" else {})}


def load_or_create_split(workdir, datasets: dict, seed: int, train_fraction: float = 0.7,
                         test_fraction: float = 0.2, source: dict | None = None):
  """``datasets``: name -> case ids. Returns name -> {"train", "validation", "test": ids}.

  ``test_fraction`` applies to ``SCORED_DATASETS``; the others get an empty test part.
  An existing ``<workdir>/split.json`` is read back and checked against the data: a case
  in the file that the data no longer has (removed, or unusable now) is left out, and a
  case the file does not know is not used, each with a note on stderr; no patient ever
  moves from one part to another, so fixing or removing a case never strands the file.
  A file written before there was a test part is an error that says what to do, never
  re-split silently: its validation patients chose checkpoints and cannot become test
  patients. ``source``: where the patients come from (``phantom_source``, or ``None`` for
  folders), recorded in the file and checked against it (module docstring).
  """
  path = Path(workdir) / SPLIT_FILE
  if path.exists():
    try:
      stored = json.loads(path.read_text())
      split = stored["datasets"]
    except (ValueError, KeyError, TypeError):
      raise DataError(f"split file {path} is not a split urn_jax wrote (expected JSON with "
                      "'datasets'); delete it to re-split") from None
    _check_source(path, stored.get("source", ...), source)
    for name, ids in datasets.items():
      if name not in split:
        raise DataError(f"split file {path} has no {name!r} split; delete it to re-split")
      if "test" not in split[name]:
        raise DataError(
            f"split file {path} has only training and validation patients (written by an "
            "older urn_jax); evaluation now scores held-out test patients, which that "
            "split cannot provide. Train in a new --workdir (or delete the file and "
            "retrain: the patients are drawn anew)")
      known = set().union(*(split[name][part] for part in PARTS))
      missing = sorted(known - set(ids))
      if missing:
        say(f"note: {len(missing)} {name} case(s) of {path} are missing or unusable now and "
            f"left out; the others keep their parts (first: {missing[0]})")
      new = sorted(set(ids) - known)
      if new:
        say(f"note: {len(new)} {name} case(s) not in {path} are not used (first: {new[0]})")
    return {name: {part: [i for i in split[name][part] if i in set(ids)] for part in PARTS}
            for name, ids in datasets.items()}
  split = {name: make_split(ids, seed, train_fraction,
                            test_fraction if name in SCORED_DATASETS else 0.0)
           for name, ids in datasets.items()}
  path.parent.mkdir(parents=True, exist_ok=True)
  write_text_atomically(path, json.dumps({"seed": seed, "train_fraction": train_fraction,
                                          "test_fraction": test_fraction, "source": source,
                                          "datasets": split}, indent=1))
  return split
