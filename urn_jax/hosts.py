"""Several JAX processes training one model: on a cluster, or several on one machine.

Every process runs the same command; JAX's distributed runtime (``jax.distributed``) joins
them into one program over all their devices, with CPU collectives (gloo) where the devices
are CPUs. What urn_jax does with them is the training loop's (``urn_jax.training.loop``):
one global batch sharded over every device, process 0 alone writes and prints.

- On a cluster, ``launch.py --multi_host`` lets ``jax.distributed.initialize`` find its
  peers (SLURM: ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``, ``SLURM_PROCID``; Open MPI;
  Cloud TPU), or ``--coordinator_address``, ``--num_processes`` and ``--process_id`` say it.
- On one machine, ``launch.py --local_processes=N`` (``run_local``) starts the N processes
  itself, on a free port of 127.0.0.1, and waits for them.

A process that dies (a host lost, ``kill -9``) does not leave the others hanging: their
next collective fails at once (gloo's connection is reset), which the training loop
reports as ``PeerLost`` when it next waits for its devices (a logged step); where a process
waits on the runtime instead (a barrier), the runtime ends it after ``peer_timeout`` seconds
without a heartbeat from the dead one
(``jax.distributed.initialize(heartbeat_timeout_seconds=...)``). A process that fails on its
own (an error, a stop request) leaves at once (``leave``), so that its peers do not wait for
it. Re-running the same command on every process resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import traceback

import jax


PEER_TIMEOUT = 100  # seconds: JAX's own default heartbeat timeout


class PeerLost(RuntimeError):
  """Another process of a multi-process run has died: this one cannot go on."""


# What the runtime's errors say when a peer is gone: gloo's connection reset or closed, the
# coordination service's missing heartbeats or failed barriers.
_PEER_SIGNS = ("Gloo", "gloo", "Connection reset by peer", "Connection closed by peer",
               "heartbeat", "coordination service", "Barrier failed")


def joined() -> bool:
  """Whether this process is one of several of a run (``initialize`` was called)."""
  return jax.process_count() > 1


def lost_peer(error: BaseException) -> bool:
  """Whether ``error``, raised by JAX in a multi-process run, says another process died."""
  return joined() and any(sign in str(error) for sign in _PEER_SIGNS)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, peer_timeout: int = PEER_TIMEOUT) -> None:
  """Joins this process to the others (``jax.distributed.initialize``); what is not given
  is read from the cluster's environment (SLURM, Open MPI, Cloud TPU,
  ``JAX_COORDINATOR_ADDRESS``). CPU devices talk through gloo."""
  if jax.config.jax_cpu_collectives_implementation != "gloo":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             heartbeat_timeout_seconds=peer_timeout)


def leave(error: BaseException) -> None:
  """Ends this process of a multi-process run that ``error`` ends, at once: its message (a
  ``SystemExit``'s, or the traceback of anything else), then ``os._exit``. Python's normal
  exit would run JAX's shutdown, a barrier for every process, where a failed process waits
  for peers that wait for it in a collective until the runtime aborts them all minutes
  later; gone at once, its peers' next collective fails and they leave too."""
  if isinstance(error, SystemExit):
    code = error.code
    if isinstance(code, str):
      print(code, file=sys.stderr)
      code = 1
  elif isinstance(error, PeerLost):
    print(f"error: {error}", file=sys.stderr)
    code = 1
  elif lost_peer(error):  # outside the training loop: preparing data, say
    print(f"error: process {jax.process_index()} of {jax.process_count()}: another process "
          f"of this run has died ({str(error).splitlines()[0][:200]}); its output says why",
          file=sys.stderr)
    code = 1
  else:
    traceback.print_exception(error)
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code or 0)


def free_port() -> int:
  """A TCP port of 127.0.0.1 that nothing listens on now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_local(argv: list[str], count: int, peer_timeout: int = PEER_TIMEOUT) -> int:
  """Runs ``argv`` (a launch.py command line, without ``--local_processes``) as processes
  0 .. ``count`` - 1 of one JAX run on this machine, each with this machine's CPU devices
  (one each unless ``XLA_FLAGS`` says more); returns the first non-zero exit status, or 0.

  Ctrl-C and SIGTERM are passed on to every process (each finishes its step and saves, as
  one run). When a process ends in failure, the others are given ``peer_timeout`` seconds to
  end by themselves (they notice at their next collective) and are then killed.
  """
  address = f"127.0.0.1:{free_port()}"
  # Each in a session of its own: a terminal's Ctrl-C reaches this process alone, which
  # passes it on once (twice, by the terminal and by us, would be "stop at once").
  children = [subprocess.Popen([sys.executable, *argv, f"--coordinator_address={address}",
                                f"--num_processes={count}", f"--process_id={index}",
                                f"--peer_timeout={peer_timeout}"], start_new_session=True)
              for index in range(count)]

  def forward(signum, frame):
    for child in children:
      if child.poll() is None:
        child.send_signal(signum)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    deadline = None
    while any(child.poll() is None for child in children):
      failed = [i for i, child in enumerate(children) if child.poll() not in (None, 0)]
      if failed and deadline is None:
        deadline = time.monotonic() + peer_timeout + 30
      if deadline is not None and time.monotonic() > deadline:
        for index, child in enumerate(children):
          if child.poll() is None:
            print(f"launch.py: process {index} has not ended {peer_timeout + 30} s after "
                  f"process {failed[0]} failed; killing it", file=sys.stderr)
            child.kill()
      time.sleep(0.2)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  codes = [child.wait() for child in children]
  return next((code for code in codes if code), 0)

