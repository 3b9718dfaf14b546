"""Training speed with and without data augmentation, measured in the training loop itself.

    python benchmarks/augment_speed.py [--config configs/segment.py:baseline_md,small]
        [--steps 400] [--repeats 2]

Trains ``--config`` for ``--steps`` steps with no augmentation and with
``AugmentSettings.typical()`` (``benchmarks/shift.py``'s ``plain`` and ``augment``),
alternating ``--repeats`` times (so that both see the same load on a shared machine), each
in a fresh temporary work directory, and prints one JSON line: the median of the training
loop's logged ``slices_per_second`` of each run (the first two logs, which hold the
compilation, left out) and the ratio of the medians. The loop's rate includes loading, so
the ratio is what augmentation costs a training run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from shift import RECIPES  # benchmarks/shift.py: the recipes' command-line overrides

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"none": RECIPES["plain"], "typical": RECIPES["augment"]}


def _rate(config: str, steps: int, recipe, workdir: Path) -> float:
  subprocess.run([sys.executable, str(ROOT / "launch.py"), f"--config={config}",
                  f"--workdir={workdir}", f"--config.train.max_steps={steps}",
                  f"--config.train.eval_every={10 * steps}",
                  f"--config.train.checkpoint_every={10 * steps}", *recipe.overrides()],
                 cwd=ROOT, check=True, capture_output=True)
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return float(np.median([m["slices_per_second"] for m in logged
                          if "slices_per_second" in m][2:]))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/segment.py:baseline_md,small")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args(argv)
  rates = {name: [] for name in SETTINGS}
  with tempfile.TemporaryDirectory() as tmp:
    for repeat in range(args.repeats):
      for name, recipe in SETTINGS.items():
        rates[name].append(_rate(args.config, args.steps, recipe,
                                 Path(tmp) / f"{name}{repeat}"))
  medians = {name: float(np.median(r)) for name, r in rates.items()}
  print(json.dumps({"config": args.config, "steps": args.steps,
                    "slices_per_second": {k: [round(v, 1) for v in r] for k, r in rates.items()},
                    "typical_over_none": round(medians["typical"] / medians["none"], 3)}))


if __name__ == "__main__":
  main()
