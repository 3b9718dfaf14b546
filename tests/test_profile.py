"""benchmarks/profile_step.py attributes a traced step's time to XLA's operations.

Its findings in benchmarks/RESULTS.md rest on matching the trace's thunks with the
optimized HLO and on recognizing XLA:CPU's kernel gradients (convolutions whose window is
the whole image). If an XLA release changes either, this test fails rather than the
profile silently reporting nothing, or everything as 'other'.
"""

import importlib.util
from pathlib import Path

import jax
import pytest

_spec = importlib.util.spec_from_file_location(
    "profile_step", Path(__file__).resolve().parents[1] / "benchmarks" / "profile_step.py")
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the profile reads XLA:CPU's thunks")
def test_the_profile_finds_each_kind_of_convolution_in_each_part_of_the_urn():
  result = profile_step.profile_jax("urn_pretrain", (4, 8), size=16, batch_size=2, steps=2)
  kinds, parts = result["by_kind"], result["by_part"]
  assert set(kinds) <= set(profile_step.KINDS)
  for kind in ("convolution forward", "convolution input gradient",
               "convolution kernel gradient", "element-wise"):
    assert kinds.get(kind, 0) > 0, (kind, kinds)
  assert parts.get("encoders", 0) > 0 and parts.get("decoders", 0) > 0, parts
  assert 0 < result["thunks_ms"] and 0 < result["step_ms"]
