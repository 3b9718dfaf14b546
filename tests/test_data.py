"""Data: discovery of every naming scheme, clear errors for bad input, pre-processing,
the cache, splits and the slice loader."""

import gzip
import json
import os
import re

import nibabel as nib
import numpy as np
import pytest
from conftest import (LPS, NAMES, SHAPE, _save, _volume, first_batches, write_brats_case,
                      write_hcp_subject, write_pooled_cache)

from urn_jax.data.cases import Case, DataError, discover_brats, discover_hcp, load_case
from urn_jax.data.grids import to_original_classes_grid, to_original_grid
from urn_jax.data.loader import SliceSource, make_loader
from urn_jax.data.preprocess import (PreprocessConfig, n4_correct, preprocess_case,
                                     preprocess_dataset, zscore)
from urn_jax.data.splits import load_or_create_split, make_split, phantom_source
from urn_jax.labels import classes_to_labels, labels_to_classes

FAST = PreprocessConfig(n4=False, size=48)


def test_discovers_every_brats_naming_scheme_nested_or_flat(tmp_path):
  write_brats_case(tmp_path / "HGG", "Brats18_2013_2_1")
  write_brats_case(tmp_path / "LGG", "Brats18_TCIA10_1_1", modalities=("t1", "t2"))
  write_brats_case(tmp_path, "BraTS2021_00000")
  write_brats_case(tmp_path, "BraTS-GLI-00000-000", scheme="2023", modalities=("flair", "t1c"))
  (tmp_path / "README.txt").write_text("not an image")
  cases, problems = discover_brats(tmp_path)
  assert problems == []
  by_id = {c.case_id: c for c in cases}
  assert set(by_id) == {"Brats18_2013_2_1", "Brats18_TCIA10_1_1", "BraTS2021_00000",
                        "BraTS-GLI-00000-000"}
  assert by_id["Brats18_2013_2_1"].available.all()
  assert by_id["Brats18_TCIA10_1_1"].available.tolist() == [False, True, False, True]
  assert by_id["BraTS-GLI-00000-000"].available.tolist() == [True, False, True, False]
  assert by_id["BraTS-GLI-00000-000"].label_convention == "brats2023"
  _, label, _, _ = load_case(by_id["BraTS-GLI-00000-000"])
  assert set(np.unique(label)) == {0, 1, 2, 3}  # label 3 of 2023 is class 3 (enhancing)


def test_case_folders_behind_symbolic_links_are_found_once(tmp_path):
  store = tmp_path / "store"
  for i in range(3):
    write_brats_case(store, f"Brats18_{i}")
  linked = tmp_path / "linked"
  linked.mkdir()
  for i in range(3):
    (linked / f"Brats18_{i}").symlink_to(store / f"Brats18_{i}", target_is_directory=True)
  (linked / "loop").symlink_to(linked, target_is_directory=True)  # must not recurse forever
  cases, problems = discover_brats(linked)
  assert problems == []
  assert sorted(c.case_id for c in cases) == ["Brats18_0", "Brats18_1", "Brats18_2"]


def test_an_unreadable_folder_is_reported_by_name(tmp_path, monkeypatch):
  write_brats_case(tmp_path, "Brats18_ok")
  write_brats_case(tmp_path, "Brats18_locked")
  scandir = os.scandir

  def locked(path="."):  # chmod 000 does not stop root, who runs CI here
    if os.fspath(path).endswith("Brats18_locked"):
      raise PermissionError(13, "Permission denied", os.fspath(path))
    return scandir(path)
  monkeypatch.setattr(os, "scandir", locked)
  cases, problems = discover_brats(tmp_path)
  assert [c.case_id for c in cases] == ["Brats18_ok"]
  assert problems == [f"cannot read folder {tmp_path / 'Brats18_locked'}: Permission denied"]


def test_discovers_hcp_subjects(tmp_path):
  write_hcp_subject(tmp_path, "100307")
  (tmp_path / "100408" / "T1w").mkdir(parents=True)
  _save(np.ones((4, 4, 4), np.int16), tmp_path / "100408/T1w/T1w_acpc_dc_restore_brain.nii.gz")
  cases, _ = discover_hcp(tmp_path)
  assert [c.case_id for c in cases] == ["100307", "100408"]
  assert cases[0].available.tolist() == [False, True, False, True]
  assert cases[1].available.tolist() == [False, True, False, False]


def test_empty_folders_are_clear_errors(tmp_path):
  with pytest.raises(DataError, match="no BraTS case found in .*Brats18_XXX_flair"):
    discover_brats(tmp_path)
  with pytest.raises(DataError, match="no HCP subject found"):
    discover_hcp(tmp_path)
  with pytest.raises(DataError, match="does not exist"):
    discover_brats(tmp_path / "nowhere")


def _corrupt(case_dir, case_id, kind):
  flair = case_dir / f"{case_id}_flair.nii.gz"
  if kind == "shape":
    _save(np.ones((10, 10, 10), np.int16), flair)
  elif kind == "affine":
    _save(_volume(0)[0].astype(np.int16), flair, np.diag([2.0, 1, 1, 1]))
  elif kind == "4d":
    _save(np.ones(SHAPE + (2,), np.int16), flair)
  elif kind == "nan":
    data = _volume(0)[0]
    data[0, 0, 0] = np.nan
    _save(data, flair)
  elif kind == "zero":
    _save(np.zeros(SHAPE, np.int16), flair)
  elif kind == "label":  # on the images' grid, with a value no convention has
    seg = case_dir / f"{case_id}_seg.nii.gz"
    _save(np.full(SHAPE, 3, np.uint8), seg, nib.load(seg).affine)
  elif kind == "label_grid":  # the right voxels, but placed 30 mm away
    seg = case_dir / f"{case_id}_seg.nii.gz"
    shifted = nib.load(seg).affine.copy()
    shifted[0, 3] += 30
    _save(np.asarray(nib.load(seg).dataobj), seg, shifted)
  elif kind == "truncated":
    raw = flair.read_bytes()
    flair.write_bytes(raw[: len(raw) // 2])
  elif kind == "garbage":
    flair.write_bytes(gzip.compress(b"this is not a nifti file" * 20))


BAD = {"shape": "has shape", "affine": "different affine", "4d": "expected a 3D volume",
       "nan": "NaN or infinite", "label": r"values \[3\]; expected",
       "label_grid": "label file .* has a different affine",
       "truncated": "cannot read flair", "garbage": "cannot read flair"}


@pytest.mark.parametrize("blank, why", [
    (np.zeros(SHAPE), "is all zeros"), (np.full(SHAPE, 100.0), r"is constant \(100 everywhere\)"),
    (100 + np.random.default_rng(0).normal(0, 0.1, SHAPE), r"is constant \(100")])
def test_a_modality_with_no_image_is_treated_as_missing_with_a_warning(tmp_path, capsys,
                                                                       blank, why):
  case_dir = write_brats_case(tmp_path / "data", "Brats18_blank")
  _save(blank.astype(np.float32), case_dir / "Brats18_blank_t2.nii.gz", LPS)
  cases, _ = discover_brats(tmp_path / "data")
  done, problems = preprocess_dataset(cases, tmp_path / "cache", FAST, progress=False)
  assert problems == [] and len(done) == 1
  meta = json.loads((done[0] / "meta.json").read_text())
  assert meta["available"] == [True, True, True, False]
  assert np.load(done[0] / "image.npy")[..., 3].max() == 0
  err = capsys.readouterr().err
  assert re.search(r"warning: case Brats18_blank: t2 file .*Brats18_blank_t2.nii.gz " + why
                   + r".*treated as missing", err), err
  for modality in ("flair", "t1", "t1c"):  # and a case with no image left is refused
    _save(np.zeros(SHAPE, np.int16), case_dir / f"Brats18_blank{NAMES['2018'][modality]}.nii.gz",
          LPS)
  done, problems = preprocess_dataset(cases, tmp_path / "cache", FAST, progress=False)
  assert done == [] and "case Brats18_blank: no usable image: flair file" in problems[0]


def test_each_bad_case_is_reported_by_name_and_the_rest_is_processed(tmp_path):
  for i, kind in enumerate(BAD):
    case_id = f"Brats18_bad_{kind}"
    _corrupt(write_brats_case(tmp_path / "data", case_id, seed=i), case_id, kind)
  write_brats_case(tmp_path / "data", "Brats18_good_1")
  write_brats_case(tmp_path / "data", "Brats18_good_2", modalities=("t1c",))
  cases, _ = discover_brats(tmp_path / "data")
  done, problems = preprocess_dataset(cases, tmp_path / "cache", FAST, progress=False)
  assert sorted(d.name for d in done) == ["Brats18_good_1", "Brats18_good_2"]
  assert len(problems) == len(BAD)
  for kind, pattern in BAD.items():
    message = next(p for p in problems if f"Brats18_bad_{kind}" in p)
    assert re.search(pattern, message), (kind, message)
    if not kind.startswith("label"):
      assert "flair" in message


def _bias(shape, strength=0.4):
  grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
  return np.exp(strength * (grid[0] + 0.5 * grid[1] ** 2 - 0.3 * grid[2]))


@pytest.mark.parametrize("shape, spacing", [((40, 36, 1), 1.0), ((8, 8, 8), 2.0)])
def test_a_volume_too_small_to_preprocess_is_refused_in_a_sentence(tmp_path, shape, spacing):
  flair = tmp_path / "Brats18_thin" / "Brats18_thin_flair.nii.gz"
  flair.parent.mkdir()
  _save(np.random.default_rng(0).uniform(1, 100, shape).astype(np.int16), flair)
  case = Case("Brats18_thin", "brats", {"flair": str(flair)})
  with pytest.raises(DataError, match=r"Brats18_thin_flair.nii.gz is .* at least 8 voxels "
                     "along every axis"):
    preprocess_case(case, PreprocessConfig(n4=True, spacing=spacing, size=48))


def test_n4_removes_most_of_a_synthetic_bias_field():
  shape = (48, 48, 32)
  grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
  r = np.sqrt((grid**2).sum(0))
  mask = r < 20
  tissue = np.where(r < 10, 150.0, 100.0)
  rng = np.random.default_rng(0)
  clean = np.where(mask, tissue + rng.normal(0, 1, shape), 0).astype(np.float32)
  biased = clean * _bias(shape)
  corrected = n4_correct(biased, mask, (1, 1, 1), shrink=2)
  outer = mask & (r > 12)

  def cv(v):
    return v[outer].std() / v[outer].mean()
  assert cv(corrected) < 0.5 * cv(biased), (cv(biased), cv(corrected), cv(clean))


def test_zscore_inside_the_mask_and_zero_outside():
  data = np.random.default_rng(0).normal(5, 3, (10, 10, 10)).astype(np.float32)
  mask = np.zeros_like(data, bool)
  mask[2:8, 2:8, 2:8] = True
  out = zscore(data, mask)
  assert abs(out[mask].mean()) < 1e-5 and abs(out[mask].std() - 1) < 1e-5
  assert (out[~mask] == 0).all()


def test_brats_prediction_maps_back_exactly(tmp_path):
  write_brats_case(tmp_path, "Brats18_x")
  case = discover_brats(tmp_path)[0][0]
  volume, label, meta = preprocess_case(case, FAST)
  assert volume.shape == (SHAPE[2], 48, 48, 4) and label.shape == (SHAPE[2], 48, 48)
  original = np.asarray(nib.load(case.label_path).dataobj)
  np.testing.assert_array_equal(classes_to_labels(to_original_grid(label, meta)), original)
  probabilities = np.eye(4, dtype=np.float32)[label]
  back = to_original_grid(probabilities, meta, order=1)
  assert back.shape == SHAPE + (4,)
  np.testing.assert_array_equal(classes_to_labels(back.argmax(-1)), original)


@pytest.mark.parametrize("kind", ["tumour", "specks everywhere", "background only"])
def test_classes_on_the_original_grid_only_interpolate_where_they_can_differ(tmp_path, kind):
  """to_original_classes_grid (interpolating around the predicted tumour only) gives the
  very classes of interpolating the whole volume and taking the argmax, for a resampled
  case: a tumour-like prediction, scattered specks (an untrained model) and none at all."""
  write_brats_case(tmp_path, "Brats18_x")
  case = discover_brats(tmp_path)[0][0]
  _, label, meta = preprocess_case(case, PreprocessConfig(n4=False, size=24, spacing=1.4))
  assert meta.resampled
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 1, label.shape + (4,)).astype(np.float32)
  if kind == "tumour":
    logits += 6 * np.eye(4, dtype=np.float32)[label]
  elif kind == "specks everywhere":
    logits[..., 0] += 1.5
  else:
    logits[..., 0] += 20
  probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  fast = to_original_classes_grid(probabilities, meta)
  slow = to_original_grid(probabilities, meta, order=1).argmax(-1)
  assert fast.dtype == np.uint8 and fast.shape == slow.shape == SHAPE
  np.testing.assert_array_equal(fast, slow)
  assert (fast != 0).any() == (kind != "background only")


def test_every_orientation_gives_the_same_slices(tmp_path):
  write_brats_case(tmp_path / "lps", "Brats18_x")
  image, label = _volume(0)
  for i, m in enumerate(("flair", "t1", "t1c", "t2")):  # the same scan stored RAS
    _save((image * (1 + 0.1 * i)).astype(np.int16)[::-1, ::-1],
          tmp_path / "ras" / "Brats18_x" / f"Brats18_x_{m.replace('t1c', 't1ce')}.nii.gz",
          np.array([[1.0, 0, 0, -SHAPE[0] + 1], [0, 1, 0, -SHAPE[1] + 1], [0, 0, 1, 0],
                    [0, 0, 0, 1]]))
  lps = preprocess_case(discover_brats(tmp_path / "lps")[0][0], FAST)[0]
  ras = preprocess_case(discover_brats(tmp_path / "ras")[0][0], FAST)[0]
  np.testing.assert_array_equal(lps, ras)


def test_hcp_is_resampled_to_1mm_keeping_physical_geometry(tmp_path):
  write_hcp_subject(tmp_path, "100307", physical=(44, 40, 36))
  case = discover_hcp(tmp_path)[0][0]
  volume, label, meta = preprocess_case(case, FAST)
  assert label is None
  original = nib.load(case.paths["t1"])
  assert volume.shape[1:] == (48, 48, 4)
  assert volume.shape[0] == int(np.ceil(original.shape[2] * 0.7))
  # The brain's centre of mass, in world millimetres, before and after.
  def centre(mask, affine):
    return (affine @ np.append(np.argwhere(mask).mean(0), 1))[:3]
  before = centre(np.asarray(original.dataobj) > 0, original.affine)
  brain = np.moveaxis(volume[..., 1] != 0, 0, 2)  # [X, Y, Z] on the window
  after = centre(brain, meta.affine("resampled")) + np.append(meta.window_start, 0)
  np.testing.assert_allclose(after, before, atol=1.0)
  back = to_original_grid(np.moveaxis(brain, 2, 0).astype(np.uint8), meta)
  assert back.shape == original.shape
  truth = np.asarray(original.dataobj) > 0
  dice = 2 * (back.astype(bool) & truth).sum() / (back.sum() + truth.sum())
  assert dice > 0.95


def test_labels_convert_between_conventions():
  assert labels_to_classes(np.array([0, 1, 2, 4])).tolist() == [0, 1, 2, 3]
  assert labels_to_classes(np.array([0, 1, 2, 3]), "brats2023").tolist() == [0, 1, 2, 3]
  assert classes_to_labels(np.array([0, 1, 2, 3])).tolist() == [0, 1, 2, 4]
  with pytest.raises(DataError, match="non-integer"):
    labels_to_classes(np.array([0.5]))


def test_cache_is_reused_resumed_and_rebuilt(tmp_path):
  for i in range(3):
    write_brats_case(tmp_path / "data", f"Brats18_{i}", seed=i)
  cases, _ = discover_brats(tmp_path / "data")
  done, _ = preprocess_dataset(cases, tmp_path / "cache", FAST, progress=False)
  stamps = {d: os.path.getmtime(d / "image.npy") for d in done}
  os.remove(done[1] / "meta.json")  # as if interrupted while writing this case
  again, _ = preprocess_dataset(cases, tmp_path / "cache", FAST, progress=False)
  assert again == done
  assert os.path.getmtime(done[0] / "image.npy") == stamps[done[0]]
  assert os.path.getmtime(done[2] / "image.npy") == stamps[done[2]]
  assert (done[1] / "meta.json").exists()
  other, _ = preprocess_dataset(cases, tmp_path / "cache", PreprocessConfig(n4=False, size=32),
                                progress=False)
  assert other[0].parent.parent != done[0].parent.parent
  assert np.load(other[0] / "image.npy").shape[1:3] == (32, 32)
  # A changed input file is processed again.
  write_brats_case(tmp_path / "data", "Brats18_0", seed=7)
  os.utime(cases[0].paths["flair"], (1, 1))
  preprocess_dataset(cases, tmp_path / "cache", FAST, progress=False)
  assert os.path.getmtime(done[0] / "image.npy") != stamps[done[0]]


def test_cases_of_one_name_in_two_folders_are_cached_apart(tmp_path):
  """Two phantoms (or two copies of a data set) name their cases alike; each keeps its own
  cached case, so preparing one never rewrites the case a job on the other is reading."""
  for folder, seed in (("site_a", 0), ("site_b", 5)):
    write_brats_case(tmp_path / folder, "Brats18_0", seed=seed)
  a_cases, b_cases = (discover_brats(tmp_path / f)[0] for f in ("site_a", "site_b"))
  (a,), _ = preprocess_dataset(a_cases, tmp_path / "cache", FAST, progress=False)
  stamp = os.path.getmtime(a / "image.npy")
  (b,), _ = preprocess_dataset(b_cases, tmp_path / "cache", FAST, progress=False)
  assert a != b and a.name == b.name == "Brats18_0"
  assert not np.array_equal(np.load(a / "image.npy"), np.load(b / "image.npy"))
  (again,), _ = preprocess_dataset(a_cases, tmp_path / "cache", FAST, progress=False)
  assert again == a and os.path.getmtime(a / "image.npy") == stamp


def test_parallel_preprocessing_gives_the_same_result(tmp_path):
  for i in range(2):
    write_brats_case(tmp_path / "data", f"Brats18_{i}", seed=i)
  cases, _ = discover_brats(tmp_path / "data")
  one, _ = preprocess_dataset(cases, tmp_path / "a", FAST, workers=1, progress=False)
  two, _ = preprocess_dataset(cases, tmp_path / "b", FAST, workers=2, progress=False)
  for a, b in zip(one, two):
    np.testing.assert_array_equal(np.load(a / "image.npy"), np.load(b / "image.npy"))


def test_split_is_deterministic_by_patient_and_read_back(tmp_path):
  ids = [f"case{i}" for i in range(20)]
  split = make_split(ids, seed=3, test_fraction=0.2)
  assert [len(split[p]) for p in ("train", "validation", "test")] == [11, 5, 4]
  assert set().union(*split.values()) == set(ids)
  assert not (set(split["train"]) & set(split["validation"]) or
              set(split["train"]) & set(split["test"]) or
              set(split["validation"]) & set(split["test"]))
  assert make_split(list(reversed(ids)), seed=3, test_fraction=0.2) == split
  assert make_split(ids, seed=4, test_fraction=0.2) != split
  assert make_split(ids, seed=3)["test"] == []  # the paper's 70/30, when asked for
  stored = load_or_create_split(tmp_path, {"brats": ids, "hcp": ["s1", "s2", "s3"]}, seed=3)
  assert stored["brats"] == split
  assert stored["hcp"]["test"] == [] and len(stored["hcp"]["train"]) == 2  # never scored
  assert json.loads((tmp_path / "split.json").read_text())["datasets"]["brats"] == split
  assert load_or_create_split(tmp_path, {"brats": ids, "hcp": ["s1", "s2", "s3"]},
                              seed=99) == stored  # read back, not re-drawn
  gone = split["validation"][0]  # removed from the data (or unusable now): left out
  fewer = load_or_create_split(tmp_path, {"brats": [i for i in ids if i != gone],
                                          "hcp": ["s1", "s2", "s3"]}, seed=3)
  assert fewer["brats"] == {part: [i for i in members if i != gone]
                            for part, members in split.items()}
  assert json.loads((tmp_path / "split.json").read_text())["datasets"]["brats"] == split


@pytest.mark.parametrize("n", [3, 4, 5, 6, 10])
def test_small_data_sets_still_get_every_part(n):
  split = make_split([f"c{i}" for i in range(n)], seed=0, test_fraction=0.2)
  assert all(len(split[p]) >= 1 for p in ("train", "validation", "test"))
  assert sum(len(v) for v in split.values()) == n


def test_a_split_file_without_test_patients_is_an_error_not_a_silent_re_split(tmp_path):
  old = {"seed": 0, "train_fraction": 0.7, "datasets": {"brats": {
      "train": ["a", "b", "c"], "validation": ["d"]}}}
  (tmp_path / "split.json").write_text(json.dumps(old))
  with pytest.raises(DataError, match="only training and validation patients.*new --workdir"):
    load_or_create_split(tmp_path, {"brats": ["a", "b", "c", "d"]}, seed=0)
  assert json.loads((tmp_path / "split.json").read_text()) == old  # untouched


def test_a_split_of_another_phantom_is_refused_on_resume(tmp_path, capsys):
  """The phantom's case ids are the same for every seed: the split file records the seed
  (and the phantom's version), and a rerun on another phantom is refused by name."""
  ids = {"brats": [f"Brats18_PHANTOM_{i:03d}" for i in range(6)]}
  seed0, seed1 = phantom_source(2, 0), phantom_source(2, 1)
  split = load_or_create_split(tmp_path, ids, seed=0, source=seed0)
  assert json.loads((tmp_path / "split.json").read_text())["source"] == {"version": 2,
                                                                          "seed": 0}
  assert load_or_create_split(tmp_path, ids, seed=0, source=seed0) == split
  for other, named in ((seed1, "the phantom version 2, seed 1"),
                       (phantom_source(3, 0), "the phantom version 3, seed 0"),
                       (phantom_source(2, 0, "b"), "the phantom version 2, seed 0, site b"),
                       (None, "folders of real data")):
    with pytest.raises(DataError, match=f"written for the phantom version 2, seed 0, but this "
                                        f"run's data are {named}"):
      load_or_create_split(tmp_path, ids, seed=0, source=other)
  older = json.loads((tmp_path / "split.json").read_text())
  del older["source"]  # a file from before the record: used, with a note
  (tmp_path / "split.json").write_text(json.dumps(older))
  capsys.readouterr()
  assert load_or_create_split(tmp_path, ids, seed=0, source=seed1) == split
  assert "does not record which phantom" in capsys.readouterr().err


@pytest.fixture
def pooled_cache(tmp_path):
  return write_pooled_cache(tmp_path, FAST)


def test_loader_shapes_and_pooled_availability(pooled_cache):
  brats, hcp = pooled_cache
  source = SliceSource(brats + hcp)
  batches = first_batches(make_loader(source, batch_size=8, seed=0), 6)
  assert batches[0]["image"].shape == (8, 48, 48, 4) and batches[0]["image"].dtype == np.float32
  assert "label" not in batches[0]
  masks = {tuple(m) for b in batches for m in b["available"].tolist()}
  assert masks == {(True, True, True, True), (False, True, False, True)}
  for b in batches:  # HCP slices hold zeros where FLAIR and T1c would be
    hcp_rows = ~b["available"][:, 0]
    assert (b["image"][hcp_rows][..., [0, 2]] == 0).all()
  labelled = SliceSource(brats, labels=True)
  batch = first_batches(make_loader(labelled, batch_size=4, seed=0), 1)[0]
  assert batch["label"].shape == (4, 48, 48) and set(np.unique(batch["label"])) <= {0, 1, 2, 3}
  with pytest.raises(DataError, match="no label"):
    SliceSource(hcp, labels=True)


def test_skip_empty_slices(pooled_cache):
  brats, _ = pooled_cache
  full, brain_only = SliceSource(brats, skip_empty=False), SliceSource(brats)
  assert len(full) == 2 * SHAPE[2] and len(brain_only) < len(full)
  assert all(full_record["image"].any() for full_record in
             (brain_only[i] for i in range(len(brain_only))))


def test_loader_is_deterministic_and_resumable(pooled_cache):
  brats, hcp = pooled_cache
  source = SliceSource(brats + hcp)
  a = first_batches(make_loader(source, 4, seed=1), 5)
  b = first_batches(make_loader(source, 4, seed=1), 5)
  c = first_batches(make_loader(source, 4, seed=2), 5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))
  iterator = iter(make_loader(source, 4, seed=1))
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  resumed = iter(make_loader(source, 4, seed=1))
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["image"], a[3]["image"])


def test_worker_processes_deliver_the_same_batches(pooled_cache):
  brats, hcp = pooled_cache
  source = SliceSource(brats + hcp)
  a = first_batches(make_loader(source, 4, seed=1, worker_count=0), 3)
  b = first_batches(make_loader(source, 4, seed=1, worker_count=2), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])


def test_hosts_share_each_global_batch_in_order(pooled_cache):
  """Two hosts' batches, stacked in host order, are one host's: the data order of a run
  does not depend on how many hosts share it (and no host reads another's slices)."""
  brats, hcp = pooled_cache
  source = SliceSource(brats + hcp)
  whole = first_batches(make_loader(source, 4, seed=3), 12)  # past the first epoch
  shards = [first_batches(make_loader(source, 4, seed=3, shard_index=i, shard_count=2), 12)
            for i in range(2)]
  assert len(source) < 12 * 4
  for n, batch in enumerate(whole):
    assert shards[0][n]["image"].shape[0] == 2
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([shards[0][n][key], shards[1][n][key]]), batch[key])
  finite = [list(make_loader(source, 4, seed=0, num_epochs=1, shard_index=i, shard_count=2))
            for i in range(2)]
  assert len(finite[0]) == len(finite[1]) == len(source) // 4
  with pytest.raises(DataError, match="cannot be shared by 3 hosts"):
    make_loader(source, 4, seed=0, shard_count=3)


def test_every_epoch_is_a_new_permutation(pooled_cache):
  brats, _ = pooled_cache
  source = SliceSource(brats)
  n = len(source)
  records = [b["image"][0].tobytes() for b in first_batches(make_loader(source, 1, seed=0), 2 * n)]
  assert len(set(records[:n])) == n and set(records[:n]) == set(records[n:])
  assert records[:n] != records[n:]


def test_prepare_data_caches_splits_and_reports(tmp_path, capsys):
  from urn_jax.data.datasets import DataSettings, prepare_data
  for i in range(5):
    write_brats_case(tmp_path / "brats", f"Brats18_{i}", seed=i)
  _corrupt(write_brats_case(tmp_path / "brats", "Brats18_bad"), "Brats18_bad", "nan")
  for i in range(3):
    write_hcp_subject(tmp_path / "hcp", f"10030{i}", seed=i)
  kwargs = dict(settings=DataSettings(brats_dir=str(tmp_path / "brats"),
                                      hcp_dir=str(tmp_path / "hcp"), preprocess=FAST),
                progress=False)
  data = prepare_data(tmp_path / "run", **kwargs)
  err = capsys.readouterr().err
  assert "1 case(s) skipped" in err and "Brats18_bad" in err
  assert [len(data["brats"][p]) for p in ("train", "validation", "test")] == [3, 1, 1]
  assert len(data["hcp"]["train"]) == 2 and len(data["hcp"]["validation"]) == 1
  assert data["hcp"]["test"] == []
  assert (tmp_path / "run" / "split.json").exists()
  assert all((d / "image.npy").exists() for d in data["brats"]["train"])
  assert prepare_data(tmp_path / "run", **kwargs) == data
