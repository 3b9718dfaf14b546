"""The linear probe reads what a representation makes linearly available, and nothing else:
classes that are a linear function of z are found, classes unrelated to z are not."""

import numpy as np

from urn_jax.experiments.probes import fit_probe, probe_dice


def _data(informative, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(40, 16, 16, 8)).astype(np.float32)
  labels = np.zeros((40, 16, 16), np.int32)
  tumour = z[..., 0] > 0.3  # a linear rule of z: what a probe should find
  labels[tumour] = np.where(z[..., 1] > 0, 1, np.where(z[..., 2] > 0, 2, 3))[tumour]
  if not informative:
    z = rng.normal(size=z.shape).astype(np.float32)  # the same labels, z unrelated to them
  brain = np.ones(labels.shape, bool)
  return z, labels, brain


def test_a_probe_finds_linear_structure_and_not_noise():
  z, labels, brain = _data(informative=True)
  probe = fit_probe(z[:30], labels[:30], brain[:30])
  found = probe_dice(probe, z[30:], labels[30:], brain[30:])
  assert min(found.values()) > 80, found
  z, labels, brain = _data(informative=False)
  probe = fit_probe(z[:30], labels[:30], brain[:30])
  noise = probe_dice(probe, z[30:], labels[30:], brain[30:])
  assert max(noise.values()) < 50, noise


def test_outside_the_brain_the_probe_says_background():
  z, labels, brain = _data(informative=True)
  brain[:, :8] = False
  probe = fit_probe(z, labels, brain)
  logits_everywhere = probe_dice(probe, z, np.where(brain, labels, 0), brain)
  assert min(logits_everywhere.values()) > 80
