"""The whole study's command at a tiny size: every stage trains, every table, figure and
CSV is written, and evaluating again reuses the per-case results."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, bash_commands, load_config, readme_blocks

from urn_jax.errors import Interrupted
from urn_jax.evaluation.claims_report import main as claims_report_main
from urn_jax.evaluation.runs import aggregate as _aggregate

STUDY = "python launch.py --config=configs/study.py"
OUTPUTS = ("table1.md", "table1.csv", "table1_hd95.md", "table1_hd95.csv", "table2.md",
           "table2.csv", "figure2.png", "figure3.png", "figure4.png", "figure5.png",
           "cases.csv", "psnr_cases.csv", "runs.json", "training.md",
           "curves_URN___MD_w__HCP__fine_tuned.png", "probes.md", "probes.json", "paper.md",
           "test_patients.csv", "timings.md", "convergence.md", "verdicts.md")


def _study(workdir, environment, *extra):
  """The README's command for the study, at the ``tiny`` size, for one seed."""
  (readme,) = [c for language, code in readme_blocks() if language == "bash"
               for c in bash_commands(code) if c.startswith(STUDY + " ")]
  assert readme == f"{STUDY} --workdir=runs/study"
  command = [sys.executable, str(ROOT / "launch.py"), "--config=configs/study.py:tiny",
             f"--workdir={workdir}", "--config.seeds=(0,)", *extra]
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment,
                        timeout=900)


@pytest.mark.slow
@pytest.mark.longest
def test_the_study_runs_every_stage_and_writes_every_output(tmp_path, command_environment):
  work, archive = tmp_path / "study", tmp_path / "archive"
  result = _study(work, command_environment, f"--config.archive={archive}")
  assert result.returncode == 0, result.stderr[-3000:]
  stages = ("pretrain", "pretrain_brats", "baseline", "baseline_md", "baseline_md_wide",
            "urn_md", "urn_md_finetuned", "urn_md_pretrained")
  longer = ["urn_md_pretrained_x2"]  # the tiny study's convergence check
  for stage in stages + tuple(longer):
    assert (work / "seed0" / stage / "best").is_dir(), stage
    sealed = archive / "seed0" / stage
    assert (sealed / "sealed.json").is_file() and (sealed / "metrics.jsonl").is_file(), stage
    # Scored on test patients: the ordinary runs only, never the convergence check's.
    assert (sealed / "run.json").is_file() == (stage not in longer), stage
  results = archive / "results"
  for name in OUTPUTS:
    assert (results / name).stat().st_size > 0, name
  runs = json.loads((results / "runs.json").read_text())
  assert sorted(r["name"] for r in runs) == sorted(
      ["URN w/ HCP", "URN", "Baseline", "Baseline + MD", "Baseline + MD (wide)", "URN + MD",
       "URN + MD w/ HCP", "URN + MD w/ HCP, fine-tuned"])
  assert {r["workdir"] for r in runs} == {str(archive / "seed0" / s) for s in stages}
  # The frozen URN's config names the archived pre-training, not the lost work directory.
  frozen = json.loads((archive / "seed0" / "urn_md_pretrained" / "config.json").read_text())
  assert frozen["pretrained_workdir"] == str(archive / "seed0" / "pretrain")
  timings = [json.loads(l) for l in (work / "timings.jsonl").open()]
  # A line per training, from step 0 to its last (the longer run twice as many steps), in
  # the order they trained: those without pre-training first, the segmentations on the
  # pre-training's encoders right after it, the BraTS-only pre-training last.
  assert [t["stage"] for t in timings] == [
      "baseline", "baseline_md", "baseline_md_wide", "urn_md", "pretrain", "urn_md_finetuned",
      "urn_md_pretrained", "pretrain_brats", *longer]
  assert [(t["from_step"], t["to_step"]) for t in timings] == [(0, 2)] * 8 + [(0, 4)]
  # Two steps cannot show a flat curve: every run is listed as not flat.
  training = (results / "training.md").read_text()
  assert training.count("| **no** |") == 8
  convergence = (results / "convergence.md").read_text()
  assert convergence.count("| 2 / 4 |") == 1 and "| urn_md_pretrained | 0 | 2 / 4 |" in convergence
  assert "| seal |  | 9 |" in (results / "timings.md").read_text()
  # Probes: both pre-trainings (as trained and with BraTS statistics), URN + MD and the
  # fine-tuned URN; the frozen one shares its pre-training's representation.
  probes = json.loads((results / "probes.json").read_text())["0"]
  assert sorted((r["model"], r["batch_norm"]) for r in probes) == sorted(
      [("URN w/ HCP", "as trained"), ("URN w/ HCP", "re-estimated on BraTS"),
       ("URN", "as trained"), ("URN", "re-estimated on BraTS"), ("URN + MD", "as trained"),
       ("URN + MD w/ HCP, fine-tuned", "as trained")])
  text = (results / "probes.md").read_text()
  assert "| URN + MD | as trained |" in text and "| URN | re-estimated on BraTS |" in text
  assert set(next(r for r in probes if r["model"] == "URN")["psnr"]) == {
      "flair", "t1", "t1c", "t2"}
  # The verdict table again from the committed kind of files alone, byte for byte.
  assert claims_report_main([str(results)]) == 0
  # The machine is lost: with the archive alone, every result is made again, the same,
  # and nothing is trained or scored.
  kept = {name: (results / name).read_bytes() for name in OUTPUTS if name.endswith(".md")}
  shutil.rmtree(work)
  shutil.rmtree(results)
  again = _study(work, command_environment, f"--config.archive={archive}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("sealed in") == 9 and "evaluating" not in again.stderr
  assert not (work / "seed0").exists()
  assert {name: (results / name).read_bytes() for name in kept} == kept


def test_an_interrupted_stage_leaves_its_part_of_the_wall_time(tmp_path, monkeypatch):
  """Wall time of a study resumed after Ctrl-C or SIGTERM: the interrupted part of a stage
  is recorded with the steps it covered, so the total can be added up."""
  from urn_jax.experiments import study

  def interrupted(job, job_dir):
    (Path(job_dir) / "checkpoints" / "300").mkdir(parents=True)
    raise Interrupted

  monkeypatch.setattr(study, "train_and_evaluate", interrupted)
  config = load_config("study", "tiny")
  config.seeds = (0,)
  with pytest.raises(Interrupted):
    study.run(config, tmp_path)
  (record,) = [json.loads(l) for l in (tmp_path / "timings.jsonl").open()]
  assert record["stage"] == "baseline" and record["interrupted"] is True
  assert (record["from_step"], record["to_step"]) == (0, 300) and record["seconds"] >= 0


def test_seeds_are_averaged_and_their_spread_reported():
  runs = [{"name": "A", "job": "segment", "rows": [
      {"mask": "1111", "value": v} for v in values]} for values in ((0.6, 0.8), (0.9, 0.9))]
  cells = _aggregate(runs, "A", lambda row: row["value"])
  mean, spread, per_run = cells["1111"]
  np.testing.assert_allclose(per_run, [0.7, 0.9])
  assert abs(mean - 0.8) < 1e-12
  assert abs(spread - 0.1) < 1e-12
  assert "0111" not in cells and cells["mean"][2] == per_run


def test_the_wall_time_table_adds_up_parts_and_names_what_it_could_not_count(tmp_path):
  from urn_jax.experiments.timings import write_timings
  records = [
      {"stage": "pretrain", "seed": 0, "from_step": 0, "to_step": 8000, "seconds": 1800.0},
      # seed 1 was killed outright between 4800 and 6510, then SIGTERM'd and resumed
      {"stage": "pretrain", "seed": 1, "from_step": 0, "to_step": 4800, "seconds": 1000.0,
       "interrupted": True},
      {"stage": "pretrain", "seed": 1, "from_step": 6510, "to_step": 8000, "seconds": 400.0},
      {"stage": "baseline", "seed": 0, "seconds": 300.0},  # an older line, without steps
      {"stage": "urn_md", "seed": 0, "from_step": 0, "to_step": 6000, "seconds": 60.0,
       "source": "TensorBoard event times"},
      {"stage": "evaluate", "models": 7, "seconds": 1500.0},
      {"stage": "probes", "models": 4, "seconds": 1200.0}]
  (tmp_path / "timings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  text = write_timings(tmp_path).read_text()
  assert "| pretrain | 0 | 1 | 0-8000 | 1800 | 30.0 min |  |" in text
  assert ("| pretrain | 1 | 2 | 0-8000 | 1400 | 23.3 min | time of steps 4800-6510 not "
          "recorded (a process killed outright) |") in text
  assert "| baseline | 0 | 1 |  | 300 | 5.0 min | 1 part(s) recorded without their steps" in text
  assert "| evaluate |  | 1 |  | 1500 | 25.0 min |  |" in text
  assert ("| urn_md | 0 | 1 | 0-6000 | 60 | 1.0 min | 1 part(s) reconstructed: see `source` "
          "in timings.jsonl |") in text
  assert ("**Total: 6260 s (1.74 h)**, not counting the uncovered steps of pretrain, seed 1: "
          "steps 4800-6510.") in text
  assert write_timings(tmp_path / "nothing") is None


def test_a_killed_process_is_timed_from_its_curve(tmp_path):
  """Steps no timing line covers are timed from the curve: each process's lines run from
  its first to its last, a new process starting where the step does not rise; only a
  process that started inside the gap counts, and the table adds it to the stage."""
  from urn_jax.experiments.timings import CURVE_SOURCE, curve_parts, sealed_times, write_timings
  lines = ([(s, 1000.0 + s) for s in range(10, 120, 10)]       # killed after 110
           + [(s, 5000.0 + 2 * s) for s in range(110, 260, 10)]  # from 100, killed after 250
           + [(s, 9000.0 + s) for s in range(210, 410, 10)])     # from 200, recorded
  folder = tmp_path / "seed1" / "pretrain"  # a sealed stage: its curve and timing lines
  folder.mkdir(parents=True)
  metrics = folder / "metrics.jsonl"
  rows = [json.dumps({"step": s, "loss": 1.0, "wall_time": t}) for s, t in lines]
  rows.insert(11, rows[11][:20])  # the first process, killed while writing its next line
  metrics.write_text("\n".join(rows) + "\n" + json.dumps({"step": 400, "loss": 1.0}) + "\n")
  recorded = [{"stage": "pretrain", "seed": 1, "from_step": 200, "to_step": 400,
               "seconds": 250.0}, {"stage": "seal", "seconds": 9.0}]
  (part,) = curve_parts(recorded, metrics, "pretrain", 1)
  assert part == {"stage": "pretrain", "seed": 1, "from_step": 0, "to_step": 200,
                  "seconds": 100.0 + 280.0, "source": CURVE_SOURCE}
  assert curve_parts(recorded + [part], metrics, "pretrain", 1) == []  # nothing uncovered
  assert curve_parts(recorded, tmp_path / "none.jsonl", "pretrain", 1) == []
  (folder / "timings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recorded))
  assert sealed_times([(1, folder)]) == recorded + [part]
  text = write_timings(tmp_path, recorded + [part]).read_text()
  assert ("| pretrain | 1 | 2 | 0-400 | 630 | 10.5 min | 1 part(s) timed from metrics.jsonl "
          "(killed processes, without their start-up) |") in text
  assert "**Total: 639 s (10.7 min)**." in text
  # a stage with a line from before parts had steps: its gaps are not known, none is made
  older = [{"stage": "pretrain", "seed": 1, "seconds": 5.0}] + recorded
  assert curve_parts(older, metrics, "pretrain", 1) == []


def test_a_longer_run_decides_convergence():
  """Within 1 Dice point of the run twice as long in every region (segmentation), within
  5 % of its validation loss (pre-training), both ways: a longer run that ends worse shows
  as much dependence on the length as one that ends better."""
  from urn_jax.evaluation.curves import longer_run_check
  ordinary = {"validation_dice_WT": 0.90, "validation_dice_TC": 0.80,
              "validation_dice_ET": 0.70, "best_validation_loss": 1.0}
  def longer(wt, tc, et, loss=1.0):
    return {"validation_dice_WT": wt, "validation_dice_TC": tc, "validation_dice_ET": et,
            "best_validation_loss": loss}
  check = longer_run_check(ordinary, longer(0.909, 0.791, 0.709), "segment")
  assert check["converged"] and check["gaps"]["ET"] == pytest.approx(0.9)
  assert check["gaps"]["TC"] == pytest.approx(-0.9)
  assert not longer_run_check(ordinary, longer(0.90, 0.812, 0.70), "segment")["converged"]
  assert not longer_run_check(ordinary, longer(0.90, 0.788, 0.70), "segment")["converged"]
  assert longer_run_check(ordinary, longer(0, 0, 0, loss=0.96), "pretrain")["converged"]
  assert longer_run_check(ordinary, longer(0, 0, 0, loss=1.04), "pretrain")["converged"]
  assert not longer_run_check(ordinary, longer(0, 0, 0, loss=0.94), "pretrain")["converged"]
  assert not longer_run_check(ordinary, longer(0, 0, 0, loss=1.06), "pretrain")["converged"]
  assert longer_run_check(ordinary, None, "segment")["converged"] is None



def test_a_scenario_on_pretrained_encoders_is_converged_only_with_its_pretraining(
    monkeypatch):
  """One seed's longer run stands for every seed of its stage; a segmentation on pre-trained
  encoders (frozen or fine-tuned) is shown converged only when its pre-training is too; a
  stage without a longer run is unknown (None)."""
  import ml_collections

  import urn_jax.evaluation.curves as curves
  from urn_jax.experiments.study import shown_converged

  def job(name):
    return ml_collections.ConfigDict(
        {"job": "pretrain" if name == "pretrain" else "segment",
         "pretrained_workdir": "x" if name.startswith("urn_md_") else ""})
  names = ("pretrain", "urn_md_pretrained", "urn_md_finetuned", "baseline", "urn_md")
  jobs = [(n, s, job(n), Path(f"seed{s}") / n) for s in (0, 1) for n in names]
  longer = [(n, 0, job(n), Path("seed0") / f"{n}_x2") for n in names[:-1]]

  def shown(checks):
    monkeypatch.setattr(curves, "convergence_checks", lambda pairs, diverged=(): [
        (stage, seed, j, None, {"converged": checks[stage]}) for stage, seed, j, *_ in pairs])
    return {k.replace("/", " "): v for k, v in shown_converged(jobs, longer).items()}

  got = shown({"pretrain": False, "urn_md_pretrained": True, "urn_md_finetuned": False,
               "baseline": True})
  for seed in (0, 1):
    assert [got[f"seed{seed} {n}"] for n in names] == [False, False, False, True, None]
  got = shown({"pretrain": True, "urn_md_pretrained": True, "urn_md_finetuned": False,
               "baseline": False})
  assert [got[f"seed1 {n}"] for n in names] == [True, True, False, False, None]
  got = shown({"pretrain": None, "urn_md_pretrained": True, "urn_md_finetuned": False,
               "baseline": True})  # not shown converged on its own: whatever its encoders
  assert [got[f"seed0 {n}"] for n in names] == [None, None, False, True, None]


def test_convergence_md_shows_both_runs_and_the_gap_either_way(tmp_path):
  """A longer run 2 points worse on TC is no more convergence than one 2 points better;
  both runs' last-fifth improvement is shown (the longer runs are not in training.md)."""
  from urn_jax.evaluation.curves import convergence_report

  def run(folder, steps, tc):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": s, "loss": 0.1, "validation_loss": 1.0 / s, "validation_dice_WT": 0.9,
         "validation_dice_TC": tc, "validation_dice_ET": 0.7}) + "\n"
        for s in range(steps // 5, steps + 1, steps // 5)))
  run("urn_md", 100, 0.80)
  run("urn_md_x2", 200, 0.78)
  text = convergence_report([("urn_md", 0, "segment", tmp_path / "urn_md",
                              tmp_path / "urn_md_x2")], tmp_path).read_text()
  assert ("| urn_md | 0 | 100 / 200 | ET 70.0, TC 80.0, WT 90.0 | ET 70.0, TC 78.0, WT 90.0 | "
          "ET +0.0, TC -2.0, WT +0.0 | 20.0 % / 20.0 % | **no** |") in text


def test_a_longer_run_that_diverged_shows_nothing_converged(tmp_path):
  from urn_jax.evaluation.curves import convergence_checks, convergence_report
  pair = ("urn_md", 0, "segment", tmp_path / "urn_md", tmp_path / "urn_md_x2")
  ((*_, check),) = convergence_checks([pair], diverged=[tmp_path / "urn_md_x2"])
  assert check["converged"] is False and check["diverged"] == "longer"
  text = convergence_report([pair], tmp_path, diverged=[tmp_path / "urn_md_x2"]).read_text()
  assert "| urn_md | 0 | the longer run diverged | | | | | **no** |" in text


def test_a_run_on_encoders_trained_again_with_other_weights_says_so(tmp_path):
  """A pre-training whose work directory was lost is trained again for the segmentations on
  its encoders; where its weights differ from those sealed (another machine's arithmetic),
  the sealed run says so, and so do claims.md's note and convergence.md's row."""
  from urn_jax.evaluation.claims_report import _runs_note
  from urn_jax.evaluation.curves import convergence_report
  from urn_jax.evaluation.runs import Counted
  from urn_jax.experiments import archive
  folder = tmp_path / "urn_md_pretrained"
  folder.mkdir()
  (folder / archive.RUN).write_text(json.dumps(
      {"name": "URN + MD w/ HCP", "seed": 2, "cases": [], "figure_case": "", "tumours": {}}))
  (folder / archive.SEALED).write_text(json.dumps({"encoders_as_sealed": True}))
  assert "encoders_retrained" not in archive.sealed_run(folder)[0]
  (folder / archive.SEALED).write_text(json.dumps({"encoders_as_sealed": False}))
  run = archive.sealed_run(folder)[0]
  assert run["encoders_retrained"] is True
  note = _runs_note(Counted(every=[], unflat=[], tested=[run]), set())
  assert ("with weights that differ from those sealed (their sealed.json): URN + MD w/ HCP "
          "(seed 2); their verdicts rest on those encoders.") in note
  pair = ("urn_md_pretrained", 0, "segment", folder, tmp_path / "x2")
  text = convergence_report([pair], tmp_path, retrained=[folder]).read_text()
  assert "| urn_md_pretrained | 0 | not trained yet |" in text  # no curves here
  for d in (folder, tmp_path / "x2"):
    d.mkdir(exist_ok=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": s, "loss": 1.0, "validation_loss": 1.0, "validation_dice_WT": 0.9,
         "validation_dice_TC": 0.8, "validation_dice_ET": 0.7}) + "\n" for s in (1, 2)))
  text = convergence_report([pair], tmp_path, retrained=[folder]).read_text()
  assert "| yes (the ordinary run on a pre-training trained again, its weights not those " \
         "sealed) |" in text


def test_the_longer_runs_are_the_ordinary_ones_stretched(tmp_path):
  """The study's convergence check: seed 0 of the pooled pre-training and of every
  segmentation, with twice the steps (the same schedule stretched), in <stage>_x2, the
  pre-trained segmentations on the ordinary pre-training; a stage it does not train is
  refused by name."""
  from urn_jax.errors import ConfigError
  from urn_jax.experiments.study import longer_plan, plan
  config = load_config("study")
  jobs = plan(config, tmp_path)
  ordinary = {(name, seed): job for name, seed, job, _ in jobs}
  longer = longer_plan(config, jobs)
  assert [(name, seed) for name, seed, _, _ in longer] == [
      ("pretrain", 0), ("baseline", 0), ("baseline_md", 0), ("baseline_md_wide", 0),
      ("urn_md", 0), ("urn_md_pretrained", 0), ("urn_md_finetuned", 0)]
  for name, seed, job, job_dir in longer:
    assert job_dir == tmp_path / "seed0" / f"{name}_x2"
    assert job.train.max_steps == 2 * ordinary[name, seed].train.max_steps
    assert job.train.hold_fraction == ordinary[name, seed].train.hold_fraction
    assert job.pretrained_workdir == ordinary[name, seed].pretrained_workdir
  assert longer[5][2].pretrained_workdir == str(tmp_path / "seed0" / "pretrain")
  config.longer.stages = ("pretrain_brats", "segment_everything")
  with pytest.raises(ConfigError, match="'segment_everything' with seed 0"):
    longer_plan(config, jobs)


def _study_without_training(monkeypatch, tmp_path, train):
  """The tiny study of seed 0 (training only, archived in ``tmp_path / "archive"``) with
  ``train`` for ``train_and_evaluate`` and a sealing that writes only the config and
  ``sealed.json``: its config, and the list of what it sealed (stage, pre-training folder,
  the stages of its timing lines)."""
  from urn_jax.experiments import archive, study
  from urn_jax.job_config import write_config
  sealed = []

  def seal(name, job, job_dir, folder, *args, timings=(), pretraining_folder=None, **kw):
    sealed.append((name, pretraining_folder, [t["stage"] for t in timings]))
    folder.mkdir(parents=True)
    write_config(job, folder)
    (folder / archive.SEALED).write_text("{}")

  monkeypatch.setattr(study, "train_and_evaluate", train)
  monkeypatch.setattr(archive, "seal", seal)
  config = load_config("study", "tiny")
  config.seeds, config.stages, config.archive = (0,), "train", str(tmp_path / "archive")
  return config, sealed


def test_a_sealed_stage_is_skipped_and_a_lost_pretraining_trained_again(tmp_path,
                                                                        monkeypatch):
  """A machine sealed the pooled pre-training and was lost with its work directory: the
  next one skips it, trains it again once (recorded as such) before the first
  segmentation on its encoders, and seals those with the archived pre-training named; a
  sealed stage made by another job is refused by name."""
  from urn_jax.errors import ConfigError
  from urn_jax.experiments import archive, study
  from urn_jax.job_config import write_config
  trained = []

  def train(job, job_dir):
    done = Path(job_dir) / "checkpoints" / "2"
    if done.is_dir():
      return {}
    trained.append(Path(job_dir).name)
    done.mkdir(parents=True)
    return {"loss": 1.0}

  config, sealed = _study_without_training(monkeypatch, tmp_path, train)
  jobs = study.plan(config, tmp_path / "work")
  pretraining = archive.stage_dir(config.archive, 0, "pretrain")
  pretraining.mkdir(parents=True)
  write_config(jobs[0][2], pretraining)
  (pretraining / archive.SEALED).write_text("{}")
  study.run(config, tmp_path / "work")
  assert trained == ["baseline", "baseline_md", "baseline_md_wide", "urn_md", "pretrain",
                     "urn_md_finetuned", "urn_md_pretrained", "pretrain_brats",
                     "urn_md_pretrained_x2"]
  assert [s[0] for s in sealed] == [t for t in trained if t != "pretrain"]
  assert sealed[0] == ("baseline", None, ["baseline"])
  assert sealed[4] == ("urn_md_finetuned", pretraining, ["pretrain_again",
                                                         "urn_md_finetuned"])
  assert sealed[5] == ("urn_md_pretrained", pretraining, ["urn_md_pretrained"])
  # Everything sealed: nothing trains again.
  trained.clear()
  study.run(config, tmp_path / "work")
  assert trained == []
  other = json.loads((pretraining / "config.json").read_text())
  other["seed"] = 7
  (pretraining / "config.json").write_text(json.dumps(other))
  with pytest.raises(ConfigError, match=f"{pretraining} was sealed by a job with other seed"):
    study.run(config, tmp_path / "work")


def test_a_stage_that_diverges_is_sealed_so_and_the_study_goes_on_without_it(tmp_path,
                                                                             monkeypatch):
  """docs/STUDY_PLAN.md: a run that diverges stops the study with an error naming it, and is
  then left out by name. It is sealed as diverged (its config, curve and time, no scores),
  so the same command goes on with the next stage instead of diverging again; the
  segmentations on the encoders of a pre-training that diverged are sealed so untrained."""
  from urn_jax.errors import TrainingDiverged
  from urn_jax.experiments import archive, study
  trained = []

  def train(job, job_dir):
    trained.append(Path(job_dir).name)
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    (Path(job_dir) / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    if Path(job_dir).name in ("urn_md", "pretrain"):
      raise TrainingDiverged("the loss became nan by step 2")
    (Path(job_dir) / "checkpoints" / "2").mkdir(parents=True)
    return {"loss": 1.0}

  config, sealed = _study_without_training(monkeypatch, tmp_path, train)
  folder = archive.stage_dir(config.archive, 0, "urn_md")
  with pytest.raises(TrainingDiverged, match=f"urn_md, seed 0 diverged: the loss became nan "
                                             f"by step 2. It is sealed as diverged in {folder}"):
    study.run(config, tmp_path / "work")
  assert archive.diverged(folder) == "the loss became nan by step 2"
  assert (folder / "metrics.jsonl").is_file() and (folder / "config.json").is_file()
  (part,) = [json.loads(l) for l in (folder / archive.TIMINGS).open()]
  assert part["stage"] == "urn_md" and part["diverged"] is True
  with pytest.raises(TrainingDiverged, match="pretrain, seed 0 diverged"):
    study.run(config, tmp_path / "work")
  trained.clear()
  study.run(config, tmp_path / "work")
  assert trained == ["pretrain_brats"]  # the frozen and fine-tuned URNs: not trained
  for stage in ("urn_md_finetuned", "urn_md_pretrained", "urn_md_pretrained_x2"):
    assert archive.diverged(archive.stage_dir(config.archive, 0, stage)) == (
        "its pre-training (pretrain, seed 0) diverged: the loss became nan by step 2")
  assert [s[0] for s in sealed] == ["baseline", "baseline_md", "baseline_md_wide",
                                   "pretrain_brats"]
