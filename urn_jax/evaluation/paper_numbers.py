"""The paper's Tables 1 and 2, as printed, for side-by-side comparison
(``urn_jax.evaluation.tables.paper_comparison``).

Rows are availability masks (FLAIR, T1, T1c, T2; 1 = given) in the paper's order, which is
Table 1's order here too. Table 1 is Dice (%) on BraTS 2018 (scored through the challenge's
leaderboard, by the paper's note on the baseline's T1-only row), columns ET, WT, TC for
Baseline, Baseline + MD, URN + MD and URN + MD w/ HCP ("-": the row the paper could not
retrieve). Table 2 is PSNR (dB) of synthesized BraTS images, columns FLAIR, T1, T1c, T2 for
the URN pre-trained on BraTS alone, then on BraTS + HCP ("-": an input).
tests/test_paper_numbers.py checks the transcription against the means of Table 1's
columns (Baseline ET 21.4, WT 44.1, TC 24.6 over its 14 rows, ...) and the rows each table
has.
"""

from __future__ import annotations

from urn_jax.labels import TABLE_REGIONS as TABLE1_REGIONS
from urn_jax.modalities import MODALITIES as TABLE2_MODALITIES
from urn_jax.scenarios import TABLE1_SCENARIOS, TABLE2_MODELS

_TABLE1 = """
1111   74.2  86.2  75.9  63.9  84.1  73.9  69.9  86.3  71.8  71.3  86.1  78.0
1110   54.8  69.3  52.5  63.2  83.2  73.0  71.0  85.6  72.0  72.3  85.3  77.6
1101    3.8  82.3  34.4  30.5  84.2  58.9  25.8  86.1  52.5  39.7  85.5  63.0
1011   66.3  82.0  68.0  63.8  84.1  74.3  69.8  86.5  72.2  71.1  86.0  78.8
0111   17.9  10.1  18.3  65.7  79.7  71.0  68.5  81.1  69.5  71.8  82.1  76.3
0011   12.1   6.3  11.5  62.4  79.2  71.0  67.6  80.3  68.9  73.4  81.4  77.6
0101    0.1   2.6   4.0  30.8  79.9  53.0  25.2  80.8  48.6  40.5  80.7  59.9
0110    2.3   1.0   2.8  60.3  69.3  67.0  66.5  69.8  65.9  68.8  70.7  71.6
1001    4.6  81.7  14.8  31.6  84.1  55.7  25.2  86.3  50.7  41.7  85.4  63.1
1010   42.9  67.6  43.2  62.5  82.8  73.2  70.4  85.8  72.5  71.0  85.0  76.8
1100    6.7  53.4  11.4  24.7  83.2  54.5  25.3  85.5  52.6  36.9  84.6  59.6
1000    6.1  70.1   0.0  16.1  71.9  28.3  23.6  84.8  50.4  31.8  84.1  52.1
0100      -     -     -  10.3  51.9  30.3  19.1  50.4  34.2  21.0  54.7  37.2
0010    5.8   1.8   3.9  49.0  61.8  58.6  55.8  62.2  58.5  61.1  63.6  65.8
0001    1.5   2.9   3.9  25.6  72.4  47.4  20.3  77.5  43.6  38.5  75.1  55.6
"""

_TABLE2 = """
1110      -     -     -  19.8     -     -     -  18.6
1101      -     -  19.3     -     -     -  19.1     -
1011      -  22.3     -     -     -  22.4     -     -
0111   18.7     -     -     -  18.4     -     -     -
0011   18.1  21.7     -     -  18.0  21.5     -     -
0101   18.7     -  19.2     -  18.4     -  19.0     -
0110   17.2     -     -  18.2  17.0     -     -  17.3
1001      -  20.1  17.5     -     -  20.2  17.2     -
1010      -  21.7     -  19.1     -  21.5     -  18.4
1100      -     -  19.0  19.4     -     -  18.8  18.4
1000      -   5.7   8.0   6.2     -  15.2   7.2  14.1
0100   16.5     -  16.0  17.5  13.3     -  15.7  16.4
0010   14.1  16.1     -  16.3  16.1  17.1     -  16.0
0001   15.1  18.0  14.3     -  16.5  18.6  15.9     -
"""


def _parse(text: str, groups, columns) -> dict:
  """``{(group, column): {mask: value}}``, a dash left out."""
  table = {(g, c): {} for g in groups for c in columns}
  for line in text.strip().splitlines():
    mask, *values = line.split()
    keys = [(g, c) for g in groups for c in columns]
    if len(values) != len(keys):
      raise ValueError(f"row {mask} has {len(values)} values, expected {len(keys)}")
    for key, value in zip(keys, values):
      if value != "-":
        table[key][mask] = float(value)
  return table


TABLE1 = _parse(_TABLE1, TABLE1_SCENARIOS, TABLE1_REGIONS)
"""``{(scenario, region): {mask: Dice %}}``."""
TABLE2 = _parse(_TABLE2, TABLE2_MODELS, TABLE2_MODALITIES)
"""``{(model, modality): {mask: PSNR dB}}``, synthesized modalities only."""
