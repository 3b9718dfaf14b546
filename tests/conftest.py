"""Shared fixtures: tiny models so the suite stays fast on a 2-core CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import urn_jax as U

# XLA on CPU takes about 7x longer to compile parameter initialization with JAX's default
# partitionable threefry (20 s instead of 3 s for a tiny URN). The random bits differ, the
# semantics do not; tests that compare runs make both runs here.
jax.config.update("jax_threefry_partitionable", False)

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
