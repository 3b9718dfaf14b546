"""The PyTorch twin of benchmarks/torch_twin.py does the work urn_jax does.

A throughput comparison is fair only if both sides compute the same thing, so these tests
check more than that the twin runs: its trainable parameter counts equal the JAX models'
(same layers and widths), and with the JAX weights copied in it computes the same outputs,
batch statistics and losses. Skipped where PyTorch is not installed (CI installs no torch).
"""

import functools
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

import urn_jax as U

torch = pytest.importorskip("torch")

_spec = importlib.util.spec_from_file_location(
    "torch_twin", Path(__file__).resolve().parents[1] / "benchmarks" / "torch_twin.py")
tt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tt)

FEATURES = TINY["encoder_features"]
CHANNELS = TINY["channels"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
  """The tensors here are tiny: more threads only add synchronization, and on a CPU shared
  with other work OpenMP threads waiting on one another made steps 100x slower."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def _jax_model(kind, features, channels):
  """The JAX model that ``tt.make(kind, features, channels=channels)`` twins."""
  if kind == "baseline":
    return U.Baseline(features=features)
  if kind == "urn_pretrain":
    return U.URN(encoder_features=features, channels=channels, segmentation_features=None)
  return U.URN(encoder_features=features, channels=channels, segmentation_features=features,
               synthesis=False)


def _abstract_variables(model, size=16, batch=2):
  images = jnp.zeros((batch, size, size, 4))
  mask = jnp.ones((batch, 4), bool)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), images,
                        mask)


@pytest.mark.parametrize("kind,features,channels,batched", [
    *((kind, FEATURES, CHANNELS, False) for kind in tt.KINDS),
    ("urn_pretrain", FEATURES, 16, True),  # encoders and decoders as grouped convolutions
    ("urn_segment", U.PAPER_FEATURES, 16, False),  # the paper's widths, five levels
])
def test_parameter_counts_and_output_shapes_equal_the_jax_models(kind, features, channels,
                                                                  batched):
  model = _jax_model(kind, features, channels)
  variables = _abstract_variables(model)
  jax_count = jax.tree_util.tree_reduce(lambda n, x: n + x.size, variables["params"], 0)
  with torch.device("meta"):  # the paper-size twins are not allocated
    twin = tt.make(kind, features, channels=channels, batched=batched)
  assert tt.count_parameters(twin) == jax_count

  jax_out = jax.eval_shape(functools.partial(model.apply, train=False), variables,
                           jnp.zeros((2, 16, 16, 4)), jnp.ones((2, 4), bool))
  out = twin(torch.zeros(2, 4, 16, 16, device="meta"),
             torch.ones(2, 4, dtype=torch.bool, device="meta"))
  assert set(out) == set(jax_out)
  for name, value in jax_out.items():
    nchw = value.shape[:-3] + value.shape[-1:] + value.shape[-3:-1]
    assert tuple(out[name].shape) == nchw, name


# Copying Flax weights into the twin: kernels are [kh, kw, in, out] in Flax, [out, in, kh, kw]
# in PyTorch; Flax's transposed convolution does not flip its kernel, PyTorch's does.

def _tensor(x):
  return torch.from_numpy(np.array(x))


def _conv(module, p):
  module.weight.copy_(_tensor(p["kernel"]).permute(3, 2, 0, 1))
  if "bias" in p:
    module.bias.copy_(_tensor(p["bias"]))


def _conv_transpose(module, p):
  module.weight.copy_(_tensor(p["kernel"]).flip(0, 1).permute(2, 3, 0, 1))
  module.bias.copy_(_tensor(p["bias"]))


def _norm(module, p, stats):
  if p:
    module.weight.copy_(_tensor(p["scale"]))
    module.bias.copy_(_tensor(p["bias"]))
  module.running_mean.copy_(_tensor(stats["mean"]))
  module.running_var.copy_(_tensor(stats["var"]))


def _unet(module, p, s):
  for i, block in enumerate([*module.down, *module.up_blocks]):
    _conv(block.conv, p[f"ConvBlock_{i}"]["Conv_0"])
    _norm(block.norm, p[f"ConvBlock_{i}"]["BatchNorm_0"], s[f"ConvBlock_{i}"]["BatchNorm_0"])
  for j, up in enumerate(module.up):
    _conv_transpose(up, p[f"ConvTranspose_{j}"])
  _conv(module.head, p["Conv_0"])


def _copy_urn(twin, variables):
  p, s = variables["params"], variables["batch_stats"]
  for i, encoder in enumerate(twin.encoders.encoders):
    pi, si = jax.tree_util.tree_map(lambda x: x[i], (p["encoders"]["stacked"],
                                                     s["encoders"]["stacked"]))
    _unet(encoder.unet, pi["UNet_0"], si["UNet_0"])
    _norm(encoder.standardize, {}, si["BatchNorm_0"])
  for i, decoder in enumerate(twin.decoders.decoders):
    pi, si = jax.tree_util.tree_map(lambda x: x[i], (p["decoders"]["stacked"],
                                                     s["decoders"]["stacked"]))
    for k, block in enumerate(decoder.blocks):
      pk, sk = pi[f"ResidualBlock_{k}"], si[f"ResidualBlock_{k}"]
      _conv(block.conv1, pk["Conv_0"])
      _norm(block.norm1, pk["BatchNorm_0"], sk["BatchNorm_0"])
      _conv(block.conv2, pk["Conv_1"])
      _norm(block.norm2, pk["BatchNorm_1"], sk["BatchNorm_1"])
    _conv(decoder.head, pi["Conv_0"])
  _unet(twin.segmenter, p["segmenter"], s["segmenter"])


def _random_variables(model, size, seed=0):
  """Random values everywhere (running variances positive), so no layer can hide behind a
  zero or a one; cheaper than ``model.init`` too."""
  rng = np.random.default_rng(seed)
  variables = _abstract_variables(model, size)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.asarray(
          rng.uniform(0.5, 2.0, x.shape) if path[-1].key == "var"
          else rng.normal(0, 0.5, x.shape), jnp.float32), variables)


def _nchw(x):
  return np.moveaxis(np.asarray(x), -1, -3)


def test_the_urn_twin_computes_what_the_jax_urn_computes():
  # 'vmap' compiles in half the time of the CPU default 'unroll'; the parameter tree and the
  # outputs are the same.
  model = U.URN(synthesis=True, stacking="vmap", **TINY)
  variables = _random_variables(model, size=8)
  twin = tt.URN(4, FEATURES, CHANNELS, synthesis=True, segmentation_features=FEATURES,
                masked_bn=True)
  with torch.no_grad():
    _copy_urn(twin, variables)
  rng = np.random.default_rng(1)
  images = rng.normal(size=(3, 8, 8, 4)).astype(np.float32)
  # T1c (2) absent from the whole batch: its statistics stay untouched in both frameworks.
  mask = np.array([[1, 1, 0, 1], [0, 1, 0, 0], [1, 0, 0, 1]], bool)
  images = np.where(mask[:, None, None], images, np.nan)  # missing slots must not leak

  jax_out, updates = jax.jit(functools.partial(model.apply, train=True,
                                               mutable=["batch_stats"]))(variables, images,
                                                                          mask)
  twin.train()
  out = twin(torch.from_numpy(_nchw(images)), torch.from_numpy(mask))
  for name in ("z_tilde", "z", "synthesis", "segmentation"):
    np.testing.assert_allclose(out[name].detach().numpy(), _nchw(jax_out[name]), rtol=1e-4,
                               atol=1e-4, err_msg=name)
  stats = updates["batch_stats"]["encoders"]["stacked"]["BatchNorm_0"]
  for i, encoder in enumerate(twin.encoders.encoders):
    np.testing.assert_allclose(encoder.standardize.running_mean, stats["mean"][i], atol=1e-5)
    np.testing.assert_allclose(encoder.standardize.running_var, stats["var"][i], atol=1e-5)


def test_the_baseline_twin_computes_what_the_jax_baseline_computes():
  model = U.Baseline(features=FEATURES)
  variables = _random_variables(model, size=8)
  twin = tt.Baseline(4, FEATURES)
  with torch.no_grad():
    _unet(twin.unet, variables["params"]["UNet_0"], variables["batch_stats"]["UNet_0"])
  images = np.random.default_rng(1).normal(size=(3, 8, 8, 4)).astype(np.float32)
  mask = np.array([[1, 1, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]], bool)
  # Running statistics first: a training-mode forward updates the twin's in place.
  for train in (False, True):
    jax_out = jax.jit(functools.partial(model.apply, train=train, mutable=["batch_stats"]))(
        variables, images, mask)[0]
    twin.train(train)
    out = twin(torch.from_numpy(_nchw(images)), torch.from_numpy(mask))
    np.testing.assert_allclose(out["segmentation"].detach().numpy(),
                               _nchw(jax_out["segmentation"]), rtol=1e-4, atol=1e-4)


def _as_batched(loop, batched):
  """Loads ``loop``'s weights into the grouped-convolution twin: copy i of every grouped
  layer is encoder (or decoder) i, so the parameters concatenate along the first axis."""
  source = loop.state_dict()
  state = {}
  for name, value in batched.state_dict().items():
    for stack in ("encoders.encoders.", "decoders.decoders."):
      if name.startswith(stack) and not name.endswith("num_batches_tracked"):
        rest = name[len(stack) + 2:]
        value = torch.cat([source[f"{stack}{i}.{rest}"] for i in range(4)])
        break
    else:
      value = source[name]
    state[name] = value
  batched.load_state_dict(state)


def test_batched_encoders_and_decoders_compute_what_the_loop_computes():
  torch.manual_seed(0)
  kwargs = dict(synthesis=True, segmentation_features=FEATURES, masked_bn=True)
  loop = tt.URN(4, FEATURES, CHANNELS, **kwargs)
  batched = tt.URN(4, FEATURES, CHANNELS, batched=True, **kwargs)
  _as_batched(loop, batched)
  images = torch.randn(3, 4, 8, 8)
  mask = torch.tensor([[1, 1, 0, 1], [0, 1, 0, 0], [1, 0, 0, 1]], dtype=torch.bool)
  for train in (True, False):
    loop.train(train)
    batched.train(train)
    expected, actual = loop(images, mask), batched(images, mask)
    for name in expected:
      torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5)


def test_losses_and_fusion_equal_urn_jax():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(3, 4, 5, 5, 2)).astype(np.float32)  # [B, M, H, W, C]
  mask = np.array([[1, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
  prediction = rng.normal(size=(3, 5, 5, 4)).astype(np.float32)  # [B, H, W, M]
  target = rng.normal(size=(3, 5, 5, 4)).astype(np.float32)
  logits = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
  labels = rng.integers(0, 4, size=(2, 5, 5))

  @jax.jit
  def jax_values(z, mask, prediction, target, logits, labels):
    return (U.fuse(z, mask), U.fusion_variance(z, mask),
            U.synthesis_loss(prediction, target, mask), U.cross_entropy(logits, labels))

  fused, variance, synthesis, ce = jax_values(z, mask, prediction, target, logits, labels)
  z_twin = torch.from_numpy(np.moveaxis(z, -1, 2).copy())
  mask_twin = torch.from_numpy(mask)
  np.testing.assert_allclose(tt.fuse(z_twin, mask_twin).numpy(), _nchw(fused), atol=1e-6)
  np.testing.assert_allclose(tt.fusion_variance(z_twin, mask_twin).item(), variance, rtol=1e-5)
  np.testing.assert_allclose(
      tt.synthesis_loss(torch.from_numpy(_nchw(prediction)), torch.from_numpy(_nchw(target)),
                        mask_twin).item(), synthesis, rtol=1e-5)
  np.testing.assert_allclose(
      tt.cross_entropy(torch.from_numpy(_nchw(logits)), torch.from_numpy(labels)).item(), ce,
      rtol=1e-5)


def test_modality_dropout_draws_the_urn_jax_distribution():
  available = torch.ones(20000, 4, dtype=torch.bool)
  available[::2, 0] = False  # half the samples have three modalities
  keep = tt.modality_dropout(available, 0.8, 2, torch.Generator().manual_seed(0))
  assert not (keep & ~available).any()
  for rows, n_available in ((slice(1, None, 2), 4), (slice(0, None, 2), 3)):
    dropped = (available[rows].sum(1) - keep[rows].sum(1)).numpy()
    frequencies = np.bincount(dropped, minlength=n_available - 1) / len(dropped)
    np.testing.assert_allclose(frequencies, U.truncated_geometric_pmf(0.8, n_available - 2),
                               atol=0.02)
  # Which modalities are dropped is uniform: each of four equally often.
  drops_per_sample = np.dot(np.arange(3), U.truncated_geometric_pmf(0.8, 2))
  per_modality = (available[1::2] & ~keep[1::2]).float().mean(0).numpy()
  np.testing.assert_allclose(per_modality, drops_per_sample / 4, atol=0.02)


@pytest.mark.parametrize("kind", tt.KINDS)
def test_a_training_step_and_inference_run(kind):
  torch.manual_seed(0)
  model = tt.make(kind, FEATURES, channels=CHANNELS, masked_bn=True)
  before = [p.detach().clone() for p in model.parameters()]
  optimizer = tt.make_optimizer(model, 1e-2)
  batch = tt.random_batch(3, 8)
  batch["available"][0, 1:] = False  # a sample with one modality only
  step, _ = tt.STEPS[kind]
  model.train()
  metrics = step(model, optimizer, batch, torch.Generator().manual_seed(0))
  assert all(torch.isfinite(value).all() for value in metrics.values()), metrics
  assert all(torch.isfinite(p).all() for p in model.parameters())
  assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

  result = tt.infer(model, batch["image"], torch.tensor([True, False, True, True]))
  assert not model.training
  if kind == "urn_pretrain":
    assert result["synthesis"].shape == (3, 4, 8, 8)
  else:
    assert result["label"].shape == (3, 8, 8)
    assert result["probabilities"].shape == (3, 4, 8, 8)


def test_timing_returns_seconds_and_reports_an_unavailable_compiler(monkeypatch):
  seconds = tt.time_torch("urn_segment", FEATURES, 8, 2, repeats=1, warmup=1)
  assert seconds > 0
  assert tt.time_torch_inference("baseline", FEATURES, 8, 3, repeats=1, warmup=1) > 0

  def unavailable(*args, **kwargs):
    raise RuntimeError("no compiler here")

  monkeypatch.setattr(torch, "compile", unavailable)
  with pytest.warns(tt.CompileUnavailableWarning, match="no compiler here"):
    assert tt.time_torch("baseline", FEATURES, 8, 2, compile=True, repeats=1) is None
