"""The documentation's links lead somewhere: every relative link of the README and of the
pages under docs/ and benchmarks/ names a file of the repository, and every ``#anchor`` a
heading of the page it points into (GitHub's anchors, ``urn_jax.evaluation.quotes``)."""

import functools
import re
from pathlib import Path

import pytest

from urn_jax.evaluation.quotes import headings

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "benchmarks").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@functools.cache
def anchors(page: Path) -> set:
  """The anchors of ``page``'s headings, a repeated one also with GitHub's ``-1``, ``-2``,
  ... suffix."""
  seen = {}
  for *_, name in headings(page.read_text().splitlines()):
    seen[name] = seen.get(name, -1) + 1
    if seen[name]:
      seen[f"{name}-{seen[name]}"] = 0
  return set(seen)


def broken_links(page: Path) -> list:
  """``page``'s relative links whose file is not there or whose anchor is no heading."""
  broken, fenced = [], False
  for number, line in enumerate(page.read_text().splitlines(), 1):
    fenced ^= line.startswith("```")
    for target in [] if fenced else LINK.findall(line):
      if re.match(r"^[a-z]+:", target):  # https:, mailto:
        continue
      path, _, name = target.partition("#")
      linked = (page.parent / path).resolve() if path else page
      if not linked.exists():
        broken.append(f"{page.name}:{number}: {target} (no such file)")
      elif name and linked.suffix == ".md" and name not in anchors(linked):
        broken.append(f"{page.name}:{number}: {target} (no such heading)")
  return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_and_heading_that_exist(page):
  assert broken_links(page) == []


def test_a_missing_file_and_a_missing_heading_are_found(tmp_path):
  (tmp_path / "other.md").write_text("# Title\n\n## A section, with (commas)\n")
  page = tmp_path / "page.md"
  page.write_text("[ok](other.md#a-section-with-commas) [self](#here)\n# Here\n"
                  "[gone](missing.md) [no heading](other.md#nowhere)\n"
                  "```\n[in code](not-checked.md)\n```\n[web](https://example.org)\n")
  assert broken_links(page) == ["page.md:3: missing.md (no such file)",
                                "page.md:3: other.md#nowhere (no such heading)"]
