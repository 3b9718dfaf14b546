"""From folders (or the built-in phantom) to cached, split cases: what a training job needs.

``prepare_data(brats_dir, hcp_dir, ...)`` discovers the cases, pre-processes them once into
the cache (in parallel, with a progress bar; bad cases are reported and skipped), and splits
each data set by patient into training, validation and (BraTS) test patients, with the split
file kept in the work directory (``urn_jax.data.splits``). BraTS cases without a label
file are reported and left out, for pre-training too, so both stages split the same
patients. With no folder at all it first writes the phantom (``urn_jax.data.phantom``)
into the cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from urn_jax.data.cases import discover_brats, discover_hcp
from urn_jax.errors import DataError
from urn_jax.data.preprocess import PreprocessConfig, preprocess_dataset, report
from urn_jax.data.splits import load_or_create_split


def phantom_folders(cache_dir, num_brats: int, num_hcp: int, seed: int, workers: int = 1):
  """Writes (once) and returns the phantom's BraTS and HCP folders under ``cache_dir``."""
  from urn_jax.data.phantom import VERSION, write_phantom  # nilearn is only needed here
  out = Path(cache_dir) / f"phantom-v{VERSION}-seed{seed}-brats{num_brats}-hcp{num_hcp}"
  return write_phantom(out, num_brats, num_hcp, seed=seed, workers=workers)


def default_cache_dir() -> Path:
  """``$URN_JAX_CACHE``, else ``~/.cache/urn_jax``: shared by runs, so the phantom and the
  pre-processed cases are made once for every scenario."""
  return Path(os.environ.get("URN_JAX_CACHE") or Path.home() / ".cache" / "urn_jax")


def prepare_data(workdir, brats_dir: str = "", hcp_dir: str = "", cache_dir: str = "",
                 use_hcp: bool = True,
                 preprocess: PreprocessConfig = PreprocessConfig(), split_seed: int = 0,
                 train_fraction: float = 0.7, test_fraction: float = 0.2, workers: int = 1,
                 phantom_brats: int = 12,
                 phantom_hcp: int = 6, phantom_seed: int = 0, progress: bool = True):
  """Returns ``{dataset: {"train"|"validation"|"test": [case dirs]}}`` for the data
  sets in use ("brats" and/or "hcp"; ``use_hcp=False`` leaves HCP out). ``cache_dir``
  defaults to ``default_cache_dir()``."""
  cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
  if not brats_dir and not hcp_dir:
    folders = phantom_folders(cache_dir, phantom_brats, phantom_hcp, phantom_seed, workers)
    brats_dir, hcp_dir = str(folders["brats"]), str(folders["hcp"]) if phantom_hcp else ""
  if not use_hcp:
    hcp_dir = ""
  found = {}
  if brats_dir:
    found["brats"] = discover_brats(brats_dir)
  if hcp_dir:
    found["hcp"] = discover_hcp(hcp_dir)
  cached, problems = {}, []
  for name, (cases, discovery_problems) in found.items():
    problems += discovery_problems
    if name == "brats":
      problems += [f"case {c.case_id}: no label file (expected {c.case_id}_seg.nii.gz or "
                   f"{c.case_id}-seg.nii.gz beside its images); BraTS cases are split and "
                   "scored by their labels" for c in cases if c.label_path is None]
      cases = [c for c in cases if c.label_path is not None]
    dirs, preprocessing_problems = preprocess_dataset(cases, cache_dir / "preprocessed",
                                                      preprocess, workers, progress)
    problems += preprocessing_problems
    if not dirs:
      report(problems)
      raise DataError(f"no usable {name} case in {brats_dir if name == 'brats' else hcp_dir}")
    cached[name] = {d.name: d for d in dirs}
  report(problems)
  split = load_or_create_split(workdir, {n: list(c) for n, c in cached.items()}, split_seed,
                               train_fraction, test_fraction)
  result = {name: {part: [cached[name][i] for i in ids] for part, ids in split[name].items()}
            for name in cached}
  for name, parts in result.items():
    print(f"{name}: {len(parts['train'])} training, {len(parts['validation'])} validation "
          f"and {len(parts['test'])} test cases", file=sys.stderr)
  for part in ("train", "validation"):
    if not any(parts[part] for parts in result.values()):
      counts = "; ".join(f"{name}: " + ", ".join(f"{len(ids)} {p}" for p, ids in parts.items())
                         for name, parts in result.items())
      raise DataError(
          f"no {part} case: the usable cases split into {counts}. "
          "Training needs at least one training and one validation patient (2 usable "
          "BraTS cases; 3 or more to also hold out a test patient)")
  return result
