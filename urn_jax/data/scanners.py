"""How the phantom's scanners render its cases (``urn_jax.data.phantom_cases``): each
tissue's mean intensity per modality, the bias field, the noise and the slice thickness.

Site A is the phantom's own scanner (version 2 images every case with it); site B is
another, for measuring how models trained at site A fare on a scanner they never saw; site
C a third, outside version 3's ranges, for tuning against a scanner no model saw; the
phantom's version 3 gives each BraTS-like case a scanner of its own (``VARIETY``), so that
models trained on it see more than one. ``scanner_of`` says which scanner images a case;
``thick_slices`` simulates a thick-slice acquisition. docs/phantom.md states the choices and
measures what they do to the edema's contrast.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Versions of what a (seed, index) generates; each is part of the cache folder's name
# (urn_jax.data.datasets) and of the split file's record, so that no cache or split mixes
# cases of two versions. 2: cores a third to a half of the whole tumour, edema hyperintense
# on T2 in every case (2026-11-26). 3: version 2's patients (the same anatomy and lesions),
# each BraTS-like case scanned with its own contrasts, noise, bias field and slice thickness
# (``VARIETY``), as BraTS pools many scanners (2026-11-30).
VERSIONS = (2, 3)

DATASET_IDS = {"brats": 0, "hcp": 1}  # part of every case's random stream

# Mean intensity of each tissue per modality (arbitrary units, about those of BraTS files).
# T1: WM > GM > CSF, tumour and edema mildly hypointense. T1c: as T1 with a very bright
# enhancing rim and dark necrosis. T2: CSF brightest, GM > WM, edema and necrosis bright.
# FLAIR: CSF suppressed, GM > WM, edema brightest, tumour bright.
TISSUES = ("csf", "gm", "wm", "edema", "necrosis", "enhancing", "core")
_MEANS = {
    "flair": (120, 640, 480, 1000, 700, 900, 950),
    "t1": (250, 560, 820, 680, 380, 640, 500),
    "t1c": (270, 590, 860, 720, 300, 1400, 520),
    "t2": (1500, 800, 560, 1400, 1350, 950, 1100),
}


@dataclasses.dataclass(frozen=True)
class Scanner:
  """How a site's scanner renders a case: the mean intensity of each tissue per modality
  (``TISSUES``' order; jittered by +-5 % per subject), the range the peak of the log bias
  field is drawn from and that of the Rician noise's sigma (a fraction of white matter's
  mean), both per modality, and the slice thickness in mm along the axial axis (each
  acquired slice the mean of the 1 mm slices it covers, interpolated back to 1 mm)."""

  means: dict
  bias: tuple
  noise: tuple
  thickness: int = 1


# Site A is the phantom's scanner. Site B is another one, a shift stated here before any
# model was scored on it: edema, enhancement and grey-white contrasts weaker by 10-25 %
# (FLAIR edema 820 instead of 1000 against grey matter's 700 instead of 640; T1c
# enhancement 1150 instead of 1400; T1 white matter 760 instead of 820), CSF less
# suppressed on FLAIR, noise about twice as strong, a stronger bias field, and 3 mm slices.
SITES = {
    "a": Scanner(_MEANS, bias=(0.2, 0.3), noise=(0.02, 0.035)),
    "b": Scanner({
        "flair": (200, 700, 500, 820, 650, 800, 800),
        "t1": (300, 600, 760, 640, 420, 660, 540),
        "t1c": (320, 620, 800, 680, 380, 1150, 560),
        "t2": (1700, 850, 600, 1200, 1250, 1000, 1050),
    }, bias=(0.35, 0.45), noise=(0.045, 0.06), thickness=3),
    # Site C, for tuning only (never a test set): a scanner outside version 3's ranges, so
    # that models trained on version 3 can be judged on one they never saw, stated before
    # any model was scored on it and written with site B and VARIETY known. Its lesion
    # contrasts change by factors beyond VARIETY's 1.2 and mostly in other directions than
    # site B's (FLAIR edema and T1c enhancement stronger, T2 edema weaker, CSF more
    # suppressed on FLAIR); its noise, bias field and 5 mm slices lie beyond VARIETY's.
    "c": Scanner({
        "flair": (60, 600, 430, 1300, 650, 1100, 1200),
        "t1": (200, 500, 900, 760, 300, 560, 440),
        "t1c": (220, 520, 950, 800, 250, 1750, 450),
        "t2": (1900, 700, 600, 1100, 1500, 800, 1000),
    }, bias=(0.5, 0.6), noise=(0.065, 0.08), thickness=5),
}
# HCP's restore images are bias-corrected, and its protocol has less noise.
HCP_SCANNER = Scanner(_MEANS, bias=(0.05, 0.1), noise=(0.015, 0.025))
# Version 3's scanner of each BraTS-like case: every tissue mean of every modality times a
# factor drawn log-uniformly in [1 / 1.2, 1.2]; the bias field's peak, the noise and the
# slice thickness (mm) each drawn uniformly in these ranges, once per case. Written with
# site B known: site B lies at the edge of these ranges or beyond (its FLAIR CSF and its
# edema and enhancement contrasts beyond, its noise and bias at the edge).
VARIETY = {"mean_factor": 1.2, "bias": (0.1, 0.45), "noise": (0.01, 0.06), "thickness": (1, 4)}


def varied(scanner: Scanner, rng) -> Scanner:
  """``scanner`` with ``VARIETY``'s draws from ``rng``: one case's scanner (version 3)."""
  spread = np.log(VARIETY["mean_factor"])
  means = {m: tuple(float(v) for v in np.asarray(values) * np.exp(
      rng.uniform(-spread, spread, len(values)))) for m, values in scanner.means.items()}
  bias, noise = (float(rng.uniform(*VARIETY[k])) for k in ("bias", "noise"))
  low, high = VARIETY["thickness"]
  return Scanner(means, (bias, bias), (noise, noise), int(rng.integers(low, high + 1)))


def thick_slices(image, thickness: int, brain):
  """``image`` (on the brain's box, axial axis last) as acquired in slices ``thickness``
  voxels thick - each the mean of the 1 mm slices it covers - and interpolated back to 1
  mm linearly along the axial axis; 0 outside ``brain``."""
  if thickness == 1:
    return image
  depth = image.shape[2]
  count = -(-depth // thickness)
  padded = np.pad(image, ((0, 0), (0, 0), (0, count * thickness - depth)))
  thick = padded.reshape(image.shape[:2] + (count, thickness)).mean(axis=3)
  centres = np.arange(count) * thickness + (thickness - 1) / 2
  position = np.clip(np.arange(depth), centres[0], centres[-1])
  lower = np.clip(np.searchsorted(centres, position, side="right") - 1, 0, max(count - 2, 0))
  upper = np.minimum(lower + 1, count - 1)
  weight = np.clip((position - centres[lower]) / thickness, 0, 1).astype(np.float32)
  resampled = thick[:, :, lower] * (1 - weight) + thick[:, :, upper] * weight
  return np.where(brain, resampled, 0).astype(np.float32)


def scanner_of(dataset: str, seed: int, index: int, version: int = 2, site: str = "a"):
  """The scanner that images case ``index`` of ``dataset`` in the phantom ``(seed, version,
  site)``: the site's, varied per BraTS-like case in version 3 (``varied``) from a stream of
  its own, so that the anatomy and lesions stay those of version 2."""
  if version not in VERSIONS:
    raise ValueError(f"phantom version must be one of {VERSIONS}, got {version!r}")
  if site not in SITES:
    raise ValueError(f"phantom site must be one of {sorted(SITES)}, got {site!r}")
  if dataset == "hcp":
    return HCP_SCANNER
  if version == 3:
    return varied(SITES[site], np.random.default_rng([seed, DATASET_IDS[dataset], index, 3]))
  return SITES[site]
