"""Modality dropout (paper, section 2.2): zero out whole input modalities at random.

Per sample, the number ``k`` of modalities to drop is drawn from the truncated geometric
distribution of equation (1), then ``k`` of the available modalities are chosen uniformly
at random. Everything is array code on ``[B, M]`` masks, so it runs inside a jitted train
step and one compilation serves every combination of available modalities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def truncated_geometric_pmf(theta, n_max):
  """Equation (1): ``p(k) = (1 - theta) theta^k / (1 - theta^(n_max + 1))``, ``k = 0..n_max``.

  (The paper prints the normalizer as ``1 - theta^(N+1)``; normalization requires
  ``N = n_max``.) Returns a float array of length ``n_max + 1`` that sums to one.
  """
  theta = jnp.asarray(theta, jnp.float32)
  if not isinstance(n_max, int) or n_max < 0:
    raise ValueError(f"n_max must be a non-negative Python int, got {n_max!r}")
  weights = theta ** jnp.arange(n_max + 1, dtype=jnp.float32)  # theta^0 = 1, also for theta = 0
  return weights / jnp.sum(weights)


def modality_dropout(key, available, theta, min_keep=1):
  """Draw a keep-mask from the availability mask (paper, section 2.2, equation (1)).

  Args:
    key: a ``jax.random`` key.
    available: bool ``[B, M]`` (or ``[M]``), which modalities exist for each sample; an HCP
      sample, for instance, has only T1 and T2.
    theta: the geometric decay in ``[0, 1)``; the paper uses 0.5 for segmentation and 0.8
      for pre-training. ``theta = 0`` never drops anything.
    min_keep: the least number of modalities kept (1 for segmentation; 2 for pre-training,
      where the variance regularizer needs two encoders).

  Returns:
    bool array shaped like ``available``: ``keep[b, i]`` implies ``available[b, i]``.
    For each sample ``k ~ p_theta(k)`` with ``n_max = n_available - min_keep``; a sample
    that already has ``min_keep`` or fewer modalities is returned unchanged.
  """
  available = jnp.asarray(available).astype(bool)
  if available.ndim not in (1, 2):
    raise ValueError(f"available must be [B, M] or [M], got shape {available.shape}")
  if available.ndim == 1:
    return modality_dropout(key, available[None], theta, min_keep)[0]
  if not 0.0 <= float(theta) < 1.0:
    raise ValueError(f"theta must be in [0, 1), got {theta}")
  if min_keep < 0:
    raise ValueError(f"min_keep must be non-negative, got {min_keep}")
  batch, num_modalities = available.shape
  key_k, key_choice = jax.random.split(key)

  n_available = available.sum(axis=1)
  n_max = jnp.maximum(n_available - min_keep, 0)  # [B]
  ks = jnp.arange(num_modalities + 1)
  # log p(k) up to the normalizer, with k > n_max excluded: categorical normalizes per row.
  log_weights = jnp.where(ks[None, :] <= n_max[:, None],
                          ks * jnp.log(jnp.asarray(theta, jnp.float32)), -jnp.inf)
  log_weights = log_weights.at[:, 0].set(0.0)  # theta^0 = 1 even for theta = 0 (0 * -inf)
  k = jax.random.categorical(key_k, log_weights, axis=1)  # [B]

  # A uniformly random order of the available modalities: the first k of it are dropped.
  scores = jnp.where(available, jax.random.uniform(key_choice, (batch, num_modalities)), 2.0)
  rank = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
  return available & (rank >= k[:, None])
