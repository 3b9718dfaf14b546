"""The README as a contract: every code block in it runs as written, shortened where it
trains, so a README that drifts from the code fails here.

The commands run in a scratch folder that stands for the repository's root (``launch.py``
and ``configs/`` are the repository's own; ``runs/`` and everything else a command writes
land in the scratch folder), in the README's order: the bash blocks first, then the Python
blocks as one script, so that the library's and the claims' examples find the models the
commands trained. What changes, and why:

- ``SHORT``: appended to every ``launch.py`` command that trains: two steps of tiny U-Nets
  on 6 mm slices without N4, on the phantom of the tiny study (4 BraTS-like and 2 HCP-like
  cases), whose sizes these are: the phantom is written once (``phantom_cache``) and the
  programs both compile are compiled once (``pytest_configure`` in conftest.py);
- ``placeholders``: the README's example paths (``/data/patients``, a patient's files,
  ``DIR``, ``CASE_DIR``) stand for a folder of one of the phantom's BraTS cases (a copy),
  that case and scratch folders: a two-step model's specks make every case seconds to
  segment and score on the original grid;
- the install lines: ``pip install`` and ``python -m pytest`` are not run (CI runs the
  second line itself), their ``launch.py`` command is;
- an evaluation scores three of the 15 combinations (``SHORT_EVALUATION``: all four, FLAIR
  alone, T1c alone; every claim of the README's claims example has its two sides among
  them): two-step models predict specks everywhere, which costs seconds per combination to
  score on the original grid (``tests/test_evaluate.py`` scores all 15);
- the study's command is run by ``tests/test_study.py`` (its ``tiny`` preset, one seed),
  which checks every file it writes; a ``:paper`` line is GPU-sized: its config is built,
  not run (so is the SLURM example's, which needs a cluster);
- ``python -m urn_jax.data.phantom`` writes one BraTS-like case instead of 10 and 5.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, bash_commands, load_config, readme_blocks

pytestmark = pytest.mark.slow  # it trains models and starts processes

PHANTOM_BRATS, PHANTOM_HCP = 4, 2
SHORT = ("--config.train.max_steps=2 --config.train.eval_every=2 "
         "--config.train.checkpoint_every=2 --config.train.log_every=1 "
         "--config.train.eval_slices=8 --config.data.size=32 --config.data.spacing=6.0 "
         f"--config.data.n4=False --config.data.phantom_brats={PHANTOM_BRATS} "
         f"--config.data.phantom_hcp={PHANTOM_HCP} --config.model.channels=4 "
         "'--config.model.encoder_features=(4,8)'")
SHORT_SEGMENTATION = " '--config.model.segmentation_features=(4,8)'"
SHORT_EVALUATION = " --config.evaluate.masks=1111,1000,0010"
CASE = "Brats18_PHANTOM_000"


def placeholders(scratch: Path, cache: Path) -> dict:
  """What the README's example paths stand for here. The patients' folder is made (a copy
  of one case, in its grade's folder) once the phantom is written."""
  brats = cache / f"phantom-v2-seed0-brats{PHANTOM_BRATS}-hcp{PHANTOM_HCP}" / "BraTS"
  case = next(brats.glob(f"*/{CASE}"), brats / "HGG" / CASE)
  patients = scratch / "patients"
  if case.is_dir() and not patients.exists():
    shutil.copytree(case, patients / case.parent.name / CASE)
  return {"/data/patients": str(patients), "/data/predictions": str(scratch / "predictions"),
          "p1_t1ce.nii.gz": str(case / f"{CASE}_t1ce.nii.gz"),
          "p1_flair.nii.gz": str(case / f"{CASE}_flair.nii.gz"),
          "CASE_DIR": str(case), "--out DIR": f"--out {scratch / 'phantom'}",
          "--brats 10 --hcp 5": "--brats 1 --hcp 0"}


def shortened(command: str, scratch: Path, cache: Path) -> str | None:
  """``command`` as this test runs it, or None where it is not run."""
  if " && " in command:  # an install line: only its launch.py command runs here
    command = command.split(" && ")[-1]
    if not command.startswith("python launch.py"):
      return None
  for placeholder, value in placeholders(scratch, cache).items():
    command = command.replace(placeholder, value)
  config = re.search(r"--config=configs/(\w+)\.py", command)
  if (config and config.group(1) == "study") or command.startswith("srun "):
    return None
  if config and config.group(1) in ("pretrain", "segment"):
    command += " " + SHORT + (SHORT_SEGMENTATION if config.group(1) == "segment" else "")
  if config and config.group(1) == "evaluate" and "--config.evaluate.masks" not in command:
    command += SHORT_EVALUATION
  return command.replace("python launch.py", f"python {ROOT / 'launch.py'}").replace(
      "--config=configs/", f"--config={ROOT / 'configs'}/")


def _run(command: str, scratch: Path, environment: dict, **kwargs):
  environment = dict(environment,
                     PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
  result = subprocess.run(command, shell=True, cwd=scratch, env=environment,
                          capture_output=True, text=True, timeout=900, **kwargs)
  assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
  return result


def test_the_first_lines_are_the_two_commands_and_ci_runs_the_second():
  first = readme_blocks()[0]
  lines = bash_commands(first[1])
  assert first[0] == "bash" and len(lines) == 2
  assert lines[0].startswith("python3 -m venv .venv") and "pip install -e ." in lines[0]
  assert lines[0].endswith("python launch.py --config=configs/pretrain.py --workdir=runs/pretrain")
  test_command = lines[1].split(" && ", 2)[-1]
  assert test_command == "pip install -e '.[test]' && python -m pytest -q -n 2"
  assert test_command.replace("pip install", "pip install -q") in (ROOT / ".ci/run").read_text()


def test_the_paper_sized_configs_of_the_readme_build():
  paper = [c for language, code in readme_blocks() if language == "bash"
           for c in bash_commands(code) if ":paper" in c or ",paper" in c]
  assert paper
  for command in paper:
    name, arg = re.search(r"configs/(\w+)\.py:(\S+)", command).groups()
    config = load_config(name, arg)
    assert config.job in ("pretrain", "segment", "study")


@pytest.mark.longest
def test_every_code_block_of_the_readme_runs(tmp_path, phantom_cache, command_environment):
  scratch = tmp_path / "repository"
  scratch.mkdir()
  found = readme_blocks()
  assert [language for language, _ in found].count("python") >= 3
  ran = 0
  for language, code in found:
    if language != "bash":
      continue
    for command in bash_commands(code):
      command = shortened(command, scratch, phantom_cache)
      if command is not None:
        _run(command, scratch, command_environment)
        ran += 1
  assert ran == 18
  assert (scratch / "runs" / "scores" / "summary.csv").is_file()
  assert (scratch / "runs" / "eval" / "table1.md").is_file()
  assert (scratch / "predictions" / f"{CASE}.nii.gz").is_file()
  assert (scratch / "out" / f"{CASE}.nii.gz").is_file() and (scratch / "case.png").is_file()
  script = "\n\n".join(code for language, code in found if language == "python")
  result = _run(f"{shlex.quote(sys.executable)} -", scratch, command_environment,
                input=script)
  assert "1. the baseline collapses without modalities" in result.stdout
