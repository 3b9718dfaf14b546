"""Several processes (hosts): only process 0 writes, the others wait for it and read.

Simulated in one process by making ``jax`` report another process index and count."""

from __future__ import annotations

import json
import time

import jax
import ml_collections
import pytest

from urn_jax.data import datasets
from urn_jax.training.metrics_log import MetricsLog


def test_only_process_0_writes_the_metrics_and_tensorboard(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  log = MetricsLog(tmp_path)
  log.write(1, {"loss": 0.5})
  log.close()
  assert list(tmp_path.iterdir()) == []
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  log = MetricsLog(tmp_path)
  log.write(1, {"loss": 0.5})
  log.close()
  (line,) = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert line.pop("wall_time") == pytest.approx(time.time(), abs=60)
  assert line == {"step": 1, "loss": 0.5}
  assert (tmp_path / "tensorboard").is_dir()


def _config():
  config = ml_collections.ConfigDict()
  config.data = dict(brats_dir="", hcp_dir="", cache_dir="", use_hcp=False, n4=False,
                     n4_shrink=4, spacing=6.0, size=16, split_seed=0, train_fraction=0.7,
                     test_fraction=0.2, workers=1, phantom_brats=2, phantom_hcp=0,
                     phantom_seed=0)
  return config


def test_processes_other_than_0_prepare_the_data_only_after_process_0_has(tmp_path,
                                                                         monkeypatch):
  """Process 0 writes the cache and the split, then meets the others at a barrier; the
  others pass the barrier first, and then find it all written."""
  events = []
  monkeypatch.setattr(datasets, "prepare_data",
                      lambda *a, **k: events.append("prepare") or {"brats": {}})
  monkeypatch.setattr(datasets.multihost_utils, "sync_global_devices",
                      lambda name: events.append("barrier"))
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for index, order in ((0, ["prepare", "barrier"]), (1, ["barrier", "prepare"])):
    events.clear()
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    assert datasets.data_from_config(_config(), tmp_path) == {"brats": {}}
    assert events == order, index
  monkeypatch.setattr(jax, "process_count", lambda: 1)  # one process: no barrier
  events.clear()
  datasets.data_from_config(_config(), tmp_path)
  assert events == ["prepare"]


def test_only_process_0_speaks(monkeypatch, capsys):
  from urn_jax import console
  for index in (1, 0):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    console.say(f"from process {index}")
    bar = console.progress(range(3), desc=f"bar of process {index}")
    list(bar)
    bar.close()
  err = capsys.readouterr().err
  assert "from process 0" in err and "bar of process 0" in err
  assert "process 1" not in err


def test_only_process_0_records_the_studys_wall_time(tmp_path, monkeypatch):
  from urn_jax.experiments.timings import record_time
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  record_time(tmp_path, {"stage": "pretrain", "seconds": 1.0})
  assert list(tmp_path.iterdir()) == []
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  record_time(tmp_path, {"stage": "pretrain", "seconds": 1.0})
  assert (tmp_path / "timings.jsonl").read_text() == '{"stage": "pretrain", "seconds": 1.0}\n'


@pytest.mark.slow
def test_only_process_0_writes_the_evaluation(tiny_runs, tmp_path, monkeypatch, capsys):
  """Every process evaluates (the numbers are the same); process 1 writes no per-case
  result, table or figure, and prints nothing."""
  from urn_jax.evaluation.evaluate import evaluate_models
  settings = ml_collections.ConfigDict(dict(chunk=8, max_cases=0, figure_case="",
                                            figures=False, masks="1111"))
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert evaluate_models([tiny_runs["urn_md"]], tmp_path / "out", settings) == {"files": []}
  assert not (tmp_path / "out").exists() and capsys.readouterr().err == ""
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  summary = evaluate_models([tiny_runs["urn_md"]], tmp_path / "out", settings)
  assert (tmp_path / "out" / "table1.md").is_file() and summary["files"]
