"""The paper's table: the README row of an eval.json dict (`table_cells`, `table_row`,
`markdown_table` with the TABLE_COLUMNS of the original README), the printed summary of
--mode=eval (`format_table`: accuracies and sparsity in percent), the model's name in the table
(`model_name`, from the method's `row_name`) and the Memory/Flops columns (`efficiency_columns`,
the original code's formulas of `anp.deploy.efficiency`). Used by `anp.evaluation.evaluate`
and `anp.evaluation.report`.
"""

import os

from anp.deploy import efficiency
from anp import methods
from anp.evaluation.labels import attack_label, with_fab_t, worst_case_attacks

# The white-box columns: PGD-40 (the paper's attack), AutoAttack (the field's standard) and the
# per-example worst case of every attack the evaluation ran; the black box transfers PGD-40.
WORST_CASE = "White box worst case acc."
TABLE_COLUMNS = ("Model", "Clean Acc.", "White box PGD-40 acc.", "White box AutoAttack acc.",
                 WORST_CASE, "Black box acc. (PGD-40 transfer)",
                 "White Box Vulnerability", "Black Box Vulnerability", "Memory", "Flops",
                 "Sparsity")
PAPER_PGD_STEPS = 40


def model_name(result):
  """The table's name of a result: its method's (below), '+ SAP' under that defence."""
  name = _method_name(result)
  defense = result.get("defense")
  return f"{name} + {defense['name'].upper()}" if defense else name


def _method_name(result):
  """The method's row name (`Method.row_name`: 'ANP-VS', 'Pretrained AT', 'HYDRA 90%', ...);
  the folder name of a model whose method is unknown (a SavedModel)."""
  method = methods.find(result.get("method"))
  if method is not None:
    return method.row_name(result)
  if result.get("method"):
    return str(result["method"])
  return os.path.basename(os.path.normpath(result.get("model_dir") or "model"))


def _fmt(value, spec, scale=1.0):
  return "n/a" if value is None else format(scale * value, spec)


def attack_accuracy(result, attack):
  """(accuracy, spec dict) of one attack of an eval.json dict, or (None, None) if not run.

  `attack` is 'pgd' or 'autoattack' ('autoattack-rand' counts as 'autoattack'); eval.json
  files written before per-attack specs were recorded give the evaluation's spec.
  """
  att = result.get("attack") or {}
  names = att.get("attacks") or [att.get("name")]
  found = [n for n in names if n == attack or (attack == "autoattack" and
                                               str(n).startswith("autoattack"))]
  if not found:
    return None, None
  name = found[0]
  per = result.get("per_attack") or {}
  acc = per.get(name, result.get("adv_acc") if len(names) == 1 else None)
  return acc, (att.get("specs") or {}).get(name, att)


def _attack_cell(result, attack):
  """A white-box cell: the attack's accuracy, its label added where it is not the header's
  (PGD with other than 40 steps, AutoAttack's rand version, a standard AutoAttack whose
  cascade had no FAB-T: eval.json files written before it joined)."""
  acc, spec = attack_accuracy(result, attack)
  cell = _fmt(acc, ".2f", 100)
  if acc is not None and attack == "pgd" and spec.get("steps") != PAPER_PGD_STEPS:
    cell += f" ({attack_label(spec)})"
  if acc is not None and attack == "autoattack" and spec.get("name") == "autoattack-rand":
    cell += " (rand)"
  elif acc is not None and attack == "autoattack" and not with_fab_t(spec):
    cell += " (no FAB-T)"
  return cell


def table_cells(result, name=None):
  """The cells of the README table row of an eval.json dict."""
  bb = result.get("blackbox") or {}
  return [name or model_name(result),
          _fmt(result.get("clean_acc"), ".2f", 100),
          _attack_cell(result, "pgd"),
          _attack_cell(result, "autoattack"),
          _fmt(result.get("adv_acc"), ".2f", 100),
          _fmt(bb.get("adv_acc"), ".2f", 100),
          _fmt(result.get("vulnerability"), ".3f"),
          _fmt(bb.get("vulnerability"), ".3f"),
          _fmt(result.get("memory_pct"), ".2f"),
          _fmt(result.get("flops_ratio"), ".2f"),
          _fmt(result.get("sparsity"), ".2f", 100)]


def columns(results=()):
  """TABLE_COLUMNS with the worst-case header naming its attacks (`worst_case_attacks`)."""
  named = worst_case_attacks(results)
  return tuple(f"{c} ({named})" if c == WORST_CASE and named else c for c in TABLE_COLUMNS)


def markdown_table(rows, results=()):
  """A markdown table with the README's columns; `rows` are lists of cells, `results` the
  eval.json dicts they come from (they name the worst case's attacks in its header)."""
  header = columns(results)
  lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def table_row(result, name=None):
  return "| " + " | ".join(table_cells(result, name)) + " |"


def format_table(result):
  """The printed summary: accuracies and sparsity in percent, as the paper's tables."""
  att = result["attack"]
  several = len(att.get("attacks", ())) > 1  # --attack=strongest or a list
  label = "worst case of " + "/".join(att["attacks"]) if several else attack_label(att)
  if att.get("restarts", 1) > 1:
    label += f" x{att['restarts']} restarts"
  bb = result.get("blackbox")
  rows = [("Clean acc. (%)", _fmt(result["clean_acc"], ".2f", 100)),
          (f"White box acc. (%), {label}", _fmt(result["adv_acc"], ".2f", 100))]
  if several:
    rows += [(f"  {k} acc. (%)", _fmt(v, ".2f", 100)) for k, v in result["per_attack"].items()]
  rows += [("Black box acc. (%)", _fmt(bb and bb["adv_acc"], ".2f", 100)),
           ("White box vulnerability", _fmt(result["vulnerability"], ".3f")),
           ("Black box vulnerability", _fmt(bb and bb["vulnerability"], ".3f")),
           ("Memory (%)", _fmt(result.get("memory_pct"), ".2f")),
           ("Flops (x)", _fmt(result.get("flops_ratio"), ".2f")),
           ("Sparsity (%)", _fmt(result["sparsity"], ".2f", 100)),
           ("Units kept", f"{result['n_active']} of {result['n_units']}"
            if result.get("n_units") else "n/a")]
  weights = result.get("weight_pruning")
  if weights:  # HYDRA's unstructured pruning: Memory/Flops/Sparsity above count weights
    rows.append(("Weights kept (HYDRA)", f"{weights['weights_kept']:,} of "
                 f"{weights['weights_total']:,}"))
  sanity = result.get("sanity")
  if sanity:
    rows.append(("Sanity checks", "passed" if sanity["passed"] else
                 "FAILED: " + ", ".join(sanity["failed"]) + " (possible gradient masking)"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def efficiency_columns(arch, n_active, unit_counts, n_classes):
  """{memory_pct, flops_ratio}: the paper's columns (`anp.deploy.efficiency`)."""
  cols = efficiency.paper_columns(arch, list(n_active), list(unit_counts), n_classes)
  return dict(memory_pct=float(cols["memory_pct"]), flops_ratio=float(cols["flops_ratio"]))
