"""The study's wall time (``urn_jax.experiments.study``), stage by stage.

Each training part is appended to ``<workdir>/timings.jsonl`` (``record_time``; with the
step it started from and the step it reached, so a stage resumed after an interruption has
one line per part, the interrupted part marked ``"interrupted": true`` when it stopped by
Ctrl-C or SIGTERM, ``"diverged": true`` when its loss did; a process killed outright writes
nothing), and sealed with its stage, beside the sealing's own time; ``results/timings.md``
adds them up per stage and seed. Steps that no line covers are timed from the wall time of
the stage's ``metrics.jsonl`` lines (``curve_parts``), and named where even those are
missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from urn_jax.console import is_main_process
from urn_jax.experiments import archive as archive_module
from urn_jax.files import write_text_atomically
from urn_jax.training.metrics_log import read_metrics


def record_time(workdir: Path, record: dict) -> None:
  """Appends ``record`` to ``<workdir>/timings.jsonl`` (process 0 only)."""
  if not is_main_process():
    return
  with (workdir / "timings.jsonl").open("a") as f:
    f.write(json.dumps(record) + "\n")


def _minutes(seconds: float) -> str:
  return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.2f} h"


def time_records(source: Path) -> list[dict]:
  if not source.is_file():
    return []
  return [json.loads(line) for line in source.read_text().splitlines() if line.strip()]


def _gaps(parts) -> tuple[int, list[tuple[int, int]]]:
  """The step a stage's ``parts`` reached, and the steps ``[(from, to)]`` none of them
  covers."""
  reached, gaps = 0, []
  for p in sorted(parts, key=lambda p: p["from_step"]):
    if p["from_step"] > reached:
      gaps.append((reached, p["from_step"]))
    reached = max(reached, p["to_step"])
  return reached, gaps


CURVE_SOURCE = "metrics.jsonl wall_time, from each killed process's first line to its last"


def curve_parts(parts, metrics_file, stage: str, seed: int) -> list[dict]:
  """Parts for the steps that none of the stage's training ``parts`` covers (a process
  killed outright writes no line), timed from ``metrics_file``: its lines in the order they
  were written, a new process starting wherever the step does not rise (each resumes from a
  checkpoint at or before the step its predecessor last logged); a process whose first line
  falls in a gap ran in it, from its first line's ``wall_time`` to its last's. Its start-up
  before its first line is not in it: a lower bound, marked by ``source``. A gap without
  such a line stays a gap."""
  own = [p for p in parts if p["stage"] == stage]
  if not all("from_step" in p for p in own):
    return []  # older lines without their steps: which steps they covered is unknown
  gaps = _gaps(own)[1]
  if not gaps or not Path(metrics_file).is_file():
    return []
  processes = []
  for row in read_metrics(metrics_file):  # a line a killed process cut short is skipped
    if "wall_time" not in row:
      continue
    if processes and row["step"] > processes[-1][-1]["step"]:
      processes[-1].append(row)
    else:
      processes.append([row])
  found = []
  for start, end in gaps:
    ran = [p for p in processes if start < p[0]["step"] <= end]
    if ran:
      seconds = sum(p[-1]["wall_time"] - p[0]["wall_time"] for p in ran)
      found.append({"stage": stage, "seed": seed, "from_step": start, "to_step": end,
                    "seconds": round(seconds, 1), "source": CURVE_SOURCE})
  return found


def sealed_times(stages) -> list[dict]:
  """The timing lines sealed with each of ``stages`` (``[(seed, folder)]``), and the parts
  ``curve_parts`` finds in their curves for the steps those lines leave uncovered."""
  records = []
  for seed, folder in stages:
    parts = time_records(Path(folder) / archive_module.TIMINGS)
    records += parts + curve_parts(parts, Path(folder) / "metrics.jsonl", Path(folder).name,
                                   seed)
  return records


def write_timings(workdir, records=None) -> Path | None:
  """``<workdir>/results/timings.md`` from ``records`` (by default ``<workdir>``'s
  ``timings.jsonl``; None when there is none): each stage's wall time per seed (the sum of
  its parts, with those ``curve_parts`` made), the sealings, and the total. Where a stage's
  parts leave steps uncovered (a process killed outright writes no line, and none of its
  curve's lines was found), those steps are named: their time is not in the total."""
  workdir = Path(workdir)
  if records is None:
    source = workdir / "timings.jsonl"
    if not source.is_file():
      return None
    records = time_records(source)
  groups = {}
  for record in records:
    groups.setdefault((record["stage"], record.get("seed")), []).append(record)
  rows, total, missing = [], 0.0, []
  for (stage, seed), parts in groups.items():
    seconds = sum(p["seconds"] for p in parts)
    total += seconds
    note, steps = "", ""
    if all("from_step" in p for p in parts):
      reached, gaps = _gaps(parts)
      steps = f"0-{reached}"
      if gaps:
        gaps = ", ".join(f"{a}-{b}" for a, b in gaps)
        note = f"time of steps {gaps} not recorded (a process killed outright)"
        missing.append(f"{stage}, seed {seed}: steps {gaps}")
    elif seed is not None:
      older = sum("from_step" not in p for p in parts)
      note = f"{older} part(s) recorded without their steps (an older version)"
      steps = (f"to {max(p['to_step'] for p in parts if 'to_step' in p)}"
               if older < len(parts) else "")
    curve = sum(p.get("source") == CURVE_SOURCE for p in parts)
    by_hand = sum("source" in p for p in parts) - curve  # a line saying how it was made
    note = "; ".join(filter(None, [
        note, curve and f"{curve} part(s) timed from metrics.jsonl (killed processes, "
                        "without their start-up)",
        by_hand and f"{by_hand} part(s) reconstructed: see `source` in timings.jsonl"]))
    rows.append(f"| {stage} | {'' if seed is None else seed} | {len(parts)} | {steps} | "
                f"{seconds:.0f} | {_minutes(seconds)} | {note} |")
  text = ("# Wall time of the study\n\nFrom `timings.jsonl`: a line per piece of work (a "
          "training part; a sealing: scores and probes), summed per stage and seed; a "
          "process killed outright is timed from its curve's lines (`metrics.jsonl`).\n\n"
          "| stage | seed | parts | steps | seconds | | note |\n|---|---|---|---|---|---|---|\n"
          + "\n".join(rows) + f"\n\n**Total: {total:.0f} s ({_minutes(total)})**"
          + (", not counting the uncovered steps of " + "; ".join(missing) if missing else "")
          + ".\n")
  out = workdir / "results" / "timings.md"
  out.parent.mkdir(parents=True, exist_ok=True)
  return write_text_atomically(out, text)
