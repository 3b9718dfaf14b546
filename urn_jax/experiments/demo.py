"""A short demonstration of the library's mechanics on a toy problem (``configs/demo.py``).

Toy "patients": random 2D shapes made of three tissues and a lesion, seen through four
contrasts that order the tissues differently (as FLAIR, T1, T1c and T2 do). A small URN is
pre-trained by synthesis with modality dropout (theta 0.8, at least two kept), then every
one of the 15 combinations of inputs is fused and decoded by one compiled function; the
demo prints the synthesis error of each combination. It shows the paper's mechanics -
dropout, f-mean fusion of whatever is present, one network for every combination - not
its results.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import urn_jax as U
from urn_jax.files import write_text_atomically

# Intensity of background, tissue A, tissue B, fluid, lesion in each contrast.
_CONTRASTS = np.array([
    [0.0, 0.6, 0.8, 0.1, 1.0],   # FLAIR-like: fluid dark, lesion bright
    [0.0, 0.9, 0.6, 0.2, 0.5],   # T1-like
    [0.0, 0.9, 0.6, 0.2, 0.9],   # T1c-like
    [0.0, 0.5, 0.7, 1.0, 0.9],   # T2-like: fluid bright
], np.float32)


def toy_slices(rng, count: int, size: int):
  """Images [count, size, size, 4] and tissue maps [count, size, size]."""
  yy, xx = np.mgrid[:size, :size] / size - 0.5
  tissues = np.zeros((count, size, size), np.int32)
  for i in range(count):
    radius = 0.35 + 0.08 * rng.random()
    tissues[i][np.hypot(yy, xx) < radius] = 1
    tissues[i][np.hypot(yy * 1.3, xx) < radius * 0.7] = 2
    tissues[i][np.hypot(yy, xx * 3) < 0.08 + 0.05 * rng.random()] = 3
    cy, cx = rng.uniform(-0.2, 0.2, 2)
    tissues[i][np.hypot(yy - cy, xx - cx) < 0.05 + 0.08 * rng.random()] = 4
  images = _CONTRASTS.T[tissues] + 0.05 * rng.normal(size=tissues.shape + (4,))
  return images.astype(np.float32), tissues


def run(config, workdir: str):
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(config.seed)
  images, _ = toy_slices(rng, config.num_slices, config.size)
  model = U.URN(encoder_features=tuple(config.features), segmentation_features=None)
  state = U.create_train_state(model, jax.random.key(config.seed),
                               (config.batch_size,) + images.shape[1:], config.learning_rate)
  key = jax.random.key(config.seed + 1)
  available = jnp.ones((config.batch_size, 4), bool)
  start = time.time()
  for step in range(config.steps):
    index = rng.choice(len(images), config.batch_size, replace=False)
    batch = {"image": jnp.asarray(images[index]), "available": available}
    state, metrics = U.pretrain_step(state, batch, jax.random.fold_in(key, step),
                                     theta=0.8, min_keep=2, variance_weight=1e-4)
    if step % max(config.steps // 10, 1) == 0 or step == config.steps - 1:
      print(f"step {step:4d}  reconstruction {float(metrics['reconstruction']):.4f}  "
            f"variance {float(metrics['variance']):.4f}  ({time.time() - start:.0f} s)",
            flush=True)

  test, _ = toy_slices(np.random.default_rng(config.seed + 100), 16, config.size)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  rows = []
  print("\ninputs            mean abs. synthesis error of each modality (F, T1, T1c, T2)")
  for mask in U.availability_masks():
    synthesis = U.infer(model, variables, jnp.asarray(test), jnp.asarray(mask))["synthesis"]
    errors = np.abs(np.asarray(synthesis) - test).mean(axis=(0, 1, 2))
    rows.append({"inputs": U.mask_name(mask), "error": errors.round(4).tolist()})
    print(f"{U.mask_symbols(mask)}   " + "  ".join(f"{e:.3f}" for e in errors))
  print(f"\ncompilations of infer for all 15 combinations: {U.infer._cache_size()}")
  out = workdir / "demo_results.json"
  write_text_atomically(out, json.dumps(rows, indent=1))
  print(f"results written to {out}")
  return rows
