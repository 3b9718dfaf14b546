"""M copies of one module with parameters stacked on a leading axis: the modality encoders
and the synthesis decoders.

Two ways to run the copies, with the same parameter tree (checkpoints move between them):

- ``'vmap'``: one vectorized program; XLA sees grouped convolutions. The natural choice
  for GPUs.
- ``'unroll'``: a scan over the stacked parameters, fully unrolled inside the one jitted
  program. XLA's CPU backend has no fast grouped convolution: on a 2-core CPU a small URN
  pre-training step took 0.59 s with ``'vmap'`` and 0.056 s unrolled
  (``benchmarks/stacking.py``, numbers in ``benchmarks/RESULTS.md``).

``'auto'`` picks ``'unroll'`` on CPU and ``'vmap'`` elsewhere. Either way the mask is data
and there is a single compilation for every combination of modalities. The two strategies
draw different initial values from the same key (the random streams are split differently).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from urn_jax.model.unet import MOMENTS

STACKINGS = ("auto", "vmap", "unroll")


def resolve_stacking(stacking: str) -> str:
  if stacking not in STACKINGS:
    raise ValueError(f"stacking must be one of {STACKINGS}, got {stacking!r}")
  if stacking == "auto":
    return "unroll" if jax.default_backend() == "cpu" else "vmap"
  return stacking


def stack(module_cls, stacking: str, length: int, broadcast: bool):
  """Lifts ``module_cls``, whose ``__call__(self, carry, xs)`` returns ``(carry, ys)``, to
  ``length`` copies. ``xs`` is split along axis 0, or given whole to every copy when
  ``broadcast``; ``ys`` is stacked along axis 0."""
  common = dict(variable_axes={"params": 0, "batch_stats": 0, MOMENTS: 0},
                split_rngs={"params": True})
  if resolve_stacking(stacking) == "vmap":
    return nn.vmap(module_cls, in_axes=(None, None if broadcast else 0), out_axes=(None, 0),
                   axis_size=length, **common)
  return nn.scan(module_cls, in_axes=nn.broadcast if broadcast else 0, out_axes=0,
                 length=length, unroll=length, **common)
