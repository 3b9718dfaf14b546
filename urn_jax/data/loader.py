"""The slice loader: 2D axial slices from the pre-processed cache, with grain.

``SliceSource`` is a grain random-access source over cached cases: record ``i`` is one axial
slice, ``{"image": float32 [H, W, M], "available": bool [M]}`` plus ``"label"`` int32
``[H, W]`` when labels are asked for. Cases of different data sets (BraTS with four
modalities, HCP with T1 and T2) can be pooled in one source; their availability masks travel
with each slice, so a batch mixes them freely. Volumes are memory-mapped, opened lazily in
each worker process.

``make_loader`` turns it into a grain pipeline: shuffled by a seed, augmented if asked
(``urn_jax.data.augment``; training only), batched, worker processes, infinite by default;
the iterator's ``get_state()`` / ``set_state()`` make it resumable. Across hosts, the order
is global: every process shuffles the same way and takes its share of each global batch,
so a run's batches are the same on one host or several.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grain
import numpy as np
from absl import flags

from urn_jax.data.augment import AugmentSettings, augmenter
from urn_jax.data.meta import CaseMeta
from urn_jax.errors import DataError


class SliceSource(grain.sources.RandomAccessDataSource):
  """Axial slices of cached cases.

  Args:
    case_dirs: directories written by ``preprocess_dataset``.
    labels: yield ``"label"``; every case must then have one.
    skip_empty: leave out slices with no brain.
  """

  def __init__(self, case_dirs, labels: bool = False, skip_empty: bool = True):
    self.case_dirs = [str(d) for d in case_dirs]
    if not self.case_dirs:
      raise DataError("no case to load slices from")
    self.labels = labels
    self.metas = [CaseMeta.read(d) for d in self.case_dirs]
    sizes = {m.size for m in self.metas}
    if len(sizes) != 1:
      raise DataError(f"cached cases have different slice sizes {sorted(sizes)}; "
                      "pre-process them with the same settings")
    if labels:
      unlabelled = [m.case_id for m in self.metas if not m.has_label]
      if unlabelled:
        raise DataError(f"{len(unlabelled)} case(s) have no label, e.g. {unlabelled[0]}; "
                        "segmentation needs labelled cases")
    index = []
    for c, meta in enumerate(self.metas):
      slices = meta.brain_slices if skip_empty else range(meta.num_slices)
      index.extend((c, z) for z in slices)
    self.index = np.asarray(index, np.int64).reshape(-1, 2)
    self.available = np.asarray([m.available for m in self.metas], bool)
    self._open, self._opening = {}, threading.Lock()

  def __len__(self):
    return len(self.index)

  def _arrays(self, c):
    if c not in self._open:
      # One thread at a time: grain reads a batch's slices in threads, and np.load's header
      # parse (ast.literal_eval) failed once in such a thread under CPython 3.11 with
      # "SystemError: AST constructor recursion depth mismatch", a parser state shared
      # between threads that parse at once.
      with self._opening:
        if c not in self._open:
          d = Path(self.case_dirs[c])
          self._open[c] = (np.load(d / "image.npy", mmap_mode="r"),
                           np.load(d / "label.npy", mmap_mode="r") if self.labels else None)
    return self._open[c]

  def __getitem__(self, i):
    c, z = self.index[i]
    image, label = self._arrays(int(c))
    record = {"image": np.array(image[z], np.float32), "available": self.available[c]}
    if self.labels:
      record["label"] = np.array(label[z], np.int32)
    return record

  def __getstate__(self):  # memory maps (and the lock) are not sent to worker processes
    return {k: v for k, v in self.__dict__.items() if k not in ("_open", "_opening")}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open, self._opening = {}, threading.Lock()

  def __repr__(self):
    return f"SliceSource({len(self.case_dirs)} cases, {len(self)} slices)"


def make_loader(source: SliceSource, batch_size: int, seed: int, shuffle: bool = True,
                num_epochs: int | None = None, worker_count: int = 0,
                shard_index: int = 0, shard_count: int = 1, drop_remainder: bool = True,
                augment: AugmentSettings | None = None):
  """Batches ``{"image": [B, H, W, M], "available": [B, M], "label": [B, H, W]}`` as a grain
  ``IterDataset``: ``iter()`` it, and the iterator's ``get_state()`` / ``set_state()`` save
  and restore the position. Each epoch is shuffled anew; ``num_epochs=None`` repeats
  forever. The batches depend only on the seed, not on ``worker_count``: workers prepare
  whole batches in turn, and grain returns them in order.

  ``batch_size`` is the global batch; host ``shard_index`` of ``shard_count`` gets rows
  ``shard_index * b .. (shard_index + 1) * b - 1`` (``b = batch_size / shard_count``) of
  each one, and reads only those slices. Stacked in host order, the shards' batches are the
  unsharded loader's: a run's data order does not depend on how many hosts share it.

  ``augment`` (training only) transforms each slice after shuffling and repeating, before
  batching, with grain's ``random_map``: slice ``k`` of the repeated stream draws from a
  generator seeded by ``augment_seed(seed)`` and ``k``, so each epoch augments each slice
  differently, and the batches still depend only on the seed (not on workers, hosts, or
  where a run was resumed). Settings that are all off (or None) leave the pipeline as it
  is without them, batch for batch.
  """
  if batch_size % shard_count:
    raise DataError(f"a batch of {batch_size} cannot be shared by {shard_count} hosts")
  if len(source) < batch_size and drop_remainder:
    raise DataError(f"{source!r} has fewer slices than one batch of {batch_size}")
  if worker_count and not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags; outside an absl app (a notebook, pytest)
    # nothing has parsed them, and every flag keeps its default.
    flags.FLAGS.mark_as_parsed()
  dataset = grain.MapDataset.source(source)
  if shuffle:
    dataset = dataset.shuffle(seed=seed)
  local = batch_size // shard_count
  dataset = dataset.repeat(num_epochs)
  if augment is not None and augment.active:
    dataset = dataset.random_map(augmenter(augment), seed=augment_seed(seed))
  dataset = dataset.batch(local, drop_remainder=drop_remainder)
  if shard_count > 1:  # global batch j is the local batches j * count .. j * count + count - 1
    dataset = dataset[:len(dataset) - len(dataset) % shard_count][shard_index::shard_count]
  dataset = dataset.to_iter_dataset()
  if worker_count:
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return dataset


_AUGMENT_STREAM = 0x61756731  # "aug1": the augmentation's seed is (seed, this)


def augment_seed(seed: int) -> int:
  """The seed of the loader's augmentation: derived from ``seed`` (a 32-bit integer, as
  grain asks) rather than equal to it, so that its draws are no copy of the shuffle's."""
  return int(np.random.SeedSequence([seed % 2**64, _AUGMENT_STREAM]).generate_state(1)[0])
