"""anp.evaluation.paired: two models compared image by image, and the report's section."""

import math

import numpy as np
import pytest

from anp.config import Config
from anp.evaluation import paired, report
from anp.evaluation.evaluate import EXAMPLES_FILE
from tests.helpers import results_script
from tests.test_report import fake_eval, write_run


def test_mcnemar_exact_matches_the_binomial_tail():
  assert paired.mcnemar_exact(0, 0) == 1.0
  assert paired.mcnemar_exact(5, 5) == 1.0  # capped
  assert paired.mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # all six on one side
  assert paired.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
  assert paired.mcnemar_exact(9, 1) == paired.mcnemar_exact(1, 9)
  # Against the normal approximation with continuity correction where it is good.
  b, c = 430, 370
  z = (abs(b - c) - 1) / math.sqrt(b + c)
  assert paired.mcnemar_exact(b, c) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.05)
  assert 0 < paired.mcnemar_exact(4000, 3000) < 1e-20  # large counts, no overflow


def test_compare_counts_the_discordant_examples():
  first = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
  second = np.array([1, 0, 0, 0, 1, 1, 0, 0], bool)
  r = paired.compare(first, second)
  assert (r["only_first"], r["only_second"], r["examples"]) == (3, 1, 8)
  assert r["first"] == 62.5 and r["second"] == 37.5 and r["diff"] == 25.0
  assert r["p"] == paired.mcnemar_exact(3, 1)
  with pytest.raises(ValueError, match="not the same test images"):
    paired.compare(first, second[:4])


def _verdicts(path, robust, clean=None):
  robust = np.asarray(robust, bool)
  clean = robust if clean is None else np.asarray(clean, bool)
  np.savez(path, clean=clean, robust=robust, attacks=np.array(["pgd"]), per_attack=robust[None])


def test_load_verdicts_names_each_attack_row(tmp_path):
  _verdicts(tmp_path / "v.npz", [1, 0, 1], clean=[1, 1, 1])
  v = paired.load_verdicts(str(tmp_path / "v.npz"))
  assert sorted(v) == ["clean", "pgd", "robust"] and v["pgd"].tolist() == [True, False, True]
  assert paired.load_verdicts(str(tmp_path / "none.npz")) is None


def test_report_pairs_each_row_with_at(tmp_path):
  rng = np.random.default_rng(0)
  at_robust = rng.random(2000) < 0.67
  better = at_robust | (rng.random(2000) < 0.1)  # keeps every image AT keeps, and more
  runs = []
  for folder, method, robust in [("at", "at", at_robust), ("anp", "anp", better),
                                 ("std", "standard", None)]:
    acc = 0.0 if robust is None else float(robust.mean())
    runs.append(write_run(tmp_path / folder, fake_eval(method, 0.99, acc, 0.02,
                                                       [20, 50, 800, 500])))
    if robust is not None:  # the standard row has no per-example file: left out
      _verdicts(tmp_path / folder / EXAMPLES_FILE, robust)
  report.run_report(Config(mode="report", runs=",".join(runs), report_dir=str(tmp_path / "o")))
  text = (tmp_path / "o" / "report.md").read_text()
  assert "## Paired with AT" in text
  assert ("| Model | Its worst case acc. | AT's worst case acc. | Difference (points) | Only the "
          "model keeps | Only AT keeps | p (exact McNemar) |") in text
  r = paired.compare(better, at_robust)
  assert r["only_second"] == 0 and r["p"] < 1e-10
  assert (f"| ANP | {r['first']:.2f} | {r['second']:.2f} | {r['diff']:+.2f} | "
          f"{r['only_first']} | 0 | {r['p']:.2g} |") in text
  assert "| Standard |" not in text.split("## Paired with AT")[1].split("##")[0]
  # Without AT's file there is nothing to pair with: no section.
  (tmp_path / "at" / EXAMPLES_FILE).unlink()
  report.run_report(Config(mode="report", runs=",".join(runs), report_dir=str(tmp_path / "o")))
  assert "Paired with" not in (tmp_path / "o" / "report.md").read_text()


def test_paper_tests_the_claim_image_by_image(tmp_path):
  """results/paper.py: ANP-VS against AT under each attack and the worst case, from their
  eval_examples.npz; nothing where one of the two has none."""
  paper = results_script("paper")
  rng = np.random.default_rng(1)
  pgd = {"at": rng.random(500) < 0.88, "anp_vs": rng.random(500) < 0.89}
  aa = {row: v & (rng.random(500) < 0.76) for row, v in pgd.items()}
  for row in ("at", "anp_vs"):
    result = fake_eval(row, 0.99, float((pgd[row] & aa[row]).mean()), 0.02, [20, 50, 800, 500])
    result["per_attack"] = {"pgd": float(pgd[row].mean()), "autoattack/apgd-ce": 0.8,
                            "autoattack": float(aa[row].mean())}
    write_run(tmp_path / row, result)
  assert paper.claim(str(tmp_path)) == ""  # no per-example verdicts yet
  for row in ("at", "anp_vs"):
    np.savez(tmp_path / row / EXAMPLES_FILE, clean=np.ones(500, bool), robust=pgd[row] & aa[row],
             attacks=np.array(["pgd", "autoattack/apgd-ce", "autoattack"]),
             per_attack=np.stack([pgd[row], pgd[row], aa[row]]))
  lines = paper.claim(str(tmp_path)).splitlines()
  assert lines[0] == ("| Attack | ANP-VS | AT | Difference (points) | Only ANP-VS keeps | "
                      "Only AT keeps | p (exact McNemar) |")
  assert [line.split(" | ")[0] for line in lines[2:]] == [
      "| PGD-40", "| AutoAttack", "| Worst case (each row's attacks)"]  # stages left out
  r = paired.compare(aa["anp_vs"], aa["at"])
  assert lines[3] == (f"| AutoAttack | {r['first']:.2f} | {r['second']:.2f} | {r['diff']:+.2f} | "
                      f"{r['only_first']} | {r['only_second']} | {r['p']:.2g} |")
