"""Pure train steps: they learn, they freeze what is frozen, they compile once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, make_batch

import urn_jax as U

ROOT = Path(__file__).resolve().parents[1]


def _learnable_batch():
  b = make_batch()
  image = b["image"]
  b["label"] = (jnp.where(image[..., 0] > 0.5, 1, 0)
                + jnp.where(image[..., 2] > 0.8, 2, 0)).astype(jnp.int32)
  return b


@pytest.mark.slow
def test_a_tiny_urn_overfits_a_tiny_batch():
  b = _learnable_batch()
  model = U.URN(synthesis=False, **TINY)
  state = U.create_train_state(model, jax.random.key(0), b["image"].shape, 1e-2)
  losses = []
  for i in range(100):
    state, metrics = U.segment_step(state, b, jax.random.key(i), theta=None,
                                    variance_weight=1e-4)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] / 10, losses[::10]


@pytest.mark.slow
def test_pretraining_reduces_the_reconstruction_error():
  b = make_batch()
  # Smooth images: something an encoder-decoder can learn to reproduce in a few steps.
  b["image"] = jnp.cumsum(jnp.cumsum(b["image"], axis=1), axis=2) / 16
  model = U.URN(**dict(TINY, segmentation_features=None))
  state = U.create_train_state(model, jax.random.key(0), b["image"].shape, 3e-3)
  first = None
  for i in range(60):
    state, metrics = U.pretrain_step(state, b, jax.random.key(i))
    first = first if first is not None else float(metrics["reconstruction"])
    assert metrics["kept"] >= 2  # at least two modalities reach the variance term
  assert float(metrics["reconstruction"]) < 0.5 * first


@pytest.mark.slow
def test_frozen_encoders_stay_bit_identical():
  b = make_batch()
  model = U.URN(synthesis=False, freeze_encoders=True, fusion="learned", **TINY)
  state = U.create_train_state(model, jax.random.key(0), b["image"].shape, 1e-2)
  copy = lambda tree: jax.tree_util.tree_map(np.array, tree)
  before_params, before_stats = copy(state.params), copy(state.batch_stats)
  for i in range(3):
    state, _ = U.segment_step(state, b, jax.random.key(i), variance_weight=1e-4)
  for name in ("encoders", "learned_f"):
    jax.tree_util.tree_map(np.testing.assert_array_equal, before_params[name],
                           copy(state.params[name]))
  jax.tree_util.tree_map(np.testing.assert_array_equal, before_stats["encoders"],
                         copy(state.batch_stats["encoders"]))
  changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b),
                                   before_params["segmenter"], copy(state.params["segmenter"]))
  assert all(jax.tree_util.tree_leaves(changed))


@pytest.mark.slow
def test_unfrozen_urn_trains_its_encoders():
  b = make_batch()
  model = U.URN(synthesis=False, **TINY)
  state = U.create_train_state(model, jax.random.key(0), b["image"].shape, 1e-2)
  before = jax.tree_util.tree_map(np.array, state.params["encoders"])
  state, _ = U.segment_step(state, b, jax.random.key(0), variance_weight=1e-4)
  assert not all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      np.array_equal, before, jax.tree_util.tree_map(np.array, state.params["encoders"]))))


def test_baseline_without_dropout_uses_exactly_the_available_modalities():
  available = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 1]], bool)
  b = make_batch(available=available)
  model = U.Baseline(features=(4, 8))
  state = U.create_train_state(model, jax.random.key(0), b["image"].shape, 1e-3)
  _, metrics = U.segment_step(state, b, jax.random.key(0), theta=None)
  assert float(metrics["kept"]) == available.sum(axis=1).mean()
  assert "variance" not in metrics


def test_infer_with_any_mask_gives_labels_and_probabilities():
  b = make_batch()
  model = U.URN(**TINY)
  state = U.create_train_state(model, jax.random.key(0), b["image"].shape, 1e-3)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  out = U.infer(model, variables, b["image"], jnp.array([False, True, False, True]))
  assert out["label"].shape == (4, 16, 16) and out["synthesis"].shape == (4, 16, 16, 4)
  np.testing.assert_allclose(out["probabilities"].sum(-1), 1, rtol=1e-5)
  assert set(np.unique(out["label"])) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_every_function_compiles_once_for_all_15_combinations():
  env = dict(os.environ, JAX_THREEFRY_PARTITIONABLE="0", JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "compile_count.py"), "--size", "16",
       "--features", "4,8", "--steps", "2"], capture_output=True, text=True, env=env,
      timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  counts = json.loads(result.stdout.strip().splitlines()[-1])
  assert counts == {"pretrain_step": 1, "segment_step": 1, "infer": 1}
