"""The paper's Tables 1 and 2 as transcribed, and the side-by-side report built on them."""

import numpy as np
import pytest

from urn_jax.evaluation import paper_numbers
from urn_jax.modalities import availability_masks, mask_key
from urn_jax.evaluation.tables import paper_comparison

# The means of the columns of the paper's Table 1 (ET / WT / TC), over its 15 rows (14 for
# the baseline, whose T1-only row the paper could not retrieve).
PAPER_MEANS = {"Baseline": (21.4, 44.1, 24.6), "Baseline + MD": (44.0, 76.8, 59.3),
               "URN + MD": (46.9, 79.3, 58.9), "URN + MD w/ HCP": (54.1, 79.4, 66.2)}


def test_table1_as_transcribed_has_the_papers_means_and_rows():
  keys = [mask_key(m) for m in availability_masks()]
  for scenario, means in PAPER_MEANS.items():
    for region, mean in zip(("ET", "WT", "TC"), means):
      column = paper_numbers.TABLE1[scenario, region]
      assert list(column) == [k for k in keys if not (scenario == "Baseline" and k == "0100")]
      assert np.mean(list(column.values())) == pytest.approx(mean, abs=0.05)
  assert paper_numbers.TABLE1["URN + MD w/ HCP", "TC"]["1111"] == 78.0


def test_table2_as_transcribed_holds_only_synthesized_modalities():
  for (model, modality), column in paper_numbers.TABLE2.items():
    j = paper_numbers.TABLE2_MODALITIES.index(modality)
    assert len(column) == 7 and all(key[j] == "0" for key in column), (model, modality)
  assert paper_numbers.TABLE2["URN w/ HCP", "t1"]["1000"] == 15.2
  assert paper_numbers.TABLE2["URN", "t1"]["1000"] == 5.7


def test_the_comparison_puts_runs_next_to_the_paper(tmp_path):
  """A run that reproduces the paper's URN + MD column exactly has its means and a rank
  correlation of 1; one that ranks the combinations the other way round has -1."""
  paper = paper_numbers.TABLE1
  rows = [{"mask": k, **{f"{r}/dice": paper["URN + MD", r][k] / 100 for r in ("ET", "WT", "TC")}}
          for k in paper["URN + MD", "WT"]]
  reversed_rows = [{"mask": k, **{f"{r}/dice": 1 - paper["Baseline + MD", r][k] / 100
                                  for r in ("ET", "WT", "TC")}}
                   for k in paper["Baseline + MD", "WT"]]
  runs = [{"name": "URN + MD", "job": "segment", "rows": rows},
          {"name": "Baseline + MD", "job": "segment", "rows": reversed_rows},
          {"name": "something else", "job": "segment", "rows": rows}]
  (path,) = paper_comparison(runs, tmp_path)
  text = path.read_text()
  assert "| Table 1, Dice (%) | URN + MD | WT | 15 | 79.3 | 79.3 | +1.00 |" in text
  assert "| Table 1, Dice (%) | Baseline + MD | ET | 15 | 44.0 | 56.0 | -1.00 |" in text
  assert "something else" not in text and "Table 2" not in text.split("\n\n", 2)[2]
  assert paper_comparison([{"name": "other", "job": "segment", "rows": rows}], tmp_path) == []
