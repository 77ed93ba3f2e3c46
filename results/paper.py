"""The reproduction's rows beside the paper's, column by column, and whether each is met.

  python results/paper.py results/mnist [--paper_table=mnist] [--rows=standard,at,anp_vs] [--json]

Reads `<dir>/<row>/eval.json` of each row (a row without one is listed as not evaluated) and
prints a title, a legend and a markdown table: per model the paper's line, ours, and a line saying per column
whether ours is within TOLERANCE of the paper's number ("met"), else by how much it is above
or below. The white-box column is PGD-40, the paper's attack (`per_attack['pgd']`); AutoAttack
(`per_attack['autoattack']`, `--attack=pgd,autoattack`) and the worst case of all our attacks
have no paper counterpart and are printed beside it. A second table says how much PGD-40 and
the former worst case (`<row>/eval_strongest.json`: PGD-40, APGD-CE, APGD-DLR and CW, 40 steps
each, where kept; it stands in for a missing eval.json) overstate the robust accuracy under
AutoAttack. Where ANP-VS and AT both have eval_examples.npz, a third table tests the paper's
claim image by image: ANP-VS against AT under each attack, with McNemar's exact test
(`anp.evaluation.paired`). With --json: one JSON object per row instead.

The paper's numbers are Table 1 of Madaan et al. (ICML 2020), MNIST / LeNet5-Caffe and
CIFAR-10 / VGG-16, as the original README lists them (means over five runs; it gives no
spread, so the tolerances below are this project's convention, not a confidence interval).
ANP without VS has no row there. --paper_table picks the table (default: the name of RESULTS_DIR
when it is one of them, else mnist); --rows defaults to every row of that table.
"""

import json
import os
import sys
import textwrap

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from anp.evaluation import labels, paired  # noqa: E402  (no TensorFlow)

flags.DEFINE_list("rows", None, "Run folders under DIR (default: the table's rows).")
flags.DEFINE_enum("paper_table", None, ["mnist", "cifar10"],
                  "The paper's table to compare with (default: RESULTS_DIR's name if it is one).")
flags.DEFINE_bool("json", False, "One JSON object per row instead of the markdown table.")
FLAGS = flags.FLAGS

COLUMNS = ("clean", "white_box", "black_box", "wb_vuln", "bb_vuln", "memory", "flops",
           "sparsity")
HEADER = ("Clean", "White box (PGD-40)", "Black box", "WB vuln.", "BB vuln.", "Memory",
          "Flops", "Sparsity")
# Within how much of the paper's number a column counts as met: points of accuracy, Memory and
# Sparsity; a fraction of the paper's number for the vulnerabilities (the original printed
# those of its last test batch of 64 images) and the Flops ratio.
TOLERANCE = dict(clean=1.5, white_box=1.5, black_box=1.5, wb_vuln=0.10, bb_vuln=0.10,
                 memory=1.0, flops=0.10, sparsity=1.5)
RELATIVE = {"wb_vuln", "bb_vuln", "flops"}
PAPER_MNIST = {
    "standard": ("Standard", (99.29, 0.00, 8.02, 0.129, 0.113, 100.0, 1.00, 0.00)),
    "bp": ("BP", (99.34, 0.00, 12.99, 0.091, 0.078, 4.14, 9.68, 83.48)),
    "at": ("AT", (99.14, 88.03, 94.18, 0.045, 0.040, 100.0, 1.00, 0.00)),
    "anp": ("ANP", None),
    "anp_vs": ("ANP-VS", (99.05, 91.31, 95.43, 0.017, 0.015, 6.81, 10.57, 84.16)),
    # The paper's baselines beyond the five rows above. ADMM's Sparsity counts weights (80%
    # weight sparsity), where the other rows count units; AT BNN's Memory counts its two
    # parameters per weight (mean and sigma).
    "pretrained_at": ("Pretrained AT", (99.18, 88.26, 94.49, 0.412, 0.381, 100.0, 1.00, 0.00)),
    "trades": ("TRADES", (99.07, 89.67, 95.04, 0.037, 0.033, 100.0, 1.00, 0.00)),
    "admm": ("ADMM", (99.01, 88.47, 94.61, 0.041, 0.038, 100.0, 1.00, 80.00)),
    "at_bnn": ("AT BNN", (99.16, 88.44, 94.87, 0.364, 0.199, 200.0, 0.50, 0.00)),
}
PAPER_CIFAR10 = {
    "standard": ("Standard", (92.76, 13.79, 41.65, 0.077, 0.065, 100.0, 1.00, 0.00)),
    "bp": ("BP", (92.91, 14.30, 42.88, 0.037, 0.033, 12.41, 2.34, 75.92)),
    "at": ("AT", (87.50, 49.85, 63.70, 0.050, 0.047, 100.0, 1.00, 0.00)),
    "anp_vs": ("ANP-VS", (88.18, 56.21, 71.44, 0.019, 0.016, 12.27, 2.41, 76.53)),
    "pretrained_at": ("Pretrained AT", (87.50, 52.25, 66.10, 0.041, 0.036, 100.0, 1.00, 0.00)),
    "trades": ("TRADES", (80.33, 52.08, 64.80, 0.045, 0.042, 100.0, 1.00, 0.00)),
    "admm": ("ADMM", (78.15, 47.37, 62.15, 0.034, 0.030, 100.0, 1.00, 75.00)),
    "at_bnn": ("AT BNN", (86.69, 51.87, 64.92, 0.267, 0.238, 200.0, 0.50, 0.00)),
}
PAPER = {"mnist": PAPER_MNIST, "cifar10": PAPER_CIFAR10}
_FORMAT = dict(wb_vuln=".3f", bb_vuln=".3f")
DENSE_BY_PAPER = "paper: dense"


def pct(v):
  return None if v is None else 100.0 * v


def ours(result):
  """The paper's columns of an eval.json dict, in the paper's units (None where missing),
  and the worst case of our white-box attacks (percent)."""
  bb = result.get("blackbox") or {}
  per_attack = result.get("per_attack") or {}
  pgd = per_attack.get("pgd")
  if pgd is None and (result.get("attack") or {}).get("name") == "pgd":
    pgd = result.get("adv_acc")
  values = (pct(result.get("clean_acc")), pct(pgd), pct(bb.get("adv_acc")),
            result.get("vulnerability"), bb.get("vulnerability"), result.get("memory_pct"),
            result.get("flops_ratio"), pct(result.get("sparsity")))
  return dict(zip(COLUMNS, values)), pct(result.get("adv_acc"))


def verdict(column, paper, value):
  """'met', or how far above / below the paper's number `value` is (points, or percent of the
  paper's number for the RELATIVE columns); None if either is missing."""
  if paper is None or value is None:
    return None
  diff = value - paper
  allowed = TOLERANCE[column] * (abs(paper) if column in RELATIVE else 1.0)
  if abs(diff) <= allowed + 1e-9:
    return "met"
  side = "above" if diff > 0 else "below"
  if column in RELATIVE:
    return f"{100 * abs(diff) / abs(paper):.1f}% {side}"
  return f"{abs(diff):.2f} {side}"


def compare(run_dir, row, dataset="mnist"):
  """The paper's and our numbers of one row, and the verdict per column."""
  name, paper = PAPER[dataset][row]
  path = os.path.join(run_dir, row, "eval.json")
  out = dict(row=row, model=name, paper=dict(zip(COLUMNS, paper)) if paper else None,
             ours=None, worst_case=None, autoattack=None, autoattack_fab_t=None,
             former_worst_case=None, verdict=None)
  former = os.path.join(run_dir, row, "eval_strongest.json")
  if os.path.isfile(former):
    with open(former) as f:
      out["former_worst_case"] = pct(json.load(f).get("adv_acc"))
  if not os.path.isfile(path):  # not yet evaluated with AutoAttack: the former evaluation
    path = former
  if os.path.isfile(path):
    with open(path) as f:
      result = json.load(f)
    out["ours"], out["worst_case"] = ours(result)
    attack = result.get("attack") or {}
    out["attacks"] = [labels.per_attack_label(result, a)
                      for a in attack.get("attacks") or [attack.get("name") or "pgd"]]
    out["autoattack"] = pct((result.get("per_attack") or {}).get("autoattack"))
    out["autoattack_fab_t"] = labels.with_fab_t(labels.specs(result).get("autoattack") or {})
    if paper:
      out["verdict"] = {c: verdict(c, out["paper"][c], out["ours"][c]) for c in COLUMNS}
      if result.get("sparsity_of") == "weights" and out["paper"]["memory"] == 100.0:
        # The paper gives weight pruning the dense network's Memory and Flops (its zeros are
        # scattered); ours count the non-zero weights: not the same quantity.
        out["verdict"].update(memory=DENSE_BY_PAPER, flops=DENSE_BY_PAPER)
      if result.get("bnn"):  # ours count a prediction's passes; the paper's count is unstated
        out["verdict"]["flops"] = f"ours: {result['bnn']['ensemble']} samples"
  return out


def worst_case_header(rows):
  """'Worst case (A, B)' naming the attacks when every evaluated row ran the same ones."""
  lists = {tuple(r.get("attacks") or ()) for r in rows if r["ours"] is not None}
  if len(lists) == 1 and next(iter(lists)):
    return "Worst case (" + ", ".join(next(iter(lists))) + ")"
  return "Worst case (each row's attacks)"


def _cell(column, value):
  return "n/a" if value is None else format(value, _FORMAT.get(column, ".2f"))


def _aa_cell(row):
  """AutoAttack's cell; '(no FAB-T)' where its cascade ran without FAB-T (eval.json files
  written before FAB-T joined it)."""
  cell = _cell("", row["autoattack"])
  return cell + (" (no FAB-T)" if row["autoattack"] is not None
                 and not row.get("autoattack_fab_t") else "")


def overstatement(rows):
  """Per evaluated row: PGD-40, the former worst case and AutoAttack, and by how many points
  the first two overstate AutoAttack's robust accuracy."""
  lines = ["| Model | White box (PGD-40) | Former worst case (PGD-40, APGD-CE-40, APGD-DLR-40, "
           "CW-40) | AutoAttack | PGD-40 overstates by | Former worst case overstates by |",
           "| --- " * 6 + "|"]
  for r in rows:
    if r["ours"] is None or r["autoattack"] is None:
      continue
    aa, pgd, former = r["autoattack"], r["ours"]["white_box"], r["former_worst_case"]
    gap = lambda v: "n/a" if v is None else f"{v - aa:.2f}"  # noqa: E731
    lines.append(f"| {r['model']} | {_cell('', pgd)} | {_cell('', former)} | {_aa_cell(r)} | "
                 f"{gap(pgd)} | {gap(former)} |")
  return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def claim(run_dir, first="anp_vs", second="at"):
  """The paper's claim, ANP-VS more robust than AT, image by image: a markdown table, a line per
  white-box attack both rows ran and one for their worst cases, from their eval_examples.npz;
  "" where one of them has none."""
  runs = [os.path.join(run_dir, row) for row in (first, second)]
  verdicts = [paired.load_verdicts(os.path.join(r, paired.EXAMPLES_FILE)) for r in runs]
  if None in verdicts or verdicts[0]["robust"].shape != verdicts[1]["robust"].shape:
    return ""
  with open(os.path.join(runs[0], "eval.json")) as f:
    result = json.load(f)
  names = [n for n in result.get("per_attack") or {} if "/" not in n and n in verdicts[1]]
  a, b = (PAPER_MNIST[row][0] for row in (first, second))
  lines = [f"| Attack | {a} | {b} | Difference (points) | Only {a} keeps | Only {b} keeps | "
           "p (exact McNemar) |", "| --- " * 7 + "|"]
  for name, label in [(n, labels.per_attack_label(result, n)) for n in names] + [
      ("robust", "Worst case (each row's attacks)")]:
    lines.append(paired.table_line(label, verdicts[0][name], verdicts[1][name]))
  return "\n".join(lines) + "\n"


def markdown(rows):
  lines = ["| Model | " + " | ".join(HEADER) + f" | AutoAttack | {worst_case_header(rows)} |",
           "| --- " * (len(HEADER) + 3) + "|"]
  for r in rows:
    if r["paper"]:
      lines.append(f"| {r['model']}, paper | "
                   + " | ".join(_cell(c, r["paper"][c]) for c in COLUMNS) + " | | |")
    if r["ours"] is None:
      lines.append(f"| {r['model']}, ours | not evaluated |" + " |" * (len(HEADER) + 1))
      continue
    lines.append(f"| {r['model']}, ours | " + " | ".join(_cell(c, r["ours"][c]) for c in COLUMNS)
                 + f" | {_aa_cell(r)} | {_cell('worst_case', r['worst_case'])} |")
    if r["verdict"]:
      lines.append(f"| {r['model']}: met? | "
                   + " | ".join(r["verdict"][c] or "n/a" for c in COLUMNS) + " | | |")
  table = "\n".join(lines) + "\n"
  extra = overstatement(rows)
  return table + ("\nRobust accuracy (%) under AutoAttack, and how much the other white-box "
                  "numbers overstate it:\n\n" + extra if extra else "")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python results/paper.py RESULTS_DIR (e.g. results/mnist)")
  folder = os.path.basename(os.path.normpath(argv[1]))
  dataset = FLAGS.paper_table or (folder if folder in PAPER else "mnist")
  table = PAPER[dataset]
  unknown = [r for r in FLAGS.rows or () if r not in table]
  if unknown:
    raise app.UsageError(f"--rows: expected some of {', '.join(table)}. "
                         f"Received: {', '.join(unknown)}")
  rows = [compare(argv[1], row, dataset) for row in FLAGS.rows or table]
  if FLAGS.json:
    for r in rows:
      print(json.dumps(r))
  else:
    legend = textwrap.fill(
          f"Made by `python results/paper.py {argv[1]} > "
          f"{os.path.join(argv[1], 'report', 'paper.md')}` from each row's eval.json. Accuracies "
          "in %, Memory in % of the full network, Flops as the speed-up ratio, Sparsity in % of "
          "units pruned (ADMM: of weights). White box (PGD-40): 40 steps of PGD, the paper's "
          "attack; Black box: PGD-40 transferred from the row's source model; AutoAttack: "
          "the standard cascade (cells marked (no FAB-T) ran it without FAB-T); Worst case: an "
          "example counts as robust only if every listed attack fails. 'met?': within 1.5 points "
          "of the paper's accuracy or Sparsity, 1 point of its Memory, 10% of its vulnerability "
          "or Flops; 'paper: dense': the paper gives a weight-pruned row the dense network's "
          "Memory and Flops, ours count its non-zero weights; 'ours: N samples': our Flops count "
          "the N forward passes of one AT BNN prediction, the paper does not say what its x0.50 "
          "counts. How each row was trained (commands, epochs, wall time): report.md beside this "
          "file.",
          width=100, break_on_hyphens=False)
    title = "MNIST" if dataset == "mnist" else "CIFAR-10"
    print(f"# {title}: the reproduction beside the paper's table\n\n{legend}\n")
    print(markdown(rows), end="")
    tested = claim(argv[1])
    if tested:
      print("\nThe paper's claim, ANP-VS more robust than AT, image by image: the robust "
            "accuracy (%) of each on the same test images, the images only one of them keeps, "
            "and McNemar's exact p-value of the difference:\n")
      print(tested, end="")


if __name__ == "__main__":
  app.run(main)
