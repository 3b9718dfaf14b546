"""Checked quotations: a page (docs/RESULTS.md) quotes files that a run wrote and the
repository commits (``docs/study/results/claims.md``, ...), and this module says whether
each quotation is still the file's text, or writes it again.

A quotation is every line between two markers that name the same file, relative to the
repository's root (the folder that holds ``pyproject.toml`` above the page):

    <!-- quote docs/study/results/claims.md -->
    ...the file's text...
    <!-- end quote docs/study/results/claims.md -->

What stands between them is the file's text without its first line when that line is a
level-one title (``# ...``: the page has its own headings), and without the blank lines
around it. A path may end in ``#anchor``, the GitHub anchor of one of the file's headings
(``docs/STUDY_PLAN.md#margin-and-verdicts``): then the quotation is that section, from the
line under the heading to the next heading of its level or above. So a page's tables are
the committed files' tables, and a changed result shows as a failed check instead of a
stale number.

    python -m urn_jax.evaluation.quotes docs/RESULTS.md           # check: exit 1, a diff
    python -m urn_jax.evaluation.quotes docs/RESULTS.md --write   # quote the files again
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

from urn_jax.files import write_text_atomically

BEGIN = re.compile(r"^<!-- quote (\S+) -->$")
END = re.compile(r"^<!-- end quote (\S+) -->$")


class QuoteError(ValueError):
  """A page whose markers do not pair up, or that quotes a file that is not there."""


def repository_root(page) -> Path:
  """The nearest folder at or above ``page``'s that holds ``pyproject.toml``: the root the
  quoted paths are relative to."""
  page = Path(page).resolve()
  for folder in page.parents:
    if (folder / "pyproject.toml").is_file():
      return folder
  raise QuoteError(f"{page}: no pyproject.toml in any folder above it, so the quoted paths "
                   "have no repository root to be relative to")


def anchor(heading: str) -> str:
  """GitHub's anchor of a Markdown heading's text: lower case, punctuation but hyphens
  dropped, spaces as hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(lines: list) -> list[tuple[int, int, str]]:
  """``(line index, level, anchor)`` of each Markdown heading among ``lines`` (lines inside
  code fences are not headings)."""
  found, fenced = [], False
  for index, line in enumerate(lines):
    fenced ^= line.startswith("```")
    heading = None if fenced else re.match(r"^(#+) (.*)$", line)
    if heading:
      found.append((index, len(heading.group(1)), anchor(heading.group(2))))
  return found


def _section(lines: list, name: str, path: Path) -> list:
  """The lines under the heading whose anchor is ``name``, to the next heading of its level
  or above."""
  found = headings(lines)
  for n, (index, level, heading) in enumerate(found):
    if heading == name:
      end = next((i for i, l, _ in found[n + 1:] if l <= level), len(lines))
      return lines[index + 1:end]
  raise QuoteError(f"{path} has no heading whose anchor is #{name}")


def quoted_text(path: Path, section: str = "") -> str:
  """What a quotation of ``path`` holds: its text, a leading ``# title`` line dropped, or
  the section under the heading whose anchor is ``section``; the blank lines around it
  stripped."""
  lines = path.read_text().splitlines()
  if section:
    lines = _section(lines, section, path)
  elif lines and lines[0].startswith("# "):
    lines = lines[1:]
  return "\n".join(lines).strip("\n")


def requote(page) -> tuple[str, str, list]:
  """``(the page's text, the text with every quotation made again, the quoted paths)``;
  raises ``QuoteError`` naming the page and line of a marker without its pair, or a quoted
  file that is missing."""
  page = Path(page)
  root, old = repository_root(page), page.read_text()
  out, quoted, open_at = [], [], None
  for number, line in enumerate(old.splitlines(), start=1):
    begin, end = BEGIN.match(line), END.match(line)
    if open_at is None and end:
      raise QuoteError(f"{page}:{number}: '{line}' closes a quotation that was not opened")
    if open_at is not None and not end:
      if begin:
        raise QuoteError(f"{page}:{number}: a quotation opens inside the one opened at "
                         f"line {open_at[0]}")
      continue  # the old quotation, replaced
    if end:
      if end.group(1) != open_at[1]:
        raise QuoteError(f"{page}:{number}: '{line}' closes the quotation of "
                         f"{open_at[1]} (line {open_at[0]}); expected "
                         f"'<!-- end quote {open_at[1]} -->'")
      name, _, section = open_at[1].partition("#")
      if not (root / name).is_file():
        raise QuoteError(f"{page}:{open_at[0]}: quotes {name}, which is not a file "
                         f"under {root}")
      out.append(quoted_text(root / name, section))
      quoted.append(open_at[1])
      open_at = None
    elif begin:
      open_at = (number, begin.group(1))
    out.append(line)
  if open_at is not None:
    raise QuoteError(f"{page}:{open_at[0]}: the quotation of {open_at[1]} is never closed "
                     f"('<!-- end quote {open_at[1]} -->')")
  return old, "\n".join(out) + ("\n" if old.endswith("\n") else ""), quoted


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Check (or, with --write, make again) the "
                                   "quotations of committed files in a page.")
  parser.add_argument("page", help="a Markdown page, e.g. docs/RESULTS.md")
  parser.add_argument("--write", action="store_true",
                      help="write the quotations again from their files")
  args = parser.parse_args(argv)
  try:
    old, new, quoted = requote(args.page)
  except (QuoteError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if old == new:
    print(f"{args.page}: its {len(quoted)} quotation(s) are their files' text")
    return 0
  if args.write:
    write_text_atomically(args.page, new)
    print(f"{args.page}: {len(quoted)} quotation(s) written from their files")
    return 0
  print("".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                     args.page, "quoted again")))
  return 1


if __name__ == "__main__":
  sys.exit(main())
