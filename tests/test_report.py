"""--mode=report: the markdown table and the figures from eval.json files."""

import json
import os

import numpy as np
import pytest

from anp.evaluation import report
from anp.config import Config, run_config_path
from anp.errors import UserError
from tests.helpers import results_script

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_eval(method, clean, adv, vul, n_active, *, blackbox=None, memory=None, flops=None,
              seed=0):
  units = [20, 50, 800, 500]
  rng = np.random.default_rng(seed)
  values = rng.exponential(vul, 500)
  values[: 500 - n_active[-1]] = 0.0
  return dict(
      clean_acc=clean, adv_acc=adv, vulnerability=vul, layer_vulnerability=[vul, vul, vul],
      unit_vulnerability=dict(layer=2, values=values.tolist()), examples=1000,
      per_attack={"pgd": adv}, method=method, dataset="mnist", architecture="lenet",
      preprocess="pixel", attack=dict(name="pgd", eps=0.3, step_size=0.01, steps=40,
                                      restarts=1, eot_samples=1),
      blackbox=blackbox, n_active=n_active, n_units=units,
      sparsity=1 - sum(n_active) / sum(units), memory_pct=memory, flops_ratio=flops,
      warnings=[], sanity=None)


def write_run(path, result):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "eval.json"), "w") as f:
    json.dump(result, f)
  return str(path)


def assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE, path
  import matplotlib.image
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  assert image.std() > 0  # not blank


def test_report_table_and_figures(tmp_path):
  std = write_run(tmp_path / "std", fake_eval("standard", 0.9929, 0.0, 0.129,
                                              [20, 50, 800, 500], memory=100.0, flops=1.0,
                                              blackbox=dict(adv_acc=0.0802, vulnerability=0.113,
                                                            source_model_dir="src")))
  anp = write_run(tmp_path / "anp_vs", fake_eval("anp_vs", 0.9905, 0.9131, 0.017,
                                                 [7, 25, 105, 30], seed=1))
  out = tmp_path / "out"
  paths = report.run_report(Config(mode="report", runs=f"{std}, {anp}", report_dir=str(out)))

  text = (out / "report.md").read_text()
  assert ("| Model | Clean Acc. | White box PGD-40 acc. | White box AutoAttack acc. | White box "
          "worst case acc. (PGD-40) | Black box acc. (PGD-40 transfer) | White Box Vulnerability | "
          "Black Box Vulnerability | Memory | Flops | Sparsity |") in text
  assert ("| Standard | 99.29 | 0.00 | n/a | 0.00 | 8.02 | 0.129 | 0.113 | 100.00 | 1.00 | 0.00 |"
          in text)
  sparsity = 100 * (1 - 167 / 1370)
  assert (f"| ANP-VS | 99.05 | 91.31 | n/a | 91.31 | n/a | 0.017 | n/a | n/a | n/a | "
          f"{sparsity:.2f} |" in text)
  for name in (report.UNITS_PNG, report.VULN_PNG, report.LAYER_PNG):
    assert f"]({name})" in text
    assert_png(out / name)
  assert len(paths["plots"]) == 3
  assert "Robust accuracy per attack" not in text  # PGD only: no per-attack table


def test_figure_titles_do_not_overlap_the_panels(tmp_path):
  # Seven histograms, as the MNIST table's report draws: the figure's title stays above the
  # first panel's title, and no panel's title runs into the panel above it.
  runs = [fake_eval("at", 0.99, 0.9 - 0.01 * i, 0.05, [20, 50, 800, 300 + 10 * i], seed=i)
          for i in range(7)]
  names = [f"run {i}" for i in range(7)]
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  for plot in (report.plot_vulnerability_distribution, report.plot_units):
    canvas = FigureCanvasAgg(plot(runs, names, str(tmp_path / "figure.png")))
    canvas.draw()
    fig, renderer = canvas.figure, canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in fig.texts]  # the suptitle
    assert len(boxes) == 1
    for ax in fig.axes:
      if ax.get_title():
        boxes.append(ax.title.get_window_extent(renderer))
      boxes.append(ax.get_window_extent(renderer))
    for a in range(len(boxes)):
      for b in range(a + 1, len(boxes)):
        assert not boxes[a].overlaps(boxes[b]), (plot.__name__, a, b)


def test_per_attack_table_for_strongest_runs(tmp_path):
  strong = fake_eval("anp_vs", 0.99, 0.85, 0.02, [7, 25, 105, 30])
  strong.update(per_attack={"pgd": 0.9, "apgd-ce": 0.87, "apgd-dlr": 0.86, "cw": 0.88},
                attack=dict(strong["attack"], name="strongest",
                            attacks=["pgd", "apgd-ce", "apgd-dlr", "cw"]))
  runs = ",".join([write_run(tmp_path / "a", strong),
                   write_run(tmp_path / "s", fake_eval("standard", 0.99, 0.0, 0.1,
                                                       [20, 50, 800, 500]))])
  report.run_report(Config(mode="report", runs=runs, report_dir=str(tmp_path / "o")))
  text = (tmp_path / "o" / "report.md").read_text()
  assert ("| Model | PGD-40 | APGD-CE-40 | APGD-DLR-40 | CW-40 | "
          "Worst case (each row's attacks) |") in text
  assert "| ANP-VS | 90.00 | 87.00 | 86.00 | 88.00 | 85.00 |" in text
  assert "| Standard | 0.00 |  |  |  | 0.00 |" in text


def test_autoattack_columns_name_their_stages_and_budgets(tmp_path):
  aa = fake_eval("anp_vs", 0.99, 0.70, 0.02, [7, 25, 105, 30])
  specs = {"pgd": dict(aa["attack"]),
           "autoattack": dict(aa["attack"], name="autoattack", steps=100, queries=5000,
                              stages=["apgd-ce", "apgd-t", "fab-t", "square"])}
  aa.update(per_attack={"pgd": 0.88, "autoattack/apgd-ce": 0.76, "autoattack/apgd-t": 0.74,
                        "autoattack/fab-t": 0.73, "autoattack/square": 0.70, "autoattack": 0.70},
            attack=dict(aa["attack"], name="pgd,autoattack", attacks=["pgd", "autoattack"],
                        specs=specs))
  short = fake_eval("at", 0.99, 0.80, 0.02, [20, 50, 800, 500])
  short["attack"]["steps"] = 20  # another budget under the same column: named in the cell
  runs = ",".join([write_run(tmp_path / "a", aa), write_run(tmp_path / "b", short)])
  report.run_report(Config(mode="report", runs=runs, report_dir=str(tmp_path / "o")))
  text = (tmp_path / "o" / "report.md").read_text()
  assert ("| Model | PGD-40 | AutoAttack to APGD-CE-100 | AutoAttack to APGD-T-100 | "
          "AutoAttack to FAB-T-100 | AutoAttack to Square-5000 | AutoAttack | "
          "Worst case (each row's attacks) |") in text
  assert "| ANP-VS | 88.00 | 76.00 | 74.00 | 73.00 | 70.00 | 70.00 | 70.00 |" in text
  assert "| AT | 80.00 (PGD-20) |  |  |  |  |  | 80.00 |" in text
  assert "| ANP-VS | 99.00 | 88.00 | 70.00 | 70.00 | n/a |" in text
  # An evaluation made before FAB-T joined the cascade says so in its header and cell.
  specs["autoattack"]["stages"] = ["apgd-ce", "apgd-t", "square"]
  del aa["per_attack"]["autoattack/fab-t"]
  write_run(tmp_path / "a", aa)
  report.run_report(Config(mode="report", runs=runs, report_dir=str(tmp_path / "o")))
  text = (tmp_path / "o" / "report.md").read_text()
  assert "| AutoAttack without FAB-T to Square-5000 | AutoAttack without FAB-T |" in text
  assert "| ANP-VS | 99.00 | 88.00 | 70.00 (no FAB-T) | 70.00 | n/a |" in text


def test_same_method_twice_gets_folder_names(tmp_path):
  a = write_run(tmp_path / "seed0", fake_eval("at", 0.99, 0.88, 0.04, [20, 50, 800, 500]))
  b = write_run(tmp_path / "seed1", fake_eval("at", 0.98, 0.87, 0.05, [20, 50, 800, 500]))
  report.run_report(Config(mode="report", runs=f"{a},{b}", report_dir=str(tmp_path / "o")))
  text = (tmp_path / "o" / "report.md").read_text()
  assert "| AT (seed0) |" in text and "| AT (seed1) |" in text


def test_missing_runs_and_eval_json_name_the_run(tmp_path):
  good = write_run(tmp_path / "good", fake_eval("bp", 0.99, 0.0, 0.09, [9, 18, 65, 25]))
  missing = str(tmp_path / "nope")
  with pytest.raises(UserError, match="nope.*does not exist"):
    report.run_report(Config(mode="report", runs=f"{good},{missing}",
                             report_dir=str(tmp_path / "o")))
  os.makedirs(tmp_path / "not_evaluated")
  with pytest.raises(UserError, match="not_evaluated.*no eval.json.*--mode=eval"):
    report.run_report(Config(mode="report", runs=f"{good},{tmp_path / 'not_evaluated'}",
                             report_dir=str(tmp_path / "o")))
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "eval.json").write_text("{not json")
  with pytest.raises(UserError, match="broken"):
    report.run_report(Config(mode="report", runs=str(tmp_path / "broken"),
                             report_dir=str(tmp_path / "o")))
  with pytest.raises(UserError, match="--runs"):
    report.run_report(Config(mode="report", runs=" , ", report_dir=str(tmp_path / "o")))
  with pytest.raises(UserError, match="--report_dir"):
    report.run_report(Config(mode="report", runs=good, report_dir=None))


def test_mixed_data_sets_or_input_spaces_are_refused(tmp_path):
  mnist = write_run(tmp_path / "m", fake_eval("at", 0.99, 0.88, 0.04, [20, 50, 800, 500]))
  cifar = fake_eval("at", 0.8, 0.4, 0.1, [20, 50, 800, 500])
  cifar.update(dataset="cifar10", architecture="vgg")
  other = write_run(tmp_path / "c", cifar)
  original = dict(cifar, preprocess="original")
  orig = write_run(tmp_path / "o_run", original)
  for runs, text in (((mnist, other), "mnist/pixel.*cifar10/pixel"),
                     ((other, orig), "cifar10/pixel.*cifar10/original")):
    with pytest.raises(UserError, match=text):
      report.run_report(Config(mode="report", runs=",".join(runs), report_dir=str(tmp_path / "x")))
  assert not (tmp_path / "x").exists()
  report.run_report(Config(mode="report", runs=mnist, report_dir=str(tmp_path / "ok")))
  assert "Data set: **mnist**, input space: pixel." in (tmp_path / "ok" / "report.md").read_text()


def test_paper_comparison_says_per_column_whether_it_is_met(tmp_path):
  """results/paper.py: the paper's line, ours and a verdict per column (within the tolerance,
  else how far above / below); PGD-40 from per_attack; a row without eval.json or without a
  paper row is listed as such."""
  paper = results_script("paper")
  at = fake_eval("at", 0.9923, 0.7296, 0.0450, [20, 50, 800, 500], memory=100.0, flops=1.0)
  at["per_attack"] = {"pgd": 0.8856, "apgd-ce": 0.7404}
  at["attack"]["name"] = "strongest"
  write_run(tmp_path / "at", at)
  # Clean 1.6 below, PGD-40 (attack "pgd": adv_acc) 1.4 below, vulnerability 11% above, Flops
  # 9% below, Sparsity 1.6 above; the black box is there.
  vs = fake_eval("anp_vs", 0.9745, 0.8991, 0.01887, [6, 20, 147, 39], memory=7.5, flops=9.62,
                 blackbox=dict(adv_acc=0.9543, vulnerability=0.015))
  vs["sparsity"] = 0.8576
  vs["per_attack"] = None  # a --attack=pgd evaluation: its adv_acc is PGD-40
  write_run(tmp_path / "anp_vs", vs)
  rows = {r["row"]: r for r in (paper.compare(str(tmp_path), row)
                                for row in ("at", "anp", "anp_vs", "bp"))}
  assert rows["at"]["ours"]["white_box"] == pytest.approx(88.56)
  assert rows["at"]["worst_case"] == pytest.approx(72.96)
  assert rows["at"]["verdict"] == dict(clean="met", white_box="met", black_box=None,
                                       wb_vuln="met", bb_vuln=None, memory="met", flops="met",
                                       sparsity="met")
  assert rows["anp_vs"]["verdict"] == dict(
      clean="1.60 below", white_box="met", black_box="met", wb_vuln="11.0% above",
      bb_vuln="met", memory="met", flops="met", sparsity="1.60 above")
  assert rows["anp"]["paper"] is None and rows["anp"]["verdict"] is None
  assert rows["anp"]["ours"] is None and rows["bp"]["ours"] is None
  table = paper.markdown(list(rows.values()))
  assert "| AT, paper | 99.14 | 88.03 | 94.18 | 0.045 | 0.040 | 100.00 | 1.00 | 0.00 | | |" in table
  assert ("| AT, ours | 99.23 | 88.56 | n/a | 0.045 | n/a | 100.00 | 1.00 | 0.00 | n/a | 72.96 |"
          in table)
  assert ("| ANP-VS: met? | 1.60 below | met | met | 11.0% above | met | met | met | 1.60 above "
          "| | |" in table)
  assert "| ANP, ours | not evaluated |" in table and "| BP, ours | not evaluated |" in table
  assert "overstate" not in table  # no AutoAttack evaluated: no second table
  # A weight-pruned row: its Memory and Flops count the non-zero weights, the paper's the
  # dense network, so those two cells are not judged.
  admm = fake_eval("hydra", 0.991, 0.9432, 0.038, [9, 30, 475, 180], memory=20.11, flops=5.0)
  admm.update(sparsity=0.8, sparsity_of="weights")
  write_run(tmp_path / "admm", admm)
  row = paper.compare(str(tmp_path), "admm")
  assert row["verdict"]["memory"] == row["verdict"]["flops"] == "paper: dense"
  assert row["verdict"]["sparsity"] == "met" and row["verdict"]["white_box"] == "5.85 above"
  admm["sparsity_of"] = "units"  # counted as units, the cells are judged as any other row's
  write_run(tmp_path / "admm", admm)
  assert paper.compare(str(tmp_path), "admm")["verdict"]["memory"] == "79.89 below"
  # Adv-BNN: Memory counts means and log-sigmas as the paper's does (judged); our Flops count a
  # prediction's forward passes, which the paper does not say it counts (not judged).
  bnn = fake_eval("at_bnn", 0.9916, 0.8844, 0.364, [20, 50, 800, 500], memory=200.0, flops=0.05)
  bnn["bnn"] = dict(ensemble=20, parameters=dict(mean=431080, total=862160))
  write_run(tmp_path / "at_bnn", bnn)
  row = paper.compare(str(tmp_path), "at_bnn")
  assert row["verdict"]["memory"] == "met" and row["verdict"]["flops"] == "ours: 20 samples"

  # An AutoAttack evaluation beside the former worst case (eval_strongest.json).
  write_run(tmp_path / "at_old", at)
  os.replace(tmp_path / "at_old" / "eval.json", tmp_path / "at" / "eval_strongest.json")
  at.update(adv_acc=0.6512, per_attack={"pgd": 0.8856, "autoattack": 0.6590})
  at["attack"]["specs"] = {"autoattack": dict(name="autoattack",
                                              stages=["apgd-ce", "apgd-t", "fab-t", "square"])}
  write_run(tmp_path / "at", at)
  row = paper.compare(str(tmp_path), "at")
  assert row["autoattack"] == pytest.approx(65.90)
  assert row["former_worst_case"] == pytest.approx(72.96)
  table = paper.markdown([row])
  assert "| AT, ours | 99.23 | 88.56 | n/a | 0.045 | n/a | 100.00 | 1.00 | 0.00 | 65.90 | 65.12 |" in table
  assert "| AT | 88.56 | 72.96 | 65.90 | 22.66 | 7.06 |" in table
  # A cascade without FAB-T (evaluated before it joined) is named so.
  at["attack"]["specs"]["autoattack"]["stages"].remove("fab-t")
  write_run(tmp_path / "at", at)
  table = paper.markdown([paper.compare(str(tmp_path), "at")])
  assert "| AT | 88.56 | 72.96 | 65.90 (no FAB-T) | 22.66 | 7.06 |" in table


def _training_run(path, epochs_done, wall_s, **flags):
  """A run folder as --mode=train leaves it: config.json, train_log.jsonl, timing.jsonl."""
  os.makedirs(path, exist_ok=True)
  Config(mode="train", dataset="mnist", model_dir=str(path), **flags).resolved().save(
      run_config_path(str(path)))
  with open(os.path.join(path, "train_log.jsonl"), "w") as f:
    for e in range(1, epochs_done + 1):
      f.write(json.dumps(dict(epoch=e, step=10 * e, loss=1.0)) + "\n")
  with open(os.path.join(path, "timing.jsonl"), "w") as f:
    for e, s in enumerate(wall_s, 1):
      f.write(json.dumps(dict(epoch=e, steps=10, wall_s=s, started="2026-01-01T00:00:00",
                              machine="CPU X")) + "\n")
  return str(path)


def test_report_says_how_each_row_was_trained(tmp_path):
  """Per row: its stages back through --init_from (not through another row), epochs trained
  of scheduled, wall hours summed over timing.jsonl, machine, and the commands."""
  from anp.runs import provenance
  at = _training_run(tmp_path / "at", 3, [1800, 1800, 3600], method="at", epochs=3)
  search = _training_run(tmp_path / "admm_search", 2, [3600, 3600], method="admm",
                         prune_ratio=0.8, epochs=2, init_from=at)
  admm = _training_run(tmp_path / "admm", 1, [1800], method="hydra", hydra_stage="finetune",
                       hydra_scores="magnitude", prune_ratio=0.8, epochs=4, init_from=search)
  for run, method in ((at, "at"), (admm, "hydra")):
    write_run(run, dict(fake_eval(method, 0.99, 0.9, 0.04, [20, 50, 800, 500]),
                        command=f"python main.py --mode=eval --model_dir={run}"))
  assert provenance.stages(admm, [at, admm]) == [search, admm]
  assert provenance.stages(admm) == [at, search, admm]  # AT not a row: its stage too
  done = provenance.trained(admm)
  assert (done["epoch"], done["epochs"], done["wall_h"]) == (1, 4, 0.5)
  report.run_report(Config(mode="report", runs=f"{at},{admm}", report_dir=str(tmp_path / "o")))
  text = (tmp_path / "o" / "report.md").read_text()
  assert "| AT | `at` 3 of 3 | 2.00 | CPU X |" in text
  assert "`admm_search` 2 of 2, `admm` 1 of 4 | 2.00 + 0.50 = 2.50 | CPU X |" in text
  commands = text[text.index("```"):]
  assert commands.count("python main.py --mode=train") == 3
  assert f"--model_dir={admm}\npython main.py --mode=eval --model_dir={admm}\n" in commands
  assert (f"--method=admm --init_from={at} --prune_ratio=0.8 --epochs=2 --data_dir=DATA "
          f"--model_dir={search}") in commands
  assert "--hydra_stage=finetune" in commands and f"--model_dir={admm}" in commands
  # A row that is no training run (an evaluated SavedModel, say) is named as such.
  other = write_run(tmp_path / "export", fake_eval("at", 0.99, 0.9, 0.04, [20, 50, 800, 500]))
  report.run_report(Config(mode="report", runs=other, report_dir=str(tmp_path / "p")))
  assert f"not a training run (`{other}`)" in (tmp_path / "p" / "report.md").read_text()


def _config_of(command):
  """The resolved Config that a --mode=train command from `train_command` asks for."""
  flags = {}
  for arg in command.split()[3:]:
    key, _, value = arg[2:].partition("=")
    if key in ("mode", "data_dir", "model_dir"):
      continue
    for parse in (int, float, str):
      try:
        flags[key] = parse(value)
        break
      except ValueError:
        pass
  return Config(mode="train", **flags).resolved()


@pytest.mark.parametrize("flags", [
    dict(method="hydra", hydra_stage="finetune", hydra_scores="magnitude",
         hydra_objective="adv", prune_ratio=0.8, epochs=40, init_from="runs/admm_search"),
    dict(method="hydra", hydra_objective="at", epochs=1),
    dict(method="trades", trades_beta=6.0, train_attack_steps=20, epochs=1),
    dict(method="admm", admm_loss="mixed", weight_decay=0.0, admm_every=1, seed=1),
    dict(method="at", bias_init="zeros")])
def test_train_command_gives_back_the_run(flags):
  """A run's command names only what its other flags do not imply (no --weight_decay=0.0 or
  --trades_beta=6.0 where the method's objective sets them), and gives back its identity."""
  from anp.runs import provenance
  cfg = Config(mode="train", dataset="mnist", **flags).resolved()
  command = provenance.train_command(cfg, "runs/row")
  again = _config_of(command)
  assert {k: getattr(again, k) for k in cfg.run_keys} == {k: getattr(cfg, k) for k in cfg.run_keys}
  for key, value in flags.items():  # what was asked for and is not a default stays named
    named = f"--{key}=" in command
    assert key == "method" or named == (value != provenance._default(cfg, key)), key
  if flags.get("hydra_objective") == "adv":
    assert "--trades_beta" not in command and "--weight_decay" not in command
