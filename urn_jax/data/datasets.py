"""From folders (or the built-in phantom) to cached, split cases: what a job needs.

``prepare_data(workdir, DataSettings(...))`` discovers the cases, pre-processes them once into
the cache (in parallel, with a progress bar; bad cases are reported and skipped), and splits
each data set by patient into training, validation and (BraTS) test patients, with the split
file kept in the work directory (``urn_jax.data.splits``). BraTS cases without a label
file are reported and left out, for pre-training too, so both stages split the same
patients. With no folder at all it first writes the phantom (``urn_jax.data.phantom``)
into the cache.

A job reads its ``config.data`` through ``DataSettings.from_config`` and
``data_from_config``: training, validation, evaluation, the probes and ``urn-segment``
(``preprocess_settings``) pre-process every case the same way.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
from jax.experimental import multihost_utils

from urn_jax.console import say
from urn_jax.data.cases import discover_brats, discover_hcp
from urn_jax.data.loader import SliceSource
from urn_jax.data.preprocess import PreprocessConfig, preprocess_dataset, report
from urn_jax.data.splits import load_or_create_split, phantom_source
from urn_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """Where a job's cases come from, how they are pre-processed and how they are split.

  ``brats_dir`` and ``hcp_dir`` empty: the phantom (``phantom_*`` cases of its seed,
  version and site: ``urn_jax.data.scanners``), written once into ``cache_dir``
  (default ``default_cache_dir()``). ``use_hcp=False``
  leaves HCP out. The split (``urn_jax.data.splits``): ``test_fraction`` of the BraTS
  patients held out, the rest ``train_fraction`` / the others, drawn from ``split_seed``.
  ``workers``: pre-processing processes."""

  brats_dir: str = ""
  hcp_dir: str = ""
  cache_dir: str = ""
  use_hcp: bool = True
  preprocess: PreprocessConfig = PreprocessConfig()
  split_seed: int = 0
  train_fraction: float = 0.7
  test_fraction: float = 0.2
  workers: int = 1
  phantom_brats: int = 12
  phantom_hcp: int = 6
  phantom_seed: int = 0
  phantom_version: int = 2
  phantom_site: str = "a"

  @classmethod
  def from_config(cls, config, use_hcp: bool | None = None) -> "DataSettings":
    """The settings of a job's ``config.data`` (``use_hcp`` overrides its own)."""
    d = config.data
    return cls(brats_dir=d.brats_dir, hcp_dir=d.hcp_dir, cache_dir=d.cache_dir,
               use_hcp=d.use_hcp if use_hcp is None else use_hcp,
               preprocess=preprocess_settings(config), split_seed=d.split_seed,
               train_fraction=d.train_fraction, test_fraction=d.test_fraction,
               workers=d.workers, phantom_brats=d.phantom_brats,
               phantom_hcp=d.phantom_hcp, phantom_seed=d.phantom_seed,
               phantom_version=d.get("phantom_version", 2),
               phantom_site=d.get("phantom_site", "a"))


def preprocess_settings(config) -> PreprocessConfig:
  """How a case is pre-processed for the model of ``config`` (its ``config.data``): the
  same for training, evaluation and ``urn-segment``."""
  d = config.data
  return PreprocessConfig(n4=d.n4, n4_shrink=d.n4_shrink, spacing=d.spacing, size=d.size)


def phantom_folders(cache_dir, num_brats: int, num_hcp: int, seed: int, workers: int = 1,
                    version: int = 2, site: str = "a"):
  """Writes (once) and returns the phantom's BraTS and HCP folders under ``cache_dir``."""
  from urn_jax.data.phantom import write_phantom  # nilearn is only needed here
  name = f"phantom-v{version}" + ("" if site == "a" else f"-site-{site}")
  out = Path(cache_dir) / f"{name}-seed{seed}-brats{num_brats}-hcp{num_hcp}"
  return write_phantom(out, num_brats, num_hcp, seed=seed, workers=workers, version=version,
                       site=site)


def data_source(settings: DataSettings) -> dict | None:
  """Where the patients of ``settings`` come from, as the split file records it: the
  phantom's version and seed, or ``None`` for folders (``urn_jax.data.splits``)."""
  if settings.brats_dir or settings.hcp_dir:
    return None
  return phantom_source(settings.phantom_version, settings.phantom_seed,
                        settings.phantom_site)


def default_cache_dir() -> Path:
  """``$URN_JAX_CACHE``, else ``~/.cache/urn_jax``: shared by runs, so the phantom and the
  pre-processed cases are made once for every scenario."""
  return Path(os.environ.get("URN_JAX_CACHE") or Path.home() / ".cache" / "urn_jax")


def _folders(settings: DataSettings, cache_dir: Path) -> dict:
  """``{"brats": folder, "hcp": folder}`` of the data sets in use."""
  brats_dir, hcp_dir = settings.brats_dir, settings.hcp_dir
  if not brats_dir and not hcp_dir:
    folders = phantom_folders(cache_dir, settings.phantom_brats, settings.phantom_hcp,
                              settings.phantom_seed, settings.workers,
                              settings.phantom_version, settings.phantom_site)
    brats_dir = str(folders["brats"])
    hcp_dir = str(folders["hcp"]) if settings.phantom_hcp else ""
  folders = {"brats": brats_dir, "hcp": hcp_dir if settings.use_hcp else ""}
  return {name: folder for name, folder in folders.items() if folder}


def cached_cases(settings: DataSettings, progress: bool = True) -> dict:
  """``{dataset: {case id: cached case folder}}``, every usable case pre-processed (the
  phantom written first when there is no folder); the others are reported. Not split."""
  cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
  cached, problems = {}, []
  for name, folder in _folders(settings, cache_dir).items():
    cases, discovery_problems = (discover_brats if name == "brats" else discover_hcp)(folder)
    problems += discovery_problems
    if name == "brats":
      problems += [f"case {c.case_id}: no label file (expected {c.case_id}_seg.nii.gz or "
                   f"{c.case_id}-seg.nii.gz beside its images); BraTS cases are split and "
                   "scored by their labels" for c in cases if c.label_path is None]
      cases = [c for c in cases if c.label_path is not None]
    dirs, preprocessing_problems = preprocess_dataset(
        cases, cache_dir / "preprocessed", settings.preprocess, settings.workers, progress)
    problems += preprocessing_problems
    if not dirs:
      report(problems)
      raise DataError(f"no usable {name} case in {folder}")
    cached[name] = {d.name: d for d in dirs}
  report(problems)
  return cached


def prepare_data(workdir, settings: DataSettings = DataSettings(), progress: bool = True):
  """Returns ``{dataset: {"train"|"validation"|"test": [case dirs]}}`` for the data sets in
  use ("brats" and/or "hcp"), every case pre-processed and the split kept in ``workdir``."""
  cached = cached_cases(settings, progress)
  split = load_or_create_split(workdir, {n: list(c) for n, c in cached.items()},
                               settings.split_seed, settings.train_fraction,
                               settings.test_fraction, data_source(settings))
  result = {name: {part: [cached[name][i] for i in ids] for part, ids in split[name].items()}
            for name in cached}
  for name, parts in result.items():
    say(f"{name}: {len(parts['train'])} training, {len(parts['validation'])} validation "
        f"and {len(parts['test'])} test cases")
  for part in ("train", "validation"):
    if not any(parts[part] for parts in result.values()):
      counts = "; ".join(f"{name}: " + ", ".join(f"{len(ids)} {p}" for p, ids in parts.items())
                         for name, parts in result.items())
      raise DataError(
          f"no {part} case: the usable cases split into {counts}. "
          "Training needs at least one training and one validation patient (2 usable "
          "BraTS cases; 3 or more to also hold out a test patient)")
  return result


def data_from_config(config, workdir, use_hcp: bool | None = None) -> dict:
  """``prepare_data`` with a job config's ``data`` settings (``use_hcp`` overrides). With
  several processes, process 0 writes the phantom, the pre-processing cache and the split
  first; the others wait for it, then find everything written and only read."""
  settings = DataSettings.from_config(config, use_hcp)
  if jax.process_count() == 1:
    return prepare_data(workdir, settings)
  if jax.process_index() == 0:
    data = prepare_data(workdir, settings)
    multihost_utils.sync_global_devices("urn_jax: data prepared by process 0")
    return data
  multihost_utils.sync_global_devices("urn_jax: data prepared by process 0")
  return prepare_data(workdir, settings)


def slice_sources(config, workdir) -> tuple[SliceSource, SliceSource]:
  """Slices of the training and validation patients; the test patients are not touched."""
  data = data_from_config(config, workdir)
  labels = config.job == "segment"
  part = lambda name: [c for dataset in data.values() for c in dataset[name]]
  return (SliceSource(part("train"), labels, config.data.skip_empty),
          SliceSource(part("validation"), labels, config.data.skip_empty))


def held_out_patients(config, workdir) -> list[Path]:
  """The BraTS patients held out for testing by the split of ``workdir``: the only ones
  evaluation and the probes score."""
  cases = data_from_config(config, workdir, use_hcp=False)["brats"]["test"]
  if not cases:
    raise DataError(f"the split of {workdir} has no test patient (data.test_fraction "
                    f"{config.data.test_fraction}, or too few BraTS cases); evaluation "
                    "scores only patients held out from training and validation")
  return cases

