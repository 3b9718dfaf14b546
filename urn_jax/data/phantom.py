"""A built-in brain-tumour data set made from real anatomy, so that everything runs without
BraTS or HCP and the ordinary reading and pre-processing code is exercised as on real data.

How each case is made: ``urn_jax.data.phantom_cases``. Its lesions' sizes and contrasts:
``describe`` and ``python -m urn_jax.data.phantom --describe N`` measure them, and
docs/phantom.md lists the distribution.

A case depends only on ``(seed, index)``, the phantom's version and its site (and on the
data set): the output is the same for any number of worker processes and from one run to
the next. Version 3 scans each BraTS-like case with its own contrasts, noise, bias field and
slice thickness; sites "b" and "c" are other scanners (``urn_jax.data.scanners.SITES``).

    python -m urn_jax.data.phantom --out DIR --brats 12 --hcp 6 --seed 0 --workers 4
    python -m urn_jax.data.phantom --out DIR --brats 12 --hcp 0 --site b   # another scanner
    python -m urn_jax.data.phantom --describe 60 --seed 0    # lesion sizes and contrasts
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from urn_jax.console import progress as progress_bar
from urn_jax.data.cases import HCP_FILES
from urn_jax.data.phantom_cases import BRATS_FILES, generate, make_brats_case, make_hcp_subject
from urn_jax.data.scanners import SITES, VERSIONS, scanner_of
from urn_jax.data.workers import in_processes
from urn_jax.files import replaced_atomically


def brats_case_id(index: int) -> str:
  return f"Brats18_PHANTOM_{index:03d}"


def hcp_subject_id(index: int) -> str:
  return f"phantom{100000 + index}"


def _brats_paths(brats_dir, index, grade):
  case = brats_case_id(index)
  folder = Path(brats_dir) / grade / case
  return {k: folder / f"{case}_{k}.nii.gz" for k in list(BRATS_FILES.values()) + ["seg"]}


def _hcp_paths(hcp_dir, index):
  return {m: Path(hcp_dir) / hcp_subject_id(index) / rel for m, rel in HCP_FILES.items()}


def _is_done(dataset, root, index):
  if dataset == "brats":
    return any(all(p.exists() for p in _brats_paths(root, index, grade).values())
               for grade in ("HGG", "LGG"))
  return all(p.exists() for p in _hcp_paths(root, index).values())


def _save(path: Path, data, affine):
  """Writes a gzipped NIfTI atomically (a temporary name, then a rename), byte for byte the
  same for the same data: an interrupted run leaves no half-written ``.nii.gz``."""
  image = nib.Nifti1Image(data, affine)
  image.header.set_xyzt_units("mm", "sec")
  image.set_qform(affine, code=1)
  image.set_sform(affine, code=1)
  path.parent.mkdir(parents=True, exist_ok=True)
  with replaced_atomically(path, unique=True) as temporary:
    temporary.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def _to_int16(image):
  """Rounds to int16, keeping every brain voxel at least 1 so that 'nonzero' stays 'brain'."""
  return np.where(image > 0, np.clip(np.rint(image), 1, np.iinfo(np.int16).max),
                  0).astype(np.int16)


def _write_case(dataset, root, seed, index, version, site):
  """Worker: generates and writes one case."""
  if dataset == "brats":
    images, label, affine = make_brats_case(seed, index, version=version, site=site)
    paths = _brats_paths(root, index, "HGG" if (label == 4).any() else "LGG")
    for modality, suffix in BRATS_FILES.items():
      _save(paths[suffix], _to_int16(images[modality]), affine)
    _save(paths["seg"], label, affine)
  else:
    images, affine = make_hcp_subject(seed, index, version)
    for modality, path in _hcp_paths(root, index).items():
      _save(path, _to_int16(images[modality]), affine)


def write_phantom(out_dir, num_brats: int, num_hcp: int, seed: int = 0, workers: int = 1,
                  progress: bool = True, version: int = 2, site: str = "a") -> dict:
  """Writes ``num_brats`` BraTS-like cases to ``out_dir/BraTS`` (``HGG/`` when the lesion
  enhances, else ``LGG/``, BraTS 2018 names) and ``num_hcp`` HCP-like subjects to
  ``out_dir/HCP``; returns ``{'brats': path, 'hcp': path}``.

  Cases whose files all exist are kept, so an interrupted run resumes where it stopped.
  ``workers > 1`` generates cases in parallel processes, with the same result.
  ``version`` and ``site``: ``urn_jax.data.phantom_cases.generate``; a folder holds one of
  each (``urn_jax.data.datasets.phantom_folders`` names it by them).
  """
  scanner_of("brats", seed, 0, version, site)  # a bad version or site, before any work
  if num_brats < 0 or num_hcp < 0:
    raise ValueError(f"numbers of cases must be non-negative, got {num_brats} BraTS and "
                     f"{num_hcp} HCP")
  out = Path(out_dir)
  roots = {"brats": out / "BraTS", "hcp": out / "HCP"}
  for root in roots.values():
    root.mkdir(parents=True, exist_ok=True)
  todo = [(dataset, str(roots[dataset]), seed, i, version, site)
          for dataset, count in (("brats", num_brats), ("hcp", num_hcp))
          for i in range(count) if not _is_done(dataset, roots[dataset], i)]
  bar = progress_bar(total=len(todo), desc="phantom", unit="case",
                     disable=not progress or not todo)
  for _ in in_processes(_write_case, todo, workers, bar):
    pass
  bar.close()
  return roots


def describe(seed: int, indices, version: int = 2, site: str = "a") -> list:
  """The lesions of BraTS-like cases ``indices`` of the phantom ``seed``, as they would be
  written: one dict per case with ``grade`` ('HGG' when it enhances), the whole tumour, core
  and enhancing volumes in cm^3 (1 mm voxels), and the mean T2 and FLAIR in the edema over
  their means in the healthy brain (label 0, CSF included). Generates only T2 and FLAIR."""
  rows = []
  for index in indices:
    images, label, anatomy, _ = generate("brats", seed, index, ("t2", "flair"), lesion=True,
                                         version=version, site=site)
    label = label[anatomy.brain]
    edema, healthy = label == 2, label == 0
    ratios = {m: float(images[m][anatomy.box][anatomy.brain][edema].mean()
                       / images[m][anatomy.box][anatomy.brain][healthy].mean())
              for m in ("t2", "flair")}
    rows.append({"index": index, "grade": "HGG" if (label == 4).any() else "LGG",
                 "wt_cm3": float((label > 0).sum() / 1000),
                 "tc_cm3": float(np.isin(label, (1, 4)).sum() / 1000),
                 "et_cm3": float((label == 4).sum() / 1000),
                 "t2_edema_ratio": ratios["t2"], "flair_edema_ratio": ratios["flair"]})
  return rows


def summarize(rows) -> str:
  """``describe``'s rows as a Markdown table per grade: the median and range of each
  quantity (TC / WT and ET / TC as fractions)."""
  lines = ["| grade | cases | WT (cm^3) | TC / WT | ET / TC | T2 edema / healthy | "
           "FLAIR edema / healthy |", "|---|---|---|---|---|---|---|"]
  for grade in ("HGG", "LGG"):
    group = [r for r in rows if r["grade"] == grade]
    if not group:
      continue
    columns = [[r["wt_cm3"] for r in group], [r["tc_cm3"] / r["wt_cm3"] for r in group],
               [r["et_cm3"] / r["tc_cm3"] for r in group],
               [r["t2_edema_ratio"] for r in group], [r["flair_edema_ratio"] for r in group]]
    cells = [f"{np.median(c):.{0 if i == 0 else 2}f} ({min(c):.{0 if i == 0 else 2}f}-"
             f"{max(c):.{0 if i == 0 else 2}f})" for i, c in enumerate(columns)]
    lines.append(f"| {grade} | {len(group)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m urn_jax.data.phantom",
      description="Writes the built-in phantom: BraTS-like cases with a brain tumour and "
                  "HCP-like healthy subjects, from the MNI152 templates shipped with nilearn.")
  parser.add_argument("--out", help="folder to write BraTS/ and HCP/ into")
  parser.add_argument("--brats", type=int, default=12, help="number of BraTS-like cases")
  parser.add_argument("--hcp", type=int, default=6, help="number of HCP-like subjects")
  parser.add_argument("--seed", type=int, default=0, help="the phantom's seed (>= 0)")
  parser.add_argument("--workers", type=int, default=1, help="parallel processes")
  parser.add_argument("--version", type=int, default=2, choices=VERSIONS,
                      help="2: one scanner; 3: each BraTS-like case its own (default 2)")
  parser.add_argument("--site", default="a", choices=sorted(SITES),
                      help="the scanner: a (the phantom's), b or c (others; default a)")
  parser.add_argument("--describe", type=int, default=0, metavar="N",
                      help="instead of writing, print the lesion sizes and edema contrasts of "
                           "the first N BraTS-like cases (median and range per grade)")
  args = parser.parse_args(argv)
  if args.describe:
    print(summarize(describe(args.seed, progress_bar(range(args.describe), desc="describe",
                                                     unit="case"), args.version, args.site)))
    return
  if not args.out:
    parser.error("--out is required (unless --describe)")
  roots = write_phantom(args.out, args.brats, args.hcp, args.seed, args.workers,
                        version=args.version, site=args.site)
  print(f"BraTS-like cases: {roots['brats']}\nHCP-like subjects: {roots['hcp']}")


if __name__ == "__main__":
  main()
