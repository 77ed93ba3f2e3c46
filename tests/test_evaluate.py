"""--mode=eval: the paper's table, stronger attacks, EOT warnings and gradient-masking checks.

A LeNet5 trained for 100 steps on a real MNIST slice (and a second one as black-box source)
is evaluated on a few hundred test examples with short attacks.
"""

import json
import os
import re
import time

import numpy as np
import pytest
import tensorflow as tf

from anp.evaluation import attack_specs, eval_net, evaluate, sanity, sap, tables
from anp.config import Config
from anp.errors import UserError
from anp.runs.rundir import load_run
from tests.helpers import SHARED_DATA, have_real_data, mnist_slice

pytestmark = pytest.mark.skipif(not have_real_data(),
                                reason=f"real MNIST not found in {SHARED_DATA}")

# eps 0.1 with 20 steps of 0.01: a budget PGD can use, a standard model is partly robust.
ATTACK = dict(eps=0.1, step_size=0.01, attack_steps=20, square_queries=200)


def train_run(model_dir, seed, steps):
  from anp.training.train import run_train
  run_train(Config(mode="train", dataset="mnist", method="standard", epochs=1,
                   steps_per_epoch=steps, val_examples=0, seed=seed,
                   model_dir=str(model_dir)), mnist_slice())
  return str(model_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval_runs")
  return dict(target=train_run(root / "target", seed=0, steps=100),
              source=train_run(root / "source", seed=1, steps=60))


def eval_cfg(model_dir, **kw):
  return Config(**{**dict(mode="eval", model_dir=model_dir, eval_examples=256, **ATTACK), **kw})


def test_table_row_formats_like_the_readme():
  result = dict(method="anp_vs", clean_acc=0.99054, adv_acc=0.71311, vulnerability=0.01704,
                blackbox=dict(adv_acc=0.95431, vulnerability=0.0151), memory_pct=6.8112,
                flops_ratio=10.5714, sparsity=0.84161,
                per_attack={"pgd": 0.91311, "autoattack": 0.72},
                attack=dict(name="pgd,autoattack", attacks=["pgd", "autoattack"], steps=40))
  assert tables.table_row(result) == \
      "| ANP-VS | 99.05 | 91.31 | 72.00 | 71.31 | 95.43 | 0.017 | 0.015 | 6.81 | 10.57 | 84.16 |"
  # One attack: its accuracy is the worst case; a PGD of other than 40 steps says so.
  result.update(blackbox=None, memory_pct=None, flops_ratio=None, method="standard",
                per_attack={"pgd": 0.71311}, attack=dict(name="pgd", attacks=["pgd"], steps=20))
  assert tables.table_row(result) == \
      "| Standard | 99.05 | 71.31 (PGD-20) | n/a | 71.31 | n/a | 0.017 | n/a | n/a | n/a | 84.16 |"
  assert tables.model_name(dict(method="at")) == "AT"
  assert tables.model_name(dict(method="at", init_from="runs/standard")) == "Pretrained AT"
  header = tables.markdown_table([]).splitlines()[0]
  assert header == ("| Model | Clean Acc. | White box PGD-40 acc. | White box AutoAttack acc. | "
                    "White box worst case acc. | Black box acc. (PGD-40 transfer) | White Box "
                    "Vulnerability | Black Box Vulnerability | Memory | Flops | Sparsity |")
  # The worst case names its attacks: those of every row, or says they differ.
  pgd_aa = dict(result, attack=dict(name="pgd", attacks=["pgd", "autoattack"], steps=40,
                                    specs=dict(pgd=dict(name="pgd", steps=40),
                                               autoattack=dict(name="autoattack", steps=100))))
  assert tables.columns([pgd_aa, pgd_aa])[4] == "White box worst case acc. (PGD-40, AutoAttack)"
  assert tables.columns([pgd_aa, result])[4] == "White box worst case acc. (each row's attacks)"
  assert tables.markdown_table([], [result]).splitlines()[0].split(" | ")[4] == \
      "White box worst case acc. (PGD-20)"


@pytest.mark.slow
def test_eval_writes_paper_table_blackbox_and_sanity(runs, tmp_path):
  result = evaluate.run_eval(eval_cfg(runs["target"], source_model_dir=runs["source"],
                                      sanity_checks=True), mnist_slice())
  with open(os.path.join(runs["target"], "eval.json")) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(result))
  for key in ("clean_acc", "adv_acc", "vulnerability", "layer_vulnerability", "sparsity",
              "n_active", "n_units", "attack", "dataset", "method", "preprocess",
              "blackbox", "memory_pct", "flops_ratio", "unit_vulnerability", "sanity"):
    assert key in saved, key
  assert saved["examples"] == 256 and saved["method"] == "standard"
  assert saved["attack"]["compact_attack"] is True
  assert saved["clean_acc"] > 0.8
  assert saved["adv_acc"] < saved["clean_acc"] - 0.1
  assert saved["max_linf"] <= ATTACK["eps"] + 1e-5
  bb = saved["blackbox"]
  assert saved["adv_acc"] <= bb["adv_acc"] + 0.03  # white box is the stronger attack
  assert bb["adv_acc"] < saved["clean_acc"]
  assert len(saved["layer_vulnerability"]) == 3 and saved["vulnerability"] > 0
  assert bb["vulnerability"] > 0
  assert len(saved["unit_vulnerability"]["values"]) == 500
  assert saved["n_active"] == saved["n_units"] == [20, 50, 800, 500]
  assert saved["sparsity"] == 0 and not saved["stochastic"]

  sanity = saved["sanity"]
  assert sanity["passed"] and not sanity["possible_gradient_masking"], sanity
  assert set(sanity["checks"]) == {"eps_monotone", "steps_monotone", "large_eps",
                                   "iterative_beats_single_step", "iterative_beats_noise",
                                   "whitebox_beats_blackbox", "nonzero_gradients"}
  assert sanity["checks"]["large_eps"]["adv_acc"] <= 0.02
  with np.load(os.path.join(runs["target"], evaluate.EXAMPLES_FILE)) as f:
    assert f["blackbox"].mean() == bb["adv_acc"] and f["blackbox"].shape == (256,)
    assert (f["per_attack"][0] == f["robust"]).all()  # one attack: it is the worst case

  lines = open(os.path.join(runs["target"], "eval.md")).read().splitlines()
  assert lines[0].startswith("| Model | Clean Acc. | White box PGD-40 acc. |")
  cells = [c.strip() for c in lines[2].strip("|").split("|")]
  assert len(cells) == 11 and cells[0] == "Standard"
  assert cells[1] == f"{100 * saved['clean_acc']:.2f}"
  assert cells[5] == f"{100 * bb['adv_acc']:.2f}" and cells[10] == "0.00"
  assert cells[3] == "n/a"  # no AutoAttack in this evaluation
  assert (cells[8], cells[9]) == ("100.00", "1.00")

  from anp.evaluation.report import run_report
  out = run_report(Config(mode="report", runs=runs["target"], report_dir=str(tmp_path)))
  assert lines[2] in open(out["report"]).read()


@pytest.mark.slow
def test_strongest_is_the_per_example_worst_case(runs):
  result = evaluate.run_eval(eval_cfg(runs["target"], attack="strongest"), mnist_slice())
  per = result["per_attack"]
  assert list(per) == list(attack_specs.STRONGEST)
  assert result["adv_acc"] <= min(per.values())
  assert per["apgd-ce"] <= per["pgd"] + 0.02  # APGD is not weaker than PGD
  assert result["adv_acc"] < result["clean_acc"]
  assert result["attack"]["name"] == "strongest"
  # A list: the worst case of those attacks, each one's accuracy the same as alone.
  pair = evaluate.run_eval(eval_cfg(runs["target"], attack="pgd,apgd-ce"), mnist_slice(),
                           verbose=False)
  assert list(pair["per_attack"]) == ["pgd", "apgd-ce"]
  assert pair["adv_acc"] <= min(pair["per_attack"].values())
  assert pair["adv_acc"] >= result["adv_acc"] - 0.02  # fewer attacks: not stronger
  alone = evaluate.run_eval(eval_cfg(runs["target"], attack="apgd-ce"), mnist_slice(),
                            verbose=False)  # APGD has no random start: deterministic
  assert alone["adv_acc"] == pair["per_attack"]["apgd-ce"]
  assert "worst case of pgd/apgd-ce" in tables.format_table(pair)
  with pytest.raises(UserError, match="--attack: expected one or more"):
    eval_cfg(runs["target"], attack="pgd,bogus").resolved()


class InputQuantized:
  """A gradient-masked model: it rounds its input, so input gradients are exactly zero."""

  def __init__(self, net):
    self.net = net

  def __call__(self, x, training=False, return_features=False):
    x = x * 0.0 + tf.stop_gradient(tf.round(x))
    return self.net(x, training=training, return_features=return_features)


class QuantizedCraftedOnNet(InputQuantized):
  """InputQuantized whose attack function is the wrapped network's (true gradients)."""

  def attack_fn(self):
    return self.net.attack_fn()


class Noisy:
  """A model whose inference is random (noise on the logits)."""

  def __init__(self, net):
    self.net = net

  def __call__(self, x, training=False, return_features=False):
    logits, feats = self.net(x, training=training, return_features=True)
    logits = logits + tf.random.normal(tf.shape(logits), stddev=0.5)
    return (logits, feats) if return_features else logits


@pytest.mark.slow
def test_sanity_checks_flag_a_gradient_masked_model(runs):
  net, _ = load_run(runs["target"])
  _, _, x, y = mnist_slice()
  x = tf.constant(x[:200], tf.float32) / 255.0
  y = tf.constant(y[:200])
  spec = attack_specs.AttackSpec("pgd", eps=0.1, step_size=0.01, steps=20)
  masked = sanity.sanity_checks(InputQuantized(net), x, y, spec, verbose=False)
  assert masked["possible_gradient_masking"], masked
  assert "nonzero_gradients" in masked["failed"]
  assert masked["checks"]["nonzero_gradients"]["fraction_nonzero"] == 0.0
  normal = sanity.sanity_checks(net, x, y, spec, verbose=False)
  assert normal["passed"], normal
  # With compact, the attacks take their gradients from the model's attack function, as
  # --mode=eval's do; without it, from the model (here: none).
  crafted = QuantizedCraftedOnNet(net)
  assert sanity.sanity_checks(crafted, x, y, spec, verbose=False)["checks"][
      "nonzero_gradients"]["fraction_nonzero"] == 0.0
  compact = sanity.sanity_checks(crafted, x, y, spec, compact=True, verbose=False)["checks"]
  assert compact["nonzero_gradients"]["fraction_nonzero"] > 0.9, compact
  assert compact["large_eps"]["passed"], compact


def test_stochastic_model_without_eot_warns(runs, monkeypatch, capsys, tmp_path):
  net, run_cfg = load_run(runs["target"])
  assert not sanity.is_stochastic(net, tf.zeros([4, 28, 28, 1]))
  assert sanity.is_stochastic(Noisy(net), tf.zeros([4, 28, 28, 1]))
  monkeypatch.setattr(evaluate, "load_model", lambda *a, **k: (Noisy(net), run_cfg, "run"))
  cfg = eval_cfg(str(tmp_path), eval_examples=64, attack_steps=3)
  result = evaluate.run_eval(cfg, mnist_slice())
  assert result["stochastic"]
  assert any("--eot_samples" in w for w in result["warnings"])
  assert "WARNING" in capsys.readouterr().out
  with open(tmp_path / "eval.json") as f:
    assert json.load(f)["warnings"] == result["warnings"]

  result = evaluate.run_eval(eval_cfg(str(tmp_path), eval_examples=64, attack_steps=3,
                                      eot_samples=2), mnist_slice())
  assert result["stochastic"] and not any("--eot_samples" in w for w in result["warnings"])
  assert result["attack"]["eot_samples"] == 2


def test_bad_model_dirs_are_user_errors(runs, tmp_path):
  with pytest.raises(UserError, match="--model_dir"):
    evaluate.run_eval(eval_cfg(str(tmp_path / "nothing")), mnist_slice())
  with pytest.raises(UserError, match="--source_model_dir"):
    evaluate.run_eval(eval_cfg(runs["target"], eval_examples=8, attack_steps=1,
                               source_model_dir=str(tmp_path)), mnist_slice())


@pytest.mark.slow
def test_restarts_and_each_single_attack_run(runs):
  x, y = mnist_slice()[2:]
  ds = tf.data.Dataset.from_tensor_slices((x[:128].astype(np.float32) / 255.0, y[:128]))
  net, _ = load_run(runs["target"])
  accs = {}
  # Standard AutoAttack at its fixed budget is test_autoattack_column_and_its_stages'; Square's
  # queries and AutoAttack-rand's EOT samples are cut to keep this one short.
  for name in (a for a in attack_specs.ATTACKS if a != "autoattack"):
    spec = attack_specs.AttackSpec(name, eps=0.1, step_size=0.01, steps=10,
                                   restarts=2 if name == "pgd" else 1, queries=300,
                                   eot_samples=2 if name == "autoattack-rand" else 1)
    r = eval_net.evaluate_net(net, ds.batch(64), attack_specs.make_attack(spec), 128,
                              verbose=False)
    accs[name] = r["adv_acc"]
    assert r["adv_acc"] <= r["clean_acc"] + 1e-9 and r["max_linf"] <= 0.1 + 1e-5, name
  assert max(accs.values()) < 0.95, accs


def test_efficiency_columns_come_from_anp_efficiency(monkeypatch):
  calls = []

  def paper_columns(arch, n_active, unit_counts, n_classes):
    calls.append((arch, n_active, unit_counts, n_classes))
    return dict(memory_pct=6.8112, flops_ratio=10.5714, sparsity_pct=84.16)

  monkeypatch.setattr(tables.efficiency, "paper_columns", paper_columns)
  cols = tables.efficiency_columns("lenet", [7, 25, 105, 30], (20, 50, 800, 500), 10)
  assert cols == dict(memory_pct=6.8112, flops_ratio=10.5714)
  assert calls == [("lenet", [7, 25, 105, 30], [20, 50, 800, 500], 10)]


def test_compact_crafting_matches_crafting_through_the_layers(runs):
  x, y = mnist_slice()[2:]
  ds = tf.data.Dataset.from_tensor_slices((x[:128].astype(np.float32) / 255.0, y[:128]))
  net, _ = load_run(runs["target"])
  spec = attack_specs.AttackSpec("pgd", eps=0.1, step_size=0.01, steps=10)
  accs = [eval_net.evaluate_net(net, ds.batch(64), attack_specs.make_attack(spec), 128,
                                verbose=False, compact=compact)["adv_acc"]
          for compact in (True, False)]
  assert abs(accs[0] - accs[1]) <= 2 / 128, accs


def test_sap_keeps_the_expected_activation_and_is_random():
  h = tf.nn.relu(tf.random.stateless_normal([3, 40], [1, 2]))
  samples = tf.stack([sap.sap(h, 1.0, seed=[i, 0]) for i in range(3000)])
  assert float(tf.reduce_max(tf.abs(tf.reduce_mean(samples, 0) - h))) < 0.05
  assert float(tf.reduce_mean(tf.cast(samples[0] == 0, tf.float32))) > 0.2  # units dropped
  assert np.all(np.asarray(sap.sap(tf.zeros([2, 5]))) == 0)


@pytest.mark.slow
def test_sap_defense_is_random_and_named(runs):
  # 300 examples: the last batch (44) has another size, as in a real evaluation.
  result = evaluate.run_eval(eval_cfg(runs["target"], defense="sap", eval_examples=300),
                             mnist_slice(), verbose=False)
  assert result["stochastic"] and result["defense"] == {"name": "sap", "frac": 1.0, "gradient": "full"}
  assert any("eot_samples" in w for w in result["warnings"])
  assert tables.model_name(result) == "Standard + SAP"


@pytest.mark.slow
def test_sap_export_serves_a_new_sample_per_call_and_evaluates_as_sap(runs, tmp_path):
  from anp.deploy.export import load_saved_model, run_export
  with pytest.raises(UserError, match="--defense=sap: expected --mode=export"):
    run_export(Config(mode="prune", model_dir=runs["target"], export_dir=str(tmp_path / "p"),
                      defense="sap"))
  plain = run_export(Config(mode="export", model_dir=runs["target"],
                            export_dir=str(tmp_path / "plain")))["path"]
  path = run_export(Config(mode="export", model_dir=runs["target"],
                           export_dir=str(tmp_path / "sap"), defense="sap"))["path"]
  x = tf.constant(mnist_slice()[2][:64], tf.float32) / 255.0
  serve = load_saved_model(path).signatures["serving_default"]
  a, b = (serve(images=x)["logits"].numpy() for _ in range(2))
  assert not np.allclose(a, b)  # a new SAP sample per call
  # Each sample is the trained net with SAP: it mostly agrees with the plain export.
  clean = load_saved_model(plain).signatures["serving_default"](images=x)["classes"].numpy()
  assert np.mean(a.argmax(1) == clean) > 0.8
  result = evaluate.run_eval(eval_cfg(path, eot_samples=2, eval_examples=64), mnist_slice(),
                             verbose=False)
  assert result["stochastic"] and result["defense"] == {"name": "sap", "frac": 1.0, "gradient": "full"}
  assert tables.model_name(result) == "Standard + SAP"
  assert not evaluate.run_eval(eval_cfg(plain, eval_examples=64), mnist_slice(),
                               verbose=False)["stochastic"]


@pytest.mark.slow
def test_sanity_checks_compare_random_models_with_eot(runs):
  x, y = mnist_slice()[2:]
  x, y = tf.constant(x[:32], tf.float32) / 255.0, tf.constant(y[:32])
  net, _ = load_run(runs["target"])
  spec = attack_specs.AttackSpec("pgd", eps=0.1, step_size=0.01, steps=10)
  fast = dict(eps_factors=(1.0,), step_fractions=(1.0,), verbose=False)
  out = sanity.sanity_checks(sap.SapNet(net), x, y, spec, **fast)
  check = out["checks"]["eot_does_not_help"]
  assert check["eot_samples"] == sanity.EOT_CHECK_SAMPLES
  assert check["passed"] == (check["eot_acc"] >= check["pgd_acc"] - out["tolerance"])
  assert "eot_does_not_help" not in sanity.sanity_checks(net, x, y, spec, **fast)["checks"]
  with_eot = sanity.sanity_checks(sap.SapNet(net), x, y, spec.replace(eot_samples=10), **fast)
  assert "eot_does_not_help" not in with_eot["checks"]  # the attack already uses EOT


@pytest.mark.slow
def test_autoattack_column_and_its_stages(runs):
  result = evaluate.run_eval(eval_cfg(runs["target"], attack="pgd,autoattack", eval_examples=128,
                                      square_queries=50), mnist_slice(), verbose=False)
  per = result["per_attack"]
  assert list(per) == ["pgd", "autoattack/apgd-ce", "autoattack/apgd-t", "autoattack/fab-t",
                       "autoattack/square", "autoattack"]
  stages = [per[f"autoattack/{s}"] for s in ("apgd-ce", "apgd-t", "fab-t", "square")]
  assert stages == sorted(stages, reverse=True)  # the cascade only removes examples
  with np.load(os.path.join(runs["target"], evaluate.EXAMPLES_FILE)) as f:
    rows = dict(zip(f["attacks"].tolist(), f["per_attack"]))
  assert list(rows) == list(per) and all(rows[k].mean() == v for k, v in per.items())
  for before, after in zip(["autoattack/apgd-ce", "autoattack/apgd-t", "autoattack/fab-t"],
                           ["autoattack/apgd-t", "autoattack/fab-t", "autoattack/square"]):
    assert not (rows[after] & ~rows[before]).any()  # each stage keeps a subset, per example
  assert per["autoattack"] <= stages[-1] + 1 / 128  # judged by the net, crafted on its compact twin
  assert per["autoattack"] <= per["pgd"] + 0.02
  assert result["adv_acc"] <= min(per["pgd"], per["autoattack"])
  spec = result["attack"]["specs"]["autoattack"]
  assert (spec["steps"], spec["queries"]) == (attack_specs.AUTOATTACK_STEPS, 50)
  cells = tables.table_cells(result)
  assert cells[2] == f"{100 * per['pgd']:.2f} (PGD-20)"  # ATTACK's 20 steps, named
  assert cells[3] == f"{100 * per['autoattack']:.2f}"


def test_eval_dir_receives_the_files_whole(runs, tmp_path):
  out = tmp_path / "elsewhere" / "sap_study"
  before = os.listdir(runs["target"])
  result = evaluate.run_eval(eval_cfg(runs["target"], eval_examples=32, attack_steps=2,
                                      eval_dir=str(out)), mnist_slice(), verbose=False)
  # no temporary file left
  assert sorted(os.listdir(out)) == ["eval.json", "eval.md", evaluate.EXAMPLES_FILE]
  assert json.load(open(out / "eval.json"))["clean_acc"] == result["clean_acc"]
  with np.load(out / evaluate.EXAMPLES_FILE) as f:  # each example's verdicts, no pickles
    assert sorted(f.files) == ["attacks", "clean", "per_attack", "robust"]
    assert f["clean"].shape == f["robust"].shape == (32,) and f["clean"].dtype == bool
    assert f["clean"].mean() == result["clean_acc"] and f["robust"].mean() == result["adv_acc"]
    assert f["attacks"].tolist() == ["pgd"] and f["per_attack"].shape == (1, 32)
    assert not (f["robust"] & ~f["clean"]).any()
  assert os.listdir(runs["target"]) == before


def test_vulnerability_is_the_first_attacks_whatever_follows(runs):
  """The vulnerability column keeps the paper's meaning (PGD's examples) when stronger attacks
  are listed after PGD; the L-inf check covers every attack's examples."""
  cfg = dict(eval_examples=64, attack_steps=5, seed=0)
  alone = evaluate.run_eval(eval_cfg(runs["target"], attack="apgd-ce", **cfg), mnist_slice(),
                            verbose=False)
  both = evaluate.run_eval(eval_cfg(runs["target"], attack="apgd-ce,square", **cfg),
                           mnist_slice(), verbose=False)
  assert both["vulnerability_attack"] == "apgd-ce"
  assert both["layer_vulnerability"] == pytest.approx(alone["layer_vulnerability"], rel=1e-5)
  assert both["per_attack"]["square"] < 1.0 and both["max_linf"] <= 0.1 + 1e-6


def test_eval_prints_a_line_per_attack_also_under_op_determinism(capfd):
  from tensorflow.python.framework import config as tf_config
  from attacks.pgd import pgd
  from models.lenet import LeNet5

  def slow(seconds):  # an attack that takes at least `seconds`, by an op nothing orders
    def attack(m, x, y):
      pause = tf.numpy_function(lambda t: np.float32(time.sleep(seconds) or 0.0), [x[0, 0, 0]],
                                tf.float32, stateful=False)
      return pgd(m, x + 0.0 * tf.ensure_shape(pause, []), y, 0.3, 0.01, 2)
    return attack

  net = LeNet5()
  x = tf.random.stateless_uniform([8, 28, 28, 1], [1, 2])
  y = tf.zeros([8], tf.int64)
  net(x)
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
  eval_net.evaluate_net(net, ds, {"pgd": slow(1.1), "pgd2": slow(1.2)}, 8)
  out = capfd.readouterr().out
  seconds = {name: int(s) for name, s in re.findall(r"attack (\w+) done: .* after (\d+) s", out)}
  assert seconds["pgd"] >= 1 and seconds["pgd2"] >= 1, out  # since the step began
  tf.random.set_seed(0)
  tf_config.enable_op_determinism()
  try:  # tf.timestamp is refused there: the lines lose their seconds
    eval_net.evaluate_net(net, ds, {"pgd": slow(0.0)}, 8)
  finally:
    tf_config.disable_op_determinism()
  out = capfd.readouterr().out
  assert "attack pgd done: " in out and "examples robust\n" in out
