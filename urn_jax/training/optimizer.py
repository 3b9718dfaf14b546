"""The optimizer: Adam (paper 2.4) with a learning-rate schedule, and freezing.

The paper trains with a constant learning rate (1e-4 segmentation, 3e-5 pre-training) for
about 350k steps at U-Net widths 64-1024. Adam moves each weight by about the learning rate
per step, so the same rate barely moves a model given the few thousand steps a CPU affords:
the smaller presets warm up and then decay a larger rate over the run's own length
(``configs/default.py`` says which and why). The ``paper`` preset keeps ``constant``.
"""

from __future__ import annotations

import optax

SCHEDULES = ("constant", "warmup_cosine", "poly")


def learning_rate_schedule(kind: str, peak: float, total_steps: int, warmup_steps: int = 0,
                           end_fraction: float = 0.0):
  """The learning rate as a function of the step (an optax schedule).

  - ``constant``: ``peak`` throughout (the paper); ``warmup_steps`` and ``end_fraction``
    are ignored.
  - ``warmup_cosine``: linear from 0 to ``peak`` over ``warmup_steps``, then a half cosine
    down to ``end_fraction * peak`` at ``total_steps`` (Loshchilov and Hutter, 2017).
  - ``poly``: linear warm-up, then ``peak * (1 - t)^0.9`` with ``t`` the fraction of the
    decay done, floored at ``end_fraction * peak`` (nnU-Net's schedule, Isensee et al. 2021).
  """
  if kind not in SCHEDULES:
    raise ValueError(f"learning-rate schedule must be one of {SCHEDULES}, got {kind!r}")
  if kind == "constant":
    return optax.constant_schedule(peak)
  warmup_steps = min(max(int(warmup_steps), 0), max(total_steps - 1, 0))
  decay_steps = max(total_steps - warmup_steps, 1)
  end = end_fraction * peak
  if kind == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, total_steps, end)
  decay = optax.polynomial_schedule(peak, end, power=0.9, transition_steps=decay_steps)
  if not warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def make_optimizer(learning_rate, frozen: tuple[str, ...] = ()):
  """Adam with default settings (paper 2.4) at ``learning_rate`` (a number or an optax
  schedule); the top-level modules named in ``frozen`` get a zero update, so their
  parameters stay bit-identical (freezing lives in the optimizer)."""
  adam = optax.adam(learning_rate)
  if not frozen:
    return adam
  def labels(params):
    return {name: "frozen" if name in frozen else "trained" for name in params}
  return optax.multi_transform({"trained": adam, "frozen": optax.set_to_zero()}, labels)
