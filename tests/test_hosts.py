"""Several hosts, for real: two JAX processes on this machine (CPU collectives over gloo)
train one model as one process with two devices does, write and print as one, survive the
loss of a process without hanging, and resume together.

Nothing is patched: each process is ``launch.py`` with ``--coordinator_address``,
``--num_processes`` and ``--process_id``, as on a cluster. The reference is one process
with two (fake) CPU devices, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``: the
same mesh of two devices, the same global batch of 4, the same seed and data order.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import ROOT, _state, with_devices

from urn_jax.hosts import free_port

pytestmark = pytest.mark.slow  # it starts processes that train

STEPS, PEER_TIMEOUT = 6, 10
# A tiny Baseline + MD on tiny_data (its modality dropout draws per slice: the draws must
# fall on the same rows whichever process holds them): 16 px slices, 6 steps, checkpoints
# every 2 steps, validation (Dice too) at steps 3 and 6.
TINY = ["--config.data.n4=False", "--config.data.size=16", "--config.data.spacing=1.0",
        "--config.data.workers=1", "--config.model.segmentation_features=(4,8)",
        "--config.train.batch_size=4",
        f"--config.train.max_steps={STEPS}", "--config.train.eval_every=3",
        "--config.train.checkpoint_every=2", "--config.train.log_every=1",
        "--config.train.eval_slices=8"]


def _command(data: Path, workdir: Path) -> list[str]:
  return [sys.executable, str(ROOT / "launch.py"),
          f"--config={ROOT / 'configs/segment.py'}:baseline_md", f"--workdir={workdir}", f"--config.data.brats_dir={data / 'brats'}",
          f"--config.data.hcp_dir={data / 'hcp'}", f"--config.data.cache_dir={data / 'cache'}",
          *TINY]


def _start(data, workdir, environment, processes=2, only_for_1=()):
  """``processes`` processes of one run, each with its own output files; with one, a
  process with two CPU devices instead. ``only_for_1``: flags process 1 alone gets."""
  workdir.mkdir(parents=True, exist_ok=True)
  if processes == 1:
    environment = with_devices(environment, 2)
    peers = [[]]
  else:
    address = f"127.0.0.1:{free_port()}"
    peers = [[f"--coordinator_address={address}", f"--num_processes={processes}",
              f"--process_id={index}", f"--peer_timeout={PEER_TIMEOUT}"]
             for index in range(processes)]
  started = []
  for index, flags in enumerate(peers):
    flags = flags + list(only_for_1) if index == 1 else flags
    with (open(workdir.parent / f"{workdir.name}.{index}.out", "a") as out,
          open(workdir.parent / f"{workdir.name}.{index}.err", "a") as err):
      started.append(subprocess.Popen(_command(data, workdir) + flags, stdout=out,
                                      stderr=err, env=environment, cwd=workdir.parent))
  return started


def _finish(started, timeout=240):
  return [p.wait(timeout=timeout) for p in started]


def _output(workdir, index, stream):
  return (workdir.parent / f"{workdir.name}.{index}.{stream}").read_text()


def _parameters(workdir):
  return jax.tree_util.tree_leaves(_state(workdir)["params"])


@pytest.fixture(scope="module")
def environment(command_environment):
  return dict(command_environment, PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def two_processes(tiny_data, tmp_path_factory, environment):
  """An uninterrupted run of two processes, one device each."""
  workdir = tmp_path_factory.mktemp("hosts") / "two"
  assert _finish(_start(tiny_data, workdir, environment)) == [0, 0], (
      _output(workdir, 0, "err")[-3000:] + _output(workdir, 1, "err")[-3000:])
  return workdir


def test_two_processes_train_as_one_process_with_two_devices(two_processes, tiny_data,
                                                             tmp_path, environment):
  one = tmp_path / "one"
  assert _finish(_start(tiny_data, one, environment, processes=1)) == [0], (
      _output(one, 0, "err")[-3000:])
  assert "2 cpu device(s) on 2 host(s); global batch 4" in _output(two_processes, 0, "err")
  assert "2 cpu device(s) on 1 host(s); global batch 4" in _output(one, 0, "err")
  for a, b in zip(_parameters(two_processes), _parameters(one), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  curves = [[json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
            for w in (two_processes, one)]
  assert [r["step"] for r in curves[0]] == list(range(1, STEPS + 1))
  for a, b in zip(*curves, strict=True):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for key in ("validation_loss", "validation_dice_WT"):
      if key in b:
        assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_process_zero_alone_writes_and_prints(two_processes):
  # gloo's own line, printed by its C++ when the processes connect, is all process 1 says
  said = [line for line in _output(two_processes, 1, "out").splitlines()
          if not line.startswith("[Gloo] Rank 1 is connected")]
  assert said == [] and _output(two_processes, 1, "err") == ""
  printed = _output(two_processes, 0, "err")  # urn_jax's console is stderr
  assert printed.count("global batch 4") == 1 and printed.count("done: step 6") == 1
  lines = (two_processes / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == STEPS  # one writer: each step once
  assert len(list((two_processes / "tensorboard").rglob("events.out.tfevents.*"))) == 1
  for name in ("config.json", "split.json"):
    json.loads((two_processes / name).read_text())
  # Each process saved its own data loader's position with the checkpoint.
  step = two_processes / "checkpoints" / str(STEPS)
  assert len(list(step.rglob("process_*-of-2*"))) == 2


def _wait_for_steps(started, workdir, steps):
  metrics, deadline = workdir / "metrics.jsonl", time.monotonic() + 180
  while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= steps):
    assert time.monotonic() < deadline and all(p.poll() is None for p in started)
    time.sleep(0.02)


def _saved(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_a_stopped_or_killed_process_ends_the_other_and_both_resume(
    two_processes, tiny_data, tmp_path, environment):
  """SIGTERM to process 1 alone stops both after the same step, with a checkpoint; a
  ``kill -9`` of process 1 ends process 0 with a message, at once in a step or after
  ``--peer_timeout`` seconds at a barrier (a checkpoint being saved; which one depends on
  when the kill lands); each time, the same command on both resumes, and the run ends
  bit-identical to an uninterrupted one."""
  workdir = tmp_path / "interrupted"
  started = _start(tiny_data, workdir, environment)
  _wait_for_steps(started, workdir, 1)
  started[1].send_signal(signal.SIGTERM)
  assert _finish(started) == [130, 130]
  stopped = _saved(workdir)
  assert stopped and max(stopped) < STEPS
  assert (f"interrupted (another process's stop request) at step {max(stopped)} of {STEPS}"
          in _output(workdir, 0, "err"))

  started = _start(tiny_data, workdir, environment)
  _wait_for_steps(started, workdir, max(stopped) + 1)  # killed as early as it can be, so
  started[1].send_signal(signal.SIGKILL)  # that the run cannot have ended first
  killed = time.monotonic()
  code = started[0].wait(timeout=PEER_TIMEOUT + 60)
  ended_within = time.monotonic() - killed
  stderr = _output(workdir, 0, "err")
  assert ended_within < PEER_TIMEOUT + 30, stderr[-3000:]
  if code == 1:  # in a step: its collective failed at once
    assert "another process of this run has died" in stderr, stderr[-3000:]
    assert "start every process again with the same command" in stderr
  else:  # at a checkpoint's barrier: JAX's runtime ended it after PEER_TIMEOUT seconds
    assert code == -signal.SIGABRT, stderr[-3000:]
    assert "another task died" in stderr and ended_within > PEER_TIMEOUT - 5
  saved = _saved(workdir)
  assert max(saved) < STEPS
  assert f"resuming from step {max(stopped)}" in stderr

  assert _finish(_start(tiny_data, workdir, environment)) == [0, 0], (
      _output(workdir, 0, "err")[-3000:])
  assert f"resuming from step {max(saved)}" in _output(workdir, 0, "err")
  for a, b in zip(jax.tree_util.tree_leaves(_state(workdir)),
                  jax.tree_util.tree_leaves(_state(two_processes)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_process_that_fails_alone_ends_the_run_at_once(tiny_data, tmp_path, environment):
  """Process 1 alone is given a data folder that does not exist: it leaves with its error,
  and process 0, waiting for it at the data barrier, ends too, well before any timeout."""
  workdir = tmp_path / "failed"
  begun = time.monotonic()
  started = _start(tiny_data, workdir, environment,
                   only_for_1=[f"--config.data.brats_dir={tmp_path / 'nowhere'}"])
  assert _finish(started, timeout=PEER_TIMEOUT + 60) == [1, 1]
  assert time.monotonic() - begun < PEER_TIMEOUT + 20
  assert "nowhere" in _output(workdir, 1, "err")
  assert "another process of this run has died" in _output(workdir, 0, "err")
