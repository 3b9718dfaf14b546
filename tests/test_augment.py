"""Data augmentation (``urn_jax.data.augment``): off is today's pipeline bit for bit; on, it is
seeded, resumable and the same with worker processes; the spatial transforms move image
and label together (left-right is axis 0), the intensity transforms leave the background
and absent modalities exactly 0."""

import dataclasses

import nibabel as nib
import ml_collections
import numpy as np
import pytest
from conftest import LPS, first_batches, load_config, write_pooled_cache
from scipy import ndimage

from urn_jax.data.augment import (INTENSITY, PROBABILITIES, SPATIAL, SWITCH, AugmentSettings,
                                  augment)
from urn_jax.data.loader import SliceSource, make_loader
from urn_jax.data.preprocess import PreprocessConfig
from urn_jax.errors import ConfigError
from urn_jax.labels import NUM_CLASSES

FAST = PreprocessConfig(n4=False, size=48)
ALL_ON = AugmentSettings(**{p: 1.0 for p in PROBABILITIES})
CLASSES = set(range(NUM_CLASSES))  # the cache holds classes 0..3 (urn_jax.labels)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """Two BraTS cases and an HCP subject, pre-processed."""
  return write_pooled_cache(tmp_path_factory.mktemp("augment"), FAST)


def _same(a, b):
  return all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
             for x, y in zip(a, b))


def _record(size=64, available=(True, False, True, True), seed=0, label=True):
  """A synthetic slice: a disc of brain (noise texture around a smooth level, per modality),
  zeros outside it and in absent modalities; channel 0 carries an off-centre ellipse whose
  thresholds are the label's classes (2 outside 1 outside 3), so that image and label can
  be checked for alignment after a transform."""
  rng = np.random.default_rng(seed)
  x, y = np.indices((size, size), np.float64)
  brain = (x - size / 2) ** 2 + (y - size / 2) ** 2 < (0.42 * size) ** 2
  ellipse = 3 - np.sqrt(((x - 0.38 * size) / (0.16 * size)) ** 2
                        + ((y - 0.6 * size) / (0.08 * size)) ** 2)
  image = np.zeros((size, size, 4), np.float32)
  for m in np.flatnonzero(available):
    image[..., m] = np.where(brain, 0.5 + 0.2 * m + 0.3 * rng.normal(size=(size, size)), 0)
  if available[0]:
    image[..., 0] = np.where(brain, np.maximum(ellipse, 0.5), 0)
  record = {"image": image, "available": np.asarray(available, bool)}
  if label:
    record["label"] = _classes(image[..., 0])
  return record


def _classes(channel):
  """The synthetic label as a function of channel 0 (see ``_record``)."""
  return np.select([channel > 2.5, channel > 2.0, channel > 1.5], [3, 1, 2], 0).astype(np.int32)


def _walk(dataset):
  yield dataset
  for parent in dataset.parents:
    yield from _walk(parent)


def test_off_is_the_pipeline_without_augmentation(cache):
  brats, hcp = cache
  source = SliceSource(brats, labels=True)
  plain = make_loader(source, 4, seed=1)
  off = make_loader(source, 4, seed=1, augment=AugmentSettings())
  assert _same(first_batches(plain, 8), first_batches(off, 8))  # past the first epoch
  assert not any("RandomMap" in type(d).__name__ for d in _walk(off))
  assert any("RandomMap" in type(d).__name__ for d in _walk(
      make_loader(source, 4, seed=1, augment=AugmentSettings(p_noise=0.1))))
  record, rng = source[0], np.random.default_rng(0)
  state = rng.bit_generator.state
  assert augment(record, rng, AugmentSettings()) is record
  assert rng.bit_generator.state == state  # nothing drawn


def test_augmented_batches_depend_on_the_seed_only_and_every_epoch_differs(cache):
  brats, hcp = cache
  source = SliceSource(brats + hcp)
  settings = AugmentSettings.typical()
  a = first_batches(make_loader(source, 4, seed=1, augment=settings), 4)
  b = first_batches(make_loader(source, 4, seed=1, augment=settings), 4)
  c = first_batches(make_loader(source, 4, seed=2, augment=settings), 4)
  assert _same(a, b) and not _same(a, c)
  assert not _same(a, first_batches(make_loader(source, 4, seed=1), 4))
  for x, y in zip(a, first_batches(make_loader(source, 4, seed=1), 4)):  # the same slices
    np.testing.assert_array_equal(x["available"], y["available"])
  n = len(source)  # unshuffled: slice i comes again at n + i, transformed anew
  stream = make_loader(source, 1, seed=0, shuffle=False, augment=AugmentSettings(p_noise=1.0))
  records = [b["image"][0] for b in first_batches(stream, n + 3)]
  assert not any(np.array_equal(records[i], records[n + i]) for i in range(3))


def test_an_augmented_loader_resumes_where_it_stopped(cache):
  brats, _ = cache
  source = SliceSource(brats, labels=True)
  settings = AugmentSettings.typical()
  whole = first_batches(make_loader(source, 4, seed=3, augment=settings), 6)
  iterator = iter(make_loader(source, 4, seed=3, augment=settings))
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  resumed = iter(make_loader(source, 4, seed=3, augment=settings))
  resumed.set_state(state)
  assert _same([next(resumed) for _ in range(3)], whole[3:])


def test_hosts_see_their_share_of_the_same_augmentedfirst_batches(cache):
  """The draws follow a slice's place in the global stream: two hosts' shards stack up to
  one host's batches."""
  brats, hcp = cache
  source = SliceSource(brats + hcp)
  settings = AugmentSettings.typical()
  whole = first_batches(make_loader(source, 4, seed=5, augment=settings), 3)
  shards = [first_batches(make_loader(source, 4, seed=5, augment=settings, shard_index=i,
                                 shard_count=2), 3) for i in range(2)]
  for n, batch in enumerate(whole):
    np.testing.assert_array_equal(
        np.concatenate([shards[0][n]["image"], shards[1][n]["image"]]), batch["image"])


@pytest.mark.slow  # starts worker processes
def test_worker_processes_deliver_the_same_augmentedfirst_batches(cache):
  brats, hcp = cache
  source = SliceSource(brats + hcp)
  settings = AugmentSettings.typical()
  whole = first_batches(make_loader(source, 4, seed=5, augment=settings), 3)
  workers = first_batches(make_loader(source, 4, seed=5, augment=settings, worker_count=2), 3)
  assert _same(whole, workers)


def test_axis_0_of_a_slice_runs_from_the_patients_left_to_right(cache):
  """The orientation the flip relies on, checked on a pre-processed BraTS case: conftest's
  cases are brighter where their first voxel index is past the middle, and their files'
  axes are LPS, so the bright half is the patient's left (RAS world x < 0). Pre-processing
  turns cases to RAS and cuts along Z: the bright half must be at the low end of axis 0 of
  a record, and a flip must move it to the high end."""
  brats, _ = cache
  bright_voxel = nib.affines.apply_affine(LPS, [30, 18, 6])  # past the middle of axis 0
  assert bright_voxel[0] < 0  # world x < 0: the patient's left
  source = SliceSource(brats[:1], labels=True)
  record = source[len(source) // 2]
  image, h = record["image"][..., 1], record["image"].shape[0]
  assert image[: h // 2].sum() > image[h // 2:].sum() + 1.0  # left half (low x) brighter
  flipped = augment(record, np.random.default_rng(0), AugmentSettings(p_flip=1.0))
  np.testing.assert_array_equal(flipped["image"], record["image"][::-1])
  np.testing.assert_array_equal(flipped["label"], record["label"][::-1])


def test_a_flip_moves_a_marked_voxel_in_the_image_and_the_label_alike():
  record = _record()
  record["image"][5, 9, :] = [7, 0, 7, 7]
  record["label"][5, 9] = 3
  out = augment(record, np.random.default_rng(0), AugmentSettings(p_flip=1.0))
  assert out["image"][64 - 1 - 5, 9].tolist() == [7, 0, 7, 7]
  assert out["label"][64 - 1 - 5, 9] == 3
  np.testing.assert_array_equal(out["image"][..., 1], 0)  # absent modality
  assert out["available"] is record["available"]
  assert record["image"][5, 9, 0] == 7 and out["image"][5, 9, 0] != 7  # input untouched


@pytest.mark.parametrize("settings", [
    AugmentSettings(p_rotate=1.0, rotate_degrees=(20.0, 40.0)),
    AugmentSettings(p_scale=1.0, scale=(0.7, 1.4)),
    AugmentSettings(p_elastic=1.0, elastic_alpha=(150.0, 200.0), elastic_sigma=(6.0, 6.0)),
    ALL_ON.only("spatial"),
], ids=["rotate", "scale", "elastic", "all_spatial"])
def test_spatial_transforms_keep_the_classes_and_image_and_label_aligned(settings):
  """The label (nearest neighbour) stays the image's (linear) thresholded, except within a
  voxel of a class boundary; a label left behind, or moved otherwise, would not."""
  record = _record()
  for seed in range(4):
    out = augment(record, np.random.default_rng(seed), settings)
    label = out["label"]
    assert set(np.unique(label)) <= CLASSES and label.dtype == record["label"].dtype
    assert not np.array_equal(label, record["label"])  # it did move
    mismatch = _classes(out["image"][..., 0]) != label
    edges = np.zeros_like(mismatch)
    for axis in (0, 1):
      step = np.diff(label, axis=axis) != 0
      edges |= np.pad(step, [(0, 1) if a == axis else (0, 0) for a in (0, 1)])
      edges |= np.pad(step, [(1, 0) if a == axis else (0, 0) for a in (0, 1)])
    near_edges = ndimage.binary_dilation(edges)
    assert not (mismatch & ~near_edges).any()
    assert mismatch.sum() <= 0.35 * (label > 0).sum()
    np.testing.assert_array_equal(out["image"][..., 1], 0)
    two = dict(record, label=np.where(record["label"] > 0, 3, 0).astype(np.int32))
    assert set(np.unique(augment(two, np.random.default_rng(seed), settings)["label"])) == {0, 3}


def test_the_affine_and_the_grid_sampling_agree():
  """Without elastic deformation the positions are computed by affine_transform, with it
  from a grid: both must sample the same place."""
  from urn_jax.data import augment as module
  record, settings = _record(), AugmentSettings(p_rotate=1.0, p_scale=1.0)
  matrix, offset = module._sampling((64, 64), np.random.default_rng(1), settings)
  grid = np.einsum("ij,jhw->ihw", matrix, np.indices((64, 64), np.float64)) + offset[:, None, None]
  channel = record["image"][..., 0]
  np.testing.assert_allclose(module._resample(channel, (matrix, offset), 1),
                             module._resample(channel, grid, 1), atol=1e-5)


def _foreground(image, available):
  return (image[..., np.flatnonzero(available)] != 0).any(-1)


@pytest.mark.parametrize("p", INTENSITY)
def test_each_intensity_transform_changes_only_the_foreground_of_present_modalities(p):
  record = _record()
  big = dict(bias_strength=(0.3, 0.3), noise_std=(0.1, 0.1), brightness_shift=(0.5, 0.5),
             contrast_factor=(1.25, 1.25), lowres_factor=(2.0, 2.0), gamma=(1.5, 1.5))
  out = augment(record, np.random.default_rng(0), AugmentSettings(**{p: 1.0}, **big))
  before, after = record["image"], out["image"]
  foreground = _foreground(before, record["available"])
  assert after.dtype == np.float32 and (after[~foreground] == 0).all()
  np.testing.assert_array_equal(after[..., 1], 0)
  for m in (0, 2, 3):
    values, former = after[..., m][foreground], before[..., m][foreground]
    if p in ("p_bias", "p_contrast"):  # the minimum stays (fixed point; clipping), and
      above = former > former.min()   # it is channel 0's floor
      values, former = values[above], former[above]
    if p == "p_histogram":  # both ends of the range stay (the map's fixed points)
      inside = (former > former.min()) & (former < former.max())
      values, former = values[inside], former[inside]
    assert (values != former).mean() > 0.5
  np.testing.assert_array_equal(out["label"], record["label"])
  np.testing.assert_array_equal(out["available"], record["available"])
  if p == "p_brightness":
    present = [0, 2, 3]
    np.testing.assert_allclose(after[foreground][:, present] - before[foreground][:, present],
                               0.5, atol=1e-5)
  if p == "p_gamma":  # nnU-Net's retain_stats: mean and standard deviation kept
    for m in (0, 2, 3):
      values, former = after[..., m][foreground], before[..., m][foreground]
      assert values.mean() == pytest.approx(former.mean(), abs=1e-4)
      assert values.std() == pytest.approx(former.std(), rel=1e-3)


def test_the_histogram_shift_is_monotone_keeps_the_range_and_leaves_earlier_draws_alone():
  """A monotone map of each present channel onto its own range, which changes the tissues'
  contrasts relative to one another; appended last, it leaves every other transform's draws
  as they were: with it on, each channel is a monotone map of the image without it."""
  record = _record()
  foreground = _foreground(record["image"], record["available"])
  alone = augment(record, np.random.default_rng(0), AugmentSettings(p_histogram=1.0))
  for m in (0, 2, 3):
    former, values = record["image"][..., m][foreground], alone["image"][..., m][foreground]
    order = np.argsort(former, kind="stable")
    assert (np.diff(values[order]) >= -1e-5).all()
    assert values.min() == pytest.approx(former.min(), abs=1e-5)
    assert values.max() == pytest.approx(former.max(), abs=1e-5)
    points = former.min() + np.ptp(former) * np.array([0.3, 0.5, 0.7])
    mapped = np.interp(points, former[order], values[order])
    assert (mapped[1] - mapped[0]) / (mapped[2] - mapped[1]) != pytest.approx(1.0, rel=0.05)
  everything = dataclasses.replace(ALL_ON, p_histogram=0.0)
  without = augment(record, np.random.default_rng(3), everything)["image"]
  shifted = augment(record, np.random.default_rng(3),
                    dataclasses.replace(everything, p_histogram=1.0))["image"]
  moved = _foreground(without, record["available"])
  for m in (0, 2, 3):
    order = np.argsort(without[..., m][moved], kind="stable")
    assert (np.diff(shifted[..., m][moved][order]) >= -1e-5).all()
    assert not np.allclose(shifted[..., m], without[..., m])


def test_after_a_spatial_transform_the_background_stays_exactly_zero():
  """The spatial draws come first, so the same generator with the intensity transforms off
  gives the same geometry: its background must stay 0 with them on."""
  record = _record()
  for seed in range(4):
    both = augment(record, np.random.default_rng(seed), ALL_ON)
    moved = augment(record, np.random.default_rng(seed), ALL_ON.only("spatial"))
    np.testing.assert_array_equal(both["label"], moved["label"])
    background = ~_foreground(moved["image"], record["available"])
    assert background.sum() > 100 and (both["image"][background] == 0).all()
    np.testing.assert_array_equal(both["image"][..., 1], 0)
    assert not np.array_equal(both["image"], moved["image"])


def _fine_detail(channel, inside):
  """Mean squared difference of neighbours within ``inside``: high-frequency energy."""
  dx, dy = np.diff(channel, axis=0)[:, :-1], np.diff(channel, axis=1)[:-1]
  return float(((dx ** 2 + dy ** 2)[inside[:-1, :-1]]).mean())


def test_low_resolution_and_blur_remove_fine_detail_that_noise_adds():
  record = _record()
  inside = ndimage.binary_erosion(_foreground(record["image"], record["available"]),
                                  iterations=4)
  detail = {}
  for name, settings in [("lowres", AugmentSettings(p_lowres=1.0, lowres_factor=(2.0, 2.0))),
                         ("blur", AugmentSettings(p_blur=1.0)),
                         ("noise", AugmentSettings(p_noise=1.0, noise_std=(0.3, 0.3)))]:
    out = augment(record, np.random.default_rng(0), settings)
    detail[name] = _fine_detail(out["image"][..., 2], inside)
  before = _fine_detail(record["image"][..., 2], inside)
  assert detail["lowres"] < 0.5 * before and detail["blur"] < 0.5 * before
  assert detail["noise"] > 1.5 * before


def test_a_pretraining_record_without_a_label_is_transformed_whole(cache):
  """Pre-training's input is also its synthesis target: every modality moves alike."""
  record = _record(label=False)
  out = augment(record, np.random.default_rng(0), AugmentSettings(p_flip=1.0))
  assert "label" not in out
  np.testing.assert_array_equal(out["image"], record["image"][::-1])
  out = augment(record, np.random.default_rng(0), ALL_ON)
  assert "label" not in out and out["image"].shape == record["image"].shape
  np.testing.assert_array_equal(out["image"][..., 1], 0)
  brats, hcp = cache
  batch = first_batches(make_loader(SliceSource(brats + hcp), 4, seed=0, augment=ALL_ON), 1)[0]
  assert "label" not in batch and batch["image"].shape == (4, 48, 48, 4)
  hcp_rows = ~batch["available"][:, 0]
  assert (batch["image"][hcp_rows][..., [0, 2]] == 0).all()


def test_clean_targets_keep_the_spatial_transforms_and_drop_the_intensity_ones(cache):
  """With ``clean_targets`` a pre-training record's synthesis target is its slice moved as
  the input was, without the intensity transforms the input got; the synthesis loss reads
  it. Segmentation records get no target; without the setting nothing changes."""
  import jax.numpy as jnp
  from urn_jax.training.steps import pretrain_objective
  settings = dataclasses.replace(ALL_ON.only("intensity"), p_flip=1.0, clean_targets=True)
  record = _record(label=False)
  out = augment(record, np.random.default_rng(0), settings)
  np.testing.assert_array_equal(out["target"], record["image"][::-1])
  assert not np.allclose(out["image"], out["target"])
  dirty = augment(record, np.random.default_rng(0),
                  dataclasses.replace(settings, clean_targets=False))
  assert "target" not in dirty
  np.testing.assert_array_equal(dirty["image"], out["image"])  # the same draws either way
  assert "target" not in augment(_record(), np.random.default_rng(0), settings)
  batch = {k: jnp.asarray(v)[None] for k, v in out.items()}
  keep = batch["available"]
  prediction = {"synthesis": batch["target"], "z_tilde": jnp.zeros((1, 4, 8, 8, 2))}
  loss, _ = pretrain_objective(prediction, batch, keep)
  assert float(loss) == 0.0  # a perfect synthesis of the clean target
  del batch["target"]
  assert float(pretrain_objective(prediction, batch, keep)[0]) > 0.01
  brats, hcp = cache
  first = first_batches(make_loader(SliceSource(brats + hcp), 4, seed=0, augment=settings), 1)[0]
  assert first["target"].shape == first["image"].shape == (4, 48, 48, 4)


def test_the_config_block_holds_the_settings_and_is_checked_by_name():
  """The CPU sizes augment with ``typical``'s probabilities (pre-training too), the paper's
  size not at all; ``enabled`` False turns a CPU recipe's augmentation off."""
  from urn_jax.training.config_checks import check_training_config
  for job, arg in (("segment", ""), ("segment", "urn_md,small"), ("pretrain", "small")):
    config = load_config(job, arg)
    assert AugmentSettings.from_config(config.augment) == AugmentSettings.typical(), arg
  assert AugmentSettings.from_config(load_config("segment", "paper").augment) == (
      AugmentSettings())
  config = load_config("segment")
  assert set(config.augment.keys()) == {f.name for f in dataclasses.fields(AugmentSettings)
                                        } | {SWITCH}
  check_training_config(config)
  config.augment.enabled = False
  assert not AugmentSettings.from_config(config.augment).active
  assert config.augment.p_flip == 0.5  # the probabilities stay as they were
  blocks = config.augment
  config.augment = ml_collections.ConfigDict({**blocks.to_dict(), "enabled": "no"})  # as JSON
  with pytest.raises(ConfigError, match="augment.enabled must be True or False"):
    check_training_config(config)
  config.augment = ml_collections.ConfigDict({**blocks.to_dict(), "clean_targets": 1})
  with pytest.raises(ConfigError, match="augment.clean_targets must be True or False"):
    check_training_config(config)
  config.augment = blocks
  config.augment.enabled = True
  config.augment.p_flip = 1.5
  config.augment.scale = (1.4, 0.7)
  config.augment.noise_std = (-0.1, 0.1)
  config.augment.bias_degree = 0
  config.augment.histogram_points = 2
  config.augment.p_flp = 0.5
  with pytest.raises(ConfigError) as error:
    check_training_config(config)
  message = str(error.value)
  assert "6 config fields" in message
  for field in ("augment.p_flip must be a probability in [0, 1]", "augment.scale must be",
                "augment.noise_std must be", "augment.bias_degree must be",
                "augment.histogram_points must be", "augment.p_flp is not a setting"):
    assert field in message
  settings = AugmentSettings.from_config({"p_gamma": 1, "gamma": [0.8, 1.2]})
  assert settings.gamma == (0.8, 1.2) and settings.p_gamma == 1.0


def test_spatial_and_intensity_split_the_settings():
  assert all(getattr(ALL_ON.only("spatial"), p) == (p in SPATIAL) for p in PROBABILITIES)
  assert all(getattr(ALL_ON.only("intensity"), p) == (p in INTENSITY) for p in PROBABILITIES)
