"""A picture of a case, to see at a glance what a data set (or the phantom) holds.

``render_case`` draws a few axial slices (rows) of FLAIR, T1, T1c and T2 (columns; a missing
modality is an empty panel) and the label over T1c, in the paper's colours: red the necrotic
and non-enhancing core (1), green edema (2), blue enhancing tumour (4, or 3 from BraTS 2023
on).

    python -m urn_jax.data.render CASE_DIR --out case.png
    python -m urn_jax.data.render case_t1.nii.gz case_seg.nii.gz --out case.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from urn_jax.data.cases import file_role, read_volume  # noqa: E402
from urn_jax.errors import DataError, MissingInput, UserError  # noqa: E402
from urn_jax.modalities import MODALITIES, MODALITY_LABELS  # noqa: E402

COLOURS = {1: (1.0, 0.0, 0.0), 2: (0.0, 0.8, 0.0), 3: (0.0, 0.3, 1.0), 4: (0.0, 0.3, 1.0)}


def _to_ras(volume, affine):
  """Reorders the voxel axes to RAS so that every data set is drawn the same way up."""
  orientation = nib.orientations.io_orientation(affine)
  return nib.orientations.apply_orientation(volume, orientation)


def intensity_window(volume):
  """1st-99th percentile of the nonzero voxels: robust to outliers and to the background."""
  values = volume[volume != 0]
  if values.size == 0:
    return 0.0, 1.0
  low, high = np.percentile(values, [1, 99])
  return float(low), float(max(high, low + 1e-6))


def _default_slices(reference, label):
  """Three axial slices through the lesion if there is one, else through the brain."""
  target = label if label is not None and np.any(label) else reference
  z = np.nonzero(np.asarray(target).any(axis=(0, 1)))[0]
  if z.size == 0:
    return [reference.shape[2] // 2]
  weights = np.asarray(target != 0).sum(axis=(0, 1))[z]
  cumulative = np.cumsum(weights) / weights.sum()
  quantiles = (0.2, 0.5, 0.8) if target is label else (0.3, 0.5, 0.7)
  return sorted({int(z[np.searchsorted(cumulative, q)]) for q in quantiles})


def render_case(images: dict, label, out_png, slices=None, title=None, affine=None):
  """Draws ``images`` (modality -> 3D array; 'flair', 't1', 't1c', 't2') and ``label`` into
  ``out_png``; returns its path.

  ``slices`` are axial indices (default: three through the lesion, or the brain without a
  label). With ``affine`` the volumes are first turned to RAS, so that anterior is up and
  the patient's left on the left; without it they are drawn as stored.
  """
  images = {m: np.asarray(v) for m, v in images.items() if v is not None}
  unknown = sorted(set(images) - set(MODALITIES))
  if unknown or not images:
    raise ValueError(f"expected images for some of {MODALITIES}, got {sorted(images)}")
  if affine is not None:
    images = {m: _to_ras(v, affine) for m, v in images.items()}
    label = None if label is None else _to_ras(np.asarray(label), affine)
  background = next(m for m in ("t1c",) + MODALITIES if m in images)
  if slices is None:
    slices = _default_slices(images[background], label)
  windows = {m: intensity_window(v) for m, v in images.items()}
  columns = list(MODALITIES) + ["label"]
  fig, axes = plt.subplots(len(slices), len(columns), squeeze=False,
                           figsize=(2.4 * len(columns), 2.4 * len(slices) + 0.4),
                           facecolor="black")
  for row, z in enumerate(slices):
    for col, name in enumerate(columns):
      ax = axes[row, col]
      ax.set_axis_off()
      shown = background if name == "label" else name
      if row == 0:
        heading = MODALITY_LABELS.get(name, "no label" if label is None
                                      else f"label on {MODALITY_LABELS[background]}")
        ax.set_title(heading, color="white", fontsize=10)
      if shown not in images:
        ax.text(0.5, 0.5, "missing", color="grey", ha="center", va="center",
                transform=ax.transAxes)
        continue
      low, high = windows[shown]
      ax.imshow(images[shown][:, :, z].T, cmap="gray", vmin=low, vmax=high, origin="lower",
                interpolation="nearest")
      if col == 0:
        ax.text(0.02, 0.02, f"z={z}", color="yellow", fontsize=8, transform=ax.transAxes)
      if name == "label" and label is not None:
        overlay = np.zeros(label.shape[:2] + (4,))
        for value, colour in COLOURS.items():
          overlay[label[:, :, z] == value] = colour + (0.5,)
        ax.imshow(overlay.transpose(1, 0, 2), origin="lower", interpolation="nearest")
  if title:
    fig.suptitle(title, color="white")
  fig.tight_layout()
  out_png = Path(out_png)
  out_png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out_png, dpi=100, facecolor="black")
  plt.close(fig)
  return out_png


def load_files(paths):
  """Reads a BraTS case folder, an HCP subject folder, or image files: ``(images, label,
  affine)`` with the affine of the first file read."""
  files = []
  for path in map(Path, paths):
    if path.is_dir():
      files += sorted(path.glob("*.nii*")) + sorted(path.glob("T1w/*.nii*"))
    elif path.exists():
      files.append(path)
    else:
      raise MissingInput(f"{path} does not exist")
  found = {}
  for path in files:
    role = file_role(path)
    if role in found:
      raise DataError(f"two files for {role}: {found[role]} and {path}")
    if role:
      found[role] = path
  if not set(found) - {"label"}:
    raise DataError(
        f"no image found in {', '.join(map(str, paths))}: expected BraTS files named like "
        "*_flair.nii.gz, *_t1.nii.gz, *_t1ce.nii.gz, *_t2.nii.gz (2018-2021) or *-t2f, "
        "-t1n, -t1c, -t2w.nii.gz (2023+), or HCP's T1w/T1w_acpc_dc_restore_brain.nii.gz")
  images, label, affine = {}, None, None
  for role, path in found.items():
    image, data = read_volume(path, role)
    affine = image.affine if affine is None else affine
    if role == "label":
      label = data
    else:
      images[role] = data
  return images, label, affine


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m urn_jax.data.render",
                                   description="Draws a few axial slices of a case.")
  parser.add_argument("paths", nargs="+", help="a case folder or its NIfTI files")
  parser.add_argument("--out", required=True, help="PNG file to write")
  parser.add_argument("--title", help="title (default: the first path's name)")
  args = parser.parse_args(argv)
  try:
    images, label, affine = load_files(args.paths)
  except UserError as e:
    parser.error(str(e))
  out = render_case(images, label, args.out, title=args.title or Path(args.paths[0]).name,
                    affine=affine)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
