"""Shared fixtures and helpers: tiny models and data, so the suite stays fast on a 2-core CPU.

Tests that train a model, start a process or take over 10 seconds on 2 cores are marked
``slow``; ``python -m pytest -m "not slow"`` runs the others. The trained runs most tests
read (``tiny_runs``) are trained once per session; a test that changes one works on a copy.
"""

import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

# The suite runs in worker processes (pytest-xdist): on a GPU, each must not take 75 % of its
# memory, as JAX does by default, or the second cannot start.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# XLA's LLVM back end at optimization level 0, here and in every process the tests start:
# the suite's programs are tiny and each runs for a step or two, so compiling is most of
# their time, and it is shorter at level 0 (a tiny launch.py training: about 20 s -> 15 s,
# its loss one float32 rounding apart); the heavy operations, the convolutions, are library
# calls that run about as fast either way. Measured: benchmarks/xla_opt_level.py, whose
# runs name their level in XLA_FLAGS (a level named there stays), in benchmarks/RESULTS.md.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

import jax  # noqa: E402
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import orbax.checkpoint as ocp
import pytest

import urn_jax as U
from urn_jax.training.checkpoints import read_state


_COMPILED = "URN_JAX_TESTS_COMPILED"


def pytest_configure(config):
  """Every command the tests start (``launch.py`` runs, the study, ``urn-segment``,
  ``benchmarks/compile_count.py``) shares one persistent JAX compilation cache for the
  session: a program one of them compiled, the next loads, whichever of pytest-xdist's
  worker processes started it (they inherit the folder the main process made). The tests'
  own processes, whose JAX read its settings on import, compile as usual."""
  shared = os.environ.get(_COMPILED) if os.environ.get("PYTEST_XDIST_WORKER") else None
  if shared is None:
    config.compiled = shared = tempfile.mkdtemp(prefix="urn_jax_compiled_")
    os.environ[_COMPILED] = shared
  os.environ["JAX_COMPILATION_CACHE_DIR"] = shared
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_collection_modifyitems(items):
  """The longest tests (marked ``longest``) first: pytest-xdist hands tests out in order,
  so each worker starts on one of them instead of the suite waiting, at its end, for one
  that a worker took up late."""
  items.sort(key=lambda item: item.get_closest_marker("longest") is None)


def pytest_unconfigure(config):
  if getattr(config, "compiled", None):  # the process that made the folder removes it
    shutil.rmtree(config.compiled, ignore_errors=True)


# XLA on CPU takes about 7x longer to compile parameter initialization with JAX's default
# partitionable threefry (20 s instead of 3 s for a tiny URN). The random bits differ, the
# semantics do not; tests that compare runs make both runs here.
jax.config.update("jax_threefry_partitionable", False)

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(encoder_features=(4, 8), segmentation_features=(4, 8), channels=4)
SIZE = 16


def make_batch(seed=0, batch=4, size=SIZE, available=None):
  rng = np.random.default_rng(seed)
  if available is None:
    available = np.ones((batch, 4), bool)
  return {
      "image": jnp.asarray(rng.normal(size=(batch, size, size, 4)), jnp.float32),
      "available": jnp.asarray(available, bool),
      "label": jnp.asarray(rng.integers(0, 4, size=(batch, size, size)), jnp.int32),
  }


@pytest.fixture
def batch():
  return make_batch()


@pytest.fixture
def tiny_urn():
  return U.URN(**TINY)


# Small NIfTI cases in each data set's naming and orientation.
SHAPE = (40, 36, 12)
NAMES = {  # naming scheme -> file suffix of each modality, and the label
    "2018": dict(flair="_flair", t1="_t1", t1c="_t1ce", t2="_t2", seg="_seg"),
    "2023": dict(flair="-t2f", t1="-t1n", t1c="-t1c", t2="-t2w", seg="-seg"),
}
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS's voxel axes


def _volume(seed, shape=SHAPE, affine=None):
  """A ball of 'brain' with two tissues and a lesion."""
  rng = np.random.default_rng(seed)
  grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
  r = np.sqrt((grid**2).sum(0))
  brain = r < min(shape) * 0.45
  image = np.where(brain, 100 + 50 * (grid[0] > 0) + rng.normal(0, 2, shape), 0)
  label = np.zeros(shape, np.uint8)
  label[(r < 2) & brain] = 1
  label[(r >= 2) & (r < 3) & brain] = 4
  label[(r >= 3) & (r < 4.5) & brain] = 2
  return image.astype(np.float32), label


def _save(data, path, affine=np.eye(4)):
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(data, affine), str(path))


def write_brats_case(root, case_id, scheme="2018", modalities=("flair", "t1", "t1c", "t2"),
                     seed=0, label=True, affine=LPS):
  image, lab = _volume(seed)
  names = NAMES[scheme]
  for i, m in enumerate(modalities):
    _save((image * (1 + 0.1 * i)).astype(np.int16),
          root / case_id / f"{case_id}{names[m]}.nii.gz", affine)
  if label:
    lab = np.where(lab == 4, 3, lab) if scheme == "2023" else lab
    _save(lab, root / case_id / f"{case_id}{names['seg']}.nii.gz", affine)
  return root / case_id


def write_hcp_subject(root, subject, seed=0, spacing=0.7, physical=SHAPE):
  shape = tuple(int(round(n / spacing)) for n in physical)
  image, _ = _volume(seed, shape)
  affine = np.diag([-spacing, spacing, spacing, 1.0])  # HCP's voxel axes are LAS
  for m, rel in {"T1w": "T1w/T1w_acpc_dc_restore_brain.nii.gz",
                 "T2w": "T1w/T2w_acpc_dc_restore_brain.nii.gz"}.items():
    _save(image.astype(np.int16), root / subject / rel, affine)


# Job configs, shrunk.
def load_config(name, arg=""):
  """``configs/<name>.py``'s ``get_config(arg)``."""
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def tiny(config, data, steps=2, **train):
  """``config`` on the cases of ``data`` (``tiny_data``), with tiny networks and slices,
  ``steps`` steps and the ``train`` fields given."""
  config.data.brats_dir = str(data / "brats")
  config.data.hcp_dir = str(data / "hcp")
  config.data.cache_dir = str(data / "cache")
  config.data.n4, config.data.size, config.data.spacing, config.data.workers = False, 16, 1.0, 1
  if config.model.encoder_features:
    config.model.encoder_features = (4, 8)
  if config.model.segmentation_features:
    config.model.segmentation_features = (4, 8)
  config.model.channels = 4
  config.train.max_steps, config.train.eval_every = steps, steps
  config.train.checkpoint_every, config.train.log_every, config.train.eval_slices = steps, 1, 8
  for key, value in train.items():
    setattr(config.train, key, value)
  return config


def _state(workdir, sub="checkpoints"):
  """The training state saved last in ``<workdir>/<sub>``."""
  manager = ocp.CheckpointManager((Path(workdir) / sub).resolve())
  return read_state(manager, manager.latest_step())


def write_pooled_cache(root, preprocess):
  """Two BraTS cases and an HCP subject written under ``root`` and pre-processed with
  ``preprocess`` into ``root/cache``: ``(brats case dirs, hcp case dirs)``."""
  from urn_jax.data.cases import discover_brats, discover_hcp
  from urn_jax.data.preprocess import preprocess_dataset
  for i in range(2):
    write_brats_case(root / "brats", f"Brats18_{i}", seed=i)
  write_hcp_subject(root / "hcp", "100307")
  brats, _ = preprocess_dataset(discover_brats(root / "brats")[0], root / "cache", preprocess,
                                progress=False)
  hcp, _ = preprocess_dataset(discover_hcp(root / "hcp")[0], root / "cache", preprocess,
                              progress=False)
  return brats, hcp


def first_batches(loader, n):
  """The first ``n`` batches of a fresh iterator over ``loader``."""
  iterator = iter(loader)
  return [next(iterator) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """Five BraTS cases and three HCP subjects (``write_brats_case``, ``write_hcp_subject``)."""
  root = tmp_path_factory.mktemp("data")
  for i in range(5):
    write_brats_case(root / "brats", f"Brats18_{i}", seed=i)
  for i in range(3):
    write_hcp_subject(root / "hcp", f"10030{i}", seed=i)
  return root


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory):
  """A cache folder (``data.cache_dir``, ``$URN_JAX_CACHE``) shared by the tests that run
  commands on the phantom, so that its cases are written once."""
  return tmp_path_factory.mktemp("cache")


def with_devices(environment: dict, count: int) -> dict:
  """``environment`` with ``count`` (fake) CPU devices per process, its other XLA flags
  kept."""
  flags = f"{environment.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"
  return dict(environment, XLA_FLAGS=flags.strip())


@pytest.fixture(scope="session")
def command_environment(phantom_cache):
  """The environment of the README's and the study's commands: the session's phantom
  cache (``$URN_JAX_CACHE``) and this suite's random bits. They share their sizes, so the
  programs both compile are compiled once (``pytest_configure``)."""
  return dict(os.environ, URN_JAX_CACHE=str(phantom_cache), JAX_THREEFRY_PARTITIONABLE="0")


@pytest.fixture(scope="session")
def tiny_runs(tiny_data, tmp_path_factory):
  """Tiny runs trained on ``tiny_data`` for two steps, once per session: the pooled
  pre-training, Baseline + MD, URN + MD and URN + MD on the frozen pre-trained encoders;
  ``{"data": ..., name: work directory, "configs": {name: config}}``. Tests that change a
  run copy it first."""
  from urn_jax.training.loop import train_and_evaluate
  root = tmp_path_factory.mktemp("runs")
  runs, configs = {"data": tiny_data}, {}
  for name, arg in (("pretrain", ""), ("baseline_md", "baseline_md"), ("urn_md", "urn_md"),
                    ("urn_md_pretrained", "urn_md_pretrained")):
    config = tiny(load_config("pretrain" if name == "pretrain" else "segment", arg), tiny_data)
    if name == "urn_md_pretrained":
      config.pretrained_workdir = str(runs["pretrain"])
    runs[name] = root / name
    train_and_evaluate(config, runs[name])
    configs[name] = config
  return {**runs, "configs": configs}


# The README's code blocks (tests/test_readme.py runs them; tests/test_study.py runs the
# study's command).
def readme_blocks() -> list[tuple[str, str]]:
  """``(language, code)`` of every fenced block of the README, in order."""
  return re.findall(r"^```(\w+)\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)


def bash_commands(code: str) -> list[str]:
  """The commands of a bash block: continued lines joined, comments dropped."""
  joined = code.replace("\\\n", " ")
  return [line.split("  #")[0].strip() for line in joined.splitlines()
          if line.strip() and not line.strip().startswith("#")]
