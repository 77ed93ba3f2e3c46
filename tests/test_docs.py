"""The documentation: relative links and anchors resolve, README stays short, CI's test command
is the README's, and no document or script stops processes by name."""

import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def _files(*patterns):
  found = set()
  for pattern in patterns:
    found.update(glob.glob(os.path.join(REPO, pattern), recursive=True))
  return sorted(p for p in found if os.path.isfile(p))


def markdown_files():
  return _files("README.md", "CHANGELOG.md", "docs/**/*.md", "results/**/*.md",
                "bench/**/*.md")


def _prose(text):
  """The text without fenced code blocks and inline code spans."""
  return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading):
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
  text = text.lower().replace("`", "")
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def anchors(path):
  with open(path, encoding="utf-8") as f:
    headings = HEADING.findall(FENCE.sub("", f.read()))
  seen, out = {}, set()
  for h in headings:
    s = slug(h)
    n = seen.get(s, 0)
    out.add(s if n == 0 else f"{s}-{n}")
    seen[s] = n + 1
  return out


def broken_links(path):
  """'target (why)' for every relative link of the markdown file `path` that does not resolve."""
  with open(path, encoding="utf-8") as f:
    text = _prose(f.read())
  bad = []
  for target in LINK.findall(text):
    if EXTERNAL.match(target):
      continue
    file_part, _, anchor = target.partition("#")
    dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
    if not os.path.exists(dest):
      bad.append(f"{target} (no such file)")
      continue
    if anchor and dest.endswith(".md") and os.path.isfile(dest) and anchor not in anchors(dest):
      bad.append(f"{target} (no heading #{anchor})")
  return bad


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_resolve(path):
  assert broken_links(path) == []


def test_link_checker_reports_broken_links(tmp_path):
  (tmp_path / "other.md").write_text("# A heading\n\ntext\n")
  doc = tmp_path / "doc.md"
  doc.write_text("[ok](other.md) [ok](other.md#a-heading) [ok](#here) [web](https://x.org/y)\n"
                 "`[code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n\n## Here\n\n"
                 "[gone](missing.md) ![img](pic.png) [bad anchor](other.md#nope) [self](#none)\n")
  assert broken_links(str(doc)) == ["missing.md (no such file)", "pic.png (no such file)",
                                    "other.md#nope (no heading #nope)",
                                    "#none (no heading #none)"]


def test_slug_matches_github():
  assert slug("Efficiency: the paper's columns and honest counts") == (
      "efficiency-the-papers-columns-and-honest-counts")
  assert slug("`--strategy=cpu_split`: both cores on LeNet") == (
      "--strategycpu_split-both-cores-on-lenet")
  assert slug("CIFAR-10: the chain, not run") == "cifar-10-the-chain-not-run"


def test_readme_is_short():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert len(lines) <= 260, f"README.md has {len(lines)} lines; reference material goes to docs/"


def test_readme_has_the_ci_test_command():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
    install, test = [line for line in f.read().splitlines() if line.startswith("python -m ")]
  assert f"{install.replace(' -q ', ' ')} && {test}" in readme, (install, test)


def test_the_longest_test_files_named_first_exist():
  from tests.conftest import LONGEST_FIRST
  missing = [name for name in LONGEST_FIRST
             if not os.path.isfile(os.path.join(REPO, "tests", name))]
  assert missing == [], missing


def test_no_process_killed_by_name():
  paths = markdown_files() + _files("results/**/*.sh", "bench/**/*.sh", ".ci/*")
  offenders = []
  for path in paths:
    with open(path, encoding="utf-8", errors="replace") as f:
      for number, line in enumerate(f, 1):
        if re.search(r"\b(pkill|killall)\b", line):
          offenders.append(f"{os.path.relpath(path, REPO)}:{number}")
  assert offenders == [], "stop processes by their pid (kill -- -$(cat run.pid)), not by name"
