"""One case of the phantom (``urn_jax.data.phantom``), made from its ``(seed, index)``.

Anatomy comes from the MNI ICBM152 2009 templates shipped inside nilearn (no download): grey-
and white-matter probability maps, and CSF as the brain mask minus both. Each subject warps
them by its own small random affine (scale +-5 %, rotation +-4 degrees, about the brain's
centre) and smooth displacement field (a few mm). A BraTS-like case adds one glioma-like
lesion, sometimes two: an irregular core (necrosis inside an enhancing rim in 65 % of cases,
solid enhancing in 10 %, non-enhancing only, as in low-grade gliomas, in 25 %) and edema that
spreads further into white than into grey matter and never into CSF. Sizes follow BraTS's
rough proportions: the core (labels 1 + 4) is about a third to a half of the whole tumour
(edema reaches 0.25-0.9 core radii into white matter), whole tumours mostly 20-150 cm^3;
``describe`` and ``python -m urn_jax.data.phantom --describe N`` measure it, and
docs/phantom.md lists the distribution. Wherever edema is labelled, at least half of its
non-CSF tissue is edema, so it is hyperintense on T2 and FLAIR in every case (at site A, mean
T2 in the edema above 1.3x that of the healthy brain, CSF included). The four contrasts are
sums of tissue fractions times a scanner's mean intensities (``Scanner``), ordered as in MR
physics, with a little texture, a smooth multiplicative bias field and Rician noise, so that
N4 and z-scoring matter. Everything outside the brain is exactly 0, as in skull-stripped
BraTS and HCP images.

Scanners (``urn_jax.data.scanners``): version 2 images every BraTS-like case with site A's;
site B is another, with weaker lesion contrasts, more noise, a stronger bias field and 3 mm
slices, for measuring how models trained at site A fare on another scanner; version 3 gives
each BraTS-like case a scanner of its own, for training on more than one. The anatomy and
lesions are the same in every version and at every site.

Geometry, in world (scanner, RAS+ mm) coordinates that equal MNI coordinates, so that both
data sets place the brain at the same physical position:
- BraTS: 240 x 240 x 155 voxels of 1 mm, voxel axes LPS as in the BraTS files (affine
  ``diag(-1, -1, 1)``), the brain centred in-plane; images int16, labels uint8 in
  {0, 1, 2, 4} (1 necrotic / non-enhancing core, 2 edema, 4 enhancing tumour).
- HCP: 260 x 311 x 260 voxels of 0.7 mm, voxel axes LAS as in HCP's ``T1w_acpc_dc_restore``
  files (affine ``diag(-0.7, 0.7, 0.7)``, origin (90, -126, -72) mm); T1 and T2 only, int16.

A case depends only on ``(seed, index)``, the version and the site (and on the data set):
the same from one run, or process, to the next.
"""

from __future__ import annotations

import functools
import types

import numpy as np
from scipy import ndimage

from urn_jax.data.cases import HCP_FILES
from urn_jax.data.scanners import (DATASET_IDS, TISSUES, Scanner, scanner_of,
                                    thick_slices)

BRATS_SHAPE = (240, 240, 155)
BRATS_AFFINE = np.array([[-1.0, 0, 0, 120], [0, -1.0, 0, 103], [0, 0, 1.0, -72],
                         [0, 0, 0, 1]])
HCP_SHAPE = (260, 311, 260)
HCP_AFFINE = np.array([[-0.7, 0, 0, 90], [0, 0.7, 0, -126], [0, 0, 0.7, -72], [0, 0, 0, 1]])
BRATS_FILES = {"flair": "flair", "t1": "t1", "t1c": "t1ce", "t2": "t2"}  # modality -> suffix

# Texture amplitude per tissue (relative); its sign flips between T1- and T2-weighted images,
# as myelin brightens one and darkens the other.
_TEXTURE = {"gm": 0.04, "wm": 0.03, "edema": 0.08, "necrosis": 0.08, "enhancing": 0.08,
            "core": 0.08}
_TEXTURE_SIGN = {"flair": -1.0, "t1": 1.0, "t1c": 1.0, "t2": -1.0}
# Lesion kinds: (label of the core, core radius range in mm); a necrotic core is enhancing
# around necrosis (label 1).
_LESIONS = {"necrotic": (4, (12.0, 26.0)), "solid": (4, (9.0, 18.0)),
            "non-enhancing": (1, (10.0, 24.0))}


@functools.lru_cache(maxsize=1)
def _templates():
  """The MNI tissue maps cropped to the brain (1 mm, RAS, float32), loaded once per process.

  Also the depth below the brain's surface (mm), to keep lesions inside the brain, and the
  brain's centre, about which subjects are scaled and rotated."""
  from nilearn import datasets  # imported here: slow, and only the phantom needs it

  mask_image = datasets.load_mni152_brain_mask(resolution=1)
  mask = np.asarray(mask_image.get_fdata(), np.float32) > 0.5
  gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), np.float32)
  wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), np.float32)
  if not np.allclose(mask_image.affine[:3, :3], np.eye(3)):
    raise RuntimeError(f"nilearn's MNI152 template has affine {mask_image.affine.tolist()}; "
                       "expected 1 mm RAS voxels")
  brain = np.argwhere(mask)
  lo, hi = brain.min(axis=0) - 2, brain.max(axis=0) + 3
  box = tuple(slice(max(a, 0), b) for a, b in zip(lo, hi))
  mask, gm, wm = mask[box], gm[box] * mask[box], wm[box] * mask[box]
  total = gm + wm
  over = total > 1
  gm[over] /= total[over]
  wm[over] /= total[over]
  origin = mask_image.affine[:3, 3] + [s.start for s in box]
  centre = mask_image.affine[:3, 3] + (brain.min(axis=0) + brain.max(axis=0)) / 2
  depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
  return types.SimpleNamespace(mask=mask.astype(np.float32), gm=gm, wm=wm,
                               depth=depth.astype(np.float32), origin=origin, centre=centre)


def _cosine_field(coefs, axes, lo, length):
  """``sum coefs[a, b, c] cos(pi a (x - lo) / L) cos(..y..) cos(..z..)`` on the grid spanned by
  the 1D coordinate arrays ``axes``: a smooth random field, cheap because separable."""
  basis = [np.cos(np.pi * np.arange(n)[:, None] * (np.asarray(ax)[None] - l) / length,
                  dtype=np.float32)
           for n, ax, l in zip(coefs.shape, axes, lo)]
  field = np.tensordot(coefs.astype(np.float32), basis[2], axes=(2, 0))  # [a, b, z]
  field = np.tensordot(field, basis[1], axes=(1, 0))  # [a, z, y]
  return np.tensordot(basis[0], field, axes=(0, 0)).transpose(0, 2, 1)  # [x, y, z]


def _random_coefs(rng, size, decay=1.0):
  """Cosine coefficients with power falling with frequency and no constant term, scaled so
  that the field's root mean square is 1."""
  index = np.indices((size,) * 3)
  coefs = rng.normal(size=(size,) * 3) / (1.0 + (index ** 2).sum(axis=0)) ** decay
  coefs[0, 0, 0] = 0.0
  weight = np.prod(np.where(index == 0, 1.0, 0.5), axis=0)  # mean of each basis squared
  return coefs / np.sqrt((coefs ** 2 * weight).sum())


def _rotation(angles):
  cx, cy, cz = np.cos(angles)
  sx, sy, sz = np.sin(angles)
  rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
  return rz @ ry @ rx


def _grid_axes(affine, index_ranges):
  """World coordinates along each axis of a grid with a diagonal affine."""
  return [affine[d, d] * np.asarray(r, np.float64) + affine[d, 3]
          for d, r in enumerate(index_ranges)]


def _to_template(warp, axes):
  """Template voxel coordinates ``[3, X, Y, Z]`` (float32) of the world points of a grid."""
  t = _templates()
  field = warp.amplitude * np.stack([
      _cosine_field(c, axes, t.centre - 100.0, 200.0) for c in warp.displacement])
  coords = []
  for d in range(3):
    lin = sum(warp.matrix[d, e] * (axes[e] - t.centre[e]).reshape(
        [-1 if f == e else 1 for f in range(3)]) for e in range(3))
    coords.append((lin + t.centre[d] - t.origin[d] + field[d]).astype(np.float32))
  return np.stack(coords)


def _sample(volume, coords):
  """Trilinear interpolation at ``coords`` (voxels), 0 outside ``volume``."""
  return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0,
                                 prefilter=False)


def _anatomy(rng, shape, affine, lesion):
  """One subject's tissue fractions on the grid ``(shape, affine)``.

  Returns the box of the grid that holds the brain, the brain mask in it, the template
  coordinates of its voxels, the tissue fractions and textures of its brain voxels: one for
  normal tissue and, if ``lesion``, one for the lesion.
  """
  t = _templates()
  warp = types.SimpleNamespace(
      matrix=_rotation(np.deg2rad(rng.uniform(-4, 4, 3))) @ np.diag(rng.uniform(0.95, 1.05, 3)),
      displacement=[_random_coefs(rng, 4) for _ in range(3)], amplitude=rng.uniform(2, 4))
  # A coarse pass finds the part of the grid the brain falls in; the fine pass covers it.
  step = 4
  coarse = [np.arange(0, n, step) for n in shape]
  inside = _sample(t.mask, _to_template(warp, _grid_axes(affine, coarse))) > 0
  if not inside.any():
    raise RuntimeError("the warped brain falls outside the output grid")
  found = np.argwhere(inside)
  box = tuple(slice(max(int(c[a]) - step, 0), min(int(c[b]) + step + 1, n))
              for c, a, b, n in zip(coarse, found.min(axis=0), found.max(axis=0), shape))
  coords = _to_template(warp, _grid_axes(affine, [np.arange(s.start, s.stop) for s in box]))
  brain = _sample(t.mask, coords) >= 0.5
  points = coords[:, brain]
  gm, wm = _sample(t.gm, points), _sample(t.wm, points)  # gm + wm <= 1, as in the template
  # Textures live on a 2 mm grid in template space, so they deform with the anatomy.
  noise = rng.standard_normal((2,) + tuple(n // 2 + 2 for n in t.mask.shape), np.float32)
  texture = {}
  for name, channel in zip(("tissue", "lesion") if lesion else ("tissue",), noise):
    smooth = ndimage.gaussian_filter(channel, 0.75)
    texture[name] = _sample(smooth / smooth.std(), points / 2)
  return types.SimpleNamespace(box=box, brain=brain, points=points, texture=texture,
                               fractions={"gm": gm, "wm": wm,
                                          "csf": np.maximum(1.0 - gm - wm, 0.0)})


def _grid(anatomy, values, shape=None):
  """Brain-voxel values -> an array on the brain's box (or on the whole grid of ``shape``),
  0 outside the brain."""
  box = np.zeros(anatomy.brain.shape, values.dtype)
  box[anatomy.brain] = values
  if shape is None:
    return box
  full = np.zeros(shape, values.dtype)
  full[anatomy.box] = box
  return full


def _place(rng, anatomy, radius, prefer_white, avoid):
  """A lesion centre (box voxel) deep enough for ``radius`` mm, mostly in white matter, away
  from ``avoid`` (earlier centres, with their radii); returns ``(centre, radius)``."""
  t = _templates()
  candidates = rng.choice(anatomy.points.shape[1], 4096)
  depth = _sample(t.depth, anatomy.points[:, candidates])
  white = anatomy.fractions["wm"][candidates]
  voxels = np.argwhere(anatomy.brain)[candidates]
  for _ in range(12):
    ok = depth >= 1.7 * radius + 3
    if prefer_white:
      ok &= white >= 0.6
    for centre, r in avoid:
      ok &= np.linalg.norm(voxels - centre, axis=1) > radius + r + 5
    if ok.any():
      return voxels[np.flatnonzero(ok)[0]], radius
    radius *= 0.85
  raise RuntimeError("found no place for a lesion; the brain template looks wrong")


def _lesions(rng, anatomy):
  """Labels (uint8 on the brain's box) and soft fractions of one or two lesions.

  Works in voxels, so it assumes the 1 mm BraTS grid."""
  kind = rng.choice(list(_LESIONS), p=[0.65, 0.1, 0.25])
  core_label, radius_range = _LESIONS[kind]
  shape = anatomy.brain.shape
  label = np.zeros(shape, np.uint8)
  fractions = {k: np.zeros(shape, np.float32)
               for k in ("necrosis", "enhancing", "core", "edema")}
  wm_grid = _grid(anatomy, anatomy.fractions["wm"])
  csf_grid = _grid(anatomy, anatomy.fractions["csf"])
  placed = []
  for n in range(1 if rng.random() < 0.8 else 2):
    radius = rng.uniform(*radius_range) * (1.0 if n == 0 else rng.uniform(0.5, 0.8))
    radius = max(radius, radius_range[0])
    centre, radius = _place(rng, anatomy, radius, rng.random() < 0.85, placed)
    placed.append((centre, radius))
    reach_wm = radius * (rng.uniform(0.2, 0.8) if kind == "non-enhancing"
                         else rng.uniform(0.25, 0.9))
    reach_gm = reach_wm * rng.uniform(0.1, 0.35)
    half = int(np.ceil(2 * radius + 1.4 * reach_wm + 4))  # holds the lobes and the edema
    box = tuple(slice(max(c - half, 0), min(c + half + 1, s)) for c, s in zip(centre, shape))
    axes = [np.arange(s.start, s.stop) - c for s, c in zip(box, centre)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    stretch = np.clip(np.exp(rng.normal(0, 0.12, 3)), 0.75, 1.33)
    stretch /= np.prod(stretch) ** (1 / 3)
    r = np.linalg.norm((q.T @ offsets) / stretch[:, None], axis=0).reshape(label[box].shape)
    # An irregular outline: the radius varies smoothly with position by up to +-amount, in
    # lobes a fraction of the radius wide.
    amount = rng.uniform(0.15, 0.4)
    lobes = _cosine_field(_random_coefs(rng, 6, decay=0.5), axes, [-2 * radius] * 3,
                          4 * radius)
    lobes /= np.abs(lobes).max()
    local_radius = radius * (1 + amount * lobes)
    rho = r / local_radius
    brain = anatomy.brain[box]
    core_hard = (rho < 1) & brain
    core = np.clip((1 - rho) * local_radius + 0.5, 0, 1) * brain
    lab = label[box]
    lab[core_hard] = core_label
    if kind == "necrotic":
      # Necrosis: deeper inside the core than an enhancing rim 2.5 to about 9 mm thick.
      rim = np.maximum(rng.uniform(3, 7) * (1 + 0.3 * lobes), 2.5)
      depth = ndimage.distance_transform_edt(core_hard)
      lab[depth > rim] = 1
      necrosis = np.minimum(np.clip(depth - rim + 0.5, 0, 1), core)
      np.maximum(fractions["necrosis"][box], necrosis, out=fractions["necrosis"][box])
      np.maximum(fractions["enhancing"][box], core - necrosis, out=fractions["enhancing"][box])
    else:
      name = "enhancing" if kind == "solid" else "core"
      np.maximum(fractions[name][box], core, out=fractions[name][box])
    # Edema: within a distance of the core that is larger in white than in grey matter, never
    # in CSF, connected to the core.
    distance = ndimage.distance_transform_edt(~core_hard)
    wobble = _cosine_field(_random_coefs(rng, 6, decay=0.5), axes, [-half] * 3, 2 * half)
    wobble /= np.abs(wobble).max()
    reach = (reach_gm + (reach_wm - reach_gm) * wm_grid[box]) * (1 + 0.3 * wobble)
    allowed = brain & (csf_grid[box] < 0.5) & (distance < reach)
    components, _ = ndimage.label(allowed | core_hard)
    connected = np.isin(components, np.unique(components[core_hard]))
    lab[connected & (lab == 0)] = 2
    strength = np.clip((reach - distance) / rng.uniform(4, 10) + 0.5, 0, 1)
    strength *= ndimage.binary_dilation(connected) * (1 - csf_grid[box]) * brain
    np.maximum(fractions["edema"][box], strength, out=fractions["edema"][box])
  return label, {k: v[anatomy.brain] for k, v in fractions.items()}


def _image(rng, modality, anatomy, fractions, scanner: Scanner, axes):
  """One contrast on the brain voxels: the scanner's tissue means (jittered per subject)
  weighted by the fractions, with texture, a smooth multiplicative bias field and Rician
  noise."""
  bias_amplitude = rng.uniform(*scanner.bias)
  jitter = rng.uniform(0.95, 1.05, len(TISSUES))
  means = {t: float(m * j) for t, m, j in zip(TISSUES, scanner.means[modality], jitter)}
  sign = _TEXTURE_SIGN[modality]
  lesion = sum(fractions.get(k, 0.0) for k in ("necrosis", "enhancing", "core"))
  edema = fractions.get("edema", 0.0) * (1 - lesion)
  normal = 1.0 - lesion - edema
  values = normal * means["csf"] * anatomy.fractions["csf"]
  for tissue in ("gm", "wm"):
    values = values + (normal * means[tissue] * anatomy.fractions[tissue]
                       * (1 + sign * _TEXTURE[tissue] * anatomy.texture["tissue"]))
  for tissue, fraction in (dict(fractions, edema=edema) if fractions else {}).items():
    values = values + (fraction * means[tissue]
                       * (1 + sign * _TEXTURE[tissue] * anatomy.texture["lesion"]))
  log_bias = _cosine_field(_random_coefs(rng, 3), axes, _templates().centre - 100.0, 200.0)
  log_bias = log_bias[anatomy.brain]
  values = values * np.exp(bias_amplitude * log_bias / np.abs(log_bias).max())
  values = values * rng.uniform(0.75, 1.3)  # scanner gain
  sigma = rng.uniform(*scanner.noise) * means["wm"]
  real = values + sigma * rng.standard_normal(values.shape, np.float32)
  imaginary = sigma * rng.standard_normal(values.shape, np.float32)
  return np.sqrt(real ** 2 + imaginary ** 2).astype(np.float32)


def generate(dataset, seed, index, modalities, lesion, version=2, site="a"):
  """``(images, label, anatomy, affine)`` of case ``index`` of ``dataset`` ("brats" or "hcp")
  in the phantom ``seed`` (of ``version``, imaged at ``site``: ``scanner_of``), with only
  ``modalities``; ``label`` (on the anatomy's box) is None without a ``lesion``."""
  if seed < 0 or index < 0:
    raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
  scanner = scanner_of(dataset, seed, index, version, site)
  shape, affine = (BRATS_SHAPE, BRATS_AFFINE) if dataset == "brats" else (HCP_SHAPE,
                                                                           HCP_AFFINE)
  anatomy_rng, lesion_rng, image_rng = np.random.default_rng(
      [seed, DATASET_IDS[dataset], index]).spawn(3)
  anatomy = _anatomy(anatomy_rng, shape, affine, lesion)
  label, fractions = _lesions(lesion_rng, anatomy) if lesion else (None, {})
  axes = _grid_axes(affine, [np.arange(s.start, s.stop) for s in anatomy.box])
  images = {}
  for modality, rng in zip(modalities, image_rng.spawn(len(modalities))):
    values = _image(rng, modality, anatomy, fractions, scanner, axes)
    box = thick_slices(_grid(anatomy, values), scanner.thickness, anatomy.brain)
    images[modality] = np.zeros(shape, np.float32)
    images[modality][anatomy.box] = box
  return images, label, anatomy, affine.copy()


def make_brats_case(seed: int, index: int, return_tissues: bool = False, version: int = 2,
                    site: str = "a"):
  """BraTS-like case ``index`` of the phantom ``seed`` (its ``version``, scanned at ``site``):
  ``(images, label, affine)``.

  ``images`` maps 'flair', 't1', 't1c', 't2' to float32 [240, 240, 155] arrays, positive in
  the brain and 0 outside (the files hold them rounded to int16); ``label`` is uint8 with
  values in {0, 1, 2, 4}; ``affine`` is the 1 mm LPS affine of the files. With
  ``return_tissues`` a fourth item maps 'gm', 'wm', 'csf' to the subject's tissue fractions
  (float32, before the lesion), for checking contrasts.
  """
  images, label, anatomy, affine = generate("brats", seed, index, tuple(BRATS_FILES),
                                             lesion=True, version=version, site=site)
  label = _grid(anatomy, label[anatomy.brain], BRATS_SHAPE)
  if not return_tissues:
    return images, label, affine
  tissues = {k: _grid(anatomy, v.astype(np.float32), BRATS_SHAPE)
             for k, v in anatomy.fractions.items()}
  return images, label, affine, tissues


def make_hcp_subject(seed: int, index: int, version: int = 2):
  """HCP-like healthy subject ``index`` of the phantom ``seed``: ``(images, affine)``; the
  same in every version (HCP is one protocol).

  ``images`` maps 't1', 't2' to float32 [260, 311, 260] arrays of 0.7 mm voxels, positive in
  the brain and 0 outside (the files hold them rounded to int16); ``affine`` is HCP's LAS one.
  Their bias fields are weaker than BraTS's: HCP's ``restore`` images are bias-corrected.
  """
  images, _, _, affine = generate("hcp", seed, index, tuple(HCP_FILES), lesion=False,
                                  version=version)
  return images, affine
