"""The paper's figures from evaluated runs (``urn_jax.evaluation.runs``).

- ``figure2.png``: Dice per combination for each scenario, a panel per region;
- ``figure3.png``: segmentations of one case for several input combinations over T1c;
- ``figure4.png`` / ``figure5.png``: synthesis from several input combinations by the URN
  pre-trained on BraTS alone / on BraTS + HCP (``scenarios.SYNTHESIS_FIGURES``),
  reconstructed inputs framed in green.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402

from urn_jax.data.render import COLOURS, intensity_window  # noqa: E402
from urn_jax.evaluation.runs import aggregate, first_runs  # noqa: E402
from urn_jax.evaluation.runs import names as run_names  # noqa: E402
from urn_jax.labels import REGIONS  # noqa: E402
from urn_jax.modalities import (FIGURE_MASKS, MODALITIES, MODALITY_LABELS,  # noqa: E402
                                availability_masks, mask_key, mask_name)


def figure2(runs, out_png):
  """Dice per combination (x) for each scenario (lines; bars: range over runs)."""
  names = run_names(runs, "segment")
  keys = [mask_key(m) for m in availability_masks()]
  fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
  for ax, region in zip(axes, REGIONS):
    for offset, name in zip(np.linspace(-0.15, 0.15, len(names)), names):
      cells = aggregate(runs, name, lambda row, r=region: 100 * row[f"{r}/dice"])
      x = [i for i, k in enumerate(keys) if k in cells]
      means = [cells[keys[i]][0] for i in x]
      low = [cells[keys[i]][0] - min(cells[keys[i]][2]) for i in x]
      high = [max(cells[keys[i]][2]) - cells[keys[i]][0] for i in x]
      ax.errorbar(np.asarray(x) + offset, means, yerr=[low, high], marker="o", ms=4,
                  capsize=2, label=name, lw=1.2)
    ax.set_ylabel(f"Dice {region} (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  axes[0].legend(loc="lower left", fontsize=9, ncol=len(names))
  axes[-1].set_xticks(range(len(keys)))
  axes[-1].set_xticklabels([mask_name([c == "1" for c in k]) for k in keys], rotation=55,
                           ha="right", fontsize=8)
  axes[0].set_title("Dice per combination of input modalities (test patients; markers: "
                    "mean over runs, bars: range)")
  fig.tight_layout()
  fig.savefig(out_png, dpi=90)
  plt.close(fig)
  return out_png


def _overlay(ax, background, classes):
  low, high = intensity_window(background)
  ax.imshow(background.T, cmap="gray", vmin=low, vmax=high, origin="lower",
            interpolation="nearest")
  rgba = np.zeros(classes.shape + (4,))
  for value in (1, 2, 3):
    rgba[classes == value] = COLOURS[value] + (0.55,)
  ax.imshow(rgba.transpose(1, 0, 2), origin="lower", interpolation="nearest")


def _crop(images, margin=4):
  """The bounding box of the nonzero background, so the brain fills the panel."""
  nonzero = np.argwhere(images != 0)
  if nonzero.size == 0:
    return slice(None), slice(None)
  low = np.maximum(nonzero.min(0) - margin, 0)
  high = nonzero.max(0) + margin + 1
  return slice(low[0], high[0]), slice(low[1], high[1])


def _panels(rows, columns):
  """A black figure of image panels without ticks (the row labels use the y label)."""
  fig, axes = plt.subplots(rows, columns, squeeze=False, facecolor="black",
                           figsize=(2.2 * columns + 0.6, 2.2 * rows + 0.6))
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  return fig, axes


def figure3(runs, case_id, out_png):
  """Segmentations of ``case_id`` for several input combinations (columns) by each scenario
  (rows), over T1c; the first column is the ground truth."""
  shown = first_runs(runs, "segment")
  if not shown or "t1c" not in shown[0]["figure"]:
    return None
  background = shown[0]["figure"]["t1c"]
  box = _crop(background)
  columns = ["truth"] + [k for k in FIGURE_MASKS if k in shown[0]["figure"]]
  fig, axes = _panels(len(shown), len(columns))
  for row, run in enumerate(shown):
    for col, key in enumerate(columns):
      ax = axes[row, col]
      if key in run["figure"]:
        _overlay(ax, background[box], run["figure"][key][box])
      if row == 0:
        ax.set_title("ground truth" if key == "truth" else
                     mask_name([c == "1" for c in key]), color="white", fontsize=9)
      if col == 0:
        ax.set_ylabel(run["name"], color="white", fontsize=9)
  fig.suptitle(f"{case_id}: red necrotic/non-enhancing core, green edema, blue enhancing "
               "tumour (columns: input modalities)", color="white", fontsize=10)
  fig.tight_layout()
  fig.savefig(out_png, dpi=90, facecolor="black")
  plt.close(fig)
  return out_png


def figure_synthesis(run, case_id, out_png):
  """Every modality (columns) synthesized from several input combinations (rows) by one
  pre-training run; the reconstructed inputs are framed in green, the top row is the real
  pre-processed image."""
  reference = run["figure"]["reference"]
  rows = ["reference"] + [k for k in FIGURE_MASKS if k in run["figure"]]
  box = _crop(np.abs(reference).sum(-1))
  windows = [intensity_window(reference[..., j]) for j in range(len(MODALITIES))]
  fig, axes = _panels(len(rows), len(MODALITIES))
  for r, key in enumerate(rows):
    for j, modality in enumerate(MODALITIES):
      ax = axes[r, j]
      image = run["figure"][key][..., j][box]
      low, high = windows[j]
      ax.imshow(image.T, cmap="gray", vmin=low, vmax=high, origin="lower",
                interpolation="nearest")
      given = key != "reference" and key[j] == "1"
      for spine in ax.spines.values():
        spine.set_color("lime" if given else "black")
        spine.set_linewidth(3 if given else 0)
      if r == 0:
        ax.set_title(MODALITY_LABELS[modality], color="white", fontsize=10)
      if j == 0:
        ax.set_ylabel("real" if key == "reference" else "from " +
                      mask_name([c == "1" for c in key]), color="white", fontsize=8)
  fig.suptitle(f"{run['name']}, {case_id}: synthesis (green frame: a reconstructed input)",
               color="white", fontsize=10)
  fig.tight_layout()
  fig.savefig(out_png, dpi=90, facecolor="black")
  plt.close(fig)
  return out_png
