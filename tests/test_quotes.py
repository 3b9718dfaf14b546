"""A page's quotations of committed result files are those files' text: a changed result
fails the check, ``--write`` quotes it again and leaves the rest of the page as it was, and
markers that do not pair up or name a missing file are errors that say where."""

import pytest
from conftest import ROOT

from urn_jax.evaluation.quotes import QuoteError, main, requote


@pytest.fixture
def repo(tmp_path):
  (tmp_path / "pyproject.toml").write_text("[project]\n")
  (tmp_path / "results").mkdir()
  (tmp_path / "results" / "claims.md").write_text("# Claims\n\nnote\n\n| a |\n|---|\n| 1 |\n")
  (tmp_path / "docs").mkdir()
  return tmp_path


def _page(repo, body):
  page = repo / "docs" / "RESULTS.md"
  page.write_text("# Results\n\nprose 1.0\n\n<!-- quote results/claims.md -->\n" + body +
                  "<!-- end quote results/claims.md -->\n\nmore prose\n")
  return page


def test_a_current_quotation_passes_and_a_changed_result_fails_until_written(repo, capsys):
  page = _page(repo, "note\n\n| a |\n|---|\n| 1 |\n")
  assert main([str(page)]) == 0
  (repo / "results" / "claims.md").write_text("# Claims\n\nnote\n\n| a |\n|---|\n| 2 |\n")
  assert main([str(page)]) == 1
  assert "-| 1 |" in capsys.readouterr().out
  assert main([str(page), "--write"]) == 0
  assert page.read_text() == ("# Results\n\nprose 1.0\n\n<!-- quote results/claims.md -->\n"
                              "note\n\n| a |\n|---|\n| 2 |\n"
                              "<!-- end quote results/claims.md -->\n\nmore prose\n")
  assert main([str(page)]) == 0


def test_the_quoted_files_title_is_left_out_but_nothing_else(repo):
  old, new, quoted = requote(_page(repo, "stale\n"))
  assert quoted == ["results/claims.md"]
  assert "# Claims" not in new and "note\n\n| a |\n|---|\n| 1 |\n<!-- end" in new
  assert "stale" in old and "stale" not in new


@pytest.mark.parametrize("body, message", [
    ("<!-- quote results/claims.md -->\n", "opens inside the one opened at line 5"),
    ("<!-- end quote results/other.md -->\n", "closes the quotation of results/claims.md"),
])
def test_markers_that_do_not_pair_up_are_named_with_their_line(repo, body, message):
  with pytest.raises(QuoteError, match=message):
    requote(_page(repo, body))


def test_an_unclosed_quotation_and_a_missing_file_are_errors(repo, capsys):
  page = repo / "docs" / "RESULTS.md"
  page.write_text("<!-- quote results/claims.md -->\ntext\n")
  with pytest.raises(QuoteError, match="never closed"):
    requote(page)
  page.write_text("<!-- end quote results/claims.md -->\n")
  with pytest.raises(QuoteError, match="was not opened"):
    requote(page)
  page.write_text("<!-- quote results/gone.md -->\n<!-- end quote results/gone.md -->\n")
  assert main([str(page)]) == 2
  assert "results/gone.md, which is not a file" in capsys.readouterr().err


def test_a_section_is_quoted_by_its_headings_anchor_to_the_next_heading_of_its_level(repo):
  (repo / "PLAN.md").write_text("# Plan\n\n## Margin, and verdicts\n\nOne point.\n\n### Why\n\n"
                                "```\n# not a heading\n```\n\n## Next\n\nother\n")
  page = repo / "docs" / "RESULTS.md"
  page.write_text("<!-- quote PLAN.md#margin-and-verdicts -->\n"
                  "<!-- end quote PLAN.md#margin-and-verdicts -->\n")
  _, new, _ = requote(page)
  assert new == ("<!-- quote PLAN.md#margin-and-verdicts -->\n"
                 "One point.\n\n### Why\n\n```\n# not a heading\n```\n"
                 "<!-- end quote PLAN.md#margin-and-verdicts -->\n")
  page.write_text("<!-- quote PLAN.md#margins -->\n<!-- end quote PLAN.md#margins -->\n")
  with pytest.raises(QuoteError, match="PLAN.md has no heading whose anchor is #margins"):
    requote(page)


def test_the_results_page_quotes_the_committed_results_as_they_are(capsys):
  """docs/RESULTS.md's tables are the committed files of docs/study/results, as they are."""
  assert main([str(ROOT / "docs" / "RESULTS.md")]) == 0, capsys.readouterr().out
