"""Attack names (anp/evaluation/labels.py), read by tables, reports, model cards and paper.py."""

import os
import subprocess
import sys

from anp.evaluation import labels

PGD = dict(name="pgd", steps=40, restarts=1, step_size=0.01)
AA = dict(name="autoattack", steps=100, queries=5000, stages=["apgd-ce", "apgd-t", "square"])


def result(*specs, per_attack=None):
  return dict(attack=dict(attacks=[s["name"] for s in specs],
                          specs={s["name"]: s for s in specs}),
              per_attack=per_attack or {})


def test_short_labels():
  assert labels.attack_label(PGD) == "PGD-40"
  assert labels.attack_label(dict(name="apgd-ce", steps=100)) == "APGD-CE-100"
  assert labels.attack_label(dict(name="square", queries=5000)) == "Square-5000"
  assert labels.attack_label(AA) == "AutoAttack without FAB-T"
  assert labels.attack_label(dict(AA, stages=["apgd-ce", "apgd-t", "fab-t", "square"])) == (
      "AutoAttack")
  assert labels.attack_label(dict(name="autoattack")) == "AutoAttack"  # no stages recorded
  assert labels.attack_label(dict(name="autoattack-rand", stages=["apgd-ce"])) == (
      "AutoAttack-rand")


def test_per_attack_keys_and_the_worst_case():
  r = result(PGD, AA)
  assert labels.per_attack_label(r, "pgd") == "PGD-40"
  assert labels.per_attack_label(r, "autoattack/apgd-t") == "AutoAttack without FAB-T to APGD-T-100"
  assert labels.per_attack_label(r, "autoattack/square") == (
      "AutoAttack without FAB-T to Square-5000")
  assert labels.worst_case_attacks([r, r]) == "PGD-40, AutoAttack without FAB-T"
  assert labels.worst_case_attacks([r, result(PGD)]) == "each row's attacks"
  assert labels.worst_case_attacks([]) == ""
  # An evaluation that recorded no per-attack specs: its one attack dict stands for all.
  old = dict(attack=dict(name="pgd", steps=20, attacks=["pgd", "cw"]))
  assert labels.specs(old)["cw"]["name"] == "cw"
  assert [labels.per_attack_label(old, a) for a in ("pgd", "cw")] == ["PGD-20", "CW-20"]


def test_details_of_model_cards():
  assert labels.attack_details(PGD) == "1 restart, step 0.01"
  assert labels.attack_details(dict(PGD, restarts=5, eot_samples=20)) == (
      "5 restarts, step 0.01, 20 EOT samples")
  assert labels.attack_details(AA) == (
      "APGD-CE, APGD-T, Square; 100 iterations, Square 5000 queries")
  assert labels.attack_details(dict(name="square", queries=100)) == ""


def test_results_paper_reads_them_without_tensorflow():
  code = ("import runpy, sys; sys.argv = ['paper.py', '--help']\n"
          "try:\n  runpy.run_path('results/paper.py', run_name='__main__')\n"
          "except SystemExit:\n  pass\n"
          "assert 'tensorflow' not in sys.modules, 'paper.py imported TensorFlow'")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=repo)
