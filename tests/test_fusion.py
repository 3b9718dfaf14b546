"""Fusion (paper, section 2.3.2, equation (2)) and its regularizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from urn_jax import LearnedF, fuse, fuse_hemis, fusion_variance
from urn_jax.model.fusion import KNOWN_INVERSES

jax.config.update("jax_enable_x64", False)


def _learned_f():
  module = LearnedF(channels=3, num_layers=2)
  params = {"params": {"raw_d": jnp.array([[0.3, 1.0, 2.0], [-0.5, 0.7, 0.1]]),
                       "e": jnp.array([[0.2, -0.4, 0.0], [0.5, 0.1, -0.3]])}}
  return module.apply(params)


# (name, f, f_inv, a sampler for values in f's domain)
FUNCTIONS = [
    ("mean", None, None, lambda r, s: r.normal(size=s)),
    ("exp", jnp.exp, None, lambda r, s: 5 * r.normal(size=s)),
    ("np.exp", np.exp, None, lambda r, s: r.normal(size=s)),
    ("log", jnp.log, None, lambda r, s: r.uniform(0.1, 3, size=s)),
    ("sinh", jnp.sinh, None, lambda r, s: r.normal(size=s)),
    ("tanh", jnp.tanh, None, lambda r, s: r.uniform(-2, 2, size=s)),
    ("sigmoid", jax.nn.sigmoid, None, lambda r, s: r.normal(size=s)),
    ("cube", lambda x: x**3, jnp.cbrt, lambda r, s: r.normal(size=s)),
    ("learned", *_learned_f(), lambda r, s: r.normal(size=s)),
]
IDS = [f[0] for f in FUNCTIONS]


def _z(sampler, shape=(3, 4, 5, 6, 3), seed=0):
  return jnp.asarray(sampler(np.random.default_rng(seed), shape), jnp.float32)


@pytest.mark.parametrize("name,f,f_inv,sampler", FUNCTIONS, ids=IDS)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_fusion_is_intensive(name, f, f_inv, sampler, n):
  x = _z(sampler, (2, 1, 5, 6, 3))
  z = jnp.concatenate([x] * 4, axis=1)
  mask = jnp.arange(4)[None, :] < n
  mask = jnp.broadcast_to(mask, (2, 4))
  np.testing.assert_allclose(fuse(z, mask, f, f_inv), x[:, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,f,f_inv,sampler", FUNCTIONS, ids=IDS)
def test_fusion_is_permutation_invariant(name, f, f_inv, sampler):
  z = _z(sampler)
  mask = jnp.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0]], bool)
  perm = np.array([2, 0, 3, 1])
  np.testing.assert_allclose(fuse(z, mask, f, f_inv), fuse(z[:, perm], mask[:, perm], f, f_inv),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,f,f_inv,sampler", FUNCTIONS, ids=IDS)
def test_masked_entries_are_ignored_even_if_nan_or_inf(name, f, f_inv, sampler):
  z = _z(sampler)
  mask = jnp.array([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 0]], bool)
  expected = fuse(z, mask, f, f_inv)
  poisoned = jnp.where(mask[:, :, None, None, None], z,
                       jnp.array([jnp.nan, jnp.inf, -jnp.inf, 1e30])[None, :, None, None, None])
  np.testing.assert_array_equal(fuse(poisoned, mask, f, f_inv), expected)


@pytest.mark.parametrize("name,f,f_inv,sampler", FUNCTIONS, ids=IDS)
def test_masked_modalities_get_exactly_zero_gradient(name, f, f_inv, sampler):
  z = _z(sampler)
  mask = jnp.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 1]], bool)
  poisoned = jnp.where(mask[:, :, None, None, None], z, jnp.nan)
  grad = jax.grad(lambda z: jnp.sum(fuse(z, mask, f, f_inv) ** 2))(poisoned)
  grad = np.asarray(grad)
  assert np.isfinite(grad).all()
  assert (grad[~np.asarray(mask)] == 0).all()
  assert (np.abs(grad[np.asarray(mask)]).sum() > 0)


@pytest.mark.parametrize("name,f,f_inv,sampler", FUNCTIONS, ids=IDS)
def test_a_sample_with_no_modality_fuses_to_zeros(name, f, f_inv, sampler):
  z = _z(sampler)
  mask = jnp.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
  out = np.asarray(fuse(z, mask, f, f_inv))
  assert (out[[0, 2]] == 0).all() and np.isfinite(out).all()


def test_mask_may_be_zero_one_numbers():
  z = _z(FUNCTIONS[0][3])
  mask = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0]])
  np.testing.assert_array_equal(fuse(z, mask), fuse(z, mask.astype(bool)))
  np.testing.assert_array_equal(fuse(z, mask.astype(np.float32)), fuse(z, mask.astype(bool)))


def test_arithmetic_mean_matches_numpy():
  z = np.random.default_rng(1).normal(size=(3, 4, 2, 2, 5))
  mask = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0]], bool)
  expected = np.stack([z[b, mask[b]].mean(axis=0) for b in range(3)])
  np.testing.assert_allclose(fuse(jnp.asarray(z, jnp.float32), mask), expected, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 30.0, 100.0])
def test_exp_fusion_is_stable_and_matches_float64(scale):
  rng = np.random.default_rng(2)
  z = rng.uniform(-scale, scale, size=(4, 4, 3, 3, 2))
  z[0] = scale  # all at the top of the range: exp(100) in float32 would overflow
  z[1] = -scale
  mask = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]], bool)
  expected = []
  for b in range(4):  # float64 reference, the textbook formula with a shifted maximum
    v = z[b, mask[b]]
    top = v.max(axis=0)
    expected.append(top + np.log(np.mean(np.exp(v - top), axis=0)))
  out = np.asarray(fuse(jnp.asarray(z, jnp.float32), mask, f=jnp.exp), np.float64)
  assert np.isfinite(out).all()
  np.testing.assert_allclose(out, np.stack(expected), rtol=1e-5, atol=1e-5 * scale)


def test_unknown_f_without_inverse_is_a_clear_error():
  def squash(x):
    return x / (1 + jnp.abs(x))
  with pytest.raises(ValueError, match="does not know the inverse of f=squash.*f_inv"):
    fuse(jnp.zeros((1, 2, 3)), jnp.ones((1, 2), bool), f=squash)


def test_shape_errors_name_the_shapes():
  with pytest.raises(ValueError, match=r"\[B, M"):
    fuse(jnp.zeros((2, 4, 3)), jnp.ones((2, 3), bool))


def test_learned_f_is_strictly_increasing_with_exact_inverse():
  f, f_inv = _learned_f()
  x = jnp.linspace(-50, 50, 2001)[:, None] * jnp.ones((1, 3))
  y = f(x)
  assert (np.diff(np.asarray(y), axis=0) > 0).all()
  np.testing.assert_allclose(f_inv(y), x, rtol=1e-4, atol=1e-4)


def test_learned_f_starts_as_the_identity():
  module = LearnedF(channels=3)
  f, f_inv = module.apply(module.init(jax.random.key(0)))
  x = jnp.linspace(-5, 5, 11)[:, None] * jnp.ones((1, 3))
  np.testing.assert_allclose(f(x), x, rtol=1e-5, atol=1e-5)


def test_hemis_fusion_concatenates_mean_and_variance():
  z = np.random.default_rng(3).normal(size=(2, 4, 3, 3, 2)).astype(np.float32)
  mask = np.array([[1, 1, 0, 1], [0, 0, 1, 0]], bool)
  out = np.asarray(fuse_hemis(jnp.asarray(z), mask))
  assert out.shape == (2, 3, 3, 4)
  for b in range(2):
    v = z[b, mask[b]]
    np.testing.assert_allclose(out[b, ..., :2], v.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[b, ..., 2:], v.var(0), rtol=1e-5, atol=1e-6)


def test_fusion_variance_is_the_masked_voxelwise_variance():
  z = np.random.default_rng(4).normal(size=(3, 4, 5, 5, 2)).astype(np.float32)
  mask = np.array([[1, 1, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0]], bool)
  expected = np.mean([z[b, mask[b]].var(axis=0) for b in range(3)])
  np.testing.assert_allclose(fusion_variance(jnp.asarray(z), mask), expected, rtol=1e-5)
  same = np.repeat(z[:, :1], 4, axis=1)
  assert float(fusion_variance(jnp.asarray(same), mask)) == pytest.approx(0, abs=1e-7)
  poisoned = np.where(mask[:, :, None, None, None], z, np.nan)
  grad = jax.grad(fusion_variance)(jnp.asarray(poisoned), mask)
  assert np.isfinite(grad).all() and (np.asarray(grad)[~mask] == 0).all()


def test_every_inverse_fuse_knows_is_the_inverse():
  """Each function ``fuse`` finds an inverse for (``KNOWN_INVERSES``: exp, log, expm1,
  log1p, sinh, arcsinh, tanh, arctanh, sigmoid, logit, both directions, jax's and
  numpy's), through ``fuse`` itself: one modality fused with f alone gives it back, so
  ``f_inv(f(x)) = x``. On (0.05, 0.9), inside every one of their domains."""
  x = jnp.asarray(np.random.default_rng(0).uniform(0.05, 0.9, (2, 1, 3, 3, 2)), jnp.float32)
  for f in KNOWN_INVERSES:
    np.testing.assert_allclose(fuse(x, jnp.ones((2, 1), bool), f), x[:, 0], rtol=1e-4,
                               err_msg=getattr(f, "__name__", repr(f)))
  assert len(KNOWN_INVERSES) == 19  # nine pairs, each way round, and the identity
