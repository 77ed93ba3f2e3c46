"""--mode=report: the paper's table and figures from the eval.json of several runs.

`python main.py --mode=report --runs=RUN1,RUN2,... --report_dir=OUT` reads
`<run>/eval.json` (written by --mode=eval) of every run and writes into OUT:

* `report.md`: one markdown table, a row per run, with the columns and units of the original
  README (accuracies %, vulnerabilities, Memory %, Flops x, Sparsity %), then what each row
  was measured with (attack, examples, black-box source, warnings, sanity checks), a second
  table of robust accuracy per attack when runs were evaluated with several attacks
  (`--attack=strongest`), each row paired image by image with AT's (`anp.evaluation.paired`,
  where the rows have eval_examples.npz), how each row was trained (`anp.runs.provenance`:
  the commands, the epochs, the wall time) and the figures;
* `units_per_layer.png`: units kept per mask site, grouped bars per run (one panel per
  architecture), the full network's units as outlines;
* `vulnerability_distribution.png`: per run, the histogram of the per-unit vulnerability
  |f(x) - f(x_adv)| (averaged over examples) of the last latent layer, the paper's
  qualitative figure;
* `layer_vulnerability.png`: white-box vulnerability per latent layer, a line per run.
"""

import json
import os

import numpy as np

from anp.atomic import write_whole
from anp.errors import UserError
from anp.evaluation.evaluate import output_dir
from anp.evaluation.labels import per_attack_label, worst_case_attacks
from anp.evaluation.paired import EXAMPLES_FILE, load_verdicts, paired_table
from anp.evaluation.tables import markdown_table, model_name, table_cells
from anp.runs.provenance import provenance_section

REQUIRED = ("clean_acc", "adv_acc")
UNITS_PNG = "units_per_layer.png"
VULN_PNG = "vulnerability_distribution.png"
LAYER_PNG = "layer_vulnerability.png"
# A unit's vulnerability below this counts as zero in the distribution figure: a unit whose
# output the next layer's mask drops (measured: at most 1e-6) or that is dead.
NEAR_ZERO = 1e-4
PAIRED_WITH = "AT"  # the row every other row is compared with, image by image


class ReportError(UserError):
  """A run of --runs that cannot be reported; the message names it."""


def parse_runs(runs):
  """The run directories of a --runs value (comma-separated)."""
  out = [r.strip() for r in (runs or "").split(",") if r.strip()]
  if not out:
    raise ReportError("Flag --runs: expected comma-separated run directories evaluated by "
                      f"--mode=eval. Received: {runs!r}")
  return out


def load_eval(run):
  """The eval.json dict of a run directory (or checkpoint prefix)."""
  if not (os.path.isdir(run) or os.path.exists(run + ".index")):
    raise ReportError(f"Flag --runs: run {run!r} does not exist.")
  path = os.path.join(output_dir(run), "eval.json")
  if not os.path.isfile(path):
    raise ReportError(f"Flag --runs: run {run!r} has no eval.json; evaluate it first: "
                      f"python main.py --mode=eval --model_dir={run}")
  try:
    with open(path) as f:
      result = json.load(f)
  except (OSError, ValueError) as e:
    raise ReportError(f"Flag --runs: run {run!r}: cannot read {path}: {e}") from e
  missing = [k for k in REQUIRED if k not in result] if isinstance(result, dict) else REQUIRED
  if missing:
    raise ReportError(f"Flag --runs: run {run!r}: {path} lacks {', '.join(missing)}; "
                      "re-run --mode=eval.")
  return result


def row_names(results, runs):
  """Display names: the method ('ANP-VS'), with the run's folder name when ambiguous."""
  names = [model_name(dict(r, model_dir=run)) for r, run in zip(results, runs)]
  return [f"{n} ({os.path.basename(os.path.normpath(run))})" if names.count(n) > 1 else n
          for n, run in zip(names, runs)]


def site_labels(n_sites, architecture=None):
  """Names of the mask sites: conv layers, then the inputs of the dense layers."""
  if architecture == "lenet" or n_sites == 4:
    return ["conv1", "conv2", "fc1 in", "fc2 in"][:n_sites]
  n_conv = max(n_sites - 2, 0)
  return [f"conv{i + 1}" for i in range(n_conv)] + ["fc1 in", "fc2 in"][:n_sites - n_conv]


def _color(names, name):
  """The same colour for a run in every figure."""
  return f"C{list(names).index(name) % 10}"


def _figure(width, height):
  from matplotlib.figure import Figure  # no pyplot: no global backend or state
  # The constrained layout keeps the suptitle clear of the first panel's title.
  return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_units(results, names, path):
  """Grouped bars of units kept per mask site, one panel per network shape: a PNG at path;
  returns the figure."""
  groups = {}
  for result, name in zip(results, names):
    if result.get("n_units") and result.get("n_active"):
      groups.setdefault(tuple(result["n_units"]), []).append((name, result))
  fig = _figure(max(6.0, 0.9 * max((len(k) for k in groups), default=4) + 3),
                3.2 * max(1, len(groups)))
  if not groups:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, "no unit counts in these eval.json files", ha="center", va="center")
    ax.set_axis_off()
  for row, (units, members) in enumerate(groups.items()):
    ax = fig.add_subplot(len(groups), 1, row + 1)
    idx = np.arange(len(units))
    width = 0.8 / len(members)
    ax.bar(idx, units, width=0.9, fill=False, edgecolor="0.6", label="full network")
    for j, (name, result) in enumerate(members):
      ax.bar(idx - 0.4 + width * (j + 0.5), result["n_active"], width=width, label=name,
             color=_color(names, name))
    ax.set_xticks(idx)
    ax.set_xticklabels(site_labels(len(units), members[0][1].get("architecture")),
                       rotation=45 if len(units) > 6 else 0)
    ax.set_yscale("log")
    ax.set_ylabel("units kept")
    ax.legend(fontsize="small")
  fig.suptitle("Units kept per layer")
  fig.savefig(path, format="png")
  return fig


def plot_vulnerability_distribution(results, names, path, bins=40):
  """Per run, the histogram of the per-unit vulnerability of the stored layer: a PNG at path;
  returns the figure."""
  members = [(n, r) for n, r in zip(names, results)
             if isinstance(r.get("unit_vulnerability"), dict)
             and r["unit_vulnerability"].get("values")]
  fig = _figure(6.5, 2.4 * max(1, len(members)) + 0.6)
  if not members:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, "no per-unit vulnerability in these eval.json files", ha="center",
            va="center")
    ax.set_axis_off()
  else:
    top = max(max(r["unit_vulnerability"]["values"]) for _, r in members)
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    first = None
    for i, (name, result) in enumerate(members):
      values = np.asarray(result["unit_vulnerability"]["values"], dtype=np.float64)
      ax = fig.add_subplot(len(members), 1, i + 1, sharex=first)
      first = first or ax
      ax.hist(values, bins=edges, color=_color(names, name))
      ax.set_title(f"{name}: mean {values.mean():.3f}, {int((values < NEAR_ZERO).sum())} of "
                   f"{len(values)} units below {NEAR_ZERO:g} (pruned or dead)", fontsize="small")
      ax.set_ylabel("units")
    ax.set_xlabel("vulnerability |f(x) - f(x_adv)| of a unit (last latent layer)")
  fig.suptitle("Distribution of feature vulnerability")
  fig.savefig(path, format="png")
  return fig


def plot_layer_vulnerability(results, names, path):
  """Each run's white-box vulnerability per latent layer: a PNG at path; returns the figure."""
  from matplotlib.ticker import MaxNLocator
  fig = _figure(6.5, 3.5)
  ax = fig.add_subplot(1, 1, 1)
  drawn = 0
  for name, result in zip(names, results):
    values = result.get("layer_vulnerability")
    if values:
      ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=name,
              color=_color(names, name))
      drawn += 1
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("latent layer")
  ax.set_ylabel("white-box vulnerability")
  if drawn:
    ax.legend(fontsize="small")
  fig.savefig(path, format="png")
  return fig


def _describe(name, run, result):
  att = result.get("attack") or {}
  what = att.get("name", "?")
  if len(att.get("attacks", [])) > 1:
    what = "worst case of " + "/".join(att.get("attacks", []))
  parts = [f"{result.get('dataset', '?')}",
           f"white box {what} eps={att.get('eps')} step={att.get('step_size')} "
           f"steps={att.get('steps')} restarts={att.get('restarts', 1)}"
           + (f" EOT={att['eot_samples']}" if att.get("eot_samples", 1) > 1 else ""),
           f"{result.get('examples', '?')} test examples"]
  bnn = result.get("bnn")
  if bnn:
    parts.append(f"predictions: mean softmax of {bnn['ensemble']} weight samples; "
                 f"{bnn['parameters']['total']:,} parameters (means and log-sigmas, "
                 f"{bnn['parameters']['mean']:,} in the mean network)")
  per = result.get("per_attack") or {}
  if len(per) > 1:
    parts.append("per attack " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in per.items()))
  weights = result.get("weight_pruning")
  if weights:  # HYDRA's unstructured pruning: the columns count weights, not units
    parts.append(f"Memory/Flops/Sparsity count zeroed weights ({weights['weights_kept']:,} of "
                 f"{weights['weights_total']:,} kept), not units")
  bb = result.get("blackbox")
  parts.append(f"black box from `{bb['source_model_dir']}`" if bb else "no black-box source")
  sanity = result.get("sanity")
  if sanity:
    parts.append("sanity checks passed" if sanity.get("passed") else
                 "**sanity checks failed: " + ", ".join(sanity.get("failed", []))
                 + " (possible gradient masking)**")
  line = f"- **{name}** (`{run}`): " + "; ".join(parts) + "."
  for w in result.get("warnings") or []:
    line += f"\n  - warning: {w}"
  return line


def attack_table(results, names):
  """Robust accuracy (%) per attack and the per-example worst case; '' without such runs."""
  attacks, labels = [], {}
  for r in results:
    for a in r.get("per_attack") or {}:
      if a not in attacks:
        attacks.append(a)
        labels[a] = per_attack_label(r, a)
  if not any(len(r.get("per_attack") or {}) > 1 for r in results):
    return ""
  header = ["Model"] + [labels[a] for a in attacks] + [f"Worst case ({worst_case_attacks(results)})"]
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]

  def cell(r, a):  # a budget other than the header's is named in the cell
    per = r.get("per_attack") or {}
    if a not in per:
      return ""
    own = per_attack_label(r, a)
    return f"{100 * per[a]:.2f}" + ("" if own == labels[a] else f" ({own})")

  for r, name in zip(results, names):
    cells = [cell(r, a) for a in attacks]
    lines.append("| " + " | ".join([name] + cells + [f"{100 * r['adv_acc']:.2f}"]) + " |")
  return "\n".join(lines) + "\n"


def run_report(cfg):
  """Writes report.md and the PNG figures into --report_dir; returns their paths."""
  runs = parse_runs(cfg.runs)
  if not cfg.report_dir:
    raise ReportError("Flag --report_dir: expected the folder to write report.md into.")
  results = [load_eval(run) for run in runs]
  spaces = [(r.get("dataset"), r.get("preprocess")) for r in results]
  if len(set(spaces)) > 1:
    found = ", ".join(f"{run}: {d}/{p}" for run, (d, p) in zip(runs, spaces))
    raise ReportError("Flag --runs: one table compares runs of one data set and input space; "
                      f"these mix them ({found}). Report each group separately.")
  names = row_names(results, runs)
  os.makedirs(cfg.report_dir, exist_ok=True)
  plots = {UNITS_PNG: plot_units, VULN_PNG: plot_vulnerability_distribution,
           LAYER_PNG: plot_layer_vulnerability}
  paths = []
  for filename, plot in plots.items():
    paths.append(os.path.join(cfg.report_dir, filename))
    plot(results, names, paths[-1])
  table = markdown_table([table_cells(r, n) for r, n in zip(results, names)], results)
  dataset, preprocess = spaces[0]
  lines = ["# Evaluation report", "", f"Data set: **{dataset}**, input space: {preprocess}.", "",
           "Accuracies in %, vulnerability = mean |f(x) - f(x_adv)| of the latent features, "
           "Memory in % of the full network, Flops as the speed-up ratio, Sparsity in % of "
           "units pruned (the original README's columns).", "", table,
           "## Runs", ""]
  per_attack = attack_table(results, names)
  if per_attack:
    lines[-2:-2] = ["## Robust accuracy per attack", "",
                    "White-box accuracy (%) under each attack of `--attack`; the worst case "
                    "counts an example as robust only if every attack fails on it. 'AutoAttack "
                    "to X' is the accuracy after AutoAttack's cascade up to its attack X.", "",
                    per_attack]
  verdicts = [load_verdicts(os.path.join(output_dir(run), EXAMPLES_FILE)) for run in runs]
  paired = paired_table(names, verdicts, PAIRED_WITH)
  if paired:
    lines[-2:-2] = [f"## Paired with {PAIRED_WITH}", "",
                    f"White-box worst case of each row beside {PAIRED_WITH}'s on the same test "
                    "images (eval_examples.npz): the images only one of the two keeps, and "
                    "McNemar's exact test of their difference (`anp.evaluation.paired`). Rows "
                    "without eval_examples.npz are left out.", "", paired]
  lines += [_describe(n, run, r) for n, run, r in zip(names, runs, results)]
  lines += ["", *provenance_section(names, runs, results)]
  lines += ["## Figures", "", f"![Units kept per layer]({UNITS_PNG})", "",
            f"![Distribution of feature vulnerability]({VULN_PNG})", "",
            f"![Vulnerability per layer]({LAYER_PNG})", ""]
  report = os.path.join(cfg.report_dir, "report.md")
  write_whole(report, "\n".join(lines))
  print(f"Data set: {dataset}, input space: {preprocess}")
  print(table, end="")
  print(f"Wrote {report} and {', '.join(os.path.basename(p) for p in paths)}.")
  return dict(report=report, plots=paths, table=table)
