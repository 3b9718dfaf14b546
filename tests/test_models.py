"""The networks: U-Net (2.1), encoders with fixed batch norm (2.3.1), URN and baseline."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SIZE, TINY, load_config, make_batch

import urn_jax as U
from urn_jax.model import unet
from urn_jax.model.build import build_model
from urn_jax.model.decoder import ResidualBlock
from urn_jax.model.encoder import Encoders


def _init(module, images, mask, train=False):
  return jax.jit(module.init, static_argnames="train")(jax.random.key(0), images, mask,
                                                       train=train)


def test_fixed_batch_norm_has_no_trainable_parameters():
  enc = Encoders(features=(4, 8), channels=4)
  b = make_batch()
  variables = _init(enc, b["image"], b["available"])
  per_encoder = variables["params"]["stacked"]
  assert set(per_encoder) == {"UNet_0"}, "the output batch norm must have no parameters"
  assert "BatchNorm_0" in variables["batch_stats"]["stacked"]


def test_encoder_outputs_are_standardized_per_modality_and_channel():
  enc = Encoders(features=(4, 8), channels=4)
  b = make_batch(batch=6)
  available = np.ones((6, 4), bool)
  available[:3, 1] = False
  variables = _init(enc, b["image"], available)
  z, _ = enc.apply(variables, b["image"], available, train=True, mutable=["batch_stats"])
  z = np.asarray(z)
  for i in range(4):
    present = z[available[:, i], i]  # [n, H, W, C]
    np.testing.assert_allclose(present.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(present.std(axis=(0, 1, 2)), 1, atol=1e-2)


def test_batch_statistics_come_only_from_samples_that_have_the_modality():
  enc = Encoders(features=(4, 8), channels=4)
  b = make_batch(batch=3)
  variables = _init(enc, b["image"], b["available"])
  with_absent = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]], bool)
  z3, _ = enc.apply(variables, b["image"], with_absent, train=True, mutable=["batch_stats"])
  z2, _ = enc.apply(variables, b["image"][:2], with_absent[:2], train=True,
                    mutable=["batch_stats"])
  # FLAIR's encoder sees the same two FLAIR slices in both batches.
  np.testing.assert_allclose(z3[:2, 0], z2[:, 0], rtol=1e-5, atol=1e-5)


def test_running_statistics_of_an_absent_modality_are_untouched():
  enc = Encoders(features=(4, 8), channels=4)
  b = make_batch()
  available = np.ones((4, 4), bool)
  available[:, 2] = False  # no T1c in the whole batch
  variables = _init(enc, b["image"], available)
  z, updates = enc.apply(variables, b["image"], available, train=True, mutable=["batch_stats"])
  assert np.isfinite(np.asarray(z)).all()
  before, after = variables["batch_stats"], updates["batch_stats"]
  for old, new in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
    np.testing.assert_array_equal(old[2], new[2])
    assert not np.array_equal(old[0], new[0])


def _conv_count(num_modalities):
  enc = Encoders(num_modalities=num_modalities, features=(4, 8), channels=4, stacking="vmap")
  images = jnp.zeros((2, SIZE, SIZE, num_modalities))
  mask = jnp.ones((2, num_modalities), bool)
  variables = jax.eval_shape(lambda: _init(enc, images, mask))
  jaxpr = jax.make_jaxpr(lambda v: enc.apply(v, images, mask, train=False))(variables)
  return str(jaxpr).count("conv_general_dilated")


def test_encoders_run_as_one_batched_computation_not_a_loop():
  assert _conv_count(2) == _conv_count(4) > 0


@pytest.mark.slow
@pytest.mark.parametrize("synthesis", [True, False])
def test_vmap_and_unroll_stacking_share_parameters_and_results(synthesis):
  b = make_batch()
  kwargs = dict(TINY, segmentation_features=None if synthesis else (4, 8), synthesis=synthesis)
  vmapped, unrolled = U.URN(stacking="vmap", **kwargs), U.URN(stacking="unroll", **kwargs)
  variables = _init(vmapped, b["image"], b["available"])
  shapes = lambda v: jax.tree_util.tree_map(jnp.shape, v)
  assert shapes(variables) == shapes(_init(unrolled, b["image"], b["available"]))
  mask = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 1, 1]], bool)
  for train in (False, True):
    apply = lambda m: m.apply(variables, b["image"], mask, train=train, mutable=["batch_stats"])
    (out_v, stats_v), (out_u, stats_u) = apply(vmapped), apply(unrolled)
    jax.tree_util.tree_map(lambda a, c: np.testing.assert_allclose(a, c, rtol=2e-4, atol=2e-4),
                           (out_v, stats_v), (out_u, stats_u))


@pytest.mark.slow  # over 10 s on 2 cores
def test_dropped_modality_encoder_gets_exactly_zero_gradient(tiny_urn):
  b = make_batch()
  keep = np.ones((4, 4), bool)
  keep[:, 3] = False  # T2 dropped everywhere
  poisoned = b["image"].at[..., 3].set(jnp.nan)
  variables = _init(tiny_urn, b["image"], keep)

  def loss(params):
    out, _ = tiny_urn.apply({"params": params, "batch_stats": variables["batch_stats"]},
                            poisoned, keep, train=True, mutable=["batch_stats"])
    return (U.cross_entropy(out["segmentation"], b["label"])
            + 1e-4 * U.fusion_variance(out["z_tilde"], keep)
            + jnp.mean(out["synthesis"] ** 2))

  grads = jax.jit(jax.grad(loss))(variables["params"])["encoders"]
  for g in jax.tree_util.tree_leaves(grads):
    g = np.asarray(g)
    assert np.isfinite(g).all()
    assert (g[3] == 0).all()
  assert any(np.abs(np.asarray(g[0])).sum() > 0 for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("fusion,channels", [("mean", 4), ("exp", 4), ("learned", 4),
                                             ("hemis", 8)])
def test_urn_outputs(fusion, channels):
  model = U.URN(fusion=fusion, **TINY)
  b = make_batch()
  out = model.apply(_init(model, b["image"], b["available"]), b["image"], b["available"],
                    train=False)
  assert out["z_tilde"].shape == (4, 4, SIZE, SIZE, 4)
  assert out["z"].shape == (4, SIZE, SIZE, channels)
  assert out["synthesis"].shape == (4, SIZE, SIZE, 4)
  assert out["segmentation"].shape == (4, SIZE, SIZE, U.NUM_CLASSES)


def test_urn_without_task_or_with_unknown_fusion_is_refused():
  b = make_batch()
  with pytest.raises(ValueError, match="fusion must be one of"):
    _init(U.URN(fusion="max", **TINY), b["image"], b["available"])
  with pytest.raises(ValueError, match="needs a task"):
    _init(U.URN(encoder_features=(4, 8), synthesis=False, segmentation_features=None),
          b["image"], b["available"])


def test_unet_shapes_and_divisibility_error():
  net = U.UNet(features=(4, 8, 16), out_channels=3)
  x = jnp.zeros((2, 24, 32, 5))
  y = net.apply(net.init(jax.random.key(0), x, train=False), x, train=False)
  assert y.shape == (2, 24, 32, 3)
  with pytest.raises(ValueError, match="divisible by 4"):
    net.init(jax.random.key(0), jnp.zeros((1, 18, 32, 5)), train=False)


def test_unet_has_one_convolution_per_level():
  net = U.UNet(features=(4, 8, 16), out_channels=3)
  params = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)), train=False)["params"]
  # 3 levels down (incl. bottom) + 2 up = 5 ConvBlocks of one conv each, 2 up-convolutions,
  # and the final 1x1 convolution.
  assert sorted(k.split("_")[0] for k in params) == ["Conv"] + ["ConvBlock"] * 5 + [
      "ConvTranspose"] * 2
  assert all(set(params[k]) == {"Conv_0", "BatchNorm_0"} for k in params
             if k.startswith("ConvBlock"))


class _FlaxConvBlock(nn.Module):
  """The U-Net level written with Flax's own layers: the reference for ours."""
  features: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(self.features, (3, 3), use_bias=False)(x)
    return nn.leaky_relu(unet.BatchNorm()(x, train), unet.LEAKY_SLOPE)


class _FlaxUNet(nn.Module):
  features: tuple
  out_channels: int

  @nn.compact
  def __call__(self, x, train):
    skips = []
    for width in self.features[:-1]:
      x = _FlaxConvBlock(width, name=f"ConvBlock_{len(skips)}")(x, train)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = _FlaxConvBlock(self.features[-1], name=f"ConvBlock_{len(skips)}")(x, train)
    for level, (width, skip) in enumerate(zip(reversed(self.features[:-1]), reversed(skips))):
      x = nn.ConvTranspose(width, (2, 2), strides=(2, 2))(x)
      x = _FlaxConvBlock(width, name=f"ConvBlock_{len(skips) + 1 + level}")(
          jnp.concatenate([skip, x], axis=-1), train)
    return nn.Conv(self.out_channels, (1, 1))(x)


def test_hand_written_layers_compute_what_flax_layers_compute():
  """Our max pool, 3x3 convolution and up-convolution are rewritten for CPU speed; they must
  keep Flax's parameter names, shapes and initial values (checkpoints stay loadable) and
  compute the same outputs, batch statistics and gradients."""
  ours, ref = U.UNet((4, 8, 16), 3), _FlaxUNet((4, 8, 16), 3)
  # 6 input channels: XLA's convolution in the first layer, the 3x3 patches in the second
  # (4 channels), XLA's again in the decoder.
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 6))
  v_ours = ours.init(jax.random.key(0), x, train=False)
  v_ref = ref.init(jax.random.key(0), x, train=False)
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_ref)
  jax.tree.map(np.testing.assert_array_equal, v_ours, v_ref)

  def run(module):
    def loss(params, x):
      y, stats = module.apply({**v_ours, "params": params}, x, train=True,
                              mutable=["batch_stats"])
      return jnp.sum(jnp.sin(y)), (y, stats)
    grad = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))
    (_, aux), grads = grad(v_ours["params"], x)
    return aux, grads

  close = lambda tol: lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
  (y, stats), grads = run(ours)
  (y_ref, stats_ref), grads_ref = run(ref)
  np.testing.assert_allclose(y, y_ref, atol=2e-5)
  jax.tree.map(close(2e-5), stats, stats_ref)
  jax.tree.map(close(1e-4), grads, grads_ref)  # parameters and input


class _FlaxResidualBlock(nn.Module):
  """The synthesis decoders' residual block written with ``nn.Conv``: the reference for ours."""
  features: int

  @nn.compact
  def __call__(self, x, train):
    y = nn.Conv(self.features, (3, 3), use_bias=False)(x)
    y = nn.leaky_relu(unet.BatchNorm()(y, train), unet.LEAKY_SLOPE)
    y = unet.BatchNorm()(nn.Conv(self.features, (3, 3), use_bias=False)(y), train)
    return nn.leaky_relu(x + y, unet.LEAKY_SLOPE)


def test_the_residual_block_computes_what_flax_layers_compute():
  """The synthesis decoders' 3x3 convolutions are the U-Net's ``Conv3x3``: checkpoints written
  with ``nn.Conv`` load, start from the same values and compute the same outputs, batch
  statistics and gradients."""
  ours, ref = ResidualBlock(16), _FlaxResidualBlock(16)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 16))
  v = ours.init(jax.random.key(0), x, train=False)
  v_ref = ref.init(jax.random.key(0), x, train=False)
  jax.tree.map(np.testing.assert_array_equal, v, v_ref)

  def run(module):
    def loss(params, x):
      y, stats = module.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
      return jnp.sum(jnp.sin(y)), (y, stats)
    return jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(v["params"], x)

  (_, (y, stats)), grads = run(ours)
  (_, (y_ref, stats_ref)), grads_ref = run(ref)
  np.testing.assert_allclose(y, y_ref, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               (stats, grads), (stats_ref, grads_ref))


@pytest.mark.parametrize("channels", [1, 3])
def test_both_ways_of_the_3x3_convolution_agree_with_xla(channels):
  x = jax.random.normal(jax.random.key(0), (2, 6, 5, channels))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, 7))
  want = nn.Conv(7, (3, 3), use_bias=False).apply({"params": {"kernel": kernel}}, x)
  for patches in (False, True):
    np.testing.assert_allclose(unet.conv3x3(x, kernel, patches), want, atol=1e-5)


def test_baseline_ignores_what_missing_modalities_hold():
  model = U.Baseline(features=(4, 8))
  b = make_batch()
  mask = np.array([[1, 0, 1, 1]] * 4, bool)
  variables = _init(model, b["image"], mask)
  out = model.apply(variables, b["image"], mask, train=False)["segmentation"]
  other = model.apply(variables, b["image"].at[..., 1].set(jnp.nan), mask,
                      train=False)["segmentation"]
  np.testing.assert_array_equal(out, other)


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_the_wide_baseline_has_about_the_urn_segmentation_networks_parameters(preset):
  """Baseline + MD (wide) is there to tell a URN's lead from its size: its trainable
  parameters must be within 1 % of URN + MD's, five times the plain baseline's."""
  def count(variant):
    config = load_config("segment", f"{variant},{preset}")
    model = build_model(config)
    variables = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 4)), jnp.ones((1, 4), bool), train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  urn, wide, plain = count("urn_md"), count("baseline_md_wide"), count("baseline_md")
  assert abs(wide - urn) / urn < 0.015, (wide, urn)
  assert 4.5 < wide / plain < 5.5
