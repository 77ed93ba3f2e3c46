"""The published numbers are the committed evaluations' numbers: the README's result table, the
SAP tables of docs/results.md and results/mnist/report/paper.md are checked against each row's
eval.json, so a re-evaluated row cannot leave a stale figure behind."""

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(REPO, "results", "mnist")

README_ROWS = {"Standard": "standard", "AT": "at", "Pretrained AT (AT from Standard)":
               "pretrained_at", "ANP (ANP-VS without VS)": "anp", "ANP-VS": "anp_vs",
               "TRADES (beta 1)": "trades", "ADMM (80% of weights)": "admm"}


def _read(*parts):
  with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
    return f.read()


def _eval(run):
  with open(os.path.join(MNIST, run, "eval.json"), encoding="utf-8") as f:
    return json.load(f)


def table(text, first_header):
  """The rows (lists of cell strings) of every markdown table whose first header cell is given."""
  rows, inside = [], False
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if not inside:
      inside = line.startswith("|") and cells[0] == first_header
    elif not line.startswith("|"):
      inside = False
    elif not set(cells[0]) <= set("-: "):
      rows.append(cells)
  return rows


def pct(cell):
  """'**67.13** (no FAB-T)' -> 67.13."""
  return float(re.match(r"\**([0-9.]+)", cell).group(1))


def _close(cell, fraction):
  return pct(cell) == pytest.approx(100 * fraction, abs=0.0051)


def test_table_parser_reads_cells():
  text = ("intro\n| A | B |\n| --- | --- |\n| x | **1.50** (no FAB-T) |\n\nafter | y |\n"
          "| C | D |\n| --- | --- |\n| z | 1 |\n| A | B |\n| --- | --- |\n| w | 2 |\n")
  assert table(text, "A") == [["x", "**1.50** (no FAB-T)"], ["w", "2"]]
  assert pct("**1.50** (no FAB-T)") == 1.5
  assert not _close("1.50", 0.016)


def test_readme_result_table_is_the_committed_evaluations():
  readme = _read("README.md")
  result = readme[readme.index("## Result"):readme.index("## Install")]
  rows = table(result, "Model")
  assert [r[0] for r in rows] == list(README_ROWS)
  for name, clean, _, pgd, autoattack, sparsity in rows:
    e = _eval(README_ROWS[name])
    assert _close(clean, e["clean_acc"]), name
    assert _close(pgd, e["per_attack"]["pgd"]), name
    assert _close(autoattack, e["per_attack"]["autoattack"]), name
    assert ("no FAB-T" in autoattack) == ("autoattack/fab-t" not in e["per_attack"]), name
    assert pct(sparsity) == pytest.approx(e.get("sparsity_pct") or 0.0, abs=0.0051), name
    assert sparsity.endswith(f" of {e['sparsity_of']}") == bool(pct(sparsity)), name


def test_sap_tables_are_the_committed_evaluations():
  rows = table(_read("docs", "results.md"), "Model, eps")
  assert len(rows) >= 6
  for name, clean, pgd, apgd_ce, autoattack, worst in rows:
    base, eps = name.split(", ")
    run = base.replace(" + SAP", "").lower().replace(" ", "_") + "_eps" + eps
    run += "_sap" if "+ SAP" in base else ""
    e = _eval(os.path.join("sap", run))
    attack = "autoattack-rand" if "+ SAP" in base else "autoattack"
    assert _close(clean, e["clean_acc"]), name
    assert _close(pgd, e["per_attack"]["pgd"]), name
    assert _close(apgd_ce, e["per_attack"][attack + "/apgd-ce"]), name
    assert _close(autoattack, e["per_attack"][attack]), name
    assert _close(worst, e["adv_acc"]), name


def test_paper_md_is_rendered_from_the_committed_evaluations():
  out = subprocess.run([sys.executable, os.path.join("results", "paper.py"),
                        os.path.join("results", "mnist")],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
  assert out == _read("results", "mnist", "report", "paper.md")
