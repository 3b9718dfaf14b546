"""Fusion of the available encoders' outputs into the unified representation (paper 2.3.2).

``fuse`` is the generalized f-mean of equation (2), ``z = f^-1(mean_i f(z_i))`` over the
modalities whose mask entry is on. It is intensive (fusing n copies of one input gives that
input back) and invariant to the order of the modalities. Masked entries never reach the
result or its gradient: they may hold anything, NaN and inf included, and get exactly zero
gradient. A sample with no modality at all fuses to zeros.

Also here: the voxel-wise variance regularizer of section 2.3.2, HeMIS-style fusion (mean
and variance concatenated, for comparison), and a learned invertible f, which the paper
mentions as possible but does not try.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _identity(x):
  return x


def _logit(x):
  return jnp.log(x) - jnp.log1p(-x)


# Functions whose inverse ``fuse`` finds for the caller (both directions are registered).
_INVERSE_PAIRS = [
    (jnp.exp, jnp.log), (np.exp, np.log), (jnp.expm1, jnp.log1p), (np.expm1, np.log1p),
    (jnp.sinh, jnp.arcsinh), (np.sinh, np.arcsinh), (jnp.tanh, jnp.arctanh),
    (np.tanh, np.arctanh), (jax.nn.sigmoid, _logit), (_identity, _identity),
]
KNOWN_INVERSES: dict[Callable, Callable] = {}
for _f, _g in _INVERSE_PAIRS:
  KNOWN_INVERSES.setdefault(_f, _g)
  KNOWN_INVERSES.setdefault(_g, _f)
_EXP = (jnp.exp, np.exp)


def _check_shapes(z, mask):
  z = jnp.asarray(z)
  mask = jnp.asarray(mask)
  if z.ndim < 2 or mask.shape != z.shape[:2]:
    raise ValueError(
        f"fuse expects z of shape [B, M, ...] and mask of shape [B, M]; got z {z.shape} "
        f"and mask {mask.shape}")
  return z, mask.astype(bool)


def _expand(mask, z):
  """[B, M] -> [B, M, 1, ..., 1] so it broadcasts against z."""
  return mask.reshape(mask.shape + (1,) * (z.ndim - 2))


def _masked_mean(values, mask):
  """Mean over axis 1 of ``values`` where ``mask``; 0 where nothing is available."""
  m = _expand(mask, values)
  count = jnp.maximum(m.sum(axis=1), 1).astype(values.dtype)
  return jnp.where(m, values, 0).sum(axis=1) / count


def fuse(z, mask, f: Callable | None = None, f_inv: Callable | None = None):
  """Generalized f-mean over the available modalities (paper, equation (2)).

  Args:
    z: encoder outputs ``[B, M, H, W, C]`` (any trailing shape works).
    mask: ``[B, M]``, bool or 0/1: which modalities take part, per sample.
    f: an invertible elementwise function; ``None`` is the arithmetic mean, the paper's
      choice. ``jnp.exp`` (or ``np.exp``) is computed as a masked log-sum-exp, so it neither
      overflows nor loses precision for large ``|z|``. The inverses of exp, log, expm1,
      log1p, sinh, arcsinh, tanh, arctanh and sigmoid are known.
    f_inv: the inverse of ``f``; needed when ``f`` is none of the known functions.

  Returns:
    ``[B, H, W, C]``, the unified representation; zeros for a sample with an empty mask.
  """
  z, mask = _check_shapes(z, mask)
  m = _expand(mask, z)
  any_available = m.any(axis=1)
  # Masked entries are replaced before any arithmetic touches them: jnp.where passes exactly
  # zero gradient to the branch it does not select, and nothing NaN can leak from a safe value.
  z_safe = jnp.where(m, z, 0)
  if f is None or f is _identity:
    return _masked_mean(z_safe, mask)
  if f in _EXP:
    # log(mean exp z) = logsumexp over the available entries - log n.
    count = m.sum(axis=1).astype(z.dtype)
    logits = jnp.where(m, z_safe, -jnp.inf)
    logits = jnp.where(any_available[:, None], logits, 0)  # an empty row must not be all -inf
    lse = jax.nn.logsumexp(logits, axis=1)
    return jnp.where(any_available, lse - jnp.log(jnp.maximum(count, 1)), 0)
  if f_inv is None:
    f_inv = KNOWN_INVERSES.get(f)
    if f_inv is None:
      name = getattr(f, "__name__", repr(f))
      raise ValueError(
          f"fuse does not know the inverse of f={name}; pass f_inv= as well (known: exp, "
          "log, expm1, log1p, sinh, arcsinh, tanh, arctanh, sigmoid), or use "
          "LearnedF for a learned invertible f")
  mean_f = _masked_mean(f(z_safe), mask)
  return jnp.where(any_available, f_inv(mean_f), 0)


def fuse_hemis(z, mask):
  """HeMIS fusion (Havaei et al., 2016): mean and variance over the available modalities,
  concatenated along the last (channel) axis: ``[B, M, ..., C] -> [B, ..., 2C]``.

  Not the paper's method: here for comparison. The variance is 0 for a single modality.
  """
  z, mask = _check_shapes(z, mask)
  mean = fuse(z, mask)
  return jnp.concatenate([mean, _masked_variance(z, mask, mean)], axis=-1)


def _masked_variance(z, mask, mean):
  deviation = jnp.where(_expand(mask, z), z, 0) - mean[:, None]
  return _masked_mean(deviation**2, mask)


def fusion_variance(z, mask):
  """The similarity regularizer of section 2.3.2: the voxel-wise variance across the
  available encoders' outputs (population variance over modalities), averaged over voxels,
  channels and samples. A sample with fewer than two modalities contributes zero.
  """
  z, mask = _check_shapes(z, mask)
  return jnp.mean(_masked_variance(z, mask, fuse(z, mask)))


class LearnedF(nn.Module):
  """A learned strictly increasing elementwise f with an exact inverse, for ``fuse``.

  A stack of per-channel sinh-arcsinh maps (Jones and Pewsey, 2009),
  ``x -> sinh(d * arcsinh(x) - e)`` with ``d = softplus(.) > 0``, each strictly increasing
  on the whole real line with the closed-form inverse ``y -> sinh((arcsinh(y) + e) / d)``.
  An affine layer would be pointless: an f-mean is unchanged when f is scaled or shifted.
  Initialized to the identity (d = 1, e = 0), so a URN with ``fusion='learned'`` starts as
  the paper's arithmetic mean. Calling the module returns ``(f, f_inv)``.
  """

  channels: int
  num_layers: int = 2

  @nn.compact
  def __call__(self):
    softplus_inv_one = float(np.log(np.expm1(1.0)))
    raw_d = self.param("raw_d", nn.initializers.constant(softplus_inv_one),
                       (self.num_layers, self.channels))
    e = self.param("e", nn.initializers.zeros, (self.num_layers, self.channels))
    d = jax.nn.softplus(raw_d)

    def f(x):
      for layer in range(self.num_layers):
        x = jnp.sinh(d[layer] * jnp.arcsinh(x) - e[layer])
      return x

    def f_inv(y):
      for layer in reversed(range(self.num_layers)):
        y = jnp.sinh((jnp.arcsinh(y) + e[layer]) / d[layer])
      return y

    return f, f_inv
