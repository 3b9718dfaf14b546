"""What do frozen pre-trained encoders give the segmentation? Probes of the unified
representation, run by the study as it seals each URN (``urn_jax.experiments.archive``).

- **Linear probe**: a 1x1 convolution (multinomial logistic regression per voxel, ``C -> 4``
  classes) fitted on the unified representation ``z`` of the training patients' slices with
  all four modalities, scored by Dice (pooled over the test patients' slices) of WT, TC
  and ET. The same probe on the representation of every URN of the study: the pooled and
  the BraTS-only pre-training (the encoders ``urn_md_pretrained`` freezes), the end-to-end
  URN + MD and the fine-tuned URN. A probe reads what the representation makes *linearly*
  available; the segmentation U-Net on top can do more, so probes rank representations,
  not models.
- **Batch-norm statistics**: the pre-trained encoders run in inference mode with running
  statistics gathered during pre-training, from BraTS and (pooled) HCP slices. The probe is
  fitted again after re-estimating those statistics on BraTS training slices alone
  (``reestimate_batch_stats``). A fitted linear read-out, standardized or not, absorbs a
  per-channel shift and scale of the features, as the decoder trained on frozen encoders
  does: a change here is what the re-estimation changes beyond that, through the
  encoders' nonlinearities, not whether the pooled statistics misplace BraTS images.
- **Synthesis on tumour and healthy voxels**: PSNR of each modality synthesized from the
  other three by each pre-training, with the mean squared error taken over tumour voxels
  and over healthy brain voxels separately, both against the brain's intensity range (so
  the two are comparable). Pooled over all test slices with one range, unlike Table 2's
  per-case PSNR (both ``urn_jax.metrics.psnr``): compare tumour with healthy here, not these
  numbers with Table 2's. Pre-training never sees a label; a representation that encodes
  tumour poorly shows as a lower PSNR on tumour.

Slices are those of the pre-processed cases (the study's grid); every number is on the
study's test patients, never on those that chose checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from urn_jax.data.datasets import data_from_config, held_out_patients
from urn_jax.data.loader import SliceSource
from urn_jax.files import write_text_atomically
from urn_jax.inference.predict import predict_slices
from urn_jax.labels import NUM_CLASSES, REGIONS, region_mask
from urn_jax.metrics import dice, psnr
from urn_jax.modalities import MODALITIES

PROBE_PIXELS = 400_000  # training voxels the probe is fitted on (sampled from the brain)
PROBE_SLICES = 2_000  # at most this many training slices (random) feed the probe: memory


def slices(case_dirs, labels=True, limit=None, seed=0) -> dict:
  """The brain slices of ``case_dirs`` (at most ``limit``, drawn at random without
  replacement, in their order): ``image [N, H, W, M]``, ``label [N, H, W]`` (with
  ``labels``), ``available [N, M]``."""
  source = SliceSource(case_dirs, labels=labels)
  chosen = range(len(source))
  if limit and len(source) > limit:
    chosen = np.sort(np.random.default_rng(seed).choice(len(source), limit, replace=False))
  records = [source[int(i)] for i in chosen]
  return {k: np.stack([r[k] for r in records]) for k in records[0]}


def representation(model, variables, images, mask=None) -> np.ndarray:
  """The unified representation ``z [N, H, W, C]`` of ``images`` with the modalities of
  ``mask`` (default: all), the encoders in inference mode."""
  mask = np.ones(len(MODALITIES), bool) if mask is None else np.asarray(mask, bool)
  return predict_slices(model, variables, images, mask, keys=("z",))["z"]


def reestimate_batch_stats(model, variables, images, batch=32, passes=400, seed=0) -> dict:
  """``variables`` with the encoders' batch-norm running statistics re-estimated on
  ``images`` (all modalities): ``passes`` training-mode forward passes of random batches,
  whose momentum of 0.99 leaves 0.99**400 = 2 % of the old statistics. Parameters are
  unchanged."""
  step = jax.jit(lambda v, x, m: model.apply(v, x, m, train=True, mutable=["batch_stats"])[1])
  rng = np.random.default_rng(seed)
  stats = variables["batch_stats"]
  mask = jnp.ones((batch, len(MODALITIES)), bool)
  for _ in range(passes):
    x = jnp.asarray(images[rng.choice(len(images), batch)])
    stats = step({**variables, "batch_stats": stats}, x, mask)["batch_stats"]
  # Only the encoders' statistics matter to z; the decoders' are kept as they were.
  stats = dict(stats)
  merged = dict(variables["batch_stats"])
  merged["encoders"] = stats["encoders"]
  return {**variables, "batch_stats": merged}


def _brain(images):
  return np.any(images != 0, axis=-1)


@functools.partial(jax.jit, static_argnames="learning_rate")
def _probe_update(params, state, x, y, learning_rate):
  """One Adam step of the probe's cross-entropy. The voxels are arguments, not constants
  captured by a closure: XLA would fold a 400000-voxel constant at every compilation, and
  each probe would compile anew."""
  def loss(p):
    return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()

  value, grads = jax.value_and_grad(loss)(params)
  updates, state = optax.adam(learning_rate).update(grads, state)
  return optax.apply_updates(params, updates), state, value


def fit_probe(z, labels, brain, steps=600, learning_rate=0.05, seed=0):
  """A 1x1 convolution ``(weights [C, K], bias [K])`` fitted by Adam on cross-entropy over
  up to ``PROBE_PIXELS`` brain voxels of ``z [N, H, W, C]`` sampled at random; the features
  are standardized first (their mean and scale are part of the probe)."""
  x = z[brain].astype(np.float32)
  y = labels[brain].astype(np.int32)
  rng = np.random.default_rng(seed)
  if len(x) > PROBE_PIXELS:
    keep = rng.choice(len(x), PROBE_PIXELS, replace=False)
    x, y = x[keep], y[keep]
  mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
  x = jnp.asarray((x - mean) / scale)
  y = jnp.asarray(y)
  params = {"w": jnp.zeros((x.shape[1], NUM_CLASSES)), "b": jnp.zeros(NUM_CLASSES)}
  state = optax.adam(learning_rate).init(params)
  for _ in range(steps):
    params, state, value = _probe_update(params, state, x, y, learning_rate)
  return {"mean": mean, "scale": scale, "w": np.asarray(params["w"]),
          "b": np.asarray(params["b"]), "loss": float(value)}


def probe_dice(probe, z, labels, brain) -> dict:
  """Dice (%) of WT, TC and ET of the probe's classes, pooled over every brain voxel of the
  slices (outside the brain, the prediction is background)."""
  logits = ((z - probe["mean"]) / probe["scale"]) @ probe["w"] + probe["b"]
  predicted = np.where(brain, logits.argmax(-1), 0)
  return {region: 100.0 * dice(region_mask(predicted, region), region_mask(labels, region))
          for region in REGIONS}


def synthesis_psnr(model, variables, images, labels) -> dict:
  """Per modality: PSNR (dB) of the modality synthesized from the other three, with the
  mean squared error over tumour voxels and over healthy brain voxels, both against the
  brain's intensity range of that modality. Slices without the modality are skipped."""
  brain = _brain(images)
  result = {}
  for m, name in enumerate(MODALITIES):
    have = np.any(images[..., m] != 0, axis=(1, 2))
    mask = np.arange(len(MODALITIES)) != m
    synthesized = predict_slices(model, variables, images[have], mask,
                                 keys=("synthesis",))["synthesis"][..., m]
    reference = images[have][..., m]
    inside = brain[have]
    data_range = reference[inside].max() - reference[inside].min()
    tumour = inside & (labels[have] > 0)
    healthy = inside & (labels[have] == 0)
    result[name] = {region: psnr(synthesized, reference, where, data_range)
                    for region, where in (("tumour", tumour), ("healthy", healthy))
                    if where.any()}
  return result


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
  """How hard the probes work: ``passes`` training-mode passes re-estimate the batch-norm
  statistics (``reestimate_batch_stats``), ``steps`` Adam steps fit each probe
  (``fit_probe``). The study's defaults; its ``tiny`` preset, a smoke test, takes few."""

  passes: int = 400
  steps: int = 600


def probe_data(config, workdir) -> dict:
  """The slices the probes read for the models of one split (``workdir``'s): training
  slices (at most ``PROBE_SLICES``) and every test slice, with their brain masks."""
  train = slices(data_from_config(config, workdir, use_hcp=False)["brats"]["train"],
                 limit=PROBE_SLICES)
  test = slices(held_out_patients(config, workdir))
  return {"train": train, "test": test, "train_brain": _brain(train["image"]),
          "test_brain": _brain(test["image"])}


def probe_model(loaded, data: dict, settings: ProbeSettings) -> list[dict]:
  """The probes' rows of one model (``load_model``) on ``probe_data``: as trained, and for
  a pre-training with batch-norm statistics re-estimated on BraTS, with its PSNR on tumour
  and healthy voxels. A model's rows do not depend on which other models are probed."""
  train, test = data["train"], data["test"]
  variants = [("as trained", loaded.variables)]
  if loaded.job == "pretrain":
    variants.append(("re-estimated on BraTS", reestimate_batch_stats(
        loaded.model, loaded.variables, train["image"], passes=settings.passes)))
  rows = []
  for statistics, variables in variants:
    z_train = representation(loaded.model, variables, train["image"])
    probe = fit_probe(z_train, train["label"], data["train_brain"], steps=settings.steps)
    z_test = representation(loaded.model, variables, test["image"])
    rows.append({"model": loaded.name, "job": loaded.job, "batch_norm": statistics,
                 "probe_loss": probe["loss"],
                 **{f"probe_dice_{r}": v for r, v in
                    probe_dice(probe, z_test, test["label"], data["test_brain"]).items()}})
  if loaded.job == "pretrain":
    psnr_of = synthesis_psnr(loaded.model, loaded.variables, test["image"], test["label"])
    for row in rows:
      row["psnr"] = psnr_of
  return rows


def write_probes(results, out_dir) -> list[Path]:
  """``probes.json`` and ``probes.md`` in ``out_dir`` from ``{seed: rows}``."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  write_text_atomically(out_dir / "probes.json", json.dumps(results, indent=1))
  write_text_atomically(out_dir / "probes.md", probes_markdown(results))
  return [out_dir / "probes.md", out_dir / "probes.json"]


def probes_markdown(results) -> str:
  """Mean over seeds (and the range) of each probe's test Dice; PSNR on tumour and healthy
  voxels per pre-training and modality."""
  keys = []
  for rows in results.values():
    keys += [(r["model"], r["batch_norm"]) for r in rows if (r["model"], r["batch_norm"])
             not in keys]
  lines = ["# Probes of the unified representation", "",
           "Linear probe (1x1 convolution) on z with all four modalities, fitted on the "
           "training patients, Dice (%) pooled over the test patients' slices; mean over "
           f"seeds ({', '.join(str(s) for s in results)}), range in brackets.", "",
           "| representation | batch-norm statistics | " + " | ".join(REGIONS) + " |",
           "|---|---|---|---|---|"]
  for model, statistics in keys:
    cells = []
    for region in REGIONS:
      values = [r[f"probe_dice_{region}"] for rows in results.values() for r in rows
                if (r["model"], r["batch_norm"]) == (model, statistics)]
      cells.append(f"{np.mean(values):.1f} [{min(values):.1f}, {max(values):.1f}]")
    lines.append(f"| {model} | {statistics} | " + " | ".join(cells) + " |")
  psnr_rows = [(r["model"], r["psnr"]) for rows in results.values() for r in rows
               if "psnr" in r and r["batch_norm"] == "as trained"]
  if psnr_rows:
    lines += ["", "Synthesis of each modality from the other three: PSNR (dB) over tumour "
              "and over healthy brain voxels of all test slices, against one intensity range "
              "(so not on Table 2's per-case scale), mean over seeds.", "",
              "| pre-training | modality | tumour | healthy |", "|---|---|---|---|"]
    for model in dict.fromkeys(m for m, _ in psnr_rows):
      for modality in MODALITIES:
        values = [p[modality] for m, p in psnr_rows if m == model and modality in p]
        cells = [f"{np.mean([v[k] for v in values if k in v]):.1f}"
                 if any(k in v for v in values) else "-" for k in ("tumour", "healthy")]
        lines.append(f"| {model} | {modality} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
