"""The modality order and the 15 combinations of the paper's Table 1."""

import numpy as np
import pytest

from urn_jax import MODALITIES, availability_masks, mask_key, mask_name, mask_symbols


def test_canonical_order_is_the_papers():
  assert MODALITIES == ("flair", "t1", "t1c", "t2")


def test_fifteen_masks_in_table1_row_order():
  masks = availability_masks()
  assert masks.shape == (15, 4) and masks.dtype == bool
  # Table 1 of the paper, rows top to bottom, columns F T1 T1c T2.
  table1 = """
  1111 1110 1101 1011 0111 0011 0101 0110 1001 1010 1100 1000 0100 0010 0001""".split()
  assert ["".join("1" if v else "0" for v in row) for row in masks] == table1
  assert len({tuple(r) for r in masks}) == 15


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_other_numbers_of_modalities_enumerate_every_nonempty_mask(m):
  masks = availability_masks(m)
  assert masks.shape == (2**m - 1, m)
  assert len({tuple(r) for r in masks}) == 2**m - 1
  assert masks.any(axis=1).all()
  counts = masks.sum(axis=1)
  assert (np.diff(counts) <= 0).all() and masks[0].all()


def test_names_and_symbols():
  assert mask_name([True, False, True, False]) == "FLAIR+T1c"
  assert mask_symbols([True, False, True, False]) == "\u25cf \u25cb \u25cf \u25cb"
  assert mask_key([True, False, True, False]) == mask_key(np.array([1, 0, 1, 0])) == "1010"
