"""What XLA's LLVM optimization level changes for the test suite's work on a CPU.

    python benchmarks/xla_opt_level.py [--rounds 2] [--out FILE.json]

The suite compiles at ``--xla_backend_optimization_level=0`` (tests/conftest.py), XLA's
default is 3. Three workloads run at both levels, in the order 3, 0, 0, 3, ... (``--rounds``
pairs of each), every one in a new process with a new, empty persistent compilation cache:

- ``train``: a tiny URN + MD training by ``launch.py``, shortened as the README's test
  shortens it (``SHORT`` in tests/test_readme.py: two steps, 32-pixel slices at 6 mm,
  widths 4-8), on a phantom written once beforehand (its time is not counted); its last
  training loss is recorded, to show that the level changes no number;
- ``train_step``: ``pytest tests/test_train_step.py -k "compiles_once or overfits"``;
- ``learning``: ``pytest tests/test_learning.py``, the CI's learning test, mostly
  convolutions.

Prints one line per run and writes every run's wall time (and the training's last loss) to
``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT = dict(os.environ)  # before tests/conftest.py, imported below, sets the level
sys.path.insert(0, str(ROOT / "tests"))
from test_readme import SHORT, SHORT_SEGMENTATION  # noqa: E402

from urn_jax.training.metrics_log import read_metrics  # noqa: E402

LEVELS = (3, 0)
WORKLOADS = {
    "train": [sys.executable, "launch.py", "--config=configs/segment.py:urn_md"],
    "train_step": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_train_step.py", "-k", "compiles_once or overfits"],
    "learning": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "tests/test_learning.py"],
}


def run(workload: str, level: int, scratch: Path) -> dict:
  """One run of ``workload`` at ``level`` in a new process: its wall time, and for the
  training its last loss."""
  compiled = Path(tempfile.mkdtemp(prefix="compiled_", dir=scratch))
  environment = dict(ENVIRONMENT, XLA_FLAGS=" ".join(
      [ENVIRONMENT.get("XLA_FLAGS", ""), f"--xla_backend_optimization_level={level}"]).strip(),
      JAX_COMPILATION_CACHE_DIR=str(compiled), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      URN_JAX_CACHE=str(scratch / "phantom"), JAX_THREEFRY_PARTITIONABLE="0")
  command = list(WORKLOADS[workload])
  workdir = compiled / "workdir"
  if workload == "train":
    command += [f"--workdir={workdir}"] + shlex.split(SHORT + SHORT_SEGMENTATION)
  start = time.perf_counter()
  result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if result.returncode != 0:
    raise SystemExit(f"{' '.join(command)} failed at level {level}:\n{result.stdout[-2000:]}"
                     f"\n{result.stderr[-3000:]}")
  record = {"workload": workload, "level": level, "seconds": round(seconds, 2)}
  if workload == "train":
    record["last_loss"] = [m for m in read_metrics(workdir / "metrics.jsonl") if "loss" in m][-1][
        "loss"]
  return record


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=2, help="pairs of runs of each workload")
  parser.add_argument("--out", type=Path, default=None, help="JSON file for every run")
  args = parser.parse_args(argv)
  records = []
  with tempfile.TemporaryDirectory(prefix="xla_opt_level_") as scratch:
    scratch = Path(scratch)
    print("writing the phantom (not timed) ...", flush=True)
    run("train", 0, scratch)
    for round_ in range(args.rounds):
      for workload in WORKLOADS:
        for level in (LEVELS if round_ % 2 == 0 else LEVELS[::-1]):
          records.append(run(workload, level, scratch))
          print(json.dumps(records[-1]), flush=True)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"argv": sys.argv[1:], "runs": records}, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
