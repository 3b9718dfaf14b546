"""Data augmentation of a training slice: spatial and intensity transforms, each off unless asked.

``augment(record, rng, settings)`` transforms one record of ``SliceSource``
(``{"image": [H, W, M], "available": [M], "label": [H, W]}``, ``"label"`` only for
segmentation) with numpy and ``scipy.ndimage`` only, since it runs in grain's worker
processes. ``make_loader`` applies it to each training slice with grain's ``random_map``,
whose generator is seeded by the loader's seed and the slice's position in the repeated,
shuffled stream: every epoch sees each slice transformed anew, and a resumed run the same
transforms as an uninterrupted one. Validation and evaluation never augment.

Each transform has a probability ``p_<name>`` (0, the default: off) of being applied to a
slice, drawn once per slice, and the range its magnitude is drawn from. The reference
points are nnU-Net's (Isensee et al., 2021, Nature Methods 18:203; its batchgenerators
pipeline: ``nnUNetTrainer.get_training_transforms`` in nnU-Net v2 and
``default_2D_augmentation_params`` in v1) and MONAI's transforms; each field of
``AugmentSettings`` names the one it follows. The probabilities a job uses are its
config's: the CPU presets' recipes choose ``AugmentSettings.typical()``'s, by measurement
(configs/default.py, ``AUGMENT``), the paper's setup none.

Spatial transforms (one draw per slice, the same for every modality and the label):
``flip`` (left-right), ``rotate``, ``scale`` and ``elastic``. Slices are axial cuts of
volumes turned to RAS (``urn_jax.data.preprocess``), so a record's ``[H, W]`` is ``[X, Y]``:
axis 0 runs from the patient's left to right, axis 1 from posterior to anterior (as
``urn_jax.inference.predict.MIRROR_AXES`` says of a batch ``[N, X, Y, M]``). Left-right is
the one flip the anatomy allows (the brain is nearly symmetric; a tumour may lie on either
side). Rotation, scaling and elastic deformation are composed into one sampling grid, so
the image is interpolated once: linearly (order 1), the label by its nearest neighbour
(order 0, so its values stay classes it had), and whatever comes from outside the slice
is 0, the background of skull-stripped scans.

Intensity transforms (per modality, only for available ones, only inside the foreground:
the voxels where any available modality is nonzero after the spatial transforms):
``bias`` field, Gaussian ``noise``, Gaussian ``blur``, ``brightness``, ``contrast``,
simulated low resolution (``lowres``), ``gamma`` and a random monotone remap of the
intensities (``histogram``), in that order (nnU-Net's, with the bias field, which changes
the signal the scanner records, first, and MONAI's histogram shift, added later, last).
Whether a transform is applied is drawn once per slice; its magnitude per modality. The
background stays exactly 0, as in skull-stripped BraTS scans and after pre-processing's
z-scoring, and an absent modality stays all-zero: the network must still be able to tell
absent from present.
``"available"`` and the label's values are never changed.

Pre-training records have no label: the image is both the input and the synthesis
target, so transforming the record transforms both alike (the same spatial and intensity
transforms); modality dropout, applied in the training step, then hides some inputs of
the augmented slice. With ``clean_targets`` the record also gets a ``"target"``: the slice
after the spatial transforms only, which the synthesis loss then reconstructs instead of
the input (``urn_jax.training.steps.pretrain_objective``).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy import ndimage

# Probability fields, in the order the transforms are applied.
SPATIAL = ("p_flip", "p_rotate", "p_scale", "p_elastic")
# The histogram shift came last, after the others' streams were fixed: appended, it leaves the
# draws of every earlier transform as they were.
INTENSITY = ("p_bias", "p_noise", "p_blur", "p_brightness", "p_contrast", "p_lowres", "p_gamma",
             "p_histogram")
PROBABILITIES = SPATIAL + INTENSITY

# Range fields: (lowest, highest allowed, what the values are). config_checks reads them.
RANGES = {
    "rotate_degrees": (-180.0, 180.0, "degrees"),
    "scale": (0.25, 4.0, "zoom factors; > 1 magnifies"),
    "elastic_alpha": (0.0, 10_000.0, "displacement scales"),
    "elastic_sigma": (0.5, 100.0, "smoothing widths in voxels"),
    "bias_strength": (0.0, 2.0, "peaks of the log bias field"),
    "noise_std": (0.0, 5.0, "standard deviations of the z-scored image"),
    "blur_sigma": (0.0, 10.0, "Gaussian widths in voxels"),
    "brightness_shift": (-5.0, 5.0, "shifts in standard deviations"),
    "contrast_factor": (0.1, 10.0, "factors about the foreground mean"),
    "lowres_factor": (1.0, 8.0, "downsampling factors"),
    "gamma": (0.1, 10.0, "exponents"),
}
# Whole-number fields: (lowest, highest allowed, what the values are). config_checks reads them.
COUNTS = {
    "bias_degree": (1, 6, "the bias field's degree: at least linear, still smooth"),
    "histogram_points": (3, 64, "control points of the histogram shift: at least one moves"),
}
# The config block's one field that is not a setting: False turns every transform off (the
# paper's setup) without touching the probabilities.
SWITCH = "enabled"


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  """What ``augment`` does; every probability 0 (the default) turns it off.

  Ranges are ``(low, high)``; a magnitude is drawn uniformly between them, except for the
  factors ``scale``, ``contrast_factor`` and ``gamma``: when their range spans 1, a factor
  below and one above 1 are equally likely (nnU-Net's draw), so ``(0.7, 1.4)`` shrinks as
  often as it magnifies.
  """

  # Left-right flip (axis 0). nnU-Net mirrors every axis with probability 0.5; MONAI's
  # BraTS tutorial flips each axis with RandFlipd(prob=0.5).
  p_flip: float = 0.0
  # In-plane rotation. nnU-Net v2 rotates with probability 0.2, by up to 30 degrees about
  # each axis of 3D patches (its 2D setting's full turn would show brains upside down,
  # which axial slices of RAS volumes never are).
  p_rotate: float = 0.0
  rotate_degrees: tuple[float, float] = (-30.0, 30.0)
  # Isotropic zoom, > 1 magnifies. nnU-Net v2: probability 0.2, (0.7, 1.4).
  p_scale: float = 0.0
  scale: tuple[float, float] = (0.7, 1.4)
  # Elastic deformation (Simard et al., 2003): per axis, uniform noise in [-1, 1] smoothed
  # by a Gaussian of width sigma (voxels), times alpha. nnU-Net v1's 2D values (alpha 0 to
  # 200, sigma 9 to 13), with probability 0.2 where it was on; v2 leaves it off.
  p_elastic: float = 0.0
  elastic_alpha: tuple[float, float] = (0.0, 200.0)
  elastic_sigma: tuple[float, float] = (9.0, 13.0)
  # Smooth multiplicative bias field, exp of a random Legendre polynomial of degree
  # bias_degree (MONAI's RandBiasField: degree 3, probability 0.1), scaled so that its log
  # reaches +-strength in the foreground (0.3: intensities times 0.74 to 1.35). Applied to
  # the intensities above the foreground's minimum, which stands in for the zero signal
  # that z-scoring moved.
  p_bias: float = 0.0
  bias_strength: tuple[float, float] = (0.0, 0.3)
  bias_degree: int = 3
  # Additive Gaussian noise, its standard deviation drawn from the range (in the image's
  # standard deviations: it is z-scored). nnU-Net: probability 0.1, (0, 0.1).
  p_noise: float = 0.0
  noise_std: tuple[float, float] = (0.0, 0.1)
  # Gaussian blur, width in voxels. nnU-Net: probability 0.2, (0.5, 1.0).
  p_blur: float = 0.0
  blur_sigma: tuple[float, float] = (0.5, 1.0)
  # Additive brightness shift, in standard deviations. nnU-Net v1's additive brightness
  # (mean 0, sd 0.1; probability 0.15, off by default); MONAI's BraTS tutorial shifts by up
  # to 0.1 (RandShiftIntensityd). nnU-Net's multiplicative brightness is close to contrast
  # below on z-scored images.
  p_brightness: float = 0.0
  brightness_shift: tuple[float, float] = (-0.1, 0.1)
  # Contrast: (x - mean) * factor + mean over the foreground, clipped to its former range
  # (nnU-Net's preserve_range). nnU-Net: probability 0.15, (0.75, 1.25).
  p_contrast: float = 0.0
  contrast_factor: tuple[float, float] = (0.75, 1.25)
  # Simulated low resolution: downsampled by the factor (nearest neighbour), upsampled
  # back (linear). nnU-Net: probability 0.25, zoom 0.5 to 1 (factor 1 to 2), upsampled
  # with cubic splines, which overshoot at edges.
  p_lowres: float = 0.0
  lowres_factor: tuple[float, float] = (1.0, 2.0)
  # Gamma on the foreground rescaled to [0, 1] and back, then moved back to its former
  # mean and standard deviation (nnU-Net's retain_stats). nnU-Net: probability 0.3,
  # (0.7, 1.5) (and 0.1 on the inverted image, not done here).
  p_gamma: float = 0.0
  gamma: tuple[float, float] = (0.7, 1.5)
  # Histogram shift (MONAI's RandHistogramShift: probability 0.1, 10 control points): the
  # foreground's intensity range cut at ``histogram_points`` evenly spaced control points,
  # the two ends kept, each inner point in turn moved to a value drawn uniformly between
  # the moved point before it and the unmoved one after it (so the map stays monotone),
  # and the voxels mapped piecewise linearly. Unlike brightness, contrast and gamma (one
  # number each), it changes how bright tissues are relative to one another - edema
  # against grey matter, say - as another scanner or protocol does.
  p_histogram: float = 0.0
  histogram_points: int = 10
  # Pre-training only (records without a label): the synthesis targets get the spatial
  # transforms but not the intensity ones, so the encoders learn to undo a scanner's
  # intensity changes rather than carry them through to the decoder - a restoration
  # objective, as in Models Genesis (Zhou et al., MICCAI 2019), which restores original
  # images from intensity-transformed ones. False (the default): targets are the inputs.
  clean_targets: bool = False

  @classmethod
  def from_config(cls, config) -> "AugmentSettings":
    """From ``config.augment`` (a ConfigDict or dict; lists, as JSON gives them, become
    tuples). An absent field keeps its default; a given one takes its default's type.
    ``enabled`` False (``SWITCH``) sets every probability to 0, whatever the block says."""
    values = dict(config.items()) if hasattr(config, "items") else dict(config)
    if not values.pop(SWITCH, True):
      values.update({p: 0.0 for p in PROBABILITIES})
    fields = {}
    for field in dataclasses.fields(cls):
      if field.name in values:
        value, kind = values[field.name], type(field.default)
        fields[field.name] = (tuple(float(v) for v in value) if kind is tuple
                              else kind(value))
    return cls(**fields)

  @classmethod
  def typical(cls) -> "AugmentSettings":
    """Every transform on at about nnU-Net's probability (MONAI's for the bias field and
    nnU-Net v1's where v2 has none: elastic deformation, additive brightness), with the
    default magnitudes: a reference point for measurements, not a recommendation."""
    return cls(p_flip=0.5, p_rotate=0.2, p_scale=0.2, p_elastic=0.2, p_bias=0.1,
               p_noise=0.1, p_blur=0.2, p_brightness=0.15, p_contrast=0.15, p_lowres=0.25,
               p_gamma=0.3)

  @property
  def active(self) -> bool:
    """Whether any transform can happen: if not, the loader leaves augmentation out."""
    return any(getattr(self, p) > 0 for p in PROBABILITIES)

  def only(self, kind: str) -> "AugmentSettings":
    """These settings with the probabilities of the other kind (``"spatial"`` or
    ``"intensity"``) set to 0."""
    off = INTENSITY if kind == "spatial" else SPATIAL if kind == "intensity" else None
    if off is None:
      raise ValueError(f"kind must be 'spatial' or 'intensity', got {kind!r}")
    return dataclasses.replace(self, **{p: 0.0 for p in off})


def _happens(rng: np.random.Generator, p: float) -> bool:
  # No draw for a transform that is off: settings that are all off draw nothing, and the
  # spatial draws (first) do not depend on which intensity transforms are on.
  return p > 0 and rng.random() < p


def _factor(rng: np.random.Generator, bounds) -> float:
  """nnU-Net's draw of a factor: below and above 1 equally likely when the range spans 1."""
  low, high = bounds
  if low < 1 < high:
    return rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high)
  return rng.uniform(low, high)


def _sampling(shape, rng, settings: AugmentSettings):
  """Where each output voxel samples the input, or None for no resampling: the output grid,
  deformed (elastic), then rotated and zoomed about the slice's centre. Without a
  deformation, ``(matrix, offset)`` for ``ndimage.affine_transform``, which computes the
  positions as it goes (twice as fast); with one, the positions ``[2, H, W]``."""
  rotate, scale = _happens(rng, settings.p_rotate), _happens(rng, settings.p_scale)
  elastic = _happens(rng, settings.p_elastic)
  if not (rotate or scale or elastic):
    return None
  centre = (np.asarray(shape, np.float64) - 1) / 2
  displacement = None
  if elastic:  # batchgenerators' elastic_deform_coordinates
    alpha, sigma = rng.uniform(*settings.elastic_alpha), rng.uniform(*settings.elastic_sigma)
    displacement = np.stack([ndimage.gaussian_filter(rng.uniform(-1, 1, shape), sigma,
                                                     mode="constant", cval=0.0) * alpha
                             for _ in range(2)])
  angle = np.deg2rad(rng.uniform(*settings.rotate_degrees)) if rotate else 0.0
  zoom = _factor(rng, settings.scale) if scale else 1.0
  matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / zoom
  if displacement is None:
    return matrix, centre - matrix @ centre
  grid = np.indices(shape, np.float64) - centre[:, None, None] + displacement
  return np.einsum("ij,jhw->ihw", matrix, grid) + centre[:, None, None]


def _resample(array, sampling, order):
  """``array`` (2D) sampled where ``sampling`` (``_sampling``'s) says, 0 outside it."""
  if isinstance(sampling, tuple):
    matrix, offset = sampling
    return ndimage.affine_transform(array, matrix, offset, order=order, mode="constant",
                                    cval=0)
  return ndimage.map_coordinates(array, sampling, order=order, mode="constant", cval=0)


def _spatial(image, label, channels, rng, settings: AugmentSettings):
  if _happens(rng, settings.p_flip):
    image = image[::-1]
    label = None if label is None else label[::-1]
  sampling = _sampling(image.shape[:2], rng, settings)
  if sampling is not None:
    moved = np.zeros_like(image)
    for m in channels:
      moved[..., m] = _resample(image[..., m], sampling, order=1)
    image = moved
    if label is not None:
      label = _resample(label, sampling, order=0)
  return image, label


def _bias_field(shape, foreground, rng, strength, degree):
  """exp of a random Legendre polynomial over the slice (``[-1, 1]`` per axis) of total
  degree ``degree``, without a constant term (a global factor is contrast's business),
  its log scaled to reach +-``strength`` in the foreground (MONAI's RandBiasField)."""
  coefficients = rng.normal(size=(degree + 1, degree + 1))
  orders = np.add.outer(np.arange(degree + 1), np.arange(degree + 1))
  coefficients[(orders > degree) | (orders == 0)] = 0
  rows, columns = (np.polynomial.legendre.legvander(np.linspace(-1, 1, n), degree)
                   for n in shape)
  log_field = (rows @ coefficients @ columns.T)[foreground]
  peak = np.abs(log_field).max()
  return np.exp(log_field * (strength / peak if peak > 0 else 0.0))


def _resize(channel, shape, order):
  """``channel`` resampled to ``shape`` with voxel centres aligned (grid mode)."""
  return ndimage.zoom(channel, np.divide(shape, channel.shape), order=order, mode="nearest",
                      grid_mode=True)


def _histogram_shift(values, rng, points: int):
  """``values`` through a random monotone piecewise-linear map of their range onto itself
  (``AugmentSettings.p_histogram`` says how it is drawn); constant values stay as they are."""
  low, high = values.min(), values.max()
  if high <= low:
    return values
  reference = np.linspace(low, high, points)
  moved = reference.copy()
  for i in range(1, points - 1):
    moved[i] = rng.uniform(moved[i - 1], moved[i + 1])
  return np.interp(values, reference, moved)


def _intensity(image, channels, rng, settings: AugmentSettings):
  """The intensity transforms, on a copy of ``image``; its background stays 0."""
  foreground = (image[..., channels] != 0).any(-1)
  if not foreground.any():
    return image
  s = settings
  image = np.array(image, np.float32)
  shape = image.shape[:2]
  for p in INTENSITY:
    if not _happens(rng, getattr(s, p)):
      continue
    for m in channels:
      values = image[..., m][foreground].astype(np.float64)
      if p == "p_bias":
        low = values.min()
        values = (values - low) * _bias_field(shape, foreground, rng,
                                              rng.uniform(*s.bias_strength), s.bias_degree) + low
      elif p == "p_noise":
        values = values + rng.normal(0.0, rng.uniform(*s.noise_std), values.shape)
      elif p == "p_blur":
        values = ndimage.gaussian_filter(image[..., m], rng.uniform(*s.blur_sigma))[foreground]
      elif p == "p_brightness":
        values = values + rng.uniform(*s.brightness_shift)
      elif p == "p_contrast":
        low, high, mean = values.min(), values.max(), values.mean()
        values = np.clip((values - mean) * _factor(rng, s.contrast_factor) + mean, low, high)
      elif p == "p_lowres":
        factor = rng.uniform(*s.lowres_factor)
        small = tuple(max(1, int(round(n / factor))) for n in shape)
        values = _resize(_resize(image[..., m], small, order=0), shape, order=1)[foreground]
      elif p == "p_gamma":
        low, span = values.min(), np.ptp(values)
        mean, std = values.mean(), values.std()
        gamma = _factor(rng, s.gamma)
        values = (((values - low) / (span + 1e-7)) ** gamma) * span + low
        values = (values - values.mean()) / (values.std() + 1e-8) * std + mean
      elif p == "p_histogram":
        values = _histogram_shift(values, rng, s.histogram_points)
      channel = image[..., m]
      channel[foreground] = values
  return image


def augment(record: dict, rng: np.random.Generator, settings: AugmentSettings) -> dict:
  """``record`` (one slice of ``SliceSource``) transformed as ``settings`` say, drawing from
  ``rng``; a new record, the input left as it was. Settings that are all off return it
  unchanged and draw nothing."""
  if not settings.active:
    return record
  available = np.asarray(record["available"], bool)
  channels = np.flatnonzero(available)
  image, label = record["image"], record.get("label")
  image, label = _spatial(image, label, channels, rng, settings)
  out = dict(record)
  if settings.clean_targets and label is None:
    out["target"] = np.ascontiguousarray(image, np.float32)
  image = _intensity(image, channels, rng, settings)
  out["image"] = np.ascontiguousarray(image, np.float32)
  if label is not None:
    out["label"] = np.ascontiguousarray(label, record["label"].dtype)
  return out


def augmenter(settings: AugmentSettings):
  """``augment`` with ``settings`` bound: the ``(record, rng)`` function of grain's
  ``random_map`` (picklable, for worker processes)."""
  return functools.partial(augment, settings=settings)
