"""benchmarks/shift.py: its tables are the means and paired differences of its rows, and
they read back from the files it writes."""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np

from urn_jax.data.augment import AugmentSettings

_spec = importlib.util.spec_from_file_location(
    "shift", Path(__file__).resolve().parents[1] / "benchmarks" / "shift.py")
shift = importlib.util.module_from_spec(_spec)
sys.modules["shift"] = shift  # its dataclass looks its module up while it is defined
_spec.loader.exec_module(shift)


def _rows():
  """Dice = base + patient + (5 with all four) + (at site B, for `augment`: 3, and 2 more
  with all four)."""
  rows = []
  for recipe, gain in (("plain", 0.0), ("augment", 3.0)):
    for model, base in (("baseline_md", 80.0), ("urn_md_pretrained", 70.0)):
      for site in shift.SETS:
        for patient in range(2):
          for mask in ("1111", "0001"):
            value = base + patient + (5 if mask == "1111" else 0) + (
                gain + (2 * gain / 3 if mask == "1111" else 0) if site == "B" else 0)
            rows.append({"recipe": recipe, "model": model, "set": site,
                         "case_id": f"p{patient}", "mask": mask,
                         "ET": value - 10, "TC": value - 5, "WT": value})
  return rows


def test_the_tables_are_means_and_paired_differences_of_the_rows(tmp_path):
  lines = shift.report(_rows())
  means = lines[:next(i for i, line in enumerate(lines) if line.startswith("Against"))]
  table = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
           for line in means if line.startswith(("| plain", "| augment"))}
  plain = table["plain", "baseline_md"].strip("|").split("|")
  # validation ET: mean over 2 patients x 2 masks = 80 + 0.5 + 2.5 - 10; all four: +2.5 more
  assert plain[2].strip() == "73.0 / 75.5"
  b_wt = table["augment", "urn_md_pretrained"].strip("|").split("|")[-1].strip()
  assert b_wt == "77.0 / 80.5"
  differences = [line for line in lines if line.startswith("| augment")][-1]
  cells = [c.strip() for c in differences.strip("|").split("|")]
  assert cells[:2] == ["augment", "urn_md_pretrained"]
  unchanged = 3 * (len(shift.SETS) - 1)  # every set but site B (the last), 3 regions each
  assert cells[2:2 + unchanged] == ["+0.0 (0 / 0), +0.0"] * unchanged
  assert cells[2 + unchanged:] == ["+4.0 (4 / 0), +5.0"] * 3  # site B: every pair up, by 3 or 5
  plain = [r for r in _rows() if r["recipe"] == "plain"]
  augment = [r for r in _rows() if r["recipe"] == "augment"]
  shift.write_results(tmp_path, augment, {"patients": 2})  # recipes scored one at a time
  shift.write_results(tmp_path, plain, {"patients": 1})
  assert shift.write_results(tmp_path, plain, {"patients": 2}) == plain + augment  # replaced
  assert shift.report(shift.read_results(tmp_path)) == lines
  # a set scored again replaces that set's rows, in its place, and no other rows
  again = [dict(r, WT=r["WT"] + 1) for r in plain if r["set"] == "B"]
  every = shift.write_results(tmp_path, again, {"patients": 2})
  assert every == [next((a for a in again if _key(a) == _key(r)), r) for r in plain + augment]
  assert sorted(shift.json.loads((tmp_path / "run.json").read_text())["plain"]) == sorted(
      shift.SETS)


def _key(row):
  return tuple(row[k] for k in ("recipe", "model", "set", "case_id", "mask"))


def test_a_recipe_sets_every_augmentation_field_and_the_phantom_version():
  flags = shift.RECIPES["variety+augment"].overrides()
  assert "--config.data.phantom_version=3" in flags
  typical = AugmentSettings.typical()
  for field in dataclasses.fields(AugmentSettings):
    value = getattr(typical, field.name)
    written = [f.split("=", 1)[1] for f in flags if f.startswith(f"--config.augment.{field.name}=")]
    assert len(written) == 1, field.name
    parsed = (tuple(float(v) for v in written[0].strip("()").split(","))
              if isinstance(value, tuple) else written[0] == "True"
              if isinstance(value, bool) else type(value)(written[0]))
    assert np.allclose(parsed, value), field.name
  assert all(f.endswith("=0.0") for f in shift.RECIPES["plain"].overrides()
             if f.split("=")[0].split(".")[-1] in {"p_flip", "p_gamma", "p_bias"})


def test_a_recipe_of_the_pretraining_alone_is_compared_with_the_one_it_shares_runs_with():
  """``clean`` restores clean targets in pre-training only: its segmentation flags are
  ``augment``'s, it trains no Baseline + MD of its own, and its URN chain is compared with
  ``augment``'s, not with ``plain``'s."""
  clean = shift.RECIPES["clean"]
  assert "--config.augment.clean_targets=True" in clean.overrides(pretraining=True)
  assert clean.overrides() == shift.RECIPES["augment"].overrides()
  assert clean.models == ("urn_md_pretrained",) and clean.reference == "augment"
  rows = _rows() + [dict(r, recipe="clean", WT=r["WT"] + 1) for r in _rows()
                    if r["recipe"] == "augment" and r["model"] == "urn_md_pretrained"]
  lines = shift.report(rows)
  assert not any(line.startswith("| clean | baseline_md") for line in lines)
  against = lines.index(next(line for line in lines if line.startswith("Against `augment`")))
  assert [line.split("|")[1].strip() for line in lines[against + 4:]] == ["clean"]
  cells = [c.strip() for c in lines[against + 4].strip("|").split("|")]
  assert cells[2:] == ["+0.0 (0 / 0), +0.0", "+0.0 (0 / 0), +0.0", "+1.0 (4 / 0), +1.0"] * (
      len(shift.SETS))


def test_a_longer_pretraining_changes_the_pretraining_alone():
  """``longpre`` trains its pre-training for ``pretrain_steps`` steps, and segments as
  ``augment`` does."""
  longpre = shift.RECIPES["longpre"]
  assert "--config.train.max_steps=10000" in longpre.overrides(pretraining=True)
  assert longpre.overrides() == shift.RECIPES["augment"].overrides()
  assert not any("max_steps" in f for f in shift.RECIPES["augment"].overrides(pretraining=True))


def test_a_recipe_of_the_inference_alone_trains_nothing_and_scores_the_runs_it_names(
    tmp_path, monkeypatch):
  """``adabn`` adapts the batch norms at test time: it launches no training, writes no
  curves of its own, and reads ``augment``'s runs."""
  adabn = shift.RECIPES["adabn"]
  assert adabn.adapt and adabn.runs_of == "augment" == adabn.reference
  launched = []
  monkeypatch.setattr(shift, "_launch", lambda *args: launched.append(args))
  shift.train(tmp_path, ["adabn"])
  assert launched == []
  shift.train(tmp_path, ["augment"])
  assert len(launched) == 3
  shift.write_curves(tmp_path / "out", tmp_path, ["adabn"])
  assert (tmp_path / "out" / "curves.json").read_text() == "{}\n"
  loaded, adapted = [], []

  class Patient:
    meta = type("Meta", (), {"case_id": "p0"})
    classes = np.zeros((2, 2, 2), np.uint8)

    def combinations(self, masks):
      return masks[:2]

    def predicted(self, model, mask, chunk, adapt=False):
      adapted.append(adapt)
      return self.classes

  monkeypatch.setattr(shift, "load_model", lambda run: loaded.append(
      Path(run).relative_to(tmp_path).parts))
  monkeypatch.setattr(shift, "_new_cases", lambda *args: ["p0"])
  monkeypatch.setattr(shift.Patient, "read", lambda case_dir: Patient())
  rows = shift.score(tmp_path, ["adabn", "augment"], ["A"], "all", 1, {"test": 0, "tune": 1})
  assert loaded == [(r, m) for r in ("augment", "augment") for m in ("baseline_md",
                                                                       "urn_md_pretrained")]
  assert adapted == [True] * 4 + [False] * 4
  assert [r["recipe"] for r in rows] == ["adabn"] * 4 + ["augment"] * 4


def test_a_recipe_that_fine_tunes_starts_from_the_pretraining_it_names(tmp_path, monkeypatch):
  """``finetune`` trains no pre-training of its own: it (re)launches ``augment``'s, in
  ``augment``'s folder and with its flags, fine-tunes URN + MD from it, and its fine-tuned
  chain is compared with the frozen one trained on the same pre-training."""
  finetune = shift.RECIPES["finetune"]
  launched = []
  monkeypatch.setattr(shift, "_launch", lambda *args: launched.append(args))
  shift.train(tmp_path, ["finetune"])
  (pre_config, pre_dir, pre_flags), (config, workdir, flags) = launched
  assert pre_config.endswith("pretrain.py:small") and pre_dir == tmp_path / "augment" / "pretrain"
  assert pre_flags == shift.RECIPES["augment"].overrides(pretraining=True)
  assert config.endswith("segment.py:urn_md_finetuned,small")
  assert workdir == tmp_path / "finetune" / "urn_md_finetuned"
  assert flags == finetune.overrides() + [f"--config.pretrained_workdir={pre_dir}"]
  assert finetune.reference == "augment-rerun"
  urn = [r for r in _rows() if r["recipe"] == "augment" and r["model"] == "urn_md_pretrained"]
  rows = _rows() + [dict(r, recipe="augment-rerun") for r in urn] + [
      dict(r, recipe="finetune", model="urn_md_finetuned", WT=r["WT"] + 2) for r in urn]
  lines = shift.report(rows)
  against = lines.index(next(line for line in lines
                             if line.startswith("Against `augment-rerun`")))
  cells = [c.strip() for c in lines[against + 4].strip("|").split("|")]
  assert cells[:2] == ["finetune", "urn_md_finetuned"]
  assert cells[2:] == ["+0.0 (0 / 0), +0.0", "+0.0 (0 / 0), +0.0", "+2.0 (4 / 0), +2.0"] * (
      len(shift.SETS))
  assert shift.role("urn_md_finetuned") == shift.role("urn_md_pretrained") != shift.role(
      "baseline_md")


def test_a_recipes_curves_name_the_pretraining_its_runs_started_from(tmp_path):
  """``finetune``'s pre-training in curves.json is ``augment``'s, read from its folder."""
  for run, loss in (("augment/pretrain", 0.5), ("finetune/urn_md_finetuned", 0.25)):
    (tmp_path / run).mkdir(parents=True)
    (tmp_path / run / "metrics.jsonl").write_text("\n".join(shift.json.dumps(
        {"step": step, "slices_per_second": 10.0, "loss": loss, "validation_loss": loss})
        for step in (1, 2)))
  shift.write_curves(tmp_path / "out", tmp_path, ["finetune"])
  curves = shift.json.loads((tmp_path / "out" / "curves.json").read_text())
  assert curves["finetune/pretrain"]["best_validation_loss"] == 0.5
  assert curves["finetune/urn_md_finetuned"]["best_validation_loss"] == 0.25
